// rpc/frame and rpc/src/wire: untrusted frames in, capnp messages out, and back.
#include "zmesh/rpc/frame.h"

#include <capnp/any.h>
#include <capnp/dynamic.h>
#include <capnp/message.h>
#include <capnp/schema.h>
#include <capnp/serialize.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "wire.h"
#include "zmesh/idl/common.capnp.h"

using namespace zmesh;

CATCH_TRANSLATE_EXCEPTION(const kj::Exception& e) { return e.getDescription().cStr(); }

namespace {

zmq::message_t frameOf(const void* data, size_t size) { return zmq::message_t(data, size); }

std::vector<uint8_t> bytesOf(const zmq::message_t& m) {
  auto* p = static_cast<const uint8_t*>(m.data());
  return std::vector<uint8_t>(p, p + m.size());
}

// A message with some of everything: data, text, a nested struct (body) and a list.
void buildEvent(capnp::MessageBuilder& m, size_t padBytes = 0) {
  auto e = m.initRoot<idl::Event>();
  e.setPublisher("testsvc@tcp://127.0.0.1:7777");
  e.setIncarnation(0x0123456789abcdefULL);
  e.setSequence(42);
  e.setWallTimeMs(-5);
  e.setTopic("test.topic");
  e.setBodyType(7);
  auto state = e.getBody().initAs<idl::ServiceState>();
  state.setService("svc");
  state.setEndpoint("tcp://127.0.0.1:1");
  state.setPid(1234);
  state.setRestarts(3);
  state.setReason(std::string(padBytes, 'r'));
}

void checkEvent(idl::Event::Reader e, size_t padBytes = 0) {
  CHECK(std::string(e.getPublisher().cStr()) == "testsvc@tcp://127.0.0.1:7777");
  CHECK(e.getIncarnation() == 0x0123456789abcdefULL);
  CHECK(e.getSequence() == 42);
  CHECK(e.getWallTimeMs() == -5);
  CHECK(std::string(e.getTopic().cStr()) == "test.topic");
  CHECK(e.getBodyType() == 7);
  auto state = e.getBody().getAs<idl::ServiceState>();
  CHECK(std::string(state.getService().cStr()) == "svc");
  CHECK(std::string(state.getEndpoint().cStr()) == "tcp://127.0.0.1:1");
  CHECK(state.getPid() == 1234);
  CHECK(state.getRestarts() == 3);
  CHECK(state.getReason().size() == padBytes);
}

zmq::message_t eventFrame(size_t padBytes = 0) {
  capnp::MallocMessageBuilder m;
  buildEvent(m, padBytes);
  return rpc::toFrame(m);
}

// A chain of structs, each the only pointer of the one before: `depth` levels of nesting.
zmq::message_t nestedFrame(int depth) {
  capnp::MallocMessageBuilder m;
  auto s = m.initRoot<capnp::AnyPointer>().initAsAnyStruct(0, 1);
  for (int i = 1; i < depth; ++i) s = s.getPointerSection()[0].initAsAnyStruct(0, 1);
  return rpc::toFrame(m);
}

const capnp::ReaderOptions kOptions = rpc::readerOptionsFor(1 << 20);

}  // namespace

// ---- framing checks ----

TEST_CASE("frames that are not a whole number of words are rejected", "[frame]") {
  auto valid = eventFrame();
  REQUIRE(valid.size() % 8 == 0);
  for (size_t size : {1, 2, 3, 4, 5, 6, 7, 9, 12, 15, 17, 23}) {
    std::vector<uint8_t> bytes(size, 0);
    INFO("size " << size);
    CHECK_THROWS_AS(rpc::readFrame(frameOf(bytes.data(), size), kOptions), rpc::FrameError);
    CHECK_THROWS_WITH(rpc::FrameMessage(bytes.data(), size, kOptions),
                      Catch::Contains("not a whole number of words"));
  }
  // A valid message with one byte more or less is no longer a valid frame either.
  std::vector<uint8_t> longer = bytesOf(valid);
  longer.push_back(0);
  CHECK_THROWS_AS(rpc::readFrame(frameOf(longer.data(), longer.size()), kOptions), rpc::FrameError);
  CHECK_THROWS_AS(rpc::readFrame(frameOf(valid.data(), valid.size() - 1), kOptions),
                  rpc::FrameError);
}

TEST_CASE("an empty frame reads as a null root", "[frame]") {
  auto m = rpc::readFrame(zmq::message_t(), kOptions);
  CHECK(m.any().isNull());
  // A struct read from it has every field at its default.
  auto h = m.root<idl::RpcHeader>();
  CHECK(h.getRequestId() == 0);
  CHECK(h.getStatus() == idl::StatusCode::OK);
  CHECK_FALSE(h.hasMessage());

  auto e = rpc::emptyMessage();
  CHECK(e.any().isNull());
  CHECK(e.sizeInWords() == 2);  // segment table + null root pointer

  // Zero bytes handed to FrameMessage directly is not a message: only readFrame
  // gives the empty frame its meaning.
  CHECK_THROWS_AS(rpc::FrameMessage(nullptr, 0, kOptions), rpc::FrameError);
}

TEST_CASE("a message with bytes after its end is rejected", "[frame]") {
  auto valid = eventFrame();
  for (size_t extraWords : {1, 2, 7}) {
    auto bytes = bytesOf(valid);
    bytes.resize(bytes.size() + extraWords * 8, 0);
    INFO(extraWords << " extra words");
    CHECK_THROWS_WITH(rpc::readFrame(frameOf(bytes.data(), bytes.size()), kOptions),
                      Catch::Contains("after the end"));
  }
  // Two valid messages back to back are not one message.
  auto twice = bytesOf(valid);
  auto again = bytesOf(valid);
  twice.insert(twice.end(), again.begin(), again.end());
  CHECK_THROWS_AS(rpc::readFrame(frameOf(twice.data(), twice.size()), kOptions), rpc::FrameError);
}

TEST_CASE("a truncated message is rejected at every length", "[frame]") {
  SECTION("single segment") {
    auto valid = eventFrame(40);
    auto bytes = bytesOf(valid);
    for (size_t n = 1; n < bytes.size(); ++n) {
      INFO("truncated to " << n << " of " << bytes.size() << " bytes");
      CHECK_THROWS_AS(rpc::readFrame(frameOf(bytes.data(), n), kOptions), rpc::FrameError);
    }
  }
  SECTION("many segments") {
    capnp::MallocMessageBuilder m(1, capnp::AllocationStrategy::FIXED_SIZE);
    buildEvent(m, 40);
    REQUIRE(m.getSegmentsForOutput().size() > 2);
    auto bytes = bytesOf(rpc::toFrame(m));
    for (size_t n = 1; n < bytes.size(); ++n) {
      INFO("truncated to " << n << " of " << bytes.size() << " bytes");
      CHECK_THROWS_AS(rpc::readFrame(frameOf(bytes.data(), n), kOptions), rpc::FrameError);
    }
  }
}

TEST_CASE("garbage bytes are rejected, never crash", "[frame]") {
  SECTION("all ones: an absurd segment count") {
    for (size_t words : {1, 2, 8, 64}) {
      std::vector<uint8_t> bytes(words * 8, 0xff);
      CHECK_THROWS_AS(rpc::readFrame(frameOf(bytes.data(), bytes.size()), kOptions),
                      rpc::FrameError);
    }
  }
  SECTION("a segment table claiming more than the frame holds") {
    uint32_t table[4] = {0, 1000, 0, 0};  // one segment of 1000 words, 1 present
    CHECK_THROWS_AS(rpc::readFrame(frameOf(table, sizeof(table)), kOptions), rpc::FrameError);
    uint32_t many[4] = {1000, 1, 0, 0};  // 1001 segments
    CHECK_THROWS_AS(rpc::readFrame(frameOf(many, sizeof(many)), kOptions), rpc::FrameError);
  }
  SECTION("a root pointer out of bounds") {
    // One segment of one word: a struct pointer 100 words ahead, one data word.
    uint64_t words[2];
    uint32_t table[2] = {0, 1};
    std::memcpy(&words[0], table, 8);
    words[1] = (uint64_t{100} << 2) | (uint64_t{1} << 32);
    CHECK_THROWS_WITH(rpc::readFrame(frameOf(words, sizeof(words)), kOptions),
                      Catch::Contains("malformed message"));
  }
  SECTION("a far pointer into a segment that does not exist") {
    uint64_t words[2];
    uint32_t table[2] = {0, 1};
    std::memcpy(&words[0], table, 8);
    words[1] = 2 | (uint64_t{5} << 32);  // far pointer, segment 5
    CHECK_THROWS_AS(rpc::readFrame(frameOf(words, sizeof(words)), kOptions), rpc::FrameError);
  }
  SECTION("random bytes, with and without a plausible segment table") {
    std::mt19937_64 rng(20240601);
    int rejected = 0, accepted = 0;
    for (int i = 0; i < 20000; ++i) {
      size_t words = 1 + rng() % 32;
      std::vector<uint64_t> buf(words);
      for (auto& w : buf) w = rng();
      if (i % 2 == 0) {
        // A correct table for one segment of the rest: only the pointers are garbage.
        uint32_t table[2] = {0, static_cast<uint32_t>(words - 1)};
        std::memcpy(&buf[0], table, 8);
      }
      try {
        auto m = rpc::readFrame(frameOf(buf.data(), buf.size() * 8), kOptions);
        // Accepted: then the whole message can be read again within bounds.
        m.any().targetSize();
        ++accepted;
      } catch (const rpc::FrameError&) {
        ++rejected;
      }
    }
    CHECK(rejected > 10000);
    CHECK(rejected + accepted == 20000);
  }
}

TEST_CASE("a message beyond the traversal limit is rejected", "[frame]") {
  auto options = rpc::readerOptionsFor(1024);
  SECTION("a large message") {
    auto big = eventFrame(64 * 1024);
    CHECK_THROWS_WITH(rpc::readFrame(big, options), Catch::Contains("traversal limit"));
    // The same message is fine under a limit sized for it.
    auto m = rpc::readFrame(big, rpc::readerOptionsFor(128 * 1024));
    checkEvent(m.root<idl::Event>(), 64 * 1024);
  }
  SECTION("a message of the size the options were made for: the check plus one full read") {
    size_t pad = 1024;
    while (eventFrame(pad).size() > 1024) pad -= 8;
    auto frame = eventFrame(pad);
    CHECK(frame.size() == 1024);
    auto m = rpc::readFrame(frame, options);
    checkEvent(m.root<idl::Event>(), pad);
    CHECK_NOTHROW(m.any().targetSize());
  }
  SECTION("a tiny frame claiming a huge list of empty structs") {
    // The eager check does not count zero-sized elements (capnp's totalSize), but
    // the first real read of the list charges them against the same budget.
    capnp::MallocMessageBuilder b;
    b.initRoot<capnp::AnyPointer>().initAsListOfAnyStruct(0, 0, 1 << 20);
    auto frame = rpc::toFrame(b);
    CHECK(frame.size() == 24);
    auto m = rpc::readFrame(frame, options);
    CHECK_THROWS_WITH(m.any().getAs<capnp::AnyList>(), Catch::Contains("traversal limit"));
  }
  SECTION("readerOptionsFor grows with the size") {
    CHECK(rpc::readerOptionsFor(1 << 20).traversalLimitInWords >
          rpc::readerOptionsFor(1024).traversalLimitInWords);
    CHECK(rpc::readerOptionsFor(8 * 1000).traversalLimitInWords >= 2 * 1000);
    CHECK(rpc::readerOptionsFor(0).traversalLimitInWords > 0);  // an empty struct is still readable
  }
}

TEST_CASE("nesting deeper than the limit is rejected", "[frame]") {
  CHECK(kOptions.nestingLimit == 64);
  CHECK_NOTHROW(rpc::readFrame(nestedFrame(10), kOptions));
  CHECK_NOTHROW(rpc::readFrame(nestedFrame(64), kOptions));
  CHECK_THROWS_WITH(rpc::readFrame(nestedFrame(65), kOptions),
                    Catch::Contains("too deeply-nested"));
  CHECK_THROWS_AS(rpc::readFrame(nestedFrame(1000), kOptions), rpc::FrameError);

  capnp::ReaderOptions tight = kOptions;
  tight.nestingLimit = 8;
  CHECK_NOTHROW(rpc::readFrame(nestedFrame(8), tight));
  CHECK_THROWS_AS(rpc::readFrame(nestedFrame(9), tight), rpc::FrameError);
}

// ---- round trips ----

TEST_CASE("toFrame and readFrame round trip", "[frame]") {
  SECTION("one segment") {
    capnp::MallocMessageBuilder m;
    buildEvent(m, 100);
    REQUIRE(m.getSegmentsForOutput().size() == 1);
    auto frame = rpc::toFrame(m);
    // Byte for byte what capnp's own serialisation writes.
    auto flat = capnp::messageToFlatArray(m);
    REQUIRE(frame.size() == flat.asBytes().size());
    CHECK(std::memcmp(frame.data(), flat.asBytes().begin(), frame.size()) == 0);
    auto r = rpc::readFrame(frame, kOptions);
    checkEvent(r.root<idl::Event>(), 100);
    CHECK(r.sizeInWords() * 8 == frame.size());
  }
  SECTION("many segments, odd and even counts") {
    std::set<size_t> parities;
    for (uint firstWords : {1u, 2u, 3u, 5u}) {
      for (uint texts = 0; texts < 6; ++texts) {
        capnp::MallocMessageBuilder m(firstWords, capnp::AllocationStrategy::FIXED_SIZE);
        buildEvent(m, 8 * texts);
        // More objects, more segments: each one that does not fit starts a new one.
        auto list = m.getRoot<idl::Event>().getBody().initAs<capnp::List<capnp::Text>>(texts);
        for (uint i = 0; i < texts; ++i) list.set(i, std::string(i * 9 + 1, 'a' + i));
        size_t segments = m.getSegmentsForOutput().size();
        REQUIRE(segments > 1);
        parities.insert(segments % 2);
        INFO(segments << " segments");
        auto frame = rpc::toFrame(m);
        auto flat = capnp::messageToFlatArray(m);
        REQUIRE(frame.size() == flat.asBytes().size());
        CHECK(std::memcmp(frame.data(), flat.asBytes().begin(), frame.size()) == 0);
        auto r = rpc::readFrame(frame, kOptions);
        auto e = r.root<idl::Event>();
        CHECK(std::string(e.getPublisher().cStr()) == "testsvc@tcp://127.0.0.1:7777");
        CHECK(e.getSequence() == 42);
        auto got = e.getBody().getAs<capnp::List<capnp::Text>>();
        REQUIRE(got.size() == texts);
        for (uint i = 0; i < texts; ++i)
          CHECK(std::string(got[i].cStr()) == std::string(i * 9 + 1, 'a' + i));
      }
    }
    CHECK(parities.size() == 2);  // both paddings of the segment table were exercised
  }
  SECTION("a null root") {
    capnp::MallocMessageBuilder m;
    m.getRoot<capnp::AnyPointer>();
    auto frame = rpc::toFrame(m);
    CHECK(frame.size() == 16);
    CHECK(rpc::readFrame(frame, kOptions).any().isNull());
  }
  SECTION("from a misaligned buffer") {
    auto frame = eventFrame(33);
    std::vector<uint8_t> buf(frame.size() + 8);
    for (size_t offset : {1, 3, 4, 7}) {
      std::memcpy(buf.data() + offset, frame.data(), frame.size());
      rpc::FrameMessage m(buf.data() + offset, frame.size(), kOptions);
      checkEvent(m.root<idl::Event>(), 33);
    }
  }
  SECTION("the message owns its bytes") {
    std::optional<rpc::FrameMessage> m;
    {
      auto frame = eventFrame(5);
      m.emplace(rpc::readFrame(frame, kOptions));
      std::memset(frame.data(), 0xee, frame.size());
    }
    checkEvent(m->root<idl::Event>(), 5);
  }
}

// ---- headers (rpc/src/wire.h) ----

TEST_CASE("request header round trip", "[wire]") {
  // Views into a larger buffer: not NUL-terminated where they end.
  std::string backing = "trace-abc|idem-key-123|rest";
  rpc::wire::RequestHeader h;
  h.requestId = 0xfedcba9876543210ULL;
  h.interfaceId = 0x87c0371d044ac400ULL;
  h.methodId = 65535;
  h.budgetMs = 4'000'000'000u;
  h.retryable = true;
  h.traceId = std::string_view(backing).substr(0, 9);
  h.idempotencyKey = std::string_view(backing).substr(10, 12);
  auto frame = rpc::wire::encodeRequest(h, zmq::message_t());
  REQUIRE(frame.size() <= rpc::wire::kMaxHeaderBytes);
  auto m = rpc::readFrame(frame, rpc::readerOptionsFor(rpc::wire::kMaxHeaderBytes));
  auto r = m.root<idl::RpcHeader>();
  CHECK(r.getRequestId() == h.requestId);
  CHECK(r.getInterfaceId() == h.interfaceId);
  CHECK(r.getMethodId() == 65535);
  CHECK(r.getBudgetMs() == 4'000'000'000u);
  CHECK(r.getRetryable());
  CHECK(std::string(r.getTraceId().cStr()) == "trace-abc");
  CHECK(std::string(r.getIdempotencyKey().cStr()) == "idem-key-123");
  CHECK(r.getStatus() == idl::StatusCode::OK);
  CHECK_FALSE(r.hasMessage());

  SECTION("optional text left out") {
    rpc::wire::RequestHeader plain;
    plain.requestId = 1;
    auto p = rpc::readFrame(rpc::wire::encodeRequest(plain, zmq::message_t()), kOptions);
    auto pr = p.root<idl::RpcHeader>();
    CHECK(pr.getRequestId() == 1);
    CHECK_FALSE(pr.getRetryable());
    CHECK_FALSE(pr.hasTraceId());
    CHECK_FALSE(pr.hasIdempotencyKey());
    CHECK(pr.getBudgetMs() == 0);
  }
}

// The header's bytes, then the body's: what a peer written without our code
// would send and read (capnp's flat framing, back to back).
std::vector<uint8_t> concat(const zmq::message_t& a, const zmq::message_t& b) {
  auto out = bytesOf(a);
  auto tail = bytesOf(b);
  out.insert(out.end(), tail.begin(), tail.end());
  return out;
}

TEST_CASE("a request is one frame: the header, then the params", "[wire]") {
  rpc::wire::RequestHeader h;
  h.requestId = 42;
  h.interfaceId = 7;
  h.traceId = "trace";
  auto headerOnly = rpc::wire::encodeRequest(h, zmq::message_t());
  for (size_t pad : {0, 1, 100, 5000}) {
    auto params = eventFrame(pad);
    auto frame = rpc::wire::encodeRequest(h, params);
    CHECK(bytesOf(frame) == concat(headerOnly, params));
    rpc::wire::HeaderFrame header(frame);
    CHECK(header.get().requestId == 42);
    CHECK(std::string(header.get().traceId) == "trace");
    CHECK(header.bodyOffset() == headerOnly.size());
    checkEvent(rpc::readFrame(frame, kOptions, header.bodyOffset()).root<idl::Event>(), pad);
  }
  SECTION("no params: the frame ends with the header, and the body reads as a null root") {
    rpc::wire::HeaderFrame header(headerOnly);
    CHECK(header.bodyOffset() == headerOnly.size());
    CHECK(rpc::readFrame(headerOnly, kOptions, header.bodyOffset()).any().isNull());
  }
}

TEST_CASE("a reply is one frame: the header, then the results", "[wire]") {
  for (size_t pad : {0, 3, 100, 5000}) {
    capnp::MallocMessageBuilder results;
    buildEvent(results, pad);
    auto resultsFrame = rpc::toFrame(results);
    for (auto [code, text] :
         {std::pair{rpc::StatusCode::OK, ""}, std::pair{rpc::StatusCode::OK, "with a message"},
          std::pair{rpc::StatusCode::NOT_FOUND, "no such key"}}) {
      auto frame = rpc::wire::encodeReply(9, code, text, &results);
      CHECK(bytesOf(frame) == concat(rpc::wire::encodeReply(9, code, text), resultsFrame));
      rpc::wire::HeaderFrame header(frame);
      CHECK(header.get().status == code);
      CHECK(std::string(header.get().message) == text);
      checkEvent(rpc::readFrame(frame, kOptions, header.bodyOffset()).root<idl::Event>(), pad);
    }
  }
  SECTION("no results: the frame ends with the header") {
    auto frame = rpc::wire::encodeReply(9, rpc::StatusCode::OK, "", nullptr);
    rpc::wire::HeaderFrame header(frame);
    CHECK(header.bodyOffset() == frame.size());
    CHECK(rpc::readFrame(frame, kOptions, header.bodyOffset()).any().isNull());
  }
}

TEST_CASE("a frame whose header cannot be read is rejected, never crashes", "[wire]") {
  rpc::wire::RequestHeader h;
  h.requestId = 1;
  auto header = rpc::wire::encodeRequest(h, zmq::message_t());
  auto params = eventFrame(10);
  auto whole = concat(header, params);
  auto reject = [](const std::vector<uint8_t>& bytes) {
    auto frame = frameOf(bytes.data(), bytes.size());
    CHECK_THROWS_AS(rpc::wire::HeaderFrame(frame), rpc::FrameError);
  };
  SECTION("empty, or shorter than a word") {
    for (size_t n = 0; n < 8; ++n) reject(std::vector<uint8_t>(whole.begin(), whole.begin() + n));
  }
  SECTION("cut anywhere inside the header") {
    for (size_t n = 8; n < header.size(); ++n)
      reject(std::vector<uint8_t>(whole.begin(), whole.begin() + n));
  }
  SECTION("a segment table that claims more than 4 KiB") {
    std::vector<uint8_t> absurd(64, 0xff);
    reject(absurd);
    absurd.insert(absurd.end(), 8000, 0);
    reject(absurd);
  }
  SECTION("a header over kMaxHeaderBytes, even when the frame holds all of it") {
    std::string longTrace(rpc::wire::kMaxHeaderBytes, 't');
    rpc::wire::RequestHeader big;
    big.traceId = longTrace;
    reject(bytesOf(rpc::wire::encodeRequest(big, params)));
  }
  SECTION("a header whose root points outside it") {
    auto bad = whole;
    bad[8] = 0xf0;  // the root pointer's offset, far past the header's one segment
    reject(bad);
  }
  SECTION("random bytes") {
    std::mt19937_64 random(11);
    for (int i = 0; i < 20000; ++i) {
      std::vector<uint8_t> bytes(random() % 200);
      for (auto& b : bytes) b = static_cast<uint8_t>(random());
      // Half of them with a plausible segment count, so the table is read further.
      if (i % 2 && bytes.size() >= 4) std::copy(whole.begin(), whole.begin() + 4, bytes.begin());
      auto frame = frameOf(bytes.data(), bytes.size());
      try {
        rpc::wire::HeaderFrame parsed(frame);
        CHECK(parsed.bodyOffset() <= bytes.size());
        CHECK(parsed.bodyOffset() % 8 == 0);
      } catch (const rpc::FrameError&) {
      }
    }
  }
  SECTION("what follows a good header is the params' to judge") {
    // Odd-sized, garbage, or trailing bytes after the params: the header reads,
    // and readFrame rejects the rest (the server answers INVALID_ARGUMENT).
    for (auto tail : {std::vector<uint8_t>{1, 2, 3}, std::vector<uint8_t>(16, 0xff),
                      concat(params, frameOf("\0\0\0\0\0\0\0\0", 8))}) {
      auto bytes = bytesOf(header);
      bytes.insert(bytes.end(), tail.begin(), tail.end());
      auto frame = frameOf(bytes.data(), bytes.size());
      rpc::wire::HeaderFrame parsed(frame);
      CHECK(parsed.bodyOffset() == header.size());
      CHECK_THROWS_AS(rpc::readFrame(frame, kOptions, parsed.bodyOffset()), rpc::FrameError);
    }
  }
}

// The plain-header reader (word by word, then capnp's unchecked reader) must
// accept nothing the checked reader refuses, and read the same values.
TEST_CASE("damaged headers read as the checked reader reads them", "[wire]") {
  std::string backing(300, 'x');
  std::vector<zmq::message_t> headers;
  rpc::wire::RequestHeader h;
  h.requestId = 0x0102030405060708ULL;
  h.interfaceId = 77;
  h.methodId = 3;
  h.budgetMs = 500;
  headers.push_back(rpc::wire::encodeRequest(h, zmq::message_t()));
  h.retryable = true;
  h.traceId = std::string_view(backing).substr(0, 5);
  h.idempotencyKey = std::string_view(backing).substr(0, 17);
  headers.push_back(rpc::wire::encodeRequest(h, eventFrame(3)));
  headers.push_back(rpc::wire::encodeReply(9, rpc::StatusCode::OK, ""));
  headers.push_back(rpc::wire::encodeReply(9, rpc::StatusCode::NOT_FOUND, backing));
  auto fields = [](const rpc::wire::HeaderFrame& f) {
    auto& g = f.get();
    return std::tuple(g.requestId, g.interfaceId, g.methodId, g.budgetMs, g.retryable,
                      std::string(g.traceId), std::string(g.idempotencyKey), g.status,
                      std::string(g.message), f.bodyOffset());
  };
  auto outcome = [&](auto&& read) -> std::string {
    try {
      auto t = read();
      return "ok " + std::to_string(std::get<0>(t)) + " " + std::get<5>(t) + "|" + std::get<6>(t) +
             "|" + std::get<8>(t) + " " + std::to_string(static_cast<int>(std::get<7>(t))) + " " +
             std::to_string(std::get<9>(t)) + " " + std::to_string(std::get<3>(t)) + " " +
             std::to_string(std::get<2>(t)) + std::to_string(std::get<4>(t)) +
             std::to_string(std::get<1>(t));
    } catch (const rpc::FrameError& e) {
      return std::string("error ") + e.what();
    }
  };
  std::mt19937_64 random(29);
  size_t tried = 0, accepted = 0;
  // Bytes at an odd address too: the frame is then read from an aligned copy.
  std::vector<uint8_t> storage(8 + 4096 + 1);
  for (auto& header : headers) {
    auto original = bytesOf(header);
    for (int i = 0; i < 6000; ++i) {
      auto bytes = original;
      int damage = 1 + static_cast<int>(random() % 3);
      for (int d = 0; d < damage; ++d) {
        size_t at = random() % bytes.size();
        switch (random() % 4) {
          case 0:  // one bit
            bytes[at] ^= static_cast<uint8_t>(1u << (random() % 8));
            break;
          case 1:  // one byte
            bytes[at] = static_cast<uint8_t>(random());
            break;
          case 2:  // a pointer's offset or sizes, word-aligned
            at -= at % 8;
            for (size_t b = at; b < at + 8 && b < bytes.size(); ++b)
              if (random() % 2) bytes[b] = static_cast<uint8_t>(random());
            break;
          default:  // cut short
            bytes.resize(at);
            break;
        }
        if (bytes.empty()) break;
      }
      uint8_t* at = storage.data() + (i % 2);
      std::memcpy(at, bytes.data(), bytes.size());
      zmq::message_t frame(at, bytes.size(), nullptr, nullptr);  // not copied: its address is ours
      auto fast = outcome([&] { return fields(rpc::wire::HeaderFrame(frame)); });
      auto checked = outcome([&] {
        return fields(rpc::wire::HeaderFrame(frame, rpc::wire::HeaderFrame::CheckedOnly{}));
      });
      INFO("header " << (&header - headers.data()) << " try " << i);
      REQUIRE(fast == checked);
      ++tried;
      accepted += fast.starts_with("ok");
    }
  }
  CHECK(tried == 24000);
  CHECK(accepted > 1000);  // the comparison covered headers that read, not only refusals
  CHECK(accepted < tried);
}

TEST_CASE("reply header round trip for every status", "[wire]") {
  for (auto e : capnp::Schema::from<idl::StatusCode>().getEnumerants()) {
    auto code = static_cast<rpc::StatusCode>(e.getOrdinal());
    std::string backing = std::string("message for ") + e.getProto().getName().cStr() + "XYZ";
    std::string_view text(backing.data(), backing.size() - 3);
    auto frame = rpc::wire::encodeReply(77 + e.getOrdinal(), code, text);
    REQUIRE(frame.size() <= rpc::wire::kMaxHeaderBytes);
    auto m = rpc::readFrame(frame, rpc::readerOptionsFor(rpc::wire::kMaxHeaderBytes));
    auto r = m.root<idl::RpcHeader>();
    CHECK(r.getRequestId() == 77u + e.getOrdinal());
    CHECK(r.getStatus() == code);
    CHECK(std::string(r.getMessage().cStr()) == text);
    CHECK(r.getInterfaceId() == 0);
  }
  auto ok = rpc::readFrame(rpc::wire::encodeReply(5, rpc::StatusCode::OK, ""), kOptions);
  CHECK_FALSE(ok.root<idl::RpcHeader>().hasMessage());
}

TEST_CASE("an OK reply is byte for byte what capnp builds, for any request id", "[wire]") {
  // encodeReply writes the id into a pre-encoded OK reply: it must equal the
  // message built field by field.
  std::mt19937_64 random(7);
  std::vector<uint64_t> ids = {0, 1, 0xff, 0x100, 0x8000000000000000ull, ~uint64_t{0}};
  for (int i = 0; i < 1000; ++i) ids.push_back(random());
  for (uint64_t id : ids) {
    capnp::MallocMessageBuilder built;
    auto b = built.initRoot<idl::RpcHeader>();
    b.setRequestId(id);
    b.setStatus(rpc::StatusCode::OK);
    auto expected = rpc::toFrame(built);
    auto frame = rpc::wire::encodeReply(id, rpc::StatusCode::OK, "");
    REQUIRE(frame.size() == expected.size());
    CHECK(std::memcmp(frame.data(), expected.data(), frame.size()) == 0);
    CHECK(rpc::wire::HeaderFrame(frame).get().requestId == id);
  }
}

TEST_CASE("a request without trace id or key is byte for byte what capnp builds", "[wire]") {
  // encodeRequest writes the fields into a pre-encoded header: it must equal the
  // message built field by field, for any values, every bit of each field.
  std::mt19937_64 random(9);
  std::vector<rpc::wire::RequestHeader> headers;
  headers.push_back({});
  rpc::wire::RequestHeader all;
  all.requestId = ~uint64_t{0};
  all.interfaceId = ~uint64_t{0};
  all.methodId = 0xffff;
  all.budgetMs = ~uint32_t{0};
  all.retryable = true;
  headers.push_back(all);
  for (int i = 0; i < 2000; ++i) {
    rpc::wire::RequestHeader h;
    h.requestId = random();
    h.interfaceId = random();
    h.methodId = static_cast<uint16_t>(random());
    h.budgetMs = static_cast<uint32_t>(random());
    h.retryable = random() % 2;
    headers.push_back(h);
  }
  auto params = eventFrame(3);
  for (auto& h : headers) {
    // Built through the schema by field name: an oracle that shares no code
    // with what it checks.
    capnp::MallocMessageBuilder built;
    auto b = built.initRoot<capnp::DynamicStruct>(capnp::Schema::from<idl::RpcHeader>());
    for (auto [name, value] :
         {std::pair{"requestId", h.requestId}, std::pair{"interfaceId", h.interfaceId},
          std::pair{"methodId", uint64_t{h.methodId}}, std::pair{"budgetMs", uint64_t{h.budgetMs}}})
      b.set(name, value);
    b.set("retryable", h.retryable);
    auto expected = concat(rpc::toFrame(built), params);
    REQUIRE(bytesOf(rpc::wire::encodeRequest(h, params)) == expected);
  }
}

TEST_CASE("a long status message is cut so the reply header stays readable", "[wire]") {
  auto options = rpc::readerOptionsFor(rpc::wire::kMaxHeaderBytes);
  SECTION("ASCII") {
    std::string text(20000, 'x');
    auto frame = rpc::wire::encodeReply(9, rpc::StatusCode::NOT_FOUND, text);
    CHECK(frame.size() <= rpc::wire::kMaxHeaderBytes);
    auto m = rpc::readFrame(frame, options);
    auto r = m.root<idl::RpcHeader>();
    CHECK(r.getRequestId() == 9);
    CHECK(r.getStatus() == rpc::StatusCode::NOT_FOUND);
    CHECK(r.getMessage().size() == rpc::wire::kMaxStatusMessageBytes);
  }
  SECTION("never inside a UTF-8 character") {
    for (size_t shift = 0; shift < 4; ++shift) {
      std::string text(shift, 'a');
      while (text.size() < 10000) text += "\xe2\x82\xac\xf0\x9f\x98\x80";  // € and a 4-byte emoji
      auto frame = rpc::wire::encodeReply(1, rpc::StatusCode::INVALID_ARGUMENT, text);
      CHECK(frame.size() <= rpc::wire::kMaxHeaderBytes);
      auto m = rpc::readFrame(frame, options);
      std::string got = m.root<idl::RpcHeader>().getMessage().cStr();
      INFO("shift " << shift << ", kept " << got.size());
      CHECK(got.size() <= rpc::wire::kMaxStatusMessageBytes);
      CHECK(got.size() > rpc::wire::kMaxStatusMessageBytes - 4);
      CHECK(text.starts_with(got));
      // The next byte of the original starts a character.
      CHECK((static_cast<unsigned char>(text[got.size()]) & 0xC0) != 0x80);
    }
  }
  SECTION("a message at the limit is kept whole") {
    std::string text(rpc::wire::kMaxStatusMessageBytes, 'y');
    auto m = rpc::readFrame(rpc::wire::encodeReply(1, rpc::StatusCode::INTERNAL, text), options);
    CHECK(std::string(m.root<idl::RpcHeader>().getMessage().cStr()) == text);
  }
}
