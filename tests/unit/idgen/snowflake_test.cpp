#include "snowflake.h"

#include <catch2/catch.hpp>
#include <limits>
#include <memory>
#include <random>
#include <set>
#include <vector>

using namespace zmesh::idgen;

namespace {

constexpr int64_t kEpoch = kDefaultEpochMs;
constexpr int64_t kT = kEpoch + 1'000'000;  // An arbitrary "now" well after the epoch.

template <class T>
T expect(const Snowflake::Outcome& outcome) {
  if (const auto* failure = std::get_if<Failure>(&outcome)) {
    INFO("failure: " << failure->message);
    REQUIRE(std::holds_alternative<T>(outcome));
  }
  REQUIRE(std::holds_alternative<T>(outcome));
  return std::get<T>(outcome);
}

Snowflake::Ids ids(const Snowflake::Outcome& outcome) { return expect<Snowflake::Ids>(outcome); }
Failure failure(const Snowflake::Outcome& outcome) { return expect<Failure>(outcome); }
void pending(const Snowflake::Outcome& outcome) { expect<Pending>(outcome); }

Decoded decoded(uint64_t id, int64_t epochMs = kEpoch) {
  auto result = Snowflake::decode(id, epochMs);
  REQUIRE(std::holds_alternative<Decoded>(result));
  return std::get<Decoded>(result);
}

// A generator whose durable bound already covers nowMs (+ boundAheadMs).
std::unique_ptr<Snowflake> started(int64_t nowMs, SnowflakeOptions options = {}) {
  auto sf = std::make_unique<Snowflake>(options);
  auto bound = sf->boundToPersist(nowMs);
  REQUIRE(bound);
  sf->boundPersisted(*bound);
  return sf;
}

void requireStrictlyIncreasing(const std::vector<uint64_t>& v) {
  for (size_t i = 1; i < v.size(); ++i) REQUIRE(v[i - 1] < v[i]);
}

}  // namespace

TEST_CASE("Snowflake: layout: bit positions and constants", "[snowflake]") {
  STATIC_REQUIRE(kTimestampShift == 22);
  STATIC_REQUIRE(kWorkerShift == 12);
  STATIC_REQUIRE(kIdsPerMs == 4096);
  STATIC_REQUIRE(kMaxWorkerId == 1023);
  STATIC_REQUIRE(kTimestampSpanMs == 2199023255552);
  STATIC_REQUIRE(kDefaultEpochMs == 1735689600000);  // 2025-01-01T00:00:00Z

  auto sf = started(kEpoch + 1234, SnowflakeOptions{.workerId = 5});
  auto got = ids(sf->request(1, 3, kEpoch + 1234));
  REQUIRE(got.size() == 3);
  const uint64_t base = (uint64_t{1234} << 22) | (uint64_t{5} << 12);
  CHECK(got[0] == base);
  CHECK(got[1] == base + 1);
  CHECK(got[2] == base + 2);
  for (uint64_t id : got) CHECK((id >> 63) == 0);

  SECTION("worker id occupies bits 12..21 exactly") {
    auto top = started(kEpoch, SnowflakeOptions{.workerId = 1023});
    auto id = ids(top->request(1, 1, kEpoch))[0];
    CHECK(id == (uint64_t{1023} << 12));
  }
  SECTION("the last millisecond of the epoch fills 41 bits without touching bit 63") {
    const int64_t last = kEpoch + kTimestampSpanMs - 1;
    auto sf2 = started(last);
    auto id = ids(sf2->request(1, 1, last))[0];
    CHECK(id == ((uint64_t{1} << 63) - 1) - ((uint64_t{1} << 22) - 1));
    CHECK(decoded(id).timestampMs == last);
  }
}

TEST_CASE("Snowflake: decode round trip", "[snowflake]") {
  for (uint32_t worker : {0u, 1u, 512u, 1023u}) {
    SnowflakeOptions options{.epochMs = kEpoch, .workerId = worker};
    auto sf = started(kT, options);
    auto got = ids(sf->request(1, 4096, kT));
    for (uint32_t i = 0; i < got.size(); ++i) {
      auto d = decoded(got[i]);
      REQUIRE(d == Decoded{kT, static_cast<uint16_t>(worker), static_cast<uint16_t>(i)});
    }
  }
  // The epoch is the decoder's: the same id means another time under another epoch.
  const uint64_t id = (uint64_t{42} << 22) | (uint64_t{7} << 12) | 9;
  CHECK(decoded(id, 0) == Decoded{42, 7, 9});
  CHECK(decoded(id, 1000) == Decoded{1042, 7, 9});
  CHECK(decoded(0, kEpoch) == Decoded{kEpoch, 0, 0});

  auto topBit = Snowflake::decode(uint64_t{1} << 63, kEpoch);
  REQUIRE(std::holds_alternative<Failure>(topBit));
  CHECK(std::get<Failure>(topBit).code == Fail::invalidArgument);
  CHECK_THAT(std::get<Failure>(topBit).message, Catch::Contains("top bit"));
  CHECK(std::holds_alternative<Failure>(
      Snowflake::decode(std::numeric_limits<uint64_t>::max(), kEpoch)));
  CHECK(std::holds_alternative<Failure>(Snowflake::decode(1, -1)));
  CHECK(std::holds_alternative<Failure>(Snowflake::decode(1, std::numeric_limits<int64_t>::max())));
}

TEST_CASE("Snowflake: options are validated", "[snowflake]") {
  CHECK_FALSE(SnowflakeOptions{}.validate());
  CHECK_FALSE(SnowflakeOptions{.workerId = 1023}.validate());
  auto worker = SnowflakeOptions{.workerId = 1024}.validate();
  REQUIRE(worker);
  CHECK(worker->code == Fail::invalidArgument);
  CHECK(worker->message == "workerId 1024 is out of range; must be 0..1023");
  CHECK(SnowflakeOptions{.epochMs = -1}.validate());
  CHECK(SnowflakeOptions{.epochMs = std::numeric_limits<int64_t>::max()}.validate());
  CHECK(SnowflakeOptions{.maxBackwardMs = -1}.validate());
  CHECK_FALSE(SnowflakeOptions{.maxBackwardMs = 0}.validate());
  CHECK(SnowflakeOptions{.boundAheadMs = 1000, .renewBeforeMs = 1000}.validate());
  CHECK(SnowflakeOptions{.renewBeforeMs = 0}.validate());
  CHECK(SnowflakeOptions{.boundAheadMs = kMsPerDay + 1}.validate());
  CHECK_THROWS_AS(Snowflake(SnowflakeOptions{.workerId = 2000}), std::invalid_argument);
}

TEST_CASE("Snowflake: counts are validated and tickets are unique while waiting", "[snowflake]") {
  auto sf = started(kT);
  CHECK(failure(sf->request(1, 0, kT)).message == "count 0 is out of range; must be 1..10000");
  CHECK(failure(sf->request(1, 10001, kT)).code == Fail::invalidArgument);
  pending(sf->request(1, 5000, kT));
  CHECK(failure(sf->request(1, 1, kT)).message == "ticket 1 is already waiting");
  CHECK(sf->stats().waitingTickets == 1);
}

TEST_CASE("Snowflake: sequence rollover within one ms waits for the next ms", "[snowflake]") {
  auto sf = started(kT);
  auto first = ids(sf->request(1, 4096, kT));
  CHECK(decoded(first.back()).sequence == 4095);
  CHECK(sf->wakeAt(kT) == std::nullopt);  // Nothing waits.

  pending(sf->request(2, 1, kT));
  CHECK(sf->wakeAt(kT) == kT + 1);
  CHECK(sf->poll(kT).empty());  // Same ms: still nothing.

  auto done = sf->poll(kT + 1);
  REQUIRE(done.size() == 1);
  CHECK(done[0].first == 2);
  auto next = std::get<Snowflake::Ids>(done[0].second);
  REQUIRE(next.size() == 1);
  CHECK(decoded(next[0]) == Decoded{kT + 1, 0, 0});
  CHECK(next[0] > first.back());
  CHECK(sf->wakeAt(kT + 1) == std::nullopt);
}

TEST_CASE("Snowflake: a 10000-id request spans 3 ms", "[snowflake]") {
  auto sf = started(kT, SnowflakeOptions{.workerId = 3});
  pending(sf->request(9, 10000, kT));  // 4096 taken now.
  CHECK(sf->stats().idsIssued == 4096);
  CHECK(sf->wakeAt(kT) == kT + 1);
  CHECK(sf->poll(kT + 1).empty());  // 8192 taken.
  CHECK(sf->wakeAt(kT + 1) == kT + 2);

  // A later request queues behind, even though this ms has room left after the first.
  pending(sf->request(10, 1, kT + 1));

  auto done = sf->poll(kT + 2);
  REQUIRE(done.size() == 2);
  CHECK(done[0].first == 9);
  CHECK(done[1].first == 10);
  auto got = std::get<Snowflake::Ids>(done[0].second);
  REQUIRE(got.size() == 10000);
  requireStrictlyIncreasing(got);
  CHECK(decoded(got[0]) == Decoded{kT, 3, 0});
  CHECK(decoded(got[4095]) == Decoded{kT, 3, 4095});
  CHECK(decoded(got[4096]) == Decoded{kT + 1, 3, 0});
  CHECK(decoded(got[8191]) == Decoded{kT + 1, 3, 4095});
  CHECK(decoded(got[8192]) == Decoded{kT + 2, 3, 0});
  CHECK(decoded(got[9999]) == Decoded{kT + 2, 3, 1807});
  auto after = std::get<Snowflake::Ids>(done[1].second);
  CHECK(decoded(after[0]) == Decoded{kT + 2, 3, 1808});
}

TEST_CASE("Snowflake: a late poll takes the current ms, not the ones missed", "[snowflake]") {
  auto sf = started(kT);
  pending(sf->request(1, 5000, kT));
  auto done = sf->poll(kT + 50);
  REQUIRE(done.size() == 1);
  auto got = std::get<Snowflake::Ids>(done[0].second);
  CHECK(decoded(got[4096]).timestampMs == kT + 50);
}

TEST_CASE("Snowflake: clock going back", "[snowflake]") {
  auto sf = started(kT);
  auto before = ids(sf->request(1, 10, kT));

  SECTION("by 3 ms: waits for it, then resumes in the same ms") {
    pending(sf->request(2, 5, kT - 3));
    CHECK(sf->wakeAt(kT - 3) == kT);
    CHECK(sf->poll(kT - 3).empty());
    CHECK(sf->poll(kT - 1).empty());
    auto done = sf->poll(kT);
    REQUIRE(done.size() == 1);
    auto got = std::get<Snowflake::Ids>(done[0].second);
    CHECK(decoded(got[0]) == Decoded{kT, 0, 10});
    CHECK(got[0] > before.back());
  }
  SECTION("by exactly maxBackwardMs: still waits") { pending(sf->request(2, 1, kT - 5)); }
  SECTION("by 10 ms: unavailable with retryAfterMs") {
    auto f = failure(sf->request(2, 5, kT - 10));
    CHECK(f.code == Fail::unavailable);
    CHECK(f.retryAfterMs == 10);
    CHECK_THAT(f.message, Catch::Contains("clock is 10 ms behind"));
    CHECK_THAT(f.message, Catch::Contains("moved backwards"));
    CHECK_THAT(f.message, Catch::Contains("more than the 5 ms"));
    CHECK(sf->stats().clockBehindFailures == 1);
    CHECK(sf->stats().waitingTickets == 0);
    // Once the clock is back, ids resume above the old ones.
    auto got = ids(sf->request(3, 1, kT + 1));
    CHECK(got[0] > before.back());
  }
  SECTION("while tickets wait: they all fail, and ids they held are never reissued") {
    pending(sf->request(2, 8000, kT));  // Takes 4086 now.
    pending(sf->request(3, 1, kT));
    CHECK(sf->wakeAt(kT - 20) == kT - 20);  // Poll at once: there is a failure to deliver.
    auto done = sf->poll(kT - 20);
    REQUIRE(done.size() == 2);
    for (auto& [ticket, result] : done) {
      REQUIRE(std::holds_alternative<Failure>(result));
      CHECK(std::get<Failure>(result).retryAfterMs == 21);  // The newest id is at kT: 4096 used.
    }
    CHECK(sf->stats().clockBehindFailures == 2);
    auto got = ids(sf->request(4, 1, kT + 1));
    CHECK(decoded(got[0]) == Decoded{kT + 1, 0, 0});
  }
  SECTION("a configured maxBackwardMs of 0 never waits for the clock") {
    auto strict = started(kT, SnowflakeOptions{.maxBackwardMs = 0});
    ids(strict->request(1, 1, kT));
    CHECK(failure(strict->request(2, 1, kT - 1)).retryAfterMs == 1);
  }
}

TEST_CASE("Snowflake: a time bound is persisted ahead of now, not every ms", "[snowflake]") {
  Snowflake sf;
  CHECK(sf.boundToPersist(kT) == kT + 2000);
  // Pending counts: no second request for a bound while the first is on its way.
  CHECK(sf.boundToPersist(kT + 500) == std::nullopt);
  CHECK(sf.boundToPersist(kT + 1000) == std::nullopt);  // Exactly renewBeforeMs ahead.
  CHECK(sf.boundToPersist(kT + 1001) == kT + 3001);
  sf.boundPersisted(kT + 2000);
  CHECK(sf.stats().durableBoundMs == kT + 2000);
  sf.boundPersisted(kT + 3001);
  sf.boundPersisted(kT + 2000);  // Late or repeated: the bound never goes down.
  CHECK(sf.stats().durableBoundMs == kT + 3001);
  CHECK(sf.boundToPersist(kT + 2000) == std::nullopt);
  CHECK(sf.boundToPersist(kT + 2002) == kT + 4002);
}

TEST_CASE("Snowflake: ids are never issued at or above the durable bound", "[snowflake]") {
  Snowflake sf;
  SECTION("nothing before the first bound is durable") {
    pending(sf.request(1, 3, kT));
    CHECK(sf.wakeAt(kT) == std::nullopt);  // Waiting on durability only.
    CHECK(sf.stats().idsIssued == 0);
    auto bound = sf.boundToPersist(kT);
    REQUIRE(bound == kT + 2000);
    CHECK(sf.poll(kT + 1).empty());  // Asked for, not yet durable.
    sf.boundPersisted(*bound);
    CHECK(sf.wakeAt(kT + 1) == kT + 1);
    auto done = sf.poll(kT + 1);
    REQUIRE(done.size() == 1);
    CHECK(decoded(std::get<Snowflake::Ids>(done[0].second)[0]).timestampMs == kT + 1);
  }
  SECTION("the clock reaching the durable bound stops issuing until a new one is durable") {
    sf.boundPersisted(*sf.boundToPersist(kT));  // kT + 2000
    auto got = ids(sf.request(1, 1, kT + 1999));
    CHECK(decoded(got[0]).timestampMs == kT + 1999);
    pending(sf.request(2, 1, kT + 2000));
    CHECK(sf.wakeAt(kT + 2000) == std::nullopt);
    CHECK(sf.poll(kT + 2100).empty());
    auto bound = sf.boundToPersist(kT + 2100);
    REQUIRE(bound == kT + 4100);
    CHECK(sf.poll(kT + 2100).empty());  // Still not durable.
    sf.boundPersisted(*bound);
    auto done = sf.poll(kT + 2100);
    REQUIRE(done.size() == 1);
    CHECK(decoded(std::get<Snowflake::Ids>(done[0].second)[0]).timestampMs == kT + 2100);
  }
  SECTION("a large request stops at the bound mid-way") {
    sf.boundPersisted(kT + 1);  // Only ms kT is covered.
    pending(sf.request(1, 5000, kT));
    CHECK(sf.stats().idsIssued == 4096);
    CHECK(sf.wakeAt(kT) == kT + 1);  // The sequence is used up first...
    CHECK(sf.poll(kT + 1).empty());
    CHECK(sf.wakeAt(kT + 1) == std::nullopt);  // ...then the bound stops it.
    CHECK(sf.stats().idsIssued == 4096);
    sf.boundPersisted(*sf.boundToPersist(kT + 1));
    auto done = sf.poll(kT + 1);
    REQUIRE(done.size() == 1);
    CHECK(std::get<Snowflake::Ids>(done[0].second).size() == 5000);
  }
}

TEST_CASE("Snowflake: restore: no id below the restored bound, even with the clock behind it",
          "[snowflake]") {
  const int64_t bound = kT + 2000;  // Persisted by the previous incarnation.
  Snowflake sf;
  sf.restore(bound);
  CHECK(sf.stats().restoredBoundMs == bound);
  // Nothing is asked for while the clock is far behind: the restored bound still covers it.
  CHECK(sf.boundToPersist(bound - 1000) == std::nullopt);

  SECTION("far behind: unavailable with retryAfterMs") {
    auto f = failure(sf.request(1, 1, bound - 10));
    CHECK(f.code == Fail::unavailable);
    CHECK(f.retryAfterMs == 10);
    CHECK_THAT(f.message, Catch::Contains("clock is 10 ms behind the time bound persisted "
                                          "before the restart"));
    f = failure(sf.request(1, 1, bound - 3'600'000));
    CHECK(f.retryAfterMs == 3'600'000);
  }
  SECTION("slightly behind: waits for the clock and a new bound") {
    pending(sf.request(1, 2, bound - 3));
    auto next = sf.boundToPersist(bound - 3);
    REQUIRE(next == bound - 3 + 2000);
    sf.boundPersisted(*next);
    CHECK(sf.wakeAt(bound - 3) == bound);
    CHECK(sf.poll(bound - 1).empty());
    auto done = sf.poll(bound);
    REQUIRE(done.size() == 1);
    auto got = std::get<Snowflake::Ids>(done[0].second);
    CHECK(decoded(got[0]) == Decoded{bound, 0, 0});
  }
  SECTION("at the bound: a new bound is still needed first") {
    pending(sf.request(1, 1, bound));
    CHECK(sf.wakeAt(bound) == std::nullopt);
    sf.boundPersisted(*sf.boundToPersist(bound));
    auto done = sf.poll(bound);
    REQUIRE(done.size() == 1);
    CHECK(decoded(std::get<Snowflake::Ids>(done[0].second)[0]).timestampMs == bound);
  }
}

TEST_CASE("Snowflake: restore on a running instance keeps ids strictly increasing", "[snowflake]") {
  auto sf = started(kT);
  auto a = ids(sf->request(1, 100, kT + 10));
  sf->restore(kT + 5);  // Below what was issued: no effect on ordering.
  auto b = ids(sf->request(2, 1, kT + 10));
  CHECK(b[0] > a.back());
  sf->restore(kT + 500);  // Above: later ids jump to it.
  CHECK(failure(sf->request(3, 1, kT + 11)).retryAfterMs == 489);
  pending(sf->request(4, 1, kT + 497));
  CHECK(sf->wakeAt(kT + 497) == kT + 500);
  auto done = sf->poll(kT + 500);  // The bound from started() still covers it.
  REQUIRE(done.size() == 1);
  auto c = std::get<Snowflake::Ids>(done[0].second);
  CHECK(decoded(c[0]).timestampMs == kT + 500);
  CHECK(c[0] > b[0]);
}

TEST_CASE("Snowflake: cancel drops a waiting ticket", "[snowflake]") {
  auto sf = started(kT);
  pending(sf->request(1, 5000, kT));  // Holds 4096 ids already.
  pending(sf->request(2, 1, kT));
  CHECK(sf->cancel(1));
  CHECK_FALSE(sf->cancel(1));
  CHECK_FALSE(sf->cancel(77));
  CHECK(sf->stats().waitingTickets == 1);
  auto done = sf->poll(kT + 1);
  REQUIRE(done.size() == 1);
  CHECK(done[0].first == 2);
  // The cancelled ticket's ids are skipped, not reused.
  CHECK(decoded(std::get<Snowflake::Ids>(done[0].second)[0]) == Decoded{kT + 1, 0, 0});
  CHECK(sf->wakeAt(kT + 1) == std::nullopt);
}

TEST_CASE("Snowflake: clock before the epoch is unavailable", "[snowflake]") {
  auto sf = started(kEpoch - 100);
  auto f = failure(sf->request(1, 1, kEpoch - 100));
  CHECK(f.code == Fail::unavailable);
  CHECK_THAT(f.message, Catch::Contains("before the epoch"));
}

TEST_CASE("Snowflake: epoch running out", "[snowflake]") {
  SnowflakeOptions options{.epochMs = 0};
  const int64_t end = kTimestampSpanMs;  // First ms the 41 bits cannot hold.
  Snowflake sf(options);
  CHECK(sf.msLeft(0) == kTimestampSpanMs);
  CHECK(sf.msLeft(end - 100) == 100);
  CHECK(sf.msLeft(end) == 0);
  CHECK(sf.msLeft(end + 5) == 0);
  CHECK(sf.msLeft(std::numeric_limits<int64_t>::min()) == std::numeric_limits<int64_t>::max());
  CHECK_FALSE(sf.epochRunningOut(end - 31 * kMsPerDay, 30));
  CHECK(sf.epochRunningOut(end - 29 * kMsPerDay, 30));
  CHECK(sf.epochRunningOut(end - 30 * kMsPerDay + 1, 30));
  CHECK_FALSE(sf.epochRunningOut(end - 30 * kMsPerDay, 30));
  CHECK_FALSE(sf.epochRunningOut(end - 1, 0));
  CHECK(sf.epochRunningOut(0, std::numeric_limits<int64_t>::max()));

  // The default epoch lasts until 2094.
  Snowflake byDefault;
  CHECK(byDefault.msLeft(kEpoch) == kTimestampSpanMs);
  CHECK_FALSE(byDefault.epochRunningOut(kT, 365));

  sf.boundPersisted(end + 10'000);
  auto last = ids(sf.request(1, 4096, end - 1));
  CHECK(decoded(last.back(), 0) == Decoded{end - 1, 0, 4095});
  pending(sf.request(2, 1, end - 1));
  auto done = sf.poll(end);
  REQUIRE(done.size() == 1);
  auto f = std::get<Failure>(done[0].second);
  CHECK(f.code == Fail::failedPrecondition);
  CHECK_THAT(f.message, Catch::Contains("41-bit timestamp ran out"));
  CHECK(failure(sf.request(3, 1, end + 1)).code == Fail::failedPrecondition);
}

// Time moves forward in small steps, sometimes back (a little or a lot); bounds are persisted
// late; tickets are cancelled; the process "crashes" and a new instance is restored from the
// last durable bound, sometimes with the clock set back. Every id ever issued must be greater
// than the one before and carry a timestamp below the bound durable when it was handed out.
TEST_CASE("Snowflake: randomized: ids strictly increase across waits, clock jumps and crashes",
          "[snowflake][property]") {
  std::mt19937_64 rng(424242);
  auto pick = [&rng](int64_t n) { return std::uniform_int_distribution<int64_t>(0, n - 1)(rng); };
  const SnowflakeOptions options{.workerId = 77};

  auto sf = std::make_unique<Snowflake>(options);
  int64_t now = kT;
  int64_t durable = std::numeric_limits<int64_t>::min();  // Highest bound made durable.
  std::vector<int64_t> asked;                             // Bounds asked for, not yet durable.
  std::set<uint64_t> waiting;
  uint64_t lastId = 0;
  uint64_t nextTicket = 1;
  uint64_t issued = 0;
  int crashes = 0;
  int unavailable = 0;

  auto accept = [&](const Snowflake::Ids& got) {
    for (uint64_t id : got) {
      REQUIRE(id > lastId);
      lastId = id;
      auto d = decoded(id);
      REQUIRE(d.worker == 77);
      REQUIRE(d.timestampMs < durable);
      REQUIRE(d.timestampMs <= now);
    }
    issued += got.size();
  };
  auto deliver = [&](Snowflake::Completed done) {
    for (auto& [ticket, result] : done) {
      REQUIRE(waiting.erase(ticket) == 1);
      if (auto* got = std::get_if<Snowflake::Ids>(&result)) {
        accept(*got);
      } else {
        REQUIRE(std::get<Failure>(result).code == Fail::unavailable);
        ++unavailable;
      }
    }
  };

  for (int step = 0; step < 30000; ++step) {
    const int64_t dice = pick(100);
    if (dice < 30) {
      now += pick(3);
    } else if (dice < 32) {
      now -= 1 + pick(options.maxBackwardMs + 6);  // Sometimes within the tolerance.
    } else if (dice < 33) {
      now += 500 + pick(3000);
    } else if (dice < 60) {
      const uint32_t count = pick(8) == 0 ? static_cast<uint32_t>(1 + pick(10000))
                                          : static_cast<uint32_t>(1 + pick(50));
      const uint64_t ticket = nextTicket++;
      auto outcome = sf->request(ticket, count, now);
      if (auto* got = std::get_if<Snowflake::Ids>(&outcome)) {
        REQUIRE(got->size() == count);
        accept(*got);
      } else if (auto* f = std::get_if<Failure>(&outcome)) {
        REQUIRE(f->code == Fail::unavailable);
        REQUIRE(f->retryAfterMs > options.maxBackwardMs);
        ++unavailable;
      } else {
        waiting.insert(ticket);
      }
    } else if (dice < 75) {
      auto wake = sf->wakeAt(now);
      if (wake && *wake <= now) {
        deliver(sf->poll(now));
      } else {
        REQUIRE(sf->poll(now).empty());  // wakeAt said nothing can move yet.
      }
    } else if (dice < 85) {
      if (auto bound = sf->boundToPersist(now)) {
        REQUIRE((asked.empty() || *bound > asked.back()));
        REQUIRE(*bound > durable);
        asked.push_back(*bound);
      }
    } else if (dice < 93) {
      if (asked.empty()) continue;
      // The log is synced in order: the newest record made durable covers the older ones.
      const size_t upTo = static_cast<size_t>(pick(static_cast<int64_t>(asked.size())));
      durable = std::max(durable, asked[upTo]);
      sf->boundPersisted(asked[upTo]);
      asked.erase(asked.begin(), asked.begin() + static_cast<long>(upTo) + 1);
    } else if (dice < 95) {
      if (waiting.empty()) continue;
      auto it = waiting.begin();
      std::advance(it, static_cast<long>(pick(static_cast<int64_t>(waiting.size()))));
      REQUIRE(sf->cancel(*it));
      waiting.erase(it);
    } else if (dice < 96) {
      // Crash: unsynced bounds are lost; the clock may come back set far behind.
      asked.clear();
      waiting.clear();
      sf = std::make_unique<Snowflake>(options);
      if (durable != std::numeric_limits<int64_t>::min()) sf->restore(durable);
      if (pick(2) == 0) now -= pick(5000);
      ++crashes;
    }
  }
  CHECK(crashes > 100);
  CHECK(unavailable > 100);
  CHECK(issued > 250'000);
}

TEST_CASE("Snowflake: cancelling waiters in the middle and at the ends", "[snowflake]") {
  auto sf = started(kT);
  pending(sf->request(1, 5000, kT));  // Holds 4096 ids already; the rest wait for kT + 1.
  for (uint64_t t = 2; t <= 9; ++t) pending(sf->request(t, 1, kT));
  CHECK(sf->cancel(5));
  CHECK(sf->cancel(9));  // the back
  CHECK(sf->cancel(1));  // the front
  CHECK(sf->stats().waitingTickets == 6);
  auto done = sf->poll(kT + 1);
  std::vector<uint64_t> tickets;
  for (auto& [ticket, outcome] : done) tickets.push_back(ticket);
  CHECK(tickets == std::vector<uint64_t>{2, 3, 4, 6, 7, 8});
  CHECK(sf->stats().waitingTickets == 0);
  CHECK(sf->wakeAt(kT + 1) == std::nullopt);
}
