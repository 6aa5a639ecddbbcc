// Requests and replies on the wire. Each is one frame after the routing
// envelope: an RpcHeader message, then the params or results message (nothing
// for none), each in capnp's flat framing, so the header's segment table says
// where the body begins. One frame, not two: libzmq's cost per frame, paid on
// the application and I/O threads of both ends, is of the order of a small
// call's whole decoding.
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

// The request frame: the header, then `params` (a serialised message, or empty).
zmq::message_t encodeRequest(const RequestHeader& h, const zmq::message_t& params);

// The reply frame: a header with the status, then the results (none when null).
zmq::message_t encodeReply(uint64_t requestId, StatusCode code, std::string_view message,
                           capnp::MessageBuilder* results = nullptr);

// Every field of a received header, as plain values. The texts view the
// HeaderFrame they were read from.
struct Header : RequestHeader {
  StatusCode status = StatusCode::OK;  // replies only
  std::string_view message;            // replies only
};

// The header at the front of a received frame, read in place (or from an
// aligned copy on the stack: no heap allocation for what every request and
// reply carry), all of it at once: capnp checks a pointer's kind and a Text's
// NUL only when the field is read, so reading it later would fail outside the
// error boundary. The texts view the frame (or the copy).
class HeaderFrame {
 public:
  // Throws FrameError for a header that is missing, cut short, over
  // kMaxHeaderBytes or malformed in any field.
  explicit HeaderFrame(const zmq::message_t& frame) { read(frame); }
  // The general path alone, never the plain-header one (tests compare the two).
  struct CheckedOnly {};
  HeaderFrame(const zmq::message_t& frame, CheckedOnly) { readChecked(frame); }
  // Nothing read yet; read() fills it. (Not std::optional<HeaderFrame>: GCC
  // zeroes an optional's whole storage, the 4 KiB buffer included, per call.)
  HeaderFrame() = default;
  void read(const zmq::message_t& frame);
  HeaderFrame(const HeaderFrame&) = delete;
  HeaderFrame& operator=(const HeaderFrame&) = delete;
  const Header& get() const { return header_; }
  // Where the params or results begin in the frame, in bytes (readFrame's offset).
  size_t bodyOffset() const { return bodyOffset_; }

 private:
  void take(idl::RpcHeader::Reader h);
  // Any header: a capnp reader and every field read, or a FrameError naming what is wrong.
  void readChecked(const zmq::message_t& frame);

  alignas(capnp::word) capnp::word words_[kMaxHeaderBytes / sizeof(capnp::word)];
  kj::Maybe<capnp::FlatArrayMessageReader> reader_;
  Header header_;
  size_t bodyOffset_ = 0;
};

}  // namespace zmesh::rpc::wire
