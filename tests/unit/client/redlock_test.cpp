// Redlock's arithmetic, on injected times: the majority of 1..7 nodes, the
// validity left after the drift allowance, and failure once acquiring took
// (nearly) the whole ttl.
#include "zmesh/redlock.h"

#include <catch2/catch.hpp>

using namespace zmesh;
using namespace std::chrono_literals;
using Clock = RedlockQuorum::Clock;

namespace {

const Clock::time_point t0 = Clock::time_point{} + 1h;

RedlockQuorum::Verdict decide(size_t nodes, size_t granted, std::chrono::milliseconds ttl,
                              Clock::duration elapsed, double factor = 0.01,
                              std::chrono::milliseconds fixed = 2ms) {
  return RedlockQuorum::decide(nodes, granted, ttl, t0, t0 + elapsed, factor, fixed);
}

}  // namespace

TEST_CASE("RedlockQuorum: the majority of 1 to 7 nodes", "[redlock]") {
  CHECK(RedlockQuorum::majority(0) == 0);
  CHECK(RedlockQuorum::majority(1) == 1);
  CHECK(RedlockQuorum::majority(2) == 2);
  CHECK(RedlockQuorum::majority(3) == 2);
  CHECK(RedlockQuorum::majority(4) == 3);
  CHECK(RedlockQuorum::majority(5) == 3);
  CHECK(RedlockQuorum::majority(6) == 4);
  CHECK(RedlockQuorum::majority(7) == 4);

  // Acquired exactly when a majority granted: every split of 1..7 nodes.
  for (size_t nodes = 1; nodes <= 7; ++nodes) {
    for (size_t granted = 0; granted <= nodes; ++granted) {
      auto v = decide(nodes, granted, 10s, 5ms);
      INFO(granted << " of " << nodes);
      CHECK(v.acquired == (2 * granted > nodes));
      CHECK(v.needed == nodes / 2 + 1);
      CHECK(v.granted == granted);
    }
  }
  // Two majorities of the same nodes always share a node: never two holders.
  for (size_t nodes = 1; nodes <= 7; ++nodes) CHECK(2 * RedlockQuorum::majority(nodes) > nodes);
}

TEST_CASE("RedlockQuorum: no nodes grant nothing", "[redlock]") {
  auto v = decide(0, 0, 10s, 0ms);
  CHECK_FALSE(v.acquired);
  CHECK(v.needed == 0);
}

TEST_CASE("RedlockQuorum: drift is ttl times the factor plus the fixed part", "[redlock]") {
  CHECK(RedlockQuorum::drift(10s, 0.01, 2ms) == 102ms);
  CHECK(RedlockQuorum::drift(1s, 0.01, 2ms) == 12ms);
  CHECK(RedlockQuorum::drift(1s, 0.0, 0ms) == 0ms);
  CHECK(RedlockQuorum::drift(30s, 0.05, 10ms) == 1510ms);
  // To the nearest tick of the clock.
  CHECK(RedlockQuorum::drift(1ms, 0.001, 0ms) == std::chrono::microseconds(1));
  CHECK(RedlockQuorum::drift(7ms, 1.0 / 3, 0ms) == std::chrono::nanoseconds(2333333));
  // Nonsense is no allowance at all, never a negative one.
  CHECK(RedlockQuorum::drift(1s, -1.0, -5ms) == 0ms);
}

TEST_CASE("RedlockQuorum: validity is ttl minus elapsed minus drift", "[redlock]") {
  auto v = decide(5, 3, 10s, 100ms);
  CHECK(v.acquired);
  CHECK(v.validity == 10s - 100ms - 102ms);
  // Counted from the start: the first node's lease began no earlier.
  CHECK(v.validUntil == t0 + 10s - 102ms);

  auto custom = decide(3, 3, 2s, 50ms, 0.05, 10ms);
  CHECK(custom.acquired);
  CHECK(custom.validity == 2s - 50ms - 110ms);
  CHECK(custom.validUntil == t0 + 2s - 110ms);
}

TEST_CASE("RedlockQuorum: fails once acquiring used up the ttl", "[redlock]") {
  // ttl 1 s, drift 12 ms: valid while elapsed < 988 ms.
  const auto edge = 1s - 12ms;
  CHECK(decide(5, 5, 1s, edge - std::chrono::nanoseconds(1)).acquired);
  auto at = decide(5, 5, 1s, edge);
  CHECK_FALSE(at.acquired);
  CHECK(at.validity == Clock::duration::zero());
  auto over = decide(5, 5, 1s, 1500ms);
  CHECK_FALSE(over.acquired);
  CHECK(over.validity == -512ms);
  // Elapsed past the whole ttl: even all nodes granting is no lock.
  CHECK_FALSE(decide(7, 7, 100ms, 101ms).acquired);
  // A drift allowance as long as the ttl leaves nothing to hold.
  CHECK_FALSE(decide(5, 5, 100ms, 0ms, 0.0, 100ms).acquired);
}

TEST_CASE("RedlockQuorum: a clock read backwards counts as no time", "[redlock]") {
  auto v = RedlockQuorum::decide(3, 2, 1s, t0, t0 - 5ms, 0.01, 2ms);
  CHECK(v.acquired);
  CHECK(v.validity == 1s - 12ms);
}
