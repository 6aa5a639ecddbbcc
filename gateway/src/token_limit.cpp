#include "token_limit.h"

#include <spdlog/spdlog.h>

#include "gateway.h"
#include "zmesh/idl/ratelimit.capnp.h"
#include "zmesh/rpc/barrier.h"
#include "zmesh/rpc/frame.h"

namespace zmesh::gateway {

namespace {

using idl::RateLimit;
using std::chrono::milliseconds;

int64_t ceilSeconds(milliseconds ms) { return ms.count() <= 0 ? 0 : (ms.count() + 999) / 1000; }

// An sf-string: the rule's name in quotes, '"' and '\' escaped.
std::string quoted(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
  return out;
}

}  // namespace

void setRateLimitHeaders(Response& response, std::string_view rule, uint64_t limit,
                         milliseconds window, uint64_t remaining, milliseconds reset) {
  auto name = quoted(rule);
  response.set("RateLimit-Policy",
               name + ";q=" + std::to_string(limit) + ";w=" + std::to_string(ceilSeconds(window)));
  response.set("RateLimit", name + ";r=" + std::to_string(remaining) +
                                ";t=" + std::to_string(ceilSeconds(reset)));
}

void setRetryAfter(Response& response, milliseconds wait) {
  response.set(http::field::retry_after, std::to_string(std::max<int64_t>(1, ceilSeconds(wait))));
}

TokenLimiter::TokenLimiter(Worker& worker)
    : worker_(worker),
      rule_(worker.gateway().config().ratelimitRule),
      maxWaiting_(worker.gateway().config().ratelimitQueue),
      timeout_(worker.gateway().config().requestTimeout),
      core_(TwoStageOptions{.batch = worker.gateway().config().ratelimitBatch,
                            .failOpen = worker.gateway().config().ratelimitFailOpen,
                            // A failed lease's verdict holds as long as a 503 asks to wait.
                            .failureHold = worker.gateway().config().retryAfter,
                            .maxKeys = worker.gateway().config().ratelimitMaxKeys}) {
  if (rule_.empty()) return;
  auto* service = worker.gateway().service("ratelimit");
  if (!service || !service->built)
    throw rpc::ConfigError("gateway.ratelimit_rule = \"" + rule_ +
                           "\" needs the rate limiter: the mesh has no [ratelimit] service");
  endpoint_ = service->endpoint;
}

namespace {

Response stopping(const std::string& requestId, milliseconds retryAfter) {
  return errorResponse(http::status::service_unavailable, "UNAVAILABLE", "the gateway is stopping",
                       requestId, retryAfter);
}

}  // namespace

void TokenLimiter::admit(const std::string& key, const std::string& requestId, Done done) {
  if (!enabled()) return done(std::nullopt);
  if (closed_) return done(stopping(requestId, worker_.gateway().config().retryAfter));
  auto a = core_.admit(rule_, key, 1, TwoStage::Clock::now());
  switch (a.verdict) {
    case TwoStage::Verdict::kLease:
      return lease(key, a.want, requestId, std::move(done));
    case TwoStage::Verdict::kWait: {
      auto& queue = waiting_[key];
      if (queue.size() < maxWaiting_) {
        queue.push_back({requestId, std::move(done)});
        return;
      }
      worker_.gateway().metrics().count(Metrics::Limit::kRatelimitQueueFull);
      return done(errorResponse(
          http::status::service_unavailable, "UNAVAILABLE",
          "too many requests of this caller wait for the rate limiter's answer (ratelimit_queue " +
              std::to_string(maxWaiting_) + "); retry later",
          requestId, worker_.gateway().config().retryAfter));
    }
    default:
      return answer(a, requestId, done);
  }
}

void TokenLimiter::lease(const std::string& key, uint32_t want, const std::string& requestId,
                         Done done) {
  worker_.gateway().metrics().count(Metrics::Limit::kRatelimitLeases);
  capnp::MallocMessageBuilder params(32);
  auto p = params.initRoot<RateLimit::LeaseParams>();
  p.setRule(rule_);
  p.setKey(key);
  p.setWant(want);
  p.setTtlMs(0);  // the service's lease_max, cut to the rule's window
  rpc::CallOptions options;
  options.timeout = timeout_;
  options.traceId = requestId;
  static const uint16_t kLease = rpc::methodOrdinal(capnp::Schema::from<RateLimit>(), "lease");
  // The worker owns this limiter and closes its connections first: `this`
  // outlives every callback (a connection closing fails its calls at once).
  worker_.connection(endpoint_).call(
      capnp::typeId<RateLimit>(), kLease, rpc::toFrame(params), std::move(options),
      [this, key, requestId, done = std::move(done)](rpc::Reply reply) {
        if (closed_) {
          // Failed by the connection closing: no handler may run, no call may start.
          auto retryAfter = worker_.gateway().config().retryAfter;
          done(stopping(requestId, retryAfter));
          if (auto it = waiting_.find(key); it != waiting_.end()) {
            auto waiters = std::move(it->second);
            waiting_.erase(it);
            for (auto& waiter : waiters) waiter.done(stopping(waiter.requestId, retryAfter));
          }
          return;
        }
        onLease(key, requestId, done, reply);
        drain(key);
      });
}

void TokenLimiter::onLease(const std::string& key, const std::string& requestId, const Done& done,
                           rpc::Reply& reply) {
  auto now = TwoStage::Clock::now();
  std::string failure;
  // Only the reading of the reply is guarded: the request's own handler runs
  // from answer(), and what it throws is its own, not the lease's.
  std::optional<RateLimitClient::Lease> lease;
  if (reply.status.ok()) {
    try {
      auto r = reply.results<RateLimit::LeaseResults>();
      lease = RateLimitClient::Lease{r.getGranted(), milliseconds(r.getTtlMs()),
                                     RateLimitClient::decisionOf(r.getDecision())};
    } catch (const rpc::RpcError& e) {  // a malformed reply, named by field
      failure = e.what();
    } catch (const kj::Exception& e) {
      failure = e.getDescription().cStr();
    }
  } else {
    failure = std::string(rpc::statusName(reply.status.code)) + ": " + reply.status.message;
  }
  if (lease) return answer(core_.leased(rule_, key, 1, *lease, now), requestId, done);
  worker_.gateway().metrics().count(Metrics::Limit::kRatelimitLeaseFailures);
  auto code = reply.status.code;
  if (!reply.status.ok() && code != rpc::StatusCode::UNAVAILABLE &&
      code != rpc::StatusCode::DEADLINE_EXCEEDED && code != rpc::StatusCode::INTERNAL) {
    // The service answered, and refused the rule itself (renamed by a reload,
    // keyed on more than one descriptor): the gateway's configuration is
    // wrong, not the service down. Neither fail-open nor 503 says that.
    core_.leaseCancelled(rule_, key);
    if (auto held = log_.admit())
      spdlog::error(
          "gateway.ratelimit_rule {}: the rate limiter refuses it ({}) ({} more not "
          "logged)",
          rule_, failure, *held);
    return done(errorResponse(
        http::status::internal_server_error, "INTERNAL",
        "gateway.ratelimit_rule " + rule_ + " is refused by the rate limiter: " + failure,
        requestId, {}));
  }
  if (auto held = log_.admit())
    spdlog::warn("gateway.ratelimit_rule {}: lease failed ({}); {} ({} more not logged)", rule_,
                 failure, core_.options().failOpen ? "admitting (fail open)" : "answering 503",
                 *held);
  answer(core_.leaseFailed(rule_, key, 1, now), requestId, done);
}

void TokenLimiter::drain(const std::string& key) {
  for (;;) {
    // Looked up each turn: an answer may start another request (never this
    // one's key in this turn, but the map may grow).
    auto it = waiting_.find(key);
    if (it == waiting_.end()) return;
    if (it->second.empty()) {
      waiting_.erase(it);
      return;
    }
    auto a = core_.admit(rule_, key, 1, TwoStage::Clock::now());
    if (a.verdict == TwoStage::Verdict::kWait) return;  // a lease in flight again
    Waiter waiter = std::move(it->second.front());
    it->second.pop_front();
    // One waiter's failure must not strand the ones behind it.
    rpc::barrier(
        [&] {
          if (a.verdict == TwoStage::Verdict::kLease)
            lease(key, a.want, waiter.requestId, std::move(waiter.done));
          else
            answer(a, waiter.requestId, waiter.done);
        },
        [&](const char* what) {
          spdlog::error("gateway.ratelimit_rule {}: a queued request failed: {}", rule_, what);
        });
  }
}

void TokenLimiter::answer(const TwoStage::Admission& a, const std::string& requestId,
                          const Done& done) {
  auto& gateway = worker_.gateway();
  if (a.verdict == TwoStage::Verdict::kAdmitted) {
    gateway.metrics().count(Metrics::Limit::kRatelimitAdmitted);
    return done(std::nullopt);
  }
  if (a.failed) {
    gateway.metrics().count(Metrics::Limit::kRatelimitFailedClosed);
    return done(errorResponse(http::status::service_unavailable, "UNAVAILABLE",
                              "the rate limiter cannot be asked about this caller's limit (rule " +
                                  rule_ + ") and gateway.ratelimit_fail_open is off",
                              requestId, a.retryAfter));
  }
  if (a.refused) {
    // The rate limiter is out of room for new keys: its capacity, not this
    // caller's quota (429 is for quota only).
    gateway.metrics().count(Metrics::Limit::kRatelimitFailedClosed);
    return done(errorResponse(http::status::service_unavailable, "UNAVAILABLE",
                              "the rate limiter cannot track this caller: " + a.reason, requestId,
                              a.retryAfter));
  }
  gateway.metrics().count(Metrics::Limit::kRatelimitDenied);
  std::string message = "over this caller's rate limit (rule " + rule_ + ")";
  if (!a.reason.empty()) message += ": " + a.reason;
  auto response = errorResponse(http::status::too_many_requests, "RESOURCE_EXHAUSTED", message,
                                requestId, a.retryAfter);
  if (a.limit > 0) setRateLimitHeaders(response, rule_, a.limit, a.window, 0, a.reset);
  setRetryAfter(response, a.retryAfter);
  done(std::move(response));
}

}  // namespace zmesh::gateway
