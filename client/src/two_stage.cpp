#include "zmesh/two_stage.h"

#include <algorithm>
#include <optional>

namespace zmesh {

namespace {

using std::chrono::milliseconds;

// Rounded up: a caller that waits this long must not be early.
milliseconds ceilMs(TwoStage::Clock::duration d) {
  return d.count() <= 0 ? milliseconds(0) : std::chrono::ceil<milliseconds>(d);
}

// `now + d`, with d capped: the service saturates a wait it cannot express
// (a huge burst refilled at a tiny rate) near INT64_MAX nanoseconds, which
// added to a time point would overflow.
TwoStage::Clock::time_point later(TwoStage::Clock::time_point now, milliseconds d) {
  constexpr milliseconds kFar = std::chrono::hours(24 * 3660);  // ten years
  return now + std::min(d, kFar);
}

}  // namespace

TwoStage::TwoStage(TwoStageOptions options) : options_(std::move(options)) {
  options_.batch = std::max<uint32_t>(options_.batch, 1);
}

TwoStage::Entry* TwoStage::find(std::string_view rule, std::string_view key) {
  scratch_.assign(rule);
  scratch_.push_back('\0');
  scratch_.append(key);
  auto it = entries_.find(scratch_);
  return it == entries_.end() ? nullptr : &it->second;
}

TwoStage::Clock::time_point TwoStage::droppableAt(const Entry& e) {
  return std::max({e.expires, e.deniedUntil, e.heldUntil});
}

void TwoStage::willBeDroppable(const Entry& e) {
  nextDroppable_ = std::min(nextDroppable_, droppableAt(e));
}

TwoStage::Entry* TwoStage::track(Clock::time_point now) {
  if (entries_.size() >= options_.maxKeys) {
    if (now < nextDroppable_) return nullptr;
    sweep(now);
    if (entries_.size() >= options_.maxKeys) return nullptr;
  }
  ++stats_.keys;
  // Pointers to elements survive later inserts (a rehash moves no element).
  return &entries_.try_emplace(scratch_).first->second;
}

size_t TwoStage::sweep(Clock::time_point now) {
  size_t dropped = 0;
  auto next = Clock::time_point::max();
  for (auto it = entries_.begin(); it != entries_.end();) {
    const Entry& e = it->second;
    // An entry with a lease in flight reports when it can go once the lease is answered.
    if (!e.leasing && droppableAt(e) <= now) {
      stats_.tokensLapsed += e.tokens;
      it = entries_.erase(it);
      ++dropped;
      continue;
    }
    if (!e.leasing) next = std::min(next, droppableAt(e));
    ++it;
  }
  nextDroppable_ = next;
  stats_.keys -= dropped;
  stats_.keysDropped += dropped;
  return dropped;
}

TwoStage::Admission TwoStage::describe(const Entry& e, Verdict verdict,
                                       Clock::time_point now) const {
  Admission a;
  a.verdict = verdict;
  a.limit = e.limit;
  a.window = e.window;
  a.remaining = now < e.expires ? e.tokens : 0;
  a.reset = ceilMs(e.resetAt - now);
  a.reason = e.reason;
  return a;
}

TwoStage::Admission TwoStage::admit(std::string_view rule, std::string_view key, uint32_t cost,
                                    Clock::time_point now) {
  cost = std::max<uint32_t>(cost, 1);
  Entry* e = find(rule, key);
  if (!e) e = track(now);
  if (!e) {
    // Not tracked: this request alone asks the service, for its own cost.
    ++stats_.keysOverflow;
    ++stats_.leases;
    Admission a;
    a.verdict = Verdict::kLease;
    a.want = cost;
    return a;
  }
  if (e->leasing) return describe(*e, Verdict::kWait, now);
  if (now < e->heldUntil) {
    Admission a = describe(*e, options_.failOpen ? Verdict::kAdmitted : Verdict::kDenied, now);
    a.failed = true;
    if (options_.failOpen) {
      ++stats_.admitted;
      ++stats_.failedOpen;
    } else {
      ++stats_.denied;
      ++stats_.failedClosed;
      a.retryAfter = ceilMs(e->heldUntil - now);
    }
    return a;
  }
  if (e->tokens >= cost && now < e->expires) {
    e->tokens -= cost;
    ++stats_.admitted;
    return describe(*e, Verdict::kAdmitted, now);
  }
  if (now < e->deniedUntil) {
    ++stats_.denied;
    ++stats_.deniedLocally;
    Admission a = describe(*e, Verdict::kDenied, now);
    a.retryAfter = ceilMs(e->deniedUntil - now);
    return a;
  }
  e->leasing = true;
  e->leaseAsked = now;
  ++stats_.leases;
  Admission a = describe(*e, Verdict::kLease, now);
  a.want = std::max(options_.batch, cost);
  return a;
}

TwoStage::Admission TwoStage::applyLease(Entry* e, uint32_t cost,
                                         const RateLimitClient::Lease& lease,
                                         Clock::time_point now) {
  const auto& d = lease.decision;
  stats_.tokensLeased += lease.granted;
  const bool admitted = lease.granted >= cost;
  const uint64_t left = admitted ? lease.granted - cost : lease.granted;
  Admission a;
  if (e) {
    // What is left of the previous lease lapses: one lease's tokens per key at a time.
    stats_.tokensLapsed += e->tokens;
    e->tokens = left;
    // From when it was asked: the service's ttl started later, so this ends no later.
    e->expires = later(e->leaseAsked, lease.ttl);
    e->heldUntil = {};
    e->limit = d.limit;
    e->window = d.window;
    e->resetAt = later(now, d.reset);
    e->reason = d.reason;
    e->deniedUntil = !admitted && !d.allowed && d.retryAfter.count() > 0 ? later(now, d.retryAfter)
                                                                         : Clock::time_point{};
    willBeDroppable(*e);
    a = describe(*e, admitted ? Verdict::kAdmitted : Verdict::kDenied, now);
  } else {
    stats_.tokensLapsed += left;  // nowhere to keep them
    a.verdict = admitted ? Verdict::kAdmitted : Verdict::kDenied;
    a.limit = d.limit;
    a.window = d.window;
    a.reset = d.reset;
    a.reason = d.reason;
  }
  if (admitted) {
    ++stats_.admitted;
  } else {
    ++stats_.denied;
    a.retryAfter = d.allowed ? milliseconds(0) : d.retryAfter;
    a.refused = d.refused;
  }
  return a;
}

TwoStage::Admission TwoStage::leased(std::string_view rule, std::string_view key, uint32_t cost,
                                     const RateLimitClient::Lease& lease, Clock::time_point now) {
  cost = std::max<uint32_t>(cost, 1);
  Entry* e = find(rule, key);
  // No entry in flight: the request was not tracked (maxKeys) and leased for itself.
  if (e && !e->leasing) e = nullptr;
  if (e) e->leasing = false;
  return applyLease(e, cost, lease, now);
}

TwoStage::Admission TwoStage::leaseFailed(std::string_view rule, std::string_view key,
                                          uint32_t /*cost*/, Clock::time_point now) {
  ++stats_.leaseFailures;
  Entry* e = find(rule, key);
  Admission a;
  if (e) {
    e->leasing = false;
    e->heldUntil = later(now, options_.failureHold);
    willBeDroppable(*e);
    a = describe(*e, Verdict::kDenied, now);
  }
  a.failed = true;
  if (options_.failOpen) {
    a.verdict = Verdict::kAdmitted;
    ++stats_.admitted;
    ++stats_.failedOpen;
  } else {
    a.verdict = Verdict::kDenied;
    a.retryAfter = options_.failureHold;
    ++stats_.denied;
    ++stats_.failedClosed;
  }
  return a;
}

void TwoStage::leaseCancelled(std::string_view rule, std::string_view key) {
  if (Entry* e = find(rule, key)) {
    e->leasing = false;
    willBeDroppable(*e);
  }
}

TwoStage::Stats TwoStage::stats() const { return stats_; }

// ---- TwoStageLimiter ----

namespace {

// The service could not answer: the fail policy decides. Anything else is the caller's.
bool transient(StatusCode code) {
  return code == StatusCode::UNAVAILABLE || code == StatusCode::DEADLINE_EXCEEDED ||
         code == StatusCode::INTERNAL;
}

}  // namespace

TwoStageLimiter::TwoStageLimiter(RateLimitClient client, TwoStageOptions options)
    : TwoStageLimiter(
          [client = std::move(client)](const std::string& rule, const std::string& key,
                                       uint32_t want, std::chrono::milliseconds ttl) {
            return client.lease(rule, key, want, ttl);
          },
          std::move(options)) {}

TwoStageLimiter::TwoStageLimiter(LeaseFn lease, TwoStageOptions options,
                                 std::function<Clock::time_point()> now)
    : lease_(std::move(lease)), now_(std::move(now)), core_(std::move(options)) {}

TwoStage::Admission TwoStageLimiter::admit(const std::string& rule, const std::string& key,
                                           uint32_t cost) {
  std::unique_lock lock(mutex_);
  for (;;) {
    auto a = core_.admit(rule, key, cost, now_());
    if (a.verdict == TwoStage::Verdict::kWait) {
      leaseDone_.wait(lock);
      continue;
    }
    if (a.verdict != TwoStage::Verdict::kLease) return a;

    // The call is made unlocked: other keys go on; this key's callers wait.
    lock.unlock();
    std::optional<RateLimitClient::Lease> answer;
    std::optional<RpcError> error;
    try {
      answer = lease_(rule, key, a.want, core_.options().leaseTtl);
    } catch (const RpcError& e) {
      if (!transient(e.code())) error = e;
    } catch (...) {
      lock.lock();
      core_.leaseCancelled(rule, key);
      leaseDone_.notify_all();
      throw;
    }
    lock.lock();
    TwoStage::Admission result;
    if (error)
      core_.leaseCancelled(rule, key);
    else if (answer)
      result = core_.leased(rule, key, cost, *answer, now_());
    else
      result = core_.leaseFailed(rule, key, cost, now_());
    leaseDone_.notify_all();
    if (error) throw *error;
    return result;
  }
}

TwoStage::Stats TwoStageLimiter::stats() const {
  std::lock_guard lock(mutex_);
  return core_.stats();
}

}  // namespace zmesh
