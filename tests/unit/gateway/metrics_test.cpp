#include "metrics.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace zmesh::gateway;

namespace {

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// The value of the one sample line for `series` (name and labels as rendered).
std::string valueOf(const std::string& text, const std::string& series) {
  std::vector<std::string> found;
  for (const std::string& line : lines(text)) {
    if (line.starts_with(series + " ")) found.push_back(line.substr(series.size() + 1));
  }
  INFO("series " << series << " in:\n" << text);
  REQUIRE(found.size() == 1);
  return found[0];
}

std::string bucket(const std::string& route, const std::string& le) {
  return "zmesh_gateway_request_duration_seconds_bucket{route=\"" + route + "\",le=\"" + le + "\"}";
}

const std::vector<std::string> kLe = {"0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
                                      "0.1",    "0.25",  "0.5",    "1",     "2.5",  "5",     "10"};

// The gateway's own gauges and counters, all zero, as rendered.
const char* const kGaugesZero =
    "# HELP zmesh_gateway_requests_in_flight HTTP requests being answered.\n"
    "# TYPE zmesh_gateway_requests_in_flight gauge\n"
    "zmesh_gateway_requests_in_flight 0\n"
    "# HELP zmesh_gateway_sse_streams Open server-sent event streams.\n"
    "# TYPE zmesh_gateway_sse_streams gauge\n"
    "zmesh_gateway_sse_streams 0\n"
    "# HELP zmesh_gateway_sse_dropped_total Event streams cut off because the client read too "
    "slowly.\n"
    "# TYPE zmesh_gateway_sse_dropped_total counter\n"
    "zmesh_gateway_sse_dropped_total 0\n"
    "# HELP zmesh_gateway_events_received_total Events received from the mesh.\n"
    "# TYPE zmesh_gateway_events_received_total counter\n"
    "zmesh_gateway_events_received_total 0\n"
    "# HELP zmesh_gateway_event_gaps_total Gaps (lost events) detected in the events received "
    "from the mesh.\n"
    "# TYPE zmesh_gateway_event_gaps_total counter\n"
    "zmesh_gateway_event_gaps_total 0\n";

// The limits' counters and gauges, all zero, as rendered (after the gauges above).
const char* const kLimitsZero =
    "# HELP zmesh_gateway_connections Open HTTP connections.\n"
    "# TYPE zmesh_gateway_connections gauge\n"
    "zmesh_gateway_connections 0\n"
    "# HELP zmesh_gateway_connections_refused_total Connections over max_connections, answered 503 "
    "and closed.\n"
    "# TYPE zmesh_gateway_connections_refused_total counter\n"
    "zmesh_gateway_connections_refused_total 0\n"
    "# HELP zmesh_gateway_header_timeouts_total Connections closed because a request header took "
    "longer than header_timeout.\n"
    "# TYPE zmesh_gateway_header_timeouts_total counter\n"
    "zmesh_gateway_header_timeouts_total 0\n"
    "# HELP zmesh_gateway_accept_errors_total Failed accepts (EMFILE, ENFILE, ...), each retried "
    "after a back-off.\n"
    "# TYPE zmesh_gateway_accept_errors_total counter\n"
    "zmesh_gateway_accept_errors_total 0\n"
    "# HELP zmesh_gateway_sse_refused_total Event streams over max_sse_streams, answered 503.\n"
    "# TYPE zmesh_gateway_sse_refused_total counter\n"
    "zmesh_gateway_sse_refused_total 0\n"
    "# HELP zmesh_gateway_sse_replay_truncated_total Last-Event-ID resumes cut at "
    "sse_replay_max_bytes (the stream opens with a gap).\n"
    "# TYPE zmesh_gateway_sse_replay_truncated_total counter\n"
    "zmesh_gateway_sse_replay_truncated_total 0\n"
    "# HELP zmesh_gateway_ops_cache_hits_total /metrics and /readyz answers taken from a result "
    "under ops_cache_max_age old.\n"
    "# TYPE zmesh_gateway_ops_cache_hits_total counter\n"
    "zmesh_gateway_ops_cache_hits_total 0\n"
    "# HELP zmesh_gateway_ops_cache_refreshes_total Times /metrics or /readyz asked every service "
    "again.\n"
    "# TYPE zmesh_gateway_ops_cache_refreshes_total counter\n"
    "zmesh_gateway_ops_cache_refreshes_total 0\n"
    "# HELP zmesh_gateway_worker_errors_total Exceptions a handler let escape, stopped at its "
    "worker thread (which goes on).\n"
    "# TYPE zmesh_gateway_worker_errors_total counter\n"
    "zmesh_gateway_worker_errors_total 0\n"
    "# HELP zmesh_gateway_ratelimit_admitted_total Requests the per-token rate limit "
    "(ratelimit_rule) let through.\n"
    "# TYPE zmesh_gateway_ratelimit_admitted_total counter\n"
    "zmesh_gateway_ratelimit_admitted_total 0\n"
    "# HELP zmesh_gateway_ratelimit_denied_total Requests over the per-token rate limit, "
    "answered 429.\n"
    "# TYPE zmesh_gateway_ratelimit_denied_total counter\n"
    "zmesh_gateway_ratelimit_denied_total 0\n"
    "# HELP zmesh_gateway_ratelimit_failed_closed_total Requests answered 503 because the rate "
    "limiter could not be asked (ratelimit_fail_open off).\n"
    "# TYPE zmesh_gateway_ratelimit_failed_closed_total counter\n"
    "zmesh_gateway_ratelimit_failed_closed_total 0\n"
    "# HELP zmesh_gateway_ratelimit_queue_full_total Requests answered 503 because "
    "ratelimit_queue of their caller's requests were already waiting for the rate limiter.\n"
    "# TYPE zmesh_gateway_ratelimit_queue_full_total counter\n"
    "zmesh_gateway_ratelimit_queue_full_total 0\n"
    "# HELP zmesh_gateway_ratelimit_leases_total RateLimit.lease calls made for the per-token "
    "rate limit.\n"
    "# TYPE zmesh_gateway_ratelimit_leases_total counter\n"
    "zmesh_gateway_ratelimit_leases_total 0\n"
    "# HELP zmesh_gateway_ratelimit_lease_failures_total RateLimit.lease calls that failed or "
    "went unanswered.\n"
    "# TYPE zmesh_gateway_ratelimit_lease_failures_total counter\n"
    "zmesh_gateway_ratelimit_lease_failures_total 0\n"
    "# HELP zmesh_gateway_idempotency_entries Idempotency-Key answers kept (and requests running "
    "with a key).\n"
    "# TYPE zmesh_gateway_idempotency_entries gauge\n"
    "zmesh_gateway_idempotency_entries 0\n"
    "# HELP zmesh_gateway_idempotency_bytes Bytes the idempotency store holds (bounded by "
    "idempotency_max_bytes).\n"
    "# TYPE zmesh_gateway_idempotency_bytes gauge\n"
    "zmesh_gateway_idempotency_bytes 0\n"
    "# HELP zmesh_gateway_idempotency_evictions_total Idempotency entries evicted before their "
    "window ended: the store was full.\n"
    "# TYPE zmesh_gateway_idempotency_evictions_total counter\n"
    "zmesh_gateway_idempotency_evictions_total 0\n"
    "# HELP zmesh_gateway_idempotency_quota_evictions_total Idempotency entries evicted because "
    "their principal was over idempotency_principal_max_bytes.\n"
    "# TYPE zmesh_gateway_idempotency_quota_evictions_total counter\n"
    "zmesh_gateway_idempotency_quota_evictions_total 0\n";

}  // namespace

TEST_CASE("Metrics: escapeLabelValue", "[metrics]") {
  const std::vector<std::pair<std::string, std::string>> rows = {
      {"", ""},
      {"plain /v1/ids/{namespace}", "plain /v1/ids/{namespace}"},
      {"a\\b", "a\\\\b"},
      {"say \"hi\"", "say \\\"hi\\\""},
      {"two\nlines", "two\\nlines"},
      {"\\n", "\\\\n"},  // a backslash then n, not a newline
      {"\\\"\n", "\\\\\\\"\\n"},
      {"tab\tand\rcr", "tab\tand\rcr"},  // only the three are escaped
      {"caf\xc3\xa9", "caf\xc3\xa9"},    // UTF-8 passes through
      {std::string("nul\0x", 5), std::string("nul\0x", 5)},
  };
  for (const auto& [in, out] : rows) {
    INFO("value: " << in);
    CHECK(escapeLabelValue(in) == out);
  }
}

TEST_CASE("Metrics: sanitizeMetricName", "[metrics]") {
  const std::vector<std::pair<std::string, std::string>> rows = {
      {"rpc_calls", "rpc_calls"},
      {"rpc.calls", "rpc_calls"},
      {"Abc:def_9", "Abc:def_9"},
      {"_x", "_x"},
      {":x", ":x"},
      {"a-b c/d", "a_b_c_d"},
      {"5xx", "_5xx"},  // a leading digit is kept behind a '_'
      {"0", "_0"},
      {"", "_"},
      {"caf\xc3\xa9", "caf__"},  // each byte of a non-ASCII character
      {"x{y=\"z\"}", "x_y__z__"},
  };
  for (const auto& [in, out] : rows) {
    INFO("name: " << in);
    CHECK(sanitizeMetricName(in) == out);
  }
}

TEST_CASE("Metrics: an empty scrape", "[metrics]") {
  const Metrics metrics;
  CHECK(metrics.render({}, {}) ==
        std::string("# HELP zmesh_gateway_requests_total HTTP requests answered.\n"
                    "# TYPE zmesh_gateway_requests_total counter\n"
                    "# HELP zmesh_gateway_request_duration_seconds Time to answer HTTP requests, "
                    "by route.\n"
                    "# TYPE zmesh_gateway_request_duration_seconds histogram\n") +
            kGaugesZero + kLimitsZero +
            "# HELP zmesh_service_up Whether the service answered its health check with ok (1) "
            "or not (0).\n"
            "# TYPE zmesh_service_up gauge\n"
            "# HELP zmesh_service_counter Statistics the service reports (Admin.stats).\n"
            "# TYPE zmesh_service_counter untyped\n");
}

TEST_CASE("Metrics: exact text of a small scenario", "[metrics]") {
  Metrics metrics;
  metrics.observe("GET", "/v1/ids/{namespace}", 200, 0.25);
  metrics.observe("POST", "/v1/locks/{name}", 409, 20);  // beyond the last bound
  metrics.observe("GET", "/v1/ids/{namespace}", 200, 0.5);
  metrics.observe("POST", "/v1/ids/{namespace}", 400, 0.0005);
  metrics.requestStarted();
  metrics.requestStarted();
  metrics.requestFinished();
  metrics.sseOpened();
  metrics.sseOpened();
  metrics.sseOpened();
  metrics.sseClosed(true);
  metrics.sseClosed(false);
  metrics.eventsReceived(5, 1);
  metrics.eventsReceived(2, 0);

  const std::vector<ClientSample> clients = {
      {"idgen", {{"calls", 7}, {"deadline_exceeded", 1}}},
      {"broker", {{"calls", 3}}},
      {"idgen", {{"calls", 1}}},  // another worker's share
  };
  const std::vector<ServiceSample> services = {
      {"idgen", true, {{"rpc.calls", 12}, {"ids.served", -1}}},
      {"broker", false, {}},
  };

  const std::string expected =
      R"(# HELP zmesh_gateway_requests_total HTTP requests answered.
# TYPE zmesh_gateway_requests_total counter
zmesh_gateway_requests_total{method="GET",route="/v1/ids/{namespace}",status="200"} 2
zmesh_gateway_requests_total{method="POST",route="/v1/ids/{namespace}",status="400"} 1
zmesh_gateway_requests_total{method="POST",route="/v1/locks/{name}",status="409"} 1
# HELP zmesh_gateway_request_duration_seconds Time to answer HTTP requests, by route.
# TYPE zmesh_gateway_request_duration_seconds histogram
zmesh_gateway_request_duration_seconds_bucket{route="/v1/ids/{namespace}",le="0.0005"} 1
zmesh_gateway_request_duration_seconds_bucket{route="/v1/ids/{namespace}",le="0.001"} 1
zmesh_gateway_request_duration_seconds_bucket{route="/v1/ids/{namespace}",le="0.0025"} 1
zmesh_gateway_request_duration_seconds_bucket{route="/v1/ids/{namespace}",le="0.005"} 1
zmesh_gateway_request_duration_seconds_bucket{route="/v1/ids/{namespace}",le="0.01"} 1
zmesh_gateway_request_duration_seconds_bucket{route="/v1/ids/{namespace}",le="0.025"} 1
zmesh_gateway_request_duration_seconds_bucket{route="/v1/ids/{namespace}",le="0.05"} 1
zmesh_gateway_request_duration_seconds_bucket{route="/v1/ids/{namespace}",le="0.1"} 1
zmesh_gateway_request_duration_seconds_bucket{route="/v1/ids/{namespace}",le="0.25"} 2
zmesh_gateway_request_duration_seconds_bucket{route="/v1/ids/{namespace}",le="0.5"} 3
zmesh_gateway_request_duration_seconds_bucket{route="/v1/ids/{namespace}",le="1"} 3
zmesh_gateway_request_duration_seconds_bucket{route="/v1/ids/{namespace}",le="2.5"} 3
zmesh_gateway_request_duration_seconds_bucket{route="/v1/ids/{namespace}",le="5"} 3
zmesh_gateway_request_duration_seconds_bucket{route="/v1/ids/{namespace}",le="10"} 3
zmesh_gateway_request_duration_seconds_bucket{route="/v1/ids/{namespace}",le="+Inf"} 3
zmesh_gateway_request_duration_seconds_sum{route="/v1/ids/{namespace}"} 0.7505
zmesh_gateway_request_duration_seconds_count{route="/v1/ids/{namespace}"} 3
zmesh_gateway_request_duration_seconds_bucket{route="/v1/locks/{name}",le="0.0005"} 0
zmesh_gateway_request_duration_seconds_bucket{route="/v1/locks/{name}",le="0.001"} 0
zmesh_gateway_request_duration_seconds_bucket{route="/v1/locks/{name}",le="0.0025"} 0
zmesh_gateway_request_duration_seconds_bucket{route="/v1/locks/{name}",le="0.005"} 0
zmesh_gateway_request_duration_seconds_bucket{route="/v1/locks/{name}",le="0.01"} 0
zmesh_gateway_request_duration_seconds_bucket{route="/v1/locks/{name}",le="0.025"} 0
zmesh_gateway_request_duration_seconds_bucket{route="/v1/locks/{name}",le="0.05"} 0
zmesh_gateway_request_duration_seconds_bucket{route="/v1/locks/{name}",le="0.1"} 0
zmesh_gateway_request_duration_seconds_bucket{route="/v1/locks/{name}",le="0.25"} 0
zmesh_gateway_request_duration_seconds_bucket{route="/v1/locks/{name}",le="0.5"} 0
zmesh_gateway_request_duration_seconds_bucket{route="/v1/locks/{name}",le="1"} 0
zmesh_gateway_request_duration_seconds_bucket{route="/v1/locks/{name}",le="2.5"} 0
zmesh_gateway_request_duration_seconds_bucket{route="/v1/locks/{name}",le="5"} 0
zmesh_gateway_request_duration_seconds_bucket{route="/v1/locks/{name}",le="10"} 0
zmesh_gateway_request_duration_seconds_bucket{route="/v1/locks/{name}",le="+Inf"} 1
zmesh_gateway_request_duration_seconds_sum{route="/v1/locks/{name}"} 20
zmesh_gateway_request_duration_seconds_count{route="/v1/locks/{name}"} 1
# HELP zmesh_gateway_requests_in_flight HTTP requests being answered.
# TYPE zmesh_gateway_requests_in_flight gauge
zmesh_gateway_requests_in_flight 1
# HELP zmesh_gateway_sse_streams Open server-sent event streams.
# TYPE zmesh_gateway_sse_streams gauge
zmesh_gateway_sse_streams 1
# HELP zmesh_gateway_sse_dropped_total Event streams cut off because the client read too slowly.
# TYPE zmesh_gateway_sse_dropped_total counter
zmesh_gateway_sse_dropped_total 1
# HELP zmesh_gateway_events_received_total Events received from the mesh.
# TYPE zmesh_gateway_events_received_total counter
zmesh_gateway_events_received_total 7
# HELP zmesh_gateway_event_gaps_total Gaps (lost events) detected in the events received from the mesh.
# TYPE zmesh_gateway_event_gaps_total counter
zmesh_gateway_event_gaps_total 1
)" + std::string(kLimitsZero) +
      R"(# HELP zmesh_gateway_rpc_calls_total The gateway's RPC client counter toward each service.
# TYPE zmesh_gateway_rpc_calls_total counter
zmesh_gateway_rpc_calls_total{service="broker"} 3
zmesh_gateway_rpc_calls_total{service="idgen"} 8
# HELP zmesh_gateway_rpc_deadline_exceeded_total The gateway's RPC client counter toward each service.
# TYPE zmesh_gateway_rpc_deadline_exceeded_total counter
zmesh_gateway_rpc_deadline_exceeded_total{service="idgen"} 1
# HELP zmesh_service_up Whether the service answered its health check with ok (1) or not (0).
# TYPE zmesh_service_up gauge
zmesh_service_up{service="broker"} 0
zmesh_service_up{service="idgen"} 1
# HELP zmesh_service_counter Statistics the service reports (Admin.stats).
# TYPE zmesh_service_counter untyped
zmesh_service_counter{service="idgen",name="ids.served"} -1
zmesh_service_counter{service="idgen",name="rpc.calls"} 12
)";
  const std::string text = metrics.render(services, clients);
  CHECK(text == expected);
  // Line by line as well, so a failure points at the first differing line.
  const auto got = lines(text);
  const auto want = lines(expected);
  for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    INFO("line " << i + 1);
    REQUIRE(got[i] == want[i]);
  }
  CHECK(got.size() == want.size());

  SECTION("each family is declared once, before its samples") {
    std::set<std::string> declared;
    for (const std::string& line : got) {
      if (line.starts_with("# TYPE ")) {
        const std::string name = line.substr(7, line.find(' ', 7) - 7);
        CHECK(declared.insert(name).second);
      } else if (!line.starts_with("# HELP ")) {
        std::string name = line.substr(0, line.find_first_of("{ "));
        for (const char* suffix : {"_bucket", "_sum", "_count"}) {
          if (name.starts_with("zmesh_gateway_request_duration_seconds") &&
              name.ends_with(suffix)) {
            name.resize(name.size() - std::string_view(suffix).size());
          }
        }
        INFO(line);
        CHECK(declared.contains(name));
      }
    }
    CHECK(declared.size() == 30);
  }
  SECTION("rendering is deterministic, whatever the order things happened in") {
    CHECK(metrics.render(services, clients) == text);
    Metrics reordered;
    reordered.observe("POST", "/v1/ids/{namespace}", 400, 0.0005);
    reordered.observe("GET", "/v1/ids/{namespace}", 200, 0.25);
    reordered.observe("GET", "/v1/ids/{namespace}", 200, 0.5);
    reordered.observe("POST", "/v1/locks/{name}", 409, 20);
    reordered.eventsReceived(2, 0);
    reordered.eventsReceived(5, 1);
    reordered.sseOpened();
    reordered.sseClosed(false);
    reordered.sseOpened();
    reordered.sseOpened();
    reordered.sseClosed(true);
    reordered.requestStarted();
    const std::vector<ClientSample> clients2 = {
        {"idgen", {{"calls", 1}}},
        {"broker", {{"calls", 3}}},
        {"idgen", {{"deadline_exceeded", 1}, {"calls", 7}}},
    };
    const std::vector<ServiceSample> services2 = {
        {"broker", false, {}},
        {"idgen", true, {{"ids.served", -1}, {"rpc.calls", 12}}},
    };
    CHECK(reordered.render(services2, clients2) == text);
  }
}

TEST_CASE("Metrics: a value equal to a bound falls in that bucket", "[metrics]") {
  REQUIRE(Metrics::kBuckets.size() == kLe.size());
  for (size_t i = 0; i < Metrics::kBuckets.size(); ++i) {
    const double bound = Metrics::kBuckets[i];
    INFO("bound " << kLe[i]);
    Metrics metrics;
    metrics.observe("GET", "r", 200, bound);
    metrics.observe("GET", "r", 200, std::nextafter(bound, 1e9));  // just above: the next bucket
    const std::string text = metrics.render({}, {});
    for (size_t j = 0; j < kLe.size(); ++j) {
      const char* want = j < i ? "0" : j == i ? "1" : "2";
      CHECK(valueOf(text, bucket("r", kLe[j])) == want);
    }
    CHECK(valueOf(text, bucket("r", "+Inf")) == "2");
    CHECK(valueOf(text, "zmesh_gateway_request_duration_seconds_count{route=\"r\"}") == "2");
  }
}

TEST_CASE("Metrics: odd durations", "[metrics]") {
  SECTION("zero, negative, NaN and infinities count as instant") {
    Metrics metrics;
    for (double v :
         {0.0, -0.0, -1.0, std::numeric_limits<double>::quiet_NaN(),
          std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()}) {
      metrics.observe("GET", "r", 200, v);
    }
    const std::string text = metrics.render({}, {});
    CHECK(valueOf(text, bucket("r", "0.0005")) == "6");
    CHECK(valueOf(text, "zmesh_gateway_request_duration_seconds_sum{route=\"r\"}") == "0");
    CHECK(valueOf(text, "zmesh_gateway_request_duration_seconds_count{route=\"r\"}") == "6");
  }
  SECTION("sums are printed exactly, in plain notation for everyday sizes") {
    const std::vector<std::pair<double, std::string>> rows = {
        {0.1, "0.1"},       {1e-05, "1e-05"},
        {0.0001, "0.0001"}, {123456.5, "123456.5"},
        {1e21, "1e+21"},    {0.30000000000000004, "0.30000000000000004"},
        {3, "3"},           {1e20, "100000000000000000000"},
    };
    for (const auto& [seconds, printed] : rows) {
      INFO("seconds " << printed);
      Metrics metrics;
      metrics.observe("GET", "r", 200, seconds);
      CHECK(valueOf(metrics.render({}, {}),
                    "zmesh_gateway_request_duration_seconds_sum{route=\"r\"}") == printed);
    }
  }
}

TEST_CASE("Metrics: gauges and counters", "[metrics]") {
  Metrics metrics;
  auto value = [&](const std::string& series) { return valueOf(metrics.render({}, {}), series); };
  CHECK(value("zmesh_gateway_requests_in_flight") == "0");
  metrics.requestStarted();
  metrics.requestStarted();
  metrics.requestStarted();
  CHECK(value("zmesh_gateway_requests_in_flight") == "3");
  metrics.requestFinished();
  CHECK(value("zmesh_gateway_requests_in_flight") == "2");
  metrics.requestFinished();
  metrics.requestFinished();
  CHECK(value("zmesh_gateway_requests_in_flight") == "0");

  metrics.sseOpened();
  metrics.sseOpened();
  CHECK(value("zmesh_gateway_sse_streams") == "2");
  metrics.sseClosed(false);
  CHECK(value("zmesh_gateway_sse_streams") == "1");
  CHECK(value("zmesh_gateway_sse_dropped_total") == "0");
  metrics.sseClosed(true);
  CHECK(value("zmesh_gateway_sse_streams") == "0");
  CHECK(value("zmesh_gateway_sse_dropped_total") == "1");

  metrics.eventsReceived(0, 0);
  metrics.eventsReceived(1000000, 3);
  metrics.eventsReceived(1, 0);
  CHECK(value("zmesh_gateway_events_received_total") == "1000001");
  CHECK(value("zmesh_gateway_event_gaps_total") == "3");
}

TEST_CASE("Metrics: label values are escaped in the exposition", "[metrics]") {
  Metrics metrics;
  metrics.observe("GET", "/a\"b\\c\nd", 200, 1);
  const std::vector<ServiceSample> services = {{"svc\"1", true, {{"odd\\name\n", 5}}}};
  const std::vector<ClientSample> clients = {{"svc\n2", {{"calls", 1}}}};
  const std::string text = metrics.render(services, clients);
  CHECK(valueOf(text,
                "zmesh_gateway_requests_total{method=\"GET\",route=\"/a\\\"b\\\\c\\nd\","
                "status=\"200\"}") == "1");
  CHECK(valueOf(text, bucket("/a\\\"b\\\\c\\nd", "1")) == "1");
  CHECK(valueOf(text, "zmesh_service_up{service=\"svc\\\"1\"}") == "1");
  CHECK(valueOf(text, "zmesh_service_counter{service=\"svc\\\"1\",name=\"odd\\\\name\\n\"}") ==
        "5");
  CHECK(valueOf(text, "zmesh_gateway_rpc_calls_total{service=\"svc\\n2\"}") == "1");
  // No raw newline inside any sample: every line is a comment or a whole sample.
  for (const std::string& line : lines(text)) {
    INFO(line);
    CHECK((line.starts_with("# ") || line.starts_with("zmesh_")));
  }
}

TEST_CASE("Metrics: samples from the services", "[metrics]") {
  Metrics metrics;
  SECTION("counter names are sanitized; names that sanitize alike add up") {
    const std::vector<ClientSample> clients = {
        {"idgen", {{"send.failed", 2}, {"send_failed", 3}, {"5xx", 1}, {"a-b", 4}}}};
    const std::string text = metrics.render({}, clients);
    CHECK(valueOf(text, "zmesh_gateway_rpc_send_failed_total{service=\"idgen\"}") == "5");
    CHECK(valueOf(text, "zmesh_gateway_rpc_5xx_total{service=\"idgen\"}") == "1");
    CHECK(valueOf(text, "zmesh_gateway_rpc_a_b_total{service=\"idgen\"}") == "4");
  }
  SECTION("a service sampled twice: the later sample wins") {
    const std::vector<ServiceSample> services = {
        {"idgen", true, {{"a", 1}, {"b", 2}}},
        {"idgen", false, {{"a", 10}}},
    };
    const std::string text = metrics.render(services, {});
    CHECK(valueOf(text, "zmesh_service_up{service=\"idgen\"}") == "0");
    CHECK(valueOf(text, "zmesh_service_counter{service=\"idgen\",name=\"a\"}") == "10");
    CHECK(valueOf(text, "zmesh_service_counter{service=\"idgen\",name=\"b\"}") == "2");
  }
  SECTION("extreme values") {
    const std::vector<ServiceSample> services = {{"s",
                                                  true,
                                                  {{"max", std::numeric_limits<int64_t>::max()},
                                                   {"min", std::numeric_limits<int64_t>::min()}}}};
    const std::vector<ClientSample> clients = {
        {"s", {{"calls", std::numeric_limits<uint64_t>::max()}}}};
    const std::string text = metrics.render(services, clients);
    CHECK(valueOf(text, "zmesh_service_counter{service=\"s\",name=\"max\"}") ==
          "9223372036854775807");
    CHECK(valueOf(text, "zmesh_service_counter{service=\"s\",name=\"min\"}") ==
          "-9223372036854775808");
    CHECK(valueOf(text, "zmesh_gateway_rpc_calls_total{service=\"s\"}") == "18446744073709551615");
  }
}

TEST_CASE("Metrics: concurrent recording", "[metrics]") {
  Metrics metrics;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        metrics.requestStarted();
        metrics.observe("GET", "r", 200, 0.25);
        metrics.requestFinished();
      }
    });
  }
  for (auto& th : threads) th.join();
  const std::string text = metrics.render({}, {});
  CHECK(valueOf(text, "zmesh_gateway_requests_total{method=\"GET\",route=\"r\",status=\"200\"}") ==
        "4000");
  CHECK(valueOf(text, "zmesh_gateway_request_duration_seconds_sum{route=\"r\"}") == "1000");
  CHECK(valueOf(text, "zmesh_gateway_requests_in_flight") == "0");
}

TEST_CASE("Metrics: the same numbers as Admin.stats counters", "[metrics]") {
  Metrics m;
  m.observe("GET", "/a", 200, 0.001);
  m.observe("POST", "/b", 503, 0.001);
  m.observe("POST", "/b", 504, 0.001);
  m.requestStarted();
  m.sseOpened();
  m.sseOpened();
  m.sseClosed(true);
  m.eventsReceived(5, 1);
  auto counters = m.adminCounters();
  std::map<std::string, int64_t> byName(counters.begin(), counters.end());
  CHECK(byName.at("http.requests") == 3);
  CHECK(byName.at("http.5xx") == 2);
  CHECK(byName.at("http.in_flight") == 1);
  CHECK(byName.at("sse.streams") == 1);
  CHECK(byName.at("sse.dropped") == 1);
  CHECK(byName.at("events.received") == 5);
  CHECK(byName.at("events.gaps") == 1);
}

TEST_CASE("Metrics: method labels come from a closed set", "[metrics]") {
  CHECK(Metrics::methodLabel("GET") == "GET");
  CHECK(Metrics::methodLabel("PATCH") == "PATCH");
  CHECK(Metrics::methodLabel("OPTIONS") == "OPTIONS");
  CHECK(Metrics::methodLabel("get") == "OTHER");
  CHECK(Metrics::methodLabel("BREW") == "OTHER");
  CHECK(Metrics::methodLabel("") == "OTHER");
  CHECK(Metrics::methodLabel("UNKNOWN") == "OTHER");
}

TEST_CASE("Metrics: a flood of invented methods and statuses adds no series", "[metrics]") {
  Metrics metrics;
  for (int i = 0; i < 10000; ++i) {
    metrics.observe("X" + std::to_string(i), "unmatched", 405, 0.001);
    metrics.observe("GET", "unmatched", 1000 + i, 0.001);
  }
  const std::string text = metrics.render({}, {});
  size_t series = 0;
  for (const std::string& line : lines(text))
    if (line.starts_with("zmesh_gateway_requests_total{")) ++series;
  CHECK(series == 2);
  CHECK(valueOf(
            text,
            "zmesh_gateway_requests_total{method=\"OTHER\",route=\"unmatched\",status=\"405\"}") ==
        "10000");
  CHECK(valueOf(text,
                "zmesh_gateway_requests_total{method=\"GET\",route=\"unmatched\",status=\"0\"}") ==
        "10000");
}

TEST_CASE("Metrics: the limits' counters and gauges", "[metrics]") {
  Metrics metrics;
  auto value = [&](const std::string& series) { return valueOf(metrics.render({}, {}), series); };
  CHECK(value("zmesh_gateway_connections") == "0");
  metrics.connectionOpened();
  metrics.connectionOpened();
  metrics.connectionClosed();
  CHECK(value("zmesh_gateway_connections") == "1");
  metrics.count(Metrics::Limit::kConnectionsRefused);
  metrics.count(Metrics::Limit::kHeaderTimeouts, 2);
  metrics.count(Metrics::Limit::kAcceptErrors, 3);
  metrics.count(Metrics::Limit::kSseRefused, 4);
  metrics.count(Metrics::Limit::kSseReplayTruncated, 5);
  metrics.count(Metrics::Limit::kOpsCacheHits, 6);
  metrics.count(Metrics::Limit::kOpsCacheRefreshes, 7);
  metrics.count(Metrics::Limit::kWorkerErrors, 12);
  metrics.count(Metrics::Limit::kRatelimitAdmitted, 13);
  metrics.count(Metrics::Limit::kRatelimitDenied, 14);
  metrics.count(Metrics::Limit::kRatelimitFailedClosed, 15);
  metrics.count(Metrics::Limit::kRatelimitQueueFull, 16);
  metrics.count(Metrics::Limit::kRatelimitLeases, 17);
  metrics.count(Metrics::Limit::kRatelimitLeaseFailures, 18);
  metrics.setIdempotency({8, 9, 10, 11});
  CHECK(value("zmesh_gateway_connections_refused_total") == "1");
  CHECK(value("zmesh_gateway_header_timeouts_total") == "2");
  CHECK(value("zmesh_gateway_accept_errors_total") == "3");
  CHECK(value("zmesh_gateway_sse_refused_total") == "4");
  CHECK(value("zmesh_gateway_sse_replay_truncated_total") == "5");
  CHECK(value("zmesh_gateway_ops_cache_hits_total") == "6");
  CHECK(value("zmesh_gateway_ops_cache_refreshes_total") == "7");
  CHECK(value("zmesh_gateway_worker_errors_total") == "12");
  CHECK(value("zmesh_gateway_ratelimit_admitted_total") == "13");
  CHECK(value("zmesh_gateway_ratelimit_denied_total") == "14");
  CHECK(value("zmesh_gateway_ratelimit_failed_closed_total") == "15");
  CHECK(value("zmesh_gateway_ratelimit_queue_full_total") == "16");
  CHECK(value("zmesh_gateway_ratelimit_leases_total") == "17");
  CHECK(value("zmesh_gateway_ratelimit_lease_failures_total") == "18");
  CHECK(value("zmesh_gateway_idempotency_entries") == "8");
  CHECK(value("zmesh_gateway_idempotency_bytes") == "9");
  CHECK(value("zmesh_gateway_idempotency_evictions_total") == "10");
  CHECK(value("zmesh_gateway_idempotency_quota_evictions_total") == "11");
  auto counters = metrics.adminCounters();
  std::map<std::string, int64_t> byName(counters.begin(), counters.end());
  CHECK(byName.at("http.connections") == 1);
  CHECK(byName.at("http.connections_refused") == 1);
}
