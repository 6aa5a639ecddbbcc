// The backing stores behind one interface: every TEMPLATE_TEST_CASE runs the
// same checks against SQLite (a file in a temp dir) and PostgreSQL (a
// throwaway server of the test's own), then each store's own failures.
#include "backing_store.h"

#include <libpq-fe.h>
#include <sqlite3.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "postgres_cluster.h"
#include "process.h"

using namespace zmesh::cache;
using Catch::Matchers::Contains;
using zmesh::testing::PostgresCluster;
using zmesh::testing::TempDir;
using Kind = StoreError::Kind;
using namespace std::chrono_literals;

namespace {

// A SQLite database file in a fresh temp dir.
struct SqliteTarget {
  TempDir dir;
  BackingConfig config() const {
    BackingConfig c;
    c.kind = BackingKind::kSqlite;
    c.path = dir.path() + "/cache.db";
    return c;
  }
  // SQL run outside the store (a table the store did not create).
  void exec(const std::string& sql) const {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(config().path.c_str(), &db) == SQLITE_OK);
    int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr);
    sqlite3_close(db);
    REQUIRE(rc == SQLITE_OK);
  }
};

// A PostgreSQL server started for this test case alone.
struct PostgresTarget {
  PostgresCluster cluster;
  BackingConfig config() const {
    BackingConfig c;
    c.kind = BackingKind::kPostgresql;
    c.conninfo = cluster.conninfo();
    return c;
  }
  void exec(const std::string& sql) const {
    PGconn* conn = PQconnectdb(cluster.conninfo().c_str());
    PGresult* r = PQexec(conn, sql.c_str());
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    std::string error = PQerrorMessage(conn);
    PQclear(r);
    PQfinish(conn);
    INFO(error);
    REQUIRE(ok);
  }
};

std::optional<std::string> some(std::string s) { return s; }

// The error a call throws (failing the test when it throws none).
template <class F>
StoreError errorOf(F&& f) {
  try {
    f();
  } catch (const StoreError& e) {
    return e;
  }
  FAIL("no StoreError thrown");
  throw std::logic_error("unreachable");
}

std::vector<std::string> scan(BackingStore& store, std::string_view prefix) {
  std::vector<std::string> keys;
  store.scanKeys(prefix, [&](std::string_view key) { keys.emplace_back(key); });
  return keys;
}

std::string randomBytes(std::mt19937_64& random, size_t n) {
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(random() & 0xff);
  return s;
}

std::string allBytes() {
  std::string s;
  for (int i = 0; i < 256; ++i) s.push_back(static_cast<char>(i));
  return s;
}

}  // namespace

TEMPLATE_TEST_CASE("get apply overwrite delete and missing keys", "[cache_backing]", SqliteTarget,
                   PostgresTarget) {
  TestType target;
  auto store = openBackingStore(target.config());
  CHECK(store->get("a") == std::nullopt);

  store->apply(std::vector<Write>{{"a", "1"}, {"b", "2"}});
  CHECK(store->get("a") == some("1"));
  CHECK(store->get("b") == some("2"));

  store->apply(std::vector<Write>{{"a", "one"}});
  CHECK(store->get("a") == some("one"));

  store->apply(std::vector<Write>{{"b", std::nullopt}, {"never-there", std::nullopt}});
  CHECK(store->get("b") == std::nullopt);
  CHECK(store->get("never-there") == std::nullopt);

  store->apply(std::vector<Write>{});  // nothing to do
  CHECK(store->count("") == 1);
}

TEMPLATE_TEST_CASE("binary keys and values keep NUL and 0xFF bytes", "[cache_backing]",
                   SqliteTarget, PostgresTarget) {
  TestType target;
  auto store = openBackingStore(target.config());
  const std::string key("\0k\xff\x00\x80\xff", 6);
  const std::string nulOnly(1, '\0');
  const std::string ffOnly(3, '\xff');
  store->apply(std::vector<Write>{
      {key, allBytes()}, {nulOnly, std::string(5, '\0')}, {ffOnly, ffOnly}, {"empty", ""}});

  CHECK(store->get(key) == some(allBytes()));
  CHECK(store->get(nulOnly) == some(std::string(5, '\0')));
  CHECK(store->get(ffOnly) == some(ffOnly));
  // Empty is a value, not an absence.
  CHECK(store->get("empty") == some(""));
  // No truncation at the NUL: the key without its tail is another key.
  CHECK(store->get(std::string_view("\0k", 2)) == std::nullopt);
  CHECK(scan(*store, std::string_view("\0", 1)) == std::vector<std::string>{nulOnly, key});
}

TEMPLATE_TEST_CASE("values of 1 MiB round-trip", "[cache_backing]", SqliteTarget, PostgresTarget) {
  TestType target;
  auto store = openBackingStore(target.config());
  std::mt19937_64 random(zmesh::testing::testSeed());
  std::string big = randomBytes(random, 1 << 20);
  std::string zeros(1 << 20, '\0');
  store->apply(std::vector<Write>{{"big", big}, {"zeros", zeros}});
  CHECK(store->get("big") == some(big));
  CHECK(store->get("zeros") == some(zeros));
}

TEMPLATE_TEST_CASE("ten thousand writes in one apply", "[cache_backing]", SqliteTarget,
                   PostgresTarget) {
  TestType target;
  auto store = openBackingStore(target.config());
  std::vector<Write> writes;
  for (int i = 0; i < 10000; ++i) writes.push_back({"k" + std::to_string(i), std::to_string(i)});
  auto started = std::chrono::steady_clock::now();
  store->apply(writes);
  auto took = std::chrono::steady_clock::now() - started;
  WARN("10000 writes in one apply: "
       << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms on "
       << store->describe());
  CHECK(store->count("k") == 10000);
  CHECK(store->get("k0") == some("0"));
  CHECK(store->get("k9999") == some("9999"));

  for (auto& w : writes) w.value.reset();
  store->apply(writes);
  CHECK(store->count("") == 0);
}

TEMPLATE_TEST_CASE("a batch that fails mid-way leaves nothing", "[cache_backing]", SqliteTarget,
                   PostgresTarget) {
  TestType target;
  auto config = target.config();
  config.maxKeyBytes = 16;
  auto store = openBackingStore(config);
  store->apply(std::vector<Write>{{"kept", "old"}, {"gone", "old"}});

  // The over-long key is refused as its write executes, after three others.
  std::vector<Write> batch = {{"a", "1"},
                              {"kept", "new"},
                              {"gone", std::nullopt},
                              {std::string(17, 'x'), "too long a key"},
                              {"b", "2"}};
  StoreError e = errorOf([&] { store->apply(batch); });
  CHECK(e.kind() == Kind::kRejected);
  CHECK_THAT(e.what(), Contains("17 bytes") && Contains("limit of 16"));

  CHECK(store->get("a") == std::nullopt);
  CHECK(store->get("b") == std::nullopt);
  CHECK(store->get("kept") == some("old"));
  CHECK(store->get("gone") == some("old"));
  CHECK(store->count("") == 2);

  // The store goes on working after the rollback.
  store->apply(std::vector<Write>{{"a", "1"}});
  CHECK(store->get("a") == some("1"));
}

TEMPLATE_TEST_CASE("writes within a batch apply in order", "[cache_backing]", SqliteTarget,
                   PostgresTarget) {
  TestType target;
  auto store = openBackingStore(target.config());
  store->apply(std::vector<Write>{{"set-then-delete", "v"}, {"set-then-delete", std::nullopt}});
  CHECK(store->get("set-then-delete") == std::nullopt);

  store->apply(std::vector<Write>{{"delete-then-set", std::nullopt}, {"delete-then-set", "v"}});
  CHECK(store->get("delete-then-set") == some("v"));

  store->apply(std::vector<Write>{{"twice", "1"}, {"twice", "2"}});
  CHECK(store->get("twice") == some("2"));
}

TEMPLATE_TEST_CASE("scanKeys streams one prefix in key order and never as a pattern",
                   "[cache_backing]", SqliteTarget, PostgresTarget) {
  TestType target;
  auto config = target.config();
  config.scanBatch = 7;  // many batches
  auto store = openBackingStore(config);

  // Prefixes LIKE would treat as wildcards, bytes >= 0x80, and all-0xFF tails
  // (whose range has no upper bound, or one past a carry).
  const std::vector<std::string> prefixes = {"a%",
                                             "a_",
                                             "ab",
                                             "a\x80",
                                             "a\xff",
                                             "a\xff\xff",
                                             "b",
                                             "%",
                                             "_",
                                             std::string("\xff", 1),
                                             std::string(1, '\0')};
  std::mt19937_64 random(zmesh::testing::testSeed());
  std::set<std::string> all;
  std::vector<Write> writes;
  for (const auto& prefix : prefixes)
    for (int i = 0; i < 60; ++i) {
      std::string key = prefix + randomBytes(random, 1 + random() % 4);
      if (all.insert(key).second) writes.push_back({key, "v"});
    }
  store->apply(writes);

  // std::string compares as unsigned bytes, as both databases do.
  auto expected = [&](const std::string& prefix) {
    std::vector<std::string> keys;
    for (const auto& key : all)
      if (key.compare(0, prefix.size(), prefix) == 0) keys.push_back(key);
    return keys;
  };
  for (const auto& prefix : prefixes) {
    INFO("prefix of " << prefix.size() << " bytes, first " << int(uint8_t(prefix[0])));
    auto keys = scan(*store, prefix);
    CHECK(keys == expected(prefix));
    CHECK(store->count(prefix) == expected(prefix).size());
  }
  CHECK(scan(*store, "") == expected(""));
  CHECK(scan(*store, "zzz").empty());

  // The callback may use the store: each batch is read before it runs.
  size_t seen = 0;
  store->scanKeys("a", [&](std::string_view key) {
    CHECK(store->get(key) == some("v"));
    ++seen;
  });
  CHECK(seen == expected("a").size());
}

TEMPLATE_TEST_CASE("count by prefix", "[cache_backing]", SqliteTarget, PostgresTarget) {
  TestType target;
  auto store = openBackingStore(target.config());
  std::vector<Write> writes;
  for (int i = 0; i < 250; ++i) writes.push_back({"user:" + std::to_string(i), "u"});
  for (int i = 0; i < 40; ++i) writes.push_back({"session:" + std::to_string(i), "s"});
  writes.push_back({"user", "no colon"});
  store->apply(writes);
  CHECK(store->count("user:") == 250);
  CHECK(store->count("user") == 251);
  CHECK(store->count("session:") == 40);
  CHECK(store->count("") == 291);
  CHECK(store->count("nothing") == 0);
  CHECK(store->count("user:1") == 1 + 10 + 100);  // 1, 10-19, 100-199
}

TEMPLATE_TEST_CASE("a second claim on the same table is refused until the first store closes",
                   "[cache_backing]", SqliteTarget, PostgresTarget) {
  TestType target;
  auto first = openBackingStore(target.config());
  first->claim("cache-a");
  first->claim("cache-a");  // claiming again is harmless

  auto second = openBackingStore(target.config());
  StoreError e = errorOf([&] { second->claim("cache-b"); });
  CHECK(e.kind() == Kind::kClaimed);
  CHECK_THAT(e.what(), Contains("cache-a") && Contains(first->describe()));

  // Another table is another claim.
  auto config = target.config();
  config.table = "other_table";
  openBackingStore(config)->claim("cache-c");

  first.reset();
  // PostgreSQL ends the first session's backend (and its lock) just after
  // the client hangs up: allow it a moment.
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (true) {
    try {
      second->claim("cache-b");
      break;
    } catch (const StoreError& retry) {
      REQUIRE(retry.kind() == Kind::kClaimed);
      REQUIRE(std::chrono::steady_clock::now() < deadline);
      std::this_thread::sleep_for(20ms);
    }
  }
  auto third = openBackingStore(target.config());
  CHECK_THAT(errorOf([&] { third->claim("cache-c"); }).what(), Contains("cache-b"));
}

TEMPLATE_TEST_CASE("data survives closing and reopening the store", "[cache_backing]", SqliteTarget,
                   PostgresTarget) {
  TestType target;
  {
    auto store = openBackingStore(target.config());
    store->apply(std::vector<Write>{{"a", "1"}, {std::string("\0\xff", 2), allBytes()}});
  }
  auto store = openBackingStore(target.config());
  CHECK(store->get("a") == some("1"));
  CHECK(store->get(std::string("\0\xff", 2)) == some(allBytes()));
  CHECK(store->count("") == 2);
}

TEMPLATE_TEST_CASE("tables are named by config and checked", "[cache_backing]", SqliteTarget,
                   PostgresTarget) {
  TestType target;
  for (const std::string& bad : std::vector<std::string>{"", "zmesh cache", "1abc", "a;drop",
                                                         "a\"b", std::string(64, 'a')}) {
    auto config = target.config();
    config.table = bad;
    StoreError e = errorOf([&] { openBackingStore(config); });
    CHECK(e.kind() == Kind::kBadConfig);
  }

  // Case is kept (the name is quoted) and tables are apart.
  auto config = target.config();
  config.table = "Cache_2";
  auto named = openBackingStore(config);
  auto standard = openBackingStore(target.config());
  named->apply(std::vector<Write>{{"a", "named"}});
  CHECK(standard->get("a") == std::nullopt);
  CHECK(named->get("a") == some("named"));

  // A table of the configured name with other columns is a schema mismatch.
  target.exec("CREATE TABLE wrong_shape (id integer PRIMARY KEY, payload text)");
  config.table = "wrong_shape";
  StoreError e = errorOf([&] { openBackingStore(config); });
  CHECK(e.kind() == Kind::kFatal);
  CHECK_THAT(e.what(), Contains("wrong_shape") && Contains("expected"));
}

TEST_CASE("sqlite paths that cannot hold a database are refused naming the path",
          "[cache_backing]") {
  TempDir dir;
  BackingConfig config;
  config.kind = BackingKind::kSqlite;

  config.path = dir.path();
  StoreError directory = errorOf([&] { openBackingStore(config); });
  CHECK(directory.kind() == Kind::kBadConfig);
  CHECK_THAT(directory.what(), Contains(dir.path()) && Contains("is a directory"));

  config.path = dir.path() + "/missing/cache.db";
  CHECK_THAT(errorOf([&] { openBackingStore(config); }).what(),
             Contains(config.path) && Contains("does not exist"));

  // Unwritable even for root (the tests run as root in CI): /proc takes no files.
  config.path = "/proc/zmesh-backing-test.db";
  StoreError unwritable = errorOf([&] { openBackingStore(config); });
  CHECK(unwritable.kind() == Kind::kUnavailable);
  CHECK_THAT(unwritable.what(), Contains(config.path));

  config.path = dir.path() + "/not-a-database";
  std::ofstream(config.path) << std::string(4096, 'x');
  StoreError garbage = errorOf([&] { openBackingStore(config); });
  CHECK(garbage.kind() == Kind::kFatal);
  CHECK_THAT(garbage.what(), Contains(config.path));

  config.path = dir.path() + "/cache.db";
  auto store = openBackingStore(config);
  CHECK(store->describe() == "sqlite:" + config.path);
}

TEST_CASE("sqlite locked by another writer past the busy timeout is unavailable",
          "[cache_backing]") {
  SqliteTarget target;
  auto config = target.config();
  config.statementTimeout = 200ms;
  auto store = openBackingStore(config);
  store->apply(std::vector<Write>{{"a", "1"}});

  sqlite3* other = nullptr;
  REQUIRE(sqlite3_open(config.path.c_str(), &other) == SQLITE_OK);
  REQUIRE(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK);
  auto started = std::chrono::steady_clock::now();
  StoreError e = errorOf([&] { store->apply(std::vector<Write>{{"b", "2"}}); });
  auto waited = std::chrono::steady_clock::now() - started;
  CHECK(e.kind() == Kind::kUnavailable);
  CHECK_THAT(e.what(), Contains(config.path) && Contains("locked"));
  CHECK(waited >= 150ms);
  CHECK(waited < 5s);
  CHECK(store->get("a") == some("1"));  // readers go on in WAL mode

  sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr);
  sqlite3_close(other);
  store->apply(std::vector<Write>{{"b", "2"}});
  CHECK(store->get("b") == some("2"));
}

TEST_CASE("postgresql refusing connections is unavailable naming host and port",
          "[cache_backing]") {
  int port = zmesh::testing::freePort();  // nothing listens there
  BackingConfig config;
  config.kind = BackingKind::kPostgresql;
  config.conninfo = "host=127.0.0.1 port=" + std::to_string(port) + " user=zmesh dbname=x";
  auto started = std::chrono::steady_clock::now();
  StoreError e = errorOf([&] { openBackingStore(config); });
  CHECK(std::chrono::steady_clock::now() - started < 5s);
  CHECK(e.kind() == Kind::kUnavailable);
  CHECK_THAT(e.what(),
             Contains("127.0.0.1:" + std::to_string(port)) && Contains("Connection refused"));

  config.conninfo = "this is not a conninfo";
  CHECK(errorOf([&] { openBackingStore(config); }).kind() == Kind::kBadConfig);
}

TEST_CASE("postgresql stopped mid-use is unavailable until it is back", "[cache_backing]") {
  PostgresTarget target;
  auto store = openBackingStore(target.config());
  store->claim("cache-a");
  store->apply(std::vector<Write>{{"a", "1"}});

  target.cluster.stop();
  StoreError lost = errorOf([&] { store->get("a"); });
  CHECK(lost.kind() == Kind::kUnavailable);
  CHECK_THAT(lost.what(), Contains(store->describe()));
  // While it is down every call says so, naming where it tried.
  StoreError down = errorOf([&] { store->apply(std::vector<Write>{{"b", "2"}}); });
  CHECK(down.kind() == Kind::kUnavailable);
  CHECK_THAT(down.what(), Contains("127.0.0.1:" + std::to_string(target.cluster.port())));

  target.cluster.start();
  CHECK(store->get("a") == some("1"));  // reconnected
  store->apply(std::vector<Write>{{"b", "2"}});
  CHECK(store->get("b") == some("2"));
  // ... and claimed again on the new session.
  auto other = openBackingStore(target.config());
  CHECK(errorOf([&] { other->claim("cache-b"); }).kind() == Kind::kClaimed);
}

TEST_CASE("postgresql refusing a write rolls its batch back", "[cache_backing]") {
  PostgresTarget target;
  auto config = target.config();
  config.maxKeyBytes = 1 << 20;  // let the server's own btree limit (about 2.7 KB) refuse it
  auto store = openBackingStore(config);
  std::mt19937_64 random(zmesh::testing::testSeed());
  std::vector<Write> batch = {{"a", "1"}, {randomBytes(random, 8000), "v"}, {"b", "2"}};
  StoreError e = errorOf([&] { store->apply(batch); });
  CHECK(e.kind() == Kind::kRejected);
  CHECK_THAT(e.what(), Contains("SQLSTATE 54000"));
  CHECK(store->count("") == 0);
  store->apply(std::vector<Write>{{"a", "1"}});
  CHECK(store->get("a") == some("1"));
}

TEST_CASE("postgresql describe names the server without the password", "[cache_backing]") {
  PostgresTarget target;
  auto config = target.config();
  config.conninfo += " password=secret";
  auto store = openBackingStore(config);
  CHECK(store->describe() ==
        "postgresql://zmesh@127.0.0.1:" + std::to_string(target.cluster.port()) + "/zmesh_test");
  WARN("throwaway PostgreSQL set up in " << target.cluster.setUpTime().count()
                                         << " ms (template copy, start, CREATE DATABASE)");
}
