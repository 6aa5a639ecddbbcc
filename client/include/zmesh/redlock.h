// Redlock over N independent zmesh-lock services (the algorithm Redis
// describes for N independent Redis masters): a lock is held while a majority
// of the nodes hold it, and only for the validity left after acquiring.
//
//   zmesh::Redlock redlock{{thread.channel(a), thread.channel(b), thread.channel(c)}};
//   if (auto lease = redlock.acquire("report", 10s)) { … redlock.release(*lease); }
//
// NO FENCING TOKEN. A Redlock lease has no single fencing token: each node
// issues its own (they differ, node by node), and a minority of nodes may hold
// none at all, so no number grows across holders of the name. A process that
// stalls (GC, paging, SIGSTOP) past its validity, or whose clock jumps, can go
// on writing after another holder acquired the lock, and nothing in the
// Redlock lease lets the resource tell the two apart (Kleppmann, "How to do
// distributed locking", 2016). A resource that must stay correct under such a
// pause should instead either
//   - check each write with validate(lease) — a majority of the nodes must say
//     their own token is held now — and accept the window between that check
//     and the write; or
//   - be guarded by ONE lock service's fencing token (LockClient::acquire and
//     LockClient::validate, or the token compared by the resource itself):
//     the only way to turn a stale holder's write away for sure.
// Use Redlock for efficiency (work rarely done twice), not for correctness.
//
// Timing assumptions: the nodes' clocks run at about the same rate as this
// host's (the drift allowance covers the rest), and a lease is used only
// before RedlockLease::validUntil.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "zmesh/client.h"

namespace zmesh {

struct RedlockOptions {
  // Each node's acquire, renew, release and validate call times out after
  // this: a dead node must cost little of the lease's ttl.
  std::chrono::milliseconds nodeTimeout = 50ms;
  // Drift allowance = ttl × driftFactor + driftFixed (Redis: 0.01 and 2 ms):
  // clocks that run at different rates, and the delay of the answer.
  double driftFactor = 0.01;
  std::chrono::milliseconds driftFixed = 2ms;
  // Attempts after a failed first one, each after a random delay in
  // [retryDelayMin, retryDelayMax] (so contenders do not collide in step).
  uint32_t retries = 0;
  std::chrono::milliseconds retryDelayMin = 0ms;
  std::chrono::milliseconds retryDelayMax = 200ms;
  std::string owner;  // "": LockClient::defaultOwner(), one for all nodes
};

// The arithmetic, pure: no I/O, no clock of its own (times are passed in).
class RedlockQuorum {
 public:
  using Clock = std::chrono::steady_clock;
  // Nodes that must agree: n/2 + 1 (0 for 0 nodes: nothing can be acquired).
  static size_t majority(size_t nodes) { return nodes == 0 ? 0 : nodes / 2 + 1; }
  // ttl × factor (to the nearest tick) + fixed; negative parts count as 0.
  static Clock::duration drift(std::chrono::milliseconds ttl, double factor,
                               std::chrono::milliseconds fixed);

  struct Verdict {
    bool acquired = false;  // a majority granted and validity > 0
    size_t granted = 0;
    size_t needed = 0;             // majority(nodes)
    Clock::duration validity{};    // ttl − elapsed − drift (may be <= 0)
    Clock::time_point validUntil;  // start + ttl − drift
  };
  // `granted` of `nodes` answered with a lease between `start` (before the
  // first request) and `end` (after the last answer).
  static Verdict decide(size_t nodes, size_t granted, std::chrono::milliseconds ttl,
                        Clock::time_point start, Clock::time_point end, double driftFactor,
                        std::chrono::milliseconds driftFixed);
};

// A lease held on a majority of nodes. A plain value: nothing is released when
// it is destroyed. See the top of this file: there is NO single fencing token.
struct RedlockLease {
  std::string name;
  std::string owner;
  std::chrono::milliseconds ttl{};
  // Until when the lock holds, on this host's clock: the start of the last
  // successful acquire or renew, plus ttl, minus the drift allowance.
  std::chrono::steady_clock::time_point validUntil;
  // One per node in the Redlock's order: that node's lease (its own token and
  // expiry), nullopt where the node granted none or refused a renewal.
  std::vector<std::optional<Lease>> nodes;

  size_t held() const;                         // nodes with a lease
  std::chrono::milliseconds validity() const;  // until validUntil; 0 once past it
};

// The client. Thread-safe, but every call is made as one owner: threads that
// must exclude each other use a Redlock each (an acquire by the owner that
// holds a node's lock gets that same lease back). Must not outlive the
// ClientThread (or Mesh) its channels come from. Never throws for a node that
// is unreachable; throws RpcError(INVALID_ARGUMENT) for a bad name or ttl.
class Redlock {
 public:
  using Clock = RedlockQuorum::Clock;
  // One channel per independent zmesh-lock service.
  explicit Redlock(std::vector<rpc::Channel> nodes, RedlockOptions options = {});
  // The same with the clock injected (tests).
  Redlock(std::vector<rpc::Channel> nodes, RedlockOptions options,
          std::function<Clock::time_point()> now);

  // Tries each node in turn (wait 0, nodeTimeout each). Held when a majority
  // granted and validity > 0; otherwise released on every node that granted
  // (or may have: its answer was lost, so it is asked again — an unreachable
  // node costs a failed attempt up to 2 × nodeTimeout) and retried as options
  // say. nullopt when no attempt succeeded.
  std::optional<RedlockLease> acquire(const std::string& name, std::chrono::milliseconds ttl);
  // Renews on every node that holds it (for lease.ttl again). True when a
  // majority renewed in time: validUntil moves on. False: the lease is lost —
  // released on every node (best effort) and must no longer be used.
  bool renew(RedlockLease& lease);
  // Releases on every node; best effort, never throws. Nodes that do not
  // answer let their lease expire at its ttl.
  void release(const RedlockLease& lease);
  // True when a majority of the nodes say their own token is held now (the
  // check a resource can make before a write; see the top of this file).
  bool validate(const RedlockLease& lease) const;

  size_t size() const { return nodes_.size(); }
  const std::string& owner() const { return owner_; }
  const RedlockOptions& options() const { return options_; }

 private:
  // Releases node i's lease; with none (its answer was lost), the lease our
  // owner holds there, if any. Never throws.
  void releaseNode(size_t i, const std::string& name, const std::optional<Lease>& lease) const;
  std::chrono::milliseconds retryDelay();

  RedlockOptions options_;
  std::string owner_;
  std::vector<LockClient> nodes_;
  std::function<Clock::time_point()> now_;
  std::mutex randomMutex_;
  std::mt19937_64 random_;
};

}  // namespace zmesh
