// The two-stage rate limiter's local stage, on an injected clock: exact local
// admissions, lease expiry, remembered denials, fail-open/closed, the bound on
// keys, and N stages against one fake global limiter.
#include "zmesh/two_stage.h"

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <deque>
#include <map>
#include <thread>
#include <vector>

using namespace zmesh;
using namespace std::chrono_literals;
using Clock = TwoStage::Clock;
using V = TwoStage::Verdict;
using std::chrono::milliseconds;

namespace Catch {
template <>
struct StringMaker<V> {
  static std::string convert(V v) {
    switch (v) {
      case V::kAdmitted:
        return "kAdmitted";
      case V::kDenied:
        return "kDenied";
      case V::kLease:
        return "kLease";
      case V::kWait:
        return "kWait";
    }
    return "?";
  }
};
}  // namespace Catch

namespace {

const Clock::time_point t0 = Clock::time_point{} + 1h;

RateLimitClient::Decision decision(bool allowed, uint64_t limit, milliseconds window,
                                   milliseconds retryAfter = 0ms, milliseconds reset = 0ms) {
  RateLimitClient::Decision d{};
  d.allowed = allowed;
  d.limit = limit;
  d.window = window;
  d.retryAfter = retryAfter;
  d.reset = reset;
  d.rule = "api";
  return d;
}

RateLimitClient::Lease grant(uint32_t granted, milliseconds ttl, uint64_t limit = 100,
                             milliseconds window = 10s) {
  return {granted, ttl, decision(granted > 0, limit, window, 0ms, 2s)};
}

RateLimitClient::Lease refusal(milliseconds retryAfter, uint64_t limit = 100) {
  return {0, 1s, decision(false, limit, 10s, retryAfter, 10s)};
}

// One global limiter, as the service keeps it: a sliding window log that
// grants what is available of `want` and cuts a lease's ttl to the window.
class FakeGlobal {
 public:
  FakeGlobal(uint64_t limit, Clock::duration window) : limit_(limit), window_(window) {}
  RateLimitClient::Lease lease(uint32_t want, Clock::time_point now) {
    ++calls;
    while (!log_.empty() && log_.front() <= now - window_) log_.pop_front();
    uint64_t available = limit_ - log_.size();
    uint32_t take = static_cast<uint32_t>(std::min<uint64_t>(want, available));
    for (uint32_t i = 0; i < take; ++i) log_.push_back(now);
    auto ms = [](Clock::duration d) { return std::chrono::ceil<milliseconds>(d); };
    auto d = decision(take > 0, limit_, ms(window_));
    d.remaining = available - take;
    if (take == 0) d.retryAfter = ms(log_.front() + window_ - now);
    if (!log_.empty()) d.reset = ms(log_.back() + window_ - now);
    return {take, ms(window_), d};
  }
  uint64_t calls = 0;

 private:
  uint64_t limit_;
  Clock::duration window_;
  std::deque<Clock::time_point> log_;
};

// admit(), and when it asks, the lease from `global` at once.
TwoStage::Admission decide(TwoStage& stage, FakeGlobal& global, const std::string& key,
                           Clock::time_point now, uint32_t cost = 1) {
  auto a = stage.admit("api", key, cost, now);
  if (a.verdict != V::kLease) return a;
  return stage.leased("api", key, cost, global.lease(a.want, now), now);
}

}  // namespace

TEST_CASE("TwoStage: a lease's tokens are admitted locally and exactly", "[two_stage]") {
  TwoStage stage({.batch = 5});
  auto first = stage.admit("api", "alice", 1, t0);
  REQUIRE(first.verdict == V::kLease);
  CHECK(first.want == 5);
  auto leased = stage.leased("api", "alice", 1, grant(5, 1000ms), t0 + 1ms);
  CHECK(leased.verdict == V::kAdmitted);
  CHECK(leased.remaining == 4);
  CHECK(leased.limit == 100);
  CHECK(leased.window == 10s);
  for (uint64_t left : {3, 2, 1, 0}) {
    auto a = stage.admit("api", "alice", 1, t0 + 10ms);
    REQUIRE(a.verdict == V::kAdmitted);
    CHECK(a.remaining == left);
  }
  // The fifth token is gone: the sixth request asks again.
  CHECK(stage.admit("api", "alice", 1, t0 + 10ms).verdict == V::kLease);
  auto s = stage.stats();
  CHECK(s.admitted == 5);
  CHECK(s.leases == 2);
  CHECK(s.tokensLeased == 5);
  CHECK(s.keys == 1);

  SECTION("another key, or the same key of another rule, is its own") {
    CHECK(stage.admit("api", "bob", 1, t0 + 10ms).verdict == V::kLease);
    CHECK(stage.admit("other", "alice", 1, t0 + 10ms).verdict == V::kLease);
    CHECK(stage.stats().keys == 3);
  }
}

TEST_CASE("TwoStage: cost comes out of the grant and a lease asks for at least the cost",
          "[two_stage]") {
  TwoStage stage({.batch = 4});
  auto a = stage.admit("api", "k", 10, t0);
  REQUIRE(a.verdict == V::kLease);
  CHECK(a.want == 10);
  CHECK(stage.leased("api", "k", 10, grant(10, 1s), t0).remaining == 0);
  REQUIRE(stage.admit("api", "k", 3, t0).verdict == V::kLease);
  CHECK(stage.leased("api", "k", 3, grant(4, 1s), t0).remaining == 1);
  CHECK(stage.admit("api", "k", 1, t0).verdict == V::kAdmitted);

  SECTION("a grant below the cost denies the request and keeps the tokens for smaller ones") {
    REQUIRE(stage.admit("api", "k", 3, t0).verdict == V::kLease);
    auto partial = stage.leased("api", "k", 3, grant(2, 1s), t0);
    CHECK(partial.verdict == V::kDenied);
    CHECK(partial.remaining == 2);
    CHECK(stage.admit("api", "k", 2, t0).verdict == V::kAdmitted);
  }
  SECTION("cost 0 counts as 1") {
    REQUIRE(stage.admit("api", "k", 0, t0).verdict == V::kLease);
    CHECK(stage.leased("api", "k", 0, grant(4, 1s), t0).remaining == 3);
  }
}

TEST_CASE("TwoStage: one lease in flight per key while the others wait for it", "[two_stage]") {
  TwoStage stage({.batch = 3});
  REQUIRE(stage.admit("api", "k", 1, t0).verdict == V::kLease);
  CHECK(stage.admit("api", "k", 1, t0).verdict == V::kWait);
  CHECK(stage.admit("api", "k", 1, t0 + 1ms).verdict == V::kWait);
  CHECK(stage.admit("api", "other", 1, t0).verdict == V::kLease);
  CHECK(stage.leased("api", "k", 1, grant(3, 1s), t0 + 2ms).verdict == V::kAdmitted);
  CHECK(stage.admit("api", "k", 1, t0 + 2ms).verdict == V::kAdmitted);
  CHECK(stage.admit("api", "k", 1, t0 + 2ms).verdict == V::kAdmitted);
  CHECK(stage.stats().leases == 2);
}

TEST_CASE("TwoStage: leased tokens lapse when the lease ends (counted from when it was asked)",
          "[two_stage]") {
  TwoStage stage({.batch = 10});
  REQUIRE(stage.admit("api", "k", 1, t0).verdict == V::kLease);
  // Answered 40 ms later; the 100 ms ttl still counts from t0.
  REQUIRE(stage.leased("api", "k", 1, grant(10, 100ms), t0 + 40ms).verdict == V::kAdmitted);
  CHECK(stage.admit("api", "k", 1, t0 + 99ms).verdict == V::kAdmitted);
  auto late = stage.admit("api", "k", 1, t0 + 100ms);
  CHECK(late.verdict == V::kLease);
  CHECK(late.remaining == 0);
  REQUIRE(stage.leased("api", "k", 1, grant(10, 100ms), t0 + 100ms).verdict == V::kAdmitted);
  // The 8 left of the first lease were never returned: they lapsed.
  CHECK(stage.stats().tokensLapsed == 8);
  CHECK(stage.stats().tokensLeased == 20);

  SECTION("a lease of ttl 0 admits its requester and nothing after") {
    REQUIRE(stage.admit("api", "z", 1, t0).verdict == V::kLease);
    CHECK(stage.leased("api", "z", 1, grant(10, 0ms), t0).verdict == V::kAdmitted);
    CHECK(stage.admit("api", "z", 1, t0).verdict == V::kLease);
  }
}

TEST_CASE("TwoStage: a denial is remembered until its retry-after", "[two_stage]") {
  TwoStage stage({.batch = 10});
  REQUIRE(stage.admit("api", "hot", 1, t0).verdict == V::kLease);
  auto denied = stage.leased("api", "hot", 1, refusal(700ms, 10), t0);
  CHECK(denied.verdict == V::kDenied);
  CHECK(denied.retryAfter == 700ms);
  CHECK(denied.limit == 10);
  CHECK(denied.reset == 10s);
  CHECK_FALSE(denied.failed);
  for (auto at : {1ms, 300ms, 699ms}) {
    auto a = stage.admit("api", "hot", 1, t0 + at);
    REQUIRE(a.verdict == V::kDenied);
    CHECK(a.retryAfter == 700ms - at);
    CHECK(a.limit == 10);
  }
  CHECK(stage.admit("api", "hot", 1, t0 + 700ms).verdict == V::kLease);
  auto s = stage.stats();
  CHECK(s.leases == 2);
  CHECK(s.denied == 4);
  CHECK(s.deniedLocally == 3);

  SECTION("a denial for good (reason, no retry-after) is not remembered") {
    auto never = refusal(0ms);
    never.decision.reason = "cost 500 exceeds the limit's capacity of 100";
    auto a = stage.leased("api", "hot", 1, never, t0 + 700ms);
    CHECK(a.verdict == V::kDenied);
    CHECK(a.reason == never.decision.reason);
    CHECK(a.retryAfter == 0ms);
    CHECK(stage.admit("api", "hot", 1, t0 + 701ms).verdict == V::kLease);
  }
}

TEST_CASE("TwoStage: a wait the service saturates does not overflow the clock", "[two_stage]") {
  TwoStage stage;
  const milliseconds huge{INT64_MAX / 1'000'000};  // the service's INT64_MAX ns, in ms
  REQUIRE(stage.admit("api", "k", 1, t0).verdict == V::kLease);
  RateLimitClient::Lease lease{0, 1s, decision(false, 100, 10s, huge, huge)};
  CHECK(stage.leased("api", "k", 1, lease, t0).retryAfter == huge);
  auto a = stage.admit("api", "k", 1, t0 + 1s);
  CHECK(a.verdict == V::kDenied);
  CHECK(a.retryAfter > std::chrono::hours(24 * 365));
  CHECK(a.reset > std::chrono::hours(24 * 365));
}

TEST_CASE("TwoStage: a failed lease fails closed by default for failure_hold", "[two_stage]") {
  TwoStage stage({.batch = 10, .failureHold = 500ms});
  REQUIRE(stage.admit("api", "k", 1, t0).verdict == V::kLease);
  auto failed = stage.leaseFailed("api", "k", 1, t0 + 5ms);
  CHECK(failed.verdict == V::kDenied);
  CHECK(failed.failed);
  CHECK(failed.retryAfter == 500ms);
  auto held = stage.admit("api", "k", 1, t0 + 105ms);
  CHECK(held.verdict == V::kDenied);
  CHECK(held.failed);
  CHECK(held.retryAfter == 400ms);
  CHECK(stage.admit("api", "k", 1, t0 + 505ms).verdict == V::kLease);
  auto s = stage.stats();
  CHECK(s.leaseFailures == 1);
  CHECK(s.failedClosed == 2);
  CHECK(s.failedOpen == 0);
  CHECK(s.denied == 2);
  CHECK(s.leases == 2);

  SECTION("an answer after a failure clears the hold") {
    CHECK(stage.leased("api", "k", 1, grant(10, 1s), t0 + 505ms).verdict == V::kAdmitted);
    CHECK(stage.admit("api", "k", 1, t0 + 506ms).verdict == V::kAdmitted);
  }
}

TEST_CASE("TwoStage: fail open admits while the service cannot be asked", "[two_stage]") {
  TwoStage stage({.batch = 10, .failOpen = true, .failureHold = 500ms});
  REQUIRE(stage.admit("api", "k", 1, t0).verdict == V::kLease);
  auto a = stage.leaseFailed("api", "k", 1, t0);
  CHECK(a.verdict == V::kAdmitted);
  CHECK(a.failed);
  for (int i = 0; i < 100; ++i)
    REQUIRE(stage.admit("api", "k", 1, t0 + 499ms).verdict == V::kAdmitted);
  CHECK(stage.admit("api", "k", 1, t0 + 500ms).verdict == V::kLease);
  auto s = stage.stats();
  CHECK(s.failedOpen == 101);
  CHECK(s.admitted == 101);
  CHECK(s.leases == 2);
  CHECK(s.leaseFailures == 1);
}

TEST_CASE("TwoStage: a cancelled lease decides nothing and asks again", "[two_stage]") {
  TwoStage stage;
  REQUIRE(stage.admit("nope", "k", 1, t0).verdict == V::kLease);
  stage.leaseCancelled("nope", "k");
  CHECK(stage.admit("nope", "k", 1, t0).verdict == V::kLease);
  CHECK(stage.stats().leaseFailures == 0);
}

TEST_CASE("TwoStage: keys are bounded - expired ones dropped and the rest asked untracked",
          "[two_stage]") {
  TwoStage stage({.batch = 10, .maxKeys = 2});
  REQUIRE(stage.admit("api", "a", 1, t0).verdict == V::kLease);
  REQUIRE(stage.admit("api", "b", 1, t0).verdict == V::kLease);
  REQUIRE(stage.leased("api", "a", 1, grant(10, 100ms), t0).verdict == V::kAdmitted);

  // Full, and neither key is done (a lease in flight, tokens valid): c is not tracked.
  auto c = stage.admit("api", "c", 3, t0 + 1ms);
  REQUIRE(c.verdict == V::kLease);
  CHECK(c.want == 3);  // its own cost: nowhere to keep a batch
  CHECK(stage.admit("api", "c", 1, t0 + 1ms).verdict == V::kLease);  // no kWait: no entry
  CHECK(stage.leased("api", "c", 3, grant(3, 1s), t0 + 2ms).verdict == V::kAdmitted);
  CHECK(stage.leased("api", "c", 1, grant(0, 1s), t0 + 2ms).verdict == V::kDenied);
  auto s = stage.stats();
  CHECK(s.keys == 2);
  CHECK(s.keysOverflow == 2);

  // b's lease fails: held 1 s. a's tokens end at t0 + 100ms: then a can go.
  stage.leaseFailed("api", "b", 1, t0 + 2ms);
  CHECK(stage.admit("api", "d", 1, t0 + 99ms).verdict == V::kLease);  // untracked still
  CHECK(stage.stats().keysOverflow == 3);
  REQUIRE(stage.admit("api", "e", 1, t0 + 100ms).verdict == V::kLease);
  CHECK(stage.admit("api", "e", 1, t0 + 100ms).verdict == V::kWait);  // tracked: a made room
  s = stage.stats();
  CHECK(s.keys == 2);
  CHECK(s.keysDropped == 1);
  CHECK(s.tokensLapsed == 9);  // a's unused tokens, never given back
}

TEST_CASE("TwoStage: N stages over one global limit admit at most limit + N x batch a window",
          "[two_stage]") {
  constexpr int kStages = 4;
  constexpr uint32_t kBatch = 10;
  constexpr uint64_t kLimit = 100;
  const Clock::duration window = 1s;

  SECTION("overloaded: 40x the limit") {
    FakeGlobal global(kLimit, window);
    std::vector<TwoStage> stages(kStages, TwoStage({.batch = kBatch}));
    std::vector<Clock::time_point> admitted;
    uint64_t requests = 0;
    for (int ms = 0; ms < 10'000; ++ms) {
      for (int s = 0; s < kStages; ++s) {
        auto now = t0 + milliseconds(ms) + std::chrono::microseconds(s);
        ++requests;
        auto a = decide(stages[s], global, "k", now);
        REQUIRE(a.verdict != V::kWait);
        if (a.verdict == V::kAdmitted) admitted.push_back(now);
      }
    }
    // The most admitted in any window, over every window ending at an admission.
    size_t most = 0;
    for (size_t i = 0, j = 0; i < admitted.size(); ++i) {
      while (admitted[i] - admitted[j] >= window) ++j;
      most = std::max(most, i - j + 1);
    }
    INFO("admitted " << admitted.size() << " of " << requests << ", global calls " << global.calls
                     << ", most in a window " << most);
    CHECK(most <= kLimit + kStages * kBatch);
    CHECK(admitted.size() >= 9 * kLimit);  // the limit is used, not starved
    // Denials are remembered: nowhere near one call per request.
    CHECK(global.calls * 20 < requests);
  }

  SECTION("the worst case: every stage spends a lease at its very end, then leases again") {
    // Limit 40 = N x batch. Each stage leases 10 at once (the global limit is
    // used up), spends 9 just before the leases end, and 10 more from fresh
    // leases right after: 76 in one window, over the limit, within the bound.
    constexpr uint64_t kTightLimit = kStages * kBatch;
    FakeGlobal global(kTightLimit, window);
    std::vector<TwoStage> stages(kStages, TwoStage({.batch = kBatch}));
    std::vector<Clock::time_point> admitted;
    auto burst = [&](milliseconds at, int n) {
      for (int s = 0; s < kStages; ++s) {
        auto now = t0 + at + std::chrono::microseconds(s);
        for (int i = 0; i < n; ++i)
          if (decide(stages[s], global, "k", now).verdict == V::kAdmitted) admitted.push_back(now);
      }
    };
    burst(0ms, 1);
    burst(999ms, 9);
    burst(1000ms, 10);
    burst(1001ms, 1);  // nothing left anywhere: denied
    CHECK(admitted.size() == 80);
    size_t most = 0;
    for (size_t i = 0, j = 0; i < admitted.size(); ++i) {
      while (admitted[i] - admitted[j] >= window) ++j;
      most = std::max(most, i - j + 1);
    }
    CHECK(most == 76);                              // the carry-over is real…
    CHECK(most <= kTightLimit + kStages * kBatch);  // …and bounded
    CHECK(global.calls == 12);
  }

  SECTION("under the limit: everything admitted, one call per batch") {
    FakeGlobal global(kLimit, window);
    std::vector<TwoStage> stages(kStages, TwoStage({.batch = kBatch}));
    uint64_t requests = 0, admitted = 0;
    // 20 requests a second per stage: 80 of the limit's 100.
    for (int ms = 0; ms < 10'000; ms += 50) {
      for (int s = 0; s < kStages; ++s) {
        ++requests;
        admitted += decide(stages[s], global, "k", t0 + milliseconds(ms)).verdict == V::kAdmitted;
      }
    }
    CHECK(admitted == requests);
    CHECK(global.calls == requests / kBatch);

    FakeGlobal direct(kLimit, window);  // batch 1: every request is a call
    std::vector<TwoStage> single(kStages, TwoStage({.batch = 1}));
    for (int ms = 0; ms < 10'000; ms += 50)
      for (int s = 0; s < kStages; ++s) decide(single[s], direct, "k", t0 + milliseconds(ms));
    CHECK(direct.calls == requests);
    CHECK(direct.calls == kBatch * global.calls);
  }
}

TEST_CASE("TwoStageLimiter: one lease in flight per key across threads", "[two_stage]") {
  std::mutex mutex;
  std::map<std::string, int> inFlight;
  std::atomic<int> overlaps{0};
  std::atomic<uint64_t> calls{0};
  std::atomic<int> wrongRule{0};
  // No Catch2 assertion in here: it runs on the test's threads.
  auto lease = [&](const std::string& rule, const std::string& key, uint32_t want, milliseconds) {
    if (rule != "api") ++wrongRule;
    {
      std::lock_guard lock(mutex);
      if (++inFlight[key] > 1) ++overlaps;
    }
    ++calls;
    std::this_thread::sleep_for(1ms);  // the others pile up behind it meanwhile
    {
      std::lock_guard lock(mutex);
      --inFlight[key];
    }
    return RateLimitClient::Lease{want, 60s, decision(true, 1'000'000, 60s)};
  };
  TwoStageLimiter limiter(lease, {.batch = 25});
  constexpr int kThreads = 4, kEach = 250;
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        auto key = (i % 2 == 0) ? std::string("shared") : "own-" + std::to_string(t);
        if (limiter.admit("api", key).verdict == V::kAdmitted) ++admitted;
      }
    });
  for (auto& thread : threads) thread.join();
  CHECK(admitted == kThreads * kEach);
  CHECK(overlaps == 0);
  CHECK(wrongRule == 0);
  // 500 on the shared key, 125 on each own key: a call per 25 of them.
  CHECK(calls == 500 / 25 + kThreads * 5);
  CHECK(limiter.stats().leases == calls);
}

TEST_CASE("TwoStageLimiter: failures by kind", "[two_stage]") {
  auto now = t0;
  int calls = 0;
  StatusCode code = StatusCode::UNAVAILABLE;
  auto lease = [&](const std::string&, const std::string&, uint32_t,
                   milliseconds) -> RateLimitClient::Lease {
    ++calls;
    throw RpcError(code, "lease failed");
  };

  SECTION("the service down: the fail policy, held") {
    TwoStageLimiter closed(lease, {.failureHold = 1s}, [&] { return now; });
    auto a = closed.admit("api", "k");
    CHECK(a.verdict == V::kDenied);
    CHECK(a.failed);
    CHECK(closed.admit("api", "k").verdict == V::kDenied);
    CHECK(calls == 1);
    now += 1s;
    CHECK(closed.admit("api", "k").verdict == V::kDenied);
    CHECK(calls == 2);

    code = StatusCode::DEADLINE_EXCEEDED;
    TwoStageLimiter open(lease, {.failOpen = true}, [&] { return now; });
    CHECK(open.admit("api", "k").verdict == V::kAdmitted);
    CHECK(open.stats().failedOpen == 1);
  }
  SECTION("the caller's error (an unknown rule) is thrown, and nothing is held") {
    code = StatusCode::NOT_FOUND;
    TwoStageLimiter limiter(lease, {}, [&] { return now; });
    CHECK_THROWS_AS(limiter.admit("nope", "k"), RpcError);
    CHECK_THROWS_AS(limiter.admit("nope", "k"), RpcError);
    CHECK(calls == 2);
    CHECK(limiter.stats().leaseFailures == 0);
  }
}
