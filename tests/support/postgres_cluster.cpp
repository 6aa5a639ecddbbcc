#include "postgres_cluster.h"

#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <thread>

namespace zmesh::testing {

namespace {

namespace fs = std::filesystem;

// The newest /usr/lib/postgresql/<version>/bin with initdb and postgres, or "".
std::string findBinDir() {
  if (const char* dir = std::getenv("ZMESH_POSTGRES_BIN")) return dir;  // another installation
  std::error_code ec;
  std::string best;
  int bestVersion = -1;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    std::string bin = entry.path().string() + "/bin";
    if (!fs::exists(bin + "/initdb", ec) || !fs::exists(bin + "/postgres", ec)) continue;
    int version = std::atoi(entry.path().filename().c_str());
    if (version > bestVersion) {
      bestVersion = version;
      best = bin;
    }
  }
  return best;
}

const char* kDatabase = "zmesh_test";

}  // namespace

PostgresCluster::PostgresCluster() {
  auto started = std::chrono::steady_clock::now();
  binDir_ = findBinDir();
  std::error_code ec;
  if (binDir_.empty() || !fs::exists(binDir_ + "/initdb", ec) ||
      !fs::exists(binDir_ + "/postgres", ec))
    throw std::runtime_error(
        "PostgreSQL server binaries (initdb, postgres) not found in " +
        (binDir_.empty() ? std::string("/usr/lib/postgresql/*/bin") : binDir_) +
        ": run deploy/setup.sh, which installs the postgresql package");
  // postgres refuses to run as root; CI runs the tests as root.
  asNobody_ = ::geteuid() == 0;
  if (asNobody_) {
    const passwd* nobody = ::getpwnam("nobody");
    if (!nobody) throw std::runtime_error("running as root and there is no user 'nobody'");
    const group* nogroup = ::getgrnam("nogroup");
    serverUid_ = nobody->pw_uid;
    serverGid_ = nogroup ? nogroup->gr_gid : nobody->pw_gid;
  }
  chownToServer(dir_.path());
  dataDir_ = dir_.path() + "/data";
  logFile_ = dir_.path() + "/postgres.log";

  // cp -a keeps the owner (nobody) and the data directory's mode 0700.
  Process copy({"/bin/cp", "-a", templateDataDir(), dataDir_}, logFile_);
  int status = copy.wait(60s);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error("cannot copy the template cluster:\n" + log());

  port_ = freePort();
  start();

  std::string admin =
      "host=127.0.0.1 port=" + std::to_string(port_) + " user=zmesh dbname=postgres";
  PGconn* conn = PQconnectdb(admin.c_str());
  PGresult* created = PQexec(conn, (std::string("CREATE DATABASE ") + kDatabase).c_str());
  bool ok = PQresultStatus(created) == PGRES_COMMAND_OK;
  std::string error = PQerrorMessage(conn);
  PQclear(created);
  PQfinish(conn);
  if (!ok) throw std::runtime_error("CREATE DATABASE failed: " + error);
  setUpTime_ = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - started);
}

PostgresCluster::~PostgresCluster() { stop(); }

std::string PostgresCluster::conninfo() const {
  return "host=127.0.0.1 port=" + std::to_string(port_) + " user=zmesh dbname=" + kDatabase;
}

std::string PostgresCluster::log() const { return readText(logFile_); }

void PostgresCluster::chownToServer(const std::string& path) const {
  if (asNobody_ && ::chown(path.c_str(), serverUid_, serverGid_) != 0)
    throw std::runtime_error("cannot chown " + path + " to nobody");
}

void PostgresCluster::initdb(const std::string& dataDir, const std::string& logFile) const {
  Process initdb(asServerUser({binDir_ + "/initdb", "-D", dataDir, "-A", "trust", "-U", "zmesh",
                               "--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C"}),
                 logFile);
  int status = initdb.wait(60s);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error("initdb failed (status " + std::to_string(status) + "):\n" +
                             readText(logFile));
}

std::string PostgresCluster::templateDataDir() const {
  // initdb takes 0.6 to 2.5 s on a busy CI machine, most of a test's set-up;
  // it runs once per user and server binaries, and every cluster copies its
  // result (~0.1 s). Built aside and renamed into place, under a flock, so a
  // test running in parallel never copies half a template. Removing it is
  // always safe: the next test builds it again.
  const char* tmp = std::getenv("TMPDIR");
  std::string base = std::string(tmp && *tmp ? tmp : "/tmp") + "/zmesh-postgres-template-" +
                     std::to_string(std::hash<std::string>{}(binDir_) % 1000000007) + "-u" +
                     std::to_string(::geteuid());
  int lock = ::open((base + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock < 0 || ::flock(lock, LOCK_EX) != 0) {
    if (lock >= 0) ::close(lock);
    throw std::runtime_error("cannot lock " + base + ".lock");
  }
  struct Unlock {
    int fd;
    ~Unlock() { ::close(fd); }
  } unlock{lock};
  std::error_code ec;
  if (fs::exists(base + "/data/PG_VERSION", ec)) return base + "/data";
  std::string building = base + ".building";
  fs::remove_all(building, ec);
  fs::remove_all(base, ec);
  fs::create_directory(building);
  chownToServer(building);
  initdb(building + "/data", dir_.path() + "/initdb.log");
  fs::rename(building, base);
  return base + "/data";
}

std::vector<std::string> PostgresCluster::asServerUser(std::vector<std::string> argv) const {
  if (!asNobody_) return argv;
  // Changing the uid clears the parent-death signal Process sets: setpriv
  // sets it again, so a test that dies leaves no server behind.
  std::vector<std::string> wrapped = {"/usr/bin/setpriv", "--reuid=nobody",      "--regid=nogroup",
                                      "--clear-groups",   "--pdeathsig=SIGKILL", "--"};
  wrapped.insert(wrapped.end(), argv.begin(), argv.end());
  return wrapped;
}

void PostgresCluster::start() {
  if (server_) return;
  server_ = std::make_unique<Process>(
      asServerUser({binDir_ + "/postgres", "-D", dataDir_, "-p", std::to_string(port_), "-c",
                    "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=" + dir_.path(),
                    "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off",
                    "-c", "max_connections=20", "-c", "shared_buffers=16MB"}),
      logFile_);
  waitAccepting(30s);
}

void PostgresCluster::waitAccepting(std::chrono::milliseconds timeout) {
  std::string admin = "host=127.0.0.1 port=" + std::to_string(port_) +
                      " user=zmesh dbname=postgres connect_timeout=2";
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (PQping(admin.c_str()) != PQPING_OK) {
    if (!server_->running())
      throw std::runtime_error("postgres exited while starting; its log:\n" + log());
    if (std::chrono::steady_clock::now() > deadline)
      throw std::runtime_error(
          "postgres did not accept connections on 127.0.0.1:" + std::to_string(port_) + " within " +
          std::to_string(timeout.count()) + " ms; its log:\n" + log());
    std::this_thread::sleep_for(10ms);
  }
}

void PostgresCluster::stop() {
  if (!server_) return;
  // SIGINT is postgres's fast shutdown; SIGTERM (Process::stop) would wait for sessions.
  ::kill(server_->pid(), SIGINT);
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (server_->running() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(5ms);
  if (server_->running()) server_->kill9();
  server_.reset();
}

}  // namespace zmesh::testing
