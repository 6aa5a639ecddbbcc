// zmesh C++ client: typed stubs for every service, the Mesh entry object and
// the event subscriber.
//
//   zmesh::Mesh mesh{"deploy/local/mesh.toml"};
//   auto ids = mesh.idgen().next("orders", 100);          // [first, first + 100)
//   auto lease = mesh.locks().acquire("report", {.ttl = 10s, .wait = 2s});
//   mesh.cache().set("user:1", "alice", {.ttl = 5s});        // get("user:1"): "alice"
//   auto sub = mesh.events().subscribe("idgen.", [](const zmesh::Event& e) { ... });
//
// Threading: a Mesh and the stubs it hands out may be shared by any number of
// threads; all calls go through one I/O thread the Mesh owns. Stubs and
// subscriptions must not outlive their Mesh. Failures throw zmesh::rpc::RpcError
// with the service's status code (DEADLINE_EXCEEDED, UNAVAILABLE, …).
#pragma once

#include <capnp/schema.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "zmesh/idl/ratelimit.capnp.h"
#include "zmesh/rpc/client.h"
#include "zmesh/rpc/config.h"
#include "zmesh/rpc/metrics.h"
#include "zmesh/rpc/status.h"

namespace zmesh {

using rpc::RpcError;
using rpc::StatusCode;
using namespace std::chrono_literals;

// Options of each call a stub makes.
struct CallSettings {
  std::chrono::milliseconds timeout = 5s;
  std::string traceId;
};

// Admin interface every service implements.
class AdminClient {
 public:
  explicit AdminClient(rpc::Channel channel, CallSettings settings = {})
      : channel_(std::move(channel)), settings_(std::move(settings)) {}
  struct Health {
    bool ok;
    std::string detail;
  };
  Health health() const;
  // Every statistic of the process, typed; rpc::flatten() gives the flat view.
  std::vector<rpc::MetricFamily> stats() const;
  struct Info {
    std::string service, version;
    int32_t pid;
    uint64_t uptimeMs;
    std::vector<std::pair<std::string, std::string>> config;
  };
  Info info() const;
  const rpc::Channel& channel() const { return channel_; }

 private:
  rpc::Channel channel_;
  CallSettings settings_;
};

class IdGenClient {
 public:
  explicit IdGenClient(rpc::Channel channel, CallSettings settings = {});
  struct Range {
    uint64_t first;
    uint32_t count;
  };
  // Ids first … first+count-1 of `ns`. Not retried on its own: a lost reply
  // costs a gap, never a duplicate.
  Range next(const std::string& ns, uint32_t count = 1) const;
  std::vector<uint64_t> snowflake(uint32_t count = 1) const;
  struct Decoded {
    int64_t timestampMs;
    uint16_t worker;
    uint16_t sequence;
  };
  Decoded decode(uint64_t id) const;  // pure arithmetic on the server's epoch
  const rpc::Channel& channel() const { return channel_; }

 private:
  rpc::Channel channel_;
  CallSettings settings_;
};

class RateLimitClient {
 public:
  explicit RateLimitClient(rpc::Channel channel, CallSettings settings = {});
  using Descriptors = std::vector<std::pair<std::string, std::string>>;
  struct Decision {
    bool allowed;
    uint64_t limit;                        // what the key may take at once
    uint64_t remaining;                    // left after this decision
    std::chrono::milliseconds reset;       // until the key is back to its full quota
    std::chrono::milliseconds retryAfter;  // denied: until the same cost would pass
    std::chrono::milliseconds window;
    std::string rule;
    bool shadowDenied;   // a shadow rule allowed what it would have denied
    std::string reason;  // why, when waiting cannot help or the table is full
    bool untracked;
    bool refused;  // the service tracks max_keys keys: its capacity, not this key's quota
  };
  // Takes `cost` (0: only reads) from `rule`'s limit for a rule keyed on one
  // descriptor, or for these descriptors. Never resent on its own: a lost
  // reply may have taken the cost.
  Decision check(const std::string& rule, const std::string& key, uint32_t cost = 1) const;
  Decision check(const std::string& rule, const Descriptors& descriptors, uint32_t cost = 1) const;
  struct Lease {
    uint32_t granted;  // taken from the global limit for the caller to admit on its own
    std::chrono::milliseconds ttl;
    Decision decision;
  };
  // Two-stage limiting's global stage (TwoStageLimiter uses it): up to `want` now.
  Lease lease(const std::string& rule, const std::string& key, uint32_t want,
              std::chrono::milliseconds ttl = {}) const;
  // A Decision as the wire carries it (for callers that make the call themselves).
  static Decision decisionOf(idl::Decision::Reader d);
  // A run-time override of `rule` for these descriptors, durable once this returns.
  void setOverride(const std::string& rule, const Descriptors& descriptors, uint64_t limit,
                   uint64_t burst = 0) const;
  const rpc::Channel& channel() const { return channel_; }

 private:
  rpc::Channel channel_;
  CallSettings settings_;
};

// ---- Locks (API.md "Lock service") ----

enum class LockMode : uint8_t {
  exclusive,  // one holder (or, for a semaphore, one of its permits)
  shared,     // any number of shared holders together, none with an exclusive one
};

// A lease the lock service granted: its fencing token proves it to a resource
// guarding writes (strictly greater than any token issued before for the name).
// A plain value: nothing is released when it is destroyed.
struct Lease {
  std::string name;
  std::string owner;
  uint64_t token = 0;
  // Until when the lease holds for sure, on this host's clock: when the call
  // was sent, plus how long the service held it (its wait), plus the lease
  // the service answered. The service ends it no sooner.
  std::chrono::steady_clock::time_point expiry;
  LockMode mode = LockMode::exclusive;
  uint64_t session = 0;             // 0: not tied to a session
  std::chrono::milliseconds ttl{};  // what was asked: renew(lease) asks for it again

  std::chrono::milliseconds remaining() const;  // until expiry; 0 once past it
};

// A lock as inspect() sees it.
struct LockInfo {
  struct Holder {
    std::string owner;
    uint64_t token;
    std::chrono::milliseconds expiresIn;  // lease left when the service answered
    LockMode mode;
    uint64_t session;  // 0: not tied to a session
  };
  std::string name;
  std::vector<Holder> holders;  // in grant order
  uint32_t waiters;
  uint32_t permits;                   // 0: a lock; N: a semaphore of N permits
  uint64_t lastToken;                 // the highest token ever issued for the name
  std::chrono::milliseconds delayed;  // lock-delay left after an expiry: no grant before
};

// How to acquire: `mesh.locks().acquire("report", {.ttl = 10s, .wait = 2s})`.
// Designated initializers name fields in this order.
struct AcquireOptions {
  std::chrono::milliseconds ttl = 10s;  // lease length (the service takes 10 ms..1 h by default)
  // How long to wait in the lock's FIFO queue; 0: try once. The service cuts it
  // to its max_wait (60 s by default).
  std::chrono::milliseconds wait = 0ms;
  LockMode mode = LockMode::exclusive;
  uint32_t permits = 0;    // N > 0: the name is a semaphore of N permits (every acquire names N)
  uint64_t session = 0;    // the lease ends with this session (openSession)
  std::string owner = {};  // "": the client's owner (LockClient::owner())
};

// The lock service's stub. Calls are made as `owner`, by default one unique to
// this LockClient ("<hostname>:<pid>:<random>"): two threads that must exclude
// each other use two LockClients or two owners, since an acquire by an owner
// that already holds the lock gets that same lease back (that is what makes a
// resent acquire safe). Thread-safe, like every stub.
// Failures throw RpcError: CONFLICT (not granted in time, not the holder,
// wrong token, expired, permits mismatch), NOT_FOUND (unknown session),
// INVALID_ARGUMENT (name: 1-200 of [A-Za-z0-9._:@-]; owner: 1-128 printable
// ASCII; ttl out of the service's range), UNAVAILABLE (down, or busy at one
// of its bounds: locks, waiters, sessions), DEADLINE_EXCEEDED.
class LockClient {
 public:
  // `owner` "": a new one, unique to this client (see defaultOwner()).
  explicit LockClient(rpc::Channel channel, CallSettings settings = {}, std::string owner = "");

  // Waits up to options.wait; throws RpcError(CONFLICT) when not granted in
  // time. The call's own timeout is options.wait plus the settings' timeout.
  Lease acquire(const std::string& name, const AcquireOptions& options = {}) const;
  // The same, but CONFLICT (not granted in time; also a semaphore's permits
  // named differently) is nullopt.
  std::optional<Lease> tryAcquire(const std::string& name,
                                  const AcquireOptions& options = {}) const;
  // Only by the holder of the lease (else CONFLICT); the next waiter is granted.
  void release(const Lease& lease) const;
  // Makes a lease that has not expired end `ttl` (by default lease.ttl) from
  // now, and updates lease.expiry (and lease.ttl). CONFLICT when not the holder.
  void renew(Lease& lease) const;
  void renew(Lease& lease, std::chrono::milliseconds ttl) const;
  // nullopt when the lock is free (nobody holds it, nobody waits, no lock-delay).
  std::optional<LockInfo> inspect(const std::string& name) const;
  struct Validation {
    bool valid;        // `token` is held now
    uint64_t current;  // the highest token issued for the name (0: unknown or forgotten)
  };
  // For a resource guarding writes with fencing tokens.
  Validation validate(const std::string& name, uint64_t token) const;

  // A session ends when no heartbeat comes for its timeout: its leases are
  // released (lock.lost) and its waiters answered CONFLICT.
  struct Session {
    uint64_t id;
    std::chrono::milliseconds timeout;  // as the service clamped it
  };
  Session openSession(std::chrono::milliseconds timeout) const;
  // The session's timeout; NOT_FOUND once the session ended.
  std::chrono::milliseconds heartbeat(uint64_t session) const;
  // How many leases it released.
  uint32_t closeSession(uint64_t session) const;

  const std::string& owner() const { return owner_; }
  const rpc::Channel& channel() const { return channel_; }
  // "<hostname>:<pid>:<16 random hex digits>", new on every call.
  static std::string defaultOwner();

 private:
  // CONFLICT answers nullopt when `conflictIsEmpty`, else throws like any failure.
  std::optional<Lease> acquireLease(const std::string& name, const AcquireOptions& options,
                                    bool conflictIsEmpty) const;
  rpc::Channel channel_;
  CallSettings settings_;
  std::string owner_;
};

// ---- Cache (API.md "Cache") ----

// When set() writes: always, only when the key is absent (NX), only when it is present (XX).
enum class SetCondition : uint8_t { always, ifAbsent, ifPresent };

// How to set: `cache.set("user:1", "alice", {.ttl = 5s})`.
// Designated initializers name fields in this order.
struct SetOptions {
  std::chrono::milliseconds ttl = 0ms;  // 0: no expiry (or, with keepTtl, the key's current one)
  SetCondition condition = SetCondition::always;
  bool keepTtl = false;  // a key that exists keeps its expiry (ttl must be 0 then)
};

// The cache's counters, as stats() answers them.
struct CacheStats {
  std::string policy;  // fifo | lifo | lru | mru | lfu | random | noeviction
  uint64_t keys;
  uint64_t memoryUsed;   // bytes the entries and their index take
  uint64_t memoryLimit;  // max_memory
  uint64_t hits;
  uint64_t misses;
  uint64_t evictions;
  uint64_t expired;                // keys removed because their TTL ran out
  uint64_t refusedFull;            // writes refused with INSUFFICIENT_STORAGE (noeviction)
  uint64_t persistenceLagRecords;  // logged, not yet as durable as the fsync policy says
  std::string fsync;               // always | everysec | no | off (nothing persisted)
};

class CacheScan;

// The cache's stub. Keys (1..max_key_bytes) and values (0..max_value_bytes)
// are any bytes. Thread-safe, like every stub.
// Failures throw RpcError: PAYLOAD_TOO_LARGE (a key or value over its limit,
// for reads as for writes), INSUFFICIENT_STORAGE (full under the noeviction
// policy), FAILED_PRECONDITION (incr of a value that is not a decimal int64,
// or an overflow), INVALID_ARGUMENT (an empty key, a ttl over the service's
// longest, keepTtl with a ttl, a batch over max_batch, a cursor the service
// did not hand out; a scan count over max_batch is cut to it), UNAVAILABLE,
// DEADLINE_EXCEEDED.
// Resent on a lost connection: every call but incr/decr (a write resent is
// answered from the service's record of the first; incr is not resent, since
// one the service did not recognise would count twice).
class CacheClient {
 public:
  explicit CacheClient(rpc::Channel channel, CallSettings settings = {});

  // nullopt on a miss (absent or expired).
  std::optional<std::string> get(std::string_view key) const;
  // False when options.condition did not hold (nothing changed then).
  bool set(std::string_view key, std::string_view value, const SetOptions& options = {}) const;
  // Whether the key existed.
  bool del(std::string_view key) const;
  // In the order asked; nullopt for a miss. At most max_batch keys.
  std::vector<std::optional<std::string>> mget(const std::vector<std::string>& keys) const;
  // All or nothing: every entry is checked before any is written. ttl 0: no expiry.
  void mset(const std::vector<std::pair<std::string, std::string>>& entries,
            std::chrono::milliseconds ttl = 0ms) const;
  // The value after adding `by`; an absent key counts from 0 (and gets no TTL).
  int64_t incr(std::string_view key, int64_t by = 1) const;
  int64_t decr(std::string_view key, int64_t by = 1) const;  // incr(key, -by)
  // Sets the key's time to live (0: removes its expiry). False when there is no such key.
  bool expire(std::string_view key, std::chrono::milliseconds ttl) const;
  // What ttl() answers for a key without expiry.
  static constexpr std::chrono::milliseconds kNoExpiry = std::chrono::milliseconds::max();
  // The time the key has left, kNoExpiry when it does not expire; nullopt when absent.
  std::optional<std::chrono::milliseconds> ttl(std::string_view key) const;
  // Unlike get, not a use for the LRU/MRU/LFU policies.
  bool exists(std::string_view key) const;
  // Keys starting with `prefix`, fetched `count` at a time (see CacheScan).
  CacheScan scan(std::string_view prefix = {}, uint32_t count = 100) const;
  // One call of the scan: start with cursor ""; the scan is complete when
  // the answer's cursor is "". A page may hold no keys before the end.
  struct ScanPage {
    std::vector<std::string> keys;
    std::string cursor;
  };
  ScanPage scanPage(std::string_view prefix, std::string_view cursor, uint32_t count = 100) const;
  CacheStats stats() const;

  const rpc::Channel& channel() const { return channel_; }

 private:
  rpc::Channel channel_;
  CallSettings settings_;
};

// The keys of a scan, fetched a page at a time as the loop goes:
//   for (const std::string& key : cache.scan("user:")) ...
// A key present for the whole scan comes at least once (possibly more than
// once); one added or removed meanwhile may or may not. A page's call that
// fails throws RpcError from begin() or from the loop's increment. Like a
// stub, a scan must not outlive its Mesh.
class CacheScan {
 public:
  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = std::string;
    using difference_type = std::ptrdiff_t;
    using pointer = const std::string*;
    using reference = const std::string&;
    iterator() = default;
    reference operator*() const { return scan_->page_[scan_->index_]; }
    pointer operator->() const { return &**this; }
    iterator& operator++() {
      scan_->advance();
      return *this;
    }
    void operator++(int) { ++*this; }
    bool operator==(std::default_sentinel_t) const { return !scan_ || scan_->finished(); }

   private:
    friend class CacheScan;
    explicit iterator(CacheScan* scan) : scan_(scan) {}
    CacheScan* scan_ = nullptr;
  };
  // Single pass: begin() starts the scan (once; a second begin() continues it).
  iterator begin();
  std::default_sentinel_t end() const { return {}; }

 private:
  friend class CacheClient;
  CacheScan(CacheClient client, std::string prefix, uint32_t count)
      : client_(std::move(client)), prefix_(std::move(prefix)), count_(count) {}
  void fill();  // fetches pages until one has keys or the scan is complete
  void advance();
  bool finished() const { return index_ >= page_.size() && complete_; }
  CacheClient client_;  // a copy: the scan may outlive the stub it came from
  std::string prefix_;
  uint32_t count_;
  std::string cursor_;
  std::vector<std::string> page_;
  size_t index_ = 0;
  bool started_ = false;
  bool complete_ = false;
};

// One pub/sub event as a subscriber sees it.
struct Event {
  std::string topic;
  std::string publisher;
  uint64_t incarnation;
  uint64_t sequence;
  int64_t wallTimeMs;
  uint64_t missedBefore;  // events of this (publisher, topic) lost just before this one
  std::string json;       // the body as JSON (by its schema), e.g. {"namespace":"orders",…}
};

// A running subscription; stops (and joins its thread) when destroyed.
class Subscription {
 public:
  Subscription(Subscription&&) noexcept;
  Subscription& operator=(Subscription&&) noexcept;
  ~Subscription();
  void stop();

 private:
  friend class Events;

 public:
  struct State;  // opaque

 private:
  explicit Subscription(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

class Events {
 public:
  // `onEvent` runs on the subscription's own thread, in arrival order.
  Subscription subscribe(const std::string& prefix,
                         std::function<void(const Event&)> onEvent) const;
  Subscription subscribe(const std::vector<std::string>& prefixes,
                         std::function<void(const Event&)> onEvent) const;

 private:
  friend class Mesh;
  Events(zmq::context_t& context, std::string xpub) : context_(&context), xpub_(std::move(xpub)) {}
  zmq::context_t* context_;
  std::string xpub_;
};

// Renders an event body as JSON by the schema its bodyType names (known zmesh
// event types); unknown types render as {"bodyType":"0x…"}.
std::string eventBodyJson(uint64_t bodyType, capnp::AnyPointer::Reader body);

// The entry object: reads the mesh file, connects lazily to each service.
class Mesh {
 public:
  explicit Mesh(const std::string& configPath = "deploy/local/mesh.toml");
  explicit Mesh(rpc::MeshConfig config);
  ~Mesh();
  Mesh(const Mesh&) = delete;
  Mesh& operator=(const Mesh&) = delete;

  IdGenClient idgen(CallSettings settings = {});
  RateLimitClient ratelimit(CallSettings settings = {});
  // Each call gives a LockClient with an owner of its own.
  LockClient locks(CallSettings settings = {});
  CacheClient cache(CallSettings settings = {});
  AdminClient admin(const std::string& service, CallSettings settings = {});
  Events events();
  // The request/reply endpoint of a configured service; throws ConfigError if none.
  // For the broker: its XPUB endpoint (events); adminEndpoint() is its Admin one.
  std::string endpoint(const std::string& service) const;
  std::string adminEndpoint(const std::string& service) const;
  // A raw channel to a service's Admin endpoint, for generic (schema-driven) calls.
  rpc::Channel channel(const std::string& service);
  // Configured services in start order (broker first).
  std::vector<std::string> services() const;
  const rpc::MeshConfig& config() const { return config_; }

 private:
  struct Transport;
  // Started on first use, so a Mesh that only reads its config starts no thread
  // (zmeshctl forks its supervisor after reading it).
  Transport& transport();
  rpc::MeshConfig config_;
  std::mutex transportMutex_;
  std::unique_ptr<Transport> transport_;
};

// Default endpoints (DESIGN.md §6), used when the mesh file names none.
std::string defaultEndpoint(const std::string& service);

// The capnp interfaces a service answers, its own first, Admin last. Empty for
// an unknown service. This is where a new service's interface is registered.
std::vector<capnp::InterfaceSchema> interfacesOf(const std::string& service);

// A call by method name with params and results as dynamic structs (zmeshctl
// call, the gateway). Searches interfacesOf(service) for `method`. Throws
// std::invalid_argument for an unknown service or method, RpcError on failure.
class DynamicCall {
 public:
  DynamicCall(const std::string& service, const std::string& method);
  capnp::InterfaceSchema interface() const { return interface_; }
  capnp::InterfaceSchema::Method method() const { return method_; }
  capnp::StructSchema paramsSchema() const { return method_.getParamType(); }
  capnp::StructSchema resultsSchema() const { return method_.getResultType(); }
  // Sends `params` (built on paramsSchema()) and returns the reply (status checked).
  rpc::Reply invoke(const rpc::Channel& channel, capnp::MessageBuilder& params,
                    const CallSettings& settings, bool retryable) const;

 private:
  capnp::InterfaceSchema interface_;
  capnp::InterfaceSchema::Method method_;
};

}  // namespace zmesh
