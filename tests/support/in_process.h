// A service's rpc::Server run in this process on a thread of its own (the kj
// loop belongs to the thread that builds it), so durability tests can crash
// its storage (FaultInjectionEnv) between incarnations.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "zmesh/rpc/server.h"

namespace zmesh::testing {

class InProcessServer {
 public:
  // On the server's thread: builds the service, serves it on `server`, and
  // returns what to run once the loop has stopped (the service's close()).
  using Install = std::function<std::function<void()>(rpc::Server& server)>;

  // Returns once the server is bound; rethrows what `install` or bind() threw.
  InProcessServer(std::string name, std::string endpoint, Install install);
  ~InProcessServer();  // stop()

  void stop();
  // The loop ended by itself (a fatal storage error) within `timeout`.
  bool waitFinished(std::chrono::milliseconds timeout);

 private:
  std::mutex mutex_;
  rpc::Server* server_ = nullptr;  // guarded by mutex_
  std::atomic<bool> finished_{false};
  std::thread thread_;
};

}  // namespace zmesh::testing
