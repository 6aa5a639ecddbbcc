// The cache's capnp adapter: Cache methods on top of the pure core
// (CacheStore), every change the core reports logged through the journal and
// published as an event, and nothing of it visible — reply, event, a read by
// another client — before its record is as durable as the fsync policy says
// (under `always`: fsynced). The loop also runs the active expiry in
// time-bounded steps, flushes folded events, and writes snapshots a slice at
// a time while requests go on.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "cache_log.h"
#include "cache_store.h"
#include "event_throttle.h"
#include "zmesh/idl/cache.capnp.h"
#include "zmesh/rpc/events.h"
#include "zmesh/rpc/server.h"
#include "zmesh/storage/env.h"
#include "zmesh/storage/fence.h"
#include "zmesh/storage/journal.h"

namespace zmesh::cache {

struct CacheServiceOptions {
  CacheOptions store;
  std::string dataDir;  // empty: nothing persisted
  storage::FsyncPolicy fsync = storage::FsyncPolicy::everysec;
  // A snapshot starts once the log passes both this and the last snapshot's size.
  uint64_t rewriteAfterBytes = uint64_t{64} << 20;
  size_t snapshotSliceKeys = 1000;  // entries serialised per loop turn
  uint64_t maxJournalQueueBytes = uint64_t{64}
                                  << 20;  // writes waiting for the disk; beyond: UNAVAILABLE
  size_t maxBatch = 1000;                 // keys of one mget/mset, count of one scan
  Millis expireInterval = 100;            // active expiry runs this often
  size_t expireBudget = 200;              // keys examined per expiry step
  int64_t expireStepMaxMicros = 1000;     // steps of one run stop past this
  uint32_t eventsPerSecond = 1000;        // per topic; beyond, events are folded
  size_t eventKeyBytes = 256;             // longer keys travel as their hash only
};

class CacheService final : public idl::Cache::Server {
 public:
  // Locks and recovers the data directory (throws storage::StorageError when
  // it is locked by another process or unreadable). `publisher` may be null.
  // `now`: Unix ms (what TTLs and the log use).
  CacheService(rpc::Server& server, rpc::Publisher* publisher, storage::Env& env,
               CacheServiceOptions options, std::function<Millis()> now);
  ~CacheService();

  kj::Promise<void> get(GetContext context) override;
  kj::Promise<void> set(SetContext context) override;
  kj::Promise<void> del(DelContext context) override;
  kj::Promise<void> mget(MgetContext context) override;
  kj::Promise<void> mset(MsetContext context) override;
  kj::Promise<void> incr(IncrContext context) override;
  kj::Promise<void> expire(ExpireContext context) override;
  kj::Promise<void> ttl(TtlContext context) override;
  kj::Promise<void> exists(ExistsContext context) override;
  kj::Promise<void> scan(ScanContext context) override;
  kj::Promise<void> stats(StatsContext context) override;

  // For Admin.health: false once storage failed.
  std::pair<bool, std::string> health() const;
  // Flushes the journal and releases the data directory; the loop is stopping.
  void close();

 private:
  enum Topic : uint8_t { kSet, kInvalidated, kEvicted, kTopics };

  // What the store changed, logged and published.
  void changedSet(std::string_view key, std::string_view value, Millis expiresAt);
  void changedRemoved(std::string_view key, Removal why);
  void changedExpiry(std::string_view key, std::string_view value, Millis expiresAt);
  struct Changes final : Listener {
    explicit Changes(CacheService& s) : service(s) {}
    void onSet(std::string_view key, std::string_view value, Millis expiresAt) override {
      service.changedSet(key, value, expiresAt);
    }
    void onRemoved(std::string_view key, Removal why) override { service.changedRemoved(key, why); }
    void onExpireSet(std::string_view key, std::string_view value, Millis expiresAt) override {
      service.changedExpiry(key, value, expiresAt);
    }
    CacheService& service;
  };

  void recover();
  void event(Topic topic, std::string_view key, idl::ChangeReason reason);
  void publish(Topic topic, const std::string& key, uint64_t hash, idl::ChangeReason reason,
               uint32_t count);
  // Resolves once every record appended so far is durable (at once when all are).
  kj::Promise<void> durable();
  // Refuses a write while the journal's queue is over its bound.
  kj::Maybe<kj::Exception> backPressure();
  kj::Promise<void> refuse(const Failure& failure);
  void tick();
  void armTick();
  void expireActively();
  void maybeSnapshot();
  void snapshotSlice();
  void onFatal(const std::string& message);

  rpc::Server& server_;
  rpc::Publisher* publisher_;
  storage::Env& env_;
  CacheServiceOptions options_;
  std::function<Millis()> now_;
  Changes changes_;
  CacheStore store_;
  LogRecorder recorder_;
  std::unique_ptr<storage::DirLock> lock_;
  std::unique_ptr<storage::Journal> journal_;
  storage::Fence fence_;
  bool recovering_ = false;
  bool overwriting_ = false;  // the store reported an overwrite; its onSet comes next
  std::string fatal_;
  kj::Promise<void> tickTimer_ = nullptr;
  kj::Promise<void> sliceTimer_ = nullptr;

  // Events: one throttle per topic, and the latest folded event of each.
  struct Folded {
    std::string key;
    uint64_t hash = 0;
    idl::ChangeReason reason = idl::ChangeReason::DELETED;
  };
  std::array<EventThrottle, kTopics> throttles_;
  std::array<Folded, kTopics> folded_;

  // Snapshot in progress: where the next slice starts.
  bool snapshotting_ = false;
  ScanCursor snapshotCursor_;
  uint64_t snapshotBytes_ = 0, lastSnapshotBytes_ = 0;

  struct Counters {
    uint64_t expireRuns = 0, expireSteps = 0, expiredActively = 0, expireMaxMicros = 0;
    uint64_t refusedBackPressure = 0, snapshots = 0, snapshotSlices = 0, snapshotPauses = 0;
  } counters_;
};

}  // namespace zmesh::cache
