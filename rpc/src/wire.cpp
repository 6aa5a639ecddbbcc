#include "wire.h"

#include <capnp/message.h>

#include <algorithm>
#include <bit>
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

// A frame that starts with a header and leaves `bodyBytes` of room behind it:
// `start` is where the frame's bytes begin, `body` where the room does (frame
// methods are calls into libzmq, a few of them per message otherwise).
struct Framed {
  zmq::message_t frame;
  char* start;
  char* body;
};

// A header built field by field.
Framed withRoomBehind(capnp::MessageBuilder& header, size_t bodyBytes) {
  FlatMessage flat(header);
  Framed out{zmq::message_t(flat.bytes() + bodyBytes), nullptr, nullptr};
  out.start = static_cast<char*>(out.frame.data());
  flat.writeTo(out.start);
  out.body = out.start + flat.bytes();
  return out;
}

// A copy of a pre-encoded header.
Framed withRoomBehind(std::string_view header, size_t bodyBytes) {
  Framed out{zmq::message_t(header.size() + bodyBytes), nullptr, nullptr};
  out.start = static_cast<char*>(out.frame.data());
  std::memcpy(out.start, header.data(), header.size());
  out.body = out.start + header.size();
  return out;
}

Framed buildReply(uint64_t requestId, StatusCode code, std::string_view text, size_t bodyBytes) {
  capnp::word scratch[kScratchWords] = {};
  capnp::MallocMessageBuilder message(kj::arrayPtr(scratch, kScratchWords));
  auto b = message.initRoot<idl::RpcHeader>();
  b.setRequestId(requestId);
  b.setStatus(code);
  if (!text.empty()) copyText(b.initMessage(text.size()), text);
  return withRoomBehind(message, bodyBytes);
}

Framed buildRequest(const RequestHeader& h, size_t bodyBytes) {
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
    static_assert(std::endian::native == std::endian::little);  // capnp's byte order
    std::memcpy(at, &value, bytes_);
  }

 private:
  size_t offset_ = 0;
  size_t bytes_ = 0;
  unsigned char mask_ = 0;
};

class OkReply {
 public:
  OkReply() {
    auto zeros = buildReply(0, StatusCode::OK, {}, 0).frame;
    requestId_ = {zeros, buildReply(~uint64_t{0}, StatusCode::OK, {}, 0).frame, 8, "requestId"};
    bytes_ = zeros.to_string();
  }

  Framed encode(uint64_t requestId, size_t bodyBytes) const {
    auto out = withRoomBehind(bytes_, bodyBytes);
    requestId_.put(out.start, requestId);
    return out;
  }

 private:
  std::string bytes_;
  FieldSlot requestId_;
};

// A request without trace id or idempotency key.
class PlainRequest {
 public:
  PlainRequest() {
    auto zeros = buildRequest({}, 0).frame;
    auto ones = [](auto set) {
      RequestHeader h;
      set(h);
      return buildRequest(h, 0).frame;
    };
    requestId_ = {zeros, ones([](auto& h) { h.requestId = ~uint64_t{0}; }), 8, "requestId"};
    interfaceId_ = {zeros, ones([](auto& h) { h.interfaceId = ~uint64_t{0}; }), 8, "interfaceId"};
    methodId_ = {zeros, ones([](auto& h) { h.methodId = 0xffff; }), 2, "methodId"};
    budgetMs_ = {zeros, ones([](auto& h) { h.budgetMs = ~uint32_t{0}; }), 4, "budgetMs"};
    retryable_ = {zeros, ones([](auto& h) { h.retryable = true; }), 0, "retryable"};
    bytes_ = zeros.to_string();
  }

  Framed encode(const RequestHeader& h, size_t bodyBytes) const {
    auto out = withRoomBehind(bytes_, bodyBytes);
    char* at = out.start;
    requestId_.put(at, h.requestId);
    interfaceId_.put(at, h.interfaceId);
    methodId_.put(at, h.methodId);
    budgetMs_.put(at, h.budgetMs);
    retryable_.put(at, h.retryable);
    return out;
  }

 private:
  std::string bytes_;
  FieldSlot requestId_, interfaceId_, methodId_, budgetMs_, retryable_;
};

}  // namespace

zmq::message_t encodeRequest(const RequestHeader& h, const zmq::message_t& params) {
  size_t bodyBytes = params.size();
  static const PlainRequest plain;
  auto out = h.traceId.empty() && h.idempotencyKey.empty() ? plain.encode(h, bodyBytes)
                                                           : buildRequest(h, bodyBytes);
  if (bodyBytes > 0) std::memcpy(out.body, params.data(), bodyBytes);
  return std::move(out.frame);
}

namespace {

// Where RpcHeader's fields lie in its struct, from its schema (not assumed):
// the byte offset of each data field in the data section, the bit of the
// Bool, the index of each Text in the pointer section.
struct HeaderLayout {
  size_t requestId, interfaceId, methodId, budgetMs, retryableBit, status;
  size_t traceId, idempotencyKey, message;

  HeaderLayout() {
    auto schema = capnp::Schema::from<idl::RpcHeader>();
    auto slot = [&](const char* name, size_t bits) {
      auto s = schema.getFieldByName(name).getProto().getSlot();
      // A field with a default is stored XORed with it; none of these has one.
      if (s.getHadExplicitDefault())
        throw std::logic_error(std::string("RpcHeader.") + name + " has a default");
      return size_t{s.getOffset()} * bits;
    };
    requestId = slot("requestId", 64) / 8;
    interfaceId = slot("interfaceId", 64) / 8;
    methodId = slot("methodId", 16) / 8;
    budgetMs = slot("budgetMs", 32) / 8;
    retryableBit = slot("retryable", 1);
    status = slot("status", 16) / 8;
    traceId = slot("traceId", 1);
    idempotencyKey = slot("idempotencyKey", 1);
    message = slot("message", 1);
  }
};

// A header as our encoders write it: one segment whose root is a struct in
// bounds, every pointer of which is null or a NUL-terminated Text in bounds,
// reading no more words than the segment holds. Checked and read word by word
// here, at the places the schema gives (a capnp reader costs several times as
// much to build and read, on every request and every reply). Returns false for
// anything else — far pointers, other pointer kinds, damage — which the
// general path reads in full or refuses by name.
bool readPlainHeader(const capnp::word* segment, size_t segmentWords, Header& out) {
  static const HeaderLayout layout;
  auto word = [&](size_t i) {
    uint64_t v;
    std::memcpy(&v, segment + i, sizeof(v));
    return v;
  };
  // The signed 30-bit offset of a struct or list pointer, from the word after it.
  auto target = [](size_t from, uint64_t pointer) {
    return static_cast<int64_t>(from) + 1 + (static_cast<int32_t>(pointer & 0xffffffffu) >> 2);
  };
  if (segmentWords == 0) return false;
  uint64_t root = word(0);
  if (root == 0 || (root & 3) != 0) return false;  // not a struct
  int64_t start = target(0, root);
  size_t dataBytes = ((root >> 32) & 0xffff) * sizeof(capnp::word), pointers = root >> 48;
  size_t dataWords = dataBytes / sizeof(capnp::word);
  if (start < 0 || static_cast<size_t>(start) + dataWords + pointers > segmentWords) return false;
  size_t reads = dataWords + pointers;
  std::string_view texts[3];  // by pointer index, where the index is one of the three
  const size_t textAt[3] = {layout.traceId, layout.idempotencyKey, layout.message};
  for (size_t i = 0; i < pointers; ++i) {
    size_t from = static_cast<size_t>(start) + dataWords + i;
    uint64_t p = word(from);
    if (p == 0) continue;
    // A list (kind 1) of bytes (element size 2) that ends in a NUL.
    if ((p & 3) != 1 || ((p >> 32) & 7) != 2) return false;
    size_t bytes = p >> 35;
    int64_t begin = target(from, p);
    size_t words = (bytes + 7) / 8;
    if (bytes == 0 || begin < 0 || static_cast<size_t>(begin) + words > segmentWords) return false;
    const char* text = reinterpret_cast<const char*>(segment + begin);
    if (text[bytes - 1] != '\0') return false;
    reads += words;
    for (size_t t = 0; t < 3; ++t)
      if (textAt[t] == i) texts[t] = std::string_view(text, bytes - 1);
  }
  if (reads > segmentWords) return false;  // pointers sharing bytes past what is held
  // A field past the end of the data section (an older writer's) reads as 0.
  const auto* data = reinterpret_cast<const unsigned char*>(segment + start);
  auto field = [&](size_t offset, size_t size) {
    uint64_t v = 0;
    static_assert(std::endian::native == std::endian::little);  // capnp's byte order
    if (offset + size <= dataBytes) std::memcpy(&v, data + offset, size);
    return v;
  };
  out.requestId = field(layout.requestId, 8);
  out.interfaceId = field(layout.interfaceId, 8);
  out.methodId = static_cast<uint16_t>(field(layout.methodId, 2));
  out.budgetMs = static_cast<uint32_t>(field(layout.budgetMs, 4));
  out.retryable = (field(layout.retryableBit / 8, 1) >> (layout.retryableBit % 8)) & 1;
  out.status = static_cast<StatusCode>(field(layout.status, 2));
  out.traceId = texts[0];
  out.idempotencyKey = texts[1];
  out.message = texts[2];
  return true;
}

}  // namespace

void HeaderFrame::read(const zmq::message_t& frame) {
  // The segment table's first word: one segment, and its size.
  size_t size = frame.size();
  if (size >= sizeof(capnp::word)) {
    const void* bytes = frame.data();
    uint32_t table[2];
    std::memcpy(table, bytes, sizeof(table));
    size_t headerWords = 1 + size_t{table[1]};
    if (table[0] == 0 && headerWords * sizeof(capnp::word) <= std::min(size, kMaxHeaderBytes)) {
      // In place when the frame is word-aligned, else from an aligned copy of
      // just the header.
      auto* words = static_cast<const capnp::word*>(bytes);
      if (reinterpret_cast<uintptr_t>(words) % alignof(capnp::word) != 0) {
        std::memcpy(words_, bytes, headerWords * sizeof(capnp::word));
        words = words_;
      }
      if (readPlainHeader(words + 1, headerWords - 1, header_)) {
        bodyOffset_ = headerWords * sizeof(capnp::word);
        return;
      }
      header_ = {};
    }
  }
  readChecked(frame);
}

void HeaderFrame::take(idl::RpcHeader::Reader h) {
  auto text = [](capnp::Text::Reader t) { return std::string_view(t.cStr(), t.size()); };
  header_.requestId = h.getRequestId();
  header_.interfaceId = h.getInterfaceId();
  header_.methodId = h.getMethodId();
  header_.budgetMs = h.getBudgetMs();
  header_.retryable = h.getRetryable();
  header_.traceId = text(h.getTraceId());
  header_.idempotencyKey = text(h.getIdempotencyKey());
  header_.status = h.getStatus();
  header_.message = text(h.getMessage());
}

void HeaderFrame::readChecked(const zmq::message_t& frame) {
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
  try {
    take(reader.getRoot<idl::RpcHeader>());
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
  static const OkReply ok;
  Framed out;
  if (code == StatusCode::OK && text.empty()) {
    out = ok.encode(requestId, bodyBytes);
  } else {
    if (text.size() > kMaxStatusMessageBytes) {
      size_t cut = kMaxStatusMessageBytes;
      // Not inside a UTF-8 character: back up over continuation bytes.
      while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
      text = text.substr(0, cut);
    }
    out = buildReply(requestId, code, text, bodyBytes);
  }
  if (body) body->writeTo(out.body);
  return std::move(out.frame);
}

}  // namespace zmesh::rpc::wire
