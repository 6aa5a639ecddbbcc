// The local mesh supervisor behind `zmeshctl up`: starts every configured
// service as a child process, restarts one that dies (with back-off), logs each
// service to its own file, announces mesh.service_up / mesh.service_down, and on
// SIGTERM stops the children in reverse order (SIGTERM, then SIGKILL).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
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
  std::string runDir;      // pid and state files
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

SupervisorOptions supervisorOptionsFrom(const rpc::MeshConfig& config,
                                        const std::string& configPath);
// The services the mesh file configures, in start order, with their binaries
// resolved next to zmeshctl (or on PATH). Throws for a binary that is missing.
std::vector<ServiceSpec> servicesFrom(const Mesh& mesh, const std::string& configPath);

std::string pidFile(const SupervisorOptions& o);
std::string stateFile(const SupervisorOptions& o);
std::vector<ServiceState> readState(const SupervisorOptions& o);
// True while `pid` runs. An exited process whose parent never reaps it (the
// daemonized supervisor's parent is PID 1, which in a container often does not
// reap) stays a zombie that kill(pid, 0) still finds; this does not count it.
bool processRunning(pid_t pid);
// The supervisor's pid if one is running for this run directory.
std::optional<pid_t> runningSupervisor(const SupervisorOptions& o);

// Runs the supervisor in this process until SIGTERM/SIGINT; returns the exit code.
int superviseForever(Mesh& mesh, std::vector<ServiceSpec> services,
                     const SupervisorOptions& options);

}  // namespace zmesh::ctl
