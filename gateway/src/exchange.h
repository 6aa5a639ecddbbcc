// One HTTP request on its way to an answer: what a route handler sees.
//
// A handler reads the request, calls a service with call<T>() (or answers
// directly), and answers exactly once with reply()/fail(). The Exchange lives
// (shared_ptr) until answered; answering after the client went away is safe.
// Worker thread only.
#pragma once

#include <capnp/message.h>

#include <boost/json/object.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "responses.h"
#include "router.h"
#include "zmesh/rpc/client.h"

namespace zmesh::gateway {

class Worker;
class Session;
struct ServiceTarget;

// The Idempotency-Key a service sees: "<principal>:<key>", so two principals'
// keys never meet in a service's own dedup ("" principal: the key as sent).
std::string forwardedIdempotencyKey(std::string_view principal, std::string_view key);

class Exchange : public std::enable_shared_from_this<Exchange> {
 public:
  Exchange(std::shared_ptr<Session> session, Worker& worker, Request request, const Route& route,
           std::vector<std::pair<std::string, std::string>> params,
           std::vector<std::pair<std::string, std::string>> query, std::string requestId);

  const Request& request() const { return request_; }
  const Route& route() const { return route_; }
  Worker& worker() { return worker_; }
  const std::string& requestId() const { return requestId_; }
  // The authenticated principal's name ("" without auth): scopes the
  // Idempotency-Key forwarded to the service.
  void setPrincipal(std::string name) { principal_ = std::move(name); }

  // A path capture ({namespace}); "" when the route has none by that name.
  std::string_view param(std::string_view name) const;
  // The first value of a query parameter, if present ("?stats" gives "").
  std::optional<std::string_view> query(std::string_view name) const;
  std::vector<std::string> queryAll(std::string_view name) const;
  // A query integer in [min, max]; a missing one is `fallback`. On bad input it
  // answers 400 naming the parameter and returns nullopt.
  std::optional<int64_t> queryInteger(std::string_view name, int64_t fallback, int64_t min,
                                      int64_t max);

  // Calls `method` of interface T on the route's service with `params`, with
  // the request id as trace id, the gateway's deadline and the Idempotency-Key.
  // A failed call is answered here with the mapped status; `onResults` runs
  // only on success (an exception in it answers 500).
  // The exchange is passed in: a handler's callback needs no capture of its
  // own (and std::function then needs no allocation to hold it).
  // `timeout` 0: the gateway's request_timeout; a call that may wait on
  // purpose (a lock's acquire) passes its wait plus that.
  using OnReply = std::function<void(Exchange&, rpc::Reply&)>;
  void call(uint64_t interfaceId, uint16_t methodId, capnp::MessageBuilder& params,
            OnReply onResults, std::chrono::milliseconds timeout = {});
  // The same toward an explicit endpoint (readiness, metrics), never failing
  // the exchange: `onReply` sees every outcome.
  void callEndpoint(const std::string& endpoint, uint64_t interfaceId, uint16_t methodId,
                    capnp::MessageBuilder& params, std::chrono::milliseconds timeout,
                    OnReply onReply);

  void reply(Response response);
  void replyJson(http::status status, const boost::json::object& body);
  void fail(rpc::StatusCode code, std::string_view message);
  void fail(const rpc::Status& status);
  void failHttp(http::status status, std::string_view code, std::string_view message);
  bool answered() const { return answered_; }

  // Turns the connection into a Server-Sent Events stream (GET /v1/events).
  void startEventStream(std::vector<std::string> topics, std::optional<std::string> lastEventId);

 private:
  // failOnError: a failed call answers the exchange instead of reaching onReply.
  void send(const std::string& endpoint, uint64_t interfaceId, uint16_t methodId,
            capnp::MessageBuilder& params, rpc::CallOptions options, OnReply onReply,
            bool failOnError);

  std::shared_ptr<Session> session_;
  Worker& worker_;
  Request request_;
  const Route& route_;
  std::vector<std::pair<std::string, std::string>> params_;
  std::vector<std::pair<std::string, std::string>> query_;
  std::string requestId_;
  std::string principal_;
  bool answered_ = false;
};

}  // namespace zmesh::gateway
