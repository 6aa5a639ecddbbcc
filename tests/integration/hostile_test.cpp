// The whole mesh against input built to be almost right: broker, idgen and the
// gateway as real processes on free loopback ports, sent crafted frames on
// every socket they listen on; each must go on serving.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <random>
#include <thread>
#include <zmq_addon.hpp>

#include "crafted.h"
#include "http_client.h"
#include "process.h"
#include "wire.h"
#include "zmesh/client.h"
#include "zmesh/idl/idgen.capnp.h"

using namespace zmesh;
using namespace zmesh::testing;

namespace {

// broker + idgen + gateway, each with the endpoints a crafted frame can reach.
struct HostileMesh {
  TempDir dir;
  std::string path = dir.path() + "/mesh.toml";
  std::string xsub = tcpEndpoint(freePort()), xpub = tcpEndpoint(freePort());
  std::string brokerAdmin = tcpEndpoint(freePort()), idgen = tcpEndpoint(freePort());
  std::string gatewayAdmin = tcpEndpoint(freePort());
  int port = freePort();
  std::optional<Process> brokerProcess, idgenProcess, gatewayProcess;

  HostileMesh() {
    std::ofstream(path) << "[broker]\nxsub = \"" << xsub << "\"\nxpub = \"" << xpub
                        << "\"\nadmin = \"" << brokerAdmin << "\"\n\n[idgen]\nendpoint = \""
                        << idgen << "\"\ndata_dir = \"" << dir.path() << "/idgen\"\n\n"
                        << "[gateway]\nlisten = \"127.0.0.1:" << port << "\"\nendpoint = \""
                        << gatewayAdmin << "\"\n";
    auto start = [&](const char* name) {
      return Process({bin(name), "--config", path}, dir.path() + "/" + name + ".log");
    };
    brokerProcess.emplace(start("zmesh-broker"));
    requireHealthy(*brokerProcess, brokerAdmin);
    idgenProcess.emplace(start("zmesh-idgen"));
    requireHealthy(*idgenProcess, idgen);
    gatewayProcess.emplace(start("zmesh-gateway"));
    requireHealthy(*gatewayProcess, gatewayAdmin);
  }
};

zmq::message_t damagedNext(crafted::Damage damage) {
  capnp::MallocMessageBuilder m;
  auto p = m.initRoot<idl::IdGen::NextParams>();
  p.setNamespace("orders");
  p.setCount(1);
  return crafted::frame(crafted::damaged(m, 0, damage));
}

}  // namespace

TEST_CASE("the 16-byte frame and its kin, sent to every service, leave each one serving",
          "[hostile][crafted]") {
  HostileMesh mesh;
  zmq::context_t context;
  // Kept open to the end: a closed socket (linger 0) may drop what it has not sent yet.
  std::vector<zmq::socket_t> dealers;
  for (auto& endpoint : {mesh.brokerAdmin, mesh.idgen, mesh.gatewayAdmin}) {
    auto& dealer = dealers.emplace_back(context, zmq::socket_type::dealer);
    dealer.set(zmq::sockopt::linger, 0);
    dealer.connect(endpoint);
    dealer.send(crafted::frame(crafted::listAsRoot()), zmq::send_flags::none);
    // A real header for IdGen.next, then params of every wrong kind.
    rpc::wire::RequestHeader h;
    h.requestId = 1;
    h.interfaceId = capnp::typeId<idl::IdGen>();
    h.methodId = rpc::methodOrdinal(capnp::Schema::from<idl::IdGen>(), "next");
    h.budgetMs = 1000;
    auto header = rpc::wire::encodeRequest(h, zmq::message_t());
    for (auto damage : crafted::kAllDamage) {
      auto params = damagedNext(damage);
      dealer.send(crafted::frame(crafted::bytesOf(params), &header), zmq::send_flags::none);
    }
    dealer.send(crafted::frame(crafted::listAsRoot(), &header), zmq::send_flags::none);
  }
  crafted::RawPublisher pub(context, mesh.xsub);
  pub.send("idgen.block", crafted::frame(crafted::listAsRoot()));

  // Every process is up and answers.
  for (auto& endpoint : {mesh.brokerAdmin, mesh.idgen, mesh.gatewayAdmin})
    CHECK(waitHealthy(endpoint, 5s));
  Mesh client(mesh.path);
  auto range = client.idgen().next("orders", 3);
  CHECK(range.count == 3);
  HttpClient http(mesh.port);
  CHECK(http.post("/v1/ids/orders").status == 200);
  CHECK(mesh.brokerProcess->running());
  CHECK(mesh.idgenProcess->running());
  CHECK(mesh.gatewayProcess->running());
  // idgen answered the bad params by name, and counted them (the frames may
  // still be on their way: a slow build takes a moment).
  auto invalid = [&] {
    for (auto& [name, value] : rpc::flatten(client.admin("idgen").stats()))
      if (name == "rpc.invalid_params") return static_cast<int64_t>(value);
    return int64_t{-1};
  };
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (invalid() < 7 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  CHECK(invalid() == 7);  // every damage kind and the list root, answered by name
}

TEST_CASE("a hostile publisher cannot end the gateway's event streams", "[hostile][crafted]") {
  HostileMesh mesh;
  zmq::context_t context;
  SseClient sse(mesh.port, "/v1/events?topic=hostile.");
  REQUIRE(sse.status() == 200);
  crafted::RawPublisher pub(context, mesh.xsub);
  // Until the stream's subscription has reached the raw publisher.
  auto deadline = std::chrono::steady_clock::now() + 8s;
  uint64_t probes = 0;
  for (bool seen = false; !seen;) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    pub.send("hostile.probe", crafted::eventOf("hostile.probe", ++probes));
    while (auto e = sse.next(100ms))
      if (!e->comment) seen = true;
  }
  pub.send("hostile.x", crafted::frame(crafted::listAsRoot()));
  crafted::Damage damage = crafted::Damage::kStructPointer;
  pub.send("hostile.body", crafted::eventOf("hostile.body", 1, &damage));
  {
    capnp::MallocMessageBuilder m;
    auto e = m.initRoot<idl::Event>();
    e.setPublisher("hostile@test");
    e.setTopic("hostile.x");
    pub.send("hostile.x", crafted::frame(crafted::damaged(m, 1, crafted::Damage::kCapability)));
  }
  pub.send("hostile.after", crafted::eventOf("hostile.after", 1));
  std::optional<SseEvent> after;
  while (auto e = sse.next(3s)) {
    if (e->comment || e->event == "hostile.probe") continue;
    CHECK(e->event == "hostile.after");
    after = e;
    break;
  }
  REQUIRE(after);
  HttpClient http(mesh.port);
  CHECK(http.get("/healthz").status == 200);
  CHECK(mesh.gatewayProcess->running());
}

namespace {

// Resident memory of a process, in KiB (0 when it is gone).
int64_t residentKiB(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  return 0;
}

}  // namespace

// Valid calls mixed with crafted and random frames on every socket, for
// ZMESH_SOAK_SECONDS (default 20): every process stays up, every valid call is
// answered, and each process's resident memory stays under the bound below.
TEST_CASE("soak: valid calls among crafted and random frames, memory bounded", "[hostile][soak]") {
#ifdef ZMESH_SANITIZED
  const int64_t kBoundKiB = 1024 * 1024;  // ASan's quarantine alone may hold 256 MiB
#else
  const int64_t kBoundKiB = 128 * 1024;
#endif
  const char* env = std::getenv("ZMESH_SOAK_SECONDS");
  const auto duration = std::chrono::seconds(env ? std::atoi(env) : 20);
  HostileMesh mesh;
  zmq::context_t context;
  Mesh client(mesh.path);
  auto idgen = client.idgen();
  HttpClient http(mesh.port);
  std::vector<zmq::socket_t> dealers;
  for (auto& endpoint : {mesh.brokerAdmin, mesh.idgen, mesh.gatewayAdmin}) {
    dealers.emplace_back(context, zmq::socket_type::dealer);
    dealers.back().set(zmq::sockopt::linger, 0);
    dealers.back().set(zmq::sockopt::sndtimeo, 100);
    dealers.back().set(zmq::sockopt::rcvhwm, 100);  // replies to garbage pile up unread: dropped
    dealers.back().connect(endpoint);
  }
  crafted::RawPublisher pub(context, mesh.xsub);
  rpc::wire::RequestHeader h;
  h.interfaceId = capnp::typeId<idl::IdGen>();
  h.methodId = rpc::methodOrdinal(capnp::Schema::from<idl::IdGen>(), "next");
  h.budgetMs = 1000;
  auto header = rpc::wire::encodeRequest(h, zmq::message_t());
  std::mt19937_64 random(42);
  auto randomBytes = [&](size_t max) {
    crafted::Bytes b(random() % max);
    for (auto& c : b) c = static_cast<uint8_t>(random());
    return b;
  };
  const std::vector<pid_t> pids{mesh.brokerProcess->pid(), mesh.idgenProcess->pid(),
                                mesh.gatewayProcess->pid()};
  std::vector<int64_t> peak(pids.size(), 0);
  uint64_t valid = 0, rounds = 0;
  auto end = std::chrono::steady_clock::now() + duration;
  while (std::chrono::steady_clock::now() < end) {
    ++rounds;
    for (auto& dealer : dealers) {
      std::vector<zmq::message_t> frames;
      frames.push_back(crafted::frame(crafted::listAsRoot()));
      frames.push_back(damagedNext(crafted::kAllDamage[random() % std::size(crafted::kAllDamage)]));
      frames.back() = crafted::frame(crafted::bytesOf(frames.back()), &header);
      frames.push_back(crafted::frame(randomBytes(300)));
      frames.push_back(crafted::frame(randomBytes(300), &header));
      for (auto& f : frames) (void)dealer.send(f, zmq::send_flags::dontwait);
      zmq::message_t drop;
      while (dealer.recv(drop, zmq::recv_flags::dontwait)) {
      }
    }
    pub.send("idgen.block", crafted::frame(randomBytes(200)));
    pub.send("idgen.block", crafted::frame(crafted::listAsRoot()));
    // Valid calls, through the client and the gateway: every one answered.
    REQUIRE(idgen.next("soak", 1).count == 1);
    auto r = http.post("/v1/ids/soak");
    REQUIRE(r.status == 200);
    valid += 2;
    if (rounds % 50 == 0) {
      HttpClient garbage(mesh.port, 2s);
      auto bytes = randomBytes(400);
      try {
        (void)garbage.raw(std::string(bytes.begin(), bytes.end()) + "\r\n\r\n");
      } catch (const std::exception&) {  // closed without an answer: fine
      }
      for (size_t i = 0; i < pids.size(); ++i) peak[i] = std::max(peak[i], residentKiB(pids[i]));
    }
  }
  INFO(rounds << " rounds, " << valid << " valid calls");
  std::cout << "soak: " << rounds << " rounds, " << valid << " valid calls answered; peak resident"
            << " KiB broker/idgen/gateway:";
  CHECK(mesh.brokerProcess->running());
  CHECK(mesh.idgenProcess->running());
  CHECK(mesh.gatewayProcess->running());
  for (size_t i = 0; i < pids.size(); ++i) {
    peak[i] = std::max(peak[i], residentKiB(pids[i]));
    std::cout << ' ' << peak[i] << (i + 1 == pids.size() ? "\n" : "");
    INFO("process " << i << " peak resident " << peak[i] << " KiB");
    CHECK(peak[i] > 0);
    CHECK(peak[i] < kBoundKiB);
  }
}
