#include "snowflake.h"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

namespace zmesh::idgen {
namespace {

constexpr int64_t kMaxEpochMs = std::numeric_limits<int64_t>::max() - kTimestampSpanMs;

// Times come from outside; arithmetic on them saturates instead of overflowing.
int64_t addSat(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) {
    return b > 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  }
  return r;
}

int64_t subSat(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_sub_overflow(a, b, &r)) {
    return b < 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  }
  return r;
}

Failure invalid(std::string message) { return Failure{Fail::invalidArgument, std::move(message)}; }

std::string ms(int64_t v) { return std::to_string(v) + " ms"; }

}  // namespace

std::optional<Failure> SnowflakeOptions::validate() const {
  if (epochMs < 0 || epochMs > kMaxEpochMs) {
    return invalid("epochMs " + std::to_string(epochMs) + " is out of range; must be 0.." +
                   std::to_string(kMaxEpochMs));
  }
  if (workerId > kMaxWorkerId) {
    return invalid("workerId " + std::to_string(workerId) + " is out of range; must be 0.." +
                   std::to_string(kMaxWorkerId));
  }
  if (maxBackwardMs < 0 || maxBackwardMs > kMsPerDay) {
    return invalid("maxBackwardMs " + std::to_string(maxBackwardMs) +
                   " is out of range; must be 0.." + std::to_string(kMsPerDay));
  }
  if (boundAheadMs < 2 || boundAheadMs > kMsPerDay) {
    return invalid("boundAheadMs " + std::to_string(boundAheadMs) +
                   " is out of range; must be 2.." + std::to_string(kMsPerDay));
  }
  // A bound renewed no earlier than it is granted would be asked for on every call.
  if (renewBeforeMs < 1 || renewBeforeMs >= boundAheadMs) {
    return invalid("renewBeforeMs " + std::to_string(renewBeforeMs) +
                   " is out of range; must be at least 1 and less than boundAheadMs (" +
                   std::to_string(boundAheadMs) + ")");
  }
  return std::nullopt;
}

Snowflake::Snowflake(SnowflakeOptions options) : options_(options) {
  if (auto failure = options_.validate()) throw std::invalid_argument(failure->message);
}

Snowflake::Outcome Snowflake::request(uint64_t ticket, uint32_t count, int64_t nowMs) {
  if (auto failure = validateCount(count)) return *std::move(failure);
  if (waiting_.contains(ticket)) {
    return invalid("ticket " + std::to_string(ticket) + " is already waiting");
  }
  Ids ids;
  // Tickets already waiting go first (FIFO); this one queues behind them untouched.
  if (queue_.empty()) {
    const Gate state = gate(nowMs);
    if (state.kind == Gate::fail) {
      if (state.failure->code == Fail::unavailable) ++clockBehindFailures_;
      return *state.failure;
    }
    ids.reserve(count);
    if (state.kind == Gate::ready) take(nowMs, count, ids);
    if (ids.size() == count) return ids;
  }
  ++ticketsDeferred_;
  queue_.push_back(Waiter{ticket, count, std::move(ids)});
  waiting_.insert(ticket);
  return Pending{};
}

Snowflake::Completed Snowflake::poll(int64_t nowMs) {
  Completed done;
  while (!queue_.empty()) {
    const Gate state = gate(nowMs);
    if (state.kind == Gate::fail) {
      // The same condition stops every ticket behind the head: fail them all now rather
      // than one per poll.
      for (Waiter& waiter : queue_) {
        if (waiter.count == 0) continue;  // cancelled
        if (state.failure->code == Fail::unavailable) ++clockBehindFailures_;
        done.emplace_back(waiter.ticket, *state.failure);
      }
      queue_.clear();
      waiting_.clear();
      break;
    }
    if (state.kind != Gate::ready) break;
    Waiter& head = queue_.front();
    take(nowMs, head.count - static_cast<uint32_t>(head.ids.size()), head.ids);
    if (head.ids.size() < head.count) continue;  // The gate now says what it waits for.
    done.emplace_back(head.ticket, std::move(head.ids));
    waiting_.erase(head.ticket);
    queue_.pop_front();
    while (!queue_.empty() && queue_.front().count == 0) queue_.pop_front();
  }
  return done;
}

std::optional<int64_t> Snowflake::wakeAt(int64_t nowMs) const {
  if (queue_.empty()) return std::nullopt;
  const Gate state = gate(nowMs);
  switch (state.kind) {
    case Gate::ready:
    case Gate::fail:
      return nowMs;
    case Gate::waitClock:
    case Gate::waitSequence:
      return state.wakeAtMs;
    case Gate::waitDurable:
      return std::nullopt;
  }
  return nowMs;
}

bool Snowflake::cancel(uint64_t ticket) {
  if (waiting_.erase(ticket) == 0) return false;
  // Ids the ticket already held are dropped: a gap, never a reuse. The waiter
  // is marked (count 0), not erased, so cancelling many at once (a burst of
  // deadlines) is not quadratic; the ends are trimmed so that an empty queue
  // still means no live waiter.
  findWaiter(queue_, ticket)->count = 0;
  while (!queue_.empty() && queue_.front().count == 0) queue_.pop_front();
  while (!queue_.empty() && queue_.back().count == 0) queue_.pop_back();
  return true;
}

std::optional<int64_t> Snowflake::boundToPersist(int64_t nowMs) {
  const int64_t have = std::max(durableBound_, askedBound_);
  if (have >= addSat(nowMs, options_.renewBeforeMs)) return std::nullopt;
  // Greater than `have` because renewBeforeMs < boundAheadMs: bounds in the log only grow,
  // so replaying it (last record wins) never lowers the bound.
  askedBound_ = addSat(nowMs, options_.boundAheadMs);
  return askedBound_;
}

void Snowflake::boundPersisted(int64_t boundMs) {
  durableBound_ = std::max(durableBound_, boundMs);
}

void Snowflake::restore(int64_t boundMs) {
  // Ids below the bound may have been issued before the crash: never go below it again.
  floorMs_ = std::max(floorMs_, boundMs);
  // The bound was durable, so asking for a new one starts from it, not from a stale clock.
  durableBound_ = std::max(durableBound_, boundMs);
}

int64_t Snowflake::msLeft(int64_t nowMs) const {
  return std::max<int64_t>(0, subSat(options_.epochMs + kTimestampSpanMs, nowMs));
}

bool Snowflake::epochRunningOut(int64_t nowMs, int64_t warnDays) const {
  int64_t warnMs;
  if (__builtin_mul_overflow(warnDays, kMsPerDay, &warnMs)) {
    warnMs = warnDays > 0 ? std::numeric_limits<int64_t>::max() : 0;
  }
  return msLeft(nowMs) < warnMs;
}

std::variant<Decoded, Failure> Snowflake::decode(uint64_t id, int64_t epochMs) {
  if (id >> 63 != 0) {
    return invalid("id " + std::to_string(id) + " has its top bit set; not a Snowflake id");
  }
  if (epochMs < 0 || epochMs > kMaxEpochMs) {
    return invalid("epochMs " + std::to_string(epochMs) + " is out of range; must be 0.." +
                   std::to_string(kMaxEpochMs));
  }
  return Decoded{
      epochMs + static_cast<int64_t>(id >> kTimestampShift),
      static_cast<uint16_t>((id >> kWorkerShift) & kMaxWorkerId),
      static_cast<uint16_t>(id & (kIdsPerMs - 1)),
  };
}

SnowflakeStats Snowflake::stats() const {
  auto known = [](int64_t v) { return v == kNone ? std::nullopt : std::optional<int64_t>(v); };
  return SnowflakeStats{waiting_.size(),      idsIssued_,     ticketsDeferred_,
                        clockBehindFailures_, known(lastMs_), known(durableBound_),
                        known(floorMs_)};
}

Snowflake::Gate Snowflake::gate(int64_t nowMs) const {
  // The clock must not be behind the newest id, nor behind a bound restored after a restart.
  const int64_t notBefore = std::max(lastMs_, floorMs_);
  if (nowMs < notBefore) {
    // The first ms an id can carry once the clock is back: past the newest id's ms when its
    // sequence is used up.
    const int64_t readyAt =
        lastMs_ >= floorMs_ && nextSeq_ >= kIdsPerMs ? addSat(lastMs_, 1) : notBefore;
    const int64_t behind = subSat(notBefore, nowMs);
    const int64_t retryAfter = subSat(readyAt, nowMs);
    if (behind <= options_.maxBackwardMs) return Gate{Gate::waitClock, readyAt, std::nullopt};
    const std::string what =
        floorMs_ > lastMs_ ? "behind the time bound persisted before the restart (" +
                                 std::to_string(floorMs_) + "), below which no id may be issued"
                           : "behind the timestamp of the last issued id (" +
                                 std::to_string(lastMs_) + "): the clock moved backwards";
    return Gate{
        Gate::fail, 0,
        Failure{Fail::unavailable,
                "clock is " + ms(behind) + " " + what + "; that is more than the " +
                    ms(options_.maxBackwardMs) + " waited out; retry after " + ms(retryAfter),
                retryAfter}};
  }
  if (nowMs < options_.epochMs) {
    return Gate{
        Gate::fail, 0,
        Failure{Fail::unavailable, "clock (" + std::to_string(nowMs) + ") is before the epoch (" +
                                       std::to_string(options_.epochMs) + ")"}};
  }
  if (nowMs - options_.epochMs >= kTimestampSpanMs) {
    return Gate{
        Gate::fail, 0,
        Failure{Fail::failedPrecondition, "the 41-bit timestamp ran out at " +
                                              std::to_string(options_.epochMs + kTimestampSpanMs) +
                                              " (epoch " + std::to_string(options_.epochMs) +
                                              "); ids need a new epoch and worker range"}};
  }
  if (nowMs == lastMs_ && nextSeq_ >= kIdsPerMs) {
    return Gate{Gate::waitSequence, addSat(nowMs, 1), std::nullopt};
  }
  if (nowMs >= durableBound_) return Gate{Gate::waitDurable, 0, std::nullopt};
  return Gate{};
}

void Snowflake::take(int64_t nowMs, uint32_t want, Ids& ids) {
  if (nowMs > lastMs_) {
    lastMs_ = nowMs;
    nextSeq_ = 0;
  }
  const uint64_t base = static_cast<uint64_t>(nowMs - options_.epochMs) << kTimestampShift |
                        uint64_t{options_.workerId} << kWorkerShift;
  const uint32_t n = std::min(want, kIdsPerMs - nextSeq_);
  for (uint32_t i = 0; i < n; ++i) ids.push_back(base | nextSeq_++);
  idsIssued_ += n;
}

}  // namespace zmesh::idgen
