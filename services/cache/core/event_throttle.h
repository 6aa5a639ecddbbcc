// Bounds how many events of one topic a cache publishes: a token bucket of
// `perSecond` events (a second's worth of burst). An event over it is folded:
// not published, only counted, and the next one admitted carries the count of
// those it stands for; flush() hands out what is folded when no event came to
// carry it. A write storm costs the bus at most perSecond events a second, and
// a subscriber still learns how many changes there were. Pure: time is passed in.
#pragma once

#include <cstdint>

namespace zmesh::cache {

class EventThrottle {
 public:
  // perSecond 0: every event is folded (and flushed as one per flush()).
  explicit EventThrottle(uint32_t perSecond);

  // 0: fold this event; else publish it now, standing for that many events
  // (itself and the ones folded before it).
  uint32_t admit(int64_t nowMs);
  // The count of events folded since the last one published, which the caller
  // publishes as one (with the latest of them); 0 when none. Resets it.
  uint32_t flush();
  uint32_t folded() const { return folded_; }

  uint64_t published() const { return published_; }
  uint64_t foldedTotal() const { return foldedTotal_; }

 private:
  void refill(int64_t nowMs);

  uint32_t perSecond_;
  uint64_t tokensMilli_;  // tokens × 1000, so refill is exact in integers
  int64_t last_ = 0;
  bool started_ = false;
  uint32_t folded_ = 0;
  uint64_t published_ = 0, foldedTotal_ = 0;
};

}  // namespace zmesh::cache
