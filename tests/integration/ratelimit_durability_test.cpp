// Run-time overrides survive crashes (DESIGN.md §4): an override acknowledged
// is there after any crash, one cleared and acknowledged is gone; one in
// flight when the power went may be either. Proven twice:
//   (a) real processes killed with kill -9 under a stream of overrides;
//   (b) the service in this process over FaultInjectionEnv, whose simulated
//       crash drops everything not fsynced (torn tails, failing fsyncs and
//       appends too), with log rewrites into snapshots along the way.
#include <spdlog/spdlog.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "in_process.h"
#include "process.h"
#include "service.h"
#include "zmesh/client.h"
#include "zmesh/rpc/clock.h"
#include "zmesh/storage/fault_env.h"

using namespace zmesh;
using namespace zmesh::testing;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kTenants = 40;

// What the writer knows: per tenant, the limit acknowledged last (0 = cleared),
// and the one in flight, if any, whose outcome is unknown.
struct Ledger {
  std::mutex mutex;
  std::map<std::string, uint64_t> acked;
  std::map<std::string, std::set<uint64_t>> inDoubt;
};

// Sets and clears overrides of rule "tr" until stopped; every failure (the
// server crashed or is restarting) leaves its operation in doubt.
class Writer {
 public:
  Writer(std::string endpoint, uint64_t seed) : endpoint_(std::move(endpoint)) {
    thread_ = std::thread([this, seed] { run(seed); });
  }
  ~Writer() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  // Waits until no operation is in flight and starts none until resume(): a
  // check reads the service and the ledger at one moment.
  void pause() {
    paused_ = true;
    while (!idle_ && thread_.joinable() && !stop_) std::this_thread::sleep_for(1ms);
  }
  void resume() { paused_ = false; }
  Ledger& ledger() { return ledger_; }
  uint64_t acknowledged() const { return acknowledged_; }

 private:
  void run(uint64_t seed) {
    std::mt19937_64 rng(seed);
    zmq::context_t context;
    rpc::ClientThread thread(context);
    CallSettings settings;
    settings.timeout = 300ms;
    RateLimitClient client(thread.channel(endpoint_), settings);
    uint64_t next = 1;
    while (!stop_) {
      if (paused_) {
        idle_ = true;
        std::this_thread::sleep_for(1ms);
        continue;
      }
      idle_ = false;
      std::string tenant = "t" + std::to_string(rng() % kTenants);
      bool clear = rng() % 4 == 0;
      uint64_t limit = clear ? 0 : ++next;
      {
        std::lock_guard lock(ledger_.mutex);
        ledger_.inDoubt[tenant].insert(limit);
      }
      bool ok = true;
      try {
        if (clear) {
          capnp::MallocMessageBuilder message;
          auto p = message.initRoot<idl::RateLimit::ClearOverrideParams>();
          p.setRule("tr");
          auto d = p.initDescriptors(1);
          d[0].setKey("tenant");
          d[0].setValue(tenant);
          rpc::CallOptions options;
          options.timeout = settings.timeout;
          auto reply = client.channel().callSync(
              capnp::typeId<idl::RateLimit>(),
              rpc::methodOrdinal(capnp::Schema::from<idl::RateLimit>(), "clearOverride"),
              rpc::toFrame(message), options);
          reply.check();
        } else {
          client.setOverride("tr", {{"tenant", tenant}}, limit);
        }
      } catch (const RpcError&) {
        ok = false;
        std::this_thread::sleep_for(20ms);
      }
      if (ok) {
        std::lock_guard lock(ledger_.mutex);
        ledger_.acked[tenant] = limit;
        ledger_.inDoubt[tenant].clear();  // this one's answer orders it after them
        ++acknowledged_;
      }
    }
  }

  std::string endpoint_;
  std::atomic<bool> stop_{false}, paused_{false}, idle_{false};
  std::atomic<uint64_t> acknowledged_{0};
  Ledger ledger_;
  std::thread thread_;
};

// The overrides the service has now, by tenant.
std::map<std::string, uint64_t> overridesOf(const std::string& endpoint) {
  zmq::context_t context;
  rpc::ClientThread thread(context);
  auto channel = thread.channel(endpoint);
  capnp::MallocMessageBuilder message;
  message.initRoot<idl::RateLimit::RulesParams>();
  rpc::Reply reply(rpc::Status{}, std::nullopt);
  auto deadline = Clock::now() + 10s;
  do {
    rpc::CallOptions options;
    options.retryable = true;
    reply = channel.callSync(capnp::typeId<idl::RateLimit>(),
                             rpc::methodOrdinal(capnp::Schema::from<idl::RateLimit>(), "rules"),
                             rpc::toFrame(message), options);
  } while (!reply.status.ok() && Clock::now() < deadline);
  reply.check();
  std::map<std::string, uint64_t> out;
  for (auto rule : reply.results<idl::RateLimit::RulesResults>().getRules())
    for (auto o : rule.getRuntimeOverrides())
      out[o.getDescriptors()[0].getValue().cStr()] = o.getLimit();
  return out;
}

// Every acknowledged operation is what the service has, unless one after it is
// in doubt. An operation that failed stays in doubt until a later one on the
// same tenant is acknowledged: a request the client gave up on may still sit
// in its connection's queue and reach the next incarnation of the server
// (requests on one connection arrive in order, so the acknowledged one is
// after it).
void checkRecovered(Ledger& ledger, const std::map<std::string, uint64_t>& found) {
  std::lock_guard lock(ledger.mutex);
  for (int i = 0; i < kTenants; ++i) {
    std::string tenant = "t" + std::to_string(i);
    uint64_t have = found.count(tenant) ? found.at(tenant) : 0;
    uint64_t acked = ledger.acked.count(tenant) ? ledger.acked.at(tenant) : 0;
    INFO(tenant << ": found " << have << ", acknowledged " << acked);
    CHECK((have == acked || ledger.inDoubt[tenant].count(have) == 1));
  }
}

constexpr const char* kRule =
    "[ratelimit.rules.tr]\nalgorithm = \"fixed_window\"\nlimit = 1\nwindow = \"1s\"\n"
    "descriptors = [\"tenant\"]\n";

}  // namespace

TEST_CASE("ratelimit: 20 rounds of kill -9 under overrides lose none acknowledged",
          "[ratelimit][durability]") {
  const uint64_t seed = testSeed();
  INFO("seed " << seed << " (rerun with ZMESH_TEST_SEED)");
  TempDir dir;
  std::string endpoint = tcpEndpoint(freePort());
  std::string path = dir.path() + "/mesh.toml";
  {
    std::ofstream out(path);
    out << "[ratelimit]\nendpoint = \"" << endpoint << "\"\ndata_dir = \"" << dir.path()
        << "/data\"\nfsync = \"no\"\n"  // overrides are fsynced under every policy
        << "rewrite_after_bytes = 4096\n"
        << kRule;
  }
  std::mt19937_64 rng(seed);
  Writer writer(endpoint, seed);
  writer.pause();
  for (int round = 0; round < 20; ++round) {
    INFO("round " << round);
    Process p({bin("zmesh-ratelimit"), "--config", path, "--broker", "none", "--log-level", "warn"},
              dir.path() + "/ratelimit.log");
    requireHealthy(p, endpoint, 15s);
    checkRecovered(writer.ledger(), overridesOf(endpoint));
    writer.resume();
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + rng() % 150));
    p.kill9();
    writer.pause();
  }
  Process p({bin("zmesh-ratelimit"), "--config", path, "--broker", "none", "--log-level", "warn"},
            dir.path() + "/ratelimit.log");
  requireHealthy(p, endpoint, 15s);
  writer.stop();
  checkRecovered(writer.ledger(), overridesOf(endpoint));
  CHECK(writer.acknowledged() > 20);
}

TEST_CASE("ratelimit on FaultInjectionEnv: crashes drop unsynced writes, overrides stay",
          "[ratelimit][durability]") {
  const uint64_t seed = testSeed();
  INFO("seed " << seed << " (rerun with ZMESH_TEST_SEED)");
  spdlog::set_level(spdlog::level::err);  // the service logs every crash and recovery
  storage::FaultInjectionEnv env;
  ratelimit::RateLimitOptions options;
  options.dataDir = "/data/ratelimit";
  options.fsync = storage::FsyncPolicy::no;
  options.rewriteAfterBytes = 2048;
  auto rules =
      ratelimit::parseRules(rpc::MeshConfig::parse(kRule, "mesh.toml").section("ratelimit"));
  const std::string endpoint = tcpEndpoint(freePort());
  auto start = [&] {
    return std::make_unique<InProcessServer>(
        "ratelimit", endpoint, [&](rpc::Server& server) -> std::function<void()> {
          auto impl = kj::heap<ratelimit::RateLimitService>(server, nullptr, env, options, rules,
                                                            rpc::monotonicNanos);
          auto& service = *impl;
          server.serve<idl::RateLimit>(kj::mv(impl));
          return [&service] { service.close(); };
        });
  };
  std::mt19937_64 rng(seed);
  auto server = start();
  Writer writer(endpoint, seed);
  int fatalStops = 0, torn = 0;
  for (int round = 0; round < 30; ++round) {
    INFO("round " << round);
    std::this_thread::sleep_for(std::chrono::milliseconds(40 + rng() % 120));
    if (round % 5 == 2 || round % 5 == 4) {
      // The disk fails first: the service must stop by itself.
      if (round % 5 == 2)
        env.failSyncs(true);
      else
        env.failAppends(true);
      REQUIRE(server->waitFinished(10s));
      ++fatalStops;
    }
    writer.pause();  // its call in flight fails (in doubt) or is answered first
    if (rng() % 2) {
      env.crash(&rng);
      ++torn;
    } else {
      env.crash();
    }
    server.reset();
    env.failSyncs(false);
    env.failAppends(false);
    env.restart();
    REQUIRE_NOTHROW(server = start());
    checkRecovered(writer.ledger(), overridesOf(endpoint));
    writer.resume();
  }
  writer.stop();
  checkRecovered(writer.ledger(), overridesOf(endpoint));
  CHECK(fatalStops == 12);
  CHECK(writer.acknowledged() > 30);
  WARN(torn << " of 30 crashes left torn tails; " << writer.acknowledged()
            << " overrides acknowledged; " << env.syncCount() << " fsyncs");
}
