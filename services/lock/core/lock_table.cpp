#include "lock_table.h"

#include <algorithm>
#include <functional>
#include <list>
#include <map>
#include <set>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

namespace zmesh::lock {
namespace {

// Lets maps keyed by std::string be searched with a string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <class V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

// A byte as it can be printed inside a message.
std::string shown(char c) {
  auto u = static_cast<unsigned char>(c);
  if (u >= 0x20 && u <= 0x7e) return std::string(1, c);
  static constexpr char kHex[] = "0123456789abcdef";
  return std::string("\\x") + kHex[u >> 4] + kHex[u & 15];
}

std::string quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

std::string ms(Millis m) { return std::to_string(m) + " ms"; }

std::string plural(size_t n, std::string_view one, std::string_view many) {
  return std::to_string(n) + " " + std::string(n == 1 ? one : many);
}

Failure invalid(std::string message) { return {Fail::invalidArgument, std::move(message)}; }
Failure conflict(std::string message) { return {Fail::conflict, std::move(message)}; }
Failure exhausted(std::string message) { return {Fail::resourceExhausted, std::move(message)}; }
Failure noSession(uint64_t id) {
  return {Fail::notFound, "session " + std::to_string(id) + " is not open"};
}

std::optional<std::string> checkTtl(Millis ttl, const LockOptions& o) {
  if (ttl < o.minTtl)
    return "ttl_ms: " + std::to_string(ttl) + " is below the minimum " + std::to_string(o.minTtl);
  if (ttl > o.maxTtl)
    return "ttl_ms: " + std::to_string(ttl) + " is above the maximum " + std::to_string(o.maxTtl);
  return std::nullopt;
}

// Waiting longer than this for a token reservation would mean the adapter's
// log is stuck; a try-once acquire held back only by the supply waits this long.
constexpr Millis kTokenStallWait = 1000;

}  // namespace

std::optional<std::string> checkName(std::string_view name) {
  if (name.empty()) return "name: empty; give 1-200 characters of [A-Za-z0-9._:@-]";
  if (name.size() > kMaxNameBytes)
    return "name: " + std::to_string(name.size()) + " bytes, more than " +
           std::to_string(kMaxNameBytes);
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '@' || c == '-';
    if (!ok)
      return "name: character '" + shown(c) + "' at position " + std::to_string(i) +
             " is not one of [A-Za-z0-9._:@-]";
  }
  return std::nullopt;
}

std::optional<std::string> checkOwner(std::string_view owner) {
  if (owner.empty()) return "owner: empty; give 1-128 printable ASCII characters";
  if (owner.size() > kMaxOwnerBytes)
    return "owner: " + std::to_string(owner.size()) + " bytes, more than " +
           std::to_string(kMaxOwnerBytes);
  for (size_t i = 0; i < owner.size(); ++i) {
    auto u = static_cast<unsigned char>(owner[i]);
    if (u < 0x20 || u > 0x7e)
      return "owner: character '" + shown(owner[i]) + "' at position " + std::to_string(i) +
             " is not printable ASCII";
  }
  return std::nullopt;
}

// ---- the state ----

struct LockTable::Waiter {
  uint64_t call = 0;
  std::string owner;
  Millis ttl = 0;
  Millis wait = 0;  // as granted to it (for the timeout's message)
  Millis deadline = 0;
  Mode mode = Mode::exclusive;
  uint64_t session = 0;
  bool stalled = false;  // already counted in tokenStalls
};

struct LockTable::Entry {
  std::string name;
  uint32_t permits = 0;
  std::map<uint64_t, Lease> holders;  // by token, which is grant order
  StringMap<uint64_t> holderOf;       // owner -> token
  size_t exclusiveHolders = 0;        // of a lock (permits 0): 0 or 1
  // A list so that a waiter leaving from the middle (timeout, session end,
  // cancel) costs O(1) through the table's call index, not a scan.
  std::list<Waiter> queue;
  StringMap<std::list<Waiter>::iterator> waiterOf;  // owner -> its place
  uint64_t lastToken = 0;
  Millis delayedUntil = 0;  // 0: no lock-delay running
  uint64_t starvedSeq = 0;  // 0: not starved; else its place in State::starved
};

struct LockTable::Session {
  Millis timeout = 0;
  Millis deadline = 0;
  // Ordered so that ending a session ends its leases and waits in a
  // deterministic order.
  std::set<uint64_t> tokens;
  std::set<uint64_t> calls;
};

struct LockTable::State {
  // Node-based: an Entry stays where it is while it lives, so the indexes
  // below may point at it; it is erased only when nothing refers to it.
  StringMap<Entry> entries;
  std::unordered_map<uint64_t, Entry*> byToken;  // every holder's entry
  struct Place {
    Entry* entry;
    std::list<Waiter>::iterator waiter;
  };
  std::unordered_map<uint64_t, Place> byCall;  // every waiter
  std::unordered_map<uint64_t, Session> sessions;
  // Freed names, oldest first, and where each sits.
  std::list<std::pair<std::string, uint64_t>> retained;
  StringMap<std::list<std::pair<std::string, uint64_t>>::iterator> retainedAt;
  // Entries whose head could be granted but for the token supply, in the
  // order they ran out: setTokenLimit resumes them in that order.
  std::map<uint64_t, Entry*> starved;
  uint64_t starvedSeq = 0;
  TimerHeap<uint64_t> leaseTimers;     // token -> expiresAt
  TimerHeap<uint64_t> waitTimers;      // call -> deadline
  TimerHeap<uint64_t> sessionTimers;   // id -> deadline
  TimerHeap<std::string> delayTimers;  // name -> end of its lock-delay
  LockStats stats;

  using WaiterAt = std::list<Waiter>::iterator;

  Entry* find(std::string_view name) {
    auto it = entries.find(name);
    return it == entries.end() ? nullptr : &it->second;
  }
  const Entry* find(std::string_view name) const {
    auto it = entries.find(name);
    return it == entries.end() ? nullptr : &it->second;
  }

  Entry& create(std::string_view name, uint32_t permits) {
    Entry& e = entries.try_emplace(std::string(name)).first->second;
    e.name = std::string(name);
    e.permits = permits;
    // A name that comes back continues from the token it last had.
    if (auto r = retainedAt.find(name); r != retainedAt.end()) {
      e.lastToken = r->second->second;
      retained.erase(r->second);
      retainedAt.erase(r);
    }
    return e;
  }

  void retain(std::string name, uint64_t lastToken, size_t limit) {
    retained.emplace_back(std::move(name), lastToken);
    retainedAt[retained.back().first] = std::prev(retained.end());
    while (retained.size() > limit) {
      retainedAt.erase(retained.front().first);
      retained.pop_front();
      stats.forgotten++;
    }
  }

  // An entry with nothing left in it goes; its last token is remembered.
  void eraseIfIdle(Entry& e, size_t retainLimit) {
    if (!e.holders.empty() || !e.queue.empty() || e.delayedUntil != 0) return;
    unstarve(e);
    std::string name = std::move(e.name);
    uint64_t last = e.lastToken;
    entries.erase(name);
    if (last != 0) retain(std::move(name), last, retainLimit);
  }

  void starve(Entry& e) {
    if (e.starvedSeq != 0) return;
    e.starvedSeq = ++starvedSeq;
    starved.emplace(e.starvedSeq, &e);
  }
  void unstarve(Entry& e) {
    if (e.starvedSeq == 0) return;
    starved.erase(e.starvedSeq);
    e.starvedSeq = 0;
  }

  // Puts a waiter (already in its queue) into the indexes and timers.
  void link(Entry& e, WaiterAt it) {
    byCall[it->call] = Place{&e, it};
    waitTimers.set(it->call, it->deadline);
    e.waiterOf[it->owner] = it;
    if (it->session != 0) sessions.at(it->session).calls.insert(it->call);
  }
  // Takes it out of the indexes and timers, leaving it in its queue.
  void unindex(Entry& e, WaiterAt it) {
    byCall.erase(it->call);
    waitTimers.erase(it->call);
    if (it->session != 0)
      if (auto s = sessions.find(it->session); s != sessions.end()) s->second.calls.erase(it->call);
    e.waiterOf.erase(it->owner);
  }
  // Takes it out of its queue and every index; the caller answers it (or not).
  Waiter unlink(Entry& e, WaiterAt it) {
    unindex(e, it);
    Waiter w = std::move(*it);
    e.queue.erase(it);
    return w;
  }

  void addHolder(Entry& e, Lease lease) {
    uint64_t token = lease.token;
    leaseTimers.set(token, lease.expiresAt);
    if (lease.session != 0) sessions.at(lease.session).tokens.insert(token);
    byToken.emplace(token, &e);
    e.holderOf[lease.owner] = token;
    if (e.permits == 0 && lease.mode == Mode::exclusive) e.exclusiveHolders++;
    e.lastToken = std::max(e.lastToken, token);
    e.holders.emplace(token, std::move(lease));
  }
  static void reject(const Entry& e, const Waiter& w, Failure why, Events& out) {
    Lease asked;  // names what was asked for; no token
    asked.name = e.name;
    asked.owner = w.owner;
    asked.mode = w.mode;
    asked.permits = e.permits;
    asked.session = w.session;
    out.push_back(Event{Event::Kind::rejected, w.call, std::move(asked), std::move(why), 0, 0});
  }

  Lease removeHolder(Entry& e, uint64_t token) {
    auto it = e.holders.find(token);
    Lease lease = std::move(it->second);
    e.holders.erase(it);
    e.holderOf.erase(lease.owner);
    if (e.permits == 0 && lease.mode == Mode::exclusive) e.exclusiveHolders--;
    byToken.erase(token);
    leaseTimers.erase(token);
    if (lease.session != 0)
      if (auto s = sessions.find(lease.session); s != sessions.end()) s->second.tokens.erase(token);
    return lease;
  }
};

LockTable::LockTable(LockOptions options) : options_(options), s_(std::make_unique<State>()) {}
LockTable::~LockTable() = default;
// The state lives behind a pointer, so the pointers inside it survive a move.
LockTable::LockTable(LockTable&&) noexcept = default;
LockTable& LockTable::operator=(LockTable&&) noexcept = default;

// ---- compatibility ----

// Whether `mode` may join the holders of `e` (each semaphore holder takes one
// permit). Ignores the queue, lock-delay and token supply.
bool LockTable::fits(const Entry& e, Mode mode) const {
  if (e.holders.empty()) return true;
  if (e.permits != 0) return e.holders.size() < e.permits;
  if (e.exclusiveHolders != 0 || mode == Mode::exclusive) return false;
  return e.holders.size() < options_.maxSharedHolders;
}

// Why `mode` cannot join the holders of `e`, or nullopt.
std::optional<std::string> LockTable::heldAgainst(const Entry& e, Mode mode) const {
  if (fits(e, mode)) return std::nullopt;
  const Lease& first = e.holders.begin()->second;
  auto heldBy = [&] {
    std::string s = "by " + quoted(first.owner) + " (token " + std::to_string(first.token) + ")";
    if (e.holders.size() > 1) s += " and " + plural(e.holders.size() - 1, "other", "others");
    return s;
  };
  if (e.permits != 0)
    return quoted(e.name) + " has all " + std::to_string(e.permits) + " permits taken (" +
           heldBy() + ")";
  if (e.exclusiveHolders != 0) return quoted(e.name) + " is held " + heldBy();
  if (mode == Mode::exclusive) return quoted(e.name) + " is held shared " + heldBy();
  return quoted(e.name) + " has " + std::to_string(e.holders.size()) +
         " shared holders, the most one lock may have";
}

// ---- grants ----

void LockTable::grant(Entry& e, uint64_t call, std::string owner, Mode mode, Millis ttl,
                      uint64_t session, bool immediate, Millis now, Events& out) {
  Lease lease;
  lease.name = e.name;
  lease.owner = std::move(owner);
  lease.token = nextToken_++;
  lease.mode = mode;
  lease.permits = e.permits;
  lease.session = session;
  lease.expiresAt = now + ttl;
  out.push_back(Event{Event::Kind::granted, call, lease, std::nullopt, 0, 0});
  s_->addHolder(e, std::move(lease));
  s_->stats.grants++;
  (immediate ? s_->stats.grantsImmediate : s_->stats.grantsAfterWait)++;
}

// Grants from the head of the queue while the head fits: never past a waiter
// that does not (no barging), so the order of grants is the order of the queue.
void LockTable::grantPass(Entry& e, Millis now, Events& out) {
  if (e.delayedUntil != 0) {
    s_->unstarve(e);  // the delay's end runs a pass
    return;
  }
  while (!e.queue.empty()) {
    Waiter& head = e.queue.front();
    if (!fits(e, head.mode)) break;
    if (!tokenAvailable()) {
      if (!head.stalled) {
        head.stalled = true;
        s_->stats.tokenStalls++;
      }
      s_->starve(e);
      return;
    }
    Waiter w = s_->unlink(e, e.queue.begin());
    grant(e, w.call, std::move(w.owner), w.mode, w.ttl, w.session, false, now, out);
  }
  s_->unstarve(e);
}

void LockTable::settle(Entry& e, Millis now, Events& out) {
  grantPass(e, now, out);
  s_->eraseIfIdle(e, options_.retainNames);
}

// ---- ends of leases, waits and sessions ----

void LockTable::startDelay(Entry& e, Millis at) {
  if (options_.lockDelay <= 0) return;
  e.delayedUntil = std::max(e.delayedUntil, at + options_.lockDelay);
  s_->delayTimers.set(e.name, e.delayedUntil);
}

// A waiter left its queue: those behind it may fit now, if it was the head.
void LockTable::waiterLeft(Entry& e, bool wasHead, Millis now, Events& out) {
  if (wasHead) {
    settle(e, now, out);
  } else {
    s_->eraseIfIdle(e, options_.retainNames);
  }
}

uint32_t LockTable::endSession(uint64_t id, bool timedOut, Millis at, Millis now, Events& out) {
  auto node = s_->sessions.extract(id);
  const Session& session = node.mapped();
  s_->sessionTimers.erase(id);
  // Its waiters first, so that no grant below goes to a call of this session;
  // the grants wait until every lease is gone, each entry settled once.
  std::vector<Entry*> touched;
  std::unordered_set<Entry*> seen;
  auto touch = [&](Entry* e) {
    if (seen.insert(e).second) touched.push_back(e);
  };
  std::string why = "session " + std::to_string(id) + (timedOut ? " timed out" : " closed");
  for (uint64_t call : session.calls) {
    auto place = s_->byCall.find(call);
    if (place == s_->byCall.end()) continue;
    Entry* e = place->second.entry;
    Waiter w = s_->unlink(*e, place->second.waiter);
    State::reject(*e, w, conflict(why), out);
    s_->stats.waitersDropped++;
    touch(e);
  }
  uint32_t ended = 0;
  for (uint64_t token : session.tokens) {
    auto holder = s_->byToken.find(token);
    if (holder == s_->byToken.end()) continue;
    Entry* e = holder->second;
    Lease lease = s_->removeHolder(*e, token);
    if (timedOut) {
      s_->stats.lost++;
      startDelay(*e, at);
    } else {
      s_->stats.releases++;
    }
    out.push_back(Event{timedOut ? Event::Kind::lost : Event::Kind::released, 0, std::move(lease),
                        std::nullopt, 0, 0});
    ended++;
    touch(e);
  }
  out.push_back(Event{Event::Kind::sessionClosed, 0, {}, std::nullopt, id, session.timeout});
  for (Entry* e : touched) settle(*e, now, out);
  return ended;
}

void LockTable::advance(Millis now, Events& out) {
  // One timer at a time, earliest first; at one instant, whatever frees
  // capacity (lease ends, session ends, lock-delay ends) goes before waits run
  // out, so a waiter whose deadline is that instant is still granted. (A tie
  // keeps the kind considered first.)
  enum Which { lease, session, delay, wait, none };
  for (;;) {
    Which which = none;
    Millis at = 0;
    auto consider = [&](Which w, std::optional<Millis> deadline) {
      if (deadline && *deadline <= now && (which == none || *deadline < at)) {
        which = w;
        at = *deadline;
      }
    };
    if (auto t = s_->leaseTimers.top()) consider(lease, t->first);
    if (auto t = s_->sessionTimers.top()) consider(session, t->first);
    if (auto t = s_->delayTimers.top()) consider(delay, t->first);
    if (auto t = s_->waitTimers.top()) consider(wait, t->first);
    switch (which) {
      case none:
        return;
      case lease: {
        uint64_t token = s_->leaseTimers.top()->second;
        Entry& e = *s_->byToken.at(token);
        Lease ended = s_->removeHolder(e, token);
        s_->stats.expiries++;
        out.push_back(Event{Event::Kind::expired, 0, std::move(ended), std::nullopt, 0, 0});
        startDelay(e, at);
        settle(e, now, out);
        break;
      }
      case session:
        s_->stats.sessionTimeouts++;
        endSession(s_->sessionTimers.top()->second, true, at, now, out);
        break;
      case delay: {
        Entry& e = *s_->find(s_->delayTimers.top()->second);
        s_->delayTimers.pop();
        e.delayedUntil = 0;
        settle(e, now, out);
        break;
      }
      case wait: {
        State::Place place = s_->byCall.at(s_->waitTimers.top()->second);
        Entry& e = *place.entry;
        bool wasHead = place.waiter == e.queue.begin();
        // The head of a starved entry waited on the token supply alone:
        // the service is behind on its log, not the lock held.
        bool starved = wasHead && e.starvedSeq != 0;
        Waiter w = s_->unlink(e, place.waiter);
        State::reject(
            e, w,
            starved ? Failure{Fail::unavailable,
                              "no fencing token could be reserved within " + ms(w.wait) + "; retry"}
                    : conflict("not granted within " + ms(w.wait)),
            out);
        s_->stats.waitTimeouts++;
        waiterLeft(e, wasHead, now, out);
        break;
      }
    }
  }
}

std::optional<Millis> LockTable::nextDeadline() const {
  std::optional<Millis> next;
  auto consider = [&](std::optional<Millis> d) {
    if (d && (!next || *d < *next)) next = d;
  };
  if (auto t = s_->leaseTimers.top()) consider(t->first);
  if (auto t = s_->sessionTimers.top()) consider(t->first);
  if (auto t = s_->delayTimers.top()) consider(t->first);
  if (auto t = s_->waitTimers.top()) consider(t->first);
  return next;
}

// ---- acquire ----

std::variant<Queued, Failure> LockTable::acquire(const AcquireRequest& r, uint64_t call, Millis now,
                                                 Events& out) {
  advance(now, out);
  if (auto why = checkName(r.name)) return invalid(*why);
  if (auto why = checkOwner(r.owner)) return invalid(*why);
  if (auto why = checkTtl(r.ttl, options_)) return invalid(*why);
  if (r.permits > options_.maxPermits)
    return invalid("permits: " + std::to_string(r.permits) + " is above the maximum " +
                   std::to_string(options_.maxPermits));
  if (r.permits > 0 && r.mode == Mode::shared)
    return invalid("mode: shared is for locks; a semaphore (permits " + std::to_string(r.permits) +
                   ") is taken exclusive, a permit at a time");
  if (r.wait < 0) return invalid("wait_ms: " + std::to_string(r.wait) + " is negative");
  if (r.session != 0 && !s_->sessions.count(r.session)) return noSession(r.session);

  Entry* e = s_->find(r.name);
  if (e && e->permits != r.permits) {
    if (e->permits == 0) return conflict(quoted(r.name) + " is a lock, not a semaphore");
    if (r.permits == 0) return conflict(quoted(r.name) + " is a semaphore, not a lock");
    return conflict(quoted(r.name) + " is a semaphore of " + std::to_string(e->permits) +
                    " permits, not " + std::to_string(r.permits));
  }
  if (e) {
    if (auto held = e->holderOf.find(r.owner); held != e->holderOf.end()) {
      const Lease& lease = e->holders.at(held->second);
      // Handed back only as what was asked: a shared lease is not an
      // exclusive one, nor one of another session.
      if (lease.mode != r.mode || lease.session != r.session) {
        s_->stats.conflicts++;
        return conflict(quoted(r.name) + " is held by this owner already, as " +
                        (lease.mode == Mode::shared ? "a shared" : "an exclusive") +
                        " lease (token " + std::to_string(lease.token) +
                        (lease.session ? ", session " + std::to_string(lease.session) : "") +
                        "); release it first");
      }
      s_->stats.reacquired++;
      out.push_back(Event{Event::Kind::granted, call, lease, std::nullopt, 0, 0});
      return Queued{};
    }
    if (auto waiting = e->waiterOf.find(r.owner); waiting != e->waiterOf.end()) {
      if (r.wait > 0) {
        supersede(*e, waiting->second->call, r, call, now, out);
        return Queued{};
      }
      // A try-once from an owner that waits: its newest word is not to wait,
      // so the older call leaves the queue rather than be granted a lease
      // its owner was told it did not get.
      withdraw(*e, waiting->second->call, now, out);
      e = s_->find(r.name);  // it may have gone, or been granted to others
    }
  }

  // Why it cannot be granted now; the token supply is set apart because that
  // obstacle goes away by itself.
  std::optional<std::string> obstacle;
  if (e) {
    obstacle = heldAgainst(*e, r.mode);
    if (!obstacle && e->delayedUntil != 0)
      obstacle = quoted(r.name) + " is in lock-delay for " + ms(e->delayedUntil - now);
    if (!obstacle && !e->queue.empty())
      obstacle = quoted(r.name) + " has " + plural(e->queue.size(), "waiter", "waiters");
  }
  bool stalled = !obstacle && !tokenAvailable();
  if (!obstacle && !stalled) {
    if (s_->byToken.size() >= options_.maxHolders)
      return full(std::to_string(s_->byToken.size()) +
                  " leases are held, the most the table grants at once (waiters may add up "
                  "to max_waiters more)");
    if (!e) {
      if (s_->entries.size() >= options_.maxLocks) return full(locksFull());
      e = &s_->create(r.name, r.permits);
    }
    grant(*e, call, std::string(r.owner), r.mode, r.ttl, r.session, true, now, out);
    return Queued{};
  }
  if (obstacle && r.wait == 0) {
    s_->stats.conflicts++;
    return conflict(*obstacle);
  }

  if (!e && s_->entries.size() >= options_.maxLocks) return full(locksFull());
  if (e && e->queue.size() >= options_.maxWaitersPerLock)
    return full(quoted(r.name) + " has " + std::to_string(e->queue.size()) +
                " waiters, the most one lock may have");
  if (s_->byCall.size() >= options_.maxWaiters)
    return full(std::to_string(s_->byCall.size()) +
                " waiters over all locks, the most the table holds");
  if (!e) e = &s_->create(r.name, r.permits);

  Waiter w;
  w.call = call;
  w.owner = std::string(r.owner);
  w.ttl = r.ttl;
  w.wait = std::min(r.wait, options_.maxWait);
  // Held back only by the supply, it waits for the reservation under way.
  if (stalled) w.wait = std::max(w.wait, kTokenStallWait);
  w.deadline = now + w.wait;
  w.mode = r.mode;
  w.session = r.session;
  e->queue.push_back(std::move(w));
  s_->link(*e, std::prev(e->queue.end()));
  if (stalled) grantPass(*e, now, out);  // counts the stall and marks the entry starved
  return Queued{};
}

// The owner's waiting call is answered (rejected) and the new call takes its
// place in the queue with the new request's terms.
void LockTable::supersede(Entry& e, uint64_t oldCall, const AcquireRequest& r, uint64_t call,
                          Millis now, Events& out) {
  State::WaiterAt it = s_->byCall.at(oldCall).waiter;
  State::reject(e, *it, conflict("superseded by a newer acquire of the same owner"), out);
  s_->stats.waitersSuperseded++;
  s_->unindex(e, it);
  it->call = call;
  it->ttl = r.ttl;
  it->wait = std::min(r.wait, options_.maxWait);
  it->deadline = now + it->wait;
  it->mode = r.mode;
  it->session = r.session;
  s_->link(e, it);
  // Its new mode may fit where the old one did not.
  if (it == e.queue.begin()) grantPass(e, now, out);
}

void LockTable::withdraw(Entry& e, uint64_t oldCall, Millis now, Events& out) {
  State::Place place = s_->byCall.at(oldCall);
  bool wasHead = place.waiter == e.queue.begin();
  Waiter w = s_->unlink(e, place.waiter);
  State::reject(e, w, conflict("superseded by a newer acquire of the same owner"), out);
  s_->stats.waitersSuperseded++;
  waiterLeft(e, wasHead, now, out);
}

Failure LockTable::full(std::string message) {
  s_->stats.refusedFull++;
  return exhausted(std::move(message));
}

std::string LockTable::locksFull() const {
  return std::to_string(s_->entries.size()) + " locks are in use, the most the table holds";
}

// ---- release and renew ----

bool LockTable::sessionOverdue(uint64_t session, Millis now) const {
  if (session == 0) return false;
  auto it = s_->sessions.find(session);
  return it == s_->sessions.end() || it->second.deadline <= now;
}

// Why `owner` may not release or renew lease `token` of `name`, or nullopt.
// Called after advance(now), so every holder left is live.
std::optional<Failure> LockTable::checkHolder(std::string_view name, std::string_view owner,
                                              uint64_t token) const {
  const Entry* e = s_->find(name);
  if (!e || e->holders.empty()) return conflict(quoted(name) + " is not held");
  std::string tok = "token " + std::to_string(token);
  auto it = e->holders.find(token);
  if (it == e->holders.end()) {
    // The first few holders are named; a shared lock may have thousands.
    std::string by = e->holders.size() == 1 ? "token " : "tokens ";
    size_t shown = 0;
    for (auto h = e->holders.begin(); h != e->holders.end() && shown < 3; ++h, ++shown)
      by += (shown ? ", " : "") + std::to_string(h->first);
    if (e->holders.size() > shown)
      by += " and " + std::to_string(e->holders.size() - shown) + " more";
    return conflict(tok + " does not hold " + quoted(name) + " (held by " + by + ")");
  }
  const Lease& held = it->second;
  if (held.owner != owner)
    return conflict(tok + " of " + quoted(name) + " is held by " + quoted(held.owner) + ", not " +
                    quoted(owner));
  return std::nullopt;
}

// Whether `owner`'s lease `token` of `name` ran out by `now` (or its session
// did) though advance has not yet ended it: then that is the answer, rather
// than the lease being unknown once advance has run.
std::optional<Failure> LockTable::endedUnseen(std::string_view name, std::string_view owner,
                                              uint64_t token, Millis now) const {
  const Entry* e = s_->find(name);
  if (!e) return std::nullopt;
  auto it = e->holders.find(token);
  if (it == e->holders.end() || it->second.owner != owner) return std::nullopt;
  const Lease& held = it->second;
  std::string lease = "lease of token " + std::to_string(token) + " on " + quoted(name);
  if (held.expiresAt <= now) return conflict(lease + " expired");
  if (sessionOverdue(held.session, now))
    return conflict(lease + " was lost: session " + std::to_string(held.session) + " timed out");
  return std::nullopt;
}

std::optional<Failure> LockTable::release(std::string_view name, std::string_view owner,
                                          uint64_t token, Millis now, Events& out) {
  std::optional<std::string> bad = checkName(name);
  if (!bad) bad = checkOwner(owner);
  std::optional<Failure> refused = bad ? invalid(*bad) : endedUnseen(name, owner, token, now);
  advance(now, out);
  if (!refused) refused = checkHolder(name, owner, token);
  if (refused) return refused;
  Entry& e = *s_->find(name);
  Lease lease = s_->removeHolder(e, token);
  s_->stats.releases++;
  out.push_back(Event{Event::Kind::released, 0, std::move(lease), std::nullopt, 0, 0});
  settle(e, now, out);
  return std::nullopt;
}

std::variant<Millis, Failure> LockTable::renew(std::string_view name, std::string_view owner,
                                               uint64_t token, Millis ttl, Millis now,
                                               Events& out) {
  std::optional<std::string> bad = checkName(name);
  if (!bad) bad = checkOwner(owner);
  if (!bad) bad = checkTtl(ttl, options_);
  std::optional<Failure> refused = bad ? invalid(*bad) : endedUnseen(name, owner, token, now);
  advance(now, out);
  if (!refused) refused = checkHolder(name, owner, token);
  if (refused) return *refused;
  Lease& lease = s_->find(name)->holders.at(token);
  lease.expiresAt = now + ttl;
  s_->leaseTimers.set(token, lease.expiresAt);
  s_->stats.renewals++;
  out.push_back(Event{Event::Kind::renewed, 0, lease, std::nullopt, 0, 0});
  return lease.expiresAt;
}

// ---- reading ----

std::optional<LockView> LockTable::inspect(std::string_view name, Millis now) const {
  const Entry* e = s_->find(name);
  if (!e) return std::nullopt;
  LockView view;
  view.name = e->name;
  view.permits = e->permits;
  view.lastToken = e->lastToken;
  if (e->delayedUntil > now) view.delayedUntil = e->delayedUntil;
  for (auto& [token, lease] : e->holders) {
    // A lease that ended by now is gone, and its end starts a lock-delay.
    Millis end = lease.expiresAt;
    if (lease.session != 0) {
      auto s = s_->sessions.find(lease.session);
      end = std::min(end, s == s_->sessions.end() ? now : s->second.deadline);
    }
    if (end > now) {
      view.holders.push_back(lease);
    } else if (options_.lockDelay > 0 && end + options_.lockDelay > now) {
      view.delayedUntil = std::max(view.delayedUntil, end + options_.lockDelay);
    }
  }
  for (const Waiter& w : e->queue)
    if (w.deadline > now && !sessionOverdue(w.session, now)) view.waiters++;
  if (view.holders.empty() && view.waiters == 0 && view.delayedUntil == 0) return std::nullopt;
  return view;
}

Validation LockTable::validate(std::string_view name, uint64_t token, Millis now) const {
  Validation v;
  if (const Entry* e = s_->find(name)) {
    v.current = e->lastToken;
    if (auto it = e->holders.find(token); it != e->holders.end())
      v.valid = it->second.expiresAt > now && !sessionOverdue(it->second.session, now);
  } else if (auto r = s_->retainedAt.find(name); r != s_->retainedAt.end()) {
    v.current = r->second->second;
  }
  return v;
}

// ---- sessions ----

std::variant<std::pair<uint64_t, Millis>, Failure> LockTable::openSession(Millis timeout,
                                                                          Millis now, Events& out) {
  advance(now, out);
  if (s_->sessions.size() >= options_.maxSessions)
    return full(std::to_string(s_->sessions.size()) +
                " sessions are open, the most the table holds");
  if (!tokenAvailable()) return Failure{Fail::unavailable, "token supply being reserved; retry"};
  timeout = std::clamp(timeout, options_.minSessionTimeout, options_.maxSessionTimeout);
  uint64_t id = nextToken_++;
  Session& s = s_->sessions[id];
  s.timeout = timeout;
  s.deadline = now + timeout;
  s_->sessionTimers.set(id, s.deadline);
  out.push_back(Event{Event::Kind::sessionOpened, 0, {}, std::nullopt, id, timeout});
  return std::pair{id, timeout};
}

std::variant<Millis, Failure> LockTable::heartbeat(uint64_t session, Millis now) {
  // No events to report here, so no advance: a session already past its
  // deadline counts as gone, and the next advance ends it.
  auto it = s_->sessions.find(session);
  if (it == s_->sessions.end() || it->second.deadline <= now) return noSession(session);
  it->second.deadline = now + it->second.timeout;
  s_->sessionTimers.set(session, it->second.deadline);
  return it->second.timeout;
}

std::variant<uint32_t, Failure> LockTable::closeSession(uint64_t session, Millis now, Events& out) {
  advance(now, out);
  if (!s_->sessions.count(session)) return noSession(session);
  return endSession(session, false, now, now, out);
}

// ---- cancel and tokens ----

bool LockTable::cancel(uint64_t call, Millis now, Events& out) {
  advance(now, out);
  auto place = s_->byCall.find(call);
  if (place == s_->byCall.end()) return false;
  Entry& e = *place->second.entry;
  bool wasHead = place->second.waiter == e.queue.begin();
  s_->unlink(e, place->second.waiter);
  s_->stats.waitersDropped++;
  waiterLeft(e, wasHead, now, out);
  return true;
}

void LockTable::setTokenLimit(uint64_t limit, Millis now, Events& out) {
  advance(now, out);
  if (limit <= tokenLimit_) return;
  tokenLimit_ = limit;
  // In the order they ran out; one that runs out again keeps its place.
  std::vector<std::string> names;
  for (auto& [seq, e] : s_->starved) names.push_back(e->name);
  for (auto& name : names) {
    if (!tokenAvailable()) break;
    if (Entry* e = s_->find(name)) settle(*e, now, out);
  }
}

bool LockTable::tokensLow() const { return tokenLimit_ - nextToken_ < options_.tokenLowWater; }

// ---- recovery ----

namespace {
[[noreturn]] void refuse(const std::string& message) { throw std::invalid_argument(message); }
}  // namespace

// Restored ids and tokens are never issued again; the limit follows only so
// far that nothing more may be issued before the next reservation.
void LockTable::passToken(uint64_t used) {
  nextToken_ = std::max(nextToken_, used + 1);
  tokenLimit_ = std::max(tokenLimit_, nextToken_);
}

void LockTable::restoreSession(uint64_t id, Millis timeout, Millis now) {
  std::string where = "restoreSession: session " + std::to_string(id);
  if (id == 0) refuse(where + ": id 0 is never issued");
  if (timeout <= 0) refuse(where + ": timeout " + std::to_string(timeout) + " is not positive");
  if (s_->sessions.count(id)) refuse(where + ": restored twice");
  if (s_->byToken.count(id)) refuse(where + ": the id is a lease's token");
  Session& s = s_->sessions[id];
  s.timeout = timeout;
  s.deadline = now + timeout;
  s_->sessionTimers.set(id, s.deadline);
  passToken(id);
}

void LockTable::restoreLease(const Lease& l) {
  std::string where = "restoreLease: token " + std::to_string(l.token) + " on " + quoted(l.name);
  if (auto why = checkName(l.name)) refuse(where + ": " + *why);
  if (auto why = checkOwner(l.owner)) refuse(where + ": " + *why);
  if (l.token == 0) refuse(where + ": token 0 is never issued");
  if (s_->byToken.count(l.token) || s_->sessions.count(l.token))
    refuse(where + ": the token is already in use");
  if (l.permits != 0 && l.mode == Mode::shared) refuse(where + ": a semaphore is never shared");
  if (l.session != 0 && !s_->sessions.count(l.session))
    refuse(where + ": session " + std::to_string(l.session) + " is not restored");
  Entry* e = s_->find(l.name);
  if (e) {
    if (e->permits != l.permits)
      refuse(where + ": permits " + std::to_string(l.permits) + ", but the name has " +
             std::to_string(e->permits));
    if (auto other = e->holderOf.find(l.owner); other != e->holderOf.end())
      refuse(where + ": owner " + quoted(l.owner) + " already holds it with token " +
             std::to_string(other->second));
    if (e->permits != 0 && e->holders.size() >= e->permits)
      refuse(where + ": more holders than its " + std::to_string(e->permits) + " permits");
    if (e->permits == 0 && (e->exclusiveHolders != 0 || l.mode == Mode::exclusive))
      refuse(where + ": an exclusive holder beside another holder");
  } else {
    e = &s_->create(l.name, l.permits);
  }
  s_->addHolder(*e, l);
  passToken(l.token);
}

void LockTable::restoreRetained(std::string_view name, uint64_t lastToken) {
  std::string where = "restoreRetained: " + quoted(name);
  if (auto why = checkName(name)) refuse(where + ": " + *why);
  if (lastToken == 0) refuse(where + ": token 0 is never issued");
  passToken(lastToken);
  // A log names a name once per time it was freed, and a snapshot names live
  // names too: the highest token wins, and the latest mention counts as newest.
  if (Entry* e = s_->find(name)) {
    e->lastToken = std::max(e->lastToken, lastToken);
    return;
  }
  if (auto r = s_->retainedAt.find(name); r != s_->retainedAt.end()) {
    lastToken = std::max(lastToken, r->second->second);
    s_->retained.erase(r->second);
    s_->retainedAt.erase(r);
  }
  s_->retain(std::string(name), lastToken, options_.retainNames);
}

void LockTable::restoreDelay(std::string_view name, uint32_t permits, Millis until, Millis now) {
  std::string where = "restoreDelay: " + quoted(name);
  if (auto why = checkName(name)) refuse(where + ": " + *why);
  if (until <= now) return;  // over while the service was down
  Entry* e = s_->find(name);
  if (e && e->permits != permits)
    refuse(where + ": permits " + std::to_string(permits) + ", but the name has " +
           std::to_string(e->permits));
  if (!e) e = &s_->create(name, permits);
  e->delayedUntil = std::max(e->delayedUntil, until);
  s_->delayTimers.set(e->name, e->delayedUntil);
}

void LockTable::restoreTokens(uint64_t next) {
  nextToken_ = std::max(nextToken_, next);
  tokenLimit_ = std::max(tokenLimit_, nextToken_);
}

// ---- snapshot and stats ----

std::vector<Lease> LockTable::leases() const {
  std::vector<Lease> all;
  all.reserve(s_->byToken.size());
  for (auto& [token, e] : s_->byToken) all.push_back(e->holders.at(token));
  std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.token < b.token; });
  return all;
}

std::vector<std::pair<uint64_t, Millis>> LockTable::sessions() const {
  std::vector<std::pair<uint64_t, Millis>> all;
  all.reserve(s_->sessions.size());
  for (auto& [id, s] : s_->sessions) all.emplace_back(id, s.timeout);
  std::sort(all.begin(), all.end());
  return all;
}

std::vector<std::pair<std::string, uint64_t>> LockTable::retained() const {
  return {s_->retained.begin(), s_->retained.end()};
}

std::vector<LockTable::Delay> LockTable::delays() const {
  std::vector<Delay> all;
  for (auto& [name, e] : s_->entries)
    if (e.delayedUntil != 0) all.push_back({name, e.permits, e.delayedUntil});
  std::sort(all.begin(), all.end(), [](auto& a, auto& b) { return a.name < b.name; });
  return all;
}

std::vector<std::pair<std::string, uint64_t>> LockTable::lastTokens() const {
  std::vector<std::pair<std::string, uint64_t>> all;
  all.reserve(s_->entries.size());
  for (auto& [name, e] : s_->entries)
    if (e.lastToken != 0) all.emplace_back(name, e.lastToken);
  std::sort(all.begin(), all.end());
  return all;
}

LockStats LockTable::stats() const {
  LockStats st = s_->stats;
  st.locks = s_->entries.size();
  st.holders = s_->byToken.size();
  st.waiters = s_->byCall.size();
  st.sessions = s_->sessions.size();
  st.retained = s_->retained.size();
  return st;
}

}  // namespace zmesh::lock
