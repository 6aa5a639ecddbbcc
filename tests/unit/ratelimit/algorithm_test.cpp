#include "algorithm.h"

#include <catch2/catch.hpp>
#include <limits>
#include <ostream>
#include <vector>

#include "said.h"

using namespace zmesh::ratelimit;

namespace {

constexpr Nanos kMs = kNanosPerMs;
constexpr Nanos kSecond = 1000 * kMs;
constexpr Nanos kHour = 3600 * kSecond;
constexpr Nanos kDay = 24 * kHour;
constexpr Nanos kForever = std::numeric_limits<Nanos>::max();
constexpr Nanos kT0 = 1'000'000 * kSecond;  // An arbitrary start on a whole second.
constexpr Nanos kFar = Nanos{1} << 62;

constexpr Algorithm kBuckets[] = {Algorithm::tokenBucket, Algorithm::leakyBucket, Algorithm::gcra};

Said allow(uint64_t limit, uint64_t remaining, Nanos reset) {
  return {true, false, limit, remaining, reset, 0};
}
Said deny(uint64_t limit, uint64_t remaining, Nanos reset, Nanos retryAfter) {
  return {false, false, limit, remaining, reset, retryAfter};
}
Said impossible(uint64_t limit, uint64_t remaining, Nanos reset) {
  return {false, true, limit, remaining, reset, 0};
}

Quota quota(Algorithm a, uint64_t limit, Nanos window, uint64_t burst = 0) {
  return Quota{a, limit, window, burst};
}

// One key under a quota that a test may change (an override).
struct Key {
  explicit Key(Quota q) : quota(q) { REQUIRE_FALSE(validate(q)); }
  Said take(Nanos now, uint64_t cost = 1) { return said(decide(quota, state, cost, now)); }
  uint64_t left(Nanos now) const { return available(quota, state, now); }

  Quota quota;
  KeyState state;
};

// Decides on a copy, so the key itself is untouched.
Said probe(const Key& key, Nanos now, uint64_t cost = 1) {
  KeyState copy = key.state;
  return said(decide(key.quota, copy, cost, now));
}

// The wait a denial names is the least one: a nanosecond less still fails.
void requireExactRetry(const Key& key, Nanos now, uint64_t cost, Nanos retryAfter) {
  REQUIRE(retryAfter > 0);
  CHECK_FALSE(probe(key, now + retryAfter - 1, cost).allowed);
  CHECK(probe(key, now + retryAfter, cost).allowed);
}

}  // namespace

TEST_CASE("ratelimit algorithm: names round-trip as rules spell them", "[ratelimit]") {
  const std::vector<std::pair<Algorithm, std::string_view>> names = {
      {Algorithm::tokenBucket, "token_bucket"},
      {Algorithm::leakyBucket, "leaky_bucket"},
      {Algorithm::fixedWindow, "fixed_window"},
      {Algorithm::slidingWindowLog, "sliding_window_log"},
      {Algorithm::slidingWindowCounter, "sliding_window_counter"},
      {Algorithm::gcra, "gcra"},
  };
  for (const auto& named : names) {
    CHECK(toString(named.first) == named.second);
    CHECK(parseAlgorithm(named.second) == named.first);
  }
  CHECK(toString(static_cast<Algorithm>(6)) == "unknown");
  for (std::string_view bad : {"", "unknown", "Token_Bucket", "token-bucket", "gcra ", "GCRA"}) {
    CHECK_FALSE(parseAlgorithm(bad));
  }
}

TEST_CASE("ratelimit algorithm: validate accepts the bounds and names what is wrong",
          "[ratelimit]") {
  for (Algorithm a : kAll) {
    INFO(toString(a));
    const uint64_t most = a == Algorithm::slidingWindowLog ? kMaxLogLimit : kMaxLimit;
    CHECK_FALSE(validate(quota(a, 1, kMinWindow)));
    CHECK_FALSE(validate(quota(a, most, kMaxWindow, kMaxLimit)));
    CHECK(validate(quota(a, 0, kSecond)));
    CHECK(validate(quota(a, most + 1, kSecond)));
    CHECK(validate(quota(a, kMaxCost, kSecond)));
    CHECK(validate(quota(a, 1, 0)));
    CHECK(validate(quota(a, 1, kMinWindow - 1)));
    CHECK(validate(quota(a, 1, -kSecond)));
    CHECK(validate(quota(a, 1, std::numeric_limits<Nanos>::min())));
    CHECK(validate(quota(a, 1, kMaxWindow + 1)));
    CHECK(validate(quota(a, 1, kSecond, kMaxLimit + 1)));
  }
  // The log's cap is its own: other windows take a larger limit.
  CHECK_FALSE(validate(quota(Algorithm::fixedWindow, kMaxLogLimit + 1, kSecond)));
  CHECK(validate(quota(Algorithm::slidingWindowLog, kMaxLogLimit + 1, kSecond)) ==
        "limit 100001 is out of range; must be 1..100000 for sliding_window_log");
  CHECK(validate(quota(Algorithm::tokenBucket, 0, kSecond)) ==
        "limit 0 is out of range; must be 1..1099511627776 for token_bucket");
  CHECK(validate(quota(Algorithm::gcra, 5, 999'999)) ==
        "window 999999 ns is out of range; must be 1000000..31622400000000000 ns "
        "(1 ms to 366 days)");
  CHECK(validate(quota(Algorithm::leakyBucket, 5, kSecond, kMaxLimit + 1)) ==
        "burst 1099511627777 is out of range; must be 0..1099511627776 (0: the limit)");
  CHECK(validate(quota(static_cast<Algorithm>(6), 5, kSecond)) == "algorithm 6 is unknown");
}

TEST_CASE(
    "ratelimit algorithm: capacity is the burst for buckets and GCRA, the limit for "
    "windows",
    "[ratelimit]") {
  for (Algorithm a : kAll) {
    INFO(toString(a));
    const bool bursts =
        a == Algorithm::tokenBucket || a == Algorithm::leakyBucket || a == Algorithm::gcra;
    CHECK(quota(a, 7, kSecond).capacity() == 7);
    CHECK(quota(a, 7, kSecond, 3).capacity() == (bursts ? 3u : 7u));
    CHECK(quota(a, 7, kSecond, 20).capacity() == (bursts ? 20u : 7u));
  }
}

TEST_CASE("ratelimit algorithm: a key is 32 bytes and only the log uses the heap", "[ratelimit]") {
  STATIC_REQUIRE(sizeof(KeyState) <= 32);
  for (Algorithm a : kAll) {
    INFO(toString(a));
    Key key(quota(a, 10, kSecond));
    CHECK(key.state.heapBytes() == 0);
    for (Nanos t = kT0; t < kT0 + 5 * kSecond; t += 7 * kMs) key.take(t);
    CHECK((key.state.heapBytes() > 0) == (a == Algorithm::slidingWindowLog));
  }
}

// ---- token_bucket -------------------------------------------------------------------------

TEST_CASE("token_bucket: starts full and refills limit per window", "[ratelimit][token]") {
  Key key(quota(Algorithm::tokenBucket, 5, kSecond));
  for (uint64_t i = 1; i <= 5; ++i) {
    CHECK(key.take(kT0) == allow(5, 5 - i, static_cast<Nanos>(i) * 200 * kMs));
  }
  CHECK(key.take(kT0) == deny(5, 0, kSecond, 200 * kMs));
  CHECK(key.take(kT0 + 200 * kMs - 1) == deny(5, 0, 800 * kMs + 1, 1));
  CHECK(key.take(kT0 + 200 * kMs) == allow(5, 0, kSecond));
  CHECK(key.left(kT0 + 800 * kMs - 1) == 2);
  CHECK(key.left(kT0 + 800 * kMs) == 3);
}

TEST_CASE("token_bucket: 3 per second: each token appears at its exact nanosecond",
          "[ratelimit][token]") {
  Key key(quota(Algorithm::tokenBucket, 3, kSecond));
  REQUIRE(key.take(kT0, 3) == allow(3, 0, kSecond));
  // Token k is back at ceil(k·1e9 / 3) ns.
  CHECK(key.left(kT0 + 333'333'333) == 0);
  CHECK(key.left(kT0 + 333'333'334) == 1);
  CHECK(key.left(kT0 + 666'666'666) == 1);
  CHECK(key.left(kT0 + 666'666'667) == 2);
  CHECK(key.left(kT0 + 999'999'999) == 2);
  CHECK(key.left(kT0 + kSecond) == 3);

  // Taking a token as it appears keeps the 2/3 ns it came with: the next one is still due at
  // 666'666'667, not 333'333'334 later.
  CHECK(key.take(kT0 + 333'333'334) == allow(3, 0, kSecond));
  CHECK(key.take(kT0 + 666'666'666) == deny(3, 0, 666'666'668, 1));
  CHECK(key.take(kT0 + 666'666'667) == allow(3, 0, kSecond));
}

TEST_CASE(
    "token_bucket, leaky_bucket and gcra: 3000 tokens taken as they appear take exactly "
    "1000 s",
    "[ratelimit][token][leaky][gcra]") {
  for (Algorithm a : kBuckets) {
    INFO(toString(a));
    // Burst 2: the bucket is never full when a token is taken, so no fraction overflows it.
    Key key(quota(a, 3, kSecond, 2));
    REQUIRE(key.take(kT0, 2).allowed);
    Nanos now = kT0;
    for (Nanos k = 1; k <= 3000; ++k) {
      const Said denied = key.take(now);
      REQUIRE_FALSE(denied.allowed);
      now += denied.retryAfter;
      REQUIRE(now == kT0 + (k * kSecond + 2) / 3);  // ceil(k·1e9 / 3): no rounding drifts
      REQUIRE(key.take(now).allowed);
    }
    CHECK(now == kT0 + 1000 * kSecond);
  }
}

TEST_CASE("token_bucket: a burst above the rate, refilled one per second", "[ratelimit][token]") {
  Key key(quota(Algorithm::tokenBucket, 1, kSecond, 10));
  CHECK(key.take(kT0, 10) == allow(10, 0, 10 * kSecond));
  CHECK(key.take(kT0) == deny(10, 0, 10 * kSecond, kSecond));
  CHECK(key.left(kT0 + 5 * kSecond - 1) == 4);
  CHECK(key.left(kT0 + 5 * kSecond) == 5);
  CHECK(key.left(kT0 + kHour) == 10);
}

TEST_CASE("token_bucket: cost 0 reads what a cost-1 request would see, taking nothing",
          "[ratelimit][token]") {
  Key key(quota(Algorithm::tokenBucket, 2, kSecond));
  CHECK(key.take(kT0, 0) == allow(2, 2, 0));
  CHECK(key.take(kT0, 2) == allow(2, 0, kSecond));
  const KeyState before = key.state;
  CHECK(key.take(kT0 + 100 * kMs, 0) == deny(2, 0, 900 * kMs, 400 * kMs));
  CHECK(key.take(kT0 + 500 * kMs, 0) == allow(2, 1, 500 * kMs));
  CHECK(key.take(kT0 + 500 * kMs, 0) == allow(2, 1, 500 * kMs));
  // The reads changed nothing: the key decides as it would have without them.
  Key unread(key.quota);
  unread.state = before;
  for (Nanos t : {kT0 + 500 * kMs, kT0 + 600 * kMs, kT0 + 2 * kSecond}) {
    CHECK(key.take(t) == unread.take(t));
  }
}

TEST_CASE("token_bucket: a cost above the burst is impossible and takes nothing",
          "[ratelimit][token]") {
  Key key(quota(Algorithm::tokenBucket, 5, kSecond, 3));  // Capacity 3, though the limit is 5.
  CHECK(key.take(kT0, 4) == impossible(3, 3, 0));
  CHECK(key.take(kT0, kMaxCost) == impossible(3, 3, 0));
  CHECK(key.take(kT0, 3) == allow(3, 0, 600 * kMs));
  CHECK(key.take(kT0, 4) == impossible(3, 0, 600 * kMs));
  CHECK(key.left(kT0 + 600 * kMs) == 3);
}

TEST_CASE("token_bucket: a clock going backwards gets no refill for the time it went back",
          "[ratelimit][token]") {
  Key key(quota(Algorithm::tokenBucket, 1, kSecond));
  CHECK(key.take(kT0 + 10 * kSecond) == allow(1, 0, kSecond));
  // Read at the state's time; waits count from the caller's clock.
  CHECK(key.take(kT0 + 5 * kSecond) == deny(1, 0, 6 * kSecond, 6 * kSecond));
  // Refilled since 10 s, not since 5 s.
  CHECK(key.take(kT0 + 10'500 * kMs) == deny(1, 0, 500 * kMs, 500 * kMs));
  CHECK(key.take(kT0 + 11 * kSecond - 1) == deny(1, 0, 1, 1));
  CHECK(key.take(kT0 + 11 * kSecond) == allow(1, 0, kSecond));
  CHECK(key.take(0) == deny(1, 0, kT0 + 12 * kSecond, kT0 + 12 * kSecond));
  CHECK(key.left(kT0 + 12 * kSecond) == 1);
}

TEST_CASE("token_bucket: days idle refill exactly the burst", "[ratelimit][token]") {
  Key key(quota(Algorithm::tokenBucket, 10, kSecond, 100));
  REQUIRE(key.take(kT0, 100).allowed);
  const Nanos later = kT0 + 3 * kDay + 17;
  CHECK(key.left(later) == 100);
  CHECK(key.take(later, 101) == impossible(100, 100, 0));
  CHECK(key.take(later, 100) == allow(100, 0, 10 * kSecond));
  CHECK(key.take(later) == deny(100, 0, 10 * kSecond, 100 * kMs));
}

TEST_CASE(
    "token_bucket: an override keeps the tokens: a smaller burst cuts them, a larger "
    "one fills by refill",
    "[ratelimit][token]") {
  Key key(quota(Algorithm::tokenBucket, 10, kSecond));
  CHECK(key.take(kT0, 2) == allow(10, 8, 200 * kMs));
  key.quota.burst = 3;
  CHECK(key.left(kT0) == 3);
  CHECK(key.take(kT0, 4) == impossible(3, 3, 0));
  CHECK(key.take(kT0, 3) == allow(3, 0, 300 * kMs));
  key.quota.burst = 10;
  CHECK(key.left(kT0) == 0);
  CHECK(key.take(kT0) == deny(10, 0, kSecond, 100 * kMs));
  key.quota.limit = 1;  // A slower rate refills from the last admission on.
  CHECK(key.take(kT0 + 100 * kMs) == deny(10, 0, 9'900 * kMs, 900 * kMs));
  CHECK(key.left(kT0 + 10 * kSecond) == 10);
}

TEST_CASE("token_bucket: atDefault from the nanosecond the bucket is full", "[ratelimit][token]") {
  Quota q = quota(Algorithm::tokenBucket, 3, kSecond);
  KeyState state;
  CHECK(atDefault(q, state, 0));
  CHECK(atDefault(q, state, kT0));
  REQUIRE(decide(q, state, 1, kT0).allowed);
  CHECK_FALSE(atDefault(q, state, kT0));
  CHECK_FALSE(atDefault(q, state, kT0 + 333'333'333));
  CHECK(atDefault(q, state, kT0 + 333'333'334));
  CHECK(atDefault(q, state, kT0 + kDay));

  // Full under a smaller burst at the state's own time, but a clock behind it would still be
  // read at that time: not the same as a fresh key until the clock catches up.
  q.burst = 2;
  CHECK_FALSE(atDefault(q, state, kT0 - 1));
  CHECK(atDefault(q, state, kT0));
}

// ---- leaky_bucket -------------------------------------------------------------------------

TEST_CASE("leaky_bucket: each request adds its cost to a level that drains at the rate",
          "[ratelimit][leaky]") {
  Key key(quota(Algorithm::leakyBucket, 4, kSecond));
  CHECK(key.take(kT0, 3) == allow(4, 1, 750 * kMs));
  CHECK(key.take(kT0, 2) == deny(4, 1, 750 * kMs, 250 * kMs));
  CHECK(key.take(kT0 + 250 * kMs - 1, 2) == deny(4, 1, 500 * kMs + 1, 1));
  CHECK(key.take(kT0 + 250 * kMs, 2) == allow(4, 0, kSecond));
  CHECK(key.left(kT0 + 1250 * kMs - 1) == 3);
  CHECK(key.left(kT0 + 1250 * kMs) == 4);
}

TEST_CASE("leaky_bucket: an override keeps the level: a larger burst is room at once",
          "[ratelimit][leaky]") {
  Key key(quota(Algorithm::leakyBucket, 10, kSecond));
  CHECK(key.take(kT0, 2) == allow(10, 8, 200 * kMs));
  key.quota.burst = 3;
  CHECK(key.left(kT0) == 1);
  CHECK(key.take(kT0, 3) == deny(3, 1, 200 * kMs, 200 * kMs));
  key.quota.burst = 10;
  CHECK(key.left(kT0) == 8);
  key.quota.burst = 1;  // The level is above the new capacity until it drains.
  CHECK(key.take(kT0) == deny(1, 0, 200 * kMs, 200 * kMs));
  CHECK(key.take(kT0 + 200 * kMs) == allow(1, 0, 100 * kMs));
}

// ---- gcra ---------------------------------------------------------------------------------

TEST_CASE("gcra: the burst passes at once, then one per emission interval", "[ratelimit][gcra]") {
  Key key(quota(Algorithm::gcra, 10, kSecond, 3));
  CHECK(key.take(kT0) == allow(3, 2, 100 * kMs));
  CHECK(key.take(kT0) == allow(3, 1, 200 * kMs));
  CHECK(key.take(kT0) == allow(3, 0, 300 * kMs));
  CHECK(key.take(kT0) == deny(3, 0, 300 * kMs, 100 * kMs));
  CHECK(key.take(kT0 + 100 * kMs - 1) == deny(3, 0, 200 * kMs + 1, 1));
  CHECK(key.take(kT0 + 100 * kMs) == allow(3, 0, 300 * kMs));
  CHECK(key.take(kT0 + 150 * kMs, 2) == deny(3, 0, 250 * kMs, 150 * kMs));
  CHECK(key.left(kT0 + 400 * kMs) == 3);
}

TEST_CASE("gcra: denied requests do not move the theoretical arrival time", "[ratelimit][gcra]") {
  Key key(quota(Algorithm::gcra, 10, kSecond, 1));
  REQUIRE(key.take(kT0).allowed);
  for (Nanos t = kT0; t < kT0 + 100 * kMs; t += kMs) {
    const Said d = key.take(t);
    REQUIRE_FALSE(d.allowed);
    REQUIRE(d.retryAfter == kT0 + 100 * kMs - t);
  }
  CHECK(key.take(kT0 + 100 * kMs) == allow(1, 0, 100 * kMs));
}

TEST_CASE(
    "token_bucket, leaky_bucket and gcra: limit 2^40 per ms at 2^62 ns, and a year's "
    "window",
    "[ratelimit][token][leaky][gcra]") {
  for (Algorithm a : kBuckets) {
    INFO(toString(a));
    Key key(quota(a, kMaxLimit, kMs));
    CHECK(key.take(kFar, kMaxLimit) == allow(kMaxLimit, 0, kMs));
    CHECK(key.left(kFar + 1) == 1'099'511);                // floor(2^40 / 1e6)
    CHECK(key.left(kFar + kMs - 1) == 1'099'510'528'264);  // 2^40 − ceil(2^40 / 1e6)
    CHECK(key.left(kFar + kMs) == kMaxLimit);
    CHECK(key.take(kFar + 1, kMaxLimit) == deny(kMaxLimit, 1'099'511, kMs - 1, kMs - 1));

    // Rate 1 a year with a burst of 2^40: refilling it takes 2^40 years, past any clock.
    Key slow(quota(a, 1, kMaxWindow, kMaxLimit));
    CHECK(slow.take(kFar, kMaxLimit) == allow(kMaxLimit, 0, kForever));
    CHECK(slow.take(kFar) == deny(kMaxLimit, 0, kForever, kMaxWindow));
    CHECK(slow.take(kFar, kMaxLimit) == deny(kMaxLimit, 0, kForever, kForever));
    CHECK(slow.left(kFar + kMaxWindow - 1) == 0);
    CHECK(slow.left(kFar + kMaxWindow) == 1);

    // 2^40 a year: one every 28760.4 ns, at the very end of the clock.
    Key fast(quota(a, kMaxLimit, kMaxWindow));
    CHECK(fast.take(kForever - 1, kMaxLimit) == allow(kMaxLimit, 0, kMaxWindow));
    CHECK(fast.take(kForever) == deny(kMaxLimit, 0, kMaxWindow - 1, 28'760));
    Key fresh(quota(a, kMaxLimit, kMaxWindow));
    REQUIRE(fresh.take(kFar, kMaxLimit).allowed);
    CHECK(fresh.left(kFar + 28'760) == 0);
    CHECK(fresh.left(kFar + 28'761) == 1);
  }
}

// ---- fixed_window -------------------------------------------------------------------------

TEST_CASE("fixed_window: windows sit at multiples of the window on the clock",
          "[ratelimit][fixed]") {
  Key key(quota(Algorithm::fixedWindow, 3, kSecond));
  const Nanos t = kT0 + 700 * kMs;  // 300 ms before the window ends.
  CHECK(key.take(t) == allow(3, 2, 300 * kMs));
  CHECK(key.take(t) == allow(3, 1, 300 * kMs));
  CHECK(key.take(t) == allow(3, 0, 300 * kMs));
  CHECK(key.take(t) == deny(3, 0, 300 * kMs, 300 * kMs));
  CHECK(key.take(kT0 + kSecond - 1) == deny(3, 0, 1, 1));
  CHECK(key.take(kT0 + kSecond) == allow(3, 2, kSecond));
  CHECK(key.take(kT0 + kSecond + 1, 2) == allow(3, 0, kSecond - 1));
  CHECK(key.take(kT0 + kSecond + 1, 0) == deny(3, 0, kSecond - 1, kSecond - 1));
  CHECK(key.take(kT0 + kSecond + 1, 4) == impossible(3, 0, kSecond - 1));
}

TEST_CASE("fixed_window: a full window on each side of an edge admits twice the limit in 2 ns",
          "[ratelimit][fixed]") {
  Key key(quota(Algorithm::fixedWindow, 3, kSecond));
  CHECK(key.take(kT0 + kSecond - 1, 3) == allow(3, 0, 1));
  CHECK(key.take(kT0 + kSecond, 3) == allow(3, 0, kSecond));
  CHECK(key.take(kT0 + kSecond) == deny(3, 0, kSecond, kSecond));
}

TEST_CASE("fixed_window: a clock going back into the previous window finds no fresh count",
          "[ratelimit][fixed]") {
  Key key(quota(Algorithm::fixedWindow, 3, kSecond));
  CHECK(key.take(kT0 + kSecond, 3) == allow(3, 0, kSecond));
  CHECK(key.take(kT0 + 999 * kMs) == deny(3, 0, 1001 * kMs, 1001 * kMs));
  CHECK(key.left(kT0) == 0);
  CHECK(key.left(kT0 + 2 * kSecond) == 3);
}

TEST_CASE("fixed_window: a window ending past the end of the clock", "[ratelimit][fixed]") {
  Key key(quota(Algorithm::fixedWindow, 2, kMs));
  // floor((2^63 − 1) / 1e6) + 1 windows end at 9223372036855000000 > 2^63 − 1.
  CHECK(key.take(kForever - 5) == allow(2, 1, 224'198));
  CHECK(key.take(kForever - 5) == allow(2, 0, 224'198));
  CHECK(key.take(kForever) == deny(2, 0, 224'193, 224'193));

  Key year(quota(Algorithm::fixedWindow, kMaxLimit, kMaxWindow));
  // 2^62 is 26438018427387904 ns into its window; 5184381572612096 ns are left.
  CHECK(year.take(kFar, kMaxLimit) == allow(kMaxLimit, 0, 5'184'381'572'612'096));
  CHECK(year.left(kFar + 5'184'381'572'612'095) == 0);
  CHECK(year.left(kFar + 5'184'381'572'612'096) == kMaxLimit);
}

// ---- sliding_window_log -------------------------------------------------------------------

TEST_CASE("sliding_window_log: an admission counts for exactly one window from its time",
          "[ratelimit][log]") {
  Key key(quota(Algorithm::slidingWindowLog, 3, kSecond));
  CHECK(key.take(kT0) == allow(3, 2, kSecond));
  CHECK(key.take(kT0 + 100 * kMs) == allow(3, 1, kSecond));
  CHECK(key.take(kT0 + 200 * kMs) == allow(3, 0, kSecond));
  CHECK(key.take(kT0 + kSecond - 1) == deny(3, 0, 200 * kMs + 1, 1));
  CHECK(key.take(kT0 + kSecond) == allow(3, 0, kSecond));
  CHECK(key.take(kT0 + kSecond) == deny(3, 0, kSecond, 100 * kMs));
  CHECK(key.left(kT0 + 1100 * kMs - 1) == 0);
  CHECK(key.left(kT0 + 1100 * kMs) == 1);
  CHECK(key.left(kT0 + 2 * kSecond - 1) == 2);
  CHECK(key.left(kT0 + 2 * kSecond) == 3);
}

TEST_CASE("sliding_window_log: costs weigh, and the wait is until enough of them left",
          "[ratelimit][log]") {
  Key key(quota(Algorithm::slidingWindowLog, 5, kSecond));
  CHECK(key.take(kT0, 2) == allow(5, 3, kSecond));
  CHECK(key.take(kT0 + 10 * kMs, 2) == allow(5, 1, kSecond));
  CHECK(key.take(kT0 + 500 * kMs, 2) == deny(5, 1, 510 * kMs, 500 * kMs));
  CHECK(key.take(kT0 + 500 * kMs, 3) == deny(5, 1, 510 * kMs, 500 * kMs));
  CHECK(key.take(kT0 + 500 * kMs, 4) == deny(5, 1, 510 * kMs, 510 * kMs));
  CHECK(key.take(kT0 + 500 * kMs, 5) == deny(5, 1, 510 * kMs, 510 * kMs));
  CHECK(key.take(kT0 + 500 * kMs, 6) == impossible(5, 1, 510 * kMs));
  CHECK(key.take(kT0 + 500 * kMs, 1) == allow(5, 0, kSecond));
  CHECK(key.take(kT0 + kSecond, 3) == deny(5, 2, 500 * kMs, 10 * kMs));
}

TEST_CASE("sliding_window_log: memory follows the admissions in the window", "[ratelimit][log]") {
  Key key(quota(Algorithm::slidingWindowLog, kMaxLogLimit, kSecond));
  for (int i = 0; i < 1000; ++i) REQUIRE(key.take(kT0).allowed);
  const size_t one = key.state.heapBytes();  // The same nanosecond shares one entry.
  CHECK(one > 0);
  CHECK(one < 1000);
  for (Nanos i = 1; i <= 1000; ++i) REQUIRE(key.take(kT0 + i).allowed);
  CHECK(key.state.heapBytes() >= 1001 * 16);
  CHECK(key.state.heapBytes() <= one + 2048 * 16);
  // An hour later everything left the window: the key shrinks back when it is next used.
  CHECK(key.take(kT0 + kHour) == allow(kMaxLogLimit, kMaxLogLimit - 1, kSecond));
  CHECK(key.state.heapBytes() == one);

  // A copy is deep: using it leaves the original as it was.
  KeyState copy = key.state;
  for (Nanos i = 1; i <= 100; ++i) decide(key.quota, copy, 1, kT0 + kHour + i);
  CHECK(key.left(kT0 + kHour) == kMaxLogLimit - 1);
  CHECK(available(key.quota, copy, kT0 + kHour + 100) == kMaxLogLimit - 101);
}

TEST_CASE("sliding_window_log: a full log of 100000 entries slides one at a time",
          "[ratelimit][log]") {
  Key key(quota(Algorithm::slidingWindowLog, kMaxLogLimit, kSecond));
  constexpr Nanos kGap = 10'000;  // 100000 gaps make the window.
  Nanos t = kT0;
  for (int i = 0; i < 250'000; ++i, t += kGap) {
    const Said d = key.take(t);
    REQUIRE(d.allowed);
    REQUIRE(d.remaining == (i + 1 < 100'000 ? kMaxLogLimit - static_cast<uint64_t>(i) - 1 : 0));
  }
  t -= kGap;
  CHECK(key.take(t) == deny(kMaxLogLimit, 0, kSecond, kGap));
  CHECK(key.left(t + kGap - 1) == 0);
  CHECK(key.left(t + kGap) == 1);
  CHECK(key.state.heapBytes() <= 200 + 131'072 * 16);
}

// ---- sliding_window_counter ---------------------------------------------------------------

TEST_CASE("sliding_window_counter: the previous window weighs by its overlap, exactly",
          "[ratelimit][counter]") {
  Key key(quota(Algorithm::slidingWindowCounter, 10, kSecond));
  // All 10 in the last nanosecond of a window: they weigh into the whole next window.
  CHECK(key.take(kT0 + kSecond - 1, 10) == allow(10, 0, kSecond + 1));
  const Nanos w1 = kT0 + kSecond;
  // 10·(W − e)/W + 1 <= 10 from e = W/10.
  CHECK(key.take(w1) == deny(10, 0, kSecond, 100 * kMs));
  CHECK(key.left(w1 + 100 * kMs - 1) == 0);
  CHECK(key.left(w1 + 100 * kMs) == 1);
  CHECK(key.left(w1 + 500 * kMs - 1) == 4);  // 10·500000001/1e9 is a hair above 5
  CHECK(key.left(w1 + 500 * kMs) == 5);
  CHECK(key.left(w1 + kSecond - 1) == 9);
  CHECK(key.left(w1 + kSecond) == 10);

  // What this window takes weighs into the next one too.
  CHECK(key.take(w1 + 500 * kMs, 5) == allow(10, 0, 1500 * kMs));
  CHECK(key.take(w1 + 500 * kMs) == deny(10, 0, 1500 * kMs, 100 * kMs));
  CHECK(key.left(w1 + 600 * kMs) == 1);
  CHECK(key.left(w1 + kSecond) == 5);
  CHECK(key.left(w1 + 2 * kSecond) == 10);
}

TEST_CASE(
    "sliding_window_counter: the most a window-long span admits is "
    "2 limit - ceil(2 limit / window)",
    "[ratelimit][counter]") {
  Key key(quota(Algorithm::slidingWindowCounter, 10, kMs));
  const Nanos edge = kT0 + kMs;
  REQUIRE(key.take(edge - 1, 10).allowed);
  const Nanos late = edge + kMs - 2;  // (late − 1 ms, late] still holds edge − 1.
  CHECK(key.left(late - 1) == 9);
  CHECK(key.take(late, 9) == allow(10, 0, kMs + 2));
  // 19 in one window-long span, the bound for limit 10 and a 1 ms window.
  CHECK(key.left(late) == 0);
}

TEST_CASE("sliding_window_counter: a clock going back into the previous window",
          "[ratelimit][counter]") {
  Key key(quota(Algorithm::slidingWindowCounter, 10, kSecond));
  CHECK(key.take(kT0 + kSecond, 10) == allow(10, 0, 2 * kSecond));
  // Read at kT0 + 1 s: the quota is back at kT0 + 2.1 s for one request.
  CHECK(key.take(kT0 + 999 * kMs) == deny(10, 0, 2001 * kMs, 1101 * kMs));
  CHECK(key.left(kT0) == 0);
  CHECK(key.left(kT0 + 2100 * kMs) == 1);
}

TEST_CASE("sliding_window_counter: limit 2^40 over a year at 2^62 ns", "[ratelimit][counter]") {
  Key key(quota(Algorithm::slidingWindowCounter, kMaxLimit, kMaxWindow));
  const Nanos next = kFar + 5'184'381'572'612'096;  // The next window's start.
  CHECK(key.take(kFar, kMaxLimit) == allow(kMaxLimit, 0, next - kFar + kMaxWindow));
  CHECK(key.left(next) == 0);
  // Half a year in, the previous window weighs exactly half.
  CHECK(key.left(next + kMaxWindow / 2 - 1) == kMaxLimit / 2 - 1);
  CHECK(key.left(next + kMaxWindow / 2) == kMaxLimit / 2);
  CHECK(key.take(next, kMaxLimit / 2) == deny(kMaxLimit, 0, kMaxWindow, kMaxWindow / 2));
}

// ---- every algorithm ----------------------------------------------------------------------

TEST_CASE("every algorithm: a cost above capacity is impossible, retryAfter 0, takes nothing",
          "[ratelimit]") {
  for (Algorithm a : kAll) {
    INFO(toString(a));
    Key key(quota(a, 4, kSecond));
    CHECK(key.take(kT0, 5) == impossible(4, 4, 0));
    CHECK(key.take(kT0, kMaxCost) == impossible(4, 4, 0));
    REQUIRE(key.take(kT0, 3).allowed);
    const Said after = key.take(kT0, 5);
    CHECK(after.impossible);
    CHECK_FALSE(after.allowed);
    CHECK(after.retryAfter == 0);
    CHECK(after.remaining == 1);
    CHECK(after.reset > 0);
    CHECK(key.take(kT0, 1).allowed);
  }
}

TEST_CASE("every algorithm: cost 0 answers as a cost-1 check would before taking", "[ratelimit]") {
  for (Algorithm a : kAll) {
    INFO(toString(a));
    Key key(quota(a, 4, kSecond));
    CHECK(key.take(kT0, 0) == allow(4, 4, 0));
    REQUIRE(key.take(kT0, 3).allowed);
    const Said beforeTaking = probe(key, kT0, 0);
    const Said taking = probe(key, kT0, 1);
    CHECK(beforeTaking.allowed);
    CHECK(beforeTaking.remaining == 1);
    CHECK(taking.remaining == 0);
    REQUIRE(key.take(kT0, 1).allowed);
    // Denied: the same answer as cost 1, and nothing changes however often it is asked.
    const KeyState before = key.state;
    for (Nanos t = kT0; t < kT0 + kSecond; t += 50 * kMs) {
      const Said read = key.take(t, 0);
      const Said one = probe(key, t, 1);
      if (one.allowed) {
        // What the key says before taking: an impossible cost reports the same, untaken.
        const Said untaken = probe(key, t, kMaxCost);
        CHECK(read == allow(4, untaken.remaining, untaken.reset));
        CHECK(read.remaining == key.left(t));
      } else {
        CHECK(read == one);
      }
    }
    Key unread(key.quota);
    unread.state = before;
    for (Nanos t = kT0; t < kT0 + 3 * kSecond; t += 100 * kMs) {
      CHECK(key.take(t) == unread.take(t));
    }
  }
}

TEST_CASE("every algorithm: waiting exactly retryAfter passes, a nanosecond less does not",
          "[ratelimit]") {
  const Nanos oddWindow = kMs + 13;
  for (Algorithm a : kAll) {
    for (const Quota& q :
         {quota(a, 3, kSecond), quota(a, 7, oddWindow), quota(a, 5, 10 * kMs, 9)}) {
      INFO(toString(a) << " limit " << q.limit << " window " << q.window << " burst " << q.burst);
      Key key(q);
      const uint64_t capacity = q.capacity();
      const Nanos gaps[] = {0, 1, q.window / 7, 0, q.window / 3 + 1, 2, q.window - 1};
      Nanos now = kT0 + 123;
      int denials = 0;
      for (int step = 0; step < 300; ++step) {
        now += gaps[step % 7];
        const uint64_t cost = 1 + static_cast<uint64_t>(step) % capacity;
        const Said d = probe(key, now, cost);
        if (!d.allowed) {
          ++denials;
          requireExactRetry(key, now, cost, d.retryAfter);
        }
        REQUIRE(key.take(now, cost) == d);
      }
      CHECK(denials > 20);
    }
  }
}

TEST_CASE("every algorithm: a clock going backwards gets no free quota", "[ratelimit]") {
  for (Algorithm a : kAll) {
    INFO(toString(a));
    Key key(quota(a, 5, kSecond));
    const Nanos t = kT0 + 10 * kSecond + 300 * kMs;
    REQUIRE(key.take(t, 5).allowed);
    const Said atT = probe(key, t);
    REQUIRE_FALSE(atT.allowed);
    const KeyState before = key.state;
    for (Nanos back : {Nanos{1}, kMs, 300 * kMs + 1, kSecond, 10 * kSecond, t}) {
      CHECK(key.left(t - back) == 0);
      CHECK(key.take(t - back) == deny(5, 0, atT.reset + back, atT.retryAfter + back));
    }
    // The quota comes back on the state's clock, as if the backward calls were never made.
    Key untouched(key.quota);
    untouched.state = before;
    for (Nanos later = t; later < t + 3 * kSecond; later += 97 * kMs) {
      CHECK(key.take(later, 2) == untouched.take(later, 2));
    }
  }
}

TEST_CASE("every algorithm: days idle give back exactly the full quota", "[ratelimit]") {
  for (Algorithm a : kAll) {
    INFO(toString(a));
    Key key(quota(a, 5, kSecond));
    REQUIRE(key.take(kT0, 5).allowed);
    REQUIRE(key.take(kT0 + 2 * kSecond + 1, 2).allowed);
    for (Nanos idle : {kHour, 3 * kDay, 365 * kDay}) {
      const Nanos t = kT0 + idle;
      CHECK(key.left(t) == 5);
      CHECK(probe(key, t, 6) == impossible(5, 5, 0));
      CHECK(probe(key, t, 5).allowed);
    }
    const Nanos t = kT0 + 3 * kDay;
    REQUIRE(key.take(t, 5).allowed);
    CHECK_FALSE(key.take(t).allowed);
  }
}

TEST_CASE("every algorithm: the largest limit and window at 2^62 ns and at the clock's end",
          "[ratelimit]") {
  for (Algorithm a : kAll) {
    INFO(toString(a));
    const uint64_t most = a == Algorithm::slidingWindowLog ? kMaxLogLimit : kMaxLimit;
    for (Nanos start : {kFar, kForever - kMaxWindow, kForever - 3}) {
      Key key(quota(a, most, kMaxWindow));
      const Said full = key.take(start, most);
      REQUIRE(full.allowed);
      CHECK(full.remaining == 0);
      CHECK(full.reset > 0);
      const Said d = key.take(start);
      REQUIRE_FALSE(d.allowed);
      CHECK(d.retryAfter > 0);
      CHECK(d.retryAfter <= 2 * kMaxWindow);
      if (d.retryAfter <= kForever - start) requireExactRetry(key, start, 1, d.retryAfter);
      CHECK(key.left(start + 1) < most);
    }
  }
}

TEST_CASE("every algorithm: a lowered limit never grants more than the new capacity at once",
          "[ratelimit]") {
  for (Algorithm a : kAll) {
    INFO(toString(a));
    Key key(quota(a, 10, kSecond));
    REQUIRE(key.take(kT0, 4).allowed);
    key.quota.limit = 2;
    // The token bucket keeps 6 tokens, cut to 2; every other algorithm already used more.
    const uint64_t left = a == Algorithm::tokenBucket ? 2 : 0;
    CHECK(key.left(kT0) == left);
    const Said read = key.take(kT0, 0);
    CHECK(key.take(kT0, 3) == impossible(2, left, read.reset));
    uint64_t granted = 0;
    while (key.take(kT0).allowed) ++granted;
    CHECK(granted == left);
    CHECK(key.left(kT0 + kHour) == 2);
    // Raised again: never more than the new capacity, and back to it once idle.
    key.quota.limit = 50;
    CHECK(key.left(kT0 + 1) <= 50);
    CHECK(key.left(kT0 + kHour) == 50);
    REQUIRE(key.take(kT0 + kHour, 50).allowed);
    CHECK(key.left(kT0 + kHour) == 0);
  }
}

TEST_CASE(
    "every algorithm: atDefault from the reset instant on, and dropping then changes "
    "nothing",
    "[ratelimit]") {
  struct Expected {
    Algorithm algorithm;
    Nanos reset;  // after taking 2 of 3 at kT0 + 250 ms, 1 s windows
  };
  const Expected table[] = {
      {Algorithm::tokenBucket, 666'666'667},  {Algorithm::leakyBucket, 666'666'667},
      {Algorithm::gcra, 666'666'667},         {Algorithm::fixedWindow, 750 * kMs},
      {Algorithm::slidingWindowLog, kSecond}, {Algorithm::slidingWindowCounter, 1750 * kMs},
  };
  for (const Expected& row : table) {
    INFO(toString(row.algorithm));
    const Quota q = quota(row.algorithm, 3, kSecond);
    KeyState state;
    CHECK(atDefault(q, state, kT0));
    const Nanos t = kT0 + 250 * kMs;
    const Decision d = decide(q, state, 2, t);
    REQUIRE(d.allowed);
    CHECK(d.reset == row.reset);
    const Nanos full = t + d.reset;
    CHECK_FALSE(atDefault(q, state, t));
    CHECK_FALSE(atDefault(q, state, full - 1));
    CHECK(available(q, state, full - 1) < 3);
    CHECK(atDefault(q, state, full));
    CHECK(available(q, state, full) == 3);

    // The same calls on the kept key and on one dropped whenever atDefault allowed it.
    KeyState kept;
    KeyState dropped;
    int drops = 0;
    Nanos now = kT0;
    const Nanos gaps[] = {0, 1, 300 * kMs, 0, 2 * kSecond, 999 * kMs, 1, 5 * kSecond};
    for (int step = 0; step < 400; ++step) {
      now += gaps[step % 8];
      const uint64_t cost = static_cast<uint64_t>(step % 5);  // 0..4; 4 is impossible
      if (atDefault(q, dropped, now)) {
        dropped = KeyState{};
        ++drops;
      }
      REQUIRE(said(decide(q, kept, cost, now)) == said(decide(q, dropped, cost, now)));
      REQUIRE(available(q, kept, now) == available(q, dropped, now));
    }
    CHECK(drops > 20);
  }
}
