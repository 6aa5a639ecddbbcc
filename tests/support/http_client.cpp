#include "http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <sstream>
#include <stdexcept>

namespace zmesh::testing {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;

std::string rawExchange(int port, const std::string& request, bool headersOnly,
                        std::chrono::milliseconds within) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("rawExchange: socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
          static_cast<ssize_t>(request.size())) {
    ::close(fd);
    throw std::runtime_error("rawExchange: cannot send to port " + std::to_string(port));
  }
  std::string got;
  auto deadline = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < deadline &&
         !(headersOnly && got.find("\r\n\r\n") != std::string::npos)) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buf[4096];
    auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return headersOnly ? got.substr(0, got.find("\r\n\r\n")) : got;
}

namespace {

// Runs the io_context until the operation started before it completes; the
// stream's own expiry bounds it.
void runAll(asio::io_context& io) {
  io.restart();
  io.run();
}

}  // namespace

HttpClient::HttpClient(int port, std::chrono::milliseconds timeout)
    : stream_(io_), timeout_(timeout), port_(port) {
  stream_.expires_after(timeout_);
  beast::error_code result;
  stream_.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port),
                        [&](beast::error_code ec) { result = ec; });
  runAll(io_);
  if (result)
    throw std::runtime_error("connect to port " + std::to_string(port) + ": " + result.message());
  stream_.socket().set_option(tcp::no_delay(true));
}

void HttpClient::writeAll(const std::string& bytes) {
  stream_.expires_after(timeout_);
  beast::error_code result;
  asio::async_write(stream_, asio::buffer(bytes),
                    [&](beast::error_code ec, size_t) { result = ec; });
  runAll(io_);
  if (result) throw std::runtime_error("write: " + result.message());
}

HttpResponse HttpClient::read() {
  stream_.expires_after(timeout_);
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  parser.skip(false);
  beast::error_code result;
  http::async_read(stream_, buffer_, parser, [&](beast::error_code ec, size_t) { result = ec; });
  runAll(io_);
  if (result) throw std::runtime_error("read response: " + result.message());
  auto message = parser.release();
  HttpResponse out;
  out.status = message.result_int();
  for (auto& field : message) out.headers.insert(field.name_string(), field.value());
  out.body = std::move(message.body());
  return out;
}

HttpResponse HttpClient::request(http::verb method, const std::string& target, std::string body,
                                 std::vector<std::pair<std::string, std::string>> headers) {
  http::request<http::string_body> request{method, target, 11};
  request.set(http::field::host, "127.0.0.1:" + std::to_string(port_));
  for (auto& [name, value] : headers) request.set(name, value);
  request.body() = std::move(body);
  request.prepare_payload();
  stream_.expires_after(timeout_);
  beast::error_code result;
  http::async_write(stream_, request, [&](beast::error_code ec, size_t) { result = ec; });
  runAll(io_);
  if (result) throw std::runtime_error("write request: " + result.message());
  return read();
}

HttpResponse HttpClient::raw(const std::string& bytes) {
  writeAll(bytes);
  return read();
}

void HttpClient::writePipelined(const std::vector<std::string>& targets, http::verb method) {
  std::string bytes;
  for (auto& target : targets) {
    http::request<http::empty_body> request{method, target, 11};
    request.set(http::field::host, "127.0.0.1");
    if (method == http::verb::post) request.set(http::field::content_length, "0");
    std::ostringstream text;
    text << request;
    bytes += text.str();
  }
  writeAll(bytes);
}

std::vector<HttpResponse> HttpClient::readResponses(size_t n) {
  std::vector<HttpResponse> out;
  for (size_t i = 0; i < n; ++i) out.push_back(read());
  return out;
}

bool HttpClient::closedByServer(std::chrono::milliseconds timeout) {
  stream_.expires_after(timeout);
  char byte;
  beast::error_code result;
  stream_.async_read_some(asio::buffer(&byte, 1),
                          [&](beast::error_code ec, size_t) { result = ec; });
  runAll(io_);
  return result == asio::error::eof || result == asio::error::connection_reset;
}

SseClient::SseClient(int port, const std::string& target,
                     std::vector<std::pair<std::string, std::string>> headers, int receiveBuffer)
    : stream_(io_) {
  stream_.open(tcp::v4());
  if (receiveBuffer > 0) stream_.set_option(asio::socket_base::receive_buffer_size(receiveBuffer));
  beast::error_code result = asio::error::timed_out;
  stream_.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port),
                        [&](beast::error_code ec) { result = ec; });
  runFor(10s);
  if (result) throw std::runtime_error("connect: " + result.message());
  http::request<http::empty_body> request{http::verb::get, target, 11};
  request.set(http::field::host, "127.0.0.1");
  request.set(http::field::accept, "text/event-stream");
  for (auto& [name, value] : headers) request.set(name, value);
  result = asio::error::timed_out;
  http::async_write(stream_, request, [&](beast::error_code ec, size_t) { result = ec; });
  runFor(10s);
  if (result) throw std::runtime_error("write: " + result.message());
  parser_.body_limit(boost::none);
  result = asio::error::timed_out;
  http::async_read_header(stream_, buffer_, parser_,
                          [&](beast::error_code ec, size_t) { result = ec; });
  runFor(10s);
  if (result) throw std::runtime_error("read header: " + result.message());
  status_ = parser_.get().result_int();
  contentType_ = std::string(parser_.get()[http::field::content_type]);
  if (status_ != 200) {
    // An error answer has a normal body: read it whole.
    auto length = parser_.content_length().value_or(0);
    while (buffer_.size() < length) {
      result = asio::error::timed_out;
      asio::async_read(stream_, buffer_.prepare(length - buffer_.size()),
                       [&](beast::error_code ec, size_t n) {
                         result = ec;
                         buffer_.commit(n);
                       });
      runFor(5s);
      if (result) break;
    }
    errorBody_ = beast::buffers_to_string(buffer_.data());
    ended_ = true;
    return;
  }
  onChunk_ = [this](uint64_t, beast::string_view body, beast::error_code&) {
    pending_.append(body.data(), body.size());
    return body.size();
  };
  parser_.on_chunk_body(onChunk_);
}

bool SseClient::runFor(std::chrono::milliseconds timeout) {
  io_.restart();
  io_.run_for(timeout);
  if (io_.stopped()) return true;
  beast::error_code ignored;
  stream_.cancel(ignored);
  io_.restart();
  io_.run();
  return false;
}

bool SseClient::readMore(std::chrono::milliseconds timeout) {
  if (ended_) return false;
  beast::error_code result = asio::error::timed_out;
  http::async_read_some(stream_, buffer_, parser_,
                        [&](beast::error_code ec, size_t) { result = ec; });
  if (!runFor(timeout)) return false;  // cancelled: nothing more yet, still connected
  if (result || parser_.is_done()) ended_ = true;
  return !result;
}

std::optional<SseEvent> SseClient::next(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto end = pending_.find("\n\n");
    if (end != std::string::npos) {
      std::string frame = pending_.substr(0, end);
      pending_.erase(0, end + 2);
      SseEvent event;
      event.event = "message";
      size_t start = 0;
      bool any = false;
      while (start <= frame.size()) {
        auto nl = frame.find('\n', start);
        auto line = frame.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
        start = nl == std::string::npos ? frame.size() + 1 : nl + 1;
        if (line.rfind(':', 0) == 0) {
          event.comment = true;
          any = true;
        } else if (line.rfind("event: ", 0) == 0) {
          event.event = line.substr(7);
          any = true;
        } else if (line.rfind("id: ", 0) == 0) {
          event.id = line.substr(4);
        } else if (line.rfind("data: ", 0) == 0) {
          event.data = line.substr(6);
          any = true;
        }
      }
      if (any) return event;
      continue;  // "retry:" alone
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left <= 0ms || ended_) return std::nullopt;
    readMore(left);
  }
}

}  // namespace zmesh::testing
