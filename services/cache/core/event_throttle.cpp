#include "event_throttle.h"

#include <algorithm>
#include <limits>

namespace zmesh::cache {

EventThrottle::EventThrottle(uint32_t perSecond)
    : perSecond_(perSecond), tokensMilli_(uint64_t{perSecond} * 1000) {}

void EventThrottle::refill(int64_t nowMs) {
  if (!started_) {
    started_ = true;
    last_ = nowMs;
    return;
  }
  if (nowMs <= last_) return;  // a clock going back stands still
  const uint64_t cap = uint64_t{perSecond_} * 1000;
  const uint64_t elapsed = static_cast<uint64_t>(std::min<int64_t>(nowMs - last_, 1000));
  tokensMilli_ = std::min(cap, tokensMilli_ + elapsed * perSecond_);
  last_ = nowMs;
}

uint32_t EventThrottle::admit(int64_t nowMs) {
  refill(nowMs);
  if (tokensMilli_ < 1000) {
    if (folded_ < std::numeric_limits<uint32_t>::max()) ++folded_;
    ++foldedTotal_;
    return 0;
  }
  tokensMilli_ -= 1000;
  ++published_;
  const uint32_t count = folded_ + 1;
  folded_ = 0;
  return count;
}

uint32_t EventThrottle::flush() {
  const uint32_t n = folded_;
  folded_ = 0;
  if (n > 0) ++published_;
  return n;
}

}  // namespace zmesh::cache
