// Logging that input cannot turn into a flood: a process that drops a crafted
// message says so, but a peer sending thousands a second must not fill the
// disk or stall the loop on log I/O.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>

namespace zmesh::rpc {

// Admits at most `perSecond` lines a second for one kind of message and counts
// the rest. Not thread-safe: one per owning thread.
class LogLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  explicit LogLimiter(uint32_t perSecond = 5) : perSecond_(perSecond) {}

  // Whether to log now; if so, how many lines were held back since the last
  // one admitted (to say in it).
  std::optional<uint64_t> admit(Clock::time_point now = Clock::now()) {
    if (now - windowStart_ >= std::chrono::seconds(1)) {
      windowStart_ = now;
      admitted_ = 0;
    }
    if (admitted_ >= perSecond_) {
      ++held_;
      return std::nullopt;
    }
    ++admitted_;
    uint64_t held = held_;
    held_ = 0;
    return held;
  }

 private:
  uint32_t perSecond_;
  Clock::time_point windowStart_{};
  uint32_t admitted_ = 0;
  uint64_t held_ = 0;
};

}  // namespace zmesh::rpc
