// The database behind the cache: the table its write policies write to and
// read through from. One store object is one connection, used by one helper
// thread at a time (never the service loop: every call blocks on I/O). Calls
// are synchronous; failures are StoreError exceptions whose kind says what the
// caller does next.
//
// The table (`zmesh_cache` unless configured) is created if missing:
//   key BLOB/bytea PRIMARY KEY, value BLOB/bytea NOT NULL, updated_ms int64.
// Keys and values are arbitrary bytes, compared as unsigned bytes (memcmp
// order) in both databases, so key order and prefix ranges agree.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

namespace zmesh::cache {

class StoreError : public std::runtime_error {
 public:
  enum class Kind {
    kUnavailable,  // cannot connect, connection lost, locked or busy past the timeout,
                   // disk full, read-only: retry later (with back-off)
    kClaimed,      // another cache holds the claim on this table (its name is in the message)
    kRejected,     // this write can never succeed (a key or value over a limit): do not retry
    kBadConfig,    // the configuration is wrong (kind, path, conninfo, table name)
    kFatal,        // schema mismatch or an unexpected database error
  };
  StoreError(Kind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};
const char* kindName(StoreError::Kind kind);

// One write of a batch: a value to store, or nullopt to delete the key.
struct Write {
  std::string key;
  std::optional<std::string> value;
};

class BackingStore {
 public:
  virtual ~BackingStore() = default;

  // The stored value, or nullopt when the key is absent.
  virtual std::optional<std::string> get(std::string_view key) = 0;
  // One transaction: the writes in order (a later write to a key wins), all or
  // nothing. Re-applying a batch after kUnavailable is safe: it is idempotent.
  virtual void apply(std::span<const Write> writes) = 0;
  // Every key that starts with `prefix`, in key order, in batches (memory is
  // bounded by one batch, and no read transaction is held across batches, so
  // writes made meanwhile may or may not be seen). `each` may call this store.
  virtual void scanKeys(std::string_view prefix,
                        const std::function<void(std::string_view key)>& each) = 0;
  virtual uint64_t count(std::string_view prefix) = 0;
  // Start-up check that this cache is the table's only writer: held until the
  // store is destroyed (and, for PostgreSQL, taken again after a reconnect).
  // Refused with kClaimed naming the holder. Advisory: it keeps zmesh caches
  // apart, not other programs. PostgreSQL ends a closed session's backend (and
  // releases its claim) a moment after the client hangs up, so a restarted
  // cache retries kClaimed for a few seconds before giving up.
  virtual void claim(std::string_view owner) = 0;
  // "sqlite:/abs/path" or "postgresql://user@host:port/db", never a password.
  virtual std::string describe() const = 0;
};

enum class BackingKind { kSqlite, kPostgresql };

struct BackingConfig {
  BackingKind kind = BackingKind::kSqlite;
  std::string path;                   // sqlite: the database file (its directory must exist)
  std::string conninfo;               // postgresql: a libpq connection string or URI
  std::string table = "zmesh_cache";  // an identifier: [A-Za-z_][A-Za-z0-9_]{0,62}
  // postgresql: libpq's connect_timeout (whole seconds, at least 2; the conninfo may override).
  std::chrono::milliseconds connectTimeout{5000};
  // postgresql: statement_timeout; sqlite: busy_timeout (how long a statement waits for a lock).
  std::chrono::milliseconds statementTimeout{10000};
  // Checked for every write inside apply(); PostgreSQL's btree refuses keys of
  // about 2.7 KB and more, so the default stays below that for both stores.
  size_t maxKeyBytes = 2048;
  size_t maxValueBytes = 256u << 20;
  size_t scanBatch = 1000;  // keys per batch of scanKeys
  // The clock stamped into updated_ms (Unix ms); the system clock when empty.
  std::function<int64_t()> nowMs;
};

// Connects (or opens the file), creates the table if missing and checks its
// columns. Throws StoreError.
std::unique_ptr<BackingStore> openBackingStore(const BackingConfig& config);

// "sqlite" | "postgresql" → the kind; kBadConfig otherwise.
BackingKind parseBackingKind(std::string_view name);
bool isValidTableName(std::string_view name);
// The smallest key greater than every key starting with `prefix`, or nullopt
// when there is none (the prefix is empty or all 0xFF): a prefix scan is the
// range key >= prefix AND key < prefixEnd(prefix), never a LIKE pattern.
std::optional<std::string> prefixEnd(std::string_view prefix);

}  // namespace zmesh::cache
