// The lock service over REST, end to end: zmesh-lock and zmesh-gateway as
// real processes on free loopback ports, driven by a real HTTP client.
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "http_client.h"
#include "json_answer.h"
#include "process.h"

using namespace zmesh::testing;
using Catch::Matchers::Contains;
namespace json = boost::json;
using Clock = std::chrono::steady_clock;

namespace {

// A JSON number read as an integer, whatever Boost.JSON stored it as.
int64_t integer(const json::value& v) { return v.to_number<int64_t>(); }
// A token or id: a JSON string of decimal digits.
uint64_t decimal(const json::value& v) {
  REQUIRE(v.is_string());
  std::string text(v.as_string());
  REQUIRE(!text.empty());
  REQUIRE(text.find_first_not_of("0123456789") == std::string::npos);
  return std::stoull(text);
}

// zmesh-lock + zmesh-gateway (+ the broker with `events`). `gatewayExtra`
// goes into [gateway].
struct Mesh {
  TempDir dir;
  std::string path = dir.path() + "/mesh.toml";
  std::string lockEndpoint = tcpEndpoint(freePort());
  std::string xsub = tcpEndpoint(freePort());
  std::string brokerAdmin = tcpEndpoint(freePort());
  int port = freePort();
  std::optional<Process> broker, lock, gateway;

  explicit Mesh(const std::string& gatewayExtra = "", bool events = false) {
    std::ofstream out(path);
    if (events)
      out << "[broker]\nxsub = \"" << xsub << "\"\nxpub = \"" << tcpEndpoint(freePort())
          << "\"\nadmin = \"" << brokerAdmin << "\"\n\n";
    out << "[lock]\nendpoint = \"" << lockEndpoint << "\"\ndata_dir = \"" << dir.path()
        << "/lock\"\n\n[gateway]\nlisten = \"127.0.0.1:" << port << "\"\nendpoint = \""
        << tcpEndpoint(freePort()) << "\"\nthreads = 1\n"
        << gatewayExtra << "\n";
    out.close();
    if (events) {
      broker.emplace(std::vector<std::string>{bin("zmesh-broker"), "--config", path},
                     dir.path() + "/broker.log");
      requireHealthy(*broker, brokerAdmin);
    }
    std::vector<std::string> argv{bin("zmesh-lock"), "--config", path};
    if (!events) argv.insert(argv.end(), {"--broker", "none"});
    lock.emplace(argv, dir.path() + "/lock.log");
    requireHealthy(*lock, lockEndpoint, 15s);
    gateway.emplace(std::vector<std::string>{bin("zmesh-gateway"), "--config", path},
                    dir.path() + "/gateway.log");
    for (int i = 0; i < 200; ++i) {
      try {
        HttpClient client(port, 1s);
        if (client.get("/healthz").status == 200) return;
      } catch (const std::exception&) {
      }
      std::this_thread::sleep_for(25ms);
    }
    FAIL("gateway did not answer /healthz; log:\n" << readText(dir.path() + "/gateway.log"));
  }
};

std::string acquireBody(const std::string& owner, int64_t ttlMs, int64_t waitMs = 0,
                        const std::string& extra = "") {
  return "{\"owner\":\"" + owner + "\",\"ttl_ms\":" + std::to_string(ttlMs) +
         ",\"wait_ms\":" + std::to_string(waitMs) + extra + "}";
}

std::string releaseTarget(const std::string& name, const std::string& owner, uint64_t token) {
  return "/v1/locks/" + name + "?owner=" + owner + "&token=" + std::to_string(token);
}

// Waits until `count` requests wait for the lock (GET answers its waiters).
void awaitWaiters(HttpClient& http, const std::string& name, int64_t count) {
  auto deadline = Clock::now() + 5s;
  while (Clock::now() < deadline) {
    auto r = http.get("/v1/locks/" + name);
    if (r.status == 200 && integer(parse(r.body).at("waiters")) == count) return;
    std::this_thread::sleep_for(5ms);
  }
  FAIL("never " << count << " waiters for " << name);
}

// The value of one sample line of /metrics ("" when absent).
std::string metric(HttpClient& http, const std::string& series) {
  std::istringstream in(http.get("/metrics").body);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(series + " ", 0) == 0) return line.substr(series.size() + 1);
  return "";
}

}  // namespace

TEST_CASE("lock REST: acquire - conflict - release hands the lock to the waiter",
          "[lock][gateway]") {
  Mesh mesh;
  HttpClient http(mesh.port);

  auto a = http.post("/v1/locks/report", acquireBody("alice", 10000));
  REQUIRE(a.status == 200);
  CHECK(a.header("Content-Type") == "application/json");
  auto aToken = decimal(parse(a.body).at("token"));
  CHECK(aToken > 0);
  CHECK(integer(parse(a.body).at("expires_ms")) > 9000);
  CHECK(integer(parse(a.body).at("expires_ms")) <= 10000);

  // Held: another owner trying once gets 409 at once.
  auto started = Clock::now();
  auto busy = http.post("/v1/locks/report", acquireBody("bob", 10000, 0));
  CHECK(busy.status == 409);
  CHECK(errorCode(busy) == "CONFLICT");
  CHECK(Clock::now() - started < 2s);

  // bob waits; alice releases; bob is granted with a higher token.
  std::optional<HttpResponse> granted;
  std::jthread waiter([&] {
    try {  // no Catch2 assertion on this thread
      HttpClient client(mesh.port, 20s);
      granted = client.post("/v1/locks/report", acquireBody("bob", 10000, 10000));
    } catch (const std::exception&) {
    }
  });
  awaitWaiters(http, "report", 1);
  auto released = http.request(http::verb::delete_, releaseTarget("report", "alice", aToken));
  CHECK(released.status == 204);
  CHECK(released.body.empty());
  waiter.join();
  REQUIRE(granted);
  REQUIRE(granted->status == 200);
  auto bToken = decimal(parse(granted->body).at("token"));
  CHECK(bToken > aToken);

  auto info = http.get("/v1/locks/report");
  REQUIRE(info.status == 200);
  auto i = parse(info.body);
  CHECK(i.at("name").as_string() == "report");
  REQUIRE(i.at("holders").as_array().size() == 1);
  auto& holder = i.at("holders").as_array()[0];
  CHECK(holder.at("owner").as_string() == "bob");
  CHECK(decimal(holder.at("token")) == bToken);
  CHECK(integer(holder.at("expires_ms")) > 0);
  CHECK(integer(holder.at("expires_ms")) <= 10000);
  CHECK(holder.at("mode").as_string() == "exclusive");
  CHECK(holder.at("session").as_string() == "0");
  CHECK(integer(i.at("waiters")) == 0);
  CHECK(integer(i.at("permits")) == 0);
  CHECK(decimal(i.at("last_token")) == bToken);
  CHECK(integer(i.at("delayed_ms")) == 0);

  // alice no longer holds it: release and renew with her token are refused.
  auto again = http.request(http::verb::delete_, releaseTarget("report", "alice", aToken));
  CHECK(again.status == 409);
  CHECK(errorCode(again) == "CONFLICT");
  auto wrongToken =
      http.post("/v1/locks/report/renew",
                R"({"owner":"bob","token":")" + std::to_string(aToken) + R"(","ttl_ms":5000})");
  CHECK(wrongToken.status == 409);
  auto wrongOwner =
      http.post("/v1/locks/report/renew",
                R"({"owner":"alice","token":")" + std::to_string(bToken) + R"(","ttl_ms":5000})");
  CHECK(wrongOwner.status == 409);
  auto renewed =
      http.post("/v1/locks/report/renew",
                R"({"owner":"bob","token":")" + std::to_string(bToken) + R"(","ttl_ms":60000})");
  REQUIRE(renewed.status == 200);
  CHECK(integer(parse(renewed.body).at("expires_ms")) > 50000);
  CHECK(integer(parse(renewed.body).at("expires_ms")) <= 60000);

  auto valid =
      http.post("/v1/locks/report/validate", R"({"token":")" + std::to_string(bToken) + R"("})");
  REQUIRE(valid.status == 200);
  CHECK(parse(valid.body).at("valid").as_bool());
  CHECK(decimal(parse(valid.body).at("current")) == bToken);
  auto stale =
      http.post("/v1/locks/report/validate", R"({"token":")" + std::to_string(aToken) + R"("})");
  REQUIRE(stale.status == 200);
  CHECK_FALSE(parse(stale.body).at("valid").as_bool());
  CHECK(decimal(parse(stale.body).at("current")) == bToken);

  CHECK(http.request(http::verb::delete_, releaseTarget("report", "bob", bToken)).status == 204);
  auto free = http.get("/v1/locks/report");
  CHECK(free.status == 404);
  CHECK(errorCode(free) == "NOT_FOUND");
  // The freed name's last token is remembered.
  auto after =
      http.post("/v1/locks/report/validate", R"({"token":")" + std::to_string(bToken) + R"("})");
  CHECK_FALSE(parse(after.body).at("valid").as_bool());
  CHECK(decimal(parse(after.body).at("current")) == bToken);
  CHECK(http.get("/v1/locks/never-used").status == 404);

  CHECK(metric(http,
               "zmesh_gateway_requests_total{method=\"POST\",route=\"/v1/locks/{name}\","
               "status=\"409\"}") == "1");
}

TEST_CASE("lock REST: shared holders and a semaphore", "[lock][gateway]") {
  Mesh mesh;
  HttpClient http(mesh.port);
  auto shared = R"(,"mode":"shared")";
  auto r1 = http.post("/v1/locks/doc", acquireBody("r1", 10000, 0, shared));
  auto r2 = http.post("/v1/locks/doc", acquireBody("r2", 10000, 0, shared));
  REQUIRE(r1.status == 200);
  REQUIRE(r2.status == 200);
  CHECK(decimal(parse(r2.body).at("token")) > decimal(parse(r1.body).at("token")));
  CHECK(http.post("/v1/locks/doc", acquireBody("w", 10000)).status == 409);
  auto info = parse(http.get("/v1/locks/doc").body);
  REQUIRE(info.at("holders").as_array().size() == 2);
  for (auto& h : info.at("holders").as_array()) CHECK(h.at("mode").as_string() == "shared");

  auto permits = R"(,"permits":2)";
  CHECK(http.post("/v1/locks/pool", acquireBody("p1", 10000, 0, permits)).status == 200);
  CHECK(http.post("/v1/locks/pool", acquireBody("p2", 10000, 0, permits)).status == 200);
  CHECK(http.post("/v1/locks/pool", acquireBody("p3", 10000, 0, permits)).status == 409);
  // Every acquire of a semaphore names the same count.
  CHECK(http.post("/v1/locks/pool", acquireBody("p3", 10000, 0, R"(,"permits":3)")).status == 409);
  auto pool = parse(http.get("/v1/locks/pool").body);
  CHECK(integer(pool.at("permits")) == 2);
  CHECK(pool.at("holders").as_array().size() == 2);
}

TEST_CASE("lock REST: a wait longer than the request timeout is answered - not 504",
          "[lock][gateway]") {
  Mesh mesh("request_timeout = \"500ms\"\n");
  HttpClient http(mesh.port);
  auto a = http.post("/v1/locks/slow", acquireBody("alice", 30000));
  REQUIRE(a.status == 200);
  auto aToken = decimal(parse(a.body).at("token"));

  SECTION("granted after a wait of twice the request timeout") {
    std::optional<HttpResponse> granted;
    std::jthread waiter([&] {
      try {
        HttpClient client(mesh.port, 20s);
        granted = client.post("/v1/locks/slow", acquireBody("bob", 10000, 5000));
      } catch (const std::exception&) {
      }
    });
    awaitWaiters(http, "slow", 1);
    std::this_thread::sleep_for(1s);
    CHECK(http.request(http::verb::delete_, releaseTarget("slow", "alice", aToken)).status == 204);
    waiter.join();
    REQUIRE(granted);
    CHECK(granted->status == 200);
  }
  SECTION("a wait that runs out is 409 after the wait") {
    auto started = Clock::now();
    auto r = http.post("/v1/locks/slow", acquireBody("bob", 10000, 1200));
    auto waited = Clock::now() - started;
    CHECK(r.status == 409);
    CHECK(errorCode(r) == "CONFLICT");
    CHECK(waited >= 1100ms);
    CHECK(waited < 5s);
  }
}

TEST_CASE("lock REST: a resent acquire gets the same grant with the time left now",
          "[lock][gateway]") {
  Mesh mesh;
  HttpClient http(mesh.port);
  // With an Idempotency-Key too: a stored answer would replay the time left
  // as it was, so acquire does not use one.
  std::vector<std::pair<std::string, std::string>> key{{"Idempotency-Key", "k-1"}};
  auto first = http.post("/v1/locks/job", acquireBody("alice", 10000), key);
  REQUIRE(first.status == 200);
  std::this_thread::sleep_for(300ms);
  auto second = http.post("/v1/locks/job", acquireBody("alice", 10000), key);
  REQUIRE(second.status == 200);
  CHECK(second.header("Idempotent-Replayed").empty());
  CHECK(decimal(parse(second.body).at("token")) == decimal(parse(first.body).at("token")));
  CHECK(integer(parse(second.body).at("expires_ms")) <=
        integer(parse(first.body).at("expires_ms")) - 250);
}

TEST_CASE("lock REST: bad input answers 400 naming what was wrong", "[lock][gateway]") {
  Mesh mesh;
  HttpClient http(mesh.port);
  struct Case {
    http::verb method;
    std::string target;
    std::string body;
    std::string message;  // contained in the error message
  };
  auto post = http::verb::post;
  const std::vector<Case> cases = {
      {post, "/v1/locks/a", "", "the body is empty"},
      {post, "/v1/locks/a", R"({"owner":"x","ttl_ms":1000)", "malformed JSON"},
      {post, "/v1/locks/a", R"([1])", "the body must be a JSON object"},
      // A wrong type, a missing owner, a negative ttl: each named.
      {post, "/v1/locks/a", R"({"owner":"x","ttl_ms":"1000"})",
       "ttl_ms: expected an integer from 1 to"},
      {post, "/v1/locks/a", R"({"ttl_ms":1000})", "owner: missing"},
      {post, "/v1/locks/a", R"({"owner":"x","ttl_ms":-5})", "ttl_ms: expected an integer from 1"},
      {post, "/v1/locks/a", R"({"owner":"x","ttl_ms":1000,"wait_ms":1.5})",
       "wait_ms: expected an integer from 0"},
      {post, "/v1/locks/a", R"({"owner":"x","ttl_ms":1000,"mode":"both"})",
       "mode: expected \"exclusive\" or \"shared\", got \"both\""},
      {post, "/v1/locks/a", R"({"owner":"x","ttl_ms":1000,"permits":-1})", "permits:"},
      {post, "/v1/locks/a", R"({"owner":"x","ttl_ms":1000,"session":5})", "session:"},
      {post, "/v1/locks/a", R"({"owner":"x","ttl_ms":1000,"ttl":1})", "unknown field \"ttl\""},
      // The service's own checks, through the status mapping.
      {post, "/v1/locks/a", R"({"owner":"x","ttl_ms":1})", "ttl"},
      {post, "/v1/locks/bad%20name", R"({"owner":"x","ttl_ms":1000})", "name"},
      {post, "/v1/locks/a", R"({"owner":")" + std::string(129, 'o') + R"(","ttl_ms":1000})",
       "owner"},
      // A token that is not a decimal string.
      {post, "/v1/locks/a/renew", R"({"owner":"x","token":42,"ttl_ms":1000})",
       "token: expected a string of decimal digits"},
      {post, "/v1/locks/a/renew", R"({"owner":"x","token":"abc","ttl_ms":1000})",
       "token: expected a string of decimal digits"},
      {post, "/v1/locks/a/renew", R"({"owner":"x","ttl_ms":1000})", "token: missing"},
      {post, "/v1/locks/a/renew", R"({"owner":"x","token":"1"})", "ttl_ms: missing"},
      {post, "/v1/locks/a/validate", R"({})", "token: missing"},
      {post, "/v1/locks/a/validate", R"({"token":-1})", "token: expected a string"},
      {http::verb::delete_, "/v1/locks/a?token=1", "", "query parameter owner: missing"},
      {http::verb::delete_, "/v1/locks/a?owner=x", "", "query parameter token: missing"},
      {http::verb::delete_, "/v1/locks/a?owner=x&token=1x", "",
       "query parameter token must be a decimal 64-bit unsigned integer, got \"1x\""},
  };
  for (auto& c : cases) {
    INFO(http::to_string(c.method) << " " << c.target << " " << c.body);
    auto r = http.request(c.method, c.target, c.body, {{"X-Request-Id", "bad-1"}});
    CHECK(r.status == 400);
    CHECK(errorCode(r) == "INVALID_ARGUMENT");
    CHECK_THAT(errorMessage(r), Contains(c.message));
    CHECK(parse(r.body).at("error").at("request_id").as_string() == "bad-1");
  }

  SECTION("wrong methods: 405 with Allow") {
    auto put = http.request(http::verb::put, "/v1/locks/a", "{}");
    CHECK(put.status == 405);
    CHECK(errorCode(put) == "METHOD_NOT_ALLOWED");
    CHECK(put.header("Allow") == "POST, DELETE, GET");
    auto getRenew = http.get("/v1/locks/a/renew");
    CHECK(getRenew.status == 405);
    CHECK(getRenew.header("Allow") == "POST");
    CHECK(http.request(http::verb::delete_, "/v1/locks/a/validate").status == 405);
  }
  // Nothing above took anything or hurt the gateway or the service.
  CHECK(http.get("/v1/locks/a").status == 404);
  CHECK(http.post("/v1/locks/a", acquireBody("x", 1000)).status == 200);
}

TEST_CASE("lock REST: readyz lists the lock service and SSE carries lock events as JSON",
          "[lock][gateway][sse]") {
  Mesh mesh("", /*events=*/true);
  HttpClient http(mesh.port);
  auto ready = http.get("/readyz");
  CHECK(ready.status == 200);
  bool listed = false;
  auto readiness = parse(ready.body);
  for (auto& s : readiness.at("services").as_array())
    if (s.at("service").as_string() == "lock") listed = s.at("state").as_string() == "up";
  CHECK(listed);

  SseClient stream(mesh.port, "/v1/events?topic=lock.acquired");
  REQUIRE(stream.status() == 200);
  // A new publisher's first events may be dropped before its connection is
  // up: acquire and release until one arrives.
  std::optional<SseEvent> event;
  uint64_t token = 0;
  for (int i = 0; i < 100 && !event; ++i) {
    auto a = http.post("/v1/locks/evt", acquireBody("alice", 10000));
    REQUIRE(a.status == 200);
    token = decimal(parse(a.body).at("token"));
    REQUIRE(http.request(http::verb::delete_, releaseTarget("evt", "alice", token)).status == 204);
    for (auto e = stream.next(100ms); e; e = stream.next(100ms))
      if (!e->comment) {
        event = e;
        break;
      }
  }
  REQUIRE(event);
  CHECK(event->event == "lock.acquired");
  auto data = parse(event->data);
  CHECK(data.at("topic").as_string() == "lock.acquired");
  auto& body = data.at("body");
  INFO("data: " << event->data);
  CHECK(body.at("name").as_string() == "evt");
  CHECK(body.at("owner").as_string() == "alice");
  CHECK(decimal(body.at("token")) > 0);  // 64-bit: a string
  CHECK(body.at("mode").as_string() == "exclusive");
}
