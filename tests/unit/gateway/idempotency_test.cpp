#include "idempotency.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace zmesh::gateway;
using namespace std::chrono_literals;
using Outcome = IdempotencyStore::Outcome;

namespace {

// The store's clock, moved by hand.
struct FakeClock {
  IdempotencyStore::Clock::time_point t{std::chrono::hours(1000)};
  std::function<IdempotencyStore::Clock::time_point()> fn() {
    return [this] { return t; };
  }
};

const std::string kFp = IdempotencyStore::fingerprint("POST", "/v1/ids/orders", "{\"n\":1}");
const std::string kOtherFp = IdempotencyStore::fingerprint("POST", "/v1/ids/orders", "{\"n\":2}");

StoredResponse response(int status, std::string body) {
  return StoredResponse{
      status, {{"Content-Type", "application/json"}, {"X-Request-Id", "r-1"}}, std::move(body)};
}

Outcome outcome(IdempotencyStore& store, const std::string& key, const std::string& fp = kFp,
                const std::string& scope = "alice") {
  return store.begin(scope, key, fp).outcome;
}

}  // namespace

TEST_CASE("IdempotencyStore: construction is validated", "[idempotency]") {
  CHECK_THROWS_AS(IdempotencyStore(0ms, 10), std::invalid_argument);
  CHECK_THROWS_AS(IdempotencyStore(-1ms, 10), std::invalid_argument);
  CHECK_THROWS_AS(IdempotencyStore(1ms, 0), std::invalid_argument);
  CHECK_THROWS_AS(IdempotencyStore(1ms, 10, nullptr), std::invalid_argument);
  IdempotencyStore store(1ms, 1);  // the real clock by default
  CHECK(store.size() == 0);
}

TEST_CASE("IdempotencyStore: first, in progress, replay", "[idempotency]") {
  FakeClock clock;
  IdempotencyStore store(60s, 100, clock.fn());

  auto first = store.begin("alice", "k1", kFp);
  CHECK(first.outcome == Outcome::kFirst);
  CHECK_FALSE(first.response.has_value());
  CHECK(store.size() == 1);

  auto running = store.begin("alice", "k1", kFp);
  CHECK(running.outcome == Outcome::kInProgress);
  CHECK_FALSE(running.response.has_value());

  const std::string body("{\"id\":42}\0tail", 14);  // bytes kept exactly, NUL included
  store.complete("alice", "k1", response(201, body));
  CHECK(store.size() == 1);

  for (int i = 0; i < 3; ++i) {
    INFO("replay " << i);
    auto replay = store.begin("alice", "k1", kFp);
    CHECK(replay.outcome == Outcome::kReplay);
    REQUIRE(replay.response.has_value());
    CHECK(replay.response->status == 201);
    CHECK(replay.response->headers ==
          std::vector<std::pair<std::string, std::string>>{{"Content-Type", "application/json"},
                                                           {"X-Request-Id", "r-1"}});
    CHECK(replay.response->body == body);
    CHECK(replay.response->body.size() == 14);
  }
  CHECK(store.size() == 1);

  SECTION("a second complete() does not overwrite the answer") {
    store.complete("alice", "k1", response(200, "other"));
    auto replay = store.begin("alice", "k1", kFp);
    REQUIRE(replay.response.has_value());
    CHECK(replay.response->status == 201);
    CHECK(replay.response->body == body);
  }
  SECTION("abandon() of a completed key keeps the answer") {
    store.abandon("alice", "k1");
    CHECK(outcome(store, "k1") == Outcome::kReplay);
  }
}

TEST_CASE("IdempotencyStore: a key reused for a different request", "[idempotency]") {
  FakeClock clock;
  IdempotencyStore store(60s, 100, clock.fn());
  REQUIRE(outcome(store, "k") == Outcome::kFirst);

  SECTION("while the first runs") {
    CHECK(outcome(store, "k", kOtherFp) == Outcome::kMismatch);
    CHECK_FALSE(store.begin("alice", "k", kOtherFp).response.has_value());
    CHECK(outcome(store, "k") == Outcome::kInProgress);
  }
  SECTION("after it completed") {
    store.complete("alice", "k", response(200, "ok"));
    auto mismatch = store.begin("alice", "k", kOtherFp);
    CHECK(mismatch.outcome == Outcome::kMismatch);
    CHECK_FALSE(mismatch.response.has_value());
    // The stored answer is untouched.
    auto replay = store.begin("alice", "k", kFp);
    CHECK(replay.outcome == Outcome::kReplay);
    REQUIRE(replay.response.has_value());
    CHECK(replay.response->body == "ok");
  }
  SECTION("any part of the fingerprint differs") {
    for (const std::string& fp :
         {IdempotencyStore::fingerprint("PUT", "/v1/ids/orders", "{\"n\":1}"),
          IdempotencyStore::fingerprint("POST", "/v1/ids/other", "{\"n\":1}"),
          IdempotencyStore::fingerprint("POST", "/v1/ids/orders", "")}) {
      INFO("fingerprint: " << fp);
      CHECK(outcome(store, "k", fp) == Outcome::kMismatch);
    }
  }
  CHECK(store.size() == 1);
}

TEST_CASE("IdempotencyStore: keys are scoped", "[idempotency]") {
  FakeClock clock;
  IdempotencyStore store(60s, 100, clock.fn());
  CHECK(outcome(store, "k", kFp, "alice") == Outcome::kFirst);
  CHECK(outcome(store, "k", kFp, "bob") == Outcome::kFirst);
  CHECK(outcome(store, "k", kFp, "") == Outcome::kFirst);  // auth off
  // A different fingerprint under another scope is not a mismatch.
  CHECK(outcome(store, "k", kOtherFp, "carol") == Outcome::kFirst);
  // Scope and key cannot run into each other.
  CHECK(outcome(store, "bc", kFp, "a") == Outcome::kFirst);
  CHECK(outcome(store, "c", kFp, "ab") == Outcome::kFirst);
  CHECK(outcome(store, "", kFp, "abc") == Outcome::kFirst);
  CHECK(outcome(store, "1:abc", kFp, "") == Outcome::kFirst);
  CHECK(store.size() == 8);

  store.complete("alice", "k", response(200, "alice's"));
  CHECK(outcome(store, "k", kFp, "bob") == Outcome::kInProgress);
  store.complete("bob", "k", response(200, "bob's"));
  CHECK(store.begin("alice", "k", kFp).response->body == "alice's");
  CHECK(store.begin("bob", "k", kFp).response->body == "bob's");
  store.abandon("", "k");
  CHECK(outcome(store, "k", kFp, "") == Outcome::kFirst);
  CHECK(outcome(store, "k", kFp, "alice") == Outcome::kReplay);
}

TEST_CASE("IdempotencyStore: failures are not kept", "[idempotency]") {
  FakeClock clock;
  IdempotencyStore store(60s, 100, clock.fn());

  SECTION("abandon, then the retry runs again") {
    REQUIRE(outcome(store, "k") == Outcome::kFirst);
    store.abandon("alice", "k");
    CHECK(store.size() == 0);
    CHECK(outcome(store, "k") == Outcome::kFirst);
    // And the retry can now use another body: the key is free.
    store.abandon("alice", "k");
    CHECK(outcome(store, "k", kOtherFp) == Outcome::kFirst);
  }
  SECTION("complete() with a 5xx status abandons") {
    for (int status : {500, 502, 503, 504, 599}) {
      INFO("status " << status);
      REQUIRE(outcome(store, "k") == Outcome::kFirst);
      store.complete("alice", "k", response(status, "failed"));
      CHECK(store.size() == 0);
      CHECK(outcome(store, "k") == Outcome::kFirst);
      store.abandon("alice", "k");
    }
  }
  SECTION("4xx answers are kept: retrying cannot change them") {
    for (int status : {400, 404, 409, 429, 499}) {
      INFO("status " << status);
      const std::string key = "k" + std::to_string(status);
      REQUIRE(outcome(store, key) == Outcome::kFirst);
      store.complete("alice", key, response(status, "no"));
      auto replay = store.begin("alice", key, kFp);
      CHECK(replay.outcome == Outcome::kReplay);
      CHECK(replay.response->status == status);
    }
  }
  SECTION("abandon or complete of an unknown key does nothing") {
    store.abandon("alice", "nope");
    store.complete("alice", "nope", response(200, "x"));
    CHECK(store.size() == 0);
    CHECK(outcome(store, "nope") == Outcome::kFirst);
  }
}

TEST_CASE("IdempotencyStore: the window", "[idempotency]") {
  FakeClock clock;
  IdempotencyStore store(60s, 100, clock.fn());

  SECTION("runs from completion") {
    REQUIRE(outcome(store, "k") == Outcome::kFirst);
    clock.t += 50s;
    store.complete("alice", "k", response(200, "ok"));
    clock.t += 60s - 1ms;  // 110s after begin, 1ms short of the window after completion
    CHECK(outcome(store, "k") == Outcome::kReplay);
    clock.t += 1ms;
    CHECK(outcome(store, "k") == Outcome::kFirst);  // expired: runs again
    CHECK(store.size() == 1);
  }
  SECTION("a mismatch becomes a first run once expired") {
    REQUIRE(outcome(store, "k") == Outcome::kFirst);
    store.complete("alice", "k", response(200, "ok"));
    clock.t += 60s;
    CHECK(outcome(store, "k", kOtherFp) == Outcome::kFirst);
  }
  SECTION("an in-progress entry also expires, so a lost request frees its key") {
    REQUIRE(outcome(store, "k") == Outcome::kFirst);
    clock.t += 60s - 1ms;
    CHECK(outcome(store, "k") == Outcome::kInProgress);
    clock.t += 1ms;
    CHECK(outcome(store, "k") == Outcome::kFirst);
  }
  SECTION("a late complete() of an expired request is dropped") {
    REQUIRE(outcome(store, "k") == Outcome::kFirst);
    clock.t += 61s;
    store.complete("alice", "k", response(200, "late"));
    CHECK(store.size() == 0);
    CHECK(outcome(store, "k") == Outcome::kFirst);
  }
  SECTION("expired entries are purged by the next call") {
    for (int i = 0; i < 5; ++i) {
      REQUIRE(outcome(store, "k" + std::to_string(i)) == Outcome::kFirst);
      store.complete("alice", "k" + std::to_string(i), response(200, "ok"));
      clock.t += 10s;
    }
    // k0 completed at +0s … k4 at +40s; now is +50s.
    CHECK(store.size() == 5);
    clock.t += 15s;  // +65s: k0 expired at +60s
    CHECK(outcome(store, "k1") == Outcome::kReplay);
    CHECK(store.size() == 4);
    clock.t += 20s;  // +85s: k1 (+70s) and k2 (+80s) expired
    store.abandon("alice", "none");
    CHECK(store.size() == 2);
    CHECK(outcome(store, "k3") == Outcome::kReplay);
    CHECK(outcome(store, "k4") == Outcome::kReplay);
    CHECK(outcome(store, "k0") == Outcome::kFirst);
    CHECK(store.size() == 3);
  }
}

TEST_CASE("IdempotencyStore: maxEntries evicts the oldest first", "[idempotency]") {
  FakeClock clock;
  IdempotencyStore store(60s, 3, clock.fn());

  SECTION("in-progress entries count and go too") {
    REQUIRE(outcome(store, "a") == Outcome::kFirst);
    clock.t += 1s;
    REQUIRE(outcome(store, "b") == Outcome::kFirst);
    clock.t += 1s;
    REQUIRE(outcome(store, "c") == Outcome::kFirst);
    CHECK(store.size() == 3);
    clock.t += 1s;
    REQUIRE(outcome(store, "d") == Outcome::kFirst);  // evicts a (in progress)
    CHECK(store.size() == 3);
    CHECK(outcome(store, "b") == Outcome::kInProgress);
    CHECK(outcome(store, "c") == Outcome::kInProgress);
    CHECK(outcome(store, "d") == Outcome::kInProgress);
    // a's late answer must not come back, nor push anything out.
    store.complete("alice", "a", response(200, "late"));
    CHECK(store.size() == 3);
    CHECK(outcome(store, "a") == Outcome::kFirst);  // evicts b
    CHECK(outcome(store, "b") == Outcome::kFirst);  // evicts c
    CHECK(outcome(store, "d") == Outcome::kInProgress);
    CHECK(store.size() == 3);
  }
  SECTION("completed entries go in the order of completion") {
    REQUIRE(outcome(store, "a") == Outcome::kFirst);
    clock.t += 1s;
    REQUIRE(outcome(store, "b") == Outcome::kFirst);
    clock.t += 1s;
    store.complete("alice", "a", response(200, "a"));  // a's window starts now: younger than b
    REQUIRE(outcome(store, "c") == Outcome::kFirst);
    REQUIRE(outcome(store, "d") == Outcome::kFirst);  // evicts b
    CHECK(outcome(store, "a") == Outcome::kReplay);
    CHECK(outcome(store, "c") == Outcome::kInProgress);
    CHECK(outcome(store, "e") == Outcome::kFirst);  // evicts a
    CHECK(outcome(store, "c") == Outcome::kInProgress);
    CHECK(outcome(store, "a") == Outcome::kFirst);  // evicts c
    CHECK(outcome(store, "d") == Outcome::kInProgress);
  }
  SECTION("replays and mismatches do not add entries") {
    REQUIRE(outcome(store, "a") == Outcome::kFirst);
    store.complete("alice", "a", response(200, "a"));
    for (int i = 0; i < 10; ++i) {
      CHECK(outcome(store, "a") == Outcome::kReplay);
      CHECK(outcome(store, "a", kOtherFp) == Outcome::kMismatch);
    }
    CHECK(store.size() == 1);
  }
  SECTION("maxEntries 1") {
    IdempotencyStore one(60s, 1, clock.fn());
    REQUIRE(outcome(one, "a") == Outcome::kFirst);
    REQUIRE(outcome(one, "b") == Outcome::kFirst);
    CHECK(one.size() == 1);
    CHECK(outcome(one, "b") == Outcome::kInProgress);
    CHECK(outcome(one, "a") == Outcome::kFirst);
  }
}

TEST_CASE("IdempotencyStore: concurrent first requests run once", "[idempotency]") {
  IdempotencyStore store(60s, 1000);
  std::atomic<int> firsts{0}, inProgress{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 100; ++i) {
        auto o = store.begin("s", "k" + std::to_string(i), kFp).outcome;
        (o == Outcome::kFirst ? firsts : inProgress)++;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(firsts == 100);
  CHECK(inProgress == 700);
  CHECK(store.size() == 100);
}

TEST_CASE("IdempotencyStore: fingerprint", "[idempotency]") {
  // Known XXH3-128 values (as xxh128sum prints them).
  CHECK(IdempotencyStore::fingerprint("POST", "/v1/ids/orders", "") ==
        "POST /v1/ids/orders 99aa06d3014798d86001c324468d497f");
  CHECK(IdempotencyStore::fingerprint("POST", "/v1/locks/a?ttl=5", "abc") ==
        "POST /v1/locks/a?ttl=5 06b05ab6733a618578af5f94892f3950");

  const std::string base = IdempotencyStore::fingerprint("POST", "/x", "body");
  CHECK(base == IdempotencyStore::fingerprint("POST", "/x", "body"));  // deterministic
  CHECK(base.size() == std::string("POST /x ").size() + 32);
  CHECK(base != IdempotencyStore::fingerprint("PUT", "/x", "body"));
  CHECK(base != IdempotencyStore::fingerprint("POST", "/y", "body"));
  CHECK(base != IdempotencyStore::fingerprint("POST", "/x", "Body"));
  CHECK(base != IdempotencyStore::fingerprint("POST", "/x", "body "));
  CHECK(IdempotencyStore::fingerprint("POST", "/x", std::string_view("a\0b", 3)) !=
        IdempotencyStore::fingerprint("POST", "/x", "a"));
  CHECK(IdempotencyStore::fingerprint("POST", "/x?a=1", "") !=
        IdempotencyStore::fingerprint("POST", "/x?a=2", ""));
}

TEST_CASE("IdempotencyStore: bounded in bytes, with a share per principal", "[idempotency]") {
  FakeClock clock;
  constexpr size_t kShare = 16 * 1024;
  IdempotencyStore store(60s, IdempotencyLimits{100000, 64 * 1024, kShare}, clock.fn());
  const std::string body(1000, 'b');

  SECTION("one principal's flood evicts only its own answers") {
    REQUIRE(store.begin("bob", "b-1", kFp).outcome == Outcome::kFirst);
    store.complete("bob", "b-1", response(200, "bob's"));
    for (int i = 0; i < 500; ++i) {
      const std::string key = "m-" + std::to_string(i) + std::string(200, 'k');
      REQUIRE(store.begin("mallory", key, kFp).outcome == Outcome::kFirst);
      store.complete("mallory", key, response(200, body));
      CHECK(store.principalBytes("mallory") <= kShare);
    }
    CHECK(store.stats().quotaEvictions > 400);
    CHECK(store.stats().bytes <= 64 * 1024);
    auto bob = store.begin("bob", "b-1", kFp);
    CHECK(bob.outcome == Outcome::kReplay);
    CHECK(bob.response->body == "bob's");
    // Mallory's newest answer is still there; her oldest are gone.
    const std::string newest = "m-499" + std::string(200, 'k');
    CHECK(store.begin("mallory", newest, kFp).outcome == Outcome::kReplay);
    CHECK(store.begin("mallory", "m-0" + std::string(200, 'k'), kFp).outcome == Outcome::kFirst);
  }
  SECTION("many principals together: the store's bound, oldest first") {
    for (int i = 0; i < 200; ++i) {
      const std::string scope = "p" + std::to_string(i);
      REQUIRE(store.begin(scope, "k", kFp).outcome == Outcome::kFirst);
      store.complete(scope, "k", response(200, body));
      CHECK(store.stats().bytes <= 64 * 1024);
    }
    CHECK(store.stats().evictions > 100);
    CHECK(store.stats().quotaEvictions == 0);
    CHECK(store.begin("p199", "k", kFp).outcome == Outcome::kReplay);
    CHECK(store.begin("p0", "k", kFp).outcome == Outcome::kFirst);
  }
  SECTION("the anonymous scope has the whole store, not a share") {
    for (int i = 0; i < 40; ++i) {
      REQUIRE(store.begin("", "k" + std::to_string(i), kFp).outcome == Outcome::kFirst);
      store.complete("", "k" + std::to_string(i), response(200, body));
    }
    CHECK(store.principalBytes("") > kShare);
    CHECK(store.stats().quotaEvictions == 0);
  }
  SECTION("an answer over the share is not kept, and evicts nothing") {
    REQUIRE(store.begin("bob", "small", kFp).outcome == Outcome::kFirst);
    store.complete("bob", "small", response(200, "ok"));
    REQUIRE(store.begin("bob", "huge", kFp).outcome == Outcome::kFirst);
    store.complete("bob", "huge", response(200, std::string(kShare, 'h')));
    CHECK(store.begin("bob", "huge", kFp).outcome == Outcome::kFirst);
    CHECK(store.begin("bob", "small", kFp).outcome == Outcome::kReplay);
  }
  SECTION("bytes are given back on abandon and on expiry") {
    REQUIRE(store.begin("bob", "a", kFp).outcome == Outcome::kFirst);
    CHECK(store.stats().bytes > 0);
    store.abandon("bob", "a");
    CHECK(store.stats().bytes == 0);
    CHECK(store.principalBytes("bob") == 0);
    REQUIRE(store.begin("bob", "b", kFp).outcome == Outcome::kFirst);
    store.complete("bob", "b", response(200, body));
    clock.t += 61s;
    CHECK(store.begin("alice", "c", kFp).outcome == Outcome::kFirst);
    CHECK(store.principalBytes("bob") == 0);
    CHECK(store.stats().entries == 1);
  }
}
