// A request frame through the server's real loop and dispatch, into a test
// service: whatever the bytes, the server answers or drops them and keeps
// serving (a valid call after each input must be answered).
#include <capnp/message.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <future>
#include <random>
#include <thread>
#include <zmq_addon.hpp>

#include "testsvc.capnp.h"
#include "wire.h"
#include "zmesh/rpc/client.h"
#include "zmesh/rpc/frame.h"
#include "zmesh/rpc/poll.h"
#include "zmesh/rpc/server.h"
#include "zmesh/rpc/status.h"

namespace {

using namespace zmesh;
using test::TestService;

// Every method answers at once, later (bounded), never, or fails: no input
// can make it hold the loop.
class FuzzService final : public TestService::Server {
 public:
  explicit FuzzService(rpc::Server& server) : server_(server) {}
  kj::Promise<void> echo(EchoContext context) override {
    auto p = context.getParams();
    auto r = context.getResults();
    r.setText(p.getText());
    r.setPad(p.getPad());
    return kj::READY_NOW;
  }
  kj::Promise<void> sleep(SleepContext context) override {
    auto ms = std::min<uint32_t>(context.getParams().getMs(), 5);
    return server_.timer().afterDelay(ms * kj::MILLISECONDS);
  }
  kj::Promise<void> park(ParkContext) override { return kj::NEVER_DONE; }
  kj::Promise<void> fail(FailContext context) override {
    auto p = context.getParams();
    rpc::fail(static_cast<rpc::StatusCode>(p.getCode()), p.getMessage().cStr());
  }
  kj::Promise<void> crash(CrashContext) override { throw std::runtime_error("deliberate crash"); }
  kj::Promise<void> bump(BumpContext context) override {
    context.getResults().setCalls(++bumps_);
    return kj::READY_NOW;
  }

 private:
  rpc::Server& server_;
  uint64_t bumps_ = 0;
};

const uint16_t kBump = rpc::methodOrdinal(capnp::Schema::from<TestService>(), "bump");

class Harness {
 public:
  Harness() : dealer_(context_, zmq::socket_type::dealer) {
    // Quiet (each input may log), and spdlog's registry made before this
    // static, so it is destroyed after the loop thread stops at exit.
    spdlog::set_level(spdlog::level::off);
    std::promise<void> bound;
    loop_ = std::thread([&] {
      rpc::ServerOptions options;
      options.name = "fuzz";
      options.endpoints = {"inproc://request-fuzz"};
      options.maxInFlight = 64;
      options.maxBudgetMs = 20;
      options.retryWindowMaxEntries = 256;
      rpc::Server server(context_, options);
      server.serve<TestService>(kj::heap<FuzzService>(server));
      server.bind();
      server_ = &server;
      bound.set_value();
      server.run();
    });
    bound.get_future().wait();
    dealer_.set(zmq::sockopt::linger, 0);
    dealer_.connect("inproc://request-fuzz");
  }
  // Nothing may have reached the loop's barrier: a malformed input is
  // answered or dropped by the checks, not by an exception that escaped them.
  void checkBarrier() {
    std::promise<uint64_t> caught;
    server_->post([&] { caught.set_value(server_->counters().barrierCaught); });
    if (caught.get_future().get() != 0) std::abort();
  }

  ~Harness() {
    server_->requestStop();
    loop_.join();
  }

  void run(const uint8_t* data, size_t size) {
    dealer_.send(zmq::message_t(data, size), zmq::send_flags::none);
    // Then a valid call: its answer proves the loop went on past the input.
    // A fresh random id each time: an input cannot know it (libFuzzer learns
    // the values a harness compares, but only after the comparison).
    uint64_t sync = random_();
    rpc::wire::RequestHeader h;
    h.requestId = sync;
    h.interfaceId = capnp::typeId<TestService>();
    h.methodId = kBump;
    h.budgetMs = 5000;
    dealer_.send(rpc::wire::encodeRequest(h, zmq::message_t()), zmq::send_flags::none);
    auto hung = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (true) {
      zmq::pollitem_t item{dealer_.handle(), 0, ZMQ_POLLIN, 0};
      if (rpc::poll(&item, 1, std::chrono::milliseconds(100)) == 0) {
        if (std::chrono::steady_clock::now() > hung) std::abort();
        continue;
      }
      zmq::message_t reply;
      (void)dealer_.recv(reply);
      rpc::wire::HeaderFrame header(reply);  // the server's own replies always read
      // An input that guessed the id anyway gets its own answer: wait on for
      // the OK (a broken server never gives one, and the wait above aborts).
      if (header.get().requestId == sync && header.get().status == rpc::StatusCode::OK) break;
    }
  }

 private:
  zmq::context_t context_;
  zmq::socket_t dealer_;
  rpc::Server* server_ = nullptr;
  std::thread loop_;
  std::mt19937_64 random_{std::random_device{}()};
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Harness harness;
  static uint64_t runs = 0;
  harness.run(data, size);
  if (++runs % 64 == 0) harness.checkBarrier();
  return 0;
}
