// The cache store call by call on an injected clock: values, the listener's
// calls, TTL boundaries, lazy and stepped expiry, conditions, incr, bad input
// (refused with nothing changed), noeviction, restore, and memory charged.
#include "cache_store.h"

#include <catch2/catch.hpp>
#include <limits>
#include <string>
#include <vector>

#include "model.h"

namespace zmesh::cache::test {
namespace {

const std::vector<Policy> kPolicies = {Policy::fifo, Policy::lifo,   Policy::lru,       Policy::mru,
                                       Policy::lfu,  Policy::random, Policy::noeviction};

struct Harness {
  explicit Harness(CacheOptions o = {}) : store(o, &rec) {}

  Recorder rec;
  CacheStore store;
  Millis now = 1'000'000;

  bool set(std::string_view k, std::string_view v, Millis ttl = 0,
           SetCondition c = SetCondition::always, bool keepTtl = false) {
    auto r = store.set(k, v, SetArgs{ttl, c, keepTtl}, now);
    INFO(why(r));
    REQUIRE(std::holds_alternative<bool>(r));
    return std::get<bool>(r);
  }
  std::optional<std::string> get(std::string_view k) {
    auto v = store.get(k, now);
    if (!v) return std::nullopt;
    return std::string(*v);
  }
  Lines said() { return rec.take(); }
};

// An lru store that holds three entries of `value`'s size and not four.
CacheOptions holdingThree(const std::string& value) {
  CacheOptions o;
  o.policy = Policy::lru;
  o.maxValueBytes = 4096;
  CacheStore probe(o);
  for (int i = 0; i < 3; ++i) probe.set("probe" + std::to_string(i), value, {}, 0);
  o.maxMemory = probe.memoryUsed() + value.size() / 2;
  return o;
}

// What must not change when a call is refused.
struct Snapshot {
  explicit Snapshot(Harness& h)
      : content(contentOf(h.store, h.now).entries),
        memory(h.store.memoryUsed()),
        size(h.store.size()) {
    h.rec.calls.clear();
  }
  void same(Harness& h) const {
    CHECK(h.said() == Lines{});
    CHECK(h.store.memoryUsed() == memory);
    CHECK(h.store.size() == size);
    CHECK(contentOf(h.store, h.now).entries == content);
    CHECK(h.said() == Lines{});
  }
  std::map<std::string, std::pair<std::string, Millis>> content;
  uint64_t memory;
  size_t size;
};

}  // namespace

TEST_CASE("policies parse from their names and print back", "[cache]") {
  for (Policy p : kPolicies) {
    CHECK(parsePolicy(toString(p)) == p);
  }
  CHECK(toString(Policy::noeviction) == "noeviction");
  CHECK(toString(Policy::lfu) == "lfu");
  CHECK_FALSE(parsePolicy("").has_value());
  CHECK_FALSE(parsePolicy("lru ").has_value());
  CHECK_FALSE(parsePolicy("allkeys-lru").has_value());
}

TEST_CASE("set get del and what the listener hears", "[cache]") {
  Harness h;
  CHECK(h.set("a", "1"));
  CHECK(h.said() == Lines{"set a=1 @0"});
  CHECK(h.get("a") == "1");
  CHECK(h.get("b") == std::nullopt);
  CHECK(h.said() == Lines{});
  CHECK(h.set("a", "22"));
  CHECK(h.said() == Lines{"removed a overwritten", "set a=22 @0"});
  CHECK(h.store.del("a", h.now));
  CHECK(h.said() == Lines{"removed a deleted"});
  CHECK_FALSE(h.store.del("a", h.now));
  CHECK(h.said() == Lines{});
  const auto s = h.store.stats();
  CHECK(s.hits == 1);
  CHECK(s.misses == 1);
  CHECK(s.keys == 0);
  CHECK(h.store.size() == 0);
}

TEST_CASE("keys and values are binary-safe and a value may be empty", "[cache]") {
  Harness h;
  const std::string k1("a\0b", 3), k2("a\0c", 3), v(std::string("\0\xff\x01 z", 5));
  CHECK(h.set(k1, v));
  CHECK(h.set(k2, ""));
  CHECK(h.get(k1) == v);
  CHECK(h.get(k2) == "");
  CHECK(h.get(std::string("a", 1)) == std::nullopt);
  CHECK(h.store.exists(k2, h.now));
  CHECK(h.store.size() == 2);
}

TEST_CASE("ttl boundaries on the injected clock", "[cache][ttl]") {
  Harness h;
  const Millis t0 = h.now;
  CHECK(h.set("k", "v", 100));
  CHECK(h.said() == Lines{"set k=v @" + std::to_string(t0 + 100)});
  CHECK(h.store.ttl("k", t0) == Millis{100});
  CHECK(h.store.ttl("k", t0 + 99) == Millis{1});
  CHECK(h.store.nextExpiry() == t0 + 100);
  h.now = t0 + 99;
  CHECK(h.get("k") == "v");
  CHECK(h.store.exists("k", h.now));
  CHECK(h.said() == Lines{});
  h.now = t0 + 100;
  CHECK(h.store.size() == 1);  // still held until touched
  CHECK(h.get("k") == std::nullopt);
  CHECK(h.said() == Lines{"removed k expired"});
  CHECK(h.store.size() == 0);
  const auto s = h.store.stats();
  CHECK(s.expired == 1);
  CHECK(s.hits == 1);
  CHECK(s.misses == 1);
  CHECK(s.keysWithTtl == 0);
  CHECK_FALSE(h.store.nextExpiry().has_value());
}

TEST_CASE("every call that touches an expired key removes it lazily", "[cache][ttl]") {
  const Millis t0 = 5'000;
  auto expiredKey = [&](Harness& h) {
    h.now = t0;
    REQUIRE(h.set("k", "7", 10));
    h.rec.calls.clear();
    h.now = t0 + 10;
  };
  SECTION("get") {
    Harness h;
    expiredKey(h);
    CHECK_FALSE(h.store.get("k", h.now).has_value());
    CHECK(h.said() == Lines{"removed k expired"});
    CHECK(h.store.stats().misses == 1);
  }
  SECTION("exists") {
    Harness h;
    expiredKey(h);
    CHECK_FALSE(h.store.exists("k", h.now));
    CHECK(h.said() == Lines{"removed k expired"});
  }
  SECTION("ttl") {
    Harness h;
    expiredKey(h);
    CHECK_FALSE(h.store.ttl("k", h.now).has_value());
    CHECK(h.said() == Lines{"removed k expired"});
  }
  SECTION("del") {
    Harness h;
    expiredKey(h);
    CHECK_FALSE(h.store.del("k", h.now));
    CHECK(h.said() == Lines{"removed k expired"});
  }
  SECTION("expire") {
    Harness h;
    expiredKey(h);
    auto r = h.store.expire("k", 50, h.now);
    REQUIRE(std::holds_alternative<bool>(r));
    CHECK_FALSE(std::get<bool>(r));
    CHECK(h.said() == Lines{"removed k expired"});
  }
  SECTION("incr starts from zero") {
    Harness h;
    expiredKey(h);
    auto r = h.store.incr("k", 3, h.now);
    REQUIRE(std::holds_alternative<int64_t>(r));
    CHECK(std::get<int64_t>(r) == 3);
    CHECK(h.said() == Lines{"removed k expired", "set k=3 @0"});
    CHECK(h.store.ttl("k", h.now) == Millis{-1});
  }
  SECTION("set if absent sets") {
    Harness h;
    expiredKey(h);
    CHECK(h.set("k", "new", 0, SetCondition::ifAbsent));
    CHECK(h.said() == Lines{"removed k expired", "set k=new @0"});
  }
  SECTION("set if present does not") {
    Harness h;
    expiredKey(h);
    CHECK_FALSE(h.set("k", "new", 0, SetCondition::ifPresent));
    CHECK(h.said() == Lines{"removed k expired"});
    CHECK(h.store.size() == 0);
  }
  SECTION("set with keepTtl keeps nothing of the expired key") {
    Harness h;
    expiredKey(h);
    CHECK(h.set("k", "new", 0, SetCondition::always, true));
    CHECK(h.said() == Lines{"removed k expired", "set k=new @0"});
  }
  SECTION("scan and scanRange do not return it") {
    Harness h;
    expiredKey(h);
    CHECK(contentOf(h.store, h.now).entries.empty());
    ScanCursor c;
    std::vector<std::string> keys;
    while (!c.done) {
      auto r = h.store.scan("", c, 10, h.now);
      keys.insert(keys.end(), r.keys.begin(), r.keys.end());
      c = r.next;
    }
    CHECK(keys.empty());
  }
  Harness h;
  expiredKey(h);
  h.store.get("k", h.now);
  CHECK(h.store.stats().expired == 1);
}

TEST_CASE("set with a ttl then without clears it and keepTtl keeps it", "[cache][ttl]") {
  Harness h;
  const Millis t0 = h.now;
  CHECK(h.set("k", "a", 100));
  h.now = t0 + 40;
  CHECK(h.set("k", "b", 0, SetCondition::always, true));
  CHECK(h.said() == Lines{"set k=a @" + std::to_string(t0 + 100), "removed k overwritten",
                          "set k=b @" + std::to_string(t0 + 100)});
  CHECK(h.store.ttl("k", h.now) == Millis{60});
  CHECK(h.set("k", "c", 0, SetCondition::ifPresent, true));
  CHECK(h.store.ttl("k", h.now) == Millis{60});
  CHECK(h.set("k", "d"));
  CHECK(h.store.ttl("k", h.now) == Millis{-1});
  CHECK(h.store.stats().keysWithTtl == 0);
  CHECK_FALSE(h.store.nextExpiry().has_value());
  CHECK(h.set("k", "e", 500));
  CHECK(h.store.ttl("k", h.now) == Millis{500});
  CHECK(h.set("k", "f", 20));
  CHECK(h.store.ttl("k", h.now) == Millis{20});
  CHECK(h.store.nextExpiry() == h.now + 20);
  // A ttl and keepTtl together: refused.
  Snapshot before(h);
  CHECK(failOf(h.store.set("k", "g", SetArgs{10, SetCondition::always, true}, h.now)) ==
        std::optional<Fail>(Fail::invalidArgument));
  before.same(h);
  // keepTtl on a new key: no expiry.
  CHECK(h.set("n", "x", 0, SetCondition::always, true));
  CHECK(h.store.ttl("n", h.now) == Millis{-1});
}

TEST_CASE("expire sets and removes an expiry", "[cache][ttl]") {
  Harness h;
  CHECK(h.set("k", "v"));
  h.rec.calls.clear();
  auto r = h.store.expire("k", 50, h.now);
  REQUIRE(std::holds_alternative<bool>(r));
  CHECK(std::get<bool>(r));
  CHECK(h.said() == Lines{"expire k @" + std::to_string(h.now + 50)});
  CHECK(h.store.ttl("k", h.now + 10) == Millis{40});
  CHECK(h.store.nextExpiry() == h.now + 50);
  CHECK(h.store.stats().keysWithTtl == 1);
  r = h.store.expire("k", 0, h.now);
  CHECK(std::get<bool>(r));
  CHECK(h.said() == Lines{"expire k @0"});
  CHECK(h.store.ttl("k", h.now + 100) == Millis{-1});
  CHECK_FALSE(h.store.nextExpiry().has_value());
  CHECK(h.store.stats().keysWithTtl == 0);
  h.now += 1000;
  CHECK(h.get("k") == "v");
  r = h.store.expire("missing", 10, h.now);
  CHECK_FALSE(std::get<bool>(r));
  CHECK(h.said() == Lines{});
}

TEST_CASE("set conditions", "[cache]") {
  Harness h;
  CHECK_FALSE(h.set("k", "x", 0, SetCondition::ifPresent));
  CHECK(h.store.size() == 0);
  CHECK(h.set("k", "a", 0, SetCondition::ifAbsent));
  Snapshot before(h);
  CHECK_FALSE(h.set("k", "b", 0, SetCondition::ifAbsent));
  before.same(h);
  CHECK(h.set("k", "c", 0, SetCondition::ifPresent));
  CHECK(h.said() == Lines{"removed k overwritten", "set k=c @0"});
}

TEST_CASE("expireStep removes only expired keys soonest first within its budget", "[cache][ttl]") {
  Harness h;
  const Millis t0 = h.now;
  CHECK(h.set("e50", "v", 50));
  CHECK(h.set("e10", "v", 10));
  CHECK(h.set("e40", "v", 40));
  CHECK(h.set("e20", "v", 20));
  CHECK(h.set("e30", "v", 30));
  CHECK(h.set("p", "v"));
  h.rec.calls.clear();
  CHECK(h.store.expireStep(t0 + 9, 10) == 0);
  CHECK(h.store.nextExpiry() == t0 + 10);
  CHECK(h.store.expireStep(t0 + 35, 2) == 2);
  CHECK(h.said() == Lines{"removed e10 expired", "removed e20 expired"});
  CHECK(h.store.nextExpiry() == t0 + 30);
  CHECK(h.store.expireStep(t0 + 35, 10) == 1);
  CHECK(h.said() == Lines{"removed e30 expired"});
  CHECK(h.store.expireStep(t0 + 35, 10) == 0);
  CHECK(h.said() == Lines{});
  CHECK(h.store.nextExpiry() == t0 + 40);
  CHECK(h.store.size() == 3);
  CHECK(h.store.stats().expired == 3);
  CHECK(h.store.expireStep(t0 + 1000, 0) == 0);
  CHECK(h.store.expireStep(t0 + 1000, 100) == 2);
  CHECK(h.store.size() == 1);
  CHECK_FALSE(h.store.nextExpiry().has_value());
  CHECK(h.store.stats().keysWithTtl == 0);
}

TEST_CASE("expireStep over many keys takes budget per call", "[cache][ttl]") {
  Harness h;
  const Millis t0 = h.now;
  for (int i = 0; i < 1000; ++i) CHECK(h.set("k" + std::to_string(i), "v", 1 + i % 97));
  for (int i = 0; i < 100; ++i) CHECK(h.set("p" + std::to_string(i), "v"));
  const auto empty = [&] {
    CacheOptions o;
    return CacheStore(o).memoryUsed();
  }();
  h.rec.calls.clear();
  Millis last = 0;
  for (int call = 0; call < 10; ++call) {
    CHECK(h.store.expireStep(t0 + 1000, 100) == 100);
    REQUIRE(h.rec.calls.size() == 100);
    for (auto& c : h.rec.calls) {
      REQUIRE(c.why == Removal::expired);
      const Millis at = t0 + 1 + std::stoi(c.key.substr(1)) % 97;
      CHECK(at >= last);
      last = at;
    }
    h.rec.calls.clear();
  }
  CHECK(h.store.expireStep(t0 + 1000, 100) == 0);
  CHECK(h.store.size() == 100);
  CHECK(h.store.stats().expired == 1000);
  for (int i = 0; i < 100; ++i) CHECK(h.store.del("p" + std::to_string(i), h.now));
  CHECK(h.store.stats().memoryUsed == h.store.stats().indexBytes);
  // The index shrinks back a few buckets per call.
  for (int i = 0; i < 10'000 && h.store.memoryUsed() != empty; ++i) h.store.exists("x", h.now);
  CHECK(h.store.memoryUsed() == empty);
}

TEST_CASE("incr parses a decimal int64 and keeps the expiry", "[cache][incr]") {
  Harness h;
  auto incr = [&](std::string_view k, int64_t by) {
    auto r = h.store.incr(k, by, h.now);
    INFO(why(r));
    REQUIRE(std::holds_alternative<int64_t>(r));
    return std::get<int64_t>(r);
  };
  CHECK(incr("n", 5) == 5);
  CHECK(h.said() == Lines{"set n=5 @0"});
  CHECK(incr("n", -7) == -2);
  CHECK(h.get("n") == "-2");
  CHECK(incr("n", 0) == -2);
  CHECK(h.set("big", "9223372036854775806"));
  CHECK(incr("big", 1) == INT64_MAX);
  CHECK(h.get("big") == "9223372036854775807");
  CHECK(h.set("small", "-9223372036854775807"));
  CHECK(incr("small", -1) == INT64_MIN);
  CHECK(h.get("small") == "-9223372036854775808");
  CHECK(h.set("z", "0"));
  CHECK(incr("z", 10) == 10);
  CHECK(h.set("t", "41", 100));
  h.rec.calls.clear();
  CHECK(incr("t", 1) == 42);
  const Lines said = h.said();
  REQUIRE(!said.empty());
  CHECK(said.back() == "set t=42 @" + std::to_string(h.now + 100));
  CHECK(h.store.ttl("t", h.now) == Millis{100});
}

TEST_CASE("incr refuses what is not a decimal int64 and overflow", "[cache][incr]") {
  Harness h;
  const std::vector<std::string> bad = {"abc",
                                        " 1",
                                        "1 ",
                                        "01",
                                        "+1",
                                        "1.5",
                                        "",
                                        "-",
                                        "1e3",
                                        "0x10",
                                        "--1",
                                        "9223372036854775808",
                                        "-9223372036854775809",
                                        std::string("1\0", 2)};
  for (size_t i = 0; i < bad.size(); ++i) REQUIRE(h.set("b" + std::to_string(i), bad[i]));
  REQUIRE(h.set("max", "9223372036854775807"));
  REQUIRE(h.set("min", "-9223372036854775808"));
  Snapshot before(h);
  for (size_t i = 0; i < bad.size(); ++i) {
    INFO("value '" << bad[i] << "'");
    auto r = h.store.incr("b" + std::to_string(i), 1, h.now);
    CHECK(failOf(r) == std::optional<Fail>(Fail::failedPrecondition));
  }
  CHECK(failOf(h.store.incr("max", 1, h.now)) == std::optional<Fail>(Fail::failedPrecondition));
  CHECK(failOf(h.store.incr("min", -1, h.now)) == std::optional<Fail>(Fail::failedPrecondition));
  CHECK(failOf(h.store.incr("max", INT64_MAX, h.now)) ==
        std::optional<Fail>(Fail::failedPrecondition));
  CHECK(failOf(h.store.incr("min", INT64_MIN, h.now)) ==
        std::optional<Fail>(Fail::failedPrecondition));
  before.same(h);
}

TEST_CASE("bad input is refused with its code and nothing changed", "[cache][input]") {
  CacheOptions o;
  o.maxKeyBytes = 16;
  o.maxValueBytes = 64;
  o.maxTtl = 10'000;
  o.maxMemory = 4096;
  Harness h(o);
  REQUIRE(h.set("keep", "v", 500));
  REQUIRE(h.set("n", "1"));
  const std::string longKey(17, 'k'), maxKey(16, 'k');
  const std::string longValue(65, 'v'), maxValue(64, 'v');
  Snapshot before(h);
  auto setFails = [&](std::string_view k, std::string_view v, SetArgs a) {
    return failOf(h.store.set(k, v, a, h.now));
  };
  using F = std::optional<Fail>;
  CHECK(setFails("", "v", {}) == F(Fail::invalidArgument));
  CHECK(setFails(longKey, "v", {}) == F(Fail::payloadTooLarge));
  CHECK(setFails("k", longValue, {}) == F(Fail::payloadTooLarge));
  CHECK(setFails("k", "v", {-1}) == F(Fail::invalidArgument));
  CHECK(setFails("k", "v", {o.maxTtl + 1}) == F(Fail::invalidArgument));
  CHECK(setFails("keep", "v", {-5, SetCondition::ifPresent}) == F(Fail::invalidArgument));
  CHECK(failOf(h.store.incr("", 1, h.now)) == F(Fail::invalidArgument));
  CHECK(failOf(h.store.incr(longKey, 1, h.now)) == F(Fail::payloadTooLarge));
  CHECK(failOf(h.store.expire("", 5, h.now)) == F(Fail::invalidArgument));
  CHECK(failOf(h.store.expire("keep", -1, h.now)) == F(Fail::invalidArgument));
  CHECK(failOf(h.store.expire("keep", o.maxTtl + 1, h.now)) == F(Fail::invalidArgument));
  using P = std::pair<std::string_view, std::string_view>;
  {
    std::vector<P> pairs = {{"a", "1"}, {"", "2"}};
    CHECK(h.store.mset(pairs, 0, h.now)->code == Fail::invalidArgument);
    pairs = {{"a", "1"}, {longKey, "2"}};
    CHECK(h.store.mset(pairs, 0, h.now)->code == Fail::payloadTooLarge);
    pairs = {{"a", "1"}, {"b", longValue}};
    CHECK(h.store.mset(pairs, 0, h.now)->code == Fail::payloadTooLarge);
    pairs = {{"a", "1"}, {"b", "2"}};
    CHECK(h.store.mset(pairs, -1, h.now)->code == Fail::invalidArgument);
    CHECK(h.store.mset(pairs, o.maxTtl + 1, h.now)->code == Fail::invalidArgument);
  }
  before.same(h);
  CHECK(h.store.stats().hits == 0);
  // The limits themselves are allowed.
  CHECK(h.set(maxKey, maxValue, o.maxTtl));
  CHECK(h.store.ttl(maxKey, h.now) == o.maxTtl);
  CHECK(std::get<bool>(h.store.expire("keep", o.maxTtl, h.now)));
}

TEST_CASE("an entry larger than maxMemory is refused without evicting", "[cache][input]") {
  for (Policy p : kPolicies) {
    INFO(toString(p));
    CacheOptions o;
    o.policy = p;
    o.maxMemory = CacheStore(o).memoryUsed() + 600;
    o.maxValueBytes = 4096;
    Harness h(o);
    REQUIRE(h.set("a", "1"));
    REQUIRE(h.set("b", "2"));
    Snapshot before(h);
    auto r = h.store.set("big", std::string(1000, 'v'), {}, h.now);
    CHECK(failOf(r) == std::optional<Fail>(Fail::payloadTooLarge));
    auto r2 = h.store.set("a", std::string(1000, 'v'), {}, h.now);
    CHECK(failOf(r2) == std::optional<Fail>(Fail::payloadTooLarge));
    const std::string big(1000, 'v');
    std::vector<std::pair<std::string_view, std::string_view>> pairs = {{"c", "1"}, {"d", big}};
    auto r3 = h.store.mset(pairs, 0, h.now);
    CHECK((r3 && r3->code == Fail::payloadTooLarge));
    before.same(h);
    CHECK(h.store.stats().evictions == 0);
    CHECK(h.store.stats().refusedFull == 0);
  }
}

TEST_CASE("noeviction refuses writes that do not fit and serves the rest", "[cache][noeviction]") {
  CacheOptions o;
  o.policy = Policy::noeviction;
  o.maxMemory = CacheStore(o).memoryUsed() + 2000;
  Harness h(o);
  int n = 0;
  for (;; ++n) {
    auto r = h.store.set("k" + std::to_string(n), std::string(40, 'v'), {}, h.now);
    if (failOf(r)) {
      CHECK(failOf(r) == std::optional<Fail>(Fail::insufficientStorage));
      break;
    }
    REQUIRE(n < 1000);
  }
  REQUIRE(n > 5);
  CHECK(h.store.stats().refusedFull == 1);
  CHECK(h.store.memoryUsed() <= o.maxMemory);
  h.rec.calls.clear();
  Snapshot before(h);
  const std::string last = "k" + std::to_string(n - 1);
  // A write that grows past the limit: refused, nothing changed.
  CHECK(failOf(h.store.set("k" + std::to_string(n), std::string(40, 'v'), {}, h.now)) ==
        std::optional<Fail>(Fail::insufficientStorage));
  CHECK(failOf(h.store.set(last, std::string(200, 'v'), {}, h.now)) ==
        std::optional<Fail>(Fail::insufficientStorage));
  {
    // The first pair alone would fit (it shrinks k0), the batch does not: nothing is written.
    const std::string v40(40, 'w');
    std::vector<std::pair<std::string_view, std::string_view>> pairs = {
        {"k0", "short"}, {"fresh1", v40}, {"fresh2", v40}};
    auto r = h.store.mset(pairs, 0, h.now);
    CHECK((r && r->code == Fail::insufficientStorage));
  }
  before.same(h);
  CHECK(h.store.stats().refusedFull == 4);
  CHECK(h.store.stats().evictions == 0);
  // Reads, shrinking overwrites and deletes go on.
  CHECK(h.get("k0") == std::string(40, 'v'));
  CHECK(h.set("k0", "short"));
  CHECK(h.get("k0") == "short");
  CHECK(h.store.del("k1", h.now));
  CHECK(h.set("k" + std::to_string(n), std::string(40, 'v')));
  CHECK(h.store.stats().evictions == 0);
  CHECK(h.store.memoryUsed() <= o.maxMemory);
}

TEST_CASE("restore puts entries back with their expiry and tells nobody", "[cache][restore]") {
  Harness h;
  const Millis t0 = h.now;
  h.store.restore("forever", "a", 0, t0);
  h.store.restore("later", "b", t0 + 500, t0);
  h.store.restore("past", "c", t0 - 1, t0);
  h.store.restore("now", "d", t0, t0);
  CHECK(h.said() == Lines{});
  CHECK(h.store.size() == 2);
  auto s = h.store.stats();
  CHECK(s.hits == 0);
  CHECK(s.misses == 0);
  CHECK(s.keysWithTtl == 1);
  CHECK(h.store.nextExpiry() == t0 + 500);
  CHECK(contentOf(h.store, t0).entries == std::map<std::string, std::pair<std::string, Millis>>{
                                              {"forever", {"a", 0}}, {"later", {"b", t0 + 500}}});
  CHECK(h.store.ttl("later", t0 + 100) == Millis{400});
  h.now = t0 + 500;
  CHECK(h.get("later") == std::nullopt);
  CHECK(h.said() == Lines{"removed later expired"});
}

TEST_CASE("restore replaces quietly and what it cannot keep takes the old value along",
          "[cache][restore]") {
  CacheOptions o;
  o.maxValueBytes = 100;
  o.maxMemory = CacheStore(o).memoryUsed() + 4096;
  o.maxKeyBytes = 8;
  Harness h(o);
  for (const char* k : {"a", "b", "c", "d", "e"}) REQUIRE(h.set(k, "old", 1000));
  h.rec.calls.clear();
  h.store.restore("a", "new", 0, h.now);
  CHECK(h.get("a") == "new");
  CHECK(h.store.ttl("a", h.now) == Millis{-1});
  // Expired by now: dropped, and the current value with it.
  h.store.restore("b", "new", h.now, h.now);
  CHECK_FALSE(h.store.exists("b", h.now));
  // Over the value limit: the same.
  h.store.restore("c", std::string(101, 'v'), 0, h.now);
  CHECK_FALSE(h.store.exists("c", h.now));
  // An entry over maxMemory: the same.
  {
    CacheOptions small = o;
    small.maxMemory = CacheStore(o).memoryUsed() + 64;
    Harness s(small);
    REQUIRE(s.set("k", "v"));
    s.rec.calls.clear();
    s.store.restore("k", std::string(100, 'v'), 0, s.now);
    CHECK_FALSE(s.store.exists("k", s.now));
    CHECK(s.said() == Lines{});
  }
  CHECK(h.said() == Lines{});
  CHECK(h.store.size() == 3);
}

TEST_CASE("restore under noeviction keeps what the log holds past the limit", "[cache][restore]") {
  // A replay may charge more than the running cache did (array capacities,
  // a resize under way): what was acknowledged is kept, and writes that do
  // not fit are refused afterwards as usual.
  CacheOptions o;
  o.policy = Policy::noeviction;
  o.maxMemory = CacheStore(o).memoryUsed() + 1000;
  Harness h(o);
  REQUIRE(h.set("k", "v"));
  int i = 0;
  while (std::holds_alternative<bool>(h.store.set("f" + std::to_string(i), "v", {}, h.now))) ++i;
  h.rec.calls.clear();
  h.store.restore("k", std::string(200, 'v'), 0, h.now);
  CHECK(h.store.get("k", h.now) == std::optional<std::string_view>(std::string(200, 'v')));
  CHECK(h.said() == Lines{});
  CHECK(h.store.evictToLimit() == 0);  // noeviction may not
  CHECK(h.store.memoryUsed() > o.maxMemory);
  CHECK(std::holds_alternative<Failure>(h.store.set("more", "v", {}, h.now)));
}

TEST_CASE("restore counts as a set for the policy and never evicts", "[cache][restore]") {
  const std::string value(300, 'v');
  Harness h(holdingThree(value));
  h.store.restore("a", value, 0, h.now);
  h.store.restore("b", value, 0, h.now);
  h.store.restore("c", value, 0, h.now);
  h.store.restore("a", value, 0, h.now);  // a used last
  h.store.restore("d", value, 0, h.now);
  CHECK(h.said() == Lines{});
  CHECK(h.store.size() == 4);
  CHECK(h.store.evictToLimit() == 1);
  CHECK(h.said() == Lines{"removed b evicted"});
  CHECK(h.store.stats().hits == 0);
  CHECK(h.store.stats().evictions == 1);
  CHECK(h.store.evictToLimit() == 0);
}

TEST_CASE("evictToLimit after a restore past the limit evicts in policy order and tells",
          "[cache][restore]") {
  CacheOptions o;
  o.policy = Policy::fifo;
  o.maxMemory = CacheStore(o).memoryUsed() + 1500;
  Harness h(o);
  for (int i = 0; i < 100; ++i)
    h.store.restore("r" + std::to_string(i), std::string(40, 'v'), 0, h.now);
  CHECK(h.store.size() == 100);
  CHECK(h.said() == Lines{});
  const size_t evicted = h.store.evictToLimit();
  REQUIRE(evicted > 3);
  const Lines said = h.said();
  REQUIRE(said.size() == evicted);
  for (size_t n = 0; n < said.size(); ++n)
    CHECK(said[n] == "removed r" + std::to_string(n) + " evicted");
  CHECK(h.store.memoryUsed() <= o.maxMemory);
}

TEST_CASE("memory charged per entry and back to empty", "[cache][memory]") {
  for (Policy p : kPolicies) {
    INFO(toString(p));
    const auto header = probeHeader(p, false);
    const auto headerTtl = probeHeader(p, true);
    REQUIRE(header);
    REQUIRE(headerTtl);
    CHECK(*headerTtl == *header + 4);  // the expiry heap's slot
    if (p != Policy::noeviction) CHECK(*header >= *probeHeader(Policy::noeviction, false));
    CacheOptions o;
    o.policy = p;
    Harness h(o);
    const uint64_t empty = h.store.memoryUsed();
    CHECK(empty == h.store.stats().indexBytes);
    CHECK(empty > 0);
    uint64_t charged = 0;
    for (int i = 0; i < 300; ++i) {
      const std::string k = "key" + std::to_string(i * 7919);
      const std::string v(static_cast<size_t>(i % 50), 'v');
      const Millis ttl = i % 3 == 0 ? 1000 : 0;
      REQUIRE(h.set(k, v, ttl));
      charged += usable((ttl ? *headerTtl : *header) + k.size() + v.size());
      const auto s = h.store.stats();
      INFO("entry " << i << " key " << k.size() << " value " << v.size() << " ttl " << ttl
                    << " header " << *header << " " << *headerTtl);
      REQUIRE(s.memoryUsed - s.indexBytes == charged);
    }
    for (int i = 0; i < 300; ++i) {
      REQUIRE(h.store.del("key" + std::to_string(i * 7919), h.now));
    }
    CHECK(h.store.stats().memoryUsed == h.store.stats().indexBytes);
    for (int i = 0; i < 10'000 && h.store.memoryUsed() != empty; ++i) h.store.exists("x", h.now);
    CHECK(h.store.memoryUsed() == empty);
    CHECK(h.store.stats().keys == 0);
  }
}

}  // namespace zmesh::cache::test

namespace zmesh::cache::test {
namespace {

// A store under a limit that holds `fit` entries of `value`'s size and not one more
// (values are large, so the index's small changes do not matter).
CacheOptions holding(Policy p, int fit, const std::string& value, uint64_t decayUses = 0) {
  CacheOptions o;
  o.policy = p;
  o.lfuDecayUses = decayUses;
  o.maxValueBytes = 4096;
  CacheStore probe(o);
  for (int i = 0; i < fit; ++i) probe.set("probe" + std::to_string(i), value, {}, 0);
  const uint64_t charge = probe.memoryUsed() - CacheStore(o).memoryUsed();
  o.maxMemory = probe.memoryUsed() + charge / fit / 2;
  return o;
}

std::vector<std::string> evicted(Recorder& rec) {
  std::vector<std::string> keys;
  for (auto& c : rec.calls) {
    if (c.kind == Call::removed && c.why == Removal::evicted) keys.push_back(c.key);
  }
  rec.calls.clear();
  return keys;
}

}  // namespace

// a, b, c in; a read; b only looked at (exists, ttl, scan: not uses); a
// overwritten. Then d and e each need one victim.
TEST_CASE("each policy picks its victims in its exact order", "[cache][eviction]") {
  const std::string value(300, 'v');
  struct Want {
    Policy policy;
    std::vector<std::string> victims;
  };
  for (const Want& w : {Want{Policy::fifo, {"a", "b"}}, Want{Policy::lifo, {"c", "d"}},
                        Want{Policy::lru, {"b", "c"}}, Want{Policy::mru, {"a", "d"}},
                        Want{Policy::lfu, {"b", "c"}}}) {
    INFO(toString(w.policy));
    Harness h(holding(w.policy, 3, value));
    REQUIRE(h.set("a", value));
    REQUIRE(h.set("b", value));
    REQUIRE(h.set("c", value));
    CHECK(h.get("a") == value);
    CHECK(h.store.exists("b", h.now));
    CHECK(h.store.ttl("b", h.now) == Millis{-1});
    CHECK(h.store.scan("", {}, 100, h.now).keys.size() == 3);
    CHECK(contentOf(h.store, h.now).entries.size() == 3);
    REQUIRE(h.set("a", value));
    CHECK(evicted(h.rec).empty());
    REQUIRE(h.set("d", value));
    REQUIRE(h.set("e", value));
    CHECK(evicted(h.rec) == w.victims);
    CHECK(h.store.size() == 3);
    CHECK(h.store.stats().evictions == 2);
  }
}

TEST_CASE("lru and mru count incr and expire as uses", "[cache][eviction]") {
  const std::string value(300, 'v');
  for (Policy p : {Policy::lru, Policy::mru}) {
    INFO(toString(p));
    Harness h(holding(p, 3, value));
    REQUIRE(h.set("a", value));
    REQUIRE(h.set("b", value));
    REQUIRE(h.set("n", "5"));
    REQUIRE(h.set("c", value));  // room for these four: "n" is small
    CHECK(evicted(h.rec).empty());
    // Uses, oldest to newest: b, c, a (expire), n (incr).
    REQUIRE(h.get("b") == value);
    REQUIRE(h.get("c") == value);
    REQUIRE(std::get<bool>(h.store.expire("a", 0, h.now)));
    REQUIRE(std::get<int64_t>(h.store.incr("n", 1, h.now)) == 6);
    h.rec.calls.clear();
    REQUIRE(h.set("d", value));
    // mru: n is too small to make room alone, a goes next.
    CHECK(evicted(h.rec) ==
          (p == Policy::lru ? std::vector<std::string>{"b"} : std::vector<std::string>{"n", "a"}));
  }
}

// Counts 1, 2, 3, 4 halve at the 10th use to 1, 1, 1, 2: those meeting at 1
// keep the order of their old counts (d had 1, b 2, c 3).
TEST_CASE("lfu halving keeps the order of the old counts", "[cache][eviction]") {
  const std::string value(300, 'v');
  Harness h(holding(Policy::lfu, 4, value, 10));
  for (const char* k : {"a", "b", "c", "d"}) REQUIRE(h.set(k, value));  // uses 1-4
  h.get("c");
  h.get("c");  // c: 3
  h.get("b");  // b: 2
  h.get("a");
  h.get("a");
  CHECK(h.store.stats().lfuDecays == 0);
  h.get("a");  // a: 4, the 10th use
  CHECK(h.store.stats().lfuDecays == 1);
  h.rec.calls.clear();
  // Each new key enters at count 1 behind those already there.
  for (const char* k : {"x1", "x2", "x3", "x4"}) REQUIRE(h.set(k, value));
  CHECK(evicted(h.rec) == std::vector<std::string>{"d", "b", "c", "x1"});
  CHECK(h.get("a") == value);
}

TEST_CASE("lfu halves every 1024 uses then every 8 uses a key by default", "[cache][eviction]") {
  CacheOptions o;
  o.policy = Policy::lfu;
  Harness h(o);
  for (int i = 0; i < 300; ++i) REQUIRE(h.set("k" + std::to_string(i), "v"));
  for (int i = 300; i < 1023; ++i) h.get("k0");
  CHECK(h.store.stats().lfuDecays == 0);
  h.get("k0");
  CHECK(h.store.stats().lfuDecays == 1);
  // Next after max(1024, 8 × 300) = 2400 uses.
  for (int i = 0; i < 2399; ++i) h.get("k1");
  CHECK(h.store.stats().lfuDecays == 1);
  h.get("k1");
  CHECK(h.store.stats().lfuDecays == 2);
  // Misses are not uses.
  for (int i = 0; i < 3000; ++i) h.get("missing");
  CHECK(h.store.stats().lfuDecays == 2);
}

}  // namespace zmesh::cache::test
