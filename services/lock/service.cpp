#include "service.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "zmesh/rpc/frame.h"
#include "zmesh/rpc/status.h"

namespace zmesh::lock {
namespace {

constexpr const char* kJournalName = "lock";

kj::Exception toException(const Failure& f) {
  switch (f.code) {
    case Fail::invalidArgument:
      return rpc::statusException(rpc::StatusCode::INVALID_ARGUMENT, f.message);
    case Fail::conflict:
      return rpc::statusException(rpc::StatusCode::CONFLICT, f.message);
    case Fail::notFound:
      return rpc::statusException(rpc::StatusCode::NOT_FOUND, f.message);
    case Fail::resourceExhausted:  // the service's own bounds: busy, not a quota (DESIGN.md §5)
      return rpc::statusException(rpc::StatusCode::UNAVAILABLE, f.message);
    case Fail::unavailable:
      return rpc::statusException(rpc::StatusCode::UNAVAILABLE, f.message);
  }
  return rpc::statusException(rpc::StatusCode::INTERNAL, f.message);
}

std::string_view view(capnp::Text::Reader t) { return {t.cStr(), t.size()}; }

}  // namespace

LockService::LockService(rpc::Server& server, rpc::Publisher* publisher, storage::Env& env,
                         LockServiceOptions options, LockClocks clocks)
    : server_(server),
      publisher_(publisher),
      env_(env),
      options_(std::move(options)),
      clocks_(std::move(clocks)),
      table_(options_.table) {
  recover();
  server_.stats().add([this](rpc::MetricsOut& out) {
    auto s = table_.stats();
    out.gauge("lock.locks", "Locks held now", s.locks);
    out.gauge("lock.holders", "Holders now (a shared lock has several)", s.holders);
    out.gauge("lock.waiters", "Waiters queued now", s.waiters);
    out.gauge("lock.sessions", "Sessions open now", s.sessions);
    out.gauge("lock.retained_names", "Free names kept for their fencing token", s.retained);
    out.counter("lock.grants", "Locks granted", s.grants);
    out.counter("lock.grants_immediate", "Locks granted at once", s.grantsImmediate);
    out.counter("lock.grants_after_wait", "Locks granted to a waiter", s.grantsAfterWait);
    out.counter("lock.reacquired", "Acquires by the current holder", s.reacquired);
    out.counter("lock.releases", "Locks released", s.releases);
    out.counter("lock.expiries", "Leases that ran out", s.expiries);
    out.counter("lock.lost", "Locks lost by their holder", s.lost);
    out.counter("lock.renewals", "Leases renewed", s.renewals);
    out.counter("lock.wait_timeouts", "Waits that ran out", s.waitTimeouts);
    out.counter("lock.waiters_superseded", "Waiters replaced by a newer wait of theirs",
                s.waitersSuperseded);
    out.counter("lock.waiters_dropped", "Waiters dropped", s.waitersDropped);
    out.counter("lock.conflicts", "Acquires refused: held by another", s.conflicts);
    out.counter("lock.refused_full", "Acquires refused: the table is full", s.refusedFull);
    out.counter("lock.session_timeouts", "Sessions ended by their timeout", s.sessionTimeouts);
    out.counter("lock.names_forgotten", "Free names forgotten", s.forgotten);
    out.counter("lock.token_stalls", "Grants that waited for the token bound", s.tokenStalls);
    out.gauge("lock.next_token", "The next fencing token", table_.nextToken());
    out.gauge("lock.token_limit", "Fencing tokens recorded durably up to", table_.tokenLimit());
    out.counter("lock.events_published", "Lock events published", published_);
    out.counter("lock.durable_waits", "Replies that waited for durability", fence_.waits());
    out.gauge("lock.waiting_for_durable", "Replies held back for durability now", fence_.waiting());
    out.gauge("lock.pending_acquires", "Acquires waiting now", calls_.size());
    if (journal_) journal_->collect(out);
  });
  reserveTokens();
  armWake();
}

LockService::~LockService() { close(); }

// ---- time ----

uint64_t LockService::remainingMs(Millis expiresAt) const {
  return static_cast<uint64_t>(std::max<Millis>(0, expiresAt - clocks_.monotonic()));
}

int64_t LockService::toWall(Millis expiresAt) const {
  return clocks_.wall() + (expiresAt - clocks_.monotonic());
}

// One timer at the core's next deadline; re-armed only when that moves earlier.
void LockService::armWake() {
  auto at = table_.nextDeadline();
  if (!at) return;
  if (wakeArmedAt_ && *wakeArmedAt_ <= *at) return;
  wakeArmedAt_ = *at;
  Millis delay = std::max<Millis>(0, *at - clocks_.monotonic());
  wakeTimer_ = server_.timer()
                   .afterDelay(delay * kj::MILLISECONDS)
                   .then([this] {
                     wakeArmedAt_.reset();
                     // Not inside this continuation: wake() re-arms, replacing wakeTimer_.
                     server_.post([this] { wake(); });
                   })
                   .eagerlyEvaluate(nullptr);
}

void LockService::wake() {
  Events events;
  uint64_t issuedFrom = table_.nextToken();
  table_.advance(clocks_.monotonic(), events);
  handle(events, issuedFrom);
}

// ---- events: journal, answer, publish ----

void LockService::handle(Events& events, uint64_t issuedFrom) {
  for (auto& e : events) {
    capnp::MallocMessageBuilder record(64);
    auto r = record.initRoot<idl::LockLogRecord>();
    const Lease& l = e.lease;
    switch (e.kind) {
      case Event::Kind::granted: {
        // A token below issuedFrom was issued before this call: the grant is
        // handed back to an owner that holds it already, and was journaled then.
        const bool fresh = l.token >= issuedFrom;
        if (fresh) {
          auto g = r.initGrant();
          g.setName(l.name);
          g.setOwner(l.owner);
          g.setToken(l.token);
          g.setMode(toWire(l.mode));
          g.setPermits(l.permits);
          g.setSession(l.session);
          g.setExpiresAtMs(toWall(l.expiresAt));
          append(record, storage::Durability::policy);
        }
        whenDurable([this, call = e.call, lease = l, fresh] {
          auto it = calls_.find(call);
          if (it != calls_.end()) {
            it->second->fulfill(Granted{lease.token, lease.expiresAt});
            calls_.erase(it);
          }
          if (fresh) publish("lock.acquired", lease);
        });
        break;
      }
      case Event::Kind::rejected:
        whenDurable([this, call = e.call, failure = *e.failure] {
          auto it = calls_.find(call);
          if (it == calls_.end()) return;
          it->second->reject(toException(failure));
          calls_.erase(it);
        });
        break;
      case Event::Kind::released:
      case Event::Kind::expired:
      case Event::Kind::lost: {
        r.setFree(l.token);
        append(record, storage::Durability::policy);
        if (e.kind != Event::Kind::released && options_.table.lockDelay > 0) journalDelay(l.name);
        const char* topic = e.kind == Event::Kind::released  ? "lock.released"
                            : e.kind == Event::Kind::expired ? "lock.expired"
                                                             : "lock.lost";
        whenDurable([this, topic, lease = l] { publish(topic, lease); });
        break;
      }
      case Event::Kind::renewed: {
        auto n = r.initRenew();
        n.setToken(l.token);
        n.setExpiresAtMs(toWall(l.expiresAt));
        append(record, storage::Durability::policy);
        break;
      }
      case Event::Kind::sessionOpened: {
        auto o = r.initOpenSession();
        o.setId(e.session);
        o.setTimeoutMs(static_cast<uint64_t>(e.sessionTimeout));
        append(record, storage::Durability::policy);
        break;
      }
      case Event::Kind::sessionClosed:
        r.setCloseSession(e.session);
        append(record, storage::Durability::policy);
        break;
    }
  }
  events.clear();
  reserveTokens();
  // Only between calls' records: a snapshot holds exactly what was appended.
  maybeRewrite();
  armWake();
}

// The lock-delay an expiry or a loss began, so a restart holds grants back too.
void LockService::journalDelay(const std::string& name) {
  auto view = table_.inspect(name, clocks_.monotonic());
  if (!view || view->delayedUntil == 0) return;
  capnp::MallocMessageBuilder record(32);
  auto d = record.initRoot<idl::LockLogRecord>().initDelay();
  d.setName(name);
  d.setPermits(view->permits);
  d.setUntilMs(toWall(view->delayedUntil));
  append(record, storage::Durability::policy);
}

void LockService::publish(const char* topic, const Lease& lease) {
  if (!publisher_) return;
  capnp::MallocMessageBuilder message(64);
  auto body = message.initRoot<idl::LockEvent>();
  body.setName(lease.name);
  body.setOwner(lease.owner);
  body.setToken(lease.token);
  body.setMode(toWire(lease.mode));
  body.setSession(lease.session);
  body.setExpiresMs(remainingMs(lease.expiresAt));
  publisher_->publish<idl::LockEvent>(topic, body.asReader());
  ++published_;
}

// ---- durability ----

void LockService::append(capnp::MessageBuilder& record, storage::Durability durability,
                         std::function<void()> done) {
  // Stopping, the fence is closed: nothing more is written, so nothing more is answered.
  fence_.append(rpc::toRecord(record), durability, std::move(done));
}

void LockService::whenDurable(std::function<void()> fn) { fence_.whenDurable(std::move(fn)); }

kj::Promise<void> LockService::durable() {
  auto paf = kj::newPromiseAndFulfiller<void>();
  whenDurable([f = std::make_shared<kj::Own<kj::PromiseFulfiller<void>>>(kj::mv(paf.fulfiller))] {
    (*f)->fulfill();
  });
  return kj::mv(paf.promise);
}

// A refusal names holders and tokens: sent, like any answer, only once the
// state it describes is durable.
kj::Promise<void> LockService::refuse(const Failure& failure) {
  return durable().then([failure]() -> void { kj::throwFatalException(toException(failure)); });
}

// Tokens are issued only below a bound already fsynced, so none a client has
// seen is issued again after a crash, under any fsync policy.
void LockService::reserveTokens() {
  if (reserving_ || !table_.tokensLow() || !fatal_.empty()) return;
  uint64_t limit = std::max(table_.tokenLimit(), table_.nextToken()) + options_.tokenBlock;
  reservedTokens_ = std::max(reservedTokens_, limit);
  reserving_ = true;
  auto grant = [this, limit] {
    reserving_ = false;
    Events events;
    uint64_t issuedFrom = table_.nextToken();
    table_.setTokenLimit(limit, clocks_.monotonic(), events);
    handle(events, issuedFrom);
  };
  if (!journal_) {
    server_.post(grant);
    return;
  }
  capnp::MallocMessageBuilder record(16);
  record.initRoot<idl::LockLogRecord>().setTokens(limit);
  append(record, storage::Durability::forceSync, grant);
}

void LockService::recover() {
  if (options_.dataDir.empty()) {
    spdlog::warn("lock: no data directory: leases and tokens are NOT persisted");
    return;
  }
  env_.createDirs(options_.dataDir);
  lock_ = env_.lockDir(options_.dataDir);
  auto recovered = storage::Journal::recover(env_, options_.dataDir, kJournalName);
  LockLogState state;
  if (recovered.snapshot) replaySnapshot(state, *recovered.snapshot);
  for (auto& bytes : recovered.records) replayRecord(state, bytes);
  if (recovered.cutBytes > 0)
    spdlog::warn("lock: cut a torn log tail of {} bytes (a crash interrupted a write)",
                 recovered.cutBytes);

  restore(table_, state, clocks_.monotonic(), clocks_.wall());
  reservedTokens_ = std::max(state.tokens, table_.nextToken());
  spdlog::info("lock: recovered {} leases, {} sessions, tokens from {} ({} log records)",
               table_.stats().holders, state.sessions.size(), state.tokens,
               recovered.records.size());
  journal_ = std::make_unique<storage::Journal>(
      env_, storage::JournalOptions{options_.dataDir, kJournalName, options_.fsync}, recovered,
      [this](std::function<void()> fn) { server_.post(std::move(fn)); },
      [this](std::string message) { onFatal(message); });
  fence_.attach(journal_.get());
  if (!recovered.records.empty()) maybeRewrite(true);
}

void LockService::maybeRewrite(bool force) {
  if (!journal_ || rewriting_ || (!force && journal_->logBytes() < options_.rewriteAfterBytes))
    return;
  // The table holds exactly what was appended (every change is appended in
  // the call that made it); the token bound is the highest one appended.
  auto snapshot = lockSnapshot(table_, reservedTokens_, clocks_.monotonic(), clocks_.wall());
  rewriting_ = true;
  journal_->rewrite(std::move(snapshot), [this] { rewriting_ = false; });
}

void LockService::close() {
  fence_.close();
  if (journal_) journal_->close();
  journal_.reset();
  lock_.reset();
}

std::pair<bool, std::string> LockService::health() const {
  if (!fatal_.empty()) return {false, "storage failed: " + fatal_};
  return {true, "serving"};
}

void LockService::onFatal(const std::string& message) {
  fatal_ = message;
  spdlog::critical("lock: storage failed, stopping: {}", message);
  server_.requestStop();
}

// ---- methods ----

kj::Promise<void> LockService::acquire(AcquireContext context) {
  auto p = context.getParams();
  AcquireRequest request{view(p.getName()),     view(p.getOwner()),    millis(p.getTtlMs()),
                         millis(p.getWaitMs()), fromWire(p.getMode()), p.getPermits(),
                         p.getSession()};
  const uint64_t call = ++nextCall_;
  Events events;
  uint64_t issuedFrom = table_.nextToken();
  auto result = table_.acquire(request, call, clocks_.monotonic(), events);
  if (auto* f = std::get_if<Failure>(&result)) {
    handle(events, issuedFrom);  // what advance() did before the refusal
    return refuse(*f);
  }
  auto paf = kj::newPromiseAndFulfiller<Granted>();
  calls_.emplace(call, kj::mv(paf.fulfiller));
  const Millis arrived = clocks_.monotonic();
  handle(events, issuedFrom);
  return paf.promise
      .then([this, context, arrived](Granted granted) mutable {
        auto r = context.getResults();
        r.setToken(granted.token);
        r.setExpiresMs(remainingMs(granted.expiresAt));
        r.setHeldMs(static_cast<uint64_t>(std::max<Millis>(0, clocks_.monotonic() - arrived)));
      })
      .attach(kj::defer([this, call] {
        // The call ended unanswered (its deadline, the server stopping): a
        // waiter nobody will hear from leaves the queue.
        if (!calls_.erase(call)) return;
        Events events;
        uint64_t issuedFrom = table_.nextToken();
        if (!table_.cancel(call, clocks_.monotonic(), events)) return;
        // Stopping, every waiting call is being dropped: the waiters behind
        // this one would be granted leases nobody hears of. The state dies
        // with the process; nothing of it is journaled.
        if (server_.stopping() || fence_.closed()) return;
        handle(events, issuedFrom);
      }));
}

kj::Promise<void> LockService::release(ReleaseContext context) {
  auto p = context.getParams();
  Events events;
  uint64_t issuedFrom = table_.nextToken();
  auto f = table_.release(view(p.getName()), view(p.getOwner()), p.getToken(), clocks_.monotonic(),
                          events);
  handle(events, issuedFrom);
  if (f) return refuse(*f);
  return durable();
}

kj::Promise<void> LockService::renew(RenewContext context) {
  auto p = context.getParams();
  Events events;
  uint64_t issuedFrom = table_.nextToken();
  auto result = table_.renew(view(p.getName()), view(p.getOwner()), p.getToken(),
                             millis(p.getTtlMs()), clocks_.monotonic(), events);
  handle(events, issuedFrom);
  if (auto* f = std::get_if<Failure>(&result)) return refuse(*f);
  Millis expiresAt = std::get<Millis>(result);
  return durable().then([this, context, expiresAt]() mutable {
    context.getResults().setExpiresMs(remainingMs(expiresAt));
  });
}

// Reads answer once everything appended before them is durable: a lease they
// show cannot be lost by a crash afterwards.
// Reads take their answer when they arrive and send it once everything
// appended before them is durable: what they show cannot be lost by a crash.
kj::Promise<void> LockService::inspect(InspectContext context) {
  std::string name = context.getParams().getName();
  if (auto why = checkName(name))
    return rpc::statusException(rpc::StatusCode::INVALID_ARGUMENT, "name: " + *why);
  auto view = table_.inspect(name, clocks_.monotonic());
  return durable().then([this, context, name, view = std::move(view)]() mutable {
    if (!view) rpc::fail(rpc::StatusCode::NOT_FOUND, "'" + name + "' is free");
    auto info = context.getResults().initInfo();
    info.setName(view->name);
    auto holders = info.initHolders(view->holders.size());
    for (size_t i = 0; i < view->holders.size(); ++i) {
      auto& h = view->holders[i];
      holders[i].setOwner(h.owner);
      holders[i].setToken(h.token);
      holders[i].setExpiresMs(remainingMs(h.expiresAt));
      holders[i].setMode(toWire(h.mode));
      holders[i].setSession(h.session);
    }
    info.setWaiters(static_cast<uint32_t>(view->waiters));
    info.setPermits(view->permits);
    info.setLastToken(view->lastToken);
    info.setDelayedMs(view->delayedUntil == 0 ? 0 : remainingMs(view->delayedUntil));
  });
}

kj::Promise<void> LockService::validate(ValidateContext context) {
  std::string name = context.getParams().getName();
  if (auto why = checkName(name))
    return rpc::statusException(rpc::StatusCode::INVALID_ARGUMENT, "name: " + *why);
  auto v = table_.validate(name, context.getParams().getToken(), clocks_.monotonic());
  return durable().then([context, v]() mutable {
    context.getResults().setValid(v.valid);
    context.getResults().setCurrent(v.current);
  });
}

kj::Promise<void> LockService::openSession(OpenSessionContext context) {
  Events events;
  uint64_t issuedFrom = table_.nextToken();
  auto result =
      table_.openSession(millis(context.getParams().getTimeoutMs()), clocks_.monotonic(), events);
  handle(events, issuedFrom);
  if (auto* f = std::get_if<Failure>(&result)) return refuse(*f);
  auto [id, timeout] = std::get<std::pair<uint64_t, Millis>>(result);
  return durable().then([context, id = id, timeout = timeout]() mutable {
    context.getResults().setSession(id);
    context.getResults().setTimeoutMs(static_cast<uint64_t>(timeout));
  });
}

kj::Promise<void> LockService::heartbeat(HeartbeatContext context) {
  // Not journaled: a restart gives every session a whole timeout anyway.
  auto result = table_.heartbeat(context.getParams().getSession(), clocks_.monotonic());
  armWake();
  if (auto* f = std::get_if<Failure>(&result)) return refuse(*f);
  context.getResults().setTimeoutMs(static_cast<uint64_t>(std::get<Millis>(result)));
  return kj::READY_NOW;
}

kj::Promise<void> LockService::closeSession(CloseSessionContext context) {
  Events events;
  uint64_t issuedFrom = table_.nextToken();
  auto result = table_.closeSession(context.getParams().getSession(), clocks_.monotonic(), events);
  handle(events, issuedFrom);
  if (auto* f = std::get_if<Failure>(&result)) return refuse(*f);
  uint32_t released = std::get<uint32_t>(result);
  return durable().then(
      [context, released]() mutable { context.getResults().setReleased(released); });
}

}  // namespace zmesh::lock
