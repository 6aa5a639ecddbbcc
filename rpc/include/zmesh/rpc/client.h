// The calling side of zmesh RPC.
//
// `Connection` is one DEALER socket to one endpoint, driven by whoever owns the
// thread (a poll loop, or the gateway's asio loop through its fds): many calls in
// flight, matched by request id; per-call deadlines; retryable calls resent with
// the same request id (the server answers a resend from its record instead of
// running it twice); EAGAIN on send held until the socket has room or the
// deadline passes. Not thread-safe: one owning thread.
//
// `ClientThread` runs Connections on a thread of its own and hands out `Channel`
// handles, which are thread-safe and cheap to copy.
#pragma once

#include <capnp/dynamic.h>
#include <capnp/message.h>
#include <capnp/schema.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <memory_resource>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>
#include <zmq.hpp>

#include "zmesh/rpc/frame.h"
#include "zmesh/rpc/log_limit.h"
#include "zmesh/rpc/status.h"

namespace zmesh::rpc {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct CallOptions {
  std::chrono::milliseconds timeout = 5s;
  // Safe to run twice, or made so by an idempotency key: resent after
  // attemptTimeout (and at once when the connection drops) until the deadline.
  bool retryable = false;
  std::chrono::milliseconds attemptTimeout = 500ms;
  std::string traceId;
  std::string idempotencyKey;
};

// The outcome of a call. Results are valid only when status.ok(); they are
// read through their schema with every field checked first (checkFields), so
// a malformed reply throws RpcError(INTERNAL) naming the field here rather than
// a kj::Exception from somewhere in the caller's reading.
class Reply {
 public:
  Reply(Status status, std::optional<FrameMessage> message)
      : status(std::move(status)), message_(std::move(message)) {}
  Status status;
  template <typename T>
  typename T::Reader results() {
    return checked(capnp::Schema::from<T>()).template getAs<T>();
  }
  capnp::DynamicStruct::Reader results(capnp::StructSchema schema);
  // Throws RpcError unless ok.
  void check() const {
    if (!status.ok()) throw RpcError(status.code, status.message);
  }

 private:
  capnp::AnyPointer::Reader checked(capnp::StructSchema schema);
  static FrameMessage& emptyMessage_();
  std::optional<FrameMessage> message_;
  uint64_t checkedAs_ = 0;  // the schema id last checked, so a second read is free
};

using ReplyCallback = std::function<void(Reply)>;

struct ConnectionOptions {
  int sendHwm = 10000;
  int recvHwm = 10000;
  // ZeroMQ's own heartbeats find a peer that vanished without a FIN/RST.
  int heartbeatIvlMs = 1000;
  int heartbeatTimeoutMs = 3000;
  int reconnectIvlMs = 100;
  int reconnectIvlMaxMs = 2000;
  size_t maxReplyBytes = 64 << 20;
  // Watch the connection (a second, inproc socket) so a lost connection fails
  // or resends its calls at once rather than at their deadlines. Off only for
  // load generators, where it doubles the sockets polled.
  bool monitor = true;
  // With the monitor on and this > 0: a call made while the connection has been
  // down at least this long fails at once with UNAVAILABLE instead of waiting
  // for its deadline (the gateway answers 503 at once for a service that is down).
  int failFastAfterMs = 0;
};

struct ConnectionCounters {
  uint64_t calls = 0;
  uint64_t retries = 0;
  uint64_t deadlineExceeded = 0;
  uint64_t backPressured = 0;  // sends that met EAGAIN
  uint64_t unavailable = 0;    // gave up: no room before the deadline, or connection lost
  uint64_t lateReplies = 0;    // for calls already finished
  uint64_t malformedReplies = 0;
  uint64_t disconnects = 0;
  uint64_t callbackErrors = 0;  // exceptions thrown by a call's callback, stopped here
};

class Connection {
 public:
  Connection(zmq::context_t& context, std::string endpoint, ConnectionOptions options = {});
  ~Connection();  // fails calls still in flight with UNAVAILABLE
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Starts a call; `done` runs exactly once, on this thread, from process() (or
  // from the destructor; or at once when the options are invalid). Never blocks.
  // An exception escaping `done` is counted (callbackErrors) and logged, never
  // propagated: it must not cost the other calls their replies.
  void call(uint64_t interfaceId, uint16_t methodId, zmq::message_t params, CallOptions options,
            ReplyCallback done);

  // What to poll: the DEALER (POLLIN, plus POLLOUT while sends wait for room) and
  // the socket monitor (POLLIN). Poll these, then call process().
  std::vector<zmq::pollitem_t> pollItems();
  // Drains replies and monitor events, sends what waits, runs deadlines and retries.
  void process();
  // When process() must run again at the latest, if nothing becomes readable.
  std::optional<Clock::time_point> nextTimer() const;
  // For a loop that waits on fds (epoll, asio) instead of pollItems(): ZMQ_FD
  // of each socket in pollItems()' order. They signal edges, and a send or
  // receive can consume one, so after a wake-up run process() again while
  // hasWork() before waiting again (DESIGN.md §3).
  std::vector<int> fds();
  // Re-reads ZMQ_EVENTS: whether process() has something to do now.
  bool hasWork();

  size_t inFlight() const { return calls_.size(); }
  // What to wait for on the DEALER (pollItems()' first item): POLLIN, and
  // POLLOUT while calls wait for room to send.
  short dealerEvents() const { return ZMQ_POLLIN | (blocked_.empty() ? 0 : ZMQ_POLLOUT); }
  // As the monitor last saw it (always false with the monitor off).
  bool connected() const { return connected_; }
  const ConnectionCounters& counters() const { return counters_; }
  const std::string& endpoint() const { return endpoint_; }

 private:
  // (deadline or resend, request id), soonest first.
  using Timers = std::pmr::set<std::pair<Clock::time_point, uint64_t>>;
  struct Call {
    uint64_t requestId;
    uint64_t interfaceId;
    uint16_t methodId;
    zmq::message_t params;  // until sent; kept for resends when retryable
    CallOptions options;
    Clock::time_point deadline;
    Clock::time_point timerAt;  // deadline, or the next resend if sooner
    Timers::iterator timer;     // its entry in timers_
    bool sent = false;
    ReplyCallback done;
  };
  using Calls = std::pmr::unordered_map<uint64_t, Call>;
  bool send(Call& call, Clock::time_point now);  // false: no room (EAGAIN)
  void finish(uint64_t requestId, Reply reply);
  void finish(Calls::iterator it, Reply reply);
  // Runs a call's callback; what it throws is counted and logged, and stops here.
  void deliver(ReplyCallback& done, Reply reply);
  void drainReplies();
  void drainMonitor();
  void runTimers(Clock::time_point now);
  void setTimer(Call& call, Clock::time_point at);

  std::string endpoint_;
  ConnectionOptions options_;
  zmq::socket_t dealer_;
  zmq::socket_t monitor_;  // null when options_.monitor is off
  uint64_t nextRequestId_;
  // Every call adds and removes an entry in both: their nodes are recycled.
  std::pmr::unsynchronized_pool_resource pool_;
  Calls calls_{&pool_};
  Timers timers_{&pool_};
  std::vector<uint64_t> blocked_;       // waiting for room to send, in order
  std::vector<zmq::message_t> frames_;  // a received message, reused
  ConnectionCounters counters_;
  LogLimiter callbackLog_;
  capnp::ReaderOptions replyOptions_;
  bool connected_ = false;
  Clock::time_point downSince_;  // when the connection was last seen down (or created)
};

class ClientThread;

// A thread-safe handle to one endpoint served by a ClientThread.
class Channel {
 public:
  Channel() = default;
  // `done` runs on the client thread: keep it short, never block in it.
  void callAsync(uint64_t interfaceId, uint16_t methodId, zmq::message_t params,
                 CallOptions options, ReplyCallback done) const;
  std::future<Reply> call(uint64_t interfaceId, uint16_t methodId, zmq::message_t params,
                          CallOptions options) const;
  // Blocks the calling thread (never the client thread) until the reply.
  Reply callSync(uint64_t interfaceId, uint16_t methodId, zmq::message_t params,
                 CallOptions options) const;
  const std::string& endpoint() const { return endpoint_; }
  bool valid() const { return owner_ != nullptr; }

 private:
  friend class ClientThread;
  Channel(ClientThread* owner, size_t index, std::string endpoint)
      : owner_(owner), index_(index), endpoint_(std::move(endpoint)) {}
  ClientThread* owner_ = nullptr;
  size_t index_ = 0;
  std::string endpoint_;
};

// Owns one I/O thread running the Connections behind its Channels. Outlives them.
class ClientThread {
 public:
  explicit ClientThread(zmq::context_t& context, ConnectionOptions options = {});
  ~ClientThread();  // fails calls in flight with UNAVAILABLE, joins the thread
  ClientThread(const ClientThread&) = delete;
  ClientThread& operator=(const ClientThread&) = delete;

  // Thread-safe. The same endpoint twice gives the same connection.
  Channel channel(const std::string& endpoint);

 private:
  friend class Channel;
  struct Submission;
  void submit(Submission submission);
  void run();

  zmq::context_t& context_;
  ConnectionOptions options_;
  int wakeFd_ = -1;
  std::mutex mutex_;
  std::vector<Submission> queue_;
  std::vector<std::string> endpoints_;  // index → endpoint; guarded by mutex_
  bool stop_ = false;
  std::thread thread_;
};

// A method's ordinal (@N) looked up by name in the generated schema, so stubs
// never hard-code numbers. Throws std::logic_error for an unknown name.
uint16_t methodOrdinal(capnp::InterfaceSchema schema, kj::StringPtr name);

}  // namespace zmesh::rpc
