#include "in_process.h"

#include <future>

namespace zmesh::testing {

InProcessServer::InProcessServer(std::string name, std::string endpoint, Install install) {
  std::promise<void> ready;
  auto started = ready.get_future();
  thread_ = std::thread(
      [this, name, endpoint, install = std::move(install), ready = std::move(ready)]() mutable {
        bool signalled = false;
        try {
          zmq::context_t context;  // per incarnation: its end closes the listener for the next
          rpc::ServerOptions so;
          so.name = name;
          so.endpoints = {endpoint};
          so.graceMs = 100;
          rpc::Server server(context, so);
          auto close = install(server);
          server.bind();
          {
            std::lock_guard lock(mutex_);
            server_ = &server;
          }
          ready.set_value();
          signalled = true;
          server.run();  // until stop(), or a storage failure stops it
          close();
          std::lock_guard lock(mutex_);
          server_ = nullptr;
        } catch (...) {
          {
            std::lock_guard lock(mutex_);
            server_ = nullptr;
          }
          if (!signalled) ready.set_exception(std::current_exception());
        }
        finished_ = true;
      });
  try {
    started.get();
  } catch (...) {
    thread_.join();
    throw;
  }
}

InProcessServer::~InProcessServer() { stop(); }

void InProcessServer::stop() {
  {
    std::lock_guard lock(mutex_);
    if (server_) server_->requestStop();
  }
  if (thread_.joinable()) thread_.join();
}

bool InProcessServer::waitFinished(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!finished_ && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return finished_;
}

}  // namespace zmesh::testing
