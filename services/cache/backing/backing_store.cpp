#include "backing_store.h"

#include "postgres_store.h"
#include "sqlite_store.h"

namespace zmesh::cache {

const char* kindName(StoreError::Kind kind) {
  switch (kind) {
    case StoreError::Kind::kUnavailable:
      return "unavailable";
    case StoreError::Kind::kClaimed:
      return "claimed";
    case StoreError::Kind::kRejected:
      return "rejected";
    case StoreError::Kind::kBadConfig:
      return "bad config";
    case StoreError::Kind::kFatal:
      return "fatal";
  }
  return "?";
}

std::unique_ptr<BackingStore> openBackingStore(const BackingConfig& config) {
  switch (config.kind) {
    case BackingKind::kSqlite:
      return std::make_unique<SqliteStore>(config);
    case BackingKind::kPostgresql:
      return std::make_unique<PostgresStore>(config);
  }
  throw StoreError(StoreError::Kind::kBadConfig, "unknown backing store kind");
}

BackingKind parseBackingKind(std::string_view name) {
  if (name == "sqlite") return BackingKind::kSqlite;
  if (name == "postgresql") return BackingKind::kPostgresql;
  throw StoreError(
      StoreError::Kind::kBadConfig,
      "unknown backing store kind '" + std::string(name) + "' (known: sqlite, postgresql)");
}

bool isValidTableName(std::string_view name) {
  // 63 bytes: PostgreSQL's NAMEDATALEN - 1, beyond which it silently truncates.
  if (name.empty() || name.size() > 63) return false;
  auto letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; };
  if (!letter(name[0])) return false;
  for (char c : name)
    if (!letter(c) && !(c >= '0' && c <= '9')) return false;
  return true;
}

std::optional<std::string> prefixEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty() && static_cast<unsigned char>(end.back()) == 0xFF) end.pop_back();
  if (end.empty()) return std::nullopt;
  end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
  return end;
}

}  // namespace zmesh::cache
