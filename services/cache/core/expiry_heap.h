// The keys with a TTL, soonest expiry first: a binary min-heap of
// (expiresAt, entry) whose entries know their slot (entry.h heapSlot), so a
// key's expiry is read, moved or dropped in O(log n) without a search. The
// expiry time lives here, not in the entry: a key without a TTL pays nothing.
//
// Equal expiries pop in an order that depends only on the operations done,
// not on addresses. The array gives back memory when it falls under a
// quarter full, all of it when empty.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "cache_store.h"
#include "entry.h"

namespace zmesh::cache {

template <class E>
class ExpiryHeap {
 public:
  struct Slot {
    Millis at;
    E* entry;
  };

  void push(E* e, Millis at) {
    slots_.push_back(Slot{at, e});
    setHeapSlot(e, static_cast<uint32_t>(slots_.size() - 1));
    up(slots_.size() - 1);
  }

  void erase(const E* e) {
    size_t at = heapSlot(e);
    size_t last = slots_.size() - 1;
    if (at != last) move(last, at);
    slots_.pop_back();
    if (at < slots_.size()) fix(at);
    shrinkIfSparse();
  }

  void update(const E* e, Millis at) {
    size_t i = heapSlot(e);
    slots_[i].at = at;
    fix(i);
  }

  // `fresh` takes `old`'s slot, expiring at `at`.
  void replace(const E* old, E* fresh, Millis at) {
    size_t i = heapSlot(old);
    slots_[i] = Slot{at, fresh};
    setHeapSlot(fresh, static_cast<uint32_t>(i));
    fix(i);
  }

  Millis expiryOf(const E* e) const { return slots_[heapSlot(e)].at; }
  const Slot& top() const { return slots_.front(); }
  bool empty() const { return slots_.empty(); }
  size_t size() const { return slots_.size(); }
  uint64_t bytes() const { return slots_.capacity() * sizeof(Slot); }

 private:
  static constexpr size_t kMinCapacity = 64;

  void move(size_t from, size_t to) {
    slots_[to] = slots_[from];
    setHeapSlot(slots_[to].entry, static_cast<uint32_t>(to));
  }
  void swap(size_t a, size_t b) {
    std::swap(slots_[a], slots_[b]);
    setHeapSlot(slots_[a].entry, static_cast<uint32_t>(a));
    setHeapSlot(slots_[b].entry, static_cast<uint32_t>(b));
  }

  size_t up(size_t i) {
    while (i > 0) {
      size_t parent = (i - 1) / 2;
      if (!(slots_[i].at < slots_[parent].at)) break;
      swap(i, parent);
      i = parent;
    }
    return i;
  }
  void down(size_t i) {
    for (;;) {
      size_t least = i, left = 2 * i + 1, right = left + 1;
      if (left < slots_.size() && slots_[left].at < slots_[least].at) least = left;
      if (right < slots_.size() && slots_[right].at < slots_[least].at) least = right;
      if (least == i) return;
      swap(i, least);
      i = least;
    }
  }
  void fix(size_t i) {
    if (up(i) == i) down(i);
  }

  void shrinkIfSparse() {
    if (slots_.empty()) {
      std::vector<Slot>().swap(slots_);
      return;
    }
    if (slots_.capacity() <= kMinCapacity || slots_.size() >= slots_.capacity() / 4) return;
    std::vector<Slot> smaller;
    smaller.reserve(std::max(kMinCapacity, slots_.size() * 2));
    smaller.assign(slots_.begin(), slots_.end());
    slots_.swap(smaller);
  }

  std::vector<Slot> slots_;
};

}  // namespace zmesh::cache
