// zmesh-bench: load generators for bench/*.sh. Prints one line of results per
// run, "key=value" pairs, for the scripts to put side by side with the peer's.
//
//   zmesh-bench echo --transport tcp|ipc --server raw|rpc [--client raw]
//       --connections 1 --window 64 --seconds 3
//   zmesh-bench idgen --endpoint tcp://127.0.0.1:7110 --connections 50
//       --window 1 --count 1 --requests 200000
//   zmesh-bench ratelimit --endpoint tcp://127.0.0.1:7120 --connections 50
//       --window 1 --rule fixed_window --keys 1000000 --batch 16 --seconds 3
//   zmesh-bench stats --endpoint tcp://127.0.0.1:7120   (Admin.stats, name=value)
#include <sys/epoll.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <zmq_addon.hpp>

#include "testsvc.capnp.h"
#include "wire.h"
#include "zmesh/idl/admin.capnp.h"
#include "zmesh/idl/idgen.capnp.h"
#include "zmesh/idl/ratelimit.capnp.h"
#include "zmesh/rpc/client.h"
#include "zmesh/rpc/server.h"

using namespace zmesh;
using Clock = std::chrono::steady_clock;

namespace {

// The smallest useful echo service: only TestService.echo is implemented.
class Echo final : public test::TestService::Server {
 public:
  kj::Promise<void> echo(EchoContext context) override {
    context.getResults().setText(context.getParams().getText());
    return kj::READY_NOW;
  }
};

struct Load {
  std::vector<std::unique_ptr<rpc::Connection>> connections;
  uint64_t interfaceId;
  uint16_t methodId;
  // Built once and copied per call, as redis-benchmark builds its command once;
  // calls take them in turn (one a namespace with --namespaces).
  std::vector<zmq::message_t> params;
  // ratelimit --keys N > 1: where the 12 digits of each check's key sit in the
  // params (one place per check of a batch). Each call's copy gets the next
  // keys written there, as redis-benchmark writes __rand_int__ into its
  // command. Key number d of the run is (d × keyStride) mod keys: every key
  // once per `keys` checks, in an order unrelated to the order they were
  // first filled in (sequential: keyStride 1).
  std::vector<size_t> keyOffsets;
  uint64_t keys = 1, keyStride = 1, nextKey = 0;
  // Sees every 16th reply that succeeded (ratelimit: counts what it decided).
  std::function<void(rpc::Reply&)> sample;

  zmq::message_t paramsFor(uint64_t call) {
    zmq::message_t& model = params[call % params.size()];
    zmq::message_t out;
    if (keyOffsets.empty()) {
      out.copy(model);  // shares the buffer: nothing in it changes
      return out;
    }
    // Its own buffer: libzmq may still be sending an earlier copy.
    out.rebuild(model.data(), model.size());
    auto* bytes = static_cast<char*>(out.data());
    for (size_t at : keyOffsets) {
      uint64_t k = (nextKey++ % keys) * keyStride % keys;
      for (int i = 11; i >= 0; --i, k /= 10) bytes[at + i] = static_cast<char>('0' + k % 10);
    }
    return out;
  }
};

struct Result {
  uint64_t done = 0, failed = 0;
  double seconds = 0;
  std::vector<double> latenciesUs;
};

// Level-triggered epoll over the load generator's sockets' fds, tagged by
// connection index: a wake-up costs what became ready, not one ZMQ_EVENTS per
// connection as zmq_poll does (redis-benchmark waits on its sockets the same way).
class Epoll {
 public:
  explicit Epoll(size_t capacity) : fd_(::epoll_create1(EPOLL_CLOEXEC)), ready_(capacity) {
    if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1");
  }
  ~Epoll() { ::close(fd_); }
  Epoll(const Epoll&) = delete;
  Epoll& operator=(const Epoll&) = delete;
  void add(int fd, uint32_t index) {
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.u32 = index;
    if (::epoll_ctl(fd_, EPOLL_CTL_ADD, fd, &e) != 0)
      throw std::system_error(errno, std::generic_category(), "epoll_ctl");
  }
  // The indexes of what became readable; empty after `ms` with nothing.
  std::vector<uint32_t>& wait(int ms) {
    int n = ::epoll_wait(fd_, ready_.data(), static_cast<int>(ready_.size()), ms);
    if (n < 0 && errno != EINTR) throw std::system_error(errno, std::generic_category(), "epoll");
    indexes_.clear();
    for (int i = 0; i < n; ++i) indexes_.push_back(ready_[i].data.u32);
    return indexes_;
  }

 private:
  int fd_;
  std::vector<epoll_event> ready_;
  std::vector<uint32_t> indexes_;
};

// Keeps `window` calls in flight on every connection until `requests` are done
// (or `seconds` pass), on this one thread, as redis-benchmark does.
Result drive(Load& load, int window, uint64_t requests, double seconds) {
  Result r;
  uint64_t started = 0;
  auto begin = Clock::now();
  auto end = begin + std::chrono::duration<double>(seconds);
  bool recordLatency = load.connections.size() == 1 && window == 1;
  rpc::CallOptions options;
  options.timeout = std::chrono::seconds(10);
  std::function<void(rpc::Connection&)> issue;
  // What a reply needs, behind one pointer: the callback stays small enough
  // for std::function to hold without an allocation per call.
  struct Shared {
    Result& r;
    bool recordLatency;
    std::function<void(rpc::Connection&)>& issue;
    std::function<void(rpc::Reply&)>& sample;
  } shared{r, recordLatency, issue, load.sample};
  issue = [&](rpc::Connection& c) {
    if (started >= requests || Clock::now() >= end) return;
    zmq::message_t params = load.paramsFor(started);
    ++started;
    auto sent = recordLatency ? Clock::now() : Clock::time_point();
    c.call(load.interfaceId, load.methodId, std::move(params), options,
           [s = &shared, conn = &c, sent](rpc::Reply reply) {
             if (reply.status.ok()) {
               if ((++s->r.done & 15) == 0 && s->sample) s->sample(reply);
             } else {
               ++s->r.failed;
             }
             if (s->recordLatency)
               s->r.latenciesUs.push_back(
                   std::chrono::duration<double, std::micro>(Clock::now() - sent).count());
             s->issue(*conn);
           });
  };
  for (auto& c : load.connections)
    for (int i = 0; i < window; ++i) issue(*c);
  Epoll epoll(load.connections.size());
  for (uint32_t i = 0; i < load.connections.size(); ++i)
    for (int fd : load.connections[i]->fds()) epoll.add(fd, i);
  auto serve = [](rpc::Connection& c) {
    do c.process();
    while (c.hasWork());
  };
  for (auto& c : load.connections) serve(*c);
  while (r.done + r.failed < started) {
    auto& ready = epoll.wait(100);
    if (ready.empty())  // deadlines and retries
      for (auto& c : load.connections) serve(*c);
    for (uint32_t i : ready) serve(*load.connections[i]);
  }
  r.seconds = std::chrono::duration<double>(Clock::now() - begin).count();
  return r;
}

// The floor under any RPC layer on libzmq: bare DEALERs sending the frame a
// zmesh call sends (an RpcHeader, then the params) to the bare ROUTER echo,
// with the same epoll loop and the same window, and no matching, deadlines or
// decoding.
Result driveRaw(zmq::context_t& context, const std::string& endpoint, int connections,
                zmq::message_t& params, int window, double seconds) {
  rpc::wire::RequestHeader h;
  h.requestId = 1;
  h.interfaceId = capnp::typeId<test::TestService>();
  h.budgetMs = 10000;
  zmq::message_t request = rpc::wire::encodeRequest(h, params);
  std::vector<zmq::socket_t> dealers;
  for (int i = 0; i < connections; ++i) {
    dealers.emplace_back(context, zmq::socket_type::dealer);
    dealers.back().set(zmq::sockopt::linger, 0);
    dealers.back().set(zmq::sockopt::rcvtimeo, 5000);  // bounds the warm-up below
    dealers.back().connect(endpoint);
  }
  bool recordLatency = connections == 1 && window == 1;
  std::vector<Clock::time_point> sentAt(dealers.size());
  auto send = [&](uint32_t i) {
    zmq::message_t copy;
    copy.copy(request);
    if (recordLatency) sentAt[i] = Clock::now();
    dealers[i].send(copy, zmq::send_flags::none);
  };
  std::vector<zmq::message_t> frames;
  // Warm up (connect, first allocations) with one round trip per connection.
  for (uint32_t i = 0; i < dealers.size(); ++i) {
    send(i);
    frames.clear();
    if (!zmq::recv_multipart(dealers[i], std::back_inserter(frames)))
      throw std::runtime_error("no echo from " + endpoint);
  }
  Epoll epoll(dealers.size());
  for (uint32_t i = 0; i < dealers.size(); ++i) epoll.add(dealers[i].get(zmq::sockopt::fd), i);
  Result r;
  bool sending = true;
  uint64_t inFlight = 0;
  auto begin = Clock::now();
  auto end = begin + std::chrono::duration<double>(seconds);
  // Receives until EAGAIN, sending one request per reply while the time lasts,
  // and again while ZMQ_EVENTS says readable (a send can take the fd's edge).
  auto serve = [&](uint32_t i) {
    auto& d = dealers[i];
    do {
      while (true) {
        frames.clear();
        if (!zmq::recv_multipart(d, std::back_inserter(frames), zmq::recv_flags::dontwait)) break;
        ++r.done;
        --inFlight;
        if (recordLatency)
          r.latenciesUs.push_back(
              std::chrono::duration<double, std::micro>(Clock::now() - sentAt[i]).count());
        if (sending && Clock::now() < end) {
          send(i);
          ++inFlight;
        } else {
          sending = false;
        }
      }
    } while (d.get(zmq::sockopt::events) & ZMQ_POLLIN);
  };
  for (uint32_t i = 0; i < dealers.size(); ++i)
    for (int w = 0; w < window; ++w, ++inFlight) send(i);
  for (uint32_t i = 0; i < dealers.size(); ++i) serve(i);
  while (inFlight > 0 && Clock::now() < end + std::chrono::seconds(10))
    for (uint32_t i : epoll.wait(100)) serve(i);
  r.failed = inFlight;
  r.seconds = std::chrono::duration<double>(Clock::now() - begin).count();
  return r;
}

void report(const char* name, const Result& r, int connections, int window) {
  std::printf("%s connections=%d window=%d calls=%llu failed=%llu seconds=%.3f calls_per_s=%.0f",
              name, connections, window, static_cast<unsigned long long>(r.done),
              static_cast<unsigned long long>(r.failed), r.seconds, r.done / r.seconds);
  if (!r.latenciesUs.empty()) {
    auto l = r.latenciesUs;
    std::sort(l.begin(), l.end());
    std::printf(" p50_us=%.1f p99_us=%.1f", l[l.size() / 2], l[l.size() * 99 / 100]);
  }
  std::printf("\n");
  std::fflush(stdout);
}

// A bare ROUTER echo: the floor any RPC layer is measured against.
void rawEchoServer(zmq::context_t& context, const std::string& endpoint, std::atomic<bool>& stop,
                   std::atomic<bool>& ready) {
  zmq::socket_t router(context, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.bind(endpoint);
  ready = true;
  std::vector<zmq::message_t> frames;
  while (!stop) {
    zmq::pollitem_t item{router.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(100));
    for (int i = 0; i < 256; ++i) {
      frames.clear();
      if (!zmq::recv_multipart(router, std::back_inserter(frames), zmq::recv_flags::dontwait))
        break;
      // Reply with what came: the client reads the header it sent as an OK
      // reply (same request id, status 0) and the params as the results.
      zmq::send_multipart(router, frames, zmq::send_flags::dontwait);
    }
  }
}

// A stride through `keys` that visits each once (coprime with it) and puts
// consecutive checks far apart: the golden section of the range.
uint64_t scatterStride(uint64_t keys) {
  if (keys <= 2) return 1;
  uint64_t stride = keys * 618 / 1000 | 1;
  while (std::gcd(stride, keys) != 1) stride += 2;
  return stride;
}

// RateLimit.check or checkBatch params naming `rule` and a 16-character key
// (prefix + 12 digits, redis-benchmark -r's shape); with keys > 1 the digits
// are placeholders whose offsets go into load.keyOffsets.
void rateLimitParams(Load& load, const std::string& rule, const std::string& prefix, uint64_t keys,
                     uint32_t batch) {
  const std::string key = prefix + (keys > 1 ? "############" : "000000000000");
  capnp::MallocMessageBuilder m(64);
  if (batch == 0) {
    auto p = m.initRoot<idl::RateLimit::CheckParams>();
    p.setRule(rule);
    p.setKey(key);
  } else {
    auto checks = m.initRoot<idl::RateLimit::CheckBatchParams>().initChecks(batch);
    for (auto c : checks) {
      c.setRule(rule);
      c.setKey(key);
    }
  }
  load.params.push_back(rpc::toFrame(m));
  if (keys <= 1) return;
  std::string_view bytes(static_cast<const char*>(load.params[0].data()), load.params[0].size());
  for (size_t at = bytes.find("############"); at != std::string_view::npos;
       at = bytes.find("############", at + 12))
    load.keyOffsets.push_back(at);
  if (load.keyOffsets.size() != std::max<uint32_t>(batch, 1))
    throw std::runtime_error("ratelimit params: key placeholders not found");
  load.keys = keys;
}

// Admin.stats of the process at `endpoint`, one "name=value" word per counter.
int printStats(zmq::context_t& context, const std::string& endpoint) {
  rpc::ConnectionOptions o;
  o.monitor = false;
  rpc::Connection c(context, endpoint, o);
  rpc::CallOptions options;
  options.timeout = std::chrono::seconds(5);
  std::optional<int> code;
  c.call(capnp::typeId<idl::Admin>(),
         rpc::methodOrdinal(capnp::Schema::from<idl::Admin>(), "stats"), zmq::message_t(), options,
         [&](rpc::Reply reply) {
           if (!reply.status.ok()) {
             std::fprintf(stderr, "Admin.stats: %s\n", reply.status.message.c_str());
             code = 1;
             return;
           }
           for (auto counter : reply.results<idl::Admin::StatsResults>().getCounters())
             std::printf("%s=%lld ", counter.getName().cStr(),
                         static_cast<long long>(counter.getValue()));
           std::printf("\n");
           code = 0;
         });
  while (!code) {
    auto items = c.pollItems();
    zmq::poll(items.data(), items.size(), std::chrono::milliseconds(100));
    c.process();
  }
  return *code;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"zmesh-bench: load generators for bench/"};
  app.require_subcommand(1);
  std::string transport = "tcp", serverKind = "rpc", endpoint = "tcp://127.0.0.1:7110",
              ns = "bench";
  int connections = 1, window = 1;
  uint32_t count = 1;
  uint64_t requests = UINT64_MAX;
  double seconds = 3;
  auto* echo =
      app.add_subcommand("echo", "echo round trips against an in-process raw or rpc server");
  echo->add_option("--transport", transport, "tcp|ipc")->check(CLI::IsMember({"tcp", "ipc"}));
  echo->add_option("--server", serverKind, "raw|rpc")->check(CLI::IsMember({"raw", "rpc"}));
  std::string clientKind = "rpc";
  echo->add_option("--client", clientKind,
                   "rpc, or raw: bare DEALERs, the floor (needs --server raw)")
      ->check(CLI::IsMember({"raw", "rpc"}));
  auto* idgen = app.add_subcommand("idgen", "IdGen.next against a running zmesh-idgen");
  idgen->add_option("--endpoint", endpoint);
  idgen->add_option("--count", count, "ids per call");
  idgen->add_option("--namespace", ns);
  size_t namespaces = 1;
  idgen
      ->add_option("--namespaces", namespaces,
                   "calls go round-robin over this many namespaces, <namespace>:000000000000 and "
                   "on (redis-benchmark -r's key shape)")
      ->check(CLI::Range(size_t{1}, size_t{1'000'000}));
  auto* ratelimit = app.add_subcommand(
      "ratelimit", "RateLimit.check (or checkBatch) against a running zmesh-ratelimit");
  std::string rule = "fixed_window", keyPrefix = "key:", order = "scattered",
              rateLimitEndpoint = "tcp://127.0.0.1:7120";
  ratelimit->add_option("--endpoint", rateLimitEndpoint);
  uint64_t keys = 1;
  uint32_t batch = 0;
  ratelimit->add_option("--rule", rule, "the rule every check names");
  ratelimit
      ->add_option("--keys", keys,
                   "1: one hot key, <prefix>000000000000; N: every check the next of N keys, "
                   "<prefix>000000000000 to <prefix>N-1 (redis-benchmark -r's key shape)")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1'000'000'000'000}));
  ratelimit->add_option("--key-prefix", keyPrefix);
  ratelimit
      ->add_option("--order", order,
                   "scattered: key (d × a stride coprime with N) mod N for check d; "
                   "sequential: d mod N (filling)")
      ->check(CLI::IsMember({"scattered", "sequential"}));
  ratelimit->add_option("--batch", batch, "0: RateLimit.check; B: checkBatch of B checks per call")
      ->check(CLI::Range(0u, 1000u));
  auto* stats = app.add_subcommand("stats", "Admin.stats of a running process, name=value");
  stats->add_option("--endpoint", endpoint);
  int warmup = 100;
  for (auto* sub : {echo, idgen, ratelimit}) {
    sub->add_option("--warmup", warmup,
                    "calls per connection before measuring (0: none; --client raw: one)")
        ->check(CLI::Range(0, 1'000'000));
    sub->add_option("--connections", connections)->check(CLI::Range(1, 1000));
    sub->add_option("--window", window, "calls in flight per connection")
        ->check(CLI::Range(1, 100000));
    sub->add_option("--requests", requests);
    sub->add_option("--seconds", seconds);
  }
  CLI11_PARSE(app, argc, argv);
  if (clientKind == "raw" && serverKind != "raw") {
    // The rpc server would answer a repeated request id from its record.
    std::fprintf(stderr, "--client raw needs --server raw\n");
    return 2;
  }

  // The server side gets a context (and so a libzmq I/O thread) of its own, as
  // it has when it runs as its own process; sharing one I/O thread between
  // both ends made that thread the bottleneck of the measurement.
  zmq::context_t context, serverContext;
  if (app.got_subcommand("stats")) return printStats(context, endpoint);
  Load load;
  std::thread serverThread;
  std::atomic<bool> stop{false}, ready{false};
  rpc::Server* rpcServer = nullptr;
  std::optional<double> requestsPerWakeup;  // the rpc server's, once it has stopped

  if (app.got_subcommand("echo")) {
    endpoint = transport == "tcp" ? "tcp://127.0.0.1:0"
                                  : "ipc:///tmp/zmesh-bench-" + std::to_string(::getpid());
    if (serverKind == "raw") {
      if (transport == "tcp")
        endpoint = "tcp://127.0.0.1:" + std::to_string(17000 + ::getpid() % 20000);
      serverThread = std::thread(rawEchoServer, std::ref(serverContext), endpoint, std::ref(stop),
                                 std::ref(ready));
    } else {
      serverThread = std::thread([&] {
        rpc::ServerOptions o;
        o.name = "bench";
        o.endpoints = {endpoint};
        rpc::Server server(serverContext, o);
        server.serve<test::TestService>(kj::heap<Echo>());
        server.bind();
        endpoint = server.boundEndpoints().front();
        rpcServer = &server;
        ready = true;
        server.run();
        const auto& c = server.counters();
        requestsPerWakeup = c.wakeups ? static_cast<double>(c.requests) / c.wakeups : 0.0;
      });
    }
    while (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    load.interfaceId = capnp::typeId<test::TestService>();
    load.methodId = rpc::methodOrdinal(capnp::Schema::from<test::TestService>(), "echo");
    capnp::MallocMessageBuilder m(16);
    m.initRoot<test::TestService::EchoParams>().setText("0123456789abcdef");
    load.params.push_back(rpc::toFrame(m));
  } else if (app.got_subcommand("ratelimit")) {
    endpoint = rateLimitEndpoint;
    load.interfaceId = capnp::typeId<idl::RateLimit>();
    load.methodId = rpc::methodOrdinal(capnp::Schema::from<idl::RateLimit>(),
                                       batch == 0 ? "check" : "checkBatch");
    rateLimitParams(load, rule, keyPrefix, keys, batch);
    load.keyStride = order == "scattered" ? scatterStride(keys) : 1;
  } else {
    load.interfaceId = capnp::typeId<idl::IdGen>();
    load.methodId = rpc::methodOrdinal(capnp::Schema::from<idl::IdGen>(), "next");
    for (size_t i = 0; i < namespaces; ++i) {
      capnp::MallocMessageBuilder m(16);
      auto p = m.initRoot<idl::IdGen::NextParams>();
      char suffix[24];
      std::snprintf(suffix, sizeof suffix, ":%012zu", i);
      p.setNamespace(namespaces == 1 ? ns : ns + suffix);
      p.setCount(count);
      load.params.push_back(rpc::toFrame(m));
    }
  }
  Result result;
  uint64_t warmupCalls = 0;
  // ratelimit: what every 16th reply decided.
  uint64_t sampledDecisions = 0, sampledAllowed = 0;
  if (app.got_subcommand("ratelimit"))
    load.sample = [&](rpc::Reply& reply) {
      auto count = [&](idl::Decision::Reader d) {
        ++sampledDecisions;
        sampledAllowed += d.getAllowed();
      };
      if (batch == 0)
        count(reply.results<idl::RateLimit::CheckResults>().getDecision());
      else
        for (auto d : reply.results<idl::RateLimit::CheckBatchResults>().getDecisions()) count(d);
    };
  std::string name = app.got_subcommand("idgen") ? "idgen-next"
                     : app.got_subcommand("ratelimit")
                         ? (batch ? "ratelimit-checkbatch" : "ratelimit-check")
                         : "echo-" + serverKind + "-" + transport;
  if (clientKind == "raw") {
    result = driveRaw(context, endpoint, connections, load.params.front(), window, seconds);
    name += "-rawclient";
  } else {
    // No socket monitor per connection: a load generator has no reconnects to
    // handle, and redis-benchmark polls one socket per client too.
    rpc::ConnectionOptions connectionOptions;
    connectionOptions.monitor = false;
    for (int i = 0; i < connections; ++i)
      load.connections.push_back(
          std::make_unique<rpc::Connection>(context, endpoint, connectionOptions));
    // Warm up (connect, first allocations) before measuring, in the measured
    // shape: its calls count in a server's CPU per call.
    if (warmup > 0) warmupCalls = drive(load, window, uint64_t(warmup) * connections, 5).done;
    result = drive(load, window, requests, seconds);
  }
  report(name.c_str(), result, connections, window);
  // The warm-up's calls too, for a script that divides the server's CPU time by
  // every call it served.
  if (app.got_subcommand("idgen"))
    std::printf("ids_per_s=%.0f warmup_calls=%llu\n", result.done * count / result.seconds,
                static_cast<unsigned long long>(warmupCalls));
  if (app.got_subcommand("ratelimit"))
    std::printf(
        "decisions_per_s=%.0f batch=%u keys=%llu rule=%s warmup_calls=%llu "
        "allowed_sampled=%.4f\n",
        result.done * std::max<uint32_t>(batch, 1) / result.seconds, batch,
        static_cast<unsigned long long>(keys), rule.c_str(),
        static_cast<unsigned long long>(warmupCalls),
        sampledDecisions ? static_cast<double>(sampledAllowed) / sampledDecisions : 0.0);

  load.connections.clear();
  stop = true;
  if (rpcServer) rpcServer->requestStop();
  if (serverThread.joinable()) serverThread.join();
  // libzmq leaves an ipc endpoint's socket file behind when its context ends.
  if (endpoint.starts_with("ipc://")) ::unlink(endpoint.c_str() + 6);
  // How much each wake-up of the server's loop served (read once it stopped).
  if (requestsPerWakeup) std::printf("server requests_per_wakeup=%.1f\n", *requestsPerWakeup);
  return result.failed == 0 ? 0 : 1;
}
