#include "method_stats.h"

#include <cctype>

namespace zmesh::rpc {

namespace {

std::string lowerCodeName(size_t code) {
  auto status = static_cast<StatusCode>(code);
  if (code >= MethodStats::kCodes || !isKnown(status)) return "unknown";
  std::string name(statusName(status));
  for (char& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return name;
}

}  // namespace

void collectMethodStats(const std::vector<MethodStats>& methods, MetricsOut& out) {
  // Methods come from the served schemas and codes from StatusCode: closed sets.
  auto calls = out.family("rpc.server.calls", MetricKind::kCounter,
                          "Calls answered or dropped, by method and status code",
                          {"method", "code"}, {}, MetricsOut::kClosedSet);
  auto durations =
      out.family("rpc.server.duration_seconds", MetricKind::kHistogram,
                 "Seconds from a request read to its reply sent or dropped, by method", {"method"},
                 std::vector<double>(std::begin(kDurationBounds), std::end(kDurationBounds)),
                 MetricsOut::kClosedSet);
  for (const MethodStats& m : methods) {
    uint64_t count = 0;
    for (size_t code = 0; code <= MethodStats::kCodes; ++code) {
      if (m.calls[code] == 0) continue;
      count += m.calls[code];
      calls.sample({m.name, lowerCodeName(code)}, static_cast<double>(m.calls[code]));
    }
    if (count == 0) continue;
    uint64_t cumulative[kDurationBuckets];
    uint64_t running = 0;
    for (size_t b = 0; b < kDurationBuckets; ++b) cumulative[b] = running += m.buckets[b];
    durations.histogram({m.name}, cumulative, running + m.buckets[kDurationBuckets],
                        static_cast<double>(m.sumNs) * 1e-9);
  }
}

}  // namespace zmesh::rpc
