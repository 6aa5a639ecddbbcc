// The gateway's own per-token rate limit (API.md: the only 429), and the
// RateLimit header fields it shares with POST /v1/ratelimit/check.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "responses.h"
#include "zmesh/rpc/log_limit.h"
#include "zmesh/two_stage.h"

namespace zmesh::gateway {

class Worker;

// RateLimit-Policy and RateLimit as the IETF httpapi ratelimit-headers draft
// (-08, structured fields) writes them, seconds rounded up:
//   RateLimit-Policy: "<rule>";q=<limit>;w=<window>
//   RateLimit: "<rule>";r=<remaining>;t=<reset>
void setRateLimitHeaders(Response& response, std::string_view rule, uint64_t limit,
                         std::chrono::milliseconds window, uint64_t remaining,
                         std::chrono::milliseconds reset);
// Retry-After in seconds, rounded up, at least 1.
void setRetryAfter(Response& response, std::chrono::milliseconds wait);

// One worker's local stage of gateway.ratelimit_rule (two-stage limiting: see
// zmesh/two_stage.h), keyed on the caller (token name, or address without
// auth). Never blocks: a key's lease goes out on the worker's own connection
// to the rate limiter, one in flight per key; the key's other requests wait
// for it in a bounded queue. Each worker leases on its own, so the gateway
// admits at most limit + threads x ratelimit_batch a window per key.
// Worker thread only.
class TokenLimiter {
 public:
  // Throws rpc::ConfigError when the rule is set and the mesh has no rate limiter.
  explicit TokenLimiter(Worker& worker);
  TokenLimiter(const TokenLimiter&) = delete;
  TokenLimiter& operator=(const TokenLimiter&) = delete;

  bool enabled() const { return !rule_.empty(); }
  // Decides one request of `key`. `done` runs exactly once, maybe inside this
  // call: with nullopt to go on, or with the answer to send instead (429 over
  // the limit; 503 when the rate limiter cannot be asked and fail-open is off,
  // or too many of the key's requests wait).
  using Done = std::function<void(std::optional<Response> refusal)>;
  void admit(const std::string& key, const std::string& requestId, Done done);
  // Before the worker's connections close (their calls fail inside that): from
  // then on every request answers 503 and nothing makes a new call.
  void close() { closed_ = true; }

 private:
  struct Waiter {
    std::string requestId;
    Done done;
  };
  void lease(const std::string& key, uint32_t want, const std::string& requestId, Done done);
  void onLease(const std::string& key, const std::string& requestId, const Done& done,
               rpc::Reply& reply);
  // Re-decides the requests that waited for the key's lease, in order.
  void drain(const std::string& key);
  void answer(const TwoStage::Admission& a, const std::string& requestId, const Done& done);

  Worker& worker_;
  std::string rule_;
  std::string endpoint_;
  size_t maxWaiting_;
  std::chrono::milliseconds timeout_;
  TwoStage core_;
  std::unordered_map<std::string, std::deque<Waiter>> waiting_;  // by key
  rpc::LogLimiter log_;
  bool closed_ = false;
};

}  // namespace zmesh::gateway
