// Helpers shared by the storage tests.
#pragma once

#include <stdlib.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace zmesh::storage::test {

// Stands in for a service's event loop: Journal completions are posted here
// from the helper thread and run on the test's thread when it drains.
class TestLoop {
 public:
  std::function<void(std::function<void()>)> poster() {
    return [this](std::function<void()> f) {
      {
        std::lock_guard lk(mu_);
        queue_.push_back(std::move(f));
        ++posts_;
      }
      cv_.notify_all();
    };
  }

  // Runs what has been posted so far; returns how many closures ran.
  size_t runReady() {
    std::deque<std::function<void()>> ready;
    {
      std::lock_guard lk(mu_);
      ready.swap(queue_);
    }
    for (auto& f : ready) f();
    return ready.size();
  }

  // Runs posted closures until `pred` holds; false if `timeout` passes first.
  bool runUntil(const std::function<bool()>& pred,
                std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      runReady();
      if (pred()) return true;
      std::unique_lock lk(mu_);
      if (!cv_.wait_until(lk, deadline, [&] { return !queue_.empty(); })) {
        lk.unlock();
        runReady();
        return pred();
      }
    }
  }

  uint64_t posts() const {
    std::lock_guard lk(mu_);
    return posts_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  uint64_t posts_ = 0;
};

// A fresh directory under $TMPDIR (or /tmp), removed with its content.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base != nullptr && *base != '\0' ? base : "/tmp") +
                       "/zmesh-storage-test-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace zmesh::storage::test
