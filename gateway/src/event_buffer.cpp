#include "event_buffer.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <stdexcept>
#include <utility>

namespace zmesh::gateway {
namespace {

bool isAlnum(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

bool isIncarnation(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!isAlnum(c)) return false;
  }
  return true;
}

struct StreamId {
  std::string_view incarnation;
  uint64_t position;
};

// Accepts only the shape append() issues: "<[A-Za-z0-9]+>-<[1-9][0-9]*>". Ids are
// opaque to clients, so anything else (leading zeros, position 0, signs) was not
// issued by any gateway and is rejected rather than guessed at.
std::optional<StreamId> parseStreamId(std::string_view id) {
  const size_t dash = id.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  const std::string_view incarnation = id.substr(0, dash);
  const std::string_view digits = id.substr(dash + 1);
  if (!isIncarnation(incarnation)) return std::nullopt;
  if (digits.empty() || digits.front() == '0') return std::nullopt;
  uint64_t position = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    const uint64_t digit = static_cast<uint64_t>(c - '0');
    if (position > (std::numeric_limits<uint64_t>::max() - digit) / 10) return std::nullopt;
    position = position * 10 + digit;
  }
  return StreamId{incarnation, position};
}

}  // namespace

TopicFilter::TopicFilter(std::vector<std::string> prefixes) : prefixes_(std::move(prefixes)) {}

bool TopicFilter::matches(std::string_view topic) const {
  if (prefixes_.empty()) return true;
  for (const std::string& prefix : prefixes_) {
    if (topic.starts_with(prefix)) return true;
  }
  return false;
}

EventBuffer::EventBuffer(size_t capacity, std::string incarnation)
    : capacity_(capacity), incarnation_(std::move(incarnation)) {
  if (capacity_ < 1) throw std::invalid_argument("event buffer capacity must be at least 1");
  // A '-' or other separator in the incarnation would make ids ambiguous to parse.
  if (!isIncarnation(incarnation_)) {
    throw std::invalid_argument("event buffer incarnation '" + incarnation_ +
                                "' must be non-empty [A-Za-z0-9]");
  }
}

const BufferedEvent& EventBuffer::append(std::string topic, std::string data) {
  if (events_.size() == capacity_) events_.pop_front();
  const uint64_t position = next_++;
  events_.push_back(BufferedEvent{position, incarnation_ + "-" + std::to_string(position),
                                  std::move(topic), std::move(data)});
  return events_.back();
}

EventBuffer::Resume EventBuffer::since(std::string_view lastEventId, const TopicFilter& filter,
                                       IdError* error, size_t maxBytes) const {
  if (error != nullptr) *error = IdError::kNone;
  Resume resume;
  const std::optional<StreamId> id = parseStreamId(lastEventId);
  if (!id) {
    if (error != nullptr) *error = IdError::kMalformed;
    return resume;
  }

  // Positions in events_ are contiguous, so the first event to send is found by
  // arithmetic rather than a search.
  size_t first = 0;
  const uint64_t oldest = events_.empty() ? next_ : events_.front().position;
  if (id->incarnation != incarnation_ || id->position > newestPosition()) {
    // The client's position means nothing here (another process, or never issued):
    // it may have missed anything, so it gets all we have and is told so.
    resume.gap = true;
  } else if (id->position + 1 < oldest) {
    resume.gap = true;  // position + 1 … oldest - 1 were evicted
  } else {
    first = static_cast<size_t>(id->position + 1 - oldest);
  }

  // Newest first, so that a cut keeps the newest events.
  size_t bytes = 0;
  for (size_t i = events_.size(); i > first; --i) {
    const BufferedEvent& event = events_[i - 1];
    if (!filter.matches(event.topic)) continue;
    bytes += eventBytes(event);
    if (bytes > maxBytes) {
      resume.gap = resume.truncated = true;
      break;
    }
    resume.events.push_back(event);
  }
  std::reverse(resume.events.begin(), resume.events.end());
  return resume;
}

}  // namespace zmesh::gateway
