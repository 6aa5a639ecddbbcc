#include "zmesh/rpc/server.h"

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <climits>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <typeinfo>
#include <unordered_map>
#include <zmq_addon.hpp>

#include "method_stats.h"
#include "wire.h"
#include "zmesh/idl/common.capnp.h"
#include "zmesh/rpc/barrier.h"
#include "zmesh/rpc/frame.h"
#include "zmesh/rpc/log_limit.h"
#include "zmesh/rpc/poll.h"

namespace zmesh::rpc {
namespace {

using TimePoint = kj::TimePoint;

TimePoint monotonicNow() { return kj::systemPreciseMonotonicClock().now(); }

// common.capnp's $readOnly: generated code names an annotation only by its id,
// and this fails to compile if the annotation is gone.
const uint64_t kReadOnlyAnnotationId = capnp::schemas::s_fa0de63414b6164f.id;

// The server's side of one call: params in, results out, straight from and into
// the frames (DESIGN.md §9: about ten times cheaper than typelessRequest). A
// hook is used again for the next call once nothing holds it, with what it
// allocated: most calls then allocate nothing here.
class CallHook final : public capnp::CallContextHook, public kj::Refcounted {
 public:
  // Takes the request frame and opens the params from byte `offset` (in place
  // when aligned). Throws FrameError.
  void open(zmq::message_t& request, size_t offset, const capnp::ReaderOptions& options) {
    request_.move(request);
    if (offset == request_.size()) return;  // no params: a null root
    auto words = frameWords(request_, offset, copy_);
    auto& reader = openMessage(
        words, [&]() -> capnp::FlatArrayMessageReader& { return params_.emplace(words, options); });
    // Read once: a method and the checks ask for it several times, and each
    // getRoot() costs about as much as reading a field.
    root_ = reader.getRoot<capnp::AnyPointer>();
  }

  // Ready for the next call.
  void reset() {
    root_ = {};
    params_ = nullptr;
    request_.rebuild();
    released_ = false;
    results_ = nullptr;  // zeroes what it used of inline_, as it requires
    if (copy_.size() > kKeptCopyWords) copy_ = nullptr;
  }

  capnp::AnyPointer::Reader getParams() override {
    KJ_REQUIRE(!released_, "params were released");
    return root_;  // a null root when there are no params
  }
  void releaseParams() override {
    released_ = true;
    root_ = {};
    params_ = nullptr;
    request_.rebuild();
  }
  capnp::AnyPointer::Builder getResults(kj::Maybe<capnp::MessageSize> sizeHint) override {
    if (results_ == nullptr) {
      // Most results are a few words: they are built in the hook itself (capnp's
      // default, an 8 KiB zeroed segment, cost more than the rest of a call).
      // Larger results start from their size hint and grow.
      size_t hinted = 0;
      KJ_IF_MAYBE (hint, sizeHint) {
        hinted = hint->wordCount + 1;
      }
      if (hinted <= kInlineWords)
        results_.emplace(kj::arrayPtr(inline_, kInlineWords));
      else
        results_.emplace(static_cast<uint>(hinted));
    }
    return KJ_ASSERT_NONNULL(results_).getRoot<capnp::AnyPointer>();
  }
  kj::Promise<void> tailCall(kj::Own<capnp::RequestHook>&&) override {
    KJ_UNIMPLEMENTED("tail calls are not supported over zmesh rpc");
  }
  void allowCancellation() override {}  // every zmesh call may be cancelled
  void setPipeline(kj::Own<capnp::PipelineHook>&&) override {}
  kj::Promise<capnp::AnyPointer::Pipeline> onTailCall() override { return kj::NEVER_DONE; }
  capnp::ClientHook::VoidPromiseAndPipeline directTailCall(kj::Own<capnp::RequestHook>&&) override {
    KJ_UNIMPLEMENTED("tail calls are not supported over zmesh rpc");
  }
  kj::Own<capnp::CallContextHook> addRef() override { return kj::addRef(*this); }

  // What the method built, if anything.
  capnp::MessageBuilder* results() {
    KJ_IF_MAYBE (r, results_) {
      return r;
    }
    return nullptr;
  }

 private:
  static constexpr size_t kInlineWords = 32;
  static constexpr size_t kKeptCopyWords =
      8192;  // an unaligned large frame's copy, kept up to 64 KiB
  zmq::message_t request_;
  kj::Array<capnp::word> copy_;  // the params' aligned copy, when the frame's bytes are not
  kj::Maybe<capnp::FlatArrayMessageReader> params_;
  capnp::AnyPointer::Reader root_;  // params_'s root, or null
  bool released_ = false;
  capnp::word inline_[kInlineWords] = {};  // zeroed, as MallocMessageBuilder requires
  kj::Maybe<capnp::MallocMessageBuilder> results_;
};

zmq::message_t copyOf(const zmq::message_t& m) {
  zmq::message_t c;
  c.copy(const_cast<zmq::message_t&>(m));
  return c;
}

std::string retryKey(std::string_view peer, uint64_t requestId) {
  std::string key(peer);
  key.append(reinterpret_cast<const char*>(&requestId), sizeof(requestId));
  return key;
}

class LogErrors final : public kj::TaskSet::ErrorHandler {
 public:
  void taskFailed(kj::Exception&& e) override {
    spdlog::error("rpc task failed: {}", e.getDescription().cStr());
  }
};

}  // namespace

struct Server::Impl {
  Impl(zmq::context_t& context, Server& self)
      : self(self),
        router(context, zmq::socket_type::router),
        waitScope(loop),
        timer(monotonicNow()),
        tasks(errors) {
    methodStats.push_back({});
    methodStats.back().name = "_unknown";
  }

  static constexpr uint32_t kUnknownMethod = 0;  // index in methodStats

  // Whom a reply goes to, and under what terms.
  struct Caller {
    std::string_view peer;
    uint64_t requestId;
    bool retryable;
    TimePoint deadline;
    std::string_view traceId;
    uint32_t method;    // index in methodStats
    TimePoint started;  // when the request was read
  };

  // A call whose method has not answered yet.
  struct Call {
    Caller caller() const {
      return {peer, requestId, retryable, deadline, traceId, method, started};
    }
    std::string peer;
    uint64_t requestId = 0;
    bool retryable = false;
    TimePoint deadline = kj::origin<TimePoint>();  // the caller's budget: a later reply is useless
    std::string traceId;
    uint32_t method = kUnknownMethod;
    TimePoint started = kj::origin<TimePoint>();
    kj::Own<CallHook> hook;
    // The method's work; destroying it cancels the method (deadline, stop).
    kj::Promise<void> work = nullptr;
    bool answered = false;
  };

  struct Retained {  // a retryable call, in flight (no reply yet) or answered
    bool answered = false;
    TimePoint expires = kj::origin<TimePoint>();
    zmq::message_t reply;
  };

  struct Pending {  // a reply that met EAGAIN
    zmq::message_t reply;
    TimePoint deadline;
  };
  struct PeerQueue {
    std::deque<Pending> replies;
    size_t bytes = 0;
    kj::Duration backoff = 1 * kj::MILLISECONDS;
    bool armed = false;
  };

  enum class Sent { ok, wouldBlock, unroutable };

  Server& self;
  zmq::socket_t router;
  kj::EventLoop loop;
  kj::WaitScope waitScope;
  kj::TimerImpl timer;
  LogErrors errors;
  int wakeFd = -1;
  std::mutex postedMutex;
  std::vector<std::function<void()>> posted;
  std::vector<std::pair<zmq::pollitem_t, std::function<void()>>> watched;
  // What a request may call: by interface id, then by method ordinal.
  struct Method {
    capnp::Capability::Server* server;
    capnp::StructSchema params;
    const CheckPlan* check;  // params' checkFields plan, compiled at serve()
    bool readOnly;           // $readOnly in the schema
    uint32_t stats;          // index in methodStats
  };
  struct Served {
    kj::Own<capnp::Capability::Server> server;
    std::vector<Method> methods;
  };
  std::map<uint64_t, Served> servers;
  std::vector<MethodStats> methodStats;  // [kUnknownMethod], then each served method
  std::unordered_map<uint64_t, Call> calls;
  kj::Own<CallHook> spareHook;  // the last call's, ready for the next
  // One ordered set instead of a kj timer per call: cheaper, and swept once a turn.
  std::set<std::pair<TimePoint, uint64_t>> deadlines;
  // Answered calls, erased after the turn (a promise must not be destroyed by
  // its own continuation).
  std::vector<uint64_t> answeredCalls;
  uint64_t nextCall = 0;
  std::unordered_map<std::string, Retained> retained;
  std::deque<std::pair<TimePoint, std::string>> retainedOrder;
  std::unordered_map<std::string, PeerQueue> peers;
  bool moreToRead = false;
  std::vector<zmq::pollitem_t> items;
  std::optional<TimePoint> graceDeadline;
  capnp::ReaderOptions paramOptions;
  LogLimiter barrierLog, malformedLog, internalLog;
  size_t retainedBytes = 0;  // keys and replies held in `retained`
  // Last so that pending tasks go first: they reference everything above.
  kj::TaskSet tasks;

  // ---- receiving ----

  void readBatch() {
    moreToRead = false;
    std::vector<zmq::message_t> frames;
    for (size_t i = 0; i < self.options_.batch; ++i) {
      frames.clear();
      if (!zmq::recv_multipart(router, std::back_inserter(frames), zmq::recv_flags::dontwait))
        return;
      rpc::barrier([&] { handle(frames); }, [&](const char* what) { caught("request", what); });
    }
    // Level-triggered poll would tell us too, but this keeps timers fair under load.
    moreToRead = true;
  }

  // What no message may do is stop the loop: what escapes one is counted and
  // logged (rate-limited), and the loop goes on.
  void caught(const char* stage, const char* what) {
    ++self.counters_.barrierCaught;
    if (auto held = barrierLog.admit())
      spdlog::error("{}: {} failed: {} ({} more like it not logged)", self.options_.name, stage,
                    what, *held);
  }

  void handle(std::vector<zmq::message_t>& frames) {
    auto& c = self.counters_;
    ++c.requests;
    if (frames.size() != 2) {  // [peer][request]
      ++c.malformed;
      return;
    }
    std::string peer = frames[0].to_string();
    wire::HeaderFrame headerFrame;
    try {
      headerFrame.read(frames[1]);
    } catch (const FrameError& e) {
      ++c.malformed;  // no request id to answer to
      if (auto held = malformedLog.admit())
        spdlog::warn("{}: dropped a request: {} ({} more like it not logged)", self.options_.name,
                     e.what(), *held);
      return;
    }
    const wire::Header& header = headerFrame.get();
    uint64_t requestId = header.requestId;
    TimePoint started = monotonicNow();  // the one clock read of a request, and one at reply
    const Method* method = find(header.interfaceId, header.methodId);
    uint32_t stats = method ? method->stats : kUnknownMethod;

    if (self.stopping_) {
      ++c.refusedStopping;
      record(stats, StatusCode::UNAVAILABLE, started);
      deliver(peer,
              wire::encodeReply(requestId, StatusCode::UNAVAILABLE,
                                self.options_.name + " is stopping"),
              timer.now() + 1 * kj::SECONDS);
      return;
    }
    uint32_t budget = header.budgetMs ? header.budgetMs : self.options_.defaultBudgetMs;
    if (budget > self.options_.maxBudgetMs) {
      ++c.budgetClamped;
      budget = self.options_.maxBudgetMs;
    }
    TimePoint deadline = timer.now() + budget * kj::MILLISECONDS;

    auto early = [&](StatusCode code, std::string message, uint64_t& counter,
                     const std::string* retainKey = nullptr) {
      ++counter;
      record(stats, code, started);
      auto r = wire::encodeReply(requestId, code, message);
      if (retainKey) retain(*retainKey, r);
      deliver(peer, kj::mv(r), deadline);
    };
    if (method == nullptr)
      return early(StatusCode::UNIMPLEMENTED, unimplemented(header.interfaceId, header.methodId),
                   c.unimplemented);

    // A read-only method is run again on a resend: nothing to keep.
    bool retryable = header.retryable && !method->readOnly;
    std::string key;
    if (retryable) {
      key = retryKey(peer, requestId);
      auto it = retained.find(key);
      if (it != retained.end()) {
        if (it->second.answered) {
          ++c.duplicateReplayed;
          deliver(peer, copyOf(it->second.reply), deadline);
        } else {
          ++c.duplicateInFlight;  // the first attempt's reply will answer it
        }
        return;
      }
    }
    const std::string* retainKey = retryable ? &key : nullptr;

    size_t paramBytes = frames[1].size() - headerFrame.bodyOffset();
    if (paramBytes > self.options_.maxRequestBytes)
      return early(StatusCode::PAYLOAD_TOO_LARGE,
                   "request of " + std::to_string(paramBytes) + " bytes exceeds the limit of " +
                       std::to_string(self.options_.maxRequestBytes) + " bytes",
                   c.oversize, retainKey);
    // The header's texts view the frame (or the header's copy of it). The hook
    // takes the frame below, and its bytes stay where they are: libzmq keeps
    // only frames of up to 33 bytes inside the message object, and a request
    // that gets this far with a text is at least 48 (segment table and root
    // pointer 16, a served interface id's two data words 16, a text's pointer
    // and bytes 16).
    std::string_view traceId = header.traceId;
    size_t bodyOffset = headerFrame.bodyOffset();
    kj::Own<CallHook> hook =
        spareHook.get() != nullptr ? kj::mv(spareHook) : kj::refcounted<CallHook>();
    // The hook goes back to the spare slot when nothing else holds it.
    KJ_DEFER({
      if (hook.get() != nullptr && !hook->isShared()) {
        hook->reset();
        spareHook = kj::mv(hook);
      }
    });
    try {
      hook->open(frames[1], bodyOffset, paramOptions);
    } catch (const FrameError& e) {
      return early(StatusCode::INVALID_ARGUMENT, std::string("params: ") + e.what(),
                   c.invalidParams, retainKey);
    }
    try {
      checkFields(hook->getParams(), *method->check, method->params, "params");  // names the field
    } catch (const FrameError& e) {
      return early(StatusCode::INVALID_ARGUMENT, e.what(), c.invalidParams, retainKey);
    }

    if (retryable) retained[key];  // in flight: a resend waits for this reply
    // Until a reply or a Call takes over the placeholder; a throw before then
    // must not leave it, or every resend of this id would wait forever.
    bool placed = retryable;
    KJ_ON_SCOPE_FAILURE({
      auto it = placed ? retained.find(key) : retained.end();
      if (it != retained.end() && !it->second.answered) retained.erase(it);
    });
    Caller caller{peer, requestId, retryable, deadline, traceId, stats, started};

    capnp::Capability::Server* target = method->server;
    auto result = kj::evalNow([&] {
      return target
          ->dispatchCall(header.interfaceId, header.methodId,
                         capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer>(*hook))
          .promise;
    });
    // Most methods answer at once: reply now, with no record of the call and
    // no continuation.
    if (auto status = answeredAtOnce(result)) {
      reply(caller, *hook, *status);
      return;
    }
    // The method would wait. Past the bound it is cancelled, as at its deadline,
    // and answered busy at once; not retained (the placeholder goes), so a
    // resend after the rush runs. Calls that answer at once are never
    // refused: a release that would free the waiters, and Admin, work under load.
    if (inFlight() >= self.options_.maxInFlight) {
      result = nullptr;
      if (retryable) retained.erase(key);
      placed = false;
      return early(
          StatusCode::UNAVAILABLE,
          self.options_.name + " is busy: " + std::to_string(inFlight()) + " calls in flight",
          c.busy);
    }
    uint64_t id = ++nextCall;
    Call& call = calls[id];
    placed = false;  // the call's deadline or reply ends the placeholder from here
    call.peer = kj::mv(peer);
    call.requestId = requestId;
    call.retryable = retryable;
    call.deadline = deadline;
    call.traceId = caller.traceId;
    call.method = stats;
    call.started = started;
    call.hook = kj::addRef(*hook);
    call.work = result.attach(kj::addRef(*hook))
                    .then([this, id]() { complete(id, {}); },
                          [this, id](kj::Exception&& e) { complete(id, statusFromException(e)); })
                    .eagerlyEvaluate(nullptr);
    deadlines.emplace(deadline, id);
  }

  // The outcome of a method's promise if it has one now, else nothing. A method
  // that returns kj::READY_NOW (or throws before returning) leaves a promise
  // that is already resolved: it is read directly, for about a tenth of what
  // turning the event loop (poll, then wait) costs on every call. Any other
  // promise is polled. kj::_ is kj's own namespace: this follows the capnp 0.9
  // that DESIGN.md pins, and a capnp without these types fails to build here.
  std::optional<Status> answeredAtOnce(kj::Promise<void>& result) {
    auto& node = kj::_::PromiseNode::from(result);
    // The two final classes by their exact type: a typeid comparison, where a
    // dynamic_cast to their base walks the class hierarchy (200 instructions).
    const std::type_info& type = typeid(node);
    if (type == typeid(kj::_::ImmediatePromiseNode<kj::_::Void>) ||
        type == typeid(kj::_::ImmediateBrokenPromiseNode)) {
      kj::_::ExceptionOr<kj::_::Void> outcome;
      node.get(outcome);
      KJ_IF_MAYBE (e, outcome.exception) {
        return statusFromException(*e);
      }
      return Status{};
    }
    if (!result.poll(waitScope)) return std::nullopt;
    try {
      result.wait(waitScope);
    } catch (const kj::Exception& e) {
      return statusFromException(e);
    }
    return Status{};
  }

  // Calls whose method has not answered (answered ones wait for the turn's end to go).
  size_t inFlight() const { return calls.size() - answeredCalls.size(); }

  const Method* find(uint64_t interfaceId, uint16_t methodId) const {
    auto it = servers.find(interfaceId);
    if (it == servers.end() || methodId >= it->second.methods.size()) return nullptr;
    return &it->second.methods[methodId];
  }

  std::string unimplemented(uint64_t interfaceId, uint16_t methodId) const {
    char hex[32];
    std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(interfaceId));
    if (servers.count(interfaceId))
      return self.options_.name + " has no method @" + std::to_string(methodId) +
             " in interface 0x" + hex;
    return self.options_.name + " does not implement interface 0x" + hex;
  }

  // ---- replying ----

  // A call's outcome, timed from `started` to now.
  void record(uint32_t method, StatusCode code, TimePoint started) {
    methodStats[method].record(code, (monotonicNow() - started) / kj::NANOSECONDS);
  }

  // A deferred call's method finished (or the call is abandoned at stop).
  void complete(uint64_t id, Status status) {
    auto it = calls.find(id);
    if (it == calls.end() || it->second.answered) return;
    Call& call = it->second;
    reply(call.caller(), *call.hook, status);
    call.answered = true;
    answeredCalls.push_back(id);
  }

  void reply(const Caller& caller, CallHook& hook, const Status& status) {
    auto& c = self.counters_;
    if (status.code == StatusCode::INTERNAL) {
      ++c.internalErrors;
      if (auto held = internalLog.admit())
        spdlog::error(
            "{}: internal error (request {}, trace '{}'): {} ({} more like it not logged)",
            self.options_.name, caller.requestId, caller.traceId, status.message, *held);
    } else if (!status.ok()) {
      ++c.failed;
    }
    record(caller.method, status.code, caller.started);
    auto r = wire::encodeReply(caller.requestId, status.code, status.message,
                               status.ok() ? hook.results() : nullptr);
    if (caller.retryable) retain(retryKey(caller.peer, caller.requestId), r);
    ++c.replies;
    deliver(caller.peer, kj::mv(r), caller.deadline);
  }

  // Erases answered calls; called between loop turns, never from a continuation.
  void eraseAnswered() {
    for (auto id : answeredCalls) {
      auto it = calls.find(id);
      if (it == calls.end()) continue;
      deadlines.erase({it->second.deadline, id});
      calls.erase(it);
    }
    answeredCalls.clear();
  }

  // The caller's budget ran out: drop the work nobody waits for.
  void expireCalls() {
    auto now = timer.now();
    while (!deadlines.empty() && deadlines.begin()->first <= now) {
      uint64_t id = deadlines.begin()->second;
      deadlines.erase(deadlines.begin());
      auto it = calls.find(id);
      if (it == calls.end() || it->second.answered) continue;
      ++self.counters_.deadlineDropped;
      record(it->second.method, StatusCode::DEADLINE_EXCEEDED, it->second.started);
      forget(id);
    }
  }

  // The caller gave up (deadline): no reply, and a resend runs the call afresh.
  void forget(uint64_t id) {
    auto it = calls.find(id);
    if (it == calls.end()) return;
    deadlines.erase({it->second.deadline, id});
    if (it->second.retryable) retained.erase(retryKey(it->second.peer, it->second.requestId));
    calls.erase(it);
  }

  // What one entry of `retained` costs, roughly: its key, its reply and the
  // hash and order nodes.
  static size_t retainedCost(const std::string& key, const zmq::message_t& reply) {
    return 2 * key.size() + reply.size() + 128;
  }

  void retain(const std::string& key, const zmq::message_t& reply) {
    Retained& r = retained[key];
    if (r.answered) retainedBytes -= retainedCost(key, r.reply);
    r.answered = true;
    r.expires = timer.now() + self.options_.retryWindowMs * kj::MILLISECONDS;
    r.reply = copyOf(reply);
    retainedBytes += retainedCost(key, r.reply);
    retainedOrder.emplace_back(r.expires, key);
  }

  // Oldest first: those whose window ended, then any over the entry or byte
  // bounds (counted: a resend of one of those runs again).
  void expireRetained() {
    auto now = timer.now();
    auto& o = self.options_;
    while (!retainedOrder.empty()) {
      bool expired = retainedOrder.front().first <= now;
      if (!expired && retainedOrder.size() <= o.retryWindowMaxEntries &&
          retainedBytes <= o.retryWindowMaxBytes)
        break;
      auto it = retained.find(retainedOrder.front().second);
      if (it != retained.end() && it->second.answered &&
          it->second.expires == retainedOrder.front().first) {
        if (!expired) ++self.counters_.retainedEvicted;
        retainedBytes -= retainedCost(it->first, it->second.reply);
        retained.erase(it);
      }
      retainedOrder.pop_front();
    }
  }

  Sent trySend(std::string_view peer, zmq::message_t& reply) {
    zmq::message_t identity(peer.data(), peer.size());
    try {
      if (!router.send(identity, zmq::send_flags::sndmore | zmq::send_flags::dontwait))
        return Sent::wouldBlock;
    } catch (const zmq::error_t& e) {
      if (e.num() == EHOSTUNREACH) return Sent::unroutable;
      throw;
    }
    // Once the envelope is accepted the rest of the message goes to the same pipe.
    router.send(reply, zmq::send_flags::dontwait);
    return Sent::ok;
  }

  void deliver(std::string_view peer, zmq::message_t reply, TimePoint deadline) {
    // Mostly empty: then the peer's name is neither hashed nor copied.
    auto queue = peers.empty() ? peers.end() : peers.find(std::string(peer));
    if (queue == peers.end()) {
      switch (trySend(peer, reply)) {
        case Sent::ok:
          return;
        case Sent::unroutable:
          ++self.counters_.repliesUnroutable;
          return;
        case Sent::wouldBlock:
          queue = peers.try_emplace(std::string(peer)).first;
          break;
      }
    }
    // Keep replies to one peer in order: once some wait, new ones queue behind.
    PeerQueue& q = queue->second;
    if (q.replies.size() >= self.options_.peerQueueMax ||
        q.bytes + reply.size() > self.options_.peerQueueMaxBytes) {
      ++self.counters_.repliesDroppedQueueFull;
    } else {
      ++self.counters_.repliesQueued;
      q.bytes += reply.size();
      q.replies.push_back({kj::mv(reply), deadline});
    }
    arm(queue->first, q);
  }

  // Retrying on ROUTER POLLOUT would spin: it is set while *any* peer has room.
  void arm(const std::string& peer, PeerQueue& q) {
    if (q.armed) return;
    q.armed = true;
    tasks.add(timer.afterDelay(q.backoff).then([this, peer]() { flush(peer); }));
  }

  void flush(const std::string& peer) {
    auto it = peers.find(peer);
    if (it == peers.end()) return;
    PeerQueue& q = it->second;
    q.armed = false;
    auto now = timer.now();
    bool progressed = false;
    while (!q.replies.empty()) {
      Pending& p = q.replies.front();
      size_t bytes = p.reply.size();  // a sent message is emptied
      if (p.deadline > now) {
        Sent s = trySend(peer, p.reply);
        if (s == Sent::wouldBlock) break;
        if (s == Sent::unroutable) ++self.counters_.repliesUnroutable;
        progressed = true;
      } else {
        ++self.counters_.repliesDroppedDeadline;
      }
      q.bytes -= bytes;
      q.replies.pop_front();
    }
    if (q.replies.empty()) {
      peers.erase(it);
      return;
    }
    q.backoff = progressed ? 1 * kj::MILLISECONDS : kj::min(q.backoff * 2, 100 * kj::MILLISECONDS);
    arm(peer, q);
  }

  // ---- the loop ----

  void runPosted() {
    uint64_t n;
    [[maybe_unused]] auto r = ::read(wakeFd, &n, sizeof(n));
    std::vector<std::function<void()>> batch;
    {
      std::lock_guard lock(postedMutex);
      batch.swap(posted);
    }
    for (auto& fn : batch) {
      try {
        fn();
      } catch (const std::exception& e) {
        spdlog::error("{}: posted task failed: {}", self.options_.name, e.what());
      } catch (const kj::Exception& e) {
        spdlog::error("{}: posted task failed: {}", self.options_.name, e.getDescription().cStr());
      }
    }
  }

  long pollTimeoutMs() {
    if (moreToRead || loop.isRunnable()) return 0;
    auto now = monotonicNow();
    std::optional<uint64_t> ms;
    KJ_IF_MAYBE (t, timer.timeoutToNextEvent(now, kj::MILLISECONDS, INT_MAX)) {
      ms = *t;
    }
    if (!deadlines.empty()) {
      auto d = deadlines.begin()->first;
      uint64_t dm =
          d > now ? (d - now + kj::MILLISECONDS - 1 * kj::NANOSECONDS) / kj::MILLISECONDS : 0;
      ms = ms ? std::min(*ms, dm) : dm;
    }
    if (graceDeadline) {
      uint64_t g = *graceDeadline > now ? (*graceDeadline - now) / kj::MILLISECONDS + 1 : 0;
      ms = ms ? std::min(*ms, g) : g;
    }
    return ms ? static_cast<long>(*ms) : -1;
  }

  bool finished() {
    if (!self.stopping_) return false;
    if (calls.empty() && peers.empty()) return true;
    if (timer.now() < *graceDeadline) return false;
    // Grace is over: answer what is left, give the replies one chance to go out.
    std::vector<uint64_t> ids;
    for (auto& [id, call] : calls) ids.push_back(id);
    for (auto id : ids)
      complete(id,
               {StatusCode::UNAVAILABLE, self.options_.name + " stopped before the call finished"});
    eraseAnswered();  // destroys the unfinished work
    std::vector<std::string> names;
    for (auto& [peer, q] : peers) names.push_back(peer);
    for (auto& peer : names) flush(peer);
    if (!calls.empty() || !peers.empty())
      spdlog::warn("{}: stopped with {} calls and {} peer queues undelivered", self.options_.name,
                   calls.size(), peers.size());
    return true;
  }

  void run() {
    while (true) {
      if (self.stopRequested_.load() && !self.stopping_) {
        self.stopping_ = true;
        graceDeadline = monotonicNow() + self.options_.graceMs * kj::MILLISECONDS;
        spdlog::info("{}: stopping; {} calls in flight", self.options_.name, calls.size());
      }
      timer.advanceTo(monotonicNow());
      if (finished()) return;

      items.clear();  // reused: this runs once per wake-up
      items.push_back({router.handle(), 0, ZMQ_POLLIN, 0});
      items.push_back({nullptr, wakeFd, ZMQ_POLLIN, 0});
      for (auto& [item, fn] : watched) items.push_back(item);
      rpc::poll(items.data(), items.size(), std::chrono::milliseconds(pollTimeoutMs()));
      ++self.counters_.wakeups;
      timer.advanceTo(monotonicNow());

      if ((items[0].revents & ZMQ_POLLIN) || moreToRead) readBatch();
      if (items[1].revents & ZMQ_POLLIN) runPosted();
      for (size_t i = 0; i < watched.size(); ++i)
        if (items[i + 2].revents & ZMQ_POLLIN) watched[i].second();
      // Bounded, so a callback that reschedules itself cannot freeze the loop.
      loop.run(4096);
      eraseAnswered();
      expireCalls();
      expireRetained();
    }
  }
};

Server::Server(zmq::context_t& context, ServerOptions options)
    : options_(std::move(options)), impl_(std::make_unique<Impl>(context, *this)) {
  auto& router = impl_->router;
  router.set(zmq::sockopt::router_mandatory, 1);
  // Clients keep their routing id across reconnects (so a resend after a
  // reconnect is recognised); a reconnect must take over the stale pipe.
  router.set(zmq::sockopt::router_handover, 1);
  router.set(zmq::sockopt::linger, 0);
  router.set(zmq::sockopt::sndhwm, options_.sendHwm);
  router.set(zmq::sockopt::rcvhwm, options_.recvHwm);
  // Only a last guard: libzmq drops the connection silently at this size, so the
  // real limit (with an error reply) is maxRequestBytes, well below it.
  router.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(options_.maxRequestBytes * 4 + 65536));
  impl_->paramOptions = readerOptionsFor(options_.maxRequestBytes);
  impl_->wakeFd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (impl_->wakeFd < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  stats_.add([this](MetricsOut& out) {
    const auto& c = counters_;
    auto counter = [&](const char* name, const char* help, uint64_t v) {
      out.counter(std::string("rpc.") + name, help, static_cast<double>(v));
    };
    auto gauge = [&](const char* name, const char* help, uint64_t v) {
      out.gauge(std::string("rpc.") + name, help, static_cast<double>(v));
    };
    counter("requests", "Requests received", c.requests);
    counter("replies", "Replies from methods (not counting early refusals)", c.replies);
    counter("malformed", "Requests dropped: bad framing or header", c.malformed);
    counter("invalid_params", "Requests answered INVALID_ARGUMENT before dispatch",
            c.invalidParams);
    counter("oversize", "Requests answered PAYLOAD_TOO_LARGE", c.oversize);
    counter("unimplemented", "Requests for an unknown interface or method", c.unimplemented);
    counter("busy", "Calls answered UNAVAILABLE: too many in flight", c.busy);
    counter("budget_clamped", "Requests whose time budget was cut to the maximum", c.budgetClamped);
    counter("barrier_caught", "Exceptions stopped at the loop's barrier", c.barrierCaught);
    counter("failed", "Non-OK replies from methods (not INTERNAL)", c.failed);
    counter("internal_errors", "Replies with status INTERNAL", c.internalErrors);
    counter("deadline_dropped", "Calls dropped: the budget ran out while the method ran",
            c.deadlineDropped);
    counter("duplicate_replayed", "Resends answered with the kept reply", c.duplicateReplayed);
    counter("duplicate_in_flight", "Resends of a call still running", c.duplicateInFlight);
    counter("retained_evicted", "Kept replies forgotten before their window ended (bounds)",
            c.retainedEvicted);
    gauge("retained_entries", "Retryable calls kept now, answered or in flight",
          impl_->retained.size());
    gauge("retained_bytes", "Bytes the kept replies take now", impl_->retainedBytes);
    counter("replies_queued", "Replies that met a full pipe and waited in a peer queue",
            c.repliesQueued);
    counter("replies_dropped_deadline", "Queued replies dropped at their deadline",
            c.repliesDroppedDeadline);
    counter("replies_dropped_queue_full", "Replies dropped: the peer's queue was full",
            c.repliesDroppedQueueFull);
    counter("replies_unroutable", "Replies to a peer that is gone", c.repliesUnroutable);
    counter("refused_stopping", "Requests refused while stopping", c.refusedStopping);
    counter("wakeups", "Loop iterations", c.wakeups);
    gauge("in_flight", "Calls whose method has not answered yet", impl_->inFlight());
    gauge("peer_queues", "Peers with replies waiting for room", impl_->peers.size());
    size_t queued = 0;
    for (auto& [peer, q] : impl_->peers) queued += q.bytes;
    gauge("peer_queue_bytes", "Bytes of replies waiting in peer queues", queued);
    collectMethodStats(impl_->methodStats, out);
  });
}

Server::~Server() {
  if (!impl_) return;
  // Calls, then the services, before the fds: a service's helper thread may
  // post() (write the wake fd) until the service has joined it.
  impl_->calls.clear();
  impl_->servers.clear();
  if (impl_->wakeFd >= 0) ::close(impl_->wakeFd);
}

void Server::serve(capnp::InterfaceSchema schema, kj::Own<capnp::Capability::Server> impl) {
  if (impl_->servers.count(schema.getProto().getId()))
    throw std::logic_error("interface served twice");
  Impl::Served served;
  std::string interfaceName = schema.getShortDisplayName().cStr();
  for (auto method : schema.getMethods()) {
    bool readOnly = false;
    for (auto a : method.getProto().getAnnotations())
      readOnly |= a.getId() == kReadOnlyAnnotationId;
    auto params = method.getParamType();
    auto stats = static_cast<uint32_t>(impl_->methodStats.size());
    impl_->methodStats.push_back({});
    impl_->methodStats.back().name = interfaceName + "." + method.getProto().getName().cStr();
    served.methods.push_back({impl.get(), params, &checkPlanFor(params), readOnly, stats});
  }
  served.server = kj::mv(impl);
  impl_->servers.emplace(schema.getProto().getId(), kj::mv(served));
}

void Server::bind() {
  for (auto& endpoint : options_.endpoints) {
    try {
      impl_->router.bind(endpoint);
    } catch (const zmq::error_t& e) {
      throw std::runtime_error(options_.name + ": cannot bind " + endpoint + ": " + e.what());
    }
  }
}

std::vector<std::string> Server::boundEndpoints() {
  // ZMQ_LAST_ENDPOINT only reports the latest bind; enough for the single-endpoint
  // case that port 0 is used for (tests).
  std::vector<std::string> out;
  if (options_.endpoints.size() == 1)
    out.push_back(impl_->router.get(zmq::sockopt::last_endpoint));
  else
    out = options_.endpoints;
  return out;
}

void Server::run() { impl_->run(); }

void Server::requestStop() {
  stopRequested_ = true;
  post([] {});
}

void Server::post(std::function<void()> fn) {
  {
    std::lock_guard lock(impl_->postedMutex);
    impl_->posted.push_back(std::move(fn));
  }
  uint64_t one = 1;
  [[maybe_unused]] auto r = ::write(impl_->wakeFd, &one, sizeof(one));
}

void Server::watchFd(int fd, std::function<void()> onReadable) {
  impl_->watched.emplace_back(zmq::pollitem_t{nullptr, fd, ZMQ_POLLIN, 0}, std::move(onReadable));
}

void Server::watchSocket(zmq::socket_ref socket, std::function<void()> onReadable) {
  impl_->watched.emplace_back(zmq::pollitem_t{socket.handle(), 0, ZMQ_POLLIN, 0},
                              std::move(onReadable));
}

kj::Timer& Server::timer() { return impl_->timer; }

size_t Server::inFlight() const { return impl_->inFlight(); }

}  // namespace zmesh::rpc
