#include "gateway.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <random>

#include "routes/routes.h"
#include "session.h"
#include "zmesh/client.h"
#include "zmesh/rpc/barrier.h"
#include "zmesh/rpc/log_limit.h"

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

Worker::Worker(Gateway& gateway, size_t index)
    : gateway_(gateway), index_(index), io_(1), limiter_(std::make_unique<TokenLimiter>(*this)) {}

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

void Worker::closeConnections() {
  limiter_->close();  // the calls failed below must not start others
  connections_.clear();
}

Gateway::Gateway(GatewayConfig config, Mesh& mesh, zmq::context_t& context)
    : config_(std::move(config)),
      context_(context),
      idempotency_(config_.idempotencyWindow,
                   IdempotencyLimits{config_.idempotencyMaxEntries, config_.idempotencyMaxBytes,
                                     config_.idempotencyPrincipalMaxBytes}) {
  for (auto& token : config_.tokens) auth_.addToken(token.token, token.principal);
  // A lost fetch (it cannot outlast the readiness timeout by much) is retried.
  auto fetchTimeout = 2 * config_.readinessTimeout + std::chrono::seconds(1);
  readiness_ = std::make_unique<SharedResult<Readiness>>(config_.opsCacheMaxAge, fetchTimeout);
  samples_ = std::make_unique<SharedResult<ServiceSamples>>(config_.opsCacheMaxAge, fetchTimeout);
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
  if (!config_.selfAdminEndpoint.empty()) {
    auto endpoint = selfReachable(config_.selfAdminEndpoint);
    self_ = ServiceTarget{"gateway", endpoint, endpoint, true};
  }
  events_ = std::make_unique<EventHub>(config_.sseBuffer, newIncarnation(), metrics_,
                                       config_.sseReplayMaxBytes);
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
    threads_.emplace_back([this, w = worker.get()] {
      auto guard = asio::make_work_guard(w->io());
      // A handler that throws must not end the worker, and with it every
      // connection it serves: counted, logged (rate-limited), run again.
      rpc::LogLimiter log;
      for (bool stopped = false; !stopped;)
        rpc::barrier(
            [&] {
              w->io().run();
              stopped = true;
            },
            [&](const char* what) {
              metrics_.count(Metrics::Limit::kWorkerErrors);
              if (auto held = log.admit())
                spdlog::error("gateway worker: a handler failed: {} ({} more like it not logged)",
                              what, *held);
            });
    });
}

void Gateway::accept() {
  auto& worker = *workers_[nextWorker_];
  nextWorker_ = (nextWorker_ + 1) % workers_.size();
  acceptor_->async_accept(
      worker.io(), [this, &worker](boost::system::error_code ec, Socket socket) {
        if (ec == asio::error::operation_aborted || !acceptor_->is_open()) return;
        if (ec) return onAcceptError(ec);
        acceptBackoff_ = std::chrono::milliseconds(0);
        socket.set_option(tcp::no_delay(true), ec);
        // Counted here, on the accepting thread, so a burst cannot overshoot the
        // limit before the sessions start; the session gives it back.
        bool refuse = false;
        if (connections.fetch_add(1) >= static_cast<int64_t>(config_.maxConnections)) {
          connections.fetch_sub(1);
          metrics_.count(Metrics::Limit::kConnectionsRefused);
          // Answering costs a descriptor for a moment; past a few, close at once.
          if (refusing_.load() >= kMaxRefusing) {
            socket.close(ec);
            return accept();
          }
          refuse = true;
          ++refusing_;
        } else {
          metrics_.connectionOpened();
        }
        asio::post(worker.io(), [&worker, refuse, s = std::move(socket)]() mutable {
          startSession(worker, std::move(s), refuse);
        });
        accept();
      });
}

void Gateway::onAcceptError(const boost::system::error_code& ec) {
  // EMFILE/ENFILE leave the connection in the backlog: retrying at once would
  // spin. Wait, doubling from 10 ms up to accept_backoff_max.
  metrics_.count(Metrics::Limit::kAcceptErrors);
  acceptBackoff_ = acceptBackoff_.count() == 0
                       ? std::chrono::milliseconds(10)
                       : std::min(acceptBackoff_ * 2, config_.acceptBackoffMax);
  spdlog::warn("accept: {}; retrying in {} ms", ec.message(), acceptBackoff_.count());
  acceptRetry_->expires_after(acceptBackoff_);
  acceptRetry_->async_wait([this](boost::system::error_code waitEc) {
    if (waitEc || !acceptor_->is_open()) return;
    accept();
  });
}

void Gateway::refusalDone() { --refusing_; }

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
  readiness_->clear();
  samples_->clear();
}

void startSession(Worker& worker, Socket socket, bool refuse) {
  auto session = std::make_shared<Session>(worker, std::move(socket), refuse);
  if (refuse)
    session->refuse();
  else
    session->start();
}

}  // namespace zmesh::gateway
