// zmesh-testsvc: the test service of rpc/'s integration tests.
#include <spdlog/spdlog.h>

#include <map>
#include <stdexcept>
#include <thread>

#include "testsvc.capnp.h"
#include "zmesh/rpc/host.h"

namespace zmesh::test {
namespace {

class TestServiceImpl final : public TestService::Server {
 public:
  TestServiceImpl(rpc::Server& server, rpc::Publisher* publisher)
      : server_(server), publisher_(publisher) {}
  ~TestServiceImpl() {
    for (auto& t : helpers_) t.join();
  }

  kj::Promise<void> echo(EchoContext context) override {
    auto p = context.getParams();
    auto r = context.getResults();
    r.setText(p.getText());
    r.setPad(p.getPad());
    return kj::READY_NOW;
  }

  kj::Promise<void> sleep(SleepContext context) override {
    uint32_t ms = context.getParams().getMs();
    return server_.timer().afterDelay(ms * kj::MILLISECONDS).then([context, ms]() mutable {
      context.getResults().setSleptMs(ms);
    });
  }

  kj::Promise<void> park(ParkContext context) override {
    auto paf = kj::newPromiseAndFulfiller<kj::String>();
    parked_.emplace(context.getParams().getKey().cStr(), kj::mv(paf.fulfiller));
    return paf.promise.then(
        [context](kj::String value) mutable { context.getResults().setValue(value); });
  }

  kj::Promise<void> release(ReleaseContext context) override {
    auto p = context.getParams();
    auto range = parked_.equal_range(p.getKey().cStr());
    uint32_t woken = 0;
    for (auto it = range.first; it != range.second; ++it, ++woken)
      it->second->fulfill(kj::heapString(p.getValue()));
    parked_.erase(range.first, range.second);
    context.getResults().setWoken(woken);
    return kj::READY_NOW;
  }

  kj::Promise<void> onHelper(OnHelperContext context) override {
    auto paf = kj::newPromiseAndFulfiller<void>();
    auto fulfiller = std::make_shared<kj::Own<kj::PromiseFulfiller<void>>>(kj::mv(paf.fulfiller));
    uint32_t ms = context.getParams().getMs();
    auto loopThread = std::this_thread::get_id();
    auto onLoop = std::make_shared<bool>(false);
    helpers_.emplace_back([this, ms, fulfiller, loopThread, onLoop] {
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      bool different = std::this_thread::get_id() != loopThread;
      server_.post([fulfiller, onLoop, different] {
        *onLoop = different;
        (*fulfiller)->fulfill();
      });
    });
    return paf.promise.then(
        [context, onLoop]() mutable { context.getResults().setHelperThread(*onLoop); });
  }

  kj::Promise<void> fail(FailContext context) override {
    auto p = context.getParams();
    rpc::fail(static_cast<rpc::StatusCode>(p.getCode()), p.getMessage().cStr());
  }

  kj::Promise<void> crash(CrashContext) override {
    throw std::runtime_error("deliberate crash in a test method");
  }

  kj::Promise<void> bump(BumpContext context) override {
    context.getResults().setCalls(++bumps_);
    return kj::READY_NOW;
  }

  kj::Promise<void> publish(PublishContext context) override {
    auto p = context.getParams();
    if (!publisher_) rpc::fail(rpc::StatusCode::FAILED_PRECONDITION, "no broker configured");
    for (uint32_t i = 1; i <= p.getCount(); ++i) {
      capnp::MallocMessageBuilder b;
      auto e = b.initRoot<TestEvent>();
      e.setN(i);
      publisher_->publish<TestEvent>(p.getTopic().cStr(), e.asReader());
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> spin(SpinContext context) override {
    auto until =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(context.getParams().getMs());
    while (std::chrono::steady_clock::now() < until) {
    }
    return kj::READY_NOW;
  }

 private:
  rpc::Server& server_;
  rpc::Publisher* publisher_;
  std::multimap<std::string, kj::Own<kj::PromiseFulfiller<kj::String>>> parked_;
  std::vector<std::thread> helpers_;
  uint64_t bumps_ = 0;
};

}  // namespace
}  // namespace zmesh::test

int main(int argc, char** argv) {
  using namespace zmesh;
  CLI::App app{"zmesh-testsvc: the test service of rpc/"};
  rpc::CommonFlags flags;
  flags.config.clear();
  rpc::addCommonFlags(app, flags);
  size_t maxRequest = 1 << 20;
  int sendHwm = 10000;
  app.add_option("--max-request-bytes", maxRequest);
  app.add_option("--send-hwm", sendHwm);
  CLI11_PARSE(app, argc, argv);
  try {
    rpc::setupLogging("testsvc", flags.logLevel, flags.logFile);
    auto config = flags.config.empty() ? rpc::MeshConfig::parse("", "(none)")
                                       : rpc::MeshConfig::load(flags.config);
    auto options = rpc::hostOptionsFrom(config, "testsvc", flags, "tcp://127.0.0.1:0");
    options.server.maxRequestBytes = maxRequest;
    options.server.sendHwm = sendHwm;
    rpc::ServiceHost host(std::move(options));
    host.server().serve<test::TestService>(
        kj::heap<test::TestServiceImpl>(host.server(), host.publisher()));
    return host.run();
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 2;
  }
}
