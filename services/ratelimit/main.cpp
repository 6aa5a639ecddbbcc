// zmesh-ratelimit: flags and config in, core + adapter + host wired, run.
#include <spdlog/spdlog.h>

#include <chrono>
#include <optional>
#include <string>

#include "service.h"
#include "zmesh/rpc/clock.h"
#include "zmesh/rpc/host.h"

int main(int argc, char** argv) {
  using namespace zmesh;
  CLI::App app{"zmesh-ratelimit: rate limits by rule and descriptors, six algorithms"};
  rpc::CommonFlags flags;
  rpc::addCommonFlags(app, flags);
  std::optional<std::string> dataDir, fsync;
  bool memory = false;
  app.add_option("--data-dir", dataDir, "data directory (overrides ratelimit.data_dir)");
  app.add_flag("--memory", memory, "persist nothing: run-time overrides are lost at exit");
  app.add_option("--fsync", fsync, "always|everysec|no (overrides ratelimit.fsync)");
  CLI11_PARSE(app, argc, argv);
  try {
    rpc::setupLogging("ratelimit", flags.logLevel, flags.logFile);
    auto config = rpc::MeshConfig::load(flags.config);
    auto s = config.section("ratelimit");
    s.rejectUnknown({"enabled", "endpoint", "data_dir", "fsync", "rewrite_after_bytes", "rules",
                     "max_keys", "when_full", "max_overrides", "sweep_interval", "sweep_budget",
                     "denied_event_interval", "denied_event_max_keys", "lease_max", "max_batch"},
                    rpc::kHostKeys);
    ratelimit::RateLimitOptions options;
    options.settings = ratelimit::parseSettings(s);
    options.configPath = flags.config;
    options.dataDir = memory ? "" : dataDir.value_or(s.path("data_dir", "var/ratelimit"));
    options.fsync = s.parsed("fsync", "everysec", fsync, storage::parseFsyncPolicy);
    options.rewriteAfterBytes = s.integer("rewrite_after_bytes", 1 << 20, 4096, INT64_MAX);
    auto rules = ratelimit::parseRules(s);
    if (rules.empty())
      spdlog::warn("ratelimit: no rules in {} ([ratelimit.rules.<name>]): every check fails",
                   config.source());

    auto host = rpc::hostOptionsFrom(config, "ratelimit", flags, "tcp://127.0.0.1:7120");
    host.settings.emplace_back("data_dir", options.dataDir.empty() ? "(memory)" : options.dataDir);
    host.settings.emplace_back("fsync", std::string(storage::toString(options.fsync)));
    host.settings.emplace_back("max_keys", std::to_string(options.settings.limiter.maxKeys));
    host.settings.emplace_back("rules", std::to_string(rules.size()));
    // Before the host: the service (owned by the host's server) uses it until destroyed.
    auto env = storage::makePosixEnv();
    rpc::ServiceHost service(std::move(host));
    auto impl =
        kj::heap<ratelimit::RateLimitService>(service.server(), service.publisher(), *env, options,
                                              std::move(rules), rpc::monotonicNanos);
    auto& limiter = *impl;
    service.server().serve<idl::RateLimit>(kj::mv(impl));
    service.setHealth([&limiter] { return limiter.health(); });
    service.onReload([&limiter] { limiter.reloadRules(); });
    service.onStop([&limiter] { limiter.close(); });
    int code = service.run();
    if (code == 0 && !limiter.health().first) return 1;  // stopped by a storage failure
    return code;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 2;
  }
}
