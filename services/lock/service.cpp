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
    case Fail::resourceExhausted:
      return rpc::statusException(rpc::StatusCode::RESOURCE_EXHAUSTED, f.message);
    case Fail::unavailable:
      return rpc::statusException(rpc::StatusCode::UNAVAILABLE, f.message);
  }
  return rpc::statusException(rpc::StatusCode::INTERNAL, f.message);
}

std::string_view view(capnp::Text::Reader t) { return {t.cStr(), t.size()}; }

idl::LockMode toWire(Mode m) {
  return m == Mode::shared ? idl::LockMode::SHARED : idl::LockMode::EXCLUSIVE;
}
Mode fromWire(idl::LockMode m) {
  return m == idl::LockMode::SHARED ? Mode::shared : Mode::exclusive;
}

// A duration from the wire as the core's Millis; beyond any range the core
// accepts, so the core's own check names it.
Millis millis(uint64_t ms) { return static_cast<Millis>(std::min<uint64_t>(ms, INT64_MAX / 4)); }

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

void replaySnapshot(LockLogState& state, const std::string& bytes) {
  readRecord<idl::LockSnapshot>(bytes, "snapshot", [&](idl::LockSnapshot::Reader s) {
    state.tokens = std::max(state.tokens, s.getTokens());
    for (auto l : s.getLeases()) state.leases[l.getToken()] = leaseOf(l);
    for (auto x : s.getSessions()) state.sessions[x.getId()] = millis(x.getTimeoutMs());
    for (auto r : s.getRetained()) state.retained.emplace_back(r.getName(), r.getLastToken());
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
    }
  });
}

LockService::LockService(rpc::Server& server, rpc::Publisher* publisher, storage::Env& env,
                         LockServiceOptions options, LockClocks clocks)
    : server_(server),
      publisher_(publisher),
      env_(env),
      options_(std::move(options)),
      clocks_(std::move(clocks)),
      table_(options_.table) {
  recover();
  server_.stats().add([this](std::vector<rpc::CounterValue>& out) {
    auto add = [&](std::string name, uint64_t v) {
      out.push_back({std::move(name), static_cast<int64_t>(v)});
    };
    auto s = table_.stats();
    add("lock.locks", s.locks);
    add("lock.holders", s.holders);
    add("lock.waiters", s.waiters);
    add("lock.sessions", s.sessions);
    add("lock.retained_names", s.retained);
    add("lock.grants", s.grants);
    add("lock.grants_immediate", s.grantsImmediate);
    add("lock.grants_after_wait", s.grantsAfterWait);
    add("lock.reacquired", s.reacquired);
    add("lock.releases", s.releases);
    add("lock.expiries", s.expiries);
    add("lock.lost", s.lost);
    add("lock.renewals", s.renewals);
    add("lock.wait_timeouts", s.waitTimeouts);
    add("lock.waiters_superseded", s.waitersSuperseded);
    add("lock.waiters_dropped", s.waitersDropped);
    add("lock.conflicts", s.conflicts);
    add("lock.refused_full", s.refusedFull);
    add("lock.session_timeouts", s.sessionTimeouts);
    add("lock.names_forgotten", s.forgotten);
    add("lock.token_stalls", s.tokenStalls);
    add("lock.next_token", table_.nextToken());
    add("lock.token_limit", table_.tokenLimit());
    add("lock.events_published", published_);
    add("lock.durable_waits", durableWaits_);
    add("lock.pending_acquires", calls_.size());
    if (journal_)
      for (auto [name, value] : journal_->counters()) add(name, value);
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
  armWake();
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
  if (!journal_) {
    if (done) done();
    return;
  }
  ++appended_;
  journal_->append(rpc::toRecord(record), durability, [this, done = std::move(done)] {
    ++durable_;
    if (done) done();
    while (!afterDurable_.empty() && afterDurable_.front().first <= durable_) {
      auto fn = std::move(afterDurable_.front().second);
      afterDurable_.pop_front();
      fn();
    }
  });
  maybeRewrite();
}

void LockService::whenDurable(std::function<void()> fn) {
  if (durable_ >= appended_) {
    fn();
    return;
  }
  ++durableWaits_;
  afterDurable_.emplace_back(appended_, std::move(fn));
}

kj::Promise<void> LockService::durable() {
  auto paf = kj::newPromiseAndFulfiller<void>();
  whenDurable([f = std::make_shared<kj::Own<kj::PromiseFulfiller<void>>>(kj::mv(paf.fulfiller))] {
    (*f)->fulfill();
  });
  return kj::mv(paf.promise);
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

  const Millis now = clocks_.monotonic();
  const int64_t wallNow = clocks_.wall();
  try {
    for (auto& [name, token] : state.retained) table_.restoreRetained(name, token);
    for (auto& [id, timeout] : state.sessions) table_.restoreSession(id, timeout, now);
    std::vector<Lease> leases;
    for (auto& [token, lease] : state.leases) leases.push_back(lease);
    std::sort(leases.begin(), leases.end(),
              [](const Lease& a, const Lease& b) { return a.token < b.token; });
    for (auto& lease : leases) {
      // The time it had left, on this process's clock; a lease whose session
      // is gone ended with it.
      if (lease.session != 0 && !state.sessions.count(lease.session)) continue;
      lease.expiresAt = now + (lease.expiresAt - wallNow);
      table_.restoreLease(lease);
    }
    table_.restoreTokens(state.tokens);
  } catch (const std::invalid_argument& e) {
    throw storage::StorageError(std::string("lock journal: ") + e.what());
  }
  reservedTokens_ = state.tokens;
  spdlog::info("lock: recovered {} leases, {} sessions, tokens from {} ({} log records)",
               table_.stats().holders, state.sessions.size(), state.tokens,
               recovered.records.size());
  journal_ = std::make_unique<storage::Journal>(
      env_, storage::JournalOptions{options_.dataDir, kJournalName, options_.fsync}, recovered,
      [this](std::function<void()> fn) { server_.post(std::move(fn)); },
      [this](std::string message) { onFatal(message); });
  if (!recovered.records.empty()) maybeRewrite(true);
}

void LockService::maybeRewrite(bool force) {
  if (!journal_ || rewriting_ || (!force && journal_->logBytes() < options_.rewriteAfterBytes))
    return;
  // The table holds exactly what was appended (every change is appended in
  // the call that made it); the token bound is the highest one appended.
  capnp::MallocMessageBuilder message;
  auto s = message.initRoot<idl::LockSnapshot>();
  s.setTokens(reservedTokens_);
  auto leases = table_.leases();
  auto list = s.initLeases(leases.size());
  for (size_t i = 0; i < leases.size(); ++i) {
    auto& l = leases[i];
    list[i].setName(l.name);
    list[i].setOwner(l.owner);
    list[i].setToken(l.token);
    list[i].setMode(toWire(l.mode));
    list[i].setPermits(l.permits);
    list[i].setSession(l.session);
    list[i].setExpiresAtMs(toWall(l.expiresAt));
  }
  auto sessions = table_.sessions();
  auto sl = s.initSessions(sessions.size());
  for (size_t i = 0; i < sessions.size(); ++i) {
    sl[i].setId(sessions[i].first);
    sl[i].setTimeoutMs(static_cast<uint64_t>(sessions[i].second));
  }
  auto retained = table_.retained();
  auto rl = s.initRetained(retained.size());
  for (size_t i = 0; i < retained.size(); ++i) {
    rl[i].setName(retained[i].first);
    rl[i].setLastToken(retained[i].second);
  }
  rewriting_ = true;
  journal_->rewrite(rpc::toRecord(message), [this] { rewriting_ = false; });
}

void LockService::close() {
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
    return toException(*f);
  }
  auto paf = kj::newPromiseAndFulfiller<Granted>();
  calls_.emplace(call, kj::mv(paf.fulfiller));
  handle(events, issuedFrom);
  return paf.promise
      .then([this, context](Granted granted) mutable {
        auto r = context.getResults();
        r.setToken(granted.token);
        r.setExpiresMs(remainingMs(granted.expiresAt));
      })
      .attach(kj::defer([this, call] {
        // The call ended unanswered (its deadline, the server stopping): a
        // waiter nobody will hear from leaves the queue.
        if (!calls_.erase(call)) return;
        Events events;
        uint64_t issuedFrom = table_.nextToken();
        if (table_.cancel(call, clocks_.monotonic(), events)) handle(events, issuedFrom);
      }));
}

kj::Promise<void> LockService::release(ReleaseContext context) {
  auto p = context.getParams();
  Events events;
  uint64_t issuedFrom = table_.nextToken();
  auto f = table_.release(view(p.getName()), view(p.getOwner()), p.getToken(), clocks_.monotonic(),
                          events);
  handle(events, issuedFrom);
  if (f) return toException(*f);
  return durable();
}

kj::Promise<void> LockService::renew(RenewContext context) {
  auto p = context.getParams();
  Events events;
  uint64_t issuedFrom = table_.nextToken();
  auto result = table_.renew(view(p.getName()), view(p.getOwner()), p.getToken(),
                             millis(p.getTtlMs()), clocks_.monotonic(), events);
  handle(events, issuedFrom);
  if (auto* f = std::get_if<Failure>(&result)) return toException(*f);
  Millis expiresAt = std::get<Millis>(result);
  return durable().then([this, context, expiresAt]() mutable {
    context.getResults().setExpiresMs(remainingMs(expiresAt));
  });
}

// Reads answer once everything appended before them is durable: a lease they
// show cannot be lost by a crash afterwards.
kj::Promise<void> LockService::inspect(InspectContext context) {
  std::string name = context.getParams().getName();
  if (auto why = checkName(name))
    return rpc::statusException(rpc::StatusCode::INVALID_ARGUMENT, "name: " + *why);
  return durable().then([this, context, name]() mutable {
    auto view = table_.inspect(name, clocks_.monotonic());
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
  uint64_t token = context.getParams().getToken();
  return durable().then([this, context, name, token]() mutable {
    auto v = table_.validate(name, token, clocks_.monotonic());
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
  if (auto* f = std::get_if<Failure>(&result)) return toException(*f);
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
  if (auto* f = std::get_if<Failure>(&result)) return toException(*f);
  context.getResults().setTimeoutMs(static_cast<uint64_t>(std::get<Millis>(result)));
  return kj::READY_NOW;
}

kj::Promise<void> LockService::closeSession(CloseSessionContext context) {
  Events events;
  uint64_t issuedFrom = table_.nextToken();
  auto result = table_.closeSession(context.getParams().getSession(), clocks_.monotonic(), events);
  handle(events, issuedFrom);
  if (auto* f = std::get_if<Failure>(&result)) return toException(*f);
  uint32_t released = std::get<uint32_t>(result);
  return durable().then(
      [context, released]() mutable { context.getResults().setReleased(released); });
}

}  // namespace zmesh::lock
