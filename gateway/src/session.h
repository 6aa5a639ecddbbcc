// One HTTP/1.1 connection: reads a request (with the configured limits),
// routes it, and writes the answer; keep-alive; or, for GET /v1/events, turns
// into a Server-Sent Events stream. Worker thread only.
#pragma once

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/serializer.hpp>
#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <string>

#include "asio_types.h"
#include "event_buffer.h"
#include "responses.h"
#include "router.h"

namespace zmesh::gateway {

class Worker;
class Gateway;

class Session : public std::enable_shared_from_this<Session> {
 public:
  // refused: the connection is over max_connections (refuse(), not start()).
  Session(Worker& worker, Socket socket, bool refused = false);
  ~Session();
  void start();
  // Answers 503 with Retry-After and closes: the gateway is at max_connections.
  void refuse();

  // The answer to the request in progress (from its Exchange). Ignored once
  // the connection is gone.
  void send(Response response);
  void startEventStream(std::vector<std::string> topics, std::optional<std::string> lastEventId);

 private:
  using Clock = std::chrono::steady_clock;
  void readHeader();     // waits (idle_timeout) for a keep-alive request's first byte
  void readHeaderNow();  // reads the header within header_timeout
  void onHeader(boost::beast::error_code ec);
  void onBody(boost::beast::error_code ec);
  void dispatch(Request request);
  // The rest of dispatch() once the per-token rate limit let the request through.
  void serve(Request request, const Route& route,
             std::vector<std::pair<std::string, std::string>> params,
             std::vector<std::pair<std::string, std::string>> query, const Principal* principal);
  // Accounting of one request (metrics, the in-flight count stop() waits for).
  void beginRequest();
  void finishRequest(int status);
  // A CORS preflight (OPTIONS with Access-Control-Request-Method from an
  // allowed origin) for a path whose routes allow `methods`: 204.
  void preflight(const std::vector<http::verb>& methods);
  // An answer to a request that never reached a route (bad HTTP): sent, then closed.
  void reject(http::status status, std::string_view code, std::string_view message);
  void write(Response response);
  void close();
  // One timer per connection, re-armed only when it fires: a request costs a
  // clock read, not a timer operation, to keep its deadline.
  void expireAfter(std::chrono::milliseconds timeout);
  void expireNever() { deadline_ = Clock::time_point::max(); }
  void armTimer(Clock::time_point at);
  void onTimer();
  void closeGracefully();  // after a final answer: FIN, drain what the client still sends
  // Reads and discards until the client closes (or the socket is closed).
  void readUntilClosed();

  // Server-Sent Events.
  void enqueue(std::string frame);
  void writeNextChunk();
  void armHeartbeat();
  void endStream(std::string_view event, std::string_view data, bool dropped);

  Worker& worker_;
  Gateway& gateway_;
  Socket stream_;
  Timer timer_;
  Clock::time_point deadline_ = Clock::time_point::max();
  bool timerArmed_ = false;
  bool refused_ = false;
  bool firstRequest_ = true;
  bool readingHeader_ = false;  // the deadline is the header timeout
  Clock::time_point armedAt_;
  boost::beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;

  // The request in progress.
  bool busy_ = false;
  bool keepAlive_ = true;
  std::string method_;
  std::string_view routeName_ = "unmatched";  // a Route's pattern: the router outlives us
  std::string requestId_;
  std::string corsOrigin_;  // its Origin, when cors_origins lists it: answered with CORS headers
  bool headOnly_ = false;   // HEAD served by a GET route (Route::head): the answer without body
  std::vector<std::string> segments_;  // of the path, decoded; kept for its capacity
  Clock::time_point started_;
  std::optional<std::pair<std::string, std::string>> idempotency_;  // (scope, key) to complete
  Response response_;                                               // being written

  // The event stream, once started.
  bool streaming_ = false;
  bool streamEnding_ = false;
  bool writing_ = false;
  uint64_t streamId_ = 0;
  std::deque<std::string> queue_;
  size_t backlogAllowance_ = 0;  // replayed events still in queue_, beyond the live bound
  std::unique_ptr<http::response<http::empty_body>> streamHeader_;
  std::unique_ptr<http::response_serializer<http::empty_body>> streamSerializer_;
  std::optional<Timer> heartbeat_;
  char closeProbe_[256];
  bool closed_ = false;
};

}  // namespace zmesh::gateway
