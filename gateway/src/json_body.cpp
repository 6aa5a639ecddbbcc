#include "json_body.h"

#include <algorithm>
#include <charconv>
#include <cmath>

namespace zmesh::gateway {

namespace json = boost::json;

std::string shown(const json::value& v) {
  std::string text;
  if (v.is_double()) {
    // 1.5, not Boost's 1.5E0.
    char buffer[32];
    auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, v.get_double());
    text = ec == std::errc() ? std::string(buffer, end) : json::serialize(v);
  } else {
    text = json::serialize(v);
  }
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return text;
}

Problem JsonBody::parse(std::string_view text) {
  if (text.empty()) return std::string("the body is empty: expected a JSON object");
  json::parser parser;
  parser.reset(&resource_);
  boost::system::error_code ec;
  size_t at = parser.write(text.data(), text.size(), ec);
  if (ec) return "malformed JSON at byte " + std::to_string(at) + ": " + ec.message();
  value_ = parser.release();
  if (!value_.is_object()) return "the body must be a JSON object, got " + shown(value_);
  return std::nullopt;
}

Problem JsonBody::onlyFields(std::initializer_list<std::string_view> known) const {
  for (auto& field : object()) {
    if (std::find(known.begin(), known.end(), field.key()) != known.end()) continue;
    std::string names;
    for (auto name : known) names += (names.empty() ? "" : ", ") + std::string(name);
    return "unknown field \"" + std::string(field.key()) + "\" (known: " + names + ")";
  }
  return std::nullopt;
}

Problem readString(const json::value& v, std::string_view name, const json::string*& out) {
  if (!v.is_string()) return std::string(name) + ": expected a string, got " + shown(v);
  if (v.get_string().empty()) return std::string(name) + ": must not be empty";
  out = &v.get_string();
  return std::nullopt;
}

Problem readInteger(const json::value& v, std::string_view name, uint64_t min, uint64_t max,
                    uint64_t& out) {
  auto bad = [&] {
    return std::string(name) + ": expected an integer from " + std::to_string(min) + " to " +
           std::to_string(max) + ", got " + shown(v);
  };
  if (v.is_int64()) {
    auto i = v.get_int64();
    if (i < 0) return bad();
    out = static_cast<uint64_t>(i);
  } else if (v.is_uint64()) {
    out = v.get_uint64();
  } else if (v.is_double()) {
    double d = v.get_double();
    if (!std::isfinite(d) || d < 0 || d != std::floor(d) || d > 9007199254740992.0) return bad();
    out = static_cast<uint64_t>(d);
  } else {
    return bad();
  }
  if (out < min || out > max) return bad();
  return std::nullopt;
}

std::optional<uint64_t> parseDecimal(std::string_view text) {
  uint64_t value = 0;
  // from_chars takes no sign or space for unsigned types, and stops at the first non-digit.
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

Problem readDecimalString(const json::value& v, std::string_view name, uint64_t& out) {
  auto bad = [&] {
    return std::string(name) +
           ": expected a string of decimal digits (a 64-bit unsigned integer; JSON numbers lose "
           "precision past 2^53), got " +
           shown(v);
  };
  if (!v.is_string()) return bad();
  auto text = v.get_string();
  auto value = parseDecimal(std::string_view(text.data(), text.size()));
  if (!value) return bad();
  out = *value;
  return std::nullopt;
}

}  // namespace zmesh::gateway
