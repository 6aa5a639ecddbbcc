// What the algorithm tests share: the algorithms, and a decision as one value
// (compared whole, printed whole when a check fails).
#pragma once

#include <cstdint>
#include <limits>
#include <ostream>

#include "algorithm.h"

namespace zmesh::ratelimit {

constexpr uint64_t kMaxCost = std::numeric_limits<uint64_t>::max();

constexpr Algorithm kAll[] = {Algorithm::tokenBucket,          Algorithm::leakyBucket,
                              Algorithm::fixedWindow,          Algorithm::slidingWindowLog,
                              Algorithm::slidingWindowCounter, Algorithm::gcra};

struct Said {
  bool allowed = false;
  bool impossible = false;
  uint64_t limit = 0;
  uint64_t remaining = 0;
  Nanos reset = 0;
  Nanos retryAfter = 0;
  friend bool operator==(const Said&, const Said&) = default;
  friend std::ostream& operator<<(std::ostream& os, const Said& s) {
    return os << (s.allowed      ? "allowed"
                  : s.impossible ? "impossible"
                                 : "denied")
              << " limit " << s.limit << " remaining " << s.remaining << " reset " << s.reset
              << " retryAfter " << s.retryAfter;
  }
};

inline Said said(const Decision& d) {
  return {d.allowed, d.impossible, d.limit, d.remaining, d.reset, d.retryAfter};
}

}  // namespace zmesh::ratelimit
