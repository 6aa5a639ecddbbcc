#include "supervisor.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <system_error>
#include <thread>

#include "zmesh/idl/common.capnp.h"
#include "zmesh/rpc/clock.h"
#include "zmesh/rpc/events.h"

namespace zmesh::ctl {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

std::string findBinary(const std::string& name) {
  std::error_code ec;
  auto self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    auto beside = self.parent_path() / name;
    if (fs::exists(beside)) return beside;
  }
  if (const char* path = std::getenv("PATH")) {
    std::stringstream dirs(path);
    std::string dir;
    while (std::getline(dirs, dir, ':'))
      if (!dir.empty() && ::access((fs::path(dir) / name).c_str(), X_OK) == 0)
        return fs::path(dir) / name;
  }
  throw std::runtime_error("cannot find the " + name + " binary next to zmeshctl or on PATH");
}

struct Child {
  ServiceSpec spec;
  pid_t pid = 0;
  int64_t startedMs = 0;
  Clock::time_point started;
  uint32_t restarts = 0;
  std::chrono::milliseconds backoff{0};
  std::optional<Clock::time_point> restartAt;
  bool announcedUp = false;
};

}  // namespace

SupervisorOptions supervisorOptionsFrom(const rpc::MeshConfig& config,
                                        const std::string& configPath) {
  auto s = config.section("mesh");
  s.rejectUnknown({"log_dir", "run_dir", "restart_backoff", "stop_grace", "health_timeout"});
  SupervisorOptions o;
  auto absolute = fs::absolute(configPath).lexically_normal();
  o.configPath = absolute;
  o.baseDir = absolute.parent_path();
  o.runDir = s.path("run_dir", "var");
  o.logDir = s.path("log_dir", "var/log");
  o.restartBackoff = s.duration("restart_backoff", o.restartBackoff);
  o.stopGrace = s.duration("stop_grace", o.stopGrace);
  o.healthTimeout = s.duration("health_timeout", o.healthTimeout);
  return o;
}

std::vector<ServiceSpec> servicesFrom(const Mesh& mesh, const std::string& configPath) {
  std::vector<ServiceSpec> out;
  for (auto& name : mesh.services()) {
    if (interfacesOf(name).empty())
      continue;  // not built yet (e.g. the gateway before its issue lands)
    ServiceSpec spec;
    spec.name = name;
    spec.argv = {serviceBinary(name), "--config", configPath};
    spec.adminEndpoint = mesh.adminEndpoint(name);
    out.push_back(std::move(spec));
  }
  return out;
}

std::string pidFile(const SupervisorOptions& o) { return o.runDir + "/zmesh.pid"; }
std::string stateFile(const SupervisorOptions& o) { return o.runDir + "/zmesh.state"; }
std::string lockFile(const SupervisorOptions& o) { return o.runDir + "/zmesh.lock"; }

std::optional<RunDirLock> RunDirLock::tryAcquire(const SupervisorOptions& o) {
  int fd = ::open(lockFile(o).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), lockFile(o));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int error = errno;
    ::close(fd);
    if (error == EWOULDBLOCK) return std::nullopt;
    throw std::system_error(error, std::generic_category(), "flock " + lockFile(o));
  }
  return RunDirLock(fd);
}

RunDirLock::~RunDirLock() {
  if (fd_ >= 0) ::close(fd_);
}

std::string serviceBinary(const std::string& service) { return findBinary("zmesh-" + service); }

bool runsService(pid_t pid, const std::string& binary, const std::string& configPath) {
  std::string proc = "/proc/" + std::to_string(pid);
  std::error_code ec;
  std::string exe = fs::read_symlink(proc + "/exe", ec);
  if (ec) return false;
  // A binary rebuilt while the service runs shows as "<path> (deleted)".
  const std::string deleted = " (deleted)";
  if (exe.size() > deleted.size() && exe.ends_with(deleted))
    exe.resize(exe.size() - deleted.size());
  auto expected = fs::weakly_canonical(binary, ec);
  if (ec || exe != expected.string()) return false;
  // The same binary may serve another mesh: it must be ours.
  std::ifstream in(proc + "/cmdline");
  std::vector<std::string> args;
  for (std::string arg; std::getline(in, arg, '\0');) args.push_back(arg);
  for (size_t i = 1; i + 1 < args.size(); ++i)
    if (args[i] == "--config" && fs::path(args[i + 1]).lexically_normal() == configPath)
      return true;
  return false;
}

std::vector<ServiceState> readState(const SupervisorOptions& o) {
  std::vector<ServiceState> out;
  std::ifstream in(stateFile(o));
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    ServiceState s;
    if (fields >> s.name >> s.pid >> s.startedMs >> s.restarts >> s.adminEndpoint) out.push_back(s);
  }
  return out;
}

bool processRunning(pid_t pid) {
  if (::kill(pid, 0) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string content((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  auto paren = content.rfind(')');  // the command name may contain spaces and ')'
  return paren == std::string::npos || paren + 2 >= content.size() || content[paren + 2] != 'Z';
}

std::optional<pid_t> runningSupervisor(const SupervisorOptions& o) {
  std::ifstream in(pidFile(o));
  pid_t pid = 0;
  if (!(in >> pid) || pid <= 0) return std::nullopt;
  if (!processRunning(pid)) return std::nullopt;
  // A recycled pid would not be ours: check it runs zmeshctl.
  std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
  std::string name;
  comm >> name;
  if (name.rfind("zmeshctl", 0) != 0) return std::nullopt;
  return pid;
}

namespace {

class Supervisor {
 public:
  Supervisor(Mesh& mesh, std::vector<ServiceSpec> services, SupervisorOptions options)
      : mesh_(mesh), options_(std::move(options)) {
    for (auto& s : services) {
      Child c;
      c.spec = std::move(s);
      children_.push_back(std::move(c));
    }
    if (mesh_.config().has("broker"))
      publisher_ = std::make_unique<rpc::Publisher>(
          context_, mesh_.config().section("broker").string("xsub", "tcp://127.0.0.1:7101"),
          "zmeshctl@" + std::to_string(::getpid()));
  }

  int run() {
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, nullptr);
    int sfd = ::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    fs::create_directories(options_.logDir);
    for (auto& c : children_) start(c);
    writeState();
    while (true) {
      zmq_pollitem_t item{nullptr, sfd, ZMQ_POLLIN, 0};
      zmq_poll(&item, 1, 100);
      bool stopping = false;
      signalfd_siginfo info;
      while (::read(sfd, &info, sizeof(info)) == sizeof(info))
        if (info.ssi_signo != SIGCHLD) stopping = true;
      // A child that exits from here on is stopped by us, not crashed: stop()
      // reaps it, so it is neither announced as a crash nor restarted.
      if (stopping) break;
      reap();
      auto now = Clock::now();
      for (auto& c : children_) {
        if (c.pid == 0 && c.restartAt && now >= *c.restartAt) start(c);
        if (c.pid != 0 && !c.announcedUp) checkUp(c);
      }
    }
    spdlog::info("supervisor: stopping {} services", children_.size());
    for (auto it = children_.rbegin(); it != children_.rend(); ++it) stop(*it);
    writeState();
    ::close(sfd);
    return 0;
  }

 private:
  void start(Child& c) {
    std::string log = options_.logDir + "/" + c.spec.name + ".log";
    // Built before fork: the child of a threaded process may only make
    // async-signal-safe calls until exec (no malloc).
    std::vector<char*> args;
    for (auto& a : c.spec.argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    // The environment, and how often this service was restarted (its
    // process.restarts gauge): made before fork, as the child may not allocate.
    std::string restarts = "ZMESH_RESTARTS=" + std::to_string(c.restarts);
    std::vector<char*> env;
    for (char** e = environ; *e != nullptr; ++e)
      if (std::strncmp(*e, "ZMESH_RESTARTS=", 15) != 0) env.push_back(*e);
    env.push_back(restarts.data());
    env.push_back(nullptr);
    const char* dir = options_.baseDir.c_str();
    pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) {
      spdlog::error("supervisor: fork failed for {}: {}", c.spec.name, std::strerror(errno));
      scheduleRestart(c);
      return;
    }
    if (pid == 0) {
      // Its own process group: a Ctrl-C on the terminal reaches the supervisor
      // only, which then stops the services in order.
      ::setpgid(0, 0);
      // Dies with the supervisor: SIGTERM, so it stops as on `zmeshctl down`.
      // If the supervisor died before the prctl, the parent is already another.
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(127);
      sigset_t none;
      sigemptyset(&none);
      sigprocmask(SIG_SETMASK, &none, nullptr);
      int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (null >= 0) ::dup2(null, 0);  // a background group reading the tty would stop
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      // Relative paths in the mesh file (a data_dir) resolve against its directory.
      if (::chdir(dir) != 0) {
        static const char what[] = "zmeshctl: cannot enter the mesh file's directory\n";
        (void)!::write(2, what, sizeof(what) - 1);
        ::_exit(126);
      }
      ::execve(args[0], args.data(), env.data());
      static const char what[] = "zmeshctl: cannot execute the service's binary\n";
      (void)!::write(2, what, sizeof(what) - 1);
      ::_exit(127);
    }
    ::setpgid(pid, pid);  // also here, so no signal to the group can precede it
    c.pid = pid;
    c.started = Clock::now();
    c.startedMs = rpc::unixMillis();
    c.restartAt.reset();
    c.announcedUp = false;
    spdlog::info("supervisor: started {} (pid {}), log {}", c.spec.name, pid, log);
    writeState();
  }

  void checkUp(Child& c) {
    try {
      CallSettings quick;
      quick.timeout = std::chrono::milliseconds(200);
      if (!mesh_.admin(c.spec.name, quick).health().ok) return;
    } catch (const RpcError&) {
      return;
    }
    c.announcedUp = true;
    announce("mesh.service_up", c, "healthy");
  }

  void scheduleRestart(Child& c) {
    // Back off while it keeps dying; a run of 30 s counts as healthy again.
    if (Clock::now() - c.started > std::chrono::seconds(30))
      c.backoff = std::chrono::milliseconds(0);
    c.backoff = c.backoff.count() == 0 ? options_.restartBackoff
                                       : std::min(c.backoff * 2, options_.maxBackoff);
    c.restartAt = Clock::now() + c.backoff;
    ++c.restarts;
  }

  void reap() {
    while (true) {
      int status;
      pid_t pid = ::waitpid(-1, &status, WNOHANG);
      if (pid <= 0) return;
      for (auto& c : children_) {
        if (c.pid != pid) continue;
        std::string how = WIFSIGNALED(status)
                              ? "killed by signal " + std::to_string(WTERMSIG(status))
                              : "exited with status " + std::to_string(WEXITSTATUS(status));
        spdlog::warn("supervisor: {} {}; restarting", c.spec.name, how);
        announce("mesh.service_down", c, how);
        c.pid = 0;
        scheduleRestart(c);
        writeState();
      }
    }
  }

  void stop(Child& c) {
    if (c.pid == 0) return;
    ::kill(c.pid, SIGTERM);
    auto deadline = Clock::now() + options_.stopGrace;
    int status = 0;
    while (Clock::now() < deadline) {
      if (::waitpid(c.pid, &status, WNOHANG) == c.pid) {
        spdlog::info("supervisor: {} stopped", c.spec.name);
        announce("mesh.service_down", c, "stopped");
        c.pid = 0;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    spdlog::warn("supervisor: {} did not stop within {} ms: SIGKILL", c.spec.name,
                 options_.stopGrace.count());
    ::kill(c.pid, SIGKILL);
    ::waitpid(c.pid, &status, 0);
    announce("mesh.service_down", c, "killed after the stop grace period");
    c.pid = 0;
  }

  void announce(const char* topic, const Child& c, const std::string& reason) {
    if (!publisher_) return;
    capnp::MallocMessageBuilder message;
    auto s = message.initRoot<idl::ServiceState>();
    s.setService(c.spec.name);
    s.setEndpoint(c.spec.adminEndpoint);
    s.setPid(c.pid);
    s.setRestarts(c.restarts);
    s.setReason(reason);
    publisher_->publish<idl::ServiceState>(topic, s.asReader());
  }

  void writeState() {
    std::string tmp = stateFile(options_) + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      for (auto& c : children_)
        out << c.spec.name << ' ' << c.pid << ' ' << c.startedMs << ' ' << c.restarts << ' '
            << c.spec.adminEndpoint << '\n';
    }
    fs::rename(tmp, stateFile(options_));
  }

  Mesh& mesh_;
  SupervisorOptions options_;
  std::vector<Child> children_;
  zmq::context_t context_;
  std::unique_ptr<rpc::Publisher> publisher_;
};

}  // namespace

int superviseForever(Mesh& mesh, std::vector<ServiceSpec> services,
                     const SupervisorOptions& options) {
  Supervisor supervisor(mesh, std::move(services), options);
  return supervisor.run();
}

}  // namespace zmesh::ctl
