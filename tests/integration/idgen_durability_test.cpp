// What must never go backwards (DESIGN.md §4), under crashes while clients call:
//   (a) real `kill -9` of zmesh-idgen (page cache kept), 50 rounds;
//   (b) the same workload in process over FaultInjectionEnv, whose simulated
//       crash drops everything not fsynced, with fsync/append failures and a
//       Snowflake clock that is set back across restarts.
// In both: every id collected, zero duplicates, and calls that do not overlap
// in time get ids in real-time order.
#include <spdlog/spdlog.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <fstream>
#include <future>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "in_process.h"
#include "process.h"
#include "service.h"
#include "zmesh/client.h"
#include "zmesh/idl/idgen.capnp.h"
#include "zmesh/rpc/clock.h"
#include "zmesh/rpc/server.h"
#include "zmesh/storage/fault_env.h"

using namespace zmesh;
using namespace zmesh::testing;
using Catch::Matchers::Contains;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kNamespace = "d";

// ---- the workload: clients calling next and snowflake, every call recorded ----

struct SeqCall {
  Clock::time_point start, end;
  uint64_t first;
  uint32_t count;
};

struct FlakeCall {
  Clock::time_point start, end;
  std::vector<uint64_t> ids;
};

struct Results {
  std::vector<SeqCall> seq;
  std::vector<FlakeCall> flake;
  uint64_t seqFailed = 0, flakeFailed = 0;  // UNAVAILABLE / DEADLINE_EXCEEDED: no ids
  std::vector<std::string> unexpected;      // anything else: the test fails
};

// Client threads calling next(kNamespace, 1..20) and snowflake(1..50) until stopped.
// Each has its own connection (DEALER). Results are read after stop().
class Workload {
 public:
  Workload(std::string endpoint, int threads, uint64_t seed)
      : endpoint_(std::move(endpoint)), perThread_(threads) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this, i, seed] { run(i, seed + i); });
  }
  ~Workload() { stop(); }

  void stop() {
    stop_ = true;
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }

  // Highest snowflake id any client has received so far.
  uint64_t maxFlake() const { return maxFlake_.load(); }

  // While paused, clients call only snowflake: no sequence reservation forces
  // an fsync, so only the Snowflake bound's own fsyncs make it durable.
  void pauseSequences(bool on) { sequencesPaused_ = on; }

  Results results() {
    stop();
    Results all;
    for (auto& r : perThread_) {
      all.seq.insert(all.seq.end(), r.seq.begin(), r.seq.end());
      all.flake.insert(all.flake.end(), r.flake.begin(), r.flake.end());
      all.seqFailed += r.seqFailed;
      all.flakeFailed += r.flakeFailed;
      all.unexpected.insert(all.unexpected.end(), r.unexpected.begin(), r.unexpected.end());
    }
    return all;
  }

 private:
  void run(int index, uint64_t seed) {
    Results& out = perThread_[index];
    std::mt19937_64 rng(seed);
    rpc::ClientThread client(context_);
    CallSettings settings;
    settings.timeout = 1s;
    IdGenClient idgen(client.channel(endpoint_), settings);
    while (!stop_) {
      bool sequence = rng() % 2 == 0 && !sequencesPaused_;
      uint32_t count = sequence ? 1 + rng() % 20 : 1 + rng() % 50;
      auto start = Clock::now();
      try {
        if (sequence) {
          auto r = idgen.next(kNamespace, count);
          auto end = Clock::now();
          if (r.count != count)
            out.unexpected.push_back("next returned " + std::to_string(r.count) + " ids");
          out.seq.push_back({start, end, r.first, r.count});
        } else {
          auto ids = idgen.snowflake(count);
          auto end = Clock::now();
          if (ids.size() != count)
            out.unexpected.push_back("snowflake returned " + std::to_string(ids.size()) + " ids");
          if (!ids.empty()) {
            uint64_t seen = maxFlake_.load();
            while (ids.back() > seen && !maxFlake_.compare_exchange_weak(seen, ids.back())) {
            }
          }
          out.flake.push_back({start, end, std::move(ids)});
        }
      } catch (const RpcError& e) {
        if (e.code() == StatusCode::UNAVAILABLE || e.code() == StatusCode::DEADLINE_EXCEEDED) {
          ++(sequence ? out.seqFailed : out.flakeFailed);
          std::this_thread::sleep_for(std::chrono::milliseconds(2 + rng() % 5));
        } else {
          out.unexpected.push_back(std::string(sequence ? "next: " : "snowflake: ") + e.what());
        }
      }
    }
  }

  std::string endpoint_;
  zmq::context_t context_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> sequencesPaused_{false};
  std::atomic<uint64_t> maxFlake_{0};
  std::vector<Results> perThread_;
  std::vector<std::thread> threads_;
};

struct Span {
  Clock::time_point start, end;
  uint64_t lo, hi;  // smallest and largest id of the call
};

// For every call B: all calls that ended before B started got only smaller ids.
// Returns the number of (call, predecessor-set) comparisons made.
size_t checkRealTimeOrder(const std::vector<Span>& spans, const char* what) {
  std::vector<const Span*> byStart, byEnd;
  for (auto& s : spans) byStart.push_back(&s), byEnd.push_back(&s);
  std::sort(byStart.begin(), byStart.end(), [](auto a, auto b) { return a->start < b->start; });
  std::sort(byEnd.begin(), byEnd.end(), [](auto a, auto b) { return a->end < b->end; });
  size_t j = 0, compared = 0;
  const Span* highest = nullptr;  // the call with the largest id among those ended so far
  for (const Span* b : byStart) {
    while (j < byEnd.size() && byEnd[j]->end < b->start) {
      if (!highest || byEnd[j]->hi > highest->hi) highest = byEnd[j];
      ++j;
    }
    if (!highest) continue;
    ++compared;
    if (b->lo <= highest->hi) {
      auto ms = [](Clock::duration d) {
        return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
      };
      auto t0 = spans.front().start;
      FAIL(what << ": a call [" << ms(b->start - t0) << "us, " << ms(b->end - t0) << "us] got id "
                << b->lo << ", not above id " << highest->hi << " of a call that ended earlier ["
                << ms(highest->start - t0) << "us, " << ms(highest->end - t0) << "us]");
    }
  }
  return compared;
}

// Zero duplicates and real-time order, for the sequence and for Snowflake.
void checkResults(const Results& r) {
  for (size_t i = 0; i < r.unexpected.size() && i < 10; ++i) UNSCOPED_INFO(r.unexpected[i]);
  REQUIRE(r.unexpected.empty());
  // Loose floors only so the test cannot pass vacuously; not a speed check.
  REQUIRE(r.seq.size() >= 50);
  REQUIRE(r.flake.size() >= 50);

  std::vector<Span> seqSpans;
  for (auto& c : r.seq) seqSpans.push_back({c.start, c.end, c.first, c.first + c.count - 1});
  std::sort(seqSpans.begin(), seqSpans.end(), [](auto& a, auto& b) { return a.lo < b.lo; });
  uint64_t seqIds = 0;
  for (size_t i = 0; i < seqSpans.size(); ++i) {
    REQUIRE(seqSpans[i].lo >= 1);
    seqIds += seqSpans[i].hi - seqSpans[i].lo + 1;
    if (i > 0 && seqSpans[i].lo <= seqSpans[i - 1].hi)
      FAIL("sequence ids issued twice: [" << seqSpans[i - 1].lo << ", " << seqSpans[i - 1].hi
                                          << "] and [" << seqSpans[i].lo << ", " << seqSpans[i].hi
                                          << "]");
  }

  std::vector<Span> flakeSpans;
  std::vector<uint64_t> flakeIds;
  for (auto& c : r.flake) {
    for (size_t i = 1; i < c.ids.size(); ++i) REQUIRE(c.ids[i] > c.ids[i - 1]);
    flakeSpans.push_back({c.start, c.end, c.ids.front(), c.ids.back()});
    flakeIds.insert(flakeIds.end(), c.ids.begin(), c.ids.end());
  }
  std::sort(flakeIds.begin(), flakeIds.end());
  auto dup = std::adjacent_find(flakeIds.begin(), flakeIds.end());
  if (dup != flakeIds.end()) FAIL("snowflake id " << *dup << " issued twice");

  size_t seqCompared = checkRealTimeOrder(seqSpans, "next");
  size_t flakeCompared = checkRealTimeOrder(flakeSpans, "snowflake");
  WARN("next: " << r.seq.size() << " calls ok (" << seqIds << " ids), " << r.seqFailed
                << " failed; snowflake: " << r.flake.size() << " calls ok (" << flakeIds.size()
                << " ids), " << r.flakeFailed << " failed; order checks " << seqCompared << " + "
                << flakeCompared);
}

// After the last round: a fresh call gets ids above every id ever received.
void checkContinuesAbove(const IdGenClient& idgen, const Results& r) {
  uint64_t maxSeq = 0, maxFlake = 0;
  for (auto& c : r.seq) maxSeq = std::max(maxSeq, c.first + c.count - 1);
  for (auto& c : r.flake)
    if (!c.ids.empty()) maxFlake = std::max(maxFlake, c.ids.back());
  CHECK(idgen.next(kNamespace, 1).first > maxSeq);
  CHECK(snowflakeRetrying(idgen, 1, true).front() > maxFlake);
}

// A connection of its own (a DEALER on its own I/O thread).
struct Client {
  zmq::context_t context;
  rpc::ClientThread thread{context};
  IdGenClient idgen;
  explicit Client(const std::string& endpoint) : idgen(thread.channel(endpoint)) {}
};

// ---- (b): the service in this process, over FaultInjectionEnv ----

// The service in this process: the loop's thread builds it, and closes it once stopped.
class InProcessIdGen : public InProcessServer {
 public:
  InProcessIdGen(storage::Env& env, std::string endpoint, idgen::IdGenOptions options,
                 idgen::WallClock clock)
      : InProcessServer("idgen", std::move(endpoint),
                        [&env, options, clock](rpc::Server& server) -> std::function<void()> {
                          auto impl =
                              kj::heap<idgen::IdGenService>(server, nullptr, env, options, clock);
                          auto& service = *impl;
                          server.serve<idl::IdGen>(kj::mv(impl));
                          return [&service] { service.close(); };
                        }) {}
};

}  // namespace

TEST_CASE("idgen: 50 rounds of kill -9 under load lose no id order and repeat none",
          "[idgen][durability]") {
  const uint64_t seed = testSeed();
  INFO("seed " << seed << " (rerun with ZMESH_TEST_SEED)");
  TempDir dir;
  std::string endpoint = tcpEndpoint(freePort());
  std::string config = dir.path() + "/mesh.toml";
  std::string log = dir.path() + "/idgen.log";
  {
    std::ofstream out(config);
    out << "[idgen]\n"
        << "endpoint = \"" << endpoint << "\"\n"
        << "data_dir = \"" << dir.path() << "/idgen\"\n"
        << "fsync = \"everysec\"\n"
        << "block_size = 50\n"  // a reservation every few calls
        // Blocks grow under this load (block_duration's default) but stay small.
        << "max_block_size = 400\n"
        << "worker_id = 11\n"
        // After a restart Snowflake waits for the clock to pass the persisted
        // bound; a short one keeps it available for most of each round.
        << "bound_ahead = \"100ms\"\n"
        << "rewrite_after_bytes = 4096\n"  // snapshots (and their crash windows) too
        << "stop_grace = \"500ms\"\n";
  }
  std::vector<std::string> argv{bin("zmesh-idgen"), "--config", config, "--broker", "none",
                                "--log-level",      "warn"};
  std::optional<Process> server;
  auto start = [&] {
    server.emplace(argv, log);
    requireHealthy(*server, endpoint, 15s);
  };
  start();

  std::mt19937_64 rng(seed);
  Workload load(endpoint, 4, seed);
  for (int round = 0; round < 50; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 201));
    server->kill9();
    start();
  }
  std::this_thread::sleep_for(200ms);
  auto results = load.results();

  checkContinuesAbove(Client(endpoint).idgen, results);
  int status = server->stop(5s);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  checkResults(results);
}

TEST_CASE("idgen on FaultInjectionEnv: crashes drop unsynced writes, the clock is set back",
          "[idgen][durability]") {
  const uint64_t seed = testSeed();
  INFO("seed " << seed << " (rerun with ZMESH_TEST_SEED)");
  spdlog::set_level(spdlog::level::err);  // the service logs every crash and recovery
  storage::FaultInjectionEnv env;
  std::atomic<int64_t> clockOffset{0};
  idgen::WallClock clock = [&clockOffset] { return rpc::unixMillis() + clockOffset.load(); };
  idgen::IdGenOptions options;
  options.dataDir = "/data/idgen";
  options.fsync = storage::FsyncPolicy::everysec;
  options.book.blockSize = 50;  // a reservation every few calls
  options.book.maxBlockSize = 400;
  options.book.blockDuration = std::chrono::seconds(1);  // growing, as the service does
  options.snowflake.workerId = 3;
  options.snowflake.maxBackwardMs = 5;
  options.snowflake.boundAheadMs = 100;
  options.snowflake.renewBeforeMs = 50;
  options.rewriteAfterBytes = 4096;
  const std::string endpoint = tcpEndpoint(freePort());
  constexpr int64_t kClockJumpMs = 1500;  // far beyond boundAheadMs + maxBackwardMs

  std::mt19937_64 rng(seed);
  auto server = std::make_unique<InProcessIdGen>(env, endpoint, options, clock);
  Workload load(endpoint, 4, seed);

  int fatalStops = 0, clockBacks = 0, tornCrashes = 0;
  for (int round = 0; round < 33; ++round) {
    INFO("round " << round);
    const bool clockBack = round % 6 == 5;
    std::this_thread::sleep_for(std::chrono::milliseconds(80 + rng() % 171));
    if (clockBack) {
      // Snowflake only for a while: what survives the crash is then the last
      // bound fsynced for its own sake.
      load.pauseSequences(true);
      std::this_thread::sleep_for(300ms);
    }
    // Some rounds first make the disk fail: the service must stop by itself
    // (an fsync or write error is fatal) before the power goes.
    if (round % 6 == 2 || round % 6 == 4) {
      if (round % 6 == 2)
        env.failSyncs(true);
      else
        env.failAppends(true);
      REQUIRE(server->waitFinished(10s));
      ++fatalStops;
    }
    // Power loss: everything not fsynced is gone (sometimes a torn tail is left).
    if (rng() % 2) {
      env.crash(&rng);
      ++tornCrashes;
    } else {
      env.crash();
    }
    server.reset();  // the dead process's threads stop; its files stay dead
    env.failSyncs(false);
    env.failAppends(false);
    env.restart();

    load.pauseSequences(false);
    const uint64_t maxBefore = load.maxFlake();
    if (clockBack) clockOffset -= kClockJumpMs;
    REQUIRE_NOTHROW(server = std::make_unique<InProcessIdGen>(env, endpoint, options, clock));
    if (clockBack) {
      ++clockBacks;
      // A new connection: one to the previous incarnation may still report its
      // loss, failing the next call sent on it.
      Client probe(endpoint);
      // The clock is now far behind the bound persisted before the crash.
      std::string code = "OK", message;
      try {
        probe.idgen.snowflake(1);
      } catch (const RpcError& e) {
        code = rpc::statusName(e.code());
        message = e.detail();
      }
      CHECK(code == "UNAVAILABLE");
      CHECK_THAT(message, Contains("behind the time bound persisted before the restart"));
      // ...and once it has caught up, ids continue above everything issued.
      auto ids = snowflakeRetrying(probe.idgen, 1, true);
      CHECK(ids.front() > maxBefore);
    }
  }
  std::this_thread::sleep_for(200ms);
  auto results = load.results();
  checkContinuesAbove(Client(endpoint).idgen, results);
  server.reset();
  CHECK(fatalStops >= 10);
  CHECK(clockBacks >= 5);
  CHECK(env.syncCount() > 0);
  WARN(tornCrashes << " of 33 crashes left torn tails; " << fatalStops << " fatal storage stops; "
                   << clockBacks << " clock set-backs; " << env.syncCount() << " fsyncs");
  checkResults(results);
}
