// The ID generator's capnp adapter: IdGen methods on top of the pure core
// (SequenceBook, Snowflake), with their durability handshakes wired to the
// journal and their waits wired to the loop's timer. Nothing here blocks: a
// call that needs a durable record or the next millisecond answers later.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "sequence_book.h"
#include "snowflake.h"
#include "zmesh/idl/idgen.capnp.h"
#include "zmesh/rpc/events.h"
#include "zmesh/rpc/server.h"
#include "zmesh/storage/env.h"
#include "zmesh/storage/journal.h"

namespace zmesh::idgen {

struct IdGenOptions {
  SequenceBookOptions book;
  SnowflakeOptions snowflake;
  std::string dataDir;  // empty: nothing persisted (benchmarks and tests only)
  storage::FsyncPolicy fsync = storage::FsyncPolicy::everysec;
  uint64_t rewriteAfterBytes = 4 << 20;  // fold the log into a snapshot past this
  int64_t epochWarnDays = 365;
};

// Unix time in ms; injected so tests control Snowflake time.
using WallClock = std::function<int64_t()>;

class IdGenService final : public idl::IdGen::Server {
 public:
  // Locks and recovers the data directory (throws storage::StorageError when it
  // is locked by another process or unreadable). `publisher` may be null.
  IdGenService(rpc::Server& server, rpc::Publisher* publisher, storage::Env& env,
               IdGenOptions options, WallClock clock);
  ~IdGenService();

  kj::Promise<void> next(NextContext context) override;
  kj::Promise<void> snowflake(SnowflakeContext context) override;
  kj::Promise<void> decode(DecodeContext context) override;

  // For Admin.health: false once storage failed.
  std::pair<bool, std::string> health() const;
  // Flushes the journal and releases the data directory; the loop is stopping.
  void close();

 private:
  template <typename T>
  struct Waiting;
  void recover();
  void reserveBlocks();
  void onReserved(const Reservation& r);
  void persistBound();
  void pollSnowflake();
  void armSnowflakeWake();
  void tick();
  // Folds the log into a snapshot past rewriteAfterBytes, or now with `force`.
  void maybeRewrite(bool force = false);
  void onFatal(const std::string& message);

  rpc::Server& server_;
  rpc::Publisher* publisher_;
  storage::Env& env_;
  IdGenOptions options_;
  WallClock clock_;
  SequenceBook book_;
  Snowflake flake_;
  std::unique_ptr<storage::DirLock> lock_;
  std::unique_ptr<storage::Journal> journal_;
  uint64_t nextTicket_ = 0;
  std::map<uint64_t, kj::Own<kj::PromiseFulfiller<IdRange>>> sequenceWaiters_;
  std::map<uint64_t, kj::Own<kj::PromiseFulfiller<std::vector<uint64_t>>>> snowflakeWaiters_;
  std::optional<int64_t> wakeArmedAt_;
  kj::Promise<void> wakeTimer_ = nullptr;
  kj::Promise<void> ticker_ = nullptr;
  int64_t appendedBound_ = 0;  // highest time bound handed to the journal
  bool rewriting_ = false;
  std::string fatal_;
  uint64_t blocksPublished_ = 0;
  bool epochWarned_ = false;
};

}  // namespace zmesh::idgen
