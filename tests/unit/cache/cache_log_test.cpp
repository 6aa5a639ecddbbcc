// The cache's log and snapshot as a restart reads them: records replayed into
// a store, snapshots taken a slice at a time while writes go on, and bytes
// that do not read as their type refused with a StorageError naming them.
#include "cache_log.h"

#include <capnp/message.h>

#include <catch2/catch.hpp>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "cache_store.h"
#include "zmesh/idl/cache.capnp.h"
#include "zmesh/rpc/frame.h"
#include "zmesh/storage/env.h"

using namespace zmesh::cache;
using zmesh::storage::StorageError;

namespace {

using Content = std::map<std::string, std::pair<std::string, Millis>>;

// Everything live in a store, with expiry times.
Content contentOf(CacheStore& store, Millis now) {
  Content out;
  ScanCursor c;
  while (!c.done) {
    c = store.scanRange(c.position, UINT64_MAX, 100, now,
                        [&](std::string_view k, std::string_view v, Millis e) {
                          out[std::string(k)] = {std::string(v), e};
                        });
  }
  return out;
}

// The first differences, readable: "" when equal.
std::string differences(const Content& got, const Content& want) {
  std::string out;
  int shown = 0;
  auto note = [&](const std::string& line) {
    if (shown++ < 5) out += line + "\n";
  };
  for (auto& [k, v] : want) {
    auto it = got.find(k);
    if (it == got.end())
      note("missing " + k);
    else if (it->second != v)
      note(k + ": got " + std::to_string(it->second.first.size()) + " bytes expiring " +
           std::to_string(it->second.second) + ", want " + std::to_string(v.first.size()) +
           " bytes expiring " + std::to_string(v.second));
  }
  for (auto& [k, v] : got)
    if (!want.count(k)) note("extra " + k);
  return out;
}

CacheOptions unlimited() {
  CacheOptions o;
  o.policy = Policy::lru;
  o.maxMemory = uint64_t{1} << 30;
  return o;
}

}  // namespace

TEST_CASE("cache log: each record replays to what it recorded", "[cache][log]") {
  const Millis now = 1'700'000'000'000;
  std::vector<std::string> log;
  LogRecorder recorder([&](std::string r) { log.push_back(std::move(r)); });
  CacheStore live(unlimited(), &recorder);
  REQUIRE(std::get<bool>(live.set("a", "1", {}, now)));
  REQUIRE(std::get<bool>(live.set(std::string("b\0b", 3), std::string("\0\xff", 2), {5000}, now)));
  REQUIRE(std::get<int64_t>(live.incr("n", 41, now)) == 41);
  REQUIRE(std::get<int64_t>(live.incr("n", 1, now)) == 42);
  REQUIRE(std::get<bool>(live.expire("a", 60'000, now)));
  REQUIRE(std::get<bool>(live.set("gone", "x", {}, now)));
  REQUIRE(live.del("gone", now));
  REQUIRE(std::get<bool>(live.set("persist", "p", {1000}, now)));
  REQUIRE(std::get<bool>(live.expire("persist", 0, now)));

  CacheStore replayed(unlimited());
  for (auto& r : log) replayRecord(replayed, r, now + 10);
  CHECK(differences(contentOf(replayed, now + 10), contentOf(live, now + 10)) == "");
  CHECK(replayed.get("n", now + 10) == std::optional<std::string_view>("42"));
  CHECK(replayed.ttl("persist", now + 10) == -1);

  SECTION("a restart after an expiry time leaves the key out, and removes what it replaced") {
    CacheStore later(unlimited());
    for (auto& r : log) replayRecord(later, r, now + 5000);
    CHECK_FALSE(later.exists(std::string("b\0b", 3), now + 5000));
    CHECK(later.exists("a", now + 5000));
  }
}

TEST_CASE(
    "cache log: a snapshot taken in slices while writes go on, plus the log since its cut,"
    " replays to the live state",
    "[cache][log][property]") {
  const uint64_t seed = GENERATE(1u, 2u, 3u, 4u, 5u);
  std::mt19937_64 rng(seed);
  Millis now = 1'700'000'000'000;
  std::vector<std::string> log;
  LogRecorder recorder([&](std::string r) { log.push_back(std::move(r)); });
  CacheOptions o = unlimited();
  o.maxMemory = 64 << 10;  // small: evictions are logged too
  CacheStore live(o, &recorder);
  auto key = [&] { return "k" + std::to_string(rng() % 400); };
  auto mutate = [&] {
    switch (rng() % 7) {
      case 6: {
        // An mset: one batch record with the evictions it made room with.
        std::vector<std::string> keys, values;
        for (int i = 0; i < 4; ++i) {
          keys.push_back(key());
          values.push_back(std::string(rng() % 300, 'm'));
        }
        std::vector<std::pair<std::string_view, std::string_view>> pairs;
        for (int i = 0; i < 4; ++i) pairs.emplace_back(keys[i], values[i]);
        const size_t before = log.size();
        recorder.beginBatch();
        (void)live.mset(pairs, 0, now);
        recorder.endBatch();
        REQUIRE(log.size() - before <= 1);
        break;
      }
      case 0:
      case 1:
        (void)live.set(key(), std::string(rng() % 200, 'v'), {static_cast<Millis>(rng() % 3) * 500},
                       now);
        break;
      case 2:
        live.del(key(), now);
        break;
      case 3:
        (void)live.incr("n" + std::to_string(rng() % 5), 1, now);
        break;
      case 4:
        (void)live.expire(key(), static_cast<Millis>(rng() % 2) * 2000, now);
        break;
      case 5:
        now += static_cast<Millis>(rng() % 50);
        break;
    }
  };
  for (int i = 0; i < 3000; ++i) mutate();

  // The cut: the log from here on goes to the new generation.
  log.clear();
  std::string snapshot;
  ScanCursor c;
  while (!c.done) {
    c = live.scanRange(c.position, UINT64_MAX, 7, now,
                       [&](std::string_view k, std::string_view v, Millis e) {
                         appendSnapshotEntry(snapshot, k, v, e);
                       });
    for (int i = 0; i < 20; ++i) mutate();
  }
  for (int i = 0; i < 500; ++i) mutate();

  CacheOptions big = o;
  big.maxMemory = uint64_t{1} << 30;  // the restart must not evict on its own
  CacheStore restarted(big);
  replaySnapshot(restarted, snapshot, now);
  for (auto& r : log) replayRecord(restarted, r, now);
  CHECK(differences(contentOf(restarted, now), contentOf(live, now)) == "");
}

TEST_CASE("cache log: bytes that are almost a record are refused naming the fault",
          "[cache][log][bad]") {
  CacheStore store(unlimited());
  const Millis now = 1000;
  SECTION("random bytes") {
    CHECK_THROWS_AS(replayRecord(store, "not a capnp message", now), StorageError);
  }
  SECTION("a record whose key pointer is a list of the wrong kind") {
    capnp::MallocMessageBuilder m;
    auto record = m.initRoot<zmesh::idl::CacheLogRecord>();
    record.initSet().setExpiresAtMs(0);
    // Pointer 0 is the key: a struct where Data belongs.
    capnp::toAny(record).getPointerSection()[0].initAs<zmesh::idl::CacheEntry>();
    CHECK_THROWS_WITH(replayRecord(store, zmesh::rpc::toRecord(m), now),
                      Catch::Contains("cache journal"));
    CHECK(store.size() == 0);
  }
  SECTION("a batch inside a batch") {
    capnp::MallocMessageBuilder m;
    auto outer = m.initRoot<zmesh::idl::CacheLogRecord>().initBatch(1);
    outer[0].initBatch(1)[0].setDel(capnp::Data::Reader(reinterpret_cast<const kj::byte*>("k"), 1));
    CHECK_THROWS_WITH(replayRecord(store, zmesh::rpc::toRecord(m), now),
                      Catch::Contains("a batch inside a batch"));
  }
  SECTION("a set of an empty key") {
    CHECK_THROWS_WITH(replayRecord(store, setRecord("", "v", 0), now),
                      Catch::Contains("empty key"));
  }
  SECTION("a snapshot cut inside an entry, or holding something other than a set") {
    std::string snap;
    appendSnapshotEntry(snap, "a", "1", 0);
    CHECK_THROWS_WITH(replaySnapshot(store, snap.substr(0, snap.size() - 3), now),
                      Catch::Contains("claims"));
    CHECK_THROWS_WITH(replaySnapshot(store, snap + "ab", now),
                      Catch::Contains("inside its length"));
    std::string del = delRecord("a");
    std::string bad;
    for (int i = 0; i < 4; ++i) bad.push_back(static_cast<char>((del.size() >> (8 * i)) & 0xff));
    bad += del;
    CHECK_THROWS_WITH(replaySnapshot(store, bad, now), Catch::Contains("is not a set"));
  }
}
