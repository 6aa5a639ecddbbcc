// The service side of zmesh RPC: one ROUTER socket, one loop thread.
//
// The loop polls ZeroMQ (and any watched fd) and turns a kj event loop in the same
// thread, so a method may answer later: its kj::Promise resolves from a timer, a
// helper thread's completion (see post()), or another request. Dispatch goes
// through the capnp-generated `Interface::Server` classes by interface id and
// method ordinal; nothing is kept by hand per method.
//
// Threading: construct, serve(), bind() and run() on the thread that runs the
// loop; requestStop() and post() may be called from any thread.
#pragma once

#include <capnp/capability.h>
#include <capnp/schema.h>
#include <kj/async.h>
#include <kj/timer.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "zmesh/rpc/metrics.h"
#include "zmesh/rpc/status.h"

namespace zmesh::rpc {

struct ServerOptions {
  std::string name = "service";        // for logs and stats
  std::vector<std::string> endpoints;  // bound by bind()
  size_t maxRequestBytes = 1 << 20;    // larger params answer PAYLOAD_TOO_LARGE
  uint32_t defaultBudgetMs = 30000;    // for requests that carry none
  uint32_t maxBudgetMs = 300000;       // a larger budget is cut to this
  // Calls whose method has not answered yet; one more that would wait is
  // cancelled (as at its deadline: what it did before waiting stays) and
  // answered UNAVAILABLE at once (DESIGN.md §5: busy). Calls that answer at
  // once are never refused.
  size_t maxInFlight = 10000;
  uint32_t retryWindowMs = 10000;                 // how long a retryable reply is kept
  size_t retryWindowMaxEntries = 100000;          // memory bounds of that record: the
  size_t retryWindowMaxBytes = size_t{64} << 20;  // oldest go first (counted)
  size_t peerQueueMax = 1024;                     // replies held for one slow peer,
  size_t peerQueueMaxBytes = size_t{16} << 20;    // and their bytes
  int sendHwm = 10000;
  int recvHwm = 10000;
  uint32_t graceMs = 5000;  // how long a stop waits for in-flight calls
  size_t batch = 256;       // messages taken per loop turn
};

struct ServerCounters {
  uint64_t requests = 0;
  uint64_t replies = 0;
  uint64_t malformed = 0;      // dropped: bad framing or header
  uint64_t invalidParams = 0;  // answered INVALID_ARGUMENT before dispatch
  uint64_t oversize = 0;
  uint64_t unimplemented = 0;
  uint64_t busy = 0;  // answered UNAVAILABLE: maxInFlight calls already waiting
  uint64_t budgetClamped = 0;
  uint64_t failed = 0;  // non-OK replies from methods
  uint64_t internalErrors = 0;
  uint64_t barrierCaught = 0;    // exceptions stopped at the loop's barrier
  uint64_t deadlineDropped = 0;  // budget ran out while the method ran
  uint64_t duplicateReplayed = 0;
  uint64_t duplicateInFlight = 0;
  uint64_t retainedEvicted = 0;  // replies forgotten before their window ended (bounds)
  uint64_t repliesQueued = 0;    // EAGAIN on send: went to the peer queue
  uint64_t repliesDroppedDeadline = 0;
  uint64_t repliesDroppedQueueFull = 0;
  uint64_t repliesUnroutable = 0;  // EHOSTUNREACH: the peer is gone
  uint64_t refusedStopping = 0;
  uint64_t wakeups = 0;  // loop iterations (to spot a busy loop)
};

class Server {
 public:
  Server(zmq::context_t& context, ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Adds an implementation of a capnp interface. One per interface id. Params
  // reach a method only after every field was read by the method's schema
  // (checkFields): a malformed one answers INVALID_ARGUMENT naming the field.
  template <typename Interface>
  void serve(kj::Own<typename Interface::Server> impl) {
    serve(capnp::Schema::from<Interface>(), kj::Own<capnp::Capability::Server>(kj::mv(impl)));
  }
  void serve(capnp::InterfaceSchema schema, kj::Own<capnp::Capability::Server> impl);

  // Binds every endpoint; throws std::runtime_error naming the endpoint on failure.
  void bind();
  // Endpoints as bound (a "tcp://127.0.0.1:0" endpoint reports its real port).
  std::vector<std::string> boundEndpoints();

  // Runs until requestStop(); then refuses new calls, lets in-flight ones finish
  // for up to graceMs, answers the rest UNAVAILABLE, and returns.
  void run();
  void requestStop();  // thread-safe
  bool stopping() const { return stopping_; }

  // Runs `fn` on the loop thread. Thread-safe; this is how helper threads report.
  void post(std::function<void()> fn);
  // Calls `onReadable` on the loop thread whenever `fd` is readable (e.g. a signalfd).
  void watchFd(int fd, std::function<void()> onReadable);
  // The same for another ZeroMQ socket owned by the loop thread (the broker's
  // XSUB/XPUB). `onReadable` must drain it: poll is level-triggered, so what it
  // leaves is reported again on the next turn.
  void watchSocket(zmq::socket_ref socket, std::function<void()> onReadable);

  kj::Timer& timer();
  const ServerCounters& counters() const { return counters_; }
  // Every part of the process adds its statistics here. The server's own:
  // "rpc.*" counters and gauges, and per served method (DESIGN.md §2's
  // "<Interface>.<method>", or "_unknown") "rpc.server.calls" {method, code}
  // and "rpc.server.duration_seconds" {method}, from request to reply or drop.
  StatsRegistry& stats() { return stats_; }
  const ServerOptions& options() const { return options_; }
  size_t inFlight() const;  // calls whose method has not answered yet

 private:
  struct Impl;
  ServerOptions options_;
  ServerCounters counters_;
  StatsRegistry stats_;
  std::atomic<bool> stopRequested_{false};
  bool stopping_ = false;
  std::unique_ptr<Impl> impl_;
};

}  // namespace zmesh::rpc
