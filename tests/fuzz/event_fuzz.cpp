// An event (topic frame, then the Event frame) through the subscriber's
// envelope check and the client's rendering of its body: dropped and counted,
// or delivered readable — never a crash.
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <zmq.hpp>

#include "zmesh/client.h"
#include "zmesh/rpc/events.h"
#include "zmesh/rpc/frame.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace zmesh;
  static const bool quiet = [] {  // each input may log
    spdlog::set_level(spdlog::level::off);
    return true;
  }();
  (void)quiet;
  static zmq::context_t context;
  static rpc::Subscriber subscriber(context, "inproc://event-fuzz-none", {});
  // The first byte: the topic's length, then the topic, then the event frame.
  size_t topicBytes = size > 0 ? std::min<size_t>(data[0] % 32, size - 1) : 0;
  std::vector<zmq::message_t> frames;
  frames.emplace_back(data + (size > 0), topicBytes);
  frames.emplace_back(data + (size > 0) + topicBytes, size - (size > 0) - topicBytes);
  auto event = subscriber.accept(frames);
  if (!event) return 0;
  auto e = event->event();
  try {
    (void)eventBodyJson(e.getBodyType(), e.getBody());
  } catch (const rpc::FrameError&) {
  }
  return 0;
}
