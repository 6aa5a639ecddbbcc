// The gateway's own Prometheus metrics, and the text exposition format
// (version 0.0.4) for them and for samples gathered from the services.
// Thread-safe: workers record concurrently, a scrape renders.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "zmesh/rpc/metrics.h"

namespace zmesh::gateway {

// Label values are escaped as the format requires (\\, \", \n), and made
// valid UTF-8 first (validUtf8): one bad byte would make Prometheus refuse the
// whole scrape.
std::string escapeLabelValue(std::string_view value);
// `text` with every ill-formed UTF-8 sequence (its maximal ill-formed prefix)
// replaced by U+FFFD; well-formed text is returned as is.
std::string validUtf8(std::string_view text);
// A name made valid for Prometheus: [a-zA-Z_:][a-zA-Z0-9_:]*, other characters → '_'.
std::string sanitizeMetricName(std::string_view name);

// What a scrape learned about one service.
struct ServiceSample {
  std::string service;
  bool up = false;                          // answered Admin.stats
  std::string error;                        // why not, when !up ("UNAVAILABLE: …")
  std::vector<rpc::MetricFamily> families;  // Admin.stats, as the service declared them
};

// The gateway's RPC client counters toward one service, summed over workers.
struct ClientSample {
  std::string service;
  std::vector<std::pair<std::string, uint64_t>> counters;  // e.g. "calls", "deadline_exceeded"
};

// What the idempotency store holds, for /metrics (IdempotencyStore::stats()).
struct IdempotencySample {
  uint64_t entries = 0;
  uint64_t bytes = 0;
  uint64_t evictions = 0;       // the oldest entry went: the store was full (bytes or entries)
  uint64_t quotaEvictions = 0;  // a principal's oldest entry went: over its share
};

class Metrics {
 public:
  // Counters of the gateway's limits; each renders as zmesh_gateway_<name>_total.
  enum class Limit {
    kConnectionsRefused,  // connections_refused: over max_connections, answered 503
    kHeaderTimeouts,      // header_timeouts: closed before a whole header came (header_timeout)
    kAcceptErrors,        // accept_errors: accept() failed (EMFILE…), retried after a back-off
    kSseRefused,          // sse_refused: streams over max_sse_streams, answered 503
    kSseReplayTruncated,  // sse_replay_truncated: a resume cut at sse_replay_max_bytes
    kOpsCacheHits,        // ops_cache_hits: /metrics or /readyz answered from the cache
    kOpsCacheRefreshes,   // ops_cache_refreshes: the services asked again
    kWorkerErrors,        // worker_errors: a handler threw; its worker went on
    // The per-token limit (gateway.ratelimit_rule):
    kRatelimitAdmitted,       // ratelimit_admitted: requests it let through
    kRatelimitDenied,         // ratelimit_denied: answered 429
    kRatelimitFailedClosed,   // ratelimit_failed_closed: the rate limiter unreachable, 503
    kRatelimitQueueFull,      // ratelimit_queue_full: over ratelimit_queue waiting, 503
    kRatelimitLeases,         // ratelimit_leases: RateLimit.lease calls made
    kRatelimitLeaseFailures,  // ratelimit_lease_failures: of those, failed or unanswered
    // metric_conflicts: a service's family left out of /metrics (another
    // service or the gateway declared its name differently, or it is not
    // valid Prometheus), counted once per refresh of the services' stats.
    kMetricConflicts,
  };
  static constexpr size_t kLimits = 15;

  // HTTP methods become labels from a closed set: the methods of RFC 9110 and
  // PATCH by name, anything else (an invented method) "OTHER".
  static std::string_view methodLabel(std::string_view method);

  // Upper bounds in seconds of the request latency histogram.
  static constexpr std::array<double, 14> kBuckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

  // route: the route's pattern ("/v1/ids/{namespace}"), never the raw path, so
  // the label set stays bounded; unmatched requests use "unmatched". method
  // goes through methodLabel(); a status outside 100-599 counts as 0.
  void observe(std::string_view method, std::string_view route, int status, double seconds);
  void requestStarted();
  void requestFinished();
  void sseOpened();
  void sseClosed(bool dropped);  // dropped: a slow client was cut off
  void eventsReceived(uint64_t n, uint64_t gaps);
  void count(Limit limit, uint64_t n = 1);
  void connectionOpened();
  void connectionClosed();
  void setIdempotency(const IdempotencySample& sample);

  // The gateway's own statistics, typed, named "gateway.<what>" (so their
  // Prometheus names are the zmesh_gateway_* below): for its Admin.stats
  // (where MetricsOut caps the series) and for /v1/mesh.
  void collect(rpc::MetricsOut& out) const;
  std::vector<rpc::MetricFamily> families() const;  // collect(), uncapped
  // The gateway's RPC client counters as "gateway.rpc_<counter>" counters
  // with a "service" label, summed over workers.
  static std::vector<rpc::MetricFamily> clientFamilies(const std::vector<ClientSample>& clients);

  // Families:
  //   zmesh_gateway_requests_total{method,route,status}            counter
  //   zmesh_gateway_request_duration_seconds{route} _bucket/_sum/_count histogram
  //   zmesh_gateway_requests_in_flight                             gauge
  //   zmesh_gateway_sse_streams, zmesh_gateway_sse_dropped_total
  //   zmesh_gateway_events_received_total, zmesh_gateway_event_gaps_total
  //   zmesh_gateway_connections                                    gauge
  //   zmesh_gateway_<limit>_total                                  one per Limit
  //   zmesh_gateway_idempotency_entries, _bytes                    gauges
  //   zmesh_gateway_idempotency_evictions_total, _quota_evictions_total
  //   zmesh_gateway_rpc_<counter>_total{service}                    from ClientSample
  //   zmesh_service_up{service}                                     gauge
  //   then every service's families (renderServices()).
  // Each family has # HELP and # TYPE lines once.
  std::string render(const std::vector<ServiceSample>& services,
                     const std::vector<ClientSample>& clients) const;

  // The services' families in the text format: one # HELP and # TYPE per
  // Prometheus name (rpc::prometheusName), then every service's samples of it
  // with service="<name>" as the first label. A name declared again with
  // another kind or other label names keeps its first declaration; the later
  // one's samples are left out (conflicts()), as is a family that cannot be
  // valid Prometheus (rpc::familyError) and one that would take a name of the
  // gateway's own; a histogram merges only with one of the same bounds. A
  // sample whose label values or buckets do not match its family is left out
  // (buckets that decrease or exceed the count too), and so is a label set
  // already given. A service sampled twice: the later sample wins.
  static std::string renderServices(const std::vector<ServiceSample>& services);
  // How many families renderServices() leaves out of these samples.
  static size_t conflicts(const std::vector<ServiceSample>& services);

 private:
  struct Histogram {
    std::array<uint64_t, kBuckets.size()> buckets{};  // non-cumulative counts
    uint64_t count = 0;
    double sum = 0;
  };
  mutable std::mutex mutex_;
  // Request counts by (method, route, status), looked up by views: compared
  // as views, since tuples of string and string_view do not order each other
  // in every standard library (clang 14 with libstdc++ 12).
  using RequestKey = std::tuple<std::string, std::string, int>;
  struct RequestKeyLess {
    using is_transparent = void;
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const {
      return std::tuple<std::string_view, std::string_view, int>(a) <
             std::tuple<std::string_view, std::string_view, int>(b);
    }
  };
  std::map<RequestKey, uint64_t, RequestKeyLess> requests_;
  std::map<std::string, Histogram, std::less<>> latency_;  // by route
  int64_t inFlight_ = 0;
  int64_t sseStreams_ = 0;
  uint64_t sseDropped_ = 0;
  uint64_t eventsReceived_ = 0;
  uint64_t eventGaps_ = 0;
  int64_t connections_ = 0;
  std::array<uint64_t, kLimits> limits_{};
  IdempotencySample idempotency_;
};

}  // namespace zmesh::gateway
