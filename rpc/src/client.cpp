#include "zmesh/rpc/client.h"

#include <capnp/schema.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <random>
#include <set>
#include <zmq_addon.hpp>

#include "wire.h"
#include "zmesh/idl/common.capnp.h"
#include "zmesh/rpc/barrier.h"
#include "zmesh/rpc/poll.h"

namespace zmesh::rpc {
namespace {

uint64_t randomU64() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng();
}

long millisUntil(Clock::time_point t, Clock::time_point now) {
  if (t <= now) return 0;
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(t - now).count();
  return ms > INT_MAX ? INT_MAX : static_cast<long>(ms);
}

}  // namespace

FrameMessage& Reply::emptyMessage_() {
  static thread_local FrameMessage empty = emptyMessage();
  return empty;
}

capnp::AnyPointer::Reader Reply::checked(capnp::StructSchema schema) {
  auto root = message_ ? message_->any() : emptyMessage_().any();
  uint64_t id = schema.getProto().getId();
  if (checkedAs_ != id) {
    try {
      checkFields(root, schema, "results");
    } catch (const FrameError& e) {
      throw RpcError(StatusCode::INTERNAL, std::string("malformed reply: ") + e.what());
    }
    checkedAs_ = id;
  }
  return root;
}

capnp::DynamicStruct::Reader Reply::results(capnp::StructSchema schema) {
  return checked(schema).getAs<capnp::DynamicStruct>(schema);
}

Connection::Connection(zmq::context_t& context, std::string endpoint, ConnectionOptions options)
    : endpoint_(std::move(endpoint)),
      options_(options),
      dealer_(context, zmq::socket_type::dealer),
      monitor_(options.monitor ? zmq::socket_t(context, zmq::socket_type::pair) : zmq::socket_t()),
      nextRequestId_(randomU64() >> 1),
      replyOptions_(readerOptionsFor(options.maxReplyBytes)),
      downSince_(Clock::now()) {
  // A routing id of our own survives reconnects, so the server recognises a
  // resend after a reconnect as the same caller (and answers it from its record).
  // 12 bytes: 88 random bits, and short enough for std::string's inline buffer
  // on the server, which keys its per-peer state by it.
  char id[12];
  id[0] = 'z';  // ids starting with a zero byte are reserved by libzmq
  for (int i = 1; i < 12; i += 8) {
    uint64_t r = randomU64();
    std::memcpy(id + i, &r, std::min(8, 12 - i));
  }
  dealer_.set(zmq::sockopt::routing_id, zmq::const_buffer(id, sizeof(id)));
  dealer_.set(zmq::sockopt::linger, 0);
  dealer_.set(zmq::sockopt::sndhwm, options_.sendHwm);
  dealer_.set(zmq::sockopt::rcvhwm, options_.recvHwm);
  dealer_.set(zmq::sockopt::heartbeat_ivl, options_.heartbeatIvlMs);
  dealer_.set(zmq::sockopt::heartbeat_timeout, options_.heartbeatTimeoutMs);
  dealer_.set(zmq::sockopt::heartbeat_ttl, options_.heartbeatTimeoutMs);
  dealer_.set(zmq::sockopt::reconnect_ivl, options_.reconnectIvlMs);
  dealer_.set(zmq::sockopt::reconnect_ivl_max, options_.reconnectIvlMaxMs);
  dealer_.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(options_.maxReplyBytes + 65536));

  if (options_.monitor) {
    std::string monitorAddress = "inproc://zmesh-monitor-" + std::to_string(randomU64());
    if (zmq_socket_monitor(dealer_.handle(), monitorAddress.c_str(),
                           ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED) != 0)
      throw zmq::error_t();
    monitor_.set(zmq::sockopt::linger, 0);
    monitor_.connect(monitorAddress);
  }
  try {
    dealer_.connect(endpoint_);
  } catch (const zmq::error_t& e) {
    throw std::invalid_argument("cannot connect to '" + endpoint_ + "': " + e.what());
  }
}

Connection::~Connection() {
  auto calls = std::move(calls_);
  for (auto& [id, call] : calls)
    deliver(call.done,
            Reply({StatusCode::UNAVAILABLE, "client closed before " + endpoint_ + " answered"},
                  std::nullopt));
  if (options_.monitor) zmq_socket_monitor(dealer_.handle(), nullptr, 0);
}

void Connection::call(uint64_t interfaceId, uint16_t methodId, zmq::message_t params,
                      CallOptions options, ReplyCallback done) {
  // The server drops a header it cannot read, which would leave the caller to
  // its timeout: refuse now what could never be answered.
  if (options.traceId.size() + options.idempotencyKey.size() > wire::kMaxHeaderBytes / 2) {
    deliver(done, Reply({StatusCode::INVALID_ARGUMENT,
                         "trace id and idempotency key exceed " +
                             std::to_string(wire::kMaxHeaderBytes / 2) + " bytes together"},
                        std::nullopt));
    return;
  }
  auto now = Clock::now();
  if (options_.monitor && options_.failFastAfterMs > 0 && !connected_ &&
      now - downSince_ >= std::chrono::milliseconds(options_.failFastAfterMs)) {
    ++counters_.unavailable;
    deliver(done, Reply({StatusCode::UNAVAILABLE,
                         endpoint_ + " is not connected (down for " +
                             std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                now - downSince_)
                                                .count()) +
                             " ms)"},
                        std::nullopt));
    return;
  }
  auto requestId = nextRequestId_++;
  Call& c = calls_[requestId];
  c.requestId = requestId;
  c.interfaceId = interfaceId;
  c.methodId = methodId;
  c.params = std::move(params);
  c.deadline = now + options.timeout;
  c.options = std::move(options);
  c.timerAt = c.deadline;
  c.done = std::move(done);
  ++counters_.calls;
  // Calls with one timeout come in deadline order: the hint makes this O(1).
  c.timer = timers_.emplace_hint(timers_.end(), c.timerAt, c.requestId);
  if (!blocked_.empty()) {
    blocked_.push_back(c.requestId);  // keep order behind earlier blocked calls
    return;
  }
  if (!send(c, now)) blocked_.push_back(c.requestId);
}

bool Connection::send(Call& call, Clock::time_point now) {
  wire::RequestHeader h;
  h.requestId = call.requestId;
  h.interfaceId = call.interfaceId;
  h.methodId = call.methodId;
  h.budgetMs = static_cast<uint32_t>(std::max<long>(1, millisUntil(call.deadline, now)));
  h.retryable = call.options.retryable;
  h.traceId = call.options.traceId;
  h.idempotencyKey = call.options.idempotencyKey;
  auto request = wire::encodeRequest(h, call.params);
  if (!dealer_.send(request, zmq::send_flags::dontwait)) {
    // Back-pressure: hold it until POLLOUT or the deadline; never block.
    ++counters_.backPressured;
    return false;
  }
  call.sent = true;
  if (call.options.retryable)
    setTimer(call, std::min(call.deadline, now + call.options.attemptTimeout));
  else
    call.params = zmq::message_t();  // never sent again
  return true;
}

void Connection::setTimer(Call& call, Clock::time_point at) {
  timers_.erase(call.timer);
  call.timerAt = at;
  call.timer = timers_.emplace_hint(timers_.end(), at, call.requestId);
}

void Connection::finish(uint64_t requestId, Reply reply) {
  auto it = calls_.find(requestId);
  if (it != calls_.end()) finish(it, std::move(reply));
}

void Connection::finish(Calls::iterator it, Reply reply) {
  auto done = std::move(it->second.done);
  timers_.erase(it->second.timer);
  calls_.erase(it);
  deliver(done, std::move(reply));
}

void Connection::deliver(ReplyCallback& done, Reply reply) {
  barrier([&] { done(std::move(reply)); },
          [&](const char* what) {
            ++counters_.callbackErrors;
            if (auto held = callbackLog_.admit())
              spdlog::error("a reply callback for {} failed: {} ({} more like it not logged)",
                            endpoint_, what, *held);
          });
}

std::vector<zmq::pollitem_t> Connection::pollItems() {
  if (!options_.monitor) return {{dealer_.handle(), 0, dealerEvents(), 0}};
  return {{dealer_.handle(), 0, dealerEvents(), 0}, {monitor_.handle(), 0, ZMQ_POLLIN, 0}};
}

std::vector<int> Connection::fds() {
  std::vector<int> fds{dealer_.get(zmq::sockopt::fd)};
  if (options_.monitor) fds.push_back(monitor_.get(zmq::sockopt::fd));
  return fds;
}

bool Connection::hasWork() {
  // The DEALER first (replies, and room to send while calls wait for it), then the monitor.
  if (dealer_.get(zmq::sockopt::events) & dealerEvents()) return true;
  return options_.monitor && (monitor_.get(zmq::sockopt::events) & ZMQ_POLLIN);
}

std::optional<Clock::time_point> Connection::nextTimer() const {
  if (timers_.empty()) return std::nullopt;
  return timers_.begin()->first;
}

void Connection::process() {
  drainMonitor();
  drainReplies();
  auto now = Clock::now();
  size_t sent = 0;
  for (; sent < blocked_.size(); ++sent) {
    auto it = calls_.find(blocked_[sent]);
    if (it != calls_.end() && !send(it->second, now)) break;  // still no room
  }
  blocked_.erase(blocked_.begin(), blocked_.begin() + sent);
  runTimers(now);
}

void Connection::drainReplies() {
  auto& frames = frames_;
  // Until EAGAIN: the socket's fd is edge-triggered, so anything left would stall.
  while (true) {
    frames.clear();
    if (!zmq::recv_multipart(dealer_, std::back_inserter(frames), zmq::recv_flags::dontwait))
      return;
    if (frames.size() != 1) {
      ++counters_.malformedReplies;
      continue;
    }
    uint64_t requestId;
    Status status;
    size_t resultsAt;
    try {
      wire::HeaderFrame header(frames[0]);
      resultsAt = header.bodyOffset();
      const wire::Header& h = header.get();
      requestId = h.requestId;
      status.code = h.status;
      status.message = h.message;
      if (!isKnown(status.code)) {  // from a newer server: not ours to interpret
        status.message = "status " + std::to_string(static_cast<unsigned>(h.status)) +
                         " unknown to this client: " + status.message;
        status.code = StatusCode::INTERNAL;
      }
    } catch (const FrameError& e) {
      ++counters_.malformedReplies;
      if (auto held = callbackLog_.admit())
        spdlog::warn("dropped a reply from {}: {} ({} more like it not logged)", endpoint_,
                     e.what(), *held);
      continue;
    }
    auto call = calls_.find(requestId);
    if (call == calls_.end()) {
      ++counters_.lateReplies;
      continue;
    }
    std::optional<FrameMessage> results;
    if (status.ok()) {
      try {
        results.emplace(readFrame(std::move(frames[0]), replyOptions_, resultsAt));
      } catch (const FrameError& e) {
        ++counters_.malformedReplies;
        status = {StatusCode::INTERNAL,
                  std::string("malformed reply from ") + endpoint_ + ": " + e.what()};
      }
    }
    finish(call, Reply(std::move(status), std::move(results)));
  }
}

void Connection::drainMonitor() {
  if (!options_.monitor) return;
  std::vector<zmq::message_t> frames;
  while (true) {
    frames.clear();
    if (!zmq::recv_multipart(monitor_, std::back_inserter(frames), zmq::recv_flags::dontwait))
      return;
    if (frames.empty() || frames[0].size() < sizeof(uint16_t)) continue;
    uint16_t event;
    std::memcpy(&event, frames[0].data(), sizeof(event));
    if (event == ZMQ_EVENT_CONNECTED) {
      connected_ = true;
    } else if (event == ZMQ_EVENT_DISCONNECTED) {
      connected_ = false;
      downSince_ = Clock::now();
      ++counters_.disconnects;
      // Replies that arrived before the connection dropped are already queued:
      // take them first, or their calls would be failed as lost.
      drainReplies();
      // What was sent is lost with the connection. A retryable call goes again
      // (libzmq queues it until the reconnect); any other may or may not have run.
      std::vector<uint64_t> lost;
      auto now = Clock::now();
      for (auto& [id, call] : calls_) {
        if (!call.sent) continue;
        if (call.options.retryable)
          setTimer(call, now);
        else
          lost.push_back(id);
      }
      for (auto id : lost) {
        ++counters_.unavailable;
        finish(id, Reply({StatusCode::UNAVAILABLE,
                          "connection to " + endpoint_ +
                              " was lost during the call; it may or may not have run"},
                         std::nullopt));
      }
    }
  }
}

void Connection::runTimers(Clock::time_point now) {
  std::vector<uint64_t> expired;
  std::vector<uint64_t> resend;
  for (auto& [at, id] : timers_) {
    if (at > now) break;
    Call& call = calls_.at(id);
    if (call.deadline <= now)
      expired.push_back(id);
    else if (call.sent && call.options.retryable)
      resend.push_back(id);
  }
  for (auto id : resend) {
    ++counters_.retries;
    // Same request id: the server runs it at most once.
    Call& call = calls_.at(id);
    if (!send(call, now)) {
      // No room: it now waits for POLLOUT; its timer moves to the deadline, or
      // a timer left in the past would make the owner's loop spin.
      setTimer(call, call.deadline);
      if (std::find(blocked_.begin(), blocked_.end(), id) == blocked_.end()) blocked_.push_back(id);
    }
  }
  for (auto id : expired) {
    auto& call = calls_.at(id);
    if (call.sent) {
      ++counters_.deadlineExceeded;
      finish(id, Reply({StatusCode::DEADLINE_EXCEEDED,
                        endpoint_ + " did not answer within " +
                            std::to_string(call.options.timeout.count()) + " ms"},
                       std::nullopt));
    } else {
      ++counters_.unavailable;
      finish(id, Reply({StatusCode::UNAVAILABLE,
                        "no room to send to " + endpoint_ + " before the deadline (back-pressure)"},
                       std::nullopt));
    }
  }
}

// ---- ClientThread ----

struct ClientThread::Submission {
  size_t index;
  uint64_t interfaceId;
  uint16_t methodId;
  zmq::message_t params;
  CallOptions options;
  ReplyCallback done;
};

ClientThread::ClientThread(zmq::context_t& context, ConnectionOptions options)
    : context_(context), options_(options) {
  wakeFd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wakeFd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  thread_ = std::thread([this] { run(); });
}

ClientThread::~ClientThread() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  uint64_t one = 1;
  [[maybe_unused]] auto r = ::write(wakeFd_, &one, sizeof(one));
  thread_.join();
  ::close(wakeFd_);
}

Channel ClientThread::channel(const std::string& endpoint) {
  std::lock_guard lock(mutex_);
  for (size_t i = 0; i < endpoints_.size(); ++i)
    if (endpoints_[i] == endpoint) return Channel(this, i, endpoint);
  endpoints_.push_back(endpoint);
  return Channel(this, endpoints_.size() - 1, endpoint);
}

void ClientThread::submit(Submission submission) {
  {
    std::lock_guard lock(mutex_);
    if (!stop_) {
      bool wasEmpty = queue_.empty();
      queue_.push_back(std::move(submission));
      if (!wasEmpty) return;  // a wake-up is already on its way
      uint64_t one = 1;
      [[maybe_unused]] auto r = ::write(wakeFd_, &one, sizeof(one));
      return;
    }
  }
  submission.done(Reply({StatusCode::UNAVAILABLE, "client is closed"}, std::nullopt));
}

void ClientThread::run() {
  // By endpoint index; null where the endpoint could not be connected to (its
  // calls fail at once with why, the others go on).
  std::vector<std::unique_ptr<Connection>> connections;
  std::vector<std::string> connectErrors;
  std::vector<zmq::pollitem_t> items;
  LogLimiter errors;
  bool stopping = false;
  auto logged = [&](const char* what) {
    if (auto held = errors.admit())
      spdlog::error("client thread: {} ({} more like it not logged)", what, *held);
  };
  // Each submission on its own: one that cannot be started fails through its
  // own callback, and never keeps the others (or later ones) waiting.
  auto start = [&](Submission& s) {
    Connection* c = connections[s.index].get();
    if (!c) {
      s.done(Reply({StatusCode::UNAVAILABLE, connectErrors[s.index]}, std::nullopt));
      return;
    }
    barrier(
        [&] {
          c->call(s.interfaceId, s.methodId, std::move(s.params), std::move(s.options),
                  std::move(s.done));
        },
        [&](const char* what) {
          logged(what);
          if (s.done) s.done(Reply({StatusCode::INTERNAL, what}, std::nullopt));
        });
  };
  while (!stopping) {
    // One turn behind a barrier: the thread serves every Channel of the process.
    barrier(
        [&] {
          items.clear();
          items.push_back({nullptr, wakeFd_, ZMQ_POLLIN, 0});
          std::optional<Clock::time_point> next;
          for (auto& c : connections) {
            if (!c) continue;
            for (auto& item : c->pollItems()) items.push_back(item);
            auto t = c->nextTimer();
            if (t && (!next || *t < *next)) next = t;
          }
          long timeout = next ? millisUntil(*next, Clock::now()) : -1;
          rpc::poll(items.data(), items.size(), std::chrono::milliseconds(timeout));

          if (items[0].revents & ZMQ_POLLIN) {
            uint64_t n;
            [[maybe_unused]] auto r = ::read(wakeFd_, &n, sizeof(n));
            std::vector<Submission> batch;
            {
              std::lock_guard lock(mutex_);
              batch.swap(queue_);
              stopping = stop_;
              while (connections.size() < endpoints_.size()) {
                const std::string& endpoint = endpoints_[connections.size()];
                std::string error;
                std::unique_ptr<Connection> c;
                barrier([&] { c = std::make_unique<Connection>(context_, endpoint, options_); },
                        [&](const char* what) { error = what; });
                if (!c) logged(error.c_str());
                connections.push_back(std::move(c));
                connectErrors.push_back(error);
              }
            }
            for (auto& s : batch) start(s);
            if (stopping) return;
          }
          for (auto& c : connections)
            if (c) c->process();
        },
        logged);
  }
  connections.clear();  // fails what is still in flight
}

// ---- Channel ----

void Channel::callAsync(uint64_t interfaceId, uint16_t methodId, zmq::message_t params,
                        CallOptions options, ReplyCallback done) const {
  owner_->submit(
      {index_, interfaceId, methodId, std::move(params), std::move(options), std::move(done)});
}

std::future<Reply> Channel::call(uint64_t interfaceId, uint16_t methodId, zmq::message_t params,
                                 CallOptions options) const {
  auto promise = std::make_shared<std::promise<Reply>>();
  auto future = promise->get_future();
  callAsync(interfaceId, methodId, std::move(params), std::move(options),
            [promise](Reply reply) { promise->set_value(std::move(reply)); });
  return future;
}

Reply Channel::callSync(uint64_t interfaceId, uint16_t methodId, zmq::message_t params,
                        CallOptions options) const {
  return call(interfaceId, methodId, std::move(params), std::move(options)).get();
}

uint16_t methodOrdinal(capnp::InterfaceSchema schema, kj::StringPtr name) {
  KJ_IF_MAYBE (method, schema.findMethodByName(name)) {
    return method->getOrdinal();
  }
  throw std::logic_error(std::string("interface ") + schema.getShortDisplayName().cStr() +
                         " has no method " + name.cStr());
}

}  // namespace zmesh::rpc
