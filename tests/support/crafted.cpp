#include "crafted.h"

#include <capnp/serialize.h>

#include <cstring>
#include <stdexcept>
#include <zmq_addon.hpp>

#include "checkshapes.capnp.h"
#include "testsvc.capnp.h"
#include "zmesh/idl/admin.capnp.h"
#include "zmesh/idl/cache.capnp.h"
#include "zmesh/idl/common.capnp.h"
#include "zmesh/idl/idgen.capnp.h"
#include "zmesh/idl/lock.capnp.h"
#include "zmesh/idl/ratelimit.capnp.h"
#include "zmesh/rpc/frame.h"

namespace zmesh::testing::crafted {
namespace {

// Pointer words, as the encoding spec lays them out (little-endian here).
constexpr uint64_t kStruct = 0, kList = 1, kFar = 2, kOther = 3;

uint64_t word(const Bytes& b, size_t w) {
  uint64_t v;
  std::memcpy(&v, b.data() + 8 * w, 8);
  return v;
}
void setWord(Bytes& b, size_t w, uint64_t v) { std::memcpy(b.data() + 8 * w, &v, 8); }
int64_t offsetOf(uint64_t pointer) { return static_cast<int32_t>(pointer & 0xffffffff) >> 2; }

Bytes flat(capnp::MessageBuilder& message) {
  auto words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  return Bytes(bytes.begin(), bytes.end());
}

}  // namespace

Bytes listAsRoot() { return {0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}; }

const char* name(Damage damage) {
  switch (damage) {
    case Damage::kStructPointer:
      return "struct pointer";
    case Damage::kListPointer:
      return "list pointer";
    case Damage::kCapability:
      return "capability";
    case Damage::kUnterminatedText:
      return "unterminated text";
    case Damage::kFarToMissingSegment:
      return "far pointer to a missing segment";
    case Damage::kHugeList:
      return "huge list";
  }
  return "?";
}

namespace {
// Where pointer `index` of the root struct of `b` (one segment) lies, in words.
size_t rootPointer(const Bytes& b, unsigned index) {
  if ((word(b, 0) & 0xffffffff) != 0)
    throw std::logic_error("crafted: message has more than one segment");
  constexpr size_t kSeg = 1;  // the segment table: one word
  uint64_t root = word(b, kSeg);
  if ((root & 3) != kStruct) throw std::logic_error("crafted: root is not a struct");
  size_t dataWords = (root >> 32) & 0xffff, pointers = root >> 48;
  if (index >= pointers) throw std::logic_error("crafted: no such pointer");
  return kSeg + 1 + offsetOf(root) + dataWords + index;
}
}  // namespace

Bytes aliased(capnp::MessageBuilder& message, unsigned from, unsigned to) {
  Bytes b = flat(message);
  size_t a = rootPointer(b, from), t = rootPointer(b, to);
  uint64_t p = word(b, a);
  if ((p & 3) != kList && (p & 3) != kStruct) throw std::logic_error("crafted: not aliasable");
  int64_t target = static_cast<int64_t>(a) + 1 + offsetOf(p);
  int64_t offset = target - (static_cast<int64_t>(t) + 1);
  setWord(b, t, (p & ~uint64_t{0xffffffff}) | (static_cast<uint32_t>(offset << 2) & ~3u) | (p & 3));
  return b;
}

Bytes damaged(capnp::MessageBuilder& message, unsigned index, Damage damage) {
  Bytes b = flat(message);
  size_t at = rootPointer(b, index);
  uint64_t p = word(b, at);
  switch (damage) {
    case Damage::kStructPointer:  // empty, as capnp encodes one (offset -1: all zeros is null)
      setWord(b, at, kStruct | 0xfffffffc);
      break;
    case Damage::kListPointer:  // offset 0, void elements, none of them
      setWord(b, at, kList);
      break;
    case Damage::kCapability:
      setWord(b, at, kOther);
      break;
    case Damage::kUnterminatedText: {
      if ((p & 3) != kList) throw std::logic_error("crafted: pointer is not a Text");
      size_t count = p >> 35;
      if (count == 0) throw std::logic_error("crafted: an empty Text has no NUL to damage");
      size_t textAt = 8 * (at + 1 + offsetOf(p));
      b[textAt + count - 1] = 'x';
      break;
    }
    case Damage::kFarToMissingSegment:
      setWord(b, at, kFar | (uint64_t{7} << 32));
      break;
    case Damage::kHugeList:  // bytes, 2^29 of them
      setWord(b, at, kList | (uint64_t{2} << 32) | (uint64_t{1} << 61));
      break;
  }
  return b;
}

Bytes deepNesting(unsigned depth) {
  // Each level one word: a list pointer to a one-element list of pointers (the next level).
  Bytes b(8 * (2 + depth), 0);
  uint32_t words = depth + 1;
  std::memcpy(b.data() + 4, &words, 4);
  for (unsigned i = 0; i < depth; ++i)
    setWord(b, 1 + i, kList | (uint64_t{6} << 32) | (uint64_t{1} << 35));  // offset 0, 1 pointer
  return b;
}

zmq::message_t frame(const Bytes& bytes, const zmq::message_t* prefix) {
  size_t head = prefix ? prefix->size() : 0;
  zmq::message_t out(head + bytes.size());
  if (head) std::memcpy(out.data(), prefix->data(), head);
  if (!bytes.empty())
    std::memcpy(static_cast<char*>(out.data()) + head, bytes.data(), bytes.size());
  return out;
}

zmq::message_t eventOf(const std::string& topic, uint64_t sequence, const Damage* bodyDamage) {
  capnp::MallocMessageBuilder m;
  auto e = m.initRoot<idl::Event>();
  e.setPublisher("hostile@test");
  e.setIncarnation(1);
  e.setSequence(sequence);
  e.setTopic(topic);
  e.setBodyType(capnp::typeId<idl::BlockReserved>());
  if (!bodyDamage) {
    e.getBody().initAs<idl::BlockReserved>().setNamespace("orders");
    return rpc::toFrame(m);
  }
  // The body built as the root of its own message, damaged there, then
  // copied in as the event's body (a copy keeps what a pointer says).
  capnp::MallocMessageBuilder body;
  body.initRoot<idl::BlockReserved>().setNamespace("orders");
  auto bytes = damaged(body, 0, *bodyDamage);
  rpc::FrameMessage message(bytes.data(), bytes.size(), rpc::readerOptionsFor(1 << 20));
  e.getBody().setAs<capnp::AnyPointer>(message.any());
  return rpc::toFrame(m);
}

RawPublisher::RawPublisher(zmq::context_t& context, const std::string& xsub)
    : socket(context, zmq::socket_type::pub) {
  socket.set(zmq::sockopt::linger, 0);
  socket.connect(xsub);
}

void RawPublisher::send(const std::string& topic, const zmq::message_t& body) {
  std::vector<zmq::message_t> frames;
  frames.emplace_back(topic.data(), topic.size());
  frames.emplace_back(body.data(), body.size());
  zmq::send_multipart(socket, frames);
}

Bytes bytesOf(const zmq::message_t& frame) {
  auto* p = static_cast<const uint8_t*>(frame.data());
  return Bytes(p, p + frame.size());
}

const std::vector<capnp::StructSchema>& wireStructs() {
  static const std::vector<capnp::StructSchema> all = [] {
    std::vector<capnp::StructSchema> out{capnp::Schema::from<test::Shapes>(),
                                         capnp::Schema::from<idl::CacheLogRecord>(),
                                         capnp::Schema::from<idl::IdGenLogRecord>(),
                                         capnp::Schema::from<idl::LockLogRecord>(),
                                         capnp::Schema::from<idl::RateLimitLogRecord>(),
                                         capnp::Schema::from<idl::RpcHeader>(),
                                         capnp::Schema::from<idl::Event>(),
                                         capnp::Schema::from<idl::LockSnapshot>(),
                                         capnp::Schema::from<idl::RateLimitSnapshot>(),
                                         capnp::Schema::from<idl::IdGenSnapshot>()};
    for (auto iface :
         {capnp::Schema::from<idl::Admin>(), capnp::Schema::from<idl::IdGen>(),
          capnp::Schema::from<idl::Cache>(), capnp::Schema::from<idl::Lock>(),
          capnp::Schema::from<idl::RateLimit>(), capnp::Schema::from<test::TestService>()}) {
      for (auto method : iface.getMethods()) {
        out.push_back(method.getParamType());
        out.push_back(method.getResultType());
      }
    }
    for (auto s : {capnp::Schema::from<idl::ServiceState>(), capnp::Schema::from<idl::CacheEvent>(),
                   capnp::Schema::from<idl::LockEvent>(), capnp::Schema::from<idl::Denied>(),
                   capnp::Schema::from<test::Leaf>()})
      out.push_back(s);
    return out;
  }();
  return all;
}

}  // namespace zmesh::testing::crafted
