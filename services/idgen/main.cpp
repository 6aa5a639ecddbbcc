// zmesh-idgen: flags and config in, core + adapter + host wired, run.
#include <spdlog/spdlog.h>

#include <chrono>
#include <optional>
#include <string>

#include "service.h"
#include "zmesh/rpc/clock.h"
#include "zmesh/rpc/host.h"

namespace {

// A number given as a flag, checked as ConfigSection::integer checks the file's keys.
std::optional<int64_t> checkedFlag(const char* flag, std::optional<int64_t> value, int64_t min,
                                   int64_t max) {
  if (value && (*value < min || *value > max))
    throw zmesh::rpc::ConfigError(std::string(flag) + ": expected " + std::to_string(min) + " to " +
                                  std::to_string(max) + ", got " + std::to_string(*value));
  return value;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace zmesh;
  CLI::App app{"zmesh-idgen: durable sequences (INCR) and Snowflake ids"};
  rpc::CommonFlags flags;
  rpc::addCommonFlags(app, flags);
  std::optional<std::string> dataDir, fsync;
  std::optional<int64_t> workerId, blockSize;
  bool memory = false;
  app.add_option("--data-dir", dataDir, "data directory (overrides idgen.data_dir)");
  app.add_flag("--memory", memory, "persist nothing: ids restart at 1 (benchmarks only)");
  app.add_option("--fsync", fsync, "always|everysec|no (overrides idgen.fsync)");
  app.add_option("--worker-id", workerId, "Snowflake worker id 0-1023 (overrides idgen.worker_id)");
  app.add_option("--block-size", blockSize,
                 "ids per durable reservation, and the least a block shrinks to "
                 "(overrides idgen.block_size)");
  CLI11_PARSE(app, argc, argv);
  try {
    rpc::setupLogging("idgen", flags.logLevel, flags.logFile);
    auto config = rpc::MeshConfig::load(flags.config);
    auto s = config.section("idgen");
    s.rejectUnknown({"enabled", "endpoint", "data_dir", "fsync", "block_size", "max_block_size",
                     "block_duration", "worker_id", "epoch_ms", "max_backward", "bound_ahead",
                     "epoch_warn_days", "rewrite_after_bytes"},
                    rpc::kHostKeys);
    idgen::IdGenOptions options;
    options.dataDir = memory ? "" : dataDir.value_or(s.path("data_dir", "var/idgen"));
    options.fsync = s.parsed("fsync", "everysec", fsync, storage::parseFsyncPolicy);
    const int64_t maxBlock = idgen::kMaxBlockSize;
    options.book.blockSize = checkedFlag("--block-size", blockSize, 1, maxBlock)
                                 .value_or(s.integer("block_size", 1000, 1, maxBlock));
    options.book.maxBlockSize = s.integer(
        "max_block_size", std::max<int64_t>(options.book.blockSize, 1'000'000), 1, maxBlock);
    if (options.book.maxBlockSize < options.book.blockSize)
      s.fail("max_block_size", std::to_string(options.book.maxBlockSize) + " is below " +
                                   (blockSize ? "--block-size " : "block_size ") +
                                   std::to_string(options.book.blockSize));
    // The core's default is fixed blocks (0); a service grows them unless told not to.
    options.book.blockDuration = s.duration("block_duration", std::chrono::seconds(1));
    const int64_t fileWorkerId = s.integer("worker_id", 0, 0, idgen::kMaxWorkerId);
    options.snowflake.workerId =
        checkedFlag("--worker-id", workerId, 0, idgen::kMaxWorkerId).value_or(fileWorkerId);
    options.snowflake.epochMs = s.integer("epoch_ms", idgen::kDefaultEpochMs, 0, INT64_MAX / 2);
    options.snowflake.maxBackwardMs =
        s.duration("max_backward", std::chrono::milliseconds(5)).count();
    options.snowflake.boundAheadMs =
        s.duration("bound_ahead", std::chrono::milliseconds(2000), std::chrono::milliseconds(2))
            .count();
    options.snowflake.renewBeforeMs = options.snowflake.boundAheadMs / 2;
    options.epochWarnDays = s.integer("epoch_warn_days", 365, 0, 100000);
    options.rewriteAfterBytes = s.integer("rewrite_after_bytes", 4 << 20, 4096, INT64_MAX);
    if (auto f = options.snowflake.validate())
      throw rpc::ConfigError(config.source() + ": idgen: " + f->message);

    auto host = rpc::hostOptionsFrom(config, "idgen", flags, "tcp://127.0.0.1:7110");
    host.settings.emplace_back("data_dir", options.dataDir.empty() ? "(memory)" : options.dataDir);
    host.settings.emplace_back("fsync", std::string(storage::toString(options.fsync)));
    host.settings.emplace_back("block_size", std::to_string(options.book.blockSize));
    host.settings.emplace_back("max_block_size", std::to_string(options.book.maxBlockSize));
    host.settings.emplace_back("block_duration",
                               std::to_string(options.book.blockDuration.count()) + "ms");
    host.settings.emplace_back("worker_id", std::to_string(options.snowflake.workerId));
    host.settings.emplace_back("epoch_ms", std::to_string(options.snowflake.epochMs));
    // Before the host: the service (owned by the host's server) uses it until destroyed.
    auto env = storage::makePosixEnv();
    rpc::ServiceHost service(std::move(host));
    auto impl = kj::heap<idgen::IdGenService>(service.server(), service.publisher(), *env, options,
                                              rpc::unixMillis);
    auto& idgen = *impl;
    service.server().serve<idl::IdGen>(kj::mv(impl));
    service.setHealth([&idgen] { return idgen.health(); });
    service.onStop([&idgen] { idgen.close(); });
    int code = service.run();
    // Stopped by a storage failure (DESIGN.md §4): not a clean stop, say so.
    if (code == 0 && !idgen.health().first) return 1;
    return code;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 2;
  }
}
