// The index seen from outside: scans by prefix and cursor, cursors that
// survive inserts, deletes and resizes between calls, scanRange over a slice
// of hash space, and 10^5 keys in then out with every key findable throughout.
#include <algorithm>
#include <catch2/catch.hpp>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "cache_store.h"
#include "model.h"

namespace zmesh::cache::test {
namespace {

constexpr Millis kNow = 1'000;

CacheOptions big(uint64_t seed = 0) {
  CacheOptions o;
  o.policy = Policy::lru;
  o.maxMemory = uint64_t{1} << 32;
  o.seed = seed;
  return o;
}

// A whole scan: the keys in the order returned, and how many calls it took.
struct Scanned {
  std::vector<std::string> keys;
  int calls = 0;
};
Scanned scanAll(CacheStore& store, std::string_view prefix, size_t count) {
  Scanned s;
  ScanCursor c;
  while (!c.done) {
    auto r = store.scan(prefix, c, count, kNow);
    s.keys.insert(s.keys.end(), r.keys.begin(), r.keys.end());
    REQUIRE((r.next.done || r.next.position >= c.position));
    c = r.next;
    REQUIRE(++s.calls < 1'000'000);
  }
  return s;
}

bool hashOrdered(CacheStore& store, const std::vector<std::string>& keys) {
  for (size_t i = 1; i < keys.size(); ++i) {
    if (store.hashOf(keys[i - 1]) > store.hashOf(keys[i])) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("a full scan of a static store returns every key once in hash order", "[cache][scan]") {
  CacheStore store(big());
  std::set<std::string> all;
  for (int i = 0; i < 3000; ++i) {
    const std::string k = (i % 3 == 0 ? "user:" : i % 3 == 1 ? "item:" : "u") + std::to_string(i);
    REQUIRE(std::get<bool>(store.set(k, "v", {}, kNow)));
    all.insert(k);
  }
  for (size_t count : {size_t{1}, size_t{10}, size_t{100}, size_t{10'000}}) {
    INFO("count " << count);
    const auto s = scanAll(store, "", count);
    CHECK(s.keys.size() == all.size());
    CHECK(std::set<std::string>(s.keys.begin(), s.keys.end()) == all);
    CHECK(hashOrdered(store, s.keys));
    if (count >= 10'000) CHECK(s.calls <= 2);
  }
  // By prefix: exactly the keys that start with it.
  for (std::string prefix : {"user:", "u", "item:1", "nothing", ""}) {
    INFO("prefix " << prefix);
    std::set<std::string> want;
    for (auto& k : all) {
      if (k.starts_with(prefix)) want.insert(k);
    }
    const auto s = scanAll(store, prefix, 50);
    CHECK(s.keys.size() == want.size());
    CHECK(std::set<std::string>(s.keys.begin(), s.keys.end()) == want);
  }
  // A scan is not a use and not a hit.
  CHECK(store.stats().hits == 0);
  CHECK(store.stats().misses == 0);
}

TEST_CASE("a scan may start at any position and returns the keys from there on", "[cache][scan]") {
  CacheStore store(big(5));
  std::vector<std::pair<uint64_t, std::string>> all;
  for (int i = 0; i < 1000; ++i) {
    const std::string k = "p" + std::to_string(i);
    REQUIRE(std::get<bool>(store.set(k, "v", {}, kNow)));
    all.emplace_back(store.hashOf(k), k);
  }
  std::mt19937_64 rng(9);
  for (int t = 0; t < 20; ++t) {
    const uint64_t from = t == 0 ? UINT64_MAX : rng();
    std::set<std::string> want;
    for (auto& [h, k] : all) {
      if (h >= from) want.insert(k);
    }
    std::vector<std::string> got;
    ScanCursor c{from, false};
    while (!c.done) {
      auto r = store.scan("", c, 7, kNow);
      got.insert(got.end(), r.keys.begin(), r.keys.end());
      c = r.next;
    }
    CHECK(got.size() == want.size());
    CHECK(std::set<std::string>(got.begin(), got.end()) == want);
  }
}

TEST_CASE("a scan of an empty store is done at once", "[cache][scan]") {
  CacheStore store(big());
  const auto s = scanAll(store, "", 10);
  CHECK(s.keys.empty());
  CHECK(s.calls == 1);
}

TEST_CASE("a scan cursor survives inserts deletes and resizes between calls", "[cache][scan]") {
  for (uint64_t seed : {1, 2, 3}) {
    INFO("seed " << seed);
    CacheStore store(big(seed));
    std::mt19937_64 rng(seed);
    std::set<std::string> stable;
    for (int i = 0; i < 500; ++i) {
      const std::string k = "s" + std::to_string(i);
      REQUIRE(std::get<bool>(store.set(k, "v", {}, kNow)));
      stable.insert(k);
    }
    // Transient keys come in waves of thousands and go again, so the index
    // doubles several times and shrinks back while the scan is under way.
    std::vector<std::string> transient;
    int next = 0;
    bool growing = true;
    std::vector<std::string> got;
    ScanCursor c;
    const uint64_t stepsBefore = store.stats().rehashSteps;
    int calls = 0;
    uint64_t largest = 0;
    bool shrank = false;
    while (!c.done) {
      auto r = store.scan("", c, 4, kNow);
      for (auto& k : r.keys) got.push_back(k);
      REQUIRE((r.next.done || r.next.position >= c.position));
      c = r.next;
      REQUIRE(++calls < 100'000);
      const uint64_t index = store.stats().indexBytes;
      largest = std::max(largest, index);
      shrank = shrank || index * 4 < largest;
      const int n = 1 + static_cast<int>(rng() % 80);
      for (int i = 0; i < n; ++i) {
        if (growing) {
          transient.push_back("t" + std::to_string(next++));
          REQUIRE(std::get<bool>(store.set(transient.back(), "v", {}, kNow)));
          if (transient.size() >= 6000) growing = false;
        } else if (!transient.empty()) {
          const size_t at = rng() % transient.size();
          std::swap(transient[at], transient.back());
          REQUIRE(store.del(transient.back(), kNow));
          transient.pop_back();
          if (transient.empty()) growing = true;
        }
      }
    }
    CHECK(store.stats().rehashSteps > stepsBefore);
    CHECK(largest > 8 * 1024 * sizeof(void*) / 2);  // grew to thousands of buckets
    CHECK(shrank);                                  // and back while the scan went on
    std::map<std::string, int> times;
    for (auto& k : got) ++times[k];
    for (auto& k : stable) {
      INFO("key " << k);
      CHECK(times[k] == 1);
    }
    CHECK(hashOrdered(store, got));
  }
}

TEST_CASE("scanRange visits exactly the keys hashed in range in hash order", "[cache][scan]") {
  CacheStore store(big(7));
  std::vector<std::pair<uint64_t, std::string>> all;
  for (int i = 0; i < 2000; ++i) {
    const std::string k = "r" + std::to_string(i);
    const std::string v = "v" + std::to_string(i);
    SetArgs a;
    a.ttl = i % 5 == 0 ? 100'000 : 0;
    REQUIRE(std::get<bool>(store.set(k, v, a, kNow)));
    all.emplace_back(store.hashOf(k), k);
  }
  std::sort(all.begin(), all.end());
  std::mt19937_64 rng(11);
  std::vector<std::pair<uint64_t, uint64_t>> ranges = {{0, UINT64_MAX},
                                                       {0, 0},
                                                       {UINT64_MAX, UINT64_MAX},
                                                       {all[10].first, all[10].first},
                                                       {all[10].first + 1, all[11].first - 1},
                                                       {all[100].first, all[1500].first}};
  for (int i = 0; i < 30; ++i) {
    uint64_t a = rng(), b = rng();
    if (a > b) std::swap(a, b);
    ranges.emplace_back(a, b);
  }
  for (auto [from, to] : ranges) {
    for (size_t limit : {size_t{1}, size_t{3}, size_t{64}, size_t{5000}}) {
      INFO("range " << from << ".." << to << " limit " << limit);
      std::vector<std::string> want;
      for (auto& [h, k] : all) {
        if (h >= from && h <= to) want.push_back(k);
      }
      std::vector<std::string> got;
      ScanCursor c{from, false};
      int calls = 0;
      while (!c.done) {
        size_t visited = 0;
        c = store.scanRange(c.position, to, limit, kNow,
                            [&](std::string_view k, std::string_view v, Millis e) {
                              ++visited;
                              got.emplace_back(k);
                              CHECK(v == "v" + std::string(k.substr(1)));
                              const int i = std::stoi(std::string(k.substr(1)));
                              CHECK(e == (i % 5 == 0 ? kNow + 100'000 : 0));
                            });
        REQUIRE(visited <= limit);
        REQUIRE(++calls < 100'000);
      }
      CHECK(got == want);
    }
  }
  CHECK(store.stats().hits == 0);
}

TEST_CASE("10^5 keys in and out stay findable while the index resizes", "[cache][index]") {
  constexpr int kCount = 100'000;
  CacheStore store(big(3));
  const uint64_t empty = store.memoryUsed();
  auto key = [](int i) { return "key:" + std::to_string(i * 2654435761u); };
  const uint64_t steps0 = store.stats().rehashSteps;
  for (int i = 0; i < kCount; ++i) {
    REQUIRE(std::get<bool>(store.set(key(i), std::to_string(i), {}, kNow)));
    if (i % 9973 == 0) {
      for (int j = 0; j <= i; j += 7) REQUIRE(store.exists(key(j), kNow));
    }
  }
  const uint64_t steps1 = store.stats().rehashSteps;
  CHECK(steps1 > steps0);
  CHECK(store.size() == size_t{kCount});
  for (int i = 0; i < kCount; ++i) {
    auto v = store.get(key(i), kNow);
    REQUIRE(v.has_value());
    REQUIRE(*v == std::to_string(i));
  }
  CHECK(store.stats().indexBytes > empty);
  // Out in a shuffled order, checking the rest every so often.
  std::vector<int> order(kCount);
  for (int i = 0; i < kCount; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937_64(5));
  std::vector<bool> gone(kCount, false);
  for (int n = 0; n < kCount; ++n) {
    REQUIRE(store.del(key(order[n]), kNow));
    gone[order[n]] = true;
    if (n % 10'007 == 0 || n > kCount - 50) {
      for (int i = 0; i < kCount; i += (n > kCount - 50 ? 1 : 3)) {
        REQUIRE(store.exists(key(i), kNow) == !gone[i]);
      }
    }
  }
  CHECK(store.size() == 0);
  CHECK(store.stats().rehashSteps > steps1);
  CHECK(store.stats().memoryUsed == store.stats().indexBytes);
  for (int i = 0; i < 100'000 && store.memoryUsed() != empty; ++i) store.exists("x", kNow);
  CHECK(store.memoryUsed() == empty);
}

}  // namespace zmesh::cache::test
