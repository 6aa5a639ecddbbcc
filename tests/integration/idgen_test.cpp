// zmesh-idgen end to end: a real process on a free loopback port, started from
// a mesh file written into a temporary directory (which also holds its data).
#include <signal.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "process.h"
#include "zmesh/client.h"
#include "zmesh/idl/idgen.capnp.h"
#include "zmesh/rpc/clock.h"
#include "zmesh/rpc/events.h"

using namespace zmesh;
using namespace zmesh::testing;
using Catch::Matchers::Contains;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int64_t kEpochMs =
    1704067200000;  // 2024-01-01, not the default: decode must use the config
constexpr uint32_t kWorker = 7;
constexpr uint64_t kBlockSize = 100;

// A mesh file with [idgen] (and optionally [broker]) on free ports, data in a temp dir.
struct MeshFile {
  TempDir dir;
  std::string path = dir.path() + "/mesh.toml";
  std::string dataDir = dir.path() + "/idgen";
  std::string endpoint = tcpEndpoint(freePort());
  std::string xsub = tcpEndpoint(freePort());
  std::string xpub = tcpEndpoint(freePort());
  std::string brokerAdmin = tcpEndpoint(freePort());

  MeshFile() {
    std::ofstream out(path);
    out << "[broker]\n"
        << "xsub = \"" << xsub << "\"\n"
        << "xpub = \"" << xpub << "\"\n"
        << "admin = \"" << brokerAdmin << "\"\n"
        << "\n[idgen]\n"
        << "endpoint = \"" << endpoint << "\"\n"
        << "data_dir = \"" << dataDir << "\"\n"
        << "fsync = \"everysec\"\n"
        << "block_size = " << kBlockSize
        << "\n"
        // Long enough that every block of a test lasts less: each next one doubles.
        << "block_duration = \"1m\"\n"
        << "worker_id = " << kWorker << "\n"
        << "epoch_ms = " << kEpochMs << "\n"
        << "stop_grace = \"1s\"\n";
  }

  std::string log(const std::string& name) const { return dir.path() + "/" + name + ".log"; }
};

// zmesh-idgen from the mesh file; without `events` it publishes nothing (--broker none).
Process startIdgen(const MeshFile& mesh, const std::string& logName, bool events = false,
                   std::vector<std::string> extra = {}) {
  std::vector<std::string> argv{bin("zmesh-idgen"), "--config", mesh.path, "--log-level", "info"};
  if (!events) argv.insert(argv.end(), {"--broker", "none"});
  argv.insert(argv.end(), extra.begin(), extra.end());
  return Process(argv, mesh.log(logName));
}

// Waits for `p` to exit by itself; its wait status, or nullopt after `timeout`.
std::optional<int> waitExit(Process& p, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (!p.running()) return p.stop();
    std::this_thread::sleep_for(10ms);
  }
  return std::nullopt;
}

struct Client {
  zmq::context_t context;
  rpc::ClientThread thread{context};
  IdGenClient idgen;
  AdminClient admin;
  explicit Client(const std::string& endpoint)
      : idgen(thread.channel(endpoint)), admin(thread.channel(endpoint)) {}
};

// The status name and message of the RpcError `fn` throws ("OK" when it throws none).
template <typename Fn>
std::pair<std::string, std::string> errorOf(Fn&& fn) {
  try {
    fn();
  } catch (const RpcError& e) {
    return {std::string(rpc::statusName(e.code())), e.detail()};
  }
  return {"OK", ""};
}

}  // namespace

TEST_CASE("idgen next: contiguous increasing ranges, independent namespaces", "[idgen]") {
  MeshFile mesh;
  auto process = startIdgen(mesh, "idgen");
  requireHealthy(mesh.endpoint, mesh.log("idgen"));
  Client client(mesh.endpoint);

  std::map<std::string, uint64_t> expected{{"orders", 1}, {"users", 1}, {"a.b_c:d-E9", 1}};
  const uint32_t counts[] = {1, 7, 10000, 1, 99, 100, 101, 10000, 3, 1};
  for (uint32_t count : counts) {
    for (auto& [ns, next] : expected) {
      auto r = client.idgen.next(ns, count);
      INFO(ns << " count " << count);
      CHECK(r.count == count);
      CHECK(r.first == next);  // contiguous: exactly after the previous range
      next = r.first + r.count;
    }
  }
  // A namespace first used now still starts at 1.
  CHECK(client.idgen.next("late", 5).first == 1);
  CHECK(client.idgen.next(std::string(128, 'x'), 1).first == 1);  // 128 characters is allowed
}

TEST_CASE("idgen rejects bad counts and namespaces with INVALID_ARGUMENT", "[idgen]") {
  MeshFile mesh;
  auto process = startIdgen(mesh, "idgen");
  requireHealthy(mesh.endpoint, mesh.log("idgen"));
  Client client(mesh.endpoint);

  auto [c0, m0] = errorOf([&] { client.idgen.next("orders", 0); });
  CHECK(c0 == "INVALID_ARGUMENT");
  CHECK_THAT(m0, Contains("count 0") && Contains("1..10000"));

  auto [c1, m1] = errorOf([&] { client.idgen.next("orders", 10001); });
  CHECK(c1 == "INVALID_ARGUMENT");
  CHECK_THAT(m1, Contains("count 10001"));

  auto [c2, m2] = errorOf([&] { client.idgen.next("a b", 1); });
  CHECK(c2 == "INVALID_ARGUMENT");
  CHECK_THAT(m2, Contains("invalid character ' '") && Contains("position 1"));

  auto [c3, m3] = errorOf([&] { client.idgen.next(std::string(129, 'n'), 1); });
  CHECK(c3 == "INVALID_ARGUMENT");
  CHECK_THAT(m3, Contains("129 characters") && Contains("at most 128"));

  auto [c4, m4] = errorOf([&] { client.idgen.next("", 1); });
  CHECK(c4 == "INVALID_ARGUMENT");
  CHECK_THAT(m4, Contains("namespace is empty"));

  auto [c5, m5] = errorOf([&] { client.idgen.snowflake(0); });
  CHECK(c5 == "INVALID_ARGUMENT");
  CHECK_THAT(m5, Contains("count 0"));

  auto [c6, m6] = errorOf([&] { client.idgen.snowflake(10001); });
  CHECK(c6 == "INVALID_ARGUMENT");
  CHECK_THAT(m6, Contains("count 10001"));

  auto [c7, m7] = errorOf([&] { client.idgen.decode(uint64_t{1} << 63); });
  CHECK(c7 == "INVALID_ARGUMENT");
  CHECK_THAT(m7, Contains("top bit"));

  // Nothing was created by the refused calls, and the service still serves.
  CHECK(client.idgen.next("orders", 2).first == 1);
}

TEST_CASE("idgen snowflake: strictly increasing, decode round trip with the configured worker",
          "[idgen]") {
  MeshFile mesh;
  auto process = startIdgen(mesh, "idgen");
  requireHealthy(mesh.endpoint, mesh.log("idgen"));
  Client client(mesh.endpoint);

  std::vector<uint64_t> all;
  const uint32_t counts[] = {1, 2, 3, 17, 1000, 4095, 4096, 4097, 9999, 10000, 1};
  for (uint32_t count : counts) {
    int64_t before = rpc::unixMillis();
    auto ids = client.idgen.snowflake(count);
    int64_t after = rpc::unixMillis();
    REQUIRE(ids.size() == count);
    for (size_t i : {size_t{0}, ids.size() / 2, ids.size() - 1}) {
      uint64_t id = ids[i];
      auto d = client.idgen.decode(id);
      INFO("id " << id << " of a call of " << count);
      CHECK(d.worker == kWorker);
      CHECK(((id >> 12) & 1023) == kWorker);
      CHECK(d.sequence == (id & 4095));
      CHECK(d.timestampMs == kEpochMs + static_cast<int64_t>(id >> 22));
      // Issued during the call (1 s of slack for clock granularity and steps).
      CHECK(d.timestampMs >= before - 1000);
      CHECK(d.timestampMs <= after + 1000);
    }
    all.insert(all.end(), ids.begin(), ids.end());
  }
  for (size_t i = 1; i < all.size(); ++i) {
    INFO("index " << i);
    REQUIRE(all[i] > all[i - 1]);
  }
  // A clean stop after calls that waited for the next millisecond several
  // times (under the sanitizer build a leak or a bad free exits non-zero).
  int status = process.stop(5s);
  INFO(readText(mesh.log("idgen")));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("idgen restart (SIGTERM and kill -9) continues above every id issued", "[idgen]") {
  MeshFile mesh;
  uint64_t maxSeq = 0, maxFlake = 0;
  {
    auto process = startIdgen(mesh, "idgen-1");
    requireHealthy(mesh.endpoint, mesh.log("idgen-1"));
    Client client(mesh.endpoint);
    for (uint32_t count : {1u, 150u, 10000u, 42u}) {
      auto r = client.idgen.next("r", count);
      maxSeq = std::max(maxSeq, r.first + r.count - 1);
    }
    for (uint32_t count : {1u, 5000u})
      maxFlake = std::max(maxFlake, client.idgen.snowflake(count).back());
    int status = process.stop(5s);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  CHECK_THAT(readText(mesh.log("idgen-1")), Contains("stopped"));
  {
    auto process = startIdgen(mesh, "idgen-2");
    requireHealthy(mesh.endpoint, mesh.log("idgen-2"));
    Client client(mesh.endpoint);
    auto r = client.idgen.next("r", 10);
    CHECK(r.first > maxSeq);
    maxSeq = r.first + r.count - 1;
    CHECK(client.idgen.next("fresh", 1).first == 1);
    auto ids = snowflakeRetrying(client.idgen, 100);
    CHECK(ids.front() > maxFlake);
    maxFlake = ids.back();
    // Take ids from memory (no new reservation) right before the kill.
    r = client.idgen.next("r", 5);
    maxSeq = r.first + r.count - 1;
    process.kill9();
  }
  {
    auto process = startIdgen(mesh, "idgen-3");
    requireHealthy(mesh.endpoint, mesh.log("idgen-3"));
    Client client(mesh.endpoint);
    CHECK(client.idgen.next("r", 1).first > maxSeq);
    CHECK(client.idgen.next("fresh", 1).first > 1);
    CHECK(snowflakeRetrying(client.idgen, 1).front() > maxFlake);
  }
}

TEST_CASE("idgen publishes idgen.block with namespace, from and limit", "[idgen][events]") {
  MeshFile mesh;
  Process broker({bin("zmesh-broker"), "--config", mesh.path, "--log-level", "warn"},
                 mesh.log("broker"));
  requireHealthy(mesh.brokerAdmin, mesh.log("broker"));
  auto process = startIdgen(mesh, "idgen", /*events=*/true);
  requireHealthy(mesh.endpoint, mesh.log("idgen"));
  Client client(mesh.endpoint);

  zmq::context_t context;
  rpc::Subscriber subscriber(context, mesh.xpub, {"idgen."});
  // A subscription reaches the publisher some time after it is made: take ids in
  // a fresh namespace until one of their reservations is seen.
  std::set<std::string> tried;
  std::optional<rpc::ReceivedEvent> first;
  auto deadline = Clock::now() + 10s;
  for (int i = 0; !first && Clock::now() < deadline; ++i) {
    std::string ns = "ev" + std::to_string(i);
    REQUIRE(client.idgen.next(ns, 5).first == 1);
    tried.insert(ns);
    first = subscriber.receive(300ms);
  }
  REQUIRE(first);
  CHECK(first->topic == "idgen.block");
  auto e1 = first->event();
  CHECK_THAT(std::string(e1.getPublisher().cStr()), Contains("idgen@"));
  CHECK(e1.getBodyType() == capnp::typeId<idl::BlockReserved>());
  auto b1 = e1.getBody().getAs<idl::BlockReserved>();
  std::string ns = b1.getNamespace().cStr();
  CHECK(tried.count(ns) == 1);
  CHECK(b1.getFrom() == 1);
  CHECK(b1.getLimit() == 1 + 5 + kBlockSize);  // the waiting demand plus one block
  uint64_t sequence = e1.getSequence();

  // Every later fresh namespace is seen in order; draining one past the
  // prefetch threshold reserves its next block.
  std::string fresh = "ev-later";
  REQUIRE(client.idgen.next(fresh, 1).first == 1);
  auto r = client.idgen.next(ns, 60);  // 6..65 leaves 40 < block/2: prefetch
  CHECK(r.first == 6);
  std::vector<std::pair<std::string, std::pair<uint64_t, uint64_t>>> seen;
  while (seen.size() < 2) {
    auto e = subscriber.receive(5s);
    REQUIRE(e);
    auto ev = e->event();
    auto b = ev.getBody().getAs<idl::BlockReserved>();
    std::string name = b.getNamespace().cStr();
    if (tried.count(name) && name != ns) continue;  // a late one from the join loop
    CHECK(e->missed == 0);
    CHECK(ev.getSequence() > sequence);
    sequence = ev.getSequence();
    seen.push_back({name, {b.getFrom(), b.getLimit()}});
  }
  CHECK(seen[0].first == fresh);
  CHECK(seen[0].second == std::pair<uint64_t, uint64_t>{1, 1 + 1 + kBlockSize});
  CHECK(seen[1].first == ns);
  // Its first block lasted less than block_duration, so the second is twice as large.
  CHECK(seen[1].second ==
        std::pair<uint64_t, uint64_t>{1 + 5 + kBlockSize, 1 + 5 + 3 * kBlockSize});
  CHECK(subscriber.gaps() == 0);

  auto counters = rpc::flatten(client.admin.stats());
  CHECK(counters["idgen.blocks_published"] >= 3);
  CHECK(counters["events.published"] >= 3);
}

TEST_CASE("a second zmesh-idgen on the same data directory refuses to start", "[idgen]") {
  MeshFile mesh;
  auto first = startIdgen(mesh, "idgen-1");
  requireHealthy(mesh.endpoint, mesh.log("idgen-1"));
  Client client(mesh.endpoint);
  CHECK(client.idgen.next("locked", 3).first == 1);

  auto second = startIdgen(mesh, "idgen-2", false, {"--endpoint", tcpEndpoint(freePort())});
  auto status = waitExit(second, 10s);
  REQUIRE(status);
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) != 0);
  auto log = readText(mesh.log("idgen-2"));
  INFO(log);
  CHECK_THAT(log, Contains("locked by another process") &&
                      Contains("pid " + std::to_string(first.pid())) && Contains(mesh.dataDir));

  // The first one is unaffected.
  CHECK(client.admin.health().ok);
  CHECK(client.idgen.next("locked", 1).first == 4);
}

TEST_CASE("idgen stopping on a fatal storage error exits non-zero", "[idgen]") {
  MeshFile mesh;
  // A file size limit makes the journal's write fail (EFBIG, with SIGXFSZ
  // ignored) once the data directory's files reach it.
  auto process =
      Process({"/bin/sh", "-c", "trap '' XFSZ; exec /usr/bin/prlimit --fsize=16384 \"$@\"", "sh",
               bin("zmesh-idgen"), "--config", mesh.path, "--broker", "none"},
              mesh.log("idgen"));
  requireHealthy(mesh.endpoint, mesh.log("idgen"));
  Client client(mesh.endpoint);
  // Each fresh namespace reserves a block: one journal record.
  for (int i = 0; i < 5000 && process.running(); ++i) {
    try {
      client.idgen.next("namespace-" + std::to_string(i), 1);
    } catch (const RpcError&) {
      break;  // stopping or stopped
    }
  }
  auto status = waitExit(process, 10s);
  auto log = readText(mesh.log("idgen"));
  INFO(log);
  REQUIRE(status);
  CHECK_THAT(log, Contains("storage failed"));
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 1);
}

TEST_CASE("idgen Admin stats count ids, namespaces, reservations and journal work", "[idgen]") {
  MeshFile mesh;
  auto process = startIdgen(mesh, "idgen");
  requireHealthy(mesh.endpoint, mesh.log("idgen"));
  Client client(mesh.endpoint);
  client.idgen.next("s1", 10);
  client.idgen.next("s2", 5);
  client.idgen.next("s1", 3);
  client.idgen.snowflake(7);

  auto c = rpc::flatten(client.admin.stats());
  int idgenKeys = 0;
  for (auto& [name, value] : c) idgenKeys += name.rfind("idgen.", 0) == 0;
  CHECK(idgenKeys >= 5);
  CHECK(c.at("idgen.ids_issued") == 18);
  CHECK(c.at("idgen.namespaces") == 2);
  CHECK(c.at("idgen.reservations") >= 2);
  CHECK(c.at("idgen.waiting") == 0);
  CHECK(c.at("idgen.waited") == 2);  // each namespace's first call waits for its first block
  CHECK(c.at("idgen.blocks_published") == 0);  // --broker none
  CHECK(c.at("snowflake.ids_issued") == 7);
  CHECK(c.at("snowflake.durable_bound_seconds") > (rpc::unixMillis() - 60000) / 1000.0);
  CHECK(c.at("journal.appends") >= 3);
  CHECK(c.at("journal.syncs") >= 1);

  auto info = client.admin.info();
  CHECK(info.service == "idgen");
  CHECK(info.pid == process.pid());
  std::map<std::string, std::string> config(info.config.begin(), info.config.end());
  CHECK(config["worker_id"] == std::to_string(kWorker));
  CHECK(config["data_dir"] == mesh.dataDir);
  CHECK(config["block_size"] == std::to_string(kBlockSize));
  CHECK(config["max_block_size"] == "1000000");
  CHECK(config["block_duration"] == "60000ms");
}

TEST_CASE("idgen refuses a block configuration that cannot work, naming the key", "[idgen]") {
  struct Case {
    std::string line, says;
    std::vector<std::string> flags = {};
  };
  const Case cases[] = {
      {"max_block_size = " + std::to_string(kBlockSize - 1),
       "idgen.max_block_size: " + std::to_string(kBlockSize - 1) + " is below block_size " +
           std::to_string(kBlockSize)},
      {"max_block_size = 500",
       "idgen.max_block_size: 500 is below --block-size 501",
       {"--block-size", "501"}},
      {"max_block_size = 0", "idgen.max_block_size: expected an integer from 1"},
      {"block_duration = \"soon\"", "idgen.block_duration: expected a duration"},
      {"block_duration = -5", "idgen.block_duration: expected a duration"},
      {"block_size = 10", "--block-size: expected 1 to 1000000000, got 0", {"--block-size", "0"}},
  };
  for (const auto& c : cases) {
    MeshFile mesh;
    // The case's line replaces the mesh file's own of that key, at the end of [idgen].
    std::string key = c.line.substr(0, c.line.find(' '));
    std::istringstream in(readText(mesh.path));
    std::ofstream out(mesh.path);
    for (std::string line; std::getline(in, line);)
      if (line.rfind(key + " ", 0) != 0) out << line << "\n";
    out << c.line << "\n";
    out.close();
    auto process = startIdgen(mesh, "idgen", false, c.flags);
    auto status = waitExit(process, 10s);
    auto log = readText(mesh.log("idgen"));
    INFO(c.line << "\n" << log);
    REQUIRE(status);
    CHECK(WIFEXITED(*status));
    CHECK(WEXITSTATUS(*status) == 2);
    CHECK_THAT(log, Contains(c.says));
  }
}

TEST_CASE("the idgen log is folded under Snowflake-only traffic and across restarts",
          "[idgen][journal]") {
  MeshFile mesh;
  // A bound persisted every millisecond or two of traffic, a small log threshold.
  std::ofstream(mesh.path, std::ios::app) << "rewrite_after_bytes = 4096\nbound_ahead = \"2ms\"\n";
  auto logFiles = [&] {
    int n = 0;
    for (auto& entry : std::filesystem::directory_iterator(mesh.dataDir))
      n += entry.path().filename().string().rfind("idgen.log.", 0) == 0;
    return n;
  };
  auto rewrites = [](Client& client) {
    for (auto& [name, value] : rpc::flatten(client.admin.stats()))
      if (name == "journal.rewrites") return static_cast<int64_t>(value);
    return int64_t{-1};
  };
  {
    auto process = startIdgen(mesh, "idgen");
    requireHealthy(mesh.endpoint, mesh.log("idgen"));
    Client client(mesh.endpoint);
    auto deadline = Clock::now() + 20s;
    while (rewrites(client) < 1) {
      REQUIRE(Clock::now() < deadline);
      for (int i = 0; i < 50; ++i) snowflakeRetrying(client.idgen, 1);
      std::this_thread::sleep_for(2ms);
    }
  }
  // Each start opens a log; what an earlier run left is folded, so files do not pile up.
  for (int run = 0; run < 3; ++run) {
    auto process = startIdgen(mesh, "idgen");
    requireHealthy(mesh.endpoint, mesh.log("idgen"));
    Client client(mesh.endpoint);
    client.idgen.next("orders", 1);
    auto deadline = Clock::now() + 10s;
    while (rewrites(client) < 1 || logFiles() > 1) {
      INFO("run " << run << ": " << logFiles() << " log files");
      REQUIRE(Clock::now() < deadline);
      std::this_thread::sleep_for(20ms);
    }
  }
}
