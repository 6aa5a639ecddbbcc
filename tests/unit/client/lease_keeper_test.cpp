// The lease keeper's decisions on an injected clock — when to renew, lost at
// expiry minus the drift allowance, lost on a refusal, exactly one report per
// lease under any order of answers — then the keeper's threads over fake calls.
#include "zmesh/lease_keeper.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

using namespace zmesh;
using namespace std::chrono_literals;
using Clock = LeaseKeeperCore::Clock;
using Kind = LeaseLoss::Kind;
using std::chrono::milliseconds;

namespace {

const Clock::time_point t0 = Clock::time_point{} + 1h;

Lease leaseOf(const std::string& name, Clock::time_point expiry, milliseconds ttl,
              uint64_t session = 0) {
  Lease l;
  l.name = name;
  l.owner = "me";
  l.token = 7;
  l.expiry = expiry;
  l.ttl = ttl;
  l.session = session;
  return l;
}

// ttl 3 s, allowance 3 s × 0.01 + 5 ms = 35 ms: deadline 2965 ms after the
// grant; renewed once a third of that is left.
LeaseKeeperOptions plain() {
  LeaseKeeperOptions o;
  o.renewWhenLeft = 1.0 / 3;
  o.driftFactor = 0.01;
  o.driftFixed = 5ms;
  o.retryEvery = 100ms;
  o.callTimeout = 5s;
  return o;
}

}  // namespace

TEST_CASE("LeaseKeeperCore: allowance deadline and renewal time", "[keeper]") {
  LeaseKeeperCore core(plain());
  CHECK(core.allowance(3s) == 35ms);
  CHECK(core.allowance(10s) == 105ms);
  CHECK(core.allowance(0ms) == 5ms);
  CHECK(core.deadline(t0 + 3s, 3s) == t0 + 2965ms);
  // Two thirds of the time to the deadline go by, then it renews.
  CHECK(core.renewAt(t0 + 3000ms, t0) == t0 + 2000ms);
  CHECK(core.renewAt(t0 + 300ms, t0 + 150ms) == t0 + 250ms);
  // A deadline already passed: now (poll() reports it lost first).
  CHECK(core.renewAt(t0, t0 + 1s) == t0 + 1s);

  LeaseKeeperOptions half = plain();
  half.renewWhenLeft = 0.5;
  CHECK(LeaseKeeperCore(half).renewAt(t0 + 1s, t0) == t0 + 500ms);
  LeaseKeeperOptions nonsense = plain();
  nonsense.renewWhenLeft = 7;  // clamped to 1: renew at once
  CHECK(LeaseKeeperCore(nonsense).renewAt(t0 + 1s, t0) == t0);
}

TEST_CASE("LeaseKeeperCore: renews at a third left and again after each renewal", "[keeper]") {
  LeaseKeeperCore core(plain());
  auto id = core.keep(leaseOf("a", t0 + 3s, 3s), t0);
  REQUIRE(id);
  CHECK(*id == 1);
  const auto first = t0 + std::chrono::duration_cast<Clock::duration>(
                              std::chrono::duration<double, std::milli>(2965.0 * 2 / 3));
  CHECK(core.nextDue() == first);
  CHECK(core.poll(t0).wakeAt == first);
  CHECK_FALSE(core.take(first - 1ns));
  auto job = core.take(first);
  REQUIRE(job);
  CHECK(job->id == *id);
  CHECK(job->lease.name == "a");
  // The call must be answered before the deadline to count.
  CHECK(job->timeout == std::chrono::ceil<milliseconds>(t0 + 2965ms - first));
  // In flight: not taken again, and poll wakes at the deadline.
  CHECK_FALSE(core.take(first + 1ms));
  CHECK(core.nextDue() == Clock::time_point::max());
  CHECK(core.poll(first).wakeAt == t0 + 2965ms);

  // Answered 10 ms later: a new expiry from the send, a new schedule.
  auto renewedAt = first + 10ms;
  Lease answered = job->lease;
  answered.expiry = first + 3s;
  core.renewed(job->id, answered, renewedAt);
  CHECK(core.lease(*id)->expiry == first + 3s);
  const auto newDeadline = first + 2965ms;
  CHECK(core.poll(renewedAt).wakeAt == core.renewAt(newDeadline, renewedAt));
  CHECK(core.poll(newDeadline - 1ns).lost.empty());  // the old deadline passed: still kept

  // Many renewals in a row: kept for many ttls, never reported.
  auto now = renewedAt;
  for (int i = 0; i < 50; ++i) {
    now = core.nextDue();
    auto p = core.poll(now);
    REQUIRE(p.lost.empty());
    auto j = core.take(now);
    REQUIRE(j);
    j->lease.expiry = now + 3s;
    core.renewed(j->id, j->lease, now + 5ms);
  }
  CHECK(now > t0 + 50s);
  CHECK(core.size() == 1);
}

TEST_CASE("LeaseKeeperCore: lost at expiry minus the allowance without a renewal", "[keeper]") {
  LeaseKeeperCore core(plain());
  auto id = *core.keep(leaseOf("a", t0 + 3s, 3s), t0);
  const auto deadline = t0 + 2965ms;
  SECTION("nothing ever answered") {
    auto job = core.take(core.nextDue());
    REQUIRE(job);
  }
  SECTION("never even taken") {}
  SECTION("failing until the deadline") {
    auto now = core.nextDue();
    int attempts = 0;
    while (auto job = core.take(now)) {
      ++attempts;
      core.failed(job->id, now + 20ms);
      now = core.nextDue();
      if (now >= deadline) break;
    }
    // One attempt every retryEvery (100 ms) plus the 20 ms of each call.
    CHECK(attempts == 9);
  }
  CHECK(core.poll(deadline - 1ns).lost.empty());
  CHECK(core.lease(id));
  auto p = core.poll(deadline);
  REQUIRE(p.lost.size() == 1);
  CHECK(p.lost[0].id == id);
  CHECK(p.lost[0].lease.name == "a");
  CHECK(p.lost[0].why.kind == Kind::kDeadline);
  // Exactly once, then forgotten: nothing kept, nothing to renew.
  CHECK(core.poll(deadline + 1s).lost.empty());
  CHECK_FALSE(core.lease(id));
  CHECK_FALSE(core.forget(id));
  CHECK_FALSE(core.take(deadline + 1s));
  CHECK(core.size() == 0);
  CHECK(core.poll(deadline + 2s).wakeAt == Clock::time_point::max());
}

TEST_CASE("LeaseKeeperCore: a renewal answered at the deadline is too late", "[keeper]") {
  LeaseKeeperCore core(plain());
  auto id = *core.keep(leaseOf("a", t0 + 3s, 3s), t0);
  auto job = core.take(core.nextDue());
  REQUIRE(job);
  job->lease.expiry = t0 + 5s;
  core.renewed(job->id, job->lease, t0 + 2965ms);
  auto p = core.poll(t0 + 2965ms);
  REQUIRE(p.lost.size() == 1);
  CHECK(p.lost[0].id == id);
  CHECK(p.lost[0].why.kind == Kind::kDeadline);
}

TEST_CASE("LeaseKeeperCore: lost at the deadline while a renewal is in flight", "[keeper]") {
  LeaseKeeperCore core(plain());
  auto id = *core.keep(leaseOf("a", t0 + 3s, 3s), t0);
  auto job = core.take(core.nextDue());
  REQUIRE(job);
  auto p = core.poll(t0 + 2965ms);
  REQUIRE(p.lost.size() == 1);
  CHECK(p.lost[0].why.kind == Kind::kDeadline);
  // The late answer, whatever it is, changes nothing and reports nothing.
  job->lease.expiry = t0 + 6s;
  core.renewed(id, job->lease, t0 + 2966ms);
  core.refused(id, StatusCode::CONFLICT, "late");
  core.failed(id, t0 + 2966ms);
  CHECK(core.poll(t0 + 10s).lost.empty());
  CHECK_FALSE(core.take(t0 + 10s));
}

TEST_CASE("LeaseKeeperCore: lost on a refusal at once and only once", "[keeper]") {
  LeaseKeeperCore core(plain());
  auto a = *core.keep(leaseOf("a", t0 + 3s, 3s), t0);
  auto b = *core.keep(leaseOf("b", t0 + 30s, 30s), t0);
  auto job = core.take(core.nextDue());
  REQUIRE(job);
  CHECK(job->id == a);  // the earliest due first
  const auto now = job->lease.expiry - 1s;
  core.refused(job->id, StatusCode::CONFLICT, "not the holder");
  // Reported at the next poll, long before its deadline; b goes on.
  auto p = core.poll(now);
  REQUIRE(p.lost.size() == 1);
  CHECK(p.lost[0].id == a);
  CHECK(p.lost[0].why.kind == Kind::kRefused);
  CHECK(p.lost[0].why.code == StatusCode::CONFLICT);
  CHECK(p.lost[0].why.message == "not the holder");
  CHECK(core.poll(now).lost.empty());
  CHECK(core.lease(b));
  CHECK_FALSE(core.lease(a));
  // A second report of the same call changes nothing.
  core.refused(a, StatusCode::CONFLICT, "again");
  CHECK(core.poll(now + 1ms).lost.empty());
  // A refusal of a call never taken is nobody's.
  core.refused(b, StatusCode::CONFLICT, "not taken");
  CHECK(core.poll(now + 2ms).lost.empty());
  CHECK(core.lease(b));
}

TEST_CASE("LeaseKeeperCore: forget stops keeping and ignores the answer in flight", "[keeper]") {
  LeaseKeeperCore core(plain());
  auto id = *core.keep(leaseOf("a", t0 + 3s, 3s), t0);
  auto job = core.take(core.nextDue());
  REQUIRE(job);
  auto kept = core.forget(id);
  REQUIRE(kept);
  CHECK(kept->name == "a");
  core.refused(id, StatusCode::CONFLICT, "late");
  CHECK(core.poll(t0 + 10s).lost.empty());
  CHECK(core.size() == 0);
  CHECK_FALSE(core.forget(id));
}

TEST_CASE("LeaseKeeperCore: bounded by maxLeases", "[keeper]") {
  auto o = plain();
  o.maxLeases = 3;
  LeaseKeeperCore core(o);
  for (int i = 0; i < 3; ++i) CHECK(core.keep(leaseOf("a", t0 + 3s, 3s), t0));
  CHECK_FALSE(core.keep(leaseOf("a", t0 + 3s, 3s), t0));
  core.forget(2);
  CHECK(core.keep(leaseOf("a", t0 + 3s, 3s), t0) == 4u);
}

TEST_CASE("LeaseKeeperCore: a call's timeout ends at the deadline within callTimeout", "[keeper]") {
  auto o = plain();
  o.callTimeout = 200ms;
  LeaseKeeperCore core(o);
  core.keep(leaseOf("long", t0 + 60s, 60s), t0);
  auto job = core.take(core.nextDue());
  REQUIRE(job);
  CHECK(job->timeout == 200ms);  // capped
  LeaseKeeperCore tight(plain());
  tight.keep(leaseOf("short", t0 + 40ms, 40ms), t0);
  // ttl 40 ms: deadline 40 - 0.4 - 5 = 34.6 ms; renewed at 23.07 ms.
  auto j = tight.take(tight.nextDue());
  REQUIRE(j);
  CHECK(j->timeout == 12ms);  // 11.53 ms, rounded up
}

TEST_CASE("LeaseKeeperCore: a session ends its leases", "[keeper]") {
  auto o = plain();
  o.session = 42;
  o.sessionTimeout = 3s;
  LeaseKeeperCore core(o);
  core.startSession(t0);
  CHECK(core.sessionAlive());
  auto tied = *core.keep(leaseOf("tied", t0 + 30s, 30s, 42), t0);
  auto free = *core.keep(leaseOf("free", t0 + 30s, 30s), t0);
  // The first heartbeat at once, then at a third left of its deadline.
  auto hb = core.take(t0);
  REQUIRE(hb);
  CHECK(hb->id == LeaseKeeperCore::kSession);
  CHECK(hb->lease.session == 42);
  core.heartbeated(t0, 3s, t0 + 1ms);
  CHECK(core.nextDue() == core.renewAt(t0 + 2965ms, t0 + 1ms));

  SECTION("refused: NOT_FOUND") {
    auto again = core.take(core.nextDue());
    REQUIRE(again);
    core.refused(again->id, StatusCode::NOT_FOUND, "no such session");
    auto p = core.poll(core.nextDue() + 1ms);
    REQUIRE(p.lost.size() == 1);
    CHECK(p.lost[0].id == tied);
    CHECK(p.lost[0].why.kind == Kind::kSessionEnded);
    CHECK(p.lost[0].why.code == StatusCode::NOT_FOUND);
  }
  SECTION("its deadline passes") {
    auto again = core.take(core.nextDue());
    REQUIRE(again);
    core.failed(again->id, t0 + 2s);
    CHECK(core.poll(t0 + 2965ms - 1ns).lost.empty());
    auto p = core.poll(t0 + 2965ms);
    REQUIRE(p.lost.size() == 1);
    CHECK(p.lost[0].id == tied);
    CHECK(p.lost[0].why.kind == Kind::kSessionEnded);
  }
  CHECK_FALSE(core.sessionAlive());
  CHECK(core.lease(free));
  // A lease of the ended session kept later is lost at once.
  auto late = *core.keep(leaseOf("late", t0 + 30s, 30s, 42), t0 + 4s);
  auto p = core.poll(t0 + 4s);
  REQUIRE(p.lost.size() == 1);
  CHECK(p.lost[0].id == late);
  // No heartbeat after the end.
  while (auto job = core.take(core.nextDue())) CHECK(job->id != LeaseKeeperCore::kSession);
}

TEST_CASE("LeaseKeeperCore: random answers report each lease exactly once", "[keeper]") {
  // Many leases, random answers (renewed, refused, failed, silence, late) at
  // random times: every lease is reported at most once, never before its
  // deadline unless refused, and none outlives its deadline unreported.
  std::mt19937 random(12345);
  for (int run = 0; run < 200; ++run) {
    auto o = plain();
    o.maxLeases = 20;
    LeaseKeeperCore core(o);
    std::map<LeaseKeeperCore::Id, Clock::time_point> deadlines;
    std::set<LeaseKeeperCore::Id> reported, refused;
    std::vector<LeaseKeeperCore::Renewal> inFlight;
    auto now = t0;
    for (int i = 0; i < 10; ++i) {
      auto ttl = milliseconds(50 + random() % 1000);
      auto id = *core.keep(leaseOf("l" + std::to_string(i), now + ttl, ttl), now);
      deadlines[id] = core.deadline(now + ttl, ttl);
    }
    for (int step = 0; step < 400; ++step) {
      now += std::chrono::microseconds(random() % 20000);
      auto p = core.poll(now);
      for (auto& l : p.lost) {
        INFO("run " << run << " step " << step);
        REQUIRE(reported.insert(l.id).second);
        if (l.why.kind == Kind::kRefused)
          REQUIRE(refused.count(l.id) == 1);
        else
          REQUIRE(now >= deadlines[l.id]);
      }
      // Nothing past its deadline is left unreported.
      for (auto& [id, d] : deadlines)
        if (now >= d) REQUIRE(reported.count(id) == 1);
      while (auto job = core.take(now)) {
        REQUIRE(reported.count(job->id) == 0);
        inFlight.push_back(*job);
      }
      // Answer some of what is in flight.
      for (size_t i = 0; i < inFlight.size();) {
        if (random() % 3 != 0) {
          ++i;
          continue;
        }
        auto job = inFlight[i];
        inFlight.erase(inFlight.begin() + static_cast<long>(i));
        switch (random() % 4) {
          case 0: {
            auto ttl = job.lease.ttl;
            job.lease.expiry = now + ttl;
            core.renewed(job.id, job.lease, now);
            if (now < deadlines[job.id]) deadlines[job.id] = core.deadline(now + ttl, ttl);
            break;
          }
          case 1:
            if (reported.count(job.id) == 0 && now < deadlines[job.id]) refused.insert(job.id);
            core.refused(job.id, StatusCode::CONFLICT, "no");
            break;
          case 2:
            core.failed(job.id, now);
            break;
          default:
            break;  // never answered
        }
      }
    }
    // In the end everything is reported once: nothing is kept forever.
    auto p = core.poll(now + 1h);
    for (auto& l : p.lost) REQUIRE(reported.insert(l.id).second);
    CHECK(reported.size() == 10);
    CHECK(core.size() == 0);
  }
}

// ---- LeaseKeeper: the threads, over fake calls on the real clock ----

namespace {

struct Recorder {
  std::mutex mutex;
  std::map<std::string, std::vector<LeaseLoss>> lost;
  std::map<std::string, Clock::time_point> when;
  LeaseKeeper::OnLost callback() {
    return [this](const Lease& l, const LeaseLoss& why) {
      std::lock_guard lock(mutex);
      lost[l.name].push_back(why);
      when[l.name] = Clock::now();
    };
  }
  size_t count(const std::string& name) {
    std::lock_guard lock(mutex);
    return lost.count(name) ? lost[name].size() : 0;
  }
};

// Waits (bounded) until `done` holds.
template <typename F>
bool eventually(F done, milliseconds timeout = 5s) {
  auto until = Clock::now() + timeout;
  while (!done()) {
    if (Clock::now() > until) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

}  // namespace

TEST_CASE("LeaseKeeper: a healthy service keeps a lease for many ttls", "[keeper]") {
  Recorder rec;
  std::atomic<int> renewals{0};
  LeaseKeeper::Calls calls;
  calls.renew = [&](Lease& l, milliseconds) {
    ++renewals;
    l.expiry = Clock::now() + l.ttl;
  };
  LeaseKeeper keeper(calls, rec.callback(), plain());
  auto id = keeper.keep(leaseOf("a", Clock::now() + 150ms, 150ms));
  std::this_thread::sleep_for(1s);
  CHECK(rec.count("a") == 0);
  CHECK(renewals >= 6);  // about every 100 ms
  auto l = keeper.lease(id);
  REQUIRE(l);
  CHECK(l->expiry > Clock::now());
  CHECK(keeper.forget(id));
  CHECK(keeper.size() == 0);
}

TEST_CASE("LeaseKeeper: an unreachable service loses the lease before it ends", "[keeper]") {
  Recorder rec;
  LeaseKeeper::Calls calls;
  std::atomic<int> attempts{0};
  calls.renew = [&](Lease&, milliseconds timeout) {
    ++attempts;
    std::this_thread::sleep_for(timeout);
    throw RpcError(StatusCode::DEADLINE_EXCEEDED, "no answer");
  };
  LeaseKeeper keeper(calls, rec.callback(), plain());
  const auto start = Clock::now();
  const auto expiry = start + 400ms;
  keeper.keep(leaseOf("a", expiry, 400ms));
  REQUIRE(eventually([&] { return rec.count("a") > 0; }));
  const auto deadline = expiry - 9ms;  // 400 ms × 0.01 + 5 ms
  std::lock_guard lock(rec.mutex);
  CHECK(rec.when["a"] >= deadline);
  CHECK(rec.when["a"] < expiry + 50ms);  // a scheduling margin on a busy machine
  CHECK(rec.lost["a"][0].kind == Kind::kDeadline);
  CHECK(attempts >= 1);
}

TEST_CASE("LeaseKeeper: a refusal is reported once and ends renewals", "[keeper]") {
  Recorder rec;
  LeaseKeeper::Calls calls;
  std::atomic<int> attempts{0};
  calls.renew = [&](Lease&, milliseconds) {
    ++attempts;
    throw RpcError(StatusCode::CONFLICT, "not the holder");
  };
  LeaseKeeper keeper(calls, rec.callback(), plain());
  const auto expiry = Clock::now() + 300ms;
  keeper.keep(leaseOf("a", expiry, 300ms));
  REQUIRE(eventually([&] { return rec.count("a") > 0; }));
  {
    std::lock_guard lock(rec.mutex);
    CHECK(rec.when["a"] < expiry);  // at the first renewal, ~200 ms in
    CHECK(rec.lost["a"][0].kind == Kind::kRefused);
    CHECK(rec.lost["a"][0].code == StatusCode::CONFLICT);
    CHECK(rec.lost["a"][0].message == "not the holder");
  }
  std::this_thread::sleep_for(400ms);
  CHECK(rec.count("a") == 1);
  CHECK(attempts == 1);
}

TEST_CASE("LeaseKeeper: many leases each reported exactly once", "[keeper]") {
  Recorder rec;
  LeaseKeeper::Calls calls;
  // Odd leases are refused, even ones renewed; the service "dies" at `cut`.
  std::atomic<bool> down{false};
  calls.renew = [&](Lease& l, milliseconds timeout) {
    if (down) {
      std::this_thread::sleep_for(std::min(timeout, milliseconds(20)));
      throw RpcError(StatusCode::UNAVAILABLE, "down");
    }
    if (std::stoi(l.name) % 2) throw RpcError(StatusCode::CONFLICT, "no");
    l.expiry = Clock::now() + l.ttl;
  };
  auto o = plain();
  o.renewThreads = 3;
  LeaseKeeper keeper(calls, rec.callback(), o);
  for (int i = 0; i < 40; ++i)
    keeper.keep(leaseOf(std::to_string(i), Clock::now() + milliseconds(200 + 10 * i),
                        milliseconds(200 + 10 * i)));
  REQUIRE(eventually([&] {
    std::lock_guard lock(rec.mutex);
    return rec.lost.size() == 20;
  }));
  std::this_thread::sleep_for(300ms);
  CHECK(keeper.size() == 20);  // the even ones live on
  down = true;
  REQUIRE(eventually([&] { return keeper.size() == 0; }));
  std::this_thread::sleep_for(100ms);
  std::lock_guard lock(rec.mutex);
  CHECK(rec.lost.size() == 40);
  for (auto& [name, losses] : rec.lost) {
    INFO(name);
    CHECK(losses.size() == 1);
    CHECK(losses[0].kind == (std::stoi(name) % 2 ? Kind::kRefused : Kind::kDeadline));
  }
}

TEST_CASE("LeaseKeeper: heartbeats its session and loses its leases with it", "[keeper]") {
  Recorder rec;
  LeaseKeeper::Calls calls;
  std::atomic<int> heartbeats{0};
  std::atomic<bool> ended{false};
  calls.renew = [](Lease& l, milliseconds) { l.expiry = Clock::now() + l.ttl; };
  calls.heartbeat = [&](uint64_t session, milliseconds) {
    CHECK(session == 9);
    ++heartbeats;
    if (ended) throw RpcError(StatusCode::NOT_FOUND, "session ended");
    return milliseconds(200);
  };
  auto o = plain();
  o.session = 9;
  o.sessionTimeout = 200ms;
  LeaseKeeper keeper(calls, rec.callback(), o);
  keeper.keep(leaseOf("tied", Clock::now() + 10s, 10s, 9));
  keeper.keep(leaseOf("free", Clock::now() + 10s, 10s));
  std::this_thread::sleep_for(500ms);
  CHECK(heartbeats >= 3);  // at once, then about every 130 ms
  CHECK(keeper.sessionAlive());
  CHECK(rec.count("tied") == 0);
  ended = true;
  REQUIRE(eventually([&] { return rec.count("tied") > 0; }));
  CHECK_FALSE(keeper.sessionAlive());
  std::lock_guard lock(rec.mutex);
  CHECK(rec.lost["tied"][0].kind == Kind::kSessionEnded);
  CHECK(rec.lost["tied"][0].code == StatusCode::NOT_FOUND);
  CHECK(rec.lost.count("free") == 0);
}

TEST_CASE("LeaseKeeper: onLost may call the keeper and stop joins promptly", "[keeper]") {
  Recorder rec;
  LeaseKeeper::Calls calls;
  calls.renew = [](Lease&, milliseconds) { throw RpcError(StatusCode::CONFLICT, "no"); };
  std::atomic<size_t> sizeSeen{99};
  LeaseKeeper* self = nullptr;
  LeaseKeeper keeper(
      calls, [&](const Lease&, const LeaseLoss&) { sizeSeen = self->size(); }, plain());
  self = &keeper;
  keeper.keep(leaseOf("a", Clock::now() + 60ms, 60ms));
  REQUIRE(eventually([&] { return sizeSeen.load() == 0; }));
  auto o = plain();
  o.maxLeases = 1;
  LeaseKeeper full(calls, nullptr, o);
  full.keep(leaseOf("b", Clock::now() + 10s, 10s));
  CHECK_THROWS_AS(full.keep(leaseOf("c", Clock::now() + 10s, 10s)), std::length_error);
  auto before = Clock::now();
  full.stop();
  CHECK(Clock::now() - before < 500ms);
}
