// The [lock] section as zmesh-lock reads it: defaults, every key, and a bad
// value or an unknown key refused with its line and key.
#include <catch2/catch.hpp>

#include "lock_config.h"

using namespace zmesh;
using Catch::Matchers::Contains;

namespace {

lock::LockServiceOptions parse(const std::string& text) {
  return lock::parseLockOptions(
      rpc::MeshConfig::parse("[lock]\n" + text, "mesh.toml").section("lock"));
}

std::string refusal(const std::string& text) {
  try {
    parse(text);
  } catch (const rpc::ConfigError& e) {
    return e.what();
  }
  return "accepted";
}

}  // namespace

TEST_CASE("lock config: defaults", "[lock][config]") {
  auto o = parse("");
  CHECK(o.fsync == storage::FsyncPolicy::everysec);
  CHECK(o.tokenBlock == 10000);
  CHECK(o.table.tokenLowWater == 5000);
  CHECK(o.table.minTtl == 10);
  CHECK(o.table.maxTtl == 3'600'000);
  CHECK(o.table.maxWait == 60'000);
  CHECK(o.table.lockDelay == 0);
  CHECK(o.table.maxHolders == 1'000'000);
  CHECK(o.dataDir.ends_with("var/lock"));
}

TEST_CASE("lock config: every key is read", "[lock][config]") {
  auto o = parse(
      "fsync = \"always\"\ntoken_block = 100\nmin_ttl = \"5ms\"\nmax_ttl = \"2m\"\n"
      "max_wait = \"3s\"\nlock_delay = \"250ms\"\nmin_session_timeout = \"200ms\"\n"
      "max_session_timeout = \"30s\"\nmax_permits = 7\nmax_locks = 8\nmax_waiters = 9\n"
      "max_waiters_per_lock = 10\nmax_shared_holders = 11\nmax_holders = 12\n"
      "max_sessions = 13\nretain_names = 14\nrewrite_after_bytes = 8192\n");
  CHECK(o.fsync == storage::FsyncPolicy::always);
  CHECK(o.tokenBlock == 100);
  CHECK(o.table.tokenLowWater == 50);
  CHECK(o.table.minTtl == 5);
  CHECK(o.table.maxTtl == 120'000);
  CHECK(o.table.maxWait == 3000);
  CHECK(o.table.lockDelay == 250);
  CHECK(o.table.minSessionTimeout == 200);
  CHECK(o.table.maxSessionTimeout == 30'000);
  CHECK(o.table.maxPermits == 7);
  CHECK(o.table.maxLocks == 8);
  CHECK(o.table.maxWaiters == 9);
  CHECK(o.table.maxWaitersPerLock == 10);
  CHECK(o.table.maxSharedHolders == 11);
  CHECK(o.table.maxHolders == 12);
  CHECK(o.table.maxSessions == 13);
  CHECK(o.table.retainNames == 14);
  CHECK(o.rewriteAfterBytes == 8192);
}

TEST_CASE("lock config: bad values are refused by line and key", "[lock][config]") {
  CHECK_THAT(refusal("fsync = \"sometimes\""),
             Contains("mesh.toml:2: lock.fsync: fsync must be one of always|everysec|no"));
  CHECK_THAT(refusal("max_ttl = \"5ms\"\nmin_ttl = \"10ms\""),
             Contains("lock.max_ttl: 5 ms is below min_ttl 10 ms"));
  CHECK_THAT(refusal("min_session_timeout = \"2s\"\nmax_session_timeout = \"1s\""),
             Contains("lock.max_session_timeout: 1000 ms is below min_session_timeout 2000 ms"));
  CHECK_THAT(refusal("token_block = 1"), Contains("lock.token_block"));
  CHECK_THAT(refusal("min_ttl = \"0ms\""), Contains("lock.min_ttl"));
  CHECK_THAT(refusal("max_wait = \"2d\""), Contains("lock.max_wait"));
  CHECK_THAT(refusal("max_permits = 0"), Contains("lock.max_permits"));
  CHECK_THAT(refusal("max_locks = \"many\""), Contains("lock.max_locks"));
  CHECK_THAT(refusal("max_holdrs = 5"), Contains("max_holdrs"));
}

TEST_CASE("lock config: a bad --fsync is named as the flag", "[lock][config]") {
  auto config = rpc::MeshConfig::parse("[lock]\n", "mesh.toml");  // outlives its section
  try {
    lock::parseLockOptions(config.section("lock"), std::string("never"));
    FAIL("accepted");
  } catch (const rpc::ConfigError& e) {
    CHECK_THAT(std::string(e.what()), Contains("--fsync: fsync must be one of"));
  }
}
