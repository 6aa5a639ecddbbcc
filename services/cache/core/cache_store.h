// The cache's state: binary-safe keys and values with TTL, held under a
// memory limit and evicted by one exact policy. Pure and single-threaded: the
// time (Unix ms, the same clock the log keeps) is passed into every call,
// nothing blocks, and every change is reported to a Listener while it happens
// so the adapter can log and publish it without copying.
//
// Index: a chained hash table whose bucket is chosen by the TOP bits of the
// key's 64-bit hash, so bucket order is hash order and a doubling splits
// bucket i into 2i and 2i+1. It grows (and shrinks) incrementally, a few
// buckets per call, so no call pays for a whole rehash. Because keys are
// reachable in hash order, a scan cursor is a position in hash space: it
// survives any insert, delete or resize (a key present for the whole scan is
// never missed), and a node that owns a slice of a hash ring can enumerate
// exactly its keys (scanRange).
//
// Eviction (policy fixed at construction), exact and O(1) amortised; each
// entry carries only its own policy's bookkeeping:
//   fifo, lifo  by insertion: the earliest (latest) inserted goes first. An
//               overwrite keeps the key's place; a key deleted and set again
//               is a new insertion.
//   lru, mru    by last use: the least (most) recently used goes first. A use
//               is a get that hits, a set or incr that writes, an expire of a
//               present key; not exists, ttl or scan.
//   lfu         the least used goes first; of equal counts, the one that
//               reached its count first. A new key enters count 1 after those
//               already there; a use moves a key to count + 1 after those
//               already there. Every insert and every use counts one towards
//               the next halving: after lfuDecayUses of them (0: 1024 at
//               first, then max(1024, 8 × keys) as computed at each halving)
//               every count becomes max(1, count / 2), and keys whose counts
//               meet keep their order: lower old count first, then who
//               reached it first.
//   random      the keys sit in an array (a new key appended, one that leaves
//               replaced by the last, an overwritten one kept in its slot); a
//               victim is keys[rng() % size] from a std::mt19937_64 seeded
//               with CacheOptions::seed, drawn again while it is a key being
//               written.
//   noeviction  nothing goes: a write that does not fit is refused
//               (insufficientStorage, counted in refusedFull); reads, deletes
//               and writes that do not grow memory go on.
// A write never evicts a key it writes. Victims are told (onRemoved evicted)
// before the write that needed the room; expired keys not yet removed are
// candidates like any.
//
// Memory: `memoryUsed()` is the entries plus the index. An entry is one
// allocation (header and the policy's bookkeeping, a 4-byte expiry-heap slot
// if it has a TTL, the key, the value) charged its allocator size class,
// allocationSize(). The index (stats().indexBytes) is the bucket arrays (both
// while resizing), the expiry heap's array, random's key array and lfu's
// frequency nodes. Before a write that grows memory by G (the new entry's
// charge less the one it replaces), victims go until memoryUsed() + G <=
// maxMemory; should only keys being written be left, the write goes ahead.
// The index grows at one key per bucket, or, while its new array would not
// fit under maxMemory, only at two (as Redis does); a resize starts in the
// call after the load calls for it and both arrays count while it runs. So
// memoryUsed() can pass maxMemory by a new bucket array, or by an lfu
// frequency node a use adds, until the next write that grows memory evicts.
// An entry whose charge alone is over maxMemory is refused (payloadTooLarge).
//
// TTL: expiry times are absolute Unix ms (0: none); a key is expired once
// now >= its expiry. An expired key is removed (counted in `expired`, told as
// Removal::expired) when a call touches it, lazily, and by `expireStep`,
// which the adapter runs on its loop with a work budget so expired memory
// comes back without a stall.
//
// The listener must not call the store back.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace zmesh::cache {

using Millis = int64_t;  // Unix ms

enum class Policy : uint8_t { fifo, lifo, lru, mru, lfu, random, noeviction };
// "fifo" … "noeviction"; nullopt for anything else.
std::optional<Policy> parsePolicy(std::string_view text);
std::string_view toString(Policy policy);

struct CacheOptions {
  Policy policy = Policy::lru;
  uint64_t maxMemory = uint64_t{256} << 20;  // bytes; what memoryUsed() may reach
  size_t maxKeyBytes = 4096;                 // keys are 1..maxKeyBytes bytes (at most 2^30 - 1)
  size_t maxValueBytes = 512 << 10;          // values are 0..maxValueBytes bytes (at most 2^32 - 1)
  Millis maxTtl = Millis{10} * 365 * 24 * 3600 * 1000;  // a longer TTL is invalidArgument
  uint64_t lfuDecayUses = 0;  // 0: max(1024, 8 × keys) uses between halvings
  uint64_t seed = 0;          // hash seed and the random policy's generator
};

enum class Fail : uint8_t {
  invalidArgument,      // empty key, TTL out of range, bad cursor
  payloadTooLarge,      // key or value over its limit, or one entry larger than maxMemory
  failedPrecondition,   // incr on a value that is not a decimal int64, or overflow
  insufficientStorage,  // noeviction and the write does not fit
};
struct Failure {
  Fail code;
  std::string message;
};

enum class SetCondition : uint8_t { always, ifAbsent, ifPresent };

struct SetArgs {
  Millis ttl = 0;  // 0: no expiry (or the current one, with keepTtl)
  SetCondition condition = SetCondition::always;
  bool keepTtl = false;  // with a ttl: invalidArgument
};

enum class Removal : uint8_t { deleted, expired, overwritten, evicted };

// Told of every change while it happens; views are valid only during the call.
// The adapter logs and publishes from here; a test model checks against it.
class Listener {
 public:
  virtual ~Listener() = default;
  // The key now holds `value`, expiring at `expiresAt` (0: never). Also for incr.
  virtual void onSet(std::string_view key, std::string_view value, Millis expiresAt) = 0;
  // The key left the cache (overwritten: reported before the onSet that replaces it).
  virtual void onRemoved(std::string_view key, Removal why) = 0;
  // The key's expiry changed to `expiresAt` (0: never) by expire(); its value
  // is passed too, so a log can record the key's whole state.
  virtual void onExpireSet(std::string_view key, std::string_view value, Millis expiresAt) = 0;
};

struct ScanCursor {
  uint64_t position = 0;  // the next hash to visit
  bool done = false;      // the whole hash space was visited
};

struct ScanResult {
  std::vector<std::string> keys;
  ScanCursor next;
};

struct CacheStats {
  uint64_t keys = 0;
  uint64_t keysWithTtl = 0;
  uint64_t memoryUsed = 0;
  uint64_t indexBytes = 0;  // of memoryUsed: bucket arrays, expiry heap, policy structures
  uint64_t hits = 0, misses = 0;
  uint64_t evictions = 0;
  uint64_t expired = 0;  // lazily or by expireStep
  uint64_t refusedFull = 0;
  uint64_t lfuDecays = 0;
  uint64_t rehashSteps = 0;
};

class CacheStore {
 public:
  explicit CacheStore(CacheOptions options, Listener* listener = nullptr);
  ~CacheStore();
  CacheStore(const CacheStore&) = delete;
  CacheStore& operator=(const CacheStore&) = delete;

  // The value, valid until the next call that changes the store; counts a hit
  // or a miss and a use.
  std::optional<std::string_view> get(std::string_view key, Millis now);
  // stored = false: the condition did not hold (nothing changed). A present
  // key is told as onRemoved(overwritten), then onSet.
  std::variant<bool, Failure> set(std::string_view key, std::string_view value, SetArgs args,
                                  Millis now);
  bool del(std::string_view key, Millis now);
  // Every pair (its limits and its entry's charge) is checked before any is
  // written. A key given twice is written once, with its last value, where
  // its last pair stands. Room for the whole batch is made first, none of
  // its keys evicted for it; under noeviction all of it is written or none.
  std::optional<Failure> mset(std::span<const std::pair<std::string_view, std::string_view>> pairs,
                              Millis ttl, Millis now);
  // The value must be a decimal int64 as Redis writes one (an optional '-',
  // no leading zero, no '+' or spaces, at most 20 characters), else
  // failedPrecondition, as is overflow. An absent key counts from 0 and gets
  // no expiry; a present one keeps its expiry. Told as onSet only.
  std::variant<int64_t, Failure> incr(std::string_view key, int64_t by, Millis now);
  // false: no such key. ttl 0 removes the expiry. Told as onExpireSet before
  // the change. Gaining or losing an expiry moves the entry to a new
  // allocation; should its charge grow, room is made as for any write.
  std::variant<bool, Failure> expire(std::string_view key, Millis ttl, Millis now);
  // nullopt: no such key; -1: no expiry; else ms left (≥ 1).
  std::optional<Millis> ttl(std::string_view key, Millis now);
  bool exists(std::string_view key, Millis now);  // not a use

  // Examines about `count` keys from `from` on in hash order (and at most
  // 10 × count empty buckets) and returns those starting with `prefix` that
  // are not expired; expired ones it meets are removed. Keys sharing one
  // hash are returned together, so the cursor never splits them. Any
  // position is a valid cursor.
  ScanResult scan(std::string_view prefix, ScanCursor from, size_t count, Millis now);
  // Visits live entries with hash in [from, to] in hash order, at most
  // `limit` of them (more only to finish a group sharing one hash), and
  // returns where to go on (done once past `to`). It examines about
  // 10 × limit entries and empty buckets at most, so a call may visit none
  // and not be done. For a snapshot taken a slice at a time, and a ring node
  // enumerating its range. `fn` must not call the store.
  template <typename Fn>  // void(std::string_view key, std::string_view value, Millis expiresAt)
  ScanCursor scanRange(uint64_t from, uint64_t to, size_t limit, Millis now, Fn&& fn);

  // Removes expired keys, examining at most `budget` of those with a TTL
  // (soonest first; equal times in an order set by the calls made, not by
  // addresses); returns how many it removed.
  size_t expireStep(Millis now, size_t budget);
  // When the soonest expiry is, if any key has one.
  std::optional<Millis> nextExpiry() const;

  // Puts an entry back at start-up (snapshot/log replay): no listener calls,
  // no hit counting; for the policy, a set. Never evicts: what the store
  // charges depends on history the log does not hold (array capacities, a
  // resize under way), so a replay could pass maxMemory where the running
  // cache did not — evictToLimit() afterwards makes room, once. One that
  // cannot be kept (expiresAt <= now, a value over its limit) is dropped and
  // takes the key's current value with it: the log's newer word is that the
  // older value is gone. A key over its limit is ignored.
  void restore(std::string_view key, std::string_view value, Millis expiresAt, Millis now);
  // Evicts (told to the listener) until memoryUsed() <= maxMemory, as far as
  // the policy may; returns how many keys it evicted.
  size_t evictToLimit();

  uint64_t hashOf(std::string_view key) const;
  uint64_t memoryUsed() const;
  size_t size() const;  // keys, expired ones not yet removed included
  CacheStats stats() const;
  const CacheOptions& options() const;  // as given, the key and value limits clamped

  // What one allocation of `bytes` is charged: the allocator's size class,
  // a function of the size alone (jemalloc's nallocx; under ASan the size
  // itself; else glibc's: 16-byte chunks with an 8-byte header, 32 at
  // least), so the same writes always evict the same keys.
  static uint64_t allocationSize(size_t bytes);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  using Visit = void (*)(void* ctx, std::string_view key, std::string_view value, Millis expiresAt);
  ScanCursor scanRangeImpl(uint64_t from, uint64_t to, size_t limit, Millis now, Visit visit,
                           void* ctx);
};

template <typename Fn>
ScanCursor CacheStore::scanRange(uint64_t from, uint64_t to, size_t limit, Millis now, Fn&& fn) {
  return scanRangeImpl(
      from, to, limit, now,
      [](void* ctx, std::string_view k, std::string_view v, Millis e) {
        (*static_cast<std::remove_reference_t<Fn>*>(ctx))(k, v, e);
      },
      &fn);
}

}  // namespace zmesh::cache
