// One cached key as it sits in memory: a single allocation holding a small
// header, the eviction policy's own bookkeeping (its Hook), the index of the
// key's slot in the expiry heap when it has a TTL, then the key's bytes and
// the value's. A key without a TTL carries no expiry at all; gaining or
// losing one moves the entry to a new allocation (cache_store.cpp replaces it
// in every structure that points at it).
//
// The key's hash is not stored: it is recomputed (xxh3, a few ns for a short
// key) where it is needed, which is only when an entry changes bucket during
// a resize, when a scan orders a bucket, and when an entry found otherwise
// than by its key (a victim, an expired key from the heap) leaves its chain.
// That keeps an lru entry of a 16-byte key and a 32-byte value at 80 bytes
// (32 + 48: jemalloc's 80-byte class; glibc gives 88 usable).
//
// Layout: [Entry<P>][uint32 heap slot, if kHasTtl][key][value]
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string_view>
#include <type_traits>

// jemalloc's and tcmalloc's; null when neither is the allocator.
extern "C" size_t nallocx(size_t size, int flags) __attribute__((weak));

#if defined(__SANITIZE_ADDRESS__)
#define ZMESH_CACHE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ZMESH_CACHE_ASAN 1
#endif
#endif

namespace zmesh::cache {

// Entry::keyWord: the key's length in the low 30 bits, then two flags.
inline constexpr uint32_t kHasTtl = uint32_t{1} << 31;
inline constexpr uint32_t kPinned = uint32_t{1} << 30;  // may not be evicted (being written)
inline constexpr uint32_t kKeyMask = kPinned - 1;
inline constexpr size_t kMaxKeyBytes = kKeyMask;
inline constexpr size_t kMaxValueBytes = UINT32_MAX;

template <class Policy>
struct Entry {
  Entry* chain = nullptr;  // the next entry in the same bucket
  uint32_t keyWord = 0;
  uint32_t valueBytes = 0;
  [[no_unique_address]] typename Policy::template Hook<Entry> hook{};
};

template <class E>
size_t keyBytes(const E* e) {
  return e->keyWord & kKeyMask;
}
template <class E>
bool hasTtl(const E* e) {
  return (e->keyWord & kHasTtl) != 0;
}
template <class E>
bool pinned(const E* e) {
  return (e->keyWord & kPinned) != 0;
}
template <class E>
void setPinned(E* e, bool on) {
  e->keyWord = on ? (e->keyWord | kPinned) : (e->keyWord & ~kPinned);
}

template <class E>
char* tailOf(E* e) {
  return reinterpret_cast<char*>(e) + sizeof(E);
}
template <class E>
const char* tailOf(const E* e) {
  return reinterpret_cast<const char*>(e) + sizeof(E);
}

template <class E>
std::string_view keyOf(const E* e) {
  return {tailOf(e) + (hasTtl(e) ? sizeof(uint32_t) : 0), keyBytes(e)};
}
template <class E>
std::string_view valueOf(const E* e) {
  std::string_view k = keyOf(e);
  return {k.data() + k.size(), e->valueBytes};
}

// The entry's slot in the expiry heap; only for an entry with kHasTtl.
template <class E>
uint32_t heapSlot(const E* e) {
  uint32_t slot;
  std::memcpy(&slot, tailOf(e), sizeof slot);
  return slot;
}
template <class E>
void setHeapSlot(E* e, uint32_t slot) {
  std::memcpy(tailOf(e), &slot, sizeof slot);
}

// A new entry holding copies of key and value (limits already checked), not
// yet in any structure. Throws std::bad_alloc as containers do.
template <class E>
E* makeEntry(std::string_view key, std::string_view value, bool withTtl) {
  static_assert(std::is_trivially_destructible_v<E>);
  static_assert(sizeof(E) % alignof(uint32_t) == 0);
  size_t extra = withTtl ? sizeof(uint32_t) : 0;
  void* memory = std::malloc(sizeof(E) + extra + key.size() + value.size());  // requestOf()
  if (memory == nullptr) throw std::bad_alloc();
  E* e = new (memory) E{};
  e->keyWord = static_cast<uint32_t>(key.size()) | (withTtl ? kHasTtl : 0);
  e->valueBytes = static_cast<uint32_t>(value.size());
  if (withTtl) setHeapSlot(e, 0);
  char* bytes = tailOf(e) + extra;
  if (!key.empty()) std::memcpy(bytes, key.data(), key.size());
  if (!value.empty()) std::memcpy(bytes + key.size(), value.data(), value.size());
  return e;
}

template <class E>
void freeEntry(E* e) {
  std::free(e);
}

// The bytes an allocation of `bytes` takes as the allocator rounds it (what
// malloc_usable_size reports), as a function of the size alone: jemalloc
// (and tcmalloc) say so through nallocx; under ASan it is the size asked
// for; glibc's malloc hands out 16-byte-aligned chunks with an 8-byte
// header, at least 32. glibc may give a chunk 16 bytes larger when the
// free one it takes is too small to split, so its malloc_usable_size
// depends on the heap's history; charging the size class instead keeps
// eviction reproducible: the same writes evict the same keys.
inline size_t sizeClass(size_t bytes) {
  if (nallocx != nullptr) return nallocx(bytes, 0);
#if defined(ZMESH_CACHE_ASAN)
  return bytes;
#else
  return std::max<size_t>(32, (bytes + 8 + 15) & ~size_t{15}) - 8;
#endif
}

template <class E>
size_t requestOf(const E* e) {
  return sizeof(E) + (hasTtl(e) ? sizeof(uint32_t) : 0) + keyBytes(e) + e->valueBytes;
}

// What the entry is charged: its allocation's size class.
template <class E>
size_t chargeOf(const E* e) {
  return sizeClass(requestOf(e));
}

}  // namespace zmesh::cache
