// zmesh-cache as a child process for the cache's integration tests: a mesh
// file of its own in a temporary directory (the [cache] section the test
// gives), optionally a zmesh-broker it publishes to, restarts over the same
// data directory after kill -9; a connection of the test's own (CacheClient +
// Admin) and helpers for the status a call answers.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "process.h"
#include "zmesh/client.h"
#include "zmesh/idl/cache.capnp.h"
#include "zmesh/rpc/frame.h"

namespace zmesh::testing {

struct CacheProcessOptions {
  std::string section = "";            // more lines for [cache], e.g. "max_batch = 10\n"
  std::vector<std::string> args = {};  // more flags, e.g. {"--policy", "noeviction"}
  bool persist = false;                // false: --memory; true: data_dir = <dir>/cache
  bool broker = false;                 // start a zmesh-broker the cache publishes to
  std::string logLevel = "warn";
};

class CacheProcess {
 public:
  explicit CacheProcess(CacheProcessOptions options = {});

  // Starts the cache (again, over the same files) and waits until it is healthy.
  void start();
  void kill9() { cache_->kill9(); }
  // SIGTERM; the wait status.
  int stop(std::chrono::milliseconds grace = 5s) { return cache_->stop(grace); }
  Process& process() { return *cache_; }

  const std::string& endpoint() const { return endpoint_; }
  const std::string& xpub() const { return xpub_; }  // "" without a broker
  const std::string& configPath() const { return config_; }
  const std::string& dir() const { return dir_.path(); }
  std::string dataDir() const { return dir_.path() + "/cache"; }
  std::string log() const { return readText(dir_.path() + "/cache.log"); }

 private:
  TempDir dir_;
  CacheProcessOptions options_;
  std::string config_, endpoint_, xpub_;
  std::optional<Process> broker_, cache_;
};

// A connection of its own (a DEALER on its own I/O thread): the Cache and
// Admin stubs over one channel, so their calls stay in order.
struct CacheConnection {
  explicit CacheConnection(const std::string& endpoint, std::chrono::milliseconds timeout = 5s);
  zmq::context_t context;
  rpc::ClientThread thread{context};
  rpc::Channel channel;
  CacheClient cache;
  AdminClient admin;

  // Admin.stats as a map, and one counter of it (0 when absent).
  std::map<std::string, int64_t> stats() const;
  int64_t stat(const std::string& name) const;
};

// What a call answered: OK when it did not throw, else the RpcError's code
// and its message.
struct Answer {
  StatusCode code = StatusCode::OK;
  std::string message;
};
Answer answerOf(const std::function<void()>& call);
inline StatusCode codeOf(const std::function<void()>& call) { return answerOf(call).code; }

// One Cache method over a raw channel with `params` as given (built, or
// crafted to be almost right); the reply as it came, not checked.
rpc::Reply callCache(const rpc::Channel& channel, const char* method, zmq::message_t params,
                     rpc::CallOptions options = {});
// The same with params built by `fill(Params::Builder)`.
template <typename Params, typename Fill>
rpc::Reply callCache(const rpc::Channel& channel, const char* method, Fill fill,
                     rpc::CallOptions options = {}) {
  capnp::MallocMessageBuilder message;
  fill(message.initRoot<Params>());
  return callCache(channel, method, rpc::toFrame(message), std::move(options));
}

// Data for a capnp setter, from bytes.
inline capnp::Data::Reader dataOf(std::string_view s) {
  return {reinterpret_cast<const kj::byte*>(s.data()), s.size()};
}

// Polls `done` every few ms until it holds or `limit` passes; whether it held.
bool waitUntil(const std::function<bool()>& done, std::chrono::milliseconds limit = 5s);

}  // namespace zmesh::testing
