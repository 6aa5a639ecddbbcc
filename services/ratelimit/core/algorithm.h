// The rate-limit algorithms: one decision function over a per-key state.
//
// Pure: no clock, no sockets. Time is nanoseconds on any monotonic clock the
// caller injects. Every algorithm follows the same rules:
//  - a denied request consumes nothing (a client hammering a closed limit
//    does not push its own reopening further away);
//  - cost 0 reads the state without changing it (allowed when the key has
//    any quota left, with the same limit/remaining/reset a cost-1 check would
//    see before consuming);
//  - cost above the key's capacity can never pass: denied with
//    `impossible` set and retryAfter 0, never an endless retry-after;
//  - a clock going backwards is treated as standing still (no free quota);
//  - arithmetic is exact: integer, widened to 128 bits where rates meet times,
//    so large limits and long windows neither overflow nor round quota away.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace zmesh::ratelimit {

using Nanos = int64_t;
inline constexpr Nanos kNanosPerMs = 1'000'000;

enum class Algorithm : uint8_t {
  tokenBucket,           // capacity `burst`, refilled by `limit` per `window`, continuously
  leakyBucket,           // a meter: each request adds its cost to a level that drains by
                         // `limit` per `window`; admitted while the level stays <= `burst`
  fixedWindow,           // at most `limit` per window, windows aligned to multiples of `window`
  slidingWindowLog,      // at most `limit` in any trailing `window` (exact: a log of admissions)
  slidingWindowCounter,  // the previous window's count weighted by its overlap, plus this one's
  gcra,                  // generic cell rate: `limit` per `window` spaced evenly, `burst` at once
};

// Lower-case names as rules spell them: token_bucket, leaky_bucket, fixed_window,
// sliding_window_log, sliding_window_counter, gcra.
std::string_view toString(Algorithm a);
std::optional<Algorithm> parseAlgorithm(std::string_view name);

// What a rule grants one key.
struct Quota {
  Algorithm algorithm = Algorithm::tokenBucket;
  uint64_t limit = 1;  // admissions (units of cost) per window; for the buckets and GCRA, the
                       // refill / drain / emission rate is limit per window
  Nanos window = 1'000'000'000;
  uint64_t burst = 0;  // buckets' capacity and GCRA's burst; 0 means `limit`. Windows ignore it.

  // Most cost one request can ever be granted: burst (or limit) for the buckets and GCRA,
  // limit for the windows.
  uint64_t capacity() const;
  friend bool operator==(const Quota&, const Quota&) = default;
};

// Largest limit and burst a quota may have, and the window's bounds; the log of
// sliding_window_log holds at most `limit` entries per key, so its limit is capped lower.
inline constexpr uint64_t kMaxLimit = uint64_t{1} << 40;
inline constexpr uint64_t kMaxLogLimit = 100'000;
inline constexpr Nanos kMinWindow = kNanosPerMs;
inline constexpr Nanos kMaxWindow = Nanos{366} * 24 * 3600 * 1'000'000'000;

// Why the quota is unusable (limit 0, window out of range, …), or nullopt.
std::optional<std::string> validate(const Quota& quota);

struct Decision {
  bool allowed = false;
  bool impossible = false;  // cost > capacity(): never allowed, whatever the wait
  uint64_t limit = 0;       // capacity(): what RateLimit-Policy states
  uint64_t remaining = 0;   // cost that would pass right after this decision
  Nanos reset = 0;          // until the key is back to its full quota (0 when it is)
  Nanos retryAfter = 0;     // denied (not impossible): until the same cost would pass; else 0
  // reset and retryAfter count from the caller's `now` (a clock behind the state waits the
  // difference too) and saturate at INT64_MAX (a huge burst refilled at a tiny rate).
};

// One key's state under one quota. Default-constructed = a key never seen (full quota).
// 32 bytes; only sliding_window_log keeps more, on the heap.
class KeyState {
 public:
  KeyState();
  KeyState(const KeyState& other);
  KeyState& operator=(const KeyState& other);
  KeyState(KeyState&&) noexcept;
  KeyState& operator=(KeyState&&) noexcept;
  ~KeyState();

  // Heap bytes beyond sizeof(KeyState) (the log's entries), for memory accounting.
  size_t heapBytes() const;

 private:
  friend Decision decide(const Quota&, KeyState&, uint64_t, Nanos);
  friend uint64_t available(const Quota&, const KeyState&, Nanos);
  friend bool atDefault(const Quota&, const KeyState&, Nanos);
  friend struct KeyStateAccess;  // tests
  struct Log;                    // sliding_window_log's admissions (algorithm.cpp)
  struct Rules;  // the six algorithms, nested so that they reach these fields (algorithm.cpp)
  // Meaning depends on the algorithm (see Rules); all zero = default.
  Nanos last_ = 0;  // time of the latest admission: an earlier clock reads as this time
  uint64_t a_ = 0;
  uint64_t b_ = 0;
  std::unique_ptr<Log> log_;  // sliding_window_log only: admissions in the trailing window
};

// Takes `cost` if the quota allows it now and says what is left. `quota` must be
// valid (validate() == nullopt). A KeyState must always be used with the same
// algorithm and window; limit and burst may change between calls (an override). A denied
// or cost-0 call leaves the state as it was.
Decision decide(const Quota& quota, KeyState& state, uint64_t cost, Nanos now);

// The largest cost decide() would allow now (0 when none): what a lease may take.
uint64_t available(const Quota& quota, const KeyState& state, Nanos now);

// True when the state says no more than a fresh KeyState would (full bucket, empty
// windows): dropping the key now loses nothing (for calls at `now` or later, under this quota).
bool atDefault(const Quota& quota, const KeyState& state, Nanos now);

}  // namespace zmesh::ratelimit
