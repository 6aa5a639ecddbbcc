// [gateway] in the mesh file, with flags applied on top.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#include "auth.h"
#include "zmesh/rpc/config.h"

namespace zmesh::gateway {

using namespace std::chrono_literals;

struct TokenConfig {
  std::string token;
  Principal principal;
};

struct GatewayConfig {
  std::string listenAddress = "127.0.0.1";
  uint16_t listenPort = 8080;
  int threads = 1;
  std::chrono::milliseconds requestTimeout = 5s;  // a service call's deadline → 504
  std::chrono::milliseconds idleTimeout = 60s;    // keep-alive connection with no request
  std::chrono::milliseconds retryAfter = 1s;      // Retry-After on 503
  size_t maxHeaderBytes = 8 * 1024;               // → 431
  size_t maxBodyBytes = 1024 * 1024;              // → 413
  size_t maxUriBytes = 2048;                      // → 414
  size_t maxKeyBytes = 250;                       // any path name (key, lock, namespace) → 400
  std::chrono::milliseconds idempotencyWindow = 10min;
  size_t idempotencyMaxEntries = 100000;
  size_t sseBuffer = 10000;      // events kept for Last-Event-ID
  size_t sseClientQueue = 1024;  // per stream; a slower client is dropped
  std::chrono::milliseconds sseHeartbeat = 15s;
  std::chrono::milliseconds readinessTimeout = 1s;
  std::chrono::milliseconds stopGrace = 5s;
  std::vector<TokenConfig> tokens;  // empty: auth off
};

// Reads [gateway] (and [gateway.tokens.<name>]); throws rpc::ConfigError naming the key.
GatewayConfig gatewayConfigFrom(const rpc::MeshConfig& mesh);

// "127.0.0.1:8080" → address and port; throws rpc::ConfigError for anything else.
void parseListen(const std::string& text, GatewayConfig& config, const std::string& what);

}  // namespace zmesh::gateway
