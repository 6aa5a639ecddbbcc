// Keeps leases alive: renews each well before it ends, and tells the holder
// when one is lost — without waiting for any event (lock.expired and
// lock.lost are at-most-once: one may never come).
//
// A lease is lost, exactly once, when
//   - a renewal is refused (CONFLICT: no longer the holder, or expired), or
//   - its local deadline — expiry − drift allowance — passes with no renewal
//     answered in time (the service unreachable, paused, or slow).
// Expiry is counted from when the last successful call was sent, so the
// service ends the lease no sooner; the allowance (ttl × driftFactor +
// driftFixed) covers clocks running at different rates. After onLost the
// holder must stop acting as one; a lost lease is never renewed again.
//
//   zmesh::LeaseKeeper keeper{mesh.locks(), [](const zmesh::Lease& l, const zmesh::LeaseLoss& why)
//   {
//     stopWriting(l.name);
//   }};
//   auto id = keeper.keep(lease);
//   …
//   if (auto current = keeper.forget(id)) locks.release(*current);
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "zmesh/client.h"

namespace zmesh {

struct LeaseKeeperOptions {
  // Renew once this fraction of the time to the deadline is left (counted
  // from the grant or the last renewal).
  double renewWhenLeft = 1.0 / 3;
  // Drift allowance = ttl × driftFactor + driftFixed: the lease counts as lost
  // this long before its expiry.
  double driftFactor = 0.01;
  std::chrono::milliseconds driftFixed = 5ms;
  // After a renewal that failed without a refusal (UNAVAILABLE, a timeout):
  // tried again this much later, until the deadline.
  std::chrono::milliseconds retryEvery = 100ms;
  // A renewal call times out at the lease's deadline, and after this at most.
  std::chrono::milliseconds callTimeout = 5s;
  // A session to heartbeat (0: none), with its timeout as openSession answered
  // it. When it ends (NOT_FOUND, or no heartbeat answered before its deadline)
  // every kept lease tied to it is lost.
  uint64_t session = 0;
  std::chrono::milliseconds sessionTimeout{0};
  size_t maxLeases = 1000;    // keep() refuses more
  unsigned renewThreads = 1;  // calls in flight at once (1..16)
};

// Why a lease was lost.
struct LeaseLoss {
  enum class Kind : uint8_t {
    kRefused,       // the service refused a renewal: `code`, `message`
    kDeadline,      // expiry − drift allowance passed without a renewal in time
    kSessionEnded,  // its session ended (refused, or its own deadline passed)
  };
  Kind kind = Kind::kDeadline;
  StatusCode code = StatusCode::OK;
  std::string message;
};

// The decisions, pure: no I/O, no threads, no clock of its own (`now` is
// passed in), not thread-safe (LeaseKeeper adds the lock and the threads).
//
// The caller's protocol: keep() leases; poll(now) for losses to report (each
// is returned once, and forgotten) and for when to poll again; take(now) the
// next renewal due, make the call, and report it with renewed(), refused()
// or failed() — then poll again.
class LeaseKeeperCore {
 public:
  using Clock = std::chrono::steady_clock;
  using Id = uint64_t;
  static constexpr Id kSession = 0;  // take()'s id for a heartbeat of the session

  explicit LeaseKeeperCore(LeaseKeeperOptions options = {});

  // ttl × driftFactor + driftFixed, at least 0.
  Clock::duration allowance(std::chrono::milliseconds ttl) const;
  // expiry − allowance(ttl): lost unless renewed before it.
  Clock::time_point deadline(Clock::time_point expiry, std::chrono::milliseconds ttl) const;
  // When to renew, scheduled at `now`: once renewWhenLeft of the time from
  // `now` to `deadline` is left (`now` when the deadline is not after it).
  // Counted from now rather than from expiry − ttl: the service may have cut
  // the ttl, and a lease may be kept a while after it was granted.
  Clock::time_point renewAt(Clock::time_point deadline, Clock::time_point now) const;

  // nullopt when maxLeases are kept. Ids start at 1.
  std::optional<Id> keep(const Lease& lease, Clock::time_point now);
  // Stops keeping it: its current state (expiry as last renewed), nullopt
  // when not kept (never, forgotten, or lost). A renewal in flight is ignored.
  std::optional<Lease> forget(Id id);
  std::optional<Lease> lease(Id id) const;
  size_t size() const { return leases_.size(); }
  bool sessionAlive() const { return sessionAlive_; }
  // Starts keeping options' session (if any), opened just before `now`: its
  // first heartbeat is due at once, its deadline counted from `now`.
  void startSession(Clock::time_point now);

  struct Loss {
    Id id;
    Lease lease;
    LeaseLoss why;
  };
  struct Poll {
    std::vector<Loss> lost;  // each reported once, then forgotten
    // When to poll (and take()) again at the latest; max() when nothing is kept.
    Clock::time_point wakeAt = Clock::time_point::max();
  };
  Poll poll(Clock::time_point now);

  // A renewal to make now: the lease with the earliest renewal due that is not
  // in flight (or the session's heartbeat, id kSession). nullopt: none is due.
  struct Renewal {
    Id id;
    Lease lease;                        // for a heartbeat: session only
    std::chrono::milliseconds timeout;  // until its deadline (at least 1 ms), at most callTimeout
  };
  std::optional<Renewal> take(Clock::time_point now);
  // When take() will next have something (max(): never, until something changes).
  Clock::time_point nextDue() const;

  // Reports of a take()n renewal, answered at `now`. `renewedLease` carries
  // the new expiry and ttl (LockClient::renew's); a heartbeat's session holds
  // until `sent` + the timeout answered. An answer at or after the deadline
  // comes too late: the lease is lost (kDeadline) all the same.
  void renewed(Id id, const Lease& renewedLease, Clock::time_point now);
  void heartbeated(Clock::time_point sent, std::chrono::milliseconds timeout,
                   Clock::time_point now);
  // Refused (lost at the next poll) or failed (tried again after retryEvery).
  void refused(Id id, StatusCode code, std::string message);
  void failed(Id id, Clock::time_point now);

  const LeaseKeeperOptions& options() const { return options_; }

 private:
  struct Entry {
    Lease lease;
    Clock::time_point renewAt;   // next renewal (or retry)
    Clock::time_point deadline;  // lost unless renewed before it
    bool inFlight = false;
    std::optional<LeaseLoss> lost;  // refused: reported at the next poll
  };
  void schedule(Entry& e, Clock::time_point now);
  // The entry whose take()n call was answered (its in-flight mark taken off);
  // nullptr when the answer is nobody's (forgotten, lost, never taken).
  Entry* answered(Id id);

  LeaseKeeperOptions options_;
  std::map<Id, Entry> leases_;
  Id nextId_ = 1;
  // The session, kept like a lease whose ttl is its timeout.
  bool sessionAlive_ = false;
  Entry session_;
};

// The keeper: its own threads renew the leases (renewThreads calls at once)
// and report losses (one watch thread). Thread-safe: any thread may keep(),
// forget() and read. onLost runs on the watch thread, one call at a time,
// never under the keeper's lock (it may call keep() or forget()), and must
// neither stop() nor destroy the keeper. A renewal that hangs delays no
// report: losses are decided by the clock, not by the call's return. The
// destructor stops and joins the threads (waiting for a renewal in flight, at
// most its call timeout); leases still kept then are neither renewed nor
// reported. Bounded: at most maxLeases leases, one call in flight per lease.
// Must not outlive the Mesh (or ClientThread) its LockClient comes from.
class LeaseKeeper {
 public:
  using Clock = LeaseKeeperCore::Clock;
  using Id = LeaseKeeperCore::Id;
  using OnLost = std::function<void(const Lease&, const LeaseLoss&)>;
  // The calls it makes (fakes in tests): renew `lease` (updating its expiry
  // and ttl, as LockClient::renew does) within `timeout`; heartbeat a session,
  // answering its timeout. Both throw RpcError on failure.
  struct Calls {
    std::function<void(Lease& lease, std::chrono::milliseconds timeout)> renew;
    std::function<std::chrono::milliseconds(uint64_t session, std::chrono::milliseconds timeout)>
        heartbeat;
  };

  LeaseKeeper(LockClient client, OnLost onLost, LeaseKeeperOptions options = {});
  LeaseKeeper(Calls calls, OnLost onLost, LeaseKeeperOptions options,
              std::function<Clock::time_point()> now = Clock::now);
  ~LeaseKeeper();
  LeaseKeeper(const LeaseKeeper&) = delete;
  LeaseKeeper& operator=(const LeaseKeeper&) = delete;

  // Starts keeping `lease` (renewed with its ttl); one already past its
  // deadline is reported lost at once. Throws std::length_error when
  // maxLeases are kept.
  Id keep(const Lease& lease);
  // Stops keeping it, without releasing it: its current state (the holder may
  // release it), nullopt when it is not kept (lost, or forgotten before).
  std::optional<Lease> forget(Id id);
  // Its current state (expiry as last renewed), nullopt when not kept.
  std::optional<Lease> lease(Id id) const;
  size_t size() const;
  bool sessionAlive() const;
  // Stops and joins the threads (the destructor does it too).
  void stop();

 private:
  void watch();
  void renewLoop();
  Clock::time_point now() const { return now_(); }

  Calls calls_;
  OnLost onLost_;
  std::function<Clock::time_point()> now_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  LeaseKeeperCore core_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace zmesh
