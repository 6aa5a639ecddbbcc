// Coalesces ratelimit.denied events per (rule, key) and interval: a key's
// first denial is published at once; the denials after it within the
// interval are counted and published as one event when the interval ends.
// A client hammering a closed limit costs the bus one event per interval,
// not one per request. Pure: time is passed in.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "algorithm.h"

namespace zmesh::ratelimit {

struct DeniedEvent {
  std::string rule;
  std::string key;
  uint64_t denials = 0;  // since this key's previous event
  bool shadow = false;   // every one of them a shadow rule's (not enforced)
  Nanos retryAfter = 0;  // the latest denial's
};

class DenialCoalescer {
 public:
  // `maxKeys` bounds the keys remembered; a denial of a new key beyond it
  // publishes nothing and is counted as dropped.
  DenialCoalescer(Nanos interval, size_t maxKeys);

  // The event to publish now (the first denial of this key in an interval), or nullopt.
  std::optional<DeniedEvent> denied(std::string_view rule, std::string_view key, bool shadow,
                                    Nanos retryAfter, Nanos now);
  // The events of intervals that ended by `now` with denials counted; keys
  // quiet for a whole interval are forgotten.
  std::vector<DeniedEvent> flush(Nanos now);
  // When flush() next has something to do, if ever.
  std::optional<Nanos> nextFlush() const;

  struct Stats {
    uint64_t published = 0;  // events handed out
    uint64_t coalesced = 0;  // denials folded into a later event
    uint64_t dropped = 0;    // denials of new keys while maxKeys were remembered
    uint64_t pending = 0;    // keys remembered now
  };
  Stats stats() const;

 private:
  struct Pending {
    uint64_t count = 0;  // denials since the last event
    bool shadowOnly = true;
    Nanos retryAfter = 0;
  };
  Nanos interval_;
  size_t maxKeys_;
  // rule NUL key → what is pending; intervals all last interval_, so a FIFO is in end order.
  std::unordered_map<std::string, Pending> pending_;
  std::deque<std::pair<Nanos, std::string>> ends_;
  std::string scratch_;
  Stats stats_;
};

}  // namespace zmesh::ratelimit
