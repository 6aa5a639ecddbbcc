// zmesh-gateway: HTTP/1.1 (Beast) in front of the mesh's services.
//
// Threads: N workers, each an io_context that owns its HTTP sessions and its
// DEALER connections to the services (joined to asio through ZMQ_FD), so a
// request is parsed, sent to its service, answered and written on one thread
// with no locks on the way. The acceptor runs on worker 0 and hands each new
// connection to the next worker. Events come from one subscription thread
// (EventHub) and are posted to the workers owning the SSE streams.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "asio_types.h"
#include "auth.h"
#include "event_hub.h"
#include "gateway_config.h"
#include "idempotency.h"
#include "metrics.h"
#include "router.h"
#include "shared_result.h"
#include "token_limit.h"
#include "zmq_asio.h"

namespace zmesh {
class Mesh;
}

namespace zmesh::gateway {

class Gateway;

// A service the mesh file configures, as the gateway reaches it.
struct ServiceTarget {
  std::string name;           // "idgen"
  std::string endpoint;       // its RPC endpoint
  std::string adminEndpoint;  // where it answers Admin (the broker's differs)
  bool built = true;          // false: configured, but this build has no such service
};

// What /readyz and /metrics learned from the services (shared for ops_cache_max_age).
struct Readiness {
  bool ready = true;     // every built service answered healthy
  std::string services;  // the JSON array of each service's state
};
struct ServiceSamples {
  std::vector<ServiceSample> services;
  std::vector<ClientSample> clients;
  std::optional<ServiceSample> self;  // the gateway's own Admin.stats (selfAdminEndpoint)
  int64_t sampledMs = 0;              // wall clock (Unix ms) when the replies were all in
};

class Worker {
 public:
  Worker(Gateway& gateway, size_t index);
  boost::asio::io_context& io() { return io_; }
  size_t index() const { return index_; }
  Gateway& gateway() { return gateway_; }
  // This worker's connection to an endpoint, made on first use. Worker thread only.
  AsioConnection& connection(const std::string& endpoint);
  // Sums of this worker's connection counters by endpoint. Worker thread only.
  std::map<std::string, rpc::ConnectionCounters> counters() const;
  void closeConnections();  // worker thread, at stop
  // This worker's stage of the per-token rate limit. Worker thread only.
  TokenLimiter& limiter() { return *limiter_; }

 private:
  Gateway& gateway_;
  size_t index_;
  boost::asio::io_context io_;
  // Before the connections: their calls' callbacks (failed when they close) use it.
  std::unique_ptr<TokenLimiter> limiter_;
  std::map<std::string, std::unique_ptr<AsioConnection>> connections_;
};

class Gateway {
 public:
  // Binds the listening socket (throws std::system_error naming the address).
  Gateway(GatewayConfig config, Mesh& mesh, zmq::context_t& context);
  ~Gateway();

  void start();  // starts the worker threads and the event hub
  // Stops accepting, ends SSE streams with a final event, lets requests in
  // flight finish within the grace period, then stops the workers. Blocks.
  void stop();
  uint16_t port() const { return port_; }

  const GatewayConfig& config() const { return config_; }
  const Router& router() const { return router_; }
  const Authenticator& auth() const { return auth_; }
  IdempotencyStore& idempotency() { return idempotency_; }
  Metrics& metrics() { return metrics_; }
  EventHub& events() { return *events_; }
  zmq::context_t& context() { return context_; }
  // Configured services other than the gateway itself, broker first.
  const std::vector<ServiceTarget>& services() const { return services_; }
  const ServiceTarget* service(const std::string& name) const;
  // The gateway's own Admin endpoint as a target ("gateway"); null without one.
  const ServiceTarget* self() const { return self_ ? &*self_ : nullptr; }
  std::vector<std::unique_ptr<Worker>>& workers() { return workers_; }
  bool stopping() const { return stopping_.load(); }
  SharedResult<Readiness>& readiness() { return *readiness_; }
  SharedResult<ServiceSamples>& samples() { return *samples_; }
  void refusalDone();  // a refused connection's 503 is written (or failed)
  static constexpr int64_t kMaxRefusing = 64;

  // Sessions in flight; stop() waits for these to reach zero.
  std::atomic<int64_t> activeRequests{0};
  // Open HTTP connections (max_connections), and SSE streams (max_sse_streams).
  std::atomic<int64_t> connections{0};
  std::atomic<int64_t> sseStreams{0};

 private:
  void accept();
  void onAcceptError(const boost::system::error_code& ec);

  GatewayConfig config_;
  zmq::context_t& context_;
  Router router_;
  Authenticator auth_;
  IdempotencyStore idempotency_;
  Metrics metrics_;
  std::unique_ptr<EventHub> events_;
  std::vector<ServiceTarget> services_;
  std::optional<ServiceTarget> self_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;
  std::unique_ptr<boost::asio::ip::tcp::acceptor> acceptor_;
  std::unique_ptr<Timer> acceptRetry_;
  size_t nextWorker_ = 0;
  std::chrono::milliseconds acceptBackoff_{0};  // 0 while accept() succeeds
  // Refusals being written: over this, a connection past max_connections is
  // closed without an answer (each refusal holds a descriptor for a moment).
  std::atomic<int64_t> refusing_{0};
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  // Last: their waiters hold sessions, which must go before the workers' io_contexts.
  std::unique_ptr<SharedResult<Readiness>> readiness_;
  std::unique_ptr<SharedResult<ServiceSamples>> samples_;
};

// Starts the HTTP session for an accepted connection (on its worker's thread).
// refuse: answer 503 (over max_connections) and close.
void startSession(Worker& worker, Socket socket, bool refuse = false);

}  // namespace zmesh::gateway
