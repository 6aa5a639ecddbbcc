// The gateway's one subscription to the broker, fanned out to SSE streams.
//
// Every event goes into the EventBuffer (its stream id assigned there) and is
// posted to the worker of each stream whose filter matches. Subscribing takes
// the buffered events after a Last-Event-ID and registers for live ones under
// one lock, so a resuming stream sees no loss and no duplicate.
// Thread-safe.
#pragma once

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "event_buffer.h"
#include "metrics.h"

namespace zmesh {
class Mesh;
class Subscription;
struct Event;
}  // namespace zmesh

namespace zmesh::gateway {

class EventHub {
 public:
  // Runs on the stream's worker: an event, or an upstream gap (`gap` = true,
  // event.topic = the topic that lost events, event.data = JSON with details).
  using Deliver = std::function<void(const std::shared_ptr<const BufferedEvent>& event, bool gap)>;

  // replayMaxBytes: the most a Last-Event-ID resume replays (EventBuffer::since).
  EventHub(size_t capacity, std::string incarnation, Metrics& metrics,
           size_t replayMaxBytes = std::numeric_limits<size_t>::max());
  ~EventHub();

  // Subscribes to every topic of the mesh's broker (a thread of its own).
  void start(Mesh& mesh);
  void stop();

  struct Subscribed {
    uint64_t id = 0;
    EventBuffer::Resume resume;  // to send first
    bool malformedId = false;    // lastEventId is not one of ours: nothing registered
  };
  Subscribed subscribe(boost::asio::io_context& io, TopicFilter filter,
                       const std::optional<std::string>& lastEventId, Deliver deliver);
  void unsubscribe(uint64_t id);
  // Ends every stream (each gets a null event: its final "shutdown" event).
  void closeAll();

  // One event in: from the subscription, or from tests.
  void publish(const std::string& topic, std::string data);
  void publishGap(const std::string& topic, std::string data);

  // The JSON an SSE stream carries for a mesh event.
  static std::string eventJson(const Event& event);

 private:
  struct Stream {
    boost::asio::io_context* io;
    TopicFilter filter;
    Deliver deliver;
  };
  void fanOut(const std::shared_ptr<const BufferedEvent>& event, bool gap);  // holds mutex_

  Metrics& metrics_;
  size_t replayMaxBytes_;
  std::mutex mutex_;
  EventBuffer buffer_;
  std::map<uint64_t, Stream> streams_;
  uint64_t nextStream_ = 1;
  std::unique_ptr<Subscription> subscription_;
};

}  // namespace zmesh::gateway
