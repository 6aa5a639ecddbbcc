// The cache's Bloom filter as its snapshot holds it. The first byte picks how
// the rest is used: 0, the bytes as they are; 1, the same with the checksum
// recomputed, so what is checked past it is reached; 2, a filter made from
// (n, p) in the next three bytes, the rest inserted as keys. A filter that is
// accepted must serialize back to the same bytes and read back again; its
// counts must stay in order. Anything else aborts.
#include <xxhash.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "bloom_filter.h"

using zmesh::cache::BloomFilter;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

// Exercises an accepted filter: probes, an insert, a delete, a round trip.
void exercise(BloomFilter& f, std::string_view keys) {
  const auto s = f.stats();
  check(s.stale <= s.inserted && s.inserted <= s.bitsSet && s.bitsSet <= s.bits);
  check(s.hashes >= BloomFilter::kMinK && s.hashes <= BloomFilter::kMaxK);
  check(s.estimatedFpRate >= 0 && s.estimatedFpRate <= 1);
  for (size_t i = 0; i < keys.size() && i < 16; ++i) (void)f.shouldRead(keys.substr(i, 8));
  f.insert(keys);
  check(f.mayContain(keys));
  (void)f.markDeleted(keys);
  (void)f.needsRebuild();
  const std::string bytes = f.serialize();
  std::string error;
  auto again = BloomFilter::deserialize(bytes, &error);
  check(again.has_value() && again->serialize() == bytes && again->mayContain(keys));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
    case 1: {
      std::string bytes(rest);
      if (data[0] % 3 == 1 && bytes.size() >= 8) {
        uint64_t sum = XXH3_64bits(bytes.data(), bytes.size() - 8);
        for (size_t i = 0; i < 8; ++i)
          bytes[bytes.size() - 8 + i] = static_cast<char>(sum >> (8 * i));
      }
      std::string error;
      auto f = BloomFilter::deserialize(bytes, &error);
      if (!f) {
        check(!error.empty());
        return 0;
      }
      check(f->serialize() == bytes);
      exercise(*f, rest.substr(0, 64));
      return 0;
    }
    default: {
      if (rest.size() < 3) return 0;
      // n up to 4096 keeps a filter small; p from 1/257 to 256/257.
      const uint64_t n =
          1 + (static_cast<uint8_t>(rest[0]) | (static_cast<uint8_t>(rest[1]) & 0x0f) << 8);
      const double p = (static_cast<uint8_t>(rest[2]) + 1) / 257.0;
      std::string error;
      auto f = BloomFilter::make(n, p, size, &error);
      check(f.has_value());
      std::string_view keys = rest.substr(3);
      for (size_t at = 0; at < keys.size(); at += 7) {
        auto key = keys.substr(at, 7);
        f->insert(key);
        check(f->mayContain(key));
      }
      exercise(*f, keys);
      return 0;
    }
  }
}
