#include "zmesh/rpc/events.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <random>
#include <zmq_addon.hpp>

#include "zmesh/rpc/clock.h"
#include "zmesh/rpc/poll.h"

namespace zmesh::rpc {

Publisher::Publisher(zmq::context_t& context, const std::string& brokerXsub,
                     std::string publisherId)
    : socket_(context, zmq::socket_type::pub), publisherId_(std::move(publisherId)) {
  std::random_device rd;
  incarnation_ = (uint64_t{rd()} << 32) ^ rd();
  socket_.set(zmq::sockopt::linger, 0);
  socket_.set(zmq::sockopt::sndhwm, 100000);
  socket_.connect(brokerXsub);
}

idl::Event::Builder Publisher::start(capnp::MessageBuilder& message, std::string_view topic,
                                     uint64_t bodyType) {
  auto event = message.initRoot<idl::Event>();
  event.setPublisher(publisherId_);
  event.setIncarnation(incarnation_);
  event.setSequence(++sequences_[std::string(topic)]);
  event.setWallTimeMs(unixMillis());
  auto t = event.initTopic(topic.size());
  std::copy(topic.begin(), topic.end(), t.begin());
  event.setBodyType(bodyType);
  return event;
}

void Publisher::send(std::string_view topic, capnp::MessageBuilder& message) {
  // PUB never blocks: at the high-water mark ZeroMQ drops, and the subscriber's
  // sequence check reports the gap.
  socket_.send(zmq::buffer(topic), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
  socket_.send(toFrame(message), zmq::send_flags::dontwait);
  ++published_;
}

Subscriber::Subscriber(zmq::context_t& context, const std::string& brokerXpub,
                       const std::vector<std::string>& prefixes, int recvHwm)
    : socket_(context, zmq::socket_type::sub), options_(readerOptionsFor(kMaxEventBytes)) {
  socket_.set(zmq::sockopt::linger, 0);
  socket_.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(kMaxEventBytes));
  socket_.set(zmq::sockopt::rcvhwm, recvHwm);
  if (prefixes.empty()) socket_.set(zmq::sockopt::subscribe, "");
  for (auto& p : prefixes) socket_.set(zmq::sockopt::subscribe, p);
  socket_.connect(brokerXpub);
}

std::optional<ReceivedEvent> Subscriber::receive(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (auto e = tryReceive()) return e;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    rpc::poll(&item, 1, left);
  }
}

std::optional<ReceivedEvent> Subscriber::tryReceive() {
  std::vector<zmq::message_t> frames;
  while (true) {
    frames.clear();
    if (!zmq::recv_multipart(socket_, std::back_inserter(frames), zmq::recv_flags::dontwait))
      return std::nullopt;
    if (auto event = accept(frames)) return event;
  }
}

std::optional<ReceivedEvent> Subscriber::accept(std::vector<zmq::message_t>& frames) {
  static const capnp::StructSchema kEvent = capnp::Schema::from<idl::Event>();
  try {
    if (frames.size() != 2)
      throw FrameError("event of " + std::to_string(frames.size()) + " frames, not 2");
    ReceivedEvent r{frames[0].to_string(), readFrame(std::move(frames[1]), options_), 0};
    checkFields(r.message.any(), kEvent, "event");
    auto topic = r.event().getTopic();
    if (r.topic != std::string_view(topic.cStr(), topic.size()))
      throw FrameError("event.topic differs from the topic it was sent under");
    track(r);
    ++received_;
    return r;
  } catch (const FrameError& e) {
    dropped(e.what());
  } catch (const kj::Exception& e) {  // a read past the checks (the traversal budget)
    dropped(e.getDescription().cStr());
  }
  return std::nullopt;
}

void Subscriber::dropped(const char* why) {
  ++malformed_;
  if (auto held = malformedLog_.admit())
    spdlog::warn("dropped an event: {} ({} more like it not logged)", why, *held);
}

void Subscriber::track(ReceivedEvent& r) {
  auto e = r.event();
  StreamKey key{e.getPublisher().cStr(), e.getIncarnation(), r.topic};
  auto it = streams_.find(key);
  if (it == streams_.end()) {
    if (streams_.size() >= kMaxStreams) {
      // Forget the least recently seen eighth at once: the scan is paid rarely.
      std::vector<uint64_t> seen;
      for (auto& [k, s] : streams_) seen.push_back(s.seen);
      auto cut = seen.begin() + seen.size() / 8;
      std::nth_element(seen.begin(), cut, seen.end());
      for (auto i = streams_.begin(); i != streams_.end();) {
        if (i->second.seen <= *cut) {
          i = streams_.erase(i);
          ++streamsForgotten_;
        } else {
          ++i;
        }
      }
    }
    streams_.emplace(std::move(key), Stream{e.getSequence(), received_});
    return;
  }
  Stream& s = it->second;
  s.seen = received_;
  if (e.getSequence() > s.last + 1) {
    r.missed = e.getSequence() - s.last - 1;
    ++gaps_;
  }
  if (e.getSequence() > s.last) s.last = e.getSequence();
}

}  // namespace zmesh::rpc
