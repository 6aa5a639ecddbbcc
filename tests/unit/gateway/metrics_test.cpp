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
using zmesh::rpc::MetricFamily;
using zmesh::rpc::MetricKind;
using zmesh::rpc::MetricSample;

namespace {

MetricSample sample(std::vector<std::string> labelValues, double value) {
  MetricSample s;
  s.labelValues = std::move(labelValues);
  s.value = value;
  return s;
}

MetricSample histogramSample(std::vector<std::string> labelValues, std::vector<uint64_t> cumulative,
                             double count, double sum) {
  MetricSample s = sample(std::move(labelValues), count);
  s.buckets = std::move(cumulative);
  s.sum = sum;
  return s;
}

MetricFamily family(std::string name, MetricKind kind, std::vector<std::string> labelNames,
                    std::vector<MetricSample> samples, std::vector<double> bounds = {}) {
  MetricFamily f;
  f.help = "Help of " + name + ".";
  f.name = std::move(name);
  f.kind = kind;
  f.labelNames = std::move(labelNames);
  f.samples = std::move(samples);
  f.bounds = std::move(bounds);
  return f;
}

MetricFamily gauge(std::string name, double value) {
  return family(std::move(name), MetricKind::kGauge, {}, {sample({}, value)});
}

MetricFamily counter(std::string name, double value) {
  return family(std::move(name), MetricKind::kCounter, {}, {sample({}, value)});
}

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
    "# HELP zmesh_gateway_metric_conflicts_total Service metric families left out of /metrics, "
    "per refresh: their name was taken with another kind or other labels, or they are not valid "
    "Prometheus.\n"
    "# TYPE zmesh_gateway_metric_conflicts_total counter\n"
    "zmesh_gateway_metric_conflicts_total 0\n"
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

TEST_CASE("Metrics: escapeLabelValue replaces invalid UTF-8 with U+FFFD", "[metrics]") {
  const std::string fffd = "\xef\xbf\xbd";
  const std::vector<std::pair<std::string, std::string>> rows = {
      {"\xff", fffd},
      {"a\xff"
       "b\xfe",
       "a" + fffd + "b" + fffd},
      // Truncated sequences: at the end, and cut short by another character.
      {"caf\xc3", "caf" + fffd},
      {"\xe2\x82", fffd},
      {"\xe2\x82x", fffd + "x"},
      {"\xf0\x9f\x98\"q", fffd + "\\\"q"},  // still escaped after
      // A lone continuation byte, an overlong '/', a surrogate, past U+10FFFF.
      {"\x80", fffd},
      {"\xc0\xaf", fffd + fffd},
      {"\xed\xa0\x80", fffd + fffd + fffd},
      {"\xf4\x90\x80\x80", fffd + fffd + fffd + fffd},
      // Valid multi-byte text is kept as is: 2, 3 and 4 bytes, and U+FFFD itself.
      {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9d\x84\x9e \xe6\x97\xa5\xe6\x9c\xac",
       "caf\xc3\xa9 \xe2\x82\xac \xf0\x9d\x84\x9e \xe6\x97\xa5\xe6\x9c\xac"},
      {fffd, fffd},
      {"\xf4\x8f\xbf\xbf", "\xf4\x8f\xbf\xbf"},  // U+10FFFF
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
            "# HELP zmesh_service_up Whether the service answered Admin.stats (1) or not (0) at "
            "the last scrape.\n"
            "# TYPE zmesh_service_up gauge\n");
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
      {"idgen", true, "", {gauge("ids.served", -1), counter("rpc.calls", 12)}},
      {"broker", false, "UNAVAILABLE: down", {}},
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
# HELP zmesh_service_up Whether the service answered Admin.stats (1) or not (0) at the last scrape.
# TYPE zmesh_service_up gauge
zmesh_service_up{service="broker"} 0
zmesh_service_up{service="idgen"} 1
# HELP zmesh_ids_served Help of ids.served.
# TYPE zmesh_ids_served gauge
zmesh_ids_served{service="idgen"} -1
# HELP zmesh_rpc_calls_total Help of rpc.calls.
# TYPE zmesh_rpc_calls_total counter
zmesh_rpc_calls_total{service="idgen"} 12
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
    CHECK(declared.size() == 32);
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
        {"broker", false, "UNAVAILABLE: down", {}},
        {"idgen", true, "", {gauge("ids.served", -1), counter("rpc.calls", 12)}},
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
  const std::vector<ServiceSample> services = {
      {"svc\"1",
       true,
       "",
       {family("odd", MetricKind::kCounter, {"k"}, {sample({"odd\\name\n"}, 5)})}}};
  const std::vector<ClientSample> clients = {{"svc\n2", {{"calls", 1}}}};
  const std::string text = metrics.render(services, clients);
  CHECK(valueOf(text,
                "zmesh_gateway_requests_total{method=\"GET\",route=\"/a\\\"b\\\\c\\nd\","
                "status=\"200\"}") == "1");
  CHECK(valueOf(text, bucket("/a\\\"b\\\\c\\nd", "1")) == "1");
  CHECK(valueOf(text, "zmesh_service_up{service=\"svc\\\"1\"}") == "1");
  CHECK(valueOf(text, "zmesh_odd_total{service=\"svc\\\"1\",k=\"odd\\\\name\\n\"}") == "5");
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
  SECTION("a service sampled twice: the later sample wins whole") {
    const std::vector<ServiceSample> services = {
        {"idgen", true, "", {gauge("a", 1), gauge("b", 2)}},
        {"idgen", true, "", {gauge("a", 10)}},
    };
    const std::string text = metrics.render(services, {});
    CHECK(valueOf(text, "zmesh_service_up{service=\"idgen\"}") == "1");
    CHECK(valueOf(text, "zmesh_a{service=\"idgen\"}") == "10");
    CHECK(text.find("zmesh_b") == std::string::npos);
  }
  SECTION("extreme values") {
    const std::vector<ServiceSample> services = {
        {"s",
         true,
         "",
         {gauge("max", 9007199254740992.0), gauge("min", -1e300),
          gauge("nan", std::numeric_limits<double>::quiet_NaN()),
          gauge("inf", std::numeric_limits<double>::infinity())}}};
    const std::vector<ClientSample> clients = {{"s", {{"calls", 9007199254740992ULL}}}};
    const std::string text = metrics.render(services, clients);
    CHECK(valueOf(text, "zmesh_max{service=\"s\"}") == "9007199254740992");
    CHECK(valueOf(text, "zmesh_min{service=\"s\"}") == "-1e+300");
    CHECK(valueOf(text, "zmesh_nan{service=\"s\"}") == "NaN");
    CHECK(valueOf(text, "zmesh_inf{service=\"s\"}") == "+Inf");
    CHECK(valueOf(text, "zmesh_gateway_rpc_calls_total{service=\"s\"}") == "9007199254740992");
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
  const auto byName = zmesh::rpc::flatten(m.families());
  CHECK(byName.at("gateway.requests{method=GET,route=/a,status=200}") == 1);
  CHECK(byName.at("gateway.requests{method=POST,route=/b,status=503}") == 1);
  CHECK(byName.at("gateway.request_duration_seconds_count{route=/b}") == 2);
  CHECK(byName.at("gateway.requests_in_flight") == 1);
  CHECK(byName.at("gateway.sse_streams") == 1);
  CHECK(byName.at("gateway.sse_dropped") == 1);
  CHECK(byName.at("gateway.events_received") == 5);
  CHECK(byName.at("gateway.event_gaps") == 1);
  // What /metrics shows of the gateway is exactly these families.
  std::string rendered;
  for (const auto& f : m.families()) rendered += zmesh::rpc::prometheusName(f) + "\n";
  for (const std::string& line : lines(m.render({}, {})))
    if (line.starts_with("# TYPE ")) {
      const std::string name = line.substr(7, line.find(' ', 7) - 7);
      if (name != "zmesh_service_up") CHECK_THAT(rendered, Catch::Matchers::Contains(name + "\n"));
    }

  SECTION("Admin.stats caps a family's series: the rest fold into _other") {
    for (int i = 0; i < 10; ++i) m.observe("GET", "/r" + std::to_string(i), 200, 0.001);
    zmesh::rpc::MetricsOut out(4);
    m.collect(out);
    const auto capped = zmesh::rpc::flatten(out.take());
    CHECK(capped.at("gateway.requests{method=_other,route=_other,status=_other}") == 10);
    CHECK(capped.at("gateway.request_duration_seconds_count{route=_other}") == 9);
    CHECK(capped.at("metrics.series_folded") > 0);
  }
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
  metrics.count(Metrics::Limit::kMetricConflicts, 19);
  CHECK(value("zmesh_gateway_metric_conflicts_total") == "19");
  const auto byName = zmesh::rpc::flatten(metrics.families());
  CHECK(byName.at("gateway.connections") == 1);
  CHECK(byName.at("gateway.connections_refused") == 1);
  CHECK(byName.at("gateway.idempotency_bytes") == 9);
}

// ---- The services' typed families ----

TEST_CASE("Metrics: service families render with HELP and TYPE once and service first",
          "[metrics]") {
  const std::vector<ServiceSample> services = {
      {"idgen",
       true,
       "",
       {family("rpc.server.calls", MetricKind::kCounter, {"method", "code"},
               {sample({"IdGen.next", "ok"}, 12), sample({"IdGen.next", "invalid_argument"}, 1)}),
        family("process.start_time_seconds", MetricKind::kGauge, {}, {sample({}, 1764938400.5)}),
        family("rpc.server.duration_seconds", MetricKind::kHistogram, {"method"},
               {histogramSample({"IdGen.next"}, {10, 12}, 13, 0.25)}, {0.001, 0.01})}},
      {"lock", false, "UNAVAILABLE: no answer", {}},
      {"cache",
       true,
       "",
       {family("rpc.server.calls", MetricKind::kCounter, {"method", "code"},
               {sample({"Cache.get", "ok"}, 3)}),
        family("process.start_time_seconds", MetricKind::kGauge, {}, {sample({}, 7)})}},
  };
  const std::string expected =
      R"(# HELP zmesh_rpc_server_calls_total Help of rpc.server.calls.
# TYPE zmesh_rpc_server_calls_total counter
zmesh_rpc_server_calls_total{service="idgen",method="IdGen.next",code="ok"} 12
zmesh_rpc_server_calls_total{service="idgen",method="IdGen.next",code="invalid_argument"} 1
zmesh_rpc_server_calls_total{service="cache",method="Cache.get",code="ok"} 3
# HELP zmesh_process_start_time_seconds Help of process.start_time_seconds.
# TYPE zmesh_process_start_time_seconds gauge
zmesh_process_start_time_seconds{service="idgen"} 1764938400.5
zmesh_process_start_time_seconds{service="cache"} 7
# HELP zmesh_rpc_server_duration_seconds Help of rpc.server.duration_seconds.
# TYPE zmesh_rpc_server_duration_seconds histogram
zmesh_rpc_server_duration_seconds_bucket{service="idgen",method="IdGen.next",le="0.001"} 10
zmesh_rpc_server_duration_seconds_bucket{service="idgen",method="IdGen.next",le="0.01"} 12
zmesh_rpc_server_duration_seconds_bucket{service="idgen",method="IdGen.next",le="+Inf"} 13
zmesh_rpc_server_duration_seconds_sum{service="idgen",method="IdGen.next"} 0.25
zmesh_rpc_server_duration_seconds_count{service="idgen",method="IdGen.next"} 13
)";
  CHECK(Metrics::renderServices(services) == expected);
  CHECK(Metrics::conflicts(services) == 0);
  const std::string text = Metrics().render(services, {});
  CHECK_THAT(text, Catch::Matchers::EndsWith(expected));
  CHECK(valueOf(text, "zmesh_service_up{service=\"lock\"}") == "0");
  CHECK(text.find("zmesh_service_counter") == std::string::npos);
}

TEST_CASE("Metrics: a name declared twice differently keeps the first", "[metrics]") {
  auto calls = [](std::vector<std::string> labels, MetricKind kind = MetricKind::kCounter) {
    std::vector<std::string> values(labels.size(), "x");
    return family("rpc.calls", kind, std::move(labels), {sample(values, 1)});
  };
  SECTION("another kind") {
    // A gauge "rpc.calls.total" has the counter's Prometheus name zmesh_rpc_calls_total.
    const std::vector<ServiceSample> services = {
        {"a", true, "", {calls({"method"})}},
        {"b",
         true,
         "",
         {family("rpc.calls.total", MetricKind::kGauge, {"method"}, {sample({"y"}, 2)})}}};
    const auto text = Metrics::renderServices(services);
    CHECK(valueOf(text, "zmesh_rpc_calls_total{service=\"a\",method=\"x\"}") == "1");
    CHECK(text.find("service=\"b\"") == std::string::npos);
    CHECK(text.find("# TYPE zmesh_rpc_calls_total counter") != std::string::npos);
    CHECK(Metrics::conflicts(services) == 1);
  }
  SECTION("other label names, or the same in another order") {
    const std::vector<ServiceSample> services = {{"a", true, "", {calls({"method", "code"})}},
                                                 {"b", true, "", {calls({"method"})}},
                                                 {"c", true, "", {calls({"code", "method"})}},
                                                 {"d", true, "", {calls({"method", "code"})}}};
    const auto text = Metrics::renderServices(services);
    CHECK(valueOf(text, "zmesh_rpc_calls_total{service=\"a\",method=\"x\",code=\"x\"}") == "1");
    CHECK(valueOf(text, "zmesh_rpc_calls_total{service=\"d\",method=\"x\",code=\"x\"}") == "1");
    CHECK(text.find("service=\"b\"") == std::string::npos);
    CHECK(text.find("service=\"c\"") == std::string::npos);
    CHECK(Metrics::conflicts(services) == 2);
  }
  SECTION("a histogram's series names") {
    const std::vector<ServiceSample> services = {
        {"a",
         true,
         "",
         {family("latency", MetricKind::kHistogram, {}, {histogramSample({}, {1}, 1, 0.5)}, {1})}},
        {"b", true, "", {gauge("latency.count", 5), gauge("latency.sum.x", 6)}}};
    const auto text = Metrics::renderServices(services);
    CHECK(valueOf(text, "zmesh_latency_count{service=\"a\"}") == "1");
    CHECK(valueOf(text, "zmesh_latency_sum_x{service=\"b\"}") == "6");
    CHECK(Metrics::conflicts(services) == 1);  // zmesh_latency_count
  }
  SECTION("the gateway's own names") {
    const std::vector<ServiceSample> services = {
        {"a", true, "", {counter("gateway.requests", 1), gauge("service.up", 1)}}};
    CHECK(Metrics::renderServices(services).empty());
    CHECK(Metrics::conflicts(services) == 2);
    const auto text = Metrics().render(services, {});
    CHECK(text.find("zmesh_gateway_requests_total{service") == std::string::npos);
    CHECK(valueOf(text, "zmesh_service_up{service=\"a\"}") == "1");
  }
}

TEST_CASE("Metrics: families and samples that cannot be valid are left out", "[metrics]") {
  const std::vector<ServiceSample> services = {
      {"s",
       true,
       "",
       {
           family("a", MetricKind::kGauge, {"service"}, {sample({"x"}, 1)}),
           family("b", MetricKind::kGauge, {"le"}, {sample({"x"}, 1)}),
           family("c", MetricKind::kGauge, {"bad-name"}, {sample({"x"}, 1)}),
           family("d", MetricKind::kGauge, {"__reserved"}, {sample({"x"}, 1)}),
           family("e", MetricKind::kGauge, {"k", "k"}, {sample({"x", "y"}, 1)}),
           family("f", MetricKind::kHistogram, {}, {histogramSample({}, {1, 1}, 1, 1)}, {2, 1}),
           family("g", MetricKind::kHistogram, {}, {histogramSample({}, {1}, 1, 1)},
                  {std::numeric_limits<double>::infinity()}),
           family("", MetricKind::kGauge, {}, {sample({}, 1)}),
           // Valid families, with samples that do not fit them:
           family("h", MetricKind::kGauge, {"k"},
                  {sample({}, 1), sample({"x", "y"}, 2), sample({"x"}, 3), sample({"x"}, 4)}),
           family("i", MetricKind::kHistogram, {}, {histogramSample({}, {1, 2, 3}, 3, 1)}, {1, 2}),
           // Buckets that decrease, or exceed the count:
           family("j", MetricKind::kHistogram, {"k"},
                  {histogramSample({"down"}, {2, 1}, 2, 1), histogramSample({"over"}, {1, 3}, 2, 1),
                   histogramSample({"ok"}, {1, 2}, 2, 1)},
                  {1, 2}),
           family("bad name-é", MetricKind::kGauge, {}, {sample({}, 5)}),  // not [a-z0-9_.]+
       }},
  };
  const auto text = Metrics::renderServices(services);
  CHECK(Metrics::conflicts(services) == 9);
  CHECK(text ==
        "# HELP zmesh_h Help of h.\n"
        "# TYPE zmesh_h gauge\n"
        "zmesh_h{service=\"s\",k=\"x\"} 3\n"
        "# HELP zmesh_i Help of i.\n"
        "# TYPE zmesh_i histogram\n"
        "# HELP zmesh_j Help of j.\n"
        "# TYPE zmesh_j histogram\n"
        "zmesh_j_bucket{service=\"s\",k=\"ok\",le=\"1\"} 1\n"
        "zmesh_j_bucket{service=\"s\",k=\"ok\",le=\"2\"} 2\n"
        "zmesh_j_bucket{service=\"s\",k=\"ok\",le=\"+Inf\"} 2\n"
        "zmesh_j_sum{service=\"s\",k=\"ok\"} 1\n"
        "zmesh_j_count{service=\"s\",k=\"ok\"} 2\n");
}

TEST_CASE("Metrics: histograms of one name merge only with the same bounds", "[metrics]") {
  auto latency = [](std::vector<double> bounds) {
    std::vector<uint64_t> buckets(bounds.size(), 1);
    return family("latency", MetricKind::kHistogram, {},
                  {histogramSample({}, std::move(buckets), 1, 0.5)}, std::move(bounds));
  };
  const std::vector<ServiceSample> services = {{"a", true, "", {latency({1, 2})}},
                                               {"b", true, "", {latency({1, 5})}},
                                               {"c", true, "", {latency({1})}},
                                               {"d", true, "", {latency({1, 2})}}};
  const auto text = Metrics::renderServices(services);
  CHECK(valueOf(text, "zmesh_latency_count{service=\"a\"}") == "1");
  CHECK(valueOf(text, "zmesh_latency_count{service=\"d\"}") == "1");
  CHECK(text.find("service=\"b\"") == std::string::npos);
  CHECK(text.find("service=\"c\"") == std::string::npos);
  CHECK(Metrics::conflicts(services) == 2);
}

TEST_CASE("Metrics: service label values and help are escaped", "[metrics]") {
  MetricFamily f = family("x", MetricKind::kCounter, {"k"}, {sample({"a\"b\\c\nd"}, 1)});
  f.help = "line one\nback\\slash \"quoted\"";
  const std::vector<ServiceSample> services = {{"s\"1", true, "", {f}}};
  CHECK(Metrics::renderServices(services) ==
        "# HELP zmesh_x_total line one\\nback\\\\slash \"quoted\"\n"
        "# TYPE zmesh_x_total counter\n"
        "zmesh_x_total{service=\"s\\\"1\",k=\"a\\\"b\\\\c\\nd\"} 1\n");
}

TEST_CASE("Metrics: the gateway's RPC client counters as typed families", "[metrics]") {
  const auto families = Metrics::clientFamilies(
      {{"idgen", {{"calls", 7}, {"send.failed", 1}}}, {"idgen", {{"calls", 1}}}, {"lock", {}}});
  REQUIRE(families.size() == 2);
  CHECK(families[0].name == "gateway.rpc_calls");
  CHECK(zmesh::rpc::prometheusName(families[0]) == "zmesh_gateway_rpc_calls_total");
  CHECK(families[0].labelNames == std::vector<std::string>{"service"});
  REQUIRE(families[0].samples.size() == 1);
  CHECK(families[0].samples[0].value == 8);
  CHECK(families[1].name == "gateway.rpc_send_failed");
}
