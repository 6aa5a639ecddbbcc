// Thousands of random operations (a few names, owners, modes, sessions, a
// token supply that keeps running out) against a model built only from the
// events the table reports. After every step the model and the table must
// agree, and the invariants hold: no exclusive holder beside another, no more
// holders than permits, tokens only increase, every call answered exactly
// once unless cancelled, grants in queue order, no waiter left waiting when it
// could be granted, and stats that count what was seen.
#include <catch2/catch.hpp>
#include <deque>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "harness.h"
#include "lock_table.h"

namespace zmesh::lock {
namespace {

struct Slot {
  uint64_t call;
  std::string owner;
  Mode mode;
  uint64_t session;
  Millis since;  // when this call joined (or took the place)
};

struct Counts {
  uint64_t grants = 0, immediate = 0, afterWait = 0, reacquired = 0, releases = 0, expiries = 0,
           lost = 0, renewals = 0, timeouts = 0, superseded = 0, dropped = 0, conflicts = 0,
           refusedFull = 0, sessionsEnded = 0, closedByCall = 0;
};

const std::vector<std::string> kNames = {"a", "b", "c", "d", "s"};
const std::vector<std::string> kOwners = {"o1", "o2", "o3", "o4", "o5", "o6"};
constexpr uint32_t kSemaphorePermits = 2;  // "s" is asked for as a semaphore of 2

class Model {
 public:
  explicit Model(LockOptions options) : options_(options) {}

  std::map<uint64_t, Lease> holders;               // token -> lease
  std::map<std::string, std::deque<Slot>> queues;  // name -> waiting calls, in order
  std::map<uint64_t, std::string> waiting;         // call -> name
  std::map<uint64_t, Millis> sessions;             // id -> deadline
  std::map<uint64_t, Millis> timeouts;             // id -> timeout
  std::set<uint64_t> answered;                     // calls granted, rejected or cancelled
  std::map<std::string, Millis> delays;            // name -> end of its lock-delay
  uint64_t maxIssued = 0;
  Counts n;

  // What one call reported. `current` is the call id of the acquire being
  // made (0 for other operations), `asked` its request.
  struct Outcome {
    bool currentAnswered = false;
    bool currentTookPlace = false;  // superseded a waiter of its owner
  };

  // `tokens`: the supply was never spent during the call.
  Outcome apply(const Events& out, uint64_t current, Millis now, bool tokens,
                const AcquireRequest* asked = nullptr) {
    Outcome o;
    std::set<uint64_t> endedSessions;
    for (auto& e : out) {
      INFO(test::said(e));
      switch (e.kind) {
        case Event::Kind::granted: {
          answer(e.call, current, o);
          auto held = holders.find(e.lease.token);
          if (held != holders.end()) {
            // The owner already held it: the same lease, unchanged.
            REQUIRE(e.call == current);
            REQUIRE(waiting.count(e.call) == 0);
            REQUIRE(held->second.owner == e.lease.owner);
            REQUIRE(held->second.name == e.lease.name);
            REQUIRE(held->second.expiresAt == e.lease.expiresAt);
            n.reacquired++;
            break;
          }
          REQUIRE(e.lease.token > maxIssued);
          maxIssued = e.lease.token;
          REQUIRE(e.lease.expiresAt > now);
          if (auto w = waiting.find(e.call); w != waiting.end()) {
            // Grants follow the queue: only its head is ever granted.
            auto& q = queues[w->second];
            REQUIRE(w->second == e.lease.name);
            REQUIRE(!q.empty());
            REQUIRE(q.front().call == e.call);
            REQUIRE(q.front().owner == e.lease.owner);
            q.pop_front();
            waiting.erase(w);
            n.afterWait++;
          } else {
            REQUIRE(e.call == current);
            REQUIRE(queues[e.lease.name].empty());  // nobody passed
            n.immediate++;
          }
          n.grants++;
          holders[e.lease.token] = e.lease;
          checkHolders(e.lease.name);
          break;
        }
        case Event::Kind::rejected: {
          REQUIRE(e.failure);
          const std::string& why = e.failure->message;
          // The head of a queue held back by the token supply alone times out
          // unavailable; every other refusal is a conflict.
          const bool supply = why.rfind("no fencing token could be reserved within ", 0) == 0;
          REQUIRE(e.failure->code == (supply ? Fail::unavailable : Fail::conflict));
          auto w = waiting.find(e.call);
          REQUIRE(w != waiting.end());
          auto& q = queues[w->second];
          auto slot = std::find_if(q.begin(), q.end(), [&](auto& s) { return s.call == e.call; });
          REQUIRE(slot != q.end());
          if (why == "superseded by a newer acquire of the same owner" && asked &&
              asked->wait == 0) {
            // A try-once withdraws the owner's waiting call; it answers for itself.
            REQUIRE(current != 0);
            answered.insert(e.call);
            q.erase(slot);
            waiting.erase(w);
            n.superseded++;
            break;
          }
          if (why == "superseded by a newer acquire of the same owner") {
            REQUIRE(current != 0);
            REQUIRE(!o.currentTookPlace);
            REQUIRE(asked);
            answered.insert(e.call);
            slot->call = current;
            slot->mode = asked->mode;
            slot->session = asked->session;
            slot->since = now;
            waiting[current] = w->second;
            waiting.erase(w);
            o.currentTookPlace = true;
            n.superseded++;
            break;
          }
          answer(e.call, current, o);
          if (supply) {
            // Only the head, and only when nothing but the supply stood in its way.
            REQUIRE(slot == q.begin());
            REQUIRE(!tokens);
            REQUIRE(headFits(w->second));
            n.timeouts++;
          } else if (why.rfind("not granted within ", 0) == 0) {
            // At its deadline the head did not fit: whatever freed capacity
            // at that instant went first.
            Millis deadline = slot->since + std::stoll(why.substr(19));
            if (slot == q.begin() && tokens && delays[w->second] <= deadline)
              REQUIRE_FALSE(headFits(w->second));
            n.timeouts++;
          } else {
            REQUIRE(why.rfind("session ", 0) == 0);
            REQUIRE(slot->session != 0);
            n.dropped++;
          }
          q.erase(slot);
          waiting.erase(w);
          break;
        }
        case Event::Kind::released:
        case Event::Kind::expired:
        case Event::Kind::lost: {
          auto held = holders.find(e.lease.token);
          REQUIRE(held != holders.end());
          REQUIRE(held->second.owner == e.lease.owner);
          if (e.kind == Event::Kind::expired) {
            REQUIRE(held->second.expiresAt <= now);
            delay(e.lease.name, held->second.expiresAt);
            n.expiries++;
          } else if (e.kind == Event::Kind::lost) {
            REQUIRE(e.lease.session != 0);
            REQUIRE(sessions.at(e.lease.session) <= now);
            delay(e.lease.name, sessions.at(e.lease.session));
            n.lost++;
          } else {
            n.releases++;
          }
          holders.erase(held);
          break;
        }
        case Event::Kind::renewed: {
          auto held = holders.find(e.lease.token);
          REQUIRE(held != holders.end());
          REQUIRE(e.lease.expiresAt > now);
          held->second.expiresAt = e.lease.expiresAt;
          n.renewals++;
          break;
        }
        case Event::Kind::sessionOpened:
          REQUIRE(e.session > maxIssued);
          maxIssued = e.session;
          sessions[e.session] = now + e.sessionTimeout;
          timeouts[e.session] = e.sessionTimeout;
          break;
        case Event::Kind::sessionClosed: {
          REQUIRE(sessions.count(e.session));
          // Its leases and waiters went before it.
          for (auto& [t, l] : holders) REQUIRE(l.session != e.session);
          for (auto& [name, q] : queues)
            for (auto& s : q) REQUIRE(s.session != e.session);
          sessions.erase(e.session);
          timeouts.erase(e.session);
          n.sessionsEnded++;
          endedSessions.insert(e.session);
          break;
        }
      }
    }
    return o;
  }

  void checkHolders(const std::string& name) const {
    size_t count = 0, exclusive = 0;
    uint32_t permits = 0;
    for (auto& [t, l] : holders) {
      if (l.name != name) continue;
      if (count > 0) REQUIRE(l.permits == permits);
      permits = l.permits;
      count++;
      if (l.mode == Mode::exclusive) exclusive++;
    }
    if (permits == 0) {
      REQUIRE((exclusive == 0 || count == 1));
      REQUIRE(count <= options_.maxSharedHolders);
    } else {
      REQUIRE(exclusive == count);
      REQUIRE(count <= permits);
    }
  }

  // Whether the head of `name`'s queue fits beside its holders.
  bool headFits(const std::string& name) const {
    const Slot& head = queues.at(name).front();
    size_t count = 0;
    bool exclusive = false;
    uint32_t permits = 0;
    for (auto& [t, l] : holders) {
      if (l.name != name) continue;
      permits = l.permits;
      count++;
      exclusive = exclusive || l.mode == Mode::exclusive;
    }
    if (permits != 0) return count < permits;
    if (head.mode == Mode::exclusive) return count == 0;
    return !exclusive && count < options_.maxSharedHolders;
  }

  // Whether release/renew of `token` by `owner` on `name` must succeed at `now`.
  bool holds(const std::string& name, const std::string& owner, uint64_t token, Millis now) const {
    auto it = holders.find(token);
    if (it == holders.end()) return false;
    const Lease& l = it->second;
    if (l.name != name || l.owner != owner || l.expiresAt <= now) return false;
    return l.session == 0 || sessions.at(l.session) > now;
  }

  // The lock-delay running on `name` at `now`, or 0.
  Millis delayedUntil(const std::string& name, Millis now) const {
    auto it = delays.find(name);
    return it != delays.end() && it->second > now ? it->second : 0;
  }

 private:
  // A lease that ended at `at` by expiry or loss holds its lock back.
  void delay(const std::string& name, Millis at) {
    if (options_.lockDelay <= 0) return;
    Millis& until = delays[name];
    until = std::max(until, at + options_.lockDelay);
  }

  void answer(uint64_t call, uint64_t current, Outcome& o) {
    INFO("call " << call);
    REQUIRE(answered.count(call) == 0);
    answered.insert(call);
    if (call == current) o.currentAnswered = true;
  }

  LockOptions options_;
};

void checkAgree(const LockTable& t, const Model& m, Millis now, const LockOptions& options) {
  auto leases = t.leases();
  REQUIRE(leases.size() == m.holders.size());
  for (auto& l : leases) {
    auto it = m.holders.find(l.token);
    REQUIRE(it != m.holders.end());
    REQUIRE(it->second.name == l.name);
    REQUIRE(it->second.owner == l.owner);
    REQUIRE(it->second.expiresAt == l.expiresAt);
    REQUIRE(it->second.session == l.session);
    REQUIRE(l.expiresAt > now);  // advanced to now: nothing due is left
    auto v = t.validate(l.name, l.token, now);
    REQUIRE(v.valid);
    REQUIRE(v.current >= l.token);
  }
  auto sessions = t.sessions();
  REQUIRE(sessions.size() == m.sessions.size());
  for (auto& [id, timeout] : sessions) REQUIRE(m.timeouts.at(id) == timeout);

  REQUIRE(t.nextToken() == m.maxIssued + 1);
  REQUIRE(t.nextToken() <= t.tokenLimit());

  bool tokens = t.nextToken() < t.tokenLimit();
  size_t names = 0;
  for (auto& name : kNames) {
    auto view = t.inspect(name, now);
    auto q = m.queues.find(name);
    size_t queued = q == m.queues.end() ? 0 : q->second.size();
    size_t held = 0;
    for (auto& [token, l] : m.holders) held += l.name == name;
    Millis delayed = m.delayedUntil(name, now);
    if (queued || held || delayed) names++;
    if (!view) {
      REQUIRE(queued == 0);
      REQUIRE(held == 0);
      REQUIRE(delayed == 0);
      continue;
    }
    REQUIRE(view->delayedUntil == delayed);
    REQUIRE(view->waiters == queued);
    REQUIRE(view->holders.size() == held);
    for (size_t i = 1; i < view->holders.size(); ++i)
      REQUIRE(view->holders[i - 1].token < view->holders[i].token);
    // Nobody waits who could be granted now.
    if (queued && delayed == 0 && tokens) {
      INFO("name " << name << " head call " << q->second.front().call);
      REQUIRE_FALSE(m.headFits(name));
    }
  }

  auto st = t.stats();
  const Counts& n = m.n;
  REQUIRE(st.grants == n.grants);
  REQUIRE(st.grantsImmediate == n.immediate);
  REQUIRE(st.grantsAfterWait == n.afterWait);
  REQUIRE(st.reacquired == n.reacquired);
  REQUIRE(st.releases == n.releases);
  REQUIRE(st.expiries == n.expiries);
  REQUIRE(st.lost == n.lost);
  REQUIRE(st.renewals == n.renewals);
  REQUIRE(st.waitTimeouts == n.timeouts);
  REQUIRE(st.waitersSuperseded == n.superseded);
  REQUIRE(st.waitersDropped == n.dropped);
  REQUIRE(st.conflicts == n.conflicts);
  REQUIRE(st.refusedFull == n.refusedFull);
  REQUIRE(st.sessionTimeouts == n.sessionsEnded - n.closedByCall);
  REQUIRE(st.holders == m.holders.size());
  REQUIRE(st.waiters == m.waiting.size());
  REQUIRE(st.sessions == m.sessions.size());
  REQUIRE(st.locks == names);
  REQUIRE(st.locks <= options.maxLocks);
  REQUIRE(st.waiters <= options.maxWaiters);
  REQUIRE(st.retained <= options.retainNames);
  REQUIRE(st.tokenStalls <= n.grants + st.waiters + n.timeouts + n.dropped + n.superseded);
}

}  // namespace

TEST_CASE("random operations keep the table's invariants and agree with its events",
          "[lock_table][property]") {
  const uint64_t seed = GENERATE(1, 2, 3, 4, 5, 6, 7, 8);
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  auto pick = [&](uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng); };
  auto chance = [&](int percent) { return pick(100) < static_cast<uint64_t>(percent); };

  LockOptions options;
  options.minTtl = 10;
  options.maxTtl = 300;
  options.maxWait = 150;
  options.lockDelay = seed % 2 ? 40 : 0;
  options.minSessionTimeout = 50;
  options.maxSessionTimeout = 300;
  options.maxPermits = 4;
  options.maxLocks = 4;
  options.maxWaiters = 8;
  options.maxWaitersPerLock = 3;
  options.maxSharedHolders = 3;
  options.maxSessions = 3;
  options.retainNames = 2;
  options.tokenLowWater = 4;

  LockTable t(options);
  Model m(options);
  Millis now = 0;
  uint64_t call = 0;
  Events out;
  t.setTokenLimit(12, now, out);
  uint64_t stalls = 0;

  for (int step = 0; step < 10'000; ++step) {
    // Times on a 10 ms grid (steps of 5) so that deadlines often coincide.
    now += 5 * static_cast<Millis>(pick(4));
    out.clear();
    uint64_t current = 0;
    std::optional<Failure> failed;
    bool acquired = false;
    AcquireRequest r;
    std::string name = kNames[pick(kNames.size())];
    std::string owner = kOwners[pick(kOwners.size())];
    auto someSession = [&]() -> uint64_t {
      if (chance(5)) return 999'999;  // never open
      if (m.sessions.empty()) return 0;
      auto it = m.sessions.begin();
      std::advance(it, static_cast<long>(pick(m.sessions.size())));
      return it->first;
    };
    // A holder to release or renew: mostly a real one, sometimes a wrong owner or token.
    auto someHolder = [&](std::string& n, std::string& o, uint64_t& token) {
      token = 1 + pick(m.maxIssued + 1);
      if (!m.holders.empty() && chance(80)) {
        auto it = m.holders.begin();
        std::advance(it, static_cast<long>(pick(m.holders.size())));
        n = it->second.name;
        o = it->second.owner;
        token = it->first;
        if (chance(10)) o = kOwners[pick(kOwners.size())];
      }
    };

    // Tokens were available all through the step if they still are at its end
    // under the limit that held at its start.
    const uint64_t limitBefore = t.tokenLimit();
    auto plenty = [&] { return t.nextToken() < limitBefore; };
    uint64_t op = pick(100);
    INFO("step " << step << " now " << now << " op " << op);
    if (op < 40) {
      r.name = name;
      r.owner = owner;
      r.ttl = chance(3) ? 5 : 10 * static_cast<Millis>(1 + pick(30));
      r.wait = chance(35) ? 0 : 10 * static_cast<Millis>(1 + pick(20));
      if (name == "s") {
        r.permits = chance(90) ? kSemaphorePermits : 3;
      } else {
        r.permits = chance(5) ? kSemaphorePermits : 0;
        r.mode = chance(45) ? Mode::shared : Mode::exclusive;
      }
      r.session = chance(35) ? someSession() : 0;
      current = ++call;
      auto result = t.acquire(r, current, now, out);
      if (auto* f = std::get_if<Failure>(&result)) failed = *f;
      acquired = true;
    } else if (op < 55) {
      uint64_t token;
      someHolder(name, owner, token);
      bool must = m.holds(name, owner, token, now);
      failed = t.release(name, owner, token, now, out);
      REQUIRE(!failed == must);
    } else if (op < 63) {
      uint64_t token;
      someHolder(name, owner, token);
      bool must = m.holds(name, owner, token, now);
      auto result = t.renew(name, owner, token, 10 * static_cast<Millis>(1 + pick(30)), now, out);
      REQUIRE(std::holds_alternative<Millis>(result) == must);
    } else if (op < 70) {
      uint64_t victim = 1 + pick(call + 1);
      if (!m.waiting.empty() && chance(70)) {
        auto it = m.waiting.begin();
        std::advance(it, static_cast<long>(pick(m.waiting.size())));
        victim = it->first;
      }
      // Advanced first, so that the model sees the cancelled call leave
      // before the grants its leaving allows.
      t.advance(now, out);
      m.apply(out, 0, now, plenty());
      out.clear();
      bool waits = m.waiting.count(victim) != 0;
      REQUIRE(t.cancel(victim, now, out) == waits);
      if (waits) {
        auto& q = m.queues[m.waiting.at(victim)];
        q.erase(std::find_if(q.begin(), q.end(), [&](auto& s) { return s.call == victim; }));
        m.waiting.erase(victim);
        m.answered.insert(victim);
        m.n.dropped++;
      }
    } else if (op < 76) {
      auto result = t.openSession(10 * static_cast<Millis>(pick(40)), now, out);
      if (auto* f = std::get_if<Failure>(&result)) {
        failed = *f;
        if (f->code == Fail::resourceExhausted) m.n.refusedFull++;
        if (f->code == Fail::unavailable) REQUIRE(t.nextToken() == t.tokenLimit());
      }
    } else if (op < 82) {
      uint64_t s = someSession();
      auto result = t.heartbeat(s, now);
      bool open = m.sessions.count(s) && m.sessions.at(s) > now;
      REQUIRE(std::holds_alternative<Millis>(result) == open);
      if (open) m.sessions[s] = now + m.timeouts.at(s);
    } else if (op < 86) {
      uint64_t s = someSession();
      auto result = t.closeSession(s, now, out);
      if (std::holds_alternative<uint32_t>(result)) m.n.closedByCall++;
    } else if (op < 92) {
      uint64_t limit = t.tokenLimit() + pick(8);
      t.setTokenLimit(limit, now, out);
      REQUIRE(t.tokenLimit() == std::max(limit, t.tokenLimit()));
    }
    // else: time passes

    auto outcome = m.apply(out, current, now, plenty(), acquired ? &r : nullptr);
    if (acquired) {
      if (failed) {
        REQUIRE_FALSE(outcome.currentAnswered);
        REQUIRE_FALSE(outcome.currentTookPlace);
        if (failed->code == Fail::conflict && failed->message.find(" is a ") == std::string::npos)
          m.n.conflicts++;
        if (failed->code == Fail::resourceExhausted) m.n.refusedFull++;
      } else if (!outcome.currentAnswered && !outcome.currentTookPlace) {
        m.queues[name].push_back(Slot{current, owner, r.mode, r.session, now});
        m.waiting[current] = name;
      }
    }
    out.clear();
    t.advance(now, out);
    m.apply(out, 0, now, plenty());
    checkAgree(t, m, now, options);
    stalls = std::max(stalls, t.stats().tokenStalls);
  }

  // Far in the future every wait, lease, session and delay is over.
  out.clear();
  now += 10'000'000;
  t.setTokenLimit(t.tokenLimit() + 1000, now, out);
  m.apply(out, 0, now, false);
  out.clear();
  t.advance(now + 1000, out);
  m.apply(out, 0, now + 1000, false);
  CHECK(m.waiting.empty());
  CHECK(m.holders.empty());
  CHECK(m.sessions.empty());
  auto st = t.stats();
  CHECK(st.locks == 0);
  CHECK(st.waiters == 0);
  CHECK(stalls > 0);
  CHECK(st.grants > 300);
  CHECK(st.grantsAfterWait > 50);
  CHECK(st.waitersSuperseded > 0);
  CHECK(st.reacquired > 0);
  CHECK(st.waitTimeouts > 0);
  CHECK(st.refusedFull > 0);
  CHECK(st.sessionTimeouts > 0);
}

}  // namespace zmesh::lock
