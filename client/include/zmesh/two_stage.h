// Two-stage rate limiting: a local stage in each client admits requests on
// tokens leased in batches from the global rate limiter (RateLimit.lease), so
// a hot key costs the service one call per `batch` admissions, not one each.
//
// How far the total can go over the limit. The service counts a leased token
// as taken when it grants it, and a local stage admits only what it was
// granted: every admission is paid for out of the global limit. What a stage
// adds is delay: a token granted late in one window may be spent in the next
// (until the lease ends), while the service counted it in the first. A stage
// holds one lease's tokens per key at a time (a new lease replaces what is
// left of the old one, never adds to it) and a lease lasts at most the rule's
// window (the service cuts its ttl to the window and to lease_max). So over
// any window N stages admit at most limit + N x batch (x the cost, where one
// request costs more than a batch): the limit, plus what each stage carried
// over from before the window began. Pick `batch` against that bound: small
// for small limits.
//
// Unused tokens are never given back: they lapse when the lease ends. A give-
// back could land after the window it belongs to and credit the wrong one; a
// lapse only under-admits, and keeps the service the one source of truth.
//
// Failing open (admitting while the service cannot be asked) is outside the
// bound above by definition; failing closed (the default) is not.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "zmesh/client.h"

namespace zmesh {

struct TwoStageOptions {
  uint32_t batch = 10;  // tokens one lease asks for (at least the request's cost)
  // The lease length asked for; 0: the service's lease_max. The service may cut it.
  std::chrono::milliseconds leaseTtl{0};
  // While the service cannot be asked: admit (true) or deny (false, the default).
  bool failOpen = false;
  // After a failed lease, the key is decided by failOpen this long without asking
  // again, so a service that is down is not asked once per request.
  std::chrono::milliseconds failureHold{1000};
  // Keys tracked at once. A new key beyond it is not tracked: each of its
  // requests asks the service for exactly its cost (counted: keysOverflow).
  size_t maxKeys = 10000;
};

// The local stage's state, pure: no I/O, no clock of its own (`now` is passed
// in), not thread-safe (one owner; TwoStageLimiter below adds the lock).
//
// The caller's protocol, per request:
//   admit()        kAdmitted / kDenied: answered locally, done.
//                  kLease: ask RateLimit.lease for `want`, then report the answer
//                  with leased() or the failure with leaseFailed(), which decide
//                  this request (or leaseCancelled()) — exactly one, always: until
//                  then the key's other requests get kWait.
//                  kWait: a lease for this key is in flight: admit() again once it
//                  is reported.
class TwoStage {
 public:
  using Clock = std::chrono::steady_clock;

  enum class Verdict : uint8_t { kAdmitted, kDenied, kLease, kWait };
  struct Admission {
    Verdict verdict = Verdict::kDenied;
    uint32_t want = 0;  // kLease: the tokens to ask for
    // kDenied: until the same cost may pass (0: unknown, or never: see reason).
    std::chrono::milliseconds retryAfter{0};
    bool failed = false;  // decided by failOpen: the service could not be asked
    // What the service said last about the key (RateLimit-Policy / RateLimit
    // headers); limit 0 when it has not said anything yet.
    uint64_t limit = 0;
    std::chrono::milliseconds window{0};
    uint64_t remaining = 0;              // tokens this stage holds for the key, after this
    std::chrono::milliseconds reset{0};  // until the key is back to its full quota
    std::string reason;                  // denied for good (cost above the capacity), or refused
    bool refused = false;  // the service is out of room for keys: not this caller's quota
  };

  struct Stats {
    uint64_t admitted = 0;       // locally or on a lease's answer, fail-open included
    uint64_t denied = 0;         // fail-closed included
    uint64_t deniedLocally = 0;  // of denied: by a remembered denial, no call
    uint64_t leases = 0;         // kLease answers: calls the caller makes
    uint64_t leaseFailures = 0;  // leaseFailed()
    uint64_t failedOpen = 0;     // admitted by failOpen
    uint64_t failedClosed = 0;   // denied by !failOpen
    uint64_t tokensLeased = 0;
    uint64_t tokensLapsed = 0;  // leased, never used: the lease ended or was replaced
    uint64_t keys = 0;          // tracked now
    uint64_t keysDropped = 0;   // expired entries dropped
    uint64_t keysOverflow = 0;  // requests of keys not tracked: maxKeys reached
  };

  explicit TwoStage(TwoStageOptions options = {});

  // `cost` 0 counts as 1.
  Admission admit(std::string_view rule, std::string_view key, uint32_t cost,
                  Clock::time_point now);
  // The answer to this request's kLease. Its cost comes out of the grant; the
  // rest is the key's until the lease ends (counted from when it was asked).
  Admission leased(std::string_view rule, std::string_view key, uint32_t cost,
                   const RateLimitClient::Lease& lease, Clock::time_point now);
  // This request's kLease could not be made or was not answered.
  Admission leaseFailed(std::string_view rule, std::string_view key, uint32_t cost,
                        Clock::time_point now);
  // This request's kLease was refused as the caller's own error (an unknown
  // rule): forgets it was in flight and decides nothing; the next admit() asks again.
  void leaseCancelled(std::string_view rule, std::string_view key);

  // Drops entries with nothing left to remember (runs by itself when full).
  size_t sweep(Clock::time_point now);
  Stats stats() const;
  const TwoStageOptions& options() const { return options_; }

 private:
  struct Entry {
    uint64_t tokens = 0;
    Clock::time_point expires{};      // the tokens are usable before this
    Clock::time_point deniedUntil{};  // admit() denies without asking until then
    Clock::time_point heldUntil{};    // a failure's verdict holds until then
    Clock::time_point leaseAsked{};
    bool leasing = false;
    // The service's last word on the key.
    uint64_t limit = 0;
    std::chrono::milliseconds window{0};
    Clock::time_point resetAt{};
    std::string reason;
  };
  Entry* find(std::string_view rule, std::string_view key);
  Entry* track(Clock::time_point now);  // the entry for scratch_, made if there is room
  // When the entry has nothing left to remember (unless a lease is in flight).
  static Clock::time_point droppableAt(const Entry& e);
  void willBeDroppable(const Entry& e);
  Admission describe(const Entry& e, Verdict verdict, Clock::time_point now) const;
  Admission applyLease(Entry* e, uint32_t cost, const RateLimitClient::Lease& lease,
                       Clock::time_point now);

  TwoStageOptions options_;
  std::unordered_map<std::string, Entry> entries_;  // by rule '\0' key
  std::string scratch_;
  // No entry can be dropped before this (the last full sweep found none sooner):
  // a table full of live keys is not scanned for every new one.
  Clock::time_point nextDroppable_{};
  Stats stats_;
};

// The two stages for C++ callers: admit() answers locally or makes the lease
// call itself (synchronously, on the caller's thread). Thread-safe; one lease
// in flight per key, the key's other callers wait for it (bounded by the
// call's timeout) while other keys go on. Must not outlive the Mesh whose
// client it uses.
//
//   zmesh::TwoStageLimiter limiter{mesh.ratelimit(), {.batch = 20}};
//   if (limiter.admit("api", user).verdict != zmesh::TwoStage::Verdict::kAdmitted) …
class TwoStageLimiter {
 public:
  using Clock = TwoStage::Clock;
  // The global stage: RateLimitClient::lease's signature (a fake in tests).
  using LeaseFn = std::function<RateLimitClient::Lease(
      const std::string& rule, const std::string& key, uint32_t want, std::chrono::milliseconds)>;

  explicit TwoStageLimiter(RateLimitClient client, TwoStageOptions options = {});
  TwoStageLimiter(LeaseFn lease, TwoStageOptions options,
                  std::function<Clock::time_point()> now = Clock::now);

  // kAdmitted or kDenied. A lease failing with UNAVAILABLE, DEADLINE_EXCEEDED or
  // INTERNAL is decided by failOpen; any other failure (an unknown rule, a rule
  // not keyed on one descriptor) is the caller's and is thrown as RpcError.
  TwoStage::Admission admit(const std::string& rule, const std::string& key, uint32_t cost = 1);
  TwoStage::Stats stats() const;

 private:
  LeaseFn lease_;
  std::function<Clock::time_point()> now_;
  mutable std::mutex mutex_;
  std::condition_variable leaseDone_;
  TwoStage core_;
};

}  // namespace zmesh
