// zmesh-lock: flags and config in, core + adapter + host wired, run.
#include <spdlog/spdlog.h>

#include <chrono>
#include <optional>
#include <string>

#include "lock_config.h"
#include "service.h"
#include "zmesh/rpc/clock.h"
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
    auto options = lock::parseLockOptions(s, fsync);
    if (memory)
      options.dataDir.clear();
    else if (dataDir)
      options.dataDir = *dataDir;
    auto& t = options.table;
    auto host = rpc::hostOptionsFrom(config, "lock", flags, "tcp://127.0.0.1:7130");
    host.settings.emplace_back("data_dir", options.dataDir.empty() ? "(memory)" : options.dataDir);
    host.settings.emplace_back("fsync", std::string(storage::toString(options.fsync)));
    host.settings.emplace_back("max_wait", std::to_string(t.maxWait) + "ms");
    host.settings.emplace_back("lock_delay", std::to_string(t.lockDelay) + "ms");
    host.settings.emplace_back("max_locks", std::to_string(t.maxLocks));
    // Before the host: the service (owned by the host's server) uses it until destroyed.
    auto env = storage::makePosixEnv();
    rpc::ServiceHost service(std::move(host));
    lock::LockClocks clocks{rpc::monotonicMillis, rpc::unixMillis};
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
