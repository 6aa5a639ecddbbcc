#include "sqlite_store.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <vector>

#include "store_common.h"

namespace zmesh::cache {

namespace {

using Kind = StoreError::Kind;

Kind kindOf(int code) {
  switch (code & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_FULL:
    case SQLITE_READONLY:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_NOMEM:
    case SQLITE_PROTOCOL:
      return Kind::kUnavailable;
    case SQLITE_TOOBIG:
      return Kind::kRejected;
    default:  // CORRUPT, NOTADB, SCHEMA, CONSTRAINT, MISUSE, ERROR: nothing a retry mends
      return Kind::kFatal;
  }
}

struct StatementDeleter {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using Statement = std::unique_ptr<sqlite3_stmt, StatementDeleter>;

// Leaves a kept statement ready for its next use, whichever way the call ends.
struct ResetOnExit {
  sqlite3_stmt* statement;
  ~ResetOnExit() {
    sqlite3_reset(statement);
    sqlite3_clear_bindings(statement);
  }
};

int bindBytes(sqlite3_stmt* s, int index, std::string_view bytes) {
  // A null pointer would bind NULL, and an empty string_view may have one.
  if (bytes.empty()) return sqlite3_bind_zeroblob(s, index, 0);
  return sqlite3_bind_blob64(s, index, bytes.data(), bytes.size(), SQLITE_STATIC);
}

std::string_view columnBytes(sqlite3_stmt* s, int column) {
  const void* data = sqlite3_column_blob(s, column);
  int size = sqlite3_column_bytes(s, column);
  if (!data || size <= 0) return {};
  return {static_cast<const char*>(data), static_cast<size_t>(size)};
}

std::string quoted(const std::string& identifier) { return "\"" + identifier + "\""; }

}  // namespace

struct SqliteStore::Statements {
  Statement get, upsert, erase, scanBounded, scanOpen, countBounded, countOpen;
};

SqliteStore::SqliteStore(const BackingConfig& config) : config_(config) {
  detail::checkTableName(config);
  std::error_code ec;
  path_ = config.path.empty() ? std::string() : std::filesystem::absolute(config.path, ec).string();
  describe_ = "sqlite:" + path_;
  if (path_.empty())
    throw StoreError(Kind::kBadConfig, "sqlite backing store: no database path configured");
  if (std::filesystem::is_directory(path_, ec))
    throw StoreError(Kind::kBadConfig, describe_ + ": is a directory, not a database file");
  auto parent = std::filesystem::path(path_).parent_path();
  if (!std::filesystem::is_directory(parent, ec))
    throw StoreError(Kind::kBadConfig,
                     describe_ + ": directory " + parent.string() + " does not exist");

  int flags =
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
  int rc = sqlite3_open_v2(path_.c_str(), &db_, flags, nullptr);
  try {
    if (rc != SQLITE_OK) fail(rc, "cannot open");
    sqlite3_busy_timeout(db_, static_cast<int>(config.statementTimeout.count()));

    // The journal mode answers with the mode it ended up in: a file that
    // cannot hold a WAL (read-only, say) stays in its old mode.
    sqlite3_stmt* raw = nullptr;
    rc = sqlite3_prepare_v2(db_, "PRAGMA journal_mode=WAL", -1, &raw, nullptr);
    Statement walMode(raw);
    if (rc != SQLITE_OK) fail(rc, "cannot set journal_mode=WAL");
    rc = sqlite3_step(walMode.get());
    if (rc != SQLITE_ROW) fail(rc, "cannot set journal_mode=WAL");
    auto mode = columnBytes(walMode.get(), 0);
    if (mode != "wal")
      throw StoreError(Kind::kUnavailable,
                       describe_ + ": journal_mode stays '" + std::string(mode) + "', not wal");
    walMode.reset();
    exec("PRAGMA synchronous=FULL", "cannot set synchronous=FULL");

    std::string table = quoted(config.table);
    exec(("CREATE TABLE IF NOT EXISTS " + table +
          " (key BLOB PRIMARY KEY NOT NULL, value BLOB NOT NULL, updated_ms INTEGER NOT NULL)"
          " WITHOUT ROWID")
             .c_str(),
         "cannot create table " + config.table);
    checkSchema();

    statements_ = std::make_unique<Statements>();
    auto prepare = [&](Statement& into, const std::string& sql) {
      sqlite3_stmt* s = nullptr;
      int prc = sqlite3_prepare_v3(db_, sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr);
      into.reset(s);
      if (prc != SQLITE_OK) fail(prc, "cannot prepare '" + sql + "'");
    };
    prepare(statements_->get, "SELECT value FROM " + table + " WHERE key = ?1");
    prepare(statements_->upsert, "INSERT INTO " + table +
                                     " (key, value, updated_ms) VALUES (?1, ?2, ?3)"
                                     " ON CONFLICT(key) DO UPDATE SET value = excluded.value,"
                                     " updated_ms = excluded.updated_ms");
    prepare(statements_->erase, "DELETE FROM " + table + " WHERE key = ?1");
    prepare(statements_->scanBounded,
            "SELECT key FROM " + table + " WHERE key >= ?1 AND key < ?2 ORDER BY key LIMIT ?3");
    prepare(statements_->scanOpen,
            "SELECT key FROM " + table + " WHERE key >= ?1 ORDER BY key LIMIT ?3");
    prepare(statements_->countBounded,
            "SELECT count(*) FROM " + table + " WHERE key >= ?1 AND key < ?2");
    prepare(statements_->countOpen, "SELECT count(*) FROM " + table + " WHERE key >= ?1");
  } catch (...) {
    statements_.reset();
    sqlite3_close_v2(db_);
    db_ = nullptr;
    throw;
  }
}

SqliteStore::~SqliteStore() {
  statements_.reset();
  sqlite3_close_v2(db_);
  // After the database is closed: the claim covers every write it made.
  if (claimFd_ >= 0) ::close(claimFd_);
}

void SqliteStore::fail(int code, const std::string& doing) const {
  std::string message = describe_ + ": " + doing + ": " + sqlite3_errstr(code);
  if (db_) {
    const char* detail = sqlite3_errmsg(db_);
    if (detail && std::strcmp(detail, sqlite3_errstr(code)) != 0)
      message += std::string(" (") + detail + ")";
    if (int err = sqlite3_system_errno(db_)) message += std::string(": ") + std::strerror(err);
  }
  throw StoreError(kindOf(code), message);
}

void SqliteStore::exec(const char* sql, const std::string& doing) {
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) fail(rc, doing);
}

void SqliteStore::checkSchema() {
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v2(db_, "SELECT name, type, pk FROM pragma_table_info(?1)", -1, &raw,
                              nullptr);
  Statement columns(raw);
  if (rc != SQLITE_OK) fail(rc, "cannot read the columns of " + config_.table);
  sqlite3_bind_text(columns.get(), 1, config_.table.c_str(), -1, SQLITE_STATIC);
  std::string found;
  while ((rc = sqlite3_step(columns.get())) == SQLITE_ROW) {
    if (!found.empty()) found += ", ";
    found += std::string(columnBytes(columns.get(), 0)) + " " +
             std::string(columnBytes(columns.get(), 1)) +
             (sqlite3_column_int(columns.get(), 2) ? " PRIMARY KEY" : "");
  }
  if (rc != SQLITE_DONE) fail(rc, "cannot read the columns of " + config_.table);
  const std::string expected = "key BLOB PRIMARY KEY, value BLOB, updated_ms INTEGER";
  if (found != expected)
    throw StoreError(Kind::kFatal, describe_ + ": table " + config_.table + " has columns (" +
                                       found + "), expected (" + expected + ")");
}

std::optional<std::string> SqliteStore::get(std::string_view key) {
  sqlite3_stmt* s = statements_->get.get();
  ResetOnExit reset{s};
  bindBytes(s, 1, key);
  int rc = sqlite3_step(s);
  if (rc == SQLITE_DONE) return std::nullopt;
  if (rc != SQLITE_ROW) fail(rc, "get");
  return std::string(columnBytes(s, 0));
}

void SqliteStore::apply(std::span<const Write> writes) {
  if (writes.empty()) return;
  // IMMEDIATE takes the write lock at once (waiting up to busy_timeout), so a
  // batch never fails half-way for want of it.
  exec("BEGIN IMMEDIATE", "cannot begin a transaction");
  try {
    int64_t now = detail::nowMs(config_);
    for (const Write& write : writes) {
      detail::checkWrite(config_, write, describe_);
      sqlite3_stmt* s = write.value ? statements_->upsert.get() : statements_->erase.get();
      ResetOnExit reset{s};
      bindBytes(s, 1, write.key);
      if (write.value) {
        bindBytes(s, 2, *write.value);
        sqlite3_bind_int64(s, 3, now);
      }
      int rc = sqlite3_step(s);
      if (rc != SQLITE_DONE) fail(rc, write.value ? "write" : "delete");
    }
    exec("COMMIT", "cannot commit");
  } catch (...) {
    // Some errors (a full disk, say) have already rolled the transaction back.
    if (!sqlite3_get_autocommit(db_)) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

void SqliteStore::scanKeys(std::string_view prefix,
                           const std::function<void(std::string_view key)>& each) {
  auto end = prefixEnd(prefix);
  sqlite3_stmt* s = end ? statements_->scanBounded.get() : statements_->scanOpen.get();
  std::string from(prefix);
  std::vector<std::string> batch;
  while (true) {
    batch.clear();
    {
      // The statement is reset before the callback runs: no read transaction
      // stays open across batches (it would hold back WAL checkpoints).
      ResetOnExit reset{s};
      bindBytes(s, 1, from);
      if (end) bindBytes(s, 2, *end);
      sqlite3_bind_int64(s, 3, static_cast<sqlite3_int64>(config_.scanBatch));
      int rc;
      while ((rc = sqlite3_step(s)) == SQLITE_ROW) batch.emplace_back(columnBytes(s, 0));
      if (rc != SQLITE_DONE) fail(rc, "scan");
    }
    for (const std::string& key : batch) each(key);
    if (batch.size() < config_.scanBatch) return;
    // The next key after the last one in byte order is the last one + "\0".
    from = batch.back();
    from.push_back('\0');
  }
}

uint64_t SqliteStore::count(std::string_view prefix) {
  auto end = prefixEnd(prefix);
  sqlite3_stmt* s = end ? statements_->countBounded.get() : statements_->countOpen.get();
  ResetOnExit reset{s};
  bindBytes(s, 1, prefix);
  if (end) bindBytes(s, 2, *end);
  int rc = sqlite3_step(s);
  if (rc != SQLITE_ROW) fail(rc, "count");
  return static_cast<uint64_t>(sqlite3_column_int64(s, 0));
}

void SqliteStore::claim(std::string_view owner) {
  // One claim per table, as PostgreSQL's: two tables in one file are two namespaces.
  std::string lockPath = path_ + "-" + config_.table + ".claim";
  if (claimFd_ < 0) {
    int fd = ::open(lockPath.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
      throw StoreError(Kind::kUnavailable, describe_ + ": cannot open the claim file " + lockPath +
                                               ": " + std::strerror(errno));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      int err = errno;
      std::string holder(256, '\0');
      ssize_t n = ::pread(fd, holder.data(), holder.size(), 0);
      holder.resize(n > 0 ? static_cast<size_t>(n) : 0);
      while (!holder.empty() && holder.back() == '\n') holder.pop_back();
      ::close(fd);
      if (err == EWOULDBLOCK)
        throw StoreError(Kind::kClaimed, describe_ + " is claimed by " +
                                             (holder.empty() ? "another cache" : holder) +
                                             " (lock file " + lockPath + ")");
      throw StoreError(Kind::kUnavailable,
                       describe_ + ": cannot lock " + lockPath + ": " + std::strerror(err));
    }
    claimFd_ = fd;
  }
  std::string text = std::string(owner) + " (pid " + std::to_string(::getpid()) + ")\n";
  if (::ftruncate(claimFd_, 0) != 0 ||
      ::pwrite(claimFd_, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size()))
    throw StoreError(Kind::kUnavailable,
                     describe_ + ": cannot write " + lockPath + ": " + std::strerror(errno));
}

}  // namespace zmesh::cache
