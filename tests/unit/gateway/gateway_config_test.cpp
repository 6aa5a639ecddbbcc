#include "gateway_config.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

using namespace zmesh::gateway;
using Catch::Matchers::Contains;

namespace {

GatewayConfig fromText(const std::string& gatewayTable) {
  return gatewayConfigFrom(
      zmesh::rpc::MeshConfig::parse("[gateway]\n" + gatewayTable, "mesh.toml"));
}

std::string errorOf(const std::string& gatewayTable) {
  try {
    fromText(gatewayTable);
  } catch (const zmesh::rpc::ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("gateway config: CORS is off by default", "[gateway_config]") {
  auto config = fromText("");
  CHECK(config.corsOrigins.empty());
  CHECK(config.corsMaxAge == std::chrono::minutes(10));
}

TEST_CASE("gateway config: cors_origins and cors_max_age", "[gateway_config]") {
  auto config = fromText(
      "cors_origins = [\"http://localhost:3000\", \"HTTPS://Dash.Example.com\", "
      "\"http://[::1]:8080\", \"http://127.0.0.1:9\"]\ncors_max_age = \"90s\"\n");
  CHECK(config.corsOrigins == std::vector<std::string>{"http://localhost:3000",
                                                       "https://dash.example.com",
                                                       "http://[::1]:8080", "http://127.0.0.1:9"});
  CHECK(config.corsMaxAge == std::chrono::seconds(90));
}

TEST_CASE("gateway config: a bad CORS origin is refused saying why", "[gateway_config]") {
  const std::vector<std::pair<std::string, std::string>> rows = {
      {"*", "\"*\" is not allowed"},
      {"null", "\"null\" origin"},
      {"localhost:3000", "scheme://host[:port]"},
      {"ftp://x", "http or https"},
      {"http://x/", "no path"},
      {"http://x/app", "no path"},
      {"http://user@x", "no path"},
      {"http://x?a=1", "no path"},
      {"http://", "the host must be"},
      {"http://a_b", "the host must be"},
      {"http://x:", "port after ':' is missing"},
      {"http://x:0", "from 1 to 65535"},
      {"http://x:65536", "from 1 to 65535"},
      {"http://x:3000x", "from 1 to 65535"},
      {"http://x:80", "default port 80"},
      {"https://x:443", "default port 443"},
      {"http://x:03000", "leading zero"},
      {"http://[::1", "closing ']'"},
      {"http://[zz]", "IPv6"},
  };
  for (const auto& [origin, why] : rows) {
    INFO("origin " << origin);
    auto error = errorOf("cors_origins = [\"" + origin + "\"]\n");
    CHECK_THAT(error, Contains("gateway.cors_origins") && Contains(why));
  }
  CHECK_THAT(errorOf("cors_origins = [\"http://a:1\", \"HTTP://A:1\"]\n"),
             Contains("listed twice"));
  CHECK_THAT(errorOf("cors_origins = \"http://a:1\"\n"), Contains("cors_origins"));
  CHECK_THAT(errorOf("cors_max_age = \"1m\"\n"), Contains("without cors_origins"));
  CHECK_THAT(errorOf("cors_origins = [\"http://a:1\"]\ncors_max_age = \"2d\"\n"),
             Contains("cors_max_age"));
  CHECK_THAT(errorOf("cors_origin = [\"http://a:1\"]\n"), Contains("cors_origin"));
}

TEST_CASE("gateway config: the own Admin endpoint bound on every address is reached on loopback",
          "[gateway_config]") {
  CHECK(selfReachable("tcp://*:7180") == "tcp://127.0.0.1:7180");
  CHECK(selfReachable("tcp://0.0.0.0:7180") == "tcp://127.0.0.1:7180");
  CHECK(selfReachable("tcp://[::]:7180") == "tcp://127.0.0.1:7180");
  CHECK(selfReachable("tcp://127.0.0.1:7180") == "tcp://127.0.0.1:7180");
  CHECK(selfReachable("tcp://10.0.0.5:7180") == "tcp://10.0.0.5:7180");
  CHECK(selfReachable("ipc:///run/zmesh/gateway") == "ipc:///run/zmesh/gateway");
}
