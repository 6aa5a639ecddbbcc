// A reply frame through the client's Connection, and its results read as a
// caller would: a malformed reply is dropped or refused with RpcError, never a
// crash, and the connection goes on answering.
#include <capnp/message.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <memory>
#include <optional>
#include <zmq_addon.hpp>

#include "testsvc.capnp.h"
#include "wire.h"
#include "zmesh/rpc/client.h"
#include "zmesh/rpc/poll.h"

namespace {

using namespace zmesh;
using test::TestService;

const uint16_t kEcho = rpc::methodOrdinal(capnp::Schema::from<TestService>(), "echo");

struct Harness {
  zmq::context_t context;
  zmq::socket_t router{context, zmq::socket_type::router};
  Harness() {
    spdlog::set_level(spdlog::level::off);  // each input may log
    router.set(zmq::sockopt::linger, 0);
    router.bind("inproc://reply-fuzz");
  }

  // One call, answered with `reply(requestId)`; the reply read if it came.
  template <typename MakeReply>
  std::optional<rpc::Reply> call(rpc::Connection& connection, MakeReply reply) {
    // Shared: a call left unanswered is failed by the connection's destructor.
    auto got = std::make_shared<std::optional<rpc::Reply>>();
    rpc::CallOptions options;
    options.timeout = std::chrono::seconds(5);
    connection.call(capnp::typeId<TestService>(), kEcho, zmq::message_t(), options,
                    [got](rpc::Reply r) { got->emplace(std::move(r)); });
    std::vector<zmq::message_t> frames;
    zmq::pollitem_t item{router.handle(), 0, ZMQ_POLLIN, 0};
    auto hung = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (rpc::poll(&item, 1, std::chrono::milliseconds(100)) == 0)
      if (std::chrono::steady_clock::now() > hung) std::abort();
    (void)zmq::recv_multipart(router, std::back_inserter(frames));
    rpc::wire::HeaderFrame header(frames.at(1));
    std::vector<zmq::message_t> out;
    out.push_back(std::move(frames[0]));
    out.push_back(reply(header.get().requestId));
    zmq::send_multipart(router, out);
    // Over inproc a sent reply is readable at once: a few quiet turns mean it
    // was dropped (a quiet turn may also be a signal, hence more than one).
    for (int quiet = 0; quiet < 3 && !*got;) {
      auto items = connection.pollItems();
      if (rpc::poll(items.data(), items.size(), std::chrono::milliseconds(1)) == 0) ++quiet;
      connection.process();
    }
    return std::move(*got);
  }
};

// The first byte picks the shape: the whole frame from the input, or a valid
// header (OK, or the status in the second byte) with the input as results.
zmq::message_t replyFrom(const uint8_t* data, size_t size, uint64_t requestId) {
  if (size == 0 || data[0] % 2 == 0)
    return zmq::message_t(data + (size ? 1 : 0), size ? size - 1 : 0);
  auto code =
      size > 1 && data[0] % 4 == 3 ? static_cast<rpc::StatusCode>(data[1]) : rpc::StatusCode::OK;
  auto header = rpc::wire::encodeReply(requestId, code, code == rpc::StatusCode::OK ? "" : "m");
  zmq::message_t frame(header.size() + size - 1);
  std::memcpy(frame.data(), header.data(), header.size());
  if (size > 1) std::memcpy(static_cast<char*>(frame.data()) + header.size(), data + 1, size - 1);
  return frame;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Harness harness;
  rpc::ConnectionOptions options;
  options.monitor = false;
  rpc::Connection connection(harness.context, "inproc://reply-fuzz", options);
  auto reply = harness.call(connection, [&](uint64_t id) { return replyFrom(data, size, id); });
  if (reply && reply->status.ok()) {
    try {
      auto r = reply->results<TestService::EchoResults>();
      (void)r.getText().size();
      (void)r.getPad().size();
      (void)reply->results(capnp::Schema::from<TestService::EchoResults>());
    } catch (const rpc::RpcError& e) {
      if (e.code() != rpc::StatusCode::INTERNAL) std::abort();
    }
  }
  // The same connection still reads a good reply.
  auto good = harness.call(connection, [](uint64_t id) {
    capnp::MallocMessageBuilder results;
    results.initRoot<TestService::EchoResults>().setText("ok");
    return rpc::wire::encodeReply(id, rpc::StatusCode::OK, "", &results);
  });
  if (!good || !good->status.ok() ||
      std::string(good->results<TestService::EchoResults>().getText().cStr()) != "ok")
    std::abort();
  return 0;
}
