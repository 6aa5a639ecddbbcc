// zmeshctl: flags in, one subcommand out.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <iostream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "commands.h"
#include "zmesh/rpc/config.h"
#include "zmesh/rpc/host.h"
#include "zmesh/rpc/status.h"

namespace {

// `zmeshctl call ratelimit check api --key user:1`: after `call`, an option
// zmeshctl does not have names a params field. Taken out of argv before CLI11
// parses it (CLI11 would reject it), as (field, value) pairs in order.
std::vector<std::pair<std::string, std::string>> takeFieldOptions(std::vector<std::string>& args) {
  static const std::vector<std::string> kOwn = {"--params", "--json", "--timeout", "--config",
                                                "--help",   "-c",     "-h"};
  std::vector<std::pair<std::string, std::string>> fields;
  // The subcommand is the first word that is neither an option nor its value.
  auto call = args.begin();
  while (call != args.end() && call->starts_with("-")) {
    if ((*call == "-c" || *call == "--config") && call + 1 != args.end()) ++call;
    ++call;
  }
  if (call == args.end() || *call != "call") return fields;
  std::vector<std::string> kept(args.begin(), call + 1);
  for (auto it = call + 1; it != args.end(); ++it) {
    const std::string& word = *it;
    if (word == "--") {  // the rest are positional
      kept.insert(kept.end(), it, args.end());
      break;
    }
    std::string name = word.substr(0, word.find('='));
    if (!word.starts_with("--") || std::find(kOwn.begin(), kOwn.end(), name) != kOwn.end()) {
      kept.push_back(word);
      if (std::find(kOwn.begin(), kOwn.end(), word) != kOwn.end() && word != "--json" &&
          word != "--help" && word != "-h" && it + 1 != args.end())
        kept.push_back(*++it);  // the value of zmeshctl's own option
      continue;
    }
    if (word.find('=') != std::string::npos) {
      fields.emplace_back(name.substr(2), word.substr(word.find('=') + 1));
    } else if (it + 1 != args.end()) {
      fields.emplace_back(name.substr(2), *++it);
    } else {
      throw std::invalid_argument("option " + word + " needs a value");
    }
  }
  args = std::move(kept);
  return fields;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace zmesh;
  CLI::App app{"zmeshctl: run and talk to a local zmesh"};
  app.require_subcommand(1);
  std::string config = rpc::kDefaultConfig;
  app.add_option("-c,--config", config, "mesh file (TOML)")->capture_default_str();
  // `zmeshctl up -c FILE` as well as `zmeshctl -c FILE up`: a subcommand hands
  // the options it does not know (-c) up to this one.
  app.fallthrough();
  app.footer(
      "zmeshctl call --help: how arguments fill a method's params, and how Data (the cache's "
      "keys and values) is given and printed: as text, or as base64:<base64>.");

  auto* up = app.add_subcommand("up", "start every configured service and supervise it");
  bool foreground = false;
  up->add_flag("--foreground", foreground,
               "supervise in this process instead of in the background");
  app.add_subcommand("down", "stop the mesh started by `up` (SIGTERM, then SIGKILL)");
  app.add_subcommand("status", "each service's endpoint, pid, uptime, restarts and health");

  auto* call =
      app.add_subcommand("call",
                         "call any method: zmeshctl call idgen next orders 10, or by field name: "
                         "zmeshctl call ratelimit check api --key user:1 (a list of descriptors as "
                         "--descriptors tenant=acme,route=/orders)");
  call->footer(
      "Arguments fill the params in the order the schema declares them; --name value sets a "
      "field by name (--retry-after-ms or --retry_after_ms for retryAfterMs; --ttl and --wait "
      "for ttlMs and waitMs). An enum takes its name (--condition ifAbsent, or if-absent). A "
      "list takes commas: keys as a,b,c; pairs as a=1,b=2.\n\n"
      "Data fields (the cache's keys and values) take the argument's bytes as they are, or, "
      "after \"base64:\", the bytes that base64 encodes (zmeshctl call cache set k "
      "base64:AAEC). Results print Data as text when it is valid UTF-8 without control "
      "characters (newlines and tabs included) and does not begin with \"base64:\"; otherwise "
      "as base64:<base64>. --params and --json write Data fields the same way, as JSON "
      "strings.\n\n"
      "  zmeshctl call cache set user:1 alice --ttl 5000\n"
      "  zmeshctl call cache get user:1                # found: true  value: alice\n"
      "  zmeshctl call cache set user:1 bob --condition ifAbsent   # stored: false\n"
      "  zmeshctl call cache incr visits 5             # value: 5\n"
      "  zmeshctl call cache ttl user:1                # ttlMs: 4998 (-1: no expiry)\n"
      "  zmeshctl call cache scan user: --count 100    # keys, and the cursor to go on from\n"
      "  zmeshctl call cache mget user:1,user:2\n"
      "  zmeshctl call cache del user:1\n"
      "  zmeshctl call cache stats");
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

  auto* stats = app.add_subcommand(
      "stats", "a service's statistics: one line per series, with its kind (Admin.stats)");
  std::string statsService;
  int64_t statsTimeoutMs = 5000;
  stats->add_option("service", statsService, "idgen, broker, …")->required();
  stats->add_option("--timeout", statsTimeoutMs, "ms")->capture_default_str();

  auto* events = app.add_subcommand("events", "tail events: zmeshctl events idgen. lock.");
  std::vector<std::string> prefixes;
  int64_t count = 0, eventsTimeoutMs = 0;
  events->add_option("prefix", prefixes, "topic prefixes (default: all)");
  events->add_flag("--json", json, "one JSON object per line");
  events->add_option("--count", count, "exit after this many events");
  events->add_option("--timeout", eventsTimeoutMs,
                     "exit after this many ms (exit 1 if --count not reached)");

  std::vector<std::pair<std::string, std::string>> fieldOptions;
  try {
    std::vector<std::string> words(argv + 1, argv + argc);
    fieldOptions = takeFieldOptions(words);
    std::reverse(words.begin(), words.end());  // CLI11 takes a vector in reverse
    app.parse(words);
  } catch (const std::invalid_argument& e) {
    std::cerr << "zmeshctl: " << e.what() << '\n';
    return 2;
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
      return ctl::cmdCall(config, service, method, args, fieldOptions, params, json,
                          std::chrono::milliseconds(timeoutMs));
    if (app.got_subcommand("stats"))
      return ctl::cmdStats(config, statsService, std::chrono::milliseconds(statsTimeoutMs));
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
