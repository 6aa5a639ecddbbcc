#include "wire.h"

#include <capnp/message.h>

#include <cstring>
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

zmq::message_t buildReply(uint64_t requestId, StatusCode code, std::string_view text) {
  capnp::word scratch[kScratchWords] = {};
  capnp::MallocMessageBuilder message(kj::arrayPtr(scratch, kScratchWords));
  auto b = message.initRoot<idl::RpcHeader>();
  b.setRequestId(requestId);
  b.setStatus(code);
  if (!text.empty()) copyText(b.initMessage(text.size()), text);
  return toFrame(message);
}

// Every OK reply without a message has the same bytes but for the request id
// (a data field at a place fixed by the schema): it is encoded once and the id
// written in, which is far cheaper than building it. Where the id goes is found by
// encoding two ids that differ in every byte, not assumed.
class OkReply {
 public:
  OkReply() : bytes_(buildReply(0, StatusCode::OK, {})) {
    auto other = buildReply(~uint64_t{0}, StatusCode::OK, {});
    auto* a = static_cast<const unsigned char*>(bytes_.data());
    auto* b = static_cast<const unsigned char*>(other.data());
    size_t first = 0;
    while (first < bytes_.size() && a[first] == b[first]) ++first;
    idOffset_ = first;
    size_t differing = 0;
    for (size_t i = 0; i < bytes_.size(); ++i) differing += a[i] != b[i];
    if (other.size() != bytes_.size() || differing != sizeof(uint64_t) ||
        first + sizeof(uint64_t) > bytes_.size())
      throw std::logic_error("RpcHeader.requestId is not one fixed 8-byte field");
  }

  zmq::message_t encode(uint64_t requestId) const {
    zmq::message_t out(bytes_.data(), bytes_.size());
    auto* id = static_cast<unsigned char*>(out.data()) + idOffset_;
    for (size_t i = 0; i < sizeof(requestId); ++i) id[i] = (requestId >> (8 * i)) & 0xff;  // LE
    return out;
  }

 private:
  zmq::message_t bytes_;
  size_t idOffset_ = 0;
};

}  // namespace

zmq::message_t encodeRequest(const RequestHeader& h) {
  // Built on the stack (every call sends one); long trace ids or keys spill
  // into a heap segment.
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
  return toFrame(message);
}

HeaderFrame::HeaderFrame(const zmq::message_t& frame) {
  size_t size = frame.size();
  if (size == 0 || size > kMaxHeaderBytes || size % sizeof(capnp::word) != 0)
    throw FrameError("header frame of " + std::to_string(size) + " bytes");
  std::memcpy(words_, frame.data(), size);
  static const capnp::ReaderOptions options = readerOptionsFor(kMaxHeaderBytes);
  auto words = kj::arrayPtr(words_, size / sizeof(capnp::word));
  openMessage(words,
              [&]() -> capnp::FlatArrayMessageReader& { return reader_.emplace(words, options); });
}

idl::RpcHeader::Reader HeaderFrame::get() {
  return KJ_ASSERT_NONNULL(reader_).getRoot<idl::RpcHeader>();
}

zmq::message_t encodeReply(uint64_t requestId, StatusCode code, std::string_view text) {
  if (code == StatusCode::OK && text.empty()) {
    static const OkReply ok;
    return ok.encode(requestId);
  }
  if (text.size() > kMaxStatusMessageBytes) {
    size_t cut = kMaxStatusMessageBytes;
    // Not inside a UTF-8 character: back up over continuation bytes.
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
    text = text.substr(0, cut);
  }
  return buildReply(requestId, code, text);
}

}  // namespace zmesh::rpc::wire
