#include "session.h"

#include <algorithm>
#include <boost/asio/write.hpp>
#include <boost/beast/core/read_size.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/chunk_encode.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json.hpp>
#include <boost/url/parse.hpp>
#include <random>
#include <utility>

#include "exchange.h"
#include "gateway.h"

namespace zmesh::gateway {

namespace asio = boost::asio;
namespace beast = boost::beast;

namespace {

// Ids and keys a client sends are echoed into logs, headers and the services:
// printable ASCII without spaces, bounded.
bool isToken(std::string_view text, size_t maxBytes) {
  if (text.empty() || text.size() > maxBytes) return false;
  for (unsigned char c : text)
    if (c <= 0x20 || c >= 0x7f) return false;
  return true;
}

// The client went away or our idle timer closed the socket: nothing to answer.
bool connectionGone(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == asio::error::operation_aborted ||
         ec == asio::error::bad_descriptor;
}

std::string newRequestId() {
  thread_local std::mt19937_64 random{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(16, '0');
  uint64_t bits = random();
  for (int i = 15; i >= 0; --i, bits >>= 4) out[i] = kHex[bits & 0xf];
  return out;
}

constexpr std::string_view kUnmatched = "unmatched";  // the route label of requests no route took
constexpr std::string_view kRequestIdHeader = "X-Request-Id";
constexpr size_t kMaxRequestIdBytes = 128;
constexpr size_t kMaxIdempotencyKeyBytes = 255;
constexpr int kSseSendBuffer = 64 * 1024;
// What one read of an idle connection may take: Beast's own read size.
constexpr size_t kFirstRead = 64 * 1024;
// How long an ending stream may take to deliver its final event.
constexpr std::chrono::seconds kFinalEventGrace{5};

// What a page may send (preflight) and read (every answer) across origins.
constexpr std::string_view kCorsAllowHeaders =
    "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, X-Request-Id";
constexpr std::string_view kCorsExposeHeaders =
    "RateLimit, RateLimit-Policy, Retry-After, X-Request-Id, Idempotent-Replayed, "
    "WWW-Authenticate, Allow";

// Every answer of a gateway with cors_origins varies with Origin (caches must
// not hand one origin's answer to another); an allowed origin is named.
void setCorsHeaders(http::fields& fields, const GatewayConfig& config, const std::string& origin) {
  if (config.corsOrigins.empty()) return;
  fields.set(http::field::vary, "Origin");
  if (origin.empty()) return;
  fields.set(http::field::access_control_allow_origin, origin);
  fields.set(http::field::access_control_expose_headers, kCorsExposeHeaders);
}

std::string sseFrame(std::string_view event, std::string_view id, std::string_view data) {
  std::string out;
  out.reserve(event.size() + id.size() + data.size() + 24);
  if (!event.empty()) out.append("event: ").append(event).append("\n");
  if (!id.empty()) out.append("id: ").append(id).append("\n");
  out.append("data: ").append(data).append("\n\n");  // data is one line of JSON
  return out;
}

}  // namespace

Session::Session(Worker& worker, Socket socket, bool refused)
    : worker_(worker),
      gateway_(worker.gateway()),
      stream_(std::move(socket)),
      timer_(worker.io()),
      refused_(refused) {}

Session::~Session() {
  // The accept handler counted this connection (or this refusal).
  if (refused_) {
    gateway_.refusalDone();
  } else {
    --gateway_.connections;
    gateway_.metrics().connectionClosed();
  }
}

void Session::refuse() {
  keepAlive_ = false;
  requestId_ = newRequestId();
  auto response =
      errorResponse(http::status::service_unavailable, "UNAVAILABLE",
                    "the gateway is at its connection limit (" +
                        std::to_string(gateway_.config().maxConnections) + "); retry later",
                    requestId_, gateway_.config().retryAfter);
  response.set(kRequestIdHeader, requestId_);
  response.keep_alive(false);
  response.prepare_payload();
  write(std::move(response));
  expireAfter(std::chrono::seconds(1));  // a client that reads nothing holds nothing long
}

void Session::expireAfter(std::chrono::milliseconds timeout) {
  deadline_ = Clock::now() + timeout;
  if (closed_) return;
  // A wait that fires before the deadline re-checks it then; only a deadline
  // earlier than the armed wait needs the timer moved.
  if (timerArmed_ && armedAt_ <= deadline_) return;
  armTimer(deadline_);
}

void Session::armTimer(Clock::time_point at) {
  timerArmed_ = true;
  armedAt_ = at;
  timer_.expires_at(at);  // a wait already pending ends with operation_aborted
  timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
    if (ec == asio::error::operation_aborted) return;  // moved or closed
    self->onTimer();
  });
}

void Session::onTimer() {
  timerArmed_ = false;
  if (closed_ || deadline_ == Clock::time_point::max()) return;
  if (Clock::now() >= deadline_) {
    if (readingHeader_) gateway_.metrics().count(Metrics::Limit::kHeaderTimeouts);
    return close();  // pending reads and writes end aborted
  }
  armTimer(deadline_);
}

void Session::start() { readHeader(); }

void Session::readHeader() {
  if (gateway_.stopping()) return close();
  // A new connection's first request, or one already (partly) received,
  // is under the header timeout at once; an idle keep-alive connection
  // is under the idle timeout until its next request begins.
  if (std::exchange(firstRequest_, false) || buffer_.size() > 0) return readHeaderNow();
  expireAfter(gateway_.config().idleTimeout);
  // A read, not async_wait(wait_read): asio re-registers the socket with
  // epoll_ctl for every wait, one syscall per request, while a read that
  // finds nothing just queues (read events stay registered) and the bytes it
  // brings are parsed by readHeaderNow() without reading again.
  auto space = buffer_.prepare(beast::read_size(buffer_, kFirstRead));
  stream_.async_read_some(space, [self = shared_from_this()](beast::error_code ec, size_t n) {
    if (ec || self->closed_) return self->close();
    self->buffer_.commit(n);
    self->readHeaderNow();
  });
}

void Session::readHeaderNow() {
  if (gateway_.stopping()) return close();
  auto& config = gateway_.config();
  parser_.emplace();
  parser_->header_limit(static_cast<uint32_t>(config.maxHeaderBytes));
  parser_->body_limit(config.maxBodyBytes);
  readingHeader_ = true;
  expireAfter(config.headerTimeout);
  http::async_read_header(
      stream_, buffer_, *parser_,
      [self = shared_from_this()](beast::error_code ec, size_t) { self->onHeader(ec); });
}

namespace {

// The request target's length as far as the start line in `received` shows it
// ("METHOD SP target SP version"); 0 when there is no target yet.
size_t targetLength(std::string_view received) {
  auto lineEnd = received.find("\r\n");
  auto line = received.substr(0, lineEnd);
  auto sp = line.find(' ');
  if (sp == std::string_view::npos) return 0;
  auto rest = line.substr(sp + 1);
  auto end = rest.find(' ');
  return end == std::string_view::npos ? rest.size() : end;
}

// `origin` when cors_origins lists it exactly, else "" (no CORS headers).
std::string allowedOrigin(const GatewayConfig& config, std::string_view origin) {
  auto& allowed = config.corsOrigins;
  if (std::find(allowed.begin(), allowed.end(), origin) == allowed.end()) return {};
  return std::string(origin);
}

}  // namespace

void Session::onHeader(beast::error_code ec) {
  readingHeader_ = false;
  if (ec == http::error::header_limit) {
    // The URI alone may be what is too long: that is 414, not 431. The
    // parser has the target once it has read the start line; before, the
    // start line is still the beginning of what was received.
    size_t length = parser_->get().target().size();
    if (length == 0) {
      auto data = buffer_.cdata();
      length = targetLength(std::string_view(static_cast<const char*>(data.data()), data.size()));
    }
    if (length > gateway_.config().maxUriBytes)
      return reject(http::status::uri_too_long, "URI_TOO_LONG",
                    "request target is at least " + std::to_string(length) +
                        " bytes; the limit is " + std::to_string(gateway_.config().maxUriBytes));
    return reject(
        http::status::request_header_fields_too_large, "HEADERS_TOO_LARGE",
        "request headers exceed " + std::to_string(gateway_.config().maxHeaderBytes) + " bytes");
  }
  if (ec == http::error::body_limit) return onBody(ec);
  if (ec) {
    if (connectionGone(ec)) return close();
    return reject(http::status::bad_request, "INVALID_ARGUMENT",
                  "malformed HTTP request: " + ec.message());
  }
  auto& config = gateway_.config();
  if (parser_->get().target().size() > config.maxUriBytes)
    return reject(http::status::uri_too_long, "URI_TOO_LONG",
                  "request target is " + std::to_string(parser_->get().target().size()) +
                      " bytes; the limit is " + std::to_string(config.maxUriBytes));
  if (parser_->is_done()) return onBody({});
  expireAfter(config.idleTimeout);  // the body: as long as an idle connection may wait
  http::async_read(stream_, buffer_, *parser_,
                   [self = shared_from_this()](beast::error_code ec, size_t) { self->onBody(ec); });
}

void Session::onBody(beast::error_code ec) {
  if (ec == http::error::body_limit)
    return reject(
        http::status::payload_too_large, "PAYLOAD_TOO_LARGE",
        "request body exceeds " + std::to_string(gateway_.config().maxBodyBytes) + " bytes");
  if (ec) {
    if (connectionGone(ec)) return close();
    return reject(http::status::bad_request, "INVALID_ARGUMENT",
                  "malformed HTTP request body: " + ec.message());
  }
  expireNever();  // a service call's own deadline bounds the wait
  dispatch(parser_->release());
}

void Session::beginRequest() {
  busy_ = true;
  headOnly_ = false;
  started_ = Clock::now();
  routeName_ = kUnmatched;
  idempotency_.reset();
  ++gateway_.activeRequests;
  gateway_.metrics().requestStarted();
}

void Session::finishRequest(int status) {
  auto seconds = std::chrono::duration<double>(Clock::now() - started_).count();
  gateway_.metrics().observe(method_, routeName_, status, seconds);
  gateway_.metrics().requestFinished();
  --gateway_.activeRequests;
}

void Session::reject(http::status status, std::string_view code, std::string_view message) {
  // After a framing error the rest of the connection cannot be trusted.
  beginRequest();
  keepAlive_ = false;
  method_ = "UNKNOWN";
  requestId_.clear();
  corsOrigin_.clear();
  // An allowed origin still gets its CORS headers (413, 414, 431): a page
  // must be able to read why it failed. The parser holds the fields it has
  // read, complete or not: an Origin before the limit is among them.
  auto& config = gateway_.config();
  if (parser_ && parser_->is_header_done()) {
    method_ = std::string(parser_->get().method_string());
    auto id = parser_->get()[kRequestIdHeader];
    if (isToken(id, kMaxRequestIdBytes)) requestId_ = std::string(id);
  }
  if (parser_ && !config.corsOrigins.empty())
    if (auto it = parser_->get().find(http::field::origin); it != parser_->get().end())
      corsOrigin_ = allowedOrigin(config, it->value());
  if (requestId_.empty()) requestId_ = newRequestId();
  send(errorResponse(status, code, message, requestId_, config.retryAfter));
}

void Session::dispatch(Request request) {
  auto& config = gateway_.config();
  beginRequest();
  method_ = std::string(request.method_string());
  keepAlive_ = request.keep_alive() && !gateway_.stopping();

  auto idHeader = request[kRequestIdHeader];
  requestId_ = isToken(idHeader, kMaxRequestIdBytes) ? std::string(idHeader) : newRequestId();
  corsOrigin_.clear();
  if (!config.corsOrigins.empty())
    if (auto it = request.find(http::field::origin); it != request.end())
      corsOrigin_ = allowedOrigin(config, it->value());
  auto failHttp = [&](http::status status, std::string_view code, std::string_view message) {
    send(errorResponse(status, code, message, requestId_, config.retryAfter));
  };

  auto target = boost::urls::parse_origin_form(request.target());
  if (!target)
    return failHttp(http::status::bad_request, "INVALID_ARGUMENT",
                    "malformed request target: " + target.error().message());
  segments_.clear();
  for (auto segment : target->segments()) segments_.emplace_back(segment);
  std::vector<std::pair<std::string, std::string>> query;
  for (auto param : target->params()) query.emplace_back(param.key, param.value);

  auto match = gateway_.router().match(request.method(), segments_);
  if (!match.route && request.method() == http::verb::head) {
    auto get = gateway_.router().match(http::verb::get, segments_);
    if (get.route && get.route->head) {
      match = std::move(get);
      headOnly_ = true;
    }
  }
  if (!match.route) {
    // A preflight from an allowed origin, before auth (browsers send it
    // without credentials). From any other origin it is an OPTIONS like any
    // other: 405 with Allow (or 404), no CORS header, so the browser refuses.
    if (request.method() == http::verb::options && !corsOrigin_.empty() &&
        request.find(http::field::access_control_request_method) != request.end() &&
        match.pathRoute) {
      routeName_ = match.pathRoute->pattern;
      return preflight(match.allowed);
    }
    if (!match.allowed.empty()) {
      auto response = errorResponse(http::status::method_not_allowed, "METHOD_NOT_ALLOWED",
                                    std::string(request.method_string()) + " is not allowed on " +
                                        std::string(target->path()) +
                                        " (allowed: " + allowHeader(match.allowed) + ")",
                                    requestId_, config.retryAfter);
      response.set(http::field::allow, allowHeader(match.allowed));
      return send(std::move(response));
    }
    return failHttp(
        http::status::not_found, "NOT_FOUND",
        "no route for " + std::string(request.method_string()) + " " + std::string(target->path()));
  }
  const Route& route = *match.route;
  routeName_ = route.pattern;

  const Principal* principal = nullptr;
  if (route.scope) {
    std::optional<std::string_view> authorization, accessToken;
    if (auto it = request.find(http::field::authorization); it != request.end())
      authorization = it->value();
    if (route.queryToken)
      for (auto& [k, v] : query)
        if (k == "access_token") accessToken = v;
    auto decision = gateway_.auth().check(authorization, accessToken, *route.scope);
    if (decision.outcome == Authenticator::Outcome::kUnauthenticated)
      return failHttp(http::status::unauthorized, "UNAUTHENTICATED", decision.reason);
    if (decision.outcome == Authenticator::Outcome::kForbidden)
      return failHttp(http::status::forbidden, "PERMISSION_DENIED", decision.reason);
    principal = decision.principal;
  }

  for (auto& [name, value] : match.params)
    if (value.size() > config.maxKeyBytes)
      return failHttp(http::status::bad_request, "INVALID_ARGUMENT",
                      "{" + name + "} is " + std::to_string(value.size()) +
                          " bytes; the limit is " + std::to_string(config.maxKeyBytes));

  if (!route.service.empty()) {
    auto* service = gateway_.service(route.service);
    if (!route.handler)
      return failHttp(http::status::not_implemented, "UNIMPLEMENTED",
                      "the " + route.service + " service is not built yet");
    if (!service || !service->built)
      return failHttp(http::status::not_implemented, "UNIMPLEMENTED",
                      "the " + route.service + " service is not configured in this mesh ([" +
                          route.service + "] in the mesh file)");
  }

  // The per-token limit, on the routes that take a token. Before the
  // Idempotency-Key is recorded: a 429 must not become what a retry replays.
  auto& limiter = worker_.limiter();
  if (!route.scope || !limiter.enabled())
    return serve(std::move(request), route, std::move(match.params), std::move(query), principal);
  std::string caller;
  if (principal) {
    caller = principal->name;
  } else {
    beast::error_code ec;
    auto remote = stream_.remote_endpoint(ec);
    caller = ec ? std::string("unknown") : remote.address().to_string();
  }
  limiter.admit(caller, requestId_,
                [self = shared_from_this(), request = std::move(request), &route,
                 params = std::move(match.params), query = std::move(query),
                 principal](std::optional<Response> refusal) mutable {
                  if (refusal) return self->send(std::move(*refusal));
                  self->serve(std::move(request), route, std::move(params), std::move(query),
                              principal);
                });
}

void Session::preflight(const std::vector<http::verb>& methods) {
  auto response = emptyResponse(http::status::no_content);
  response.set(http::field::access_control_allow_methods, allowHeader(methods));
  response.set(http::field::access_control_allow_headers, kCorsAllowHeaders);
  auto maxAge = std::chrono::duration_cast<std::chrono::seconds>(gateway_.config().corsMaxAge);
  response.set(http::field::access_control_max_age, std::to_string(maxAge.count()));
  send(std::move(response));
}

void Session::serve(Request request, const Route& route,
                    std::vector<std::pair<std::string, std::string>> params,
                    std::vector<std::pair<std::string, std::string>> query,
                    const Principal* principal) {
  auto& config = gateway_.config();
  auto failHttp = [&](http::status status, std::string_view code, std::string_view message) {
    send(errorResponse(status, code, message, requestId_, config.retryAfter));
  };
  if (auto it = request.find("Idempotency-Key"); route.idempotencyKey && it != request.end()) {
    auto key = it->value();
    if (!isToken(key, kMaxIdempotencyKeyBytes))
      return failHttp(http::status::bad_request, "INVALID_ARGUMENT",
                      "Idempotency-Key must be 1-255 printable characters without spaces");
    std::string scope = principal ? principal->name : std::string();
    auto fingerprint =
        IdempotencyStore::fingerprint(request.method_string(), request.target(), request.body());
    auto begin = gateway_.idempotency().begin(scope, std::string(key), fingerprint);
    switch (begin.outcome) {
      case IdempotencyStore::Outcome::kReplay: {
        Response response{static_cast<http::status>(begin.response->status), 11};
        for (auto& [name, value] : begin.response->headers) response.set(name, value);
        response.set("Idempotent-Replayed", "true");
        response.body() = std::move(begin.response->body);
        return send(std::move(response));
      }
      case IdempotencyStore::Outcome::kInProgress:
        return failHttp(http::status::conflict, "CONFLICT",
                        "a request with this Idempotency-Key is still in progress");
      case IdempotencyStore::Outcome::kMismatch:
        return failHttp(http::status::conflict, "CONFLICT",
                        "this Idempotency-Key was used for a different request");
      case IdempotencyStore::Outcome::kFirst:
        idempotency_.emplace(std::move(scope), std::string(key));
        break;
    }
  }

  auto exchange = std::make_shared<Exchange>(shared_from_this(), worker_, std::move(request), route,
                                             std::move(params), std::move(query), requestId_);
  if (principal) exchange->setPrincipal(principal->name);
  try {
    route.handler(exchange);
  } catch (const std::exception& e) {
    if (!exchange->answered()) exchange->fail(rpc::StatusCode::INTERNAL, e.what());
  }
}

void Session::send(Response response) {
  if (!busy_) return;  // answered already, or the connection is gone
  busy_ = false;
  auto status = static_cast<int>(response.result_int());
  if (idempotency_) {
    auto& [scope, key] = *idempotency_;
    if (status >= 500) {
      gateway_.idempotency().abandon(scope, key);
    } else {
      StoredResponse stored{status, {}, response.body()};
      for (auto& field : response)
        if (!boost::beast::iequals(field.name_string(), kRequestIdHeader))
          stored.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
      gateway_.idempotency().complete(scope, key, std::move(stored));
    }
    idempotency_.reset();
  }
  finishRequest(status);
  if (closed_) return;
  if (gateway_.stopping()) keepAlive_ = false;
  setCorsHeaders(response, gateway_.config(), corsOrigin_);
  response.set(kRequestIdHeader, requestId_);
  response.keep_alive(keepAlive_);
  if (headOnly_) {
    // The GET answer's header, its Content-Length included, without the body.
    const auto length = response.body().size();
    response.body().clear();
    response.content_length(length);
  } else {
    response.prepare_payload();
  }
  write(std::move(response));
}

void Session::write(Response response) {
  response_ = std::move(response);  // one answer in flight per connection
  expireAfter(gateway_.config().idleTimeout);
  http::async_write(stream_, response_, [self = shared_from_this()](beast::error_code ec, size_t) {
    if (ec) return self->close();
    if (!self->response_.keep_alive()) return self->closeGracefully();
    self->readHeader();
  });
}

void Session::closeGracefully() {
  // Closing with unread request bytes (a refused body, pipelined requests)
  // makes the kernel send RST, and the client may lose the answer it has not
  // read yet: send FIN, read and discard until the client closes, bounded.
  beast::error_code ignored;
  stream_.shutdown(Socket::shutdown_send, ignored);
  expireAfter(std::chrono::seconds(1));
  readUntilClosed();
}

void Session::close() {
  if (closed_) return;
  closed_ = true;
  if (streaming_) {
    gateway_.events().unsubscribe(streamId_);
    gateway_.metrics().sseClosed(false);
    --gateway_.sseStreams;
    streaming_ = false;
  }
  if (heartbeat_) heartbeat_->cancel();
  beast::error_code ec;
  timer_.cancel();
  stream_.shutdown(Socket::shutdown_send, ec);
  stream_.close(ec);
}

// ---- Server-Sent Events ----

void Session::startEventStream(std::vector<std::string> topics,
                               std::optional<std::string> lastEventId) {
  auto& config = gateway_.config();
  if (closed_)  // the client left while the request was routed: nothing to stream to
    return send(errorResponse(http::status::service_unavailable, "UNAVAILABLE", "connection closed",
                              requestId_, config.retryAfter));
  if (gateway_.sseStreams.fetch_add(1) >= static_cast<int64_t>(config.maxSseStreams)) {
    --gateway_.sseStreams;
    gateway_.metrics().count(Metrics::Limit::kSseRefused);
    return send(errorResponse(http::status::service_unavailable, "UNAVAILABLE",
                              "the gateway is at its event stream limit (" +
                                  std::to_string(config.maxSseStreams) + "); retry later",
                              requestId_, config.retryAfter));
  }
  std::weak_ptr<Session> weak = shared_from_this();
  auto subscribed = gateway_.events().subscribe(
      worker_.io(), TopicFilter(std::move(topics)), lastEventId,
      [weak](const std::shared_ptr<const BufferedEvent>& event, bool gap) {
        auto self = weak.lock();
        if (!self || !self->streaming_ || self->streamEnding_) return;
        if (!event) return self->endStream("shutdown", "{\"reason\":\"gateway stopping\"}", false);
        if (gap)
          self->enqueue(sseFrame("gap", "", event->data));
        else
          self->enqueue(sseFrame(event->topic, event->id, event->data));
      });
  if (subscribed.malformedId) {
    --gateway_.sseStreams;
    return send(errorResponse(
        http::status::bad_request, "INVALID_ARGUMENT",
        "Last-Event-ID \"" + lastEventId.value_or("") + "\" is not an id this gateway issued",
        requestId_, gateway_.config().retryAfter));
  }
  if (subscribed.resume.truncated) gateway_.metrics().count(Metrics::Limit::kSseReplayTruncated);

  // The stream is an answer that never ends: account for the request now.
  busy_ = false;
  finishRequest(200);

  streaming_ = true;
  streamId_ = subscribed.id;
  // Bound what the kernel holds for a stalled client, so the per-stream queue,
  // not a growing socket buffer, decides when it is too slow.
  beast::error_code ignored;
  stream_.set_option(asio::socket_base::send_buffer_size(kSseSendBuffer), ignored);
  streamHeader_ = std::make_unique<http::response<http::empty_body>>(http::status::ok, 11);
  streamHeader_->set(http::field::content_type, "text/event-stream");
  streamHeader_->set(http::field::cache_control, "no-cache");
  streamHeader_->set(kRequestIdHeader, requestId_);
  setCorsHeaders(*streamHeader_, config, corsOrigin_);
  streamHeader_->chunked(true);
  streamSerializer_ = std::make_unique<http::response_serializer<http::empty_body>>(*streamHeader_);

  // Tell the browser how soon to reconnect, then what the resume missed.
  queue_.push_back("retry: 1000\n\n");
  if (subscribed.resume.truncated)
    queue_.push_back(sseFrame("gap", "",
                              "{\"reason\":\"the events after Last-Event-ID exceed "
                              "sse_replay_max_bytes: only the newest are replayed\"}"));
  else if (subscribed.resume.gap)
    queue_.push_back(
        sseFrame("gap", "", "{\"reason\":\"events after Last-Event-ID are no longer buffered\"}"));
  for (auto& event : subscribed.resume.events)
    queue_.push_back(sseFrame(event.topic, event.id, event.data));
  // The replayed backlog may be longer than the live bound allows; it goes
  // out in the first write and does not count against the client.
  backlogAllowance_ = queue_.size();

  writing_ = true;
  expireNever();
  http::async_write_header(stream_, *streamSerializer_,
                           [self = shared_from_this()](beast::error_code ec, size_t) {
                             self->writing_ = false;
                             if (ec) return self->close();
                             // An SSE client sends nothing more: a read ends only when it goes
                             // away.
                             self->readUntilClosed();
                             self->armHeartbeat();
                             self->writeNextChunk();
                           });
}

void Session::enqueue(std::string frame) {
  if (closed_ || streamEnding_) return;
  if (queue_.size() >= gateway_.config().sseClientQueue + backlogAllowance_) {
    auto reason =
        "{\"reason\":\"slow consumer: " + std::to_string(queue_.size()) + " events queued\"}";
    return endStream("dropped", reason, true);
  }
  queue_.push_back(std::move(frame));
  writeNextChunk();
}

void Session::writeNextChunk() {
  if (writing_ || closed_) return;
  if (queue_.empty()) {
    if (streamEnding_) {
      writing_ = true;
      asio::async_write(stream_, http::make_chunk_last(),
                        [self = shared_from_this()](beast::error_code, size_t) { self->close(); });
    }
    return;
  }
  // Everything queued goes out as one chunk: one write in flight per stream,
  // and a reader that keeps up never lets the queue grow past one write's worth.
  writing_ = true;
  auto batch = std::make_shared<std::string>(std::move(queue_.front()));
  queue_.pop_front();
  for (; !queue_.empty(); queue_.pop_front()) batch->append(queue_.front());
  asio::async_write(stream_, http::make_chunk(asio::buffer(*batch)),
                    [self = shared_from_this(), batch](beast::error_code ec, size_t) {
                      self->writing_ = false;
                      self->backlogAllowance_ = 0;
                      if (ec) return self->close();
                      self->writeNextChunk();
                    });
}

void Session::endStream(std::string_view event, std::string_view data, bool dropped) {
  if (streamEnding_ || closed_) return;
  streamEnding_ = true;
  gateway_.events().unsubscribe(streamId_);
  gateway_.metrics().sseClosed(dropped);
  --gateway_.sseStreams;
  streaming_ = false;
  // A dropped client is behind: what it has not read is lost anyway; tell it
  // why as the next thing it reads.
  if (dropped) queue_.clear();
  queue_.push_back(sseFrame(event, "", data));
  // A client that reads nothing never completes the write in flight: whatever
  // happens, the connection ends within the grace period.
  expireAfter(kFinalEventGrace);
  writeNextChunk();
}

void Session::readUntilClosed() {
  stream_.async_read_some(asio::buffer(closeProbe_),
                          [self = shared_from_this()](beast::error_code ec, size_t) {
                            if (ec) return self->close();
                            self->readUntilClosed();
                          });
}

void Session::armHeartbeat() {
  if (!heartbeat_) heartbeat_.emplace(worker_.io());
  heartbeat_->expires_after(gateway_.config().sseHeartbeat);
  heartbeat_->async_wait([self = shared_from_this()](beast::error_code ec) {
    if (ec || self->closed_ || self->streamEnding_) return;
    if (self->queue_.empty()) self->enqueue(": heartbeat\n\n");
    self->armHeartbeat();
  });
}

}  // namespace zmesh::gateway
