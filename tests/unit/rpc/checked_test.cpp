// rpc::checkFields and the header reader against messages built to be almost
// right: every wrong-kind case, at the root, in a field, in a list element, in
// a union member, and in the RPC header itself.
#include <capnp/dynamic.h>
#include <capnp/message.h>
#include <capnp/schema.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "checkshapes.capnp.h"
#include "crafted.h"
#include "testsvc.capnp.h"
#include "wire.h"
#include "zmesh/idl/admin.capnp.h"
#include "zmesh/idl/cache.capnp.h"
#include "zmesh/idl/common.capnp.h"
#include "zmesh/idl/idgen.capnp.h"
#include "zmesh/idl/lock.capnp.h"
#include "zmesh/idl/ratelimit.capnp.h"
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
  auto counters = stats.initRoot<idl::Admin::StatsResults>().initFamilies(3);
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
  auto counters = m.initRoot<idl::Admin::StatsResults>().initFamilies(3);
  for (unsigned i = 0; i < 3; ++i) counters[i].setName("counter");
  auto bytes = crafted::bytesOf(rpc::toFrame(m));
  // Family 1's name, found through the layout: the root's second pointer
  // (families; the first is the retired counters), the list's tag word, then
  // (data + pointers) words per element.
  uint64_t rootPtr, listPtr;
  std::memcpy(&rootPtr, bytes.data() + 8, 8);
  size_t structAt = 2 + (static_cast<int32_t>(rootPtr & 0xffffffff) >> 2);
  size_t listPtrAt = structAt + ((rootPtr >> 32) & 0xffff) + 1;
  std::memcpy(&listPtr, bytes.data() + 8 * listPtrAt, 8);
  size_t tagAt = listPtrAt + 1 + (static_cast<int32_t>(listPtr & 0xffffffff) >> 2);
  uint64_t tag;
  std::memcpy(&tag, bytes.data() + 8 * tagAt, 8);
  size_t dataWords = (tag >> 32) & 0xffff, pointers = tag >> 48;
  size_t nameOf1 = tagAt + 1 + (dataWords + pointers) * 1 + dataWords;
  uint64_t structPtr = 0xfffffffc;  // an empty struct (offset -1) where Text belongs
  std::memcpy(bytes.data() + 8 * nameOf1, &structPtr, 8);
  CHECK_THAT(verdict<idl::Admin::StatsResults>(bytes),
             Catch::StartsWith("params.families[1].name: "));
}

TEST_CASE("a list where a list of structs belongs, and nesting past the limit", "[checked]") {
  capnp::MallocMessageBuilder m;
  m.initRoot<idl::Admin::StatsResults>().initFamilies(1)[0].setName("x");
  CHECK_THAT(verdict<idl::Admin::StatsResults>(crafted::damaged(m, 1, Damage::kStructPointer)),
             Catch::StartsWith("params.families: "));
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

// ---------------------------------------------------------------------------
// The compiled plans against the Dynamic API. checkFields() decides with a plan
// and words a refusal with the dynamic reads; these hold the plan to the same
// verdict as the dynamic reads on every message, and checkFields() to the same
// words, for every wire struct and for test.Shapes (every shape of field).

namespace {

using Rng = std::mt19937_64;  // its output is fixed by the standard: runs repeat

// A random well-formed value for every field, `depth` levels of structs and lists at most.
class Filler {
 public:
  explicit Filler(Rng& rng) : rng_(rng) {}

  void fill(capnp::DynamicStruct::Builder b, unsigned depth) {
    auto schema = b.getSchema();
    for (auto field : schema.getNonUnionFields())
      if (rng_() % 5 != 0) fillField(b, field, depth);  // some left null
    auto members = schema.getUnionFields();
    if (members.size() > 0) fillField(b, members[rng_() % members.size()], depth);
  }

 private:
  std::string text() { return std::string(rng_() % 12, static_cast<char>('a' + rng_() % 26)); }

  void fillField(capnp::DynamicStruct::Builder b, capnp::StructSchema::Field field,
                 unsigned depth) {
    if (field.getProto().isGroup()) {
      fill(b.init(field).as<capnp::DynamicStruct>(), depth);
      return;
    }
    auto type = field.getType();
    switch (type.which()) {
      case capnp::schema::Type::TEXT:
        b.set(field, capnp::Text::Reader(text()));
        break;
      case capnp::schema::Type::DATA: {
        auto s = text();
        b.set(field, capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(s.data()), s.size()));
        break;
      }
      case capnp::schema::Type::STRUCT:
        if (depth > 0) fill(b.init(field).as<capnp::DynamicStruct>(), depth - 1);
        break;
      case capnp::schema::Type::LIST:
        if (depth > 0) fillList(b.init(field, rng_() % 4).as<capnp::DynamicList>(), depth - 1);
        break;
      case capnp::schema::Type::VOID:
        b.set(field, capnp::VOID);
        break;
      case capnp::schema::Type::BOOL:
        b.set(field, rng_() % 2 == 0);
        break;
      case capnp::schema::Type::ENUM:
        b.set(field, capnp::DynamicEnum(type.asEnum(), 0));
        break;
      case capnp::schema::Type::FLOAT32:
      case capnp::schema::Type::FLOAT64:
        b.set(field, 0.5);
        break;
      case capnp::schema::Type::ANY_POINTER:
        if (rng_() % 2 == 0) b.get(field).as<capnp::AnyPointer>().setAs<capnp::Text>(text());
        break;
      case capnp::schema::Type::INTERFACE:
        break;  // no capabilities in zmesh messages
      default:  // the integers
        b.set(field, static_cast<uint64_t>(rng_() % 100));
        break;
    }
  }

  void fillList(capnp::DynamicList::Builder list, unsigned depth) {
    auto element = list.getSchema().getElementType();
    for (unsigned i = 0; i < list.size(); ++i) {
      switch (element.which()) {
        case capnp::schema::Type::TEXT:
          list.set(i, capnp::Text::Reader(text()));
          break;
        case capnp::schema::Type::DATA: {
          auto s = text();
          list.set(i,
                   capnp::Data::Reader(reinterpret_cast<const capnp::byte*>(s.data()), s.size()));
          break;
        }
        case capnp::schema::Type::STRUCT:
          fill(list[i].as<capnp::DynamicStruct>(), depth);
          break;
        case capnp::schema::Type::LIST:
          fillList(list.init(i, rng_() % 3).as<capnp::DynamicList>(), depth > 0 ? depth - 1 : 0);
          break;
        case capnp::schema::Type::VOID:
          list.set(i, capnp::VOID);
          break;
        case capnp::schema::Type::BOOL:
          list.set(i, rng_() % 2 == 0);
          break;
        case capnp::schema::Type::ENUM:
          list.set(i, capnp::DynamicEnum(element.asEnum(), 1));
          break;
        case capnp::schema::Type::FLOAT32:
        case capnp::schema::Type::FLOAT64:
          list.set(i, 1.5);
          break;
        case capnp::schema::Type::ANY_POINTER:
        case capnp::schema::Type::INTERFACE:
          break;
        default:
          list.set(i, static_cast<uint64_t>(rng_() % 100));
          break;
      }
    }
  }

  Rng& rng_;
};

// 1 to 3 changes to the words after the segment table, aimed at pointers:
// their kind, offset, sizes, an element size, a NUL, a whole word moved.
void mutate(crafted::Bytes& bytes, Rng& rng) {
  size_t tableWords = 1;  // a single segment: (count - 1, size) is one word
  size_t words = bytes.size() / 8;
  if (words <= tableWords) return;
  for (unsigned n = 1 + rng() % 3; n > 0; --n) {
    size_t at = 8 * (tableWords + rng() % (words - tableWords));
    uint64_t word;
    std::memcpy(&word, bytes.data() + at, 8);
    switch (rng() % 8) {
      case 0:  // one bit anywhere
        word ^= uint64_t{1} << (rng() % 64);
        break;
      case 1:  // the pointer kind
        word = (word & ~uint64_t{3}) | (rng() % 4);
        break;
      case 2:  // a list's element size
        word = (word & ~(uint64_t{7} << 32)) | ((rng() % 8) << 32);
        break;
      case 3:  // a struct's data and pointer counts
        word = (word & 0xffffffff) | ((rng() % 4) << 32) | ((rng() % 4) << 48);
        break;
      case 4:  // nothing there
        word = 0;
        break;
      case 5: {  // another word's value (a pointer where another belongs)
        size_t from = 8 * (tableWords + rng() % (words - tableWords));
        std::memcpy(&word, bytes.data() + from, 8);
        break;
      }
      case 6:  // a byte made non-zero (a Text's NUL, a discriminant)
        reinterpret_cast<uint8_t*>(&word)[rng() % 8] = static_cast<uint8_t>(1 + rng() % 255);
        break;
      default:  // a small offset change
        word += (rng() % 5) << 2;
        break;
    }
    std::memcpy(bytes.data() + at, &word, 8);
  }
}

// The plan's verdict, the dynamic reads' words and checkFields()'s words for
// `bytes`, each on a message of its own (reads count against the message's
// traversal budget). False when the bytes do not open.
struct Verdicts {
  bool fast = false;
  std::string dynamic, combined;
};
bool judge(const crafted::Bytes& bytes, capnp::StructSchema schema, Verdicts& v) {
  auto options = rpc::readerOptionsFor(bytes.size());
  try {
    rpc::FrameMessage a(bytes.data(), bytes.size(), options);
    v.fast = rpc::checkFieldsFast(a.any(), schema);
  } catch (const rpc::FrameError&) {
    return false;
  }
  rpc::FrameMessage b(bytes.data(), bytes.size(), options);
  try {
    rpc::checkFieldsDynamic(b.any(), schema, "params");
    v.dynamic.clear();
  } catch (const rpc::FrameError& e) {
    v.dynamic = e.what();
  }
  rpc::FrameMessage c(bytes.data(), bytes.size(), options);
  try {
    rpc::checkFields(c.any(), schema, "params");
    v.combined.clear();
  } catch (const rpc::FrameError& e) {
    v.combined = e.what();
  }
  return true;
}

}  // namespace

TEST_CASE("compiled plans give the dynamic reads' verdicts on mutated messages", "[checked]") {
  Rng rng(20261205);
  size_t tried = 0, opened = 0, refused = 0, mismatches = 0;
  std::string firstMismatch;
  const auto& schemas = crafted::wireStructs();
  for (auto schema : schemas) {
    for (unsigned base = 0; base < 12; ++base) {
      capnp::MallocMessageBuilder m;
      Filler(rng).fill(m.initRoot<capnp::DynamicStruct>(schema), 3);
      auto good = crafted::bytesOf(rpc::toFrame(m));
      for (unsigned k = 0; k < 120; ++k) {
        auto bytes = good;
        if (k > 0) mutate(bytes, rng);  // the first: well-formed, must pass
        ++tried;
        Verdicts v;
        if (!judge(bytes, schema, v)) continue;
        ++opened;
        if (!v.dynamic.empty()) ++refused;
        if (k == 0 && !v.dynamic.empty()) {
          ++mismatches;
          if (firstMismatch.empty())
            firstMismatch = std::string(schema.getProto().getDisplayName().cStr()) +
                            ": well-formed message refused: " + v.dynamic;
        }
        if (v.fast != v.dynamic.empty() || v.combined != v.dynamic) {
          ++mismatches;
          if (firstMismatch.empty())
            firstMismatch = std::string(schema.getProto().getDisplayName().cStr()) + ": fast " +
                            (v.fast ? "passed" : "refused") + ", dynamic \"" + v.dynamic +
                            "\", checkFields \"" + v.combined + "\"";
        }
      }
    }
  }
  INFO(tried << " messages, " << opened << " opened, " << refused << " refused by the checks");
  INFO(firstMismatch);
  CHECK(mismatches == 0);
  // Enough of them reach the checks, both ways, to mean something.
  CHECK(refused > opened / 20);
  CHECK(opened - refused > opened / 4);
  WARN(tried << " messages over " << schemas.size() << " schemas: " << opened << " opened, "
             << refused << " refused by the field checks");
}

TEST_CASE("a bad pointer under an inactive union member is ignored by both", "[checked]") {
  auto schema = capnp::Schema::from<test::Shapes>();
  auto pointerOf = [&](capnp::StructSchema s, const char* name) {
    return s.getFieldByName(name).getProto().getSlot().getOffset();
  };
  auto expect = [&](const crafted::Bytes& bytes, const std::string& refusal) {
    Verdicts v;
    REQUIRE(judge(bytes, schema, v));
    CHECK(v.fast == refusal.empty());
    CHECK_THAT(v.dynamic, Catch::StartsWith(refusal));
    CHECK(v.combined == v.dynamic);
  };
  // The word left under `none`, then under `word` again.
  for (bool active : {false, true}) {
    capnp::MallocMessageBuilder m;
    auto s = m.initRoot<test::Shapes>();
    s.setWord("word");
    if (!active) s.setNone();  // selects another member; the pointer stays
    expect(crafted::damaged(m, pointerOf(schema, "word"), Damage::kStructPointer),
           active ? "params.word: " : "");
  }
  // A union inside a group inside a union: pair.on left under pair.off.
  auto pair = schema.getFieldByName("pair").getType().asStruct();
  for (bool active : {false, true}) {
    capnp::MallocMessageBuilder m;
    auto p = m.initRoot<test::Shapes>().initPair();
    p.setOn(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>("on"), 2));
    if (!active) p.setOff();
    expect(crafted::damaged(m, pointerOf(pair, "on"), Damage::kStructPointer),
           active ? "params.pair.on: " : "");
  }
  // The outer union elsewhere: nothing under pair is read at all.
  capnp::MallocMessageBuilder m;
  auto s = m.initRoot<test::Shapes>();
  s.initPair().setLeft("left");
  s.setNone();
  expect(crafted::damaged(m, pointerOf(pair, "left"), Damage::kStructPointer), "");
}

TEST_CASE("recursion, lists of lists and defaults read by plan as by schema", "[checked]") {
  auto schema = capnp::Schema::from<test::Shapes>();
  capnp::MallocMessageBuilder m;
  auto s = m.initRoot<test::Shapes>();
  auto kids = s.initKids(2);
  kids[1].initSelf().initSelf().setText("deep");
  auto deeper = kids[0].initDeeper(1);
  deeper.init(0, 1).init(0, 2)[1].setName("leaf");
  auto nested = s.initNested(2);
  nested.init(1, 1).set(0, "x");
  Verdicts v;
  REQUIRE(judge(crafted::bytesOf(rpc::toFrame(m)), schema, v));
  CHECK(v.fast);
  CHECK(v.dynamic == "");
  // A null pointer reads its default, which is well-formed: nothing to refuse.
  capnp::MallocMessageBuilder empty;
  empty.initRoot<test::Shapes>();
  REQUIRE(judge(crafted::bytesOf(rpc::toFrame(empty)), schema, v));
  CHECK(v.fast);
  // The plan is built once and shared; a recursive schema's plan refers to itself.
  CHECK(&rpc::checkPlanFor(schema) == &rpc::checkPlanFor(schema));
  rpc::FrameMessage ok(crafted::bytesOf(rpc::toFrame(m)).data(),
                       crafted::bytesOf(rpc::toFrame(m)).size(), kOptions);
  CHECK_NOTHROW(rpc::checkFields(ok.any(), rpc::checkPlanFor(schema), schema, "params"));
}

TEST_CASE("a refusal after a long list of empty structs is worded as the dynamic reads word it",
          "[checked]") {
  // A List(Leaf) of n zero-size elements charges n words of the traversal
  // budget on each read. checkFields reads the message once: the field it
  // names is the one the dynamic reads name (nested), not the list whose
  // second read would run out of budget.
  auto schema = capnp::Schema::from<test::Shapes>();
  for (unsigned n : {100u, 700u, 1100u}) {
    capnp::MallocMessageBuilder m;
    auto s = m.initRoot<test::Shapes>();
    s.initLeaves(1);
    s.initNested(1);
    auto pointerOf = [&](const char* name) {
      return schema.getFieldByName(name).getProto().getSlot().getOffset();
    };
    auto bytes = crafted::damaged(m, pointerOf("nested"), Damage::kStructPointer);
    uint64_t rootPtr, listPtr;
    std::memcpy(&rootPtr, bytes.data() + 8, 8);
    size_t structAt = 2 + (static_cast<int32_t>(rootPtr & 0xffffffff) >> 2);
    size_t listPtrAt = structAt + ((rootPtr >> 32) & 0xffff) + pointerOf("leaves");
    std::memcpy(&listPtr, bytes.data() + 8 * listPtrAt, 8);
    size_t tagAt = listPtrAt + 1 + (static_cast<int32_t>(listPtr & 0xffffffff) >> 2);
    listPtr &= 0x7ffffffff;  // no words of elements
    std::memcpy(bytes.data() + 8 * listPtrAt, &listPtr, 8);
    uint64_t tag = uint64_t{n} << 2;  // n elements of 0 data words, 0 pointers
    std::memcpy(bytes.data() + 8 * tagAt, &tag, 8);
    INFO(n << " elements");
    Verdicts v;
    REQUIRE(judge(bytes, schema, v));
    CHECK_FALSE(v.fast);
    CHECK_THAT(v.dynamic, Catch::StartsWith("params.nested: "));
    CHECK(v.combined == v.dynamic);
  }
}
