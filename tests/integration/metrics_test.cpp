// /metrics, /v1/mesh and CORS over real processes (broker, idgen, gateway on
// free loopback ports; ratelimit, lock and cache too where said): the
// services' typed families pass `promtool check metrics`, count exactly and
// stay bounded under invented names and topics.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "http_client.h"
#include "json_answer.h"
#include "process.h"
#include "wire.h"
#include "zmesh/idl/idgen.capnp.h"
#include "zmesh/rpc/clock.h"
#include "zmesh/rpc/frame.h"

using namespace zmesh::testing;
using Catch::Matchers::Contains;
namespace json = boost::json;

namespace {

// broker + idgen + gateway (+ ratelimit, lock and cache with everyService);
// the services' stats are never cached (each /metrics asks again), so a
// count is exact the moment it is read.
struct MetricsMesh {
  TempDir dir;
  std::string path = dir.path() + "/mesh.toml";
  std::string idgenEndpoint = tcpEndpoint(freePort());
  std::string brokerXsub = tcpEndpoint(freePort());
  std::string brokerAdmin = tcpEndpoint(freePort());
  std::string gatewayAdmin = tcpEndpoint(freePort());
  std::string ratelimitEndpoint = tcpEndpoint(freePort());
  std::string lockEndpoint = tcpEndpoint(freePort());
  std::string cacheEndpoint = tcpEndpoint(freePort());
  int port = freePort();
  std::optional<Process> broker, idgen, ratelimit, lock, cache, gateway;

  explicit MetricsMesh(const std::string& gatewayExtra = "", bool everyService = false) {
    std::ofstream out(path);
    out << "[broker]\nxsub = \"" << brokerXsub << "\"\nxpub = \"" << tcpEndpoint(freePort())
        << "\"\nadmin = \"" << brokerAdmin << "\"\n\n"
        << "[idgen]\nendpoint = \"" << idgenEndpoint << "\"\ndata_dir = \"" << dir.path()
        << "/idgen\"\nblock_size = 1000\n\n";
    if (everyService)
      out << "[ratelimit]\nendpoint = \"" << ratelimitEndpoint << "\"\ndata_dir = \"" << dir.path()
          << "/ratelimit\"\n\n"
          << "[ratelimit.rules.api]\nalgorithm = \"sliding_window_log\"\nlimit = 3\n"
          << "window = \"1h\"\ndescriptors = [\"key\"]\n\n"
          << "[lock]\nendpoint = \"" << lockEndpoint << "\"\ndata_dir = \"" << dir.path()
          << "/lock\"\n\n"
          << "[cache]\nendpoint = \"" << cacheEndpoint << "\"\n\n";
    out << "[gateway]\nlisten = \"127.0.0.1:" << port << "\"\nendpoint = \"" << gatewayAdmin
        << "\"\nthreads = 1\nops_cache_max_age = \"0ms\"\n"
        << gatewayExtra << "\n";
    out.close();
    broker.emplace(std::vector<std::string>{bin("zmesh-broker"), "--config", path},
                   dir.path() + "/broker.log");
    requireHealthy(*broker, brokerAdmin);
    idgen.emplace(std::vector<std::string>{bin("zmesh-idgen"), "--config", path},
                  dir.path() + "/idgen.log");
    requireHealthy(*idgen, idgenEndpoint);
    if (everyService) {
      ratelimit.emplace(std::vector<std::string>{bin("zmesh-ratelimit"), "--config", path},
                        dir.path() + "/ratelimit.log");
      requireHealthy(*ratelimit, ratelimitEndpoint, 15s);
      lock.emplace(std::vector<std::string>{bin("zmesh-lock"), "--config", path},
                   dir.path() + "/lock.log");
      requireHealthy(*lock, lockEndpoint, 15s);
      cache.emplace(std::vector<std::string>{bin("zmesh-cache"), "--config", path, "--memory"},
                    dir.path() + "/cache.log");
      requireHealthy(*cache, cacheEndpoint, 15s);
    }
    gateway.emplace(std::vector<std::string>{bin("zmesh-gateway"), "--config", path},
                    dir.path() + "/gateway.log");
    requireHealthy(*gateway, gatewayAdmin);
  }
};

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// The sample lines of one family's series ("name{" or "name "), values included.
std::vector<std::string> seriesLines(const std::string& text, const std::string& name) {
  std::vector<std::string> out;
  for (const std::string& line : lines(text))
    if (line.starts_with(name + "{") || line.starts_with(name + " ")) out.push_back(line);
  return out;
}

// The value of one sample line ("" when absent).
std::string metricValue(const std::string& text, const std::string& series) {
  for (const std::string& line : lines(text))
    if (line.rfind(series + " ", 0) == 0) return line.substr(series.size() + 1);
  return "";
}

std::string scrape(int port) {
  HttpClient http(port);
  auto r = http.get("/metrics");
  REQUIRE(r.status == 200);
  return r.body;
}

// `promtool check metrics` on `text`: its exit status and what it printed.
std::pair<int, std::string> promtoolCheck(const std::string& text, const TempDir& dir) {
  const std::string promtool = ZMESH_PROMTOOL;
  if (promtool.empty())
    FAIL(
        "promtool not found at configure time: install the Debian package prometheus "
        "(deploy/setup.sh does) and configure again");
  const std::string file = dir.path() + "/metrics.txt";
  std::ofstream(file) << text;
  const std::string command = "'" + promtool + "' check metrics < '" + file + "' 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::string output;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) output.append(buf, n);
  int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

// Calls to methods IdGen does not have (ids from `first` on), sent raw on a
// DEALER of the test's own; returns when every one is answered.
void callInventedMethods(const std::string& endpoint, uint16_t first, int count) {
  zmq::context_t context;
  zmq::socket_t dealer(context, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect(endpoint);
  capnp::MallocMessageBuilder message;
  message.initRoot<zmesh::idl::IdGen::NextParams>();
  auto params = zmesh::rpc::toFrame(message);
  for (int i = 0; i < count; ++i) {
    zmesh::rpc::wire::RequestHeader h;
    h.requestId = static_cast<uint64_t>(i) + 1;
    h.interfaceId = capnp::typeId<zmesh::idl::IdGen>();
    h.methodId = static_cast<uint16_t>(first + i);
    h.budgetMs = 5000;
    dealer.send(zmesh::rpc::wire::encodeRequest(h, params), zmq::send_flags::none);
  }
  dealer.set(zmq::sockopt::rcvtimeo, 10000);
  for (int i = 0; i < count; ++i) {
    zmq::message_t reply;
    REQUIRE(dealer.recv(reply, zmq::recv_flags::none));
  }
}

}  // namespace

TEST_CASE("metrics: the services' typed families pass promtool and count exactly",
          "[gateway][metrics]") {
  MetricsMesh mesh;
  HttpClient http(mesh.port);
  constexpr int kCalls = 7;
  for (int i = 0; i < kCalls; ++i) REQUIRE(http.post("/v1/ids/orders").status == 200);
  REQUIRE(http.post("/v1/ids/bad%20name").status == 400);  // IdGen.next refuses it

  const std::string text = scrape(mesh.port);
  auto [status, output] = promtoolCheck(text, mesh.dir);
  INFO("promtool said:\n" << output << "\n/metrics:\n" << text);
  CHECK(status == 0);
  CHECK(output.find("error") == std::string::npos);

  CHECK(metricValue(text,
                    "zmesh_rpc_server_calls_total{service=\"idgen\",method=\"IdGen.next\","
                    "code=\"ok\"}") == std::to_string(kCalls));
  CHECK(metricValue(text,
                    "zmesh_rpc_server_calls_total{service=\"idgen\",method=\"IdGen.next\","
                    "code=\"invalid_argument\"}") == "1");
  // Timed by method, whatever the answer.
  CHECK(metricValue(text,
                    "zmesh_rpc_server_duration_seconds_count{service=\"idgen\","
                    "method=\"IdGen.next\"}") == std::to_string(kCalls + 1));
  CHECK(metricValue(text,
                    "zmesh_rpc_server_duration_seconds_bucket{service=\"idgen\","
                    "method=\"IdGen.next\",le=\"+Inf\"}") == std::to_string(kCalls + 1));
  CHECK_FALSE(metricValue(text, "zmesh_process_start_time_seconds{service=\"idgen\"}").empty());
  CHECK_FALSE(metricValue(text, "zmesh_process_start_time_seconds{service=\"broker\"}").empty());
  CHECK(metricValue(text, "zmesh_service_up{service=\"idgen\"}") == "1");
  CHECK(text.find("zmesh_service_counter") == std::string::npos);
  CHECK(metricValue(text, "zmesh_gateway_metric_conflicts_total") == "0");

  // One HELP and one TYPE per family, before any of its samples.
  std::set<std::string> help, type;
  for (const std::string& line : lines(text)) {
    if (line.starts_with("# HELP "))
      CHECK(help.insert(line.substr(7, line.find(' ', 7) - 7)).second);
    if (line.starts_with("# TYPE "))
      CHECK(type.insert(line.substr(7, line.find(' ', 7) - 7)).second);
  }
  CHECK(help == type);
  CHECK(type.contains("zmesh_rpc_server_calls_total"));
  CHECK(text.find("# TYPE zmesh_rpc_server_duration_seconds histogram\n") != std::string::npos);
  CHECK(text.find("# TYPE zmesh_process_start_time_seconds gauge\n") != std::string::npos);
}

TEST_CASE("metrics: promtool passes after traffic to every service", "[gateway][metrics]") {
  MetricsMesh mesh("", true);
  HttpClient http(mesh.port);
  REQUIRE(http.post("/v1/ids/orders").status == 200);
  REQUIRE(http.post("/v1/ratelimit/check", R"({"rule":"api","key":"alice"})").status == 200);
  REQUIRE(
      http.post("/v1/locks/metrics", R"({"owner":"alice","ttl_ms":10000,"wait_ms":0})").status ==
      200);
  REQUIRE(http.request(http::verb::put, "/v1/cache/greeting", "hello").status / 100 == 2);
  REQUIRE(http.get("/v1/cache/greeting").status == 200);

  const std::string text = scrape(mesh.port);
  auto [status, output] = promtoolCheck(text, mesh.dir);
  INFO("promtool said:\n" << output << "\n/metrics:\n" << text);
  CHECK(status == 0);
  CHECK(output.find("error") == std::string::npos);
  for (std::string service : {"gateway", "broker", "idgen", "ratelimit", "lock", "cache"})
    CHECK(metricValue(text, "zmesh_service_up{service=\"" + service + "\"}") == "1");
  for (std::string family : {"zmesh_ratelimit_rule_decisions_total", "zmesh_lock_grants_total",
                             "zmesh_cache_hits_total", "zmesh_journal_appends_total"})
    CHECK_THAT(text, Contains("# TYPE " + family + " counter\n"));
  CHECK(metricValue(text,
                    "zmesh_ratelimit_rule_decisions_total{service=\"ratelimit\",rule=\"api\"}") ==
        "1");
  CHECK(metricValue(text, "zmesh_lock_grants_total{service=\"lock\"}") == "1");
  CHECK(metricValue(text, "zmesh_cache_hits_total{service=\"cache\"}") == "1");
  CHECK_FALSE(metricValue(text, "zmesh_journal_appends_total{service=\"lock\"}").empty());
  CHECK(metricValue(text, "zmesh_gateway_metric_conflicts_total") == "0");
}

TEST_CASE("metrics: a flood of event topics leaves the broker's series bounded and valid",
          "[gateway][metrics][limits]") {
  MetricsMesh mesh;
  HttpClient http(mesh.port);
  zmq::context_t context;
  zmq::socket_t pub(context, zmq::socket_type::pub);
  pub.set(zmq::sockopt::linger, 0);
  pub.connect(mesh.brokerXsub);
  // Not events at all (the gateway drops them as malformed): the broker
  // counts by the topic frame alone.
  auto send = [&](const std::string& topic) {
    REQUIRE(pub.send(zmq::buffer(topic), zmq::send_flags::sndmore));
    REQUIRE(pub.send(zmq::str_buffer("not an event"), zmq::send_flags::none));
  };
  auto counted = [](const std::string& text, const std::string& prefix) {
    return metricValue(
        text, "zmesh_broker_messages_total{service=\"broker\",topic_prefix=\"" + prefix + "\"}");
  };
  // The PUB sends once the gateway's subscription (to every topic) has come
  // through the broker to it.
  int probes = 0;
  while (counted(scrape(mesh.port), "probe").empty()) {
    REQUIRE(probes < 200);
    send("probe.x");
    ++probes;
    std::this_thread::sleep_for(25ms);
  }
  // Invalid prefixes first, while the broker has room for labels.
  const std::vector<std::string> invalid = {"\xff\xfe.x",
                                            "caf\xc3.x",
                                            std::string(300, '\xff') + ".x",
                                            std::string(40, 'a') + ".x",
                                            std::string(5000, 'b'),
                                            "Upper.x",
                                            "sp ace.x",
                                            ".empty",
                                            "quote\"d.x"};
  for (auto& topic : invalid) send(topic);
  constexpr int kFlood = 500;
  for (int i = static_cast<int>(invalid.size()); i < kFlood; ++i)
    send("flood-" + std::to_string(i) + "-" + std::string(16, 'z') + ".x");

  // Counted once every message is through: probes, then the flood.
  std::string text;
  for (int i = 0; i < 200; ++i) {
    text = scrape(mesh.port);
    double total = 0;
    for (auto& line : seriesLines(text, "zmesh_broker_messages_total"))
      total += std::stod(line.substr(line.rfind(' ') + 1));
    if (total >= probes + kFlood) break;
    std::this_thread::sleep_for(25ms);
  }
  auto [status, output] = promtoolCheck(text, mesh.dir);
  INFO("promtool said:\n" << output << "\n/metrics:\n" << text);
  CHECK(status == 0);
  CHECK(output.find("error") == std::string::npos);
  // 64 prefixes, "_other" and "_invalid" at most.
  CHECK(seriesLines(text, "zmesh_broker_messages_total").size() <= 66);
  CHECK(seriesLines(text, "zmesh_broker_bytes_total").size() <= 66);
  CHECK(counted(text, "_invalid") == std::to_string(invalid.size()));
  CHECK_FALSE(counted(text, "_other").empty());
  CHECK(counted(text, "flood-" + std::to_string(invalid.size()) + "-" + std::string(16, 'z')) ==
        "1");
  CHECK(text.find("\xff") == std::string::npos);
  CHECK(text.find("Upper") == std::string::npos);
  CHECK(metricValue(text, "zmesh_service_up{service=\"broker\"}") == "1");
}

TEST_CASE("metrics: a flood of namespaces and invented method ids leaves /metrics bounded",
          "[gateway][metrics][limits]") {
  MetricsMesh mesh;
  HttpClient http(mesh.port);
  REQUIRE(http.post("/v1/ids/warm").status == 200);
  callInventedMethods(mesh.idgenEndpoint, 1000, 1);
  scrape(mesh.port);  // a scrape adds its own series (Admin.stats calls, the /metrics route)
  const auto before = lines(scrape(mesh.port));

  auto flood = [&](int round) {
    for (int i = 0; i < 1000; ++i)
      REQUIRE(http.post("/v1/ids/ns-" + std::to_string(round) + "-" + std::to_string(i)).status ==
              200);
    callInventedMethods(mesh.idgenEndpoint, static_cast<uint16_t>(2000 + 1000 * round), 1000);
  };
  flood(0);
  const std::string first = scrape(mesh.port);
  flood(1);
  const std::string second = scrape(mesh.port);
  // The series (a sample line without its value) the flood added.
  auto seriesOf = [](const std::vector<std::string>& text) {
    std::set<std::string> out;
    for (auto& line : text)
      if (!line.starts_with("#")) out.insert(line.substr(0, line.rfind(' ')));
    return out;
  };
  std::string added;
  auto old = seriesOf(before);
  for (auto& series : seriesOf(lines(second)))
    if (!old.contains(series)) added += series + "\n";
  INFO("before: " << before.size() << " lines; after 1000: " << lines(first).size()
                  << "; after 2000: " << lines(second).size() << "; new series:\n"
                  << added);
  // Nothing is labelled by namespace or by an invented method: the flood
  // adds no series (a few for codes seen the first time at most).
  CHECK(lines(second).size() <= before.size() + 30);
  CHECK(lines(second).size() == lines(first).size());
  CHECK(metricValue(second,
                    "zmesh_rpc_server_calls_total{service=\"idgen\",method=\"_unknown\","
                    "code=\"unimplemented\"}") == "2001");
  auto [status, output] = promtoolCheck(second, mesh.dir);
  INFO("promtool said:\n" << output);
  CHECK(status == 0);
}

TEST_CASE("metrics: /v1/mesh lists every configured service with its typed families",
          "[gateway][metrics]") {
  MetricsMesh mesh;
  HttpClient http(mesh.port);
  for (int i = 0; i < 3; ++i) REQUIRE(http.post("/v1/ids/orders").status == 200);

  auto get = [&] {
    auto r = http.get("/v1/mesh");
    REQUIRE(r.status == 200);
    CHECK(r.header("Content-Type") == "application/json");
    return parse(r.body);
  };
  auto before = zmesh::rpc::unixMillis();
  auto body = get();
  const int64_t timeMs = body.at("time_ms").as_int64();
  CHECK(std::abs(timeMs - before) < 60'000);
  auto& services = body.at("services").as_array();
  std::vector<std::string> names;
  for (auto& s : services) names.emplace_back(s.at("name").as_string());
  CHECK(names == std::vector<std::string>{"gateway", "broker", "idgen"});
  for (auto& s : services) {
    INFO(json::serialize(s));
    CHECK(s.at("state").as_string() == "up");
    CHECK_FALSE(s.as_object().contains("error"));
    CHECK_FALSE(s.at("metrics").as_array().empty());
    // When its statistics were gathered: the gateway's own now, the others'
    // with the shared result (here, of this very request).
    REQUIRE(s.at("sampled_ms").is_int64());
    CHECK(s.at("sampled_ms").as_int64() <= timeMs);
    CHECK(timeMs - s.at("sampled_ms").as_int64() < 10'000);
  }
  CHECK(services[0].at("sampled_ms").as_int64() == timeMs);

  // The gateway as /metrics shows it: every family of its entry is rendered
  // there, by the same name, and metrics.series_folded in neither.
  const std::string text = scrape(mesh.port);
  for (auto& f : services[0].at("metrics").as_array()) {
    INFO(json::serialize(f));
    CHECK(f.at("name").as_string() != "metrics.series_folded");
    CHECK_THAT(text, Contains("# TYPE " + std::string(f.at("prometheus").as_string()) + " " +
                              std::string(f.at("kind").as_string()) + "\n"));
  }
  CHECK(text.find("zmesh_metrics_series_folded{service=\"gateway\"}") == std::string::npos);
  CHECK(metricValue(text, "zmesh_service_up{service=\"gateway\"}") == "1");

  // idgen's rpc.server.calls and its histogram, typed.
  auto familyOf = [](const json::value& service, std::string_view name) -> const json::object* {
    for (auto& f : service.at("metrics").as_array())
      if (f.at("name").as_string() == name) return &f.as_object();
    return nullptr;
  };
  auto* calls = familyOf(services[2], "rpc.server.calls");
  REQUIRE(calls);
  CHECK(calls->at("prometheus").as_string() == "zmesh_rpc_server_calls_total");
  CHECK(calls->at("kind").as_string() == "counter");
  CHECK_FALSE(calls->at("help").as_string().empty());
  CHECK(calls->at("labels") == json::parse(R"(["method","code"])"));
  CHECK_FALSE(calls->contains("bounds"));
  bool found = false;
  for (auto& s : calls->at("samples").as_array())
    if (s.at("labels") == json::parse(R"(["IdGen.next","ok"])")) {
      found = true;
      CHECK(s.at("value").as_int64() == 3);
      CHECK_FALSE(s.as_object().contains("buckets"));
    }
  CHECK(found);
  auto* durations = familyOf(services[2], "rpc.server.duration_seconds");
  REQUIRE(durations);
  CHECK(durations->at("kind").as_string() == "histogram");
  auto bounds = durations->at("bounds").as_array().size();
  CHECK(bounds > 0);
  for (auto& s : durations->at("samples").as_array()) {
    CHECK(s.at("buckets").as_array().size() == bounds);
    CHECK(s.at("sum").is_number());
  }
  // The gateway's own: its requests, by the names /metrics gives them.
  auto* requests = familyOf(services[0], "gateway.requests");
  REQUIRE(requests);
  CHECK(requests->at("prometheus").as_string() == "zmesh_gateway_requests_total");
  CHECK(requests->at("labels") == json::parse(R"(["method","route","status"])"));
  CHECK(familyOf(services[0], "gateway.rpc_calls"));

  SECTION("a killed service is listed down, with why") {
    mesh.idgen->kill9();
    auto down = get();
    auto& idgen = down.at("services").as_array()[2];
    CHECK(idgen.at("name").as_string() == "idgen");
    CHECK(idgen.at("state").as_string() == "down");
    CHECK_FALSE(idgen.at("error").as_string().empty());
    CHECK(idgen.at("metrics").as_array().empty());
    CHECK(down.at("services").as_array()[1].at("state").as_string() == "up");
  }
}

TEST_CASE("metrics: /v1/mesh needs the stats scope or admin when auth is on",
          "[gateway][metrics]") {
  MetricsMesh mesh(
      "\n[gateway.tokens.ops]\ntoken = \"ops-secret\"\nscopes = [\"admin\"]\n"
      "[gateway.tokens.viewer]\ntoken = \"viewer-secret\"\nscopes = [\"stats\"]\n"
      "[gateway.tokens.app]\ntoken = \"app-secret\"\nscopes = [\"ids\"]\n");
  HttpClient http(mesh.port);
  CHECK(http.get("/v1/mesh").status == 401);
  CHECK(http.get("/v1/mesh", {{"Authorization", "Bearer app-secret"}}).status == 403);
  CHECK(http.get("/v1/mesh", {{"Authorization", "Bearer viewer-secret"}}).status == 200);
  CHECK(http.get("/v1/mesh", {{"Authorization", "Bearer ops-secret"}}).status == 200);
  // stats only reads: the admin routes stay closed to it.
  auto put = http.request(http::verb::put, "/v1/ratelimit/overrides/api",
                          R"({"descriptors":{"key":"a"},"limit":5})",
                          {{"Authorization", "Bearer viewer-secret"}});
  CHECK(put.status == 403);
  CHECK_THAT(put.body, Contains("'admin'"));
  CHECK(http.post("/v1/ids/x", "", {{"Authorization", "Bearer viewer-secret"}}).status == 403);
  CHECK(http.get("/metrics").status == 200);  // public as before
}

TEST_CASE("cors: an allowed origin gets the headers and its preflight 204 and others get none",
          "[gateway][cors]") {
  MetricsMesh mesh(
      "cors_origins = [\"http://localhost:3000\"]\ncors_max_age = \"2m\"\n"
      "max_body_bytes = 1024\nmax_header_bytes = 2048\n"
      "\n[gateway.tokens.ops]\ntoken = \"ops-secret\"\nscopes = [\"admin\", \"ids\", "
      "\"events\"]\n");
  HttpClient http(mesh.port);
  const std::string allowed = "http://localhost:3000";

  SECTION("a request from an allowed origin") {
    auto r = http.post("/v1/ids/orders", "",
                       {{"Origin", allowed}, {"Authorization", "Bearer ops-secret"}});
    CHECK(r.status == 200);
    CHECK(r.header("Access-Control-Allow-Origin") == allowed);
    CHECK(r.header("Vary") == "Origin");
    CHECK_THAT(r.header("Access-Control-Expose-Headers"),
               Contains("RateLimit") && Contains("RateLimit-Policy") && Contains("Retry-After"));
    // An error answer too, so the page can read why.
    auto unauthorized = http.get("/v1/mesh", {{"Origin", allowed}});
    CHECK(unauthorized.status == 401);
    CHECK(unauthorized.header("Access-Control-Allow-Origin") == allowed);
  }
  SECTION("answers refused before routing keep the headers for an allowed origin") {
    // 413: the page must be able to read why its upload failed.
    auto big = http.post("/v1/ids/orders", std::string(2000, 'x'),
                         {{"Origin", allowed}, {"Authorization", "Bearer ops-secret"}});
    CHECK(big.status == 413);
    CHECK(big.header("Access-Control-Allow-Origin") == allowed);
    CHECK(big.header("Vary") == "Origin");
    CHECK_THAT(big.body, Contains("PAYLOAD_TOO_LARGE"));
    // 431: the Origin line came before the header grew too large.
    HttpClient fresh(mesh.port);
    auto headers = fresh.post("/v1/ids/orders", "",
                              {{"Origin", allowed}, {"X-Filler", std::string(3000, 'x')}});
    CHECK(headers.status == 431);
    CHECK(headers.header("Access-Control-Allow-Origin") == allowed);
    // Another origin: none.
    HttpClient other(mesh.port);
    auto evil =
        other.post("/v1/ids/orders", std::string(2000, 'x'), {{"Origin", "http://evil.example"}});
    CHECK(evil.status == 413);
    CHECK(evil.header("Access-Control-Allow-Origin").empty());
  }
  SECTION("a preflight from an allowed origin needs no token") {
    auto r = http.request(http::verb::options, "/v1/ids/orders", "",
                          {{"Origin", allowed},
                           {"Access-Control-Request-Method", "POST"},
                           {"Access-Control-Request-Headers", "authorization,idempotency-key"}});
    CHECK(r.status == 204);
    CHECK(r.header("Access-Control-Allow-Origin") == allowed);
    CHECK(r.header("Access-Control-Allow-Methods") == "POST");
    CHECK_THAT(r.header("Access-Control-Allow-Headers"),
               Contains("Authorization") && Contains("Content-Type") &&
                   Contains("Idempotency-Key") && Contains("Last-Event-ID"));
    CHECK(r.header("Access-Control-Max-Age") == "120");
    CHECK(r.header("Vary") == "Origin");
    auto lock = http.request(http::verb::options, "/v1/locks/x", "",
                             {{"Origin", allowed}, {"Access-Control-Request-Method", "DELETE"}});
    CHECK(lock.status == 204);
    CHECK(lock.header("Access-Control-Allow-Methods") == "POST, DELETE, GET");
    auto unknown = http.request(http::verb::options, "/v1/nothing", "",
                                {{"Origin", allowed}, {"Access-Control-Request-Method", "GET"}});
    CHECK(unknown.status == 404);
  }
  SECTION("another origin gets no CORS header, and its preflight the usual 405") {
    auto r = http.post("/v1/ids/orders", "",
                       {{"Origin", "http://evil.example"}, {"Authorization", "Bearer ops-secret"}});
    CHECK(r.status == 200);
    CHECK(r.header("Access-Control-Allow-Origin").empty());
    CHECK(r.header("Access-Control-Expose-Headers").empty());
    auto preflight = http.request(
        http::verb::options, "/v1/ids/orders", "",
        {{"Origin", "http://evil.example"}, {"Access-Control-Request-Method", "POST"}});
    CHECK(preflight.status == 405);
    CHECK(preflight.header("Allow") == "POST");
    CHECK(preflight.header("Access-Control-Allow-Origin").empty());
    CHECK(preflight.header("Access-Control-Allow-Methods").empty());
    // The same origin with another port or scheme is another origin.
    CHECK(http.get("/healthz", {{"Origin", "http://localhost:3001"}})
              .header("Access-Control-Allow-Origin")
              .empty());
    CHECK(http.get("/healthz", {{"Origin", "https://localhost:3000"}})
              .header("Access-Control-Allow-Origin")
              .empty());
  }
  SECTION("the event stream from an allowed origin") {
    auto headers = rawExchange(mesh.port,
                               "GET /v1/events?topic=idgen.&access_token=ops-secret HTTP/1.1\r\n"
                               "Host: localhost\r\nOrigin: " +
                                   allowed + "\r\n\r\n",
                               true);
    INFO(headers);
    CHECK(headers.starts_with("HTTP/1.1 200"));
    CHECK_THAT(headers, Contains("text/event-stream"));
    CHECK_THAT(headers, Contains("Access-Control-Allow-Origin: " + allowed));
    auto preflight = http.request(http::verb::options, "/v1/events", "",
                                  {{"Origin", allowed},
                                   {"Access-Control-Request-Method", "GET"},
                                   {"Access-Control-Request-Headers", "last-event-id"}});
    CHECK(preflight.status == 204);
    CHECK(preflight.header("Access-Control-Allow-Methods") == "GET");
  }
}

TEST_CASE("cors: off by default with no CORS header and OPTIONS answered 405", "[gateway][cors]") {
  MetricsMesh mesh;
  HttpClient http(mesh.port);
  auto r = http.post("/v1/ids/orders", "", {{"Origin", "http://localhost:3000"}});
  CHECK(r.status == 200);
  CHECK(r.header("Access-Control-Allow-Origin").empty());
  CHECK(r.header("Vary").empty());
  auto preflight = http.request(
      http::verb::options, "/v1/ids/orders", "",
      {{"Origin", "http://localhost:3000"}, {"Access-Control-Request-Method", "POST"}});
  CHECK(preflight.status == 405);
}

TEST_CASE("cors: a bad cors_origins stops the gateway at start naming the key", "[gateway][cors]") {
  TempDir dir;
  const std::string path = dir.path() + "/mesh.toml";
  std::ofstream(path) << "[gateway]\nlisten = \"127.0.0.1:" << freePort() << "\"\nendpoint = \""
                      << tcpEndpoint(freePort()) << "\"\ncors_origins = [\"*\"]\n";
  Process gateway({bin("zmesh-gateway"), "--config", path}, dir.path() + "/gateway.log");
  int status = gateway.wait(10s);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 2);
  CHECK_THAT(gateway.log(), Contains("gateway.cors_origins") && Contains("\"*\" is not allowed"));
}
