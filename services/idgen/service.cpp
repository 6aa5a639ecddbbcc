#include "service.h"

#include <capnp/serialize.h>
#include <spdlog/spdlog.h>

#include "zmesh/rpc/frame.h"
#include "zmesh/rpc/status.h"

namespace zmesh::idgen {
namespace {

constexpr const char* kJournalName = "idgen";

// How long blocks last is measured on the loop's monotonic clock (advanced every turn).
SequenceBookOptions withLoopClock(SequenceBookOptions options, kj::Timer& timer) {
  if (!options.clock) {
    options.clock = [&timer] {
      return std::chrono::milliseconds((timer.now() - kj::origin<kj::TimePoint>()) /
                                       kj::MILLISECONDS);
    };
  }
  return options;
}

kj::Exception toException(const Failure& f) {
  switch (f.code) {
    case Fail::invalidArgument:
      return rpc::statusException(rpc::StatusCode::INVALID_ARGUMENT, f.message);
    case Fail::failedPrecondition:
      return rpc::statusException(rpc::StatusCode::FAILED_PRECONDITION, f.message);
    case Fail::unavailable:  // the core's message already says when to retry
      return rpc::statusException(rpc::StatusCode::UNAVAILABLE, f.message);
  }
  return rpc::statusException(rpc::StatusCode::INTERNAL, f.message);
}

// Records are read as any untrusted message is (rpc::readRecord); a bad one
// is a storage failure naming the record.
template <typename T, typename Fn>
void readRecord(const std::string& bytes, const char* what, Fn fn) {
  try {
    rpc::readRecord<T>(bytes, what, fn);
  } catch (const rpc::FrameError& e) {
    throw storage::StorageError(std::string("idgen journal: ") + e.what());
  }
}

}  // namespace

IdGenService::IdGenService(rpc::Server& server, rpc::Publisher* publisher, storage::Env& env,
                           IdGenOptions options, WallClock clock)
    : server_(server),
      publisher_(publisher),
      env_(env),
      options_(std::move(options)),
      clock_(std::move(clock)),
      book_(withLoopClock(options_.book, server.timer())),
      flake_(options_.snowflake) {
  recover();
  server_.stats().add([this](rpc::MetricsOut& out) {
    auto b = book_.stats();
    auto f = flake_.stats();
    out.gauge("idgen.namespaces", "Sequence namespaces known", static_cast<double>(b.namespaces));
    out.counter("idgen.ids_issued", "Sequence ids handed out", b.idsIssued);
    out.gauge("idgen.waiting", "Sequence requests waiting now",
              static_cast<double>(b.waitingTickets));
    out.counter("idgen.waited", "Sequence requests that had to wait", b.ticketsWaited);
    out.counter("idgen.reservations", "Id blocks reserved", b.reservationsIssued);
    out.gauge("idgen.reservations_in_flight", "Reservations not yet durable",
              static_cast<double>(b.reservationsInFlight));
    out.counter("idgen.blocks_published", "idgen.block events published", blocksPublished_);
    out.counter("snowflake.ids_issued", "Snowflake ids handed out", f.idsIssued);
    out.gauge("snowflake.waiting", "Snowflake requests waiting for the next millisecond now",
              static_cast<double>(f.waitingTickets));
    out.counter("snowflake.deferred", "Snowflake requests that waited for a later millisecond",
                f.ticketsDeferred);
    out.counter("snowflake.clock_behind_failures",
                "Snowflake requests refused: the clock went back", f.clockBehindFailures);
    out.gauge("snowflake.epoch_left_seconds", "Seconds left in the Snowflake epoch",
              static_cast<double>(flake_.msLeft(clock_())) / 1000);
    out.gauge("snowflake.durable_bound_seconds",
              "Highest Unix time recorded durably, in seconds (0: none)",
              static_cast<double>(f.durableBoundMs.value_or(0)) / 1000);
    if (journal_) journal_->collect(out);
  });
  persistBound();
  tick();
}

IdGenService::~IdGenService() { close(); }

void IdGenService::recover() {
  if (options_.dataDir.empty()) {
    spdlog::warn("idgen: no data directory: ids are NOT durable (restart begins at 1)");
    return;
  }
  env_.createDirs(options_.dataDir);
  lock_ = env_.lockDir(options_.dataDir);
  auto recovered = storage::Journal::recover(env_, options_.dataDir, kJournalName);
  int64_t bound = 0;
  auto restore = [&](std::string_view ns, uint64_t limit) {
    if (auto f = book_.restore(ns, limit))
      throw storage::StorageError("idgen journal: " + f->message);
  };
  if (recovered.snapshot)
    readRecord<idl::IdGenSnapshot>(*recovered.snapshot, "snapshot",
                                   [&](idl::IdGenSnapshot::Reader s) {
                                     for (auto ns : s.getNamespaces())
                                       restore(ns.getName().cStr(), ns.getLimit());
                                     bound = std::max(bound, s.getTimeBound());
                                   });
  for (auto& bytes : recovered.records)
    readRecord<idl::IdGenLogRecord>(bytes, "log record", [&](idl::IdGenLogRecord::Reader r) {
      switch (r.which()) {
        case idl::IdGenLogRecord::RESERVE:
          restore(r.getReserve().getNamespace().cStr(), r.getReserve().getLimit());
          break;
        case idl::IdGenLogRecord::TIME_BOUND:
          bound = std::max(bound, r.getTimeBound());
          break;
        case idl::IdGenLogRecord::STOP_BOUND:
          bound = r.getStopBound();
          break;
      }
    });
  if (bound > 0) flake_.restore(bound);
  appendedBound_ = bound;
  if (recovered.cutBytes > 0)
    spdlog::warn("idgen: cut a torn log tail of {} bytes (a crash interrupted a write)",
                 recovered.cutBytes);
  spdlog::info("idgen: recovered {} namespaces, {} log records, time bound {}",
               book_.stats().namespaces, recovered.records.size(), bound);
  journal_ = std::make_unique<storage::Journal>(
      env_, storage::JournalOptions{options_.dataDir, kJournalName, options_.fsync}, recovered,
      [this](std::function<void()> fn) { server_.post(std::move(fn)); },
      [this](std::string message) { onFatal(message); });
  // Each start opens a new log: fold what an earlier run left, or quiet
  // restarts would add a file each.
  if (!recovered.records.empty()) maybeRewrite(true);
}

void IdGenService::close() {
  if (journal_ && !journal_->failed()) {
    // Nothing is issued after this: the newest id bounds the next run exactly.
    auto stats = flake_.stats();
    int64_t bound =
        stats.lastIssuedMs ? *stats.lastIssuedMs + 1 : stats.restoredBoundMs.value_or(0);
    if (bound > 0) {
      capnp::MallocMessageBuilder message;
      message.initRoot<idl::IdGenLogRecord>().setStopBound(bound);
      journal_->append(rpc::toRecord(message), storage::Durability::forceSync, {});
    }
  }
  if (journal_) journal_->close();
  journal_.reset();
  lock_.reset();
}

std::pair<bool, std::string> IdGenService::health() const {
  if (!fatal_.empty()) return {false, "storage failed: " + fatal_};
  return {true, "serving"};
}

void IdGenService::onFatal(const std::string& message) {
  // Never pretend durability: stop serving and let the supervisor restart us.
  fatal_ = message;
  spdlog::critical("idgen: storage failed, stopping: {}", message);
  server_.requestStop();
}

// ---- sequences ----

kj::Promise<void> IdGenService::next(NextContext context) {
  auto p = context.getParams();
  std::string_view ns(p.getNamespace().cStr(), p.getNamespace().size());
  uint64_t ticket = ++nextTicket_;
  auto outcome = book_.request(ticket, ns, p.getCount());
  if (auto* f = std::get_if<Failure>(&outcome)) return toException(*f);
  if (auto* r = std::get_if<IdRange>(&outcome)) {
    auto results = context.getResults();
    results.setFirst(r->first);
    results.setCount(r->count);
    reserveBlocks();  // the prefetch threshold may have been crossed
    return kj::READY_NOW;
  }
  auto paf = kj::newPromiseAndFulfiller<IdRange>();
  sequenceWaiters_.emplace(ticket, kj::mv(paf.fulfiller));
  reserveBlocks();
  return paf.promise
      .then([context](IdRange r) mutable {
        auto results = context.getResults();
        results.setFirst(r.first);
        results.setCount(r.count);
      })
      .attach(kj::defer([this, ticket] {
        // Answered, or dropped at its deadline: either way no longer waiting.
        if (sequenceWaiters_.erase(ticket)) book_.cancel(ticket);
      }));
}

void IdGenService::reserveBlocks() {
  for (auto& r : book_.takeReservations()) {
    if (!journal_) {
      server_.post([this, r] { onReserved(r); });
      continue;
    }
    capnp::MallocMessageBuilder message;
    auto reserve = message.initRoot<idl::IdGenLogRecord>().initReserve();
    reserve.setNamespace(r.ns);
    reserve.setLimit(r.limit);
    // A block's bound is on disk before any id in it leaves: under every policy.
    journal_->append(rpc::toRecord(message), storage::Durability::forceSync,
                     [this, r] { onReserved(r); });
  }
  maybeRewrite();
}

void IdGenService::onReserved(const Reservation& r) {
  for (auto& [ticket, range] : book_.reserved(r.ns, r.limit)) {
    auto it = sequenceWaiters_.find(ticket);
    if (it == sequenceWaiters_.end()) continue;
    auto fulfiller = kj::mv(it->second);
    sequenceWaiters_.erase(it);
    fulfiller->fulfill(kj::cp(range));
  }
  if (publisher_) {
    capnp::MallocMessageBuilder message;
    auto block = message.initRoot<idl::BlockReserved>();
    block.setNamespace(r.ns);
    block.setFrom(r.from);
    block.setLimit(r.limit);
    publisher_->publish<idl::BlockReserved>("idgen.block", block.asReader());
    ++blocksPublished_;
  }
  reserveBlocks();
}

// ---- Snowflake ----

kj::Promise<void> IdGenService::snowflake(SnowflakeContext context) {
  uint64_t ticket = ++nextTicket_;
  auto outcome = flake_.request(ticket, context.getParams().getCount(), clock_());
  persistBound();
  if (auto* f = std::get_if<Failure>(&outcome)) return toException(*f);
  if (auto* ids = std::get_if<Snowflake::Ids>(&outcome)) {
    auto list = context.getResults().initIds(ids->size());
    for (size_t i = 0; i < ids->size(); ++i) list.set(i, (*ids)[i]);
    return kj::READY_NOW;
  }
  auto paf = kj::newPromiseAndFulfiller<std::vector<uint64_t>>();
  snowflakeWaiters_.emplace(ticket, kj::mv(paf.fulfiller));
  armSnowflakeWake();
  return paf.promise
      .then([context](std::vector<uint64_t> ids) mutable {
        auto list = context.getResults().initIds(ids.size());
        for (size_t i = 0; i < ids.size(); ++i) list.set(i, ids[i]);
      })
      .attach(kj::defer([this, ticket] {
        if (snowflakeWaiters_.erase(ticket)) flake_.cancel(ticket);
      }));
}

void IdGenService::pollSnowflake() {
  for (auto& [ticket, result] : flake_.poll(clock_())) {
    auto it = snowflakeWaiters_.find(ticket);
    if (it == snowflakeWaiters_.end()) continue;
    auto fulfiller = kj::mv(it->second);
    snowflakeWaiters_.erase(it);
    if (auto* ids = std::get_if<Snowflake::Ids>(&result))
      fulfiller->fulfill(kj::mv(*ids));
    else
      fulfiller->reject(toException(std::get<Failure>(result)));
  }
  persistBound();
  armSnowflakeWake();
}

// Waiting for the next millisecond is a timer, never a sleep on the loop.
void IdGenService::armSnowflakeWake() {
  int64_t now = clock_();
  auto at = flake_.wakeAt(now);
  if (!at) return;
  if (wakeArmedAt_ && *wakeArmedAt_ <= *at) return;
  wakeArmedAt_ = *at;
  int64_t delay = std::max<int64_t>(0, *at - now);
  wakeTimer_ = server_.timer().afterDelay(delay * kj::MILLISECONDS).then([this] {
    wakeArmedAt_.reset();
    // Not from inside this continuation: pollSnowflake() re-arms, replacing
    // wakeTimer_, and kj throws "Promise callback destroyed itself" when a
    // promise is destroyed by its own continuation (the new timer was lost).
    server_.post([this] { pollSnowflake(); });
  });
  wakeTimer_ = wakeTimer_.eagerlyEvaluate(nullptr);
}

void IdGenService::persistBound() {
  auto bound = flake_.boundToPersist(clock_());
  if (!bound) return;
  appendedBound_ = std::max(appendedBound_, *bound);
  if (!journal_) {
    server_.post([this, b = *bound] {
      flake_.boundPersisted(b);
      pollSnowflake();
    });
    return;
  }
  capnp::MallocMessageBuilder message;
  message.initRoot<idl::IdGenLogRecord>().setTimeBound(*bound);
  journal_->append(rpc::toRecord(message), storage::Durability::forceSync, [this, b = *bound] {
    flake_.boundPersisted(b);
    pollSnowflake();
  });
  maybeRewrite();  // Snowflake-only traffic grows the log too
}

kj::Promise<void> IdGenService::decode(DecodeContext context) {
  auto decoded = Snowflake::decode(context.getParams().getId(), options_.snowflake.epochMs);
  if (auto* f = std::get_if<Failure>(&decoded)) return toException(*f);
  auto& d = std::get<Decoded>(decoded);
  auto r = context.getResults();
  r.setTimestampMs(d.timestampMs);
  r.setWorker(d.worker);
  r.setSequence(d.sequence);
  return kj::READY_NOW;
}

// ---- housekeeping ----

// Keeps the durable time bound ahead of the clock even when idle, so a burst
// never waits on disk, and warns once when the epoch's 41 bits run low.
void IdGenService::tick() {
  persistBound();
  int64_t now = clock_();
  if (!epochWarned_ && flake_.epochRunningOut(now, options_.epochWarnDays)) {
    epochWarned_ = true;
    spdlog::warn("idgen: the Snowflake epoch has {} days left; plan a new epoch",
                 flake_.msLeft(now) / kMsPerDay);
  }
  int64_t period = std::max<int64_t>(1, options_.snowflake.renewBeforeMs / 4);
  // tick() replaces ticker_: run it after this continuation, never inside it.
  ticker_ = server_.timer()
                .afterDelay(period * kj::MILLISECONDS)
                .then([this] { server_.post([this] { tick(); }); })
                .eagerlyEvaluate(nullptr);
}

void IdGenService::maybeRewrite(bool force) {
  if (!journal_ || rewriting_ || (!force && journal_->logBytes() < options_.rewriteAfterBytes))
    return;
  capnp::MallocMessageBuilder message;
  auto snapshot = message.initRoot<idl::IdGenSnapshot>();
  auto namespaces = book_.snapshot();
  auto list = snapshot.initNamespaces(namespaces.size());
  for (size_t i = 0; i < namespaces.size(); ++i) {
    list[i].setName(namespaces[i].first);
    list[i].setLimit(namespaces[i].second);
  }
  snapshot.setTimeBound(appendedBound_);
  rewriting_ = true;
  journal_->rewrite(rpc::toRecord(message), [this] { rewriting_ = false; });
}

}  // namespace zmesh::idgen
