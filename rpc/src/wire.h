// Request and reply headers: the first frame after the routing envelope.
#pragma once

#include <cstdint>
#include <string_view>
#include <zmq.hpp>

#include "zmesh/idl/common.capnp.h"
#include "zmesh/rpc/frame.h"
#include "zmesh/rpc/status.h"

namespace zmesh::rpc::wire {

// Headers are small; anything larger is not one of ours.
constexpr size_t kMaxHeaderBytes = 4096;
// A reply's status message is cut to this (on a UTF-8 boundary) so that the reply
// header stays within kMaxHeaderBytes: a receiver drops a larger header unread.
constexpr size_t kMaxStatusMessageBytes = 2048;

struct RequestHeader {
  uint64_t requestId = 0;
  uint64_t interfaceId = 0;
  uint16_t methodId = 0;
  uint32_t budgetMs = 0;
  bool retryable = false;
  std::string_view traceId;
  std::string_view idempotencyKey;
};

zmq::message_t encodeRequest(const RequestHeader& h);

// A received header, read from an aligned copy on the stack: no heap
// allocation for the frame every request and every reply carry.
class HeaderFrame {
 public:
  // Throws FrameError for an empty, oversized or malformed header.
  explicit HeaderFrame(const zmq::message_t& frame);
  HeaderFrame(const HeaderFrame&) = delete;
  HeaderFrame& operator=(const HeaderFrame&) = delete;
  idl::RpcHeader::Reader get();

 private:
  alignas(capnp::word) capnp::word words_[kMaxHeaderBytes / sizeof(capnp::word)];
  kj::Maybe<capnp::FlatArrayMessageReader> reader_;
};
zmq::message_t encodeReply(uint64_t requestId, StatusCode code, std::string_view message);

}  // namespace zmesh::rpc::wire
