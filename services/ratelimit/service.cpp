#include "service.h"

#include <spdlog/spdlog.h>

#include "zmesh/rpc/frame.h"
#include "zmesh/rpc/status.h"

namespace zmesh::ratelimit {
namespace {

constexpr const char* kJournalName = "ratelimit";
constexpr size_t kMaxLeaseWant = 1'000'000;

kj::Exception toException(const Failure& f) {
  switch (f.code) {
    case Fail::invalidArgument:
      return rpc::statusException(rpc::StatusCode::INVALID_ARGUMENT, f.message);
    case Fail::notFound:
      return rpc::statusException(rpc::StatusCode::NOT_FOUND, f.message);
    case Fail::exhausted:
      return rpc::statusException(rpc::StatusCode::FAILED_PRECONDITION, f.message);
  }
  return rpc::statusException(rpc::StatusCode::INTERNAL, f.message);
}

std::string_view view(capnp::Text::Reader t) { return {t.cStr(), t.size()}; }

// Milliseconds for the wire, rounded up: a client that waits retryAfterMs must not be early.
uint64_t ceilMs(Nanos n) {
  if (n <= 0) return 0;
  return static_cast<uint64_t>(n / kNanosPerMs + (n % kNanosPerMs != 0));  // n may be INT64_MAX
}

// The request's descriptors as the core reads them; views into the params message.
struct DescriptorList {
  std::vector<DescriptorView> views;
  std::optional<Failure> read(capnp::List<idl::Descriptor>::Reader list) {
    if (list.size() > kMaxRuleDescriptors)
      return Failure{Fail::invalidArgument, "descriptors: " + std::to_string(list.size()) +
                                                " given, a rule has at most " +
                                                std::to_string(kMaxRuleDescriptors)};
    views.clear();
    for (auto d : list) views.push_back({view(d.getKey()), view(d.getValue())});
    return std::nullopt;
  }
};

Descriptors toDescriptors(capnp::List<idl::Descriptor>::Reader list) {
  Descriptors out;
  // Whole texts: a NUL inside one is the core's to refuse, not to cut the value at.
  for (auto d : list) out.emplace_back(view(d.getKey()), view(d.getValue()));
  return out;
}

void setDescriptors(capnp::List<idl::Descriptor>::Builder out, const Descriptors& in) {
  for (size_t i = 0; i < in.size(); ++i) {
    out[i].setKey(in[i].first);
    out[i].setValue(in[i].second);
  }
}

void setOverride(idl::Override::Builder out, const Override& o) {
  setDescriptors(out.initDescriptors(o.match.size()), o.match);
  out.setLimit(o.limit);
  out.setBurst(o.burst);
}

Override readOverride(idl::Override::Reader in) {
  return Override{toDescriptors(in.getDescriptors()), in.getLimit(), in.getBurst()};
}

// A reply waiting for its record to be durable, carried by the journal's
// callback (a copyable std::function). Never called back (the storage failed
// and the process stops): the caller hears UNAVAILABLE, not a broken promise.
struct Durable {
  explicit Durable(kj::Own<kj::PromiseFulfiller<void>> f) : fulfiller(kj::mv(f)) {}
  Durable(const Durable&) = delete;
  kj::Own<kj::PromiseFulfiller<void>> fulfiller;
  ~Durable() {
    if (fulfiller->isWaiting())
      fulfiller->reject(rpc::statusException(rpc::StatusCode::UNAVAILABLE,
                                             "storage failed: not known to be durable"));
  }
};
std::shared_ptr<Durable> shared(kj::Own<kj::PromiseFulfiller<void>> f) {
  return std::make_shared<Durable>(kj::mv(f));
}

// Records are read as any untrusted message is; a bad one is a storage failure naming it.
template <typename T, typename Fn>
void readRecord(const std::string& bytes, const char* what, Fn fn) {
  try {
    rpc::readRecord<T>(bytes, what, fn);
  } catch (const rpc::FrameError& e) {
    throw storage::StorageError(std::string("ratelimit journal: ") + e.what());
  }
}

}  // namespace

void replaySnapshot(Limiter& limiter, const std::string& bytes) {
  readRecord<idl::RateLimitSnapshot>(bytes, "snapshot", [&](idl::RateLimitSnapshot::Reader s) {
    for (auto o : s.getOverrides())
      limiter.restoreOverride(o.getRule().cStr(), readOverride(o.getOverride()));
  });
}

void replayRecord(Limiter& limiter, const std::string& bytes) {
  readRecord<idl::RateLimitLogRecord>(bytes, "log record", [&](idl::RateLimitLogRecord::Reader r) {
    switch (r.which()) {
      case idl::RateLimitLogRecord::SET:
        limiter.restoreOverride(r.getSet().getRule().cStr(),
                                readOverride(r.getSet().getOverride()));
        break;
      case idl::RateLimitLogRecord::CLEAR:
        limiter.restoreClear(view(r.getClear().getRule()),
                             toDescriptors(r.getClear().getDescriptors()));
        break;
    }
  });
}

RateLimitService::RateLimitService(rpc::Server& server, rpc::Publisher* publisher,
                                   storage::Env& env, RateLimitOptions options,
                                   std::vector<Rule> rules, MonoClock clock)
    : server_(server),
      publisher_(publisher),
      env_(env),
      options_(std::move(options)),
      clock_(std::move(clock)),
      limiter_(options_.settings.limiter),
      coalescer_(options_.settings.deniedInterval, options_.settings.deniedMaxKeys) {
  recover();  // run-time overrides first: the rules index them
  limiter_.setRules(std::move(rules));
  server_.stats().add([this](rpc::MetricsOut& out) {
    auto s = limiter_.stats();
    out.gauge("ratelimit.keys", "Keys tracked now", s.keys);
    out.counter("ratelimit.keys_dropped", "Keys dropped when their state ran out", s.keysDropped);
    out.counter("ratelimit.keys_refused", "Requests refused: the key table was full",
                s.keysRefused);
    out.counter("ratelimit.keys_untracked", "Requests decided without tracking their key",
                s.keysUntracked);
    out.gauge("ratelimit.sliding_log_bytes", "Bytes the sliding logs take now", s.heapBytes);
    out.gauge("ratelimit.runtime_overrides", "Limits overridden at run time now",
              s.runtimeOverrides);
    out.gauge("ratelimit.rules", "Rules loaded", limiter_.rules().size());
    out.counter("ratelimit.reloads", "Rule reloads that took effect", reloads_);
    out.counter("ratelimit.reload_failures", "Rule reloads refused", reloadFailures_);
    out.counter("ratelimit.leases", "Token leases granted", leases_);
    out.counter("ratelimit.leased", "Tokens leased", leasedTokens_);
    auto c = coalescer_.stats();
    out.counter("ratelimit.denied_events", "ratelimit.denied events published", c.published);
    out.counter("ratelimit.denied_coalesced", "Denials folded into a pending event", c.coalesced);
    out.counter("ratelimit.denied_events_dropped", "Denial events dropped", c.dropped);
    out.gauge("ratelimit.denied_pending_keys", "Keys with a denial event pending", c.pending);
    // Rules come from the config (a closed set); MetricsOut caps them anyway.
    auto decisions = out.family("ratelimit.rule.decisions", rpc::MetricKind::kCounter,
                                "Decisions by rule", {"rule"});
    auto allowed = out.family("ratelimit.rule.allowed", rpc::MetricKind::kCounter,
                              "Requests allowed by rule", {"rule"});
    auto denied = out.family("ratelimit.rule.denied", rpc::MetricKind::kCounter,
                             "Requests denied by rule", {"rule"});
    auto shadow = out.family("ratelimit.rule.shadow_denied", rpc::MetricKind::kCounter,
                             "Requests a shadow rule would have denied", {"rule"});
    auto keys = out.family("ratelimit.rule.keys", rpc::MetricKind::kGauge,
                           "Keys tracked now by rule", {"rule"});
    for (auto& [name, r] : limiter_.ruleStats()) {
      decisions.sample({name}, static_cast<double>(r.decisions));
      allowed.sample({name}, static_cast<double>(r.allowed));
      denied.sample({name}, static_cast<double>(r.denied));
      shadow.sample({name}, static_cast<double>(r.shadowDenied));
      keys.sample({name}, static_cast<double>(r.keys));
    }
    if (journal_) journal_->collect(out);
  });
  tick();
}

RateLimitService::~RateLimitService() { close(); }

// ---- decisions ----

void RateLimitService::report(const Outcome& o, uint64_t cost, idl::Decision::Builder out) {
  const auto& d = o.decision;
  out.setAllowed(d.allowed);
  out.setLimit(d.limit);
  out.setRemaining(d.remaining);
  out.setResetMs(ceilMs(d.reset));
  out.setRetryAfterMs(ceilMs(d.retryAfter));
  out.setRule(o.rule->name);
  out.setWindowMs(ceilMs(o.quota.window));
  out.setShadowDenied(o.shadowDenied);
  out.setUntracked(o.untracked);
  out.setRefused(o.refused);
  if (d.impossible)
    out.setReason("cost " + std::to_string(cost) + " exceeds the limit's capacity of " +
                  std::to_string(d.limit) + ": it can never be allowed");
  else if (o.refused)
    out.setReason("the limiter tracks max_keys keys and none is idle: new keys are denied");
  if ((!d.allowed || o.shadowDenied) && publisher_) {
    if (auto event = coalescer_.denied(o.rule->name, o.key, o.shadowDenied, d.retryAfter, clock_()))
      publishDenied(*event);
  }
}

void RateLimitService::publishDenied(const DeniedEvent& event) {
  if (!publisher_) return;
  // Keys are coalesced by their values NUL-separated (unambiguous); an event
  // shows them '|'-separated.
  std::string key = event.key;
  std::replace(key.begin(), key.end(), '\0', '|');
  capnp::MallocMessageBuilder message(32);
  auto body = message.initRoot<idl::Denied>();
  body.setRule(event.rule);
  body.setKey(key);
  body.setDenials(event.denials);
  body.setShadow(event.shadow);
  body.setRetryAfterMs(ceilMs(event.retryAfter));
  publisher_->publish<idl::Denied>("ratelimit.denied", body.asReader());
}

template <typename Params>
Outcome RateLimitService::decideOne(Params p, uint64_t cost, idl::Decision::Builder out) {
  DescriptorList descriptors;
  if (auto f = descriptors.read(p.getDescriptors())) throw toException(*f);
  CheckRequest request{view(p.getRule()), view(p.getKey()), descriptors.views, cost};
  auto result = limiter_.check(request, clock_());
  if (auto* f = std::get_if<Failure>(&result)) throw toException(*f);
  auto& outcome = std::get<Outcome>(result);
  report(outcome, cost, out);
  return outcome;
}

kj::Promise<void> RateLimitService::check(CheckContext context) {
  auto p = context.getParams();
  decideOne(p, p.getCost(), context.getResults().initDecision());
  return kj::READY_NOW;
}

kj::Promise<void> RateLimitService::checkBatch(CheckBatchContext context) {
  auto checks = context.getParams().getChecks();
  if (checks.size() > options_.settings.maxBatch)
    return rpc::statusException(rpc::StatusCode::INVALID_ARGUMENT,
                                "checks: " + std::to_string(checks.size()) +
                                    " in one batch, at most " +
                                    std::to_string(options_.settings.maxBatch) + " (max_batch)");
  // All or nothing: every check is valid before any takes from its limit.
  DescriptorList descriptors;
  for (size_t i = 0; i < checks.size(); ++i) {
    auto c = checks[i];
    auto f = descriptors.read(c.getDescriptors());
    if (!f)
      f = limiter_.validateRequest(
          CheckRequest{view(c.getRule()), view(c.getKey()), descriptors.views, c.getCost()});
    if (f) {
      auto e = toException(*f);
      return rpc::statusException(rpc::statusFromException(e).code,
                                  "checks[" + std::to_string(i) + "]: " + f->message);
    }
  }
  auto decisions = context.getResults().initDecisions(checks.size());
  for (size_t i = 0; i < checks.size(); ++i)
    decideOne(checks[i], checks[i].getCost(), decisions[i]);
  return kj::READY_NOW;
}

kj::Promise<void> RateLimitService::lease(LeaseContext context) {
  auto p = context.getParams();
  if (p.getWant() == 0 || p.getWant() > kMaxLeaseWant)
    return rpc::statusException(rpc::StatusCode::INVALID_ARGUMENT,
                                "want: expected 1 to " + std::to_string(kMaxLeaseWant) + ", got " +
                                    std::to_string(p.getWant()));
  DescriptorList descriptors;
  if (auto f = descriptors.read(p.getDescriptors())) return toException(*f);
  CheckRequest request{view(p.getRule()), view(p.getKey()), descriptors.views, p.getWant()};
  auto result = limiter_.lease(request, p.getWant(), clock_());
  if (auto* f = std::get_if<Failure>(&result)) return toException(*f);
  auto& l = std::get<LeaseOutcome>(result);
  auto r = context.getResults();
  report(l.outcome, p.getWant(), r.initDecision());
  // A lease never outlives the window it was taken in by more than lease_max,
  // which bounds what a local stage admits past the global limit.
  Nanos ttl = p.getTtlMs() == 0
                  ? options_.settings.leaseMax
                  : std::min<Nanos>(Nanos(p.getTtlMs()) * kNanosPerMs, options_.settings.leaseMax);
  ttl = std::min(ttl, l.outcome.quota.window);
  r.setGranted(static_cast<uint32_t>(l.granted));
  r.setTtlMs(static_cast<uint32_t>(ceilMs(ttl)));
  ++leases_;
  leasedTokens_ += l.granted;
  return kj::READY_NOW;
}

// ---- rules and overrides ----

kj::Promise<void> RateLimitService::rules(RulesContext context) {
  auto& rules = limiter_.rules();
  auto list = context.getResults().initRules(rules.size());
  for (size_t i = 0; i < rules.size(); ++i) {
    auto& rule = rules[i];
    auto out = list[i];
    out.setName(rule.name);
    out.setAlgorithm(std::string(toString(rule.quota.algorithm)));
    out.setLimit(rule.quota.limit);
    out.setWindowMs(ceilMs(rule.quota.window));
    out.setBurst(rule.quota.capacity());
    auto names = out.initDescriptors(rule.descriptors.size());
    for (size_t j = 0; j < rule.descriptors.size(); ++j) names.set(j, rule.descriptors[j]);
    out.setShadowMode(rule.shadow);
    auto file = out.initOverrides(rule.overrides.size());
    for (size_t j = 0; j < rule.overrides.size(); ++j) setOverride(file[j], rule.overrides[j]);
    auto runtime = limiter_.runtimeOverrides(rule.name);
    auto rt = out.initRuntimeOverrides(runtime.size());
    for (size_t j = 0; j < runtime.size(); ++j) setOverride(rt[j], runtime[j]);
  }
  return kj::READY_NOW;
}

kj::Promise<void> RateLimitService::override(OverrideContext context) {
  auto p = context.getParams();
  std::string rule = p.getRule();
  auto checked = limiter_.checkOverride(
      rule, Override{toDescriptors(p.getDescriptors()), p.getLimit(), p.getBurst()});
  if (auto* f = std::get_if<Failure>(&checked)) return toException(*f);
  auto o = std::get<Override>(kj::mv(checked));
  // Counted with those on their way to disk: the limit holds when they land.
  auto key = std::pair{rule, sortedByName(o.match)};
  if (!journaled_.count(key) && journaled_.size() >= options_.settings.limiter.maxRuntimeOverrides)
    return rpc::statusException(
        rpc::StatusCode::FAILED_PRECONDITION,
        "already " + std::to_string(journaled_.size()) + " run-time overrides (max_overrides)");
  journaled_[key] = o;
  capnp::MallocMessageBuilder record;
  auto set = record.initRoot<idl::RateLimitLogRecord>().initSet();
  set.setRule(rule);
  setOverride(set.initOverride(), o);
  // Applied once durable (DESIGN.md §4): no check sees an override a crash could lose.
  auto paf = kj::newPromiseAndFulfiller<void>();
  append(record, [this, rule, o, fulfiller = shared(kj::mv(paf.fulfiller))] {
    auto applied = limiter_.setOverride(rule, o);
    if (auto* f = std::get_if<Failure>(&applied)) {
      // The rules changed while it was written: it is kept and applies if the rule returns.
      limiter_.restoreOverride(rule, o);
      spdlog::warn("ratelimit: override for {} persisted but not applied: {}", rule, f->message);
    }
    spdlog::info("ratelimit: override for {} set (limit {})", rule, o.limit);
    fulfiller->fulfiller->fulfill();
  });
  return kj::mv(paf.promise);
}

kj::Promise<void> RateLimitService::clearOverride(ClearOverrideContext context) {
  auto p = context.getParams();
  std::string rule = p.getRule();
  auto given = toDescriptors(p.getDescriptors());
  auto it = journaled_.find({rule, sortedByName(given)});
  if (it == journaled_.end()) {
    // Nothing to clear: answered from what the log holds, changing nothing.
    bool known = false;
    for (auto& r : limiter_.rules()) known = known || r.name == rule;
    if (!known)
      return rpc::statusException(rpc::StatusCode::NOT_FOUND, "no rule named \"" + rule + "\"");
    context.getResults().setRemoved(false);
    return kj::READY_NOW;
  }
  auto match = it->second.match;  // as the log names it
  journaled_.erase(it);
  capnp::MallocMessageBuilder record;
  auto clear = record.initRoot<idl::RateLimitLogRecord>().initClear();
  clear.setRule(rule);
  setDescriptors(clear.initDescriptors(match.size()), match);
  auto paf = kj::newPromiseAndFulfiller<void>();
  append(record, [this, rule, match, fulfiller = shared(kj::mv(paf.fulfiller))] {
    auto result = limiter_.clearOverride(rule, match);
    if (std::get_if<Failure>(&result)) limiter_.restoreClear(rule, match);  // rule gone meanwhile
    fulfiller->fulfiller->fulfill();
  });
  return paf.promise.then([context]() mutable { context.getResults().setRemoved(true); });
}

std::variant<std::string, std::pair<size_t, size_t>> RateLimitService::reloadRules() {
  if (options_.configPath.empty()) return std::string("no mesh file to reload the rules from");
  try {
    auto rules = loadRules(options_.configPath);
    size_t count = rules.size();
    size_t kept = limiter_.setRules(std::move(rules));
    ++reloads_;
    spdlog::info("ratelimit: reloaded {} rules from {} ({} kept their state)", count,
                 options_.configPath, kept);
    return std::pair{count, kept};
  } catch (const std::exception& e) {  // ConfigError, or the file unreadable
    ++reloadFailures_;
    spdlog::error("ratelimit: rules not reloaded, the rules in force stay: {}", e.what());
    return std::string(e.what());
  }
}

kj::Promise<void> RateLimitService::reload(ReloadContext context) {
  auto result = reloadRules();
  if (auto* error = std::get_if<std::string>(&result))
    return rpc::statusException(rpc::StatusCode::FAILED_PRECONDITION, *error);
  auto [count, kept] = std::get<std::pair<size_t, size_t>>(result);
  context.getResults().setRules(static_cast<uint32_t>(count));
  context.getResults().setKept(static_cast<uint32_t>(kept));
  return kj::READY_NOW;
}

// ---- durability ----

void RateLimitService::recover() {
  if (options_.dataDir.empty()) {
    spdlog::warn("ratelimit: no data directory: run-time overrides are NOT persisted");
    return;
  }
  env_.createDirs(options_.dataDir);
  lock_ = env_.lockDir(options_.dataDir);
  auto recovered = storage::Journal::recover(env_, options_.dataDir, kJournalName);
  if (recovered.snapshot) replaySnapshot(limiter_, *recovered.snapshot);
  for (auto& bytes : recovered.records) replayRecord(limiter_, bytes);
  for (auto& [rule, o] : limiter_.runtimeOverrides()) journaled_[{rule, sortedByName(o.match)}] = o;
  if (recovered.cutBytes > 0)
    spdlog::warn("ratelimit: cut a torn log tail of {} bytes (a crash interrupted a write)",
                 recovered.cutBytes);
  spdlog::info("ratelimit: recovered {} run-time overrides ({} log records)",
               limiter_.stats().runtimeOverrides, recovered.records.size());
  journal_ = std::make_unique<storage::Journal>(
      env_, storage::JournalOptions{options_.dataDir, kJournalName, options_.fsync}, recovered,
      [this](std::function<void()> fn) { server_.post(std::move(fn)); },
      [this](std::string message) { onFatal(message); });
  if (!recovered.records.empty()) maybeRewrite(true);
}

void RateLimitService::append(capnp::MessageBuilder& record, std::function<void()> done) {
  if (!journal_) {
    server_.post(std::move(done));
    return;
  }
  // An override is operator intent: on disk before it is answered, under every policy.
  journal_->append(rpc::toRecord(record), storage::Durability::forceSync, std::move(done));
  maybeRewrite();
}

void RateLimitService::maybeRewrite(bool force) {
  if (!journal_ || rewriting_ || (!force && journal_->logBytes() < options_.rewriteAfterBytes))
    return;
  // Everything appended, applied or still on its way to disk: the snapshot
  // replaces the log up to this point, records not yet durable included.
  capnp::MallocMessageBuilder message;
  auto list = message.initRoot<idl::RateLimitSnapshot>().initOverrides(journaled_.size());
  size_t i = 0;
  for (auto& [key, o] : journaled_) {
    list[i].setRule(key.first);
    setOverride(list[i++].initOverride(), o);
  }
  rewriting_ = true;
  journal_->rewrite(rpc::toRecord(message), [this] { rewriting_ = false; });
}

void RateLimitService::close() {
  if (journal_) journal_->close();
  journal_.reset();
  lock_.reset();
}

std::pair<bool, std::string> RateLimitService::health() const {
  if (!fatal_.empty()) return {false, "storage failed: " + fatal_};
  return {true, "serving"};
}

void RateLimitService::onFatal(const std::string& message) {
  fatal_ = message;
  spdlog::critical("ratelimit: storage failed, stopping: {}", message);
  server_.requestStop();
}

// ---- housekeeping ----

// The clock hand drops keys back at their default; denied events whose
// interval ended go out with their counts.
void RateLimitService::tick() {
  Nanos now = clock_();
  limiter_.sweep(now, options_.settings.sweepBudget);
  for (auto& event : coalescer_.flush(now)) publishDenied(event);
  auto period = options_.settings.sweepInterval / kNanosPerMs;
  // tick() replaces ticker_: run it after this continuation, never inside it.
  ticker_ = server_.timer()
                .afterDelay(period * kj::MILLISECONDS)
                .then([this] { server_.post([this] { tick(); }); })
                .eagerlyEvaluate(nullptr);
}

}  // namespace zmesh::ratelimit
