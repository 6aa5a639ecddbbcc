#include "gateway_config.h"

#include <algorithm>
#include <boost/asio/ip/address.hpp>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <stdexcept>

namespace zmesh::gateway {

void parseListen(const std::string& text, GatewayConfig& config, const std::string& what) {
  auto colon = text.rfind(':');
  auto bad = [&](const std::string& reason) {
    throw rpc::ConfigError(what + ": " + reason + ", got \"" + text + "\"");
  };
  if (colon == std::string::npos) bad("expected host:port such as 127.0.0.1:8080");
  auto host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  boost::system::error_code ec;
  boost::asio::ip::make_address(host, ec);
  if (ec) bad("expected an IP address before ':' (a name is not resolved)");
  unsigned port = 0;
  auto portText = std::string_view(text).substr(colon + 1);
  auto [end, perr] = std::from_chars(portText.data(), portText.data() + portText.size(), port);
  if (perr != std::errc() || end != portText.data() + portText.size() || port > 65535)
    bad("expected a port from 0 to 65535 after ':'");
  config.listenAddress = host;
  config.listenPort = static_cast<uint16_t>(port);
}

std::string parseCorsOrigin(std::string_view origin) {
  auto bad = [](const std::string& why) { throw std::invalid_argument(why); };
  if (origin == "*")
    bad("\"*\" is not allowed: list each origin (any page a user opens could use the gateway)");
  if (origin == "null") bad("the \"null\" origin (files, sandboxes) is not allowed");
  std::string out;
  for (char ch : origin) out += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  auto sep = out.find("://");
  if (sep == std::string::npos) bad("expected scheme://host[:port] such as http://localhost:3000");
  auto scheme = std::string_view(out).substr(0, sep);
  if (scheme != "http" && scheme != "https") bad("the scheme must be http or https");
  auto rest = std::string_view(out).substr(sep + 3);
  if (rest.find_first_of("/?#@") != std::string_view::npos)
    bad("an origin has no path, query, fragment or user: scheme://host[:port] only");
  std::string_view host = rest, port;
  if (!rest.empty() && rest.front() == '[') {  // [::1]:8080
    auto close = rest.find(']');
    if (close == std::string_view::npos) bad("an IPv6 host needs its closing ']'");
    host = rest.substr(0, close + 1);
    auto after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') bad("expected ':port' after the IPv6 host");
      port = after.substr(1);
      if (port.empty()) bad("the port after ':' is missing");
    }
    auto inner = host.substr(1, host.size() - 2);
    if (inner.empty() || inner.find_first_not_of("0123456789abcdef:.") != std::string_view::npos)
      bad("not an IPv6 address between '[' and ']'");
  } else {
    auto colon = rest.rfind(':');
    if (colon != std::string_view::npos) {
      host = rest.substr(0, colon);
      port = rest.substr(colon + 1);
      if (port.empty()) bad("the port after ':' is missing");
    }
    if (host.empty() || host.front() == '.' || host.front() == '-' ||
        host.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789.-") != std::string_view::npos)
      bad("the host must be a name or address of [a-z0-9.-] (or [IPv6])");
  }
  if (!port.empty()) {
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535)
      bad("the port must be a number from 1 to 65535");
    if ((scheme == "http" && value == 80) || (scheme == "https" && value == 443))
      bad("leave out the scheme's default port " + std::string(port) +
          ": browsers send the origin without it");
    if (port.front() == '0') bad("the port has a leading zero");
  }
  return out;
}

GatewayConfig gatewayConfigFrom(const rpc::MeshConfig& mesh) {
  GatewayConfig c;
  auto s = mesh.section("gateway");
  // endpoint … recv_hwm: the Admin RPC endpoint's, read by rpc::hostOptionsFrom.
  s.rejectUnknown({"enabled",
                   "listen",
                   "endpoint",
                   "max_request_bytes",
                   "default_deadline",
                   "retry_window",
                   "send_hwm",
                   "recv_hwm",
                   "threads",
                   "request_timeout",
                   "idle_timeout",
                   "header_timeout",
                   "max_connections",
                   "accept_backoff_max",
                   "retry_after",
                   "max_header_bytes",
                   "max_body_bytes",
                   "max_uri_bytes",
                   "max_key_bytes",
                   "idempotency_window",
                   "idempotency_max_entries",
                   "idempotency_max_bytes",
                   "idempotency_principal_max_bytes",
                   "sse_buffer",
                   "sse_client_queue",
                   "max_sse_streams",
                   "sse_replay_max_bytes",
                   "sse_heartbeat",
                   "readiness_timeout",
                   "ops_cache_max_age",
                   "stop_grace",
                   "tokens",
                   "ratelimit_rule",
                   "ratelimit_batch",
                   "ratelimit_fail_open",
                   "ratelimit_max_keys",
                   "ratelimit_queue",
                   "cors_origins",
                   "cors_max_age"});
  if (s.has("listen")) parseListen(s.string("listen", ""), c, mesh.source() + ": gateway.listen");
  c.threads = static_cast<int>(s.integer("threads", c.threads, 1, 64));
  c.requestTimeout = s.duration("request_timeout", c.requestTimeout);
  c.idleTimeout = s.duration("idle_timeout", c.idleTimeout);
  c.headerTimeout = s.duration("header_timeout", c.headerTimeout);
  c.maxConnections = s.integer("max_connections", c.maxConnections, 1, 1'000'000);
  c.acceptBackoffMax = s.duration("accept_backoff_max", c.acceptBackoffMax);
  c.retryAfter = s.duration("retry_after", c.retryAfter);
  c.maxHeaderBytes = s.integer("max_header_bytes", c.maxHeaderBytes, 1024, 1 << 20);
  c.maxBodyBytes = s.integer("max_body_bytes", c.maxBodyBytes, 0, 1LL << 30);
  c.maxUriBytes = s.integer("max_uri_bytes", c.maxUriBytes, 64, 1 << 20);
  c.maxKeyBytes = s.integer("max_key_bytes", c.maxKeyBytes, 1, 1 << 20);
  c.idempotencyWindow = s.duration("idempotency_window", c.idempotencyWindow);
  c.idempotencyMaxEntries =
      s.integer("idempotency_max_entries", c.idempotencyMaxEntries, 1, 100'000'000);
  c.idempotencyMaxBytes =
      s.integer("idempotency_max_bytes", c.idempotencyMaxBytes, 64 * 1024, 1LL << 40);
  c.idempotencyPrincipalMaxBytes = s.integer(
      "idempotency_principal_max_bytes",
      std::min(c.idempotencyPrincipalMaxBytes, c.idempotencyMaxBytes), 16 * 1024, 1LL << 40);
  c.sseBuffer = s.integer("sse_buffer", c.sseBuffer, 1, 10'000'000);
  c.sseClientQueue = s.integer("sse_client_queue", c.sseClientQueue, 1, 10'000'000);
  c.maxSseStreams =
      s.integer("max_sse_streams", std::min(c.maxSseStreams, c.maxConnections), 0, 1'000'000);
  c.sseReplayMaxBytes = s.integer("sse_replay_max_bytes", c.sseReplayMaxBytes, 1024, 1LL << 30);
  c.sseHeartbeat = s.duration("sse_heartbeat", c.sseHeartbeat);
  c.readinessTimeout = s.duration("readiness_timeout", c.readinessTimeout);
  c.stopGrace = s.duration("stop_grace", c.stopGrace);
  c.opsCacheMaxAge = s.duration("ops_cache_max_age", c.opsCacheMaxAge);
  if (c.requestTimeout.count() == 0) s.fail("request_timeout", "must be more than 0");
  if (c.headerTimeout.count() <= 0) s.fail("header_timeout", "must be more than 0");
  if (c.headerTimeout > 1h) s.fail("header_timeout", "must be at most 1h");
  if (c.acceptBackoffMax < 10ms || c.acceptBackoffMax > 60s)
    s.fail("accept_backoff_max", "must be from 10ms to 60s");
  if (c.opsCacheMaxAge > 60s) s.fail("ops_cache_max_age", "must be at most 60s");
  if (c.idempotencyPrincipalMaxBytes > c.idempotencyMaxBytes)
    s.fail("idempotency_principal_max_bytes",
           "must be at most idempotency_max_bytes (" + std::to_string(c.idempotencyMaxBytes) + ")");
  if (c.maxSseStreams > c.maxConnections)
    s.fail("max_sse_streams",
           "must be at most max_connections (" + std::to_string(c.maxConnections) + ")");
  if (c.sseHeartbeat.count() == 0) s.fail("sse_heartbeat", "must be more than 0");
  c.ratelimitRule = s.string("ratelimit_rule", c.ratelimitRule);
  if (s.has("ratelimit_rule")) {
    // As the rate limiter names rules; checked here so a typo fails at start.
    auto& rule = c.ratelimitRule;
    auto ruleOk = !rule.empty() && rule.size() <= 64 &&
                  std::all_of(rule.begin(), rule.end(), [](unsigned char ch) {
                    return std::isalnum(ch) || ch == '_' || ch == '-' || ch == '.';
                  });
    if (!ruleOk) s.fail("ratelimit_rule", "a rule's name is 1-64 characters of [A-Za-z0-9_.-]");
  }
  c.ratelimitBatch =
      static_cast<uint32_t>(s.integer("ratelimit_batch", c.ratelimitBatch, 1, 1'000'000));
  c.ratelimitFailOpen = s.boolean("ratelimit_fail_open", c.ratelimitFailOpen);
  c.ratelimitMaxKeys = s.integer("ratelimit_max_keys", c.ratelimitMaxKeys, 1, 100'000'000);
  c.ratelimitQueue = s.integer("ratelimit_queue", c.ratelimitQueue, 1, 1'000'000);

  for (auto& origin : s.strings("cors_origins")) {
    try {
      auto normalized = parseCorsOrigin(origin);
      if (std::find(c.corsOrigins.begin(), c.corsOrigins.end(), normalized) != c.corsOrigins.end())
        s.fail("cors_origins", "\"" + origin + "\" is listed twice");
      c.corsOrigins.push_back(std::move(normalized));
    } catch (const std::invalid_argument& e) {
      s.fail("cors_origins", "\"" + origin + "\": " + e.what());
    }
  }
  if (s.has("cors_max_age") && c.corsOrigins.empty())
    s.fail("cors_max_age", "has no effect without cors_origins");
  // Browsers cap it lower themselves (Firefox 24h, Chromium 2h).
  c.corsMaxAge = s.duration("cors_max_age", c.corsMaxAge, 0ms, 24h);

  auto tokens = s.child("tokens");
  for (auto& name : tokens.keys()) {
    auto t = tokens.child(name);
    t.rejectUnknown({"token", "token_env", "scopes"});
    TokenConfig token;
    // The name scopes Idempotency-Keys forwarded as "<name>:<key>": no ':' in it.
    auto nameOk = !name.empty() && name.size() <= 64 &&
                  std::all_of(name.begin(), name.end(), [](unsigned char ch) {
                    return std::isalnum(ch) || ch == '_' || ch == '-' || ch == '.';
                  });
    if (!nameOk) s.fail("tokens." + name, "a token's name is 1-64 characters of [A-Za-z0-9_.-]");
    token.principal.name = name;
    if (t.has("token") == t.has("token_env"))
      t.fail("token", "give exactly one of token and token_env");
    if (t.has("token")) {
      token.token = t.string("token", "");
    } else {
      auto var = t.string("token_env", "");
      const char* value = std::getenv(var.c_str());
      if (!value || !*value) t.fail("token_env", "environment variable " + var + " is not set");
      token.token = value;
    }
    if (token.token.empty()) t.fail("token", "must not be empty");
    for (auto& scope : t.strings("scopes")) {
      auto parsed = parseScope(scope);
      if (!parsed)
        t.fail("scopes", "unknown scope \"" + scope +
                             "\" (known: ids, ratelimit, locks, cache, events, admin, stats)");
      token.principal.scopes.insert(*parsed);
    }
    for (auto& other : c.tokens)
      if (other.token == token.token) t.fail("token", "the same token as " + other.principal.name);
    c.tokens.push_back(std::move(token));
  }
  return c;
}

std::string selfReachable(const std::string& endpoint) {
  // Bound on every address (IPv4, or [::] dual-stack): loopback reaches it,
  // and over IPv4, which the gateway's sockets speak without ZMQ_IPV6.
  for (std::string_view any : {"tcp://*:", "tcp://0.0.0.0:", "tcp://[::]:"})
    if (endpoint.starts_with(any)) return "tcp://127.0.0.1:" + endpoint.substr(any.size());
  return endpoint;
}

}  // namespace zmesh::gateway
