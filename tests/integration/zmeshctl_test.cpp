// zmeshctl end to end on a temporary mesh file: up (daemonized supervisor),
// call, status, a killed service restarted by the supervisor, events, bad
// arguments, down; then what the supervisor must never leave behind: services
// after a kill -9 of it, a second mesh from a concurrent `up`, services after a
// Ctrl-C, a `down` that finds nothing from another directory. Every process it
// leaves behind is stopped by pid.
#include <capnp/compat/json.h>
#include <capnp/message.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "http_client.h"
#include "process.h"
#include "zmesh/client.h"

using namespace zmesh;
using namespace zmesh::testing;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;
using Clock = std::chrono::steady_clock;

namespace {

std::vector<std::string> words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// Running, and not a zombie: an exited process whose parent has not reaped it
// (PID 1 of a container often never does) still answers kill(pid, 0).
bool alive(pid_t pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string content((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  auto paren = content.rfind(')');
  return paren == std::string::npos || paren + 2 >= content.size() || content[paren + 2] != 'Z';
}

// Running one of this build's binaries: a remembered pid that has been reaped
// may have been reused by now (pid_max can be as low as 32768).
bool aliveOurs(pid_t pid) {
  if (!alive(pid)) return false;
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/" + std::to_string(pid) + "/exe", ec);
  return !ec && exe.parent_path() == std::filesystem::path(bin("zmeshctl")).parent_path();
}

struct Result {
  int exitCode = -1;   // -1: killed or timed out
  std::string output;  // stdout and stderr together
};

struct ServiceState {
  pid_t pid = 0;
  int64_t startedMs = 0;
  uint32_t restarts = 0;
  std::string endpoint;
};

// How the mesh file names its directories: absolute, or relative to the file.
enum class Paths { absolute, relative };

class TestMesh {
 public:
  TempDir dir;
  std::string path = dir.path() + "/mesh.toml";
  std::string runDir = dir.path() + "/run";
  std::string logDir = dir.path() + "/log";
  std::string dataDir = dir.path() + "/idgen";
  std::string xsub = tcpEndpoint(freePort());
  std::string xpub = tcpEndpoint(freePort());
  std::string brokerAdmin = tcpEndpoint(freePort());
  std::string idgen = tcpEndpoint(freePort());
  std::string gatewayAdmin = tcpEndpoint(freePort());
  int httpPort = freePort();

  explicit TestMesh(Paths paths = Paths::absolute) {
    auto named = [&](const std::string& absolute, const char* relative) {
      return paths == Paths::absolute ? absolute : std::string(relative);
    };
    std::ofstream out(path);
    out << "[mesh]\n"
        << "run_dir = \"" << named(runDir, "run") << "\"\n"
        << "log_dir = \"" << named(logDir, "log") << "\"\n"
        << "restart_backoff = \"100ms\"\n"
        << "stop_grace = \"3s\"\n"
        << "health_timeout = \"20s\"\n"
        << "\n[broker]\n"
        << "xsub = \"" << xsub << "\"\n"
        << "xpub = \"" << xpub << "\"\n"
        << "admin = \"" << brokerAdmin << "\"\n"
        << "\n[idgen]\n"
        << "endpoint = \"" << idgen << "\"\n"
        << "data_dir = \"" << named(dataDir, "idgen") << "\"\n"
        << "block_size = 100\n"
        << "worker_id = 5\n"
        << "\n[gateway]\n"
        << "listen = \"127.0.0.1:" << httpPort << "\"\n"
        << "endpoint = \"" << gatewayAdmin << "\"\n";
  }

  // Runs `zmeshctl -c <mesh> args...` to completion.
  Result ctl(std::vector<std::string> args, std::chrono::milliseconds timeout = 30s) {
    std::vector<std::string> argv{"-c", path};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv, "", timeout);
  }

  // Runs `zmeshctl args...` exactly so (no -c added), in `cwd` if given.
  Result run(std::vector<std::string> args, const std::string& cwd = "",
             std::chrono::milliseconds timeout = 30s) {
    return finish(start(std::move(args), cwd), timeout);
  }

  // Starts `zmeshctl args...` (in `cwd` if given) without waiting for it.
  std::pair<Process, std::string> start(std::vector<std::string> args,
                                        const std::string& cwd = "") {
    std::string out = dir.path() + "/zmeshctl-" + std::to_string(++runs_) + ".out";
    std::vector<std::string> argv;
    if (!cwd.empty()) argv = {"/usr/bin/env", "-C", cwd};
    argv.push_back(bin("zmeshctl"));
    argv.insert(argv.end(), args.begin(), args.end());
    return {Process(argv, out), out};
  }

  Result finish(std::pair<Process, std::string> started, std::chrono::milliseconds timeout = 30s) {
    auto& [p, out] = started;
    Result r;
    auto deadline = Clock::now() + timeout;
    // The supervisor is not reaped meanwhile: `down` must cope with a parent
    // that does not reap it (it is a zombie, not running, once it exits).
    while (p.running() && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
    int status = p.stop(1s);
    if (WIFEXITED(status)) r.exitCode = WEXITSTATUS(status);
    r.output = readText(out);
    return r;
  }

  std::map<std::string, ServiceState> state() const {
    std::map<std::string, ServiceState> out;
    std::istringstream in(readText(runDir + "/zmesh.state"));
    for (std::string line; std::getline(in, line);) {
      std::istringstream fields(line);
      std::string name;
      ServiceState s;
      if (fields >> name >> s.pid >> s.startedMs >> s.restarts >> s.endpoint) out[name] = s;
    }
    return out;
  }

  std::optional<pid_t> supervisorPid() const {
    std::ifstream in(runDir + "/zmesh.pid");
    pid_t pid = 0;
    if (in >> pid && pid > 0) return pid;
    return std::nullopt;
  }

  // The test process adopts the daemonized supervisor (PR_SET_CHILD_SUBREAPER)
  // so that it can reap it once it exits instead of leaving a zombie.
  void reapSupervisor() {
    if (supervisor_ <= 0) return;
    pid_t r = ::waitpid(supervisor_, nullptr, WNOHANG);
    if (r == supervisor_ || (r < 0 && errno == ECHILD)) supervisor_ = -1;
  }
  void adopt(pid_t supervisor) { supervisor_ = supervisor; }
  bool reaped() const { return supervisor_ <= 0; }

  // Remembers service pids so that the last-resort cleanup can find them.
  void remember() {
    for (auto& [name, s] : state())
      if (s.pid > 0) servicePids_.push_back(s.pid);
  }
  void remember(pid_t pid) { servicePids_.push_back(pid); }

  // Always `down`; then, as a last resort, SIGKILL whatever is still alive.
  ~TestMesh() {
    try {
      remember();
      if (auto pid = supervisorPid()) adopt(*pid);
      ctl({"down"});
    } catch (const std::exception&) {
      // Fall through to the signals below.
    }
    if (auto pid = supervisorPid(); pid && aliveOurs(*pid)) ::kill(*pid, SIGKILL);
    if (supervisor_ > 0 && aliveOurs(supervisor_)) ::kill(supervisor_, SIGKILL);
    for (pid_t pid : servicePids_)
      if (aliveOurs(pid)) ::kill(pid, SIGKILL);
    auto deadline = Clock::now() + 5s;
    while (supervisor_ > 0 && Clock::now() < deadline) {
      reapSupervisor();
      std::this_thread::sleep_for(10ms);
    }
    // Services orphaned by a killed supervisor were adopted too.
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
  }

 private:
  int runs_ = 0;
  pid_t supervisor_ = -1;
  std::vector<pid_t> servicePids_;
};

// True once none of `pids` runs, within `timeout`. Reaps what the test adopted
// meanwhile (orphans of a killed supervisor), so none lingers as a zombie.
bool allGone(const std::vector<pid_t>& pids, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (true) {
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    bool any = false;
    for (pid_t pid : pids) any = any || alive(pid);
    if (!any) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
}

// `up` in the background; the supervisor adopted by the test. Fails the test
// with the output and the supervisor's log unless the mesh came up.
pid_t upAndAdopt(TestMesh& mesh, std::vector<std::string> argv = {}, const std::string& cwd = "") {
  if (argv.empty()) argv = {"-c", mesh.path, "up"};
  auto up = mesh.run(argv, cwd);
  INFO("up:\n" << up.output << "\nsupervisor log:\n" << readText(mesh.logDir + "/zmeshctl.log"));
  REQUIRE(up.exitCode == 0);
  REQUIRE_THAT(up.output, Contains("mesh up"));
  auto supervisor = mesh.supervisorPid();
  REQUIRE(supervisor);
  mesh.adopt(*supervisor);
  mesh.remember();
  return *supervisor;
}

std::vector<pid_t> servicePids(const TestMesh& mesh) {
  std::vector<pid_t> out;
  for (auto& [name, s] : mesh.state())
    if (s.pid > 0) out.push_back(s.pid);
  return out;
}

// The status line of `service`: SERVICE ENDPOINT PID UPTIME RESTARTS HEALTH...
std::vector<std::string> statusLine(const std::string& output, const std::string& service) {
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);) {
    auto w = words(line);
    if (!w.empty() && w[0] == service) return w;
  }
  return {};
}

}  // namespace

TEST_CASE("zmeshctl up, call, status, restart of a killed service, events, down", "[zmeshctl]") {
  // Orphans (the daemonized supervisor) become our children, so we can reap them.
  REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
  TestMesh mesh;

  auto up = mesh.ctl({"up"});
  INFO("up:\n" << up.output << "\nsupervisor log:\n" << readText(mesh.logDir + "/zmeshctl.log"));
  REQUIRE(up.exitCode == 0);
  CHECK_THAT(up.output, Contains("mesh up"));
  auto supervisor = mesh.supervisorPid();
  REQUIRE(supervisor);
  mesh.adopt(*supervisor);
  CHECK(alive(*supervisor));
  auto state = mesh.state();
  REQUIRE(state.count("broker") == 1);
  REQUIRE(state.count("idgen") == 1);
  mesh.remember();
  CHECK(alive(state["broker"].pid));
  CHECK(alive(state["idgen"].pid));
  CHECK(state["idgen"].restarts == 0);
  CHECK(state["idgen"].endpoint == mesh.idgen);
  CHECK(state["broker"].endpoint == mesh.brokerAdmin);
  // The gateway is started with the rest and fronts them over HTTP.
  REQUIRE(state.count("gateway") == 1);
  CHECK(state["gateway"].endpoint == mesh.gatewayAdmin);
  {
    HttpClient http(mesh.httpPort);
    auto ready = http.get("/readyz");
    INFO(ready.body);
    CHECK(ready.status == 200);
  }

  SECTION("call prints results readably, and as JSON with --json") {
    auto call = mesh.ctl({"call", "idgen", "next", "orders", "5"});
    INFO(call.output);
    CHECK(call.exitCode == 0);
    CHECK(call.output == "first: 1\ncount: 5\n");

    auto json = mesh.ctl({"call", "idgen", "next", "orders", "5", "--json"});
    INFO(json.output);
    CHECK(json.exitCode == 0);
    capnp::MallocMessageBuilder message;
    auto value = message.initRoot<capnp::JsonValue>();
    capnp::JsonCodec codec;
    REQUIRE_NOTHROW(codec.decodeRaw(kj::StringPtr(json.output.c_str()), value));
    REQUIRE(value.isObject());
    std::map<std::string, std::string> fields;
    for (auto f : value.getObject()) {
      auto v = f.getValue();
      fields[f.getName().cStr()] = v.isString() ? std::string(v.getString().cStr())
                                   : v.isNumber()
                                       ? std::to_string(static_cast<int64_t>(v.getNumber()))
                                       : "?";
    }
    CHECK(fields["first"] == "6");
    CHECK(fields["count"] == "5");

    auto params =
        mesh.ctl({"call", "idgen", "next", "--params", R"({"namespace":"orders","count":2})"});
    INFO(params.output);
    CHECK(params.exitCode == 0);
    CHECK(params.output == "first: 11\ncount: 2\n");

    auto health = mesh.ctl({"call", "broker", "health"});
    INFO(health.output);
    CHECK(health.exitCode == 0);
    CHECK_THAT(health.output, Contains("ok: true"));
  }

  SECTION("status shows both services healthy") {
    auto status = mesh.ctl({"status"});
    INFO(status.output);
    CHECK(status.exitCode == 0);
    auto broker = statusLine(status.output, "broker");
    auto idgen = statusLine(status.output, "idgen");
    REQUIRE(broker.size() >= 6);
    REQUIRE(idgen.size() >= 6);
    CHECK(broker[1] == mesh.brokerAdmin);
    CHECK(broker[2] == std::to_string(state["broker"].pid));
    CHECK(broker[5] == "ok");
    CHECK(idgen[1] == mesh.idgen);
    CHECK(idgen[2] == std::to_string(state["idgen"].pid));
    CHECK(idgen[4] == "0");
    CHECK(idgen[5] == "ok");
    // The gateway's row shows its Admin endpoint; where it serves HTTP follows.
    CHECK(status.output.find("HTTP: gateway on http://127.0.0.1:" +
                             std::to_string(mesh.httpPort)) != std::string::npos);
  }

  SECTION("stats prints each series with its kind, and histograms with quantiles") {
    REQUIRE(mesh.ctl({"call", "idgen", "next", "orders", "5"}).exitCode == 0);
    auto stats = mesh.ctl({"stats", "idgen"});
    INFO(stats.output);
    CHECK(stats.exitCode == 0);
    auto calls = statusLine(stats.output, "rpc.server.calls{method=IdGen.next,code=ok}");
    REQUIRE(calls.size() == 3);
    CHECK(calls[1] == "counter");
    CHECK(calls[2] == "1");
    auto duration = statusLine(stats.output, "rpc.server.duration_seconds{method=IdGen.next}");
    REQUIRE(duration.size() == 6);
    CHECK(duration[1] == "histogram");
    CHECK(duration[2] == "count=1");
    CHECK(duration[3].starts_with("sum="));
    CHECK(duration[4].starts_with("p50="));
    CHECK(duration[5].starts_with("p99="));
    auto namespaces = statusLine(stats.output, "idgen.namespaces");
    REQUIRE(namespaces.size() == 3);
    CHECK(namespaces[1] == "gauge");
    CHECK(namespaces[2] == "1");
    auto restarts = statusLine(stats.output, "process.restarts");
    REQUIRE(restarts.size() == 3);
    CHECK(restarts[2] == "0");
    CHECK(statusLine(stats.output, "process.start_time_seconds").size() == 3);

    auto unknown = mesh.ctl({"stats", "nosuchservice"});
    CHECK(unknown.exitCode != 0);
  }

  SECTION("a service killed with SIGKILL is restarted by the supervisor") {
    auto first = mesh.ctl({"call", "idgen", "next", "orders", "10"});
    REQUIRE(first.exitCode == 0);
    pid_t old = state["idgen"].pid;
    REQUIRE(::kill(old, SIGKILL) == 0);
    ServiceState now;
    auto deadline = Clock::now() + 10s;
    while (Clock::now() < deadline) {
      now = mesh.state()["idgen"];
      if (now.pid != 0 && now.pid != old) break;
      std::this_thread::sleep_for(20ms);
    }
    mesh.remember();
    INFO("supervisor log:\n" << readText(mesh.logDir + "/zmeshctl.log"));
    REQUIRE(now.pid != 0);
    REQUIRE(now.pid != old);
    CHECK(now.restarts == 1);
    CHECK_FALSE(alive(old));
    CHECK(alive(now.pid));
    REQUIRE(waitHealthy(mesh.idgen, 10s));
    CHECK(mesh.state()["broker"].restarts == 0);

    auto status = mesh.ctl({"status"});
    INFO(status.output);
    CHECK(status.exitCode == 0);
    auto idgen = statusLine(status.output, "idgen");
    REQUIRE(idgen.size() >= 6);
    CHECK(idgen[2] == std::to_string(now.pid));
    CHECK(idgen[4] == "1");
    CHECK(idgen[5] == "ok");

    // The supervisor told the new process how often it restarted it.
    auto stats = mesh.ctl({"stats", "idgen"});
    INFO(stats.output);
    auto restarts = statusLine(stats.output, "process.restarts");
    REQUIRE(restarts.size() == 3);
    CHECK(restarts[1] == "gauge");
    CHECK(restarts[2] == "1");

    // The sequence continues above what the killed process issued (1..10).
    auto after = mesh.ctl({"call", "idgen", "next", "orders", "1"});
    INFO(after.output);
    REQUIRE(after.exitCode == 0);
    auto w = words(after.output);
    REQUIRE(w.size() >= 2);
    CHECK(std::stoull(w[1]) > 10);
    CHECK_THAT(readText(mesh.logDir + "/zmeshctl.log"), Contains("killed by signal 9"));
  }

  SECTION("events shows idgen.block when ids are taken in a fresh namespace") {
    std::string out = mesh.dir.path() + "/events.out";
    Process events(
        {bin("zmeshctl"), "-c", mesh.path, "events", "idgen.", "--count", "1", "--timeout", "5000"},
        out);
    // The subscription reaches the publisher a moment after it is made: keep
    // taking ids in fresh namespaces until the events command has seen one.
    zmesh::Mesh client(mesh.path);
    auto idgen = client.idgen();
    auto deadline = Clock::now() + 8s;
    for (int i = 0; events.running() && Clock::now() < deadline; ++i) {
      CHECK(idgen.next("fresh-" + std::to_string(i), 3).first == 1);
      std::this_thread::sleep_for(100ms);
    }
    int status = events.stop(1s);
    auto output = readText(out);
    INFO(output);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK_THAT(output, StartsWith("idgen.block"));
    CHECK_THAT(output, Contains("idgen@" + mesh.idgen) && Contains(R"("namespace":"fresh-)") &&
                           Contains(R"("from":"1")") && Contains(R"("limit":"104")"));

    // Without --count, --timeout ends it; --count not reached is exit 1.
    auto none = mesh.ctl({"events", "nothing.here.", "--count", "1", "--timeout", "300"});
    CHECK(none.exitCode == 1);
  }

  SECTION("bad arguments exit with 2 and say what is wrong") {
    struct Case {
      std::vector<std::string> args;
      std::string says;
    };
    const Case cases[] = {
        {{"call", "idgen", "next", "orders", "many"},
         "argument 'many' for count: expected an integer"},
        {{"call", "idgen", "next", "orders", "-1"}, "argument '-1' for count"},
        {{"call", "idgen", "next", "orders", "99999999999"}, "argument '99999999999'"},
        {{"call", "idgen", "next", "a", "1", "extra"},
         "takes <namespace> <count>, got 3 arguments"},
        {{"call", "idgen", "frobnicate"}, "frobnicate"},
        {{"call", "nosuchservice", "next"}, "nosuchservice"},
        {{"call", "idgen", "next", "--params", "{not json"}, "--params"},
        {{"call", "idgen", "next", "x", "--params", "{}"}, "either --params or positional"},
        {{"call", "idgen"}, "method"},
        {{"frobnicate"}, "A subcommand is required"},
    };
    for (auto& c : cases) {
      auto r = mesh.ctl(c.args);
      std::string cmd;
      for (auto& a : c.args) cmd += a + " ";
      INFO("zmeshctl " << cmd << "\n" << r.output);
      CHECK(r.exitCode == 2);
      CHECK_THAT(r.output, Contains(c.says));
    }
    // A request the service refuses is the service's error (exit 1), named as such.
    auto refused = mesh.ctl({"call", "idgen", "next", "bad ns", "1"});
    INFO(refused.output);
    CHECK(refused.exitCode == 1);
    CHECK_THAT(refused.output, Contains("INVALID_ARGUMENT") && Contains("invalid character ' '"));
  }

  // Every section ends with `down`: the supervisor and every service are gone.
  mesh.remember();
  auto last = mesh.state();
  auto down = mesh.ctl({"down"});
  INFO("down:\n"
       << down.output << "\nsupervisor log:\n"
       << readText(mesh.logDir + "/zmeshctl.log"));
  CHECK(down.exitCode == 0);
  CHECK_THAT(down.output, Contains("mesh stopped"));
  CHECK_THAT(down.output, !Contains("did not stop"));
  CHECK_FALSE(alive(*supervisor));
  auto reapDeadline = Clock::now() + 5s;
  while (!mesh.reaped() && Clock::now() < reapDeadline) {
    mesh.reapSupervisor();
    std::this_thread::sleep_for(10ms);
  }
  CHECK(mesh.reaped());
  for (auto& [name, s] : last) {
    INFO(name << " pid " << s.pid);
    CHECK_FALSE(alive(s.pid));
  }
  CHECK_FALSE(mesh.supervisorPid());
  auto after = mesh.state();
  for (auto& [name, s] : after) CHECK(s.pid == 0);
  auto status = mesh.ctl({"status"});
  CHECK(status.exitCode == 1);
  CHECK_THAT(status.output, Contains("no supervisor running"));
  CHECK(readText(mesh.logDir + "/idgen.log").size() > 0);
  CHECK(readText(mesh.logDir + "/broker.log").size() > 0);
}

TEST_CASE("zmeshctl: kill -9 of the supervisor leaves no service behind", "[zmeshctl]") {
  REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
  TestMesh mesh;
  pid_t supervisor = upAndAdopt(mesh);
  auto services = servicePids(mesh);
  REQUIRE(services.size() == 3);  // broker, idgen, gateway

  REQUIRE(::kill(supervisor, SIGKILL) == 0);
  CHECK(allGone({supervisor}, 5s));
  mesh.reapSupervisor();
  {
    INFO("services still running 10 s after the supervisor was killed");
    CHECK(allGone(services, 10s));
  }
  // Nothing holds the run directory any more: the next `up` starts a mesh.
  pid_t next = upAndAdopt(mesh);
  CHECK(next != supervisor);
  auto down = mesh.ctl({"down"});
  INFO(down.output);
  CHECK(down.exitCode == 0);
  CHECK(allGone(servicePids(mesh), 10s));
}

TEST_CASE("a second concurrent zmeshctl up is refused", "[zmeshctl]") {
  REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
  TestMesh mesh;
  // Both at once: neither can see the other's supervisor yet.
  auto first = mesh.start({"-c", mesh.path, "up"});
  auto second = mesh.start({"-c", mesh.path, "up"});
  auto a = mesh.finish(std::move(first));
  auto b = mesh.finish(std::move(second));
  if (auto pid = mesh.supervisorPid()) mesh.adopt(*pid);
  mesh.remember();
  INFO("first up:\n" << a.output << "\nsecond up:\n" << b.output);
  auto& started = a.exitCode == 0 ? a : b;
  auto& refused = a.exitCode == 0 ? b : a;
  CHECK(started.exitCode == 0);
  CHECK_THAT(started.output, Contains("mesh up"));
  CHECK(refused.exitCode == 1);
  CHECK_THAT(refused.output, Contains("a mesh is already running for " + mesh.runDir));
  CHECK_THAT(refused.output, !Contains("mesh up"));

  // And one after the other, naming the supervisor that runs.
  auto again = mesh.ctl({"up"});
  INFO("third up:\n" << again.output);
  CHECK(again.exitCode == 1);
  REQUIRE(mesh.supervisorPid());
  CHECK_THAT(again.output, Contains("(supervisor pid " + std::to_string(*mesh.supervisorPid())));
  auto status = mesh.ctl({"status"});
  INFO(status.output);
  CHECK(status.exitCode == 0);
}

TEST_CASE(
    "zmeshctl: paths in the mesh file are relative to it so up and status and down work from "
    "anywhere",
    "[zmeshctl]") {
  REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
  TestMesh mesh(Paths::relative);
  std::string here = mesh.dir.path() + "/here", there = mesh.dir.path() + "/there";
  std::filesystem::create_directories(here);
  std::filesystem::create_directories(there);
  // The mesh file named relative to the current directory, too.
  upAndAdopt(mesh, {"-c", "../mesh.toml", "up"}, here);
  CHECK(std::filesystem::exists(mesh.runDir + "/zmesh.state"));
  CHECK(std::filesystem::exists(mesh.logDir + "/idgen.log"));
  // The service resolves its data_dir as the supervisor does.
  auto ids = mesh.ctl({"call", "idgen", "next", "orders", "1"});
  INFO(ids.output);
  CHECK(ids.exitCode == 0);
  CHECK(std::filesystem::exists(mesh.dataDir));
  CHECK(std::filesystem::is_empty(here));

  auto status = mesh.run({"-c", mesh.path, "status"}, there);
  INFO("status:\n" << status.output);
  CHECK(status.exitCode == 0);
  CHECK_THAT(status.output, !Contains("no supervisor running"));
  auto idgen = statusLine(status.output, "idgen");
  REQUIRE(idgen.size() >= 6);
  CHECK(idgen[2] == std::to_string(mesh.state()["idgen"].pid));

  auto services = servicePids(mesh);
  auto down = mesh.run({"-c", "../mesh.toml", "down"}, there);
  INFO("down:\n" << down.output);
  CHECK(down.exitCode == 0);
  CHECK_THAT(down.output, Contains("mesh stopped"));
  CHECK(allGone(services, 5s));
  CHECK(std::filesystem::is_empty(there));
}

TEST_CASE("zmeshctl up -c FILE works as zmeshctl -c FILE up does", "[zmeshctl]") {
  REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
  TestMesh mesh;
  upAndAdopt(mesh, {"up", "-c", mesh.path});
  auto status = mesh.run({"status", "--config", mesh.path});
  INFO(status.output);
  CHECK(status.exitCode == 0);
  auto call = mesh.run({"call", "idgen", "next", "orders", "2", "-c", mesh.path});
  INFO(call.output);
  CHECK(call.output == "first: 1\ncount: 2\n");
  auto services = servicePids(mesh);
  auto down = mesh.run({"down", "-c", mesh.path});
  INFO(down.output);
  CHECK(down.exitCode == 0);
  CHECK_THAT(down.output, Contains("mesh stopped"));
  CHECK(allGone(services, 5s));
}

TEST_CASE(
    "zmeshctl down without a supervisor stops the services its state file lists and nothing else",
    "[zmeshctl]") {
  TestMesh mesh, other;
  // This mesh's idgen, another mesh's idgen, and a process that got a listed pid.
  Process ours({bin("zmesh-idgen"), "--config", mesh.path, "--broker", "none"},
               mesh.dir.path() + "/idgen.out");
  Process theirs({bin("zmesh-idgen"), "--config", other.path, "--broker", "none"},
                 other.dir.path() + "/idgen.out");
  Process stranger({"/bin/sleep", "60"});
  // The state file goes before these processes do, so that nothing signals
  // their pids once they are reaped.
  struct Forget {
    std::string path;
    ~Forget() { std::filesystem::remove(path); }
  } forget{mesh.runDir + "/zmesh.state"};
  REQUIRE(waitHealthy(mesh.idgen, 10s));
  REQUIRE(waitHealthy(other.idgen, 10s));
  std::filesystem::create_directories(mesh.runDir);
  {
    std::ofstream state(mesh.runDir + "/zmesh.state");
    state << "broker " << stranger.pid() << " 0 0 " << mesh.brokerAdmin << "\n"
          << "idgen " << ours.pid() << " 0 0 " << mesh.idgen << "\n"
          << "idgen " << theirs.pid() << " 0 0 " << other.idgen << "\n";
  }
  auto down = mesh.ctl({"down"});
  INFO(down.output);
  CHECK(down.exitCode == 0);
  CHECK_THAT(down.output, Contains("mesh stopped"));
  CHECK(ours.wait(5s) == 0);  // stopped cleanly by SIGTERM
  CHECK(theirs.running());
  CHECK(stranger.running());
}

TEST_CASE(
    "zmeshctl: Ctrl-C on up --foreground stops the services in reverse order as stops and not "
    "crashes",
    "[zmeshctl]") {
  TestMesh mesh;
  // setsid: zmeshctl leads its own process group, as a shell's foreground job
  // does; a Ctrl-C is SIGINT to that whole group.
  std::string out = mesh.dir.path() + "/foreground.out";
  Process up({"/usr/bin/setsid", bin("zmeshctl"), "-c", mesh.path, "up", "--foreground"}, out);
  REQUIRE(waitHealthy(mesh.brokerAdmin, 15s));
  REQUIRE(waitHealthy(mesh.idgen, 15s));
  REQUIRE(waitHealthy(mesh.gatewayAdmin, 15s));
  auto state = mesh.state();
  mesh.remember();
  REQUIRE(state.size() == 3);

  REQUIRE(::kill(-up.pid(), SIGINT) == 0);
  int status = up.wait(20s);
  INFO("zmeshctl:\n" << readText(out));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK_THAT(readText(out), !Contains("restarting"));
  std::vector<pid_t> pids;
  for (auto& [name, s] : state) pids.push_back(s.pid);
  CHECK(allGone(pids, 5s));
  // Each service was stopped by the supervisor (SIGTERM), not by the Ctrl-C,
  // and the last one started (the gateway) stopped first.
  std::map<std::string, std::string> stoppedAt;
  for (const char* name : {"broker", "idgen", "gateway"}) {
    auto log = readText(mesh.logDir + "/" + name + ".log");
    INFO(name << ".log:\n" << log);
    CHECK_THAT(log, Contains("signal 15 received") && !Contains("signal 2 received"));
    auto stopped = log.rfind(std::string(name) + " stopped");
    REQUIRE(stopped != std::string::npos);
    auto line = log.rfind('\n', stopped);
    stoppedAt[name] = log.substr(line == std::string::npos ? 0 : line + 1, 23);  // the timestamp
  }
  CHECK(stoppedAt["gateway"] <= stoppedAt["idgen"]);
  CHECK(stoppedAt["idgen"] <= stoppedAt["broker"]);
}
