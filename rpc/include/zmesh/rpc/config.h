// The mesh file (TOML) and typed, checked access to its sections.
//
// Every error names the file, the key and the reason, e.g.
//   mesh.toml: idgen.block_size: expected an integer from 1 to 1000000, got "big"
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace toml {
inline namespace v3 {
class table;
}
}  // namespace toml

namespace zmesh::rpc {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One [section] of the mesh file. A missing section reads as empty.
class ConfigSection {
 public:
  // `baseDir`: where relative paths in it start (the mesh file's directory).
  ConfigSection(std::string source, std::string name, const toml::table* table,
                std::string baseDir = {});

  std::string string(std::string_view key, std::string fallback) const;
  int64_t integer(std::string_view key, int64_t fallback, int64_t min, int64_t max) const;
  bool boolean(std::string_view key, bool fallback) const;
  // "250ms", "30s", "5m", "1h", "2d"; a bare integer is milliseconds. Outside
  // [min, max] is an error; the default max keeps a count of milliseconds
  // within 32 bits, so no caller narrows it silently. Pass min = 1ms where 0
  // would break things.
  std::chrono::milliseconds duration(std::string_view key, std::chrono::milliseconds fallback,
                                     std::chrono::milliseconds min = std::chrono::milliseconds(0),
                                     std::chrono::milliseconds max = std::chrono::hours(24)) const;
  // A size in bytes: a bare integer, or "512kb", "64mb", "2gb" (also "KiB",
  // "MiB", "GiB": units of 1024, as Redis counts them; any case). Outside
  // [min, max] is an error.
  uint64_t bytes(std::string_view key, uint64_t fallback, uint64_t min, uint64_t max) const;
  std::vector<std::string> strings(std::string_view key) const;
  // A string naming a file or directory; relative to the mesh file's directory
  // (not the process's), so every process reading the file means the same place.
  std::string path(std::string_view key, std::string fallback) const;
  // The string at `key` — or `flag`, a command-line flag's value, when given —
  // read by `parse`, whose std::invalid_argument becomes this key's error, or
  // the flag's (fsync = "sometimes", --fsync sometimes).
  template <typename Parse>
  auto parsed(std::string_view key, std::string fallback, const std::optional<std::string>& flag,
              Parse parse) const -> decltype(parse(std::string())) {
    try {
      return parse(flag.value_or(string(key, std::move(fallback))));
    } catch (const std::invalid_argument& e) {
      if (!flag) fail(key, e.what());
      std::string option(key);  // the flag spells the key with dashes: --data-dir
      for (auto& c : option) c = c == '_' ? '-' : c;
      throw ConfigError("--" + option + ": " + e.what());
    }
  }
  bool has(std::string_view key) const;
  bool present() const { return table_ != nullptr; }
  // A nested table ([gateway.tokens] under [gateway]), named "<this>.<key>" in errors.
  ConfigSection child(std::string_view key) const;
  // An array of tables ([[gateway.routes]] or `key = [{…}, {…}]`), each named
  // "<this>.<key>[i]" in errors. Missing: empty.
  std::vector<ConfigSection> tables(std::string_view key) const;
  // A table of strings (`descriptors = { tenant = "acme" }`), in key order.
  std::vector<std::pair<std::string, std::string>> stringTable(std::string_view key) const;
  // The keys of this table, in file order.
  std::vector<std::string> keys() const;
  // Throws for any key not in `known` (a typo must not silently fall back).
  // Fails naming the first key that is in neither list.
  void rejectUnknown(std::initializer_list<std::string_view> known,
                     std::span<const std::string_view> alsoKnown = {}) const;
  const std::string& name() const { return name_; }
  [[noreturn]] void fail(std::string_view key, std::string_view reason) const;

 private:
  std::string source_;
  std::string name_;
  const toml::table* table_;
  std::string baseDir_;
};

class MeshConfig {
 public:
  static MeshConfig load(const std::string& path);
  static MeshConfig parse(std::string_view text, std::string source);
  MeshConfig(MeshConfig&&) noexcept;
  MeshConfig& operator=(MeshConfig&&) noexcept;
  ~MeshConfig();

  ConfigSection section(std::string_view name) const;
  bool has(std::string_view name) const;
  const std::string& source() const { return source_; }

 private:
  MeshConfig();
  std::string source_;
  std::string baseDir_;  // the file's directory, absolute; empty for parsed text
  std::unique_ptr<toml::table> root_;
};

// Parses "250ms" / "30s" / "5m" / "1h" / "2d"; nullopt when malformed.
std::optional<std::chrono::milliseconds> parseDuration(std::string_view text);
// Parses 4096 / "512kb" / "64MiB" / "2gb" (see ConfigSection::bytes); nullopt when malformed.
std::optional<uint64_t> parseBytes(std::string_view text);

}  // namespace zmesh::rpc
