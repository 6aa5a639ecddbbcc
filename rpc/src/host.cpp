#include "zmesh/rpc/host.h"

#include <signal.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdlib>

#include "zmesh/idl/admin.capnp.h"
#include "zmesh/rpc/metrics_wire.h"

namespace zmesh::rpc {
namespace {

class AdminService final : public idl::Admin::Server {
 public:
  AdminService(rpc::Server& server, const HostOptions& options,
               std::function<std::pair<bool, std::string>()>& health)
      : server_(server),
        options_(options),
        health_(health),
        started_(std::chrono::steady_clock::now()) {}

  kj::Promise<void> health(HealthContext context) override {
    auto [ok, detail] = health_ ? health_() : std::pair<bool, std::string>{true, "serving"};
    auto r = context.getResults();
    r.setOk(ok);
    r.setDetail(detail);
    return kj::READY_NOW;
  }

  kj::Promise<void> stats(StatsContext context) override {
    writeFamilies(server_.stats().collect(), context.getResults());
    return kj::READY_NOW;
  }

  kj::Promise<void> info(InfoContext context) override {
    auto r = context.getResults();
    r.setService(options_.name);
    r.setVersion(kVersion);
    r.setPid(::getpid());
    r.setUptimeMs(std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - started_)
                      .count());
    auto list = r.initConfig(options_.settings.size());
    for (size_t i = 0; i < options_.settings.size(); ++i) {
      list[i].setKey(options_.settings[i].first);
      list[i].setValue(options_.settings[i].second);
    }
    return kj::READY_NOW;
  }

 private:
  rpc::Server& server_;
  const HostOptions& options_;
  std::function<std::pair<bool, std::string>()>& health_;
  std::chrono::steady_clock::time_point started_;
};

}  // namespace

void addCommonFlags(CLI::App& app, CommonFlags& flags) {
  app.add_option("-c,--config", flags.config, "mesh file (TOML)")->capture_default_str();
  app.add_option("--endpoint", flags.endpoint,
                 "endpoint to bind, e.g. tcp://127.0.0.1:7110 (overrides the mesh file)");
  app.add_option("--broker", flags.broker,
                 "broker XSUB endpoint for events, or 'none' (overrides broker.xsub)");
  app.add_option("--log-level", flags.logLevel, "trace|debug|info|warn|error")
      ->capture_default_str();
  app.add_option("--log-file", flags.logFile, "also log to this file");
}

void setupLogging(const std::string& service, const std::string& level, const std::string& file) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off")
    throw ConfigError("--log-level: unknown level '" + level +
                      "' (trace|debug|info|warn|error|off)");
  std::vector<spdlog::sink_ptr> sinks{std::make_shared<spdlog::sinks::stderr_color_sink_mt>()};
  if (!file.empty()) sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(file));
  auto logger = std::make_shared<spdlog::logger>(service, sinks.begin(), sinks.end());
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n] %v");
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
}

HostOptions hostOptionsFrom(const MeshConfig& config, const std::string& service,
                            const CommonFlags& flags, const std::string& defaultEndpoint) {
  HostOptions o;
  o.name = service;
  auto s = config.section(service);
  o.server.name = service;
  o.server.endpoints = {flags.endpoint.empty() ? s.string("endpoint", defaultEndpoint)
                                               : flags.endpoint};
  using std::chrono::milliseconds;
  auto& srv = o.server;
  srv.maxRequestBytes = s.integer("max_request_bytes", 1 << 20, 64, 256 << 20);
  srv.maxBudgetMs =
      s.duration("max_deadline", milliseconds(srv.maxBudgetMs), milliseconds(1)).count();
  // The default is cut to the maximum too, or every budgetless call would count as clamped.
  srv.defaultBudgetMs = std::min(srv.defaultBudgetMs, srv.maxBudgetMs);
  srv.defaultBudgetMs = s.duration("default_deadline", milliseconds(srv.defaultBudgetMs),
                                   milliseconds(1), milliseconds(srv.maxBudgetMs))
                            .count();
  srv.maxInFlight = s.integer("max_in_flight", srv.maxInFlight, 1, 10'000'000);
  srv.retryWindowMs = s.duration("retry_window", milliseconds(srv.retryWindowMs)).count();
  srv.retryWindowMaxEntries =
      s.integer("retry_window_max_entries", srv.retryWindowMaxEntries, 1, 100'000'000);
  srv.retryWindowMaxBytes =
      s.integer("retry_window_max_bytes", srv.retryWindowMaxBytes, 4096, int64_t{1} << 40);
  srv.peerQueueMax = s.integer("peer_queue_max", srv.peerQueueMax, 1, 10'000'000);
  srv.peerQueueMaxBytes =
      s.integer("peer_queue_max_bytes", srv.peerQueueMaxBytes, 4096, int64_t{1} << 40);
  srv.graceMs = s.duration("stop_grace", milliseconds(srv.graceMs)).count();
  srv.sendHwm = s.integer("send_hwm", srv.sendHwm, 1, 10'000'000);
  srv.recvHwm = s.integer("recv_hwm", srv.recvHwm, 1, 10'000'000);
  if (flags.broker == "none")
    o.brokerXsub.clear();
  else if (!flags.broker.empty())
    o.brokerXsub = flags.broker;
  else if (config.has("broker"))
    o.brokerXsub = config.section("broker").string("xsub", "tcp://127.0.0.1:7101");
  o.settings.emplace_back("config", config.source());
  o.settings.emplace_back("endpoint", o.server.endpoints.front());
  o.settings.emplace_back("broker", o.brokerXsub.empty() ? "none" : o.brokerXsub);
  return o;
}

ServiceHost::ServiceHost(HostOptions options) : options_(std::move(options)) {
  // Signals become a readable fd on the loop, so a stop is an ordinary event.
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  signalFd_ = ::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (signalFd_ < 0) throw std::system_error(errno, std::generic_category(), "signalfd");

  server_ = std::make_unique<Server>(context_, options_.server);
  if (!options_.brokerXsub.empty())
    publisher_ = std::make_unique<Publisher>(
        context_, options_.brokerXsub, options_.name + "@" + options_.server.endpoints.front());
  server_->serve<idl::Admin>(kj::heap<AdminService>(*server_, options_, health_));
  server_->watchFd(signalFd_, [this] {
    signalfd_siginfo info;
    bool stop = false;
    while (::read(signalFd_, &info, sizeof(info)) == sizeof(info)) {
      if (info.ssi_signo != SIGHUP) {
        spdlog::info("signal {} received: stopping", info.ssi_signo);
        stop = true;
      } else if (onReload_) {
        spdlog::info("SIGHUP received: reloading");
        onReload_();
      } else {
        spdlog::info("SIGHUP received: {} has nothing to reload", options_.name);
      }
    }
    if (stop) server_->requestStop();
  });
  // A supervisor says how often it restarted this service (zmeshctl up).
  uint32_t restarts = 0;
  if (const char* env = std::getenv("ZMESH_RESTARTS")) {
    std::string_view text(env);
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), restarts);
    if (ec != std::errc() || end != text.data() + text.size()) {
      spdlog::warn("ZMESH_RESTARTS='{}' is not a count: process.restarts reads 0", text);
      restarts = 0;
    }
  }
  double startTime =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  server_->stats().add([this, restarts, startTime](MetricsOut& out) {
    out.gauge("process.start_time_seconds", "Unix time the process started, in seconds", startTime);
    out.gauge("process.restarts", "Restarts of this service by its supervisor",
              static_cast<double>(restarts));
    if (publisher_)
      out.counter("events.published", "Events published to the broker",
                  static_cast<double>(publisher_->published()));
  });
}

ServiceHost::~ServiceHost() {
  server_.reset();
  publisher_.reset();
  if (signalFd_ >= 0) ::close(signalFd_);
}

void ServiceHost::setHealth(std::function<std::pair<bool, std::string>()> health) {
  health_ = std::move(health);
}

int ServiceHost::run() {
  try {
    server_->bind();
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  spdlog::info("{} {} serving on {} (pid {})", options_.name, kVersion,
               server_->boundEndpoints().front(), ::getpid());
  server_->run();
  for (auto& fn : onStop_) fn();
  spdlog::info("{} stopped", options_.name);
  spdlog::default_logger()->flush();
  return 0;
}

}  // namespace zmesh::rpc
