// The lock service's state: locks and semaphores, their holders (leases with
// fencing tokens), their FIFO wait queues, sessions, lock-delay, and the
// bounded memory of freed names' last tokens. Pure and single-threaded: time
// (monotonic ms) is passed into every call, nothing blocks, and what happens
// as a result of a call — a waiter granted, a lease expired, a session lost —
// is appended to the caller's `Events` for the adapter to answer, journal and
// publish.
//
// Fairness: a lock with waiters grants nobody out of turn; when capacity frees
// up, grants go to the head of its queue — one exclusive waiter, or the run of
// shared waiters at the head, or as many waiters as free permits — and only
// those granted get an event (no thundering herd). A waiter whose wait ran out
// or whose session ended leaves the queue at that moment, so it is never
// granted a lock nobody will use.
//
// Tokens: one counter for the whole table (so every grant's token is greater
// than every token ever issued, for any name), issued only below the limit the
// adapter has made durable (setTokenLimit). Grants that find the supply spent
// wait in their queue until the limit moves; tokensLow() tells the adapter to
// reserve the next block before that happens. Session ids come from the same
// counter.
//
// Timers: leases, waits, sessions and lock-delays each sit in a min-heap keyed
// by deadline; advance(now) pops what is due. Nothing scans all locks.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "timer_heap.h"

namespace zmesh::lock {

enum class Mode : uint8_t { exclusive, shared };

inline constexpr size_t kMaxNameBytes = 200;
inline constexpr size_t kMaxOwnerBytes = 128;

// Names: 1-200 of [A-Za-z0-9._:@-]; owners: 1-128 printable ASCII (0x20-0x7e).
// Why not, naming the value's fault; or nullopt.
std::optional<std::string> checkName(std::string_view name);
std::optional<std::string> checkOwner(std::string_view owner);

struct LockOptions {
  Millis minTtl = 10;
  Millis maxTtl = 3'600'000;        // 1 h
  Millis maxWait = 60'000;          // a wait asked for longer is cut to this
  Millis lockDelay = 0;             // after a lease expires (not after a release)
  Millis minSessionTimeout = 1000;  // asked-for session timeouts are clamped here
  Millis maxSessionTimeout = 600'000;
  uint32_t maxPermits = 10'000;       // a semaphore's most permits
  size_t maxLocks = 1'000'000;        // names with a holder, a waiter or a lock-delay
  size_t maxWaiters = 100'000;        // waiters over all locks
  size_t maxWaitersPerLock = 10'000;  // one queue's length
  size_t maxSharedHolders = 10'000;   // shared holders of one lock
  size_t maxHolders = 1'000'000;      // leases at once (beyond: only waiters already queued)
  size_t maxSessions = 100'000;
  size_t retainNames = 100'000;  // freed names whose last token validate() remembers
  uint64_t tokenLowWater = 500;  // tokensLow() once fewer than this remain
};

enum class Fail : uint8_t {
  invalidArgument,    // the request itself is wrong (name, owner, ttl, permits 0 vs N)
  conflict,           // not the holder, wrong token, expired, not granted in time
  notFound,           // no such lock (inspect) or session
  resourceExhausted,  // a bound of the table is reached (locks, waiters, sessions)
  unavailable,        // no token may be issued until the next reservation is durable; retry
};
struct Failure {
  Fail code;
  std::string message;
};

struct AcquireRequest {
  std::string_view name;
  std::string_view owner;
  Millis ttl = 0;   // minTtl..maxTtl, else invalidArgument
  Millis wait = 0;  // 0: try once; cut to maxWait
  Mode mode = Mode::exclusive;
  uint32_t permits = 0;  // 0: a lock; N: a semaphore of N permits (mode must be exclusive)
  uint64_t session = 0;  // 0: none; else must be open (notFound otherwise)
};

struct Lease {
  std::string name;
  std::string owner;
  uint64_t token = 0;
  Mode mode = Mode::exclusive;
  uint32_t permits = 0;
  uint64_t session = 0;
  Millis expiresAt = 0;
};

// What a call set in motion, in the order it happened.
struct Event {
  enum class Kind : uint8_t {
    granted,        // `call` (an acquire's id) got `lease`; also the immediate grant of acquire()
    rejected,       // `call` will not be granted: `failure` says why (wait ran out,
                    // its session ended, a newer call of the same owner took its place);
                    // `lease` names the lock and owner asked for, with token 0
    released,       // `lease` ended by release() or closeSession()
    expired,        // `lease` ran out of time
    lost,           // `lease` ended because its session timed out
    renewed,        // `lease` has a new expiresAt (renew())
    sessionOpened,  // `session` (with `sessionTimeout`)
    sessionClosed,  // `session` ended: closed or timed out
  };
  Kind kind;
  uint64_t call = 0;
  Lease lease;
  std::optional<Failure> failure;
  uint64_t session = 0;
  Millis sessionTimeout = 0;
};
using Events = std::vector<Event>;

struct Queued {};  // acquire(): the answer comes later as a granted or rejected event

struct LockView {
  std::string name;
  std::vector<Lease> holders;  // in grant order
  size_t waiters = 0;
  uint32_t permits = 0;
  uint64_t lastToken = 0;
  Millis delayedUntil = 0;  // 0: no lock-delay running
};

struct Validation {
  bool valid = false;    // `token` is held now
  uint64_t current = 0;  // highest token issued for the name; 0 if unknown/forgotten
};

// Gauges (what the table holds now), then counters since construction.
struct LockStats {
  uint64_t locks = 0, holders = 0, waiters = 0, sessions = 0, retained = 0;
  uint64_t grants = 0, grantsImmediate = 0, grantsAfterWait = 0;  // new leases
  uint64_t reacquired = 0;  // acquires answered with the lease the owner already held
  uint64_t releases = 0;    // by release() and closeSession()
  uint64_t expiries = 0, lost = 0, renewals = 0;
  uint64_t waitTimeouts = 0, waitersSuperseded = 0;
  uint64_t waitersDropped = 0;  // waiters gone because their session ended, or by cancel()
  uint64_t conflicts = 0;       // try-once acquires refused because the lock was taken
  uint64_t refusedFull = 0;     // resourceExhausted answers (locks, waiters, sessions)
  uint64_t sessionTimeouts = 0;
  uint64_t forgotten = 0;    // retained names dropped to stay within retainNames
  uint64_t tokenStalls = 0;  // grants held back (each once) because the token supply was spent
};

class LockTable {
 public:
  explicit LockTable(LockOptions options = {});
  ~LockTable();
  LockTable(LockTable&&) noexcept;
  LockTable& operator=(LockTable&&) noexcept;

  // `call` is the adapter's id for this acquire (unique, increasing); its
  // answer is a granted or rejected event with that id — in `out` at once
  // when it need not wait. Returns the failure when the request is refused
  // outright (nothing joins the queue, no event). An owner that already
  // holds the lock gets its lease back unchanged (asked in the same mode and
  // session; otherwise conflict); an owner already waiting
  // in the queue hands its place to this call (the older call is rejected);
  // with wait 0 the older call leaves the queue (rejected) and this one is
  // tried once as any other (its owner's newest word is not to wait, so no
  // lease it was told it did not get is granted later).
  std::variant<Queued, Failure> acquire(const AcquireRequest& request, uint64_t call, Millis now,
                                        Events& out);
  std::optional<Failure> release(std::string_view name, std::string_view owner, uint64_t token,
                                 Millis now, Events& out);
  // The new expiresAt, or the failure.
  std::variant<Millis, Failure> renew(std::string_view name, std::string_view owner, uint64_t token,
                                      Millis ttl, Millis now, Events& out);
  std::optional<LockView> inspect(std::string_view name, Millis now) const;
  Validation validate(std::string_view name, uint64_t token, Millis now) const;

  // The session id, and its timeout clamped to the options' range.
  std::variant<std::pair<uint64_t, Millis>, Failure> openSession(Millis timeout, Millis now,
                                                                 Events& out);
  // The session's timeout; notFound once it is past its deadline, even
  // before advance has ended it (heartbeat does not advance: no events).
  std::variant<Millis, Failure> heartbeat(uint64_t session, Millis now);
  // How many leases it released, or notFound.
  std::variant<uint32_t, Failure> closeSession(uint64_t session, Millis now, Events& out);

  // Everything due at `now`: expired leases (and the grants they allow),
  // waits run out, sessions timed out, lock-delays ended.
  void advance(Millis now, Events& out);
  // The earliest deadline of any timer, for the adapter's wake-up.
  std::optional<Millis> nextDeadline() const;

  // The adapter forgets a waiting call it can no longer answer (its
  // deadline passed, the server is stopping): no event for it, but the
  // waiters behind it may be granted now (events in `out`). False when
  // `call` is not waiting.
  bool cancel(uint64_t call, Millis now, Events& out);

  // Tokens [nextToken(), limit) may be issued: the adapter calls this once a
  // reservation up to `limit` is durable; grants held back run now.
  void setTokenLimit(uint64_t limit, Millis now, Events& out);
  uint64_t nextToken() const { return nextToken_; }
  uint64_t tokenLimit() const { return tokenLimit_; }
  // Fewer than tokenLowWater tokens are left below the limit.
  bool tokensLow() const;

  // Recovery, before any other call: a lease and a session as the log or the
  // snapshot had them (expiresAt already moved onto this clock), the freed
  // names remembered, and where tokens resume. A restored lease's session
  // must be restored first. Throws std::invalid_argument on state that
  // cannot be (a name or owner that checkName/checkOwner refuse, two
  // exclusive holders, more holders than permits, an unknown session, one
  // owner holding a name twice, a token or id given twice). A name given to
  // restoreRetained more than once keeps its highest token, as newest; a live
  // name given to it takes the token as its last if higher. Restored ids and
  // tokens move nextToken() past them, and the limit only up to it: nothing
  // is issued before setTokenLimit.
  void restoreSession(uint64_t id, Millis timeout, Millis now);
  void restoreLease(const Lease& lease);
  void restoreRetained(std::string_view name, uint64_t lastToken);
  void restoreTokens(uint64_t next);
  // A lock-delay running until `until` (already on this clock; one already
  // over is ignored), so an expiry just before a crash still holds grants back.
  void restoreDelay(std::string_view name, uint32_t permits, Millis until, Millis now);

  // Everything a snapshot needs, in a stable order: leases by token,
  // sessions by id, retained names oldest first.
  std::vector<Lease> leases() const;
  std::vector<std::pair<uint64_t, Millis>> sessions() const;  // id, timeout
  std::vector<std::pair<std::string, uint64_t>> retained() const;
  // The last token of every live name (held, waited for or in lock-delay), by
  // name: a snapshot keeps them, as validate() reports them after a restart.
  std::vector<std::pair<std::string, uint64_t>> lastTokens() const;
  // The lock-delays running, by name.
  struct Delay {
    std::string name;
    uint32_t permits = 0;
    Millis until = 0;
  };
  std::vector<Delay> delays() const;

  LockStats stats() const;
  const LockOptions& options() const { return options_; }

 private:
  // The implementation's own: one entry per live name (holders, a queue, a
  // lock-delay), sessions with the tokens and calls tied to them, the
  // retained names in forgetting order, and the timer heaps — all in State,
  // defined in lock_table.cpp.
  struct Waiter;
  struct Entry;
  struct Session;
  struct State;

  bool fits(const Entry& e, Mode mode) const;
  std::optional<std::string> heldAgainst(const Entry& e, Mode mode) const;
  bool tokenAvailable() const { return nextToken_ < tokenLimit_; }
  void grant(Entry& e, uint64_t call, std::string owner, Mode mode, Millis ttl, uint64_t session,
             bool immediate, Millis now, Events& out);
  void grantPass(Entry& e, Millis now, Events& out);
  void settle(Entry& e, Millis now, Events& out);  // a grant pass, then erase if idle
  void startDelay(Entry& e, Millis at);
  void waiterLeft(Entry& e, bool wasHead, Millis now, Events& out);
  uint32_t endSession(uint64_t id, bool timedOut, Millis at, Millis now, Events& out);
  void supersede(Entry& e, uint64_t oldCall, const AcquireRequest& r, uint64_t call, Millis now,
                 Events& out);
  void withdraw(Entry& e, uint64_t oldCall, Millis now, Events& out);
  Failure full(std::string message);
  std::string locksFull() const;
  bool sessionOverdue(uint64_t session, Millis now) const;
  std::optional<Failure> checkHolder(std::string_view name, std::string_view owner,
                                     uint64_t token) const;
  std::optional<Failure> endedUnseen(std::string_view name, std::string_view owner, uint64_t token,
                                     Millis now) const;
  void passToken(uint64_t used);

  LockOptions options_;
  uint64_t nextToken_ = 1;
  uint64_t tokenLimit_ = 1;
  std::unique_ptr<State> s_;
};

}  // namespace zmesh::lock
