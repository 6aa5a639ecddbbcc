#include "wire.h"

#include <capnp/message.h>

#include <cstring>

#include "zmesh/idl/common.capnp.h"
#include "zmesh/rpc/frame.h"

namespace zmesh::rpc::wire {
namespace {

// string_views need not be NUL-terminated, which capnp::Text::Reader requires.
void copyText(capnp::Text::Builder out, std::string_view in) {
  std::memcpy(out.begin(), in.data(), in.size());
}

}  // namespace

zmq::message_t encodeRequest(const RequestHeader& h) {
  capnp::MallocMessageBuilder message(32);
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

zmq::message_t encodeReply(uint64_t requestId, StatusCode code, std::string_view text) {
  if (text.size() > kMaxStatusMessageBytes) {
    size_t cut = kMaxStatusMessageBytes;
    // Not inside a UTF-8 character: back up over continuation bytes.
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
    text = text.substr(0, cut);
  }
  capnp::MallocMessageBuilder message(16 + text.size() / 8);
  auto b = message.initRoot<idl::RpcHeader>();
  b.setRequestId(requestId);
  b.setStatus(code);
  if (!text.empty()) copyText(b.initMessage(text.size()), text);
  return toFrame(message);
}

}  // namespace zmesh::rpc::wire
