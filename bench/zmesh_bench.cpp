// zmesh-bench: load generators for bench/*.sh. Prints one line of results per
// run, "key=value" pairs, for the scripts to put side by side with the peer's.
//
//   zmesh-bench echo --transport tcp|ipc --server raw|rpc [--client raw]
//       --connections 1 --window 64 --seconds 3
//   zmesh-bench idgen --endpoint tcp://127.0.0.1:7110 --connections 50
//       --window 1 --count 1 --requests 200000
//   zmesh-bench ratelimit --endpoint tcp://127.0.0.1:7120 --connections 50
//       --window 1 --rule fixed_window --keys 1000000 --batch 16 --seconds 3
//   zmesh-bench lock --server zmesh|etcd|redis --endpoint tcp://127.0.0.1:7130|127.0.0.1:2379
//       --clients 50 [--contended] --seconds 3   (acquire + release pairs)
//   zmesh-bench cache --endpoint tcp://127.0.0.1:7140 --clients 50 --pipeline 1
//       --keys 100000 --value-bytes 32 --ratio 1:0 --seconds 3 --warmup-seconds 0.5
//   zmesh-bench cache --endpoint tcp://127.0.0.1:7140 --load --keys 1000000 --batch 1000
//   zmesh-bench stats --endpoint tcp://127.0.0.1:7120   (Admin.stats, name=value)
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <zmq_addon.hpp>

#include "testsvc.capnp.h"
#include "wire.h"
#include "zmesh/idl/admin.capnp.h"
#include "zmesh/idl/cache.capnp.h"
#include "zmesh/idl/idgen.capnp.h"
#include "zmesh/idl/lock.capnp.h"
#include "zmesh/idl/ratelimit.capnp.h"
#include "zmesh/rpc/client.h"
#include "zmesh/rpc/metrics_wire.h"
#include "zmesh/rpc/server.h"

using namespace zmesh;
using Clock = std::chrono::steady_clock;

// operator new calls per thread, for `echo`'s allocations per call on each end
// (libzmq's own mallocs are not counted: the floor makes the same ones).
namespace {
thread_local uint64_t tAllocations = 0;
}  // namespace

// GCC sees free() meet operator new once these are inlined; they are the pair.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(size_t size) {
  ++tAllocations;
  if (void* p = std::malloc(size ? size : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t size) { return ::operator new(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

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
  // calls take them in turn (one a namespace with --namespaces; cache: the
  // gets and sets of --ratio).
  std::vector<zmq::message_t> params;
  // The method of each of `params` (cache: get or set); empty: methodId.
  std::vector<uint16_t> methods;
  // keys > 1: where the 12 digits of each key sit in each of `params` (one
  // place per check of a ratelimit batch, per entry of a cache mset). Each
  // call's copy gets the next keys written there, as redis-benchmark writes
  // __rand_int__ into its command. Key number d of the run is
  // (d × keyStride) mod keys: every key once per `keys` checks, in an order
  // unrelated to the order they were first filled in (sequential: keyStride
  // 1); with randomKeys, a uniform draw as redis-benchmark -r makes.
  std::vector<std::vector<size_t>> keyOffsets;
  uint64_t keys = 1, keyStride = 1, nextKey = 0;
  bool randomKeys = false;
  std::mt19937_64 rng{12345};
  // Sees every 16th reply that succeeded (ratelimit: counts what it decided).
  std::function<void(rpc::Reply&)> sample;

  uint16_t methodFor(uint64_t call) const {
    return methods.empty() ? methodId : methods[call % methods.size()];
  }
  zmq::message_t paramsFor(uint64_t call) {
    size_t which = call % params.size();
    zmq::message_t& model = params[which];
    zmq::message_t out;
    if (keyOffsets.empty() || keyOffsets[which].empty()) {
      out.copy(model);  // shares the buffer: nothing in it changes
      return out;
    }
    // Its own buffer: libzmq may still be sending an earlier copy.
    out.rebuild(model.data(), model.size());
    auto* bytes = static_cast<char*>(out.data());
    for (size_t at : keyOffsets[which]) {
      uint64_t k = randomKeys ? rng() % keys : (nextKey++ % keys) * keyStride % keys;
      for (int i = 11; i >= 0; --i, k /= 10) bytes[at + i] = static_cast<char>('0' + k % 10);
    }
    return out;
  }
};

struct Result {
  uint64_t done = 0, failed = 0;
  double seconds = 0;
  std::vector<double> latenciesUs;
  std::optional<double> clientAllocationsPerCall;  // echo with the rpc client
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
    Clock::time_point sent;  // latency is recorded with one call in flight
  } shared{r, recordLatency, issue, load.sample, {}};
  issue = [&](rpc::Connection& c) {
    if (started >= requests || Clock::now() >= end) return;
    uint16_t method = load.methodFor(started);
    zmq::message_t params = load.paramsFor(started);
    ++started;
    if (recordLatency) shared.sent = Clock::now();
    c.call(load.interfaceId, method, std::move(params), options,
           [s = &shared, conn = &c](rpc::Reply reply) {
             if (reply.status.ok()) {
               if ((++s->r.done & 15) == 0 && s->sample) s->sample(reply);
             } else {
               ++s->r.failed;
             }
             if (s->recordLatency)
               s->r.latenciesUs.push_back(
                   std::chrono::duration<double, std::micro>(Clock::now() - s->sent).count());
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
                zmq::message_t& params, int window, uint64_t requests, double seconds) {
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
  uint64_t inFlight = 0, started = 0;
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
        if (sending && started < requests && Clock::now() < end) {
          send(i);
          ++inFlight;
          ++started;
        } else {
          sending = false;
        }
      }
    } while (d.get(zmq::sockopt::events) & ZMQ_POLLIN);
  };
  for (uint32_t i = 0; i < dealers.size(); ++i)
    for (int w = 0; w < window && started < requests; ++w, ++inFlight, ++started) send(i);
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

// A bare ROUTER echo: the floor any RPC layer is measured against. `endpoint`
// becomes the one bound (tcp://127.0.0.1:*: a port the system chose) before
// `ready`.
void rawEchoServer(zmq::context_t& context, std::string& endpoint, std::atomic<bool>& stop,
                   std::atomic<bool>& ready) {
  zmq::socket_t router(context, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.bind(endpoint);
  endpoint = router.get(zmq::sockopt::last_endpoint);
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

// Notes where the "############" key placeholders of the params last added
// sit, in load.keyOffsets; returns how many there are.
size_t placeholders(Load& load) {
  const zmq::message_t& frame = load.params.back();
  std::string_view bytes(static_cast<const char*>(frame.data()), frame.size());
  load.keyOffsets.resize(load.params.size());
  auto& offsets = load.keyOffsets.back();
  for (size_t at = bytes.find("############"); at != std::string_view::npos;
       at = bytes.find("############", at + 12))
    offsets.push_back(at);
  return offsets.size();
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
  if (placeholders(load) != std::max<uint32_t>(batch, 1))
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
           for (auto& [name, value] :
                rpc::flatten(rpc::readFamilies(reply.results<idl::Admin::StatsResults>())))
             std::printf("%s=%g ", name.c_str(), value);
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

// ---- lock: acquire + release pairs against zmesh-lock, etcd or Redis ----

// What a lock run keeps, whichever server it drives: its clock, the pairs it
// counts, and on one contended lock the hand-offs. One holder at a time there,
// so grants and releases alternate: release k (in the order sent) hands the
// lock to grant k + 1 (in the order seen).
struct LockRun {
  bool contended = false;
  Clock::time_point measureFrom, end;
  uint64_t pairs = 0, grants = 0;  // in the measured window
  uint64_t allPairs = 0, calls = 0, failed = 0, busy = 0;
  std::string firstFailure;
  std::vector<double> pairUs;  // acquire sent to release answered, measured window
  struct Handoff {
    Clock::time_point sent, answered, granted;
    bool hasAnswer = false, hasGrant = false;
  };
  std::vector<Handoff> handoffs;
  uint64_t grantsSeen = 0;
  // The next grant after the release's reply came (negative: it came first),
  // and after the release was sent.
  std::vector<double> answerToGrantUs, sentToGrantUs;

  bool more(Clock::time_point now) const { return now < end; }
  bool measured(Clock::time_point t) const { return t >= measureFrom && t < end; }
  void fail(std::string why) {
    if (failed++ == 0) firstFailure = std::move(why);
  }
  void granted(Clock::time_point now) {
    if (measured(now)) ++grants;
    if (!contended || grantsSeen++ == 0) return;
    auto& h = handoffs.at(grantsSeen - 2);
    h.granted = now;
    h.hasGrant = true;
    record(h);
  }
  size_t releaseSent(Clock::time_point now) {
    if (!contended) return 0;
    handoffs.push_back({now, {}, {}});
    return handoffs.size() - 1;
  }
  void released(size_t k, Clock::time_point acquireSent, Clock::time_point now) {
    ++allPairs;
    if (measured(now)) {
      ++pairs;
      pairUs.push_back(std::chrono::duration<double, std::micro>(now - acquireSent).count());
    }
    if (!contended) return;
    auto& h = handoffs.at(k);
    h.answered = now;
    h.hasAnswer = true;
    record(h);
  }
  void record(const Handoff& h) {
    if (!h.hasAnswer || !h.hasGrant || !measured(h.granted)) return;
    answerToGrantUs.push_back(
        std::chrono::duration<double, std::micro>(h.granted - h.answered).count());
    sentToGrantUs.push_back(std::chrono::duration<double, std::micro>(h.granted - h.sent).count());
  }
};

struct Percentiles {
  double p50 = 0, p99 = 0, max = 0;
};
Percentiles percentiles(std::vector<double> v) {
  if (v.empty()) return {};
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v[v.size() * 99 / 100], v.back()};
}

// zmesh-lock: one rpc::Connection a client, the epoll loop of drive().
void driveLockZmesh(zmq::context_t& context, const std::string& endpoint,
                    const std::vector<std::string>& names, uint64_t ttlMs, uint64_t waitMs,
                    LockRun& run) {
  struct Client {
    std::unique_ptr<rpc::Connection> connection;
    std::string name, owner;
    zmq::message_t acquire;  // built once, copied per call
    uint64_t token = 0;
    Clock::time_point acquireSent;
  };
  rpc::ConnectionOptions connectionOptions;
  connectionOptions.monitor = false;
  std::vector<Client> clients(names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    auto& c = clients[i];
    c.connection = std::make_unique<rpc::Connection>(context, endpoint, connectionOptions);
    c.name = names[i];
    c.owner = "client-" + std::to_string(i);
    capnp::MallocMessageBuilder m(32);
    auto p = m.initRoot<idl::Lock::AcquireParams>();
    p.setName(c.name);
    p.setOwner(c.owner);
    p.setTtlMs(ttlMs);
    p.setWaitMs(waitMs);
    c.acquire = rpc::toFrame(m);
  }
  const uint64_t lockId = capnp::typeId<idl::Lock>();
  const auto schema = capnp::Schema::from<idl::Lock>();
  const uint16_t acquireId = rpc::methodOrdinal(schema, "acquire");
  const uint16_t releaseId = rpc::methodOrdinal(schema, "release");
  rpc::CallOptions options;
  options.timeout = std::chrono::milliseconds(waitMs + 10000);
  uint64_t outstanding = 0;
  std::function<void(Client&)> acquire, release;
  acquire = [&](Client& c) {
    auto now = Clock::now();
    if (!run.more(now)) return;
    zmq::message_t params;
    params.copy(c.acquire);
    c.acquireSent = now;
    ++outstanding;
    ++run.calls;
    c.connection->call(lockId, acquireId, std::move(params), options, [&, c = &c](rpc::Reply r) {
      --outstanding;
      auto at = Clock::now();
      if (!r.status.ok()) {
        run.fail("acquire: " + r.status.message);
        acquire(*c);
        return;
      }
      c->token = r.results<idl::Lock::AcquireResults>().getToken();
      run.granted(at);
      release(*c);
    });
  };
  release = [&](Client& c) {
    capnp::MallocMessageBuilder m(32);
    auto p = m.initRoot<idl::Lock::ReleaseParams>();
    p.setName(c.name);
    p.setOwner(c.owner);
    p.setToken(c.token);
    size_t k = run.releaseSent(Clock::now());
    ++outstanding;
    ++run.calls;
    c.connection->call(lockId, releaseId, rpc::toFrame(m), options, [&, c = &c, k](rpc::Reply r) {
      --outstanding;
      auto at = Clock::now();
      if (r.status.ok())
        run.released(k, c->acquireSent, at);
      else
        run.fail("release: " + r.status.message);
      acquire(*c);
    });
  };
  for (auto& c : clients) acquire(c);
  Epoll epoll(clients.size());
  for (uint32_t i = 0; i < clients.size(); ++i)
    for (int fd : clients[i].connection->fds()) epoll.add(fd, i);
  auto serve = [](rpc::Connection& c) {
    do c.process();
    while (c.hasWork());
  };
  for (auto& c : clients) serve(*c.connection);
  while (outstanding > 0) {
    auto& ready = epoll.wait(100);
    if (ready.empty())  // deadlines
      for (auto& c : clients) serve(*c.connection);
    for (uint32_t i : ready) serve(*clients[i].connection);
  }
}

// A request-reply protocol over TCP for driveLockTcp: etcd's JSON gateway, RESP.
class LockWire {
 public:
  enum class Outcome { ok, busy, failed };
  virtual ~LockWire() = default;
  // The length of the first whole reply in `buffer`; 0 while it is not whole.
  virtual size_t replyLength(std::string_view buffer) const = 0;
  virtual std::string acquire(size_t client) = 0;
  virtual Outcome acquired(size_t client, std::string_view reply) = 0;
  virtual std::string release(size_t client) = 0;
  virtual Outcome released(size_t client, std::string_view reply) = 0;
  // Blocking round trips on client `client`'s socket, before and after the run.
  virtual void setup(size_t, int) {}
  virtual void teardown(size_t, int) {}
};

int connectTcp(const std::string& hostPort) {
  auto colon = hostPort.rfind(':');
  if (colon == std::string::npos) throw std::runtime_error("endpoint: host:port, got " + hostPort);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(std::stoi(hostPort.substr(colon + 1))));
  if (::inet_pton(AF_INET, hostPort.substr(0, colon).c_str(), &a.sin_addr) != 1)
    throw std::runtime_error("endpoint: not an IPv4 address: " + hostPort);
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "socket");
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    int e = errno;
    ::close(fd);
    throw std::system_error(e, std::generic_category(), "connect " + hostPort);
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

void sendAll(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<size_t>(n));
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      pollfd p{fd, POLLOUT, 0};
      ::poll(&p, 1, 1000);
    } else {
      throw std::system_error(errno, std::generic_category(), "send");
    }
  }
}

// Reads what is there (all of it, non-blocking; blocking: at least something).
// False when the peer closed.
bool readSome(int fd, std::string& buffer) {
  char chunk[16384];
  while (true) {
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n > 0) {
      buffer.append(chunk, static_cast<size_t>(n));
      if (static_cast<size_t>(n) < sizeof chunk) return true;
    } else if (n == 0) {
      return false;
    } else if (errno == EAGAIN) {
      return true;
    } else if (errno != EINTR) {
      throw std::system_error(errno, std::generic_category(), "recv");
    }
  }
}

// One request and its whole reply on a blocking socket.
std::string roundTrip(int fd, const LockWire& wire, std::string_view request) {
  sendAll(fd, request);
  std::string buffer;
  size_t n;
  while ((n = wire.replyLength(buffer)) == 0)
    if (!readSome(fd, buffer)) throw std::runtime_error("connection closed by the server");
  return buffer.substr(0, n);
}

// etcd v3 through its JSON gRPC gateway (HTTP/1.1 keep-alive, one connection a
// client): POST /v3/lock/lock {name, lease} -> key, POST /v3/lock/unlock {key}.
// Each client holds one lease for the whole run, granted before it
// (/v3/lease/grant) and revoked after: the session etcd's concurrency.Mutex and
// `etcdctl lock` use, so a pair is two calls, as zmesh's is.
class EtcdWire final : public LockWire {
 public:
  EtcdWire(const std::vector<std::string>& names, uint64_t leaseSeconds)
      : leaseSeconds_(leaseSeconds), clients_(names.size()) {
    for (size_t i = 0; i < names.size(); ++i) clients_[i].name = base64(names[i]);
  }
  size_t replyLength(std::string_view b) const override {
    auto headerEnd = b.find("\r\n\r\n");
    if (headerEnd == std::string_view::npos) return 0;
    std::string header(b.substr(0, headerEnd));
    std::transform(header.begin(), header.end(), header.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    auto at = header.find("\r\ncontent-length:");
    if (at == std::string::npos)
      throw std::runtime_error("etcd reply without Content-Length: " + header);
    size_t length = std::stoul(header.substr(at + 17));
    size_t total = headerEnd + 4 + length;
    return b.size() >= total ? total : 0;
  }
  void setup(size_t i, int fd) override {
    auto reply = roundTrip(
        fd, *this, post("/v3/lease/grant", R"({"TTL":)" + std::to_string(leaseSeconds_) + "}"));
    clients_[i].lease = field(reply, "ID");
    if (status(reply) != 200 || clients_[i].lease.empty())
      throw std::runtime_error("etcd lease grant: " + reply);
  }
  void teardown(size_t i, int fd) override {
    roundTrip(fd, *this, post("/v3/lease/revoke", R"({"ID":")" + clients_[i].lease + R"("})"));
  }
  std::string acquire(size_t i) override {
    auto& c = clients_[i];
    return post("/v3/lock/lock", R"({"name":")" + c.name + R"(","lease":")" + c.lease + R"("})");
  }
  Outcome acquired(size_t i, std::string_view reply) override {
    clients_[i].key = field(reply, "key");
    return status(reply) == 200 && !clients_[i].key.empty() ? Outcome::ok : Outcome::failed;
  }
  std::string release(size_t i) override {
    return post("/v3/lock/unlock", R"({"key":")" + clients_[i].key + R"("})");
  }
  Outcome released(size_t, std::string_view reply) override {
    return status(reply) == 200 ? Outcome::ok : Outcome::failed;
  }

 private:
  struct Client {
    std::string name, lease, key;  // name and key base64, as the gateway has bytes
  };
  static std::string post(std::string_view path, const std::string& body) {
    std::string r = "POST ";
    r += path;
    r += " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ";
    r += std::to_string(body.size());
    r += "\r\n\r\n";
    r += body;
    return r;
  }
  static int status(std::string_view reply) {
    return reply.size() > 12 && reply.starts_with("HTTP/1.1 ") ? std::atoi(reply.data() + 9) : 0;
  }
  // The string value of "name" in the JSON body (the gateway's are flat enough).
  static std::string field(std::string_view reply, const std::string& name) {
    auto body = reply.find("\r\n\r\n");
    if (body == std::string_view::npos) return {};
    std::string pattern = "\"" + name + "\":\"";
    auto at = reply.find(pattern, body);
    if (at == std::string_view::npos) return {};
    at += pattern.size();
    auto close = reply.find('"', at);
    return close == std::string_view::npos ? std::string()
                                           : std::string(reply.substr(at, close - at));
  }
  static std::string base64(std::string_view in) {
    static const char* alphabet =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    uint32_t bits = 0;
    int n = 0;
    for (unsigned char ch : in) {
      bits = (bits << 8) | ch;
      n += 8;
      while (n >= 6) out += alphabet[(bits >> (n -= 6)) & 63];
    }
    if (n > 0) out += alphabet[(bits << (6 - n)) & 63];
    while (out.size() % 4) out += '=';
    return out;
  }
  uint64_t leaseSeconds_;
  std::vector<Client> clients_;
};

// Redis, the single-instance lock as its documentation gives it: SET key value
// NX PX ttl with a value unique to the grant, and a compare-and-delete script
// (EVALSHA) to release. No queue: a client that finds the lock held asks again
// at once (busy).
class RedisWire final : public LockWire {
 public:
  RedisWire(const std::vector<std::string>& names, uint64_t ttlMs)
      : ttl_(std::to_string(ttlMs)), clients_(names.size()) {
    for (size_t i = 0; i < names.size(); ++i) clients_[i].name = names[i];
  }
  size_t replyLength(std::string_view b) const override {
    auto line = b.find("\r\n");
    if (line == std::string_view::npos) return 0;
    if (b[0] != '$') return line + 2;  // +OK, -ERR, :1
    long length = std::atol(b.data() + 1);
    if (length < 0) return line + 2;  // $-1: nil
    size_t total = line + 2 + static_cast<size_t>(length) + 2;
    return b.size() >= total ? total : 0;
  }
  void setup(size_t i, int fd) override {
    if (i != 0) return;
    static const std::string script =
        "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) "
        "else return 0 end";
    auto reply = roundTrip(fd, *this, command({"SCRIPT", "LOAD", script}));
    auto line = reply.find("\r\n");
    if (reply[0] != '$' || line == std::string::npos)
      throw std::runtime_error("SCRIPT LOAD: " + reply);
    sha_ = reply.substr(line + 2, 40);
  }
  std::string acquire(size_t i) override {
    auto& c = clients_[i];
    c.value = "client-" + std::to_string(i) + ":" + std::to_string(++c.grants);
    return command({"SET", c.name, c.value, "NX", "PX", ttl_});
  }
  Outcome acquired(size_t, std::string_view reply) override {
    if (reply.starts_with("+OK")) return Outcome::ok;
    return reply.starts_with("$-1") ? Outcome::busy : Outcome::failed;
  }
  std::string release(size_t i) override {
    return command({"EVALSHA", sha_, "1", clients_[i].name, clients_[i].value});
  }
  Outcome released(size_t, std::string_view reply) override {
    return reply.starts_with(":1") ? Outcome::ok : Outcome::failed;
  }

 private:
  struct Client {
    std::string name, value;
    uint64_t grants = 0;
  };
  static std::string command(std::initializer_list<std::string_view> words) {
    std::string r = "*" + std::to_string(words.size()) + "\r\n";
    for (auto w : words) {
      r += "$" + std::to_string(w.size()) + "\r\n";
      r += w;
      r += "\r\n";
    }
    return r;
  }
  std::string ttl_, sha_;
  std::vector<Client> clients_;
};

// etcd and Redis: one TCP connection a client, one call in flight on each,
// level-triggered epoll, on this one thread (as driveLockZmesh and
// redis-benchmark do).
void driveLockTcp(const std::string& endpoint, size_t clients, LockWire& wire, LockRun& run) {
  struct Client {
    int fd = -1;
    std::string in;
    bool releasing = false;
    size_t handoff = 0;
    Clock::time_point acquireSent;
  };
  std::vector<Client> cs(clients);
  for (size_t i = 0; i < clients; ++i) {
    cs[i].fd = connectTcp(endpoint);
    wire.setup(i, cs[i].fd);
    ::fcntl(cs[i].fd, F_SETFL, ::fcntl(cs[i].fd, F_GETFL) | O_NONBLOCK);
  }
  uint64_t outstanding = 0;
  auto acquire = [&](size_t i) {
    auto now = Clock::now();
    if (!run.more(now)) return;
    cs[i].releasing = false;
    cs[i].acquireSent = now;
    ++outstanding;
    ++run.calls;
    sendAll(cs[i].fd, wire.acquire(i));
  };
  auto release = [&](size_t i) {
    cs[i].releasing = true;
    cs[i].handoff = run.releaseSent(Clock::now());
    ++outstanding;
    ++run.calls;
    sendAll(cs[i].fd, wire.release(i));
  };
  auto reply = [&](size_t i, std::string_view r) {
    --outstanding;
    auto at = Clock::now();
    auto& c = cs[i];
    if (c.releasing) {
      if (wire.released(i, r) == LockWire::Outcome::ok)
        run.released(c.handoff, c.acquireSent, at);
      else
        run.fail("release: " + std::string(r.substr(0, 200)));
      acquire(i);
      return;
    }
    switch (wire.acquired(i, r)) {
      case LockWire::Outcome::ok:
        run.granted(at);
        release(i);
        return;
      case LockWire::Outcome::busy:
        ++run.busy;
        acquire(i);
        return;
      case LockWire::Outcome::failed:
        run.fail("acquire: " + std::string(r.substr(0, 200)));
        acquire(i);
        return;
    }
  };
  Epoll epoll(clients);
  for (uint32_t i = 0; i < clients; ++i) epoll.add(cs[i].fd, i);
  for (size_t i = 0; i < clients; ++i) acquire(i);
  while (outstanding > 0) {
    for (uint32_t i : epoll.wait(100)) {
      auto& c = cs[i];
      if (!readSome(c.fd, c.in)) throw std::runtime_error("connection closed by the server");
      size_t n;
      while ((n = wire.replyLength(c.in)) > 0) {
        std::string r = c.in.substr(0, n);
        c.in.erase(0, n);
        reply(i, r);
      }
    }
  }
  for (size_t i = 0; i < clients; ++i) {
    ::fcntl(cs[i].fd, F_SETFL, ::fcntl(cs[i].fd, F_GETFL) & ~O_NONBLOCK);
    wire.teardown(i, cs[i].fd);
    ::close(cs[i].fd);
  }
}

struct LockFlags {
  std::string server = "zmesh", endpoint, tag = "bench";
  int clients = 1;
  bool contended = false;
  double seconds = 3, warmupSeconds = 0.5;
  uint64_t ttlMs = 30000, waitMs = 20000;
};

int runLock(zmq::context_t& context, const LockFlags& f) {
  // Each client its own name, or all of them one (and then they wait).
  std::vector<std::string> names;
  const char sep = f.server == "etcd" ? '/' : ':';
  for (int i = 0; i < f.clients; ++i)
    names.push_back("lockbench" + std::string(1, sep) + f.tag + sep +
                    (f.contended ? std::string("one") : std::to_string(i)));
  LockRun run;
  run.contended = f.contended;
  std::string endpoint = f.endpoint;
  rusage before{}, after{};
  ::getrusage(RUSAGE_SELF, &before);
  auto begin = Clock::now();
  run.measureFrom = begin + std::chrono::duration_cast<Clock::duration>(
                                std::chrono::duration<double>(f.warmupSeconds));
  run.end = run.measureFrom +
            std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(f.seconds));
  if (f.server == "zmesh") {
    if (endpoint.empty()) endpoint = "tcp://127.0.0.1:7130";
    driveLockZmesh(context, endpoint, names, f.ttlMs, f.contended ? f.waitMs : 0, run);
  } else if (f.server == "etcd") {
    if (endpoint.empty()) endpoint = "127.0.0.1:2379";
    // Outlives the run (and the drain after it); revoked at the end. The
    // grants, like every target's connecting, fall in the warm-up.
    EtcdWire wire(names, static_cast<uint64_t>(f.warmupSeconds + f.seconds) + 60);
    driveLockTcp(endpoint, names.size(), wire, run);
  } else {
    if (endpoint.empty()) endpoint = "127.0.0.1:6379";
    RedisWire wire(names, f.ttlMs);
    driveLockTcp(endpoint, names.size(), wire, run);
  }
  ::getrusage(RUSAGE_SELF, &after);
  auto cpuUs = [](const rusage& r) {
    return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1e6 + r.ru_utime.tv_usec + r.ru_stime.tv_usec;
  };
  double window = f.seconds;
  auto pair = percentiles(run.pairUs);
  std::printf(
      "lock-%s clients=%d contended=%d pairs=%llu pairs_per_s=%.0f grants_per_s=%.0f "
      "failed=%llu busy=%llu total_pairs=%llu calls=%llu seconds=%.3f pair_p50_us=%.1f "
      "pair_p99_us=%.1f client_cpu_us_per_pair=%.1f",
      f.server.c_str(), f.clients, f.contended ? 1 : 0, static_cast<unsigned long long>(run.pairs),
      run.pairs / window, run.grants / window, static_cast<unsigned long long>(run.failed),
      static_cast<unsigned long long>(run.busy), static_cast<unsigned long long>(run.allPairs),
      static_cast<unsigned long long>(run.calls), window, pair.p50, pair.p99,
      run.allPairs ? (cpuUs(after) - cpuUs(before)) / run.allPairs : 0.0);
  if (f.contended) {
    auto a = percentiles(run.answerToGrantUs), s = percentiles(run.sentToGrantUs);
    std::printf(
        " handoffs=%zu handoff_p50_us=%.1f handoff_p99_us=%.1f handoff_max_us=%.1f "
        "handoff_from_send_p50_us=%.1f handoff_from_send_p99_us=%.1f",
        run.answerToGrantUs.size(), a.p50, a.p99, a.max, s.p50, s.p99);
  }
  std::printf("\n");
  if (run.failed) std::fprintf(stderr, "first failure: %s\n", run.firstFailure.c_str());
  return run.failed == 0 ? 0 : 1;
}

// ---- cache: get and set (or an mset load) against zmesh-cache ----

struct CacheBenchFlags {
  std::string endpoint = "tcp://127.0.0.1:7140", keyPrefix = "key:", ratio = "1:1";
  int clients = 50, pipeline = 1;
  uint64_t keys = 100'000;
  size_t valueBytes = 32;
  double seconds = 3, warmupSeconds = 0.5;
  bool load = false;
  uint32_t batch = 1000;
};

// Cache.get and Cache.set on keys <prefix><12 digits> drawn uniformly from
// --keys (redis-benchmark -r's keys and draw), the value --value-bytes of 'x'
// (redis-benchmark -d's), --ratio gets to sets taken in turn; or, with
// --load, Cache.mset of --batch entries a call until every key is written
// once, in order.
int runCache(zmq::context_t& context, const CacheBenchFlags& f) {
  unsigned gets = 0, sets = 0;
  char tail = 0;
  if (std::sscanf(f.ratio.c_str(), "%u:%u%c", &gets, &sets, &tail) != 2 || gets + sets == 0 ||
      gets + sets > 1000) {
    std::fprintf(stderr, "--ratio: gets:sets such as 9:1, got '%s'\n", f.ratio.c_str());
    return 2;
  }
  if (unsigned g = std::gcd(gets, sets); g > 1) gets /= g, sets /= g;
  const auto schema = capnp::Schema::from<idl::Cache>();
  const std::string key = f.keyPrefix + "############", value(f.valueBytes, 'x');
  auto data = [](std::string_view s) {
    return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(s.data()), s.size());
  };
  Load load;
  load.interfaceId = capnp::typeId<idl::Cache>();
  load.keys = f.keys;
  if (f.load) {
    capnp::MallocMessageBuilder m(f.batch * 16 + 64);
    for (auto e : m.initRoot<idl::Cache::MsetParams>().initEntries(f.batch)) {
      e.setKey(data(key));
      e.setValue(data(value));
    }
    load.params.push_back(rpc::toFrame(m));
    load.methods.push_back(rpc::methodOrdinal(schema, "mset"));
  } else {
    for (unsigned i = 0; i < gets + sets; ++i) {
      capnp::MallocMessageBuilder m(32);
      if (i < gets) {
        m.initRoot<idl::Cache::GetParams>().setKey(data(key));
        load.methods.push_back(rpc::methodOrdinal(schema, "get"));
      } else {
        auto p = m.initRoot<idl::Cache::SetParams>();
        p.setKey(data(key));
        p.setValue(data(value));
        load.methods.push_back(rpc::methodOrdinal(schema, "set"));
      }
      load.params.push_back(rpc::toFrame(m));
      if (placeholders(load) != 1) throw std::runtime_error("cache params: no key placeholder");
    }
    load.randomKeys = true;
  }
  if (f.load && placeholders(load) != f.batch)
    throw std::runtime_error("cache mset params: key placeholders not found");
  rpc::ConnectionOptions connectionOptions;
  connectionOptions.monitor = false;
  for (int i = 0; i < f.clients; ++i)
    load.connections.push_back(
        std::make_unique<rpc::Connection>(context, f.endpoint, connectionOptions));
  rusage before{}, after{};
  ::getrusage(RUSAGE_SELF, &before);
  Result r, warm;
  uint64_t sampled = 0, found = 0;
  if (f.load) {
    r = drive(load, f.pipeline, (f.keys + f.batch - 1) / f.batch, 3600);
  } else {
    // The warm-up (connecting, first allocations) in the measured shape: its
    // calls count in a server's CPU per call.
    if (f.warmupSeconds > 0) warm = drive(load, f.pipeline, UINT64_MAX, f.warmupSeconds);
    if (sets == 0)  // every 16th get: found?
      load.sample = [&](rpc::Reply& reply) {
        ++sampled;
        found += reply.results<idl::Cache::GetResults>().getFound();
      };
    r = drive(load, f.pipeline, UINT64_MAX, f.seconds);
  }
  ::getrusage(RUSAGE_SELF, &after);
  auto cpuUs = [](const rusage& u) {
    return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e6 + u.ru_utime.tv_usec + u.ru_stime.tv_usec;
  };
  uint64_t all = r.done + r.failed + warm.done + warm.failed;
  std::printf(
      "cache-%s clients=%d pipeline=%d ratio=%s keys=%llu value_bytes=%zu calls=%llu "
      "failed=%llu seconds=%.3f calls_per_s=%.0f warmup_calls=%llu client_cpu_us_per_call=%.2f",
      f.load ? "load" : "getset", f.clients, f.pipeline,
      f.load ? "mset" : (std::to_string(gets) + ":" + std::to_string(sets)).c_str(),
      static_cast<unsigned long long>(f.keys), f.valueBytes,
      static_cast<unsigned long long>(r.done),
      static_cast<unsigned long long>(r.failed + warm.failed), r.seconds, r.done / r.seconds,
      static_cast<unsigned long long>(warm.done), all ? (cpuUs(after) - cpuUs(before)) / all : 0.0);
  if (f.load) std::printf(" batch=%u keys_per_s=%.0f", f.batch, r.done * f.batch / r.seconds);
  if (sampled) std::printf(" found_sampled=%.4f", static_cast<double>(found) / sampled);
  std::printf("\n");
  return r.failed + warm.failed == 0 ? 0 : 1;
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
  auto* lock = app.add_subcommand(
      "lock",
      "acquire + release pairs, each client acquiring again at once after its release, against "
      "zmesh-lock (Lock.acquire/release), etcd (its JSON gateway: /v3/lock/lock and unlock, a "
      "lease a client) or Redis (SET NX PX, EVALSHA compare-and-delete)");
  LockFlags lockFlags;
  lock->add_option("--server", lockFlags.server, "zmesh|etcd|redis")
      ->check(CLI::IsMember({"zmesh", "etcd", "redis"}));
  lock->add_option("--endpoint", lockFlags.endpoint,
                   "zmesh: tcp://127.0.0.1:7130; etcd, redis: 127.0.0.1:<port>");
  lock->add_option("--clients", lockFlags.clients, "one connection each, one call in flight")
      ->check(CLI::Range(1, 1000));
  lock->add_flag("--contended", lockFlags.contended,
                 "every client the one lock: zmesh and etcd queue the waiters, Redis's ask "
                 "again at once; prints the hand-offs (a release's reply to the next grant)");
  lock->add_option("--seconds", lockFlags.seconds, "measured, after the warm-up");
  lock->add_option("--warmup-seconds", lockFlags.warmupSeconds,
                   "pairs before the measured window (counted in total_pairs only)");
  lock->add_option("--ttl-ms", lockFlags.ttlMs, "lease of each grant (zmesh, Redis)");
  lock->add_option("--wait-ms", lockFlags.waitMs, "zmesh --contended: waitMs of each acquire");
  lock->add_option("--tag", lockFlags.tag,
                   "in the lock names: lockbench:<tag>:<client> (etcd: / for :)");
  auto* cache = app.add_subcommand(
      "cache",
      "Cache.get and Cache.set against zmesh-cache, --ratio gets to sets, keys drawn uniformly "
      "(redis-benchmark -t get,set -r's shape); or --load: Cache.mset every key once");
  CacheBenchFlags cacheFlags;
  cache->add_option("--endpoint", cacheFlags.endpoint);
  cache->add_option("--clients", cacheFlags.clients, "connections")->check(CLI::Range(1, 1000));
  cache->add_option("--pipeline", cacheFlags.pipeline, "calls in flight per connection")
      ->check(CLI::Range(1, 100000));
  cache
      ->add_option("--keys", cacheFlags.keys,
                   "<prefix>000000000000 to <prefix>N-1 (redis-benchmark -r's key shape)")
      ->check(CLI::Range(uint64_t{1}, uint64_t{1'000'000'000'000}));
  cache->add_option("--key-prefix", cacheFlags.keyPrefix);
  cache->add_option("--value-bytes", cacheFlags.valueBytes, "of each set (redis-benchmark -d)")
      ->check(CLI::Range(size_t{0}, size_t{256} << 20));
  cache->add_option("--ratio", cacheFlags.ratio, "gets:sets, e.g. 1:0 (gets only), 9:1");
  cache->add_option("--seconds", cacheFlags.seconds, "measured, after the warm-up");
  cache->add_option("--warmup-seconds", cacheFlags.warmupSeconds,
                    "calls before the measured window (warmup_calls)");
  cache->add_flag("--load", cacheFlags.load,
                  "mset every key once, in key order, --batch entries a call, then exit");
  cache->add_option("--batch", cacheFlags.batch, "--load: entries a call (the server's max_batch)")
      ->check(CLI::Range(1u, 100000u));
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
  if (app.got_subcommand("cache")) {
    try {
      return runCache(context, cacheFlags);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "zmesh-bench cache: %s\n", e.what());
      return 1;
    }
  }
  if (app.got_subcommand("lock")) {
    try {
      return runLock(context, lockFlags);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "zmesh-bench lock: %s\n", e.what());
      return 1;
    }
  }
  Load load;
  std::thread serverThread;
  std::atomic<bool> stop{false}, ready{false};
  rpc::Server* rpcServer = nullptr;
  std::optional<double> requestsPerWakeup;  // the rpc server's, once it has stopped
  std::optional<double> serverAllocationsPerCall;

  if (app.got_subcommand("echo")) {
    endpoint = transport == "tcp" ? "tcp://127.0.0.1:0"
                                  : "ipc:///tmp/zmesh-bench-" + std::to_string(::getpid());
    if (serverKind == "raw") {
      // A free port the system picks: a fixed one may be taken by another run.
      if (transport == "tcp") endpoint = "tcp://127.0.0.1:*";
      serverThread = std::thread(rawEchoServer, std::ref(serverContext), std::ref(endpoint),
                                 std::ref(stop), std::ref(ready));
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
        uint64_t allocationsBefore = tAllocations;
        server.run();
        const auto& c = server.counters();
        requestsPerWakeup = c.wakeups ? static_cast<double>(c.requests) / c.wakeups : 0.0;
        if (c.requests)
          serverAllocationsPerCall =
              static_cast<double>(tAllocations - allocationsBefore) / c.requests;
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
    result =
        driveRaw(context, endpoint, connections, load.params.front(), window, requests, seconds);
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
    uint64_t allocationsBefore = tAllocations;
    result = drive(load, window, requests, seconds);
    if (result.done)
      result.clientAllocationsPerCall =
          static_cast<double>(tAllocations - allocationsBefore) / result.done;
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
  // operator new per call on each end: the server's thread (all it served,
  // warm-up included) and the calling thread (the measured calls; the load
  // generator's own params copy is a libzmq message, not counted).
  if (serverAllocationsPerCall)
    std::printf("server allocations_per_call=%.2f\n", *serverAllocationsPerCall);
  if (result.clientAllocationsPerCall)
    std::printf("client allocations_per_call=%.2f\n", *result.clientAllocationsPerCall);
  return result.failed == 0 ? 0 : 1;
}
