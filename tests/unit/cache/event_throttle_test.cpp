// The cache's event throttle: a token bucket per topic whose overflow is
// folded into a count carried by the next event published.
#include "event_throttle.h"

#include <catch2/catch.hpp>

using zmesh::cache::EventThrottle;

TEST_CASE("event throttle: a second's burst then perSecond a second and folded counts",
          "[cache][events]") {
  EventThrottle t(10);
  int64_t now = 1'000'000;
  for (int i = 0; i < 10; ++i) REQUIRE(t.admit(now) == 1);
  for (int i = 0; i < 5; ++i) REQUIRE(t.admit(now) == 0);
  CHECK(t.folded() == 5);
  // 100 ms refill one token: the next event stands for itself and the five folded.
  now += 99;
  CHECK(t.admit(now) == 0);
  now += 1;
  CHECK(t.admit(now) == 7);
  CHECK(t.folded() == 0);
  CHECK(t.published() == 11);
  CHECK(t.foldedTotal() == 6);
}

TEST_CASE("event throttle: flush hands out what no event carried", "[cache][events]") {
  EventThrottle t(1);
  CHECK(t.admit(0) == 1);
  CHECK(t.admit(0) == 0);
  CHECK(t.admit(0) == 0);
  CHECK(t.flush() == 2);
  CHECK(t.flush() == 0);
  CHECK(t.published() == 2);
}

TEST_CASE("event throttle: a long quiet refills no more than a second's burst", "[cache][events]") {
  EventThrottle t(3);
  CHECK(t.admit(0) == 1);
  int64_t now = 3'600'000;
  int admitted = 0;
  for (int i = 0; i < 10; ++i) admitted += t.admit(now) > 0;
  CHECK(admitted == 3);
}

TEST_CASE("event throttle: a clock going back stands still and zero per second folds all",
          "[cache][events]") {
  EventThrottle t(2);
  CHECK(t.admit(5000) == 1);
  CHECK(t.admit(5000) == 1);
  CHECK(t.admit(1000) == 0);  // back in time: no refill
  CHECK(t.admit(5499) == 0);
  CHECK(t.admit(5500) == 3);  // 500 ms after 5000: one token

  EventThrottle none(0);
  for (int i = 0; i < 4; ++i) CHECK(none.admit(i * 1000) == 0);
  CHECK(none.flush() == 4);
}
