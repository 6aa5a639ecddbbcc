// A Bloom filter in front of the database the cache reads through: on a
// miss, a key the filter says is absent is certainly not in the database, so
// that read is skipped (counted as avoided). Sized from the expected number of
// keys n and the target false-positive rate p:
//   m = ceil(-n ln p / (ln 2)^2) bits, rounded up to whole 64-bit words,
//   k = round(m / n * ln 2), clamped to [1, 30].
// Probe i of a key is bit (h1 + i * h2) mod 2^64 scaled onto [0, m), h1 and h2
// the halves of the key's XXH3-128 under the filter's seed (Kirsch and
// Mitzenmacher: two hashes make k without losing the FP rate).
//
// Deletes: the filter never removes. It is a plain bit array, and a delete only
// counts the key as stale: a stale key costs one wasted database read, never a
// wrong answer. A counting filter (4-bit counters) could remove, but it is 4x
// the memory and snapshot, and a decrement for a key that was never added (a
// false positive deleted, a delete replayed twice) clears bits other keys
// need: a false negative, which would make the cache answer "absent" for a row
// the database holds. So the owner rebuilds instead, from a key scan of the
// database, when needsRebuild() names a reason: more than maxStaleFraction of
// the inserted keys deleted, or more keys inserted than the filter was sized
// for (the FP rate then drifts above p; bloom_filter_test measures both).
//
// Rebuilding (later, on a helper thread): the class is plain data, copyable
// and movable, no globals. The owner starts recording the keys written and
// deleted, THEN the helper scans the database into a fresh filter (a new seed,
// n from the live count with headroom); back on the owner's thread the
// recorded writes are insert()ed and the deletes markDeleted() into it before
// it replaces the old one. Inserts are idempotent and nothing is removed, so a
// key in the database at the swap was either scanned or recorded: no false
// negatives. Until a filter exists (none in the snapshot, or it was refused),
// the owner reads every miss through.
//
// Not thread-safe: one owner; a copy may be read on another thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace zmesh::cache {

class BloomFilter {
 public:
  static constexpr uint32_t kMinK = 1, kMaxK = 30;
  static constexpr uint64_t kMaxBits = uint64_t{1} << 36;  // 8 GiB: a config error above
  static constexpr uint32_t kFormatVersion = 1;

  enum class Rebuild { kNo, kStale, kOverfull };
  static const char* name(Rebuild r);

  struct Stats {
    uint64_t bits = 0;      // m
    uint32_t hashes = 0;    // k
    uint64_t expected = 0;  // design n
    double target = 0;      // design p
    uint64_t seed = 0;
    uint64_t inserted = 0, stale = 0, bitsSet = 0;
    double fill = 0;              // bitsSet / m
    double estimatedFpRate = 0;   // fill^k: the rate now, whatever was inserted
    uint64_t checks = 0;          // shouldRead calls
    uint64_t readsAvoided = 0;    // of those, answered "certainly absent"
    uint64_t falsePositives = 0;  // reads the filter allowed that found nothing
  };

  // Sized for n keys at FP rate p. Refuses n == 0, p outside (0, 1) and a size
  // over kMaxBits, naming which in *error (when given).
  static std::optional<BloomFilter> make(uint64_t n, double p, uint64_t seed,
                                         std::string* error = nullptr);

  // Adds the key. Counted in inserted() only when it set a bit, so setting a
  // key again (or a new key all of whose bits were set) changes nothing.
  void insert(std::string_view key);
  // False: the key was never inserted. True: it may have been.
  bool mayContain(std::string_view key) const;
  // The key was deleted from the database. Nothing is removed; when the filter
  // answers maybe for it, stale() counts it (capped at inserted()). True when
  // counted. A key set again after its delete stays counted: stale() is an
  // upper bound on the inserted keys no longer in the database.
  bool markDeleted(std::string_view key);

  // mayContain, counted for stats: false (certainly absent) is a database read
  // avoided. The owner calls noteFalsePositive() when a read it allowed found
  // nothing, so the live FP rate (stale keys included) can be watched.
  bool shouldRead(std::string_view key);
  void noteFalsePositive() { ++falsePositives_; }

  // Whether the owner should rebuild the filter from the database, and why.
  // kOverfull before kStale when both hold.
  Rebuild needsRebuild(double maxStaleFraction = 0.2) const;

  uint64_t bits() const { return m_; }
  uint32_t hashes() const { return k_; }
  uint64_t expected() const { return n_; }
  double target() const { return p_; }
  uint64_t seed() const { return seed_; }
  uint64_t inserted() const { return inserted_; }
  uint64_t stale() const { return stale_; }
  uint64_t bitsSet() const { return bitsSet_; }
  double fill() const { return static_cast<double>(bitsSet_) / static_cast<double>(m_); }
  double estimatedFpRate() const;
  // (1 - e^{-kn/m})^k: the rate the design gives at n keys inserted.
  double designFpRate() const;
  Stats stats() const;

  // For the snapshot, little-endian: "ZMBF", version u32, then u64 each: m, k,
  // n, p (IEEE-754 bits), seed, inserted, stale; the m/64 words; and last the
  // XXH3-64 of everything before it. The query counters are not saved.
  std::string serialize() const;
  // nullopt, with what was wrong in *error (when given), for bytes that are
  // truncated, of another magic or version, whose m does not match the words
  // they hold, whose k, n, p, inserted or stale are out of range, or whose
  // checksum does not match. Any bytes: never crashes, allocates at most their size.
  static std::optional<BloomFilter> deserialize(std::string_view bytes,
                                                std::string* error = nullptr);
  static constexpr size_t kHeaderBytes = 64, kChecksumBytes = 8;

 private:
  BloomFilter(uint64_t m, uint32_t k, uint64_t n, double p, uint64_t seed);

  uint64_t m_;
  uint32_t k_;
  uint64_t n_;
  double p_;
  uint64_t seed_;
  std::vector<uint64_t> words_;
  uint64_t inserted_ = 0, stale_ = 0, bitsSet_ = 0;
  uint64_t checks_ = 0, readsAvoided_ = 0, falsePositives_ = 0;
};

}  // namespace zmesh::cache
