#include "event_hub.h"

#include <boost/asio/post.hpp>
#include <boost/json.hpp>

#include "zmesh/client.h"

namespace zmesh::gateway {

EventHub::EventHub(size_t capacity, std::string incarnation, Metrics& metrics,
                   size_t replayMaxBytes)
    : metrics_(metrics),
      replayMaxBytes_(replayMaxBytes),
      buffer_(capacity, std::move(incarnation)) {}

EventHub::~EventHub() { stop(); }

void EventHub::start(Mesh& mesh) {
  subscription_ = std::make_unique<Subscription>(
      mesh.events().subscribe(std::string(), [this](const Event& event) {
        if (event.missedBefore > 0) {
          boost::json::object gap;
          gap["topic"] = event.topic;
          gap["publisher"] = event.publisher;
          gap["missed"] = event.missedBefore;
          publishGap(event.topic, boost::json::serialize(gap));
        }
        publish(event.topic, eventJson(event));
      }));
}

void EventHub::stop() {
  if (subscription_) subscription_->stop();
  subscription_.reset();
}

std::string EventHub::eventJson(const Event& event) {
  boost::json::object out;
  out["topic"] = event.topic;
  out["publisher"] = event.publisher;
  out["incarnation"] = std::to_string(event.incarnation);
  out["sequence"] = std::to_string(event.sequence);
  out["time_ms"] = event.wallTimeMs;
  boost::system::error_code ec;
  auto body = boost::json::parse(event.json, ec);
  out["body"] = ec ? boost::json::value(event.json) : std::move(body);
  return boost::json::serialize(out);
}

EventHub::Subscribed EventHub::subscribe(boost::asio::io_context& io, TopicFilter filter,
                                         const std::optional<std::string>& lastEventId,
                                         Deliver deliver) {
  std::lock_guard lock(mutex_);
  Subscribed out;
  if (lastEventId) {
    EventBuffer::IdError error = EventBuffer::IdError::kNone;
    out.resume = buffer_.since(*lastEventId, filter, &error, replayMaxBytes_);
    if (error != EventBuffer::IdError::kNone) {
      out.malformedId = true;
      return out;
    }
  }
  out.id = nextStream_++;
  streams_.emplace(out.id, Stream{&io, std::move(filter), std::move(deliver)});
  metrics_.sseOpened();
  return out;
}

void EventHub::unsubscribe(uint64_t id) {
  std::lock_guard lock(mutex_);
  streams_.erase(id);
}

void EventHub::closeAll() {
  std::lock_guard lock(mutex_);
  for (auto& [id, stream] : streams_)
    boost::asio::post(*stream.io, [deliver = stream.deliver] { deliver(nullptr, false); });
  streams_.clear();
}

namespace {

// A topic becomes an SSE "event:" line: a CR or LF in it would forge fields.
bool printableTopic(std::string_view topic) {
  for (unsigned char c : topic)
    if (c < 0x20 || c == 0x7f) return false;
  return !topic.empty();
}

}  // namespace

void EventHub::publish(const std::string& topic, std::string data) {
  if (!printableTopic(topic)) return;  // never from a zmesh publisher
  std::lock_guard lock(mutex_);
  auto event = std::make_shared<const BufferedEvent>(buffer_.append(topic, std::move(data)));
  metrics_.eventsReceived(1, 0);
  fanOut(event, false);
}

void EventHub::publishGap(const std::string& topic, std::string data) {
  if (!printableTopic(topic)) return;
  std::lock_guard lock(mutex_);
  metrics_.eventsReceived(0, 1);
  fanOut(std::make_shared<const BufferedEvent>(BufferedEvent{0, "", topic, std::move(data)}), true);
}

void EventHub::fanOut(const std::shared_ptr<const BufferedEvent>& event, bool gap) {
  for (auto& [id, stream] : streams_) {
    if (!stream.filter.matches(event->topic)) continue;
    boost::asio::post(*stream.io, [deliver = stream.deliver, event, gap] { deliver(event, gap); });
  }
}

}  // namespace zmesh::gateway
