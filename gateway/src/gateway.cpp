#include "gateway.h"

#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>
#include <random>

#include "routes/routes.h"
#include "session.h"
#include "zmesh/client.h"

namespace zmesh::gateway {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

std::string newIncarnation() {
  std::mt19937_64 random{std::random_device{}()};
  static const char kDigits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::string out;
  for (int i = 0; i < 8; ++i) out += kDigits[random() % 36];
  return out;
}

rpc::ConnectionOptions connectionOptions() {
  rpc::ConnectionOptions options;
  // A service that has been down this long answers 503 at once rather than
  // after the request's whole deadline.
  options.failFastAfterMs = 1000;
  return options;
}

}  // namespace

Worker::Worker(Gateway& gateway, size_t index) : gateway_(gateway), index_(index), io_(1) {}

AsioConnection& Worker::connection(const std::string& endpoint) {
  auto it = connections_.find(endpoint);
  if (it == connections_.end())
    it = connections_
             .emplace(endpoint, std::make_unique<AsioConnection>(io_, gateway_.context(), endpoint,
                                                                 connectionOptions()))
             .first;
  return *it->second;
}

std::map<std::string, rpc::ConnectionCounters> Worker::counters() const {
  std::map<std::string, rpc::ConnectionCounters> out;
  for (auto& [endpoint, connection] : connections_) out[endpoint] = connection->counters();
  return out;
}

void Worker::closeConnections() { connections_.clear(); }

Gateway::Gateway(GatewayConfig config, Mesh& mesh, zmq::context_t& context)
    : config_(std::move(config)),
      context_(context),
      idempotency_(config_.idempotencyWindow, config_.idempotencyMaxEntries) {
  for (auto& token : config_.tokens) auth_.addToken(token.token, token.principal);
  addAllRoutes(router_);
  for (auto& name : mesh.services()) {
    if (name == "gateway") continue;
    ServiceTarget target;
    target.name = name;
    target.built = !interfacesOf(name).empty();
    target.endpoint = mesh.endpoint(name);
    target.adminEndpoint = mesh.adminEndpoint(name);
    services_.push_back(std::move(target));
  }
  events_ = std::make_unique<EventHub>(config_.sseBuffer, newIncarnation(), metrics_);
  if (service("broker")) events_->start(mesh);

  for (int i = 0; i < config_.threads; ++i)
    workers_.push_back(std::make_unique<Worker>(*this, static_cast<size_t>(i)));
  tcp::endpoint endpoint(asio::ip::make_address(config_.listenAddress), config_.listenPort);
  acceptor_ = std::make_unique<tcp::acceptor>(workers_[0]->io());
  acceptRetry_ = std::make_unique<Timer>(workers_[0]->io());
  boost::system::error_code ec;
  acceptor_->open(endpoint.protocol(), ec);
  if (!ec) acceptor_->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_->bind(endpoint, ec);
  if (!ec) acceptor_->listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    throw std::system_error(
        ec, "cannot listen on " + config_.listenAddress + ":" + std::to_string(config_.listenPort));
  port_ = acceptor_->local_endpoint().port();
}

Gateway::~Gateway() {
  if (!threads_.empty()) stop();
}

const ServiceTarget* Gateway::service(const std::string& name) const {
  for (auto& s : services_)
    if (s.name == name) return &s;
  return nullptr;
}

void Gateway::start() {
  accept();
  for (auto& worker : workers_)
    threads_.emplace_back([w = worker.get()] {
      auto guard = asio::make_work_guard(w->io());
      w->io().run();
    });
}

void Gateway::accept() {
  auto& worker = *workers_[nextWorker_];
  nextWorker_ = (nextWorker_ + 1) % workers_.size();
  acceptor_->async_accept(worker.io(),
                          [this, &worker](boost::system::error_code ec, Socket socket) {
                            if (ec == asio::error::operation_aborted || !acceptor_->is_open())
                              return;
                            if (!ec) {
                              socket.set_option(tcp::no_delay(true), ec);
                              asio::post(worker.io(), [&worker, s = std::move(socket)]() mutable {
                                startSession(worker, std::move(s));
                              });
                            } else {
                              spdlog::warn("accept: {}", ec.message());
                            }
                            accept();
                          });
}

void Gateway::stop() {
  if (stopping_.exchange(true)) return;
  spdlog::info("stopping: {} requests in flight", activeRequests.load());
  asio::post(workers_[0]->io(), [this] {
    boost::system::error_code ec;
    acceptor_->close(ec);
    acceptRetry_->cancel();
  });
  events_->stop();
  events_->closeAll();
  auto deadline = std::chrono::steady_clock::now() + config_.stopGrace;
  while (activeRequests.load() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (activeRequests.load() > 0)
    spdlog::warn("stop: {} requests still in flight after {} ms", activeRequests.load(),
                 config_.stopGrace.count());
  // Let the streams' final events go out, then take the workers down; each
  // releases its ZeroMQ fds from asio on its own thread before closing them.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  for (auto& worker : workers_)
    asio::post(worker->io(), [w = worker.get()] {
      w->closeConnections();
      w->io().stop();
    });
  for (auto& thread : threads_) thread.join();
  threads_.clear();
}

void startSession(Worker& worker, Socket socket) {
  std::make_shared<Session>(worker, std::move(socket))->start();
}

}  // namespace zmesh::gateway
