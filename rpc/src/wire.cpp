#include "wire.h"

#include <capnp/message.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <stdexcept>

#include "zmesh/idl/common.capnp.h"
#include "zmesh/rpc/frame.h"

namespace zmesh::rpc::wire {
namespace {

// Room for a header with a trace id and idempotency key of ordinary length.
constexpr size_t kScratchWords = 32;

// string_views need not be NUL-terminated, which capnp::Text::Reader requires.
void copyText(capnp::Text::Builder out, std::string_view in) {
  std::memcpy(out.begin(), in.data(), in.size());
}

// A header built field by field, with `bodyBytes` of room left behind it.
zmq::message_t withRoomBehind(capnp::MessageBuilder& header, size_t bodyBytes) {
  FlatMessage flat(header);
  zmq::message_t frame(flat.bytes() + bodyBytes);
  flat.writeTo(frame.data());
  return frame;
}

// A copy of a pre-encoded header, with `bodyBytes` of room left behind it.
zmq::message_t withRoomBehind(const zmq::message_t& header, size_t bodyBytes) {
  zmq::message_t frame(header.size() + bodyBytes);
  std::memcpy(frame.data(), header.data(), header.size());
  return frame;
}

zmq::message_t buildReply(uint64_t requestId, StatusCode code, std::string_view text,
                          size_t bodyBytes) {
  capnp::word scratch[kScratchWords] = {};
  capnp::MallocMessageBuilder message(kj::arrayPtr(scratch, kScratchWords));
  auto b = message.initRoot<idl::RpcHeader>();
  b.setRequestId(requestId);
  b.setStatus(code);
  if (!text.empty()) copyText(b.initMessage(text.size()), text);
  return withRoomBehind(message, bodyBytes);
}

zmq::message_t buildRequest(const RequestHeader& h, size_t bodyBytes) {
  // Built on the stack; long trace ids or keys spill into a heap segment.
  capnp::word scratch[kScratchWords] = {};
  capnp::MallocMessageBuilder message(kj::arrayPtr(scratch, kScratchWords));
  auto b = message.initRoot<idl::RpcHeader>();
  b.setRequestId(h.requestId);
  b.setInterfaceId(h.interfaceId);
  b.setMethodId(h.methodId);
  b.setBudgetMs(h.budgetMs);
  b.setRetryable(h.retryable);
  if (!h.traceId.empty()) copyText(b.initTraceId(h.traceId.size()), h.traceId);
  if (!h.idempotencyKey.empty())
    copyText(b.initIdempotencyKey(h.idempotencyKey.size()), h.idempotencyKey);
  return withRoomBehind(message, bodyBytes);
}

// Most headers differ from one call to the next only in fixed-size data fields
// (an OK reply in its request id; a request without trace id or idempotency
// key in id, interface, method, budget and flag), at places the schema fixes.
// Such a header is encoded once and the fields written into a copy, which is
// far cheaper than building it. Where a field lies is found by encoding the
// header with the field all zeros and all ones, not assumed.
class FieldSlot {
 public:
  FieldSlot() = default;
  // `bytes`: the field's size; 0 for a Bool (one bit of one byte).
  FieldSlot(const zmq::message_t& zeros, const zmq::message_t& ones, size_t bytes,
            const char* name) {
    auto* a = static_cast<const unsigned char*>(zeros.data());
    auto* b = static_cast<const unsigned char*>(ones.data());
    size_t differing = 0;
    offset_ = zeros.size();
    for (size_t i = 0; i < zeros.size() && i < ones.size(); ++i) {
      if (a[i] == b[i]) continue;
      offset_ = std::min(offset_, i);
      ++differing;
      mask_ = a[i] ^ b[i];
    }
    bool isBool = bytes == 0;
    bytes_ = isBool ? 1 : bytes;
    if (zeros.size() != ones.size() || differing != bytes_ || offset_ + bytes_ > zeros.size() ||
        (isBool && (mask_ & (mask_ - 1)) != 0))
      throw std::logic_error(std::string("RpcHeader.") + name + " is not one fixed field");
    if (!isBool) mask_ = 0;
  }

  void put(void* frame, uint64_t value) const {
    auto* at = static_cast<unsigned char*>(frame) + offset_;
    if (mask_ != 0) {
      if (value != 0) *at |= mask_;
      return;
    }
    for (size_t i = 0; i < bytes_; ++i) at[i] = (value >> (8 * i)) & 0xff;  // little-endian
  }

 private:
  size_t offset_ = 0;
  size_t bytes_ = 0;
  unsigned char mask_ = 0;
};

class OkReply {
 public:
  OkReply()
      : bytes_(buildReply(0, StatusCode::OK, {}, 0)),
        requestId_(bytes_, buildReply(~uint64_t{0}, StatusCode::OK, {}, 0), 8, "requestId") {}

  zmq::message_t encode(uint64_t requestId, size_t bodyBytes) const {
    auto out = withRoomBehind(bytes_, bodyBytes);
    requestId_.put(out.data(), requestId);
    return out;
  }

 private:
  zmq::message_t bytes_;
  FieldSlot requestId_;
};

// A request without trace id or idempotency key.
class PlainRequest {
 public:
  PlainRequest() : bytes_(buildRequest({}, 0)) {
    auto ones = [](auto set) {
      RequestHeader h;
      set(h);
      return buildRequest(h, 0);
    };
    requestId_ = {bytes_, ones([](auto& h) { h.requestId = ~uint64_t{0}; }), 8, "requestId"};
    interfaceId_ = {bytes_, ones([](auto& h) { h.interfaceId = ~uint64_t{0}; }), 8, "interfaceId"};
    methodId_ = {bytes_, ones([](auto& h) { h.methodId = 0xffff; }), 2, "methodId"};
    budgetMs_ = {bytes_, ones([](auto& h) { h.budgetMs = ~uint32_t{0}; }), 4, "budgetMs"};
    retryable_ = {bytes_, ones([](auto& h) { h.retryable = true; }), 0, "retryable"};
  }

  zmq::message_t encode(const RequestHeader& h, size_t bodyBytes) const {
    auto out = withRoomBehind(bytes_, bodyBytes);
    requestId_.put(out.data(), h.requestId);
    interfaceId_.put(out.data(), h.interfaceId);
    methodId_.put(out.data(), h.methodId);
    budgetMs_.put(out.data(), h.budgetMs);
    retryable_.put(out.data(), h.retryable);
    return out;
  }

 private:
  zmq::message_t bytes_;
  FieldSlot requestId_, interfaceId_, methodId_, budgetMs_, retryable_;
};

}  // namespace

zmq::message_t encodeRequest(const RequestHeader& h, const zmq::message_t& params) {
  zmq::message_t frame;
  if (h.traceId.empty() && h.idempotencyKey.empty()) {
    static const PlainRequest plain;
    frame = plain.encode(h, params.size());
  } else {
    frame = buildRequest(h, params.size());
  }
  if (params.size() > 0)
    std::memcpy(static_cast<char*>(frame.data()) + frame.size() - params.size(), params.data(),
                params.size());
  return frame;
}

HeaderFrame::HeaderFrame(const zmq::message_t& frame) {
  // The header is at most kMaxHeaderBytes: copy that much (or the whole frame)
  // and let its segment table say where it ends.
  size_t prefix = std::min(frame.size(), kMaxHeaderBytes) / sizeof(capnp::word);
  if (prefix == 0)
    throw FrameError("frame of " + std::to_string(frame.size()) + " bytes has no header");
  std::memcpy(words_, frame.data(), prefix * sizeof(capnp::word));
  auto words = kj::arrayPtr(words_, prefix);
  size_t headerWords = capnp::expectedSizeInWordsFromPrefix(words);
  if (headerWords > prefix)
    throw FrameError(frame.size() >= kMaxHeaderBytes
                         ? "header exceeds " + std::to_string(kMaxHeaderBytes) + " bytes"
                         : "frame of " + std::to_string(frame.size()) +
                               " bytes ends inside its header");
  words = words.slice(0, headerWords);
  static const capnp::ReaderOptions options = readerOptionsFor(kMaxHeaderBytes);
  auto& reader = openMessage(
      words, [&]() -> capnp::FlatArrayMessageReader& { return reader_.emplace(words, options); });
  auto text = [](capnp::Text::Reader t) { return std::string_view(t.cStr(), t.size()); };
  try {
    auto h = reader.getRoot<idl::RpcHeader>();
    header_.requestId = h.getRequestId();
    header_.interfaceId = h.getInterfaceId();
    header_.methodId = h.getMethodId();
    header_.budgetMs = h.getBudgetMs();
    header_.retryable = h.getRetryable();
    header_.traceId = text(h.getTraceId());
    header_.idempotencyKey = text(h.getIdempotencyKey());
    header_.status = h.getStatus();
    header_.message = text(h.getMessage());
  } catch (const kj::Exception& e) {
    throw FrameError(std::string("malformed header: ") + e.getDescription().cStr());
  }
  bodyOffset_ = headerWords * sizeof(capnp::word);
}

zmq::message_t encodeReply(uint64_t requestId, StatusCode code, std::string_view text,
                           capnp::MessageBuilder* results) {
  std::optional<FlatMessage> body;
  if (results != nullptr) body.emplace(*results);
  size_t bodyBytes = body ? body->bytes() : 0;
  zmq::message_t frame;
  if (code == StatusCode::OK && text.empty()) {
    static const OkReply ok;
    frame = ok.encode(requestId, bodyBytes);
  } else {
    if (text.size() > kMaxStatusMessageBytes) {
      size_t cut = kMaxStatusMessageBytes;
      // Not inside a UTF-8 character: back up over continuation bytes.
      while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
      text = text.substr(0, cut);
    }
    frame = buildReply(requestId, code, text, bodyBytes);
  }
  if (body) body->writeTo(static_cast<char*>(frame.data()) + frame.size() - bodyBytes);
  return frame;
}

}  // namespace zmesh::rpc::wire
