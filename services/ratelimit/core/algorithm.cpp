#include "algorithm.h"

#include <algorithm>
#include <array>
#include <bit>
#include <limits>
#include <utility>

namespace zmesh::ratelimit {
namespace {

// Rates meet times in 128 bits: limit (<= 2^40) × a time (< 2^63) < 2^104, and
// capacity × window (< 2^55) < 2^95, so sums of a few such terms never wrap.
using Wide = unsigned __int128;
using SignedWide = __int128;

constexpr Nanos kForever = std::numeric_limits<Nanos>::max();

constexpr std::array<std::string_view, 6> kNames = {
    "token_bucket",       "leaky_bucket",           "fixed_window",
    "sliding_window_log", "sliding_window_counter", "gcra",
};

Wide ceilDiv(Wide a, Wide b) { return a / b + (a % b != 0 ? 1 : 0); }

// The wait from the caller's clock until `at`: a clock behind the state waits the difference
// too. Saturated rather than wrapped.
Nanos waitUntil(SignedWide at, Nanos now) {
  const SignedWide wait = at - now;
  if (wait <= 0) return 0;
  return wait >= kForever ? kForever : static_cast<Nanos>(wait);
}

}  // namespace

// sliding_window_log's admissions in a ring, oldest first. Admissions in the same nanosecond
// share one entry (they expire together). Each entry holds the total admitted before it, so
// a window's sum and the wait for room are binary searches, not walks.
struct KeyState::Log {
  struct Entry {
    Nanos at;
    uint64_t before;
  };
  std::vector<Entry> ring;  // size 0 or a power of two; live entries are [head, head + count)
  size_t head = 0;
  size_t count = 0;
  uint64_t total = 0;  // admitted since the log was last empty

  const Entry& operator[](size_t i) const { return ring[(head + i) & (ring.size() - 1)]; }
  // What entry i says was admitted before it; `count` stands for "after the newest".
  uint64_t before(size_t i) const { return i < count ? (*this)[i].before : total; }

  // The first live entry later than `t` (count when none).
  size_t firstAfter(Nanos t) const {
    size_t lo = 0, hi = count;
    while (lo < hi) {
      const size_t mid = lo + (hi - lo) / 2;
      if ((*this)[mid].at > t) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    return lo;
  }

  // The first i in [lo, count] with before(i) >= x; before() grows with i.
  size_t firstBeforeAtLeast(size_t lo, uint64_t x) const {
    size_t hi = count;
    while (lo < hi) {
      const size_t mid = lo + (hi - lo) / 2;
      if (before(mid) >= x) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    return lo;
  }

  void popFront() {
    head = (head + 1) & (ring.size() - 1);
    --count;
  }

  void pushBack(Entry entry) {
    if (count == ring.size()) reshape(std::max<size_t>(4, ring.size() * 2));
    ring[(head + count) & (ring.size() - 1)] = entry;
    ++count;
  }

  // A key whose log emptied after a burst gives the memory back (a quarter full or less).
  void fit() {
    if (ring.size() > 8 && count * 4 < ring.size()) reshape(std::bit_ceil(count * 2 + 2));
  }

  void reshape(size_t size) {
    std::vector<Entry> next(size);
    for (size_t i = 0; i < count; ++i) next[i] = (*this)[i];
    ring = std::move(next);
    head = 0;
  }
};

// Each rule reads the key at `eff`, the effective time: the caller's clock, or the state's
// last_ when the clock is behind it. The generic decide() below needs four things of a rule:
//   available(eff)  the largest cost that passes now (<= capacity; == capacity iff full);
//   fullAt(eff)     the instant the key is back to its full quota (called when not full);
//   passAt(eff, n)  the first instant >= eff at which cost n passes (n <= capacity);
//   take(eff, n)    admits n (n <= available) and moves last_ to eff.
// Only take() writes, so denials and cost-0 reads leave the state as it was.
struct KeyState::Rules {
  static Wide pair(const KeyState& s) { return Wide{s.a_} << 64 | s.b_; }
  static void setPair(KeyState& s, Wide v) {
    s.a_ = static_cast<uint64_t>(v >> 64);
    s.b_ = static_cast<uint64_t>(v);
  }
  static Wide elapsed(const KeyState& s, Nanos eff) { return static_cast<Wide>(eff - s.last_); }

  // Tokens are counted in units of 1/window, so `limit` per window refills exactly `limit`
  // units per nanosecond: no fraction of a token is ever rounded away. a_:b_ hold
  // kUntouched − tokens, so the all-zero state reads as more than any bucket holds: full.
  // An override keeps the tokens: a smaller burst cuts them, a larger one fills by refill.
  struct TokenBucket {
    static constexpr Wide kUntouched = Wide{1} << 127;

    static Wide tokens(const Quota& q, const KeyState& s, Nanos eff) {
      const Wide capacity = Wide{q.capacity()} * static_cast<Wide>(q.window);
      return std::min(capacity, kUntouched - pair(s) + Wide{q.limit} * elapsed(s, eff));
    }
    static uint64_t available(const Quota& q, const KeyState& s, Nanos eff) {
      return static_cast<uint64_t>(tokens(q, s, eff) / static_cast<Wide>(q.window));
    }
    static SignedWide fullAt(const Quota& q, const KeyState& s, Nanos eff) {
      const Wide capacity = Wide{q.capacity()} * static_cast<Wide>(q.window);
      return eff + static_cast<SignedWide>(ceilDiv(capacity - tokens(q, s, eff), q.limit));
    }
    static SignedWide passAt(const Quota& q, const KeyState& s, Nanos eff, uint64_t n) {
      const Wide need = Wide{n} * static_cast<Wide>(q.window);
      const Wide have = tokens(q, s, eff);
      if (have >= need) return eff;
      return eff + static_cast<SignedWide>(ceilDiv(need - have, q.limit));
    }
    static void take(const Quota& q, KeyState& s, Nanos eff, uint64_t n) {
      setPair(s, kUntouched - (tokens(q, s, eff) - Wide{n} * static_cast<Wide>(q.window)));
      s.last_ = eff;
    }
  };

  // A meter: a_:b_ hold the level in units of 1/window, draining `limit` units per
  // nanosecond. Zero is empty (full quota). An override keeps the level: a larger burst is
  // room at once, a smaller one may leave the level above it until it drains.
  struct LeakyBucket {
    static Wide level(const Quota& q, const KeyState& s, Nanos eff) {
      const Wide stored = pair(s);
      const Wide drained = Wide{q.limit} * elapsed(s, eff);
      return stored > drained ? stored - drained : 0;
    }
    static uint64_t available(const Quota& q, const KeyState& s, Nanos eff) {
      const Wide capacity = Wide{q.capacity()} * static_cast<Wide>(q.window);
      const Wide at = level(q, s, eff);
      return at >= capacity ? 0 : static_cast<uint64_t>((capacity - at) / q.window);
    }
    static SignedWide fullAt(const Quota& q, const KeyState& s, Nanos eff) {
      return eff + static_cast<SignedWide>(ceilDiv(level(q, s, eff), q.limit));
    }
    static SignedWide passAt(const Quota& q, const KeyState& s, Nanos eff, uint64_t n) {
      const Wide capacity = Wide{q.capacity()} * static_cast<Wide>(q.window);
      const Wide after = level(q, s, eff) + Wide{n} * static_cast<Wide>(q.window);
      if (after <= capacity) return eff;
      return eff + static_cast<SignedWide>(ceilDiv(after - capacity, q.limit));
    }
    static void take(const Quota& q, KeyState& s, Nanos eff, uint64_t n) {
      setPair(s, level(q, s, eff) + Wide{n} * static_cast<Wide>(q.window));
      s.last_ = eff;
    }
  };

  // Times in units of 1/limit ns, so the emission interval window/limit is exactly `window`
  // units. Cost n at t passes when max(TAT, t) + n·interval <= t + burst·interval; a pass
  // moves TAT to the left side. a_:b_ hold TAT − last_ in those units (zero: TAT in the
  // past, a full burst); relative, so an override keeps the debt in requests, not in time.
  struct Gcra {
    static Wide tat(const Quota& q, const KeyState& s) {
      return static_cast<Wide>(s.last_) * q.limit + pair(s);
    }
    static Wide scaled(const Quota& q, Nanos eff) { return static_cast<Wide>(eff) * q.limit; }
    static Wide tolerance(const Quota& q) {
      return Wide{q.capacity()} * static_cast<Wide>(q.window);
    }

    static uint64_t available(const Quota& q, const KeyState& s, Nanos eff) {
      const Wide now = scaled(q, eff);
      const Wide start = std::max(tat(q, s), now);
      const Wide end = now + tolerance(q);
      return start >= end ? 0 : static_cast<uint64_t>((end - start) / q.window);
    }
    static SignedWide fullAt(const Quota& q, const KeyState& s, Nanos) {
      return static_cast<SignedWide>(ceilDiv(tat(q, s), q.limit));
    }
    static SignedWide passAt(const Quota& q, const KeyState& s, Nanos eff, uint64_t n) {
      const Wide now = scaled(q, eff);
      const Wide cost = Wide{n} * static_cast<Wide>(q.window);
      const Wide t = tat(q, s);
      if (std::max(t, now) + cost <= now + tolerance(q)) return eff;
      // Not passing means TAT > now (n <= burst): wait until t·limit >= TAT + cost − tolerance.
      return static_cast<SignedWide>(ceilDiv(t + cost - tolerance(q), q.limit));
    }
    static void take(const Quota& q, KeyState& s, Nanos eff, uint64_t n) {
      const Wide now = scaled(q, eff);
      const Wide next = std::max(tat(q, s), now) + Wide{n} * static_cast<Wide>(q.window);
      setPair(s, next - now);
      s.last_ = eff;
    }
  };

  // b_ counts what was admitted in the window holding last_ (windows at multiples of window).
  struct FixedWindow {
    static uint64_t used(const Quota& q, const KeyState& s, Nanos eff) {
      return eff / q.window == s.last_ / q.window ? s.b_ : 0;
    }
    static SignedWide nextWindow(const Quota& q, Nanos eff) {
      return (static_cast<SignedWide>(eff / q.window) + 1) * q.window;
    }
    static uint64_t available(const Quota& q, const KeyState& s, Nanos eff) {
      const uint64_t u = used(q, s, eff);
      return q.limit > u ? q.limit - u : 0;
    }
    static SignedWide fullAt(const Quota& q, const KeyState&, Nanos eff) {
      return nextWindow(q, eff);
    }
    static SignedWide passAt(const Quota& q, const KeyState& s, Nanos eff, uint64_t n) {
      return used(q, s, eff) + n <= q.limit ? eff : nextWindow(q, eff);
    }
    static void take(const Quota& q, KeyState& s, Nanos eff, uint64_t n) {
      s.b_ = used(q, s, eff) + n;
      s.last_ = eff;
    }
  };

  // a_ counts the window before last_'s, b_ last_'s window. At elapsed e into window W the
  // estimate is prev·(W − e)/W + cur; cost n passes when prev·(W − e) + (cur + n)·W <= limit·W.
  struct SlidingWindowCounter {
    struct Counts {
      SignedWide start;  // of eff's window
      Nanos elapsed;     // into it
      uint64_t prev;
      uint64_t cur;
    };
    static Counts counts(const Quota& q, const KeyState& s, Nanos eff) {
      const Nanos window = eff / q.window;
      const Nanos last = s.last_ / q.window;
      Counts c{static_cast<SignedWide>(window) * q.window, eff % q.window, 0, 0};
      if (window == last) {
        c.prev = s.a_;
        c.cur = s.b_;
      } else if (window == last + 1) {
        c.prev = s.b_;
      }
      return c;
    }
    // limit·W − prev·(W − e) − cur·W: the room, in units of 1/W requests.
    static SignedWide room(const Quota& q, uint64_t prev, uint64_t cur, Nanos elapsed) {
      const SignedWide w = q.window;
      return SignedWide{q.limit} * w - SignedWide{prev} * (w - elapsed) - SignedWide{cur} * w;
    }
    // The least elapsed time in a window with these counts at which n passes, or -1 when it
    // does not pass before the window ends.
    static Nanos firstFit(const Quota& q, uint64_t prev, uint64_t cur, uint64_t n) {
      const SignedWide spare = SignedWide{q.limit} - cur - n;
      if (spare < 0) return -1;
      if (prev == 0) return 0;
      // prev·(W − e) <= spare·W  <=>  W − e <= floor(spare·W / prev).
      const SignedWide most = spare * q.window / prev;
      if (most == 0) return -1;
      return most >= q.window ? 0 : static_cast<Nanos>(q.window - most);
    }

    static uint64_t available(const Quota& q, const KeyState& s, Nanos eff) {
      const Counts c = counts(q, s, eff);
      const SignedWide r = room(q, c.prev, c.cur, c.elapsed);
      return r <= 0 ? 0 : static_cast<uint64_t>(r / q.window);
    }
    static SignedWide fullAt(const Quota& q, const KeyState& s, Nanos eff) {
      // The previous window weighs until the current one ends; the current one, a window more.
      const Counts c = counts(q, s, eff);
      return c.start + (c.cur > 0 ? 2 : 1) * SignedWide{q.window};
    }
    static SignedWide passAt(const Quota& q, const KeyState& s, Nanos eff, uint64_t n) {
      const Counts c = counts(q, s, eff);
      if (room(q, c.prev, c.cur, c.elapsed) >= SignedWide{n} * q.window) return eff;
      // The estimate only falls with time; try the rest of this window, then the next.
      if (const Nanos e = firstFit(q, c.prev, c.cur, n); e >= 0) return c.start + e;
      if (const Nanos e = firstFit(q, c.cur, 0, n); e >= 0) return c.start + q.window + e;
      return c.start + 2 * SignedWide{q.window};
    }
    static void take(const Quota& q, KeyState& s, Nanos eff, uint64_t n) {
      const Counts c = counts(q, s, eff);
      s.a_ = c.prev;
      s.b_ = c.cur + n;
      s.last_ = eff;
    }
  };

  // log_ holds the admissions not yet out of the window as of last_ (the newest one's time).
  struct SlidingWindowLog {
    // Admitted in (eff − window, eff], and the first entry in it.
    static std::pair<uint64_t, size_t> inWindow(const Quota& q, const KeyState& s, Nanos eff) {
      if (!s.log_) return {0, 0};
      const Log& log = *s.log_;
      const size_t first = log.firstAfter(eff - q.window);
      return {log.total - log.before(first), first};
    }
    static uint64_t available(const Quota& q, const KeyState& s, Nanos eff) {
      const uint64_t used = inWindow(q, s, eff).first;
      return q.limit > used ? q.limit - used : 0;
    }
    static SignedWide fullAt(const Quota& q, const KeyState& s, Nanos) {
      return SignedWide{s.last_} + q.window;  // when the newest entry leaves the window
    }
    static SignedWide passAt(const Quota& q, const KeyState& s, Nanos eff, uint64_t n) {
      const auto [used, first] = inWindow(q, s, eff);
      if (used + n <= q.limit) return eff;
      // Entries leave oldest first: wait until what is left after entry i − 1 has left,
      // total − before(i), is at most limit − n.
      const Log& log = *s.log_;
      const size_t i = log.firstBeforeAtLeast(first + 1, log.total - (q.limit - n));
      return SignedWide{log[i - 1].at} + q.window;
    }
    static void take(const Quota& q, KeyState& s, Nanos eff, uint64_t n) {
      if (!s.log_) s.log_ = std::make_unique<Log>();
      Log& log = *s.log_;
      // Out of this window means out of every later one: eff never goes back.
      while (log.count > 0 && log[0].at <= eff - q.window) log.popFront();
      if (log.count == 0) log.total = 0;
      if (log.count == 0 || log[log.count - 1].at != eff) log.pushBack({eff, log.total});
      log.total += n;
      log.fit();
      s.last_ = eff;
    }
  };

  template <class F>
  static auto dispatch(Algorithm algorithm, F&& f) {
    switch (algorithm) {
      case Algorithm::tokenBucket:
        return f(TokenBucket{});
      case Algorithm::leakyBucket:
        return f(LeakyBucket{});
      case Algorithm::fixedWindow:
        return f(FixedWindow{});
      case Algorithm::slidingWindowLog:
        return f(SlidingWindowLog{});
      case Algorithm::slidingWindowCounter:
        return f(SlidingWindowCounter{});
      case Algorithm::gcra:
        return f(Gcra{});
    }
    return f(TokenBucket{});  // Unreachable for a valid quota.
  }

  static Nanos effective(const KeyState& s, Nanos now) { return std::max(now, s.last_); }

  template <class Rule>
  static Nanos resetOf(const Quota& q, const KeyState& s, Nanos eff, Nanos now, uint64_t left) {
    return left >= q.capacity() ? 0 : waitUntil(Rule::fullAt(q, s, eff), now);
  }

  template <class Rule>
  static Decision decide(const Quota& q, KeyState& s, uint64_t cost, Nanos now) {
    const Nanos eff = effective(s, now);
    Decision d;
    d.limit = q.capacity();
    const uint64_t before = Rule::available(q, s, eff);
    d.remaining = before;
    if (cost > d.limit) {
      d.impossible = true;
      d.reset = resetOf<Rule>(q, s, eff, now, before);
      return d;
    }
    // Cost 0 asks what a cost-1 check would see, without taking it.
    const uint64_t need = std::max<uint64_t>(cost, 1);
    if (need > before) {
      d.reset = resetOf<Rule>(q, s, eff, now, before);
      d.retryAfter = waitUntil(Rule::passAt(q, s, eff, need), now);
      return d;
    }
    d.allowed = true;
    if (cost > 0) {
      Rule::take(q, s, eff, cost);
      d.remaining = Rule::available(q, s, eff);
    }
    d.reset = resetOf<Rule>(q, s, eff, now, d.remaining);
    return d;
  }
};

std::string_view toString(Algorithm a) {
  const auto i = static_cast<size_t>(a);
  return i < kNames.size() ? kNames[i] : "unknown";
}

std::optional<Algorithm> parseAlgorithm(std::string_view name) {
  for (size_t i = 0; i < kNames.size(); ++i) {
    if (kNames[i] == name) return static_cast<Algorithm>(i);
  }
  return std::nullopt;
}

uint64_t Quota::capacity() const {
  switch (algorithm) {
    case Algorithm::tokenBucket:
    case Algorithm::leakyBucket:
    case Algorithm::gcra:
      return burst != 0 ? burst : limit;
    case Algorithm::fixedWindow:
    case Algorithm::slidingWindowLog:
    case Algorithm::slidingWindowCounter:
      break;
  }
  return limit;
}

std::optional<std::string> validate(const Quota& quota) {
  if (toString(quota.algorithm) == "unknown") {
    return "algorithm " + std::to_string(static_cast<unsigned>(quota.algorithm)) + " is unknown";
  }
  // The log keeps up to `limit` entries per key, so its limit is capped lower.
  const uint64_t maxLimit =
      quota.algorithm == Algorithm::slidingWindowLog ? kMaxLogLimit : kMaxLimit;
  if (quota.limit < 1 || quota.limit > maxLimit) {
    return "limit " + std::to_string(quota.limit) + " is out of range; must be 1.." +
           std::to_string(maxLimit) + " for " + std::string(toString(quota.algorithm));
  }
  if (quota.window < kMinWindow || quota.window > kMaxWindow) {
    return "window " + std::to_string(quota.window) + " ns is out of range; must be " +
           std::to_string(kMinWindow) + ".." + std::to_string(kMaxWindow) +
           " ns (1 ms to 366 days)";
  }
  if (quota.burst > kMaxLimit) {
    return "burst " + std::to_string(quota.burst) + " is out of range; must be 0.." +
           std::to_string(kMaxLimit) + " (0: the limit)";
  }
  return std::nullopt;
}

KeyState::KeyState() = default;

KeyState::KeyState(const KeyState& other)
    : last_(other.last_),
      a_(other.a_),
      b_(other.b_),
      log_(other.log_ ? std::make_unique<Log>(*other.log_) : nullptr) {}

KeyState& KeyState::operator=(const KeyState& other) {
  if (this != &other) *this = KeyState(other);
  return *this;
}

KeyState::KeyState(KeyState&&) noexcept = default;
KeyState& KeyState::operator=(KeyState&&) noexcept = default;
KeyState::~KeyState() = default;

size_t KeyState::heapBytes() const {
  return log_ ? sizeof(Log) + log_->ring.capacity() * sizeof(Log::Entry) : 0;
}

Decision decide(const Quota& quota, KeyState& state, uint64_t cost, Nanos now) {
  return KeyState::Rules::dispatch(quota.algorithm, [&](auto rule) {
    return KeyState::Rules::decide<decltype(rule)>(quota, state, cost, now);
  });
}

uint64_t available(const Quota& quota, const KeyState& state, Nanos now) {
  const Nanos eff = KeyState::Rules::effective(state, now);
  return KeyState::Rules::dispatch(
      quota.algorithm, [&](auto rule) { return decltype(rule)::available(quota, state, eff); });
}

bool atDefault(const Quota& quota, const KeyState& state, Nanos now) {
  if (state.last_ == 0 && state.a_ == 0 && state.b_ == 0 && !state.log_) return true;
  // A state ahead of `now` would read later calls at its own time, a fresh one at theirs.
  if (now < state.last_) return false;
  return available(quota, state, now) == quota.capacity();
}

}  // namespace zmesh::ratelimit
