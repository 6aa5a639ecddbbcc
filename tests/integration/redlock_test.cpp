// Redlock and the lease keeper against real zmesh-lock processes: five
// independent lock services (each its own mesh file and data dir), nodes
// killed with kill -9 and paused with SIGSTOP; contenders racing for a
// majority; leases kept alive, and lost on time when the service stalls.
#include "zmesh/redlock.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "process.h"
#include "zmesh/client.h"
#include "zmesh/lease_keeper.h"

using namespace zmesh;
using namespace zmesh::testing;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

// One zmesh-lock with a mesh file of its own: an independent node.
struct LockNode {
  TempDir dir;
  std::string path = dir.path() + "/mesh.toml";
  std::string endpoint = tcpEndpoint(freePort());
  std::optional<Process> process;

  LockNode() {
    std::ofstream(path) << "[lock]\nendpoint = \"" << endpoint << "\"\ndata_dir = \"" << dir.path()
                        << "/lock\"\nfsync = \"no\"\n";
    process.emplace(
        std::vector<std::string>{bin("zmesh-lock"), "--config", path, "--broker", "none"},
        dir.path() + "/lock.log");
  }
  void kill() { process->kill9(); }
  pid_t pid() const { return process->pid(); }
};

// N nodes started together, then each waited for; one client thread for all.
struct Cluster {
  std::vector<std::unique_ptr<LockNode>> nodes;
  zmq::context_t context;
  std::optional<rpc::ClientThread> thread;

  explicit Cluster(size_t n) {
    for (size_t i = 0; i < n; ++i) nodes.push_back(std::make_unique<LockNode>());
    for (auto& node : nodes) requireHealthy(*node->process, node->endpoint, 15s);
    thread.emplace(context);
  }
  ~Cluster() { thread.reset(); }  // before the context
  std::vector<rpc::Channel> channels() {
    std::vector<rpc::Channel> out;
    for (auto& node : nodes) out.push_back(thread->channel(node->endpoint));
    return out;
  }
  LockClient client(size_t i, const std::string& owner = "") {
    return LockClient(thread->channel(nodes[i]->endpoint), {}, owner);
  }
  // Nodes where nobody holds or waits for `name` (a dead node counts as free).
  size_t freeOn(const std::string& name) {
    size_t free = 0;
    for (size_t i = 0; i < nodes.size(); ++i) {
      if (!nodes[i]->process->running()) {
        ++free;
        continue;
      }
      if (!client(i).inspect(name)) ++free;
    }
    return free;
  }
};

RedlockOptions quick(uint32_t retries = 0) {
  RedlockOptions o;
  o.nodeTimeout = 100ms;
  o.retries = retries;
  o.retryDelayMin = 0ms;
  o.retryDelayMax = 20ms;
  return o;
}

struct LossLog {
  std::mutex mutex;
  std::vector<std::pair<LeaseLoss, Clock::time_point>> losses;
  LeaseKeeper::OnLost callback() {
    return [this](const Lease&, const LeaseLoss& why) {
      std::lock_guard lock(mutex);
      losses.emplace_back(why, Clock::now());
    };
  }
  size_t size() {
    std::lock_guard lock(mutex);
    return losses.size();
  }
  bool waitFor(size_t n, milliseconds timeout) {
    auto until = Clock::now() + timeout;
    while (size() < n) {
      if (Clock::now() > until) return false;
      std::this_thread::sleep_for(2ms);
    }
    return true;
  }
};

}  // namespace

TEST_CASE("Redlock: acquires with 2 of 5 nodes killed", "[redlock][integration]") {
  Cluster cluster(5);
  cluster.nodes[1]->kill();
  cluster.nodes[3]->kill();
  Redlock redlock(cluster.channels(), quick());
  auto lease = redlock.acquire("report", 5s);
  REQUIRE(lease);
  CHECK(lease->held() == 3);
  CHECK_FALSE(lease->nodes[1]);
  CHECK_FALSE(lease->nodes[3]);
  CHECK(lease->validity() > 4500ms);
  CHECK(lease->validity() <= 5s - 50ms);  // the drift allowance: 5 s × 0.01 + 2 ms
  CHECK(redlock.validate(*lease));
  for (size_t i : {0, 2, 4}) {
    auto info = cluster.client(i).inspect("report");
    REQUIRE(info);
    REQUIRE(info->holders.size() == 1);
    CHECK(info->holders[0].owner == redlock.owner());
    CHECK(info->holders[0].token == lease->nodes[i]->token);
  }

  // Another owner gets at most a minority, and gives back what it got.
  Redlock other(cluster.channels(), quick());
  CHECK_FALSE(other.acquire("report", 5s));
  for (size_t i : {0, 2, 4}) {
    auto info = cluster.client(i).inspect("report");
    REQUIRE(info);
    CHECK(info->holders.size() == 1);
    CHECK(info->holders[0].owner == redlock.owner());
  }

  redlock.release(*lease);  // two nodes unreachable: never throws
  CHECK(cluster.freeOn("report") == 5);
  auto next = other.acquire("report", 5s);
  REQUIRE(next);
  CHECK(next->held() == 3);
  other.release(*next);
}

TEST_CASE("Redlock: fails within its timeout with 3 of 5 nodes killed", "[redlock][integration]") {
  Cluster cluster(5);
  Redlock redlock(cluster.channels(), quick());
  // Connected first, so the dead nodes are connections lost, then never dialled.
  auto warm = redlock.acquire("warm", 1s);
  REQUIRE(warm);
  redlock.release(*warm);
  cluster.nodes[0]->kill();
  cluster.nodes[2]->kill();
  cluster.nodes[4]->kill();

  auto start = Clock::now();
  CHECK_FALSE(redlock.acquire("report", 5s));
  auto once = Clock::now() - start;
  // 3 dead nodes × nodeTimeout (100 ms), plus two quick answers; generous bound.
  CHECK(once < 2s);
  // The two live nodes that granted were released.
  CHECK(cluster.freeOn("report") == 5);

  Redlock retrying(cluster.channels(), quick(2));
  start = Clock::now();
  CHECK_FALSE(retrying.acquire("report", 5s));
  auto thrice = Clock::now() - start;
  CHECK(thrice < 5s);
  CHECK(cluster.freeOn("report") == 5);
  WARN("one attempt took " << std::chrono::duration_cast<milliseconds>(once).count()
                           << " ms, three took "
                           << std::chrono::duration_cast<milliseconds>(thrice).count() << " ms");
}

TEST_CASE("Redlock: contenders never hold a majority at the same time", "[redlock][integration]") {
  Cluster cluster(5);
  constexpr int kContenders = 4;
  constexpr int kRounds = 25;
  std::atomic<bool> inside{false};
  std::atomic<int> overlaps{0}, acquired{0}, invalid{0};
  std::vector<std::jthread> threads;
  std::vector<std::unique_ptr<Redlock>> redlocks;
  for (int c = 0; c < kContenders; ++c)
    redlocks.push_back(std::make_unique<Redlock>(cluster.channels(), quick(5)));
  for (int c = 0; c < kContenders; ++c) {
    Redlock* redlock = redlocks[static_cast<size_t>(c)].get();
    threads.emplace_back([&, redlock] {
      for (int round = 0; round < kRounds; ++round) {
        auto lease = redlock->acquire("contended", 3s);
        if (!lease) continue;
        if (inside.exchange(true)) ++overlaps;
        ++acquired;
        if (lease->validity() <= 0ms) ++invalid;
        std::this_thread::sleep_for(2ms);
        inside = false;
        redlock->release(*lease);
      }
    });
  }
  threads.clear();  // joins
  CHECK(overlaps == 0);
  CHECK(invalid == 0);
  CHECK(acquired >= 10);
  WARN(acquired << " of " << kContenders * kRounds << " rounds held the lock");
  CHECK(cluster.freeOn("contended") == 5);
}

TEST_CASE("Redlock: renews and releases across all nodes", "[redlock][integration]") {
  Cluster cluster(5);
  Redlock redlock(cluster.channels(), quick());
  auto lease = redlock.acquire("job", 1s);
  REQUIRE(lease);
  CHECK(lease->held() == 5);
  const auto firstValid = lease->validUntil;
  std::this_thread::sleep_for(300ms);

  REQUIRE(redlock.renew(*lease));
  CHECK(lease->validUntil >= firstValid + 250ms);
  CHECK(lease->held() == 5);
  for (size_t i = 0; i < 5; ++i) {
    auto info = cluster.client(i).inspect("job");
    REQUIRE(info);
    REQUIRE(info->holders.size() == 1);
    CHECK(info->holders[0].expiresIn > 800ms);
    CHECK(lease->nodes[i]->remaining() > 800ms);
  }

  SECTION("release frees every node") {
    redlock.release(*lease);
    CHECK(cluster.freeOn("job") == 5);
    CHECK_FALSE(redlock.validate(*lease));
  }
  SECTION("renew holds with a majority and is lost without one") {
    cluster.nodes[0]->kill();
    cluster.nodes[1]->kill();
    REQUIRE(redlock.renew(*lease));
    CHECK(redlock.validate(*lease));
    cluster.nodes[2]->kill();
    CHECK_FALSE(redlock.renew(*lease));
    // Lost: released on the two live nodes at once, not at their expiry.
    CHECK(lease->held() == 0);
    CHECK(cluster.freeOn("job") == 5);
  }
  SECTION("a node that lost its lease is dropped from it") {
    auto node = cluster.client(4);
    node.release(*lease->nodes[4]);  // any client may release a lease it names
    REQUIRE(redlock.renew(*lease));
    CHECK(lease->held() == 4);
    CHECK_FALSE(lease->nodes[4]);
    redlock.release(*lease);
    CHECK(cluster.freeOn("job") == 5);
  }
}

TEST_CASE("LeaseKeeper: a paused server loses the lease before its ttl ends",
          "[keeper][integration]") {
  Cluster cluster(1);
  auto locks = cluster.client(0);
  LossLog log;
  LeaseKeeper keeper(locks, log.callback());
  auto lease = locks.acquire("paused", {.ttl = 1s});
  keeper.keep(lease);
  Paused paused(cluster.nodes[0]->pid());
  REQUIRE(log.waitFor(1, 3s));
  const auto allowance = 10ms + 5ms;  // 1 s × 0.01 + driftFixed
  {
    std::lock_guard lock(log.mutex);
    auto [why, at] = log.losses[0];
    CHECK(why.kind == LeaseLoss::Kind::kDeadline);
    CHECK(at >= lease.expiry - allowance);
    CHECK(at < lease.expiry);
  }
  paused.resume();
  std::this_thread::sleep_for(200ms);
  CHECK(log.size() == 1);
  CHECK(keeper.size() == 0);
}

TEST_CASE("LeaseKeeper: a healthy server keeps the lease alive past several ttls",
          "[keeper][integration]") {
  Cluster cluster(1);
  auto locks = cluster.client(0);
  LossLog log;
  LeaseKeeper keeper(locks, log.callback());
  auto lease = locks.acquire("healthy", {.ttl = 300ms});
  auto id = keeper.keep(lease);
  std::this_thread::sleep_for(1500ms);  // five ttls
  CHECK(log.size() == 0);
  CHECK(locks.validate("healthy", lease.token).valid);
  auto current = keeper.forget(id);
  REQUIRE(current);
  CHECK(current->token == lease.token);
  CHECK(current->expiry > lease.expiry + 1s);
  locks.release(*current);
  CHECK_FALSE(locks.inspect("healthy"));
}

TEST_CASE("LeaseKeeper: a lease taken by another after its expiry is lost by the refusal",
          "[keeper][integration]") {
  Cluster cluster(1);
  auto locks = cluster.client(0);
  auto other = cluster.client(0);
  LossLog log;
  LeaseKeeper keeper(locks, log.callback());
  // The service grants 200 ms; the keeper is told 1.2 s (a holder that was
  // stalled, or a clock that ran slow): the service expires the lease first.
  auto lease = locks.acquire("taken", {.ttl = 200ms});
  Lease believed = lease;
  believed.ttl = 1200ms;
  believed.expiry = Clock::now() + 1200ms;
  keeper.keep(believed);
  auto taken = other.acquire("taken", {.ttl = 10s, .wait = 2s});
  CHECK(taken.token > lease.token);
  REQUIRE(log.waitFor(1, 3s));
  std::lock_guard lock(log.mutex);
  auto [why, at] = log.losses[0];
  CHECK(why.kind == LeaseLoss::Kind::kRefused);
  CHECK(why.code == StatusCode::CONFLICT);
  CHECK(at < believed.expiry);  // at the renewal, before the deadline
  CHECK(other.validate("taken", taken.token).valid);
}

TEST_CASE("Redlock: validity is bounded by the leases the nodes hand back",
          "[redlock][integration]") {
  Cluster cluster(3);
  RedlockOptions options = quick();
  options.owner = "redlock-owner";
  Redlock redlock(cluster.channels(), options);
  // The same owner already holds short leases on two nodes (an earlier
  // attempt whose release did not arrive): they hand those back, with the
  // time they have left, not the ttl now asked for.
  for (size_t i = 0; i < 2; ++i)
    cluster.client(i, "redlock-owner").acquire("short", {.ttl = 400ms});
  auto lease = redlock.acquire("short", 10s);
  REQUIRE(lease);
  CHECK(lease->held() == 3);
  // A majority (2 of 3) holds only as long as the second-latest expiry.
  CHECK(lease->validity() <= 400ms);
  redlock.release(*lease);
  CHECK(cluster.freeOn("short") == 3);
}
