// Per served method: calls by status code, and their durations from request to
// reply (or drop). Flat arrays made at serve(), written on the server's loop
// thread only and read there by Admin.stats: a call allocates and locks
// nothing for them.
#pragma once

#include <array>
#include <cstdint>
#include <iterator>
#include <string>
#include <vector>

#include "zmesh/rpc/metrics.h"
#include "zmesh/rpc/status.h"

namespace zmesh::rpc {

inline constexpr double kDurationBounds[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                             0.005,   0.01,   0.025,   0.05,   0.1,   0.25,
                                             0.5,     1,      2.5,     5,      10};
inline constexpr size_t kDurationBuckets = std::size(kDurationBounds);

struct MethodStats {
  // Room for every StatusCode and some to come; a code past them, or one this
  // build has no name for, counts as "unknown".
  static constexpr size_t kCodes = 32;
  // The bounds in nanoseconds, the unit the server's clock counts in.
  static constexpr std::array<int64_t, kDurationBuckets> kBoundsNs = [] {
    std::array<int64_t, kDurationBuckets> ns{};
    for (size_t i = 0; i < kDurationBuckets; ++i)
      ns[i] = static_cast<int64_t>(kDurationBounds[i] * 1e9 + 0.5);
    return ns;
  }();

  std::string name;  // "IdGen.next", or "_unknown"
  uint64_t calls[kCodes + 1] = {};
  uint64_t buckets[kDurationBuckets + 1] = {};  // not cumulative; the last is +Inf
  uint64_t sumNs = 0;

  // An observation equal to a bound belongs to that bucket (Prometheus' le).
  void record(StatusCode code, int64_t ns) {
    auto c = static_cast<size_t>(code);
    ++calls[c < kCodes ? c : kCodes];
    if (ns < 0) ns = 0;
    size_t b = 0;
    while (b < kDurationBuckets && ns > kBoundsNs[b]) ++b;
    ++buckets[b];
    sumNs += static_cast<uint64_t>(ns);
  }
};

// rpc.server.calls{method,code} and rpc.server.duration_seconds{method}, for
// the methods called at least once.
void collectMethodStats(const std::vector<MethodStats>& methods, MetricsOut& out);

}  // namespace zmesh::rpc
