// A throwaway PostgreSQL server for tests: a data dir in a temp dir (a copy
// of one initdb made once per user in $TMPDIR), postgres on 127.0.0.1 and a
// free port (socket in the temp dir, fsync off), a database created, stopped
// by pid and removed when destroyed. Runs as `nobody` when the test runs as
// root (postgres refuses root). The binaries come from
// /usr/lib/postgresql/<version>/bin (Debian keeps them off PATH) or
// $ZMESH_POSTGRES_BIN; when they are missing the constructor throws, failing
// the test: deploy/setup.sh installs them.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "process.h"

namespace zmesh::testing {

class PostgresCluster {
 public:
  PostgresCluster();  // throws std::runtime_error with the server's log on failure
  ~PostgresCluster();
  PostgresCluster(const PostgresCluster&) = delete;
  PostgresCluster& operator=(const PostgresCluster&) = delete;

  // libpq conninfo of the test database (user zmesh, no password).
  std::string conninfo() const;
  int port() const { return port_; }
  // A fast shutdown (SIGINT, as pg_ctl stop -m fast): sessions are ended.
  void stop();
  // Starts the stopped server again, same port and data; waits until it accepts connections.
  void start();
  // Copy (or initdb) + first start + CREATE DATABASE.
  std::chrono::milliseconds setUpTime() const { return setUpTime_; }
  std::string log() const;

 private:
  std::vector<std::string> asServerUser(std::vector<std::string> argv) const;
  void chownToServer(const std::string& path) const;
  void initdb(const std::string& dataDir, const std::string& logFile) const;
  std::string templateDataDir() const;
  void waitAccepting(std::chrono::milliseconds timeout);

  std::string binDir_;
  TempDir dir_;
  std::string dataDir_;
  std::string logFile_;
  int port_ = 0;
  bool asNobody_ = false;
  uid_t serverUid_ = 0;
  gid_t serverGid_ = 0;
  std::unique_ptr<Process> server_;
  std::chrono::milliseconds setUpTime_{0};
};

}  // namespace zmesh::testing
