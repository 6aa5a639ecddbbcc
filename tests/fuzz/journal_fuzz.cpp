// A data directory from arbitrary bytes: a snapshot and a log file recovered
// as the services recover them, every record then read as an idgen record
// (checked), replayed as a rate limiter's (overrides into a Limiter) and as
// the lock service's (restored into a LockTable, whose snapshot must replay
// into the same state) and as the cache's (into a small CacheStore, whose
// sliced snapshot must replay into the same keys).
// A damaged directory is refused with StorageError (or the record with
// FrameError), never a crash, never an endless read.
#include <cstdlib>
#include <string>

#include "cache_log.h"  // zmesh-cache's replay
#include "lock_log.h"   // zmesh-lock's replay
#include "service.h"    // zmesh-ratelimit's replay
#include "zmesh/idl/idgen.capnp.h"
#include "zmesh/rpc/frame.h"
#include "zmesh/storage/fault_env.h"
#include "zmesh/storage/journal.h"

namespace {

using namespace zmesh;

template <typename T>
void read(const std::string& bytes) {
  try {
    rpc::FrameMessage message(bytes.data(), bytes.size(), rpc::readerOptionsFor(bytes.size()));
    rpc::checkFields(message.any(), capnp::Schema::from<T>(), "record");
  } catch (const rpc::FrameError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The first two bytes: how much of the rest is the snapshot (0: none).
  size_t snapshotBytes = size >= 2 ? std::min<size_t>((data[0] << 8 | data[1]), size - 2) : 0;
  const char* rest = reinterpret_cast<const char*>(data) + std::min<size_t>(size, 2);
  size_t restBytes = size - std::min<size_t>(size, 2);
  storage::FaultInjectionEnv env;
  const std::string dir = "/data";
  env.createDirs(dir);
  if (snapshotBytes > 0)
    env.openTruncate(storage::Journal::snapshotPath(dir, "idgen"))
        ->append(std::string_view(rest, snapshotBytes));
  env.openTruncate(storage::Journal::logPath(dir, "idgen", 1))
      ->append(std::string_view(rest + snapshotBytes, restBytes - snapshotBytes));
  try {
    auto recovered = storage::Journal::recover(env, dir, "idgen");
    if (recovered.snapshot) read<idl::IdGenSnapshot>(*recovered.snapshot);
    for (auto& record : recovered.records) read<idl::IdGenLogRecord>(record);
    ratelimit::Limiter limiter;
    if (recovered.snapshot) ratelimit::replaySnapshot(limiter, *recovered.snapshot);
    for (auto& record : recovered.records) ratelimit::replayRecord(limiter, record);
    // Whatever was replayed, the rules index it or leave it aside; checks then run.
    ratelimit::Rule rule{"tr",
                         {ratelimit::Algorithm::fixedWindow, 3, 1'000'000'000, 0},
                         {"tenant", "route"},
                         false,
                         {}};
    limiter.setRules({rule});
    std::vector<ratelimit::DescriptorView> d{{"tenant", "acme"}, {"route", "/"}};
    (void)limiter.check({"tr", {}, d, 1}, 0);
  } catch (const storage::StorageError&) {
  }
  try {
    auto recovered = storage::Journal::recover(env, dir, "idgen");
    lock::LockLogState state;
    if (recovered.snapshot) lock::replaySnapshot(state, *recovered.snapshot);
    for (auto& record : recovered.records) lock::replayRecord(state, record);
    lock::LockTable table;
    lock::restore(table, state, 1000, 1'700'000'000'000);
    // What a rewrite would write reads back as the same table.
    lock::LockLogState again;
    lock::replaySnapshot(again, lock::lockSnapshot(table, state.tokens, 1000, 1'700'000'000'000));
    lock::LockTable copy;
    lock::restore(copy, again, 1000, 1'700'000'000'000);
    if (copy.leases().size() != table.leases().size() || copy.nextToken() < table.nextToken())
      std::abort();
    lock::Events events;
    table.advance(1'000'000'000, events);  // every lease expires, every session ends
  } catch (const storage::StorageError&) {
  }
  try {
    auto recovered = storage::Journal::recover(env, dir, "idgen");
    cache::CacheOptions options;
    options.maxMemory = 1 << 20;  // replays past it evict, as a restart with a smaller limit does
    cache::CacheStore store(options);
    const cache::Millis now = 1'700'000'000'000;
    if (recovered.snapshot) cache::replaySnapshot(store, *recovered.snapshot, now);
    for (auto& record : recovered.records) cache::replayRecord(store, record, now);
    // What a snapshot of it would hold reads back as the same keys.
    std::string snapshot;
    cache::ScanCursor c;
    while (!c.done)
      c = store.scanRange(c.position, UINT64_MAX, 64, now,
                          [&](std::string_view k, std::string_view v, cache::Millis e) {
                            cache::appendSnapshotEntry(snapshot, k, v, e);
                          });
    options.maxMemory = uint64_t{1} << 30;  // the same keys, nothing evicted on the way
    cache::CacheStore again(options);
    cache::replaySnapshot(again, snapshot, now);
    if (again.size() != store.size()) std::abort();
  } catch (const storage::StorageError&) {
  }
  return 0;
}
