// Pub/sub events through the broker (DESIGN.md §2).
//
// A Publisher sends [topic][Event] to the broker's XSUB side; a Subscriber reads
// from its XPUB side. Sequence numbers run per (publisher, incarnation, topic),
// so a subscriber can tell a real gap (ZeroMQ drops at the high-water mark by
// design) from a topic it never subscribed to or a publisher that restarted.
//
// Threading: each object belongs to the thread that uses it.
#pragma once

#include <capnp/message.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>
#include <zmq.hpp>

#include "zmesh/idl/common.capnp.h"
#include "zmesh/rpc/frame.h"
#include "zmesh/rpc/log_limit.h"

namespace zmesh::rpc {

class Publisher {
 public:
  // `publisherId` names this process in every event ("idgen@127.0.0.1:7110").
  Publisher(zmq::context_t& context, const std::string& brokerXsub, std::string publisherId);

  template <typename Body>
  void publish(std::string_view topic, typename Body::Reader body) {
    capnp::MallocMessageBuilder message;
    auto event = start(message, topic, capnp::typeId<Body>());
    event.getBody().template setAs<Body>(body);
    send(topic, message);
  }

  uint64_t incarnation() const { return incarnation_; }
  uint64_t published() const { return published_; }

 private:
  idl::Event::Builder start(capnp::MessageBuilder& message, std::string_view topic,
                            uint64_t bodyType);
  void send(std::string_view topic, capnp::MessageBuilder& message);

  zmq::socket_t socket_;
  std::string publisherId_;
  uint64_t incarnation_;
  std::unordered_map<std::string, uint64_t> sequences_;
  uint64_t published_ = 0;
};

struct ReceivedEvent {
  std::string topic;
  FrameMessage message;
  // Events of this (publisher, incarnation, topic) that never arrived just before this one.
  uint64_t missed = 0;
  // Every field of the envelope was read (checkFields) when it was received;
  // the body is whatever bodyType says: check it against that schema.
  idl::Event::Reader event() { return message.root<idl::Event>(); }
};

class Subscriber {
 public:
  // Subscribes to every prefix given ("" or none = everything).
  Subscriber(zmq::context_t& context, const std::string& brokerXpub,
             const std::vector<std::string>& prefixes, int recvHwm = 100000);

  // Larger event frames are refused by libzmq (ZMQ_MAXMSGSIZE) and by the reader.
  static constexpr size_t kMaxEventBytes = 16 << 20;
  // Sequence streams tracked at once; past it the least recently seen are
  // forgotten (counted: a forgotten stream's next event starts it afresh).
  static constexpr size_t kMaxStreams = 4096;

  // Waits up to `timeout` for the next event; nullopt on timeout. Frames that
  // are not events are dropped and counted.
  std::optional<ReceivedEvent> receive(std::chrono::milliseconds timeout);
  // Non-blocking; for callers that poll socket() themselves.
  std::optional<ReceivedEvent> tryReceive();
  // What tryReceive() makes of one received message ([topic][Event]): the
  // event, or nullopt for one that is malformed (dropped, counted, logged).
  std::optional<ReceivedEvent> accept(std::vector<zmq::message_t>& frames);
  zmq::socket_ref socket() { return socket_; }

  uint64_t received() const { return received_; }
  uint64_t gaps() const { return gaps_; }
  uint64_t malformed() const { return malformed_; }
  // For a reader that finds an event's body malformed (it is dropped).
  void countMalformed() { ++malformed_; }
  uint64_t streamsForgotten() const { return streamsForgotten_; }

 private:
  // Keyed by incarnation too: two processes configured with one publisher id
  // (the same endpoint on two hosts) are two streams, not one that keeps restarting.
  struct StreamKey {
    std::string publisher;
    uint64_t incarnation;
    std::string topic;
    auto operator<=>(const StreamKey&) const = default;
  };
  struct Stream {
    uint64_t last;
    uint64_t seen;  // when, in received_ (recency, for forgetting)
  };
  void track(ReceivedEvent& r);
  void dropped(const char* why);  // counted and logged, rate-limited

  zmq::socket_t socket_;
  std::map<StreamKey, Stream> streams_;
  capnp::ReaderOptions options_;
  uint64_t received_ = 0, gaps_ = 0, malformed_ = 0, streamsForgotten_ = 0;
  LogLimiter malformedLog_;
};

}  // namespace zmesh::rpc
