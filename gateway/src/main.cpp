// zmesh-gateway: flags and config in, gateway + host wired, run.
#include <spdlog/spdlog.h>

#include <iostream>

#include "gateway.h"
#include "routes/routes.h"
#include "zmesh/client.h"
#include "zmesh/rpc/host.h"

int main(int argc, char** argv) {
  using namespace zmesh;
  CLI::App app{
      "zmesh-gateway: the mesh's services over HTTP/1.1 (REST, Server-Sent Events, "
      "/healthz, /readyz, /metrics, /openapi.json)"};
  rpc::CommonFlags flags;
  rpc::addCommonFlags(app, flags);
  std::optional<std::string> listen;
  std::optional<int> threads;
  bool printRoutes = false;
  app.add_option("--listen", listen, "HTTP address, host:port (overrides gateway.listen)");
  app.add_option("--threads", threads, "HTTP worker threads (overrides gateway.threads)")
      ->check(CLI::Range(1, 64));
  app.add_flag("--print-routes", printRoutes, "print the route table (METHOD /path) and exit");
  CLI11_PARSE(app, argc, argv);
  if (printRoutes) {
    gateway::Router router;
    gateway::addAllRoutes(router);
    for (auto& route : router.routes())
      std::cout << gateway::http::to_string(route.method) << ' ' << route.pattern << '\n';
    return 0;
  }
  try {
    rpc::setupLogging("gateway", flags.logLevel, flags.logFile);
    auto config = rpc::MeshConfig::load(flags.config);
    auto options = gateway::gatewayConfigFrom(config);
    if (listen) gateway::parseListen(*listen, options, "--listen");
    if (threads) options.threads = *threads;

    auto host = rpc::hostOptionsFrom(config, "gateway", flags, defaultEndpoint("gateway"));
    if (!host.server.endpoints.empty()) options.selfAdminEndpoint = host.server.endpoints.front();
    host.settings.emplace_back("listen",
                               options.listenAddress + ":" + std::to_string(options.listenPort));
    host.settings.emplace_back("threads", std::to_string(options.threads));
    host.settings.emplace_back("auth", options.tokens.empty() ? "off" : "bearer tokens");
    rpc::ServiceHost service(std::move(host));
    Mesh mesh(std::move(config));
    gateway::Gateway gateway(std::move(options), mesh, service.context());
    service.onStop([&gateway] { gateway.stop(); });
    service.server().stats().add(
        [&gateway](rpc::MetricsOut& out) { gateway.metrics().collect(out); });
    gateway.start();
    spdlog::info("HTTP on {}:{} with {} worker thread(s)", gateway.config().listenAddress,
                 gateway.port(), gateway.config().threads);
    return service.run();
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 2;
  }
}
