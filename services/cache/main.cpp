// zmesh-cache: flags and config in, core + adapter + host wired, run.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>
#include <string>

#include "cache_config.h"
#include "service.h"
#include "zmesh/rpc/clock.h"
#include "zmesh/rpc/host.h"

int main(int argc, char** argv) {
  using namespace zmesh;
  CLI::App app{"zmesh-cache: keys and values with TTL, eviction under a memory limit, persistence"};
  rpc::CommonFlags flags;
  rpc::addCommonFlags(app, flags);
  std::optional<std::string> dataDir;
  cache::CacheFlags cacheFlags;
  bool memory = false;
  app.add_option("--data-dir", dataDir, "data directory (overrides cache.data_dir)");
  app.add_flag("--memory", memory, "persist nothing: the cache starts empty every time");
  app.add_option("--fsync", cacheFlags.fsync, "always|everysec|no (overrides cache.fsync)");
  app.add_option("--policy", cacheFlags.policy,
                 "fifo|lifo|lru|mru|lfu|random|noeviction (overrides cache.policy)");
  app.add_option("--max-memory", cacheFlags.maxMemory,
                 "bytes the cache may hold, e.g. 64mb (overrides cache.max_memory)");
  CLI11_PARSE(app, argc, argv);
  try {
    rpc::setupLogging("cache", flags.logLevel, flags.logFile);
    auto config = rpc::MeshConfig::load(flags.config);
    auto options = cache::parseCacheOptions(config.section("cache"), cacheFlags);
    if (memory)
      options.dataDir.clear();
    else if (dataDir)
      options.dataDir = *dataDir;
    auto host = rpc::hostOptionsFrom(config, "cache", flags, "tcp://127.0.0.1:7140");
    // A set carries a key and a value: requests must fit the largest of both.
    auto& limit = host.server.maxRequestBytes;
    limit = std::max(limit, options.store.maxKeyBytes + options.store.maxValueBytes + 4096);
    const auto& o = options.store;
    host.settings.emplace_back("data_dir", options.dataDir.empty() ? "(memory)" : options.dataDir);
    host.settings.emplace_back("fsync", std::string(storage::toString(options.fsync)));
    host.settings.emplace_back("policy", std::string(cache::toString(o.policy)));
    host.settings.emplace_back("max_memory", std::to_string(o.maxMemory));
    host.settings.emplace_back("max_key_bytes", std::to_string(o.maxKeyBytes));
    host.settings.emplace_back("max_value_bytes", std::to_string(o.maxValueBytes));
    // Before the host: the service (owned by the host's server) uses it until destroyed.
    auto env = storage::makePosixEnv();
    rpc::ServiceHost service(std::move(host));
    auto impl = kj::heap<cache::CacheService>(service.server(), service.publisher(), *env, options,
                                              rpc::unixMillis);
    auto& cache = *impl;
    service.server().serve<idl::Cache>(kj::mv(impl));
    service.setHealth([&cache] { return cache.health(); });
    service.onStop([&cache] { cache.close(); });
    int code = service.run();
    if (code == 0 && !cache.health().first) return 1;  // stopped by a storage failure
    return code;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 2;
  }
}
