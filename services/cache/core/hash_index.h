// The cache's index: a chained hash table whose bucket is the TOP `bits` bits
// of the key's 64-bit hash. Bucket i holds exactly the hashes
// [i << (64 - bits), ((i + 1) << (64 - bits)) - 1], so buckets in order are
// hashes in order, and a doubling splits bucket i into 2i and 2i + 1.
//
// Resizes are incremental, as in Redis: a resize allocates the new table and
// step() moves kStepBuckets of the old table's buckets at a time, in bucket
// order. Which table holds a key is then decidable from its hash alone: with
// `migrated` old buckets moved, a hash whose old bucket is below `migrated`
// lives in the new table, any other in the old one. That is what lets a scan
// walk both tables in hash order (spanAt).
//
// It grows when it holds more keys than buckets (to the smallest power of two
// above the count), and shrinks when it holds fewer than one key per eight
// buckets (to the smallest power of two at least twice the count, never under
// 2^kMinBits). As in Redis, a growth whose new array would not fit in the
// room left under the memory limit waits (evicting entries to make room for
// an index would be the wrong trade) until the table holds twice as many keys
// as buckets. Resizes start only inside step(), so inserting or erasing never
// moves other entries and a caller may hold entry pointers across them.
//
// Owns its bucket arrays, not the entries.
#pragma once

#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "entry.h"

namespace zmesh::cache {

template <class E>
class HashIndex {
 public:
  static constexpr unsigned kMinBits = 3;    // 8 buckets
  static constexpr size_t kStepBuckets = 4;  // old buckets moved per step
  static constexpr uint64_t kLastHash = UINT64_MAX;

  explicit HashIndex(uint64_t seed) : seed_(seed), main_(kMinBits) {}

  uint64_t hash(std::string_view key) const {
    return XXH3_64bits_withSeed(key.data(), key.size(), seed_);
  }
  uint64_t hashOf(const E* e) const { return hash(keyOf(e)); }

  E* find(uint64_t h, std::string_view key) const {
    for (E* e = chainFor(h); e != nullptr; e = e->chain)
      if (keyBytes(e) == key.size() && keyOf(e) == key) return e;
    return nullptr;
  }

  void insert(E* e, uint64_t h) {
    E*& head = chainFor(h);
    e->chain = head;
    head = e;
    ++size_;
  }

  // Takes `e` (whose hash is h) out of its chain.
  void erase(E* e, uint64_t h) {
    *linkTo(e, h) = e->chain;
    --size_;
  }

  // `fresh` (same key, so same hash) takes `old`'s place in its chain.
  void replace(E* old, E* fresh, uint64_t h) {
    fresh->chain = old->chain;
    *linkTo(old, h) = fresh;
  }

  // Moves a few buckets of the running resize, or starts the resize the
  // load calls for; `room` is the memory left under the limit. True when it
  // moved buckets.
  bool step(uint64_t room) {
    if (!resizing_) {
      startIfNeeded(room);
      return false;
    }
    if (size_ == 0) {  // nothing left in the old table to move
      finish();
      return true;
    }
    for (size_t n = 0; n < kStepBuckets && migrated_ < main_.count(); ++n, ++migrated_) {
      E* e = main_.slots[migrated_];
      main_.slots[migrated_] = nullptr;
      while (e != nullptr) {
        E* next = e->chain;
        E*& head = target_.slots[hashOf(e) >> (64 - target_.bits)];
        e->chain = head;
        head = e;
        e = next;
      }
    }
    if (migrated_ == main_.count()) finish();
    return true;
  }

  // The chain holding the keys with hash `pos`, and the last hash of the
  // slice of hash space that chain holds: its entries with hashes in
  // [pos, last] are all the keys in that range. Entries of the chain below
  // `pos` may be there too (a bucket can start before pos).
  struct Span {
    E* chain;
    uint64_t last;
  };
  Span spanAt(uint64_t pos) const {
    uint64_t i = pos >> (64 - main_.bits);
    if (resizing_ && i < migrated_) {
      uint64_t j = pos >> (64 - target_.bits);
      uint64_t movedUpTo = (migrated_ << (64 - main_.bits)) - 1;
      return {target_.slots[j], std::min(lastHash(j, target_.bits), movedUpTo)};
    }
    return {main_.slots[i], lastHash(i, main_.bits)};
  }

  size_t size() const { return size_; }
  size_t buckets() const { return main_.count(); }
  bool resizing() const { return resizing_; }
  // The bucket arrays, both while resizing.
  uint64_t bytes() const {
    return (main_.count() + (resizing_ ? target_.count() : 0)) * sizeof(E*);
  }

  // Every entry, in no particular order (for the destructor's cleanup).
  template <typename Fn>
  void forEach(Fn&& fn) const {
    auto walk = [&](const Table& t) {
      for (size_t i = 0; i < t.count(); ++i)
        for (E* e = t.slots[i]; e != nullptr;) {
          E* next = e->chain;
          fn(e);
          e = next;
        }
    };
    walk(main_);
    if (resizing_) walk(target_);
  }

 private:
  struct Table {
    Table() = default;
    explicit Table(unsigned b) : slots(std::make_unique<E*[]>(size_t{1} << b)), bits(b) {}
    size_t count() const { return slots ? size_t{1} << bits : 0; }
    std::unique_ptr<E*[]> slots;
    unsigned bits = 0;
  };

  static uint64_t lastHash(uint64_t bucket, unsigned bits) {
    return ((bucket + 1) << (64 - bits)) - 1;  // wraps to UINT64_MAX for the last bucket
  }

  E*& chainFor(uint64_t h) const {
    uint64_t i = h >> (64 - main_.bits);
    if (resizing_ && i < migrated_) return target_.slots[h >> (64 - target_.bits)];
    return main_.slots[i];
  }

  E** linkTo(E* e, uint64_t h) const {
    E** link = &chainFor(h);
    while (*link != e) link = &(*link)->chain;
    return link;
  }

  void startIfNeeded(uint64_t room) {
    size_t n = main_.count();
    unsigned want = main_.bits;
    if (size_ > n) {
      want = static_cast<unsigned>(std::bit_width(size_));
      if ((size_t{1} << want) * sizeof(E*) > room && size_ < 2 * n) return;
    } else if (size_ < n / 8 && main_.bits > kMinBits) {
      unsigned fit = size_ == 0 ? 0 : static_cast<unsigned>(std::bit_width(2 * size_ - 1));
      want = std::max(kMinBits, fit);
    }
    if (want == main_.bits) return;
    target_ = Table(want);
    migrated_ = 0;
    resizing_ = true;
  }

  void finish() {
    main_ = std::move(target_);
    target_ = Table();
    migrated_ = 0;
    resizing_ = false;
  }

  uint64_t seed_;
  Table main_;    // where the keys live; while resizing, the old table
  Table target_;  // while resizing, the new table
  bool resizing_ = false;
  uint64_t migrated_ = 0;  // old buckets already moved into target_
  size_t size_ = 0;
};

}  // namespace zmesh::cache
