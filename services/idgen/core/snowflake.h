// Time-ordered 64-bit ids in the Snowflake layout:
//
//   bit 63      62 ............ 22   21 ...... 12   11 ...... 0
//   0           ms since epoch (41)  worker (10)    sequence (12)
//
// Every id one instance issues is strictly greater than the one before, across every call and
// across restore(). The class is pure: time comes in as `nowMs` (Unix ms) and durability is a
// handshake with the caller, like SequenceBook's:
//   request()         answers now, fails, or keeps the ticket (Pending);
//   wakeAt()          when to call poll() next (a timer, never a blocking wait);
//   poll()            completes waiting tickets, oldest first;
//   boundToPersist()  a time bound the caller must make durable;
//   boundPersisted()  it is durable: ids may carry timestamps below it.
// Call boundToPersist() after every request() and poll() and on a timer a few times per
// renewBeforeMs, so the durable bound stays ahead of the clock and no request waits on disk.
//
// What never goes backwards, even after a crash with the clock set back: an id is issued only
// with a timestamp below the durable bound, and restore(bound) forbids timestamps below it.
//
// Thread-safety: none; the owner (the service's loop thread) serialises all calls.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <optional>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "idgen_common.h"

namespace zmesh::idgen {

inline constexpr int kSequenceBits = 12;
inline constexpr int kWorkerBits = 10;
inline constexpr int kTimestampBits = 41;
inline constexpr int kWorkerShift = kSequenceBits;
inline constexpr int kTimestampShift = kSequenceBits + kWorkerBits;
inline constexpr uint32_t kIdsPerMs = uint32_t{1} << kSequenceBits;         // 4096
inline constexpr uint32_t kMaxWorkerId = (uint32_t{1} << kWorkerBits) - 1;  // 1023
inline constexpr int64_t kTimestampSpanMs = int64_t{1} << kTimestampBits;   // about 69.7 years
inline constexpr int64_t kDefaultEpochMs = 1735689600000;                   // 2025-01-01T00:00:00Z
inline constexpr int64_t kMsPerDay = 86'400'000;

struct SnowflakeOptions {
  int64_t epochMs = kDefaultEpochMs;  // Unix ms of timestamp 0.
  uint32_t workerId = 0;              // 0..1023; unique per running instance.
  int64_t maxBackwardMs = 5;          // Clock behind by at most this: wait; by more: unavailable.
  int64_t boundAheadMs = 2000;        // A new durable bound is now + this...
  int64_t renewBeforeMs = 1000;       // ...asked for once the bound is less than this ahead of now.

  // nullopt when usable: 0 <= epochMs <= INT64_MAX - 2^41, workerId <= 1023,
  // 0 <= maxBackwardMs <= 1 day, 1 <= renewBeforeMs < boundAheadMs <= 1 day.
  std::optional<Failure> validate() const;
};

struct Decoded {
  int64_t timestampMs = 0;  // Unix ms (the epoch added back).
  uint16_t worker = 0;
  uint16_t sequence = 0;

  friend bool operator==(const Decoded&, const Decoded&) = default;
};

struct SnowflakeStats {
  size_t waitingTickets = 0;
  uint64_t idsIssued = 0;
  uint64_t ticketsDeferred = 0;         // request() answered Pending.
  uint64_t clockBehindFailures = 0;     // Tickets failed because the clock was too far behind.
  std::optional<int64_t> lastIssuedMs;  // Timestamp (Unix ms) of the newest id.
  std::optional<int64_t> durableBoundMs;
  std::optional<int64_t> restoredBoundMs;
};

class Snowflake {
 public:
  using Ids = std::vector<uint64_t>;
  using Outcome = std::variant<Ids, Pending, Failure>;
  using Completed = std::vector<std::pair<uint64_t, std::variant<Ids, Failure>>>;

  // Throws std::invalid_argument when options.validate() fails (a configuration error that
  // main() reports before building the service).
  explicit Snowflake(SnowflakeOptions options = {});

  // `count` (1..10000) new ids, increasing. Ids carry the timestamp nowMs; at most 4096 fit in
  // one millisecond, so a large request takes what it can now and waits for the rest. Pending
  // while it waits (for the next ms, for the clock to catch up by at most maxBackwardMs, or
  // for a durable bound); it is then completed by poll() or dropped by cancel(). Failures:
  // invalidArgument (count, a ticket already waiting); unavailable (clock behind by more than
  // maxBackwardMs, with retryAfterMs; clock before the epoch); failedPrecondition (the 41
  // timestamp bits ran out).
  Outcome request(uint64_t ticket, uint32_t count, int64_t nowMs);

  // Completes what nowMs allows, oldest ticket first. When the clock is found behind by more
  // than maxBackwardMs, every waiting ticket fails (ids it already held are skipped, never
  // reissued).
  Completed poll(int64_t nowMs);

  // When poll() can make progress: nowMs if at once, the next ms when the sequence is used
  // up, the last issued (or restored) ms when the clock is catching up; nullopt when nothing
  // waits or only a durable bound is awaited (poll after boundPersisted()).
  std::optional<int64_t> wakeAt(int64_t nowMs) const;

  // Drops a waiting ticket (its deadline passed); false when it is not waiting.
  bool cancel(uint64_t ticket);

  // A bound (now + boundAheadMs) to make durable when the durable-or-pending bound is less
  // than now + renewBeforeMs; nullopt otherwise. Bounds handed out only grow.
  std::optional<int64_t> boundToPersist(int64_t nowMs);

  // A bound from boundToPersist() is durable. Call poll() next: tickets may be waiting on it.
  void boundPersisted(int64_t boundMs);

  // Recovery: the durable bound read back after a restart. No id will carry a timestamp below
  // it; until the clock reaches it, requests wait (behind by <= maxBackwardMs) or fail with
  // unavailable and retryAfterMs. A new bound must be persisted before ids are issued.
  void restore(int64_t boundMs);

  // Milliseconds until the 41 timestamp bits run out (0 once they have).
  int64_t msLeft(int64_t nowMs) const;
  // True when fewer than warnDays days are left: time to plan a new epoch (and worker range).
  bool epochRunningOut(int64_t nowMs, int64_t warnDays) const;

  // Splits an id made with epochMs. invalidArgument when its top bit is set (no Snowflake id
  // has it) or when the timestamp would overflow.
  static std::variant<Decoded, Failure> decode(uint64_t id, int64_t epochMs);

  SnowflakeStats stats() const;
  const SnowflakeOptions& options() const { return options_; }

 private:
  struct Waiter {
    uint64_t ticket;
    uint32_t count;
    Ids ids;  // Taken so far, in order.
  };
  // Whether an id can carry timestamp nowMs, and if not, why.
  struct Gate {
    enum Kind { ready, waitClock, waitSequence, waitDurable, fail } kind = ready;
    int64_t wakeAtMs = 0;  // For waitClock and waitSequence.
    std::optional<Failure> failure;
  };

  Gate gate(int64_t nowMs) const;
  void take(int64_t nowMs, uint32_t want, Ids& ids);

  static constexpr int64_t kNone = std::numeric_limits<int64_t>::min();

  SnowflakeOptions options_;
  int64_t lastMs_ = kNone;        // Timestamp of the newest id.
  uint32_t nextSeq_ = 0;          // Next sequence within lastMs_ (kIdsPerMs = used up).
  int64_t floorMs_ = kNone;       // Restored bound: no timestamp below it.
  int64_t durableBound_ = kNone;  // Timestamps must stay below it.
  int64_t askedBound_ = kNone;    // Highest bound handed out by boundToPersist().
  std::deque<Waiter> queue_;
  std::unordered_set<uint64_t> waiting_;
  uint64_t idsIssued_ = 0;
  uint64_t ticketsDeferred_ = 0;
  uint64_t clockBehindFailures_ = 0;
};

}  // namespace zmesh::idgen
