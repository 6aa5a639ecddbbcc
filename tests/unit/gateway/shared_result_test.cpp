#include "shared_result.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

using namespace zmesh::gateway;
using namespace std::chrono_literals;

namespace {

struct FakeClock {
  std::chrono::steady_clock::time_point t{std::chrono::hours(1000)};
  std::function<std::chrono::steady_clock::time_point()> fn() {
    return [this] { return t; };
  }
};

}  // namespace

TEST_CASE("SharedResult: one fetch for many askers, reused while fresh", "[shared_result]") {
  FakeClock clock;
  SharedResult<std::string> result(1s, 5s, clock.fn());
  using Outcome = SharedResult<std::string>::Outcome;
  std::vector<std::string> answers;
  auto waiter = [&](const SharedResult<std::string>::Value& v) { answers.push_back(*v); };

  CHECK(result.get(waiter).outcome == Outcome::kFetch);
  for (int i = 0; i < 100; ++i) CHECK(result.get(waiter).outcome == Outcome::kJoined);
  CHECK(answers.empty());
  result.put("one");
  CHECK(answers.size() == 101);
  CHECK(answers.back() == "one");

  clock.t += 999ms;
  auto fresh = result.get(waiter);
  CHECK(fresh.outcome == Outcome::kFresh);
  CHECK(*fresh.value == "one");
  CHECK(answers.size() == 101);  // a fresh answer is the caller's to give

  clock.t += 1ms;  // 1 s after the fetch began: stale
  CHECK(result.get(waiter).outcome == Outcome::kFetch);
  result.put("two");
  CHECK(answers.back() == "two");
}

TEST_CASE("SharedResult: the age counts from when the fetch began", "[shared_result]") {
  FakeClock clock;
  SharedResult<int> result(1s, 5s, clock.fn());
  using Outcome = SharedResult<int>::Outcome;
  auto ignore = [](const SharedResult<int>::Value&) {};
  CHECK(result.get(ignore).outcome == Outcome::kFetch);
  clock.t += 800ms;  // a slow fetch
  result.put(1);
  clock.t += 300ms;
  CHECK(result.get(ignore).outcome == Outcome::kFetch);
}

TEST_CASE("SharedResult: a lost fetch is started again after the fetch timeout",
          "[shared_result]") {
  FakeClock clock;
  SharedResult<int> result(1s, 3s, clock.fn());
  using Outcome = SharedResult<int>::Outcome;
  int answered = 0;
  auto count = [&](const SharedResult<int>::Value&) { ++answered; };
  CHECK(result.get(count).outcome == Outcome::kFetch);
  clock.t += 2999ms;
  CHECK(result.get(count).outcome == Outcome::kJoined);
  clock.t += 1ms;
  CHECK(result.get(count).outcome == Outcome::kFetch);
  result.put(7);
  CHECK(answered == 3);  // the waiters of the lost fetch too
  result.clear();
}
