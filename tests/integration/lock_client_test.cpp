// LockClient against a real zmesh-lock: what the stub adds to the service —
// expiry counted from the send, calls that outlive their wait, owners of its
// own, the Mesh entry point as API.md writes it, and the lock service known
// to schema-driven calls and event rendering.
#include <capnp/message.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <optional>
#include <regex>
#include <thread>

#include "process.h"
#include "zmesh/client.h"
#include "zmesh/idl/lock.capnp.h"

using namespace zmesh;
using namespace zmesh::testing;
using Catch::Matchers::Contains;
using Clock = std::chrono::steady_clock;

namespace {

// zmesh-lock alone, with a mesh file that names it.
struct LockService {
  TempDir dir;
  std::string path = dir.path() + "/mesh.toml";
  std::string endpoint = tcpEndpoint(freePort());
  std::optional<Process> process;

  LockService() {
    std::ofstream(path) << "[lock]\nendpoint = \"" << endpoint << "\"\ndata_dir = \"" << dir.path()
                        << "/lock\"\n";
    process.emplace(
        std::vector<std::string>{bin("zmesh-lock"), "--config", path, "--broker", "none"},
        dir.path() + "/lock.log");
    requireHealthy(*process, endpoint, 15s);
  }
};

StatusCode codeOf(const std::function<void()>& call) {
  try {
    call();
  } catch (const RpcError& e) {
    return e.code();
  }
  return StatusCode::OK;
}

}  // namespace

TEST_CASE("LockClient: through Mesh as API.md writes it", "[lock][client]") {
  LockService service;
  zmesh::Mesh mesh{service.path};
  auto lease = mesh.locks().acquire("report", {.ttl = 10s, .wait = 2s});
  CHECK(lease.name == "report");
  CHECK(lease.token > 0);
  CHECK(lease.mode == LockMode::exclusive);
  CHECK(lease.ttl == 10s);
  CHECK(lease.remaining() > 9s);
  CHECK(lease.remaining() <= 10s);

  auto other = mesh.locks();  // another owner
  CHECK_FALSE(other.tryAcquire("report", {.ttl = 1s}));
  CHECK(codeOf([&] { other.acquire("report", {.ttl = 1s, .wait = 100ms}); }) ==
        StatusCode::CONFLICT);

  auto locks = mesh.locks();
  auto info = locks.inspect("report");
  REQUIRE(info);
  CHECK(info->name == "report");
  REQUIRE(info->holders.size() == 1);
  CHECK(info->holders[0].owner == lease.owner);
  CHECK(info->holders[0].token == lease.token);
  CHECK(info->holders[0].mode == LockMode::exclusive);
  CHECK(info->holders[0].session == 0);
  CHECK(info->holders[0].expiresIn <= 10s);
  CHECK(info->lastToken == lease.token);
  CHECK(info->waiters == 0);
  CHECK(info->permits == 0);

  auto v = locks.validate("report", lease.token);
  CHECK(v.valid);
  CHECK(v.current == lease.token);
  CHECK_FALSE(locks.validate("report", lease.token - 1).valid);

  locks.renew(lease, 30s);
  CHECK(lease.ttl == 30s);
  CHECK(lease.remaining() > 29s);
  locks.renew(lease);  // the same ttl again
  CHECK(lease.remaining() > 29s);

  // Any LockClient releases a lease: it carries its owner.
  locks.release(lease);
  CHECK_FALSE(locks.inspect("report"));
  CHECK(codeOf([&] { locks.release(lease); }) == StatusCode::CONFLICT);
  CHECK(codeOf([&] { locks.renew(lease); }) == StatusCode::CONFLICT);
  CHECK(other.tryAcquire("report", {.ttl = 1s}));
}

TEST_CASE("LockClient: Lease.expiry counts from when the call was sent", "[lock][client]") {
  LockService service;
  zmq::context_t context;
  rpc::ClientThread thread{context};
  LockClient locks(thread.channel(service.endpoint));
  constexpr auto kPause = 500ms;

  // The service answers nothing for kPause: the answer's lease is counted
  // from the send, so kPause of it is gone when acquire returns.
  std::optional<Lease> lease;
  {
    Paused paused(service.process->pid());
    auto before = Clock::now();
    {
      std::jthread resume([&] {
        std::this_thread::sleep_for(kPause);
        paused.resume();
      });
      lease = locks.acquire("slow", {.ttl = 10s});
    }
    CHECK(Clock::now() - before >= kPause);
    CHECK(lease->expiry <= before + 10s + 100ms);
  }
  CHECK(lease->remaining() < 10s - kPause + 100ms);
  CHECK(lease->remaining() > 8s);

  SECTION("renew too") {
    Paused paused(service.process->pid());
    {
      std::jthread resume([&] {
        std::this_thread::sleep_for(kPause);
        paused.resume();
      });
      locks.renew(*lease, 20s);
    }
    CHECK(lease->remaining() < 20s - kPause + 100ms);
    CHECK(lease->remaining() > 18s);
  }
}

TEST_CASE("LockClient: acquire's call outlives its wait", "[lock][client]") {
  LockService service;
  zmq::context_t context;
  rpc::ClientThread thread{context};
  // Calls time out after 300 ms: a wait longer than that must still be answered.
  CallSettings quick;
  quick.timeout = 300ms;
  LockClient holder(thread.channel(service.endpoint), quick, "holder");
  LockClient waiter(thread.channel(service.endpoint), quick, "waiter");
  auto held = holder.acquire("w", {.ttl = 30s});

  SECTION("granted after three call timeouts") {
    auto started = Clock::now();
    std::optional<Lease> lease;
    StatusCode code;
    {
      std::jthread release([&] {
        std::this_thread::sleep_for(900ms);
        try {  // no Catch2 assertion on this thread: a failure shows as no grant
          holder.release(held);
        } catch (const std::exception&) {
        }
      });
      code = codeOf([&] { lease = waiter.acquire("w", {.ttl = 5s, .wait = 3s}); });
    }
    CHECK(code == StatusCode::OK);
    CHECK(Clock::now() - started >= 800ms);
    REQUIRE(lease);
    CHECK(lease->token > held.token);
    CHECK(lease->owner == "waiter");
  }
  SECTION("a wait that runs out is CONFLICT, and nullopt for tryAcquire") {
    auto started = Clock::now();
    std::optional<Lease> none;
    CHECK(codeOf([&] { none = waiter.tryAcquire("w", {.ttl = 5s, .wait = 700ms}); }) ==
          StatusCode::OK);
    CHECK_FALSE(none);
    CHECK(Clock::now() - started >= 600ms);
    CHECK(codeOf([&] { waiter.acquire("w", {.ttl = 5s, .wait = 700ms}); }) == StatusCode::CONFLICT);
  }
}

TEST_CASE("LockClient: each client has an owner of its own", "[lock][client]") {
  LockService service;
  zmesh::Mesh mesh{service.path};
  auto a = mesh.locks(), b = mesh.locks();
  CHECK(a.owner() != b.owner());
  // <hostname>:<pid>:<16 hex digits>, printable, within the service's 128.
  std::smatch m;
  REQUIRE(std::regex_match(a.owner(), m, std::regex("([!-~]+):([0-9]+):([0-9a-f]{16})")));
  CHECK(std::stoi(m[2]) == getpid());
  CHECK(a.owner().size() <= 128);

  auto lease = a.acquire("own", {.ttl = 5s});
  CHECK(lease.owner == a.owner());
  CHECK_FALSE(b.tryAcquire("own", {.ttl = 5s}));
  // The same owner again is the holder asking again: its lease, unchanged.
  CHECK(a.acquire("own", {.ttl = 5s}).token == lease.token);
  // An owner named per call.
  auto named = b.acquire("named", {.ttl = 5s, .owner = "job-17"});
  CHECK(named.owner == "job-17");
  CHECK(b.inspect("named")->holders[0].owner == "job-17");
}

TEST_CASE("LockClient: schema-driven calls and event rendering know the lock service",
          "[lock][client]") {
  auto interfaces = interfacesOf("lock");
  REQUIRE(interfaces.size() == 2);
  CHECK(interfaces[0].getProto().getId() == capnp::typeId<idl::Lock>());
  DynamicCall call("lock", "acquire");
  CHECK(call.paramsSchema().findFieldByName("waitMs") != nullptr);
  CHECK(DynamicCall("lock", "health").interface().getProto().getId() != capnp::typeId<idl::Lock>());

  capnp::MallocMessageBuilder message;
  auto event = message.initRoot<idl::LockEvent>();
  event.setName("report");
  event.setOwner("alice");
  event.setToken(9007199254740993ull);
  event.setMode(idl::LockMode::SHARED);
  event.setExpiresMs(10000);
  capnp::MallocMessageBuilder any;
  any.initRoot<capnp::AnyPointer>().setAs<idl::LockEvent>(event.asReader());
  auto json =
      eventBodyJson(capnp::typeId<idl::LockEvent>(), any.getRoot<capnp::AnyPointer>().asReader());
  CHECK_THAT(json, Contains("\"name\":\"report\""));
  CHECK_THAT(json, Contains("\"token\":\"9007199254740993\""));  // 64-bit: a string
  CHECK_THAT(json, Contains("\"mode\":\"shared\""));
}
