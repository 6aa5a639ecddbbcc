// The local mesh supervisor behind `zmeshctl up`: starts every configured
// service as a child process, restarts one that dies (with back-off), logs each
// service to its own file, announces mesh.service_up / mesh.service_down, and on
// SIGTERM/SIGINT/SIGHUP stops the children in reverse order (SIGTERM, then
// SIGKILL). Each child runs in its own process group (a Ctrl-C on the terminal
// reaches the supervisor only) and gets SIGTERM from the kernel if the
// supervisor dies, so a `kill -9` of it leaves no service behind.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "zmesh/client.h"

namespace zmesh::ctl {

struct ServiceSpec {
  std::string name;
  std::vector<std::string> argv;  // argv[0] is the binary's path
  std::string adminEndpoint;      // where Admin.health answers
};

struct SupervisorOptions {
  std::string configPath;  // absolute
  std::string baseDir;     // the mesh file's directory: services run there
  std::string runDir;      // pid, state and lock files
  std::string logDir;
  std::chrono::milliseconds restartBackoff{200};
  std::chrono::milliseconds maxBackoff{10000};
  std::chrono::milliseconds stopGrace{5000};
  std::chrono::milliseconds healthTimeout{15000};
};

// One line of the state file, as `zmeshctl status` reads it.
struct ServiceState {
  std::string name;
  pid_t pid = 0;  // 0 while not running
  int64_t startedMs = 0;
  uint32_t restarts = 0;
  std::string adminEndpoint;
};

// Relative paths in the mesh file (run_dir, log_dir) resolve against the
// file's own directory, not the current one, so every command finds the same
// mesh from anywhere.
SupervisorOptions supervisorOptionsFrom(const rpc::MeshConfig& config,
                                        const std::string& configPath);
// The services the mesh file configures, in start order, with their binaries
// resolved next to zmeshctl (or on PATH). Throws for a binary that is missing.
std::vector<ServiceSpec> servicesFrom(const Mesh& mesh, const std::string& configPath);

std::string pidFile(const SupervisorOptions& o);
std::string stateFile(const SupervisorOptions& o);
std::string lockFile(const SupervisorOptions& o);

// flock on <run_dir>/zmesh.lock: held by whoever runs (or is starting) the
// supervisor for that run directory, released by the kernel when it dies.
// Move-only; the descriptor is close-on-exec, so services never hold it.
class RunDirLock {
 public:
  // Nullopt when another process holds it; throws std::system_error otherwise.
  static std::optional<RunDirLock> tryAcquire(const SupervisorOptions& o);
  RunDirLock(RunDirLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  RunDirLock& operator=(RunDirLock&&) = delete;
  ~RunDirLock();

 private:
  explicit RunDirLock(int fd) : fd_(fd) {}
  int fd_;
};

std::vector<ServiceState> readState(const SupervisorOptions& o);
// True while `pid` runs. An exited process whose parent never reaps it (the
// daemonized supervisor's parent is PID 1, which in a container often does not
// reap) stays a zombie that kill(pid, 0) still finds; this does not count it.
bool processRunning(pid_t pid);
// The supervisor's pid if one is running for this run directory.
std::optional<pid_t> runningSupervisor(const SupervisorOptions& o);
// True if `pid` runs `binary` (also when that file has been replaced since)
// with `--config configPath`: a pid from the state file may have been recycled.
bool runsService(pid_t pid, const std::string& binary, const std::string& configPath);
// The binary `zmeshctl up` starts for `service`: zmesh-<service> next to
// zmeshctl, else on PATH. Throws if there is none.
std::string serviceBinary(const std::string& service);

// Runs the supervisor in this process until SIGTERM/SIGINT; returns the exit code.
int superviseForever(Mesh& mesh, std::vector<ServiceSpec> services,
                     const SupervisorOptions& options);

}  // namespace zmesh::ctl
