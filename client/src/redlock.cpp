#include "zmesh/redlock.h"

#include <algorithm>
#include <cmath>
#include <thread>

namespace zmesh {

namespace {

using std::chrono::milliseconds;

// The caller's mistake, the same on every node: thrown rather than counted
// as a node that did not grant.
bool callersError(StatusCode code) { return code == StatusCode::INVALID_ARGUMENT; }

// The lock holds while a majority of the nodes hold their leases: never past
// the `needed`-th latest of their expiries, less the drift allowance. A node
// may have handed back an older lease of this owner with less time left than
// the ttl asked for, so the nodes' own answers bound what the ttl says.
RedlockQuorum::Clock::time_point majorityUntil(const RedlockLease& lease, size_t needed,
                                               RedlockQuorum::Clock::time_point now,
                                               RedlockQuorum::Clock::duration allowance) {
  std::vector<RedlockQuorum::Clock::duration> left;
  const auto real = std::chrono::steady_clock::now();
  for (const auto& node : lease.nodes)
    if (node) left.push_back(node->expiry - real);
  if (needed == 0 || left.size() < needed) return now;
  std::nth_element(left.begin(), left.begin() + static_cast<long>(needed - 1), left.end(),
                   std::greater<>());
  return now + left[needed - 1] - allowance;
}

}  // namespace

// ---- RedlockQuorum ----

RedlockQuorum::Clock::duration RedlockQuorum::drift(milliseconds ttl, double factor,
                                                    milliseconds fixed) {
  using Tick = Clock::duration;
  // To the nearest tick: rounding up could add a float's error to an exact
  // 100 ms (10 s × 0.01), and a nanosecond either way is no margin.
  const auto scaled =
      std::llround(static_cast<double>(
                       std::chrono::duration_cast<Tick>(std::max(ttl, milliseconds(0))).count()) *
                   std::max(factor, 0.0));
  return Tick(static_cast<Tick::rep>(scaled)) + std::max(fixed, milliseconds(0));
}

RedlockQuorum::Verdict RedlockQuorum::decide(size_t nodes, size_t granted, milliseconds ttl,
                                             Clock::time_point start, Clock::time_point end,
                                             double driftFactor, milliseconds driftFixed) {
  Verdict v;
  v.granted = granted;
  v.needed = majority(nodes);
  const auto allowance = drift(ttl, driftFactor, driftFixed);
  const auto elapsed = std::max(end - start, Clock::duration::zero());
  v.validity = ttl - elapsed - allowance;
  v.validUntil = start + ttl - allowance;
  v.acquired = nodes > 0 && granted >= v.needed && v.validity > Clock::duration::zero();
  return v;
}

// ---- RedlockLease ----

size_t RedlockLease::held() const {
  return static_cast<size_t>(
      std::count_if(nodes.begin(), nodes.end(), [](const auto& n) { return n.has_value(); }));
}

milliseconds RedlockLease::validity() const {
  auto left =
      std::chrono::duration_cast<milliseconds>(validUntil - std::chrono::steady_clock::now());
  return std::max(left, milliseconds(0));
}

// ---- Redlock ----

Redlock::Redlock(std::vector<rpc::Channel> nodes, RedlockOptions options)
    : Redlock(std::move(nodes), std::move(options), Clock::now) {}

Redlock::Redlock(std::vector<rpc::Channel> nodes, RedlockOptions options,
                 std::function<Clock::time_point()> now)
    : options_(std::move(options)),
      owner_(options_.owner.empty() ? LockClient::defaultOwner() : options_.owner),
      now_(std::move(now)),
      random_(std::random_device{}()) {
  CallSettings settings;
  settings.timeout = std::max(options_.nodeTimeout, milliseconds(1));
  nodes_.reserve(nodes.size());
  for (auto& channel : nodes) nodes_.emplace_back(std::move(channel), settings, owner_);
}

milliseconds Redlock::retryDelay() {
  const auto lo = std::max(options_.retryDelayMin, milliseconds(0));
  const auto hi = std::max(options_.retryDelayMax, lo);
  std::lock_guard lock(randomMutex_);
  std::uniform_int_distribution<milliseconds::rep> pick(lo.count(), hi.count());
  return milliseconds(pick(random_));
}

void Redlock::releaseNode(size_t i, const std::string& name,
                          const std::optional<Lease>& lease) const {
  try {
    if (lease) {
      nodes_[i].release(*lease);
      return;
    }
    // The acquire's answer was lost: the node may have granted. Its holders
    // name their owners, so ours is found and released by its token.
    auto info = nodes_[i].inspect(name);
    if (!info) return;
    for (const auto& h : info->holders) {
      if (h.owner != owner_) continue;
      Lease held;
      held.name = name;
      held.owner = owner_;
      held.token = h.token;
      nodes_[i].release(held);
    }
  } catch (const std::exception&) {
    // Best effort: what is not released expires at its ttl.
  }
}

std::optional<RedlockLease> Redlock::acquire(const std::string& name, milliseconds ttl) {
  AcquireOptions request;
  request.ttl = ttl;
  request.wait = 0ms;
  for (uint32_t attempt = 0;; ++attempt) {
    RedlockLease lease;
    lease.name = name;
    lease.owner = owner_;
    lease.ttl = ttl;
    lease.nodes.resize(nodes_.size());
    std::vector<bool> unknown(nodes_.size(), false);  // no answer: may have granted
    std::optional<RpcError> mistake;

    const auto start = now_();
    for (size_t i = 0; i < nodes_.size() && !mistake; ++i) {
      try {
        lease.nodes[i] = nodes_[i].tryAcquire(name, request);
      } catch (const RpcError& e) {
        if (callersError(e.code()))
          mistake = e;
        else
          unknown[i] =
              e.code() == StatusCode::DEADLINE_EXCEEDED || e.code() == StatusCode::UNAVAILABLE;
      } catch (const std::exception&) {
        unknown[i] = true;  // e.g. the client thread going away: it may have granted
      }
    }
    const auto end = now_();
    const auto verdict = RedlockQuorum::decide(nodes_.size(), lease.held(), ttl, start, end,
                                               options_.driftFactor, options_.driftFixed);
    if (verdict.acquired && !mistake) {
      const auto allowance = RedlockQuorum::drift(ttl, options_.driftFactor, options_.driftFixed);
      lease.validUntil =
          std::min(verdict.validUntil, majorityUntil(lease, verdict.needed, end, allowance));
      if (lease.validUntil > end) {
        // A node whose answer was lost may hold a lease nobody counts: let it go.
        for (size_t i = 0; i < nodes_.size(); ++i)
          if (unknown[i]) releaseNode(i, name, std::nullopt);
        return lease;
      }
    }
    for (size_t i = 0; i < nodes_.size(); ++i)
      if (lease.nodes[i] || unknown[i]) releaseNode(i, name, lease.nodes[i]);
    if (mistake) throw *mistake;
    if (attempt >= options_.retries) return std::nullopt;
    std::this_thread::sleep_for(retryDelay());
  }
}

bool Redlock::renew(RedlockLease& lease) {
  const auto start = now_();
  size_t renewed = 0;
  for (size_t i = 0; i < nodes_.size() && i < lease.nodes.size(); ++i) {
    auto& node = lease.nodes[i];
    if (!node) continue;
    try {
      nodes_[i].renew(*node, lease.ttl);
      ++renewed;
    } catch (const RpcError& e) {
      // Refused: this node's lease is gone. Anything else: it may still hold.
      if (e.code() == StatusCode::CONFLICT) node.reset();
    } catch (const std::exception&) {
      // Not renewed; it may still hold until its expiry.
    }
  }
  const auto end = now_();
  const auto verdict = RedlockQuorum::decide(nodes_.size(), renewed, lease.ttl, start, end,
                                             options_.driftFactor, options_.driftFixed);
  if (verdict.acquired) {
    const auto allowance =
        RedlockQuorum::drift(lease.ttl, options_.driftFactor, options_.driftFixed);
    lease.validUntil =
        std::min(verdict.validUntil, majorityUntil(lease, verdict.needed, end, allowance));
    if (lease.validUntil > end) return true;
  }
  // Lost: let the others in now rather than at the nodes' expiry.
  release(lease);
  for (auto& node : lease.nodes) node.reset();
  lease.validUntil = {};
  return false;
}

void Redlock::release(const RedlockLease& lease) {
  for (size_t i = 0; i < nodes_.size() && i < lease.nodes.size(); ++i)
    if (lease.nodes[i]) releaseNode(i, lease.name, lease.nodes[i]);
}

bool Redlock::validate(const RedlockLease& lease) const {
  size_t valid = 0;
  for (size_t i = 0; i < nodes_.size() && i < lease.nodes.size(); ++i) {
    if (!lease.nodes[i]) continue;
    try {
      if (nodes_[i].validate(lease.name, lease.nodes[i]->token).valid) ++valid;
    } catch (const std::exception&) {
      // An unreachable node vouches for nothing.
    }
  }
  return !nodes_.empty() && valid >= RedlockQuorum::majority(nodes_.size());
}

}  // namespace zmesh
