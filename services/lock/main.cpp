// zmesh-lock: flags and config in, core + adapter + host wired, run.
#include <spdlog/spdlog.h>

#include <chrono>
#include <optional>
#include <string>

#include "service.h"
#include "zmesh/rpc/host.h"

int main(int argc, char** argv) {
  using namespace zmesh;
  using std::chrono::milliseconds;
  CLI::App app{"zmesh-lock: leases with fencing tokens, fair wait queues, sessions"};
  rpc::CommonFlags flags;
  rpc::addCommonFlags(app, flags);
  std::optional<std::string> dataDir, fsync;
  bool memory = false;
  app.add_option("--data-dir", dataDir, "data directory (overrides lock.data_dir)");
  app.add_flag("--memory", memory,
               "persist nothing: leases are lost and tokens restart at exit (benchmarks only)");
  app.add_option("--fsync", fsync, "always|everysec|no (overrides lock.fsync)");
  CLI11_PARSE(app, argc, argv);
  try {
    rpc::setupLogging("lock", flags.logLevel, flags.logFile);
    auto config = rpc::MeshConfig::load(flags.config);
    auto s = config.section("lock");
    s.rejectUnknown(
        {"enabled", "endpoint", "data_dir", "fsync", "rewrite_after_bytes", "token_block",
         "min_ttl", "max_ttl", "max_wait", "lock_delay", "min_session_timeout",
         "max_session_timeout", "max_permits", "max_locks", "max_waiters", "max_waiters_per_lock",
         "max_shared_holders", "max_sessions", "retain_names"},
        rpc::kHostKeys);
    lock::LockServiceOptions options;
    options.dataDir = memory ? "" : dataDir.value_or(s.path("data_dir", "var/lock"));
    options.fsync = s.parsed("fsync", "everysec", fsync, storage::parseFsyncPolicy);
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
    t.maxSessions = s.integer("max_sessions", 100'000, 0, 100'000'000);
    t.retainNames = s.integer("retain_names", 100'000, 0, 100'000'000);

    auto host = rpc::hostOptionsFrom(config, "lock", flags, "tcp://127.0.0.1:7130");
    host.settings.emplace_back("data_dir", options.dataDir.empty() ? "(memory)" : options.dataDir);
    host.settings.emplace_back("fsync", std::string(storage::toString(options.fsync)));
    host.settings.emplace_back("max_wait", std::to_string(t.maxWait) + "ms");
    host.settings.emplace_back("lock_delay", std::to_string(t.lockDelay) + "ms");
    host.settings.emplace_back("max_locks", std::to_string(t.maxLocks));
    // Before the host: the service (owned by the host's server) uses it until destroyed.
    auto env = storage::makePosixEnv();
    rpc::ServiceHost service(std::move(host));
    lock::LockClocks clocks{[] {
                              return std::chrono::duration_cast<milliseconds>(
                                         std::chrono::steady_clock::now().time_since_epoch())
                                  .count();
                            },
                            [] {
                              return std::chrono::duration_cast<milliseconds>(
                                         std::chrono::system_clock::now().time_since_epoch())
                                  .count();
                            }};
    auto impl =
        kj::heap<lock::LockService>(service.server(), service.publisher(), *env, options, clocks);
    auto& locks = *impl;
    service.server().serve<idl::Lock>(kj::mv(impl));
    service.setHealth([&locks] { return locks.health(); });
    service.onStop([&locks] { locks.close(); });
    int code = service.run();
    if (code == 0 && !locks.health().first) return 1;  // stopped by a storage failure
    return code;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 2;
  }
}
