#include "lock_log.h"

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "zmesh/rpc/frame.h"
#include "zmesh/storage/env.h"

namespace zmesh::lock {
namespace {

// Records are read as any untrusted message is; a bad one is a storage failure naming it.
template <typename T, typename Fn>
void readRecord(const std::string& bytes, const char* what, Fn fn) {
  try {
    rpc::readRecord<T>(bytes, what, fn);
  } catch (const rpc::FrameError& e) {
    throw storage::StorageError(std::string("lock journal: ") + e.what());
  }
}

Lease leaseOf(idl::LockSnapshot::Lease::Reader l) {
  return Lease{l.getName(),    l.getOwner(),   l.getToken(),      fromWire(l.getMode()),
               l.getPermits(), l.getSession(), l.getExpiresAtMs()};
}

void free(LockLogState& state, uint64_t token) {
  auto it = state.leases.find(token);
  if (it == state.leases.end()) return;
  // The name's last token, as validate() remembers freed names; a name
  // still held keeps its entry in the table instead.
  state.retained.emplace_back(it->second.name, token);
  state.leases.erase(it);
}

}  // namespace

idl::LockMode toWire(Mode m) {
  return m == Mode::shared ? idl::LockMode::SHARED : idl::LockMode::EXCLUSIVE;
}

Mode fromWire(idl::LockMode m) {
  return m == idl::LockMode::SHARED ? Mode::shared : Mode::exclusive;
}

Millis millis(uint64_t ms) { return static_cast<Millis>(std::min<uint64_t>(ms, INT64_MAX / 4)); }

void replaySnapshot(LockLogState& state, const std::string& bytes) {
  readRecord<idl::LockSnapshot>(bytes, "snapshot", [&](idl::LockSnapshot::Reader s) {
    state.tokens = std::max(state.tokens, s.getTokens());
    for (auto l : s.getLeases()) state.leases[l.getToken()] = leaseOf(l);
    for (auto x : s.getSessions()) state.sessions[x.getId()] = millis(x.getTimeoutMs());
    for (auto r : s.getRetained()) state.retained.emplace_back(r.getName(), r.getLastToken());
    for (auto d : s.getDelays()) state.delays[d.getName()] = {d.getPermits(), d.getUntilMs()};
  });
}

void replayRecord(LockLogState& state, const std::string& bytes) {
  readRecord<idl::LockLogRecord>(bytes, "log record", [&](idl::LockLogRecord::Reader r) {
    switch (r.which()) {
      case idl::LockLogRecord::TOKENS:
        state.tokens = std::max(state.tokens, r.getTokens());
        break;
      case idl::LockLogRecord::GRANT: {
        auto g = r.getGrant();
        state.leases[g.getToken()] =
            Lease{g.getName(),    g.getOwner(),   g.getToken(),      fromWire(g.getMode()),
                  g.getPermits(), g.getSession(), g.getExpiresAtMs()};
        break;
      }
      case idl::LockLogRecord::RENEW: {
        auto it = state.leases.find(r.getRenew().getToken());
        if (it != state.leases.end()) it->second.expiresAt = r.getRenew().getExpiresAtMs();
        break;
      }
      case idl::LockLogRecord::FREE:
        free(state, r.getFree());
        break;
      case idl::LockLogRecord::OPEN_SESSION:
        state.sessions[r.getOpenSession().getId()] = millis(r.getOpenSession().getTimeoutMs());
        break;
      case idl::LockLogRecord::CLOSE_SESSION:
        state.sessions.erase(r.getCloseSession());
        break;
      case idl::LockLogRecord::DELAY: {
        auto d = r.getDelay();
        state.delays[d.getName()] = {d.getPermits(), d.getUntilMs()};
        break;
      }
      default:
        // Written by a newer version: replaying past it would build a state
        // that never was.
        throw storage::StorageError(
            "lock journal: log record: a kind this version does not know (" +
            std::to_string(static_cast<unsigned>(r.which())) + ")");
    }
  });
}

void restore(LockTable& table, const LockLogState& state, Millis now, int64_t wallNow) {
  const LockOptions& o = table.options();
  // Unix ms from a log, kept far from the int64 edges before any arithmetic.
  auto bounded = [](int64_t ms) { return std::clamp<int64_t>(ms, INT64_MIN / 4, INT64_MAX / 4); };
  try {
    for (auto& [name, token] : state.retained) table.restoreRetained(name, token);
    for (auto& [id, timeout] : state.sessions)
      table.restoreSession(id, std::clamp(timeout, o.minSessionTimeout, o.maxSessionTimeout), now);
    std::vector<Lease> leases;
    for (auto& [token, lease] : state.leases) leases.push_back(lease);
    std::sort(leases.begin(), leases.end(),
              [](const Lease& a, const Lease& b) { return a.token < b.token; });
    for (auto& lease : leases) {
      if (lease.session != 0 && !state.sessions.count(lease.session)) {
        // Its session ended with it; the name still remembers the token.
        table.restoreRetained(lease.name, lease.token);
        continue;
      }
      // The time it had left, on this process's clock; never more than a
      // lease may be given (a wall clock stepped back must not stretch it).
      Millis left = std::min<Millis>(bounded(lease.expiresAt) - bounded(wallNow), o.maxTtl);
      Lease restored = lease;
      restored.expiresAt = now + left;
      table.restoreLease(restored);
    }
    for (auto& [name, d] : state.delays) {
      // Never longer than the service's own lock-delay from now.
      Millis left = std::min<Millis>(bounded(d.untilMs) - bounded(wallNow), o.lockDelay);
      table.restoreDelay(name, d.permits, now + left, now);
    }
    table.restoreTokens(state.tokens);
  } catch (const std::invalid_argument& e) {
    throw storage::StorageError(std::string("lock journal: ") + e.what());
  }
}

std::string lockSnapshot(const LockTable& table, uint64_t tokens, Millis now, int64_t wallNow) {
  capnp::MallocMessageBuilder message;
  auto s = message.initRoot<idl::LockSnapshot>();
  s.setTokens(tokens);
  auto leases = table.leases();
  auto list = s.initLeases(leases.size());
  for (size_t i = 0; i < leases.size(); ++i) {
    auto& l = leases[i];
    list[i].setName(l.name);
    list[i].setOwner(l.owner);
    list[i].setToken(l.token);
    list[i].setMode(toWire(l.mode));
    list[i].setPermits(l.permits);
    list[i].setSession(l.session);
    list[i].setExpiresAtMs(wallNow + (l.expiresAt - now));
  }
  auto sessions = table.sessions();
  auto sl = s.initSessions(sessions.size());
  for (size_t i = 0; i < sessions.size(); ++i) {
    sl[i].setId(sessions[i].first);
    sl[i].setTimeoutMs(static_cast<uint64_t>(sessions[i].second));
  }
  // Freed names oldest first, then the live ones: a restart restores the
  // names before the leases, and a live name's last token may be above its
  // holders' (a shared holder released, a lock-delay running).
  auto retained = table.retained();
  for (auto& live : table.lastTokens()) retained.push_back(live);
  auto rl = s.initRetained(retained.size());
  for (size_t i = 0; i < retained.size(); ++i) {
    rl[i].setName(retained[i].first);
    rl[i].setLastToken(retained[i].second);
  }
  auto delays = table.delays();
  auto dl = s.initDelays(delays.size());
  for (size_t i = 0; i < delays.size(); ++i) {
    dl[i].setName(delays[i].name);
    dl[i].setPermits(delays[i].permits);
    dl[i].setUntilMs(wallNow + (delays[i].until - now));
  }
  return rpc::toRecord(message);
}

}  // namespace zmesh::lock
