// rpc/ end to end: a real zmesh-testsvc process on a free loopback port.
#include <catch2/catch.hpp>

#include "process.h"
#include "testsvc.capnp.h"
#include "zmesh/client.h"

using namespace zmesh;
using namespace zmesh::testing;

namespace {

struct TestServer {
  int port = freePort();
  std::string endpoint = tcpEndpoint(port);
  Process process{{bin("zmesh-testsvc"), "--endpoint", endpoint, "--broker", "none", "--log-level", "warn"}};
  TestServer() { REQUIRE(waitHealthy(endpoint)); }
};

template <typename Params, typename Fill>
zmq::message_t params(Fill fill) {
  capnp::MallocMessageBuilder m;
  fill(m.initRoot<Params>());
  return rpc::toFrame(m);
}

uint16_t method(const char* name) { return rpc::methodOrdinal(capnp::Schema::from<test::TestService>(), name); }
const uint64_t kTest = capnp::typeId<test::TestService>();

}  // namespace

TEST_CASE("echo round trip and many calls in flight", "[rpc]") {
  TestServer server;
  zmq::context_t context;
  rpc::ClientThread client(context);
  auto channel = client.channel(server.endpoint);
  auto reply = channel.callSync(kTest, method("echo"),
                                params<test::TestService::EchoParams>([](auto p) { p.setText("hello"); }), {});
  REQUIRE(reply.status.ok());
  CHECK(std::string(reply.results<test::TestService::EchoResults>().getText().cStr()) == "hello");

  constexpr int kCalls = 10000;
  std::vector<std::future<rpc::Reply>> futures;
  for (int i = 0; i < kCalls; ++i)
    futures.push_back(channel.call(kTest, method("echo"), params<test::TestService::EchoParams>([i](auto p) {
                                     p.setText(std::to_string(i));
                                   }),
                                   {}));
  for (int i = 0; i < kCalls; ++i) {
    auto r = futures[i].get();
    REQUIRE(r.status.ok());
    REQUIRE(std::string(r.results<test::TestService::EchoResults>().getText().cStr()) == std::to_string(i));
  }
}

TEST_CASE("unknown interface and method answer UNIMPLEMENTED", "[rpc]") {
  TestServer server;
  zmq::context_t context;
  rpc::ClientThread client(context);
  auto channel = client.channel(server.endpoint);
  auto r1 = channel.callSync(0x1234, 0, zmq::message_t(), {});
  CHECK(r1.status.code == StatusCode::UNIMPLEMENTED);
  auto r2 = channel.callSync(kTest, 60, zmq::message_t(), {});
  CHECK(r2.status.code == StatusCode::UNIMPLEMENTED);
}
