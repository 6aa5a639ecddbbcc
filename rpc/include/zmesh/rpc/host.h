// What every zmesh service process has, wired once: the ZeroMQ context, the RPC
// server, the Admin interface, the event publisher, logging, and a clean stop on
// SIGTERM/SIGINT, and SIGHUP handed to the service (reload). A service's main() builds its core and
// adapter, hands them to a ServiceHost, and calls run().
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>
#include <zmq.hpp>

#include "zmesh/rpc/config.h"
#include "zmesh/rpc/events.h"
#include "zmesh/rpc/server.h"

namespace zmesh::rpc {

inline constexpr const char* kVersion = "0.1.0";
inline constexpr const char* kDefaultConfig = "deploy/local/mesh.toml";

// Flags every service binary takes; a flag given wins over the mesh file.
struct CommonFlags {
  std::string config = kDefaultConfig;
  std::string endpoint;  // overrides <service>.endpoint
  std::string broker;    // overrides broker.xsub ("none" disables events)
  std::string logLevel = "info";
  std::string logFile;
};
void addCommonFlags(CLI::App& app, CommonFlags& flags);

// Logs to stderr (and `file` if given) with the service name on every line.
// Throws ConfigError for an unknown level.
void setupLogging(const std::string& service, const std::string& level, const std::string& file);

struct HostOptions {
  std::string name;  // "idgen"
  ServerOptions server;
  std::string brokerXsub;                                     // empty: no events
  std::vector<std::pair<std::string, std::string>> settings;  // shown by Admin.info
};

// The limits hostOptionsFrom reads from every service's section (besides
// "endpoint", which the broker calls "admin"), so a service's rejectUnknown
// need not repeat them.
inline constexpr std::string_view kHostKeys[] = {"max_request_bytes",
                                                 "max_deadline",
                                                 "default_deadline",
                                                 "max_in_flight",
                                                 "retry_window",
                                                 "retry_window_max_entries",
                                                 "retry_window_max_bytes",
                                                 "peer_queue_max",
                                                 "peer_queue_max_bytes",
                                                 "stop_grace",
                                                 "send_hwm",
                                                 "recv_hwm"};

// Reads the parts of HostOptions the mesh file holds for `service`
// (<service>.endpoint, limits; broker.xsub), with flags applied on top.
HostOptions hostOptionsFrom(const MeshConfig& config, const std::string& service,
                            const CommonFlags& flags, const std::string& defaultEndpoint);

class ServiceHost {
 public:
  // Blocks SIGTERM/SIGINT for the whole process: construct before any thread starts.
  explicit ServiceHost(HostOptions options);
  ~ServiceHost();

  Server& server() { return *server_; }
  zmq::context_t& context() { return context_; }
  // Null when the mesh has no broker configured.
  Publisher* publisher() { return publisher_.get(); }
  // Admin.health asks this; default: healthy.
  void setHealth(std::function<std::pair<bool, std::string>()> health);
  // Runs `fn` on the loop thread just before it stops (flush, release locks).
  void onStop(std::function<void()> fn) { onStop_.push_back(std::move(fn)); }
  // Runs `fn` on the loop thread on SIGHUP (re-read configuration); without
  // one, SIGHUP is logged and ignored.
  void onReload(std::function<void()> fn) { onReload_ = std::move(fn); }

  // Binds, serves until a signal or requestStop(), then stops cleanly. Returns the exit code.
  int run();

 private:
  HostOptions options_;
  zmq::context_t context_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<Publisher> publisher_;
  std::function<std::pair<bool, std::string>()> health_;
  std::vector<std::function<void()>> onStop_;
  std::function<void()> onReload_;
  int signalFd_ = -1;
};

}  // namespace zmesh::rpc
