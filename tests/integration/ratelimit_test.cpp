// zmesh-ratelimit end to end: real processes on free loopback ports, started
// from a mesh file written into a temporary directory (which holds its data).
#include <signal.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <optional>
#include <thread>

#include "process.h"
#include "zmesh/client.h"
#include "zmesh/idl/ratelimit.capnp.h"
#include "zmesh/rpc/events.h"
#include "zmesh/two_stage.h"

using namespace zmesh;
using namespace zmesh::testing;
using Catch::Matchers::Contains;
using Clock = std::chrono::steady_clock;

namespace {

// Long windows: a test's few seconds never cross an edge (a fixed window is
// aligned to multiples of its length on the service's monotonic clock).
constexpr const char* kRules = R"(
[ratelimit.rules.fixed]
algorithm = "fixed_window"
limit = 500
window = "24h"
descriptors = ["key"]

[ratelimit.rules.log]
algorithm = "sliding_window_log"
limit = 500
window = "24h"
descriptors = ["key"]

[ratelimit.rules.counter]
algorithm = "sliding_window_counter"
limit = 500
window = "24h"
descriptors = ["key"]

[ratelimit.rules.token]
algorithm = "token_bucket"
limit = 500
window = "24h"
descriptors = ["key"]

[ratelimit.rules.leaky]
algorithm = "leaky_bucket"
limit = 500
window = "24h"
descriptors = ["key"]

[ratelimit.rules.gcra]
algorithm = "gcra"
limit = 500
window = "24h"
descriptors = ["key"]

[ratelimit.rules.tr]
algorithm = "fixed_window"
limit = 3
window = "24h"
descriptors = ["tenant", "route"]

[ratelimit.rules.huge]
algorithm = "token_bucket"
limit = 1
window = "1s"
burst = 1099511627776
descriptors = ["key"]

[ratelimit.rules.shadow]
algorithm = "fixed_window"
limit = 1
window = "24h"
descriptors = ["key"]
shadow_mode = true
)";

struct MeshFile {
  TempDir dir;
  std::string path = dir.path() + "/mesh.toml";
  std::string dataDir = dir.path() + "/ratelimit";
  std::string endpoint = tcpEndpoint(freePort());
  std::string xsub = tcpEndpoint(freePort());
  std::string xpub = tcpEndpoint(freePort());
  std::string brokerAdmin = tcpEndpoint(freePort());

  explicit MeshFile(const std::string& rules = kRules) { write(rules); }

  // Rewrites the file (a reload reads it again).
  void write(const std::string& rules, const std::string& extra = "") const {
    std::ofstream out(path + ".tmp");
    out << "[broker]\n"
        << "xsub = \"" << xsub << "\"\n"
        << "xpub = \"" << xpub << "\"\n"
        << "admin = \"" << brokerAdmin << "\"\n"
        << "\n[ratelimit]\n"
        << "endpoint = \"" << endpoint << "\"\n"
        << "data_dir = \"" << dataDir << "\"\n"
        << "denied_event_interval = \"300ms\"\n"
        << "sweep_interval = \"20ms\"\n"
        << "stop_grace = \"1s\"\n"
        << extra << rules;
    out.close();
    std::rename((path + ".tmp").c_str(), path.c_str());  // a reload never reads half a file
  }

  std::string log(const std::string& name) const { return dir.path() + "/" + name + ".log"; }
};

Process startRatelimit(const MeshFile& mesh, const std::string& logName, bool events = false) {
  std::vector<std::string> argv{bin("zmesh-ratelimit"), "--config", mesh.path, "--log-level",
                                "info"};
  if (!events) argv.insert(argv.end(), {"--broker", "none"});
  return Process(argv, mesh.log(logName));
}

struct Client {
  zmq::context_t context;
  rpc::ClientThread thread{context};
  RateLimitClient ratelimit;
  AdminClient admin;
  explicit Client(const std::string& endpoint)
      : ratelimit(thread.channel(endpoint)), admin(thread.channel(endpoint)) {}

  std::map<std::string, int64_t> stats() const {
    std::map<std::string, int64_t> out;
    for (auto& [name, value] : rpc::flatten(admin.stats())) out[name] = static_cast<int64_t>(value);
    return out;
  }
};

template <typename Fn>
std::pair<std::string, std::string> errorOf(Fn&& fn) {
  try {
    fn();
  } catch (const RpcError& e) {
    return {std::string(rpc::statusName(e.code())), e.detail()};
  }
  return {"OK", ""};
}

// A generic call (params built by `fill`) whose status and message are returned.
template <typename Params, typename Fill>
std::pair<std::string, std::string> callStatus(const Client& c, const char* method, Fill fill) {
  capnp::MallocMessageBuilder message;
  fill(message.initRoot<Params>());
  auto reply = c.ratelimit.channel().callSync(
      capnp::typeId<idl::RateLimit>(),
      rpc::methodOrdinal(capnp::Schema::from<idl::RateLimit>(), method), rpc::toFrame(message),
      rpc::CallOptions{});
  auto status = reply.status;
  return {std::string(rpc::statusName(status.code)), status.message};
}

}  // namespace

TEST_CASE("ratelimit: 8 concurrent clients on one key admit the limit exactly", "[ratelimit]") {
  MeshFile mesh;
  auto process = startRatelimit(mesh, "ratelimit");
  requireHealthy(mesh.endpoint, mesh.log("ratelimit"));
  constexpr int kClients = 8, kTries = 100;  // 800 tries against a limit of 500
  for (auto rule : {"fixed", "log", "counter", "token", "leaky", "gcra"}) {
    INFO(rule);
    std::atomic<int> allowed{0}, failed{0};
    auto start = Clock::now();
    std::vector<std::thread> threads;
    for (int t = 0; t < kClients; ++t)
      threads.emplace_back([&] {
        Client c(mesh.endpoint);
        for (int i = 0; i < kTries; ++i) {
          try {
            if (c.ratelimit.check(rule, "shared").allowed) ++allowed;
          } catch (const RpcError&) {
            ++failed;
          }
        }
      });
    for (auto& t : threads) t.join();
    double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    CHECK(failed == 0);
    // The buckets and GCRA refill 500 a day: at most one more within a test's
    // seconds (documented tolerance: limit × elapsed / window, rounded up).
    int tolerance =
        std::string(rule) == "fixed" || std::string(rule) == "log" || std::string(rule) == "counter"
            ? 0
            : static_cast<int>(seconds * 500 / 86400) + 1;
    CHECK(allowed >= 500);
    CHECK(allowed <= 500 + tolerance);
    Client c(mesh.endpoint);
    auto d = c.ratelimit.check(rule, "shared");
    CHECK_FALSE(d.allowed);
    CHECK(d.retryAfter > 0ms);
    CHECK(d.remaining == 0);
  }
}

TEST_CASE("ratelimit: decisions, descriptors, shadow mode, impossible costs, bad requests",
          "[ratelimit]") {
  MeshFile mesh;
  auto process = startRatelimit(mesh, "ratelimit");
  requireHealthy(mesh.endpoint, mesh.log("ratelimit"));
  Client c(mesh.endpoint);

  auto d =
      c.ratelimit.check("tr", RateLimitClient::Descriptors{{"tenant", "acme"}, {"route", "/a"}});
  CHECK(d.allowed);
  CHECK(d.limit == 3);
  CHECK(d.remaining == 2);
  CHECK(d.rule == "tr");
  CHECK(d.window == 24h);
  // Read without taking: cost 0.
  auto read =
      c.ratelimit.check("tr", RateLimitClient::Descriptors{{"route", "/a"}, {"tenant", "acme"}}, 0);
  CHECK(read.remaining == 2);
  auto big =
      c.ratelimit.check("tr", RateLimitClient::Descriptors{{"tenant", "acme"}, {"route", "/a"}}, 4);
  CHECK_FALSE(big.allowed);
  CHECK(big.retryAfter == 0ms);
  CHECK_THAT(big.reason, Contains("exceeds the limit's capacity of 3"));

  CHECK(c.ratelimit.check("shadow", "k").allowed);
  auto shadow = c.ratelimit.check("shadow", "k");
  CHECK(shadow.allowed);
  CHECK(shadow.shadowDenied);

  auto [code, message] = errorOf([&] { c.ratelimit.check("nope", "k"); });
  CHECK(code == "NOT_FOUND");
  CHECK_THAT(message, Contains("no rule named \"nope\""));
  std::tie(code, message) = errorOf([&] { c.ratelimit.check("tr", "k"); });
  CHECK(code == "INVALID_ARGUMENT");
  CHECK_THAT(message, Contains("give descriptors, not key"));
  std::tie(code, message) = errorOf([&] {
    c.ratelimit.check("tr", RateLimitClient::Descriptors{{"tenant", "acme"}});
  });
  CHECK(code == "INVALID_ARGUMENT");
  CHECK_THAT(message, Contains("missing route"));

  // Too many descriptors, a batch over max_batch, a lease of nothing.
  std::tie(code, message) = callStatus<idl::RateLimit::CheckParams>(c, "check", [](auto p) {
    p.setRule("tr");
    auto list = p.initDescriptors(9);
    for (unsigned i = 0; i < 9; ++i) {
      list[i].setKey("d" + std::to_string(i));
      list[i].setValue("v");
    }
  });
  CHECK(code == "INVALID_ARGUMENT");
  CHECK_THAT(message, Contains("at most 8"));
  std::tie(code, message) =
      callStatus<idl::RateLimit::CheckBatchParams>(c, "checkBatch", [](auto p) {
        auto checks = p.initChecks(1001);
        for (auto check : checks) {
          check.setRule("fixed");
          check.setKey("b");
        }
      });
  CHECK(code == "INVALID_ARGUMENT");
  CHECK_THAT(message, Contains("1001 in one batch, at most 1000"));
  std::tie(code, message) = callStatus<idl::RateLimit::LeaseParams>(c, "lease", [](auto p) {
    p.setRule("fixed");
    p.setKey("l");
    p.setWant(0);
  });
  CHECK(code == "INVALID_ARGUMENT");
  // A batch failing part way names the check; the ones before it were taken.
  std::tie(code, message) =
      callStatus<idl::RateLimit::CheckBatchParams>(c, "checkBatch", [](auto p) {
        auto checks = p.initChecks(2);
        checks[0].setRule("fixed");
        checks[0].setKey("batch");
        checks[1].setRule("nope");
      });
  CHECK(code == "NOT_FOUND");
  CHECK_THAT(message, Contains("checks[1]: "));
  CHECK(c.ratelimit.check("fixed", "batch", 0).remaining == 500);  // all or nothing

  // A wait of centuries is reported as such, not wrapped around.
  for (int i = 0; i < 3; ++i) c.ratelimit.check("huge", "k", UINT32_MAX);
  auto far = c.ratelimit.check("huge", "k", 0);
  CHECK(far.reset.count() > int64_t{1} << 40);
  CHECK(far.reset.count() <= INT64_MAX / 1'000'000 + 1);

  // A NUL inside a descriptor value is refused, not cut at.
  std::tie(code, message) = callStatus<idl::RateLimit::OverrideParams>(c, "override", [](auto p) {
    p.setRule("tr");
    auto d = p.initDescriptors(1);
    d[0].setKey("tenant");
    d[0].setValue(capnp::Text::Reader("vip\0x", 5));
    p.setLimit(9);
  });
  CHECK(code == "INVALID_ARGUMENT");
  CHECK_THAT(message, Contains("contains a NUL byte"));

  auto stats = c.stats();
  CHECK(stats["ratelimit.rule.decisions{rule=tr}"] == 3);
  CHECK(stats["ratelimit.rule.denied{rule=tr}"] == 1);
  CHECK(stats["ratelimit.rule.shadow_denied{rule=shadow}"] == 1);
  CHECK(stats["ratelimit.rule.denied{rule=shadow}"] == 0);
  CHECK(stats["ratelimit.keys"] >= 3);
}

TEST_CASE("ratelimit: checkBatch decides in order, as one by one", "[ratelimit]") {
  MeshFile mesh;
  auto process = startRatelimit(mesh, "ratelimit");
  requireHealthy(mesh.endpoint, mesh.log("ratelimit"));
  Client c(mesh.endpoint);
  capnp::MallocMessageBuilder message;
  auto checks = message.initRoot<idl::RateLimit::CheckBatchParams>().initChecks(5);
  for (auto check : checks) {
    check.setRule("tr");
    auto d = check.initDescriptors(2);
    d[0].setKey("tenant");
    d[0].setValue("t");
    d[1].setKey("route");
    d[1].setValue("r");
  }
  auto reply = c.ratelimit.channel().callSync(
      capnp::typeId<idl::RateLimit>(),
      rpc::methodOrdinal(capnp::Schema::from<idl::RateLimit>(), "checkBatch"),
      rpc::toFrame(message), rpc::CallOptions{});
  reply.check();
  auto decisions = reply.results<idl::RateLimit::CheckBatchResults>().getDecisions();
  REQUIRE(decisions.size() == 5);
  std::vector<bool> allowed;
  for (auto d : decisions) allowed.push_back(d.getAllowed());
  CHECK(allowed == std::vector<bool>{true, true, true, false, false});
  CHECK(decisions[2].getRemaining() == 0);
}

TEST_CASE("ratelimit: denied events are coalesced per key and interval", "[ratelimit][events]") {
  MeshFile mesh;
  Process broker({bin("zmesh-broker"), "--config", mesh.path, "--log-level", "warn"},
                 mesh.log("broker"));
  requireHealthy(mesh.brokerAdmin, mesh.log("broker"));
  auto process = startRatelimit(mesh, "ratelimit", /*events=*/true);
  requireHealthy(mesh.endpoint, mesh.log("ratelimit"));
  Client c(mesh.endpoint);
  zmq::context_t context;
  rpc::Subscriber subscriber(context, mesh.xpub, {"ratelimit."});
  // A subscription reaches the publisher some time after it is made: deny
  // fresh keys until one's event is seen.
  std::optional<rpc::ReceivedEvent> first;
  std::string key;
  auto deadline = Clock::now() + 10s;
  for (int i = 0; !first && Clock::now() < deadline; ++i) {
    key = "probe" + std::to_string(i);
    for (int n = 0; n < 3; ++n)
      c.ratelimit.check("tr", RateLimitClient::Descriptors{{"tenant", key}, {"route", "/"}});
    CHECK_FALSE(
        c.ratelimit.check("tr", RateLimitClient::Descriptors{{"tenant", key}, {"route", "/"}})
            .allowed);
    first = subscriber.receive(200ms);
  }
  REQUIRE(first);
  CHECK(first->topic == "ratelimit.denied");
  auto e = first->event();
  REQUIRE(e.getBodyType() == capnp::typeId<idl::Denied>());
  auto body = e.getBody().getAs<idl::Denied>();
  CHECK(std::string(body.getRule().cStr()) == "tr");
  key = body.getKey().cStr();
  CHECK_THAT(key, Contains("|/"));  // values joined, as the limiter keys them
  CHECK(body.getDenials() == 1);
  CHECK_FALSE(body.getShadow());
  CHECK(body.getRetryAfterMs() > 0);

  // 40 more denials of that key within its interval: one event, counting 40.
  std::string tenant = key.substr(0, key.find('|'));
  for (int i = 0; i < 40; ++i)
    CHECK_FALSE(
        c.ratelimit.check("tr", RateLimitClient::Descriptors{{"tenant", tenant}, {"route", "/"}})
            .allowed);
  std::optional<rpc::ReceivedEvent> next;
  while ((next = subscriber.receive(2s))) {
    auto b = next->event().getBody().getAs<idl::Denied>();
    if (std::string(b.getKey().cStr()) == key) break;  // probes' own follow-ups may come first
  }
  REQUIRE(next);
  CHECK(next->event().getBody().getAs<idl::Denied>().getDenials() == 40);
  auto stats = c.stats();
  CHECK(stats["ratelimit.denied_coalesced"] >= 40);
}

TEST_CASE("ratelimit: overrides are durable across restarts and kill -9", "[ratelimit]") {
  MeshFile mesh;
  auto admitted = [](const Client& c, const std::string& key) {
    int n = 0;
    while (n < 100 &&
           c.ratelimit.check("tr", RateLimitClient::Descriptors{{"tenant", key}, {"route", "/"}})
               .allowed)
      ++n;
    return n;
  };
  {
    auto process = startRatelimit(mesh, "ratelimit");
    requireHealthy(mesh.endpoint, mesh.log("ratelimit"));
    Client c(mesh.endpoint);
    c.ratelimit.setOverride("tr", {{"tenant", "acme"}}, 5);
    c.ratelimit.setOverride("tr", {{"tenant", "big"}}, 9);
    CHECK(admitted(c, "acme") == 5);
    auto [code, message] = errorOf([&] { c.ratelimit.setOverride("tr", {{"user", "u"}}, 5); });
    CHECK(code == "INVALID_ARGUMENT");
    CHECK_THAT(message, Contains("not among the rule's (tenant, route)"));
    std::tie(code, message) = errorOf([&] {
      c.ratelimit.setOverride("nope", {{"tenant", "u"}}, 5);
    });
    CHECK(code == "NOT_FOUND");
  }  // SIGTERM
  {
    auto process = startRatelimit(mesh, "ratelimit2");
    requireHealthy(mesh.endpoint, mesh.log("ratelimit2"));
    Client c(mesh.endpoint);
    CHECK(admitted(c, "acme2") == 3);  // the rule's own limit for others
    CHECK(admitted(c, "big") == 9);
    c.ratelimit.setOverride("tr", {{"tenant", "late"}}, 7);
    process.kill9();  // acknowledged means fsynced
  }
  auto process = startRatelimit(mesh, "ratelimit3");
  requireHealthy(mesh.endpoint, mesh.log("ratelimit3"));
  Client c(mesh.endpoint);
  CHECK(admitted(c, "late") == 7);
  CHECK(admitted(c, "acme") == 5);  // state is in memory: a restart starts it afresh
  CHECK(c.stats()["ratelimit.runtime_overrides"] == 3);
}

TEST_CASE("ratelimit: reload under load keeps state, a bad file is refused while serving",
          "[ratelimit]") {
  MeshFile mesh;
  auto process = startRatelimit(mesh, "ratelimit");
  requireHealthy(mesh.endpoint, mesh.log("ratelimit"));
  Client c(mesh.endpoint);
  for (int i = 0; i < 100; ++i) REQUIRE(c.ratelimit.check("fixed", "kept").allowed);

  // Load on another key of the same rule all along: no call may fail.
  std::atomic<bool> stop{false};
  std::atomic<int> calls{0}, failures{0};
  std::thread load([&] {
    Client l(mesh.endpoint);
    while (!stop) {
      try {
        l.ratelimit.check("fixed", "load");
        ++calls;
      } catch (const RpcError&) {
        ++failures;
      }
    }
  });

  // The limit lowered to 150 (state kept: 49 left after this call) and a rule added.
  std::string changed = kRules;
  changed.replace(changed.find("limit = 500"), 11, "limit = 150");
  mesh.write(changed +
             "\n[ratelimit.rules.added]\nalgorithm = \"gcra\"\nrate = \"1/s\"\n"
             "descriptors = [\"key\"]\n");
  REQUIRE(::kill(process.pid(), SIGHUP) == 0);
  auto deadline = Clock::now() + 10s;
  std::pair<std::string, std::string> added;
  while ((added = errorOf([&] { c.ratelimit.check("added", "k"); })).first != "OK" &&
         Clock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  CHECK(added.first == "OK");
  auto kept = c.ratelimit.check("fixed", "kept");
  CHECK(kept.limit == 150);
  CHECK(kept.remaining == 49);

  // A bad file: refused with its line, over RPC and on SIGHUP; the rules stay.
  mesh.write(kRules,
             "[ratelimit.rules.broken]\nalgorithm = \"gcra\"\nlimit = \"many\"\n"
             "window = \"1s\"\ndescriptors = [\"key\"]\n");
  auto [code, message] = callStatus<idl::RateLimit::ReloadParams>(c, "reload", [](auto) {});
  CHECK(code == "FAILED_PRECONDITION");
  CHECK_THAT(message, Contains("mesh.toml:14: ratelimit.rules.broken.limit: expected an integer"));
  REQUIRE(::kill(process.pid(), SIGHUP) == 0);
  std::this_thread::sleep_for(200ms);
  CHECK(c.ratelimit.check("added", "k2").allowed);
  CHECK(c.ratelimit.check("fixed", "kept").remaining == 48);
  stop = true;
  load.join();
  CHECK(failures == 0);
  CHECK(calls > 0);
  auto stats = c.stats();
  CHECK(stats["ratelimit.reloads"] == 1);
  CHECK(stats["ratelimit.reload_failures"] == 2);
  CHECK_THAT(readText(mesh.log("ratelimit")),
             Contains("rules not reloaded, the rules in force stay"));
}

TEST_CASE("ratelimit: a bad rules file at start is refused with its line", "[ratelimit]") {
  MeshFile mesh("[ratelimit.rules.r]\nalgorithm = \"fixed_window\"\nlimit = 5\nwindow = \"1s\"\n");
  auto process = startRatelimit(mesh, "ratelimit");
  auto status = process.wait(10s);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 2);
  CHECK_THAT(readText(mesh.log("ratelimit")), Contains("ratelimit.rules.r.descriptors: required"));
}

TEST_CASE("ratelimit: idle keys are dropped, losslessly", "[ratelimit]") {
  MeshFile mesh(
      "[ratelimit.rules.short]\nalgorithm = \"sliding_window_log\"\nlimit = 2\nwindow = "
      "\"200ms\"\ndescriptors = [\"key\"]\n");
  auto process = startRatelimit(mesh, "ratelimit");
  requireHealthy(mesh.endpoint, mesh.log("ratelimit"));
  Client c(mesh.endpoint);
  for (int i = 0; i < 50; ++i) CHECK(c.ratelimit.check("short", "k" + std::to_string(i)).allowed);
  CHECK(c.stats()["ratelimit.keys"] == 50);
  auto deadline = Clock::now() + 5s;
  while (c.stats()["ratelimit.keys"] > 0 && Clock::now() < deadline)
    std::this_thread::sleep_for(50ms);
  auto stats = c.stats();
  CHECK(stats["ratelimit.keys"] == 0);
  CHECK(stats["ratelimit.keys_dropped"] == 50);
  CHECK(c.ratelimit.check("short", "k0").remaining == 1);  // a full quota again
}

TEST_CASE("ratelimit: two-stage limiting, 4 local stages within limit + N x batch",
          "[ratelimit][two-stage]") {
  MeshFile mesh(R"(
[ratelimit.rules.day]
algorithm = "fixed_window"
limit = 300
window = "24h"
descriptors = ["key"]

[ratelimit.rules.second]
algorithm = "sliding_window_log"
limit = 100
window = "1s"
descriptors = ["key"]
)");
  auto process = startRatelimit(mesh, "ratelimit");
  requireHealthy(mesh.endpoint, mesh.log("ratelimit"));
  constexpr int kStages = 4;
  constexpr uint32_t kBatch = 10;
  struct Tally {
    int admitted = 0, denied = 0;
    uint64_t leases = 0;
  };
  // Each stage on its own connection and thread, hammering one shared key.
  auto run = [&](const std::string& rule, std::chrono::milliseconds duration) {
    std::vector<Tally> tallies(kStages);
    std::vector<std::thread> threads;
    for (int s = 0; s < kStages; ++s)
      threads.emplace_back([&, s] {
        Client c(mesh.endpoint);
        TwoStageLimiter limiter(c.ratelimit, TwoStageOptions{.batch = kBatch});
        auto end = Clock::now() + duration;
        while (Clock::now() < end) {
          auto a = limiter.admit(rule, "shared");
          if (a.verdict == TwoStage::Verdict::kAdmitted)
            ++tallies[s].admitted;
          else
            ++tallies[s].denied;
        }
        tallies[s].leases = limiter.stats().leases;
      });
    for (auto& t : threads) t.join();
    Tally total;
    for (auto& t : tallies) {
      total.admitted += t.admitted;
      total.denied += t.denied;
      total.leases += t.leases;
    }
    return total;
  };

  // One window for the whole run: every admission was paid for in it.
  auto day = run("day", 1500ms);
  CHECK(day.admitted <= 300);
  CHECK(day.admitted >= 300 - kStages * static_cast<int>(kBatch));  // what lapsed, at most
  CHECK(day.denied > 0);
  // About one global call per batch while tokens last (plus the denied leases,
  // which a stage then remembers until their retry-after).
  Client c(mesh.endpoint);
  auto stats = c.stats();
  CHECK(stats["ratelimit.leases"] >= day.admitted / static_cast<int>(kBatch));
  CHECK(static_cast<int>(day.leases) <= day.admitted / static_cast<int>(kBatch) + 3 * kStages);
  CHECK(stats["ratelimit.rule.decisions{rule=day}"] == static_cast<int64_t>(day.leases));

  // Many windows: at most limit per window plus what each stage carried over.
  auto start = Clock::now();
  auto second = run("second", 3000ms);
  double windows = std::chrono::duration<double>(Clock::now() - start).count() + 1;
  INFO("admitted " << second.admitted << " in " << windows - 1 << " s");
  CHECK(second.admitted <= static_cast<int>(100 * windows) + kStages * static_cast<int>(kBatch));
  CHECK(second.admitted >= 200);
  CHECK(second.leases < static_cast<uint64_t>(second.admitted + second.denied) / 2);
  WARN("one window: " << day.admitted << " admitted of 300 with " << day.leases
                      << " global calls; 1 s windows: " << second.admitted << " admitted in "
                      << windows - 1 << " s with " << second.leases << " global calls for "
                      << second.admitted + second.denied << " requests");
}
