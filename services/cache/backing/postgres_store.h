// The PostgreSQL backing store over libpq: one connection, prepared
// statements, keys and values as bytea in libpq's binary parameter format (no
// text escaping), statement_timeout on the session.
//
// A lost connection fails the call in progress with kUnavailable; the next
// call connects again (preparing the statements and, if this store had
// claimed the table, claiming it again), so the cache retries with back-off.
//
// claim(): a session-level advisory lock, pg_try_advisory_lock(0x7a6d7368,
// the table's oid): held while the session lives and dropped by the server
// when it ends, however it ends. The oid, unlike a hash of the name, cannot
// collide with another table's. The session's application_name is set to the
// owner so that a refusal can name the holder (from pg_locks and
// pg_stat_activity).
#pragma once

#include <cstdint>
#include <string>

#include "backing_store.h"

struct pg_conn;
struct pg_result;

namespace zmesh::cache {

class PostgresStore final : public BackingStore {
 public:
  // Connects, creates the table if missing, checks its columns and prepares
  // the statements; throws StoreError naming host:port and the server's text.
  explicit PostgresStore(const BackingConfig& config);
  ~PostgresStore() override;
  PostgresStore(const PostgresStore&) = delete;
  PostgresStore& operator=(const PostgresStore&) = delete;

  std::optional<std::string> get(std::string_view key) override;
  void apply(std::span<const Write> writes) override;
  void scanKeys(std::string_view prefix,
                const std::function<void(std::string_view key)>& each) override;
  uint64_t count(std::string_view prefix) override;
  void claim(std::string_view owner) override;
  std::string describe() const override { return describe_; }

 private:
  struct ResultDeleter {
    void operator()(pg_result* r) const;
  };
  using Result = std::unique_ptr<pg_result, ResultDeleter>;
  struct Params;

  pg_conn* connection();  // connected, or connects now (throws kUnavailable)
  void connect();
  void setUpSession();
  void takeClaim();
  Result run(const char* statement, const Params& params, const std::string& doing);
  Result runSql(const std::string& sql, const Params& params, const std::string& doing);
  Result check(Result result, const std::string& doing);
  void disconnect();

  BackingConfig config_;
  std::string describe_;
  pg_conn* conn_ = nullptr;
  uint32_t tableOid_ = 0;
  std::optional<std::string> owner_;  // claimed: taken again after a reconnect
};

}  // namespace zmesh::cache
