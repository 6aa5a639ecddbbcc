#include "zmesh/lease_keeper.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace zmesh {

namespace {

using std::chrono::milliseconds;
using Clock = LeaseKeeperCore::Clock;

// Answers that mean the lease (or session) is gone: asking again cannot help.
bool refusal(StatusCode code) {
  return code == StatusCode::CONFLICT || code == StatusCode::NOT_FOUND ||
         code == StatusCode::INVALID_ARGUMENT || code == StatusCode::FAILED_PRECONDITION ||
         code == StatusCode::PERMISSION_DENIED || code == StatusCode::UNAUTHENTICATED;
}

}  // namespace

// ---- LeaseKeeperCore ----

LeaseKeeperCore::LeaseKeeperCore(LeaseKeeperOptions options) : options_(std::move(options)) {
  options_.renewWhenLeft = std::clamp(options_.renewWhenLeft, 0.0, 1.0);
  options_.driftFactor = std::max(options_.driftFactor, 0.0);
  options_.driftFixed = std::max(options_.driftFixed, milliseconds(0));
  options_.retryEvery = std::max(options_.retryEvery, milliseconds(1));
  options_.callTimeout = std::max(options_.callTimeout, milliseconds(1));
  options_.renewThreads = std::clamp(options_.renewThreads, 1u, 16u);
}

Clock::duration LeaseKeeperCore::allowance(milliseconds ttl) const {
  using Tick = Clock::duration;
  // To the nearest tick (a float's error is no margin).
  const auto scaled =
      std::llround(static_cast<double>(
                       std::chrono::duration_cast<Tick>(std::max(ttl, milliseconds(0))).count()) *
                   options_.driftFactor);
  return Tick(static_cast<Tick::rep>(scaled)) + options_.driftFixed;
}

Clock::time_point LeaseKeeperCore::deadline(Clock::time_point expiry, milliseconds ttl) const {
  return expiry - allowance(ttl);
}

Clock::time_point LeaseKeeperCore::renewAt(Clock::time_point deadline,
                                           Clock::time_point now) const {
  if (deadline <= now) return now;
  const auto span = deadline - now;
  const auto wait =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, Clock::period>(
          static_cast<double>(span.count()) * (1.0 - options_.renewWhenLeft)));
  return now + std::clamp(wait, Clock::duration::zero(), span);
}

void LeaseKeeperCore::schedule(Entry& e, Clock::time_point now) {
  e.deadline = deadline(e.lease.expiry, e.lease.ttl);
  e.renewAt = renewAt(e.deadline, now);
}

std::optional<LeaseKeeperCore::Id> LeaseKeeperCore::keep(const Lease& lease,
                                                         Clock::time_point now) {
  if (leases_.size() >= options_.maxLeases) return std::nullopt;
  const Id id = nextId_++;
  Entry& e = leases_[id];
  e.lease = lease;
  schedule(e, now);
  return id;
}

std::optional<Lease> LeaseKeeperCore::forget(Id id) {
  auto it = leases_.find(id);
  if (it == leases_.end() || it->second.lost) return std::nullopt;
  Lease lease = std::move(it->second.lease);
  leases_.erase(it);
  return lease;
}

std::optional<Lease> LeaseKeeperCore::lease(Id id) const {
  auto it = leases_.find(id);
  if (it == leases_.end() || it->second.lost) return std::nullopt;
  return it->second.lease;
}

void LeaseKeeperCore::startSession(Clock::time_point now) {
  if (options_.session == 0) return;
  sessionAlive_ = true;
  session_ = Entry{};
  session_.lease.session = options_.session;
  session_.lease.ttl = options_.sessionTimeout;
  session_.lease.expiry = now + options_.sessionTimeout;
  session_.deadline = deadline(session_.lease.expiry, session_.lease.ttl);
  session_.renewAt = now;  // a first heartbeat at once
}

LeaseKeeperCore::Poll LeaseKeeperCore::poll(Clock::time_point now) {
  Poll p;
  if (sessionAlive_ && (session_.lost || now >= session_.deadline)) {
    sessionAlive_ = false;
    LeaseLoss why = session_.lost.value_or(LeaseLoss{});
    if (!session_.lost) why.message = "no heartbeat answered before the session's deadline";
    why.kind = LeaseLoss::Kind::kSessionEnded;
    for (auto& entry : leases_)
      if (!entry.second.lost && entry.second.lease.session == options_.session)
        entry.second.lost = why;
    session_.lost = why;  // leases kept later with this session are lost at once
  }
  for (auto it = leases_.begin(); it != leases_.end();) {
    Entry& e = it->second;
    if (!e.lost && options_.session != 0 && e.lease.session == options_.session && !sessionAlive_ &&
        session_.lost)
      e.lost = session_.lost;
    if (!e.lost && now >= e.deadline)
      e.lost = LeaseLoss{LeaseLoss::Kind::kDeadline, StatusCode::OK,
                         "no renewal answered before expiry minus the drift allowance"};
    if (e.lost) {
      p.lost.push_back({it->first, std::move(e.lease), std::move(*e.lost)});
      it = leases_.erase(it);
      continue;
    }
    p.wakeAt = std::min(p.wakeAt, e.inFlight ? e.deadline : std::min(e.renewAt, e.deadline));
    ++it;
  }
  if (sessionAlive_)
    p.wakeAt =
        std::min(p.wakeAt, session_.inFlight ? session_.deadline
                                             : std::min(session_.renewAt, session_.deadline));
  return p;
}

std::optional<LeaseKeeperCore::Renewal> LeaseKeeperCore::take(Clock::time_point now) {
  auto due = [now](const Entry& e) {
    return !e.inFlight && !e.lost && e.renewAt <= now && now < e.deadline;
  };
  Entry* best = nullptr;
  Id bestId = 0;
  if (sessionAlive_ && due(session_)) {
    best = &session_;
    bestId = kSession;
  }
  for (auto& [id, e] : leases_) {
    if (due(e) && (!best || e.renewAt < best->renewAt)) {
      best = &e;
      bestId = id;
    }
  }
  if (!best) return std::nullopt;
  best->inFlight = true;
  const auto timeout = std::clamp(std::chrono::ceil<milliseconds>(best->deadline - now),
                                  milliseconds(1), options_.callTimeout);
  return Renewal{bestId, best->lease, timeout};
}

Clock::time_point LeaseKeeperCore::nextDue() const {
  auto next = Clock::time_point::max();
  auto consider = [&next](const Entry& e) {
    if (!e.inFlight && !e.lost && e.renewAt < e.deadline) next = std::min(next, e.renewAt);
  };
  if (sessionAlive_) consider(session_);
  for (const auto& entry : leases_) consider(entry.second);
  return next;
}

LeaseKeeperCore::Entry* LeaseKeeperCore::answered(Id id) {
  Entry* e = nullptr;
  if (id == kSession) {
    e = sessionAlive_ ? &session_ : nullptr;
  } else {
    auto it = leases_.find(id);
    if (it != leases_.end()) e = &it->second;
  }
  // Forgotten, lost, or not taken: the answer is nobody's.
  if (!e || !e->inFlight || e->lost) return nullptr;
  e->inFlight = false;
  return e;
}

void LeaseKeeperCore::renewed(Id id, const Lease& renewedLease, Clock::time_point now) {
  Entry* e = id == kSession ? nullptr : answered(id);
  if (!e) return;
  if (now >= e->deadline) return;  // too late: poll() reports it lost
  e->lease.expiry = renewedLease.expiry;
  e->lease.ttl = renewedLease.ttl;
  schedule(*e, now);
}

void LeaseKeeperCore::heartbeated(Clock::time_point sent, milliseconds timeout,
                                  Clock::time_point now) {
  Entry* e = answered(kSession);
  if (!e) return;
  if (now >= e->deadline) return;  // too late: poll() reports it ended
  e->lease.expiry = sent + timeout;
  e->lease.ttl = timeout;
  schedule(*e, now);
}

void LeaseKeeperCore::refused(Id id, StatusCode code, std::string message) {
  Entry* e = answered(id);
  if (!e) return;
  e->lost = LeaseLoss{id == kSession ? LeaseLoss::Kind::kSessionEnded : LeaseLoss::Kind::kRefused,
                      code, std::move(message)};
}

void LeaseKeeperCore::failed(Id id, Clock::time_point now) {
  Entry* e = answered(id);
  if (!e) return;
  e->renewAt = now + options_.retryEvery;
}

// ---- LeaseKeeper ----

namespace {

LeaseKeeper::Calls callsOf(LockClient client) {
  LeaseKeeper::Calls calls;
  // A stub per call, for the call's own timeout (a LockClient is a channel
  // handle and an owner: cheap to make).
  calls.renew = [client](Lease& lease, milliseconds timeout) {
    CallSettings settings;
    settings.timeout = timeout;
    LockClient(client.channel(), settings, client.owner()).renew(lease, lease.ttl);
  };
  calls.heartbeat = [client](uint64_t session, milliseconds timeout) {
    CallSettings settings;
    settings.timeout = timeout;
    return LockClient(client.channel(), settings, client.owner()).heartbeat(session);
  };
  return calls;
}

// How long a thread waits for `at` on the injected clock: the real clock waits,
// woken early by any change; at most a second, so a clock that jumps is seen.
Clock::duration waitFor(Clock::time_point at, Clock::time_point now) {
  if (at <= now) return Clock::duration::zero();
  return std::min<Clock::duration>(at - now, std::chrono::seconds(1));
}

}  // namespace

LeaseKeeper::LeaseKeeper(LockClient client, OnLost onLost, LeaseKeeperOptions options)
    : LeaseKeeper(callsOf(std::move(client)), std::move(onLost), std::move(options)) {}

LeaseKeeper::LeaseKeeper(Calls calls, OnLost onLost, LeaseKeeperOptions options,
                         std::function<Clock::time_point()> now)
    : calls_(std::move(calls)),
      onLost_(std::move(onLost)),
      now_(std::move(now)),
      core_(std::move(options)) {
  core_.startSession(now_());
  threads_.emplace_back([this] { watch(); });
  for (unsigned i = 0; i < core_.options().renewThreads; ++i)
    threads_.emplace_back([this] { renewLoop(); });
}

LeaseKeeper::~LeaseKeeper() { stop(); }

void LeaseKeeper::stop() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
}

LeaseKeeper::Id LeaseKeeper::keep(const Lease& lease) {
  std::optional<Id> id;
  {
    std::lock_guard lock(mutex_);
    id = core_.keep(lease, now());
  }
  if (!id) throw std::length_error("LeaseKeeper: maxLeases leases kept already");
  changed_.notify_all();
  return *id;
}

std::optional<Lease> LeaseKeeper::forget(Id id) {
  std::lock_guard lock(mutex_);
  return core_.forget(id);
}

std::optional<Lease> LeaseKeeper::lease(Id id) const {
  std::lock_guard lock(mutex_);
  return core_.lease(id);
}

size_t LeaseKeeper::size() const {
  std::lock_guard lock(mutex_);
  return core_.size();
}

bool LeaseKeeper::sessionAlive() const {
  std::lock_guard lock(mutex_);
  return core_.sessionAlive();
}

void LeaseKeeper::watch() {
  std::unique_lock lock(mutex_);
  while (!stop_) {
    auto p = core_.poll(now());
    if (!p.lost.empty()) {
      lock.unlock();
      for (const auto& loss : p.lost) {
        try {
          if (onLost_) onLost_(loss.lease, loss.why);
        } catch (...) {
          // The holder's callback failing must not cost the other leases their reports.
        }
      }
      lock.lock();
      continue;
    }
    changed_.wait_for(lock, waitFor(p.wakeAt, now()));
  }
}

void LeaseKeeper::renewLoop() {
  std::unique_lock lock(mutex_);
  while (!stop_) {
    auto job = core_.take(now());
    if (!job) {
      changed_.wait_for(lock, waitFor(core_.nextDue(), now()));
      continue;
    }
    const uint64_t session = core_.options().session;
    lock.unlock();
    std::optional<RpcError> error;
    bool failed = false;
    Clock::time_point sent = now();
    milliseconds sessionTimeout{0};
    try {
      if (job->id == LeaseKeeperCore::kSession)
        sessionTimeout = calls_.heartbeat(session, job->timeout);
      else
        calls_.renew(job->lease, job->timeout);
    } catch (const RpcError& e) {
      error = e;
    } catch (const std::exception&) {
      failed = true;
    }
    lock.lock();
    if (error && refusal(error->code()))
      core_.refused(job->id, error->code(), error->detail());
    else if (error || failed)
      core_.failed(job->id, now());
    else if (job->id == LeaseKeeperCore::kSession)
      core_.heartbeated(sent, sessionTimeout, now());
    else
      core_.renewed(job->id, job->lease, now());
    changed_.notify_all();
  }
}

}  // namespace zmesh
