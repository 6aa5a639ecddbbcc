// Reading a JSON request body field by field, so that a 400 names what was
// wrong: "ttl_ms: expected an integer from 1 to …, got -5". Pure (Boost.JSON
// only): route handlers and their unit tests share it.
#pragma once

#include <boost/json.hpp>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

namespace zmesh::gateway {

// What was wrong with the body, if anything: the message of the 400.
using Problem = std::optional<std::string>;

// A value as an error message shows it: its JSON text, cut short.
std::string shown(const boost::json::value& v);

// The request body, parsed into memory of its own (a small body allocates nothing).
class JsonBody {
 public:
  // The body must be one JSON object; otherwise says why (where the JSON breaks).
  Problem parse(std::string_view text);
  const boost::json::object& object() const { return value_.get_object(); }
  // Fails for the first field not in `known` (a typo must not be silently ignored).
  Problem onlyFields(std::initializer_list<std::string_view> known) const;

 private:
  unsigned char buffer_[4096];
  boost::json::monotonic_resource resource_{buffer_, sizeof buffer_};
  boost::json::value value_;
};

// A non-empty string.
Problem readString(const boost::json::value& v, std::string_view name,
                   const boost::json::string*& out);
// An integer in [min, max]: a JSON integer, or a number with no fraction up to 2^53.
Problem readInteger(const boost::json::value& v, std::string_view name, uint64_t min, uint64_t max,
                    uint64_t& out);
// A 64-bit id or token, which JSON carries as a string of decimal digits.
Problem readDecimalString(const boost::json::value& v, std::string_view name, uint64_t& out);

// "42" → 42: only decimal digits, no sign or space, within 64 bits.
std::optional<uint64_t> parseDecimal(std::string_view text);

}  // namespace zmesh::gateway
