#include "postgres_store.h"

#include <libpq-fe.h>

#include <algorithm>
#include <deque>
#include <vector>

#include "store_common.h"

namespace zmesh::cache {

namespace {

using Kind = StoreError::Kind;

// The first key of the claim's advisory lock: "zmsh", so that zmesh's locks
// stay apart from any other program's two-key advisory locks on the database.
constexpr int32_t kClaimClass = 0x7a6d7368;

// Oids of the parameter types the prepared statements declare.
constexpr Oid kByteaOid = 17;
constexpr Oid kInt8Oid = 20;

Kind kindOfState(const std::string& state) {
  auto in = [&](const char* prefix) { return state.rfind(prefix, 0) == 0; };
  // 08 connection, 53 resources (disk full, too many connections), 57 operator
  // intervention (shutdown, statement timeout), 58 system I/O, 40 rollback
  // (deadlock, serialization), lock not available, read-only (a standby).
  if (in("08") || in("53") || in("57") || in("58") || in("40") || state == "55P03" ||
      state == "25006")
    return Kind::kUnavailable;
  // 54 program limit (an index row too large), 22 data exception.
  if (in("54") || in("22")) return Kind::kRejected;
  return Kind::kFatal;
}

std::string trimmed(const char* text) {
  std::string s = text ? text : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string quoted(const std::string& identifier) { return "\"" + identifier + "\""; }

int64_t readInt8(const char* bytes) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(bytes[i]);
  return static_cast<int64_t>(v);
}

void ignoreNotice(void*, const char*) {}

}  // namespace

// Parameters for one statement: bytes and int8 in binary, text otherwise.
struct PostgresStore::Params {
  std::vector<const char*> values;
  std::vector<int> lengths;
  std::vector<int> formats;
  std::deque<std::string> owned;  // a deque: growing it moves no element

  Params& bytes(std::string_view b) {
    values.push_back(b.empty() ? "" : b.data());
    lengths.push_back(static_cast<int>(b.size()));
    formats.push_back(1);
    return *this;
  }
  Params& int8(int64_t v) {
    std::string& s = owned.emplace_back(8, '\0');
    for (int i = 7; i >= 0; --i, v = static_cast<int64_t>(static_cast<uint64_t>(v) >> 8))
      s[i] = static_cast<char>(v & 0xff);
    return bytes(s);
  }
  Params& text(std::string t) {
    values.push_back(owned.emplace_back(std::move(t)).c_str());
    lengths.push_back(0);
    formats.push_back(0);
    return *this;
  }
  int size() const { return static_cast<int>(values.size()); }
};

void PostgresStore::ResultDeleter::operator()(pg_result* r) const { PQclear(r); }

PostgresStore::PostgresStore(const BackingConfig& config) : config_(config) {
  detail::checkTableName(config);
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(config.conninfo.c_str(), &error);
  if (!options) {
    std::string text = error ? trimmed(error) : "out of memory";
    PQfreemem(error);
    throw StoreError(Kind::kBadConfig, "postgresql backing store: bad conninfo: " + text);
  }
  std::string host, hostaddr, port, dbname, user;
  for (PQconninfoOption* o = options; o->keyword; ++o) {
    std::string value = o->val ? o->val : "";
    std::string_view keyword = o->keyword;
    if (keyword == "host") host = value;
    if (keyword == "hostaddr") hostaddr = value;
    if (keyword == "port") port = value;
    if (keyword == "dbname") dbname = value;
    if (keyword == "user") user = value;
  }
  PQconninfoFree(options);
  describe_ = "postgresql://" + (user.empty() ? "" : user + "@") +
              (!host.empty()       ? host
               : !hostaddr.empty() ? hostaddr
                                   : "localhost") +
              ":" + (port.empty() ? "5432" : port) + "/" + dbname;
  connect();
}

PostgresStore::~PostgresStore() { disconnect(); }

void PostgresStore::disconnect() {
  if (conn_) PQfinish(conn_);
  conn_ = nullptr;
}

pg_conn* PostgresStore::connection() {
  if (!conn_) connect();
  return conn_;
}

void PostgresStore::connect() {
  // Ours first: what the conninfo says overrides them. tcp_user_timeout: a
  // server that vanishes without closing the connection (a pulled cable) fails
  // the call in seconds, not after TCP's quarter hour of retransmissions.
  auto seconds = std::max<int64_t>(2, (config_.connectTimeout.count() + 999) / 1000);
  std::string timeout = std::to_string(seconds);
  std::string userTimeout = std::to_string(config_.statementTimeout.count() + 5000);
  const char* keywords[] = {"connect_timeout", "tcp_user_timeout", "application_name", "dbname",
                            nullptr};
  const char* values[] = {timeout.c_str(), userTimeout.c_str(), "zmesh-cache",
                          config_.conninfo.c_str(), nullptr};
  conn_ = PQconnectdbParams(keywords, values, /*expand_dbname=*/1);
  if (!conn_) throw StoreError(Kind::kUnavailable, describe_ + ": cannot connect: out of memory");
  if (PQstatus(conn_) != CONNECTION_OK) {
    std::string text = trimmed(PQerrorMessage(conn_));
    disconnect();
    throw StoreError(Kind::kUnavailable, describe_ + ": cannot connect: " + text);
  }
  // "relation already exists, skipping" and the like would go to stderr.
  PQsetNoticeProcessor(conn_, ignoreNotice, nullptr);
  try {
    setUpSession();
  } catch (...) {
    disconnect();
    throw;
  }
}

void PostgresStore::setUpSession() {
  runSql("SET statement_timeout = " + std::to_string(config_.statementTimeout.count()), {},
         "cannot set statement_timeout");
  std::string table = quoted(config_.table);
  std::string create = "CREATE TABLE IF NOT EXISTS " + table +
                       " (key bytea PRIMARY KEY, value bytea NOT NULL, updated_ms bigint NOT NULL)";
  try {
    runSql(create, {}, "cannot create table " + config_.table);
  } catch (const StoreError& e) {
    // Two sessions creating the same table at once: one of them loses the
    // race on the catalog's unique index although IF NOT EXISTS; by now the
    // table exists.
    if (e.kind() != Kind::kFatal) throw;
    runSql(create, {}, "cannot create table " + config_.table);
  }

  Result oid = runSql("SELECT $1::regclass::oid", Params().text(table), "cannot find table");
  tableOid_ = static_cast<uint32_t>(std::stoul(PQgetvalue(oid.get(), 0, 0)));
  Result columns = runSql(
      "SELECT a.attname, format_type(a.atttypid, a.atttypmod), EXISTS (SELECT 1 FROM pg_index i"
      " WHERE i.indrelid = a.attrelid AND i.indisprimary AND i.indnkeyatts = 1"
      " AND i.indkey[0] = a.attnum) FROM pg_attribute a WHERE a.attrelid = $1::oid"
      " AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
      Params().text(std::to_string(tableOid_)), "cannot read the columns of " + config_.table);
  std::string found;
  for (int row = 0; row < PQntuples(columns.get()); ++row) {
    if (!found.empty()) found += ", ";
    found += std::string(PQgetvalue(columns.get(), row, 0)) + " " +
             PQgetvalue(columns.get(), row, 1) +
             (PQgetvalue(columns.get(), row, 2)[0] == 't' ? " PRIMARY KEY" : "");
  }
  const std::string expected = "key bytea PRIMARY KEY, value bytea, updated_ms bigint";
  if (found != expected)
    throw StoreError(Kind::kFatal, describe_ + ": table " + config_.table + " has columns (" +
                                       found + "), expected (" + expected + ")");

  auto prepare = [&](const char* name, const std::string& sql, std::vector<Oid> types) {
    Result r(PQprepare(conn_, name, sql.c_str(), static_cast<int>(types.size()), types.data()));
    check(std::move(r), std::string("cannot prepare ") + name);
  };
  prepare("get", "SELECT value FROM " + table + " WHERE key = $1", {kByteaOid});
  prepare("upsert",
          "INSERT INTO " + table +
              " (key, value, updated_ms) VALUES ($1, $2, $3) ON CONFLICT (key) DO UPDATE"
              " SET value = EXCLUDED.value, updated_ms = EXCLUDED.updated_ms",
          {kByteaOid, kByteaOid, kInt8Oid});
  prepare("erase", "DELETE FROM " + table + " WHERE key = $1", {kByteaOid});
  prepare("scan_bounded",
          "SELECT key FROM " + table + " WHERE key >= $1 AND key < $2 ORDER BY key LIMIT $3",
          {kByteaOid, kByteaOid, kInt8Oid});
  prepare("scan_open", "SELECT key FROM " + table + " WHERE key >= $1 ORDER BY key LIMIT $2",
          {kByteaOid, kInt8Oid});
  prepare("count_bounded", "SELECT count(*) FROM " + table + " WHERE key >= $1 AND key < $2",
          {kByteaOid, kByteaOid});
  prepare("count_open", "SELECT count(*) FROM " + table + " WHERE key >= $1", {kByteaOid});

  if (owner_) takeClaim();
}

PostgresStore::Result PostgresStore::check(Result result, const std::string& doing) {
  if (result) {
    auto status = PQresultStatus(result.get());
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return result;
  }
  std::string text = trimmed(result ? PQresultErrorMessage(result.get()) : PQerrorMessage(conn_));
  if (text.empty()) text = trimmed(PQerrorMessage(conn_));
  const char* state = result ? PQresultErrorField(result.get(), PG_DIAG_SQLSTATE) : nullptr;
  if (!conn_ || PQstatus(conn_) == CONNECTION_BAD) {
    // Reported once; the next call connects again.
    disconnect();
    throw StoreError(Kind::kUnavailable, describe_ + ": connection lost (" + doing + "): " + text);
  }
  std::string sqlState = state ? state : "";
  throw StoreError(kindOfState(sqlState),
                   describe_ + ": " + doing + ": " + text +
                       (sqlState.empty() ? "" : " (SQLSTATE " + sqlState + ")"));
}

PostgresStore::Result PostgresStore::run(const char* statement, const Params& params,
                                         const std::string& doing) {
  pg_conn* c = connection();
  Result r(PQexecPrepared(c, statement, params.size(), params.values.data(), params.lengths.data(),
                          params.formats.data(), /*resultFormat=binary*/ 1));
  return check(std::move(r), doing);
}

PostgresStore::Result PostgresStore::runSql(const std::string& sql, const Params& params,
                                            const std::string& doing) {
  // Only on a live connection: setUpSession runs inside connect().
  Result r(PQexecParams(conn_, sql.c_str(), params.size(), nullptr, params.values.data(),
                        params.lengths.data(), params.formats.data(), /*resultFormat=text*/ 0));
  return check(std::move(r), doing);
}

std::optional<std::string> PostgresStore::get(std::string_view key) {
  Result r = run("get", Params().bytes(key), "get");
  if (PQntuples(r.get()) == 0) return std::nullopt;
  return std::string(PQgetvalue(r.get(), 0, 0), static_cast<size_t>(PQgetlength(r.get(), 0, 0)));
}

void PostgresStore::apply(std::span<const Write> writes) {
  if (writes.empty()) return;
  connection();
  runSql("BEGIN", {}, "cannot begin a transaction");
  try {
    int64_t now = detail::nowMs(config_);
    for (const Write& write : writes) {
      detail::checkWrite(config_, write, describe_);
      if (write.value)
        run("upsert", Params().bytes(write.key).bytes(*write.value).int8(now), "write");
      else
        run("erase", Params().bytes(write.key), "delete");
    }
    runSql("COMMIT", {}, "cannot commit");
  } catch (...) {
    if (conn_ && PQtransactionStatus(conn_) != PQTRANS_IDLE) Result(PQexec(conn_, "ROLLBACK"));
    throw;
  }
}

void PostgresStore::scanKeys(std::string_view prefix,
                             const std::function<void(std::string_view key)>& each) {
  auto end = prefixEnd(prefix);
  std::string from(prefix);
  auto batchSize = static_cast<int64_t>(config_.scanBatch);
  while (true) {
    Params params;
    params.bytes(from);
    if (end) params.bytes(*end);
    params.int8(batchSize);
    // Keyset pages, each its own statement: no transaction or cursor stays
    // open between batches, so a slow callback holds nothing on the server.
    Result r = run(end ? "scan_bounded" : "scan_open", params, "scan");
    int rows = PQntuples(r.get());
    std::string last;
    for (int row = 0; row < rows; ++row) {
      std::string_view key(PQgetvalue(r.get(), row, 0),
                           static_cast<size_t>(PQgetlength(r.get(), row, 0)));
      if (row == rows - 1) last = key;
      each(key);
    }
    if (rows < batchSize) return;
    from = std::move(last);
    from.push_back('\0');  // the next key after `last` in byte order
  }
}

uint64_t PostgresStore::count(std::string_view prefix) {
  auto end = prefixEnd(prefix);
  Params params;
  params.bytes(prefix);
  if (end) params.bytes(*end);
  Result r = run(end ? "count_bounded" : "count_open", params, "count");
  return static_cast<uint64_t>(readInt8(PQgetvalue(r.get(), 0, 0)));
}

void PostgresStore::claim(std::string_view owner) {
  connection();
  if (owner_) {
    // Already held by this session: only the name changes.
    owner_ = std::string(owner);
    runSql("SELECT set_config('application_name', $1, false)", Params().text(*owner_),
           "cannot set application_name");
    return;
  }
  owner_ = std::string(owner);
  try {
    takeClaim();
  } catch (...) {
    owner_.reset();
    throw;
  }
}

void PostgresStore::takeClaim() {
  runSql("SELECT set_config('application_name', $1, false)", Params().text(*owner_),
         "cannot set application_name");
  Result taken = runSql("SELECT pg_try_advisory_lock($1::int4, $2::int4)",
                        Params()
                            .text(std::to_string(kClaimClass))
                            .text(std::to_string(static_cast<int32_t>(tableOid_))),
                        "cannot take the advisory lock");
  if (PQgetvalue(taken.get(), 0, 0)[0] == 't') return;
  Result holder = runSql(
      "SELECT a.application_name, a.pid, coalesce(host(a.client_addr), 'local socket'),"
      " to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ') FROM pg_locks l"
      " JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"
      " AND l.classid = $1::oid AND l.objid = $2::oid AND l.objsubid = 2"
      " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
      Params().text(std::to_string(kClaimClass)).text(std::to_string(tableOid_)),
      "cannot find the claim's holder");
  std::string who = "another session";
  if (PQntuples(holder.get()) > 0)
    who = "'" + std::string(PQgetvalue(holder.get(), 0, 0)) + "' (server pid " +
          PQgetvalue(holder.get(), 0, 1) + " from " + PQgetvalue(holder.get(), 0, 2) +
          ", connected " + PQgetvalue(holder.get(), 0, 3) + ")";
  throw StoreError(Kind::kClaimed,
                   describe_ + ": table " + config_.table + " is claimed by " + who);
}

}  // namespace zmesh::cache
