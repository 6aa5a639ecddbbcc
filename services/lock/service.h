// The lock service's capnp adapter: Lock methods on top of the pure core
// (LockTable), every change journaled, and nothing of it visible — reply,
// event, inspect, validate — before its record is as durable as the fsync
// policy says (under `always`: fsynced). Waits are deferred replies woken by
// the core's events; expiries run on one loop timer armed at the core's next
// deadline. Fencing tokens are reserved in blocks fsynced under every policy.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

#include "lock_log.h"
#include "lock_table.h"
#include "zmesh/idl/lock.capnp.h"
#include "zmesh/rpc/events.h"
#include "zmesh/rpc/server.h"
#include "zmesh/storage/env.h"
#include "zmesh/storage/fence.h"
#include "zmesh/storage/journal.h"

namespace zmesh::lock {

struct LockServiceOptions {
  LockOptions table;
  std::string dataDir;  // empty: nothing persisted (benchmarks and tests only)
  storage::FsyncPolicy fsync = storage::FsyncPolicy::everysec;
  uint64_t rewriteAfterBytes = 4 << 20;  // fold the log into a snapshot past this
  uint64_t tokenBlock = 10000;           // tokens reserved by one fsynced record
};

// Monotonic ms (lease and wait deadlines) and Unix ms (what the log keeps, so
// a restart can give a lease its remaining time); injected so tests control both.
struct LockClocks {
  std::function<Millis()> monotonic;
  std::function<int64_t()> wall;
};

class LockService final : public idl::Lock::Server {
 public:
  // Locks and recovers the data directory (throws storage::StorageError when it
  // is locked by another process or unreadable). `publisher` may be null.
  LockService(rpc::Server& server, rpc::Publisher* publisher, storage::Env& env,
              LockServiceOptions options, LockClocks clocks);
  ~LockService();

  kj::Promise<void> acquire(AcquireContext context) override;
  kj::Promise<void> release(ReleaseContext context) override;
  kj::Promise<void> renew(RenewContext context) override;
  kj::Promise<void> inspect(InspectContext context) override;
  kj::Promise<void> validate(ValidateContext context) override;
  kj::Promise<void> openSession(OpenSessionContext context) override;
  kj::Promise<void> heartbeat(HeartbeatContext context) override;
  kj::Promise<void> closeSession(CloseSessionContext context) override;

  // For Admin.health: false once storage failed.
  std::pair<bool, std::string> health() const;
  // Flushes the journal and releases the data directory; the loop is stopping.
  void close();

 private:
  void recover();
  // Journals, answers and publishes what a core call set in motion, in order.
  // `issuedFrom`: the table's nextToken() before that call.
  void handle(Events& events, uint64_t issuedFrom);
  void publish(const char* topic, const Lease& lease);
  void journalDelay(const std::string& name);
  // Appends a record; `done` (may be empty) runs once it is durable.
  void append(capnp::MessageBuilder& record, storage::Durability durability,
              std::function<void()> done = {});
  // Runs `fn` once every record appended so far is durable: now, if all are.
  void whenDurable(std::function<void()> fn);
  kj::Promise<void> durable();
  kj::Promise<void> refuse(const Failure& failure);
  void reserveTokens();
  void armWake();
  void wake();
  void maybeRewrite(bool force = false);
  void onFatal(const std::string& message);
  uint64_t remainingMs(Millis expiresAt) const;
  int64_t toWall(Millis expiresAt) const;

  rpc::Server& server_;
  rpc::Publisher* publisher_;
  storage::Env& env_;
  LockServiceOptions options_;
  LockClocks clocks_;
  LockTable table_;
  std::unique_ptr<storage::DirLock> lock_;
  std::unique_ptr<storage::Journal> journal_;
  // Acquires waiting for their answer, by call id.
  struct Granted {
    uint64_t token;
    Millis expiresAt;
  };
  uint64_t nextCall_ = 0;
  std::unordered_map<uint64_t, kj::Own<kj::PromiseFulfiller<Granted>>> calls_;
  // Records appended and records durable (completions run in append order),
  // and what waits for the second to reach a count of the first.
  storage::Fence fence_;
  uint64_t reservedTokens_ = 1;  // the highest token bound appended to the log
  bool reserving_ = false;
  std::optional<Millis> wakeArmedAt_;
  kj::Promise<void> wakeTimer_ = nullptr;
  bool rewriting_ = false;
  std::string fatal_;
  uint64_t published_ = 0;
};

}  // namespace zmesh::lock
