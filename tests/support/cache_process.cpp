#include "cache_process.h"

#include <fstream>
#include <thread>

namespace zmesh::testing {

CacheProcess::CacheProcess(CacheProcessOptions options)
    : options_(std::move(options)),
      config_(dir_.path() + "/mesh.toml"),
      endpoint_(tcpEndpoint(freePort())) {
  std::string admin;
  {
    std::ofstream out(config_);
    if (options_.broker) {
      xpub_ = tcpEndpoint(freePort());
      admin = tcpEndpoint(freePort());
      out << "[broker]\nxsub = \"" << tcpEndpoint(freePort()) << "\"\nxpub = \"" << xpub_
          << "\"\nadmin = \"" << admin << "\"\n\n";
    }
    out << "[cache]\nendpoint = \"" << endpoint_ << "\"\ndata_dir = \"" << dataDir() << "\"\n"
        << options_.section << "\n";
  }
  if (options_.broker) {
    broker_.emplace(std::vector<std::string>{bin("zmesh-broker"), "--config", config_},
                    dir_.path() + "/broker.log");
    requireHealthy(*broker_, admin);
  }
  start();
}

void CacheProcess::start() {
  std::vector<std::string> argv{bin("zmesh-cache"), "--config", config_, "--log-level",
                                options_.logLevel};
  if (!options_.broker) argv.insert(argv.end(), {"--broker", "none"});
  if (!options_.persist) argv.push_back("--memory");
  argv.insert(argv.end(), options_.args.begin(), options_.args.end());
  cache_.emplace(argv, dir_.path() + "/cache.log");
  requireHealthy(*cache_, endpoint_, 15s);
}

namespace {
CallSettings settingsOf(std::chrono::milliseconds timeout) {
  CallSettings s;
  s.timeout = timeout;
  return s;
}
}  // namespace

CacheConnection::CacheConnection(const std::string& endpoint, std::chrono::milliseconds timeout)
    : channel(thread.channel(endpoint)),
      cache(channel, settingsOf(timeout)),
      admin(channel, settingsOf(timeout)) {}

std::map<std::string, int64_t> CacheConnection::stats() const {
  std::map<std::string, int64_t> out;
  for (auto& [name, value] : rpc::flatten(admin.stats())) out[name] = static_cast<int64_t>(value);
  return out;
}

int64_t CacheConnection::stat(const std::string& name) const {
  auto all = stats();
  auto it = all.find(name);
  return it == all.end() ? 0 : it->second;
}

Answer answerOf(const std::function<void()>& call) {
  try {
    call();
  } catch (const RpcError& e) {
    return {e.code(), e.detail()};
  }
  return {};
}

rpc::Reply callCache(const rpc::Channel& channel, const char* method, zmq::message_t params,
                     rpc::CallOptions options) {
  return channel.callSync(capnp::typeId<idl::Cache>(),
                          rpc::methodOrdinal(capnp::Schema::from<idl::Cache>(), method),
                          std::move(params), std::move(options));
}

bool waitUntil(const std::function<bool()>& done, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

}  // namespace zmesh::testing
