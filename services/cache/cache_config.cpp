#include "cache_config.h"

#include <chrono>
#include <stdexcept>

#include "zmesh/rpc/host.h"

namespace zmesh::cache {

using std::chrono::milliseconds;

CacheServiceOptions parseCacheOptions(const rpc::ConfigSection& s, const CacheFlags& flags) {
  s.rejectUnknown({"enabled",
                   "endpoint",
                   "data_dir",
                   "fsync",
                   "policy",
                   "max_memory",
                   "max_key_bytes",
                   "max_value_bytes",
                   "max_ttl",
                   "max_batch",
                   "lfu_decay_uses",
                   "hash_seed",
                   "rewrite_after_bytes",
                   "snapshot_slice_keys",
                   "max_journal_queue_bytes",
                   "expire_interval",
                   "expire_budget",
                   "expire_run_max",
                   "events_per_second",
                   "event_key_bytes"},
                  rpc::kHostKeys);
  CacheServiceOptions options;
  options.dataDir = s.path("data_dir", "var/cache");
  options.fsync = s.parsed("fsync", "everysec", flags.fsync, storage::parseFsyncPolicy);
  auto& o = options.store;
  o.policy = s.parsed("policy", "lru", flags.policy, [](const std::string& text) {
    if (auto p = parsePolicy(text)) return *p;
    throw std::invalid_argument(
        "policy must be one of fifo|lifo|lru|mru|lfu|random|noeviction, got '" + text + "'");
  });
  constexpr uint64_t kMinMemory = 4096, kMaxMemory = uint64_t{1} << 40;
  o.maxMemory = s.bytes("max_memory", uint64_t{256} << 20, kMinMemory, kMaxMemory);
  if (flags.maxMemory) {
    auto n = rpc::parseBytes(*flags.maxMemory);
    if (!n || *n < kMinMemory || *n > kMaxMemory)
      throw rpc::ConfigError(
          "--max-memory: expected a size from 4096 bytes to 1024gb, such as "
          "\"64mb\", got '" +
          *flags.maxMemory + "'");
    o.maxMemory = *n;
  }
  // Both fit one log record (storage::kMaxRecordSize) with room to spare.
  o.maxKeyBytes = s.bytes("max_key_bytes", 4096, 1, 1 << 20);
  o.maxValueBytes = s.bytes("max_value_bytes", 512 << 10, 0, 32 << 20);
  o.maxTtl = s.duration("max_ttl", milliseconds(Millis{10} * 365 * 24 * 3600 * 1000),
                        milliseconds(1), milliseconds(Millis{100} * 365 * 24 * 3600 * 1000))
                 .count();
  o.lfuDecayUses = s.integer("lfu_decay_uses", 0, 0, INT64_MAX);
  o.seed = static_cast<uint64_t>(s.integer("hash_seed", 0, 0, INT64_MAX));
  options.maxBatch = s.integer("max_batch", 1000, 1, 100'000);
  options.rewriteAfterBytes = s.bytes("rewrite_after_bytes", uint64_t{64} << 20, 4096, UINT64_MAX);
  options.snapshotSliceKeys = s.integer("snapshot_slice_keys", 1000, 1, 1'000'000);
  options.maxJournalQueueBytes =
      s.bytes("max_journal_queue_bytes", uint64_t{64} << 20, 1 << 20, UINT64_MAX);
  options.expireInterval =
      s.duration("expire_interval", milliseconds(100), milliseconds(1), milliseconds(60'000))
          .count();
  options.expireBudget = s.integer("expire_budget", 200, 1, 1'000'000);
  options.expireStepMaxMicros =
      s.duration("expire_run_max", milliseconds(1), milliseconds(1), milliseconds(1000)).count() *
      1000;
  options.eventsPerSecond =
      static_cast<uint32_t>(s.integer("events_per_second", 1000, 0, 1'000'000));
  options.eventKeyBytes = s.integer("event_key_bytes", 256, 0, 1 << 20);
  return options;
}

}  // namespace zmesh::cache
