// zmesh-cache end to end: a real process on free loopback ports, called over
// real sockets — every method and its refusals (nothing changed by a refused
// write), scans by cursor while another connection writes, TTLs running out
// and the active expiry giving memory back, noeviction and eviction under a
// tiny max_memory, events through a real broker (folded under
// events_per_second), and params crafted to be almost right.
#include <capnp/any.h>
#include <xxhash.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "cache_process.h"
#include "crafted.h"
#include "zmesh/client.h"
#include "zmesh/idl/cache.capnp.h"
#include "zmesh/rpc/events.h"

using namespace zmesh;
using namespace zmesh::testing;
using Catch::Matchers::Contains;
using Clock = std::chrono::steady_clock;

namespace {

using Value = std::optional<std::string>;

// The message of a call expected to be refused with `code` ("" and a failed
// check when it is answered otherwise).
std::string refused(StatusCode code, const std::function<void()>& call) {
  auto answer = answerOf(call);
  INFO("answered " << rpc::statusName(answer.code) << ": " << answer.message);
  CHECK(answer.code == code);
  return answer.message;
}

uint64_t keyHash(const std::string& key) { return XXH3_64bits(key.data(), key.size()); }

int64_t msSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

// Every key a scan by cursor returns, `count` a call.
std::vector<std::string> scanAll(const CacheClient& cache, const std::string& prefix,
                                 uint32_t count, int* calls = nullptr) {
  std::vector<std::string> out;
  std::string cursor;
  int n = 0;
  do {
    auto page = cache.scanPage(prefix, cursor, count);
    out.insert(out.end(), page.keys.begin(), page.keys.end());
    cursor = page.cursor;
    REQUIRE(++n < 100000);
  } while (!cursor.empty());
  if (calls) *calls = n;
  return out;
}

// ---- events ----

struct CacheEventSeen {
  std::string topic, key;
  uint64_t hash = 0;
  idl::ChangeReason reason = idl::ChangeReason::SET;
  uint32_t count = 0;
};

std::ostream& operator<<(std::ostream& out, const CacheEventSeen& e) {
  return out << e.topic << " key '" << e.key << "' hash " << e.hash << " reason "
             << static_cast<int>(e.reason) << " count " << e.count;
}

// A subscriber to cache.* events and every event it has read.
struct CacheEvents {
  zmq::context_t context;
  rpc::Subscriber subscriber;
  std::vector<CacheEventSeen> seen;

  explicit CacheEvents(const std::string& xpub) : subscriber(context, xpub, {"cache."}) {}

  std::optional<CacheEventSeen> next(std::chrono::milliseconds limit) {
    auto e = subscriber.receive(limit);
    if (!e) return std::nullopt;
    auto body = e->event().getBody().getAs<idl::CacheEvent>();
    auto key = body.getKey();
    CacheEventSeen out{e->topic,
                       std::string(reinterpret_cast<const char*>(key.begin()), key.size()),
                       body.getKeyHash(), body.getReason(), body.getCount()};
    seen.push_back(out);
    return out;
  }
  // Reads until an event satisfies `match`, or `limit` passes.
  std::optional<CacheEventSeen> waitFor(const std::function<bool(const CacheEventSeen&)>& match,
                                        std::chrono::milliseconds limit = 5s) {
    for (auto& e : seen)
      if (match(e)) return e;
    auto deadline = Clock::now() + limit;
    while (Clock::now() < deadline) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      auto e = next(std::max(left, std::chrono::milliseconds(1)));
      if (e && match(*e)) return e;
    }
    for (auto& e : seen) UNSCOPED_INFO("seen: " << e);
    return std::nullopt;
  }
  std::optional<CacheEventSeen> waitFor(const std::string& topic, const std::string& key) {
    return waitFor([&](const CacheEventSeen& e) { return e.topic == topic && e.key == key; });
  }
  // Reads until nothing came for `quiet`, then forgets what it read.
  void drain(std::chrono::milliseconds quiet) {
    while (next(quiet)) {
    }
    seen.clear();
  }
  // Sets fresh keys until the subscription is seen to carry their events
  // (a subscription misses what is published before it reaches the broker).
  void join(const CacheClient& cache) {
    for (int i = 0; i < 200; ++i) {
      const std::string key = "join:" + std::to_string(i);
      cache.set(key, "v");
      if (waitFor([&](const CacheEventSeen& e) { return e.topic == "cache.set"; }, 100ms)) return;
    }
    FAIL("no cache.set event reached the subscriber");
  }
};

}  // namespace

TEST_CASE("cache: get set del exists and ttl with set's conditions", "[cache]") {
  CacheProcess service;
  CacheConnection c(service.endpoint());
  auto& cache = c.cache;
  const std::string binary("\x00\xff\n\x01", 4);

  CHECK_FALSE(cache.get("k"));
  CHECK_FALSE(cache.exists("k"));
  CHECK_FALSE(cache.ttl("k"));
  CHECK_FALSE(cache.del("k"));
  CHECK(cache.set("k", "v1"));
  CHECK(cache.get("k") == Value("v1"));
  CHECK(cache.exists("k"));
  CHECK(cache.ttl("k") == CacheClient::kNoExpiry);
  CHECK(cache.set(binary, binary));
  CHECK(cache.get(binary) == Value(binary));
  CHECK(cache.set("empty", ""));
  CHECK(cache.get("empty") == Value(""));

  // NX: only when absent; nothing changes when the key is there.
  CHECK_FALSE(cache.set("k", "nx", {.condition = SetCondition::ifAbsent}));
  CHECK(cache.get("k") == Value("v1"));
  CHECK(cache.set("fresh", "nx", {.ttl = 30s, .condition = SetCondition::ifAbsent}));
  CHECK(cache.get("fresh") == Value("nx"));
  // XX: only when present.
  CHECK_FALSE(cache.set("absent", "xx", {.condition = SetCondition::ifPresent}));
  CHECK_FALSE(cache.exists("absent"));
  CHECK(cache.set("k", "xx", {.condition = SetCondition::ifPresent}));
  CHECK(cache.get("k") == Value("xx"));

  // keepTtl keeps the expiry a present key has; a plain set drops it.
  CHECK(cache.set("t", "a", {.ttl = 60s}));
  CHECK(cache.set("t", "b", {.keepTtl = true}));
  CHECK(cache.get("t") == Value("b"));
  auto left = cache.ttl("t");
  REQUIRE(left);
  CHECK(*left > 55s);
  CHECK(*left <= 60s);
  CHECK(cache.set("t", "c", {.condition = SetCondition::ifPresent, .keepTtl = true}));
  left = cache.ttl("t");
  REQUIRE(left);
  CHECK(*left > 55s);
  CHECK(*left <= 60s);
  CHECK(cache.set("t", "d"));
  CHECK(cache.ttl("t") == CacheClient::kNoExpiry);
  // keepTtl on an absent key: no expiry.
  CHECK(cache.set("kt-new", "v", {.keepTtl = true}));
  CHECK(cache.ttl("kt-new") == CacheClient::kNoExpiry);
  // keepTtl with a ttl is a contradiction the service refuses.
  CHECK_THAT(refused(StatusCode::INVALID_ARGUMENT,
                     [&] { cache.set("t", "e", {.ttl = 5s, .keepTtl = true}); }),
             Contains("keep"));
  CHECK(cache.get("t") == Value("d"));

  // An empty key is no key.
  CHECK_THAT(refused(StatusCode::INVALID_ARGUMENT, [&] { cache.set("", "v"); }), Contains("key"));

  CHECK(cache.del("k"));
  CHECK_FALSE(cache.del("k"));
  CHECK_FALSE(cache.get("k"));

  auto s = cache.stats();
  CHECK(s.policy == "lru");
  CHECK(s.fsync == "off");
  CHECK(s.keys == 5);  // binary, empty, fresh, t, kt-new
  CHECK(s.hits > 0);
  CHECK(s.misses > 0);
}

TEST_CASE(
    "cache: mget and mset keep order and are all or nothing - the batch limit is "
    "INVALID_ARGUMENT",
    "[cache]") {
  CacheProcess service({.section = "max_batch = 10\nmax_value_bytes = 1024\n"});
  CacheConnection c(service.endpoint());
  auto& cache = c.cache;

  cache.mset({{"a", "1"}, {"b", "2"}, {"a", "3"}});  // a key given twice: its last value
  auto got = cache.mget({"b", "missing", "a", "b"});
  REQUIRE(got.size() == 4);
  CHECK(got[0] == Value("2"));
  CHECK_FALSE(got[1]);
  CHECK(got[2] == Value("3"));
  CHECK(got[3] == Value("2"));

  cache.mset({{"t1", "x"}, {"t2", "y"}}, 30s);
  for (auto key : {"t1", "t2"}) {
    auto left = cache.ttl(key);
    REQUIRE(left);
    CHECK(*left > 25s);
  }

  // Ten is the limit; eleven are refused — and none of them written.
  std::vector<std::string> keys;
  std::vector<std::pair<std::string, std::string>> entries;
  for (int i = 0; i < 10; ++i) {
    keys.push_back("m" + std::to_string(i));
    entries.emplace_back(keys.back(), "v" + std::to_string(i));
  }
  cache.mset(entries);
  CHECK(cache.mget(keys).size() == 10);
  keys.push_back("m10");
  entries.emplace_back("m10", "v10");
  for (auto& e : entries) e.second = "changed";
  CHECK_THAT(refused(StatusCode::INVALID_ARGUMENT, [&] { cache.mset(entries); }),
             Contains("max_batch"));
  CHECK_THAT(refused(StatusCode::INVALID_ARGUMENT, [&] { cache.mget(keys); }),
             Contains("max_batch"));
  CHECK_FALSE(cache.exists("m10"));
  CHECK(cache.get("m0") == Value("v0"));
  CHECK(cache.get("m9") == Value("v9"));

  // One entry over a limit: nothing of the batch is written.
  CHECK(refused(StatusCode::PAYLOAD_TOO_LARGE, [&] {
          cache.mset({{"m0", "new"}, {"n1", "ok"}, {"n2", std::string(1025, 'v')}});
        }) != "");
  CHECK(refused(StatusCode::INVALID_ARGUMENT, [&] {
          cache.mset({{"n1", "ok"}, {"", "v"}});
        }) != "");
  CHECK(cache.get("m0") == Value("v0"));
  CHECK_FALSE(cache.exists("n1"));
  CHECK(cache.stats().keys == 14);  // a, b, t1, t2, m0..m9
}

TEST_CASE("cache: incr and decr - on text FAILED_PRECONDITION and nothing changed", "[cache]") {
  CacheProcess service;
  CacheConnection c(service.endpoint());
  auto& cache = c.cache;

  CHECK(cache.incr("n") == 1);
  CHECK(cache.incr("n", 9) == 10);
  CHECK(cache.decr("n", 15) == -5);
  CHECK(cache.get("n") == Value("-5"));
  CHECK(cache.ttl("n") == CacheClient::kNoExpiry);
  CHECK(cache.set("kept", "41", {.ttl = 60s}));
  CHECK(cache.incr("kept") == 42);
  auto left = cache.ttl("kept");
  REQUIRE(left);
  CHECK(*left > 55s);

  for (const char* text : {"abc", "", " 1", "+1", "01", "1.5", "-0", "99999999999999999999"}) {
    INFO("value '" << text << "'");
    CHECK(cache.set("text", text));
    CHECK(refused(StatusCode::FAILED_PRECONDITION, [&] { cache.incr("text", 1); }) != "");
    CHECK(cache.get("text") == Value(text));
  }
  CHECK(cache.set("max", "9223372036854775807"));
  CHECK(refused(StatusCode::FAILED_PRECONDITION, [&] { cache.incr("max", 1); }) != "");
  CHECK(cache.get("max") == Value("9223372036854775807"));
  CHECK(cache.set("min", "-9223372036854775808"));
  CHECK(refused(StatusCode::FAILED_PRECONDITION, [&] { cache.decr("min", 1); }) != "");
  CHECK(cache.get("min") == Value("-9223372036854775808"));
  CHECK(cache.incr("min", 0) == INT64_MIN);
  CHECK(cache.get("n") == Value("-5"));
  CHECK(cache.stats().keys == 5);  // n, kept, text, max, min
}

TEST_CASE("cache: an oversized key or value is PAYLOAD_TOO_LARGE and nothing changed", "[cache]") {
  // The service raises max_request_bytes to fit a key and a value; 65536 is above that here.
  CacheProcess service(
      {.section = "max_key_bytes = 64\nmax_value_bytes = 1024\nmax_request_bytes = 65536\n"});
  CacheConnection c(service.endpoint());
  auto& cache = c.cache;
  const std::string longKey(65, 'k'), bigValue(1025, 'v');

  CHECK(cache.set("k", "before"));
  CHECK(cache.set(std::string(64, 'k'), std::string(1024, 'v')));  // at the limits: fine
  CHECK_THAT(refused(StatusCode::PAYLOAD_TOO_LARGE, [&] { cache.set(longKey, "v"); }),
             Contains("key"));
  CHECK_THAT(refused(StatusCode::PAYLOAD_TOO_LARGE, [&] { cache.set("k", bigValue); }),
             Contains("value"));
  CHECK(refused(StatusCode::PAYLOAD_TOO_LARGE, [&] {
          cache.mset({{"k", "x"}, {longKey, "v"}});
        }) != "");
  CHECK(refused(StatusCode::PAYLOAD_TOO_LARGE, [&] { cache.incr(longKey); }) != "");
  CHECK(cache.get("k") == Value("before"));
  // A key no write could store is refused by reads too, not missed.
  CHECK(refused(StatusCode::PAYLOAD_TOO_LARGE, [&] { cache.exists(longKey); }) != "");
  CHECK(refused(StatusCode::PAYLOAD_TOO_LARGE, [&] { cache.get(longKey); }) != "");
  // A value over max_request_bytes is refused before the service reads it — the same code.
  CHECK(refused(StatusCode::PAYLOAD_TOO_LARGE, [&] { cache.set("k", std::string(100000, 'x')); }) !=
        "");
  CHECK(cache.get("k") == Value("before"));
  CHECK(cache.stats().keys == 2);
  // And the connection goes on serving.
  CHECK(cache.set("after", "ok"));
  CHECK(cache.get("after") == Value("ok"));
}

TEST_CASE("cache: a ttl over max_ttl is INVALID_ARGUMENT and nothing changed", "[cache]") {
  CacheProcess service({.section = "max_ttl = \"1h\"\n"});
  CacheConnection c(service.endpoint());
  auto& cache = c.cache;
  CHECK(cache.set("k", "v", {.ttl = 3600s}));  // at the limit
  CHECK(cache.set("p", "v"));
  CHECK_THAT(refused(StatusCode::INVALID_ARGUMENT, [&] { cache.set("p", "w", {.ttl = 3601s}); }),
             Contains("ttl"));
  CHECK_THAT(refused(StatusCode::INVALID_ARGUMENT, [&] { cache.expire("p", 3601s); }),
             Contains("ttl"));
  CHECK_THAT(refused(StatusCode::INVALID_ARGUMENT,
                     [&] {
                       cache.mset({{"p", "w"}}, 3601s);
                     }),
             Contains("ttl"));
  CHECK(refused(StatusCode::INVALID_ARGUMENT,
                [&] { cache.set("p", "w", {.ttl = std::chrono::milliseconds(INT64_MAX)}); }) != "");
  CHECK(cache.get("p") == Value("v"));
  CHECK(cache.ttl("p") == CacheClient::kNoExpiry);
  CHECK_FALSE(cache.exists("w"));
}

TEST_CASE(
    "cache: scan refuses a cursor it did not hand out and a count of 0 - more than "
    "max_batch is cut to it",
    "[cache]") {
  CacheProcess service({.section = "max_batch = 50\n"});
  CacheConnection c(service.endpoint());
  auto& cache = c.cache;
  for (int i = 0; i < 120; ++i) CHECK(cache.set("s:" + std::to_string(i), "v"));

  // A cursor handed out is 16 lowercase hex digits; anything else is refused.
  auto first = cache.scanPage("", "", 10);
  REQUIRE(first.cursor.size() == 16);
  std::string upper = first.cursor;
  for (auto& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  const bool hasLetter = upper != first.cursor;
  for (const std::string& bad :
       {std::string("xyz"), std::string(15, 'a'), std::string("0123456789ABCDEF"),
        std::string(17, '0'), first.cursor + "0", std::string("0x23456789abcdef"),
        std::string(" 123456789abcdef")}) {
    INFO("cursor '" << bad << "'");
    CHECK_THAT(refused(StatusCode::INVALID_ARGUMENT, [&] { cache.scanPage("", bad, 10); }),
               Contains("cursor"));
  }
  if (hasLetter)
    CHECK(refused(StatusCode::INVALID_ARGUMENT, [&] { cache.scanPage("", upper, 10); }) != "");
  CHECK_THAT(refused(StatusCode::INVALID_ARGUMENT, [&] { cache.scanPage("", "", 0); }),
             Contains("count"));
  // More than max_batch is cut to it (idl/cache.capnp), not refused.
  auto cut = cache.scanPage("", "", 51);
  CHECK(cut.keys.size() <= 50);
  CHECK_FALSE(cut.cursor.empty());
  int calls = 0;
  auto all = scanAll(cache, "", 1000000, &calls);
  CHECK(calls >= 3);
  std::set<std::string> seen(all.begin(), all.end());
  CHECK(seen.size() == 120);
  // A cursor handed out goes on where it was.
  auto rest = scanAll(cache, "", 50);
  seen = std::set<std::string>(rest.begin(), rest.end());
  CHECK(seen.size() == 120);
  // Any 16 lowercase hex digits are a place in hash order: accepted.
  CHECK_NOTHROW(cache.scanPage("", "ffffffffffffffff", 50));
  CHECK_NOTHROW(cache.scanPage("", "0000000000000000", 50));
}

TEST_CASE(
    "cache: a complete scan by cursor returns every key present throughout while another "
    "connection writes",
    "[cache][scan]") {
  CacheProcess service;
  CacheConnection c(service.endpoint());
  std::set<std::string> stable;
  for (int batch = 0; batch < 4; ++batch) {
    std::vector<std::pair<std::string, std::string>> entries;
    for (int i = 0; i < 500; ++i) {
      entries.emplace_back("stable:" + std::to_string(batch * 500 + i), "v");
      stable.insert(entries.back().first);
    }
    c.cache.mset(entries);
  }

  // Another connection adds thousands of keys and removes them again, over
  // and over: the index grows and shrinks under the scan.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> writes{0};
  std::atomic<int> failures{0};
  std::thread writer([&] {
    CacheConnection w(service.endpoint());
    constexpr int kChurn = 6000;
    try {
      while (!stop) {
        for (int i = 0; i < kChurn && !stop; i += 100) {
          std::vector<std::pair<std::string, std::string>> entries;
          for (int j = i; j < i + 100; ++j) entries.emplace_back("churn:" + std::to_string(j), "x");
          w.cache.mset(entries);
          writes += 100;
        }
        for (int i = 0; i < kChurn && !stop; ++i) {
          w.cache.del("churn:" + std::to_string(i));
          ++writes;
        }
      }
    } catch (const RpcError& e) {
      ++failures;
      UNSCOPED_INFO("writer: " << e.what());
    }
  });
  struct Join {
    std::thread& t;
    std::atomic<bool>& stop;
    ~Join() {
      stop = true;
      if (t.joinable()) t.join();
    }
  } join{writer, stop};
  REQUIRE(waitUntil([&] { return writes > 1000; }));

  for (auto [prefix, count] : {std::pair<std::string, uint32_t>{"", 20}, {"stable:", 7}}) {
    INFO("prefix '" << prefix << "', count " << count);
    const uint64_t before = writes;
    int calls = 0;
    auto keys = scanAll(c.cache, prefix, count, &calls);
    const uint64_t during = writes - before;
    std::set<std::string> seen(keys.begin(), keys.end());
    size_t missing = 0;
    for (auto& k : stable)
      if (!seen.count(k)) {
        if (++missing <= 5) UNSCOPED_INFO("missing " << k);
      }
    CHECK(missing == 0);
    for (auto& k : seen) CHECK(k.rfind(prefix, 0) == 0);
    WARN("scan '" << prefix << "' by " << count << ": " << calls << " calls, " << keys.size()
                  << " keys, " << during << " writes meanwhile");
    CHECK(during > 0);
  }
  stop = true;
  writer.join();
  CHECK(failures == 0);
  CHECK(c.stat("cache.rehash_steps") > 0);
}

TEST_CASE("cache: a ttl runs out and get sees it", "[cache][ttl]") {
  CacheProcess service;
  CacheConnection c(service.endpoint());
  auto& cache = c.cache;

  auto set = Clock::now();
  CHECK(cache.set("short", "v", {.ttl = 300ms}));
  auto left = cache.ttl("short");
  if (msSince(set) < 200) {  // a slow machine may have used the time up already
    REQUIRE(left);
    CHECK(*left <= 300ms);
    CHECK(*left > 0ms);
    CHECK(cache.get("short") == Value("v"));
  }
  REQUIRE(waitUntil([&] { return !cache.get("short"); }, 5s));
  CHECK(msSince(set) >= 299);  // not before its time (the clock's ms truncation aside)
  CHECK_FALSE(cache.exists("short"));
  CHECK_FALSE(cache.ttl("short"));

  // expire() sets a ttl on a key that had none; 0 removes one.
  CHECK(cache.set("e", "v"));
  set = Clock::now();
  CHECK(cache.expire("e", 200ms));
  CHECK(cache.set("p", "v", {.ttl = 200ms}));
  CHECK(cache.expire("p", 0ms));
  CHECK(cache.ttl("p") == CacheClient::kNoExpiry);
  // keepTtl carries the expiry over to the new value.
  CHECK(cache.set("kt", "old", {.ttl = 200ms}));
  CHECK(cache.set("kt", "new", {.keepTtl = true}));
  REQUIRE(waitUntil([&] { return !cache.get("e"); }, 5s));
  CHECK(msSince(set) >= 199);
  REQUIRE(waitUntil([&] { return !cache.get("kt"); }, 5s));
  CHECK(cache.get("p") == Value("v"));
  CHECK_FALSE(cache.expire("e", 1s));  // gone: nothing to expire
  // mset's ttl holds for each of its entries.
  CHECK_NOTHROW(cache.mset({{"m1", "a"}, {"m2", "b"}}, 200ms));
  REQUIRE(waitUntil([&] { return cache.mget({"m1", "m2"}) == std::vector<Value>{{}, {}}; }, 5s));
  CHECK(cache.stats().expired >= 5);
}

TEST_CASE("cache: the active expiry reclaims memory without gets", "[cache][ttl]") {
  CacheProcess service({.section = "expire_interval = \"20ms\"\n"});
  CacheConnection c(service.endpoint());
  constexpr int kKeys = 600;
  for (int batch = 0; batch < kKeys / 200; ++batch) {
    std::vector<std::pair<std::string, std::string>> entries;
    for (int i = 0; i < 200; ++i)
      entries.emplace_back("gone:" + std::to_string(batch * 200 + i), std::string(1000, 'x'));
    c.cache.mset(entries, 300ms);
  }
  CHECK(c.cache.set("stays", "v"));
  auto before = c.stats();
  CHECK(before["cache.keys"] >= 1);
  CHECK(before["cache.memory_used"] > kKeys * 1000);
  // No call touches a key from here on: only the loop's own sweep can remove them.
  REQUIRE(waitUntil([&] { return c.stat("cache.expired_actively") >= kKeys; }, 10s));
  auto after = c.stats();
  INFO("memory_used " << before["cache.memory_used"] << " -> " << after["cache.memory_used"]);
  CHECK(after["cache.keys"] == 1);
  CHECK(after["cache.expired"] == kKeys);
  CHECK(after["cache.memory_used"] < before["cache.memory_used"] - kKeys * 1000);
  CHECK(after["cache.misses"] == before["cache.misses"]);
  CHECK(after["cache.hits"] == before["cache.hits"]);
  CHECK(after["cache.expire_runs"] > 0);
  CHECK(c.cache.get("stays") == Value("v"));
}

TEST_CASE(
    "cache: noeviction with a tiny max memory refuses writes INSUFFICIENT_STORAGE while "
    "reads and dels go on",
    "[cache][memory]") {
  CacheProcess service({.args = {"--policy", "noeviction", "--max-memory", "65536"}});
  CacheConnection c(service.endpoint());
  auto& cache = c.cache;
  const std::string value(1000, 'v');
  int stored = 0;
  Answer refusal;
  for (; stored < 1000; ++stored) {
    refusal = answerOf([&] { cache.set("k" + std::to_string(stored), value); });
    if (refusal.code != StatusCode::OK) break;
  }
  INFO(refusal.message);
  REQUIRE(refusal.code == StatusCode::INSUFFICIENT_STORAGE);
  CHECK_THAT(refusal.message, Contains("noeviction"));
  REQUIRE(stored > 10);
  const std::string refusedKey = "k" + std::to_string(stored);
  CHECK_FALSE(cache.exists(refusedKey));

  // Reads serve; writes that need more memory are refused, nothing is evicted.
  CHECK(cache.get("k0") == Value(value));
  CHECK(cache.mget({"k1", "k2"}) == std::vector<Value>{value, value});
  CHECK(cache.exists("k" + std::to_string(stored - 1)));
  CHECK(codeOf([&] {
          cache.mset({{"n1", "x"}, {"n2", value}});
        }) == StatusCode::INSUFFICIENT_STORAGE);
  CHECK_FALSE(cache.exists("n1"));
  CHECK(codeOf([&] { cache.set("k0", value + value); }) == StatusCode::INSUFFICIENT_STORAGE);
  CHECK(cache.get("k0") == Value(value));
  // A write that does not grow memory goes on.
  CHECK(cache.set("k0", "small"));
  CHECK(cache.get("k0") == Value("small"));
  // Deletes work and make room.
  CHECK(cache.del("k1"));
  CHECK(cache.del("k2"));
  CHECK(cache.set(refusedKey, value));
  CHECK(cache.get(refusedKey) == Value(value));

  auto s = cache.stats();
  CHECK(s.policy == "noeviction");
  CHECK(s.evictions == 0);
  CHECK(s.refusedFull >= 3);
  CHECK(s.memoryLimit == 65536);
  CHECK(s.memoryUsed <= s.memoryLimit);
  CHECK(c.stat("cache.refused_full") == static_cast<int64_t>(s.refusedFull));
}

TEST_CASE("cache: an eviction policy under a tiny max memory evicts and counts",
          "[cache][memory]") {
  const std::string policy = GENERATE("lru", "fifo", "lfu", "random", "lifo", "mru");
  INFO("policy " << policy);
  CacheProcess service({.args = {"--policy", policy, "--max-memory", "65536"}});
  CacheConnection c(service.endpoint());
  auto& cache = c.cache;
  constexpr int kKeys = 400;
  const std::string value(500, 'v');
  for (int i = 0; i < kKeys; ++i) REQUIRE(cache.set("k" + std::to_string(i), value));

  auto s = cache.stats();
  CHECK(s.policy == policy);
  CHECK(s.evictions > 0);
  CHECK(s.keys + s.evictions == kKeys);
  CHECK(s.memoryUsed <= s.memoryLimit + 4096);  // the index may lag by a resize
  CHECK(c.stat("cache.evictions") == static_cast<int64_t>(s.evictions));
  // A write never evicts the key it writes.
  CHECK(cache.exists("k" + std::to_string(kKeys - 1)));
  // Only sets happened: the first key in is the oldest and least used one.
  if (policy == "lru" || policy == "fifo" || policy == "lfu") CHECK_FALSE(cache.exists("k0"));
  if (policy == "lifo" || policy == "mru") CHECK(cache.exists("k0"));
  size_t present = 0;
  for (int i = 0; i < kKeys; ++i) present += cache.exists("k" + std::to_string(i));
  CHECK(present == s.keys);
}

TEST_CASE("cache: events carry the key and its xxh3 hash - set and invalidated and evicted",
          "[cache][events]") {
  CacheProcess service({.section = "expire_interval = \"20ms\"\nevent_key_bytes = 16\n",
                        .args = {"--policy", "lru", "--max-memory", "65536"},
                        .broker = true});
  CacheConnection c(service.endpoint());
  auto& cache = c.cache;
  CacheEvents events(service.xpub());
  events.join(cache);
  events.drain(300ms);

  auto expect = [&](const std::string& topic, const std::string& key,
                    std::optional<idl::ChangeReason> reason = std::nullopt) {
    INFO(topic << " of '" << key << "'");
    auto e = events.waitFor([&](const CacheEventSeen& s) {
      return s.topic == topic && s.key == key && (!reason || s.reason == *reason);
    });
    REQUIRE(e);
    CHECK(e->hash == keyHash(key));
    CHECK(e->count == 1);
  };

  CHECK(cache.set("alpha", "1"));
  expect("cache.set", "alpha", idl::ChangeReason::SET);
  CHECK(cache.set("alpha", "2"));
  expect("cache.invalidated", "alpha", idl::ChangeReason::OVERWRITTEN);
  CHECK(cache.del("alpha"));
  expect("cache.invalidated", "alpha", idl::ChangeReason::DELETED);
  CHECK(cache.set("beta", "1", {.ttl = 100ms}));
  expect("cache.invalidated", "beta", idl::ChangeReason::EXPIRED);  // no get needed
  CHECK(cache.incr("gamma") == 1);
  expect("cache.set", "gamma", idl::ChangeReason::SET);
  cache.mset({{"m1", "a"}, {"m2", "b"}});
  expect("cache.set", "m1", idl::ChangeReason::SET);
  expect("cache.set", "m2", idl::ChangeReason::SET);

  // A key longer than event_key_bytes travels as its hash alone.
  const std::string longKey(40, 'L');
  CHECK(cache.set(longKey, "v"));
  auto e = events.waitFor([&](const CacheEventSeen& s) {
    return s.topic == "cache.set" && s.hash == keyHash(longKey);
  });
  REQUIRE(e);
  CHECK(e->key.empty());
  CHECK(e->count == 1);

  // Fill the 64 KiB: lru's first victim is the first key written of those.
  events.drain(200ms);
  const std::string value(1000, 'v');
  for (int i = 0; i < 100; ++i) REQUIRE(cache.set("fill:" + std::to_string(i), value));
  REQUIRE(cache.stats().evictions > 0);
  auto evicted = events.waitFor([](const CacheEventSeen& s) { return s.topic == "cache.evicted"; });
  REQUIRE(evicted);
  CHECK(evicted->count == 1);
  CHECK(evicted->reason == idl::ChangeReason::EVICTED);
  CHECK(evicted->hash == keyHash(evicted->key));
  CHECK_FALSE(cache.exists(evicted->key));
  // No refusals, nothing dropped on the way.
  CHECK(events.subscriber.gaps() == 0);
  CHECK(c.stat("cache.events_folded") == 0);
}

TEST_CASE("cache: events over events_per_second are folded and their counts add up",
          "[cache][events]") {
  CacheProcess service(
      {.section = "events_per_second = 2\nexpire_interval = \"50ms\"\n", .broker = true});
  CacheConnection c(service.endpoint());
  CacheEvents events(service.xpub());
  events.join(c.cache);
  events.drain(500ms);  // what the join folded is flushed by now
  const int64_t foldedBefore = c.stat("cache.events_folded");

  constexpr int kBurst = 100;
  for (int i = 0; i < kBurst; ++i) REQUIRE(c.cache.set("burst:" + std::to_string(i), "v"));
  uint64_t sum = 0;
  std::vector<CacheEventSeen> sets;
  auto deadline = Clock::now() + 5s;
  while (sum < kBurst && Clock::now() < deadline) {
    auto e = events.next(100ms);
    if (!e || e->topic != "cache.set") continue;
    sets.push_back(*e);
    sum += e->count;
  }
  // Nothing more comes once they add up.
  while (auto e = events.next(300ms))
    if (e->topic == "cache.set") {
      sets.push_back(*e);
      sum += e->count;
    }
  for (auto& e : sets) UNSCOPED_INFO(e);
  CHECK(sum == kBurst);
  CHECK(sets.size() >= 2);
  CHECK(sets.size() <= 12);
  REQUIRE_FALSE(sets.empty());
  // The folded event is the latest of those it stands for.
  CHECK(sets.back().key == "burst:" + std::to_string(kBurst - 1));
  CHECK(sets.back().hash == keyHash(sets.back().key));
  CHECK(c.stat("cache.events_folded") - foldedBefore >= kBurst - static_cast<int64_t>(sets.size()));
}

TEST_CASE("cache: params almost right are INVALID_ARGUMENT naming the field and change nothing",
          "[cache][crafted]") {
  CacheProcess service;
  CacheConnection c(service.endpoint());
  auto& cache = c.cache;
  CHECK(cache.set("victim", "before"));
  auto keysBefore = cache.stats().keys;
  rpc::CallOptions options;
  options.timeout = 5s;

  auto check = [&](const char* method, const crafted::Bytes& params, const char* field) {
    auto reply = callCache(c.channel, method, crafted::frame(params), options);
    INFO(method << ": " << rpc::statusName(reply.status.code) << ": " << reply.status.message);
    CHECK(reply.status.code == StatusCode::INVALID_ARGUMENT);
    CHECK_THAT(reply.status.message, Contains(field));
  };
  for (auto damage : {crafted::Damage::kStructPointer, crafted::Damage::kCapability}) {
    INFO(crafted::name(damage));
    {
      capnp::MallocMessageBuilder m;
      auto p = m.initRoot<idl::Cache::SetParams>();
      p.setKey(dataOf("victim"));
      p.setValue(dataOf("after"));
      check("set", crafted::damaged(m, 0, damage), "key");
      check("set", crafted::damaged(m, 1, damage), "value");
    }
    for (auto method : {"get", "del", "exists", "ttl"}) {
      capnp::MallocMessageBuilder m;
      m.initRoot<idl::Cache::GetParams>().setKey(dataOf("victim"));  // key @0 in each
      check(method, crafted::damaged(m, 0, damage), "key");
    }
    {
      capnp::MallocMessageBuilder m;
      auto p = m.initRoot<idl::Cache::IncrParams>();
      p.setKey(dataOf("victim"));
      p.setBy(1);
      check("incr", crafted::damaged(m, 0, damage), "key");
    }
    {
      capnp::MallocMessageBuilder m;
      auto p = m.initRoot<idl::Cache::ExpireParams>();
      p.setKey(dataOf("victim"));
      p.setTtlMs(1);
      check("expire", crafted::damaged(m, 0, damage), "key");
    }
    {
      capnp::MallocMessageBuilder m;
      m.initRoot<idl::Cache::MgetParams>().initKeys(1).set(0, dataOf("victim"));
      check("mget", crafted::damaged(m, 0, damage), "keys");
    }
    {
      capnp::MallocMessageBuilder m;
      auto e = m.initRoot<idl::Cache::MsetParams>().initEntries(1)[0];
      e.setKey(dataOf("victim"));
      e.setValue(dataOf("after"));
      check("mset", crafted::damaged(m, 0, damage), "entries");
    }
    {
      capnp::MallocMessageBuilder m;
      auto p = m.initRoot<idl::Cache::ScanParams>();
      p.setPrefix(dataOf("v"));
      p.setCursor("");
      check("scan", crafted::damaged(m, 0, damage), "prefix");
    }
  }
  {
    capnp::MallocMessageBuilder m;
    auto p = m.initRoot<idl::Cache::ScanParams>();
    p.setPrefix(dataOf("v"));
    p.setCursor("0000000000000000");
    check("scan", crafted::damaged(m, 1, crafted::Damage::kUnterminatedText), "cursor");
  }
  // A key of an entry whose pointer is a struct, deep in an mset.
  {
    capnp::MallocMessageBuilder m;
    auto entries = m.initRoot<idl::Cache::MsetParams>().initEntries(2);
    entries[0].setKey(dataOf("new"));
    entries[0].setValue(dataOf("v"));
    entries[1].setKey(dataOf("victim"));
    entries[1].setValue(dataOf("after"));
    capnp::toAny(entries[1]).getPointerSection()[0].initAs<idl::KeyValue>();
    auto reply = callCache(c.channel, "mset", rpc::toFrame(m), options);
    INFO(reply.status.message);
    CHECK(reply.status.code == StatusCode::INVALID_ARGUMENT);
    CHECK_THAT(reply.status.message, Contains("entries[1].key"));
    CHECK_FALSE(cache.exists("new"));
  }
  // The params' root a list, not a struct.
  {
    auto reply = callCache(c.channel, "set", crafted::frame(crafted::listAsRoot()), options);
    CHECK(reply.status.code == StatusCode::INVALID_ARGUMENT);
  }

  // Nothing changed, and the service still serves.
  CHECK(cache.get("victim") == Value("before"));
  CHECK(cache.ttl("victim") == CacheClient::kNoExpiry);
  CHECK(cache.stats().keys == keysBefore);
  CHECK(service.process().running());
  CHECK(cache.set("after", "ok"));
  CHECK(cache.get("after") == Value("ok"));
  auto stats = c.stats();
  CHECK(stats["rpc.invalid_params"] > 0);
  CHECK(stats["rpc.internal_errors"] == 0);
}
