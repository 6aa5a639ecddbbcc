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

namespace zmesh::gateway {

// Label values are escaped as the format requires (\\, \", \n).
std::string escapeLabelValue(std::string_view value);
// A name made valid for Prometheus: [a-zA-Z_:][a-zA-Z0-9_:]*, other characters → '_'.
std::string sanitizeMetricName(std::string_view name);

// What a scrape learned about one service.
struct ServiceSample {
  std::string service;
  bool up = false;                                        // answered Admin.health with ok
  std::vector<std::pair<std::string, int64_t>> counters;  // Admin.stats, e.g. "rpc.calls"
};

// The gateway's RPC client counters toward one service, summed over workers.
struct ClientSample {
  std::string service;
  std::vector<std::pair<std::string, uint64_t>> counters;  // e.g. "calls", "deadline_exceeded"
};

class Metrics {
 public:
  // Upper bounds in seconds of the request latency histogram.
  static constexpr std::array<double, 14> kBuckets = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

  // route: the route's pattern ("/v1/ids/{namespace}"), never the raw path, so
  // the label set stays bounded; unmatched requests use "unmatched".
  void observe(std::string_view method, std::string_view route, int status, double seconds);
  void requestStarted();
  void requestFinished();
  void sseOpened();
  void sseClosed(bool dropped);  // dropped: a slow client was cut off
  void eventsReceived(uint64_t n, uint64_t gaps);

  // Families:
  //   zmesh_gateway_requests_total{method,route,status}            counter
  //   zmesh_gateway_request_duration_seconds{route} _bucket/_sum/_count histogram
  //   zmesh_gateway_requests_in_flight                             gauge
  //   zmesh_gateway_sse_streams, zmesh_gateway_sse_dropped_total
  //   zmesh_gateway_events_received_total, zmesh_gateway_event_gaps_total
  //   zmesh_gateway_rpc_<counter>_total{service}                    from ClientSample
  //   zmesh_service_up{service}                                     gauge
  //   zmesh_service_counter{service,name}                           from Admin.stats
  // Each family has # HELP and # TYPE lines once.
  std::string render(const std::vector<ServiceSample>& services,
                     const std::vector<ClientSample>& clients) const;

  // The same numbers as Admin.stats counters ("http.requests", "http.5xx",
  // "http.in_flight", "sse.streams", "sse.dropped", "events.received", "events.gaps").
  std::vector<std::pair<std::string, int64_t>> adminCounters() const;

 private:
  struct Histogram {
    std::array<uint64_t, kBuckets.size()> buckets{};  // non-cumulative counts
    uint64_t count = 0;
    double sum = 0;
  };
  mutable std::mutex mutex_;
  // Request counts by (method, route, status).
  std::map<std::tuple<std::string, std::string, int>, uint64_t, std::less<>> requests_;
  std::map<std::string, Histogram, std::less<>> latency_;  // by route
  int64_t inFlight_ = 0;
  int64_t sseStreams_ = 0;
  uint64_t sseDropped_ = 0;
  uint64_t eventsReceived_ = 0;
  uint64_t eventGaps_ = 0;
};

}  // namespace zmesh::gateway
