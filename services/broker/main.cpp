// zmesh-broker: wiring only. The forwarding is in broker.cpp.
#include <spdlog/spdlog.h>

#include "broker.h"
#include "zmesh/rpc/host.h"

int main(int argc, char** argv) {
  using namespace zmesh;
  CLI::App app{"zmesh-broker: the mesh's event bus (XSUB in, XPUB out)"};
  rpc::CommonFlags flags;
  rpc::addCommonFlags(app, flags);
  std::string xsub, xpub;
  app.add_option("--xsub", xsub, "endpoint publishers connect to (overrides broker.xsub)");
  app.add_option("--xpub", xpub, "endpoint subscribers connect to (overrides broker.xpub)");
  CLI11_PARSE(app, argc, argv);
  try {
    rpc::setupLogging("broker", flags.logLevel, flags.logFile);
    auto config = rpc::MeshConfig::load(flags.config);
    auto section = config.section("broker");
    section.rejectUnknown({"xsub", "xpub", "admin", "hwm", "enabled"}, rpc::kHostKeys);
    broker::BrokerOptions options;
    options.xsub = xsub.empty() ? section.string("xsub", options.xsub) : xsub;
    options.xpub = xpub.empty() ? section.string("xpub", options.xpub) : xpub;
    options.hwm = section.integer("hwm", options.hwm, 1, 100'000'000);
    // The broker's own Admin endpoint; it publishes nothing itself.
    flags.broker = "none";
    // The broker's Admin endpoint is broker.admin (hostOptionsFrom reads "endpoint").
    if (flags.endpoint.empty()) flags.endpoint = section.string("admin", "tcp://127.0.0.1:7103");
    auto host = rpc::hostOptionsFrom(config, "broker", flags, flags.endpoint);
    host.settings.emplace_back("xsub", options.xsub);
    host.settings.emplace_back("xpub", options.xpub);
    rpc::ServiceHost service(std::move(host));
    broker::Broker broker(service.context(), service.server(), options);
    spdlog::info("broker: publishers → {}, subscribers ← {}", broker.xsubEndpoint(),
                 broker.xpubEndpoint());
    return service.run();
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 2;
  }
}
