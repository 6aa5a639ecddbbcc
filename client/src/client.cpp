#include "zmesh/client.h"

#include <capnp/compat/json.h>
#include <capnp/dynamic.h>
#include <capnp/schema.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <limits>
#include <random>
#include <thread>

#include "zmesh/idl/admin.capnp.h"
#include "zmesh/idl/cache.capnp.h"
#include "zmesh/idl/common.capnp.h"
#include "zmesh/idl/idgen.capnp.h"
#include "zmesh/idl/lock.capnp.h"
#include "zmesh/idl/ratelimit.capnp.h"
#include "zmesh/rpc/barrier.h"
#include "zmesh/rpc/events.h"
#include "zmesh/rpc/metrics_wire.h"

namespace zmesh {
namespace {

rpc::CallOptions optionsOf(const CallSettings& s, bool retryable) {
  rpc::CallOptions o;
  o.timeout = s.timeout;
  o.traceId = s.traceId;
  o.retryable = retryable;
  return o;
}

template <typename Interface>
uint16_t ordinal(kj::StringPtr name) {
  return rpc::methodOrdinal(capnp::Schema::from<Interface>(), name);
}

// Builds params, calls, checks the status; returns the reply for reading results.
template <typename Interface, typename Params, typename Fill>
rpc::Reply invoke(const rpc::Channel& channel, uint16_t method, const CallSettings& settings,
                  bool retryable, Fill fill) {
  capnp::MallocMessageBuilder message(64);
  fill(message.initRoot<Params>());
  auto reply = channel.callSync(capnp::typeId<Interface>(), method, rpc::toFrame(message),
                                optionsOf(settings, retryable));
  reply.check();
  return reply;
}

}  // namespace

std::string defaultEndpoint(const std::string& service) {
  if (service == "broker") return "tcp://127.0.0.1:7101";
  if (service == "idgen") return "tcp://127.0.0.1:7110";
  if (service == "gateway") return "tcp://127.0.0.1:7180";  // its Admin; HTTP is gateway.listen
  if (service == "ratelimit") return "tcp://127.0.0.1:7120";
  if (service == "lock") return "tcp://127.0.0.1:7130";
  if (service == "cache") return "tcp://127.0.0.1:7140";
  throw rpc::ConfigError("no default endpoint for service '" + service + "'");
}

// ---- Admin ----

AdminClient::Health AdminClient::health() const {
  static const uint16_t m = ordinal<idl::Admin>("health");
  auto reply =
      invoke<idl::Admin, idl::Admin::HealthParams>(channel_, m, settings_, true, [](auto) {});
  auto r = reply.results<idl::Admin::HealthResults>();
  return {r.getOk(), r.getDetail().cStr()};
}

std::vector<rpc::MetricFamily> AdminClient::stats() const {
  static const uint16_t m = ordinal<idl::Admin>("stats");
  auto reply =
      invoke<idl::Admin, idl::Admin::StatsParams>(channel_, m, settings_, true, [](auto) {});
  return rpc::readFamilies(reply.results<idl::Admin::StatsResults>());
}

AdminClient::Info AdminClient::info() const {
  static const uint16_t m = ordinal<idl::Admin>("info");
  auto reply =
      invoke<idl::Admin, idl::Admin::InfoParams>(channel_, m, settings_, true, [](auto) {});
  auto r = reply.results<idl::Admin::InfoResults>();
  Info info{r.getService().cStr(), r.getVersion().cStr(), r.getPid(), r.getUptimeMs(), {}};
  for (auto s : r.getConfig()) info.config.emplace_back(s.getKey().cStr(), s.getValue().cStr());
  return info;
}

// ---- IdGen ----

IdGenClient::IdGenClient(rpc::Channel channel, CallSettings settings)
    : channel_(std::move(channel)), settings_(std::move(settings)) {}

IdGenClient::Range IdGenClient::next(const std::string& ns, uint32_t count) const {
  static const uint16_t m = ordinal<idl::IdGen>("next");
  auto reply =
      invoke<idl::IdGen, idl::IdGen::NextParams>(channel_, m, settings_, false, [&](auto p) {
        p.setNamespace(ns);
        p.setCount(count);
      });
  auto r = reply.results<idl::IdGen::NextResults>();
  return {r.getFirst(), r.getCount()};
}

std::vector<uint64_t> IdGenClient::snowflake(uint32_t count) const {
  static const uint16_t m = ordinal<idl::IdGen>("snowflake");
  auto reply = invoke<idl::IdGen, idl::IdGen::SnowflakeParams>(channel_, m, settings_, false,
                                                               [&](auto p) { p.setCount(count); });
  std::vector<uint64_t> out;
  for (auto id : reply.results<idl::IdGen::SnowflakeResults>().getIds()) out.push_back(id);
  return out;
}

IdGenClient::Decoded IdGenClient::decode(uint64_t id) const {
  static const uint16_t m = ordinal<idl::IdGen>("decode");
  auto reply = invoke<idl::IdGen, idl::IdGen::DecodeParams>(channel_, m, settings_, true,
                                                            [&](auto p) { p.setId(id); });
  auto r = reply.results<idl::IdGen::DecodeResults>();
  return {r.getTimestampMs(), r.getWorker(), r.getSequence()};
}

// ---- RateLimit ----

namespace {

void setDescriptors(capnp::List<idl::Descriptor>::Builder out,
                    const RateLimitClient::Descriptors& in) {
  for (size_t i = 0; i < in.size(); ++i) {
    out[i].setKey(in[i].first);
    out[i].setValue(in[i].second);
  }
}

}  // namespace

RateLimitClient::Decision RateLimitClient::decisionOf(idl::Decision::Reader d) {
  using std::chrono::milliseconds;
  return {d.getAllowed(),
          d.getLimit(),
          d.getRemaining(),
          milliseconds(d.getResetMs()),
          milliseconds(d.getRetryAfterMs()),
          milliseconds(d.getWindowMs()),
          d.getRule().cStr(),
          d.getShadowDenied(),
          d.getReason().cStr(),
          d.getUntracked(),
          d.getRefused()};
}

RateLimitClient::RateLimitClient(rpc::Channel channel, CallSettings settings)
    : channel_(std::move(channel)), settings_(std::move(settings)) {}

RateLimitClient::Decision RateLimitClient::check(const std::string& rule, const std::string& key,
                                                 uint32_t cost) const {
  static const uint16_t m = ordinal<idl::RateLimit>("check");
  auto reply = invoke<idl::RateLimit, idl::RateLimit::CheckParams>(channel_, m, settings_, false,
                                                                   [&](auto p) {
                                                                     p.setRule(rule);
                                                                     p.setKey(key);
                                                                     p.setCost(cost);
                                                                   });
  return decisionOf(reply.results<idl::RateLimit::CheckResults>().getDecision());
}

RateLimitClient::Decision RateLimitClient::check(const std::string& rule,
                                                 const Descriptors& descriptors,
                                                 uint32_t cost) const {
  static const uint16_t m = ordinal<idl::RateLimit>("check");
  auto reply = invoke<idl::RateLimit, idl::RateLimit::CheckParams>(
      channel_, m, settings_, false, [&](auto p) {
        p.setRule(rule);
        setDescriptors(p.initDescriptors(descriptors.size()), descriptors);
        p.setCost(cost);
      });
  return decisionOf(reply.results<idl::RateLimit::CheckResults>().getDecision());
}

RateLimitClient::Lease RateLimitClient::lease(const std::string& rule, const std::string& key,
                                              uint32_t want, std::chrono::milliseconds ttl) const {
  static const uint16_t m = ordinal<idl::RateLimit>("lease");
  auto reply = invoke<idl::RateLimit, idl::RateLimit::LeaseParams>(
      channel_, m, settings_, false, [&](auto p) {
        p.setRule(rule);
        p.setKey(key);
        p.setWant(want);
        p.setTtlMs(static_cast<uint32_t>(std::max<int64_t>(ttl.count(), 0)));
      });
  auto r = reply.results<idl::RateLimit::LeaseResults>();
  return {r.getGranted(), std::chrono::milliseconds(r.getTtlMs()), decisionOf(r.getDecision())};
}

void RateLimitClient::setOverride(const std::string& rule, const Descriptors& descriptors,
                                  uint64_t limit, uint64_t burst) const {
  static const uint16_t m = ordinal<idl::RateLimit>("override");
  // Setting the same override twice is the same as once: safe to resend.
  invoke<idl::RateLimit, idl::RateLimit::OverrideParams>(channel_, m, settings_, true, [&](auto p) {
    p.setRule(rule);
    setDescriptors(p.initDescriptors(descriptors.size()), descriptors);
    p.setLimit(limit);
    p.setBurst(burst);
  });
}

// ---- Lock ----

namespace {

idl::LockMode wireMode(LockMode mode) {
  return mode == LockMode::shared ? idl::LockMode::SHARED : idl::LockMode::EXCLUSIVE;
}

LockMode modeOf(idl::LockMode mode) {
  return mode == idl::LockMode::SHARED ? LockMode::shared : LockMode::exclusive;
}

// A duration for the wire: negative as 0, and at most a day, so that adding
// a wait to a timeout cannot overflow.
std::chrono::milliseconds clampedMs(std::chrono::milliseconds d) {
  return std::clamp<std::chrono::milliseconds>(d, std::chrono::milliseconds(0),
                                               std::chrono::hours(24));
}
uint64_t wireMs(std::chrono::milliseconds d) { return static_cast<uint64_t>(clampedMs(d).count()); }

}  // namespace

std::chrono::milliseconds Lease::remaining() const {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      expiry - std::chrono::steady_clock::now());
  return std::max(left, std::chrono::milliseconds(0));
}

std::string LockClient::defaultOwner() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0')
    std::snprintf(host, sizeof host, "host");
  // Owners are printable ASCII, 1-128 characters: a hostname is cut to 64.
  std::string owner;
  for (const char* c = host; *c && owner.size() < 64; ++c)
    owner += (*c > 0x20 && *c < 0x7f) ? *c : '_';
  std::random_device random;
  uint64_t nonce = (static_cast<uint64_t>(random()) << 32) ^ random();
  char tail[48];
  std::snprintf(tail, sizeof tail, ":%d:%016llx", static_cast<int>(getpid()),
                static_cast<unsigned long long>(nonce));
  return owner + tail;
}

LockClient::LockClient(rpc::Channel channel, CallSettings settings, std::string owner)
    : channel_(std::move(channel)),
      settings_(std::move(settings)),
      owner_(owner.empty() ? defaultOwner() : std::move(owner)) {}

std::optional<Lease> LockClient::acquireLease(const std::string& name,
                                              const AcquireOptions& options,
                                              bool conflictIsEmpty) const {
  static const uint16_t m = ordinal<idl::Lock>("acquire");
  const std::string& owner = options.owner.empty() ? owner_ : options.owner;
  capnp::MallocMessageBuilder message(64);
  auto p = message.initRoot<idl::Lock::AcquireParams>();
  p.setName(name);
  p.setOwner(owner);
  p.setTtlMs(wireMs(options.ttl));
  p.setWaitMs(wireMs(options.wait));
  p.setMode(wireMode(options.mode));
  p.setPermits(options.permits);
  p.setSession(options.session);
  // The call outlives the wait. Safe to resend: an acquire by an owner that
  // holds the lock answers its lease again, one that waits keeps its place.
  CallSettings settings = settings_;
  settings.timeout += clampedMs(options.wait);
  auto rpcOptions = optionsOf(settings, true);
  // Resent while it waits only when the connection drops, not every attempt timeout.
  rpcOptions.attemptTimeout += clampedMs(options.wait);
  auto sent = std::chrono::steady_clock::now();  // no later than the service's grant
  auto reply = channel_.callSync(capnp::typeId<idl::Lock>(), m, rpc::toFrame(message), rpcOptions);
  if (conflictIsEmpty && reply.status.code == StatusCode::CONFLICT) return std::nullopt;
  reply.check();
  auto r = reply.results<idl::Lock::AcquireResults>();
  // The service held the call heldMs (its wait) before the lease's expiresMs
  // began to count down, and it received the call no sooner than it was sent.
  auto expiry =
      sent + std::chrono::milliseconds(r.getHeldMs()) + std::chrono::milliseconds(r.getExpiresMs());
  return Lease{name, owner, r.getToken(), expiry, options.mode, options.session, options.ttl};
}

Lease LockClient::acquire(const std::string& name, const AcquireOptions& options) const {
  return *acquireLease(name, options, false);
}

std::optional<Lease> LockClient::tryAcquire(const std::string& name,
                                            const AcquireOptions& options) const {
  return acquireLease(name, options, true);
}

void LockClient::release(const Lease& lease) const {
  static const uint16_t m = ordinal<idl::Lock>("release");
  // A resend is answered from the service's record of the first.
  invoke<idl::Lock, idl::Lock::ReleaseParams>(channel_, m, settings_, true, [&](auto p) {
    p.setName(lease.name);
    p.setOwner(lease.owner);
    p.setToken(lease.token);
  });
}

void LockClient::renew(Lease& lease) const { renew(lease, lease.ttl); }

void LockClient::renew(Lease& lease, std::chrono::milliseconds ttl) const {
  static const uint16_t m = ordinal<idl::Lock>("renew");
  auto sent = std::chrono::steady_clock::now();
  // Renewing twice extends from the later one: safe to resend.
  auto reply = invoke<idl::Lock, idl::Lock::RenewParams>(channel_, m, settings_, true, [&](auto p) {
    p.setName(lease.name);
    p.setOwner(lease.owner);
    p.setToken(lease.token);
    p.setTtlMs(wireMs(ttl));
  });
  lease.expiry =
      sent + std::chrono::milliseconds(reply.results<idl::Lock::RenewResults>().getExpiresMs());
  lease.ttl = ttl;
}

std::optional<LockInfo> LockClient::inspect(const std::string& name) const {
  static const uint16_t m = ordinal<idl::Lock>("inspect");
  capnp::MallocMessageBuilder message(64);
  message.initRoot<idl::Lock::InspectParams>().setName(name);
  auto reply = channel_.callSync(capnp::typeId<idl::Lock>(), m, rpc::toFrame(message),
                                 optionsOf(settings_, true));
  if (reply.status.code == StatusCode::NOT_FOUND) return std::nullopt;
  reply.check();
  auto i = reply.results<idl::Lock::InspectResults>().getInfo();
  LockInfo info{i.getName().cStr(), {},
                i.getWaiters(),     i.getPermits(),
                i.getLastToken(),   std::chrono::milliseconds(i.getDelayedMs())};
  for (auto h : i.getHolders())
    info.holders.push_back({h.getOwner().cStr(), h.getToken(),
                            std::chrono::milliseconds(h.getExpiresMs()), modeOf(h.getMode()),
                            h.getSession()});
  return info;
}

LockClient::Validation LockClient::validate(const std::string& name, uint64_t token) const {
  static const uint16_t m = ordinal<idl::Lock>("validate");
  auto reply =
      invoke<idl::Lock, idl::Lock::ValidateParams>(channel_, m, settings_, true, [&](auto p) {
        p.setName(name);
        p.setToken(token);
      });
  auto r = reply.results<idl::Lock::ValidateResults>();
  return {r.getValid(), r.getCurrent()};
}

LockClient::Session LockClient::openSession(std::chrono::milliseconds timeout) const {
  static const uint16_t m = ordinal<idl::Lock>("openSession");
  // Not resent: a resend the service did not recognise would open a second session.
  auto reply = invoke<idl::Lock, idl::Lock::OpenSessionParams>(
      channel_, m, settings_, false, [&](auto p) { p.setTimeoutMs(wireMs(timeout)); });
  auto r = reply.results<idl::Lock::OpenSessionResults>();
  return {r.getSession(), std::chrono::milliseconds(r.getTimeoutMs())};
}

std::chrono::milliseconds LockClient::heartbeat(uint64_t session) const {
  static const uint16_t m = ordinal<idl::Lock>("heartbeat");
  auto reply = invoke<idl::Lock, idl::Lock::HeartbeatParams>(
      channel_, m, settings_, true, [&](auto p) { p.setSession(session); });
  return std::chrono::milliseconds(reply.results<idl::Lock::HeartbeatResults>().getTimeoutMs());
}

uint32_t LockClient::closeSession(uint64_t session) const {
  static const uint16_t m = ordinal<idl::Lock>("closeSession");
  auto reply = invoke<idl::Lock, idl::Lock::CloseSessionParams>(
      channel_, m, settings_, true, [&](auto p) { p.setSession(session); });
  return reply.results<idl::Lock::CloseSessionResults>().getReleased();
}

// ---- Cache ----

namespace {

capnp::Data::Reader bytes(std::string_view s) {
  return {reinterpret_cast<const capnp::byte*>(s.data()), s.size()};
}
std::string stringOf(capnp::Data::Reader d) {
  return {reinterpret_cast<const char*>(d.begin()), d.size()};
}

idl::SetCondition wireCondition(SetCondition c) {
  switch (c) {
    case SetCondition::ifAbsent:
      return idl::SetCondition::IF_ABSENT;
    case SetCondition::ifPresent:
      return idl::SetCondition::IF_PRESENT;
    case SetCondition::always:
      break;
  }
  return idl::SetCondition::ALWAYS;
}

// A TTL for the wire: negative as 0 (which is no expiry, as for the service).
uint64_t ttlMs(std::chrono::milliseconds ttl) {
  return static_cast<uint64_t>(std::max<int64_t>(ttl.count(), 0));
}

// A first segment that holds the params, values included: one allocation.
unsigned paramsWords(size_t payloadBytes) {
  return static_cast<unsigned>(std::min<size_t>(payloadBytes / 8 + 64, 1u << 28));
}

// Like invoke(), with the params' first segment sized for `payloadBytes`.
template <typename Params, typename Fill>
rpc::Reply invokeCache(const rpc::Channel& channel, uint16_t method, const CallSettings& settings,
                       bool retryable, size_t payloadBytes, Fill fill) {
  capnp::MallocMessageBuilder message(paramsWords(payloadBytes));
  fill(message.initRoot<Params>());
  auto reply = channel.callSync(capnp::typeId<idl::Cache>(), method, rpc::toFrame(message),
                                optionsOf(settings, retryable));
  reply.check();
  return reply;
}

}  // namespace

CacheClient::CacheClient(rpc::Channel channel, CallSettings settings)
    : channel_(std::move(channel)), settings_(std::move(settings)) {}

std::optional<std::string> CacheClient::get(std::string_view key) const {
  static const uint16_t m = ordinal<idl::Cache>("get");
  auto reply = invokeCache<idl::Cache::GetParams>(channel_, m, settings_, true, key.size(),
                                                  [&](auto p) { p.setKey(bytes(key)); });
  auto r = reply.results<idl::Cache::GetResults>();
  if (!r.getFound()) return std::nullopt;
  return stringOf(r.getValue());
}

bool CacheClient::set(std::string_view key, std::string_view value,
                      const SetOptions& options) const {
  static const uint16_t m = ordinal<idl::Cache>("set");
  // A resend is answered from the service's record of the first.
  auto reply = invokeCache<idl::Cache::SetParams>(
      channel_, m, settings_, true, key.size() + value.size(), [&](auto p) {
        p.setKey(bytes(key));
        p.setValue(bytes(value));
        p.setTtlMs(ttlMs(options.ttl));
        p.setCondition(wireCondition(options.condition));
        p.setKeepTtl(options.keepTtl);
      });
  return reply.results<idl::Cache::SetResults>().getStored();
}

bool CacheClient::del(std::string_view key) const {
  static const uint16_t m = ordinal<idl::Cache>("del");
  auto reply = invokeCache<idl::Cache::DelParams>(channel_, m, settings_, true, key.size(),
                                                  [&](auto p) { p.setKey(bytes(key)); });
  return reply.results<idl::Cache::DelResults>().getExisted();
}

std::vector<std::optional<std::string>> CacheClient::mget(
    const std::vector<std::string>& keys) const {
  static const uint16_t m = ordinal<idl::Cache>("mget");
  size_t total = 0;
  for (auto& k : keys) total += k.size() + 8;
  auto reply =
      invokeCache<idl::Cache::MgetParams>(channel_, m, settings_, true, total, [&](auto p) {
        auto list = p.initKeys(static_cast<unsigned>(keys.size()));
        for (unsigned i = 0; i < keys.size(); ++i) list.set(i, bytes(keys[i]));
      });
  std::vector<std::optional<std::string>> out;
  auto entries = reply.results<idl::Cache::MgetResults>().getEntries();
  out.reserve(entries.size());
  for (auto e : entries)
    out.push_back(e.getFound() ? std::optional<std::string>(stringOf(e.getValue())) : std::nullopt);
  return out;
}

void CacheClient::mset(const std::vector<std::pair<std::string, std::string>>& entries,
                       std::chrono::milliseconds ttl) const {
  static const uint16_t m = ordinal<idl::Cache>("mset");
  size_t total = 0;
  for (auto& [k, v] : entries) total += k.size() + v.size() + 32;
  invokeCache<idl::Cache::MsetParams>(channel_, m, settings_, true, total, [&](auto p) {
    auto list = p.initEntries(static_cast<unsigned>(entries.size()));
    for (unsigned i = 0; i < entries.size(); ++i) {
      list[i].setKey(bytes(entries[i].first));
      list[i].setValue(bytes(entries[i].second));
    }
    p.setTtlMs(ttlMs(ttl));
  });
}

int64_t CacheClient::incr(std::string_view key, int64_t by) const {
  static const uint16_t m = ordinal<idl::Cache>("incr");
  // Not resent: a resend the service did not recognise would count twice.
  auto reply =
      invokeCache<idl::Cache::IncrParams>(channel_, m, settings_, false, key.size(), [&](auto p) {
        p.setKey(bytes(key));
        p.setBy(by);
      });
  return reply.results<idl::Cache::IncrResults>().getValue();
}

int64_t CacheClient::decr(std::string_view key, int64_t by) const {
  if (by == std::numeric_limits<int64_t>::min())
    throw RpcError(StatusCode::INVALID_ARGUMENT,
                   "decr by -2^63: its negation does not fit in 64 bits (use incr)");
  return incr(key, -by);
}

bool CacheClient::expire(std::string_view key, std::chrono::milliseconds ttl) const {
  static const uint16_t m = ordinal<idl::Cache>("expire");
  auto reply =
      invokeCache<idl::Cache::ExpireParams>(channel_, m, settings_, true, key.size(), [&](auto p) {
        p.setKey(bytes(key));
        p.setTtlMs(ttlMs(ttl));
      });
  return reply.results<idl::Cache::ExpireResults>().getFound();
}

std::optional<std::chrono::milliseconds> CacheClient::ttl(std::string_view key) const {
  static const uint16_t m = ordinal<idl::Cache>("ttl");
  auto reply = invokeCache<idl::Cache::TtlParams>(channel_, m, settings_, true, key.size(),
                                                  [&](auto p) { p.setKey(bytes(key)); });
  auto r = reply.results<idl::Cache::TtlResults>();
  if (!r.getFound()) return std::nullopt;
  if (r.getTtlMs() < 0) return kNoExpiry;
  return std::chrono::milliseconds(r.getTtlMs());
}

bool CacheClient::exists(std::string_view key) const {
  static const uint16_t m = ordinal<idl::Cache>("exists");
  auto reply = invokeCache<idl::Cache::ExistsParams>(channel_, m, settings_, true, key.size(),
                                                     [&](auto p) { p.setKey(bytes(key)); });
  return reply.results<idl::Cache::ExistsResults>().getFound();
}

CacheClient::ScanPage CacheClient::scanPage(std::string_view prefix, std::string_view cursor,
                                            uint32_t count) const {
  static const uint16_t m = ordinal<idl::Cache>("scan");
  auto reply = invokeCache<idl::Cache::ScanParams>(channel_, m, settings_, true,
                                                   prefix.size() + cursor.size(), [&](auto p) {
                                                     p.setPrefix(bytes(prefix));
                                                     p.setCursor(std::string(cursor));
                                                     p.setCount(count);
                                                   });
  auto r = reply.results<idl::Cache::ScanResults>();
  ScanPage page;
  page.keys.reserve(r.getKeys().size());
  for (auto k : r.getKeys()) page.keys.push_back(stringOf(k));
  page.cursor = r.getCursor().cStr();
  return page;
}

CacheScan CacheClient::scan(std::string_view prefix, uint32_t count) const {
  return CacheScan(*this, std::string(prefix), count);
}

CacheStats CacheClient::stats() const {
  static const uint16_t m = ordinal<idl::Cache>("stats");
  auto reply = invokeCache<idl::Cache::StatsParams>(channel_, m, settings_, true, 0, [](auto) {});
  auto s = reply.results<idl::Cache::StatsResults>().getStats();
  return {s.getPolicy().cStr(), s.getKeys(),
          s.getMemoryUsed(),    s.getMemoryLimit(),
          s.getHits(),          s.getMisses(),
          s.getEvictions(),     s.getExpired(),
          s.getRefusedFull(),   s.getPersistenceLagRecords(),
          s.getFsync().cStr()};
}

CacheScan::iterator CacheScan::begin() {
  if (!started_) {
    started_ = true;
    fill();
  }
  return iterator(this);
}

void CacheScan::fill() {
  while (index_ >= page_.size() && !complete_) {
    auto page = client_.scanPage(prefix_, cursor_, count_);
    page_ = std::move(page.keys);
    index_ = 0;
    cursor_ = std::move(page.cursor);
    complete_ = cursor_.empty();
  }
}

void CacheScan::advance() {
  if (index_ < page_.size()) ++index_;
  fill();
}

// ---- Events ----

std::string eventBodyJson(uint64_t bodyType, capnp::AnyPointer::Reader body) {
  // Every event body the mesh publishes; a new one is added here once.
  static const capnp::StructSchema known[] = {
      capnp::Schema::from<idl::BlockReserved>(), capnp::Schema::from<idl::Denied>(),
      capnp::Schema::from<idl::LockEvent>(),     capnp::Schema::from<idl::CacheEvent>(),
      capnp::Schema::from<idl::ServiceState>(),
  };
  for (auto& schema : known) {
    if (schema.getProto().getId() != bodyType) continue;
    rpc::checkFields(body, schema, "event.body");
    capnp::JsonCodec codec;
    codec.handleByAnnotation(schema);  // e.g. a cache key's bytes as base64
    return codec.encode(body.getAs<capnp::DynamicStruct>(schema)).cStr();
  }
  char hex[40];
  std::snprintf(hex, sizeof(hex), "{\"bodyType\":\"0x%016llx\"}",
                static_cast<unsigned long long>(bodyType));
  return hex;
}

struct Subscription::State {
  std::atomic<bool> stop{false};
  std::thread thread;
};

Subscription::Subscription(std::unique_ptr<State> state) : state_(std::move(state)) {}
Subscription::Subscription(Subscription&&) noexcept = default;
Subscription& Subscription::operator=(Subscription&& other) noexcept {
  stop();
  state_ = std::move(other.state_);
  return *this;
}
Subscription::~Subscription() { stop(); }

void Subscription::stop() {
  if (!state_) return;
  state_->stop = true;
  if (state_->thread.joinable()) state_->thread.join();
  state_.reset();
}

Subscription Events::subscribe(const std::string& prefix,
                               std::function<void(const Event&)> onEvent) const {
  return subscribe(std::vector<std::string>{prefix}, std::move(onEvent));
}

Subscription Events::subscribe(const std::vector<std::string>& prefixes,
                               std::function<void(const Event&)> onEvent) const {
  auto state = std::make_unique<Subscription::State>();
  // The SUB socket is created here so the subscription is live when this returns.
  auto subscriber = std::make_shared<rpc::Subscriber>(*context_, xpub_, prefixes);
  Subscription::State* s = state.get();
  state->thread = std::thread([s, subscriber, onEvent = std::move(onEvent)] {
    rpc::LogLimiter errors;
    auto log = [&](const char* stage, const std::string& topic, const char* what) {
      if (auto held = errors.admit())
        spdlog::warn("events: {} on '{}': {} ({} more like it not logged)", stage, topic, what,
                     *held);
    };
    // One event at a time behind a barrier: the thread serves every callback
    // of the subscription, whatever one event or one callback does.
    while (!s->stop) {
      std::optional<rpc::ReceivedEvent> r;
      std::optional<Event> event;
      rpc::barrier(
          [&] {
            r = subscriber->receive(100ms);
            if (!r) return;
            auto e = r->event();
            event = Event{r->topic,
                          e.getPublisher().cStr(),
                          e.getIncarnation(),
                          e.getSequence(),
                          e.getWallTimeMs(),
                          r->missed,
                          eventBodyJson(e.getBodyType(), e.getBody())};
          },
          [&](const char* what) {  // a body that does not read as its type says
            subscriber->countMalformed();
            log("dropped an event", r ? r->topic : std::string(), what);
          });
      if (event)
        rpc::barrier([&] { onEvent(*event); },
                     [&](const char* what) { log("a callback failed", r->topic, what); });
    }
  });
  return Subscription(std::move(state));
}

// ---- Mesh ----

struct Mesh::Transport {
  zmq::context_t context;
  rpc::ClientThread thread{context};
};

Mesh::Mesh(const std::string& configPath) : Mesh(rpc::MeshConfig::load(configPath)) {}

Mesh::Mesh(rpc::MeshConfig config) : config_(std::move(config)) {}

Mesh::Transport& Mesh::transport() {
  std::lock_guard lock(transportMutex_);
  if (!transport_) transport_ = std::make_unique<Transport>();
  return *transport_;
}

Mesh::~Mesh() = default;

std::vector<std::string> Mesh::services() const {
  std::vector<std::string> out;
  for (const char* name : {"broker", "idgen", "ratelimit", "lock", "cache", "gateway"})
    if (config_.has(name) && config_.section(name).boolean("enabled", true)) out.push_back(name);
  return out;
}

std::string Mesh::endpoint(const std::string& service) const {
  if (!config_.has(service))
    throw rpc::ConfigError(config_.source() + ": no [" + service + "] section");
  if (service == "broker") return config_.section(service).string("xpub", "tcp://127.0.0.1:7102");
  return config_.section(service).string("endpoint", defaultEndpoint(service));
}

IdGenClient Mesh::idgen(CallSettings settings) {
  return IdGenClient(transport().thread.channel(endpoint("idgen")), std::move(settings));
}

RateLimitClient Mesh::ratelimit(CallSettings settings) {
  return RateLimitClient(transport().thread.channel(endpoint("ratelimit")), std::move(settings));
}

LockClient Mesh::locks(CallSettings settings) {
  return LockClient(transport().thread.channel(endpoint("lock")), std::move(settings));
}

CacheClient Mesh::cache(CallSettings settings) {
  return CacheClient(transport().thread.channel(endpoint("cache")), std::move(settings));
}

std::string Mesh::adminEndpoint(const std::string& service) const {
  if (service == "broker") {
    if (!config_.has(service)) throw rpc::ConfigError(config_.source() + ": no [broker] section");
    return config_.section("broker").string("admin", "tcp://127.0.0.1:7103");
  }
  return endpoint(service);
}

rpc::Channel Mesh::channel(const std::string& service) {
  return transport().thread.channel(adminEndpoint(service));
}

AdminClient Mesh::admin(const std::string& service, CallSettings settings) {
  return AdminClient(channel(service), std::move(settings));
}

// ---- schema-driven calls ----

std::vector<capnp::InterfaceSchema> interfacesOf(const std::string& service) {
  capnp::InterfaceSchema admin = capnp::Schema::from<idl::Admin>();
  if (service == "idgen") return {capnp::Schema::from<idl::IdGen>(), admin};
  if (service == "ratelimit") return {capnp::Schema::from<idl::RateLimit>(), admin};
  if (service == "lock") return {capnp::Schema::from<idl::Lock>(), admin};
  if (service == "cache") return {capnp::Schema::from<idl::Cache>(), admin};
  if (service == "broker") return {admin};
  if (service == "gateway") return {admin};
  return {};
}

namespace {
capnp::InterfaceSchema findInterface(const std::string& service, const std::string& method) {
  auto interfaces = interfacesOf(service);
  if (interfaces.empty()) throw std::invalid_argument("unknown service '" + service + "'");
  std::string known;
  for (auto& i : interfaces) {
    if (i.findMethodByName(method) != nullptr) return i;
    for (auto m : i.getMethods())
      known += (known.empty() ? "" : ", ") + std::string(m.getProto().getName().cStr());
  }
  throw std::invalid_argument("service '" + service + "' has no method '" + method +
                              "' (methods: " + known + ")");
}
}  // namespace

DynamicCall::DynamicCall(const std::string& service, const std::string& method)
    : interface_(findInterface(service, method)),
      method_(KJ_ASSERT_NONNULL(interface_.findMethodByName(method))) {}

rpc::Reply DynamicCall::invoke(const rpc::Channel& channel, capnp::MessageBuilder& params,
                               const CallSettings& settings, bool retryable) const {
  auto reply = channel.callSync(interface_.getProto().getId(), method_.getOrdinal(),
                                rpc::toFrame(params), optionsOf(settings, retryable));
  reply.check();
  return reply;
}

Events Mesh::events() { return Events(transport().context, endpoint("broker")); }

}  // namespace zmesh
