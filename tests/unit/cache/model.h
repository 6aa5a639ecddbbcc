// What the cache core's tests share: a listener that records every call, a
// plain reference model of the store (a std::map and linear scans, obviously
// right rather than fast) and the per-entry memory charge as the header
// describes it (the allocation's size class, CacheStore::allocationSize).
#pragma once

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "cache_store.h"

namespace zmesh::cache::test {

inline const char* codeName(Fail f) {
  switch (f) {
    case Fail::invalidArgument:
      return "invalidArgument";
    case Fail::payloadTooLarge:
      return "payloadTooLarge";
    case Fail::failedPrecondition:
      return "failedPrecondition";
    case Fail::insufficientStorage:
      return "insufficientStorage";
  }
  return "?";
}

inline const char* removalName(Removal r) {
  switch (r) {
    case Removal::deleted:
      return "deleted";
    case Removal::expired:
      return "expired";
    case Removal::overwritten:
      return "overwritten";
    case Removal::evicted:
      return "evicted";
  }
  return "?";
}

// One listener call as a line: "set k=v @0", "removed k evicted", "expire k @123".
struct Call {
  enum Kind : uint8_t { set, removed, expireSet } kind;
  std::string key;
  std::string value;
  Millis expiresAt = 0;
  Removal why = Removal::deleted;
  uint64_t memory = 0;  // the store's memoryUsed() during the call, if the recorder knows it

  std::string line() const {
    switch (kind) {
      case set:
        return "set " + key + "=" + value + " @" + std::to_string(expiresAt);
      case removed:
        return "removed " + key + " " + removalName(why);
      case expireSet:
        return "expire " + key + " @" + std::to_string(expiresAt);
    }
    return "?";
  }
};

struct Recorder : Listener {
  std::vector<Call> calls;
  const CacheStore* store = nullptr;  // set: each call notes the store's memoryUsed()

  void onSet(std::string_view key, std::string_view value, Millis expiresAt) override {
    calls.push_back({Call::set, std::string(key), std::string(value), expiresAt, {}, memory()});
  }
  void onRemoved(std::string_view key, Removal why) override {
    calls.push_back({Call::removed, std::string(key), {}, 0, why, memory()});
  }
  void onExpireSet(std::string_view key, std::string_view /*value*/, Millis expiresAt) override {
    calls.push_back({Call::expireSet, std::string(key), {}, expiresAt, {}, memory()});
  }
  uint64_t memory() const { return store ? store->memoryUsed() : 0; }

  // The calls since the last take(), as lines.
  std::vector<std::string> take() {
    std::vector<std::string> lines;
    for (auto& c : calls) lines.push_back(c.line());
    calls.clear();
    return lines;
  }
};

using Lines = std::vector<std::string>;

// "" for a success, else "code: message".
template <typename T>
std::string why(const std::variant<T, Failure>& r) {
  if (auto* f = std::get_if<Failure>(&r)) return std::string(codeName(f->code)) + ": " + f->message;
  return "";
}
inline std::string why(const std::optional<Failure>& f) {
  return f ? std::string(codeName(f->code)) + ": " + f->message : "";
}
// The failure's code; a failure must also say what was wrong.
template <typename T>
std::optional<Fail> failOf(const std::variant<T, Failure>& r) {
  if (auto* f = std::get_if<Failure>(&r)) {
    CHECK_FALSE(f->message.empty());
    return f->code;
  }
  return std::nullopt;
}

// What one allocation of n bytes is charged: its allocator size class.
inline uint64_t usable(size_t n) { return CacheStore::allocationSize(n); }

// Everything live in a store, by scanRange over the whole hash space: key ->
// (value, expiresAt), and the order in which keys came (hash order).
struct Content {
  std::map<std::string, std::pair<std::string, Millis>> entries;
  std::vector<std::string> order;
};
inline Content contentOf(CacheStore& store, Millis now, size_t limit = 7) {
  Content c;
  ScanCursor cur;
  while (!cur.done) {
    cur = store.scanRange(cur.position, UINT64_MAX, limit, now,
                          [&](std::string_view k, std::string_view v, Millis e) {
                            c.entries[std::string(k)] = {std::string(v), e};
                            c.order.emplace_back(k);
                          });
  }
  return c;
}

// The bytes an entry is charged beyond its key and value (its header, with
// the policy's bookkeeping), found from single inserts: the H with
// usable(H + key + value) equal to what each insert added to memoryUsed()
// outside the index. nullopt if no H explains every insert.
inline std::optional<uint64_t> probeHeader(Policy policy, bool withTtl) {
  CacheOptions o;
  o.policy = policy;
  o.maxMemory = uint64_t{1} << 30;
  CacheStore store(o);
  std::vector<std::pair<size_t, uint64_t>> seen;  // key + value bytes, charge
  for (size_t n = 0; n < 80; ++n) {
    const std::string key = "p" + std::string(n % 7, 'k');
    const std::string value(n, 'v');
    const auto before = store.stats();
    SetArgs args;
    args.ttl = withTtl ? 1000 : 0;
    if (!std::holds_alternative<bool>(store.set(key, value, args, 1))) return std::nullopt;
    const auto after = store.stats();
    seen.emplace_back(key.size() + value.size(), (after.memoryUsed - after.indexBytes) -
                                                     (before.memoryUsed - before.indexBytes));
    store.del(key, 1);
  }
  for (uint64_t h = 0; h < 1024; ++h) {
    bool all = true;
    for (auto& [bytes, charge] : seen) all = all && usable(h + bytes) == charge;
    if (all) return h;
  }
  return std::nullopt;
}

// The canonical decimal int64 the header asks incr for: what to_string prints.
inline std::optional<int64_t> decimal(std::string_view s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size()) return std::nullopt;
  __int128 v = 0;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return std::nullopt;
    v = v * 10 + (s[i] - '0');
  }
  if (s[0] == '-') v = -v;
  if (v < INT64_MIN || v > INT64_MAX) return std::nullopt;
  if (std::to_string(static_cast<int64_t>(v)) != s) return std::nullopt;
  return static_cast<int64_t>(v);
}

// The reference store. Entries include expired ones not yet removed (they are
// still in the store and still candidates for eviction, as in the store).
// Every "use" (get, set, incr, expire) stamps the key; victims are found by a
// linear scan over the stamps.
class Model {
 public:
  struct Entry {
    std::string value;
    Millis expiresAt = 0;
    uint64_t inserted = 0;  // fifo, lifo
    uint64_t lastUse = 0;   // lru, mru
    uint64_t count = 0;     // lfu: uses (halved every decayEvery uses)
    uint64_t reached = 0;   // lfu: when it reached `count`
  };

  Model(Policy policy, uint64_t decayEvery)
      : policy_(policy), decayEvery_(decayEvery), every_(decayEvery ? decayEvery : 1024) {}

  std::map<std::string, Entry> entries;
  uint64_t hits = 0, misses = 0, evictions = 0, expired = 0, refusedFull = 0, decays = 0;

  bool live(const Entry& e, Millis now) const { return e.expiresAt == 0 || now < e.expiresAt; }

  // A call touches `key`: an expired one goes (lazily). Returns the live entry.
  Entry* touch(const std::string& key, Millis now) {
    auto it = entries.find(key);
    if (it == entries.end()) return nullptr;
    if (!live(it->second, now)) {
      entries.erase(it);
      ++expired;
      return nullptr;
    }
    return &it->second;
  }

  // A use: get, set, incr, expire. Every use (an insert too) counts towards
  // lfu's next halving, due after `decayEvery` uses, or when that is 0 after
  // 1024 and then max(1024, 8 × keys at the last halving).
  void use(const std::string& key) {
    Entry& e = entries.at(key);
    e.lastUse = ++seq_;
    ++e.count;
    e.reached = ++seq_;
    if (policy_ == Policy::lfu && ++uses_ >= every_) {
      halve();
      uses_ = 0;
      every_ = decayEvery_ ? decayEvery_ : std::max<uint64_t>(1024, 8 * entries.size());
    }
  }

  // Counts halve (floor, at least 1); keys whose counts meet keep the order
  // they had before: by old count, then by who reached it first.
  void halve() {
    ++decays;
    std::vector<std::pair<std::pair<uint64_t, uint64_t>, Entry*>> order;
    for (auto& [k, e] : entries) order.push_back({{e.count, e.reached}, &e});
    std::sort(order.begin(), order.end(), [](auto& a, auto& b) { return a.first < b.first; });
    for (auto& [rank, e] : order) {
      e->count = std::max<uint64_t>(1, e->count / 2);
      e->reached = ++seq_;
    }
  }

  // Puts a value in (new or overwrite); the caller has already touched the key.
  void put(const std::string& key, std::string value, Millis expiresAt) {
    auto [it, fresh] = entries.try_emplace(key);
    if (fresh) {
      it->second.inserted = ++seq_;
      it->second.count = 0;
    }
    it->second.value = std::move(value);
    it->second.expiresAt = expiresAt;
    use(key);
  }

  // The next victim by the policy, the pinned keys (those of the write being
  // made) excluded; "" if none.
  std::string victim(const std::set<std::string>& pinned = {}) const {
    const std::pair<const std::string, Entry>* best = nullptr;
    auto better = [&](const Entry& a, const Entry& b) {
      switch (policy_) {
        case Policy::fifo:
          return a.inserted < b.inserted;
        case Policy::lifo:
          return a.inserted > b.inserted;
        case Policy::lru:
          return a.lastUse < b.lastUse;
        case Policy::mru:
          return a.lastUse > b.lastUse;
        case Policy::lfu:
          return a.count != b.count ? a.count < b.count : a.reached < b.reached;
        default:
          return false;
      }
    };
    for (auto& kv : entries) {
      if (pinned.count(kv.first)) continue;
      if (!best || better(kv.second, best->second)) best = &kv;
    }
    return best ? best->first : std::string();
  }

  uint64_t keysWithTtl() const {
    uint64_t n = 0;
    for (auto& [k, e] : entries) n += e.expiresAt != 0;
    return n;
  }

  // Entry bytes as charged: header + key + value in one allocation.
  uint64_t entryBytes(uint64_t header) const {
    uint64_t sum = 0;
    for (auto& [k, e] : entries) sum += usable(header + k.size() + e.value.size());
    return sum;
  }

 private:
  Policy policy_;
  uint64_t decayEvery_;
  uint64_t seq_ = 0;
  uint64_t uses_ = 0;
  uint64_t every_;
};

}  // namespace zmesh::cache::test
