// A real HTTP/1.1 client for the gateway's tests (Beast): keep-alive requests,
// raw bytes for malformed-HTTP cases, and a Server-Sent Events reader. Every
// operation has a timeout; nothing here can hang a test.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace zmesh::testing {

namespace http = boost::beast::http;
using namespace std::chrono_literals;

struct HttpResponse {
  int status = 0;
  http::fields headers;
  std::string body;
  std::string header(std::string_view name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : std::string(it->value());
  }
};

// What the server sends for `request` on a fresh connection: everything until
// it closes, or (headersOnly) the header block up to its blank line, read
// within `within`. For answers HttpClient would wait on forever: a HEAD (no
// body to its Content-Length), an event stream (no end).
std::string rawExchange(int port, const std::string& request, bool headersOnly = false,
                        std::chrono::milliseconds within = 5s);

class HttpClient {
 public:
  explicit HttpClient(int port, std::chrono::milliseconds timeout = 10s);
  HttpResponse request(http::verb method, const std::string& target, std::string body = "",
                       std::vector<std::pair<std::string, std::string>> headers = {});
  HttpResponse post(const std::string& target, std::string body = "",
                    std::vector<std::pair<std::string, std::string>> headers = {}) {
    return request(http::verb::post, target, std::move(body), std::move(headers));
  }
  HttpResponse get(const std::string& target,
                   std::vector<std::pair<std::string, std::string>> headers = {}) {
    return request(http::verb::get, target, "", std::move(headers));
  }
  // Writes bytes as they are, then reads one response.
  HttpResponse raw(const std::string& bytes);
  // Requests written back to back without waiting (pipelining); then read their answers.
  void writePipelined(const std::vector<std::string>& targets, http::verb method);
  std::vector<HttpResponse> readResponses(size_t n);
  // True when the server closed the connection (reads end of stream) within the timeout.
  bool closedByServer(std::chrono::milliseconds timeout = 2s);

 private:
  void writeAll(const std::string& bytes);
  HttpResponse read();
  boost::asio::io_context io_;
  boost::beast::tcp_stream stream_;
  boost::beast::flat_buffer buffer_;
  std::chrono::milliseconds timeout_;
  int port_;
};

struct SseEvent {
  std::string event;  // "message" when the frame names none
  std::string id;
  std::string data;
  bool comment = false;  // a ": heartbeat" line
};

class SseClient {
 public:
  // GET target (e.g. "/v1/events?topic=idgen."); status() tells how it was answered.
  // receiveBuffer > 0 sets SO_RCVBUF before connecting (a slow client that
  // stops reading fills it sooner).
  SseClient(int port, const std::string& target,
            std::vector<std::pair<std::string, std::string>> headers = {}, int receiveBuffer = 0);
  int status() const { return status_; }
  const std::string& contentType() const { return contentType_; }
  std::string errorBody() const { return errorBody_; }
  // The next event (or comment), or nullopt after `timeout` or at the end of the stream.
  std::optional<SseEvent> next(std::chrono::milliseconds timeout = 5s);
  bool ended() const { return ended_; }

 private:
  bool readMore(std::chrono::milliseconds timeout);
  // Runs the io_context for at most `timeout`, then cancels what is pending:
  // unlike a tcp_stream's expiry, that keeps the connection open.
  bool runFor(std::chrono::milliseconds timeout);
  boost::asio::io_context io_;
  boost::asio::ip::tcp::socket stream_;
  boost::beast::flat_buffer buffer_;
  http::response_parser<http::empty_body> parser_;
  // The parser keeps a reference to its chunk callback: it lives here.
  std::function<size_t(uint64_t, boost::beast::string_view, boost::beast::error_code&)> onChunk_;
  std::string pending_;  // SSE text received, not yet split into frames
  int status_ = 0;
  std::string contentType_;
  std::string errorBody_;
  bool ended_ = false;
};

}  // namespace zmesh::testing
