// The embedded backing store: one SQLite 3 file (the default mesh keeps it
// under the cache's data directory).
//
// WAL journal, synchronous=FULL: in WAL mode NORMAL skips the fsync at
// commit, so a power loss could take back transactions apply() already
// returned from while the cache has told its clients they are stored; FULL
// makes a returned apply() durable, the promise PostgreSQL gives by default.
// The helper thread puts many writes in one apply(), so the fsync is shared.
//
// claim(): an exclusive flock on "<path>-<table>.claim" (which holds the
// owner's name and pid), not SQLite's own locking_mode=EXCLUSIVE: that would also shut out
// readers (an operator's sqlite3 shell, a backup) and cannot say who holds the
// database. The kernel drops a flock when its process dies, so no stale owner
// row outlives a crash, and flock conflicts between two opens in one process
// too, unlike the POSIX locks SQLite uses.
#pragma once

#include <string>

#include "backing_store.h"

struct sqlite3;
struct sqlite3_stmt;

namespace zmesh::cache {

class SqliteStore final : public BackingStore {
 public:
  // Opens (creating the file and table if missing) or throws StoreError with the path.
  explicit SqliteStore(const BackingConfig& config);
  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  std::optional<std::string> get(std::string_view key) override;
  void apply(std::span<const Write> writes) override;
  void scanKeys(std::string_view prefix,
                const std::function<void(std::string_view key)>& each) override;
  uint64_t count(std::string_view prefix) override;
  void claim(std::string_view owner) override;
  std::string describe() const override { return describe_; }

 private:
  struct Statements;
  [[noreturn]] void fail(int code, const std::string& doing) const;
  void exec(const char* sql, const std::string& doing);
  void checkSchema();

  BackingConfig config_;
  std::string path_;
  std::string describe_;
  sqlite3* db_ = nullptr;
  std::unique_ptr<Statements> statements_;
  int claimFd_ = -1;
};

}  // namespace zmesh::cache
