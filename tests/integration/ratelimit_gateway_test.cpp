// The rate limiter over REST, end to end: zmesh-ratelimit and zmesh-gateway as
// real processes on free loopback ports, driven by a real HTTP client. Also the
// gateway's own per-token limit (the only 429), leased through the same service.
#include <signal.h>
#include <sys/wait.h>

#include <array>
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <sstream>
#include <thread>

#include "http_client.h"
#include "json_answer.h"
#include "process.h"

using namespace zmesh::testing;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;
namespace json = boost::json;

namespace {

// A JSON number read as an integer, whatever Boost.JSON stored it as.
int64_t integer(const json::value& v) { return v.to_number<int64_t>(); }

// Windows of an hour: a test's few seconds never reach the end of one (and a
// fixed window's edge, aligned on the service's clock, almost never falls in them).
constexpr const char* kRules = R"(
[ratelimit.rules.api]
algorithm = "sliding_window_log"
limit = 3
window = "1h"
descriptors = ["key"]

[ratelimit.rules.tr]
algorithm = "fixed_window"
limit = 2
window = "1h"
descriptors = ["tenant", "route"]

[ratelimit.rules.gw]
algorithm = "fixed_window"
limit = 4
window = "1h"
descriptors = ["caller"]
)";

// zmesh-ratelimit + zmesh-gateway. `gatewayExtra` goes into [gateway] (and
// may open tables after it); startRatelimit = false leaves the service down.
struct Mesh {
  TempDir dir;
  std::string path = dir.path() + "/mesh.toml";
  std::string ratelimitEndpoint = tcpEndpoint(freePort());
  int port = freePort();
  std::optional<Process> ratelimit, gateway;

  explicit Mesh(const std::string& gatewayExtra = "", bool startRatelimit = true) {
    std::ofstream out(path);
    out << "[ratelimit]\nendpoint = \"" << ratelimitEndpoint << "\"\ndata_dir = \"" << dir.path()
        << "/ratelimit\"\n"
        // Leases last as long as the test: a slow machine does not see tokens lapse.
        << "lease_max = \"1h\"\n"
        << kRules << "\n[gateway]\nlisten = \"127.0.0.1:" << port << "\"\nendpoint = \""
        << tcpEndpoint(freePort()) << "\"\nthreads = 1\n"
        << gatewayExtra << "\n";
    out.close();
    if (startRatelimit) {
      ratelimit.emplace(std::vector<std::string>{bin("zmesh-ratelimit"), "--config", path},
                        dir.path() + "/ratelimit.log");
      requireHealthy(*ratelimit, ratelimitEndpoint, 15s);
    }
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

// The value of one sample line of /metrics ("" when absent).
std::string metric(HttpClient& http, const std::string& series) {
  auto text = http.get("/metrics").body;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(series + " ", 0) == 0) return line.substr(series.size() + 1);
  return "";
}

// "<rule>";r=<remaining>;t=<seconds>: the seconds.
int64_t headerSeconds(const std::string& header, const std::string& param) {
  std::smatch m;
  REQUIRE(std::regex_search(header, m, std::regex(";" + param + "=([0-9]+)")));
  return std::stoll(m[1]);
}

}  // namespace

TEST_CASE("ratelimit REST: check decides with RateLimit headers and Retry-After",
          "[ratelimit][gateway]") {
  Mesh mesh;
  HttpClient http(mesh.port);

  for (int remaining : {2, 1, 0}) {
    INFO("remaining " << remaining);
    auto r = http.post("/v1/ratelimit/check", R"({"rule":"api","key":"alice"})");
    REQUIRE(r.status == 200);
    CHECK(r.header("Content-Type") == "application/json");
    auto d = parse(r.body);
    CHECK(d.at("allowed").as_bool());
    CHECK(integer(d.at("limit")) == 3);
    CHECK(integer(d.at("remaining")) == remaining);
    CHECK(integer(d.at("retry_after_ms")) == 0);
    CHECK(integer(d.at("reset_ms")) > 3'500'000);
    CHECK(integer(d.at("reset_ms")) <= 3'600'000);
    CHECK(d.at("rule").as_string() == "api");
    // Only when set.
    CHECK_FALSE(d.as_object().contains("shadow_denied"));
    CHECK_FALSE(d.as_object().contains("reason"));
    CHECK_FALSE(d.as_object().contains("untracked"));
    CHECK(r.header("RateLimit-Policy") == "\"api\";q=3;w=3600");
    CHECK_THAT(r.header("RateLimit"), StartsWith("\"api\";r=" + std::to_string(remaining) + ";t="));
    CHECK(headerSeconds(r.header("RateLimit"), "t") > 3500);
    CHECK(headerSeconds(r.header("RateLimit"), "t") <= 3600);
    CHECK(r.header("Retry-After").empty());
  }

  SECTION("over the limit: still 200, allowed false, Retry-After in whole seconds") {
    auto r = http.post("/v1/ratelimit/check", R"({"rule":"api","key":"alice"})");
    REQUIRE(r.status == 200);
    auto d = parse(r.body);
    CHECK_FALSE(d.at("allowed").as_bool());
    CHECK(integer(d.at("remaining")) == 0);
    auto retryMs = integer(d.at("retry_after_ms"));
    CHECK(retryMs > 3'500'000);
    CHECK(retryMs <= 3'600'000);
    CHECK(std::stoll(r.header("Retry-After")) == (retryMs + 999) / 1000);
    CHECK(r.header("RateLimit-Policy") == "\"api\";q=3;w=3600");
    CHECK_THAT(r.header("RateLimit"), StartsWith("\"api\";r=0;t="));
  }
  SECTION("key and descriptors name the same limit for a rule keyed on one descriptor") {
    auto r = http.post("/v1/ratelimit/check", R"({"rule":"api","descriptors":{"key":"alice"}})");
    REQUIRE(r.status == 200);
    CHECK_FALSE(parse(r.body).at("allowed").as_bool());
    auto other = http.post("/v1/ratelimit/check", R"({"rule":"api","descriptors":{"key":"bob"}})");
    CHECK(integer(parse(other.body).at("remaining")) == 2);
  }
  SECTION("cost: taken at once; 0 only reads; above the capacity, denied for good") {
    auto r = http.post("/v1/ratelimit/check", R"({"rule":"api","key":"carol","cost":2})");
    CHECK(integer(parse(r.body).at("remaining")) == 1);
    auto read = http.post("/v1/ratelimit/check", R"({"rule":"api","key":"carol","cost":0})");
    CHECK(parse(read.body).at("allowed").as_bool());
    CHECK(integer(parse(read.body).at("remaining")) == 1);
    auto never = http.post("/v1/ratelimit/check", R"({"rule":"api","key":"dave","cost":4})");
    REQUIRE(never.status == 200);
    auto d = parse(never.body);
    CHECK_FALSE(d.at("allowed").as_bool());
    CHECK_THAT(std::string(d.at("reason").as_string()), Contains("capacity"));
    CHECK(never.header("Retry-After").empty());  // waiting cannot help
  }
  SECTION("descriptors of a rule keyed on two") {
    std::string body = R"({"rule":"tr","descriptors":{"tenant":"acme","route":"/orders"}})";
    CHECK(integer(parse(http.post("/v1/ratelimit/check", body).body).at("remaining")) == 1);
    CHECK(integer(parse(http.post("/v1/ratelimit/check", body).body).at("remaining")) == 0);
    auto denied = http.post("/v1/ratelimit/check", body);
    CHECK_FALSE(parse(denied.body).at("allowed").as_bool());
    CHECK(std::stoll(denied.header("Retry-After")) >= 1);
    CHECK(denied.header("RateLimit-Policy") == "\"tr\";q=2;w=3600");
    // The other route of the tenant is another key.
    CHECK(parse(http.post("/v1/ratelimit/check",
                          R"({"rule":"tr","descriptors":{"tenant":"acme","route":"/pay"}})")
                    .body)
              .at("allowed")
              .as_bool());
  }
}

TEST_CASE("ratelimit REST: bad input answers 400 naming what was wrong", "[ratelimit][gateway]") {
  Mesh mesh;
  HttpClient http(mesh.port);
  struct Case {
    std::string body;
    std::string message;  // contained in the error message
  };
  // Each almost right: one thing wrong.
  const std::vector<Case> checks = {
      {"", "the body is empty"},
      {R"({"rule":"api","key":"a")", "malformed JSON at byte 23"},
      {R"({"rule":"api","key":"a"} x)", "malformed JSON at byte 25"},
      {R"([{"rule":"api","key":"a"}])", "the body must be a JSON object, got [{"},
      {R"("api")", "the body must be a JSON object, got \"api\""},
      {R"({"key":"a"})", "rule: missing"},
      {R"({"rule":5,"key":"a"})", "rule: expected a string, got 5"},
      {R"({"rule":"","key":"a"})", "rule: must not be empty"},
      {R"({"rule":"api","key":5})", "key: expected a string, got 5"},
      {R"({"rule":"tr","descriptors":{"tenant":5,"route":"/o"}})",
       "descriptors.tenant: expected a string, got 5"},
      {R"({"rule":"tr","descriptors":{"tenant":"acme","route":null}})",
       "descriptors.route: expected a string, got null"},
      {R"({"rule":"tr","descriptors":["acme","/o"]})",
       "descriptors: expected an object of strings (descriptor name to value), got [\"acme\""},
      {R"({"rule":"api","key":"a","cost":-1})",
       "cost: expected an integer from 0 to 4294967295, got -1"},
      {R"({"rule":"api","key":"a","cost":1.5})",
       "cost: expected an integer from 0 to 4294967295, got 1.5"},
      {R"({"rule":"api","key":"a","cost":4294967296})",
       "cost: expected an integer from 0 to 4294967295, got 4294967296"},
      {R"({"rule":"api","key":"a","cost":"1"})",
       "cost: expected an integer from 0 to 4294967295, got \"1\""},
      {R"({"rule":"api","key":"a","cost":true})",
       "cost: expected an integer from 0 to 4294967295, got true"},
      {R"({"rule":"api","key":"a","costs":1})",
       "unknown field \"costs\" (known: rule, key, descriptors, cost)"},
      {R"({"rule":"api","key":"a","descriptors":{"key":"a"}})",
       "give either key or descriptors, not both"},
      {R"({"rule":"api"})", "give descriptors"},
      // The service's own checks, through the status mapping.
      {R"({"rule":"tr","key":"acme"})", "give descriptors, not key"},
      {R"({"rule":"tr","descriptors":{"tenant":"acme"}})", "missing route"},
  };
  for (auto& c : checks) {
    INFO("body: " << c.body);
    auto r = http.post("/v1/ratelimit/check", c.body, {{"X-Request-Id", "bad-1"}});
    CHECK(r.status == 400);
    CHECK(errorCode(r) == "INVALID_ARGUMENT");
    CHECK_THAT(errorMessage(r), Contains(c.message));
    CHECK(parse(r.body).at("error").at("request_id").as_string() == "bad-1");
  }
  // An integral number in another spelling is still the integer.
  CHECK(http.post("/v1/ratelimit/check", R"({"rule":"api","key":"a","cost":1.0})").status == 200);

  const std::vector<Case> overrides = {
      {R"({"limit":10})", "descriptors: missing"},
      {R"({"descriptors":{"key":"a"}})", "limit: missing"},
      {R"({"descriptors":{"key":"a"},"limit":"10"})", "limit: expected an integer from 1 to"},
      {R"({"descriptors":{"key":"a"},"limit":0})", "limit: expected an integer from 1 to"},
      {R"({"descriptors":{"key":"a"},"limit":10,"burst":-1})", "burst: expected an integer from 0"},
      {R"({"descriptors":{"key":7},"limit":10})", "descriptors.key: expected a string, got 7"},
      {R"({"descriptors":{"key":"a"},"limit":10,"ttl":5})", "unknown field \"ttl\""},
      {R"({"descriptors":{"key":"a"},"limit":10)", "malformed JSON"},
      {R"({"descriptors":{"tenant":"a"},"limit":10})", "tenant"},  // not a descriptor of api
  };
  for (auto& c : overrides) {
    INFO("body: " << c.body);
    auto r = http.request(http::verb::put, "/v1/ratelimit/overrides/api", c.body);
    CHECK(r.status == 400);
    CHECK(errorCode(r) == "INVALID_ARGUMENT");
    CHECK_THAT(errorMessage(r), Contains(c.message));
  }

  SECTION("an unknown rule: 404") {
    auto r = http.post("/v1/ratelimit/check", R"({"rule":"nope","key":"a"})");
    CHECK(r.status == 404);
    CHECK(errorCode(r) == "NOT_FOUND");
    CHECK_THAT(errorMessage(r), Contains("nope"));
    auto o = http.request(http::verb::put, "/v1/ratelimit/overrides/nope",
                          R"({"descriptors":{"key":"a"},"limit":10})");
    CHECK(o.status == 404);
  }
  SECTION("wrong methods: 405 with Allow") {
    auto r = http.get("/v1/ratelimit/check");
    CHECK(r.status == 405);
    CHECK(r.header("Allow") == "POST");
  }
  // Nothing above hurt the gateway or the service.
  CHECK(http.post("/v1/ratelimit/check", R"({"rule":"api","key":"after"})").status == 200);
}

TEST_CASE("ratelimit REST: rules and an override a check then sees", "[ratelimit][gateway]") {
  Mesh mesh;
  HttpClient http(mesh.port);
  auto rules = [&] {
    auto r = http.get("/v1/ratelimit/rules");
    REQUIRE(r.status == 200);
    std::map<std::string, json::object> byName;
    auto doc = parse(r.body);
    for (auto& rule : doc.at("rules").as_array())
      byName[std::string(rule.at("name").as_string())] = rule.as_object();
    return byName;
  };
  auto before = rules();
  REQUIRE(before.size() == 3);
  auto& api = before.at("api");
  CHECK(api.at("algorithm").as_string() == "sliding_window_log");
  CHECK(integer(api.at("limit")) == 3);
  CHECK(integer(api.at("window_ms")) == 3'600'000);
  CHECK(integer(api.at("burst")) == 3);
  CHECK(api.at("descriptors") == json::array{"key"});
  CHECK_FALSE(api.at("shadow_mode").as_bool());
  CHECK(api.at("overrides").as_array().empty());
  CHECK(api.at("runtime_overrides").as_array().empty());
  CHECK(before.at("tr").at("descriptors") == json::array{"tenant", "route"});

  auto put = http.request(http::verb::put, "/v1/ratelimit/overrides/tr",
                          R"({"descriptors":{"tenant":"acme"},"limit":10})");
  REQUIRE(put.status == 204);
  CHECK(put.body.empty());

  auto after = rules();
  auto& runtime = after.at("tr").at("runtime_overrides").as_array();
  REQUIRE(runtime.size() == 1);
  CHECK(runtime[0].at("descriptors") == json::object{{"tenant", "acme"}});
  CHECK(integer(runtime[0].at("limit")) == 10);
  CHECK(integer(runtime[0].at("burst")) == 0);

  auto r = http.post("/v1/ratelimit/check",
                     R"({"rule":"tr","descriptors":{"tenant":"acme","route":"/orders"}})");
  REQUIRE(r.status == 200);
  CHECK(integer(parse(r.body).at("limit")) == 10);
  CHECK(integer(parse(r.body).at("remaining")) == 9);
  CHECK(r.header("RateLimit-Policy") == "\"tr\";q=10;w=3600");
  // Another tenant keeps the rule's limit.
  auto other = http.post("/v1/ratelimit/check",
                         R"({"rule":"tr","descriptors":{"tenant":"umbrella","route":"/orders"}})");
  CHECK(integer(parse(other.body).at("limit")) == 2);

  SECTION("putting it again replaces it, with a burst") {
    REQUIRE(http.request(http::verb::put, "/v1/ratelimit/overrides/tr",
                         R"({"descriptors":{"tenant":"acme"},"limit":20,"burst":20})")
                .status == 204);
    auto runtime2 = rules().at("tr").at("runtime_overrides").as_array();
    REQUIRE(runtime2.size() == 1);
    CHECK(integer(runtime2[0].at("limit")) == 20);
  }
  SECTION("the override survives a restart of the service") {
    mesh.ratelimit->stop();
    mesh.ratelimit.emplace(std::vector<std::string>{bin("zmesh-ratelimit"), "--config", mesh.path},
                           mesh.dir.path() + "/ratelimit2.log");
    requireHealthy(*mesh.ratelimit, mesh.ratelimitEndpoint, 15s);
    CHECK(rules().at("tr").at("runtime_overrides").as_array().size() == 1);
  }
}

TEST_CASE("gateway: its own per-token limit answers 429 with RateLimit headers",
          "[ratelimit][gateway]") {
  Mesh mesh(
      "ratelimit_rule = \"gw\"\nratelimit_batch = 2\n"
      "[gateway.tokens.alice]\ntoken = \"alice-secret\"\nscopes = [\"ratelimit\"]\n"
      "[gateway.tokens.bob]\ntoken = \"bob-secret\"\nscopes = [\"ratelimit\"]\n");
  HttpClient http(mesh.port);
  auto as = [](const char* token) {
    return std::vector<std::pair<std::string, std::string>>{
        {"Authorization", std::string("Bearer ") + token}};
  };
  // gw allows 4 an hour per caller: alice's first four pass, in two leases of 2.
  for (int i = 0; i < 4; ++i) {
    INFO("request " << i);
    auto r = http.get("/v1/ratelimit/rules", as("alice-secret"));
    REQUIRE(r.status == 200);
  }
  auto over = http.get("/v1/ratelimit/rules", as("alice-secret"));
  REQUIRE(over.status == 429);
  CHECK(errorCode(over) == "RESOURCE_EXHAUSTED");
  CHECK_THAT(errorMessage(over), Contains("gw"));
  auto retry = std::stoll(over.header("Retry-After"));
  CHECK(retry >= 1);
  CHECK(retry <= 3600);
  CHECK(over.header("RateLimit-Policy") == "\"gw\";q=4;w=3600");
  CHECK_THAT(over.header("RateLimit"), StartsWith("\"gw\";r=0;t="));
  CHECK(headerSeconds(over.header("RateLimit"), "t") <= 3600);
  CHECK(!over.header("X-Request-Id").empty());

  // Remembered: the next one is denied without asking the service.
  CHECK(http.get("/v1/ratelimit/rules", as("alice-secret")).status == 429);
  // Another token is another caller.
  CHECK(http.get("/v1/ratelimit/rules", as("bob-secret")).status == 200);
  // Public routes are not limited; no token at all is a 401 before any limit.
  CHECK(http.get("/healthz").status == 200);
  CHECK(http.get("/v1/ratelimit/rules").status == 401);

  CHECK(metric(http, "zmesh_gateway_ratelimit_admitted_total") == "5");
  CHECK(metric(http, "zmesh_gateway_ratelimit_denied_total") == "2");
  CHECK(metric(http, "zmesh_gateway_ratelimit_leases_total") == "4");  // alice 3, bob 1
  CHECK(metric(http, "zmesh_gateway_ratelimit_lease_failures_total") == "0");
  CHECK(metric(http,
               "zmesh_gateway_requests_total{method=\"GET\",route=\"/v1/ratelimit/rules\","
               "status=\"429\"}") == "2");

  SECTION("the service sees each caller's leases under the rule") {
    auto check = http.post("/v1/ratelimit/check", R"({"rule":"gw","key":"alice","cost":0})",
                           as("bob-secret"));
    REQUIRE(check.status == 200);
    CHECK(integer(parse(check.body).at("remaining")) == 0);
  }
}

TEST_CASE("gateway: one lease in flight per caller with a bounded queue behind it",
          "[ratelimit][gateway]") {
  Mesh mesh("ratelimit_rule = \"gw\"\nratelimit_batch = 4\nratelimit_queue = 2\n");
  using Clock = std::chrono::steady_clock;
  constexpr int kRequests = 6;
  std::array<int, kRequests> status{};
  std::array<Clock::time_point, kRequests> answered{};
  std::vector<std::thread> threads;
  Clock::time_point resumed;
  {
    // The service answers nothing: the first request's lease stays in flight.
    Paused paused(mesh.ratelimit->pid());
    for (int i = 0; i < kRequests; ++i) {
      threads.emplace_back([&, i] {
        try {  // no Catch2 assertion on this thread: a failure shows as status -1
          HttpClient client(mesh.port);
          status[i] = client.get("/v1/ratelimit/rules").status;
        } catch (const std::exception&) {
          status[i] = -1;
        }
        answered[i] = Clock::now();
      });
      std::this_thread::sleep_for(100ms);  // in this order at the gateway
    }
    std::this_thread::sleep_for(200ms);
    resumed = Clock::now();
  }
  for (auto& thread : threads) thread.join();
  // The first leased 4 for three of them: it and the two that waited for it.
  for (int i = 0; i < 3; ++i) {
    INFO("request " << i);
    CHECK(status[i] == 200);
    CHECK(answered[i] >= resumed);
  }
  // The queue held two: the rest were refused at once, without waiting.
  for (int i = 3; i < kRequests; ++i) {
    INFO("request " << i);
    CHECK(status[i] == 503);
    CHECK(answered[i] < resumed);
  }
  HttpClient http(mesh.port);
  CHECK(metric(http, "zmesh_gateway_ratelimit_leases_total") == "1");
  CHECK(metric(http, "zmesh_gateway_ratelimit_queue_full_total") == "3");
  CHECK(metric(http, "zmesh_gateway_ratelimit_admitted_total") == "3");
}

TEST_CASE("gateway: without auth the per-caller limit keys on the address and fails closed",
          "[ratelimit][gateway]") {
  SECTION("keyed on the client's address") {
    Mesh mesh("ratelimit_rule = \"gw\"\nratelimit_batch = 1\n");
    HttpClient http(mesh.port);
    for (int i = 0; i < 4; ++i) REQUIRE(http.get("/v1/ratelimit/rules").status == 200);
    HttpClient another(mesh.port);  // another connection, the same address
    auto over = another.get("/v1/ratelimit/rules");
    CHECK(over.status == 429);
    CHECK(over.header("RateLimit-Policy") == "\"gw\";q=4;w=3600");
    auto check = http.request(http::verb::post, "/v1/ratelimit/check",
                              R"({"rule":"gw","key":"127.0.0.1","cost":0})");
    CHECK(check.status == 429);  // the check route is a /v1/ route like the others
  }
  SECTION("the rate limiter down: 503, never a silent pass") {
    Mesh mesh("ratelimit_rule = \"gw\"\nrequest_timeout = \"300ms\"\n", false);
    HttpClient http(mesh.port);
    auto r = http.get("/v1/ratelimit/rules");
    CHECK(r.status == 503);
    CHECK(errorCode(r) == "UNAVAILABLE");
    CHECK_THAT(errorMessage(r), Contains("ratelimit_fail_open"));
    CHECK(std::stoll(r.header("Retry-After")) >= 1);
    // Held for retry_after: the next one does not wait for another timeout.
    auto started = std::chrono::steady_clock::now();
    CHECK(http.get("/v1/ratelimit/rules").status == 503);
    CHECK(std::chrono::steady_clock::now() - started < 200ms);
    CHECK(metric(http, "zmesh_gateway_ratelimit_lease_failures_total") == "1");
    CHECK(metric(http, "zmesh_gateway_ratelimit_failed_closed_total") == "2");
  }
}

TEST_CASE("gateway: ratelimit_rule without a rate limiter in the mesh is refused at start",
          "[ratelimit][gateway]") {
  TempDir dir;
  std::string path = dir.path() + "/mesh.toml";
  int port = freePort();
  std::ofstream(path) << "[gateway]\nlisten = \"127.0.0.1:" << port << "\"\nendpoint = \""
                      << tcpEndpoint(freePort()) << "\"\nratelimit_rule = \"gw\"\n";
  Process gateway({bin("zmesh-gateway"), "--config", path}, dir.path() + "/gateway.log");
  int status = gateway.wait(10s);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 2);
  CHECK_THAT(readText(dir.path() + "/gateway.log"), Contains("[ratelimit]"));
}

TEST_CASE("gateway: a ratelimit_rule the rate limiter does not know is a 500 and never fails open",
          "[ratelimit][gateway]") {
  Mesh mesh(
      "ratelimit_rule = \"missing\"\nratelimit_fail_open = true\n"
      "[gateway.tokens.alice]\ntoken = \"alice-secret\"\nscopes = [\"ratelimit\"]\n");
  HttpClient http(mesh.port);
  std::vector<std::pair<std::string, std::string>> alice{{"Authorization", "Bearer alice-secret"}};
  for (int i = 0; i < 3; ++i) {
    auto r = http.get("/v1/ratelimit/rules", alice);
    CHECK(r.status == 500);
    CHECK(errorCode(r) == "INTERNAL");
    CHECK_THAT(errorMessage(r), Contains("gateway.ratelimit_rule missing is refused"));
    CHECK_THAT(errorMessage(r), Contains("NOT_FOUND"));
  }
  CHECK(metric(http, "zmesh_gateway_ratelimit_admitted_total") == "0");
}
