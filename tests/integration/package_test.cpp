// The installed package as a user sees it: `cmake --install`, then a separate
// project (examples/consumer) finds zmesh, builds, and talks to a live mesh.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "process.h"

using namespace zmesh::testing;

namespace {

int run(const std::string& command) { return std::system((command + " > /dev/null 2>&1").c_str()); }

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

TEST_CASE("an installed zmesh package builds and runs the consumer example", "[package]") {
  TempDir dir;
  std::string prefix = dir.path() + "/prefix", build = dir.path() + "/consumer";
  REQUIRE(run(std::string(ZMESH_CMAKE) + " --install " + ZMESH_BUILD_DIR + " --prefix " + prefix) ==
          0);
  REQUIRE(run(std::string(ZMESH_CMAKE) + " -S " + ZMESH_SOURCE_DIR + "/examples/consumer -B " +
              build + " -DCMAKE_PREFIX_PATH=" + prefix + " " + ZMESH_CONSUMER_FLAGS) == 0);
  REQUIRE(run(std::string(ZMESH_CMAKE) + " --build " + build) == 0);

  int xsub = freePort(), xpub = freePort(), admin = freePort(), idgen = freePort();
  std::string config = dir.path() + "/mesh.toml";
  std::ofstream(config) << "[broker]\nxsub = \"" << tcpEndpoint(xsub) << "\"\nxpub = \""
                        << tcpEndpoint(xpub) << "\"\nadmin = \"" << tcpEndpoint(admin)
                        << "\"\n[idgen]\nendpoint = \"" << tcpEndpoint(idgen) << "\"\ndata_dir = \""
                        << dir.path() << "/idgen\"\n";
  Process broker({bin("zmesh-broker"), "--config", config}, dir.path() + "/broker.log");
  Process service({bin("zmesh-idgen"), "--config", config}, dir.path() + "/idgen.log");
  requireHealthy(broker, tcpEndpoint(admin));
  requireHealthy(service, tcpEndpoint(idgen));

  Process consumer({build + "/zmesh-consumer", config, "pkg"}, dir.path() + "/consumer.log");
  int status = consumer.wait(15s);
  std::string out = slurp(dir.path() + "/consumer.log");
  INFO(out);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(out.find("ids 1..100") != std::string::npos);
  CHECK(out.find("event idgen.block {\"namespace\":\"pkg\"") != std::string::npos);
}
