// zmesh-lock end to end: a real process on free loopback ports, driven by
// LockClient over real sockets — mutual exclusion under contention, FIFO
// hand-offs, fencing tokens, expiry, sessions, semaphores, events.
#include <atomic>
#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "process.h"
#include "zmesh/client.h"
#include "zmesh/idl/lock.capnp.h"
#include "zmesh/rpc/events.h"

using namespace zmesh;
using namespace zmesh::testing;
using Catch::Matchers::Contains;
using Clock = std::chrono::steady_clock;

namespace {

struct LockMesh {
  TempDir dir;
  std::string path = dir.path() + "/mesh.toml";
  std::string endpoint = tcpEndpoint(freePort());
  std::string xsub = tcpEndpoint(freePort());
  std::string xpub = tcpEndpoint(freePort());
  std::string brokerAdmin = tcpEndpoint(freePort());
  std::optional<Process> broker, lock;

  explicit LockMesh(const std::string& extra = "", bool events = false) {
    std::ofstream(path) << "[broker]\nxsub = \"" << xsub << "\"\nxpub = \"" << xpub
                        << "\"\nadmin = \"" << brokerAdmin << "\"\n\n[lock]\nendpoint = \""
                        << endpoint << "\"\ndata_dir = \"" << dir.path() << "/lock\"\n"
                        << "min_session_timeout = \"100ms\"\n"
                        << extra;
    if (events) {
      broker.emplace(std::vector<std::string>{bin("zmesh-broker"), "--config", path},
                     dir.path() + "/broker.log");
      requireHealthy(*broker, brokerAdmin);
    }
    start(events);
  }
  void start(bool events = false) {
    std::vector<std::string> argv{bin("zmesh-lock"), "--config", path, "--log-level", "info"};
    if (!events) argv.insert(argv.end(), {"--broker", "none"});
    lock.emplace(argv, dir.path() + "/lock.log");
    requireHealthy(*lock, endpoint);
  }
};

// A client thread of its own and a LockClient with an owner of its own.
struct Client {
  zmq::context_t context;
  rpc::ClientThread thread{context};
  LockClient locks;
  explicit Client(const std::string& endpoint, const std::string& owner = "")
      : locks(thread.channel(endpoint), settings(), owner) {}
  static CallSettings settings() {
    CallSettings s;
    s.timeout = 5s;
    return s;
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

// A resource guarding writes with fencing tokens: it keeps the highest token
// it has seen and refuses any write carrying a lower one.
struct FencedResource {
  std::mutex mutex;
  uint64_t highest = 0;
  std::vector<uint64_t> accepted;
  bool write(uint64_t token) {
    std::lock_guard lock(mutex);
    if (token < highest) return false;
    highest = token;
    accepted.push_back(token);
    return true;
  }
};

}  // namespace

TEST_CASE("lock: acquire, conflict, release hands the lock to the waiter with a higher token",
          "[lock]") {
  LockMesh mesh;
  Client alice(mesh.endpoint, "alice"), bob(mesh.endpoint, "bob");
  auto a = alice.locks.acquire("report", {.ttl = 10s});
  CHECK(a.token > 0);
  CHECK(a.owner == "alice");
  CHECK(a.remaining() > 9s);
  // Try once: held.
  CHECK_FALSE(bob.locks.tryAcquire("report", {.ttl = 10s}));
  // bob waits; alice releases; bob gets it with a higher token.
  std::optional<Lease> b;
  std::thread waiter([&] { b = bob.locks.acquire("report", {.ttl = 10s, .wait = 5s}); });
  auto deadline = Clock::now() + 5s;
  while (Clock::now() < deadline) {
    auto info = alice.locks.inspect("report");
    if (info && info->waiters == 1) break;
    std::this_thread::sleep_for(5ms);
  }
  alice.locks.release(a);
  waiter.join();
  REQUIRE(b);
  CHECK(b->token > a.token);
  auto info = alice.locks.inspect("report");
  REQUIRE(info);
  REQUIRE(info->holders.size() == 1);
  CHECK(info->holders[0].owner == "bob");
  CHECK(info->lastToken == b->token);
  // alice's old token is not the holder's: release and renew are refused.
  CHECK(codeOf([&] { alice.locks.release(a); }) == StatusCode::CONFLICT);
  CHECK(codeOf([&] { alice.locks.renew(a); }) == StatusCode::CONFLICT);
  bob.locks.release(*b);
  CHECK_FALSE(alice.locks.inspect("report"));
  // validate remembers the freed name's last token.
  auto v = alice.locks.validate("report", b->token);
  CHECK_FALSE(v.valid);
  CHECK(v.current == b->token);
}

TEST_CASE("lock: a resent acquire by the holder gets the same grant", "[lock]") {
  LockMesh mesh;
  Client alice(mesh.endpoint, "alice");
  auto first = alice.locks.acquire("job", {.ttl = 10s});
  auto again = alice.locks.acquire("job", {.ttl = 10s});
  CHECK(again.token == first.token);
  auto info = alice.locks.inspect("job");
  REQUIRE(info);
  CHECK(info->holders.size() == 1);
}

TEST_CASE("lock: the fencing-token case: a paused holder's late write is rejected", "[lock]") {
  LockMesh mesh;
  Client a(mesh.endpoint, "A"), b(mesh.endpoint, "B");
  FencedResource storage;
  auto leaseA = a.locks.acquire("file", {.ttl = 200ms});
  // A pauses (a GC, a stopped VM) past its TTL; B acquires and writes.
  std::this_thread::sleep_for(400ms);
  auto leaseB = b.locks.acquire("file", {.ttl = 10s, .wait = 2s});
  CHECK(leaseB.token > leaseA.token);
  CHECK(storage.write(leaseB.token));
  // A wakes and writes with its old token: refused by the resource and by validate.
  CHECK_FALSE(storage.write(leaseA.token));
  CHECK_FALSE(a.locks.validate("file", leaseA.token).valid);
  CHECK(a.locks.validate("file", leaseB.token).valid);
  CHECK(a.locks.validate("file", leaseB.token).current == leaseB.token);
  CHECK(codeOf([&] { a.locks.renew(leaseA); }) == StatusCode::CONFLICT);
}

TEST_CASE("lock: 16 contending clients over real sockets keep mutual exclusion and FIFO",
          "[lock][contention]") {
  LockMesh mesh;
  constexpr int kClients = 16, kRounds = 8;
  FencedResource resource;
  std::atomic<int> inside{0}, overlaps{0}, served{0}, failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kClients; ++i) {
    threads.emplace_back([&, i] {
      Client c(mesh.endpoint, "client-" + std::to_string(i));
      for (int round = 0; round < kRounds; ++round) {
        try {
          auto lease = c.locks.acquire("counter", {.ttl = 30s, .wait = 30s});
          if (inside.fetch_add(1) != 0) ++overlaps;
          if (!resource.write(lease.token)) ++overlaps;
          std::this_thread::sleep_for(1ms);
          inside.fetch_sub(1);
          c.locks.release(lease);
          ++served;
        } catch (const RpcError& e) {
          ++failures;
          UNSCOPED_INFO("client " << i << ": " << e.what());
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(overlaps == 0);
  CHECK(failures == 0);
  CHECK(served == kClients * kRounds);
  // Every grant's token is above the one before it.
  REQUIRE(resource.accepted.size() == size_t{kClients * kRounds});
  for (size_t i = 1; i < resource.accepted.size(); ++i)
    CHECK(resource.accepted[i] > resource.accepted[i - 1]);
}

TEST_CASE("lock: waiters are granted in the order they came", "[lock][fifo]") {
  LockMesh mesh;
  Client holder(mesh.endpoint, "holder");
  auto lease = holder.locks.acquire("q", {.ttl = 30s});
  constexpr int kWaiters = 6;
  std::mutex mutex;
  std::vector<int> order;
  std::vector<std::unique_ptr<Client>> clients;
  std::vector<std::thread> threads;
  for (int i = 0; i < kWaiters; ++i) {
    clients.push_back(std::make_unique<Client>(mesh.endpoint, "w" + std::to_string(i)));
    threads.emplace_back([&, i] {
      auto l = clients[i]->locks.acquire("q", {.ttl = 30s, .wait = 20s});
      {
        std::lock_guard lock(mutex);
        order.push_back(i);
      }
      clients[i]->locks.release(l);
    });
    // The next waiter queues only once this one is in the queue.
    auto deadline = Clock::now() + 5s;
    while (Clock::now() < deadline) {
      auto info = holder.locks.inspect("q");
      if (info && info->waiters == static_cast<uint32_t>(i + 1)) break;
      std::this_thread::sleep_for(2ms);
    }
  }
  holder.locks.release(lease);
  for (auto& t : threads) t.join();
  std::vector<int> expected(kWaiters);
  for (int i = 0; i < kWaiters; ++i) expected[i] = i;
  CHECK(order == expected);
}

TEST_CASE("lock: a waiter gets the lock when the holder's lease expires", "[lock]") {
  LockMesh mesh;
  Client a(mesh.endpoint, "a"), b(mesh.endpoint, "b");
  auto la = a.locks.acquire("exp", {.ttl = 300ms});
  auto started = Clock::now();
  auto lb = b.locks.acquire("exp", {.ttl = 10s, .wait = 5s});
  CHECK(Clock::now() - started >= 200ms);
  CHECK(lb.token > la.token);
}

TEST_CASE("lock: a lease granted after a wait counts its time from the grant", "[lock]") {
  LockMesh mesh;
  Client a(mesh.endpoint, "a"), b(mesh.endpoint, "b");
  a.locks.acquire("late", {.ttl = 800ms});
  auto lb = b.locks.acquire("late", {.ttl = 1500ms, .wait = 5s});
  // Waited about 800 ms: the lease still has nearly its whole 1.5 s (the
  // service says how long it held the call), not 1.5 s less the wait.
  CHECK(lb.remaining() > 1200ms);
  CHECK(lb.remaining() <= 1500ms);
}

TEST_CASE("lock: a wait is cut to max_wait and answered CONFLICT", "[lock]") {
  LockMesh mesh("max_wait = \"300ms\"\n");
  Client a(mesh.endpoint, "a"), b(mesh.endpoint, "b");
  a.locks.acquire("busy", {.ttl = 30s});
  auto started = Clock::now();
  CHECK(codeOf([&] { b.locks.acquire("busy", {.ttl = 1s, .wait = 10s}); }) == StatusCode::CONFLICT);
  auto waited = Clock::now() - started;
  CHECK(waited >= 250ms);
  CHECK(waited < 5s);
  auto info = a.locks.inspect("busy");
  REQUIRE(info);
  CHECK(info->waiters == 0);  // the timed-out waiter left the queue
}

TEST_CASE("lock: shared holders together, an exclusive one after them", "[lock][shared]") {
  LockMesh mesh;
  Client r1(mesh.endpoint, "r1"), r2(mesh.endpoint, "r2"), w(mesh.endpoint, "w");
  auto s1 = r1.locks.acquire("doc", {.ttl = 10s, .mode = LockMode::shared});
  auto s2 = r2.locks.acquire("doc", {.ttl = 10s, .mode = LockMode::shared});
  CHECK(s2.token > s1.token);
  CHECK_FALSE(w.locks.tryAcquire("doc", {.ttl = 10s}));
  r1.locks.release(s1);
  r2.locks.release(s2);
  auto x = w.locks.acquire("doc", {.ttl = 10s, .wait = 2s});
  CHECK(x.token > s2.token);
}

TEST_CASE("lock: a semaphore grants its permits and queues beyond", "[lock][semaphore]") {
  LockMesh mesh;
  std::vector<std::unique_ptr<Client>> c;
  for (int i = 0; i < 4; ++i)
    c.push_back(std::make_unique<Client>(mesh.endpoint, "p" + std::to_string(i)));
  std::vector<Lease> held;
  for (int i = 0; i < 3; ++i)
    held.push_back(c[i]->locks.acquire("pool", {.ttl = 10s, .permits = 3}));
  CHECK_FALSE(c[3]->locks.tryAcquire("pool", {.ttl = 10s, .permits = 3}));
  // Every acquire of a semaphore names the same count.
  CHECK(codeOf([&] { c[3]->locks.acquire("pool", {.ttl = 10s, .permits = 4}); }) ==
        StatusCode::CONFLICT);
  CHECK(codeOf([&] { c[3]->locks.acquire("pool", {.ttl = 10s}); }) == StatusCode::CONFLICT);
  c[1]->locks.release(held[1]);
  auto l = c[3]->locks.acquire("pool", {.ttl = 10s, .wait = 2s, .permits = 3});
  auto info = c[0]->locks.inspect("pool");
  REQUIRE(info);
  CHECK(info->permits == 3);
  CHECK(info->holders.size() == 3);
}

TEST_CASE("lock: a session that stops heartbeating loses its leases to the next waiter",
          "[lock][session]") {
  LockMesh mesh("", /*events=*/true);
  zmq::context_t context;
  rpc::Subscriber subscriber(context, mesh.xpub, {"lock."});
  Client a(mesh.endpoint, "a"), b(mesh.endpoint, "b");
  auto session = a.locks.openSession(300ms);
  CHECK(session.timeout == 300ms);
  // Heartbeats keep it.
  auto lease = a.locks.acquire("s", {.ttl = 30s, .session = session.id});
  for (int i = 0; i < 5; ++i) {
    std::this_thread::sleep_for(100ms);
    CHECK(a.locks.heartbeat(session.id) == 300ms);
  }
  CHECK(a.locks.validate("s", lease.token).valid);
  // Then none: the session ends, its lease is lost, b is granted.
  auto lb = b.locks.acquire("s", {.ttl = 10s, .wait = 5s});
  CHECK(lb.token > lease.token);
  CHECK(codeOf([&] { a.locks.heartbeat(session.id); }) == StatusCode::NOT_FOUND);
  // lock.lost names the lease (the subscription may miss events before it joined).
  bool lost = false;
  auto deadline = Clock::now() + 5s;
  while (!lost && Clock::now() < deadline) {
    auto e = subscriber.receive(200ms);
    if (!e || e->topic != "lock.lost") continue;
    auto body = e->event().getBody().getAs<idl::LockEvent>();
    lost = body.getToken() == lease.token && std::string(body.getOwner().cStr()) == "a";
  }
  CHECK(lost);
}

TEST_CASE("lock: closing a session releases its leases", "[lock][session]") {
  LockMesh mesh;
  Client a(mesh.endpoint, "a");
  auto session = a.locks.openSession(10s);
  a.locks.acquire("x1", {.ttl = 30s, .session = session.id});
  a.locks.acquire("x2", {.ttl = 30s, .session = session.id});
  CHECK(a.locks.closeSession(session.id) == 2);
  CHECK_FALSE(a.locks.inspect("x1"));
  CHECK_FALSE(a.locks.inspect("x2"));
  CHECK(codeOf([&] { a.locks.acquire("x3", {.ttl = 1s, .session = session.id}); }) ==
        StatusCode::NOT_FOUND);
}

TEST_CASE("lock: bad requests are refused by name", "[lock]") {
  LockMesh mesh;
  Client a(mesh.endpoint, "a");
  auto message = [&](const std::function<void()>& call) {
    try {
      call();
    } catch (const RpcError& e) {
      CHECK(e.code() == StatusCode::INVALID_ARGUMENT);
      return std::string(e.what());
    }
    FAIL("accepted");
    return std::string();
  };
  CHECK_THAT(message([&] { a.locks.acquire("bad name", {.ttl = 1s}); }), Contains("name"));
  CHECK_THAT(message([&] { a.locks.acquire("", {.ttl = 1s}); }), Contains("name"));
  CHECK_THAT(message([&] { a.locks.acquire("n", {.ttl = 1ms}); }), Contains("ttl"));
  CHECK_THAT(message([&] { a.locks.acquire("n", {.ttl = 1s, .owner = std::string(129, 'o')}); }),
             Contains("owner"));
  CHECK_THAT(
      message([&] { a.locks.acquire("n", {.ttl = 1s, .mode = LockMode::shared, .permits = 2}); }),
      Contains("permits"));
  // Nothing was taken.
  CHECK_FALSE(a.locks.inspect("n"));
}

TEST_CASE("lock: leases survive a restart and kill -9, tokens go on upward", "[lock][durability]") {
  LockMesh mesh("fsync = \"always\"\n");
  Client a(mesh.endpoint, "a");
  auto held = a.locks.acquire("keep", {.ttl = 60s});
  auto freed = a.locks.acquire("gone", {.ttl = 60s});
  a.locks.release(freed);
  mesh.lock->kill9();
  mesh.start();
  Client b(mesh.endpoint, "b");
  auto info = b.locks.inspect("keep");
  REQUIRE(info);
  REQUIRE(info->holders.size() == 1);
  CHECK(info->holders[0].owner == "a");
  CHECK(info->holders[0].token == held.token);
  CHECK(info->holders[0].expiresIn > 50s);
  CHECK_FALSE(b.locks.inspect("gone"));
  CHECK(b.locks.validate("gone", freed.token).current == freed.token);
  // b waits for "keep" in vain; a new name gets a token above every one before.
  CHECK_FALSE(b.locks.tryAcquire("keep", {.ttl = 1s}));
  auto fresh = b.locks.acquire("new", {.ttl = 1s});
  CHECK(fresh.token > freed.token);
  // The holder still holds it and can release it.
  a.locks.release(held);
  CHECK(b.locks.acquire("keep", {.ttl = 1s}).token > fresh.token);
}
