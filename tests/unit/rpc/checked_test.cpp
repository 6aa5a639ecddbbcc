// rpc::checkFields and the header reader against messages built to be almost
// right: every wrong-kind case, at the root, in a field, in a list element, in
// a union member, and in the RPC header itself.
#include <capnp/message.h>
#include <capnp/schema.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <string>

#include "crafted.h"
#include "wire.h"
#include "zmesh/idl/admin.capnp.h"
#include "zmesh/idl/common.capnp.h"
#include "zmesh/idl/idgen.capnp.h"
#include "zmesh/rpc/frame.h"

using namespace zmesh;
namespace crafted = zmesh::testing::crafted;
using crafted::Damage;

namespace {

const capnp::ReaderOptions kOptions = rpc::readerOptionsFor(1 << 20);

// Opens `bytes` and checks it as `T`; returns the FrameError's text, or "" if it passed.
template <typename T>
std::string verdict(const crafted::Bytes& bytes) {
  try {
    rpc::FrameMessage m(bytes.data(), bytes.size(), kOptions);
    rpc::checkFields(m.any(), capnp::Schema::from<T>(), "params");
    return "";
  } catch (const rpc::FrameError& e) {
    return e.what();
  }
}

void fillNext(capnp::MessageBuilder& m) {
  auto p = m.initRoot<idl::IdGen::NextParams>();
  p.setNamespace("orders");
  p.setCount(5);
}

}  // namespace

TEST_CASE("a well-formed message passes checkFields, empty or full", "[checked]") {
  capnp::MallocMessageBuilder next;
  fillNext(next);
  CHECK(verdict<idl::IdGen::NextParams>(crafted::bytesOf(rpc::toFrame(next))) == "");

  capnp::MallocMessageBuilder stats;
  auto counters = stats.initRoot<idl::Admin::StatsResults>().initCounters(3);
  for (unsigned i = 0; i < 3; ++i) counters[i].setName("c" + std::to_string(i));
  CHECK(verdict<idl::Admin::StatsResults>(crafted::bytesOf(rpc::toFrame(stats))) == "");

  // The empty message (a method without params) reads as the default struct.
  auto empty = rpc::emptyMessage();
  CHECK_NOTHROW(rpc::checkFields(empty.any(), capnp::Schema::from<idl::IdGen::NextParams>(), "p"));
}

TEST_CASE("the 16-byte frame whose root is a list is refused by name", "[checked]") {
  auto bytes = crafted::listAsRoot();
  // Bounds alone let it through: only the read by schema finds it.
  rpc::FrameMessage m(bytes.data(), bytes.size(), kOptions);
  CHECK_THROWS_WITH(
      rpc::checkFields(m.any(), capnp::Schema::from<idl::IdGen::NextParams>(), "params"),
      Catch::StartsWith("params: ") && Catch::Contains("struct pointer"));
}

TEST_CASE("every wrong kind in a Text field names the field", "[checked]") {
  for (auto damage : {Damage::kStructPointer, Damage::kCapability, Damage::kUnterminatedText}) {
    capnp::MallocMessageBuilder m;
    fillNext(m);
    INFO(crafted::name(damage));
    auto bytes = crafted::damaged(m, 0, damage);
    CHECK_THAT(verdict<idl::IdGen::NextParams>(bytes), Catch::StartsWith("params.namespace: "));
  }
}

TEST_CASE("damage the bounds check sees is refused when the message is opened", "[checked]") {
  for (auto damage : {Damage::kFarToMissingSegment, Damage::kHugeList}) {
    capnp::MallocMessageBuilder m;
    fillNext(m);
    INFO(crafted::name(damage));
    auto bytes = crafted::damaged(m, 0, damage);
    CHECK_THROWS_AS(rpc::FrameMessage(bytes.data(), bytes.size(), kOptions), rpc::FrameError);
  }
}

TEST_CASE("a bad element deep in a list of structs is named with its index", "[checked]") {
  capnp::MallocMessageBuilder m;
  auto counters = m.initRoot<idl::Admin::StatsResults>().initCounters(3);
  for (unsigned i = 0; i < 3; ++i) counters[i].setName("counter");
  auto bytes = crafted::bytesOf(rpc::toFrame(m));
  // Counter 1's name, found through the layout: the root's list pointer, the
  // list's tag word, then (data + pointers) words per element.
  uint64_t rootPtr, listPtr;
  std::memcpy(&rootPtr, bytes.data() + 8, 8);
  size_t structAt = 2 + (static_cast<int32_t>(rootPtr & 0xffffffff) >> 2);
  size_t listPtrAt = structAt + ((rootPtr >> 32) & 0xffff);
  std::memcpy(&listPtr, bytes.data() + 8 * listPtrAt, 8);
  size_t tagAt = listPtrAt + 1 + (static_cast<int32_t>(listPtr & 0xffffffff) >> 2);
  uint64_t tag;
  std::memcpy(&tag, bytes.data() + 8 * tagAt, 8);
  size_t dataWords = (tag >> 32) & 0xffff, pointers = tag >> 48;
  size_t nameOf1 = tagAt + 1 + (dataWords + pointers) * 1 + dataWords;
  uint64_t structPtr = 0xfffffffc;  // an empty struct (offset -1) where Text belongs
  std::memcpy(bytes.data() + 8 * nameOf1, &structPtr, 8);
  CHECK_THAT(verdict<idl::Admin::StatsResults>(bytes),
             Catch::StartsWith("params.counters[1].name: "));
}

TEST_CASE("a list where a list of structs belongs, and nesting past the limit", "[checked]") {
  capnp::MallocMessageBuilder m;
  m.initRoot<idl::Admin::StatsResults>().initCounters(1)[0].setName("x");
  CHECK_THAT(verdict<idl::Admin::StatsResults>(crafted::damaged(m, 0, Damage::kStructPointer)),
             Catch::StartsWith("params.counters: "));
  // 100 levels of lists: within bounds, past the nesting limit of 64.
  auto deep = crafted::deepNesting(100);
  CHECK_THROWS_AS(rpc::FrameMessage(deep.data(), deep.size(), kOptions), rpc::FrameError);
}

TEST_CASE("only the active union member is read", "[checked]") {
  capnp::MallocMessageBuilder m;
  auto reserve = m.initRoot<idl::IdGenLogRecord>().initReserve();
  reserve.setNamespace("orders");
  reserve.setLimit(10);
  CHECK(verdict<idl::IdGenLogRecord>(crafted::bytesOf(rpc::toFrame(m))) == "");
  CHECK_THAT(verdict<idl::IdGenLogRecord>(crafted::damaged(m, 0, Damage::kStructPointer)),
             Catch::StartsWith("params.reserve.namespace: "));
  // The same pointer under another member holds nothing to read.
  capnp::MallocMessageBuilder bound;
  bound.initRoot<idl::IdGenLogRecord>().setTimeBound(5);
  CHECK(verdict<idl::IdGenLogRecord>(crafted::bytesOf(rpc::toFrame(bound))) == "");
}

TEST_CASE("a header with any field of the wrong kind is refused whole", "[checked][wire]") {
  // RpcHeader's pointers: traceId, idempotencyKey, message.
  for (unsigned index = 0; index < 3; ++index) {
    for (auto damage : {Damage::kStructPointer, Damage::kCapability, Damage::kUnterminatedText}) {
      capnp::MallocMessageBuilder m;
      auto h = m.initRoot<idl::RpcHeader>();
      h.setRequestId(7);
      h.setTraceId("trace");
      h.setIdempotencyKey("key");
      h.setMessage("message");
      INFO("pointer " << index << ": " << crafted::name(damage));
      auto frame = crafted::frame(crafted::damaged(m, index, damage));
      CHECK_THROWS_WITH(rpc::wire::HeaderFrame(frame), Catch::StartsWith("malformed header"));
    }
  }
  auto root = crafted::frame(crafted::listAsRoot());
  CHECK_THROWS_AS(rpc::wire::HeaderFrame(root), rpc::FrameError);
}

TEST_CASE("a message whose pointers share a target is refused when opened", "[checked]") {
  // Two Text fields aimed at one long text: every read of the message would
  // cost twice its size, so a reader's budget could run out after the checks.
  capnp::MallocMessageBuilder m;
  auto info = m.initRoot<idl::Admin::InfoResults>();
  info.setService(std::string(400, 's'));
  info.setVersion("1");
  auto bytes = crafted::aliased(m, 0, 1);
  CHECK_THROWS_WITH(rpc::FrameMessage(bytes.data(), bytes.size(), kOptions),
                    Catch::Contains("pointers share their targets"));
  // The same message unaliased opens and checks.
  CHECK(verdict<idl::Admin::InfoResults>(crafted::bytesOf(rpc::toFrame(m))) == "");
}
