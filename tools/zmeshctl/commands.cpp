#include "commands.h"

#include <capnp/compat/json.h>
#include <capnp/dynamic.h>
#include <kj/encoding.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <thread>

#include "supervisor.h"
#include "zmesh/rpc/host.h"

namespace zmesh::ctl {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

std::string formatUptime(int64_t ms) {
  int64_t s = ms / 1000;
  char buf[64];
  if (s < 60)
    std::snprintf(buf, sizeof(buf), "%llds", static_cast<long long>(s));
  else if (s < 3600)
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  else
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60));
  return buf;
}

void printLogTail(const std::string& path, int lines) {
  std::ifstream in(path);
  std::vector<std::string> tail;
  std::string line;
  while (std::getline(in, line)) {
    tail.push_back(line);
    if (static_cast<int>(tail.size()) > lines) tail.erase(tail.begin());
  }
  for (auto& l : tail) std::cerr << "  | " << l << '\n';
}

// Waits until every service answers Admin.health ok, or the supervisor dies,
// or the timeout passes. Returns the services that are not healthy.
std::vector<std::string> waitHealthy(Mesh& mesh, const std::vector<ServiceSpec>& services,
                                     pid_t supervisor, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  std::vector<std::string> pending;
  for (auto& s : services) pending.push_back(s.name);
  while (!pending.empty() && Clock::now() < deadline) {
    if (!processRunning(supervisor)) break;
    std::vector<std::string> still;
    for (auto& name : pending) {
      try {
        CallSettings quick;
        quick.timeout = 300ms;
        if (mesh.admin(name, quick).health().ok) continue;
      } catch (const RpcError&) {
      }
      still.push_back(name);
    }
    pending.swap(still);
    if (!pending.empty()) std::this_thread::sleep_for(50ms);
  }
  return pending;
}

}  // namespace

int cmdUp(const std::string& configPath, bool foreground) {
  auto options = supervisorOptionsFrom(rpc::MeshConfig::load(configPath), configPath);
  // Resolve everything before forking: a missing binary is reported here.
  Mesh mesh(rpc::MeshConfig::load(configPath));
  auto services = servicesFrom(mesh, options.configPath);
  fs::create_directories(options.runDir);
  // Held until the supervisor exits (the daemon inherits it): a second `up`,
  // even one started at the same moment, finds it taken.
  auto lock = RunDirLock::tryAcquire(options);
  if (!lock) {
    auto pid = runningSupervisor(options);
    std::cerr << "zmeshctl: a mesh is already running for " << options.runDir;
    if (pid) std::cerr << " (supervisor pid " << *pid << ")";
    std::cerr << "; `zmeshctl status` shows it, `zmeshctl down` stops it\n";
    return 1;
  }
  fs::create_directories(options.logDir);

  if (foreground) {
    std::ofstream(pidFile(options)) << ::getpid() << '\n';
    int code = superviseForever(mesh, services, options);
    fs::remove(pidFile(options));
    return code;
  }

  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    // The supervisor: its own session, so closing the terminal does not stop the mesh.
    ::setsid();
    std::string log = options.logDir + "/zmeshctl.log";
    std::freopen("/dev/null", "r", stdin);
    std::freopen(log.c_str(), "a", stdout);
    std::freopen(log.c_str(), "a", stderr);
    rpc::setupLogging("zmeshctl", "info", "");
    std::ofstream(pidFile(options)) << ::getpid() << '\n';
    int code = 1;
    try {
      code = superviseForever(mesh, services, options);
    } catch (const std::exception& e) {
      spdlog::error("supervisor failed: {}", e.what());
    }
    fs::remove(pidFile(options));
    std::fflush(nullptr);
    ::_exit(code);
  }

  auto unhealthy = waitHealthy(mesh, services, pid, options.healthTimeout);
  if (!unhealthy.empty()) {
    for (auto& name : unhealthy) {
      std::cerr << "zmeshctl: " << name << " did not become healthy within "
                << options.healthTimeout.count() << " ms; last lines of " << options.logDir << "/"
                << name << ".log:\n";
      printLogTail(options.logDir + "/" + name + ".log", 10);
    }
    std::cerr << "zmeshctl: the supervisor keeps trying; `zmeshctl down` stops it\n";
    return 1;
  }
  std::cout << "mesh up (supervisor pid " << pid << "); logs in " << options.logDir << "\n";
  return cmdStatus(configPath);
}

namespace {

// SIGTERM to each, then SIGKILL to those still running after `grace`.
// Returns those still running after that (normally none).
std::vector<pid_t> stopAll(std::vector<pid_t> pids, std::chrono::milliseconds grace) {
  for (pid_t pid : pids) ::kill(pid, SIGTERM);
  auto running = [&pids] {
    std::erase_if(pids, [](pid_t pid) { return !processRunning(pid); });
    return !pids.empty();
  };
  auto deadline = Clock::now() + grace;
  while (running() && Clock::now() < deadline) std::this_thread::sleep_for(20ms);
  for (pid_t pid : pids) ::kill(pid, SIGKILL);
  deadline = Clock::now() + 2s;
  while (running() && Clock::now() < deadline) std::this_thread::sleep_for(20ms);
  return pids;
}

}  // namespace

int cmdDown(const std::string& configPath) {
  auto options = supervisorOptionsFrom(rpc::MeshConfig::load(configPath), configPath);
  auto supervisor = runningSupervisor(options);
  if (supervisor) {
    ::kill(*supervisor, SIGTERM);
    // Children stop one after another, each within the stop grace.
    auto deadline = Clock::now() + options.stopGrace * 8 + 5s;
    while (Clock::now() < deadline && processRunning(*supervisor))
      std::this_thread::sleep_for(20ms);
    if (processRunning(*supervisor)) {
      std::cerr << "zmeshctl: supervisor " << *supervisor << " did not stop: SIGKILL\n";
      ::kill(*supervisor, SIGKILL);
    }
  }
  // Whatever the state file still lists is stopped here: the supervisor was
  // killed, or did not stop its services. A pid that no longer runs this
  // mesh's service binary was recycled and is left alone.
  std::vector<pid_t> services;
  std::vector<std::string> names;
  for (auto& s : readState(options)) {
    if (s.pid <= 0 || !processRunning(s.pid)) continue;
    std::string binary;
    try {
      binary = serviceBinary(s.name);
    } catch (const std::exception& e) {
      std::cerr << "zmeshctl: " << s.name << " (pid " << s.pid << ") left alone: " << e.what()
                << '\n';
      continue;
    }
    if (!runsService(s.pid, binary, options.configPath)) continue;
    services.push_back(s.pid);
    names.push_back(s.name + " (pid " + std::to_string(s.pid) + ")");
  }
  if (!supervisor && services.empty()) {
    std::cout << "no mesh running for " << options.runDir << "\n";
    return 0;
  }
  if (!services.empty()) {
    std::cerr << "zmeshctl: stopping what the supervisor left running:";
    for (auto& n : names) std::cerr << ' ' << n;
    std::cerr << '\n';
  }
  auto left = stopAll(services, options.stopGrace);
  if (!left.empty()) {
    std::cerr << "zmeshctl: still running after SIGKILL:";
    for (pid_t pid : left) std::cerr << " pid " << pid;
    std::cerr << '\n';
    return 1;
  }
  std::cout << "mesh stopped\n";
  return 0;
}

int cmdStatus(const std::string& configPath) {
  auto config = rpc::MeshConfig::load(configPath);
  auto options = supervisorOptionsFrom(config, configPath);
  Mesh mesh(std::move(config));
  auto state = readState(options);
  auto supervisor = runningSupervisor(options);
  std::printf("%-10s %-26s %-8s %-9s %-8s %s\n", "SERVICE", "ENDPOINT", "PID", "UPTIME", "RESTARTS",
              "HEALTH");
  bool allOk = true;
  std::vector<std::string> httpLines;  // the gateway's ENDPOINT is its Admin one, not its HTTP
  for (auto& name : mesh.services()) {
    if (interfacesOf(name).empty()) continue;
    std::string pid = "-", uptime = "-", restarts = "-", health;
    for (auto& s : state)
      if (s.name == name && supervisor) {
        pid = s.pid ? std::to_string(s.pid) : "-";
        restarts = std::to_string(s.restarts);
      }
    try {
      CallSettings quick;
      quick.timeout = 500ms;
      auto admin = mesh.admin(name, quick);
      auto h = admin.health();
      auto info = admin.info();
      health = h.ok ? "ok" : "unhealthy: " + h.detail;
      uptime = formatUptime(static_cast<int64_t>(info.uptimeMs));
      pid = std::to_string(info.pid);
      for (auto& [key, value] : info.config)
        if (key == "listen") httpLines.push_back("HTTP: " + name + " on http://" + value);
      allOk = allOk && h.ok;
    } catch (const RpcError& e) {
      health = "down (" + std::string(rpc::statusName(e.code())) + ")";
      allOk = false;
    }
    std::printf("%-10s %-26s %-8s %-9s %-8s %s\n", name.c_str(), mesh.adminEndpoint(name).c_str(),
                pid.c_str(), uptime.c_str(), restarts.c_str(), health.c_str());
  }
  for (auto& line : httpLines) std::printf("%s\n", line.c_str());
  if (!supervisor) std::printf("(no supervisor running for %s)\n", options.runDir.c_str());
  return allOk ? 0 : 1;
}

namespace {

constexpr std::string_view kBase64Prefix = "base64:";

// Valid UTF-8 (no overlong forms, no surrogates, at most U+10FFFF) without a
// control character (C0, DEL, C1): bytes that print as themselves.
bool printableText(std::string_view s) {
  static const uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f) return false;
      ++i;
      continue;
    }
    size_t n;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (s.size() - i <= n) return false;
    for (size_t k = 1; k <= n; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    if (cp <= 0x9F) return false;  // C1 controls
    i += n + 1;
  }
  return true;
}

// Data (a cache key or value) as zmeshctl prints it: the bytes themselves when
// printableText(), else "base64:" and their base64 (so also text that begins
// with "base64:", which would otherwise read as base64).
std::string dataAsText(std::string_view bytes) {
  if (printableText(bytes) && !bytes.starts_with(kBase64Prefix)) return std::string(bytes);
  auto b64 =
      kj::encodeBase64(kj::arrayPtr(reinterpret_cast<const kj::byte*>(bytes.data()), bytes.size()));
  return std::string(kBase64Prefix) + b64.cStr();
}

// The other way: a word is its own bytes, unless it begins with "base64:".
std::string dataFromText(std::string_view word) {
  if (!word.starts_with(kBase64Prefix)) return std::string(word);
  auto text = word.substr(kBase64Prefix.size());
  auto decoded = kj::decodeBase64(kj::arrayPtr(text.data(), text.size()));
  if (decoded.hadErrors)
    throw std::invalid_argument("'" + std::string(word) + "': not base64 after \"base64:\"");
  return std::string(reinterpret_cast<const char*>(decoded.begin()), decoded.size());
}

capnp::Data::Reader dataReader(const std::string& bytes) {
  return {reinterpret_cast<const capnp::byte*>(bytes.data()), bytes.size()};
}

// Data fields in JSON (--params, --json and the plain output) as strings, by
// dataAsText/dataFromText; an array of byte values is read too.
class DataAsText final : public capnp::JsonCodec::Handler<capnp::Data> {
 public:
  void encode(const capnp::JsonCodec&, capnp::Data::Reader input,
              capnp::JsonValue::Builder output) const override {
    auto text = dataAsText({reinterpret_cast<const char*>(input.begin()), input.size()});
    output.setString(capnp::Text::Reader(text.c_str(), text.size()));
  }
  capnp::Orphan<capnp::Data> decode(const capnp::JsonCodec&, capnp::JsonValue::Reader input,
                                    capnp::Orphanage orphanage) const override {
    std::string bytes;
    if (input.isString()) {
      auto s = input.getString();
      bytes = dataFromText({s.cStr(), s.size()});
    } else if (input.isArray()) {
      for (auto v : input.getArray()) {
        if (!v.isNumber() || v.getNumber() < 0 || v.getNumber() > 255 ||
            v.getNumber() != static_cast<int>(v.getNumber()))
          throw std::invalid_argument("a Data field's array must hold bytes (0-255)");
        bytes.push_back(static_cast<char>(static_cast<int>(v.getNumber())));
      }
    } else {
      throw std::invalid_argument(
          "a Data field is a string (its text, or base64:<base64>) or an array of bytes");
    }
    auto orphan = orphanage.newOrphan<capnp::Data>(bytes.size());
    if (!bytes.empty()) std::memcpy(orphan.get().begin(), bytes.data(), bytes.size());
    return orphan;
  }
};

// "a,b,c" → a, b, c; "" → none.
std::vector<std::string> splitCommas(const std::string& word) {
  std::vector<std::string> out;
  if (word.empty()) return out;
  size_t start = 0;
  while (true) {
    auto end = word.find(',', start);
    out.push_back(word.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

// "ifAbsent", "if-absent", "IF_ABSENT": the same enumerant.
std::string enumKey(std::string_view s) {
  std::string out;
  for (char c : s)
    if (c != '-' && c != '_')
      out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  return out;
}

// Sets one params field from a command-line word, by the field's schema type.
void setField(capnp::DynamicStruct::Builder params, capnp::StructSchema::Field field,
              const std::string& word) {
  auto name = std::string(field.getProto().getName().cStr());
  auto type = field.getType();
  auto bad = [&](const std::string& what) {
    throw std::invalid_argument("argument '" + word + "' for " + name + ": expected " + what);
  };
  auto parseInt = [&](auto& out) {
    auto [end, ec] = std::from_chars(word.data(), word.data() + word.size(), out);
    if (ec != std::errc() || end != word.data() + word.size()) bad("an integer in range");
  };
  switch (type.which()) {
    case capnp::schema::Type::TEXT:
      params.set(field, capnp::Text::Reader(word.c_str()));
      return;
    case capnp::schema::Type::DATA: {
      auto bytes = dataFromText(word);
      params.set(field, dataReader(bytes));
      return;
    }
    case capnp::schema::Type::BOOL:
      if (word != "true" && word != "false") bad("true or false");
      params.set(field, word == "true");
      return;
    case capnp::schema::Type::INT8:
    case capnp::schema::Type::INT16:
    case capnp::schema::Type::INT32:
    case capnp::schema::Type::INT64: {
      int64_t v;
      parseInt(v);
      params.set(field, v);  // capnp checks the field's own range
      return;
    }
    case capnp::schema::Type::UINT8:
    case capnp::schema::Type::UINT16:
    case capnp::schema::Type::UINT32:
    case capnp::schema::Type::UINT64: {
      uint64_t v;
      parseInt(v);
      params.set(field, v);
      return;
    }
    case capnp::schema::Type::FLOAT32:
    case capnp::schema::Type::FLOAT64:
      try {
        size_t used;
        double v = std::stod(word, &used);
        if (used != word.size()) bad("a number");
        params.set(field, v);
      } catch (const std::logic_error&) {
        bad("a number");
      }
      return;
    case capnp::schema::Type::ENUM: {
      std::string known;
      for (auto e : type.asEnum().getEnumerants()) {
        std::string enumerant = e.getProto().getName().cStr();
        if (enumKey(enumerant) == enumKey(word)) {
          params.set(field, capnp::DynamicEnum(e));
          return;
        }
        known += (known.empty() ? "" : ", ") + enumerant;
      }
      bad("one of " + known);
      return;
    }
    case capnp::schema::Type::LIST: {
      auto element = type.asList().getElementType();
      // A list of keys: "a,b,c".
      if (element.isText() || element.isData()) {
        auto items = splitCommas(word);
        auto list =
            params.init(field, static_cast<unsigned>(items.size())).as<capnp::DynamicList>();
        for (unsigned i = 0; i < items.size(); ++i) {
          if (element.isText()) {
            list.set(i, capnp::Text::Reader(items[i].c_str()));
          } else {
            auto bytes = dataFromText(items[i]);
            list.set(i, dataReader(bytes));
          }
        }
        return;
      }
      // A list of pairs (descriptors, a cache's entries): "tenant=acme,route=/orders".
      if (element.isStruct()) {
        auto pair = element.asStruct();
        auto fields = pair.getFields();
        auto textOrData = [](capnp::StructSchema::Field f) {
          return f.getType().isText() || f.getType().isData();
        };
        if (fields.size() == 2 && textOrData(fields[0]) && textOrData(fields[1])) {
          std::vector<std::pair<std::string, std::string>> items;
          for (auto& item : splitCommas(word)) {
            auto eq = item.find('=');
            if (eq == std::string::npos || eq == 0) bad("name=value pairs separated by commas");
            items.emplace_back(item.substr(0, eq), item.substr(eq + 1));
          }
          auto list =
              params.init(field, static_cast<unsigned>(items.size())).as<capnp::DynamicList>();
          auto setPart = [](capnp::DynamicStruct::Builder out, capnp::StructSchema::Field f,
                            const std::string& text) {
            if (f.getType().isText()) {
              out.set(f, capnp::Text::Reader(text.c_str()));
            } else {
              auto bytes = dataFromText(text);
              out.set(f, dataReader(bytes));
            }
          };
          for (unsigned i = 0; i < items.size(); ++i) {
            auto out = list[i].as<capnp::DynamicStruct>();
            setPart(out, fields[0], items[i].first);
            setPart(out, fields[1], items[i].second);
          }
          return;
        }
      }
      [[fallthrough]];
    }
    default:
      throw std::invalid_argument("field " + name + " cannot be given on the command line; use " +
                                  "--params JSON");
  }
}

std::string fieldList(capnp::StructSchema schema) {
  std::string out;
  for (auto f : schema.getFields())
    out += (out.empty() ? "" : " ") + std::string("<") + f.getProto().getName().cStr() + ">";
  return out.empty() ? "(no arguments)" : out;
}

}  // namespace

int cmdCall(const std::string& configPath, const std::string& service, const std::string& method,
            const std::vector<std::string>& args,
            const std::vector<std::pair<std::string, std::string>>& named,
            const std::string& paramsJson, bool json, std::chrono::milliseconds timeout) {
  Mesh mesh(configPath);
  DynamicCall call(service, method);
  capnp::MallocMessageBuilder message;
  auto params = message.initRoot<capnp::DynamicStruct>(call.paramsSchema());
  DataAsText dataHandler;  // outlives the codec that uses it
  capnp::JsonCodec codec;
  codec.addTypeHandler(dataHandler);
  if (!paramsJson.empty()) {
    if (!args.empty() || !named.empty())
      throw std::invalid_argument(
          "give either --params or positional and --field arguments, not both");
    try {
      codec.decode(kj::StringPtr(paramsJson.c_str()), params);
    } catch (const kj::Exception& e) {
      throw std::invalid_argument(std::string("--params: ") + e.getDescription().cStr());
    }
  } else {
    auto fields = call.paramsSchema().getFields();
    if (args.size() > fields.size())
      throw std::invalid_argument(service + " " + method + " takes " +
                                  fieldList(call.paramsSchema()) + ", got " +
                                  std::to_string(args.size()) + " arguments");
    for (size_t i = 0; i < args.size(); ++i) {
      try {
        setField(params, fields[i], args[i]);
      } catch (const kj::Exception& e) {
        throw std::invalid_argument("argument '" + args[i] + "': " + e.getDescription().cStr());
      }
    }
    std::vector<std::string> given;
    for (size_t i = 0; i < args.size(); ++i) given.push_back(fields[i].getProto().getName().cStr());
    for (auto& [option, value] : named) {
      // --retry-after-ms and --retry_after_ms both name retryAfterMs.
      std::string name;
      for (size_t i = 0; i < option.size(); ++i) {
        bool joint = (option[i] == '-' || option[i] == '_') && i + 1 < option.size();
        if (joint)
          name.push_back(static_cast<char>(std::toupper(option[++i])));
        else
          name.push_back(option[i]);
      }
      // --ttl and --wait name ttlMs and waitMs: a duration field is in ms by its name.
      if (call.paramsSchema().findFieldByName(name) == nullptr &&
          call.paramsSchema().findFieldByName(name + "Ms") != nullptr)
        name += "Ms";
      KJ_IF_MAYBE (field, call.paramsSchema().findFieldByName(name)) {
        if (std::find(given.begin(), given.end(), name) != given.end())
          throw std::invalid_argument("--" + option + ": " + name + " is given twice");
        given.push_back(name);
        try {
          setField(params, *field, value);
        } catch (const kj::Exception& e) {
          throw std::invalid_argument("--" + option + " '" + value +
                                      "': " + e.getDescription().cStr());
        }
      } else {
        throw std::invalid_argument(service + " " + method + " has no field " + name +
                                    " (it takes " + fieldList(call.paramsSchema()) + ")");
      }
    }
  }
  CallSettings settings;
  settings.timeout = timeout;
  // A call that may wait on the service's side (a lock's acquire) has the
  // wait on top of the timeout, so the service answers before the client gives up.
  KJ_IF_MAYBE (wait, call.paramsSchema().findFieldByName("waitMs")) {
    auto ms = params.asReader().get(*wait).as<uint64_t>();
    settings.timeout += std::chrono::milliseconds(std::min<uint64_t>(ms, 24 * 3600 * 1000));
  }
  auto reply = call.invoke(mesh.channel(service), message, settings, false);
  auto results = reply.results(call.resultsSchema());
  if (json) {
    std::cout << codec.encode(results).cStr() << '\n';
    return 0;
  }
  codec.setPrettyPrint(true);
  for (auto field : call.resultsSchema().getFields()) {
    auto text = codec.encode(results.get(field), field.getType());
    std::string value(text.cStr());
    // Strings and 64-bit numbers read better without JSON's quotes here.
    if (value.size() >= 2 && value.front() == '"' && value.find('"', 1) == value.size() - 1)
      value = value.substr(1, value.size() - 2);
    std::cout << field.getProto().getName().cStr() << ": " << value << '\n';
  }
  return 0;
}

int cmdEvents(const std::string& configPath, const std::vector<std::string>& prefixes, bool json,
              int64_t count, std::chrono::milliseconds timeout) {
  Mesh mesh(configPath);
  std::mutex mutex;
  std::condition_variable done;
  int64_t seen = 0;
  auto subscription = mesh.events().subscribe(
      prefixes.empty() ? std::vector<std::string>{""} : prefixes, [&](const Event& e) {
        std::lock_guard lock(mutex);
        if (e.missedBefore > 0) {
          if (json)
            std::printf("{\"gap\":{\"topic\":\"%s\",\"publisher\":\"%s\",\"missed\":%llu}}\n",
                        e.topic.c_str(), e.publisher.c_str(),
                        static_cast<unsigned long long>(e.missedBefore));
          else
            std::printf("! gap: %llu %s events from %s were lost\n",
                        static_cast<unsigned long long>(e.missedBefore), e.topic.c_str(),
                        e.publisher.c_str());
        }
        if (json)
          std::printf(
              "{\"topic\":\"%s\",\"publisher\":\"%s\",\"incarnation\":\"%llu\",\"sequence\":\"%"
              "llu\","
              "\"wall_time_ms\":%lld,\"body\":%s}\n",
              e.topic.c_str(), e.publisher.c_str(), static_cast<unsigned long long>(e.incarnation),
              static_cast<unsigned long long>(e.sequence), static_cast<long long>(e.wallTimeMs),
              e.json.c_str());
        else
          std::printf("%-20s %s:%llu %s\n", e.topic.c_str(), e.publisher.c_str(),
                      static_cast<unsigned long long>(e.sequence), e.json.c_str());
        std::fflush(stdout);
        if (++seen == count) done.notify_all();
      });
  std::unique_lock lock(mutex);
  auto finished = [&] { return count > 0 && seen >= count; };
  if (timeout.count() > 0)
    done.wait_for(lock, timeout, finished);
  else
    done.wait(lock, finished);
  return count > 0 && seen < count ? 1 : 0;
}

double histogramQuantile(double q, const std::vector<double>& bounds,
                         const std::vector<uint64_t>& cumulative, double count) {
  if (count <= 0 || bounds.empty() || cumulative.size() != bounds.size()) return std::nan("");
  q = std::clamp(q, 0.0, 1.0);
  double rank = q * count;
  for (size_t i = 0; i < bounds.size(); ++i) {
    auto upTo = static_cast<double>(cumulative[i]);
    if (upTo < rank || upTo == 0) continue;
    double below = i ? static_cast<double>(cumulative[i - 1]) : 0;
    double start = i ? bounds[i - 1] : std::min(0.0, bounds[0]);
    if (upTo == below) return bounds[i];
    return start + (bounds[i] - start) * (rank - below) / (upTo - below);
  }
  return bounds.back();  // in the +Inf bucket
}

namespace {

std::string formatNumber(double v) {
  char buf[64];
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15)
    std::snprintf(buf, sizeof(buf), "%.0f", v);
  else if (std::isfinite(v) && std::fabs(v) >= 1e4 && std::fabs(v) < 1e15)
    std::snprintf(buf, sizeof(buf), "%.3f", v);  // a unix time, say: every digit
  else
    std::snprintf(buf, sizeof(buf), "%.6g", v);
  return buf;
}

}  // namespace

std::string formatStats(const std::vector<rpc::MetricFamily>& families) {
  std::vector<std::array<std::string, 3>> lines;
  for (const auto& f : families)
    for (const auto& s : f.samples) {
      std::string name = rpc::seriesName(f, s);
      std::string value;
      if (f.kind == rpc::MetricKind::kHistogram) {
        value = "count=" + formatNumber(s.value) + " sum=" + formatNumber(s.sum);
        for (double q : {0.5, 0.99}) {
          double v = histogramQuantile(q, f.bounds, s.buckets, s.value);
          value += (q == 0.5 ? " p50=" : " p99=") + (std::isnan(v) ? "-" : formatNumber(v));
        }
      } else {
        value = formatNumber(s.value);
      }
      lines.push_back({std::move(name), std::string(rpc::kindName(f.kind)), std::move(value)});
    }
  size_t width = 0;
  for (auto& l : lines) width = std::max(width, l[0].size());
  std::string out;
  for (auto& l : lines) {
    out += l[0];
    out.append(width + 2 - l[0].size(), ' ');
    out += l[1];
    out.append(11 - l[1].size(), ' ');
    out += l[2];
    out += '\n';
  }
  return out;
}

int cmdStats(const std::string& configPath, const std::string& service,
             std::chrono::milliseconds timeout) {
  Mesh mesh(configPath);
  CallSettings settings;
  settings.timeout = timeout;
  std::fputs(formatStats(mesh.admin(service, settings).stats()).c_str(), stdout);
  return 0;
}

}  // namespace zmesh::ctl
