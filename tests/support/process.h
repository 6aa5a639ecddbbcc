// Helpers for integration tests: free loopback ports, child processes stopped
// by pid (never by name), temporary directories.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace zmesh {
class IdGenClient;
}

namespace zmesh::testing {

using namespace std::chrono_literals;

// The whole file ("" when it cannot be read): logs and fixtures in test messages.
std::string readText(const std::string& path);

// A random seed for a randomized test, or $ZMESH_TEST_SEED to rerun one; the
// test prints it (INFO) so a failure can be replayed.
uint64_t testSeed();

// A TCP port on 127.0.0.1 that was free a moment ago, outside the kernel's
// ephemeral range and claimed for a minute against tests running in parallel.
int freePort();
std::string tcpEndpoint(int port);
// Path of a binary built by this project.
std::string bin(const std::string& name);
// A fresh directory under $TMPDIR (or /tmp); removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A child process; stopped with SIGTERM (then SIGKILL) when destroyed, and
// killed by the kernel if the thread that started it exits first (so start it
// from the test's own thread, not from a short-lived helper thread).
class Process {
 public:
  explicit Process(std::vector<std::string> argv, const std::string& logFile = "");
  Process(Process&& other) noexcept;
  Process& operator=(Process&&) = delete;
  ~Process();

  pid_t pid() const { return pid_; }
  bool running();
  void kill9();
  // Waits up to `timeout` for the process to exit by itself, then stop()s it.
  // Returns the wait status.
  int wait(std::chrono::milliseconds timeout);
  // SIGTERM, wait up to `grace`, then SIGKILL. Returns the wait status.
  int stop(std::chrono::milliseconds grace = 5s);
  // What the process wrote to its log file so far ("" without one).
  std::string log() const { return log_.empty() ? std::string() : readText(log_); }

 private:
  pid_t pid_ = -1;
  int status_ = 0;
  std::string log_;
};

// A process stopped with SIGSTOP (alive and connected, answering nothing)
// until resume() or the end of the scope, whichever comes first.
class Paused {
 public:
  explicit Paused(pid_t pid);
  ~Paused() { resume(); }
  Paused(const Paused&) = delete;
  Paused& operator=(const Paused&) = delete;
  void resume();

 private:
  pid_t pid_;
};

// Polls Admin.health on `endpoint` until it answers ok or `timeout` passes.
bool waitHealthy(const std::string& endpoint, std::chrono::milliseconds timeout = 10s);
// waitHealthy for a process of the test's own: fails the test at once when the
// process exits, and either way with its log, so a failure in CI says why.
void requireHealthy(Process& process, const std::string& endpoint,
                    std::chrono::milliseconds timeout = 10s);
// The same for a process known by its log file only.
void requireHealthy(const std::string& endpoint, const std::string& logFile,
                    std::chrono::milliseconds timeout = 15s);

// IdGen.snowflake, retried while it answers UNAVAILABLE (after a restart the
// clock may be behind the persisted time bound) — and DEADLINE_EXCEEDED too
// when `alsoDeadline` (a service being killed). Fails the test on anything
// else, or after 10 s.
std::vector<uint64_t> snowflakeRetrying(const IdGenClient& idgen, uint32_t count,
                                        bool alsoDeadline = false);

}  // namespace zmesh::testing
