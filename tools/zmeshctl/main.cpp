// zmeshctl: flags in, one subcommand out.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "commands.h"
#include "zmesh/rpc/config.h"
#include "zmesh/rpc/host.h"
#include "zmesh/rpc/status.h"

int main(int argc, char** argv) {
  using namespace zmesh;
  CLI::App app{"zmeshctl: run and talk to a local zmesh"};
  app.require_subcommand(1);
  std::string config = rpc::kDefaultConfig;
  app.add_option("-c,--config", config, "mesh file (TOML)")->capture_default_str();
  // `zmeshctl up -c FILE` as well as `zmeshctl -c FILE up`: a subcommand hands
  // the options it does not know (-c) up to this one.
  app.fallthrough();

  auto* up = app.add_subcommand("up", "start every configured service and supervise it");
  bool foreground = false;
  up->add_flag("--foreground", foreground,
               "supervise in this process instead of in the background");
  app.add_subcommand("down", "stop the mesh started by `up` (SIGTERM, then SIGKILL)");
  app.add_subcommand("status", "each service's endpoint, pid, uptime, restarts and health");

  auto* call = app.add_subcommand("call", "call any method: zmeshctl call idgen next orders 10");
  std::string service, method, params;
  std::vector<std::string> args;
  bool json = false;
  int64_t timeoutMs = 5000;
  call->add_option("service", service, "idgen, broker, …")->required();
  call->add_option("method", method, "a method of the service's interface or of Admin")->required();
  call->add_option("args", args, "params, in the order the schema declares them");
  call->add_option("--params", params,
                   "params as JSON instead, e.g. '{\"namespace\":\"orders\",\"count\":5}'");
  call->add_flag("--json", json, "print the results as one JSON object");
  call->add_option("--timeout", timeoutMs, "ms")->capture_default_str();

  auto* events = app.add_subcommand("events", "tail events: zmeshctl events idgen. lock.");
  std::vector<std::string> prefixes;
  int64_t count = 0, eventsTimeoutMs = 0;
  events->add_option("prefix", prefixes, "topic prefixes (default: all)");
  events->add_flag("--json", json, "one JSON object per line");
  events->add_option("--count", count, "exit after this many events");
  events->add_option("--timeout", eventsTimeoutMs,
                     "exit after this many ms (exit 1 if --count not reached)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Usage errors exit 2 like every other bad argument (CLI11's own codes are 100+).
    return app.exit(e) == 0 ? 0 : 2;
  }
  spdlog::set_level(spdlog::level::warn);
  try {
    if (app.got_subcommand("up")) return ctl::cmdUp(config, foreground);
    if (app.got_subcommand("down")) return ctl::cmdDown(config);
    if (app.got_subcommand("status")) return ctl::cmdStatus(config);
    if (app.got_subcommand("call"))
      return ctl::cmdCall(config, service, method, args, params, json,
                          std::chrono::milliseconds(timeoutMs));
    if (app.got_subcommand("events"))
      return ctl::cmdEvents(config, prefixes, json, count,
                            std::chrono::milliseconds(eventsTimeoutMs));
  } catch (const rpc::RpcError& e) {
    std::cerr << "zmeshctl: " << e.what() << '\n';
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "zmeshctl: " << e.what() << '\n';
    return 2;
  }
  return 2;
}
