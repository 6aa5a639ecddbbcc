// The gateway's bounded buffer of recent events, with its own stream ids, so an
// SSE client that reconnects with Last-Event-ID resumes exactly where it left
// off, or learns explicitly that it cannot (a gap).
//
// A stream id is "<incarnation>-<position>": the incarnation is chosen at
// gateway start, so an id from an earlier gateway process is never mistaken
// for a position in this one. Not thread-safe: one owner (the event hub).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

namespace zmesh::gateway {

struct BufferedEvent {
  uint64_t position;  // 1, 2, 3, … in this incarnation
  std::string id;     // the SSE id: "<incarnation>-<position>"
  std::string topic;
  std::string data;  // one line of JSON
};

// Topic prefixes a stream asked for; empty matches every topic.
class TopicFilter {
 public:
  TopicFilter() = default;
  explicit TopicFilter(std::vector<std::string> prefixes);
  bool matches(std::string_view topic) const;
  const std::vector<std::string>& prefixes() const { return prefixes_; }

 private:
  std::vector<std::string> prefixes_;
};

class EventBuffer {
 public:
  // capacity >= 1 events; incarnation: [A-Za-z0-9]+, no '-'.
  EventBuffer(size_t capacity, std::string incarnation);

  // Appends (evicting the oldest when full) and returns the stored event.
  const BufferedEvent& append(std::string topic, std::string data);

  struct Resume {
    bool gap = false;        // events after lastEventId were lost (evicted, or another incarnation)
    bool truncated = false;  // over maxBytes: only the newest that fit (gap is set too)
    std::vector<BufferedEvent>
        events;  // buffered events after lastEventId matching the filter, oldest first
  };
  enum class IdError { kNone, kMalformed };
  // Events after `lastEventId` (as a client echoes it back). An id of another
  // incarnation, or older than the oldest buffered event, gives gap = true and
  // every buffered event matching the filter. An id ahead of the newest (never
  // issued) also gives a gap. A malformed id sets `error` and returns nothing.
  // At most maxBytes of events (eventBytes each) come back: when more match,
  // the newest that fit, with gap and truncated set.
  Resume since(std::string_view lastEventId, const TopicFilter& filter, IdError* error,
               size_t maxBytes = std::numeric_limits<size_t>::max()) const;
  // What a replayed event costs against maxBytes (about its SSE frame).
  static size_t eventBytes(const BufferedEvent& event) {
    return event.topic.size() + event.id.size() + event.data.size() + 24;
  }

  const std::string& incarnation() const { return incarnation_; }
  size_t size() const { return events_.size(); }
  size_t capacity() const { return capacity_; }
  uint64_t newestPosition() const { return next_ - 1; }  // 0 before the first append

 private:
  size_t capacity_;
  std::string incarnation_;
  uint64_t next_ = 1;
  std::deque<BufferedEvent> events_;
};

}  // namespace zmesh::gateway
