#include "lock_config.h"

#include <chrono>

namespace zmesh::lock {

using std::chrono::milliseconds;

LockServiceOptions parseLockOptions(const rpc::ConfigSection& s,
                                    const std::optional<std::string>& fsyncFlag) {
  s.rejectUnknown({"enabled",
                   "endpoint",
                   "data_dir",
                   "fsync",
                   "rewrite_after_bytes",
                   "token_block",
                   "min_ttl",
                   "max_ttl",
                   "max_wait",
                   "lock_delay",
                   "min_session_timeout",
                   "max_session_timeout",
                   "max_permits",
                   "max_locks",
                   "max_waiters",
                   "max_waiters_per_lock",
                   "max_shared_holders",
                   "max_holders",
                   "max_sessions",
                   "retain_names"},
                  rpc::kHostKeys);
  LockServiceOptions options;
  options.dataDir = s.path("data_dir", "var/lock");
  options.fsync = s.parsed("fsync", "everysec", fsyncFlag, storage::parseFsyncPolicy);
  options.rewriteAfterBytes = s.integer("rewrite_after_bytes", 4 << 20, 4096, INT64_MAX);
  options.tokenBlock = s.integer("token_block", 10000, 2, 1'000'000'000);
  auto& t = options.table;
  t.tokenLowWater = options.tokenBlock / 2;
  t.minTtl = s.duration("min_ttl", milliseconds(10), milliseconds(1)).count();
  t.maxTtl = s.duration("max_ttl", milliseconds(3'600'000), milliseconds(1)).count();
  if (t.maxTtl < t.minTtl)
    s.fail("max_ttl",
           std::to_string(t.maxTtl) + " ms is below min_ttl " + std::to_string(t.minTtl) + " ms");
  t.maxWait = s.duration("max_wait", milliseconds(60'000)).count();
  t.lockDelay = s.duration("lock_delay", milliseconds(0)).count();
  t.minSessionTimeout =
      s.duration("min_session_timeout", milliseconds(1000), milliseconds(1)).count();
  t.maxSessionTimeout =
      s.duration("max_session_timeout", milliseconds(600'000), milliseconds(1)).count();
  if (t.maxSessionTimeout < t.minSessionTimeout)
    s.fail("max_session_timeout", std::to_string(t.maxSessionTimeout) +
                                      " ms is below min_session_timeout " +
                                      std::to_string(t.minSessionTimeout) + " ms");
  t.maxPermits = static_cast<uint32_t>(s.integer("max_permits", 10'000, 1, 1'000'000));
  t.maxLocks = s.integer("max_locks", 1'000'000, 1, 100'000'000);
  t.maxWaiters = s.integer("max_waiters", 100'000, 0, 100'000'000);
  t.maxWaitersPerLock = s.integer("max_waiters_per_lock", 10'000, 0, 100'000'000);
  t.maxSharedHolders = s.integer("max_shared_holders", 10'000, 1, 100'000'000);
  t.maxHolders = s.integer("max_holders", 1'000'000, 1, 100'000'000);
  t.maxSessions = s.integer("max_sessions", 100'000, 0, 100'000'000);
  t.retainNames = s.integer("retain_names", 100'000, 0, 100'000'000);
  return options;
}

}  // namespace zmesh::lock
