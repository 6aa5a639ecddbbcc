// zmesh-http-floor: the least an HTTP gateway in front of a ZeroMQ service can
// cost here, for bench/gateway_vs_webdis.sh to put beside zmesh-gateway.
//
//   zmesh-http-floor echo --bind tcp://127.0.0.1:17120
//   zmesh-http-floor gateway --listen 18180 --connect tcp://127.0.0.1:17120
//
// `gateway` is zmesh-gateway's architecture with everything else taken out:
// one asio thread, Beast keep-alive sessions, one DEALER joined to asio
// through ZMQ_FD (drained until EAGAIN, ZMQ_EVENTS re-checked after each
// send), a 48-byte request per HTTP request, and a small JSON answer when the
// reply comes. `echo` is a ROUTER that sends every message back, in a process
// of its own as zmesh-idgen is. No routing, auth, metrics, limits, deadlines
// or capnp: what is left is Beast, libzmq and the kernel.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <cstring>
#include <memory>
#include <unordered_map>
#include <zmq_addon.hpp>

namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;

constexpr size_t kRequestBytes = 48;  // about a zmesh IdGen.next request frame

class Backend;

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, Backend& backend) : socket_(std::move(socket)), backend_(backend) {}
  void read();
  void answer(uint64_t id);

 private:
  tcp::socket socket_;
  Backend& backend_;
  boost::beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
};

// One DEALER on the io_context's thread, many requests in flight on it.
class Backend {
 public:
  Backend(asio::io_context& io, const std::string& endpoint)
      : dealer_(context_, zmq::socket_type::dealer), fd_(io) {
    dealer_.set(zmq::sockopt::linger, 0);
    dealer_.connect(endpoint);
    fd_.assign(dealer_.get(zmq::sockopt::fd));
    arm();
  }
  ~Backend() { fd_.release(); }  // libzmq's fd: asio must not close it

  void send(std::shared_ptr<Session> session) {
    uint64_t id = next_++;
    pending_.emplace(id, std::move(session));
    char frame[kRequestBytes] = {};
    std::memcpy(frame, &id, sizeof id);
    if (!dealer_.send(zmq::buffer(frame), zmq::send_flags::dontwait))
      throw std::runtime_error("DEALER send would block");
    // The send may have taken the edge of a reply that arrived meanwhile.
    if (dealer_.get(zmq::sockopt::events) & ZMQ_POLLIN) drain();
  }

 private:
  void arm() {
    fd_.async_wait(asio::posix::stream_descriptor::wait_read, [this](boost::system::error_code ec) {
      if (ec) return;
      drain();
      arm();
    });
  }
  void drain() {
    zmq::message_t reply;
    while (dealer_.recv(reply, zmq::recv_flags::dontwait)) {
      uint64_t id;
      std::memcpy(&id, reply.data(), sizeof id);
      auto it = pending_.find(id);
      if (it == pending_.end()) continue;
      auto session = std::move(it->second);
      pending_.erase(it);
      session->answer(id);
    }
  }

  zmq::context_t context_{1};
  zmq::socket_t dealer_;
  asio::posix::stream_descriptor fd_;
  std::unordered_map<uint64_t, std::shared_ptr<Session>> pending_;
  uint64_t next_ = 1;
};

void Session::read() {
  request_ = {};
  http::async_read(socket_, buffer_, request_,
                   [self = shared_from_this()](boost::system::error_code ec, size_t) {
                     if (!ec) self->backend_.send(self);
                   });
}

void Session::answer(uint64_t id) {
  unsigned char scratch[512];
  boost::json::monotonic_resource resource(scratch, sizeof scratch);
  boost::json::object body(&resource);
  body["namespace"] = "bench";
  body["first"] = std::to_string(id);
  body["count"] = 1;
  response_ = http::response<http::string_body>(http::status::ok, request_.version());
  response_.set(http::field::content_type, "application/json");
  response_.body() = boost::json::serialize(body);
  response_.keep_alive(request_.keep_alive());
  response_.prepare_payload();
  http::async_write(socket_, response_,
                    [self = shared_from_this()](boost::system::error_code ec, size_t) {
                      if (!ec && self->response_.keep_alive()) self->read();
                    });
}

void accept(tcp::acceptor& acceptor, Backend& backend) {
  acceptor.async_accept([&](boost::system::error_code ec, tcp::socket socket) {
    if (!ec) std::make_shared<Session>(std::move(socket), backend)->read();
    accept(acceptor, backend);
  });
}

int runGateway(uint16_t port, const std::string& endpoint) {
  asio::io_context io(1);
  Backend backend(io, endpoint);
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  accept(acceptor, backend);
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code, int) { io.stop(); });
  io.run();
  return 0;
}

int runEcho(const std::string& endpoint) {
  zmq::context_t context(1);
  zmq::socket_t router(context, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.bind(endpoint);
  std::vector<zmq::message_t> frames;
  while (true) {  // until SIGTERM: the default action ends the process
    frames.clear();
    if (!zmq::recv_multipart(router, std::back_inserter(frames))) continue;
    zmq::send_multipart(router, frames, zmq::send_flags::dontwait);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"zmesh-http-floor: the least an HTTP gateway in front of ZeroMQ costs (bench/)"};
  app.require_subcommand(1);
  std::string endpoint;
  uint16_t port = 0;
  auto* gateway = app.add_subcommand("gateway", "HTTP on 127.0.0.1:PORT, one DEALER to --connect");
  gateway->add_option("--listen", port, "HTTP port on 127.0.0.1")->required();
  gateway->add_option("--connect", endpoint, "the echo's endpoint")->required();
  auto* echo = app.add_subcommand("echo", "a ROUTER that sends every message back");
  echo->add_option("--bind", endpoint, "endpoint to bind")->required();
  CLI11_PARSE(app, argc, argv);
  try {
    return gateway->parsed() ? runGateway(port, endpoint) : runEcho(endpoint);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "zmesh-http-floor: %s\n", e.what());
    return 1;
  }
}
