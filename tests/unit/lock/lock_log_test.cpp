// The lock service's log as a restart reads it: records replayed into the
// state to restore, restored into a table, and a snapshot of that table read
// back as the same table — with the awkward cases a real log has (a name
// freed many times, a lease whose session ended, a lock-delay running, a
// wall clock stepped back).
#include "lock_log.h"

#include <catch2/catch.hpp>

#include "zmesh/rpc/frame.h"
#include "zmesh/storage/env.h"

using namespace zmesh;
using namespace zmesh::lock;

namespace {

constexpr int64_t kWall = 1'700'000'000'000;  // Unix ms at monotonic 0 of the restart

template <typename Fill>
std::string record(Fill fill) {
  capnp::MallocMessageBuilder m;
  fill(m.initRoot<idl::LockLogRecord>());
  return rpc::toRecord(m);
}

std::string grant(const std::string& name, const std::string& owner, uint64_t token,
                  int64_t expiresAtMs, uint64_t session = 0, uint32_t permits = 0) {
  return record([&](idl::LockLogRecord::Builder r) {
    auto g = r.initGrant();
    g.setName(name);
    g.setOwner(owner);
    g.setToken(token);
    g.setPermits(permits);
    g.setSession(session);
    g.setExpiresAtMs(expiresAtMs);
  });
}

std::string freed(uint64_t token) {
  return record([&](idl::LockLogRecord::Builder r) { r.setFree(token); });
}

LockLogState replay(const std::vector<std::string>& records) {
  LockLogState state;
  for (auto& r : records) replayRecord(state, r);
  return state;
}

LockOptions withDelay(Millis delay) {
  LockOptions o;
  o.lockDelay = delay;
  return o;
}

}  // namespace

TEST_CASE("lock log: a name acquired and freed many times restores with its last token",
          "[lock][log]") {
  auto state = replay({record([](auto r) { r.setTokens(100); }), grant("x", "a", 1, kWall + 5000),
                       freed(1), grant("x", "b", 2, kWall + 5000), freed(2),
                       grant("x", "a", 3, kWall + 5000), freed(3)});
  LockTable table;
  restore(table, state, 0, kWall);
  CHECK_FALSE(table.inspect("x", 0));
  CHECK(table.validate("x", 3, 0).current == 3);
  CHECK(table.retained().size() == 1);
  CHECK(table.nextToken() == 100);
}

TEST_CASE("lock log: held leases keep the time they had left, capped at max_ttl", "[lock][log]") {
  LockOptions o;
  o.maxTtl = 60'000;
  LockTable table(o);
  auto state = replay({grant("a", "o", 1, kWall + 5000),
                       // Granted for 10 min by a service whose max_ttl was larger, or a wall
                       // clock stepped back since: never more than max_ttl from now.
                       grant("b", "o", 2, kWall + 600'000),
                       grant("c", "o", 3, kWall - 10)});  // expired while down
  restore(table, state, 1000, kWall);
  CHECK(table.inspect("a", 1000)->holders.at(0).expiresAt == 6000);
  CHECK(table.inspect("b", 1000)->holders.at(0).expiresAt == 61'000);
  Events events;
  table.advance(1000, events);
  REQUIRE(events.size() == 1);
  CHECK(events[0].kind == Event::Kind::expired);
  CHECK(events[0].lease.token == 3);
}

TEST_CASE("lock log: a lease whose session ended is not restored but its token is remembered",
          "[lock][log]") {
  auto state =
      replay({record([](auto r) {
                r.initOpenSession().setId(1);
                r.getOpenSession().setTimeoutMs(5000);
              }),
              grant("s", "o", 2, kWall + 5000, 1), record([](auto r) { r.setCloseSession(1); })});
  LockTable table;
  restore(table, state, 0, kWall);
  CHECK_FALSE(table.inspect("s", 0));
  CHECK(table.validate("s", 2, 0).current == 2);
  CHECK(table.sessions().empty());
}

TEST_CASE("lock log: a running lock-delay survives a restart and a snapshot", "[lock][log]") {
  auto state = replay({grant("d", "o", 1, kWall - 100), freed(1), record([](auto r) {
                         auto d = r.initDelay();
                         d.setName("d");
                         d.setUntilMs(kWall + 400);
                       }),
                       record([](auto r) {
                         auto d = r.initDelay();
                         d.setName("over");
                         d.setUntilMs(kWall - 1);
                       })});
  LockTable table(withDelay(1000));
  restore(table, state, 0, kWall);
  REQUIRE(table.inspect("d", 0));
  CHECK(table.inspect("d", 0)->delayedUntil == 400);
  CHECK_FALSE(table.inspect("over", 0));
  // Nothing is granted during it.
  Events events;
  table.setTokenLimit(1000, 0, events);
  CHECK(std::holds_alternative<Failure>(
      table.acquire({.name = "d", .owner = "p", .ttl = 1000}, 1, 10, events)));
  // The snapshot carries it and the last token.
  LockLogState again;
  replaySnapshot(again, lockSnapshot(table, 1000, 10, kWall + 10));
  LockTable copy(withDelay(1000));
  restore(copy, again, 0, kWall + 10);
  REQUIRE(copy.inspect("d", 0));
  CHECK(copy.inspect("d", 0)->delayedUntil == 390);
  CHECK(copy.validate("d", 1, 0).current == 1);
  // A delay is never restored longer than the service's own lock-delay.
  LockTable shorter(withDelay(100));
  restore(shorter, again, 0, kWall + 10);
  CHECK(shorter.inspect("d", 0)->delayedUntil == 100);
}

TEST_CASE("lock log: a snapshot keeps a live name's last token above its holders'", "[lock][log]") {
  LockTable table;
  Events events;
  table.setTokenLimit(1000, 0, events);
  table.acquire({.name = "r", .owner = "a", .ttl = 5000, .mode = Mode::shared}, 1, 0, events);
  table.acquire({.name = "r", .owner = "b", .ttl = 5000, .mode = Mode::shared}, 2, 0, events);
  REQUIRE(table.release("r", "b", 2, 0, events) == std::nullopt);
  CHECK(table.validate("r", 1, 0).current == 2);
  LockLogState state;
  replaySnapshot(state, lockSnapshot(table, 1000, 0, kWall));
  LockTable copy;
  restore(copy, state, 0, kWall);
  CHECK(copy.validate("r", 1, 0).valid);
  CHECK(copy.validate("r", 1, 0).current == 2);
}

TEST_CASE("lock log: state no table can hold is refused as a storage error", "[lock][log]") {
  auto state = replay({grant("x", "a", 1, kWall + 5000), grant("x", "b", 2, kWall + 5000)});
  LockTable table;
  CHECK_THROWS_AS(restore(table, state, 0, kWall), storage::StorageError);
  // Damaged records are refused by name: tests/integration/lock_durability_test.cpp.
}
