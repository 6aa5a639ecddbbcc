// The lock routes' bodies and query: decoded, or refused with a message that
// names the field (the 400's message).
#include "lock_request.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

using namespace zmesh::gateway;
using Catch::Matchers::Contains;

namespace {

template <class T>
std::string problemOf(const Decoded<T>& d) {
  auto* problem = std::get_if<std::string>(&d);
  return problem ? *problem : std::string("(decoded)");
}

struct Case {
  std::string body;
  std::string message;  // contained in the problem
};

}  // namespace

TEST_CASE("LockRequest: an acquire body with every field", "[lock_request]") {
  auto d = decodeLockAcquire(
      R"({"owner":"worker-7","ttl_ms":10000,"wait_ms":2000,"mode":"shared","permits":3,)"
      R"("session":"18446744073709551615"})");
  REQUIRE(std::holds_alternative<LockAcquireBody>(d));
  auto& b = std::get<LockAcquireBody>(d);
  CHECK(b.owner == "worker-7");
  CHECK(b.ttlMs == 10000);
  CHECK(b.waitMs == 2000);
  CHECK(b.shared);
  CHECK(b.permits == 3);
  CHECK(b.session == UINT64_MAX);
}

TEST_CASE("LockRequest: acquire defaults and the gateway's cap on the wait", "[lock_request]") {
  auto d = decodeLockAcquire(R"({"owner":"a","ttl_ms":1})");
  REQUIRE(std::holds_alternative<LockAcquireBody>(d));
  auto& b = std::get<LockAcquireBody>(d);
  CHECK(b.waitMs == 0);
  CHECK_FALSE(b.shared);
  CHECK(b.permits == 0);
  CHECK(b.session == 0);
  CHECK(
      std::get<LockAcquireBody>(decodeLockAcquire(R"({"owner":"a","ttl_ms":1,"mode":"exclusive"})"))
          .shared == false);
  // Longer waits are cut, not refused (as the service cuts to its max_wait).
  auto capped = decodeLockAcquire(R"({"owner":"a","ttl_ms":1,"wait_ms":86400000})");
  REQUIRE(std::holds_alternative<LockAcquireBody>(capped));
  CHECK(std::get<LockAcquireBody>(capped).waitMs == uint64_t(kLockMaxWait.count()));
  // An integral number in another spelling is the integer.
  auto spelled = decodeLockAcquire(R"({"owner":"a","ttl_ms":1e3})");
  REQUIRE(std::holds_alternative<LockAcquireBody>(spelled));
  CHECK(std::get<LockAcquireBody>(spelled).ttlMs == 1000);
}

TEST_CASE("LockRequest: a bad acquire body names what is wrong", "[lock_request]") {
  const std::vector<Case> cases = {
      {"", "the body is empty"},
      {R"({"owner":"a","ttl_ms":1)", "malformed JSON at byte 23"},
      {R"(["owner"])", "the body must be a JSON object, got [\"owner\"]"},
      {R"({"ttl_ms":1000})", "owner: missing"},
      {R"({"owner":7,"ttl_ms":1000})", "owner: expected a string, got 7"},
      {R"({"owner":"","ttl_ms":1000})", "owner: must not be empty"},
      {R"({"owner":"a"})", "ttl_ms: missing"},
      {R"({"owner":"a","ttl_ms":-5})", "ttl_ms: expected an integer from 1 to"},
      {R"({"owner":"a","ttl_ms":0})", "ttl_ms: expected an integer from 1 to"},
      {R"({"owner":"a","ttl_ms":"1000"})", "ttl_ms: expected an integer from 1 to"},
      {R"({"owner":"a","ttl_ms":1.5})", "got 1.5"},
      {R"({"owner":"a","ttl_ms":1000,"wait_ms":-1})", "wait_ms: expected an integer from 0"},
      {R"({"owner":"a","ttl_ms":1000,"wait_ms":null})", "wait_ms: expected an integer"},
      {R"({"owner":"a","ttl_ms":1000,"mode":"EXCLUSIVE"})",
       "mode: expected \"exclusive\" or \"shared\", got \"EXCLUSIVE\""},
      {R"({"owner":"a","ttl_ms":1000,"mode":1})", "mode: expected \"exclusive\" or \"shared\""},
      {R"({"owner":"a","ttl_ms":1000,"permits":-1})",
       "permits: expected an integer from 0 to 4294967295, got -1"},
      {R"({"owner":"a","ttl_ms":1000,"permits":4294967296})", "permits: expected an integer"},
      {R"({"owner":"a","ttl_ms":1000,"session":12})",
       "session: expected a string of decimal digits"},
      {R"({"owner":"a","ttl_ms":1000,"session":"-1"})",
       "session: expected a string of decimal digits"},
      {R"({"owner":"a","ttl_ms":1000,"ttl":5})",
       "unknown field \"ttl\" (known: owner, ttl_ms, wait_ms, mode, permits, session)"},
  };
  for (auto& c : cases) {
    INFO("body: " << c.body);
    CHECK_THAT(problemOf(decodeLockAcquire(c.body)), Contains(c.message));
  }
}

TEST_CASE("LockRequest: renew takes the token as a decimal string", "[lock_request]") {
  auto d = decodeLockRenew(R"({"owner":"a","token":"9007199254740993","ttl_ms":500})");
  REQUIRE(std::holds_alternative<LockRenewBody>(d));
  auto& b = std::get<LockRenewBody>(d);
  CHECK(b.owner == "a");
  CHECK(b.token == 9007199254740993ull);  // past 2^53: exact only as a string
  CHECK(b.ttlMs == 500);

  const std::vector<Case> cases = {
      {R"({"token":"1","ttl_ms":500})", "owner: missing"},
      {R"({"owner":"a","ttl_ms":500})", "token: missing"},
      {R"({"owner":"a","token":42,"ttl_ms":500})",
       "token: expected a string of decimal digits (a 64-bit unsigned integer; JSON numbers lose "
       "precision past 2^53), got 42"},
      {R"({"owner":"a","token":"","ttl_ms":500})", "token: expected a string of decimal digits"},
      {R"({"owner":"a","token":"12x","ttl_ms":500})", "got \"12x\""},
      {R"({"owner":"a","token":" 12","ttl_ms":500})", "token: expected"},
      {R"({"owner":"a","token":"+12","ttl_ms":500})", "token: expected"},
      {R"({"owner":"a","token":"18446744073709551616","ttl_ms":500})", "token: expected"},
      {R"({"owner":"a","token":"1"})", "ttl_ms: missing"},
      {R"({"owner":"a","token":"1","ttl_ms":-1})", "ttl_ms: expected an integer from 1"},
      {R"({"owner":"a","token":"1","ttl_ms":5,"wait_ms":1})", "unknown field \"wait_ms\""},
  };
  for (auto& c : cases) {
    INFO("body: " << c.body);
    CHECK_THAT(problemOf(decodeLockRenew(c.body)), Contains(c.message));
  }
}

TEST_CASE("LockRequest: validate takes one token", "[lock_request]") {
  auto d = decodeLockValidate(R"({"token":"18446744073709551615"})");
  REQUIRE(std::holds_alternative<uint64_t>(d));
  CHECK(std::get<uint64_t>(d) == UINT64_MAX);
  CHECK_THAT(problemOf(decodeLockValidate("{}")), Contains("token: missing"));
  CHECK_THAT(problemOf(decodeLockValidate(R"({"token":true})")),
             Contains("token: expected a string of decimal digits"));
  CHECK_THAT(problemOf(decodeLockValidate(R"({"token":"1","owner":"a"})")),
             Contains("unknown field \"owner\" (known: token)"));
  CHECK_THAT(problemOf(decodeLockValidate("token=1")), Contains("malformed JSON"));
}

TEST_CASE("LockRequest: release reads owner and token from the query", "[lock_request]") {
  auto d = decodeLockRelease("a b", "42");
  REQUIRE(std::holds_alternative<LockReleaseQuery>(d));
  CHECK(std::get<LockReleaseQuery>(d).owner == "a b");
  CHECK(std::get<LockReleaseQuery>(d).token == 42);
  CHECK_THAT(problemOf(decodeLockRelease(std::nullopt, "42")),
             Contains("query parameter owner: missing"));
  CHECK_THAT(problemOf(decodeLockRelease("", "42")), Contains("query parameter owner: missing"));
  CHECK_THAT(problemOf(decodeLockRelease("a", std::nullopt)),
             Contains("query parameter token: missing"));
  CHECK_THAT(
      problemOf(decodeLockRelease("a", "x")),
      Contains("query parameter token must be a decimal 64-bit unsigned integer, got \"x\""));
  CHECK_THAT(problemOf(decodeLockRelease("a", "")), Contains("token must be a decimal"));
  CHECK_THAT(problemOf(decodeLockRelease("a", "-1")), Contains("token must be a decimal"));
}
