#include "process.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "zmesh/client.h"

namespace zmesh::testing {

std::string readText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

uint64_t testSeed() {
  uint64_t seed = std::random_device{}();
  if (const char* s = std::getenv("ZMESH_TEST_SEED")) seed = std::stoull(s);
  return seed;
}

namespace {

// The ports a test may take: below the kernel's ephemeral range, so no
// outgoing connection of a test running in parallel can take a port between
// freePort() and the bind of the process given it (seen: a gateway's "Address
// already in use"). Read from the kernel, since a CI machine may set it apart.
std::pair<int, int> testPortRange() {
  int low = 32768, high = 60999;
  std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> low >> high;
  if (low > 11000) return {10000, low - 1};
  if (high < 54535) return {high + 1, 65535};
  return {20000, 31999};  // no room outside it: rely on the claims alone
}

// Tests running in parallel (ctest -j) pick ports independently; a claim file
// per port, created exclusively and honoured for a minute, keeps two of them
// from handing out the same port before either process has bound it.
bool claimPort(int port) {
  static const std::string dir = [] {
    const char* base = std::getenv("TMPDIR");
    std::string d = std::string(base && *base ? base : "/tmp") + "/zmesh-test-ports";
    std::error_code ec;
    std::filesystem::create_directories(d, ec);
    return d;
  }();
  std::string path = dir + "/" + std::to_string(port);
  for (int attempt = 0; attempt < 2; ++attempt) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd >= 0) {
      ::close(fd);
      return true;
    }
    if (errno != EEXIST) return true;  // no claims possible here: the bind check alone
    std::error_code ec;
    auto age =
        std::filesystem::file_time_type::clock::now() - std::filesystem::last_write_time(path, ec);
    if (ec || age < std::chrono::minutes(1)) return false;
    std::filesystem::remove(path, ec);  // stale: a test long gone; claim it afresh
  }
  return false;
}

}  // namespace

int freePort() {
  static thread_local std::mt19937 random(std::random_device{}() ^ ::getpid());
  auto [low, high] = testPortRange();
  for (int attempt = 0; attempt < 1000; ++attempt) {
    int port = low + static_cast<int>(random() % static_cast<unsigned>(high - low + 1));
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    bool free = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    ::close(fd);
    if (free && claimPort(port)) return port;
  }
  throw std::runtime_error("no free port in " + std::to_string(low) + "-" + std::to_string(high));
}

std::string tcpEndpoint(int port) { return "tcp://127.0.0.1:" + std::to_string(port); }

std::string bin(const std::string& name) { return std::string(ZMESH_BIN_DIR) + "/" + name; }

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base && *base ? base : "/tmp") + "/zmesh-test-XXXXXX";
  if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

Process::Process(std::vector<std::string> argv, const std::string& logFile) : log_(logFile) {
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    // If the test binary dies without running destructors (a crash, a ctest
    // timeout, a closed pipe), the child must not live on as an orphan.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    // The child must not inherit the test's blocked signal mask.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    if (!logFile.empty()) {
      int fd = ::open(logFile.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
        ::close(fd);
      }
    }
    ::execv(args[0], args.data());
    ::_exit(127);
  }
}

Process::Process(Process&& other) noexcept
    : pid_(other.pid_), status_(other.status_), log_(std::move(other.log_)) {
  other.pid_ = -1;
}

Process::~Process() {
  if (pid_ > 0) stop(3s);
}

bool Process::running() {
  if (pid_ <= 0) return false;
  int status;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    status_ = status;
    pid_ = -1;
    return false;
  }
  return true;
}

void Process::kill9() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, &status_, 0);
  pid_ = -1;
}

int Process::wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!running()) return status_;
    std::this_thread::sleep_for(5ms);
  }
  return stop();
}

int Process::stop(std::chrono::milliseconds grace) {
  if (pid_ <= 0) return status_;
  ::kill(pid_, SIGTERM);
  auto deadline = std::chrono::steady_clock::now() + grace;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!running()) return status_;
    std::this_thread::sleep_for(5ms);
  }
  kill9();
  return status_;
}

namespace {

// Polls Admin.health until ok, `timeout` passes, or `alive` says the process is gone.
template <class Alive>
bool pollHealthy(const std::string& endpoint, std::chrono::milliseconds timeout, Alive alive) {
  zmq::context_t context;
  rpc::ClientThread thread(context);
  CallSettings settings;
  settings.timeout = 200ms;
  AdminClient admin(thread.channel(endpoint), settings);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline && alive()) {
    try {
      if (admin.health().ok) return true;
    } catch (const RpcError&) {
      std::this_thread::sleep_for(20ms);
    }
  }
  return false;
}

}  // namespace

bool waitHealthy(const std::string& endpoint, std::chrono::milliseconds timeout) {
  return pollHealthy(endpoint, timeout, [] { return true; });
}

void requireHealthy(Process& process, const std::string& endpoint,
                    std::chrono::milliseconds timeout) {
  auto started = std::chrono::steady_clock::now();
  if (pollHealthy(endpoint, timeout, [&] { return process.running(); })) return;
  auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - started);
  FAIL("no healthy answer on " << endpoint << " after " << waited.count() << " ms; the process "
                               << (process.running() ? "still runs" : "has exited")
                               << "; its log:\n"
                               << process.log());
}

void requireHealthy(const std::string& endpoint, const std::string& logFile,
                    std::chrono::milliseconds timeout) {
  if (!waitHealthy(endpoint, timeout))
    FAIL("no healthy answer on " << endpoint << " after " << timeout.count() << " ms; log:\n"
                                 << readText(logFile));
}

std::vector<uint64_t> snowflakeRetrying(const IdGenClient& idgen, uint32_t count,
                                        bool alsoDeadline) {
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (true) {
    try {
      return idgen.snowflake(count);
    } catch (const RpcError& e) {
      INFO(e.what());
      REQUIRE((e.code() == StatusCode::UNAVAILABLE ||
               (alsoDeadline && e.code() == StatusCode::DEADLINE_EXCEEDED)));
      REQUIRE(std::chrono::steady_clock::now() < deadline);
      std::this_thread::sleep_for(10ms);
    }
  }
}

Paused::Paused(pid_t pid) : pid_(pid) { REQUIRE(::kill(pid_, SIGSTOP) == 0); }
void Paused::resume() { ::kill(pid_, SIGCONT); }

}  // namespace zmesh::testing
