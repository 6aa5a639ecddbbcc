// A mesh file from arbitrary bytes, read as every service (and the gateway) reads it:
// a bad file is a ConfigError naming the key, never a crash.
#include <string>

#include "cache_config.h"
#include "gateway_config.h"
#include "lock_config.h"
#include "rules_config.h"
#include "zmesh/rpc/config.h"
#include "zmesh/rpc/host.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace zmesh;
  try {
    auto config =
        rpc::MeshConfig::parse(std::string(reinterpret_cast<const char*>(data), size), "fuzz.toml");
    try {
      (void)gateway::gatewayConfigFrom(config);
    } catch (const rpc::ConfigError&) {
    }
    try {
      (void)ratelimit::parseSettings(config.section("ratelimit"));
      (void)ratelimit::parseRules(config.section("ratelimit"));
    } catch (const rpc::ConfigError&) {
    }
    try {
      (void)lock::parseLockOptions(config.section("lock"));
    } catch (const rpc::ConfigError&) {
    }
    try {
      (void)cache::parseCacheOptions(config.section("cache"));
    } catch (const rpc::ConfigError&) {
    }
    rpc::CommonFlags flags;
    for (const char* service : {"idgen", "ratelimit", "lock", "cache", "broker", "testsvc"}) {
      try {
        (void)rpc::hostOptionsFrom(config, service, flags, "tcp://127.0.0.1:0");
      } catch (const rpc::ConfigError&) {
      }
    }
  } catch (const rpc::ConfigError&) {
  }
  return 0;
}
