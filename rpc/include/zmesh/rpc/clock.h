// The clocks a service wires into its pure core (which takes time as a
// number, so tests can drive it): Unix time for what outlives the process
// (logs, events), the monotonic clock for deadlines and rates.
#pragma once

#include <chrono>
#include <cstdint>

namespace zmesh::rpc {

inline int64_t unixMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

inline int64_t monotonicMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

inline int64_t monotonicNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace zmesh::rpc
