#include "cache_store.h"

#include <algorithm>
#include <charconv>
#include <limits>
#include <unordered_map>

#include "entry.h"
#include "expiry_heap.h"
#include "hash_index.h"
#include "policies.h"

namespace zmesh::cache {
namespace {

std::string n(uint64_t v) { return std::to_string(v); }

Failure invalid(std::string message) { return {Fail::invalidArgument, std::move(message)}; }
Failure tooLarge(std::string message) { return {Fail::payloadTooLarge, std::move(message)}; }
Failure notInteger(std::string message) { return {Fail::failedPrecondition, std::move(message)}; }

// A decimal int64 written as Redis writes one: an optional '-', then digits
// with no leading zero ("0" itself aside), at most 20 characters, no sign
// '+', no spaces, no "-0".
std::optional<int64_t> parseDecimal(std::string_view s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  bool negative = s.front() == '-';
  std::string_view digits = negative ? s.substr(1) : s;
  if (digits.empty() || (digits.front() == '0' && (digits.size() > 1 || negative)))
    return std::nullopt;
  uint64_t v = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  constexpr uint64_t kMaxPositive = std::numeric_limits<int64_t>::max();
  if (!negative) {
    if (v > kMaxPositive) return std::nullopt;
    return static_cast<int64_t>(v);
  }
  if (v > kMaxPositive + 1) return std::nullopt;
  return v == kMaxPositive + 1 ? std::numeric_limits<int64_t>::min() : -static_cast<int64_t>(v);
}

}  // namespace

// The operations, whatever the policy; Of<P> holds the state for one.
struct CacheStore::Impl {
  explicit Impl(CacheOptions o) : options(o) {}
  virtual ~Impl() = default;

  virtual std::optional<std::string_view> get(std::string_view key, Millis now) = 0;
  virtual std::variant<bool, Failure> set(std::string_view key, std::string_view value,
                                          SetArgs args, Millis now) = 0;
  virtual bool del(std::string_view key, Millis now) = 0;
  virtual std::optional<Failure> mset(
      std::span<const std::pair<std::string_view, std::string_view>> pairs, Millis ttl,
      Millis now) = 0;
  virtual std::variant<int64_t, Failure> incr(std::string_view key, int64_t by, Millis now) = 0;
  virtual std::variant<bool, Failure> expire(std::string_view key, Millis ttl, Millis now) = 0;
  virtual std::optional<Millis> ttl(std::string_view key, Millis now) = 0;
  virtual bool exists(std::string_view key, Millis now) = 0;
  virtual ScanResult scan(std::string_view prefix, ScanCursor from, size_t count, Millis now) = 0;
  virtual ScanCursor scanRange(uint64_t from, uint64_t to, size_t limit, Millis now, Visit visit,
                               void* ctx) = 0;
  virtual size_t expireStep(Millis now, size_t budget) = 0;
  virtual std::optional<Millis> nextExpiry() const = 0;
  virtual size_t evictToLimit() = 0;
  virtual void restore(std::string_view key, std::string_view value, Millis expiresAt,
                       Millis now) = 0;
  virtual uint64_t hashOf(std::string_view key) const = 0;
  virtual uint64_t memoryUsed() const = 0;
  virtual size_t size() const = 0;
  virtual CacheStats stats() const = 0;

  template <class P>
  class Of;

  // ---- checks shared by every policy ----

  bool keyFits(std::string_view key) const {
    return !key.empty() && key.size() <= options.maxKeyBytes;
  }
  std::optional<Failure> checkKey(std::string_view key) const {
    if (key.empty()) return invalid("key: empty; give 1 to " + n(options.maxKeyBytes) + " bytes");
    if (key.size() > options.maxKeyBytes)
      return tooLarge("key: " + n(key.size()) + " bytes, more than the limit of " +
                      n(options.maxKeyBytes));
    return std::nullopt;
  }
  std::optional<Failure> checkValue(std::string_view value) const {
    if (value.size() > options.maxValueBytes)
      return tooLarge("value: " + n(value.size()) + " bytes, more than the limit of " +
                      n(options.maxValueBytes));
    return std::nullopt;
  }
  std::optional<Failure> checkTtl(Millis ttl, Millis now) const {
    if (ttl < 0) return invalid("ttl: " + std::to_string(ttl) + " ms is negative");
    if (ttl > options.maxTtl)
      return invalid("ttl: " + n(static_cast<uint64_t>(ttl)) + " ms is above the maximum of " +
                     std::to_string(options.maxTtl) + " ms");
    if (ttl > 0 && now > std::numeric_limits<Millis>::max() - ttl)
      return invalid("ttl: " + n(static_cast<uint64_t>(ttl)) +
                     " ms from now is past the clock's end");
    return std::nullopt;
  }
  Failure entryTooLarge(size_t charge) const {
    return tooLarge("entry: " + n(charge) + " bytes with its bookkeeping, more than max_memory " +
                    n(options.maxMemory));
  }
  Failure full(uint64_t grow) const {
    return {Fail::insufficientStorage,
            "max_memory " + n(options.maxMemory) + " bytes reached (" + n(memoryUsed()) +
                " used) under the noeviction policy; the write needs " + n(grow) + " more"};
  }

  CacheOptions options;
};

template <class P>
class CacheStore::Impl::Of final : public CacheStore::Impl {
  using E = Entry<P>;

 public:
  Of(CacheOptions o, Listener* listener)
      : Impl(o), listener_(listener), index_(o.seed), policy_(options) {}
  ~Of() override {
    index_.forEach([](E* e) { freeEntry(e); });
  }

  std::optional<std::string_view> get(std::string_view key, Millis now) override {
    E* e = nullptr;
    if (keyFits(key)) {
      step();
      e = findLive(key, index_.hash(key), now);
    }
    if (e == nullptr) {
      ++counters_.misses;
      return std::nullopt;
    }
    ++counters_.hits;
    policy_.used(e, index_.size());
    return valueOf(e);
  }

  std::variant<bool, Failure> set(std::string_view key, std::string_view value, SetArgs args,
                                  Millis now) override {
    if (auto f = checkKey(key)) return std::move(*f);
    if (auto f = checkValue(value)) return std::move(*f);
    if (auto f = checkTtl(args.ttl, now)) return std::move(*f);
    if (args.keepTtl && args.ttl != 0)
      return invalid("ttl and keepTtl: give a ttl or keep the current one, not both");
    step();
    uint64_t h = index_.hash(key);
    E* old = findLive(key, h, now);
    if (args.condition == SetCondition::ifAbsent && old != nullptr) return false;
    if (args.condition == SetCondition::ifPresent && old == nullptr) return false;
    Millis at = args.ttl != 0 ? now + args.ttl : (args.keepTtl && old ? expiryOf(old) : 0);
    if (auto f = write(key, h, value, at, old, /*tellOverwrite=*/true)) return std::move(*f);
    return true;
  }

  bool del(std::string_view key, Millis now) override {
    if (!keyFits(key)) return false;
    step();
    uint64_t h = index_.hash(key);
    E* e = findLive(key, h, now);
    if (e == nullptr) return false;
    remove(e, h, Removal::deleted);
    return true;
  }

  std::optional<Failure> mset(std::span<const std::pair<std::string_view, std::string_view>> pairs,
                              Millis ttl, Millis now) override {
    if (auto f = checkTtl(ttl, now)) return f;
    for (size_t i = 0; i < pairs.size(); ++i) {
      auto f = checkKey(pairs[i].first);
      if (!f) f = checkValue(pairs[i].second);
      if (f) {
        f->message = "entry " + n(i) + ": " + f->message;
        return f;
      }
    }
    step();
    // A key given twice is written once, with its last value, where its last
    // pair stands.
    std::unordered_map<std::string_view, size_t> lastOf;
    for (size_t i = 0; i < pairs.size(); ++i) lastOf[pairs[i].first] = i;
    struct Pending {
      std::string_view key;
      uint64_t hash;
      E* old;
      E* fresh;
    };
    std::vector<Pending> todo;
    for (size_t i = 0; i < pairs.size(); ++i) {
      if (lastOf[pairs[i].first] != i) continue;
      uint64_t h = index_.hash(pairs[i].first);
      todo.push_back({pairs[i].first, h, findLive(pairs[i].first, h, now), nullptr});
    }
    const Millis at = ttl != 0 ? now + ttl : 0;
    auto dropFresh = [&] {
      for (auto& p : todo)
        if (p.fresh != nullptr) freeEntry(p.fresh);
    };
    uint64_t adding = 0, freeing = 0;
    for (size_t i = 0, j = 0; i < pairs.size(); ++i) {
      if (lastOf[pairs[i].first] != i) continue;
      Pending& p = todo[j++];
      p.fresh = makeEntry<E>(p.key, pairs[i].second, at != 0);
      size_t charge = chargeOf(p.fresh);
      if (charge > options.maxMemory) {
        dropFresh();
        Failure f = entryTooLarge(charge);
        f.message = "entry " + n(i) + ": " + f.message;
        return f;
      }
      adding += charge;
      if (p.old != nullptr) freeing += chargeOf(p.old);
    }
    // Room for the whole batch first, none of its keys evicted for it: all
    // of it is written or (noeviction) none.
    if (adding > freeing) {
      for (auto& p : todo) pin(p.old);
      bool fits = makeRoom(adding - freeing);
      for (auto& p : todo) unpin(p.old);
      if (!fits) {
        dropFresh();
        ++counters_.refusedFull;
        return full(adding - freeing);
      }
    }
    for (size_t i = 0; i < todo.size(); ++i) {
      if (i > 0) step();
      Pending& p = todo[i];
      place(p.key, p.hash, p.fresh, at, p.old, /*tellOverwrite=*/true);
    }
    return std::nullopt;
  }

  std::variant<int64_t, Failure> incr(std::string_view key, int64_t by, Millis now) override {
    if (auto f = checkKey(key)) return std::move(*f);
    step();
    uint64_t h = index_.hash(key);
    E* e = findLive(key, h, now);
    int64_t result = by;
    Millis at = 0;
    if (e != nullptr) {
      auto current = parseDecimal(valueOf(e));
      if (!current) return notInteger("value is not a decimal 64-bit integer");
      if (__builtin_add_overflow(*current, by, &result))
        return notInteger("the result would overflow a 64-bit integer");
      at = expiryOf(e);
    }
    char text[24];
    auto written = std::to_chars(text, text + sizeof text, result);
    std::string_view value(text, static_cast<size_t>(written.ptr - text));
    if (auto f = checkValue(value)) return std::move(*f);
    if (auto f = write(key, h, value, at, e, /*tellOverwrite=*/false)) return std::move(*f);
    return result;
  }

  std::variant<bool, Failure> expire(std::string_view key, Millis ttl, Millis now) override {
    if (auto f = checkKey(key)) return std::move(*f);
    if (auto f = checkTtl(ttl, now)) return std::move(*f);
    step();
    uint64_t h = index_.hash(key);
    E* e = findLive(key, h, now);
    if (e == nullptr) return false;
    Millis at = ttl != 0 ? now + ttl : 0;
    // Told once the room is made, before the entry changes (so the memory
    // the listener could read is the one the write had to fit under).
    if (at != 0 && hasTtl(e)) {
      tellExpireSet(e, at);
      heap_.update(e, at);
    } else if (at != 0 || hasTtl(e)) {
      // Gaining or losing an expiry changes the entry's layout (and its
      // size class, now and then: that growth is made room for like any).
      E* fresh = makeEntry<E>(keyOf(e), valueOf(e), at != 0);
      if (!roomFor(e, chargeOf(fresh))) {
        uint64_t grow = chargeOf(fresh) - chargeOf(e);
        freeEntry(fresh);
        ++counters_.refusedFull;
        return full(grow);
      }
      tellExpireSet(e, at);
      swapIn(e, fresh, h, at);
      e = fresh;
    } else {
      tellExpireSet(e, at);
    }
    policy_.used(e, index_.size());
    return true;
  }

  std::optional<Millis> ttl(std::string_view key, Millis now) override {
    if (!keyFits(key)) return std::nullopt;
    step();
    E* e = findLive(key, index_.hash(key), now);
    if (e == nullptr) return std::nullopt;
    return hasTtl(e) ? heap_.expiryOf(e) - now : Millis{-1};
  }

  bool exists(std::string_view key, Millis now) override {
    if (!keyFits(key)) return false;
    step();
    return findLive(key, index_.hash(key), now) != nullptr;
  }

  ScanResult scan(std::string_view prefix, ScanCursor from, size_t count, Millis now) override {
    ScanResult out;
    if (from.done) {
      out.next = from;
      return out;
    }
    step();
    const size_t budget = std::clamp<size_t>(count, 1, size_t{1} << 40);
    size_t examined = 0, emptyBuckets = 0;
    uint64_t pos = from.position;
    for (;;) {
      auto span = index_.spanAt(pos);
      gather(span.chain, pos, span.last);
      // Stop inside the bucket once the budget is spent, but only between
      // two hashes: the cursor cannot point inside a group sharing one.
      size_t take = hits_.size();
      if (examined + take > budget) {
        take = budget - examined;
        while (take < hits_.size() && hits_[take].hash == hits_[take - 1].hash) ++take;
      }
      bool cut = take < hits_.size();
      uint64_t next = cut ? hits_[take - 1].hash + 1 : span.last + 1;
      if (hits_.empty()) ++emptyBuckets;
      for (size_t i = 0; i < take; ++i) {
        E* e = hits_[i].entry;
        ++examined;
        if (expiredAt(e, now))
          expireEntry(e, hits_[i].hash);
        else if (keyOf(e).starts_with(prefix))
          out.keys.emplace_back(keyOf(e));
      }
      if (!cut && span.last == HashIndex<E>::kLastHash) {
        out.next = ScanCursor{0, true};
        return out;
      }
      pos = next;
      if (cut || examined >= budget || emptyBuckets >= budget * 10) {
        out.next = ScanCursor{pos, false};
        return out;
      }
    }
  }

  ScanCursor scanRange(uint64_t from, uint64_t to, size_t limit, Millis now, Visit visit,
                       void* ctx) override {
    if (from > to) return ScanCursor{from, true};
    step();
    limit = std::clamp<size_t>(limit, 1, size_t{1} << 40);
    size_t visited = 0, work = 0;
    uint64_t pos = from;
    for (;;) {
      auto span = index_.spanAt(pos);
      uint64_t last = std::min(span.last, to);
      gather(span.chain, pos, last);
      size_t i = 0;
      for (; i < hits_.size(); ++i) {
        if (visited >= limit && i > 0 && hits_[i].hash != hits_[i - 1].hash) break;
        E* e = hits_[i].entry;
        ++work;
        if (expiredAt(e, now)) {
          expireEntry(e, hits_[i].hash);
        } else {
          visit(ctx, keyOf(e), valueOf(e), expiryOf(e));
          ++visited;
        }
      }
      if (i < hits_.size()) return ScanCursor{hits_[i - 1].hash + 1, false};
      if (hits_.empty()) ++work;
      if (last == to) return ScanCursor{to, true};
      pos = last + 1;
      if (visited >= limit || work >= limit * 10) return ScanCursor{pos, false};
    }
  }

  size_t expireStep(Millis now, size_t budget) override {
    step();
    size_t removed = 0;
    while (removed < budget && !heap_.empty() && heap_.top().at <= now) {
      E* e = heap_.top().entry;
      expireEntry(e, index_.hashOf(e));
      ++removed;
    }
    return removed;
  }

  std::optional<Millis> nextExpiry() const override {
    if (heap_.empty()) return std::nullopt;
    return heap_.top().at;
  }

  void restore(std::string_view key, std::string_view value, Millis expiresAt,
               Millis now) override {
    if (!keyFits(key)) return;
    step();
    quiet_ = true;
    uint64_t h = index_.hash(key);
    E* old = findLive(key, h, now);
    bool kept = !checkValue(value) && (expiresAt == 0 || expiresAt > now) &&
                !write(key, h, value, expiresAt, old, /*tellOverwrite=*/true);
    // A restored key that may not stay takes the key's older value with it:
    // the log's newer word is that the older value is gone.
    if (!kept && old != nullptr) remove(old, h, Removal::deleted);
    quiet_ = false;
  }

  size_t evictToLimit() override {
    const uint64_t before = counters_.evictions;
    makeRoom(0);
    return counters_.evictions - before;
  }

  uint64_t hashOf(std::string_view key) const override { return index_.hash(key); }
  uint64_t memoryUsed() const override { return entryBytes_ + indexBytes(); }
  size_t size() const override { return index_.size(); }

  CacheStats stats() const override {
    CacheStats s = counters_;
    s.keys = index_.size();
    s.keysWithTtl = heap_.size();
    s.memoryUsed = memoryUsed();
    s.indexBytes = indexBytes();
    s.lfuDecays = policy_.decays();
    return s;
  }

 private:
  struct Hit {
    uint64_t hash;
    E* entry;
  };

  uint64_t indexBytes() const { return index_.bytes() + heap_.bytes() + policy_.bytes(); }

  void step() {
    uint64_t used = memoryUsed();
    if (index_.step(used < options.maxMemory ? options.maxMemory - used : 0))
      ++counters_.rehashSteps;
  }

  bool expiredAt(const E* e, Millis now) const { return hasTtl(e) && heap_.expiryOf(e) <= now; }
  Millis expiryOf(const E* e) const { return hasTtl(e) ? heap_.expiryOf(e) : 0; }

  // The key's entry if it is there and not expired; an expired one is
  // removed on the way.
  E* findLive(std::string_view key, uint64_t h, Millis now) {
    E* e = index_.find(h, key);
    if (e != nullptr && expiredAt(e, now)) {
      expireEntry(e, h);
      return nullptr;
    }
    return e;
  }

  // Sets key to value (limits checked), replacing `old` (the key's live
  // entry, or nullptr) after evicting what the growth needs; nothing
  // changes on failure. An incr does not report the value it replaces.
  std::optional<Failure> write(std::string_view key, uint64_t h, std::string_view value, Millis at,
                               E* old, bool tellOverwrite) {
    E* fresh = makeEntry<E>(key, value, at != 0);
    size_t charge = chargeOf(fresh);
    if (charge > options.maxMemory) {
      freeEntry(fresh);
      return entryTooLarge(charge);
    }
    if (!roomFor(old, charge)) {
      freeEntry(fresh);
      ++counters_.refusedFull;
      return full(charge - (old != nullptr ? chargeOf(old) : 0));
    }
    place(key, h, fresh, at, old, tellOverwrite);
    return std::nullopt;
  }

  // Room for an entry of `charge` bytes replacing `old` (or nullptr), which
  // is not evicted for it. False: it does not fit and the policy may not evict.
  bool roomFor(E* old, size_t charge) {
    size_t before = old != nullptr ? chargeOf(old) : 0;
    if (charge <= before) return true;
    pin(old);
    bool fits = makeRoom(charge - before);
    unpin(old);
    return fits;
  }

  // Puts `fresh` in, replacing `old` if any; the room is already made.
  void place(std::string_view key, uint64_t h, E* fresh, Millis at, E* old, bool tellOverwrite) {
    if (old != nullptr) {
      if (tellOverwrite) tellRemoved(key, Removal::overwritten);
      swapIn(old, fresh, h, at);
      policy_.used(fresh, index_.size());
    } else {
      index_.insert(fresh, h);
      policy_.inserted(fresh, index_.size());
      if (at != 0) heap_.push(fresh, at);
      entryBytes_ += chargeOf(fresh);
    }
    if (listener_ != nullptr && !quiet_) listener_->onSet(key, valueOf(fresh), at);
  }

  // `fresh` holds old's key; it takes old's place everywhere, expiring at
  // `at`, and old is freed.
  void swapIn(E* old, E* fresh, uint64_t h, Millis at) {
    index_.replace(old, fresh, h);
    policy_.replaced(old, fresh);
    if (hasTtl(old) && hasTtl(fresh))
      heap_.replace(old, fresh, at);
    else if (hasTtl(old))
      heap_.erase(old);
    else if (hasTtl(fresh))
      heap_.push(fresh, at);
    entryBytes_ = entryBytes_ - chargeOf(old) + chargeOf(fresh);
    freeEntry(old);
  }

  void remove(E* e, uint64_t h, Removal why) {
    tellRemoved(keyOf(e), why);
    index_.erase(e, h);
    policy_.removed(e);
    if (hasTtl(e)) heap_.erase(e);
    entryBytes_ -= chargeOf(e);
    freeEntry(e);
  }
  void expireEntry(E* e, uint64_t h) {
    ++counters_.expired;
    remove(e, h, Removal::expired);
  }

  // Evicts until `grow` more bytes fit under maxMemory. False when they do
  // not and the policy may not evict. When only pinned keys are left it
  // lets the write go ahead: the index alone is then over a tiny limit.
  bool makeRoom(uint64_t grow) {
    if (quiet_) return true;  // restoring: evictToLimit() comes after
    while (memoryUsed() + grow > options.maxMemory) {
      if constexpr (!P::kEvicts) {
        return false;
      } else {
        E* victim = policy_.victim(pinned_);
        if (victim == nullptr) return true;
        ++counters_.evictions;
        remove(victim, index_.hashOf(victim), Removal::evicted);
      }
    }
    return true;
  }

  void pin(E* e) {
    if (e == nullptr) return;
    setPinned(e, true);
    ++pinned_;
  }
  void unpin(E* e) {
    if (e == nullptr) return;
    setPinned(e, false);
    --pinned_;
  }

  void tellExpireSet(const E* e, Millis at) {
    if (listener_ != nullptr) listener_->onExpireSet(keyOf(e), valueOf(e), at);
  }
  void tellRemoved(std::string_view key, Removal why) {
    if (listener_ != nullptr && (!quiet_ || why == Removal::evicted))
      listener_->onRemoved(key, why);
  }

  // The entries of `chain` with hashes in [from, to], in hash order (equal
  // hashes by key), into hits_.
  void gather(E* chain, uint64_t from, uint64_t to) {
    hits_.clear();
    for (E* e = chain; e != nullptr; e = e->chain) {
      uint64_t h = index_.hashOf(e);
      if (h >= from && h <= to) hits_.push_back(Hit{h, e});
    }
    std::sort(hits_.begin(), hits_.end(), [](const Hit& a, const Hit& b) {
      return a.hash != b.hash ? a.hash < b.hash : keyOf(a.entry) < keyOf(b.entry);
    });
  }

  Listener* listener_;
  bool quiet_ = false;  // restoring: no listener calls, no evictions
  HashIndex<E> index_;
  ExpiryHeap<E> heap_;
  P policy_;
  uint64_t entryBytes_ = 0;
  size_t pinned_ = 0;
  CacheStats counters_;  // hits … rehashSteps; the gauges are filled in by stats()
  std::vector<Hit> hits_;
};

std::optional<Policy> parsePolicy(std::string_view text) {
  for (Policy p : {Policy::fifo, Policy::lifo, Policy::lru, Policy::mru, Policy::lfu,
                   Policy::random, Policy::noeviction})
    if (toString(p) == text) return p;
  return std::nullopt;
}

std::string_view toString(Policy policy) {
  switch (policy) {
    case Policy::fifo:
      return "fifo";
    case Policy::lifo:
      return "lifo";
    case Policy::lru:
      return "lru";
    case Policy::mru:
      return "mru";
    case Policy::lfu:
      return "lfu";
    case Policy::random:
      return "random";
    case Policy::noeviction:
      return "noeviction";
  }
  return "?";
}

CacheStore::CacheStore(CacheOptions options, Listener* listener) {
  options.maxKeyBytes = std::min(options.maxKeyBytes, kMaxKeyBytes);
  options.maxValueBytes = std::min(options.maxValueBytes, kMaxValueBytes);
  switch (options.policy) {
    case Policy::fifo:
      impl_ = std::make_unique<Impl::Of<ListPolicy<ListOrder::fifo>>>(options, listener);
      break;
    case Policy::lifo:
      impl_ = std::make_unique<Impl::Of<ListPolicy<ListOrder::lifo>>>(options, listener);
      break;
    case Policy::lru:
      impl_ = std::make_unique<Impl::Of<ListPolicy<ListOrder::lru>>>(options, listener);
      break;
    case Policy::mru:
      impl_ = std::make_unique<Impl::Of<ListPolicy<ListOrder::mru>>>(options, listener);
      break;
    case Policy::lfu:
      impl_ = std::make_unique<Impl::Of<LfuPolicy>>(options, listener);
      break;
    case Policy::random:
      impl_ = std::make_unique<Impl::Of<RandomPolicy>>(options, listener);
      break;
    case Policy::noeviction:
      impl_ = std::make_unique<Impl::Of<NoEviction>>(options, listener);
      break;
  }
}

CacheStore::~CacheStore() = default;

std::optional<std::string_view> CacheStore::get(std::string_view key, Millis now) {
  return impl_->get(key, now);
}
std::variant<bool, Failure> CacheStore::set(std::string_view key, std::string_view value,
                                            SetArgs args, Millis now) {
  return impl_->set(key, value, args, now);
}
bool CacheStore::del(std::string_view key, Millis now) { return impl_->del(key, now); }
std::optional<Failure> CacheStore::mset(
    std::span<const std::pair<std::string_view, std::string_view>> pairs, Millis ttl, Millis now) {
  return impl_->mset(pairs, ttl, now);
}
std::variant<int64_t, Failure> CacheStore::incr(std::string_view key, int64_t by, Millis now) {
  return impl_->incr(key, by, now);
}
std::variant<bool, Failure> CacheStore::expire(std::string_view key, Millis ttl, Millis now) {
  return impl_->expire(key, ttl, now);
}
std::optional<Millis> CacheStore::ttl(std::string_view key, Millis now) {
  return impl_->ttl(key, now);
}
bool CacheStore::exists(std::string_view key, Millis now) { return impl_->exists(key, now); }
ScanResult CacheStore::scan(std::string_view prefix, ScanCursor from, size_t count, Millis now) {
  return impl_->scan(prefix, from, count, now);
}
ScanCursor CacheStore::scanRangeImpl(uint64_t from, uint64_t to, size_t limit, Millis now,
                                     Visit visit, void* ctx) {
  return impl_->scanRange(from, to, limit, now, visit, ctx);
}
size_t CacheStore::expireStep(Millis now, size_t budget) { return impl_->expireStep(now, budget); }
std::optional<Millis> CacheStore::nextExpiry() const { return impl_->nextExpiry(); }
void CacheStore::restore(std::string_view key, std::string_view value, Millis expiresAt,
                         Millis now) {
  impl_->restore(key, value, expiresAt, now);
}

size_t CacheStore::evictToLimit() { return impl_->evictToLimit(); }
uint64_t CacheStore::hashOf(std::string_view key) const { return impl_->hashOf(key); }
uint64_t CacheStore::memoryUsed() const { return impl_->memoryUsed(); }
size_t CacheStore::size() const { return impl_->size(); }
CacheStats CacheStore::stats() const { return impl_->stats(); }
const CacheOptions& CacheStore::options() const { return impl_->options; }
uint64_t CacheStore::allocationSize(size_t bytes) { return sizeClass(bytes); }

}  // namespace zmesh::cache
