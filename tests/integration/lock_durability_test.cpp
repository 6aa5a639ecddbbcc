// Leases and fencing tokens under crashes (DESIGN.md §4): tokens a client has
// seen never go back, under every fsync policy; under `always`, a lease
// acknowledged is held after any crash (with the time it had left) and a
// release acknowledged stays done. Proven:
//   (a) real processes killed with kill -9 under load (page cache kept);
//   (b) the service in this process over FaultInjectionEnv, whose simulated
//       crash drops everything not fsynced (torn tails, failing fsyncs and
//       appends too), with log rewrites into snapshots along the way;
//   (c) the replay of log records and snapshots built to be almost right.
#include <capnp/any.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <tuple>

#include "crafted.h"
#include "in_process.h"
#include "process.h"
#include "service.h"
#include "zmesh/client.h"
#include "zmesh/rpc/clock.h"
#include "zmesh/rpc/frame.h"
#include "zmesh/storage/fault_env.h"
#include "zmesh/storage/journal.h"
#include "zmesh/storage/record_log.h"

using namespace zmesh;
using namespace zmesh::testing;
using Catch::Matchers::Contains;
using Clock = std::chrono::steady_clock;

namespace {

lock::LockClocks realClocks() { return lock::LockClocks{rpc::monotonicMillis, rpc::unixMillis}; }

constexpr int kNames = 3;
std::string nameOf(int i) { return "dur" + std::to_string(i); }

bool inDoubt(StatusCode code) {
  return code == StatusCode::UNAVAILABLE || code == StatusCode::DEADLINE_EXCEEDED;
}

// A connection of its own (a DEALER on its own I/O thread) and a LockClient.
struct Client {
  zmq::context_t context;
  rpc::ClientThread thread{context};
  LockClient locks;
  explicit Client(const std::string& endpoint, const std::string& owner = "",
                  std::chrono::milliseconds timeout = 5s)
      : locks(thread.channel(endpoint), settings(timeout), owner) {}
  static CallSettings settings(std::chrono::milliseconds timeout) {
    CallSettings s;
    s.timeout = timeout;
    return s;
  }
};

// ---- the workload: clients acquiring and releasing, every answer recorded ----

// One grant a client was answered (acknowledged).
struct Grant {
  std::string name;
  std::string owner;
  uint64_t token;
  Clock::time_point start, end;  // the call, as the client saw it
  // The call retried an acquire whose answer was lost: the service may have
  // granted that one and now hands its lease back (a token issued earlier).
  bool retry;
};

// A release answered CONFLICT: the lease was gone.
struct Gone {
  std::string name;
  uint64_t token;
  Clock::time_point start, end;
  bool retry;  // an earlier release of it was in doubt
};

// Every call a worker made and its outcome, for the message of a failure.
struct Call {
  std::string owner, what, name;  // what: acquire | retry acquire | release
  uint64_t token;                 // granted, or released
  Clock::time_point start, end;
  std::string outcome;  // OK, or the status
};

struct Results {
  std::vector<Grant> grants;  // in the order they were acknowledged
  std::vector<Gone> gone;
  std::vector<Call> calls;  // in the order they ended
  uint64_t conflicts = 0, acquiresInDoubt = 0, releases = 0, releasesInDoubt = 0;
  std::vector<std::string> unexpected;  // anything else: the test fails
};

// From just before a crash (or a storage failure that leads to one) to just after.
struct Crash {
  Clock::time_point from, to;
};

// Worker threads, each an owner of its own, acquiring one of kNames (waiting
// up to maxWait) and releasing it. A call that fails (the server crashed or is
// restarting) is in doubt: the worker retries the same operation until it is
// answered, so no lease is left behind unknown to its owner — a request given
// up on may still sit in the connection's queue and reach the next
// incarnation, but it reaches it before the retry (one connection, in order),
// and the retry answers for it: an owner that holds the lock gets its lease
// back, one that waits is moved to the retry (or out of the queue, for a
// retry that only tries once).
class Workload {
 public:
  struct Options {
    int threads = 4;
    std::chrono::milliseconds timeout = 1s;  // CallSettings.timeout
    std::chrono::milliseconds ttl = 10s;     // outlives every check and restart
    int maxWaitMs = 30;
    int maxHoldMs = 3;
  };

  // What a worker holds, as far as it knows: read while paused.
  struct Held {
    std::string name, owner;
    uint64_t token;
    bool releaseInDoubt;  // a release was sent and not answered
  };

  Workload(std::string endpoint, uint64_t seed, Options options)
      : endpoint_(std::move(endpoint)), options_(options), workers_(options.threads) {
    for (int i = 0; i < options.threads; ++i)
      workers_[i].thread = std::thread([this, i, seed] { run(i, seed + 7919 * i); });
  }
  ~Workload() { stop(); }

  void stop() {
    stop_ = true;
    for (auto& w : workers_)
      if (w.thread.joinable()) w.thread.join();
  }
  // Waits until no call is in flight and starts none until resume(): a check
  // then reads the service and the ledger at one moment.
  void pause() {
    paused_ = true;
    for (auto& w : workers_)
      while (!w.idle && !stop_) std::this_thread::sleep_for(1ms);
  }
  void resume() { paused_ = false; }

  uint64_t acknowledged() {
    std::lock_guard lock(mutex_);
    return results_.grants.size();
  }
  // While paused: every worker's lease, and the releases acknowledged so far.
  std::vector<Held> held() {
    std::vector<Held> out;
    for (auto& w : workers_)
      if (w.held) out.push_back(*w.held);
    return out;
  }
  std::vector<std::pair<std::string, uint64_t>> released() {
    std::lock_guard lock(mutex_);
    return released_;
  }
  // While paused or stopped: names with an acquire in doubt.
  std::set<std::string> acquiresInDoubt() {
    std::set<std::string> out;
    for (auto& w : workers_)
      if (w.pendingAcquire) out.insert(*w.pendingAcquire);
    return out;
  }
  Results results() {
    stop();
    std::lock_guard lock(mutex_);
    return results_;
  }

 private:
  struct Worker {
    std::thread thread;
    std::atomic<bool> idle{false};
    std::optional<Held> held;                   // guarded by pausing
    std::optional<std::string> pendingAcquire;  // an acquire in doubt, to retry
  };

  void run(int index, uint64_t seed) {
    Worker& w = workers_[index];
    std::mt19937_64 rng(seed);
    const std::string owner = "worker" + std::to_string(index) + ":" + std::to_string(seed);
    Client client(endpoint_, owner, options_.timeout);
    std::optional<Lease> lease;
    auto unexpected = [&](const std::string& what) {
      std::lock_guard lock(mutex_);
      results_.unexpected.push_back("worker " + std::to_string(index) + ": " + what);
    };
    while (!stop_) {
      if (paused_) {
        w.idle = true;
        std::this_thread::sleep_for(1ms);
        continue;
      }
      w.idle = false;
      if (paused_) continue;  // pause() may have seen idle just now
      if (!lease) {
        const bool retry = w.pendingAcquire.has_value();
        const std::string name = retry ? *w.pendingAcquire : nameOf(rng() % kNames);
        AcquireOptions o;
        o.ttl = options_.ttl;
        o.wait = std::chrono::milliseconds(rng() % (options_.maxWaitMs + 1));
        const char* what = retry ? "retry acquire" : "acquire";
        auto start = Clock::now();
        try {
          auto got = client.locks.tryAcquire(name, o);
          auto end = Clock::now();
          w.pendingAcquire.reset();
          std::lock_guard lock(mutex_);
          results_.calls.push_back(
              {owner, what, name, got ? got->token : 0, start, end, got ? "OK" : "CONFLICT"});
          if (got) {
            results_.grants.push_back({name, got->owner, got->token, start, end, retry});
            lease = got;
            w.held = Held{name, got->owner, got->token, false};
          } else {
            ++results_.conflicts;
          }
        } catch (const RpcError& e) {
          record(owner, what, name, 0, start, e);
          if (!inDoubt(e.code())) {
            unexpected("acquire " + name + ": " + e.what());
            continue;
          }
          w.pendingAcquire = name;
          {
            std::lock_guard lock(mutex_);
            ++results_.acquiresInDoubt;
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(2 + rng() % 5));
        }
      } else {
        if (options_.maxHoldMs > 0)
          std::this_thread::sleep_for(std::chrono::milliseconds(rng() % (options_.maxHoldMs + 1)));
        const bool retry = w.held->releaseInDoubt;
        auto start = Clock::now();
        try {
          client.locks.release(*lease);
          std::lock_guard lock(mutex_);
          results_.calls.push_back(
              {owner, "release", lease->name, lease->token, start, Clock::now(), "OK"});
          ++results_.releases;
          released_.emplace_back(lease->name, lease->token);
          lease.reset();
          w.held.reset();
        } catch (const RpcError& e) {
          record(owner, "release", lease->name, lease->token, start, e);
          if (e.code() == StatusCode::CONFLICT) {
            // Not the holder: the lease was lost in a crash (its grant was
            // not durable yet), or a release in doubt was done after all.
            std::lock_guard lock(mutex_);
            results_.gone.push_back({lease->name, lease->token, start, Clock::now(), retry});
            lease.reset();
            w.held.reset();
          } else if (inDoubt(e.code())) {
            w.held->releaseInDoubt = true;
            {
              std::lock_guard lock(mutex_);
              ++results_.releasesInDoubt;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(2 + rng() % 5));
          } else {
            unexpected("release " + lease->name + ": " + e.what());
          }
        }
      }
    }
    w.idle = true;
  }

  void record(const std::string& owner, const char* what, const std::string& name, uint64_t token,
              Clock::time_point start, const RpcError& e) {
    std::lock_guard lock(mutex_);
    results_.calls.push_back(
        {owner, what, name, token, start, Clock::now(), std::string(rpc::statusName(e.code()))});
  }

  std::string endpoint_;
  Options options_;
  std::atomic<bool> stop_{false}, paused_{false};
  std::vector<Worker> workers_;
  std::mutex mutex_;
  Results results_;                                         // guarded by mutex_
  std::vector<std::pair<std::string, uint64_t>> released_;  // guarded by mutex_
};

// The owner's last calls on the name up to `until`, and the crashes among
// them, for a failure's message.
std::string historyOf(const Results& r, const std::vector<Crash>& crashes, const std::string& owner,
                      const std::string& name, Clock::time_point until, Clock::time_point t0) {
  auto us = [t0](Clock::time_point t) {
    return std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(t - t0).count()) +
           "us";
  };
  std::vector<const Call*> calls;
  for (auto& c : r.calls)
    if (c.owner == owner && c.name == name && c.start <= until) calls.push_back(&c);
  if (calls.size() > 10) calls.erase(calls.begin(), calls.end() - 10);
  std::string out = owner + " on " + name + ", last calls (and crashes):\n";
  auto crash = crashes.begin();
  for (auto* c : calls) {
    for (; crash != crashes.end() && crash->from < c->start; ++crash)
      if (crash->to >= calls.front()->start)
        out += "  crash [" + us(crash->from) + ", " + us(crash->to) + "]\n";
    out += "  " + c->what + " [" + us(c->start) + ", " + us(c->end) + "] token " +
           std::to_string(c->token) + ": " + c->outcome + "\n";
  }
  for (; crash != crashes.end() && crash->from < until; ++crash)
    out += "  crash [" + us(crash->from) + ", " + us(crash->to) + "]\n";
  return out;
}

// Tokens never go back:
//   - per name, the tokens acknowledged strictly increase in the order of
//     acknowledgement (across every crash);
//   - a call that started after another ended got a greater token (calls
//     across a crash included), unless it retried an acquire whose answer was
//     lost (the service may hand back the lease it granted then).
// A lease handed back to its owner again (a token it was answered before for
// the name) is no new token: under fsync no|everysec a crash can undo the
// release of a lease, which its owner's next acquire then gets back. With
// `releasesDurable` (fsync always, or kill -9, which keeps the page cache) that
// cannot happen.
void checkTokens(const Results& r, bool releasesDurable, const std::vector<Crash>& crashes) {
  for (size_t i = 0; i < r.unexpected.size() && i < 10; ++i) UNSCOPED_INFO(r.unexpected[i]);
  REQUIRE(r.unexpected.empty());
  REQUIRE(r.grants.size() >= 50);  // only so the test cannot pass vacuously

  const auto t0 = r.grants.front().start;
  std::map<std::string, const Grant*> last;
  std::set<std::tuple<std::string, std::string, uint64_t>> seen;  // owner, name, token
  std::vector<const Grant*> byStart, byEnd;
  size_t handedBack = 0;
  for (auto& g : r.grants) {
    REQUIRE(g.token >= 1);
    byEnd.push_back(&g);
    if (!seen.emplace(g.owner, g.name, g.token).second) {
      ++handedBack;
      if (releasesDurable)
        FAIL(g.name << ": token " << g.token << " handed back to " << g.owner
                    << ", who had released it (acknowledged, or found it gone)\n"
                    << historyOf(r, crashes, g.owner, g.name, g.end, t0));
      continue;
    }
    auto it = last.find(g.name);
    if (it != last.end() && g.token <= it->second->token)
      FAIL(g.name << ": token " << g.token << " (" << g.owner << ") acknowledged after token "
                  << it->second->token << " (" << it->second->owner << ")\n"
                  << historyOf(r, crashes, g.owner, g.name, g.end, t0)
                  << historyOf(r, crashes, it->second->owner, g.name, g.end, t0));
    last[g.name] = &g;
    if (!g.retry) byStart.push_back(&g);
  }

  std::sort(byStart.begin(), byStart.end(), [](auto a, auto b) { return a->start < b->start; });
  std::sort(byEnd.begin(), byEnd.end(), [](auto a, auto b) { return a->end < b->end; });
  size_t j = 0, compared = 0;
  const Grant* highest = nullptr;  // the largest token among the calls ended so far
  auto us = [t0](Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::microseconds>(t - t0).count();
  };
  for (const Grant* b : byStart) {
    while (j < byEnd.size() && byEnd[j]->end < b->start) {
      if (!highest || byEnd[j]->token > highest->token) highest = byEnd[j];
      ++j;
    }
    if (!highest) continue;
    ++compared;
    if (b->token <= highest->token)
      FAIL("a call on " << b->name << " [" << us(b->start) << "us, " << us(b->end)
                        << "us] got token " << b->token << ", not above token " << highest->token
                        << " of a call on " << highest->name << " that ended earlier ["
                        << us(highest->start) << "us, " << us(highest->end) << "us]\n"
                        << historyOf(r, crashes, b->owner, b->name, b->end, t0));
  }
  size_t retries = std::count_if(r.grants.begin(), r.grants.end(), [](auto& g) { return g.retry; });
  WARN(r.grants.size() << " grants acknowledged (" << retries << " after a retry, " << handedBack
                       << " handed back again), " << r.conflicts << " not granted in time, "
                       << r.acquiresInDoubt << " acquires in doubt; " << r.releases << " releases, "
                       << r.gone.size() << " found the lease gone, " << r.releasesInDoubt
                       << " in doubt; " << compared << " order checks");
}

// Where no acknowledged write can be lost (kill -9 keeps the page cache;
// fsync always), a release finds its lease gone only when an earlier attempt
// of it was done: one in doubt that it retries, or the connection's own resend
// of it across a crash (the first attempt done, its answer lost).
void checkGone(const Results& r, const std::vector<Crash>& crashes) {
  for (auto& g : r.gone) {
    if (g.retry) continue;
    bool acrossCrash = std::any_of(crashes.begin(), crashes.end(), [&g](const Crash& c) {
      return g.start <= c.to && g.end >= c.from;
    });
    if (!acrossCrash)
      FAIL(g.name
           << ": the lease of token " << g.token
           << ", acknowledged, was gone when its owner released it (no crash during the release)");
  }
}

uint64_t maxToken(const Results& r) {
  uint64_t max = 0;
  for (auto& g : r.grants) max = std::max(max, g.token);
  return max;
}

std::map<std::string, uint64_t> maxTokenByName(const Results& r) {
  std::map<std::string, uint64_t> out;
  for (auto& g : r.grants) out[g.name] = std::max(out[g.name], g.token);
  return out;
}

// A call retried (a new connection may first report the old one's loss)
// until it answers, for checks right after a restart.
template <typename Fn>
auto retrying(Fn fn) {
  auto deadline = Clock::now() + 10s;
  while (true) {
    try {
      return fn();
    } catch (const RpcError& e) {
      if (!inDoubt(e.code()) || Clock::now() > deadline) throw;
      std::this_thread::sleep_for(20ms);
    }
  }
}

std::vector<std::string> lockArgv(const std::string& config) {
  return {bin("zmesh-lock"), "--config", config, "--broker", "none", "--log-level", "warn"};
}

// ---- (b): the service in this process, over FaultInjectionEnv ----

class InProcessLock : public InProcessServer {
 public:
  InProcessLock(storage::Env& env, std::string endpoint, lock::LockServiceOptions options)
      : InProcessServer("lock", std::move(endpoint),
                        [&env, options](rpc::Server& server) -> std::function<void()> {
                          auto impl = kj::heap<lock::LockService>(server, nullptr, env, options,
                                                                  realClocks());
                          auto& service = *impl;
                          server.serve<idl::Lock>(kj::mv(impl));
                          return [&service] { service.close(); };
                        }) {}
};

lock::LockServiceOptions faultOptions(storage::FsyncPolicy policy) {
  lock::LockServiceOptions options;
  options.dataDir = "/data/lock";
  options.fsync = policy;
  options.rewriteAfterBytes = 2048;  // snapshots (and their crash windows) too
  options.tokenBlock = 50;           // a reservation every few grants
  options.table.tokenLowWater = 25;  // as main.cpp derives it
  return options;
}

// Under `always`, after a crash: every lease acknowledged and not released
// (nor in doubt) is held by its owner with its token; no token whose release
// was acknowledged is held.
void checkLeases(const std::string& endpoint, Workload& load) {
  Client probe(endpoint, "probe");
  std::map<std::string, std::optional<LockInfo>> infos;
  for (int i = 0; i < kNames; ++i)
    infos[nameOf(i)] = retrying([&] { return probe.locks.inspect(nameOf(i)); });
  auto holds = [&](const std::string& name, const std::string& owner, uint64_t token) {
    auto& info = infos.at(name);
    if (!info) return false;
    for (auto& h : info->holders)
      if (h.token == token && (owner.empty() || h.owner == owner)) return true;
    return false;
  };
  for (auto& h : load.held()) {
    if (h.releaseInDoubt) continue;
    INFO("lease " << h.name << " token " << h.token << " of " << h.owner
                  << " (acknowledged, not released)");
    CHECK(holds(h.name, h.owner, h.token));
  }
  for (auto& [name, token] : load.released()) {
    if (holds(name, "", token))
      FAIL(name << ": token " << token << " held after its release was acknowledged");
  }
}

// Rounds of load, then a crash (some after the disk failed first), then a
// restart over what survived; checks after each restart.
void crashRounds(storage::FsyncPolicy policy, int rounds) {
  const uint64_t seed = testSeed();
  INFO("seed " << seed << " (rerun with ZMESH_TEST_SEED), fsync " << storage::toString(policy));
  spdlog::set_level(spdlog::level::err);  // the service logs every crash and recovery
  storage::FaultInjectionEnv env;
  const auto options = faultOptions(policy);
  const std::string endpoint = tcpEndpoint(freePort());
  const bool always = policy == storage::FsyncPolicy::always;

  std::mt19937_64 rng(seed);
  auto server = std::make_unique<InProcessLock>(env, endpoint, options);
  Workload::Options wo;
  wo.timeout = 300ms;  // a call to the dead service fails soon: the pause waits for it
  wo.maxWaitMs = 20;
  // Under `always` every lease acknowledged must outlive the checks; under the
  // others a crash brings back leases whose release was lost, held until they
  // expire: short, so the names are soon free again.
  wo.ttl = always ? 10s : 1s;
  Workload load(endpoint, seed, wo);
  int fatalStops = 0, expectedFatal = 0, torn = 0;
  std::vector<Crash> crashes;
  auto began = Clock::now();
  for (int round = 0; round < rounds; ++round) {
    INFO("round " << round);
    std::this_thread::sleep_for(std::chrono::milliseconds(40 + rng() % 121));
    crashes.push_back({Clock::now(), {}});
    if (round % 5 == 2 || round % 5 == 4) {
      // The disk fails first: the service must stop by itself.
      ++expectedFatal;
      if (round % 5 == 2)
        env.failSyncs(true);
      else
        env.failAppends(true);
      REQUIRE(server->waitFinished(10s));
      ++fatalStops;
    }
    // Power loss while calls are in flight: everything not fsynced is gone.
    if (rng() % 2) {
      env.crash(&rng);
      ++torn;
    } else {
      env.crash();
    }
    server.reset();  // the dead process's threads stop; its files stay dead
    load.pause();    // calls in flight fail (in doubt) or were answered before
    env.failSyncs(false);
    env.failAppends(false);
    env.restart();
    REQUIRE_NOTHROW(server = std::make_unique<InProcessLock>(env, endpoint, options));
    crashes.back().to = Clock::now();
    if (always) checkLeases(endpoint, load);
    load.resume();
  }
  std::this_thread::sleep_for(100ms);
  load.pause();
  if (always) checkLeases(endpoint, load);
  auto inDoubtNames = load.acquiresInDoubt();
  auto results = load.results();
  checkTokens(results, always, crashes);
  if (always) checkGone(results, crashes);
  // A fresh name gets a token above every token acknowledged, on any name.
  Client probe(endpoint, "probe");
  AcquireOptions o;
  o.ttl = 1s;
  auto fresh = retrying([&] { return probe.locks.acquire("fresh", o); });
  CHECK(fresh.token > maxToken(results));
  if (always) {
    auto byName = maxTokenByName(results);
    for (auto& [name, token] : byName) {
      auto v = retrying([&, n = name] { return probe.locks.validate(n, 0); });
      INFO(name << ": validate's current " << v.current << ", highest token acknowledged "
                << token);
      CHECK(v.current >= token);
    }
  }
  server.reset();
  CHECK(fatalStops == expectedFatal);
  CHECK(env.syncCount() > 0);
  WARN("fsync "
       << storage::toString(policy) << ": " << rounds << " crashes (" << torn << " torn, "
       << fatalStops << " after a storage failure) in "
       << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - began).count()
       << " ms; " << env.syncCount() << " fsyncs; " << inDoubtNames.size()
       << " acquires left in doubt");
}

// ---- (c): records and snapshots built by hand ----

std::string grantRecord(const std::string& name, const std::string& owner, uint64_t token,
                        int64_t expiresAtMs, uint64_t session = 0,
                        idl::LockMode mode = idl::LockMode::EXCLUSIVE) {
  capnp::MallocMessageBuilder m;
  auto g = m.initRoot<idl::LockLogRecord>().initGrant();
  g.setName(name);
  g.setOwner(owner);
  g.setToken(token);
  g.setMode(mode);
  g.setSession(session);
  g.setExpiresAtMs(expiresAtMs);
  return rpc::toRecord(m);
}

std::string tokensRecord(uint64_t tokens) {
  capnp::MallocMessageBuilder m;
  m.initRoot<idl::LockLogRecord>().setTokens(tokens);
  return rpc::toRecord(m);
}

std::string freeRecord(uint64_t token) {
  capnp::MallocMessageBuilder m;
  m.initRoot<idl::LockLogRecord>().setFree(token);
  return rpc::toRecord(m);
}

std::string toString(const crafted::Bytes& b) { return std::string(b.begin(), b.end()); }

// What replaying `bytes` threw: "" when it did not, "other: ..." when it threw
// anything but a StorageError.
template <typename Fn>
std::string refusal(Fn fn) {
  try {
    fn();
    return "";
  } catch (const storage::StorageError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("other: ") + e.what();
  }
}

std::string recordRefusal(const std::string& bytes) {
  return refusal([&] {
    lock::LockLogState state;
    lock::replayRecord(state, bytes);
  });
}

std::string snapshotRefusal(const std::string& bytes) {
  return refusal([&] {
    lock::LockLogState state;
    lock::replaySnapshot(state, bytes);
  });
}

// A data directory on `env` holding one log of these records, as if a
// previous process had written them.
void writeLog(storage::Env& env, const std::string& dir, const std::vector<std::string>& records) {
  env.createDirs(dir);
  auto file = env.openTruncate(storage::Journal::logPath(dir, "lock", 1));
  std::string bytes = storage::logFileHeader();
  for (auto& r : records) storage::appendRecord(bytes, r);
  file->append(bytes);
  file->sync();
  file->close();
  env.syncDir(dir);
}

// What starting the service over `records` threw ("" when it started).
std::string startRefusal(const std::vector<std::string>& records) {
  storage::FaultInjectionEnv env;
  auto options = faultOptions(storage::FsyncPolicy::always);
  writeLog(env, options.dataDir, records);
  return refusal([&] { InProcessLock server(env, tcpEndpoint(freePort()), options); });
}

}  // namespace

TEST_CASE("lock: 50 rounds of kill -9 under load never take a token back", "[lock][durability]") {
  const uint64_t seed = testSeed();
  INFO("seed " << seed << " (rerun with ZMESH_TEST_SEED)");
  TempDir dir;
  std::string endpoint = tcpEndpoint(freePort());
  std::string config = dir.path() + "/mesh.toml";
  {
    std::ofstream out(config);
    out << "[lock]\n"
        << "endpoint = \"" << endpoint << "\"\n"
        << "data_dir = \"" << dir.path() << "/lock\"\n"
        << "fsync = \"no\"\n"    // tokens are reserved in fsynced blocks under every policy
        << "token_block = 50\n"  // a reservation every 25 grants
        << "rewrite_after_bytes = 4096\n";  // snapshots (and their crash windows) too
  }
  std::optional<Process> server;
  auto start = [&] {
    server.emplace(lockArgv(config), dir.path() + "/lock.log");
    requireHealthy(*server, endpoint, 15s);
  };
  auto began = Clock::now();
  start();
  std::mt19937_64 rng(seed);
  Workload::Options wo;
  // About a restart's time: some calls in flight at a kill are resent to the
  // next incarnation and answered, others fail and are retried by the worker.
  wo.timeout = 150ms;
  Workload load(endpoint, seed, wo);
  std::vector<Crash> crashes;
  for (int round = 0; round < 50; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + rng() % 151));
    crashes.push_back({Clock::now(), {}});
    server->kill9();
    start();
    crashes.back().to = Clock::now();
  }
  std::this_thread::sleep_for(200ms);
  auto results = load.results();
  auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - began);
  checkTokens(results, true, crashes);
  checkGone(results, crashes);

  // After the last restart: a fresh name gets a token above every token
  // acknowledged, and validate remembers each name's last token (kill -9 keeps
  // the page cache, so even under fsync=no every acknowledged grant is there).
  Client probe(endpoint, "probe");
  AcquireOptions o;
  o.ttl = 1s;
  auto fresh = retrying([&] { return probe.locks.acquire("fresh", o); });
  CHECK(fresh.token > maxToken(results));
  for (auto& [name, token] : maxTokenByName(results)) {
    auto v = retrying([&, n = name] { return probe.locks.validate(n, 0); });
    INFO(name << ": validate's current " << v.current << ", highest token acknowledged " << token);
    CHECK(v.current >= token);
  }
  int status = server->stop(5s);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  WARN("50 kill -9 rounds in " << elapsed.count() << " ms");
}

TEST_CASE("lock: a held lease survives kill -9 with its remaining time", "[lock][durability]") {
  TempDir dir;
  std::string endpoint = tcpEndpoint(freePort());
  std::string config = dir.path() + "/mesh.toml";
  {
    std::ofstream out(config);
    out << "[lock]\nendpoint = \"" << endpoint << "\"\ndata_dir = \"" << dir.path()
        << "/lock\"\nfsync = \"always\"\n";
  }
  std::optional<Process> server;
  auto start = [&] {
    server.emplace(lockArgv(config), dir.path() + "/lock.log");
    requireHealthy(*server, endpoint, 15s);
  };
  auto ms = [](Clock::duration d) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  };
  start();

  // The holder's lease, a name freed before the crash, and a waiter queued.
  Lease lease, freed;
  Clock::time_point sent, acked;
  {
    Client holder(endpoint, "holder");
    AcquireOptions o;
    o.ttl = 60s;
    freed = holder.locks.acquire("freed", o);
    holder.locks.release(freed);
    sent = Clock::now();
    lease = holder.locks.acquire("held", o);
    acked = Clock::now();
  }
  REQUIRE(lease.token > freed.token);
  std::atomic<bool> waiterAnswered{false};
  std::thread waiter([&endpoint, &waiterAnswered] {
    // Not retryable: once its connection is gone it is not sent again, so the
    // next incarnation never hears of it.
    Client c(endpoint, "waiter");
    capnp::MallocMessageBuilder m;
    auto p = m.initRoot<idl::Lock::AcquireParams>();
    p.setName("held");
    p.setOwner("waiter");
    p.setTtlMs(1000);
    p.setWaitMs(20000);
    rpc::CallOptions options;
    options.timeout = 3s;
    auto reply = c.thread.channel(endpoint).callSync(
        capnp::typeId<idl::Lock>(), rpc::methodOrdinal(capnp::Schema::from<idl::Lock>(), "acquire"),
        rpc::toFrame(m), options);
    waiterAnswered = reply.status.ok();  // granted: the lease it waits for was lost
  });
  struct Join {
    std::thread& t;
    ~Join() {
      if (t.joinable()) t.join();
    }
  } joinWaiter{waiter};
  {
    Client probe(endpoint, "probe");
    auto deadline = Clock::now() + 5s;
    std::optional<LockInfo> info = probe.locks.inspect("held");
    while (info && info->waiters == 0 && Clock::now() < deadline) {
      std::this_thread::sleep_for(5ms);
      info = probe.locks.inspect("held");
    }
    REQUIRE(info);
    CHECK(info->waiters == 1);
  }
  std::this_thread::sleep_for(1500ms);  // time the lease must be seen to have lost
  server->kill9();
  start();

  {
    Client probe(endpoint, "probe");
    auto before = Clock::now();
    auto info = retrying([&] { return probe.locks.inspect("held"); });
    auto after = Clock::now();
    REQUIRE(info);
    REQUIRE(info->holders.size() == 1);
    CHECK(info->holders[0].owner == "holder");
    CHECK(info->holders[0].token == lease.token);
    CHECK(info->waiters == 0);  // waiters are dropped by a restart
    CHECK(info->lastToken == lease.token);
    // Its remaining time, not a new ttl: granted between `sent` and `acked`,
    // answered between `before` and `after` (ms rounding and the two clocks: slack).
    auto left = info->holders[0].expiresIn.count();
    INFO("expiresIn " << left << " ms; acquire sent " << ms(after - sent)
                      << " ms before the inspect's answer");
    CHECK(left >= 60000 - ms(after - sent) - 100);
    CHECK(left <= 60000 - ms(before - acked) + 100);
    CHECK(left < 59000);

    auto v = probe.locks.validate("held", lease.token);
    CHECK(v.valid);
    CHECK(v.current == lease.token);
    auto f = probe.locks.validate("freed", freed.token);
    CHECK_FALSE(f.valid);
    CHECK(f.current == freed.token);

    // Another owner cannot take it.
    AcquireOptions o;
    o.ttl = 1s;
    o.wait = 200ms;
    CHECK_FALSE(probe.locks.tryAcquire("held", o));
  }
  waiter.join();
  CHECK_FALSE(waiterAnswered);

  // The holder renews it with its token; the renewal survives a crash too.
  Clock::time_point renewSent;
  {
    Client holder(endpoint, "holder");
    renewSent = Clock::now();
    retrying([&] {
      holder.locks.renew(lease, 30s);
      return 0;
    });
  }
  server->kill9();
  start();
  {
    Client probe(endpoint, "probe");
    auto info = retrying([&] { return probe.locks.inspect("held"); });
    auto after = Clock::now();
    REQUIRE(info);
    REQUIRE(info->holders.size() == 1);
    CHECK(info->holders[0].token == lease.token);
    auto left = info->holders[0].expiresIn.count();
    INFO("expiresIn " << left << " ms after a renew of 30 s sent " << ms(after - renewSent)
                      << " ms before");
    CHECK(left <= 30000 + 100);
    CHECK(left >= 30000 - ms(after - renewSent) - 100);
  }

  // ...and releases it with its token; the release survives a crash.
  {
    Client holder(endpoint, "holder");
    retrying([&] {
      holder.locks.release(lease);
      return 0;
    });
  }
  server->kill9();
  start();
  {
    Client probe(endpoint, "probe");
    CHECK_FALSE(retrying([&] { return probe.locks.inspect("held"); }));
    auto v = probe.locks.validate("held", lease.token);
    CHECK_FALSE(v.valid);
    CHECK(v.current == lease.token);
    AcquireOptions o;
    o.ttl = 1s;
    auto next = probe.locks.acquire("held", o);
    CHECK(next.token > lease.token);
    probe.locks.release(next);
  }
  int status = server->stop(5s);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("lock: a waiting acquire in doubt is not granted once its owner's retry was refused",
          "[lock][durability]") {
  // After a crash an acquire whose client gave up (in doubt) may still reach
  // the next incarnation, and wait there. Its client retries — and "one that
  // already waits keeps its place and the older call is answered CONFLICT"
  // (idl/lock.capnp). A retry that tries once and is refused must leave the
  // owner neither holding nor waiting: else the older call is granted a lock
  // nobody will use, and the owner's next acquire is handed back a lease it
  // was told it did not get (an old token, below tokens issued since).
  spdlog::set_level(spdlog::level::err);
  storage::FaultInjectionEnv env;
  const std::string endpoint = tcpEndpoint(freePort());
  InProcessLock server(env, endpoint, faultOptions(storage::FsyncPolicy::always));
  Client holder(endpoint, "holder"), owner(endpoint, "owner");
  AcquireOptions o;
  o.ttl = 10s;
  auto held = holder.locks.acquire("n", o);

  // The call in doubt, waiting in the queue; its client no longer listens.
  capnp::MallocMessageBuilder m;
  auto p = m.initRoot<idl::Lock::AcquireParams>();
  p.setName("n");
  p.setOwner("owner");
  p.setTtlMs(10000);
  p.setWaitMs(5000);
  rpc::CallOptions options;
  options.timeout = 10s;
  auto inDoubt = owner.thread.channel(endpoint).call(
      capnp::typeId<idl::Lock>(), rpc::methodOrdinal(capnp::Schema::from<idl::Lock>(), "acquire"),
      rpc::toFrame(m), options);
  auto deadline = Clock::now() + 5s;
  auto info = holder.locks.inspect("n");
  while (info && info->waiters == 0 && Clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
    info = holder.locks.inspect("n");
  }
  REQUIRE(info);
  REQUIRE(info->waiters == 1);

  // The retry tries once, and is refused: the lock is held.
  CHECK_FALSE(owner.locks.tryAcquire("n", o));
  info = holder.locks.inspect("n");
  REQUIRE(info);
  CHECK(info->waiters == 0);
  holder.locks.release(held);
  REQUIRE(inDoubt.wait_for(6s) == std::future_status::ready);
  auto reply = inDoubt.get();
  CHECK(rpc::statusName(reply.status.code) == "CONFLICT");
  auto after = holder.locks.inspect("n");
  CHECK((!after || after->holders.empty() || after->holders[0].owner != "owner"));
}

TEST_CASE("lock on FaultInjectionEnv: crashes never take a token back under fsync no",
          "[lock][durability]") {
  crashRounds(storage::FsyncPolicy::no, 30);
}

TEST_CASE("lock on FaultInjectionEnv: crashes never take a token back under fsync everysec",
          "[lock][durability]") {
  crashRounds(storage::FsyncPolicy::everysec, 30);
}

TEST_CASE("lock on FaultInjectionEnv: under fsync always acknowledged leases and releases survive",
          "[lock][durability]") {
  crashRounds(storage::FsyncPolicy::always, 30);
}

TEST_CASE("lock replay: a well-formed history and snapshot replay as written",
          "[lock][durability]") {
  lock::LockLogState state;
  lock::replayRecord(state, tokensRecord(100));
  {
    capnp::MallocMessageBuilder m;
    auto o = m.initRoot<idl::LockLogRecord>().initOpenSession();
    o.setId(7);
    o.setTimeoutMs(5000);
    lock::replayRecord(state, rpc::toRecord(m));
  }
  lock::replayRecord(state, grantRecord("x", "alice", 5, 1000));
  lock::replayRecord(state, grantRecord("y", "bob", 6, 2000, 7, idl::LockMode::SHARED));
  {
    capnp::MallocMessageBuilder m;
    auto r = m.initRoot<idl::LockLogRecord>().initRenew();
    r.setToken(5);
    r.setExpiresAtMs(3000);
    lock::replayRecord(state, rpc::toRecord(m));
  }
  lock::replayRecord(state, freeRecord(6));
  {
    capnp::MallocMessageBuilder m;
    m.initRoot<idl::LockLogRecord>().setCloseSession(7);
    lock::replayRecord(state, rpc::toRecord(m));
  }
  lock::replayRecord(state, tokensRecord(50));  // a bound never moves down
  CHECK(state.tokens == 100);
  REQUIRE(state.leases.size() == 1);
  CHECK(state.leases.at(5).name == "x");
  CHECK(state.leases.at(5).owner == "alice");
  CHECK(state.leases.at(5).expiresAt == 3000);
  CHECK(state.sessions.empty());
  REQUIRE(state.retained.size() == 1);
  CHECK(state.retained.front() == std::make_pair(std::string("y"), uint64_t{6}));

  capnp::MallocMessageBuilder m;
  auto s = m.initRoot<idl::LockSnapshot>();
  s.setTokens(200);
  auto l = s.initLeases(1)[0];
  l.setName("z");
  l.setOwner("carol");
  l.setToken(150);
  l.setMode(idl::LockMode::SHARED);
  l.setExpiresAtMs(4000);
  auto x = s.initSessions(1)[0];
  x.setId(9);
  x.setTimeoutMs(2000);
  auto r = s.initRetained(1)[0];
  r.setName("w");
  r.setLastToken(120);
  lock::LockLogState fromSnapshot;
  lock::replaySnapshot(fromSnapshot, rpc::toRecord(m));
  CHECK(fromSnapshot.tokens == 200);
  REQUIRE(fromSnapshot.leases.count(150) == 1);
  CHECK(fromSnapshot.leases.at(150).owner == "carol");
  CHECK(fromSnapshot.leases.at(150).mode == lock::Mode::shared);
  CHECK(fromSnapshot.leases.at(150).expiresAt == 4000);
  CHECK(fromSnapshot.sessions.at(9) == 2000);
  REQUIRE(fromSnapshot.retained.size() == 1);
  CHECK(fromSnapshot.retained.front().second == 120);
}

TEST_CASE("lock replay: a log record with a pointer of the wrong kind is refused by name",
          "[lock][durability]") {
  for (unsigned index : {0u, 1u}) {
    for (auto damage : {crafted::Damage::kStructPointer, crafted::Damage::kCapability,
                        crafted::Damage::kUnterminatedText}) {
      capnp::MallocMessageBuilder m;
      auto g = m.initRoot<idl::LockLogRecord>().initGrant();
      g.setName("name");
      g.setOwner("owner");
      g.setToken(5);
      INFO(crafted::name(damage) << " in pointer " << index);
      auto why = recordRefusal(toString(crafted::damaged(m, index, damage)));
      CHECK_THAT(why, Contains("lock journal") && Contains("log record") &&
                          Contains(index == 0 ? "grant.name" : "grant.owner"));
    }
  }
  // Damage the bounds check sees: refused when the record is opened.
  for (auto damage : {crafted::Damage::kFarToMissingSegment, crafted::Damage::kHugeList}) {
    capnp::MallocMessageBuilder m;
    auto g = m.initRoot<idl::LockLogRecord>().initGrant();
    g.setName("name");
    g.setOwner("owner");
    INFO(crafted::name(damage));
    CHECK_THAT(recordRefusal(toString(crafted::damaged(m, 0, damage))), Contains("lock journal"));
  }
  // Another struct's bytes: a LockInfo whose lastToken reads as the tag of a
  // grant, whose owner is then its list of holders.
  {
    capnp::MallocMessageBuilder m;
    auto info = m.initRoot<idl::LockInfo>();
    info.setName("name");
    info.initHolders(1)[0].setOwner("someone");
    info.setLastToken(1);  // the union's tag: grant
    CHECK_THAT(recordRefusal(rpc::toRecord(m)),
               Contains("lock journal") && Contains("log record") && Contains("grant.owner"));
  }
  // The root a list, not a struct.
  CHECK_THAT(recordRefusal(toString(crafted::listAsRoot())),
             Contains("lock journal") && Contains("log record"));
}

TEST_CASE("lock replay: a snapshot with a pointer of the wrong kind is refused by name",
          "[lock][durability]") {
  auto build = [](capnp::MallocMessageBuilder& m) {
    auto s = m.initRoot<idl::LockSnapshot>();
    s.setTokens(10);
    auto l = s.initLeases(1)[0];
    l.setName("a");
    l.setOwner("o");
    l.setToken(3);
    s.initSessions(1)[0].setId(4);
    s.initRetained(1)[0].setName("b");
    return s;
  };
  for (unsigned index : {0u, 1u, 2u}) {
    for (auto damage : {crafted::Damage::kStructPointer, crafted::Damage::kCapability}) {
      capnp::MallocMessageBuilder m;
      build(m);
      INFO(crafted::name(damage) << " in pointer " << index);
      const char* field = index == 0   ? "snapshot.leases"
                          : index == 1 ? "snapshot.sessions"
                                       : "snapshot.retained";
      CHECK_THAT(snapshotRefusal(toString(crafted::damaged(m, index, damage))),
                 Contains("lock journal") && Contains(field));
    }
  }
  // A lease whose name is a struct, and a retained name that is a list of structs.
  {
    capnp::MallocMessageBuilder m;
    auto s = build(m);
    capnp::toAny(s.getLeases()[0]).getPointerSection()[0].initAs<idl::LockSnapshot::Session>();
    CHECK_THAT(snapshotRefusal(rpc::toRecord(m)),
               Contains("lock journal") && Contains("snapshot.leases[0].name"));
  }
  {
    capnp::MallocMessageBuilder m;
    auto s = build(m);
    capnp::toAny(s.getRetained()[0])
        .getPointerSection()[0]
        .initAs<capnp::List<idl::LockSnapshot::Session>>(2);
    CHECK_THAT(snapshotRefusal(rpc::toRecord(m)),
               Contains("lock journal") && Contains("snapshot.retained[0].name"));
  }
}

TEST_CASE("lock replay: truncated or padded records and snapshots are refused",
          "[lock][durability]") {
  const std::string record = grantRecord("some-name", "some-owner", 42, 123456);
  for (size_t n = 0; n < record.size(); ++n) {
    INFO("log record cut to " << n << " of " << record.size() << " bytes");
    CHECK_THAT(recordRefusal(record.substr(0, n)), Contains("lock journal"));
  }
  CHECK_THAT(recordRefusal(record + std::string(8, '\0')), Contains("lock journal"));

  capnp::MallocMessageBuilder m;
  auto s = m.initRoot<idl::LockSnapshot>();
  s.setTokens(10);
  s.initLeases(2)[1].setName("n");
  s.initRetained(1)[0].setName("r");
  const std::string snapshot = rpc::toRecord(m);
  for (size_t n = 0; n < snapshot.size(); ++n) {
    INFO("snapshot cut to " << n << " of " << snapshot.size() << " bytes");
    CHECK_THAT(snapshotRefusal(snapshot.substr(0, n)), Contains("lock journal"));
  }
}

TEST_CASE("lock replay: a log record of a kind this version does not know is refused",
          "[lock][durability]") {
  // A grant whose union tag (data bits 64-80) names a member that does not
  // exist: skipping it could forget a lease a newer version wrote.
  std::string bytes = grantRecord("name", "owner", 5, 1000);
  // One segment: the segment table's word, the root pointer, then the data.
  const size_t tagAt = 8 * (1 + 1 + 1);
  REQUIRE(static_cast<uint8_t>(bytes[tagAt]) == 1);
  bytes[tagAt] = 9;
  CHECK_THAT(recordRefusal(bytes), Contains("lock journal"));
}

TEST_CASE("lock recovery: a log that reads but cannot be is refused, one that can is restored",
          "[lock][durability]") {
  spdlog::set_level(spdlog::level::err);
  const int64_t later = rpc::unixMillis() + 60000;
  SECTION("two exclusive holders of one name") {
    CHECK_THAT(startRefusal({tokensRecord(100), grantRecord("x", "a", 5, later),
                             grantRecord("x", "b", 6, later)}),
               Contains("lock journal"));
  }
  SECTION("a name the service refuses") {
    CHECK_THAT(startRefusal({tokensRecord(100), grantRecord("bad name!", "a", 5, later)}),
               Contains("lock journal"));
  }
  SECTION("an owner the service refuses") {
    CHECK_THAT(startRefusal({tokensRecord(100), grantRecord("x", "", 5, later)}),
               Contains("lock journal"));
  }
  SECTION("a record that does not read") {
    capnp::MallocMessageBuilder m;
    auto g = m.initRoot<idl::LockLogRecord>().initGrant();
    g.setName("x");
    g.setOwner("a");
    CHECK_THAT(startRefusal({tokensRecord(100),
                             toString(crafted::damaged(m, 0, crafted::Damage::kStructPointer))}),
               Contains("lock journal") && Contains("grant.name"));
  }
  SECTION("a name acquired and released twice since the last snapshot") {
    storage::FaultInjectionEnv env;
    auto options = faultOptions(storage::FsyncPolicy::always);
    writeLog(env, options.dataDir,
             {tokensRecord(100), grantRecord("x", "a", 5, later), freeRecord(5),
              grantRecord("x", "b", 6, later), freeRecord(6)});
    const std::string endpoint = tcpEndpoint(freePort());
    std::unique_ptr<InProcessLock> server;
    REQUIRE_NOTHROW(server = std::make_unique<InProcessLock>(env, endpoint, options));
    Client probe(endpoint, "probe");
    CHECK_FALSE(probe.locks.inspect("x"));
    CHECK(probe.locks.validate("x", 6).current == 6);
  }
  SECTION("a name released, then held again") {
    storage::FaultInjectionEnv env;
    auto options = faultOptions(storage::FsyncPolicy::always);
    writeLog(env, options.dataDir,
             {tokensRecord(100), grantRecord("x", "a", 5, later), freeRecord(5),
              grantRecord("x", "b", 6, later)});
    const std::string endpoint = tcpEndpoint(freePort());
    std::unique_ptr<InProcessLock> server;
    REQUIRE_NOTHROW(server = std::make_unique<InProcessLock>(env, endpoint, options));
    Client probe(endpoint, "probe");
    auto info = probe.locks.inspect("x");
    REQUIRE(info);
    REQUIRE(info->holders.size() == 1);
    CHECK(info->holders[0].token == 6);
    auto v = probe.locks.validate("x", 6);
    CHECK(v.valid);
    CHECK(v.current == 6);
  }
  SECTION("a well-formed log: leases with their time left, tokens from the bound") {
    storage::FaultInjectionEnv env;
    auto options = faultOptions(storage::FsyncPolicy::always);
    writeLog(env, options.dataDir,
             {tokensRecord(100), grantRecord("kept", "alice", 5, later),
              grantRecord("ran-out", "bob", 6, rpc::unixMillis() - 1000),
              grantRecord("freed", "carol", 7, later), freeRecord(7)});
    const std::string endpoint = tcpEndpoint(freePort());
    InProcessLock server(env, endpoint, options);
    Client probe(endpoint, "probe");
    auto kept = probe.locks.inspect("kept");
    REQUIRE(kept);
    REQUIRE(kept->holders.size() == 1);
    CHECK(kept->holders[0].owner == "alice");
    CHECK(kept->holders[0].token == 5);
    CHECK(kept->holders[0].expiresIn.count() > 55000);
    CHECK(kept->holders[0].expiresIn.count() <= 60000);
    CHECK_FALSE(probe.locks.inspect("ran-out"));  // expired while the service was down
    CHECK_FALSE(probe.locks.inspect("freed"));
    CHECK(probe.locks.validate("freed", 7).current == 7);
    AcquireOptions o;
    o.ttl = 1s;
    CHECK(probe.locks.acquire("new", o).token >= 100);
  }
}
