// Long random workloads per eviction policy against the reference model: a
// small key space under a small memory limit, so most writes of a new key
// evict. After every operation the answers, the key count, the stats and the
// memory charged must equal the model's, every victim must be the model's
// next victim and must have been needed (the listener notes memoryUsed()
// during each call: a read of a const getter, nothing more), and the
// listener's calls replayed into a plain map must equal the model; every
// 16th step the store's whole content is compared too. Seeds are fixed: a
// failure names its policy, seed and step, and replays exactly.
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

#if defined(__SANITIZE_ADDRESS__)
constexpr int kSteps = 60'000;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr int kSteps = 60'000;
#else
constexpr int kSteps = 200'000;
#endif
#else
constexpr int kSteps = 200'000;
#endif

constexpr int kKeys = 40;

std::string keyName(int i) {
  // Lengths 2..13: entries of many sizes.
  return "k" + std::to_string(i) + std::string(static_cast<size_t>(i % 11), 'x');
}

struct Runner {
  Runner(Policy policy, uint64_t seed, uint64_t maxMemory, uint64_t decayEvery)
      : options(makeOptions(policy, seed, maxMemory, decayEvery)),
        store(options, &rec),
        model(policy, decayEvery),
        rng(seed),
        junkRng(seed + 1000) {
    rec.store = &store;
  }
  ~Runner() {
    for (void* p : junk) std::free(p);
  }

  static CacheOptions makeOptions(Policy policy, uint64_t seed, uint64_t maxMemory,
                                  uint64_t decayEvery) {
    CacheOptions o;
    o.policy = policy;
    o.maxMemory = maxMemory;
    o.maxKeyBytes = 64;
    o.maxValueBytes = 256;
    o.maxTtl = 100'000;
    o.lfuDecayUses = decayEvery;
    o.seed = seed;
    return o;
  }

  CacheOptions options;
  Recorder rec;
  CacheStore store;
  Model model;
  std::mt19937_64 rng;
  // Blocks of random sizes allocated and freed between steps: entries land in
  // chunks of varied history, which must not change what they are charged.
  std::mt19937_64 junkRng;
  std::vector<void*> junk = std::vector<void*>(64, nullptr);
  Millis now = 1'000'000;
  std::map<std::string, std::pair<std::string, Millis>> replay;  // the listener's calls applied
  std::vector<std::string> victims;                              // evicted, in order
  uint64_t header = 0, headerTtl = 0;
  uint64_t refusals = 0;   // noeviction
  uint64_t overLimit = 0;  // most memoryUsed() was seen above maxMemory
  size_t pos = 0;          // next unread call in rec.calls
  std::string where;       // for messages

  uint64_t rand(uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng); }
  bool chance(int percent) { return rand(100) < static_cast<uint64_t>(percent); }

  std::string randomKey() { return keyName(static_cast<int>(rand(kKeys))); }
  std::string randomValue() {
    switch (rand(6)) {
      case 0:
      case 1:
        return std::to_string(static_cast<int64_t>(rand(2000)) - 1000);
      case 2:
        return chance(50) ? "9223372036854775806" : "-9223372036854775807";
      default: {
        std::string v(rand(60), '\0');
        for (auto& c : v) c = static_cast<char>(rand(256));
        return v;
      }
    }
  }
  Millis randomTtl() { return chance(60) ? 0 : static_cast<Millis>(1 + rand(300)); }

  // ---- the model's view of memory -----------------------------------------------------------

  int64_t charge(const std::string& key, size_t valueBytes, bool withTtl) const {
    return static_cast<int64_t>(usable((withTtl ? headerTtl : header) + key.size() + valueBytes));
  }
  // The live entry of key, or nullptr (an expired one is about to go lazily).
  const Model::Entry* liveEntry(const std::string& key) const {
    auto it = model.entries.find(key);
    return it != model.entries.end() && model.live(it->second, now) ? &it->second : nullptr;
  }
  int64_t liveCharge(const std::string& key) const {
    const Model::Entry* e = liveEntry(key);
    return e ? charge(key, e->value.size(), e->expiresAt != 0) : 0;
  }

  // ---- the listener's stream --------------------------------------------------------------

  void replayCall(const Call& c) {
    switch (c.kind) {
      case Call::set:
        replay[c.key] = {c.value, c.expiresAt};
        break;
      case Call::removed:
        REQUIRE(replay.erase(c.key) == 1);
        break;
      case Call::expireSet:
        REQUIRE(replay.count(c.key) == 1);
        replay[c.key].second = c.expiresAt;
        break;
    }
  }
  bool more() const { return pos < rec.calls.size(); }
  const Call& peek() const { return rec.calls[pos]; }
  const Call& next() {
    INFO(where);
    REQUIRE(more());
    replayCall(rec.calls[pos]);
    return rec.calls[pos++];
  }
  std::string allCalls() const {
    std::string all;
    for (size_t i = 0; i < rec.calls.size(); ++i) {
      all += (i == pos ? "> " : "") + rec.calls[i].line() + " [" +
             std::to_string(rec.calls[i].memory) + "]; ";
    }
    return all;
  }
  void expect(const Call& want) {
    INFO(where << "\ncalls: " << allCalls());
    const Call& c = next();
    REQUIRE(c.line() == want.line());
  }

  // Removals a call may make before it writes: expired keys (lazily) and, for
  // a write growing memory by `grow`, victims, each the model's next one and
  // each needed (the write did not fit while it was there).
  void removals(const std::set<std::string>& pinned = {}, int64_t grow = 0) {
    while (more() && peek().kind == Call::removed &&
           (peek().why == Removal::evicted || peek().why == Removal::expired)) {
      const Call& c = next();
      INFO(where << " call " << c.line());
      auto it = model.entries.find(c.key);
      REQUIRE(it != model.entries.end());
      if (c.why == Removal::expired) {
        REQUIRE_FALSE(model.live(it->second, now));
        model.entries.erase(it);
        ++model.expired;
        continue;
      }
      REQUIRE(options.policy != Policy::noeviction);
      REQUIRE(pinned.count(c.key) == 0);
      if (options.policy != Policy::random) REQUIRE(c.key == model.victim(pinned));
      INFO("memory " << c.memory << " grow " << grow << " max " << options.maxMemory);
      REQUIRE(grow > 0);
      REQUIRE(static_cast<int64_t>(c.memory) + grow > static_cast<int64_t>(options.maxMemory));
      victims.push_back(c.key);
      model.entries.erase(it);
      ++model.evictions;
    }
  }

  // The call looked `key` up: if it was expired the store must have dropped it.
  void dropped(const std::string& key) {
    auto it = model.entries.find(key);
    INFO(where << " expired key " << key << " not removed when touched");
    REQUIRE_FALSE((it != model.entries.end() && !model.live(it->second, now)));
  }

  // A call that only looked `key` up (or was refused after the lookup).
  Model::Entry* read(const std::string& key) {
    removals();
    dropped(key);
    REQUIRE_FALSE(more());
    auto it = model.entries.find(key);
    return it == model.entries.end() ? nullptr : &it->second;
  }

  // After the evictions a write of `grow` bytes fits, when anything could
  // still have been evicted. `memory` is memoryUsed() at that point.
  void fits(uint64_t memory, int64_t grow, const std::set<std::string>& pinned) {
    if (grow <= 0 || model.victim(pinned).empty()) return;
    INFO(where << " memory " << memory << " grow " << grow << " max " << options.maxMemory);
    CHECK(static_cast<int64_t>(memory) + grow <= static_cast<int64_t>(options.maxMemory));
  }

  // The write of key = value (expiring at expiresAt) after its evictions.
  void place(const std::string& key, const std::string& value, Millis expiresAt, bool tellOverwrite,
             bool first, int64_t grow, const std::set<std::string>& pinned) {
    dropped(key);
    if (model.entries.count(key) && tellOverwrite) {
      if (first && more()) fits(peek().memory, grow, pinned);
      expect(Call{Call::removed, key, {}, 0, Removal::overwritten});
    }
    expect(Call{Call::set, key, value, expiresAt, {}});
    model.put(key, value, expiresAt);
  }

  // noeviction refused a write of `grow` bytes: only lazy expiry happened,
  // and the write really did not fit.
  void refused(const std::string& key, int64_t grow) {
    read(key);
    ++model.refusedFull;
    ++refusals;
    INFO(where << " refused: memory " << store.memoryUsed() << " grow " << grow << " max "
               << options.maxMemory);
    REQUIRE(options.policy == Policy::noeviction);
    CHECK(static_cast<int64_t>(store.memoryUsed()) + grow >
          static_cast<int64_t>(options.maxMemory));
  }

  // ---- operations -------------------------------------------------------------------------

  void opGet() {
    const std::string key = randomKey();
    where += " get " + key;
    const bool present = liveEntry(key) != nullptr;
    auto got = store.get(key, now);
    auto* e = read(key);
    INFO(where);
    REQUIRE(present == (e != nullptr));
    REQUIRE(got.has_value() == present);
    if (e) {
      CHECK(std::string(*got) == e->value);
      ++model.hits;
      model.use(key);
    } else {
      ++model.misses;
    }
  }

  void opSet() {
    const std::string key = randomKey();
    std::string value = randomValue();
    SetArgs args;
    args.ttl = randomTtl();
    args.condition = chance(70)   ? SetCondition::always
                     : chance(50) ? SetCondition::ifAbsent
                                  : SetCondition::ifPresent;
    args.keepTtl = chance(10);
    where += " set " + key + " ttl " + std::to_string(args.ttl) + " cond " +
             std::to_string(static_cast<int>(args.condition)) + " keep " +
             std::to_string(args.keepTtl);
    const Model::Entry* old = liveEntry(key);
    const bool should = args.condition == SetCondition::always ||
                        (args.condition == SetCondition::ifAbsent) == (old == nullptr);
    Millis expiresAt = args.ttl ? now + args.ttl : 0;
    if (args.keepTtl && old) expiresAt = old->expiresAt;
    const int64_t grow = charge(key, value.size(), expiresAt != 0) - liveCharge(key);
    auto r = store.set(key, value, args, now);
    INFO(where << " " << why(r));
    if (args.keepTtl && args.ttl != 0) {
      // Both asked for: refused before anything is looked at.
      REQUIRE(failOf(r) == std::optional<Fail>(Fail::invalidArgument));
      REQUIRE_FALSE(more());
      return;
    }
    if (auto f = failOf(r)) {
      REQUIRE(*f == Fail::insufficientStorage);
      REQUIRE(should);
      refused(key, grow);
      return;
    }
    REQUIRE(std::get<bool>(r) == should);
    if (!should) {
      read(key);
      return;
    }
    removals({key}, grow);
    place(key, value, expiresAt, true, true, grow, {key});
  }

  void opDel() {
    const std::string key = randomKey();
    where += " del " + key;
    const bool present = liveEntry(key) != nullptr;
    const bool got = store.del(key, now);
    INFO(where);
    REQUIRE(got == present);
    if (present) {
      expect(Call{Call::removed, key, {}, 0, Removal::deleted});
      model.entries.erase(key);
    } else {
      read(key);
    }
  }

  void opIncr() {
    const std::string key = randomKey();
    const int64_t by = chance(3) ? INT64_MAX : static_cast<int64_t>(rand(11)) - 5;
    where += " incr " + key + " by " + std::to_string(by);
    const Model::Entry* old = liveEntry(key);
    std::optional<int64_t> result = by;
    Millis expiresAt = 0;
    if (old) {
      expiresAt = old->expiresAt;
      auto was = decimal(old->value);
      if (!was || __builtin_add_overflow(*was, by, &*result)) result = std::nullopt;
    }
    const std::string value = result ? std::to_string(*result) : "";
    const int64_t grow = charge(key, value.size(), expiresAt != 0) - liveCharge(key);
    auto r = store.incr(key, by, now);
    INFO(where << " " << why(r));
    if (!result) {
      REQUIRE(failOf(r) == std::optional<Fail>(Fail::failedPrecondition));
      read(key);
      return;
    }
    if (auto f = failOf(r)) {
      REQUIRE(*f == Fail::insufficientStorage);
      refused(key, grow);
      return;
    }
    CHECK(std::get<int64_t>(r) == *result);
    removals({key}, grow);
    // An incr tells the new value only.
    place(key, value, expiresAt, false, true, grow, {key});
  }

  void opExpire() {
    const std::string key = randomKey();
    const Millis ttl = chance(30) ? 0 : static_cast<Millis>(1 + rand(300));
    where += " expire " + key + " " + std::to_string(ttl);
    const Model::Entry* old = liveEntry(key);
    const Millis at = ttl ? now + ttl : 0;
    // Gaining or losing an expiry moves the entry to a new allocation.
    const int64_t grow = old ? charge(key, old->value.size(), at != 0) - liveCharge(key) : 0;
    auto r = store.expire(key, ttl, now);
    INFO(where << " " << why(r));
    if (auto f = failOf(r)) {
      REQUIRE(*f == Fail::insufficientStorage);
      REQUIRE(old);
      refused(key, grow);
      return;
    }
    REQUIRE(std::get<bool>(r) == (old != nullptr));
    if (!old) {
      read(key);
      return;
    }
    removals({key}, grow);
    // Told before the entry moves: the room made must be enough.
    if (more()) fits(peek().memory, grow, {key});
    expect(Call{Call::expireSet, key, {}, at, {}});
    model.entries.at(key).expiresAt = at;
    model.use(key);
  }

  void opTtl() {
    const std::string key = randomKey();
    where += " ttl " + key;
    auto got = store.ttl(key, now);
    auto* e = read(key);
    INFO(where);
    REQUIRE(got.has_value() == (e != nullptr));
    if (e) CHECK(*got == (e->expiresAt ? e->expiresAt - now : -1));
  }

  void opExists() {
    const std::string key = randomKey();
    where += " exists " + key;
    const bool got = store.exists(key, now);
    auto* e = read(key);
    INFO(where);
    REQUIRE(got == (e != nullptr));
  }

  void opMset() {
    const size_t n = 1 + rand(4);
    std::vector<std::pair<std::string, std::string>> owned;
    for (size_t i = 0; i < n; ++i) owned.emplace_back(randomKey(), randomValue());
    std::vector<std::pair<std::string_view, std::string_view>> pairs(owned.begin(), owned.end());
    const Millis ttl = randomTtl();
    const Millis at = ttl ? now + ttl : 0;
    where += " mset";
    for (auto& [k, v] : owned) where += " " + k;
    where += " ttl " + std::to_string(ttl);
    // A key given twice is written once, with its last value, where its last pair stands.
    std::vector<std::pair<std::string, std::string>> writes;
    std::set<std::string> keys;
    for (size_t i = 0; i < owned.size(); ++i) {
      bool last = true;
      for (size_t j = i + 1; j < owned.size(); ++j) last = last && owned[j].first != owned[i].first;
      if (last) writes.push_back(owned[i]);
      keys.insert(owned[i].first);
    }
    int64_t grow = 0;
    for (auto& [k, v] : writes) grow += charge(k, v.size(), at != 0) - liveCharge(k);
    auto r = store.mset(pairs, ttl, now);
    INFO(where << " " << why(r));
    if (r) {
      REQUIRE(r->code == Fail::insufficientStorage);
      REQUIRE(options.policy == Policy::noeviction);
      removals();
      for (auto& k : keys) dropped(k);
      REQUIRE_FALSE(more());
      ++model.refusedFull;
      ++refusals;
      CHECK(static_cast<int64_t>(store.memoryUsed()) + grow >
            static_cast<int64_t>(options.maxMemory));
      return;
    }
    // Every victim first (the batch's keys pinned), then the writes in order.
    removals(keys, grow);
    bool first = true;
    for (auto& [k, v] : writes) {
      place(k, v, at, true, first, grow, keys);
      first = false;
    }
  }

  void opExpireStep() {
    const size_t budget = 1 + rand(5);
    where += " expireStep " + std::to_string(budget);
    size_t due = 0;
    for (auto& [k, e] : model.entries) due += !model.live(e, now);
    const size_t removed = store.expireStep(now, budget);
    INFO(where);
    REQUIRE(removed == std::min(budget, due));
    Millis latest = 0;
    for (size_t i = pos; i < rec.calls.size(); ++i) {
      const Call& c = rec.calls[i];
      REQUIRE(c.kind == Call::removed);
      REQUIRE(c.why == Removal::expired);
      auto it = model.entries.find(c.key);
      REQUIRE(it != model.entries.end());
      latest = std::max(latest, it->second.expiresAt);
    }
    REQUIRE(rec.calls.size() - pos == removed);
    removals();
    REQUIRE_FALSE(more());
    // Soonest first: nothing left behind expires before what was taken.
    for (auto& [k, e] : model.entries) {
      if (!model.live(e, now)) CHECK(e.expiresAt >= latest);
    }
  }

  void opScan() {
    const std::string prefix = chance(50) ? "" : "k" + std::to_string(rand(4));
    const size_t count = 1 + rand(10);
    where += " scan '" + prefix + "' " + std::to_string(count);
    std::set<std::string> want;
    for (auto& [k, e] : model.entries) {
      if (model.live(e, now) && k.starts_with(prefix)) want.insert(k);
    }
    std::vector<std::string> got;
    ScanCursor cur;
    int calls = 0;
    while (!cur.done) {
      auto r = store.scan(prefix, cur, count, now);
      for (auto& k : r.keys) got.push_back(k);
      cur = r.next;
      REQUIRE(++calls < 10'000);
    }
    removals();
    INFO(where);
    CHECK(std::set<std::string>(got.begin(), got.end()) == want);
    CHECK(got.size() == want.size());
  }

  // ---- after every step ---------------------------------------------------------------------

  void compare(bool content) {
    INFO(where);
    if (more()) {
      std::string rest;
      for (size_t i = pos; i < rec.calls.size(); ++i) rest += rec.calls[i].line() + "; ";
      INFO("unexpected calls: " << rest);
      REQUIRE_FALSE(more());
    }
    rec.calls.clear();
    pos = 0;
    const CacheStats s = store.stats();
    REQUIRE(s.keys == model.entries.size());
    REQUIRE(store.size() == model.entries.size());
    REQUIRE(s.keysWithTtl == model.keysWithTtl());
    REQUIRE(s.hits == model.hits);
    REQUIRE(s.misses == model.misses);
    REQUIRE(s.evictions == model.evictions);
    REQUIRE(s.expired == model.expired);
    REQUIRE(s.refusedFull == model.refusedFull);
    REQUIRE(s.lfuDecays == model.decays);
    REQUIRE(s.memoryUsed == store.memoryUsed());
    REQUIRE(s.memoryUsed - s.indexBytes == entryBytes());
    if (s.memoryUsed > options.maxMemory)
      overLimit = std::max(overLimit, s.memoryUsed - options.maxMemory);
    REQUIRE(replay.size() == model.entries.size());
    for (auto& [k, e] : model.entries) {
      auto it = replay.find(k);
      REQUIRE(it != replay.end());
      REQUIRE(it->second.first == e.value);
      REQUIRE(it->second.second == e.expiresAt);
    }
    if (content) {
      auto c = contentOf(store, now);
      removals();
      REQUIRE_FALSE(more());
      rec.calls.clear();
      pos = 0;
      std::map<std::string, std::pair<std::string, Millis>> live;
      for (auto& [k, e] : model.entries) {
        if (model.live(e, now)) live[k] = {e.value, e.expiresAt};
      }
      REQUIRE(c.entries == live);
      REQUIRE(store.stats().expired == model.expired);
    }
  }

  uint64_t entryBytes() const {
    uint64_t sum = 0;
    for (auto& [k, e] : model.entries) {
      sum += static_cast<uint64_t>(charge(k, e.value.size(), e.expiresAt != 0));
    }
    return sum;
  }

  void churn() {
    for (int n = 0; n < 2; ++n) {
      void*& p = junk[junkRng() % junk.size()];
      std::free(p);
      p = std::malloc(8 + junkRng() % 120);
    }
  }

  void step(int i) {
    churn();
    now += static_cast<Millis>(rand(4));
    where = "policy " + std::string(toString(options.policy)) + " step " + std::to_string(i) +
            " now " + std::to_string(now) + ":";
    const uint64_t r = rand(100);
    if (r < 25) {
      opGet();
    } else if (r < 48) {
      opSet();
    } else if (r < 56) {
      opDel();
    } else if (r < 64) {
      opIncr();
    } else if (r < 71) {
      opExpire();
    } else if (r < 76) {
      opTtl();
    } else if (r < 81) {
      opExists();
    } else if (r < 88) {
      opMset();
    } else if (r < 94) {
      opExpireStep();
    } else if (r < 95) {
      opScan();
    } else {
      opGet();
    }
    // The store's whole content is read every 16th step only: reading it
    // (scanRange) drops expired keys, and expired keys must linger between
    // reads for lazy expiry and their eviction to be exercised.
    compare(i % 16 == 0);
  }
};

// A store's memory with nothing in it: its index alone.
uint64_t emptyMemory(Policy policy) {
  CacheOptions o;
  o.policy = policy;
  return CacheStore(o).memoryUsed();
}

// Runs the workload and returns the victims in order.
std::vector<std::string> run(Policy policy, uint64_t seed, uint64_t decayEvery, int steps) {
  const auto header = probeHeader(policy, false);
  const auto headerTtl = probeHeader(policy, true);
  REQUIRE(header);
  REQUIRE(headerTtl);
  // About 15 average entries fit: most writes of a new key evict.
  const uint64_t room = 15 * usable(*header + 8 + 40);
  Runner r(policy, seed, emptyMemory(policy) + room, decayEvery);
  r.header = *header;
  r.headerTtl = *headerTtl;
  for (int i = 0; i < steps; ++i) r.step(i);
  r.compare(true);
  if (policy == Policy::noeviction) {
    CHECK(r.refusals > static_cast<uint64_t>(steps) / 50);
  } else {
    CHECK(r.victims.size() > static_cast<uint64_t>(steps) / 20);
  }
  if (policy == Policy::lfu) CHECK(r.model.decays > static_cast<uint64_t>(steps) / 5000);
  CHECK(r.store.stats().expired > static_cast<uint64_t>(steps) / 100);
  // Over the limit only by what the header allows: a bucket array or an lfu node.
  CHECK(r.overLimit <= 512);
  return r.victims;
}

}  // namespace

TEST_CASE("fifo evicts in insertion order over a random workload", "[cache][property]") {
  run(Policy::fifo, 1, 0, kSteps);
}

TEST_CASE("lifo evicts the latest inserted over a random workload", "[cache][property]") {
  run(Policy::lifo, 2, 0, kSteps);
}

TEST_CASE("lru evicts the least recently used over a random workload", "[cache][property]") {
  run(Policy::lru, 3, 0, kSteps);
}

TEST_CASE("mru evicts the most recently used over a random workload", "[cache][property]") {
  run(Policy::mru, 4, 0, kSteps);
}

TEST_CASE("lfu evicts the least used with halving over a random workload", "[cache][property]") {
  run(Policy::lfu, 5, 97, kSteps);
}

TEST_CASE("lfu with the default halving period over a random workload", "[cache][property]") {
  run(Policy::lfu, 8, 0, kSteps / 4);
}

TEST_CASE("random evicts only keys present over a random workload", "[cache][property]") {
  const auto a = run(Policy::random, 6, 0, kSteps / 4);
  // The same seed draws the same victims.
  CHECK(run(Policy::random, 6, 0, kSteps / 4) == a);
}

TEST_CASE("noeviction refuses what does not fit over a random workload", "[cache][property]") {
  run(Policy::noeviction, 7, 0, kSteps / 2);
}

// A fixed population of equal entries under a limit that holds exactly them:
// each new key evicts one, which is then put back. Victims must be uniform.
TEST_CASE("random policy victims are uniform by chi-square", "[cache][property]") {
  constexpr int kPopulation = 20;
  constexpr int kTrials = 20'000;
  const std::string value(20, 'v');
  auto name = [](int i) { return "r" + std::to_string(100 + i); };
  // Calls that change nothing but let the index finish a resize.
  auto settle = [](CacheStore& s) {
    for (int i = 0; i < 64; ++i) s.exists("none", 0);
  };
  auto victimsOf = [&](uint64_t seed) {
    CacheOptions o;
    o.policy = Policy::random;
    o.seed = seed;
    o.maxMemory = uint64_t{1} << 30;
    uint64_t full = 0;
    {
      CacheStore probe(o);
      for (int i = 0; i < kPopulation; ++i) probe.set(name(i), value, {}, 0);
      settle(probe);
      full = probe.memoryUsed();
    }
    // The population fits, one entry more does not.
    o.maxMemory = full + 8;
    Recorder rec;
    CacheStore store(o, &rec);
    // While the index doubles it holds both bucket arrays, so filling it may
    // evict: put back what went once the index has settled.
    for (int round = 0; store.size() < kPopulation; ++round) {
      REQUIRE(round < 10);
      for (int i = 0; i < kPopulation; ++i) {
        if (!store.exists(name(i), 0)) REQUIRE(std::get<bool>(store.set(name(i), value, {}, 0)));
        settle(store);
      }
    }
    const uint64_t before = store.stats().evictions;
    std::vector<int> order;
    int single = 0;
    for (int t = 0; t < kTrials; ++t) {
      rec.calls.clear();
      REQUIRE(std::get<bool>(store.set("r999", value, {}, 0)));
      // Each victim is put back (which may itself evict, rarely) until the
      // population is whole again.
      std::vector<std::string> out;
      for (size_t i = 0; i < rec.calls.size(); ++i) {
        if (rec.calls[i].kind == Call::removed) {
          REQUIRE(rec.calls[i].why == Removal::evicted);
          REQUIRE(rec.calls[i].key != "r999");
          out.push_back(rec.calls[i].key);
        }
      }
      REQUIRE(!out.empty());
      single += out.size() == 1;
      REQUIRE(store.del("r999", 0));
      while (!out.empty()) {
        const std::string victim = out.back();
        out.pop_back();
        order.push_back(std::stoi(victim.substr(1)) - 100);
        rec.calls.clear();
        REQUIRE(std::get<bool>(store.set(victim, value, {}, 0)));
        for (auto& c : rec.calls) {
          if (c.kind == Call::removed) out.push_back(c.key);
        }
      }
      REQUIRE(store.size() == kPopulation);
    }
    CHECK(single > kTrials * 99 / 100);
    CHECK(store.stats().evictions - before == order.size());
    return order;
  };
  const auto order = victimsOf(42);
  std::vector<double> counts(kPopulation, 0);
  for (int v : order) counts.at(static_cast<size_t>(v)) += 1;
  const double expected = double(order.size()) / kPopulation;
  double chi2 = 0;
  for (double c : counts) chi2 += (c - expected) * (c - expected) / expected;
  // 19 degrees of freedom: P(chi2 > 60) < 1e-5 for a uniform draw; the seed is fixed, so
  // this never flakes, and a biased draw (by bucket, by chain) lands far above it.
  INFO("chi2 " << chi2);
  CHECK(chi2 < 60);
  for (double c : counts) CHECK(c > expected / 2);
  // The seed decides the victims.
  CHECK(victimsOf(42) == order);
  CHECK(victimsOf(43) != order);
}

// The first victim of fresh stores, one per seed, all filled in one order:
// uniform over the keys in their places (a draw biased by position, as a
// modulo taken twice, shows here though keys move between places in a long run).
TEST_CASE("random policy first victims across seeds are uniform by chi-square",
          "[cache][property]") {
  constexpr int kPopulation = 20;
  constexpr int kSeeds = 20'000;
  const std::string value(20, 'v');
  auto name = [](int i) { return "r" + std::to_string(100 + i); };
  auto fill = [&](CacheStore& s) {
    for (int i = 0; i < kPopulation; ++i) {
      REQUIRE(std::get<bool>(s.set(name(i), value, {}, 0)));
      for (int j = 0; j < 8; ++j) s.exists("none", 0);  // let a resize finish
    }
  };
  CacheOptions o;
  o.policy = Policy::random;
  o.maxMemory = uint64_t{1} << 30;
  uint64_t full = 0;
  {
    CacheStore probe(o);
    fill(probe);
    full = probe.memoryUsed();
  }
  o.maxMemory = full + 8;
  std::vector<double> counts(kPopulation, 0);
  Recorder rec;
  for (int seed = 1; seed <= kSeeds; ++seed) {
    o.seed = static_cast<uint64_t>(seed);
    CacheStore store(o, &rec);
    fill(store);
    rec.calls.clear();
    REQUIRE(std::get<bool>(store.set("r999", value, {}, 0)));
    REQUIRE(rec.calls.size() >= 2);
    REQUIRE(rec.calls[0].why == Removal::evicted);
    counts.at(static_cast<size_t>(std::stoi(rec.calls[0].key.substr(1)) - 100)) += 1;
  }
  const double expected = double(kSeeds) / kPopulation;
  double chi2 = 0;
  for (double c : counts) chi2 += (c - expected) * (c - expected) / expected;
  INFO("chi2 " << chi2);
  CHECK(chi2 < 60);  // 19 degrees of freedom, as above
}
}  // namespace zmesh::cache::test
