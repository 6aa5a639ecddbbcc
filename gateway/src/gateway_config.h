// [gateway] in the mesh file, with flags applied on top.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
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
  // From a connection's accept, or a keep-alive request's first byte, to the
  // end of its header: a slow-header (slowloris) client is closed after it.
  std::chrono::milliseconds headerTimeout = 10s;
  size_t maxConnections = 1024;  // beyond: 503 + Retry-After, then closed
  // accept() failing (EMFILE, ENFILE, ENOBUFS): retried after 10 ms, doubling up to this.
  std::chrono::milliseconds acceptBackoffMax = 1s;
  std::chrono::milliseconds retryAfter = 1s;  // Retry-After on 503
  size_t maxHeaderBytes = 8 * 1024;           // → 431
  size_t maxBodyBytes = 1024 * 1024;          // → 413
  size_t maxUriBytes = 2048;                  // → 414
  size_t maxKeyBytes = 250;                   // any path name (key, lock, namespace) → 400
  std::chrono::milliseconds idempotencyWindow = 10min;
  size_t idempotencyMaxEntries = 100000;
  size_t idempotencyMaxBytes = 64 * 1024 * 1024;           // the whole store
  size_t idempotencyPrincipalMaxBytes = 16 * 1024 * 1024;  // one principal's share
  size_t sseBuffer = 10000;                                // events kept for Last-Event-ID
  size_t sseClientQueue = 1024;                            // per stream; a slower client is dropped
  size_t maxSseStreams = 256;                              // beyond: 503 + Retry-After
  // A Last-Event-ID resume replays at most this much (then: event gap).
  size_t sseReplayMaxBytes = 1024 * 1024;
  std::chrono::milliseconds sseHeartbeat = 15s;
  std::chrono::milliseconds readinessTimeout = 1s;
  // /metrics and /readyz answer from a result at most this old, so a flood of
  // them does not become a flood of calls to every service.
  std::chrono::milliseconds opsCacheMaxAge = 1s;
  std::chrono::milliseconds stopGrace = 5s;
  std::vector<TokenConfig> tokens;  // empty: auth off
  // The gateway's own per-token limit (the only 429): a rule of the rate
  // limiter keyed on one descriptor, whose value is the bearer token's name
  // (the client's address without auth). Empty: off.
  std::string ratelimitRule;
  uint32_t ratelimitBatch = 10;     // tokens a worker leases at once per key
  bool ratelimitFailOpen = false;   // the rate limiter unreachable: admit (else 503)
  size_t ratelimitMaxKeys = 10000;  // keys a worker tracks; beyond, each request asks
  size_t ratelimitQueue = 256;      // requests of one key waiting for its lease; beyond: 503
  // CORS: the web origins whose pages may read the gateway's answers
  // ("http://localhost:3000": scheme://host[:port], as browsers send Origin).
  // Empty: off (no CORS header is ever sent). No "*": with auth off it would
  // let any page a user opens drive the mesh through a gateway on localhost.
  std::vector<std::string> corsOrigins;
  std::chrono::milliseconds corsMaxAge = 10min;  // how long a browser keeps a preflight's answer
  // Where this process answers Admin (set by main, not read from [gateway]):
  // /metrics and /v1/mesh show its process.* and rpc.* families (and
  // zmesh_service_up{service="gateway"}) from it. Empty: not asked.
  std::string selfAdminEndpoint;
};

// Checks one cors_origins entry and returns it lowercased; a path, "*",
// "null" or the scheme's default port (browsers never send it) is refused
// with std::invalid_argument saying why.
std::string parseCorsOrigin(std::string_view origin);

// An endpoint the gateway binds, as the gateway itself reaches it: one bound
// on every address ("tcp://*:7180", "tcp://0.0.0.0:7180", "tcp://[::]:7180")
// on IPv4 loopback ("tcp://127.0.0.1:7180"); any other unchanged.
std::string selfReachable(const std::string& endpoint);

// Reads [gateway] (and [gateway.tokens.<name>]); throws rpc::ConfigError naming the key.
GatewayConfig gatewayConfigFrom(const rpc::MeshConfig& mesh);

// "127.0.0.1:8080" → address and port; throws rpc::ConfigError for anything else.
void parseListen(const std::string& text, GatewayConfig& config, const std::string& what);

}  // namespace zmesh::gateway
