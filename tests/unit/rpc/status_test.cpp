// rpc/status: names of every StatusCode, fail() and the exception → status mapping.
#include "zmesh/rpc/status.h"

#include <capnp/schema.h>
#include <kj/debug.h>
#include <kj/exception.h>

#include <catch2/catch.hpp>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "zmesh/idl/common.capnp.h"

using namespace zmesh;
using rpc::StatusCode;

namespace {

// Every code the schema declares, so a code added to common.capnp is covered too.
std::vector<StatusCode> allCodes() {
  std::vector<StatusCode> out;
  for (auto e : capnp::Schema::from<idl::StatusCode>().getEnumerants())
    out.push_back(static_cast<StatusCode>(e.getOrdinal()));
  return out;
}

// "invalidArgument" → "INVALID_ARGUMENT": what the name must be, derived from the schema.
std::string screamingSnake(kj::StringPtr camel) {
  std::string out;
  for (char c : camel) {
    if (c >= 'A' && c <= 'Z') {
      out += '_';
      out += c;
    } else {
      out += static_cast<char>(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
    }
  }
  return out;
}

// What the server sees when a method throws: kj's conversion of whatever escaped.
template <typename Fn>
kj::Exception caught(Fn&& fn) {
  KJ_IF_MAYBE (e, kj::runCatchingExceptions(kj::fwd<Fn>(fn))) {
    return kj::mv(*e);
  }
  FAIL("nothing was thrown");
  return KJ_EXCEPTION(FAILED, "unreachable");
}

}  // namespace

TEST_CASE("every status code has a name that parses back to it", "[status]") {
  auto codes = allCodes();
  REQUIRE(codes.size() == 15);
  std::set<std::string> names;
  for (auto e : capnp::Schema::from<idl::StatusCode>().getEnumerants()) {
    auto code = static_cast<StatusCode>(e.getOrdinal());
    std::string name(rpc::statusName(code));
    INFO("code " << e.getOrdinal() << " (" << e.getProto().getName().cStr() << ")");
    CHECK(name == screamingSnake(e.getProto().getName()));
    CHECK(name != "UNKNOWN");
    names.insert(name);
    StatusCode parsed = StatusCode::INTERNAL;
    REQUIRE(rpc::parseStatusName(name, parsed));
    CHECK(parsed == code);
  }
  CHECK(names.size() == codes.size());  // no two codes share a name
}

TEST_CASE("names that are no status do not parse", "[status]") {
  CHECK(rpc::statusName(static_cast<StatusCode>(999)) == "UNKNOWN");
  for (const char* bad : {"", "UNKNOWN", "ok", "Ok", "NOT_FOUND ", " NOT_FOUND", "NOT-FOUND",
                          "notFound", "DEADLINE_EXCEEDE", "DEADLINE_EXCEEDEDX"}) {
    StatusCode out = StatusCode::ALREADY_EXISTS;
    INFO("'" << bad << "'");
    CHECK_FALSE(rpc::parseStatusName(bad, out));
    CHECK(out == StatusCode::ALREADY_EXISTS);  // untouched
  }
}

TEST_CASE("fail() keeps its code and message for every code", "[status]") {
  for (auto code : allCodes()) {
    std::string message =
        "why " + std::string(rpc::statusName(code)) + ": with a colon, and more: text";
    INFO(rpc::statusName(code));
    auto e = caught([&] { rpc::fail(code, message); });
    auto s = rpc::statusFromException(e);
    CHECK(s.code == code);
    CHECK(s.message == message);
    CHECK(s.ok() == (code == StatusCode::OK));

    // The same through statusException (rejecting a PromiseFulfiller).
    auto s2 = rpc::statusFromException(rpc::statusException(code, message));
    CHECK(s2.code == code);
    CHECK(s2.message == message);
  }
}

TEST_CASE("fail() with an empty message", "[status]") {
  auto s = rpc::statusFromException(caught([] { rpc::fail(StatusCode::NOT_FOUND, ""); }));
  CHECK(s.code == StatusCode::NOT_FOUND);
  CHECK(s.message.empty());
}

TEST_CASE("statusException picks the kj type capnp itself would use", "[status]") {
  using Type = kj::Exception::Type;
  CHECK(rpc::statusException(StatusCode::UNAVAILABLE, "x").getType() == Type::OVERLOADED);
  CHECK(rpc::statusException(StatusCode::UNIMPLEMENTED, "x").getType() == Type::UNIMPLEMENTED);
  CHECK(rpc::statusException(StatusCode::NOT_FOUND, "x").getType() == Type::FAILED);
  CHECK(rpc::statusException(StatusCode::INTERNAL, "x").getType() == Type::FAILED);
}

TEST_CASE("kj exception types map to status codes", "[status]") {
  using Type = kj::Exception::Type;
  struct Row {
    Type type;
    StatusCode code;
  };
  for (auto row : {Row{Type::UNIMPLEMENTED, StatusCode::UNIMPLEMENTED},
                   Row{Type::OVERLOADED, StatusCode::UNAVAILABLE},
                   Row{Type::DISCONNECTED, StatusCode::UNAVAILABLE},
                   Row{Type::FAILED, StatusCode::INTERNAL}}) {
    kj::Exception e(row.type, __FILE__, __LINE__, kj::str("something went wrong"));
    auto s = rpc::statusFromException(e);
    INFO(static_cast<int>(row.type));
    CHECK(s.code == row.code);
    CHECK(s.message.find("something went wrong") != std::string::npos);
  }
}

TEST_CASE("kj macros and plain std exceptions become INTERNAL", "[status]") {
  SECTION("KJ_REQUIRE") {
    auto s =
        rpc::statusFromException(caught([] { KJ_REQUIRE(1 + 1 == 3, "arithmetic is broken"); }));
    CHECK(s.code == StatusCode::INTERNAL);
    CHECK(s.message.find("arithmetic is broken") != std::string::npos);
  }
  SECTION("KJ_UNIMPLEMENTED") {
    auto s = rpc::statusFromException(caught([] { KJ_UNIMPLEMENTED("not yet"); }));
    CHECK(s.code == StatusCode::UNIMPLEMENTED);
  }
  SECTION("std::runtime_error") {
    auto s = rpc::statusFromException(caught([] { throw std::runtime_error("plain failure"); }));
    CHECK(s.code == StatusCode::INTERNAL);
    CHECK(s.message.find("plain failure") != std::string::npos);
  }
  SECTION("std::logic_error") {
    auto s = rpc::statusFromException(caught([] { throw std::out_of_range("index 7"); }));
    CHECK(s.code == StatusCode::INTERNAL);
    CHECK(s.message.find("index 7") != std::string::npos);
  }
  SECTION("something that is no exception at all") {
    auto s = rpc::statusFromException(caught([] { throw 42; }));
    CHECK(s.code == StatusCode::INTERNAL);
  }
}

TEST_CASE("a description that only looks like fail()'s is not trusted blindly", "[status]") {
  // An unknown code name in the tag falls back to the exception type.
  kj::Exception bogus(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                      kj::str("zmesh-status:BOGUS:text"));
  CHECK(rpc::statusFromException(bogus).code == StatusCode::INTERNAL);
  kj::Exception noColon(kj::Exception::Type::OVERLOADED, __FILE__, __LINE__,
                        kj::str("zmesh-status:NOT_FOUND"));
  CHECK(rpc::statusFromException(noColon).code == StatusCode::UNAVAILABLE);
  // A code out of the enum's range cannot hide as a valid one.
  auto s = rpc::statusFromException(rpc::statusException(static_cast<StatusCode>(999), "odd"));
  CHECK(s.code == StatusCode::INTERNAL);
}

TEST_CASE("RpcError carries code, detail and a prefixed what()", "[status]") {
  rpc::RpcError e(StatusCode::DEADLINE_EXCEEDED, "idgen did not answer within 5 ms");
  CHECK(e.code() == StatusCode::DEADLINE_EXCEEDED);
  CHECK(e.detail() == "idgen did not answer within 5 ms");
  CHECK(std::string(e.what()) == "DEADLINE_EXCEEDED: idgen did not answer within 5 ms");
  const std::runtime_error& base = e;
  CHECK(std::string(base.what()).starts_with("DEADLINE_EXCEEDED"));
}

TEST_CASE("Status defaults to OK", "[status]") {
  rpc::Status s;
  CHECK(s.ok());
  CHECK(s.code == StatusCode::OK);
  CHECK(s.message.empty());
}
