// Random request sequences against naive reference models, and the bounds each algorithm
// promises. Seeds are fixed: a failure names its run and step and replays exactly.
#include <algorithm>
#include <catch2/catch.hpp>
#include <limits>
#include <ostream>
#include <random>
#include <vector>

#include "algorithm.h"
#include "said.h"

using namespace zmesh::ratelimit;

namespace {

using Wide = __int128;

constexpr Nanos kMs = kNanosPerMs;
constexpr Nanos kSecond = 1000 * kMs;

bool bursts(Algorithm a) {
  return a == Algorithm::tokenBucket || a == Algorithm::leakyBucket || a == Algorithm::gcra;
}

// ---- reference models -------------------------------------------------------------------
// Each knows `last` (its latest admission: the documented clock floor), the largest cost it
// grants at a time t >= last, and how to admit. Nothing else: waits are searched for.

Wide gcd(Wide a, Wide b) {
  if (a < 0) a = -a;
  while (b != 0) {
    const Wide r = a % b;
    a = b;
    b = r;
  }
  return a;
}

struct Fraction {
  Wide num = 0;
  Wide den = 1;

  static Fraction of(Wide num, Wide den) {
    const Wide g = gcd(num, den);
    return Fraction{num / g, den / g};
  }
  Fraction operator+(const Fraction& o) const { return of(num * o.den + o.num * den, den * o.den); }
  Fraction operator-(const Fraction& o) const { return of(num * o.den - o.num * den, den * o.den); }
  bool operator<(const Fraction& o) const { return num * o.den < o.num * den; }
  Wide floor() const { return num >= 0 ? num / den : -((-num + den - 1) / den); }
};

// The textbook bucket: a fractional count of tokens, refilled by limit/window per ns up to
// the capacity; a request passes when its cost in whole tokens is there.
struct BucketModel {
  explicit BucketModel(const Quota& q) : quota(q), tokens(Fraction::of(q.capacity(), 1)) {}

  Fraction at(Nanos t) const {
    const Fraction full = Fraction::of(quota.capacity(), 1);
    const Fraction refilled = tokens + Fraction::of(Wide{quota.limit} * (t - last), quota.window);
    return refilled < full ? refilled : full;
  }
  uint64_t available(Nanos t) const { return static_cast<uint64_t>(at(t).floor()); }
  void admit(Nanos t, uint64_t cost) {
    tokens = at(t) - Fraction::of(cost, 1);
    last = t;
  }

  Quota quota;
  Fraction tokens;
  Nanos last = 0;
};

struct Admitted {
  Nanos at;
  uint64_t cost;
};

// Every admission ever made, in time order, recounted on every question.
struct ListModel {
  explicit ListModel(const Quota& q) : quota(q) {}

  // Admitted at times in [from, to].
  uint64_t admittedIn(Nanos from, Nanos to) const {
    uint64_t sum = 0;
    for (auto it = list.rbegin(); it != list.rend() && it->at >= from; ++it) {
      if (it->at <= to) sum += it->cost;
    }
    return sum;
  }
  uint64_t left(uint64_t used) const { return used >= quota.limit ? 0 : quota.limit - used; }
  void admit(Nanos t, uint64_t cost) {
    list.push_back({t, cost});
    last = t;
  }

  Quota quota;
  std::vector<Admitted> list;
  Nanos last = 0;
};

struct FixedWindowModel : ListModel {
  using ListModel::ListModel;
  uint64_t available(Nanos t) const {
    const Nanos start = t / quota.window * quota.window;
    return left(admittedIn(start, start + quota.window - 1));
  }
};

struct LogModel : ListModel {
  using ListModel::ListModel;
  uint64_t available(Nanos t) const { return left(admittedIn(t - quota.window + 1, t)); }
};

struct CounterModel : ListModel {
  using ListModel::ListModel;
  // The estimate prev·(W − e)/W + cur as a fraction; the largest n with estimate + n <= limit.
  uint64_t available(Nanos t) const {
    const Nanos w = quota.window;
    const Nanos start = t / w * w;
    const Wide prev = admittedIn(start - w, start - 1);
    const Wide cur = admittedIn(start, start + w - 1);
    const Fraction room =
        Fraction::of(Wide{quota.limit} - cur, 1) - Fraction::of(prev * (w - (t - start)), w);
    const Wide n = room.floor();
    return n < 0 ? 0 : static_cast<uint64_t>(n);
  }
};

// The decision the header describes, from a model: the clock floor, cost 0 as a cost-1
// check, impossible above capacity, and waits found by bisection over time (sound because
// what a key grants only grows while nothing is admitted).
template <class Model>
Said expect(Model& m, const Quota& q, uint64_t cost, Nanos now) {
  const Nanos eff = std::max(now, m.last);
  const uint64_t capacity = q.capacity();
  const Nanos horizon = static_cast<Nanos>(capacity + 2) * q.window;
  auto firstGranting = [&](uint64_t need) {
    Nanos lo = eff;
    Nanos hi = eff + horizon;
    REQUIRE(m.available(hi) >= need);
    if (m.available(lo) >= need) return lo;
    while (hi - lo > 1) {
      const Nanos mid = lo + (hi - lo) / 2;
      (m.available(mid) >= need ? hi : lo) = mid;
    }
    return hi;
  };
  auto resetFrom = [&](uint64_t left) {
    return left == capacity ? 0 : firstGranting(capacity) - now;
  };

  Said s;
  s.limit = capacity;
  s.remaining = m.available(eff);
  s.reset = resetFrom(s.remaining);
  if (cost > capacity) {
    s.impossible = true;
    return s;
  }
  const uint64_t need = std::max<uint64_t>(cost, 1);
  if (need > s.remaining) {
    s.retryAfter = firstGranting(need) - now;
    return s;
  }
  s.allowed = true;
  if (cost > 0) {
    m.admit(eff, cost);
    s.remaining = m.available(eff);
    s.reset = resetFrom(s.remaining);
  }
  return s;
}

// ---- traffic ----------------------------------------------------------------------------

Nanos pick(std::mt19937_64& rng, Nanos n) {
  return n <= 1 ? 0 : std::uniform_int_distribution<Nanos>(0, n - 1)(rng);
}

Quota randomQuota(std::mt19937_64& rng, Algorithm a) {
  const Nanos windows[] = {kMs, kMs + 1, 7 * kMs + 3, 10 * kMs, kSecond, 3 * kSecond + 1};
  Quota q;
  q.algorithm = a;
  q.window = windows[pick(rng, 6)];
  q.limit = 1 + static_cast<uint64_t>(pick(rng, 12));
  if (bursts(a) && pick(rng, 2) == 0) q.burst = 1 + static_cast<uint64_t>(pick(rng, 20));
  REQUIRE_FALSE(validate(q));
  return q;
}

// Calls at awkward times: the same ns, a few ns on, about one refill interval, onto a window
// edge (a ns before, at, after), windows or long idles later, and backwards a little or a lot.
// Costs: 0, 1, up to capacity, just above it, and the largest there is.
struct Traffic {
  Traffic(std::mt19937_64& r, const Quota& q, bool forwardOnly = false)
      : rng(r), quota(q), forward(forwardOnly) {}

  Nanos next(Nanos now) {
    const Nanos w = quota.window;
    const Nanos interval = std::max<Nanos>(1, w / static_cast<Nanos>(quota.limit));
    const Nanos dice = pick(rng, 100);
    if (dice < 15) return now;
    if (dice < 30) return now + 1 + pick(rng, 3);
    if (dice < 55) return now + pick(rng, 2 * interval);
    if (dice < 65) return (now / w + 1) * w - 1 + pick(rng, 3);
    if (dice < 75) return now + pick(rng, 3 * w);
    if (dice < 80) return now + 3 * w + pick(rng, 50 * w);
    if (forward || dice >= 95) return now + pick(rng, w / 10);
    if (dice < 92) return std::max<Nanos>(0, now - 1 - pick(rng, w));
    return pick(rng, now);
  }

  uint64_t cost() {
    const uint64_t capacity = quota.capacity();
    const Nanos dice = pick(rng, 100);
    if (dice < 12) return 0;
    if (dice < 60) return 1;
    if (dice < 85) return 1 + static_cast<uint64_t>(pick(rng, static_cast<Nanos>(capacity)));
    if (dice < 95) return capacity + 1 + static_cast<uint64_t>(pick(rng, 3));
    return dice < 98 ? capacity : kMaxCost;
  }

  std::mt19937_64& rng;
  Quota quota;
  bool forward;
};

struct Tally {
  int allowed = 0;
  int denied = 0;
  int impossible = 0;
  int reads = 0;
  void count(const Said& s, uint64_t cost) {
    if (s.allowed) ++allowed;
    if (!s.allowed && !s.impossible) ++denied;
    if (s.impossible) ++impossible;
    if (cost == 0) ++reads;
  }
  // Every kind of answer was exercised, so matching the model means something.
  void requireVariety(int steps) const {
    CHECK(allowed > steps / 10);
    CHECK(denied > steps / 20);
    CHECK(impossible > steps / 50);
    CHECK(reads > steps / 50);
  }
};

template <class Model>
void matchesModel(Algorithm a, int runs, int steps) {
  Tally tally;
  for (int run = 0; run < runs; ++run) {
    std::mt19937_64 rng(7919 * static_cast<uint64_t>(a) + static_cast<uint64_t>(run));
    const Quota q = randomQuota(rng, a);
    INFO("run " << run << ": " << toString(a) << " limit " << q.limit << " window " << q.window
                << " burst " << q.burst);
    Model model(q);
    KeyState state;
    Traffic traffic(rng, q);
    Nanos now = pick(rng, 10 * q.window);
    for (int step = 0; step < steps; ++step) {
      now = traffic.next(now);
      const uint64_t cost = traffic.cost();
      INFO("step " << step << " at " << now << " cost " << cost);
      REQUIRE(available(q, state, now) == model.available(std::max(now, model.last)));
      const Said want = expect(model, q, cost, now);
      REQUIRE(said(decide(q, state, cost, now)) == want);
      tally.count(want, cost);
    }
  }
  tally.requireVariety(runs * steps);
}

}  // namespace

TEST_CASE("property: token_bucket decides as an exact-fraction bucket", "[ratelimit][property]") {
  matchesModel<BucketModel>(Algorithm::tokenBucket, 30, 500);
}

TEST_CASE("property: leaky_bucket decides as an exact-fraction bucket", "[ratelimit][property]") {
  matchesModel<BucketModel>(Algorithm::leakyBucket, 30, 500);
}

TEST_CASE("property: gcra decides as an exact-fraction bucket", "[ratelimit][property]") {
  matchesModel<BucketModel>(Algorithm::gcra, 30, 500);
}

TEST_CASE("property: fixed_window decides as a recount of its window's admissions",
          "[ratelimit][property]") {
  matchesModel<FixedWindowModel>(Algorithm::fixedWindow, 30, 500);
}

TEST_CASE(
    "property: sliding_window_log decides as a recount of every admission in the "
    "trailing window",
    "[ratelimit][property]") {
  matchesModel<LogModel>(Algorithm::slidingWindowLog, 30, 500);
}

TEST_CASE(
    "property: sliding_window_counter decides as a fractional estimate over recounted "
    "windows",
    "[ratelimit][property]") {
  matchesModel<CounterModel>(Algorithm::slidingWindowCounter, 30, 500);
}

TEST_CASE("property: token_bucket and leaky_bucket (and gcra) are the same limiter",
          "[ratelimit][property]") {
  int differentQuotas = 0;
  for (int run = 0; run < 40; ++run) {
    std::mt19937_64 rng(4242 + static_cast<uint64_t>(run));
    Quota token = randomQuota(rng, Algorithm::tokenBucket);
    Quota leaky = token;
    leaky.algorithm = Algorithm::leakyBucket;
    Quota gcra = token;
    gcra.algorithm = Algorithm::gcra;
    INFO("run " << run << ": limit " << token.limit << " window " << token.window << " burst "
                << token.burst);
    differentQuotas += token.burst != 0 && token.burst != token.limit;
    KeyState tokenState, leakyState, gcraState;
    Traffic traffic(rng, token);
    Nanos now = pick(rng, 10 * token.window);
    for (int step = 0; step < 600; ++step) {
      now = traffic.next(now);
      const uint64_t cost = traffic.cost();
      INFO("step " << step << " at " << now << " cost " << cost);
      REQUIRE(available(token, tokenState, now) == available(leaky, leakyState, now));
      REQUIRE(available(token, tokenState, now) == available(gcra, gcraState, now));
      REQUIRE(atDefault(token, tokenState, now) == atDefault(leaky, leakyState, now));
      REQUIRE(atDefault(token, tokenState, now) == atDefault(gcra, gcraState, now));
      const Said t = said(decide(token, tokenState, cost, now));
      REQUIRE(said(decide(leaky, leakyState, cost, now)) == t);
      REQUIRE(said(decide(gcra, gcraState, cost, now)) == t);
    }
  }
  CHECK(differentQuotas > 5);
}

// The bounds, over every admission's effective time (the caller's clock, or the latest
// admission's when the clock is behind it):
//  - fixed_window: at most limit per aligned window, 2·limit in any window-long span;
//  - sliding_window_log: at most limit in any window-long span;
//  - sliding_window_counter: at most limit + floor(limit·(W − 2)/W) = 2·limit −
//    ceil(2·limit/W) in any window-long span (W in ns; a full previous window can only
//    still weigh inside the span if the span starts at most W − 2 ns into it);
//  - buckets and GCRA: at most capacity + floor(limit·d/W) at times within d ns of each other.
TEST_CASE("property: no span admits more than the algorithm's bound", "[ratelimit][property]") {
  for (Algorithm a : kAll) {
    INFO(toString(a));
    uint64_t mostOverLimit = 0;  // The most any window-long span admitted beyond the limit.
    for (int run = 0; run < 12; ++run) {
      std::mt19937_64 rng(31337 * static_cast<uint64_t>(a) + static_cast<uint64_t>(run));
      const Quota q = randomQuota(rng, a);
      INFO("run " << run << ": limit " << q.limit << " window " << q.window << " burst "
                  << q.burst);
      const Nanos w = q.window;
      const uint64_t capacity = q.capacity();
      const Nanos interval = std::max<Nanos>(1, w / static_cast<Nanos>(q.limit));
      // Eager traffic: mostly within an interval, some back-steps, costs up to capacity.
      KeyState state;
      std::vector<Admitted> admitted;
      Nanos now = pick(rng, 10 * w);
      Nanos floor = 0;
      for (int step = 0; step < 3000; ++step) {
        const Nanos dice = pick(rng, 100);
        if (dice < 30) {
        } else if (dice < 85) {
          now += pick(rng, interval);
        } else if (dice < 95) {
          now += pick(rng, w);
        } else {
          now = std::max<Nanos>(0, now - pick(rng, w));
        }
        const uint64_t cost =
            pick(rng, 3) == 0 ? 1 + static_cast<uint64_t>(pick(rng, static_cast<Nanos>(capacity)))
                              : 1;
        if (decide(q, state, cost, now).allowed) {
          floor = std::max(floor, now);
          admitted.push_back({floor, cost});
        }
      }
      REQUIRE(admitted.size() > 100);
      // Window-long spans (t − W, t], ending at each admission.
      std::vector<uint64_t> prefix{0};
      for (const Admitted& x : admitted) prefix.push_back(prefix.back() + x.cost);
      size_t first = 0;
      for (size_t j = 0; j < admitted.size(); ++j) {
        while (admitted[first].at <= admitted[j].at - w) ++first;
        const uint64_t inSpan = prefix[j + 1] - prefix[first];
        mostOverLimit = std::max(mostOverLimit, inSpan > q.limit ? inSpan - q.limit : 0);
        switch (a) {
          case Algorithm::fixedWindow:
            REQUIRE(inSpan <= 2 * q.limit);
            break;
          case Algorithm::slidingWindowLog:
            REQUIRE(inSpan <= q.limit);
            break;
          case Algorithm::slidingWindowCounter:
            REQUIRE(inSpan <=
                    q.limit + q.limit * static_cast<uint64_t>(w - 2) / static_cast<uint64_t>(w));
            break;
          default:
            REQUIRE(inSpan <=
                    capacity + q.limit * static_cast<uint64_t>(w - 1) / static_cast<uint64_t>(w));
        }
      }
      if (a == Algorithm::fixedWindow) {
        size_t start = 0;
        for (size_t j = 0; j < admitted.size(); ++j) {
          while (admitted[start].at / w != admitted[j].at / w) ++start;
          REQUIRE(prefix[j + 1] - prefix[start] <= q.limit);
        }
      }
      if (bursts(a)) {
        for (size_t i = 0; i < admitted.size(); ++i) {
          for (size_t j = i; j < admitted.size(); ++j) {
            const auto span = static_cast<uint64_t>(admitted[j].at - admitted[i].at);
            const uint64_t bound = capacity + static_cast<uint64_t>(Wide{q.limit} * span / w);
            if (prefix[j + 1] - prefix[i] > bound) {
              FAIL("admitted " << prefix[j + 1] - prefix[i] << " > " << bound << " in " << span
                               << " ns, from admission " << i << " to " << j);
            }
          }
        }
      }
    }
    // The log is exact; the other windows do let more than the limit through a span, which
    // is why their bounds are stated.
    if (a == Algorithm::slidingWindowLog) {
      CHECK(mostOverLimit == 0);
    } else if (!bursts(a)) {
      CHECK(mostOverLimit > 0);
    }
  }
}

TEST_CASE(
    "property: waiting exactly retryAfter passes, and exactly reset refills, a "
    "nanosecond less does not",
    "[ratelimit][property]") {
  for (Algorithm a : kAll) {
    INFO(toString(a));
    int denials = 0;
    for (int run = 0; run < 25; ++run) {
      std::mt19937_64 rng(99 * static_cast<uint64_t>(a) + static_cast<uint64_t>(run));
      const Quota q = randomQuota(rng, a);
      INFO("run " << run << ": limit " << q.limit << " window " << q.window << " burst "
                  << q.burst);
      KeyState state;
      Traffic traffic(rng, q);
      Nanos now = pick(rng, 10 * q.window);
      for (int step = 0; step < 400; ++step) {
        now = traffic.next(now);
        const uint64_t cost = traffic.cost();
        INFO("step " << step << " at " << now << " cost " << cost);
        const Decision d = decide(q, state, cost, now);
        if (!d.allowed && !d.impossible) {
          ++denials;
          REQUIRE(d.retryAfter > 0);
          KeyState early = state;
          KeyState onTime = state;
          REQUIRE_FALSE(decide(q, early, cost, now + d.retryAfter - 1).allowed);
          REQUIRE(decide(q, onTime, cost, now + d.retryAfter).allowed);
        } else {
          REQUIRE(d.retryAfter == 0);
        }
        REQUIRE((d.reset == 0) == (available(q, state, now) == q.capacity()));
        if (d.reset > 0) {
          REQUIRE(available(q, state, now + d.reset - 1) < q.capacity());
          REQUIRE(available(q, state, now + d.reset) == q.capacity());
        }
        REQUIRE(d.remaining == available(q, state, now));
      }
    }
    CHECK(denials > 500);
  }
}

TEST_CASE("property: dropping a key when atDefault says so changes no later decision",
          "[ratelimit][property]") {
  for (Algorithm a : kAll) {
    INFO(toString(a));
    int drops = 0;
    int kept = 0;
    for (int run = 0; run < 25; ++run) {
      std::mt19937_64 rng(555 * static_cast<uint64_t>(a) + static_cast<uint64_t>(run));
      const Quota q = randomQuota(rng, a);
      INFO("run " << run << ": limit " << q.limit << " window " << q.window << " burst "
                  << q.burst);
      KeyState whole;
      KeyState dropped;
      Traffic traffic(rng, q, /*forwardOnly=*/true);  // atDefault speaks for `now` or later
      Nanos now = pick(rng, 10 * q.window);
      for (int step = 0; step < 400; ++step) {
        now = traffic.next(now);
        const uint64_t cost = traffic.cost();
        INFO("step " << step << " at " << now << " cost " << cost);
        if (atDefault(q, dropped, now)) {
          dropped = KeyState{};
          ++drops;
        } else {
          // Not droppable: a fresh key would answer a cost-1 request differently.
          KeyState probe = dropped;
          KeyState fresh;
          REQUIRE(said(decide(q, probe, 1, now)) != said(decide(q, fresh, 1, now)));
          ++kept;
        }
        REQUIRE(said(decide(q, whole, cost, now)) == said(decide(q, dropped, cost, now)));
      }
    }
    CHECK(drops > 250);
    CHECK(kept > 250);
  }
}

TEST_CASE("property: limits changed under a key never grant more than the new capacity at once",
          "[ratelimit][property]") {
  for (Algorithm a : kAll) {
    INFO(toString(a));
    for (int run = 0; run < 20; ++run) {
      std::mt19937_64 rng(777 * static_cast<uint64_t>(a) + static_cast<uint64_t>(run));
      Quota q = randomQuota(rng, a);
      KeyState state;
      Traffic traffic(rng, q);
      Nanos now = pick(rng, 10 * q.window);
      for (int step = 0; step < 400; ++step) {
        if (pick(rng, 8) == 0) {
          q.limit = 1 + static_cast<uint64_t>(pick(rng, 12));
          q.burst = bursts(a) && pick(rng, 2) == 0 ? 1 + static_cast<uint64_t>(pick(rng, 20)) : 0;
          traffic.quota = q;
        }
        INFO("run " << run << " step " << step << ": limit " << q.limit << " burst " << q.burst
                    << " at " << now);
        now = traffic.next(now);
        REQUIRE(available(q, state, now) <= q.capacity());
        // Everything one instant grants, taken one by one, is within the capacity.
        KeyState copy = state;
        uint64_t granted = 0;
        while (granted <= q.capacity() && decide(q, copy, 1, now).allowed) ++granted;
        REQUIRE(granted <= q.capacity());
        REQUIRE(granted == available(q, state, now));
        const Decision d = decide(q, state, traffic.cost(), now);
        REQUIRE(d.remaining <= q.capacity());
      }
    }
  }
}
