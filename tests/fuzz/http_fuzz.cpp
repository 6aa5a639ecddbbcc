// Raw HTTP bytes through a real gateway's sessions and router, in process on
// loopback: answered (400, 404, 405, 413, 414, 431, 503 …) or closed, never a
// crash; and the gateway still answers after them.
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "gateway.h"
#include "gateway_config.h"
#include "zmesh/client.h"

namespace {

using namespace zmesh;

// A connection to the gateway: writes `bytes`, then reads until the gateway
// closes or 200 ms pass. Returns what came back.
std::string exchange(uint16_t port, const void* bytes, size_t size) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) std::abort();
  timeval timeout{0, 200 * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    if (size > 0) (void)!::send(fd, bytes, size, MSG_NOSIGNAL);
    ::shutdown(fd, SHUT_WR);
    char buffer[4096];
    for (ssize_t n; (n = ::recv(fd, buffer, sizeof(buffer), 0)) > 0;) out.append(buffer, n);
  }
  ::close(fd);
  return out;
}

struct Harness {
  zmq::context_t context;
  std::unique_ptr<Mesh> mesh;
  std::unique_ptr<gateway::Gateway> gateway;
  Harness() {
    spdlog::set_level(spdlog::level::off);  // each input may log
    // The services' endpoints have nobody behind them: calls fail fast, as when
    // a service is down (bodies are parsed and refused before any call). Not
    // the default endpoints, where a real service may be listening.
    // An acquire's call may last its wait (up to 60 s) past request_timeout
    // (before the endpoint is known down): a short stop_grace lets the replay
    // end without waiting it out.
    const char* text =
        "[idgen]\nendpoint = \"tcp://127.0.0.1:1\"\n"
        "[ratelimit]\nendpoint = \"tcp://127.0.0.1:1\"\n"
        "[lock]\nendpoint = \"tcp://127.0.0.1:1\"\n"
        "[cache]\nendpoint = \"tcp://127.0.0.1:1\"\n"
        "[gateway]\nlisten = \"127.0.0.1:0\"\nthreads = 1\nrequest_timeout = \"50ms\"\n"
        "header_timeout = \"200ms\"\nidle_timeout = \"200ms\"\nmax_body_bytes = 4096\n"
        "max_header_bytes = 2048\nmax_uri_bytes = 512\nsse_heartbeat = \"100ms\"\n"
        "stop_grace = \"100ms\"\n"
        "[gateway.tokens.fuzz]\ntoken = \"fuzz-token\"\nscopes = [\"ids\", \"events\", "
        "\"admin\", \"ratelimit\", \"locks\", \"cache\"]\n";
    auto config = rpc::MeshConfig::parse(text, "http_fuzz");
    auto options = gateway::gatewayConfigFrom(config);
    mesh = std::make_unique<Mesh>(std::move(config));
    gateway = std::make_unique<gateway::Gateway>(std::move(options), *mesh, context);
    gateway->start();
  }
  ~Harness() { gateway->stop(); }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Harness harness;
  static uint64_t runs = 0;
  (void)exchange(harness.gateway->port(), data, size);
  // Every so often: still serving.
  // Every so often: still answering. Any status counts (a 503 at a limit the
  // inputs reached is an answer); a slow moment under ASan gets a few tries.
  if (++runs % 64 == 0) {
    static const char kHealth[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    bool answered = false;
    for (int attempt = 0; attempt < 25 && !answered; ++attempt)
      answered =
          exchange(harness.gateway->port(), kHealth, sizeof(kHealth) - 1).rfind("HTTP/1.1 ", 0) ==
          0;
    if (!answered) std::abort();
  }
  return 0;
}
