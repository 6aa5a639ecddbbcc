// The cache over REST, end to end: zmesh-cache and zmesh-gateway as real
// processes on free loopback ports, driven by a real HTTP client. Values are
// raw bytes both ways; keys are percent-decoded path segments.
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <fstream>
#include <optional>
#include <thread>

#include "http_client.h"
#include "json_answer.h"
#include "process.h"
#include "zmesh/client.h"

using namespace zmesh::testing;
using Catch::Matchers::Contains;
namespace json = boost::json;

namespace {

// A JSON number read as an integer, whatever Boost.JSON stored it as.
int64_t integer(const json::value& v) { return v.to_number<int64_t>(); }

// zmesh-cache (persisting nothing) + zmesh-gateway. `cacheExtra` goes into
// [cache], `cacheArgs` on zmesh-cache's command line, `gatewayExtra` into
// [gateway] (and may open tables after it). startCache = false: the mesh file
// has no [cache] at all.
struct Mesh {
  TempDir dir;
  std::string path = dir.path() + "/mesh.toml";
  std::string cacheEndpoint = tcpEndpoint(freePort());
  int port = freePort();
  std::optional<Process> cache, gateway;

  explicit Mesh(const std::string& cacheExtra = "", std::vector<std::string> cacheArgs = {},
                const std::string& gatewayExtra = "", bool startCache = true) {
    std::ofstream out(path);
    if (startCache)
      out << "[cache]\nendpoint = \"" << cacheEndpoint << "\"\n" << cacheExtra << "\n";
    out << "[gateway]\nlisten = \"127.0.0.1:" << port << "\"\nendpoint = \""
        << tcpEndpoint(freePort()) << "\"\nthreads = 1\n"
        << gatewayExtra << "\n";
    out.close();
    if (startCache) {
      std::vector<std::string> argv{bin("zmesh-cache"), "--config", path,
                                    "--broker",         "none",     "--memory"};
      argv.insert(argv.end(), cacheArgs.begin(), cacheArgs.end());
      cache.emplace(argv, dir.path() + "/cache.log");
      requireHealthy(*cache, cacheEndpoint, 15s);
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

// Every byte value, NULs at both ends.
std::string allBytes() {
  std::string out;
  for (int i = 0; i < 256; ++i) out.push_back(static_cast<char>(i));
  out.push_back('\0');
  return out;
}

void checkError(const HttpResponse& r, int status, const std::string& code) {
  INFO("status " << r.status << ", body: " << r.body);
  CHECK(r.status == status);
  CHECK(r.header("Content-Type") == "application/json");
  CHECK(errorCode(r) == code);
}

}  // namespace

TEST_CASE("cache REST: put - get - delete, a binary value round trip", "[cache][gateway]") {
  Mesh mesh;
  HttpClient http(mesh.port);

  auto put = http.request(http::verb::put, "/v1/cache/greeting", "hello");
  CHECK(put.status == 204);
  CHECK(put.body.empty());
  CHECK_FALSE(put.header("X-Request-Id").empty());
  auto got = http.get("/v1/cache/greeting");
  REQUIRE(got.status == 200);
  CHECK(got.header("Content-Type") == "application/octet-stream");
  CHECK(got.body == "hello");

  // Any bytes, NULs included, whatever Content-Type says.
  const std::string bytes = allBytes();
  CHECK(
      http.request(http::verb::put, "/v1/cache/blob", bytes, {{"Content-Type", "application/json"}})
          .status == 204);
  auto blob = http.get("/v1/cache/blob");
  REQUIRE(blob.status == 200);
  CHECK(blob.body.size() == bytes.size());
  CHECK(blob.body == bytes);
  CHECK(blob.header("Content-Length") == std::to_string(bytes.size()));

  // An empty value is stored and read back as empty: a hit, not a 404.
  CHECK(http.request(http::verb::put, "/v1/cache/empty", "").status == 204);
  auto empty = http.get("/v1/cache/empty");
  CHECK(empty.status == 200);
  CHECK(empty.body.empty());

  // Overwritten.
  CHECK(http.request(http::verb::put, "/v1/cache/greeting", "bye").status == 204);
  CHECK(http.get("/v1/cache/greeting").body == "bye");

  auto deleted = http.request(http::verb::delete_, "/v1/cache/greeting");
  CHECK(deleted.status == 204);
  CHECK(deleted.body.empty());
  checkError(http.request(http::verb::delete_, "/v1/cache/greeting"), 404, "NOT_FOUND");
  auto miss = http.get("/v1/cache/greeting");
  checkError(miss, 404, "NOT_FOUND");
  CHECK_FALSE(parse(miss.body).at("error").at("request_id").as_string().empty());
  checkError(http.get("/v1/cache/never-set"), 404, "NOT_FOUND");
}

TEST_CASE("cache REST: a percent-encoded binary key is the key's bytes", "[cache][gateway]") {
  Mesh mesh;
  HttpClient http(mesh.port);
  zmesh::Mesh client{mesh.path};
  auto cache = client.cache();

  CHECK(http.request(http::verb::put, "/v1/cache/%00%FFk%2Fx%20y", "v1").status == 204);
  const std::string key("\x00\xffk/x y", 7);
  CHECK(cache.get(key) == std::optional<std::string>("v1"));
  CHECK(http.get("/v1/cache/%00%ffk%2fx%20y").body == "v1");  // either case of hex

  // Set by the stub, read over REST.
  const std::string other("\x01\x00\x7f", 3);
  CHECK(cache.set(other, std::string("\x00", 1)));
  auto got = http.get("/v1/cache/%01%00%7F");
  REQUIRE(got.status == 200);
  CHECK(got.body == std::string("\x00", 1));

  // "a%2Fb" is one key with a slash in it; "a/b" is no route.
  CHECK(http.request(http::verb::put, "/v1/cache/a%2Fb", "slash").status == 204);
  CHECK(cache.get("a/b") == std::optional<std::string>("slash"));
  checkError(http.get("/v1/cache/a/b"), 404, "NOT_FOUND");

  CHECK(http.request(http::verb::delete_, "/v1/cache/%00%FFk%2Fx%20y").status == 204);
  CHECK_FALSE(cache.exists(key));
}

TEST_CASE("cache REST: ?ttl_ms expires the value", "[cache][gateway]") {
  Mesh mesh;
  HttpClient http(mesh.port);
  zmesh::Mesh client{mesh.path};

  CHECK(http.request(http::verb::put, "/v1/cache/brief?ttl_ms=300", "v").status == 204);
  CHECK(http.request(http::verb::put, "/v1/cache/long?ttl_ms=60000", "v").status == 204);
  CHECK(http.request(http::verb::put, "/v1/cache/forever", "v").status == 204);
  auto left = client.cache().ttl("long");
  REQUIRE(left);
  CHECK(*left > 55s);
  CHECK(*left <= 60s);
  CHECK(client.cache().ttl("forever") == zmesh::CacheClient::kNoExpiry);
  CHECK(http.get("/v1/cache/brief").status == 200);
  std::this_thread::sleep_for(700ms);
  checkError(http.get("/v1/cache/brief"), 404, "NOT_FOUND");
  checkError(http.request(http::verb::delete_, "/v1/cache/brief"), 404, "NOT_FOUND");
  CHECK(http.get("/v1/cache/long").status == 200);
  // A PUT without ttl_ms drops the expiry a key had.
  CHECK(http.request(http::verb::put, "/v1/cache/long", "v2").status == 204);
  CHECK(client.cache().ttl("long") == zmesh::CacheClient::kNoExpiry);
}

TEST_CASE("cache REST: bad input answers 400 naming what was wrong", "[cache][gateway]") {
  Mesh mesh;
  HttpClient http(mesh.port);
  struct Case {
    http::verb method;
    std::string target;
    std::string message;  // contained in the error message
  };
  auto put = http::verb::put;
  auto get = http::verb::get;
  const std::vector<Case> cases = {
      {put, "/v1/cache/k?ttl_ms=abc", "ttl_ms"},
      {put, "/v1/cache/k?ttl_ms=-5", "ttl_ms"},
      {put, "/v1/cache/k?ttl_ms=0", "ttl_ms"},
      {put, "/v1/cache/k?ttl_ms=1.5", "ttl_ms"},
      {put, "/v1/cache/k?ttl_ms=", "ttl_ms"},
      {put, "/v1/cache/k?ttl_ms=5s", "ttl_ms"},
      {put, "/v1/cache/k?ttl_ms=9223372036854775808", "ttl_ms"},
      // Past the cache's longest TTL (10 years): the service's own 400.
      {put, "/v1/cache/k?ttl_ms=9223372036854775807", "ttl"},
      {put, "/v1/cache/", "key is empty"},
      {get, "/v1/cache/", "key is empty"},
      {http::verb::delete_, "/v1/cache/", "key is empty"},
      {get, "/v1/cache", "?stats"},
      // Longer than the gateway's max_key_bytes (250).
      {get, "/v1/cache/" + std::string(251, 'k'), "{key} is 251 bytes"},
  };
  for (auto& c : cases) {
    INFO(http::to_string(c.method) << " " << c.target);
    auto r =
        http.request(c.method, c.target, c.method == put ? "v" : "", {{"X-Request-Id", "bad-1"}});
    checkError(r, 400, "INVALID_ARGUMENT");
    CHECK_THAT(errorMessage(r), Contains(c.message));
    CHECK(parse(r.body).at("error").at("request_id").as_string() == "bad-1");
  }
  // Nothing above stored anything.
  checkError(http.get("/v1/cache/k"), 404, "NOT_FOUND");

  SECTION("wrong methods: 405 with Allow") {
    auto post = http.post("/v1/cache/k", "v");
    checkError(post, 405, "METHOD_NOT_ALLOWED");
    CHECK(post.header("Allow") == "PUT, GET, DELETE");
    auto putStats = http.request(http::verb::put, "/v1/cache", "v");
    checkError(putStats, 405, "METHOD_NOT_ALLOWED");
    CHECK(putStats.header("Allow") == "GET");
  }
  CHECK(http.request(http::verb::put, "/v1/cache/k?ttl_ms=60000", "v").status == 204);
}

TEST_CASE("cache REST: over a size limit is 413", "[cache][gateway]") {
  // The cache's own limits, lowered; the gateway's body limit above them.
  Mesh mesh("max_key_bytes = 100\nmax_value_bytes = 4096", {}, "max_body_bytes = 65536\n");
  HttpClient http(mesh.port);

  CHECK(http.request(http::verb::put, "/v1/cache/fits", std::string(4096, 'v')).status == 204);
  CHECK(http.get("/v1/cache/fits").body.size() == 4096);
  auto value = http.request(http::verb::put, "/v1/cache/big", std::string(4097, 'v'));
  checkError(value, 413, "PAYLOAD_TOO_LARGE");
  checkError(http.get("/v1/cache/big"), 404, "NOT_FOUND");

  CHECK(http.request(http::verb::put, "/v1/cache/" + std::string(100, 'k'), "v").status == 204);
  auto key = http.request(http::verb::put, "/v1/cache/" + std::string(101, 'k'), "v");
  checkError(key, 413, "PAYLOAD_TOO_LARGE");
  // A read of a key no write can store is the caller's mistake, not a miss.
  checkError(http.get("/v1/cache/" + std::string(101, 'k')), 413, "PAYLOAD_TOO_LARGE");

  // Over the gateway's own body limit: refused before any call (and the
  // connection closed, since the rest of the body was not read).
  HttpClient other(mesh.port);
  auto body = other.request(http::verb::put, "/v1/cache/huge", std::string(65537, 'v'));
  checkError(body, 413, "PAYLOAD_TOO_LARGE");
  checkError(http.get("/v1/cache/huge"), 404, "NOT_FOUND");
}

TEST_CASE("cache REST: the default value limit (512 KiB) and the gateway's default body limit",
          "[cache][gateway]") {
  Mesh mesh;
  HttpClient http(mesh.port, 30s);
  CHECK(http.request(http::verb::put, "/v1/cache/max", std::string(512 * 1024, 'v')).status == 204);
  CHECK(http.get("/v1/cache/max").body.size() == 512 * 1024);
  checkError(http.request(http::verb::put, "/v1/cache/over", std::string(512 * 1024 + 1, 'v')), 413,
             "PAYLOAD_TOO_LARGE");
  // Between the cache's limit and the gateway's 1 MiB, the cache's answer.
  checkError(http.request(http::verb::put, "/v1/cache/over", std::string(1024 * 1024, 'v')), 413,
             "PAYLOAD_TOO_LARGE");
  HttpClient other(mesh.port, 30s);
  checkError(other.request(http::verb::put, "/v1/cache/over", std::string(1024 * 1024 + 1, 'v')),
             413, "PAYLOAD_TOO_LARGE");
}

TEST_CASE("cache REST: full under noeviction is 507", "[cache][gateway]") {
  Mesh mesh("", {"--policy", "noeviction", "--max-memory", "65536"});
  HttpClient http(mesh.port);
  std::optional<HttpResponse> refused;
  int stored = 0;
  for (int i = 0; i < 1000 && !refused; ++i) {
    auto r =
        http.request(http::verb::put, "/v1/cache/fill" + std::to_string(i), std::string(1000, 'f'));
    if (r.status == 204)
      ++stored;
    else
      refused = r;
  }
  REQUIRE(refused);
  checkError(*refused, 507, "INSUFFICIENT_STORAGE");
  CHECK(stored > 0);
  // Nothing was evicted to make room.
  CHECK(http.get("/v1/cache/fill0").status == 200);
  auto stats = parse(http.get("/v1/cache?stats").body);
  CHECK(stats.at("policy").as_string() == "noeviction");
  CHECK(integer(stats.at("refused_full")) >= 1);
  CHECK(integer(stats.at("evictions")) == 0);
  CHECK(integer(stats.at("memory_limit")) == 65536);
  // Room again after a delete.
  CHECK(http.request(http::verb::delete_, "/v1/cache/fill0").status == 204);
  CHECK(http.request(http::verb::put, "/v1/cache/again", std::string(100, 'f')).status == 204);
}

TEST_CASE("cache REST: stats as JSON - counts are numbers", "[cache][gateway]") {
  Mesh mesh("policy = \"lru\"\nmax_memory = \"32mb\"");
  HttpClient http(mesh.port);
  CHECK(http.request(http::verb::put, "/v1/cache/a", "1").status == 204);
  CHECK(http.request(http::verb::put, "/v1/cache/b", "2").status == 204);
  CHECK(http.get("/v1/cache/a").status == 200);
  CHECK(http.get("/v1/cache/a").status == 200);
  CHECK(http.get("/v1/cache/zzz").status == 404);

  auto r = http.get("/v1/cache?stats");
  REQUIRE(r.status == 200);
  CHECK(r.header("Content-Type") == "application/json");
  auto s = parse(r.body);
  INFO(r.body);
  for (auto name : {"keys", "memory_used", "memory_limit", "hits", "misses", "evictions", "expired",
                    "refused_full", "persistence_lag_records"}) {
    INFO(name);
    REQUIRE(s.as_object().contains(name));
    CHECK((s.at(name).is_uint64() || s.at(name).is_int64()));
  }
  CHECK(s.at("policy").as_string() == "lru");
  CHECK(s.at("fsync").as_string() == "off");  // --memory
  CHECK(integer(s.at("keys")) == 2);
  CHECK(integer(s.at("hits")) == 2);
  CHECK(integer(s.at("misses")) == 1);
  CHECK(integer(s.at("memory_limit")) == 32 << 20);
  CHECK(integer(s.at("memory_used")) > 0);
  // ?stats=anything is the same route.
  CHECK(http.get("/v1/cache?stats=1").status == 200);
}

TEST_CASE("cache REST: Idempotency-Key on PUT and DELETE", "[cache][gateway]") {
  Mesh mesh;
  HttpClient http(mesh.port);
  std::vector<std::pair<std::string, std::string>> key{{"Idempotency-Key", "put-1"}};
  auto first = http.request(http::verb::put, "/v1/cache/k", "v1", key);
  CHECK(first.status == 204);
  auto again = http.request(http::verb::put, "/v1/cache/k", "v1", key);
  CHECK(again.status == 204);
  CHECK(again.header("Idempotent-Replayed") == "true");
  // The same key for another request: 409, and nothing written.
  checkError(http.request(http::verb::put, "/v1/cache/k", "v2", key), 409, "CONFLICT");
  CHECK(http.get("/v1/cache/k").body == "v1");

  std::vector<std::pair<std::string, std::string>> del{{"Idempotency-Key", "del-1"}};
  CHECK(http.request(http::verb::delete_, "/v1/cache/k", "", del).status == 204);
  // The retry gets the first answer, not the 404 a second delete would.
  auto retried = http.request(http::verb::delete_, "/v1/cache/k", "", del);
  CHECK(retried.status == 204);
  CHECK(retried.header("Idempotent-Replayed") == "true");
  checkError(http.request(http::verb::delete_, "/v1/cache/k"), 404, "NOT_FOUND");
}

TEST_CASE("cache REST: readyz lists the cache and auth needs the cache scope", "[cache][gateway]") {
  Mesh mesh("", {},
            "[gateway.tokens.reader]\ntoken = \"cache-secret\"\nscopes = [\"cache\"]\n"
            "[gateway.tokens.other]\ntoken = \"ids-secret\"\nscopes = [\"ids\"]\n");
  HttpClient http(mesh.port);
  auto ready = http.get("/readyz");
  CHECK(ready.status == 200);
  bool listed = false;
  auto readiness = parse(ready.body);
  for (auto& s : readiness.at("services").as_array())
    if (s.at("service").as_string() == "cache") listed = s.at("state").as_string() == "up";
  CHECK(listed);

  checkError(http.get("/v1/cache/k"), 401, "UNAUTHENTICATED");
  checkError(http.get("/v1/cache/k", {{"Authorization", "Bearer ids-secret"}}), 403,
             "PERMISSION_DENIED");
  checkError(http.get("/v1/cache?stats", {{"Authorization", "Bearer ids-secret"}}), 403,
             "PERMISSION_DENIED");
  std::vector<std::pair<std::string, std::string>> auth{{"Authorization", "Bearer cache-secret"}};
  CHECK(http.request(http::verb::put, "/v1/cache/k", "v", auth).status == 204);
  CHECK(http.get("/v1/cache/k", auth).body == "v");
  CHECK(http.get("/v1/cache?stats", auth).status == 200);
}

TEST_CASE("cache REST: a mesh without [cache] answers 501", "[cache][gateway]") {
  Mesh mesh("", {}, "", /*startCache=*/false);
  HttpClient http(mesh.port);
  checkError(http.request(http::verb::put, "/v1/cache/k", "v"), 501, "UNIMPLEMENTED");
  checkError(http.get("/v1/cache/k"), 501, "UNIMPLEMENTED");
  checkError(http.request(http::verb::delete_, "/v1/cache/k"), 501, "UNIMPLEMENTED");
  checkError(http.get("/v1/cache?stats"), 501, "UNIMPLEMENTED");
}
