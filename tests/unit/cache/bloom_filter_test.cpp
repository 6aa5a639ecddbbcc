// The read-through Bloom filter: its size for known (n, p), no false
// negatives, the measured FP rate on a million absent keys against p, the
// drift deletes and overfill cause (and a rebuild undoes), and the snapshot
// format refusing every damaged input by name.
#include "bloom_filter.h"

#include <xxhash.h>

#include <bit>
#include <catch2/catch.hpp>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>

using zmesh::cache::BloomFilter;

namespace {

// "<prefix><i>": distinct prefixes make disjoint, deterministic key sets.
class Keys {
 public:
  explicit Keys(std::string prefix) : buf_(std::move(prefix)), prefix_(buf_.size()) {}
  std::string_view operator()(uint64_t i) {
    buf_.resize(prefix_ + 20);
    auto r = std::to_chars(buf_.data() + prefix_, buf_.data() + buf_.size(), i);
    buf_.resize(static_cast<size_t>(r.ptr - buf_.data()));
    return buf_;
  }

 private:
  std::string buf_;
  size_t prefix_;
};

BloomFilter make(uint64_t n, double p, uint64_t seed = 1) {
  std::string error;
  auto f = BloomFilter::make(n, p, seed, &error);
  INFO(error);
  REQUIRE(f);
  return std::move(*f);
}

// The fraction of [from, from + count) of `keys` the filter answers maybe for.
double maybeRate(const BloomFilter& f, Keys& keys, uint64_t from, uint64_t count) {
  uint64_t maybe = 0;
  for (uint64_t i = from; i < from + count; ++i) maybe += f.mayContain(keys(i));
  return static_cast<double>(maybe) / static_cast<double>(count);
}

constexpr uint64_t kMillion = 1'000'000;

}  // namespace

TEST_CASE("bloom: m and k from n and p", "[cache][bloom]") {
  auto f = make(kMillion, 0.01);
  // -n ln p / (ln 2)^2 = 9,585,058.4: 9,585,059 bits, in 149,767 words.
  CHECK(f.bits() == 149'767 * 64);
  CHECK(f.bits() - 9'585'059 < 64);
  CHECK(f.hashes() == 7);
  CHECK(f.expected() == kMillion);
  CHECK(f.target() == 0.01);
  CHECK(f.designFpRate() == Approx(0.01).epsilon(0.01));

  auto g = make(kMillion, 0.001);  // 14,377,588 bits, k = 9.97
  CHECK(g.bits() == 224'650 * 64);
  CHECK(g.hashes() == 10);

  CHECK(make(1000, 0.5).hashes() == 1);    // 1,443 bits: k = 1.02
  CHECK(make(1, 1e-12).hashes() == 30);    // 64 bits for one key: k = 44, clamped
  CHECK(make(1000, 0.999).bits() == 64);   // 3 bits: at least one word
  CHECK(make(1000, 0.999).hashes() == 1);  // k = 0.04, clamped

  std::string error;
  CHECK_FALSE(BloomFilter::make(0, 0.01, 1, &error));
  CHECK_THAT(error, Catch::Contains("n (the expected number of keys) is 0"));
  for (double p : {0.0, 1.0, -0.5, 2.0, std::nan("")}) {
    CHECK_FALSE(BloomFilter::make(10, p, 1, &error));
    CHECK_THAT(error, Catch::Contains("outside (0, 1)"));
  }
  CHECK_FALSE(BloomFilter::make(uint64_t{1} << 40, 0.01, 1, &error));
  CHECK_THAT(error, Catch::Contains("over the limit"));
}

TEST_CASE("bloom: no false negatives and the FP rate on 1M absent keys within 20 pct of p",
          "[cache][bloom]") {
  for (double p : {0.01, 0.001}) {
    auto f = make(kMillion, p);
    Keys present("user:"), absent("absent:");
    for (uint64_t i = 0; i < kMillion; ++i) f.insert(present(i));
    uint64_t missed = 0;
    for (uint64_t i = 0; i < kMillion; ++i) missed += !f.mayContain(present(i));
    CHECK(missed == 0);

    uint64_t reads = 0;
    for (uint64_t i = 0; i < kMillion; ++i) reads += f.shouldRead(absent(i));
    const auto s = f.stats();
    const double measured = static_cast<double>(reads) / kMillion;
    std::printf(
        "bloom: n=%llu p=%g m=%llu k=%u inserted=%llu fill=%.4f estimated=%.5f "
        "measured=%.5f (%.1f%% of p) reads avoided=%llu of %llu\n",
        static_cast<unsigned long long>(s.expected), p, static_cast<unsigned long long>(s.bits),
        s.hashes, static_cast<unsigned long long>(s.inserted), s.fill, s.estimatedFpRate, measured,
        100 * measured / p, static_cast<unsigned long long>(s.readsAvoided),
        static_cast<unsigned long long>(s.checks));
    CHECK(measured > p * 0.8);
    CHECK(measured < p * 1.2);
    CHECK(s.checks == kMillion);
    CHECK(s.readsAvoided == kMillion - reads);
    CHECK(s.estimatedFpRate == Approx(measured).epsilon(0.2));
    // An insert that sets no bit is not counted: a key set again, or a key
    // all of whose bits were set, leaves the filter as it was.
    CHECK(s.inserted <= kMillion);
    CHECK(s.inserted > kMillion - kMillion * p * 2);
    f.insert(present(0));
    CHECK(f.inserted() == s.inserted);
    CHECK(f.needsRebuild() == BloomFilter::Rebuild::kNo);
  }
}

TEST_CASE("bloom: drift from deletes and overfill and a rebuild bringing it back",
          "[cache][bloom]") {
  const uint64_t n = kMillion;
  const double p = 0.01;
  Keys key("row:"), absent("absent:");
  auto f = make(n, p, 7);
  for (uint64_t i = 0; i < n; ++i) f.insert(key(i));
  const double fresh = maybeRate(f, absent, 0, kMillion);

  // Delete half the rows and write as many new ones: still n live keys.
  uint64_t counted = 0;
  for (uint64_t i = 0; i < n / 2; ++i) counted += f.markDeleted(key(i));
  CHECK(counted == n / 2);
  CHECK(f.stale() == n / 2);
  CHECK(f.needsRebuild() == BloomFilter::Rebuild::kStale);
  for (uint64_t i = n; i < n + n / 2; ++i) f.insert(key(i));
  CHECK(f.needsRebuild() == BloomFilter::Rebuild::kOverfull);
  const double churned = maybeRate(f, absent, 0, kMillion);
  const double deleted = maybeRate(f, key, 0, n / 2);  // absent from the database now

  // The owner's rebuild: a new filter (new seed) from a scan of the live rows.
  auto r = make(n, p, 8);
  for (uint64_t i = n / 2; i < n + n / 2; ++i) r.insert(key(i));
  const double rebuilt = maybeRate(r, absent, 0, kMillion);
  const double deletedRebuilt = maybeRate(r, key, 0, n / 2);

  // Overfill: 2n keys into a filter sized for n, then rebuilt sized for 2n.
  auto o = make(n, p, 9);
  for (uint64_t i = 0; i < 2 * n; ++i) o.insert(key(i));
  const double overfull = maybeRate(o, absent, 0, kMillion);
  auto o2 = make(2 * n, p, 10);
  for (uint64_t i = 0; i < 2 * n; ++i) o2.insert(key(i));
  const double overfullRebuilt = maybeRate(o2, absent, 0, kMillion);

  std::printf(
      "bloom drift (n=%llu p=%g, FP on 1M never-written keys): after n inserts %.5f; after "
      "deleting n/2 and inserting n/2 new %.5f (estimated %.5f; the deleted keys %.5f; stale "
      "%llu of %llu inserted); rebuilt from the live keys %.5f (deleted keys %.5f); overfilled "
      "with 2n %.5f (estimated %.5f); rebuilt sized for 2n %.5f\n",
      static_cast<unsigned long long>(n), p, fresh, churned, f.estimatedFpRate(), deleted,
      static_cast<unsigned long long>(f.stale()), static_cast<unsigned long long>(f.inserted()),
      rebuilt, deletedRebuilt, overfull, o.estimatedFpRate(), overfullRebuilt);

  CHECK(fresh == Approx(p).epsilon(0.2));
  CHECK(churned > 3 * p);  // 1.5n keys' bits in a filter for n
  CHECK(deleted == 1.0);   // a deleted key is never forgotten: every one costs a read
  CHECK(rebuilt == Approx(p).epsilon(0.2));
  CHECK(deletedRebuilt == Approx(p).epsilon(0.2));
  CHECK(r.needsRebuild() == BloomFilter::Rebuild::kNo);
  CHECK(overfull > 10 * p);
  CHECK(o.needsRebuild() == BloomFilter::Rebuild::kOverfull);
  CHECK(overfullRebuilt == Approx(p).epsilon(0.2));
}

TEST_CASE("bloom: deletes of keys never inserted are not stale and stale stays under inserted",
          "[cache][bloom]") {
  auto f = make(1000, 0.01);
  Keys key("k"), other("other");
  for (uint64_t i = 0; i < 10; ++i) f.insert(key(i));
  uint64_t counted = 0;
  for (uint64_t i = 0; i < 1000; ++i) counted += f.markDeleted(other(i));
  CHECK(counted <= 10);  // only false positives count, never past inserted
  CHECK(f.stale() <= f.inserted());
  f.noteFalsePositive();
  CHECK(f.stats().falsePositives == 1);
}

TEST_CASE("bloom: binary and empty keys", "[cache][bloom]") {
  auto f = make(1000, 0.001);
  const std::string nul("\0", 1), nuls("\0\0", 2), ff("\xff", 1), mixed("a\0\xff", 3);
  CHECK_FALSE(f.mayContain(""));
  f.insert("");
  f.insert(nul);
  f.insert(mixed);
  CHECK(f.mayContain(""));
  CHECK(f.mayContain(nul));
  CHECK(f.mayContain(mixed));
  // Keys differing only past a NUL, or by length in NULs, are different keys.
  CHECK_FALSE(f.mayContain(nuls));
  CHECK_FALSE(f.mayContain(ff));
  CHECK_FALSE(f.mayContain(std::string("a\0\xfe", 3)));
  CHECK(f.inserted() == 3);
}

namespace {

void putU64(std::string& bytes, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) bytes[at + i] = static_cast<char>(v >> (8 * i));
}
void reseal(std::string& bytes) {
  putU64(bytes, bytes.size() - 8, XXH3_64bits(bytes.data(), bytes.size() - 8));
}
std::string refusal(const std::string& bytes) {
  std::string error;
  auto f = BloomFilter::deserialize(bytes, &error);
  CHECK_FALSE(f);
  return error;
}

}  // namespace

TEST_CASE("bloom: a serialized filter gives the same answers and stats", "[cache][bloom]") {
  auto f = make(10'000, 0.01, 42);
  Keys key("key:"), probe("probe:");
  for (uint64_t i = 0; i < 10'000; ++i) f.insert(key(i));
  for (uint64_t i = 0; i < 100; ++i) f.markDeleted(key(i));
  const std::string bytes = f.serialize();
  CHECK(bytes.size() == BloomFilter::kHeaderBytes + f.bits() / 8 + BloomFilter::kChecksumBytes);
  std::string error;
  auto g = BloomFilter::deserialize(bytes, &error);
  INFO(error);
  REQUIRE(g);
  CHECK(g->serialize() == bytes);
  CHECK(g->bits() == f.bits());
  CHECK(g->hashes() == f.hashes());
  CHECK(g->expected() == f.expected());
  CHECK(g->target() == f.target());
  CHECK(g->seed() == 42);
  CHECK(g->inserted() == f.inserted());
  CHECK(g->stale() == 100);
  CHECK(g->bitsSet() == f.bitsSet());
  uint64_t differ = 0, maybe = 0;
  for (uint64_t i = 0; i < 100'000; ++i) {
    auto k = i % 10 == 0 ? key(i / 10) : probe(i);
    differ += f.mayContain(k) != g->mayContain(k);
    maybe += g->mayContain(k);
  }
  CHECK(differ == 0);
  CHECK(maybe >= 10'000);
  // A copy is independent of its original.
  BloomFilter copy = *g;
  copy.insert("only in the copy");
  CHECK_FALSE(g->mayContain("only in the copy"));
}

TEST_CASE("bloom: every truncation and each damaged field refused by name", "[cache][bloom]") {
  auto f = make(100, 0.01, 3);  // 960 bits: 64 + 120 + 8 bytes
  Keys key("k");
  for (uint64_t i = 0; i < 100; ++i) f.insert(key(i));
  f.markDeleted(key(0));
  const std::string good = f.serialize();
  REQUIRE(good.size() == 192);
  REQUIRE(BloomFilter::deserialize(good));

  for (size_t len = 0; len < good.size(); ++len) {
    const std::string error = refusal(good.substr(0, len));
    if (len < 72)
      CHECK_THAT(error, Catch::StartsWith("truncated"));
    else
      CHECK_THAT(error, Catch::Contains("truncated or m does not match"));
  }
  CHECK_THAT(refusal(good + '\0'), Catch::Contains("truncated or m does not match"));

  auto with = [&](size_t at, uint64_t v) {
    std::string b = good;
    putU64(b, at, v);
    return b;
  };
  std::string magic = good;
  magic[0] = 'X';
  CHECK(refusal(magic) == "bad magic: not a Bloom filter");
  std::string version = good;
  version[4] = 2;
  CHECK_THAT(refusal(version), Catch::StartsWith("unsupported version 2"));
  CHECK_THAT(refusal(with(8, 896)), Catch::Contains("m = 896 needs 14 words"));
  CHECK_THAT(refusal(with(8, 1024)), Catch::Contains("truncated or m does not match"));
  CHECK_THAT(refusal(with(8, 0)), Catch::StartsWith("m = 0 is not a positive multiple of 64"));
  CHECK_THAT(refusal(with(8, 961)), Catch::StartsWith("m = 961 is not a positive multiple"));
  CHECK_THAT(refusal(with(8, ~uint64_t{0} << 6)), Catch::Contains("not a positive multiple"));
  CHECK(refusal(with(16, 0)) == "k = 0 is outside [1, 30]");
  CHECK(refusal(with(16, 31)) == "k = 31 is outside [1, 30]");
  CHECK(refusal(with(24, 0)) == "n (the expected number of keys) is 0");
  for (double p : {0.0, 1.0, -1.0, std::nan("")})
    CHECK_THAT(refusal(with(32, std::bit_cast<uint64_t>(p))), Catch::Contains("outside (0, 1)"));
  CHECK_THAT(refusal(with(56, f.inserted() + 1)), Catch::StartsWith("stale = "));
  // Fields without a range of their own, the bits and the checksum: the checksum.
  CHECK(refusal(with(40, 4)) == "checksum mismatch");
  CHECK(refusal(with(48, f.inserted() - 1)) == "checksum mismatch");
  std::string bit = good;
  bit[100] ^= 0x10;
  CHECK(refusal(bit) == "checksum mismatch");
  std::string sum = good;
  sum.back() ^= 1;
  CHECK(refusal(sum) == "checksum mismatch");
  // Sealed right but impossible: more inserts counted than bits set.
  std::string inserted = with(48, f.bitsSet() + 1);
  reseal(inserted);
  CHECK_THAT(refusal(inserted), Catch::Contains("exceeds the"));
  // A reseal of a damaged field is still refused by the field's own check.
  std::string k = with(16, 99);
  reseal(k);
  CHECK(refusal(k) == "k = 99 is outside [1, 30]");
}
