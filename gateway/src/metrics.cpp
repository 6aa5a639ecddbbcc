#include "metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <map>
#include <set>
#include <system_error>

namespace zmesh::gateway {
namespace {

// The length of the well-formed UTF-8 sequence at s[i] (Unicode 15, table
// 3-7: no overlongs, surrogates or code points past U+10FFFF), or 0 with
// `bad` set to the length of its maximal ill-formed prefix.
size_t utf8Sequence(std::string_view s, size_t i, size_t& bad) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char lead = byte(i);
  if (lead < 0x80) return 1;
  size_t length = 0;
  unsigned char low = 0x80, high = 0xBF;  // the second byte's range
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;
    if (lead == 0xED) high = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) low = 0x90;
    if (lead == 0xF4) high = 0x8F;
  } else {
    bad = 1;
    return 0;
  }
  for (size_t k = 1; k < length; ++k) {
    const bool inRange = i + k < s.size() && byte(i + k) >= (k == 1 ? low : 0x80) &&
                         byte(i + k) <= (k == 1 ? high : 0xBF);
    if (!inRange) {
      bad = k;
      return 0;
    }
  }
  return length;
}

}  // namespace

std::string validUtf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    size_t bad = 0;
    if (size_t n = utf8Sequence(text, i, bad)) {
      out.append(text.substr(i, n));
      i += n;
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
      i += bad;
    }
  }
  return out;
}

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
template <class Labels>
void sampleLine(std::string& out, std::string_view name, const Labels& labels,
                std::string_view value) {
  out += name;
  if (std::begin(labels) != std::end(labels)) {
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

void sample(std::string& out, std::string_view name,
            std::initializer_list<std::pair<std::string_view, std::string_view>> labels,
            std::string_view value) {
  sampleLine(out, name, labels, value);
}

}  // namespace

std::string escapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : validUtf8(value)) {
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

namespace {

using rpc::MetricFamily;
using rpc::MetricKind;
using rpc::MetricSample;

constexpr std::array<std::pair<std::string_view, std::string_view>, Metrics::kLimits> kLimitText = {
    {
        {"gateway.connections_refused",
         "Connections over max_connections, answered 503 and closed."},
        {"gateway.header_timeouts",
         "Connections closed because a request header took longer than header_timeout."},
        {"gateway.accept_errors",
         "Failed accepts (EMFILE, ENFILE, ...), each retried after a back-off."},
        {"gateway.sse_refused", "Event streams over max_sse_streams, answered 503."},
        {"gateway.sse_replay_truncated",
         "Last-Event-ID resumes cut at sse_replay_max_bytes (the stream opens with a gap)."},
        {"gateway.ops_cache_hits",
         "/metrics and /readyz answers taken from a result under ops_cache_max_age old."},
        {"gateway.ops_cache_refreshes", "Times /metrics or /readyz asked every service again."},
        {"gateway.worker_errors",
         "Exceptions a handler let escape, stopped at its worker thread (which goes on)."},
        {"gateway.ratelimit_admitted",
         "Requests the per-token rate limit (ratelimit_rule) let through."},
        {"gateway.ratelimit_denied", "Requests over the per-token rate limit, answered 429."},
        {"gateway.ratelimit_failed_closed",
         "Requests answered 503 because the rate limiter could not be asked "
         "(ratelimit_fail_open off)."},
        {"gateway.ratelimit_queue_full",
         "Requests answered 503 because ratelimit_queue of their caller's requests were "
         "already waiting for the rate limiter."},
        {"gateway.ratelimit_leases", "RateLimit.lease calls made for the per-token rate limit."},
        {"gateway.ratelimit_lease_failures",
         "RateLimit.lease calls that failed or went unanswered."},
        {"gateway.metric_conflicts",
         "Service metric families left out of /metrics, per refresh: their name was taken with "
         "another kind or other labels, or they are not valid Prometheus."},
    }};

// HELP text escapes only backslash and newline.
std::string escapeHelp(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : validUtf8(help)) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

// Cumulative buckets, one per bound, that never decrease and never exceed the
// count (the +Inf bucket): anything else is a histogram Prometheus refuses.
bool consistentHistogram(const MetricFamily& f, const MetricSample& s) {
  if (s.buckets.size() != f.bounds.size()) return false;
  if (!std::is_sorted(s.buckets.begin(), s.buckets.end())) return false;
  return s.buckets.empty() || static_cast<double>(s.buckets.back()) <= s.value;
}

// The samples of one family (whose lines `name` starts), with service="…"
// first when `service` is given. Samples that do not fit their family, or
// repeat a label set `seen` already has, are skipped.
void renderSamples(std::string& out, const std::string& name, const MetricFamily& f,
                   const std::string* service, std::set<std::vector<std::string>>& seen) {
  std::vector<std::pair<std::string_view, std::string_view>> labels;
  for (const MetricSample& s : f.samples) {
    if (s.labelValues.size() != f.labelNames.size()) continue;
    if (f.kind == MetricKind::kHistogram && !consistentHistogram(f, s)) continue;
    if (!seen.insert(s.labelValues).second) continue;
    labels.clear();
    if (service) labels.emplace_back("service", *service);
    for (size_t i = 0; i < f.labelNames.size(); ++i)
      labels.emplace_back(f.labelNames[i], s.labelValues[i]);
    if (f.kind != MetricKind::kHistogram) {
      sampleLine(out, name, labels, formatDouble(s.value));
      continue;
    }
    const std::string bucket = name + "_bucket";
    labels.emplace_back("le", "");
    for (size_t i = 0; i < f.bounds.size(); ++i) {
      const std::string le = formatDouble(f.bounds[i]);
      labels.back().second = le;
      sampleLine(out, bucket, labels, std::to_string(s.buckets[i]));
    }
    labels.back().second = "+Inf";
    sampleLine(out, bucket, labels, formatDouble(s.value));
    labels.pop_back();
    sampleLine(out, name + "_sum", labels, formatDouble(s.sum));
    sampleLine(out, name + "_count", labels, formatDouble(s.value));
  }
}

void renderFamily(std::string& out, const std::string& name, const MetricFamily& f) {
  family(out, name, rpc::kindName(f.kind), escapeHelp(f.help));
  std::set<std::vector<std::string>> seen;
  renderSamples(out, name, f, nullptr, seen);
}

// The series names a family writes: a histogram's _bucket, _sum and _count too.
std::vector<std::string> seriesNames(const std::string& name, MetricKind kind) {
  if (kind != MetricKind::kHistogram) return {name};
  return {name, name + "_bucket", name + "_sum", name + "_count"};
}

// The services' families grouped by Prometheus name, first declaration first.
struct Merged {
  std::string name;           // Prometheus name
  const MetricFamily* first;  // kind, help and label names
  std::vector<std::pair<const std::string*, const MetricFamily*>> parts;  // (service, family)
};
struct Merge {
  std::vector<Merged> families;
  size_t conflicts = 0;
};

Merge merge(const std::vector<ServiceSample>& services) {
  // A service sampled twice: its later sample, in the place of its first.
  std::vector<const ServiceSample*> latest;
  std::map<std::string_view, size_t> index;
  for (const ServiceSample& s : services) {
    auto [it, fresh] = index.emplace(s.service, latest.size());
    if (fresh)
      latest.push_back(&s);
    else
      latest[it->second] = &s;
  }
  Merge m;
  std::map<std::string, size_t, std::less<>> bySeries;  // every series name → its family
  for (const ServiceSample* s : latest) {
    for (const MetricFamily& f : s->families) {
      if (rpc::familyError(f)) {
        ++m.conflicts;
        continue;
      }
      std::string name = sanitizeMetricName(rpc::prometheusName(f));
      // The gateway's own names are its own.
      if (name.starts_with("zmesh_gateway_") || name == "zmesh_service_up") {
        ++m.conflicts;
        continue;
      }
      if (auto it = bySeries.find(name);
          it != bySeries.end() && m.families[it->second].name == name) {
        Merged& merged = m.families[it->second];
        // A histogram's buckets only add up over the same bounds.
        if (merged.first->kind == f.kind && merged.first->labelNames == f.labelNames &&
            (f.kind != MetricKind::kHistogram || merged.first->bounds == f.bounds))
          merged.parts.emplace_back(&s->service, &f);
        else
          ++m.conflicts;
        continue;
      }
      auto names = seriesNames(name, f.kind);
      if (std::any_of(names.begin(), names.end(),
                      [&](const std::string& n) { return bySeries.count(n) > 0; })) {
        ++m.conflicts;  // e.g. a gauge x_count beside a histogram x
        continue;
      }
      for (auto& n : names) bySeries.emplace(n, m.families.size());
      m.families.push_back({std::move(name), &f, {{&s->service, &f}}});
    }
  }
  return m;
}

}  // namespace

void Metrics::collect(rpc::MetricsOut& out) const {
  std::lock_guard lock(mutex_);
  auto requests = out.family("gateway.requests", MetricKind::kCounter, "HTTP requests answered.",
                             {"method", "route", "status"});
  for (const auto& [labels, n] : requests_) {
    const auto& [method, route, status] = labels;
    requests.sample({method, route, std::to_string(status)}, static_cast<double>(n));
  }
  auto latency = out.family("gateway.request_duration_seconds", MetricKind::kHistogram,
                            "Time to answer HTTP requests, by route.", {"route"},
                            std::vector<double>(kBuckets.begin(), kBuckets.end()));
  for (const auto& [route, h] : latency_) {
    std::array<uint64_t, kBuckets.size()> cumulative{};
    uint64_t sum = 0;
    for (size_t i = 0; i < kBuckets.size(); ++i) cumulative[i] = sum += h.buckets[i];
    latency.histogram({route}, cumulative.data(), h.count, h.sum);
  }
  out.gauge("gateway.requests_in_flight", "HTTP requests being answered.",
            static_cast<double>(inFlight_));
  out.gauge("gateway.sse_streams", "Open server-sent event streams.",
            static_cast<double>(sseStreams_));
  out.counter("gateway.sse_dropped", "Event streams cut off because the client read too slowly.",
              static_cast<double>(sseDropped_));
  out.counter("gateway.events_received", "Events received from the mesh.",
              static_cast<double>(eventsReceived_));
  out.counter("gateway.event_gaps",
              "Gaps (lost events) detected in the events received from the mesh.",
              static_cast<double>(eventGaps_));
  out.gauge("gateway.connections", "Open HTTP connections.", static_cast<double>(connections_));
  for (size_t i = 0; i < kLimits; ++i)
    out.counter(kLimitText[i].first, kLimitText[i].second, static_cast<double>(limits_[i]));
  out.gauge("gateway.idempotency_entries",
            "Idempotency-Key answers kept (and requests running with a key).",
            static_cast<double>(idempotency_.entries));
  out.gauge("gateway.idempotency_bytes",
            "Bytes the idempotency store holds (bounded by idempotency_max_bytes).",
            static_cast<double>(idempotency_.bytes));
  out.counter("gateway.idempotency_evictions",
              "Idempotency entries evicted before their window ended: the store was full.",
              static_cast<double>(idempotency_.evictions));
  out.counter("gateway.idempotency_quota_evictions",
              "Idempotency entries evicted because their principal was over "
              "idempotency_principal_max_bytes.",
              static_cast<double>(idempotency_.quotaEvictions));
}

std::vector<MetricFamily> Metrics::families() const {
  rpc::MetricsOut out(rpc::MetricsOut::kClosedSet);
  collect(out);
  return out.take();
}

std::vector<MetricFamily> Metrics::clientFamilies(const std::vector<ClientSample>& clients) {
  // Samples of one service may come in several pieces (one per worker): they
  // add up. Names that sanitize alike add up too, so no series is repeated.
  std::map<std::string, std::map<std::string, uint64_t>> sums;  // name → service → n
  for (const ClientSample& client : clients)
    for (const auto& [name, n] : client.counters)
      sums[sanitizeMetricName("rpc_" + name)][client.service] += n;
  std::vector<MetricFamily> out;
  for (const auto& [name, byService] : sums) {
    MetricFamily f;
    f.name = "gateway." + name;
    f.kind = MetricKind::kCounter;
    f.help = "The gateway's RPC client counter toward each service.";
    f.labelNames = {"service"};
    for (const auto& [service, n] : byService) {
      MetricSample s;
      s.labelValues = {service};
      s.value = static_cast<double>(n);
      f.samples.push_back(std::move(s));
    }
    out.push_back(std::move(f));
  }
  return out;
}

std::string Metrics::render(const std::vector<ServiceSample>& services,
                            const std::vector<ClientSample>& clients) const {
  std::string out;
  for (const MetricFamily& f : families()) renderFamily(out, rpc::prometheusName(f), f);
  for (const MetricFamily& f : clientFamilies(clients))
    renderFamily(out, sanitizeMetricName(rpc::prometheusName(f)), f);

  // A service sampled twice: the later sample is the fresher one, and wins.
  std::map<std::string, bool> up;
  for (const ServiceSample& s : services) up[s.service] = s.up;
  family(out, "zmesh_service_up", "gauge",
         "Whether the service answered Admin.stats (1) or not (0) at the last scrape.");
  for (const auto& [service, isUp] : up)
    sample(out, "zmesh_service_up", {{"service", service}}, isUp ? "1" : "0");
  out += renderServices(services);
  return out;
}

std::string Metrics::renderServices(const std::vector<ServiceSample>& services) {
  std::string out;
  for (const Merged& merged : merge(services).families) {
    family(out, merged.name, rpc::kindName(merged.first->kind), escapeHelp(merged.first->help));
    std::map<std::string_view, std::set<std::vector<std::string>>> seen;  // by service
    for (const auto& [service, f] : merged.parts)
      renderSamples(out, merged.name, *f, service, seen[*service]);
  }
  return out;
}

size_t Metrics::conflicts(const std::vector<ServiceSample>& services) {
  return merge(services).conflicts;
}

}  // namespace zmesh::gateway
