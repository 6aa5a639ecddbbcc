// rpc/ end to end: a real zmesh-testsvc process on a free loopback port.
#include <capnp/serialize.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>
#include <zmq_addon.hpp>

#include "crafted.h"
#include "process.h"
#include "testsvc.capnp.h"
#include "wire.h"
#include "zmesh/client.h"
#include "zmesh/idl/admin.capnp.h"
#include "zmesh/idl/common.capnp.h"

using namespace zmesh;
using namespace zmesh::testing;
using test::TestService;

namespace {

std::vector<std::string> testsvcArgs(const std::string& endpoint,
                                     const std::vector<std::string>& extra) {
  std::vector<std::string> argv{bin("zmesh-testsvc"), "--endpoint", endpoint, "--broker", "none",
                                "--log-level",        "warn"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

struct TestServer {
  explicit TestServer(std::vector<std::string> extra = {}) : extra(std::move(extra)) { start(); }
  void start() {
    process.emplace(testsvcArgs(endpoint, extra));
    REQUIRE(waitHealthy(endpoint));
  }
  int port = freePort();
  std::string endpoint = tcpEndpoint(port);
  std::vector<std::string> extra;
  std::optional<Process> process;
};

// A test service whose [testsvc] section is `section` (in a mesh file of its
// own), and a channel to it.
struct ConfiguredServer {
  explicit ConfiguredServer(const std::string& section)
      : config(writeConfig(dir, section)), server({"--config", config}) {}
  static std::string writeConfig(const TempDir& dir, const std::string& section) {
    std::string path = dir.path() + "/mesh.toml";
    std::ofstream(path) << "[testsvc]\n" << section;
    return path;
  }
  TempDir dir;
  std::string config;
  TestServer server;
  zmq::context_t context;
  rpc::ClientThread client{context};
  rpc::Channel channel = client.channel(server.endpoint);
};

template <typename Params, typename Fill>
zmq::message_t params(Fill fill) {
  capnp::MallocMessageBuilder m;
  fill(m.initRoot<Params>());
  return rpc::toFrame(m);
}

uint16_t method(const char* name) {
  return rpc::methodOrdinal(capnp::Schema::from<TestService>(), name);
}
const uint64_t kTest = capnp::typeId<TestService>();

rpc::CallOptions timeout(std::chrono::milliseconds t) {
  rpc::CallOptions o;
  o.timeout = t;
  return o;
}

zmq::message_t echoParams(const std::string& text, size_t pad = 0) {
  return params<TestService::EchoParams>([&](auto p) {
    p.setText(text);
    if (pad) p.initPad(pad);
  });
}
zmq::message_t sleepParams(uint32_t ms) {
  return params<TestService::SleepParams>([&](auto p) { p.setMs(ms); });
}

std::string echoText(rpc::Reply& r) {
  return r.results<TestService::EchoResults>().getText().cStr();
}

rpc::Reply echo(const rpc::Channel& channel, const std::string& text,
                std::chrono::milliseconds t = std::chrono::milliseconds(5000)) {
  return channel.callSync(kTest, method("echo"), echoParams(text), timeout(t));
}

std::map<std::string, int64_t> stats(const rpc::Channel& channel) {
  CallSettings settings;
  settings.timeout = 3s;
  std::map<std::string, int64_t> out;
  for (auto& [name, value] : rpc::flatten(AdminClient(channel, settings).stats()))
    out[name] = static_cast<int64_t>(value);
  return out;
}

int64_t stat(const rpc::Channel& channel, const std::string& name) {
  auto s = stats(channel);
  auto it = s.find(name);
  if (it == s.end()) FAIL("no counter " << name);
  return it == s.end() ? 0 : it->second;
}

// Polls until `pred` holds or `limit` passes; returns whether it held.
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = 5s) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (true) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
}

bool ready(std::future<rpc::Reply>& f) { return f.wait_for(0s) == std::future_status::ready; }

// ---- a raw DEALER speaking the wire protocol by hand ----

zmq::message_t requestHeader(uint64_t requestId, uint64_t interfaceId, uint16_t methodId,
                             uint32_t budgetMs, bool retryable = false) {
  capnp::MallocMessageBuilder m;
  auto h = m.initRoot<idl::RpcHeader>();
  h.setRequestId(requestId);
  h.setInterfaceId(interfaceId);
  h.setMethodId(methodId);
  h.setBudgetMs(budgetMs);
  h.setRetryable(retryable);
  return rpc::toFrame(m);
}

// A request as it goes on the wire: the header's bytes, then the params'.
zmq::message_t requestFrame(const zmq::message_t& header, const zmq::message_t& params) {
  zmq::message_t frame(header.size() + params.size());
  std::memcpy(frame.data(), header.data(), header.size());
  if (params.size() > 0)
    std::memcpy(static_cast<char*>(frame.data()) + header.size(), params.data(), params.size());
  return frame;
}

// Where the header ends in a reply frame, found as any capnp reader would (its
// segment table), not with zmesh's own parser.
size_t headerBytes(const zmq::message_t& frame) {
  std::vector<capnp::word> words(frame.size() / sizeof(capnp::word));
  std::memcpy(words.data(), frame.data(), words.size() * sizeof(capnp::word));
  size_t n = capnp::expectedSizeInWordsFromPrefix(kj::arrayPtr(words.data(), words.size()));
  REQUIRE(n <= words.size());
  return n * sizeof(capnp::word);
}

struct RawReply {
  uint64_t requestId;
  StatusCode code;
  std::string message;
  std::optional<rpc::FrameMessage> body;
};

class RawDealer {
 public:
  RawDealer(zmq::context_t& context, const std::string& endpoint, int rcvhwm = 1000,
            int rcvbuf = -1)
      : socket_(context, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::rcvhwm, rcvhwm);
    if (rcvbuf > 0) socket_.set(zmq::sockopt::rcvbuf, rcvbuf);
    socket_.set(zmq::sockopt::sndtimeo, 5000);  // never an unbounded block in a test
    socket_.connect(endpoint);
  }
  void send(std::vector<zmq::message_t> frames) {
    REQUIRE(zmq::send_multipart(socket_, frames).has_value());
  }
  void send(const zmq::message_t& header, const zmq::message_t& params) {
    std::vector<zmq::message_t> frames;
    frames.push_back(requestFrame(header, params));
    send(std::move(frames));
  }
  std::optional<RawReply> receive(std::chrono::milliseconds limit) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, limit) == 0) return std::nullopt;
    std::vector<zmq::message_t> frames;
    REQUIRE(zmq::recv_multipart(socket_, std::back_inserter(frames)).has_value());
    REQUIRE(frames.size() == 1);
    size_t split = headerBytes(frames[0]);
    rpc::FrameMessage header(frames[0].data(), split, rpc::readerOptionsFor(4096));
    auto h = header.root<idl::RpcHeader>();
    RawReply r{h.getRequestId(), h.getStatus(), h.getMessage().cStr(), std::nullopt};
    if (r.code == StatusCode::OK)
      r.body.emplace(rpc::readFrame(frames[0], rpc::readerOptionsFor(1 << 20), split));
    return r;
  }
  zmq::socket_t& socket() { return socket_; }

 private:
  zmq::socket_t socket_;
};

zmq::message_t bytes(const std::string& s) { return zmq::message_t(s.data(), s.size()); }

}  // namespace

TEST_CASE("echo round trip and many calls in flight", "[rpc]") {
  TestServer server;
  zmq::context_t context;
  rpc::ClientThread client(context);
  auto channel = client.channel(server.endpoint);
  auto reply =
      channel.callSync(kTest, method("echo"),
                       params<TestService::EchoParams>([](auto p) { p.setText("hello"); }), {});
  REQUIRE(reply.status.ok());
  CHECK(std::string(reply.results<TestService::EchoResults>().getText().cStr()) == "hello");

  constexpr int kCalls = 10000;
  std::vector<std::future<rpc::Reply>> futures;
  for (int i = 0; i < kCalls; ++i)
    futures.push_back(channel.call(
        kTest, method("echo"),
        params<TestService::EchoParams>([i](auto p) { p.setText(std::to_string(i)); }), {}));
  for (int i = 0; i < kCalls; ++i) {
    auto r = futures[i].get();
    REQUIRE(r.status.ok());
    REQUIRE(std::string(r.results<TestService::EchoResults>().getText().cStr()) ==
            std::to_string(i));
  }
}

// The server keeps one call's hook (params read in place, results built in
// it) for the next call: nothing of one call may show in the next.
TEST_CASE("calls in turn carry nothing of the call before", "[rpc]") {
  TestServer server;
  zmq::context_t context;
  rpc::ClientThread client(context);
  auto channel = client.channel(server.endpoint);
  auto echo = [&](zmq::message_t params) {
    return channel.callSync(kTest, method("echo"), std::move(params), {});
  };
  auto text = [](rpc::Reply& r) {
    return std::string(r.results<TestService::EchoResults>().getText().cStr());
  };
  auto pad = [](rpc::Reply& r) { return r.results<TestService::EchoResults>().getPad().size(); };
  for (int round = 0; round < 3; ++round) {
    // Large: results past the hook's inline words, params likely copied to align.
    std::string big(200000 + round * 13, 'b');
    auto r = echo(params<TestService::EchoParams>([&](auto p) {
      p.setText("big");
      p.setPad(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(big.data()), big.size()));
    }));
    REQUIRE(r.status.ok());
    CHECK(text(r) == "big");
    CHECK(pad(r) == big.size());
    // No params at all: a null root, not the last call's.
    r = echo(zmq::message_t());
    REQUIRE(r.status.ok());
    CHECK(text(r).empty());
    CHECK(pad(r) == 0);
    // A method that fails, one that throws, then a small echo.
    r = channel.callSync(kTest, method("fail"), params<TestService::FailParams>([](auto p) {
                           p.setCode(static_cast<uint16_t>(rpc::StatusCode::NOT_FOUND));
                           p.setMessage("gone");
                         }),
                         {});
    CHECK(r.status.code == rpc::StatusCode::NOT_FOUND);
    r = channel.callSync(kTest, method("crash"), zmq::message_t(), {});
    CHECK(r.status.code == rpc::StatusCode::INTERNAL);
    r = echo(params<TestService::EchoParams>([](auto p) { p.setText("small"); }));
    REQUIRE(r.status.ok());
    CHECK(text(r) == "small");
    CHECK(pad(r) == 0);
  }
}

TEST_CASE("a Connection driven only through edge-triggered epoll on its fds finishes every call",
          "[rpc][fd]") {
  TestServer server;
  zmq::context_t context;
  rpc::Connection connection(context, server.endpoint);  // monitor on: two fds
  int epoll = ::epoll_create1(EPOLL_CLOEXEC);
  REQUIRE(epoll >= 0);
  auto fds = connection.fds();
  REQUIRE(fds.size() == 2);
  for (int fd : fds) {
    epoll_event e{};
    e.events = EPOLLIN | EPOLLET;  // the strictest reading of ZMQ_FD's edges
    REQUIRE(::epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &e) == 0);
  }
  // Calls are made from reply callbacks, inside process(), so sends and
  // receives interleave on the DEALER as they do in the gateway.
  constexpr int kCalls = 5000, kWindow = 8;
  int started = 0, ok = 0, failed = 0;
  std::function<void()> issue = [&] {
    if (started == kCalls) return;
    ++started;
    connection.call(kTest, method("echo"), echoParams(std::to_string(started)), timeout(10s),
                    [&](rpc::Reply r) {
                      (r.status.ok() ? ok : failed)++;
                      issue();
                    });
  };
  for (int i = 0; i < kWindow; ++i) issue();
  int stalls = 0;
  auto give_up = std::chrono::steady_clock::now() + 30s;
  while (ok + failed < kCalls && std::chrono::steady_clock::now() < give_up) {
    do connection.process();
    while (connection.hasWork());
    epoll_event ready[2];
    // A missed edge shows as a second with calls in flight and no wake-up.
    if (::epoll_wait(epoll, ready, 2, 1000) == 0 && connection.inFlight() > 0) ++stalls;
  }
  ::close(epoll);
  CHECK(stalls == 0);
  CHECK(failed == 0);
  REQUIRE(ok == kCalls);
  CHECK_FALSE(connection.hasWork());
}

TEST_CASE("hasWork() sees a reply whose fd edge a send consumed", "[rpc][fd]") {
  TestServer server;
  zmq::context_t context;
  rpc::ConnectionOptions options;
  options.monitor = false;
  std::vector<std::string> replies;  // outlives the connection, whose destructor fails calls
  rpc::Connection connection(context, server.endpoint, options);
  int fd = connection.fds().at(0);
  auto readable = [fd] {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 0) == 1;
  };
  auto record = [&](rpc::Reply r) {
    replies.push_back(r.status.ok() ? r.results<TestService::EchoResults>().getText().cStr()
                                    : r.status.message);
  };
  // What an fd-driven loop does first: drain (nothing yet). libzmq signals the
  // fd only for a reader that has found its queue empty.
  connection.process();
  connection.call(kTest, method("echo"), echoParams("first"), timeout(5s), record);
  REQUIRE(eventually([&] { return readable(); }, 5s));  // its reply waits at the socket
  std::this_thread::sleep_for(10ms);  // past libzmq's command throttle, so a send reads commands
  connection.call(kTest, method("echo"), echoParams("second"), timeout(5s), record);
  INFO("fd readable after the send: " << readable());
  REQUIRE(connection.hasWork());
  connection.process();
  REQUIRE(replies.size() >= 1);
  CHECK(replies[0] == "first");
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

// ---- deferred replies (DESIGN.md §2: "Replies may come later") ----

TEST_CASE("timer replies come later while other calls are served", "[rpc][deferred]") {
  TestServer server;
  zmq::context_t context;
  rpc::ClientThread client(context);
  auto channel = client.channel(server.endpoint);

  std::mutex mutex;
  std::vector<uint32_t> finished;  // sleep durations in the order they answered
  std::vector<rpc::Status> statuses;
  auto start = std::chrono::steady_clock::now();
  // Longest first: the replies must come in the order of their timers, not of the calls.
  for (uint32_t ms : {1800u, 1400u, 1000u}) {
    channel.callAsync(kTest, method("sleep"), sleepParams(ms), timeout(5s), [&, ms](rpc::Reply r) {
      std::lock_guard lock(mutex);
      statuses.push_back(r.status);
      finished.push_back(r.status.ok() ? r.results<TestService::SleepResults>().getSleptMs() : 0);
      (void)ms;
    });
  }
  // Many immediate calls complete while every timer is still pending.
  std::vector<std::future<rpc::Reply>> echoes;
  for (int i = 0; i < 300; ++i)
    echoes.push_back(channel.call(kTest, method("echo"), echoParams(std::to_string(i)), {}));
  for (int i = 0; i < 300; ++i) {
    auto r = echoes[i].get();
    REQUIRE(r.status.ok());
    REQUIRE(echoText(r) == std::to_string(i));
  }
  {
    std::lock_guard lock(mutex);
    CHECK(finished.empty());
  }
  REQUIRE(eventually([&] {
    std::lock_guard lock(mutex);
    return finished.size() == 3;
  }));
  auto elapsed = std::chrono::steady_clock::now() - start;
  for (auto& s : statuses) CHECK(s.ok());
  CHECK(finished == std::vector<uint32_t>{1000, 1400, 1800});
  CHECK(elapsed >= 1800ms);                    // a timer never fires early
  CHECK(stat(channel, "rpc.in_flight") == 0);  // the stats call answers at once
}

TEST_CASE("park is answered by another client's release", "[rpc][deferred]") {
  TestServer server;
  zmq::context_t context;
  rpc::ClientThread waiterThread(context), otherThread(context);  // two DEALERs: two peers
  auto waiter = waiterThread.channel(server.endpoint);
  auto other = otherThread.channel(server.endpoint);

  auto parkParams = [](const char* key) {
    return params<TestService::ParkParams>([&](auto p) { p.setKey(key); });
  };
  std::vector<std::future<rpc::Reply>> parked;
  for (int i = 0; i < 3; ++i)
    parked.push_back(waiter.call(kTest, method("park"), parkParams("k1"), timeout(8s)));
  auto elsewhere = waiter.call(kTest, method("park"), parkParams("k2"), timeout(8s));
  REQUIRE(eventually([&] { return stat(other, "rpc.in_flight") == 4; }));

  // Others are served meanwhile, on both connections.
  for (int i = 0; i < 100; ++i) {
    auto r = echo(i % 2 ? waiter : other, "x" + std::to_string(i));
    REQUIRE(r.status.ok());
    REQUIRE(echoText(r) == "x" + std::to_string(i));
  }
  for (auto& f : parked) CHECK_FALSE(ready(f));

  auto release =
      other.callSync(kTest, method("release"), params<TestService::ReleaseParams>([](auto p) {
                       p.setKey("k1");
                       p.setValue("granted");
                     }),
                     {});
  REQUIRE(release.status.ok());
  CHECK(release.results<TestService::ReleaseResults>().getWoken() == 3);
  for (auto& f : parked) {
    auto r = f.get();
    REQUIRE(r.status.ok());
    CHECK(std::string(r.results<TestService::ParkResults>().getValue().cStr()) == "granted");
  }
  // A different key stays parked; releasing a key nobody waits on wakes none.
  CHECK_FALSE(ready(elsewhere));
  auto none =
      other.callSync(kTest, method("release"), params<TestService::ReleaseParams>([](auto p) {
                       p.setKey("k3");
                       p.setValue("-");
                     }),
                     {});
  CHECK(none.results<TestService::ReleaseResults>().getWoken() == 0);
  auto r2 = other.callSync(kTest, method("release"), params<TestService::ReleaseParams>([](auto p) {
                             p.setKey("k2");
                             p.setValue("second");
                           }),
                           {});
  CHECK(r2.results<TestService::ReleaseResults>().getWoken() == 1);
  auto e = elsewhere.get();
  REQUIRE(e.status.ok());
  CHECK(std::string(e.results<TestService::ParkResults>().getValue().cStr()) == "second");
}

TEST_CASE("a helper thread's completion answers the call", "[rpc][deferred]") {
  TestServer server;
  zmq::context_t context;
  rpc::ClientThread client(context);
  auto channel = client.channel(server.endpoint);
  std::vector<std::future<rpc::Reply>> helpers;
  for (uint32_t ms : {300u, 200u, 100u, 0u})
    helpers.push_back(channel.call(
        kTest, method("onHelper"),
        params<TestService::OnHelperParams>([&](auto p) { p.setMs(ms); }), timeout(5s)));
  for (int i = 0; i < 50; ++i) REQUIRE(echo(channel, "meanwhile").status.ok());
  for (auto& f : helpers) {
    auto r = f.get();
    REQUIRE(r.status.ok());
    CHECK(r.results<TestService::OnHelperResults>().getHelperThread());
  }
}

// ---- deadlines and failures ----

TEST_CASE("a deadline that passes: DEADLINE_EXCEEDED, and the server drops the call",
          "[rpc][deadline]") {
  TestServer server;
  zmq::context_t context;
  rpc::ClientThread client(context);
  auto channel = client.channel(server.endpoint);
  auto before = stat(channel, "rpc.deadline_dropped");

  auto start = std::chrono::steady_clock::now();
  auto r = channel.callSync(kTest, method("sleep"), sleepParams(3000), timeout(300ms));
  CHECK(r.status.code == StatusCode::DEADLINE_EXCEEDED);
  CHECK(r.status.message.find("300 ms") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - start >= 300ms);
  CHECK_THROWS_AS(r.check(), RpcError);

  // The server gave up on it too (its copy of the budget ran out), well before 3 s.
  REQUIRE(eventually([&] { return stat(channel, "rpc.deadline_dropped") == before + 1; }, 2s));
  CHECK(stat(channel, "rpc.in_flight") == 0);
  CHECK(stat(channel, "rpc.replies") >= 1);

  // A call that fits its budget still answers.
  auto ok = channel.callSync(kTest, method("sleep"), sleepParams(50), timeout(3s));
  REQUIRE(ok.status.ok());
  CHECK(ok.results<TestService::SleepResults>().getSleptMs() == 50);
  CHECK(stat(channel, "rpc.deadline_dropped") == before + 1);
}

TEST_CASE("fail() reaches the client with its code and message", "[rpc][errors]") {
  TestServer server;
  zmq::context_t context;
  rpc::ClientThread client(context);
  auto channel = client.channel(server.endpoint);
  auto failParams = [](uint16_t code, const std::string& message) {
    return params<TestService::FailParams>([&](auto p) {
      p.setCode(code);
      p.setMessage(message);
    });
  };
  int failures = 0;
  for (auto e : capnp::Schema::from<idl::StatusCode>().getEnumerants()) {
    auto code = static_cast<StatusCode>(e.getOrdinal());
    if (code == StatusCode::OK) continue;
    std::string message =
        std::string("because: ") + e.getProto().getName().cStr() + " (with: colons)";
    INFO(rpc::statusName(code));
    auto r = channel.callSync(kTest, method("fail"), failParams(e.getOrdinal(), message), {});
    CHECK(r.status.code == code);
    CHECK(r.status.message == message);
    try {
      r.check();
      FAIL("check() did not throw");
    } catch (const RpcError& err) {
      CHECK(err.code() == code);
      CHECK(err.detail() == message);
    }
    if (code != StatusCode::INTERNAL) ++failures;
  }
  auto s = stats(channel);
  CHECK(s["rpc.failed"] == failures);
  CHECK(s["rpc.internal_errors"] == 1);

  SECTION("a code the mesh does not know is our bug: INTERNAL") {
    auto r = channel.callSync(kTest, method("fail"), failParams(999, "odd"), {});
    CHECK(r.status.code == StatusCode::INTERNAL);
  }
  SECTION("a long message still reaches the client, cut short") {
    std::string message;
    for (int i = 0; message.size() < 20000; ++i) message += std::to_string(i) + " ";
    auto r = channel.callSync(kTest, method("fail"), failParams(5, message), timeout(3s));
    CHECK(r.status.code == StatusCode::NOT_FOUND);
    CHECK(r.status.message.size() >= 1000);
    CHECK(r.status.message.size() < message.size());
    CHECK(message.starts_with(r.status.message));
  }
}

TEST_CASE("a method that throws answers INTERNAL and the server keeps serving", "[rpc][errors]") {
  TestServer server;
  zmq::context_t context;
  rpc::ClientThread client(context);
  auto channel = client.channel(server.endpoint);
  for (int i = 0; i < 20; ++i) {
    auto r = channel.callSync(kTest, method("crash"), zmq::message_t(), {});
    REQUIRE(r.status.code == StatusCode::INTERNAL);
    CHECK(r.status.message.find("deliberate crash") != std::string::npos);
    REQUIRE(echo(channel, "still here").status.ok());
  }
  CHECK(stat(channel, "rpc.internal_errors") == 20);
  REQUIRE(server.process->running());
}

// ---- retries: a repeated request id runs once ----

TEST_CASE("a retryable request id sent twice runs once", "[rpc][retry]") {
  TestServer server;
  zmq::context_t context;
  RawDealer raw(context, server.endpoint);
  auto bump = [&](uint64_t id, bool retryable) {
    raw.send(requestHeader(id, kTest, method("bump"), 5000, retryable), zmq::message_t());
    auto r = raw.receive(5s);
    REQUIRE(r);
    REQUIRE(r->requestId == id);
    REQUIRE(r->code == StatusCode::OK);
    return r->body->root<TestService::BumpResults>().getCalls();
  };
  auto first = bump(1000, true);
  auto again = bump(1000, true);
  CHECK(again == first);
  auto third = bump(1000, true);
  CHECK(third == first);
  // A new id runs: the count moved by one only, so the repeats never ran.
  CHECK(bump(1001, true) == first + 1);
  // Without the flag a repeated id is just another call.
  auto n1 = bump(2000, false);
  auto n2 = bump(2000, false);
  CHECK(n2 == n1 + 1);

  rpc::ClientThread client(context);
  auto channel = client.channel(server.endpoint);
  CHECK(stat(channel, "rpc.duplicate_replayed") == 2);

  SECTION("a repeat while the first still runs is answered once, by the first") {
    raw.send(requestHeader(3000, kTest, method("sleep"), 5000, true), sleepParams(300));
    raw.send(requestHeader(3000, kTest, method("sleep"), 5000, true), sleepParams(300));
    auto r = raw.receive(5s);
    REQUIRE(r);
    CHECK(r->requestId == 3000);
    CHECK(r->code == StatusCode::OK);
    CHECK_FALSE(raw.receive(500ms));
    CHECK(stat(channel, "rpc.duplicate_in_flight") == 1);
  }
  SECTION("another peer's same id is another call") {
    RawDealer other(context, server.endpoint);
    other.send(requestHeader(1000, kTest, method("bump"), 5000, true), zmq::message_t());
    auto r = other.receive(5s);
    REQUIRE(r);
    CHECK(r->body->root<TestService::BumpResults>().getCalls() == n2 + 1);
  }
}

TEST_CASE("client resends of a slow retryable call are absorbed by the server", "[rpc][retry]") {
  TestServer server;
  zmq::context_t context;
  rpc::ClientThread client(context);
  auto channel = client.channel(server.endpoint);
  rpc::CallOptions o;
  o.timeout = 5s;
  o.retryable = true;
  o.attemptTimeout = 100ms;
  auto r = channel.callSync(kTest, method("sleep"), sleepParams(550), o);
  REQUIRE(r.status.ok());
  CHECK(r.results<TestService::SleepResults>().getSleptMs() == 550);
  // Five resends or so arrived while it ran; none ran again, none answered twice.
  CHECK(stat(channel, "rpc.duplicate_in_flight") >= 3);
  auto bumpOnce = channel.callSync(kTest, method("bump"), zmq::message_t(), o);
  CHECK(bumpOnce.results<TestService::BumpResults>().getCalls() == 1);
}

// ---- untrusted input ----

TEST_CASE("oversize params answer PAYLOAD_TOO_LARGE and calls go on", "[rpc][limits]") {
  TestServer server({"--max-request-bytes", "1024"});
  zmq::context_t context;
  rpc::ClientThread client(context);
  auto channel = client.channel(server.endpoint);

  auto big = channel.callSync(kTest, method("echo"), echoParams("big", 2000), timeout(3s));
  CHECK(big.status.code == StatusCode::PAYLOAD_TOO_LARGE);
  CHECK(big.status.message.find("1024") != std::string::npos);
  auto ok = channel.callSync(kTest, method("echo"), echoParams("small", 500), timeout(3s));
  REQUIRE(ok.status.ok());
  CHECK(ok.results<TestService::EchoResults>().getPad().size() == 500);
  CHECK(stat(channel, "rpc.oversize") == 1);

  SECTION("far beyond the limit: libzmq's guard drops the connection, the client reconnects") {
    auto huge =
        channel.callSync(kTest, method("echo"), echoParams("huge", 200 * 1024), timeout(3s));
    CHECK((huge.status.code == StatusCode::UNAVAILABLE ||
           huge.status.code == StatusCode::DEADLINE_EXCEEDED));
    auto after = echo(channel, "after", 5s);
    REQUIRE(after.status.ok());
    CHECK(echoText(after) == "after");
  }
  SECTION("many oversize calls in a row") {
    for (int i = 0; i < 50; ++i)
      REQUIRE(channel.callSync(kTest, method("echo"), echoParams("big", 1500), timeout(3s))
                  .status.code == StatusCode::PAYLOAD_TOO_LARGE);
    REQUIRE(echo(channel, "after").status.ok());
    CHECK(stat(channel, "rpc.oversize") == 51);
  }
}

TEST_CASE("malformed input from a raw DEALER is dropped or answered, and counted",
          "[rpc][malformed]") {
  TestServer server;
  zmq::context_t context;
  rpc::ClientThread client(context);
  auto channel = client.channel(server.endpoint);
  RawDealer raw(context, server.endpoint);
  auto base = stats(channel);

  // Dropped: no request id to answer to.
  auto validHeader = [] { return requestHeader(1, kTest, method("echo"), 5000); };
  std::vector<std::vector<zmq::message_t>> dropped;
  auto add = [&](auto... frames) {
    std::vector<zmq::message_t> v;
    (v.push_back(std::move(frames)), ...);
    dropped.push_back(std::move(v));
  };
  auto request = [&](const zmq::message_t& header) {
    return requestFrame(header, echoParams("x"));
  };
  add(request(validHeader()), zmq::message_t());                     // two frames
  add(zmq::message_t());                                             // one empty frame
  add(request(validHeader()), bytes("a"), bytes("b"));               // three
  add(bytes("hello"));                                               // shorter than a word
  add(request(zmq::message_t(std::string(64, '\xff').data(), 64)));  // absurd segment table
  {
    capnp::MallocMessageBuilder m;
    auto h = m.initRoot<idl::RpcHeader>();
    h.setRequestId(1);
    h.setTraceId(std::string(5000, 't'));  // a header over 4 KiB
    add(request(rpc::toFrame(m)));
  }
  {
    auto h = validHeader();
    add(zmq::message_t(h.data(), 8));  // header cut after its table
  }
  {
    auto h = validHeader();
    add(zmq::message_t(h.data(), h.size() - 8));  // header cut short
  }
  const auto droppedCount = static_cast<int64_t>(dropped.size());
  for (auto& frames : dropped) raw.send(std::move(frames));

  // Answered INVALID_ARGUMENT: a good header, bad params behind it.
  std::vector<zmq::message_t> badParams;
  badParams.push_back(bytes("odd"));
  badParams.push_back(zmq::message_t(std::string(32, '\xff').data(), 32));
  {
    auto p = echoParams("truncated", 100);
    badParams.push_back(zmq::message_t(p.data(), p.size() - 16));
  }
  {
    auto p = echoParams("trailing");
    std::string s(static_cast<const char*>(p.data()), p.size());
    s.append(16, '\0');
    badParams.push_back(bytes(s));
  }
  badParams.push_back(bytes(std::string(8, '\0')));  // a segment table with no segment
  const auto badCount = static_cast<int64_t>(badParams.size());
  uint64_t id = 500;
  for (auto& p : badParams) raw.send(requestHeader(id++, kTest, method("echo"), 5000), p);
  std::set<uint64_t> answered;
  for (int64_t i = 0; i < badCount; ++i) {
    auto r = raw.receive(5s);
    REQUIRE(r);
    CHECK(r->code == StatusCode::INVALID_ARGUMENT);
    CHECK(r->message.starts_with("params: "));
    answered.insert(r->requestId);
  }
  CHECK(answered == std::set<uint64_t>{500, 501, 502, 503, 504});
  CHECK_FALSE(raw.receive(200ms));  // nothing for the dropped ones

  // The server still serves, and counted each exactly once.
  REQUIRE(echo(channel, "alive").status.ok());
  REQUIRE(eventually(
      [&] { return stat(channel, "rpc.malformed") == base["rpc.malformed"] + droppedCount; }));
  auto after = stats(channel);
  CHECK(after["rpc.malformed"] == base["rpc.malformed"] + droppedCount);
  CHECK(after["rpc.invalid_params"] == base["rpc.invalid_params"] + badCount);
  CHECK(after["rpc.internal_errors"] == 0);

  SECTION("random frames") {
    std::mt19937_64 rng(7);
    auto randomFrame = [&](size_t max) {
      size_t n = rng() % max;
      std::string s(n, '\0');
      for (auto& c : s) c = static_cast<char>(rng());
      if (rng() % 3 == 0) s.resize(s.size() / 8 * 8);  // word-sized garbage, too
      return bytes(s);
    };
    for (int i = 0; i < 2000; ++i) {
      std::vector<zmq::message_t> frames;
      size_t count = 1 + rng() % 4;
      for (size_t f = 0; f < count; ++f) {
        // Sometimes a real header in front of garbage params.
        if (count == 1 && rng() % 2) {
          // Only methods that cannot hold the loop or a thread for long.
          static const uint16_t kMethods[] = {method("echo"), method("bump"), method("fail"),
                                              method("crash"), 40};
          frames.push_back(requestFrame(requestHeader(10000 + i, kTest, kMethods[rng() % 5], 5000),
                                        randomFrame(600)));
        } else {
          frames.push_back(randomFrame(600));
        }
      }
      raw.send(std::move(frames));
    }
    // Drain what was answered; every reply is well-formed.
    while (raw.receive(300ms)) {
    }
    REQUIRE(echo(channel, "alive after fuzz").status.ok());
    auto s = stats(channel);
    CHECK(s["rpc.malformed"] > after["rpc.malformed"]);
    CHECK(s["rpc.invalid_params"] > after["rpc.invalid_params"]);
    REQUIRE(server.process->running());
  }
}

// ---- peers that go away, servers that restart ----

TEST_CASE("server killed during a call: the client fails fast and goes on with the same channel",
          "[rpc][restart]") {
  TestServer server;
  zmq::context_t context;
  rpc::ClientThread client(context);
  auto channel = client.channel(server.endpoint);
  REQUIRE(echo(channel, "before").status.ok());

  auto inFlight = channel.call(kTest, method("sleep"), sleepParams(3000), timeout(4s));
  REQUIRE(eventually([&] { return stat(channel, "rpc.in_flight") == 1; }));
  server.process->kill9();
  REQUIRE(inFlight.wait_for(6s) == std::future_status::ready);
  auto lost = inFlight.get();
  INFO(lost.status.message);
  CHECK((lost.status.code == StatusCode::UNAVAILABLE ||
         lost.status.code == StatusCode::DEADLINE_EXCEEDED));

  // A call while nothing listens waits in the DEALER and goes when the server is back.
  auto waiting = channel.call(kTest, method("echo"), echoParams("waited"), timeout(8s));
  std::this_thread::sleep_for(200ms);
  CHECK_FALSE(ready(waiting));
  server.start();  // the same port
  auto w = waiting.get();
  REQUIRE(w.status.ok());
  CHECK(echoText(w) == "waited");

  auto after = echo(channel, "after", 5s);
  REQUIRE(after.status.ok());
  CHECK(echoText(after) == "after");
}

TEST_CASE("a retryable call in flight across a server restart succeeds", "[rpc][restart]") {
  TestServer server;
  zmq::context_t context;
  rpc::ClientThread client(context);
  auto channel = client.channel(server.endpoint);
  rpc::CallOptions o;
  o.timeout = 8s;
  o.retryable = true;
  o.attemptTimeout = 1s;
  auto call = channel.call(kTest, method("sleep"), sleepParams(400), o);
  REQUIRE(eventually([&] { return stat(channel, "rpc.in_flight") == 1; }));
  server.process->kill9();
  std::this_thread::sleep_for(300ms);
  CHECK_FALSE(ready(call));
  server.start();
  auto r = call.get();
  REQUIRE(r.status.ok());
  CHECK(r.results<TestService::SleepResults>().getSleptMs() == 400);
}

// ---- back-pressure (DESIGN.md §3) ----

TEST_CASE("one stalled peer: others are served, replies queue and drop, the loop does not spin",
          "[rpc][backpressure]") {
  // A small ROUTER high-water mark reaches EAGAIN soon after the kernel buffers fill.
  TestServer server({"--send-hwm", "10"});
  zmq::context_t context;
  rpc::ClientThread client(context);
  auto channel = client.channel(server.endpoint);

  // Never reads: one message in its queue, a small kernel buffer.
  RawDealer stalled(context, server.endpoint, 1, 16 * 1024);
  constexpr int kRequests = 3000;
  constexpr uint32_t kBudgetMs = 4000;
  for (int i = 0; i < kRequests; ++i)
    stalled.send(requestHeader(i + 1, kTest, method("echo"), kBudgetMs),
                 echoParams("stuck", 16 * 1024));
  auto sentAt = std::chrono::steady_clock::now();

  REQUIRE(eventually([&] {
    auto s = stats(channel);
    return s["rpc.replies_dropped_queue_full"] > 0;
  }));
  auto s0 = stats(channel);
  CHECK(s0["rpc.replies_queued"] >= 1024);
  CHECK(s0["rpc.replies_queued"] + s0["rpc.replies_dropped_queue_full"] <= kRequests);
  CHECK(s0["rpc.peer_queues"] == 1);

  // A healthy client is served meanwhile.
  std::vector<std::future<rpc::Reply>> calls;
  for (int i = 0; i < 200; ++i)
    calls.push_back(channel.call(kTest, method("echo"), echoParams(std::to_string(i)), {}));
  for (int i = 0; i < 200; ++i) {
    auto r = calls[i].get();
    REQUIRE(r.status.ok());
    REQUIRE(echoText(r) == std::to_string(i));
  }

  // Idle for a second with a non-empty peer queue: the back-off timer (capped at
  // 100 ms) wakes the loop a few times, not thousands.
  auto w0 = stat(channel, "rpc.wakeups");
  std::this_thread::sleep_for(1s);
  auto s1 = stats(channel);
  INFO("wake-ups in one idle second: " << s1["rpc.wakeups"] - w0);
  CHECK(s1["rpc.wakeups"] - w0 < 500);
  REQUIRE(std::chrono::steady_clock::now() - sentAt < std::chrono::milliseconds(kBudgetMs));
  CHECK(s1["rpc.peer_queues"] == 1);

  // When the requests' deadlines pass, what still waits is dropped and counted.
  REQUIRE(eventually([&] { return stat(channel, "rpc.replies_dropped_deadline") > 0; }, 5s));
  REQUIRE(eventually([&] { return stat(channel, "rpc.peer_queues") == 0; }, 3s));
  auto s2 = stats(channel);
  CHECK(s2["rpc.replies_dropped_deadline"] <= s2["rpc.replies_queued"]);
  REQUIRE(echo(channel, "still fine").status.ok());
}

TEST_CASE("back-pressure at the high-water mark: calls fail, none hang", "[rpc][backpressure]") {
  zmq::context_t context;
  rpc::ConnectionOptions options;
  options.sendHwm = 10;
  rpc::Connection connection(context, tcpEndpoint(freePort()), options);  // nothing listens there

  std::vector<std::optional<rpc::Status>> results(100);
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 100; ++i)
    connection.call(kTest, method("echo"), echoParams("x", 1000), timeout(300ms),
                    [&results, i](rpc::Reply r) { results[i] = r.status; });
  CHECK(connection.inFlight() == 100);

  while (connection.inFlight() > 0 && std::chrono::steady_clock::now() - start < 5s) {
    auto items = connection.pollItems();
    long ms = 100;
    if (auto t = connection.nextTimer())
      ms = std::clamp<long>(
          std::chrono::ceil<std::chrono::milliseconds>(*t - std::chrono::steady_clock::now())
              .count(),
          0, 100);
    zmq::poll(items.data(), items.size(), std::chrono::milliseconds(ms));
    connection.process();
  }
  REQUIRE(connection.inFlight() == 0);
  int unavailable = 0, deadline = 0;
  for (auto& r : results) {
    REQUIRE(r.has_value());
    if (r->code == StatusCode::UNAVAILABLE) ++unavailable;
    if (r->code == StatusCode::DEADLINE_EXCEEDED) ++deadline;
  }
  CHECK(unavailable + deadline == 100);
  CHECK(unavailable > 0);  // those that never found room
  CHECK(connection.counters().backPressured > 0);
  CHECK(connection.counters().unavailable == static_cast<uint64_t>(unavailable));
  CHECK(connection.counters().deadlineExceeded == static_cast<uint64_t>(deadline));
}

// ---- stopping ----

TEST_CASE("SIGTERM lets a call in flight finish, then the process exits 0", "[rpc][stop]") {
  TestServer server;
  zmq::context_t context;
  rpc::ClientThread client(context);
  auto channel = client.channel(server.endpoint);
  auto call = channel.call(kTest, method("sleep"), sleepParams(300), timeout(5s));
  REQUIRE(eventually([&] { return stat(channel, "rpc.in_flight") == 1; }));
  int status = server.process->stop(5s);
  auto r = call.get();
  INFO(rpc::statusName(r.status.code) << ": " << r.status.message);
  REQUIRE(r.status.ok());
  CHECK(r.results<TestService::SleepResults>().getSleptMs() == 300);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("while stopping, new calls are refused and in-flight ones finish", "[rpc][stop]") {
  TestServer server;
  zmq::context_t context;
  rpc::ClientThread client(context);
  auto channel = client.channel(server.endpoint);
  auto call = channel.call(kTest, method("sleep"), sleepParams(1500), timeout(5s));
  REQUIRE(eventually([&] { return stat(channel, "rpc.in_flight") == 1; }));
  REQUIRE(::kill(server.process->pid(), SIGTERM) == 0);
  // Until the signal is seen calls may still succeed; then they are refused.
  std::optional<rpc::Reply> refused;
  REQUIRE(eventually([&] {
    auto r = echo(channel, "late", 1s);
    if (r.status.ok()) return false;
    refused.emplace(std::move(r));
    return true;
  }));
  CHECK(refused->status.code == StatusCode::UNAVAILABLE);
  CHECK(refused->status.message.find("stopping") != std::string::npos);
  CHECK_FALSE(ready(call));
  auto r = call.get();
  INFO(rpc::statusName(r.status.code) << ": " << r.status.message);
  REQUIRE(r.status.ok());
  int status = server.process->wait(5s);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("a stop whose grace runs out answers what is left UNAVAILABLE", "[rpc][stop]") {
  ConfiguredServer configured("stop_grace = \"300ms\"\n");
  auto& server = configured.server;
  auto& channel = configured.channel;
  auto call = channel.call(kTest, method("sleep"), sleepParams(8000), timeout(9s));
  auto parked =
      channel.call(kTest, method("park"),
                   params<TestService::ParkParams>([](auto p) { p.setKey("never"); }), timeout(9s));
  REQUIRE(eventually([&] { return stat(channel, "rpc.in_flight") == 2; }));
  int status = server.process->stop(5s);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  for (auto* f : {&call, &parked}) {
    REQUIRE(f->wait_for(3s) == std::future_status::ready);
    auto r = f->get();
    INFO(rpc::statusName(r.status.code) << ": " << r.status.message);
    CHECK(r.status.code == StatusCode::UNAVAILABLE);
    CHECK(r.status.message.find("stopped before the call finished") != std::string::npos);
  }
}

// ---- messages built to be almost right ----

namespace crafted = zmesh::testing::crafted;

TEST_CASE(
    "almost-right requests never stop the server: dropped, or INVALID_ARGUMENT naming the field",
    "[rpc][malformed][crafted]") {
  TestServer server;
  zmq::context_t context;
  rpc::ClientThread client(context);
  auto channel = client.channel(server.endpoint);
  RawDealer raw(context, server.endpoint);
  auto base = stats(channel);

  // As the whole frame (a header whose root is a list), and headers with one
  // field of the wrong kind: no request id can be trusted, so dropped.
  std::vector<crafted::Bytes> headers{crafted::listAsRoot()};
  for (unsigned index = 0; index < 3; ++index)
    for (auto damage : {crafted::Damage::kStructPointer, crafted::Damage::kCapability,
                        crafted::Damage::kUnterminatedText}) {
      capnp::MallocMessageBuilder m;
      auto h = m.initRoot<idl::RpcHeader>();
      h.setRequestId(9);
      h.setInterfaceId(kTest);
      h.setMethodId(method("echo"));
      h.setTraceId("trace");
      h.setIdempotencyKey("key");
      h.setMessage("message");
      headers.push_back(crafted::damaged(m, index, damage));
    }
  for (auto& h : headers) raw.send(crafted::frame(h), echoParams("x"));

  // A good header, params with the text of the wrong kind: answered, by name.
  std::vector<crafted::Bytes> params{crafted::listAsRoot()};
  for (auto damage : {crafted::Damage::kStructPointer, crafted::Damage::kCapability,
                      crafted::Damage::kUnterminatedText}) {
    capnp::MallocMessageBuilder m;
    m.initRoot<TestService::EchoParams>().setText("hello");
    params.push_back(crafted::damaged(m, 0, damage));
  }
  uint64_t id = 700;
  for (auto& p : params)
    raw.send(requestHeader(id++, kTest, method("echo"), 5000), crafted::frame(p));
  for (size_t i = 0; i < params.size(); ++i) {
    auto r = raw.receive(5s);
    REQUIRE(r);
    CHECK(r->code == StatusCode::INVALID_ARGUMENT);
    INFO(r->message);
    CHECK(r->message.starts_with(r->requestId == 700 ? "params: " : "params.text: "));
  }
  CHECK_FALSE(raw.receive(200ms));

  REQUIRE(echo(channel, "alive").status.ok());
  auto after = stats(channel);
  CHECK(after["rpc.malformed"] == base["rpc.malformed"] + static_cast<int64_t>(headers.size()));
  CHECK(after["rpc.invalid_params"] ==
        base["rpc.invalid_params"] + static_cast<int64_t>(params.size()));
  CHECK(after["rpc.internal_errors"] == 0);
  CHECK(after["rpc.barrier_caught"] == 0);
  REQUIRE(server.process->running());
}

TEST_CASE("calls past max_in_flight answer UNAVAILABLE at once", "[rpc][limits]") {
  ConfiguredServer configured("max_in_flight = 2\n");
  auto& channel = configured.channel;
  auto park = [&](const char* key) {
    return channel.call(kTest, method("park"),
                        params<TestService::ParkParams>([&](auto p) { p.setKey(key); }),
                        timeout(5s));
  };
  auto a = park("a"), b = park("b");
  REQUIRE(eventually([&] { return stat(channel, "rpc.in_flight") == 2; }));
  auto start = std::chrono::steady_clock::now();
  auto refused = park("c").get();
  CHECK(std::chrono::steady_clock::now() - start < 2s);  // at once, not at the deadline
  CHECK(refused.status.code == StatusCode::UNAVAILABLE);
  CHECK_THAT(refused.status.message, Catch::Contains("busy"));
  // Answering at once still works (a release that frees the waiters, Admin).
  REQUIRE(echo(channel, "immediate").status.ok());
  for (const char* key : {"a", "b"})
    REQUIRE(channel
                .callSync(kTest, method("release"), params<TestService::ReleaseParams>([&](auto p) {
                            p.setKey(key);
                            p.setValue("v");
                          }),
                          timeout(3s))
                .status.ok());
  CHECK(a.get().status.ok());
  CHECK(b.get().status.ok());
  CHECK(stat(channel, "rpc.busy") == 1);
  CHECK(stat(channel, "rpc.in_flight") == 0);
}

TEST_CASE("a budget over max_deadline is cut to it", "[rpc][limits]") {
  ConfiguredServer configured("max_deadline = \"200ms\"\n");
  auto& channel = configured.channel;
  // The client would wait 1.5 s; the server gives the call 200 ms and drops it.
  auto r = channel.callSync(kTest, method("sleep"), sleepParams(1000), timeout(1500ms));
  CHECK(r.status.code == StatusCode::DEADLINE_EXCEEDED);
  auto s = stats(channel);
  CHECK(s["rpc.budget_clamped"] >= 1);
  CHECK(s["rpc.deadline_dropped"] == 1);
}

TEST_CASE("the retry record is bounded in bytes, and read-only methods are not kept",
          "[rpc][limits][retry]") {
  ConfiguredServer configured("retry_window_max_bytes = 65536\n");
  auto& server = configured.server;
  auto& context = configured.context;
  auto& channel = configured.channel;
  RawDealer raw(context, server.endpoint);
  for (uint64_t id = 1; id <= 64; ++id) {
    raw.send(requestHeader(id, kTest, method("echo"), 5000, true), echoParams("x", 4096));
    REQUIRE(raw.receive(5s));
  }
  auto s = stats(channel);
  CHECK(s["rpc.retained_bytes"] <= 65536);
  CHECK(s["rpc.retained_bytes"] > 32768);
  CHECK(s["rpc.retained_evicted"] >= 64 - 16);

  // Admin.stats is $readOnly: a resend runs again and nothing is kept for it.
  auto statsId = rpc::methodOrdinal(capnp::Schema::from<idl::Admin>(), "stats");
  auto before = stats(channel);
  for (int i = 0; i < 2; ++i) {
    raw.send(requestHeader(99, capnp::typeId<idl::Admin>(), statsId, 5000, true), zmq::message_t());
    auto r = raw.receive(5s);
    REQUIRE(r);
    CHECK(r->code == StatusCode::OK);
  }
  auto after = stats(channel);
  CHECK(after["rpc.retained_entries"] == before["rpc.retained_entries"]);
  CHECK(after["rpc.duplicate_replayed"] == before["rpc.duplicate_replayed"]);
}

// A ROUTER that answers each request with what `answer` makes of its request id.
class FakeServer {
 public:
  using Answer = std::function<zmq::message_t(uint64_t requestId)>;
  FakeServer(zmq::context_t& context, Answer answer)
      : socket_(context, zmq::socket_type::router), answer_(std::move(answer)) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.bind("tcp://127.0.0.1:0");
    endpoint_ = socket_.get(zmq::sockopt::last_endpoint);
    thread_ = std::thread([this] { run(); });
  }
  ~FakeServer() {
    stop_ = true;
    thread_.join();
  }
  const std::string& endpoint() const { return endpoint_; }

 private:
  void run() {
    while (!stop_) {
      zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
      if (zmq::poll(&item, 1, 50ms) == 0) continue;
      std::vector<zmq::message_t> frames;
      if (!zmq::recv_multipart(socket_, std::back_inserter(frames))) continue;
      rpc::wire::HeaderFrame header(frames[1]);
      std::vector<zmq::message_t> out;
      out.push_back(std::move(frames[0]));
      out.push_back(answer_(header.get().requestId));
      zmq::send_multipart(socket_, out);
    }
  }
  zmq::socket_t socket_;
  Answer answer_;
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST_CASE("a client survives replies built to be almost right", "[rpc][malformed][crafted]") {
  zmq::context_t context;
  std::atomic<int> mode{0};
  FakeServer fake(context, [&](uint64_t requestId) -> zmq::message_t {
    capnp::MallocMessageBuilder header;
    auto h = header.initRoot<idl::RpcHeader>();
    h.setRequestId(requestId);
    switch (mode.load()) {
      case 0:  // the whole reply is the 16-byte frame
        return crafted::frame(crafted::listAsRoot());
      case 1: {  // the status message of the wrong kind
        h.setStatus(StatusCode::NOT_FOUND);
        h.setMessage("gone");
        return crafted::frame(crafted::damaged(header, 2, crafted::Damage::kStructPointer));
      }
      case 2: {  // OK, with the results' text of the wrong kind
        auto headerFrame = rpc::toFrame(header);
        capnp::MallocMessageBuilder results;
        results.initRoot<TestService::EchoResults>().setText("hi");
        return crafted::frame(crafted::damaged(results, 0, crafted::Damage::kCapability),
                              &headerFrame);
      }
      default: {  // well-formed
        auto headerFrame = rpc::toFrame(header);
        capnp::MallocMessageBuilder results;
        results.initRoot<TestService::EchoResults>().setText("fine");
        return crafted::frame(crafted::bytesOf(rpc::toFrame(results)), &headerFrame);
      }
    }
  });
  rpc::ClientThread client(context);
  auto channel = client.channel(fake.endpoint());
  for (int m : {0, 1}) {
    mode = m;
    auto r = echo(channel, "x", 300ms);  // dropped unread: the call runs out
    CHECK(r.status.code == StatusCode::DEADLINE_EXCEEDED);
  }
  mode = 2;
  auto bad = echo(channel, "x");
  REQUIRE(bad.status.ok());
  try {
    bad.results<TestService::EchoResults>();
    FAIL("malformed results were read");
  } catch (const RpcError& e) {
    CHECK(e.code() == StatusCode::INTERNAL);
    CHECK_THAT(e.detail(), Catch::StartsWith("malformed reply: results.text: "));
  }
  mode = 3;
  auto good = echo(channel, "x");
  REQUIRE(good.status.ok());
  CHECK(echoText(good) == "fine");
}

TEST_CASE("a callback that throws costs no other call its reply", "[rpc][errors]") {
  TestServer server;
  zmq::context_t context;
  rpc::Connection connection(context, server.endpoint);
  int answered = 0;
  for (int i = 0; i < 10; ++i)
    connection.call(kTest, method("echo"), echoParams("x"), timeout(5s), [&, i](rpc::Reply) {
      ++answered;
      if (i % 2 == 0) throw std::runtime_error("callback bug");
      if (i == 5) throw kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__);
    });
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (answered < 10 && std::chrono::steady_clock::now() < deadline) {
    auto items = connection.pollItems();
    zmq::poll(items.data(), items.size(), 50ms);
    connection.process();
  }
  CHECK(answered == 10);
  CHECK(connection.counters().callbackErrors == 6);
}

TEST_CASE("an endpoint that cannot be connected to fails its calls, and no others",
          "[rpc][errors]") {
  TestServer server;
  zmq::context_t context;
  rpc::ClientThread client(context);
  auto bad = client.channel("tcp://127.0.0.1");  // no port: connect() refuses it
  auto start = std::chrono::steady_clock::now();
  auto r = bad.callSync(kTest, method("echo"), echoParams("x"), timeout(5s));
  CHECK(std::chrono::steady_clock::now() - start < 3s);  // at once, not at the deadline
  CHECK(r.status.code == StatusCode::UNAVAILABLE);
  CHECK_THAT(r.status.message, Catch::Contains("cannot connect"));
  // The thread goes on serving the good endpoint, and the bad one again.
  auto good = client.channel(server.endpoint);
  for (int i = 0; i < 3; ++i) {
    REQUIRE(echo(good, "fine").status.ok());
    CHECK(bad.callSync(kTest, method("echo"), echoParams("x"), timeout(5s)).status.code ==
          StatusCode::UNAVAILABLE);
  }
}

// ---- per-method statistics ----

namespace {

std::map<std::string, double> flatStats(const rpc::Channel& channel) {
  CallSettings settings;
  settings.timeout = 3s;
  return rpc::flatten(AdminClient(channel, settings).stats());
}

size_t seriesOf(const rpc::Channel& channel, const std::string& family) {
  CallSettings settings;
  settings.timeout = 3s;
  for (auto& f : AdminClient(channel, settings).stats())
    if (f.name == family) return f.samples.size();
  return 0;
}

}  // namespace

TEST_CASE("rpc.server.calls counts each method by status code and times it", "[rpc][stats]") {
  TestServer server;
  zmq::context_t context;
  rpc::ClientThread client(context);
  auto channel = client.channel(server.endpoint);
  constexpr int kOk = 25, kFailed = 7, kUnknown = 9;
  for (int i = 0; i < kOk; ++i) REQUIRE(echo(channel, "x").status.ok());
  for (int i = 0; i < kFailed; ++i) {
    auto r = channel.callSync(kTest, method("fail"), params<TestService::FailParams>([](auto p) {
                                p.setCode(static_cast<uint16_t>(StatusCode::NOT_FOUND));
                                p.setMessage("gone");
                              }),
                              {});
    REQUIRE(r.status.code == StatusCode::NOT_FOUND);
  }
  for (int i = 0; i < kUnknown; ++i) {
    // Invented methods of a served interface and invented interfaces alike.
    auto r = i % 2 ? channel.callSync(kTest, static_cast<uint16_t>(100 + i), zmq::message_t(), {})
                   : channel.callSync(0xabcdef00 + i, 0, zmq::message_t(), {});
    REQUIRE(r.status.code == StatusCode::UNIMPLEMENTED);
  }
  auto s = flatStats(channel);
  CHECK(s["rpc.server.calls{method=TestService.echo,code=ok}"] == kOk);
  CHECK(s["rpc.server.calls{method=TestService.fail,code=not_found}"] == kFailed);
  CHECK(s.count("rpc.server.calls{method=TestService.fail,code=ok}") == 0);
  CHECK(s["rpc.server.calls{method=_unknown,code=unimplemented}"] == kUnknown);
  CHECK(s["rpc.server.duration_seconds_count{method=TestService.echo}"] == kOk);
  CHECK(s["rpc.server.duration_seconds_count{method=TestService.fail}"] == kFailed);
  CHECK(s["rpc.server.duration_seconds_count{method=_unknown}"] == kUnknown);
  CHECK(s["rpc.server.duration_seconds_sum{method=TestService.echo}"] > 0);
  CHECK(s["rpc.server.duration_seconds_sum{method=TestService.echo}"] < kOk * 1.0);
  // Admin is served too; this collection counts the one before it.
  CHECK(s["rpc.server.calls{method=Admin.stats,code=ok}"] == 0);
  CHECK(flatStats(channel)["rpc.server.calls{method=Admin.stats,code=ok}"] == 1);

  SECTION("a call dropped at its deadline is counted when dropped") {
    auto r = channel.callSync(kTest, method("sleep"), sleepParams(3000), timeout(200ms));
    CHECK(r.status.code == StatusCode::DEADLINE_EXCEEDED);
    REQUIRE(eventually([&] {
      return flatStats(
                 channel)["rpc.server.calls{method=TestService.sleep,code=deadline_exceeded}"] == 1;
    }));
    auto after = flatStats(channel);
    CHECK(after["rpc.server.duration_seconds_count{method=TestService.sleep}"] == 1);
    CHECK(after["rpc.server.duration_seconds_sum{method=TestService.sleep}"] >= 0.19);
  }
  SECTION("a deferred reply is timed at the reply") {
    auto r = channel.callSync(kTest, method("sleep"), sleepParams(120), timeout(3s));
    REQUIRE(r.status.ok());
    auto after = flatStats(channel);
    CHECK(after["rpc.server.calls{method=TestService.sleep,code=ok}"] == 1);
    CHECK(after["rpc.server.duration_seconds_sum{method=TestService.sleep}"] >= 0.11);
  }
}

TEST_CASE("invented method ids leave rpc.server.calls with a bounded set of series",
          "[rpc][stats]") {
  TestServer server;
  zmq::context_t context;
  rpc::ClientThread client(context);
  auto channel = client.channel(server.endpoint);
  REQUIRE(echo(channel, "x").status.ok());
  std::mt19937_64 random(42);
  constexpr int kCalls = 10000;
  constexpr int kWindow = 500;  // well under the high-water marks
  int unimplemented = 0;
  for (int sent = 0; sent < kCalls; sent += kWindow) {
    std::atomic<int> answered{0}, refused{0};
    std::mutex mutex;
    std::condition_variable done;
    for (int i = 0; i < kWindow; ++i) {
      uint64_t interfaceId = i % 2 ? kTest : random();
      auto methodId = static_cast<uint16_t>(20 + random() % 60000);
      channel.callAsync(interfaceId, methodId, zmq::message_t(), timeout(30s),
                        [&](rpc::Reply reply) {
                          if (reply.status.code == StatusCode::UNIMPLEMENTED) ++refused;
                          std::lock_guard lock(mutex);
                          if (++answered == kWindow) done.notify_all();
                        });
    }
    std::unique_lock lock(mutex);
    REQUIRE(done.wait_for(lock, 30s, [&] { return answered == kWindow; }));
    unimplemented += refused;
  }
  CHECK(unimplemented == kCalls);
  auto s = flatStats(channel);
  CHECK(s["rpc.server.calls{method=_unknown,code=unimplemented}"] == kCalls);
  CHECK(s["rpc.server.duration_seconds_count{method=_unknown}"] == kCalls);
  // echo, _unknown, and Admin.stats: nothing per invented id.
  CHECK(seriesOf(channel, "rpc.server.calls") <= 4);
  CHECK(seriesOf(channel, "rpc.server.duration_seconds") <= 4);
  CHECK(s.count("metrics.series_folded") == 0);
}
