#include "metrics.h"

#include <charconv>
#include <cmath>
#include <initializer_list>
#include <system_error>

namespace zmesh::gateway {
namespace {

// The shortest text that reads back as the same double, spelled as Prometheus'
// own clients do for everyday magnitudes ("0.0005", "2.5", "10", not "5e-04"
// or "1e+01"), so bounds and sums print identically on every scrape.
std::string formatDouble(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == 0) return "0";  // also for -0
  const double magnitude = std::fabs(v);
  const auto format = magnitude >= 1e-4 && magnitude < 1e21 ? std::chars_format::fixed
                                                            : std::chars_format::scientific;
  char buf[64];  // fixed in that range needs at most ~27 characters
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v, format);
  if (ec != std::errc()) return "NaN";
  return std::string(buf, end);
}

void family(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

// One `name{k="v",…} value` line; values escaped here so no caller can forget.
void sample(std::string& out, std::string_view name,
            std::initializer_list<std::pair<std::string_view, std::string_view>> labels,
            std::string_view value) {
  out += name;
  if (labels.size() > 0) {
    out += '{';
    bool first = true;
    for (const auto& [key, labelValue] : labels) {
      if (!first) out += ',';
      first = false;
      out += key;
      out += "=\"";
      out += escapeLabelValue(labelValue);
      out += '"';
    }
    out += '}';
  }
  out += ' ';
  out += value;
  out += '\n';
}

}  // namespace

std::string escapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string sanitizeMetricName(std::string_view name) {
  auto valid = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == ':';
  };
  std::string out;
  out.reserve(name.size() + 1);
  // A leading digit is valid later in a name: prefixing keeps it, rather than
  // turning "5xx" into "_xx".
  if (name.empty() || (name.front() >= '0' && name.front() <= '9')) out += '_';
  for (char c : name) out += valid(c) ? c : '_';
  return out;
}

std::string_view Metrics::methodLabel(std::string_view method) {
  static constexpr std::array<std::string_view, 9> kKnown = {
      "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"};
  for (auto known : kKnown)
    if (method == known) return known;
  return "OTHER";
}

void Metrics::observe(std::string_view method, std::string_view route, int status, double seconds) {
  method = methodLabel(method);
  if (status < 100 || status > 599) status = 0;
  // A clock step can give a negative duration; a NaN or infinity would poison
  // the sum for the life of the process. Count such a request as instant.
  if (!std::isfinite(seconds) || seconds < 0) seconds = 0;
  std::lock_guard lock(mutex_);
  // Looked up by views: a request allocates nothing here once its labels exist.
  auto key = std::make_tuple(method, route, status);
  auto it = requests_.find(key);
  if (it == requests_.end())
    it = requests_.emplace(std::make_tuple(std::string(method), std::string(route), status), 0)
             .first;
  ++it->second;
  auto hit = latency_.find(route);
  if (hit == latency_.end()) hit = latency_.emplace(std::string(route), Histogram{}).first;
  Histogram& h = hit->second;
  for (size_t i = 0; i < kBuckets.size(); ++i) {
    if (seconds <= kBuckets[i]) {
      ++h.buckets[i];
      break;
    }
  }
  ++h.count;
  h.sum += seconds;
}

std::vector<std::pair<std::string, int64_t>> Metrics::adminCounters() const {
  std::lock_guard lock(mutex_);
  int64_t requests = 0, serverErrors = 0;
  for (const auto& [labels, n] : requests_) {
    requests += static_cast<int64_t>(n);
    if (std::get<2>(labels) >= 500) serverErrors += static_cast<int64_t>(n);
  }
  return {{"http.requests", requests},
          {"http.5xx", serverErrors},
          {"http.in_flight", inFlight_},
          {"sse.streams", sseStreams_},
          {"sse.dropped", static_cast<int64_t>(sseDropped_)},
          {"events.received", static_cast<int64_t>(eventsReceived_)},
          {"events.gaps", static_cast<int64_t>(eventGaps_)},
          {"http.connections", connections_},
          {"http.connections_refused",
           static_cast<int64_t>(limits_[static_cast<size_t>(Limit::kConnectionsRefused)])}};
}

void Metrics::requestStarted() {
  std::lock_guard lock(mutex_);
  ++inFlight_;
}

void Metrics::requestFinished() {
  std::lock_guard lock(mutex_);
  --inFlight_;
}

void Metrics::sseOpened() {
  std::lock_guard lock(mutex_);
  ++sseStreams_;
}

void Metrics::sseClosed(bool dropped) {
  std::lock_guard lock(mutex_);
  --sseStreams_;
  if (dropped) ++sseDropped_;
}

void Metrics::count(Limit limit, uint64_t n) {
  std::lock_guard lock(mutex_);
  limits_[static_cast<size_t>(limit)] += n;
}

void Metrics::connectionOpened() {
  std::lock_guard lock(mutex_);
  ++connections_;
}

void Metrics::connectionClosed() {
  std::lock_guard lock(mutex_);
  --connections_;
}

void Metrics::setIdempotency(const IdempotencySample& sample) {
  std::lock_guard lock(mutex_);
  idempotency_ = sample;
}

void Metrics::eventsReceived(uint64_t n, uint64_t gaps) {
  std::lock_guard lock(mutex_);
  eventsReceived_ += n;
  eventGaps_ += gaps;
}

std::string Metrics::render(const std::vector<ServiceSample>& services,
                            const std::vector<ClientSample>& clients) const {
  std::string out;
  {
    std::lock_guard lock(mutex_);

    family(out, "zmesh_gateway_requests_total", "counter", "HTTP requests answered.");
    for (const auto& [labels, n] : requests_) {
      const auto& [method, route, status] = labels;
      sample(out, "zmesh_gateway_requests_total",
             {{"method", method}, {"route", route}, {"status", std::to_string(status)}},
             std::to_string(n));
    }

    family(out, "zmesh_gateway_request_duration_seconds", "histogram",
           "Time to answer HTTP requests, by route.");
    for (const auto& [route, h] : latency_) {
      uint64_t cumulative = 0;
      for (size_t i = 0; i < kBuckets.size(); ++i) {
        cumulative += h.buckets[i];
        sample(out, "zmesh_gateway_request_duration_seconds_bucket",
               {{"route", route}, {"le", formatDouble(kBuckets[i])}}, std::to_string(cumulative));
      }
      sample(out, "zmesh_gateway_request_duration_seconds_bucket",
             {{"route", route}, {"le", "+Inf"}}, std::to_string(h.count));
      sample(out, "zmesh_gateway_request_duration_seconds_sum", {{"route", route}},
             formatDouble(h.sum));
      sample(out, "zmesh_gateway_request_duration_seconds_count", {{"route", route}},
             std::to_string(h.count));
    }

    family(out, "zmesh_gateway_requests_in_flight", "gauge", "HTTP requests being answered.");
    sample(out, "zmesh_gateway_requests_in_flight", {}, std::to_string(inFlight_));
    family(out, "zmesh_gateway_sse_streams", "gauge", "Open server-sent event streams.");
    sample(out, "zmesh_gateway_sse_streams", {}, std::to_string(sseStreams_));
    family(out, "zmesh_gateway_sse_dropped_total", "counter",
           "Event streams cut off because the client read too slowly.");
    sample(out, "zmesh_gateway_sse_dropped_total", {}, std::to_string(sseDropped_));
    family(out, "zmesh_gateway_events_received_total", "counter", "Events received from the mesh.");
    sample(out, "zmesh_gateway_events_received_total", {}, std::to_string(eventsReceived_));
    family(out, "zmesh_gateway_event_gaps_total", "counter",
           "Gaps (lost events) detected in the events received from the mesh.");
    sample(out, "zmesh_gateway_event_gaps_total", {}, std::to_string(eventGaps_));

    family(out, "zmesh_gateway_connections", "gauge", "Open HTTP connections.");
    sample(out, "zmesh_gateway_connections", {}, std::to_string(connections_));
    static constexpr std::array<std::pair<std::string_view, std::string_view>, kLimits> kLimitText =
        {{
            {"zmesh_gateway_connections_refused_total",
             "Connections over max_connections, answered 503 and closed."},
            {"zmesh_gateway_header_timeouts_total",
             "Connections closed because a request header took longer than header_timeout."},
            {"zmesh_gateway_accept_errors_total",
             "Failed accepts (EMFILE, ENFILE, ...), each retried after a back-off."},
            {"zmesh_gateway_sse_refused_total",
             "Event streams over max_sse_streams, answered 503."},
            {"zmesh_gateway_sse_replay_truncated_total",
             "Last-Event-ID resumes cut at sse_replay_max_bytes (the stream opens with a gap)."},
            {"zmesh_gateway_ops_cache_hits_total",
             "/metrics and /readyz answers taken from a result under ops_cache_max_age old."},
            {"zmesh_gateway_ops_cache_refreshes_total",
             "Times /metrics or /readyz asked every service again."},
            {"zmesh_gateway_worker_errors_total",
             "Exceptions a handler let escape, stopped at its worker thread (which goes on)."},
            {"zmesh_gateway_ratelimit_admitted_total",
             "Requests the per-token rate limit (ratelimit_rule) let through."},
            {"zmesh_gateway_ratelimit_denied_total",
             "Requests over the per-token rate limit, answered 429."},
            {"zmesh_gateway_ratelimit_failed_closed_total",
             "Requests answered 503 because the rate limiter could not be asked "
             "(ratelimit_fail_open off)."},
            {"zmesh_gateway_ratelimit_queue_full_total",
             "Requests answered 503 because ratelimit_queue of their caller's requests were "
             "already waiting for the rate limiter."},
            {"zmesh_gateway_ratelimit_leases_total",
             "RateLimit.lease calls made for the per-token rate limit."},
            {"zmesh_gateway_ratelimit_lease_failures_total",
             "RateLimit.lease calls that failed or went unanswered."},
        }};
    for (size_t i = 0; i < kLimits; ++i) {
      family(out, kLimitText[i].first, "counter", kLimitText[i].second);
      sample(out, kLimitText[i].first, {}, std::to_string(limits_[i]));
    }
    family(out, "zmesh_gateway_idempotency_entries", "gauge",
           "Idempotency-Key answers kept (and requests running with a key).");
    sample(out, "zmesh_gateway_idempotency_entries", {}, std::to_string(idempotency_.entries));
    family(out, "zmesh_gateway_idempotency_bytes", "gauge",
           "Bytes the idempotency store holds (bounded by idempotency_max_bytes).");
    sample(out, "zmesh_gateway_idempotency_bytes", {}, std::to_string(idempotency_.bytes));
    family(out, "zmesh_gateway_idempotency_evictions_total", "counter",
           "Idempotency entries evicted before their window ended: the store was full.");
    sample(out, "zmesh_gateway_idempotency_evictions_total", {},
           std::to_string(idempotency_.evictions));
    family(out, "zmesh_gateway_idempotency_quota_evictions_total", "counter",
           "Idempotency entries evicted because their principal was over "
           "idempotency_principal_max_bytes.");
    sample(out, "zmesh_gateway_idempotency_quota_evictions_total", {},
           std::to_string(idempotency_.quotaEvictions));
  }

  // Samples of one service may come in several pieces (one per worker): they
  // add up. Names that sanitize alike add up too, so no series is repeated.
  std::map<std::string, std::map<std::string, uint64_t>> rpc;  // family name -> service -> n
  for (const ClientSample& client : clients) {
    for (const auto& [name, n] : client.counters) {
      rpc[sanitizeMetricName("zmesh_gateway_rpc_" + name + "_total")][client.service] += n;
    }
  }
  for (const auto& [name, byService] : rpc) {
    family(out, name, "counter", "The gateway's RPC client counter toward each service.");
    for (const auto& [service, n] : byService) {
      sample(out, name, {{"service", service}}, std::to_string(n));
    }
  }

  // A service sampled twice: the later sample is the fresher one, and wins.
  std::map<std::string, bool> up;
  std::map<std::pair<std::string, std::string>, int64_t> counters;  // (service, name)
  for (const ServiceSample& s : services) {
    up[s.service] = s.up;
    for (const auto& [name, n] : s.counters) counters[{s.service, name}] = n;
  }
  family(out, "zmesh_service_up", "gauge",
         "Whether the service answered its health check with ok (1) or not (0).");
  for (const auto& [service, isUp] : up) {
    sample(out, "zmesh_service_up", {{"service", service}}, isUp ? "1" : "0");
  }
  // untyped: Admin.stats mixes counters and gauges under one shape.
  family(out, "zmesh_service_counter", "untyped", "Statistics the service reports (Admin.stats).");
  for (const auto& [labels, n] : counters) {
    sample(out, "zmesh_service_counter", {{"service", labels.first}, {"name", labels.second}},
           std::to_string(n));
  }
  return out;
}

}  // namespace zmesh::gateway
