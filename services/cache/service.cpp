#include "service.h"

#include <spdlog/spdlog.h>
#include <xxhash.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <vector>

#include "cache_log.h"
#include "zmesh/rpc/status.h"

namespace zmesh::cache {
namespace {

constexpr const char* kJournalName = "cache";
constexpr uint64_t kSliceBytes = 1 << 20;  // a snapshot slice, about
constexpr const char* kTopicNames[] = {"cache.set", "cache.invalidated", "cache.evicted"};

std::string_view view(capnp::Data::Reader d) {
  return {reinterpret_cast<const char*>(d.begin()), d.size()};
}

capnp::Data::Reader bytesOf(std::string_view s) {
  return {reinterpret_cast<const kj::byte*>(s.data()), s.size()};
}

// A TTL from the wire as the core's Millis, checked here so the error names
// the value sent (the core's own check would see it cut to fit an int64).
kj::Maybe<kj::Exception> badTtl(uint64_t ms, Millis maxTtl, Millis& out) {
  if (ms > static_cast<uint64_t>(maxTtl))
    return rpc::statusException(rpc::StatusCode::INVALID_ARGUMENT,
                                "ttlMs: " + std::to_string(ms) + " is over the limit of " +
                                    std::to_string(maxTtl) + " (max_ttl)");
  out = static_cast<Millis>(ms);
  return nullptr;
}

SetCondition fromWire(idl::SetCondition c) {
  switch (c) {
    case idl::SetCondition::IF_ABSENT:
      return SetCondition::ifAbsent;
    case idl::SetCondition::IF_PRESENT:
      return SetCondition::ifPresent;
    case idl::SetCondition::ALWAYS:
      break;
  }
  return SetCondition::always;
}

kj::Exception toException(const Failure& f) {
  switch (f.code) {
    case Fail::invalidArgument:
      return rpc::statusException(rpc::StatusCode::INVALID_ARGUMENT, f.message);
    case Fail::payloadTooLarge:
      return rpc::statusException(rpc::StatusCode::PAYLOAD_TOO_LARGE, f.message);
    case Fail::failedPrecondition:
      return rpc::statusException(rpc::StatusCode::FAILED_PRECONDITION, f.message);
    case Fail::insufficientStorage:
      return rpc::statusException(rpc::StatusCode::INSUFFICIENT_STORAGE, f.message);
  }
  return rpc::statusException(rpc::StatusCode::INTERNAL, f.message);
}

// Scan cursors travel as 16 hex digits of the next hash position; "" is the
// start (asked) or the end (answered).
std::string formatCursor(const ScanCursor& c) {
  if (c.done) return {};
  char out[17];
  auto [end, ec] = std::to_chars(out, out + 16, c.position, 16);
  std::string hex(out, end);
  return std::string(16 - hex.size(), '0') + hex;
}

std::optional<ScanCursor> parseCursor(std::string_view text) {
  if (text.empty()) return ScanCursor{};
  if (text.size() != 16) return std::nullopt;
  uint64_t position = 0;
  for (char c : text) {
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return std::nullopt;
    position = position << 4 | static_cast<uint64_t>(d);
  }
  return ScanCursor{position, false};
}

kj::Promise<void> invalid(std::string message) {
  return rpc::statusException(rpc::StatusCode::INVALID_ARGUMENT, std::move(message));
}

// Reads check a key as writes do: a key no write could store is the caller's
// mistake, not a miss.
kj::Maybe<kj::Exception> badKey(std::string_view key, size_t maxKeyBytes, std::string what) {
  if (key.empty()) return rpc::statusException(rpc::StatusCode::INVALID_ARGUMENT, what + ": empty");
  if (key.size() <= maxKeyBytes) return nullptr;
  return rpc::statusException(rpc::StatusCode::PAYLOAD_TOO_LARGE,
                              what + ": " + std::to_string(key.size()) +
                                  " bytes, over the limit of " + std::to_string(maxKeyBytes) +
                                  " (max_key_bytes)");
}

}  // namespace

CacheService::CacheService(rpc::Server& server, rpc::Publisher* publisher, storage::Env& env,
                           CacheServiceOptions options, std::function<Millis()> now)
    : server_(server),
      publisher_(publisher),
      env_(env),
      options_(std::move(options)),
      now_(std::move(now)),
      changes_(*this),
      store_(options_.store, &changes_),
      recorder_([this](std::string record) {
        fence_.append(std::move(record), storage::Durability::policy);
      }),
      throttles_{EventThrottle(options_.eventsPerSecond), EventThrottle(options_.eventsPerSecond),
                 EventThrottle(options_.eventsPerSecond)} {
  recover();
  server_.stats().add([this](rpc::MetricsOut& out) {
    auto s = store_.stats();
    out.gauge("cache.keys", "Keys held now", s.keys);
    out.gauge("cache.keys_with_ttl", "Keys with an expiry now", s.keysWithTtl);
    out.gauge("cache.memory_used", "Bytes the entries and their index take now", s.memoryUsed);
    out.gauge("cache.memory_limit", "max_memory, in bytes", options_.store.maxMemory);
    out.gauge("cache.index_bytes", "Bytes the index takes now", s.indexBytes);
    out.counter("cache.hits", "Reads that found their key", s.hits);
    out.counter("cache.misses", "Reads that did not find their key", s.misses);
    out.counter("cache.evictions", "Keys evicted for memory", s.evictions);
    out.counter("cache.expired", "Keys removed because their TTL ran out", s.expired);
    out.counter("cache.refused_full", "Writes refused INSUFFICIENT_STORAGE (noeviction)",
                s.refusedFull);
    out.counter("cache.lfu_decays", "LFU frequency decay passes", s.lfuDecays);
    out.counter("cache.rehash_steps", "Incremental rehash steps", s.rehashSteps);
    out.gauge("cache.persistence_lag", "Records logged, not yet as durable as the policy says",
              fence_.lag());
    out.counter("cache.durable_waits", "Replies that waited for durability", fence_.waits());
    out.gauge("cache.waiting_for_durable", "Replies and events held back for durability now",
              fence_.waiting());
    out.counter("cache.refused_backpressure", "Writes refused: the journal fell behind",
                counters_.refusedBackPressure);
    out.counter("cache.expire_runs", "Active expiry runs", counters_.expireRuns);
    out.counter("cache.expire_steps", "Keys looked at by active expiry", counters_.expireSteps);
    out.counter("cache.expired_actively", "Keys removed by active expiry",
                counters_.expiredActively);
    out.gauge("cache.expire_run_max_seconds", "Longest active expiry run, in seconds",
              static_cast<double>(counters_.expireMaxMicros) / 1e6);
    uint64_t published = 0, folded = 0;
    for (auto& t : throttles_) {
      published += t.published();
      folded += t.foldedTotal();
    }
    out.counter("cache.events_published", "Key events published", published);
    out.counter("cache.events_folded", "Key events folded into a later one by the throttle",
                folded);
    out.counter("cache.snapshots", "Snapshots written", counters_.snapshots);
    out.counter("cache.snapshot_slices", "Snapshot slices written", counters_.snapshotSlices);
    out.counter("cache.snapshot_pauses", "Snapshot pauses for a full journal queue",
                counters_.snapshotPauses);
    if (journal_) journal_->collect(out);
  });
  armTick();
}

CacheService::~CacheService() { close(); }

// ---- durability ----

void CacheService::recover() {
  if (options_.dataDir.empty()) {
    spdlog::warn("cache: no data directory: nothing is persisted");
    return;
  }
  env_.createDirs(options_.dataDir);
  lock_ = env_.lockDir(options_.dataDir);
  auto recovered = storage::Journal::recover(env_, options_.dataDir, kJournalName);
  const Millis now = now_();
  const uint64_t evictedBefore = store_.stats().evictions;
  recovering_ = true;
  if (recovered.snapshot) replaySnapshot(store_, *recovered.snapshot, now);
  for (auto& bytes : recovered.records) replayRecord(store_, bytes, now);
  // A replay never evicts (it could pass max_memory where the running cache
  // did not); what does not fit now goes once, into the start-up snapshot.
  store_.evictToLimit();
  recovering_ = false;
  if (recovered.cutBytes > 0)
    spdlog::warn("cache: cut a torn log tail of {} bytes (a crash interrupted a write)",
                 recovered.cutBytes);
  const bool evicted = store_.stats().evictions != evictedBefore;
  if (evicted)
    spdlog::warn("cache: {} keys did not fit under max_memory and were evicted at start-up",
                 store_.stats().evictions - evictedBefore);
  lastSnapshotBytes_ = recovered.snapshot ? recovered.snapshot->size() : 0;
  spdlog::info("cache: recovered {} keys, {} bytes ({} log records)", store_.size(),
               store_.memoryUsed(), recovered.records.size());
  journal_ = std::make_unique<storage::Journal>(
      env_, storage::JournalOptions{options_.dataDir, kJournalName, options_.fsync}, recovered,
      [this](std::function<void()> fn) { server_.post(std::move(fn)); },
      [this](std::string message) { onFatal(message); });
  fence_.attach(journal_.get());
  // What start-up changed (evictions are not logged while recovering) and
  // what the logs replayed go into a snapshot, so the next start is quicker.
  if (!recovered.records.empty() || evicted) {
    snapshotting_ = true;
    journal_->beginSnapshot();
    server_.post([this] { snapshotSlice(); });
  }
}

kj::Promise<void> CacheService::durable() {
  if (fence_.allDurable()) return kj::READY_NOW;
  auto paf = kj::newPromiseAndFulfiller<void>();
  fence_.whenDurable([f = std::make_shared<kj::Own<kj::PromiseFulfiller<void>>>(
                          kj::mv(paf.fulfiller))] { (*f)->fulfill(); });
  return kj::mv(paf.promise);
}

kj::Maybe<kj::Exception> CacheService::backPressure() {
  if (!journal_) return nullptr;
  const uint64_t queued = journal_->stats().queuedBytes;
  if (queued <= options_.maxJournalQueueBytes) return nullptr;
  ++counters_.refusedBackPressure;
  return rpc::statusException(
      rpc::StatusCode::UNAVAILABLE,
      "the disk is behind: " + std::to_string(queued) + " bytes wait for the journal; retry");
}

// A refusal may describe state (incr on a value that is not a number): sent,
// like any answer, only once the state it describes is durable.
kj::Promise<void> CacheService::refuse(const Failure& failure) {
  return durable().then([failure]() -> void { kj::throwFatalException(toException(failure)); });
}

void CacheService::maybeSnapshot() {
  if (!journal_ || snapshotting_ || fence_.closed()) return;
  const uint64_t logBytes = journal_->logBytes();
  if (logBytes < options_.rewriteAfterBytes || logBytes < lastSnapshotBytes_) return;
  snapshotting_ = true;
  snapshotCursor_ = {};
  snapshotBytes_ = 0;
  journal_->beginSnapshot();
  snapshotSlice();
}

// A slice per loop turn, so requests go on between them (no fork, no stall):
// about kSliceBytes, and only while the journal has written what came before.
void CacheService::snapshotSlice() {
  if (!journal_ || fence_.closed()) return;
  if (journal_->stats().snapshotQueuedBytes > 4 * kSliceBytes) {
    ++counters_.snapshotPauses;
    sliceTimer_ = server_.timer()
                      .afterDelay(1 * kj::MILLISECONDS)
                      .then([this] { server_.post([this] { snapshotSlice(); }); })
                      .eagerlyEvaluate(nullptr);
    return;
  }
  const uint64_t perKey =
      store_.size() == 0 ? 1 : std::max<uint64_t>(1, store_.memoryUsed() / store_.size());
  const size_t keys = static_cast<size_t>(
      std::clamp<uint64_t>(kSliceBytes / perKey, 1, options_.snapshotSliceKeys));
  std::string slice;
  snapshotCursor_ =
      store_.scanRange(snapshotCursor_.position, UINT64_MAX, keys, now_(),
                       [&slice](std::string_view key, std::string_view value, Millis expiresAt) {
                         appendSnapshotEntry(slice, key, value, expiresAt);
                       });
  ++counters_.snapshotSlices;
  snapshotBytes_ += slice.size();
  journal_->addToSnapshot(std::move(slice));
  if (!snapshotCursor_.done) {
    server_.post([this] { snapshotSlice(); });
    return;
  }
  journal_->endSnapshot([this, bytes = snapshotBytes_] {
    snapshotting_ = false;
    lastSnapshotBytes_ = bytes;
    ++counters_.snapshots;
  });
}

void CacheService::close() {
  fence_.close();
  if (journal_) journal_->close();
  journal_.reset();
  lock_.reset();
}

std::pair<bool, std::string> CacheService::health() const {
  if (!fatal_.empty()) return {false, "storage failed: " + fatal_};
  return {true, "serving"};
}

void CacheService::onFatal(const std::string& message) {
  fatal_ = message;
  spdlog::critical("cache: storage failed, stopping: {}", message);
  server_.requestStop();
}

// ---- the loop's own work: expiry, folded events, snapshots ----

void CacheService::armTick() {
  tickTimer_ = server_.timer()
                   .afterDelay(options_.expireInterval * kj::MILLISECONDS)
                   .then([this] { server_.post([this] { tick(); }); })
                   .eagerlyEvaluate(nullptr);
}

void CacheService::tick() {
  if (fence_.closed()) return;
  expireActively();
  for (uint8_t t = 0; t < kTopics; ++t) {
    if (uint32_t n = throttles_[t].flush()) {
      auto& f = folded_[t];
      fence_.whenDurable([this, t, key = f.key, hash = f.hash, reason = f.reason, n] {
        publish(static_cast<Topic>(t), key, hash, reason, n);
      });
    }
  }
  maybeSnapshot();
  armTick();
}

// Steps of a bounded number of keys, until one finds fewer expired keys than
// it may examine or the run has used its time: expired memory comes back
// without a stall, and a backlog is worked off over the next runs.
void CacheService::expireActively() {
  if (!store_.nextExpiry() || *store_.nextExpiry() > now_()) return;
  const auto start = std::chrono::steady_clock::now();
  ++counters_.expireRuns;
  for (;;) {
    const size_t removed = store_.expireStep(now_(), options_.expireBudget);
    ++counters_.expireSteps;
    counters_.expiredActively += removed;
    const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(
                            std::chrono::steady_clock::now() - start)
                            .count();
    counters_.expireMaxMicros = std::max<uint64_t>(counters_.expireMaxMicros, micros);
    if (removed < options_.expireBudget || micros >= options_.expireStepMaxMicros) return;
  }
}

// ---- what the store changed: logged, published ----

void CacheService::changedSet(std::string_view key, std::string_view value, Millis expiresAt) {
  if (recovering_) return;
  if (journal_) recorder_.onSet(key, value, expiresAt);
  // The overwrite the store reported just before: published only now, behind
  // the record that makes it durable.
  if (overwriting_) {
    overwriting_ = false;
    event(kInvalidated, key, idl::ChangeReason::OVERWRITTEN);
  }
  event(kSet, key, idl::ChangeReason::SET);
}

void CacheService::changedRemoved(std::string_view key, Removal why) {
  if (recovering_) return;
  if (journal_) recorder_.onRemoved(key, why);
  switch (why) {
    case Removal::deleted:
      return event(kInvalidated, key, idl::ChangeReason::DELETED);
    case Removal::expired:
      return event(kInvalidated, key, idl::ChangeReason::EXPIRED);
    case Removal::overwritten:
      overwriting_ = true;  // the onSet that follows logs the new value, then tells
      return;
    case Removal::evicted:
      return event(kEvicted, key, idl::ChangeReason::EVICTED);
  }
}

void CacheService::changedExpiry(std::string_view key, std::string_view value, Millis expiresAt) {
  if (recovering_) return;
  if (journal_) recorder_.onExpireSet(key, value, expiresAt);
}

void CacheService::event(Topic topic, std::string_view key, idl::ChangeReason reason) {
  if (!publisher_) return;
  const uint64_t hash = XXH3_64bits(key.data(), key.size());
  std::string_view shown = key.size() <= options_.eventKeyBytes ? key : std::string_view{};
  const uint32_t count = throttles_[topic].admit(now_());
  if (count == 0) {
    auto& f = folded_[topic];
    f.key.assign(shown);
    f.hash = hash;
    f.reason = reason;
    return;
  }
  if (fence_.allDurable()) {
    publish(topic, std::string(shown), hash, reason, count);
    return;
  }
  fence_.whenDurable([this, topic, key = std::string(shown), hash, reason, count] {
    publish(topic, key, hash, reason, count);
  });
}

void CacheService::publish(Topic topic, const std::string& key, uint64_t hash,
                           idl::ChangeReason reason, uint32_t count) {
  capnp::MallocMessageBuilder message(static_cast<capnp::uint>(key.size() / 8 + 16));
  auto body = message.initRoot<idl::CacheEvent>();
  body.setKey(bytesOf(key));
  body.setKeyHash(hash);
  body.setReason(reason);
  body.setCount(count);
  publisher_->publish<idl::CacheEvent>(kTopicNames[topic], body.asReader());
}

// ---- methods ----
//
// Reads take their answer when they arrive and send it once everything
// appended before them is durable; writes answer once their own records are.

kj::Promise<void> CacheService::get(GetContext context) {
  const auto key = view(context.getParams().getKey());
  KJ_IF_MAYBE (e, badKey(key, options_.store.maxKeyBytes, "key")) return kj::mv(*e);
  auto value = store_.get(key, now_());
  auto r = context.getResults();
  if (value) {
    r.setFound(true);
    r.setValue(bytesOf(*value));
  }
  return durable();
}

kj::Promise<void> CacheService::set(SetContext context) {
  KJ_IF_MAYBE (e, backPressure()) return kj::mv(*e);
  auto p = context.getParams();
  SetArgs args{0, fromWire(p.getCondition()), p.getKeepTtl()};
  KJ_IF_MAYBE (e, badTtl(p.getTtlMs(), options_.store.maxTtl, args.ttl)) return kj::mv(*e);
  auto result = store_.set(view(p.getKey()), view(p.getValue()), args, now_());
  if (auto* f = std::get_if<Failure>(&result)) return refuse(*f);
  context.getResults().setStored(std::get<bool>(result));
  return durable();
}

kj::Promise<void> CacheService::del(DelContext context) {
  KJ_IF_MAYBE (e, backPressure()) return kj::mv(*e);
  const auto key = view(context.getParams().getKey());
  KJ_IF_MAYBE (e, badKey(key, options_.store.maxKeyBytes, "key")) return kj::mv(*e);
  context.getResults().setExisted(store_.del(key, now_()));
  return durable();
}

kj::Promise<void> CacheService::mget(MgetContext context) {
  auto keys = context.getParams().getKeys();
  if (keys.size() > options_.maxBatch)
    return invalid("keys: " + std::to_string(keys.size()) + " keys, at most " +
                   std::to_string(options_.maxBatch) + " in one call (max_batch)");
  for (uint32_t i = 0; i < keys.size(); ++i) {
    KJ_IF_MAYBE (e, badKey(view(keys[i]), options_.store.maxKeyBytes,
                           "keys[" + std::to_string(i) + "]"))
      return kj::mv(*e);
  }
  auto entries = context.getResults().initEntries(keys.size());
  const Millis now = now_();
  for (uint32_t i = 0; i < keys.size(); ++i) {
    if (auto value = store_.get(view(keys[i]), now)) {
      entries[i].setFound(true);
      entries[i].setValue(bytesOf(*value));
    }
  }
  return durable();
}

kj::Promise<void> CacheService::mset(MsetContext context) {
  KJ_IF_MAYBE (e, backPressure()) return kj::mv(*e);
  auto p = context.getParams();
  auto entries = p.getEntries();
  if (entries.size() > options_.maxBatch)
    return invalid("entries: " + std::to_string(entries.size()) + " entries, at most " +
                   std::to_string(options_.maxBatch) + " in one call (max_batch)");
  std::vector<std::pair<std::string_view, std::string_view>> pairs;
  pairs.reserve(entries.size());
  for (auto e : entries) pairs.emplace_back(view(e.getKey()), view(e.getValue()));
  Millis ttl = 0;
  KJ_IF_MAYBE (e, badTtl(p.getTtlMs(), options_.store.maxTtl, ttl)) return kj::mv(*e);
  // One record for the whole call: a crash keeps the mset whole or not at all.
  recorder_.beginBatch();
  auto failure = store_.mset(pairs, ttl, now_());
  recorder_.endBatch();
  if (failure) return refuse(*failure);
  return durable();
}

kj::Promise<void> CacheService::incr(IncrContext context) {
  KJ_IF_MAYBE (e, backPressure()) return kj::mv(*e);
  auto p = context.getParams();
  auto result = store_.incr(view(p.getKey()), p.getBy(), now_());
  if (auto* f = std::get_if<Failure>(&result)) return refuse(*f);
  context.getResults().setValue(std::get<int64_t>(result));
  return durable();
}

kj::Promise<void> CacheService::expire(ExpireContext context) {
  KJ_IF_MAYBE (e, backPressure()) return kj::mv(*e);
  auto p = context.getParams();
  Millis ttl = 0;
  KJ_IF_MAYBE (e, badTtl(p.getTtlMs(), options_.store.maxTtl, ttl)) return kj::mv(*e);
  auto result = store_.expire(view(p.getKey()), ttl, now_());
  if (auto* f = std::get_if<Failure>(&result)) return refuse(*f);
  context.getResults().setFound(std::get<bool>(result));
  return durable();
}

kj::Promise<void> CacheService::ttl(TtlContext context) {
  const auto key = view(context.getParams().getKey());
  KJ_IF_MAYBE (e, badKey(key, options_.store.maxKeyBytes, "key")) return kj::mv(*e);
  auto left = store_.ttl(key, now_());
  auto r = context.getResults();
  r.setFound(left.has_value());
  r.setTtlMs(left.value_or(-1));
  return durable();
}

kj::Promise<void> CacheService::exists(ExistsContext context) {
  const auto key = view(context.getParams().getKey());
  KJ_IF_MAYBE (e, badKey(key, options_.store.maxKeyBytes, "key")) return kj::mv(*e);
  context.getResults().setFound(store_.exists(key, now_()));
  return durable();
}

kj::Promise<void> CacheService::scan(ScanContext context) {
  auto p = context.getParams();
  const std::string_view cursorText(p.getCursor().cStr(), p.getCursor().size());
  auto cursor = parseCursor(cursorText);
  if (!cursor)
    return invalid("cursor: '" + std::string(cursorText.substr(0, 40)) +
                   "' is not a cursor this service hands out (16 hex digits, or \"\" to start)");
  if (p.getCount() == 0) return invalid("count: 0 (at least 1 key is examined per call)");
  const size_t count = std::min<size_t>(p.getCount(), options_.maxBatch);
  auto result = store_.scan(view(p.getPrefix()), *cursor, count, now_());
  auto r = context.getResults();
  auto keys = r.initKeys(static_cast<capnp::uint>(result.keys.size()));
  for (size_t i = 0; i < result.keys.size(); ++i)
    keys.set(static_cast<capnp::uint>(i), bytesOf(result.keys[i]));
  r.setCursor(formatCursor(result.next));
  return durable();
}

kj::Promise<void> CacheService::stats(StatsContext context) {
  auto s = store_.stats();
  auto out = context.getResults().initStats();
  const auto policy = toString(options_.store.policy);
  out.setPolicy(capnp::Text::Reader(policy.data(), policy.size()));
  out.setKeys(s.keys);
  out.setMemoryUsed(s.memoryUsed);
  out.setMemoryLimit(options_.store.maxMemory);
  out.setHits(s.hits);
  out.setMisses(s.misses);
  out.setEvictions(s.evictions);
  out.setExpired(s.expired);
  out.setRefusedFull(s.refusedFull);
  out.setPersistenceLagRecords(fence_.lag());
  const auto fsync = journal_ ? storage::toString(options_.fsync) : std::string_view("off");
  out.setFsync(capnp::Text::Reader(fsync.data(), fsync.size()));
  return durable();
}

}  // namespace zmesh::cache
