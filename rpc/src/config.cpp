#include "zmesh/rpc/config.h"

#include <toml++/toml.h>

#include <cctype>
#include <charconv>
#include <filesystem>
#include <optional>
#include <sstream>

namespace zmesh::rpc {

ConfigSection::ConfigSection(std::string source, std::string name, const toml::table* table,
                             std::string baseDir)
    : source_(std::move(source)),
      name_(std::move(name)),
      table_(table),
      baseDir_(std::move(baseDir)) {}

std::string ConfigSection::path(std::string_view key, std::string fallback) const {
  auto value = string(key, std::move(fallback));
  if (value.empty() || baseDir_.empty()) return value;
  return (std::filesystem::path(baseDir_) / value).lexically_normal();  // absolute stays
}

void ConfigSection::fail(std::string_view key, std::string_view reason) const {
  // The line of the key, or of its table when the key is missing: an editor
  // jumps there ("mesh.toml:42: ratelimit.rules.api.limit: …").
  std::string where = source_;
  const toml::node* node = table_ ? table_->get(key) : nullptr;
  if (!node) node = table_;
  if (node && node->source().begin) where += ":" + std::to_string(node->source().begin.line);
  throw ConfigError(where + ": " + name_ + "." + std::string(key) + ": " + std::string(reason));
}

bool ConfigSection::has(std::string_view key) const { return table_ && table_->contains(key); }

namespace {
std::string describe(const toml::node& node) {
  std::ostringstream out;
  node.visit([&](auto&& v) { out << v; });
  return out.str();
}
}  // namespace

std::string ConfigSection::string(std::string_view key, std::string fallback) const {
  if (!has(key)) return fallback;
  auto* node = table_->get(key);
  if (auto v = node->value<std::string>(); v && node->is_string()) return *v;
  fail(key, "expected a string, got " + describe(*node));
}

int64_t ConfigSection::integer(std::string_view key, int64_t fallback, int64_t min,
                               int64_t max) const {
  if (!has(key)) return fallback;
  auto* node = table_->get(key);
  if (!node->is_integer() || **node->as_integer() < min || **node->as_integer() > max)
    fail(key, "expected an integer from " + std::to_string(min) + " to " + std::to_string(max) +
                  ", got " + describe(*node));
  return **node->as_integer();
}

bool ConfigSection::boolean(std::string_view key, bool fallback) const {
  if (!has(key)) return fallback;
  auto* node = table_->get(key);
  if (!node->is_boolean()) fail(key, "expected true or false, got " + describe(*node));
  return **node->as_boolean();
}

namespace {
// In the largest unit that says it exactly: "1d", "90s", "250ms".
std::string formatDuration(std::chrono::milliseconds d) {
  static constexpr std::pair<int64_t, const char*> kUnits[] = {
      {86'400'000, "d"}, {3'600'000, "h"}, {60'000, "m"}, {1000, "s"}};
  for (auto [ms, unit] : kUnits)
    if (d.count() != 0 && d.count() % ms == 0) return std::to_string(d.count() / ms) + unit;
  return std::to_string(d.count()) + "ms";
}
}  // namespace

std::chrono::milliseconds ConfigSection::duration(std::string_view key,
                                                  std::chrono::milliseconds fallback,
                                                  std::chrono::milliseconds min,
                                                  std::chrono::milliseconds max) const {
  if (!has(key)) return fallback;
  auto* node = table_->get(key);
  std::optional<std::chrono::milliseconds> d;
  if (node->is_integer() && **node->as_integer() >= 0)
    d = std::chrono::milliseconds(**node->as_integer());
  else if (node->is_string())
    d = parseDuration(**node->as_string());
  if (!d)
    fail(key, "expected a duration such as \"250ms\", \"30s\", \"5m\" or \"1h\", got " +
                  describe(*node));
  if (*d < min || *d > max)
    fail(key, "expected a duration from " + formatDuration(min) + " to " + formatDuration(max) +
                  ", got " + describe(*node));
  return *d;
}

std::optional<uint64_t> parseBytes(std::string_view text) {
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end == text.data()) return std::nullopt;
  std::string unit(end, text.data() + text.size());
  for (auto& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  int shift = 0;
  if (unit.empty() || unit == "b")
    shift = 0;
  else if (unit == "kb" || unit == "kib" || unit == "k")
    shift = 10;
  else if (unit == "mb" || unit == "mib" || unit == "m")
    shift = 20;
  else if (unit == "gb" || unit == "gib" || unit == "g")
    shift = 30;
  else
    return std::nullopt;
  if (n > (UINT64_MAX >> shift)) return std::nullopt;
  return n << shift;
}

uint64_t ConfigSection::bytes(std::string_view key, uint64_t fallback, uint64_t min,
                              uint64_t max) const {
  if (!has(key)) return fallback;
  auto* node = table_->get(key);
  std::optional<uint64_t> n;
  if (node->is_integer() && **node->as_integer() >= 0)
    n = static_cast<uint64_t>(**node->as_integer());
  else if (node->is_string())
    n = parseBytes(**node->as_string());
  if (!n)
    fail(key,
         "expected a size such as 4096, \"512kb\", \"64mb\" or \"2gb\", got " + describe(*node));
  if (*n < min || *n > max)
    fail(key, "expected a size from " + std::to_string(min) + " to " + std::to_string(max) +
                  " bytes, got " + describe(*node));
  return *n;
}

std::vector<std::string> ConfigSection::strings(std::string_view key) const {
  std::vector<std::string> out;
  if (!has(key)) return out;
  auto* node = table_->get(key);
  auto* array = node->as_array();
  if (!array) fail(key, "expected an array of strings, got " + describe(*node));
  for (auto& item : *array) {
    if (!item.is_string())
      fail(key, "expected an array of strings, got an element " + describe(item));
    out.push_back(**item.as_string());
  }
  return out;
}

ConfigSection ConfigSection::child(std::string_view key) const {
  if (!has(key)) return ConfigSection(source_, name_ + "." + std::string(key), nullptr);
  auto* node = table_->get(key);
  if (!node->is_table()) fail(key, "expected a table, got " + describe(*node));
  return ConfigSection(source_, name_ + "." + std::string(key), node->as_table(), baseDir_);
}

std::vector<ConfigSection> ConfigSection::tables(std::string_view key) const {
  std::vector<ConfigSection> out;
  if (!has(key)) return out;
  auto* node = table_->get(key);
  auto* array = node->as_array();
  if (!array) fail(key, "expected an array of tables, got " + describe(*node));
  for (size_t i = 0; i < array->size(); ++i) {
    auto* item = array->get(i);
    if (!item->is_table())
      fail(key, "expected an array of tables, got an element " + describe(*item));
    out.emplace_back(source_, name_ + "." + std::string(key) + "[" + std::to_string(i) + "]",
                     item->as_table(), baseDir_);
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> ConfigSection::stringTable(
    std::string_view key) const {
  std::vector<std::pair<std::string, std::string>> out;
  if (!has(key)) return out;
  auto* node = table_->get(key);
  if (!node->is_table()) fail(key, "expected a table of strings, got " + describe(*node));
  for (auto& [k, v] : *node->as_table()) {
    if (!v.is_string())
      fail(key, "expected a table of strings, got " + std::string(k.str()) + " = " + describe(v));
    out.emplace_back(k.str(), **v.as_string());
  }
  return out;
}

std::vector<std::string> ConfigSection::keys() const {
  std::vector<std::string> out;
  if (!table_) return out;
  for (auto& [k, v] : *table_) out.emplace_back(k.str());
  return out;
}

void ConfigSection::rejectUnknown(std::initializer_list<std::string_view> known,
                                  std::span<const std::string_view> alsoKnown) const {
  if (!table_) return;
  for (auto& [k, v] : *table_) {
    bool ok = false;
    for (auto name : known) ok = ok || k.str() == name;
    for (auto name : alsoKnown) ok = ok || k.str() == name;
    if (!ok) {
      std::string list;
      for (auto name : known) list += (list.empty() ? "" : ", ") + std::string(name);
      for (auto name : alsoKnown) list += (list.empty() ? "" : ", ") + std::string(name);
      fail(k.str(), "unknown key (known keys: " + list + ")");
    }
  }
}

MeshConfig::MeshConfig() = default;
MeshConfig::MeshConfig(MeshConfig&&) noexcept = default;
MeshConfig& MeshConfig::operator=(MeshConfig&&) noexcept = default;
MeshConfig::~MeshConfig() = default;

MeshConfig MeshConfig::load(const std::string& path) {
  MeshConfig config;
  config.source_ = path;
  config.baseDir_ = std::filesystem::absolute(path).parent_path();
  try {
    config.root_ = std::make_unique<toml::table>(toml::parse_file(path));
  } catch (const toml::parse_error& e) {
    std::ostringstream out;
    out << path;
    if (e.source().begin) out << ":" << e.source().begin.line << ":" << e.source().begin.column;
    out << ": " << e.description();
    throw ConfigError(out.str());
  }
  return config;
}

MeshConfig MeshConfig::parse(std::string_view text, std::string source) {
  MeshConfig config;
  config.source_ = source;
  try {
    config.root_ = std::make_unique<toml::table>(toml::parse(text, source));
  } catch (const toml::parse_error& e) {
    std::ostringstream out;
    out << source << ":" << e.source().begin.line << ":" << e.source().begin.column << ": "
        << e.description();
    throw ConfigError(out.str());
  }
  return config;
}

bool MeshConfig::has(std::string_view name) const { return root_->contains(name); }

ConfigSection MeshConfig::section(std::string_view name) const {
  auto* node = root_->get(name);
  if (node && !node->is_table())
    throw ConfigError(source_ + ": " + std::string(name) + ": expected a table [" +
                      std::string(name) + "]");
  return ConfigSection(source_, std::string(name), node ? node->as_table() : nullptr, baseDir_);
}

std::optional<std::chrono::milliseconds> parseDuration(std::string_view text) {
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end == text.data() || value < 0) return std::nullopt;
  std::string_view unit(end, text.data() + text.size() - end);
  int64_t scale;
  if (unit == "ms" || unit.empty())
    scale = 1;
  else if (unit == "s")
    scale = 1000;
  else if (unit == "m")
    scale = 60'000;
  else if (unit == "h")
    scale = 3'600'000;
  else if (unit == "d")
    scale = 86'400'000;
  else
    return std::nullopt;
  if (value > INT64_MAX / scale) return std::nullopt;
  return std::chrono::milliseconds(value * scale);
}

}  // namespace zmesh::rpc
