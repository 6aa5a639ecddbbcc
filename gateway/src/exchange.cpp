#include "exchange.h"

#include <boost/json.hpp>
#include <charconv>

#include "gateway.h"
#include "session.h"
#include "zmesh/rpc/frame.h"

namespace zmesh::gateway {

Exchange::Exchange(std::shared_ptr<Session> session, Worker& worker, Request request,
                   const Route& route, std::vector<std::pair<std::string, std::string>> params,
                   std::vector<std::pair<std::string, std::string>> query, std::string requestId)
    : session_(std::move(session)),
      worker_(worker),
      request_(std::move(request)),
      route_(route),
      params_(std::move(params)),
      query_(std::move(query)),
      requestId_(std::move(requestId)) {}

std::string forwardedIdempotencyKey(std::string_view principal, std::string_view key) {
  if (key.empty() || principal.empty()) return std::string(key);
  std::string out;
  out.reserve(principal.size() + 1 + key.size());
  out.append(principal).append(":").append(key);
  return out;
}

std::string_view Exchange::param(std::string_view name) const {
  for (auto& [k, v] : params_)
    if (k == name) return v;
  return {};
}

std::optional<std::string_view> Exchange::query(std::string_view name) const {
  for (auto& [k, v] : query_)
    if (k == name) return std::string_view(v);
  return std::nullopt;
}

std::vector<std::string> Exchange::queryAll(std::string_view name) const {
  std::vector<std::string> out;
  for (auto& [k, v] : query_)
    if (k == name) out.push_back(v);
  return out;
}

std::optional<int64_t> Exchange::queryInteger(std::string_view name, int64_t fallback, int64_t min,
                                              int64_t max) {
  auto text = query(name);
  if (!text) return fallback;
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), value);
  if (ec != std::errc() || end != text->data() + text->size() || value < min || value > max) {
    fail(rpc::StatusCode::INVALID_ARGUMENT, "query parameter " + std::string(name) +
                                                " must be an integer from " + std::to_string(min) +
                                                " to " + std::to_string(max) + ", got \"" +
                                                std::string(*text) + "\"");
    return std::nullopt;
  }
  return value;
}

void Exchange::call(uint64_t interfaceId, uint16_t methodId, capnp::MessageBuilder& params,
                    OnReply onResults, std::chrono::milliseconds timeout) {
  auto& gateway = worker_.gateway();
  auto* service = gateway.service(route_.service);
  if (!service) return fail(rpc::StatusCode::UNIMPLEMENTED, "no service for this route");
  rpc::CallOptions options;
  options.timeout = timeout.count() > 0 ? timeout : gateway.config().requestTimeout;
  options.traceId = requestId_;
  // Reads are safe to resend; writes are not resent. The service sees the
  // Idempotency-Key of a route that honours one (the session checked it).
  if (route_.idempotencyKey)
    options.idempotencyKey = forwardedIdempotencyKey(principal_, request_["Idempotency-Key"]);
  options.retryable = request_.method() == http::verb::get;
  send(service->endpoint, interfaceId, methodId, params, std::move(options), std::move(onResults),
       true);
}

void Exchange::callEndpoint(const std::string& endpoint, uint64_t interfaceId, uint16_t methodId,
                            capnp::MessageBuilder& params, std::chrono::milliseconds timeout,
                            OnReply onReply) {
  rpc::CallOptions options;
  options.timeout = timeout;
  options.traceId = requestId_;
  options.retryable = true;
  send(endpoint, interfaceId, methodId, params, std::move(options), std::move(onReply), false);
}

void Exchange::send(const std::string& endpoint, uint64_t interfaceId, uint16_t methodId,
                    capnp::MessageBuilder& params, rpc::CallOptions options, OnReply onReply,
                    bool failOnError) {
  // A reply that cannot be read (or a handler that throws) answers 500; an
  // exchange answered already ignores it.
  worker_.connection(endpoint).call(
      interfaceId, methodId, rpc::toFrame(params), std::move(options),
      [self = shared_from_this(), onReply = std::move(onReply), failOnError](rpc::Reply reply) {
        try {
          if (failOnError && !reply.status.ok()) return self->fail(reply.status);
          onReply(*self, reply);
        } catch (const rpc::RpcError& e) {  // a malformed reply, named by field
          self->fail(e.code(), e.detail());
        } catch (const kj::Exception& e) {
          self->fail(rpc::StatusCode::INTERNAL,
                     "unreadable reply: " + std::string(e.getDescription().cStr()));
        } catch (const std::exception& e) {
          self->fail(rpc::StatusCode::INTERNAL, e.what());
        }
      });
}

void Exchange::reply(Response response) {
  if (answered_) return;
  answered_ = true;
  session_->send(std::move(response));
}

void Exchange::replyJson(http::status status, const boost::json::object& body) {
  reply(jsonResponse(status, body));
}

void Exchange::fail(rpc::StatusCode code, std::string_view message) {
  fail(rpc::Status{code, std::string(message)});
}

void Exchange::fail(const rpc::Status& status) {
  reply(errorResponse(status, requestId_, worker_.gateway().config().retryAfter));
}

void Exchange::failHttp(http::status status, std::string_view code, std::string_view message) {
  reply(errorResponse(status, code, message, requestId_, worker_.gateway().config().retryAfter));
}

void Exchange::startEventStream(std::vector<std::string> topics,
                                std::optional<std::string> lastEventId) {
  if (answered_) return;
  answered_ = true;
  session_->startEventStream(std::move(topics), std::move(lastEventId));
}

}  // namespace zmesh::gateway
