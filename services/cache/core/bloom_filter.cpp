#include "bloom_filter.h"

#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

namespace zmesh::cache {
namespace {

constexpr char kMagic[4] = {'Z', 'M', 'B', 'F'};
constexpr double kLn2 = 0.69314718055994530942;

void fail(std::string* error, std::string what) {
  if (error != nullptr) *error = std::move(what);
}

void putU32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
void putU64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
}
uint32_t getU32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t{static_cast<unsigned char>(p[i])} << (8 * i);
  return v;
}
uint64_t getU64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{static_cast<unsigned char>(p[i])} << (8 * i);
  return v;
}

// Calls f(bit) for the key's k probes: h1 + i * h2 (mod 2^64), each scaled
// onto [0, m) by a multiply-high (m is not a power of two).
template <class F>
void forEachProbe(std::string_view key, uint64_t seed, uint32_t k, uint64_t m, F&& f) {
  const XXH128_hash_t h = XXH3_128bits_withSeed(key.empty() ? "" : key.data(), key.size(), seed);
  uint64_t g = h.low64;
  for (uint32_t i = 0; i < k; ++i, g += h.high64)
    f(static_cast<uint64_t>((static_cast<unsigned __int128>(g) * m) >> 64));
}

}  // namespace

const char* BloomFilter::name(Rebuild r) {
  switch (r) {
    case Rebuild::kNo:
      return "none";
    case Rebuild::kStale:
      return "stale";
    case Rebuild::kOverfull:
      return "overfull";
  }
  return "?";
}

BloomFilter::BloomFilter(uint64_t m, uint32_t k, uint64_t n, double p, uint64_t seed)
    : m_(m), k_(k), n_(n), p_(p), seed_(seed), words_(m / 64, 0) {}

std::optional<BloomFilter> BloomFilter::make(uint64_t n, double p, uint64_t seed,
                                             std::string* error) {
  if (n == 0) {
    fail(error, "n (the expected number of keys) is 0");
    return std::nullopt;
  }
  if (!(p > 0 && p < 1)) {
    fail(error, "p = " + std::to_string(p) + " is outside (0, 1)");
    return std::nullopt;
  }
  const double exact = std::ceil(-static_cast<double>(n) * std::log(p) / (kLn2 * kLn2));
  if (!(exact <= static_cast<double>(kMaxBits))) {
    fail(error, "n = " + std::to_string(n) + " at p = " + std::to_string(p) + " needs " +
                    std::to_string(exact) + " bits, over the limit of " + std::to_string(kMaxBits));
    return std::nullopt;
  }
  const uint64_t words = std::max<uint64_t>(1, (static_cast<uint64_t>(exact) + 63) / 64);
  const uint64_t m = words * 64;
  const double kExact = static_cast<double>(m) / static_cast<double>(n) * kLn2;
  const uint32_t k = static_cast<uint32_t>(std::clamp<double>(
      std::round(kExact), static_cast<double>(kMinK), static_cast<double>(kMaxK)));
  return BloomFilter(m, k, n, p, seed);
}

void BloomFilter::insert(std::string_view key) {
  uint64_t added = 0;
  forEachProbe(key, seed_, k_, m_, [&](uint64_t bit) {
    uint64_t& word = words_[bit / 64];
    const uint64_t mask = uint64_t{1} << (bit % 64);
    if ((word & mask) == 0) {
      word |= mask;
      ++added;
    }
  });
  bitsSet_ += added;
  if (added > 0) ++inserted_;
}

bool BloomFilter::mayContain(std::string_view key) const {
  bool all = true;
  forEachProbe(key, seed_, k_, m_,
               [&](uint64_t bit) { all = all && (words_[bit / 64] >> (bit % 64) & 1) != 0; });
  return all;
}

bool BloomFilter::markDeleted(std::string_view key) {
  if (!mayContain(key) || stale_ >= inserted_) return false;
  ++stale_;
  return true;
}

bool BloomFilter::shouldRead(std::string_view key) {
  ++checks_;
  const bool maybe = mayContain(key);
  if (!maybe) ++readsAvoided_;
  return maybe;
}

BloomFilter::Rebuild BloomFilter::needsRebuild(double maxStaleFraction) const {
  if (inserted_ > n_) return Rebuild::kOverfull;
  if (inserted_ > 0 &&
      static_cast<double>(stale_) > maxStaleFraction * static_cast<double>(inserted_))
    return Rebuild::kStale;
  return Rebuild::kNo;
}

double BloomFilter::estimatedFpRate() const { return std::pow(fill(), k_); }

double BloomFilter::designFpRate() const {
  const double kn = static_cast<double>(k_) * static_cast<double>(n_);
  return std::pow(1 - std::exp(-kn / static_cast<double>(m_)), k_);
}

BloomFilter::Stats BloomFilter::stats() const {
  Stats s;
  s.bits = m_;
  s.hashes = k_;
  s.expected = n_;
  s.target = p_;
  s.seed = seed_;
  s.inserted = inserted_;
  s.stale = stale_;
  s.bitsSet = bitsSet_;
  s.fill = fill();
  s.estimatedFpRate = estimatedFpRate();
  s.checks = checks_;
  s.readsAvoided = readsAvoided_;
  s.falsePositives = falsePositives_;
  return s;
}

std::string BloomFilter::serialize() const {
  std::string out;
  out.reserve(kHeaderBytes + words_.size() * 8 + kChecksumBytes);
  out.append(kMagic, sizeof kMagic);
  putU32(out, kFormatVersion);
  putU64(out, m_);
  putU64(out, k_);
  putU64(out, n_);
  putU64(out, std::bit_cast<uint64_t>(p_));
  putU64(out, seed_);
  putU64(out, inserted_);
  putU64(out, stale_);
  for (uint64_t w : words_) putU64(out, w);
  putU64(out, XXH3_64bits(out.data(), out.size()));
  return out;
}

std::optional<BloomFilter> BloomFilter::deserialize(std::string_view bytes, std::string* error) {
  const size_t size = bytes.size();
  if (size < kHeaderBytes + kChecksumBytes) {
    fail(error, "truncated: " + std::to_string(size) + " bytes, a filter takes at least " +
                    std::to_string(kHeaderBytes + kChecksumBytes));
    return std::nullopt;
  }
  const char* p = bytes.data();
  if (std::memcmp(p, kMagic, sizeof kMagic) != 0) {
    fail(error, "bad magic: not a Bloom filter");
    return std::nullopt;
  }
  if (const uint32_t version = getU32(p + 4); version != kFormatVersion) {
    fail(error, "unsupported version " + std::to_string(version) + " (this build reads " +
                    std::to_string(kFormatVersion) + ")");
    return std::nullopt;
  }
  const uint64_t m = getU64(p + 8), k = getU64(p + 16), n = getU64(p + 24);
  const double fp = std::bit_cast<double>(getU64(p + 32));
  const uint64_t seed = getU64(p + 40), inserted = getU64(p + 48), stale = getU64(p + 56);
  if (m == 0 || m % 64 != 0 || m > kMaxBits) {
    fail(error, "m = " + std::to_string(m) + " is not a positive multiple of 64 up to " +
                    std::to_string(kMaxBits));
    return std::nullopt;
  }
  const size_t body = size - kHeaderBytes - kChecksumBytes;
  if (body != m / 8) {
    fail(error, "m = " + std::to_string(m) + " needs " + std::to_string(m / 64) + " words (" +
                    std::to_string(m / 8) + " bytes) but " + std::to_string(body) +
                    " bytes follow the header: truncated or m does not match");
    return std::nullopt;
  }
  if (k < kMinK || k > kMaxK) {
    fail(error, "k = " + std::to_string(k) + " is outside [1, 30]");
    return std::nullopt;
  }
  if (n == 0) {
    fail(error, "n (the expected number of keys) is 0");
    return std::nullopt;
  }
  if (!(fp > 0 && fp < 1)) {
    fail(error, "p = " + std::to_string(fp) + " is outside (0, 1)");
    return std::nullopt;
  }
  if (stale > inserted) {
    fail(error,
         "stale = " + std::to_string(stale) + " exceeds inserted = " + std::to_string(inserted));
    return std::nullopt;
  }
  const size_t sealed = size - kChecksumBytes;
  if (XXH3_64bits(p, sealed) != getU64(p + sealed)) {
    fail(error, "checksum mismatch");
    return std::nullopt;
  }
  BloomFilter f(m, static_cast<uint32_t>(k), n, fp, seed);
  uint64_t bitsSet = 0;
  for (size_t i = 0; i < f.words_.size(); ++i) {
    f.words_[i] = getU64(p + kHeaderBytes + 8 * i);
    bitsSet += static_cast<uint64_t>(std::popcount(f.words_[i]));
  }
  // Every insert counted set a bit: more inserts than bits is a writer's bug.
  if (inserted > bitsSet) {
    fail(error, "inserted = " + std::to_string(inserted) + " exceeds the " +
                    std::to_string(bitsSet) + " bits set");
    return std::nullopt;
  }
  f.inserted_ = inserted;
  f.stale_ = stale;
  f.bitsSet_ = bitsSet;
  return f;
}

}  // namespace zmesh::cache
