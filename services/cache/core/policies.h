// The eviction policies. Each is a class whose Hook is what it keeps inside
// every entry (entry.h), so a policy pays only for its own bookkeeping:
//
//   fifo, lifo, lru, mru  a doubly-linked list, 16 bytes an entry
//   lfu                   a list of frequency nodes, each with its own list
//                         of entries (Shah, Mitra, Matani: "An O(1)
//                         algorithm for implementing the LFU cache eviction
//                         scheme"), 24 bytes an entry and one node per count
//   random                the entries in an array, 4 bytes an entry for its slot
//   noeviction            nothing
//
// The store calls, for the entries of one policy:
//   inserted(e, keys)  a new key (keys: how many the index holds, e included)
//   used(e, keys)      a use of a present key: get, set, incr, expire
//   replaced(old, new) the key moved to a new allocation; same place
//   removed(e)         the key left
//   victim(pinned)     the next to evict, skipping pinned entries (`pinned`
//                      of them are present); nullptr when none may go
// Every operation is O(1) (amortised: random's array doubles and halves)
// but victim's skip over pinned entries (the keys being written: one, or an
// mset's batch) and lfu's periodic halving, O(frequency nodes + entries of
// the merged lists) once every max(1024, 8 × keys) uses.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <random>
#include <vector>

#include "cache_store.h"
#include "entry.h"

namespace zmesh::cache {

enum class ListOrder : uint8_t {
  fifo,  // victim: the earliest inserted (an overwrite keeps its place)
  lifo,  // victim: the latest inserted
  lru,   // victim: the least recently used
  mru,   // victim: the most recently used
};

template <ListOrder kOrder>
class ListPolicy {
 public:
  template <class E>
  struct Hook {
    E* prev = nullptr;
    E* next = nullptr;
  };
  using E = Entry<ListPolicy>;
  static constexpr bool kEvicts = true;
  static constexpr bool kByUse = kOrder == ListOrder::lru || kOrder == ListOrder::mru;

  explicit ListPolicy(const CacheOptions&) {}

  void inserted(E* e, size_t) { pushBack(e); }
  void used(E* e, size_t) {
    if constexpr (kByUse) {
      if (e == tail_) return;
      unlink(e);
      pushBack(e);
    }
  }
  void replaced(E* old, E* fresh) {
    fresh->hook = old->hook;
    (fresh->hook.prev ? fresh->hook.prev->hook.next : head_) = fresh;
    (fresh->hook.next ? fresh->hook.next->hook.prev : tail_) = fresh;
  }
  void removed(E* e) { unlink(e); }

  E* victim(size_t) const {
    // The list runs from the earliest inserted (least recently used) at the
    // head to the latest (most recently used) at the tail.
    if constexpr (kOrder == ListOrder::fifo || kOrder == ListOrder::lru) {
      for (E* e = head_; e != nullptr; e = e->hook.next)
        if (!pinned(e)) return e;
    } else {
      for (E* e = tail_; e != nullptr; e = e->hook.prev)
        if (!pinned(e)) return e;
    }
    return nullptr;
  }

  uint64_t bytes() const { return 0; }
  uint64_t decays() const { return 0; }

 private:
  void pushBack(E* e) {
    e->hook.prev = tail_;
    e->hook.next = nullptr;
    (tail_ ? tail_->hook.next : head_) = e;
    tail_ = e;
  }
  void unlink(E* e) {
    (e->hook.prev ? e->hook.prev->hook.next : head_) = e->hook.next;
    (e->hook.next ? e->hook.next->hook.prev : tail_) = e->hook.prev;
  }

  E* head_ = nullptr;
  E* tail_ = nullptr;
};

// Least frequently used. Frequency nodes in increasing count, each holding
// its entries in the order they reached that count; the victim is the first
// unpinned entry from the lowest count up. A new key enters count 1 at the
// tail; a use moves a key to the tail of count + 1. Every inserted() and
// used() counts one use towards the next halving; when `every` uses have
// been counted, every count halves (floor, at least 1): nodes whose counts
// meet merge, the lower original count's entries before the higher's (each
// list keeping its order), then `every` becomes lfuDecayUses, or when that
// is 0 max(1024, 8 × keys).
class LfuPolicy {
 public:
  struct Freq;
  template <class E>
  struct Hook {
    E* prev = nullptr;
    E* next = nullptr;
    Freq* freq = nullptr;
  };
  using E = Entry<LfuPolicy>;
  struct Freq {
    uint64_t count = 0;
    size_t size = 0;  // entries
    Freq* prev = nullptr;
    Freq* next = nullptr;
    E* head = nullptr;  // reached `count` first
    E* tail = nullptr;
  };
  static constexpr bool kEvicts = true;
  static constexpr uint64_t kDefaultEvery = 1024;

  explicit LfuPolicy(const CacheOptions& o)
      : decayUses_(o.lfuDecayUses), every_(o.lfuDecayUses ? o.lfuDecayUses : kDefaultEvery) {}
  ~LfuPolicy() {
    while (first_ != nullptr) {
      Freq* next = first_->next;
      std::free(first_);
      first_ = next;
    }
  }
  LfuPolicy(const LfuPolicy&) = delete;
  LfuPolicy& operator=(const LfuPolicy&) = delete;

  void inserted(E* e, size_t keys) {
    Freq* f = first_ != nullptr && first_->count == 1 ? first_ : newFreq(1, nullptr);
    append(f, e);
    counted(keys);
  }

  void used(E* e, size_t keys) {
    Freq* f = e->hook.freq;
    if (f->count != UINT64_MAX) {
      uint64_t c = f->count + 1;
      Freq* next = f->next;
      if (next != nullptr && next->count == c) {
        detach(e);
        append(next, e);
        if (f->size == 0) dropFreq(f);
      } else if (f->size == 1) {
        f->count = c;  // alone at its count: the node moves up with it
      } else {
        Freq* g = newFreq(c, f);
        detach(e);
        append(g, e);
      }
    }
    counted(keys);
  }

  void replaced(E* old, E* fresh) {
    fresh->hook = old->hook;
    Freq* f = fresh->hook.freq;
    (fresh->hook.prev ? fresh->hook.prev->hook.next : f->head) = fresh;
    (fresh->hook.next ? fresh->hook.next->hook.prev : f->tail) = fresh;
  }

  void removed(E* e) {
    Freq* f = e->hook.freq;
    detach(e);
    if (f->size == 0) dropFreq(f);
  }

  E* victim(size_t) const {
    for (Freq* f = first_; f != nullptr; f = f->next)
      for (E* e = f->head; e != nullptr; e = e->hook.next)
        if (!pinned(e)) return e;
    return nullptr;
  }

  uint64_t bytes() const { return freqBytes_; }
  uint64_t decays() const { return decays_; }

 private:
  void counted(size_t keys) {
    if (++uses_ < every_) return;
    Freq* kept = nullptr;
    for (Freq* f = first_; f != nullptr;) {
      Freq* next = f->next;
      f->count = std::max<uint64_t>(1, f->count / 2);
      kept = kept != nullptr && kept->count == f->count ? merge(kept, f) : f;
      f = next;
    }
    ++decays_;
    uses_ = 0;
    every_ = decayUses_ ? decayUses_ : std::max<uint64_t>(kDefaultEvery, uint64_t{8} * keys);
  }

  // `b` follows `a` and now has its count: one node holds a's entries then
  // b's. The node with more entries stays, so fewer entries are re-pointed.
  Freq* merge(Freq* a, Freq* b) {
    if (a->size == 0 || b->size == 0) std::abort();  // empty nodes never persist
    if (a->size >= b->size) {
      for (E* e = b->head; e != nullptr; e = e->hook.next) e->hook.freq = a;
      a->tail->hook.next = b->head;
      b->head->hook.prev = a->tail;
      a->tail = b->tail;
      a->size += b->size;
      b->size = 0;
      dropFreq(b);
      return a;
    }
    for (E* e = a->head; e != nullptr; e = e->hook.next) e->hook.freq = b;
    a->tail->hook.next = b->head;
    b->head->hook.prev = a->tail;
    b->head = a->head;
    b->size += a->size;
    a->size = 0;
    dropFreq(a);
    return b;
  }

  // A node with count c after `after` (nullptr: first).
  Freq* newFreq(uint64_t c, Freq* after) {
    void* memory = std::malloc(sizeof(Freq));
    if (memory == nullptr) throw std::bad_alloc();
    Freq* f = new (memory) Freq{};
    freqBytes_ += sizeClass(sizeof(Freq));
    f->count = c;
    f->prev = after;
    f->next = after ? after->next : first_;
    if (f->next != nullptr) f->next->prev = f;
    (after ? after->next : first_) = f;
    return f;
  }
  void dropFreq(Freq* f) {
    (f->prev ? f->prev->next : first_) = f->next;
    if (f->next != nullptr) f->next->prev = f->prev;
    freqBytes_ -= sizeClass(sizeof(Freq));
    std::free(f);
  }

  static void append(Freq* f, E* e) {
    e->hook.freq = f;
    e->hook.prev = f->tail;
    e->hook.next = nullptr;
    (f->tail ? f->tail->hook.next : f->head) = e;
    f->tail = e;
    ++f->size;
  }
  static void detach(E* e) {
    Freq* f = e->hook.freq;
    (e->hook.prev ? e->hook.prev->hook.next : f->head) = e->hook.next;
    (e->hook.next ? e->hook.next->hook.prev : f->tail) = e->hook.prev;
    --f->size;
  }

  Freq* first_ = nullptr;  // the lowest count
  uint64_t freqBytes_ = 0;
  uint64_t decayUses_;
  uint64_t every_;
  uint64_t uses_ = 0;
  uint64_t decays_ = 0;
};

// Uniform over the present keys. The keys sit in an array: a new key is
// appended, a key that leaves is replaced by the last one, an overwritten
// key keeps its slot. A victim is drawn as keys[rng() % size] with
// std::mt19937_64 seeded with CacheOptions::seed, drawing again while the
// one drawn is pinned (a key being written).
class RandomPolicy {
 public:
  template <class E>
  struct Hook {
    uint32_t slot = 0;
  };
  using E = Entry<RandomPolicy>;
  static constexpr bool kEvicts = true;

  explicit RandomPolicy(const CacheOptions& o) : rng_(o.seed) {}

  void inserted(E* e, size_t) {
    e->hook.slot = static_cast<uint32_t>(all_.size());
    all_.push_back(e);
  }
  void used(E*, size_t) {}
  void replaced(E* old, E* fresh) {
    fresh->hook.slot = old->hook.slot;
    all_[fresh->hook.slot] = fresh;
  }
  void removed(E* e) {
    E* last = all_.back();
    all_[e->hook.slot] = last;
    last->hook.slot = e->hook.slot;
    all_.pop_back();
    if (all_.empty()) {
      std::vector<E*>().swap(all_);
    } else if (all_.capacity() > kMinCapacity && all_.size() < all_.capacity() / 4) {
      std::vector<E*> smaller;
      smaller.reserve(std::max(kMinCapacity, all_.size() * 2));
      smaller.assign(all_.begin(), all_.end());
      all_.swap(smaller);
    }
  }

  E* victim(size_t pinnedCount) {
    if (all_.size() <= pinnedCount) return nullptr;
    for (;;) {
      E* e = all_[rng_() % all_.size()];
      if (!pinned(e)) return e;
    }
  }

  uint64_t bytes() const { return all_.capacity() * sizeof(E*); }
  uint64_t decays() const { return 0; }

 private:
  static constexpr size_t kMinCapacity = 64;
  std::vector<E*> all_;
  std::mt19937_64 rng_;
};

// Nothing to keep: the store refuses what does not fit.
class NoEviction {
 public:
  template <class E>
  struct Hook {};
  using E = Entry<NoEviction>;
  static constexpr bool kEvicts = false;

  explicit NoEviction(const CacheOptions&) {}
  void inserted(E*, size_t) {}
  void used(E*, size_t) {}
  void replaced(E*, E*) {}
  void removed(E*) {}
  E* victim(size_t) const { return nullptr; }
  uint64_t bytes() const { return 0; }
  uint64_t decays() const { return 0; }
};

}  // namespace zmesh::cache
