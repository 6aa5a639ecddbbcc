// rpc/config: durations, the mesh file's parse errors, typed and checked sections.
#include "zmesh/rpc/config.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <optional>
#include <regex>
#include <string>

#include "zmesh/rpc/host.h"

using namespace zmesh;
using namespace std::chrono_literals;
using rpc::ConfigError;
using rpc::MeshConfig;

namespace {

std::string errorOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ConfigError& e) {
    return e.what();
  }
  FAIL("no ConfigError was thrown");
  return "";
}

const char* kMesh = R"(# a mesh file for tests
notatable = 5

[svc]
name = "alpha"
count = 7
ratio = 0.5
on = true
wait = "250ms"
wait_int = 1500
hosts = ["a", "b", "c"]
empty_list = []
mixed = ["a", 1]
nested = { x = 1 }
negative = -3

[other]
x = 1
)";

MeshConfig mesh() { return MeshConfig::parse(kMesh, "mesh.toml"); }

}  // namespace

TEST_CASE("parseDuration", "[config]") {
  using ms = std::chrono::milliseconds;
  struct Row {
    const char* text;
    std::optional<ms> want;
  };
  const Row rows[] = {
      {"0", ms(0)},
      {"1", ms(1)},
      {"250", ms(250)},
      {"0ms", ms(0)},
      {"250ms", ms(250)},
      {"30s", ms(30'000)},
      {"5m", ms(300'000)},
      {"1h", ms(3'600'000)},
      {"2d", ms(172'800'000)},
      {"007s", ms(7000)},
      {"9223372036854775807", ms(INT64_MAX)},
      {"9223372036854775807ms", ms(INT64_MAX)},
      {"9223372036854775s", ms(9223372036854775000)},
      // malformed
      {"", std::nullopt},
      {"ms", std::nullopt},
      {"s", std::nullopt},
      {"-1", std::nullopt},
      {"-5s", std::nullopt},
      {"+5s", std::nullopt},
      {" 5s", std::nullopt},
      {"5s ", std::nullopt},
      {"5 s", std::nullopt},
      {"5S", std::nullopt},
      {"5MS", std::nullopt},
      {"5sec", std::nullopt},
      {"5ss", std::nullopt},
      {"5w", std::nullopt},
      {"5us", std::nullopt},
      {"1.5s", std::nullopt},
      {"1e3", std::nullopt},
      {"0x10", std::nullopt},
      {"5s5", std::nullopt},
      {"5m30s", std::nullopt},
      {"abc", std::nullopt},
      // overflow: the count, or the count times its unit
      {"9223372036854775808", std::nullopt},
      {"99999999999999999999ms", std::nullopt},
      {"9223372036854776s", std::nullopt},
      {"106751991167301d", std::nullopt},
      {"106751991167d", ms(106751991167LL * 86'400'000)},
  };
  for (auto& row : rows) {
    INFO("'" << row.text << "'");
    auto got = rpc::parseDuration(row.text);
    CHECK(got.has_value() == row.want.has_value());
    if (got && row.want) CHECK(got->count() == row.want->count());
  }
  // Not NUL-terminated: only the view counts.
  std::string backing = "30sXYZ";
  CHECK(rpc::parseDuration(std::string_view(backing).substr(0, 3)) == 30s);
  CHECK(rpc::parseDuration(std::string_view(backing).substr(0, 2)) == 30ms);
}

TEST_CASE("MeshConfig::parse errors name file:line:col", "[config]") {
  struct Row {
    const char* text;
    int line;
  };
  const Row rows[] = {
      {"a = 1\nb = = 2\n", 2},
      {"[svc]\nx = 1\nx = 2\n", 3},  // duplicate key
      {"[svc]\n[svc]\n", 2},         // duplicate table
      {"x = \"unterminated\n", 1},
      {"# comment\n\n\n[broken\n", 4},
      {"a = 1\nb = 2\nc = [1, 2\n", 3},
      {"ok = true\nbad = tru\n", 2},
  };
  for (auto& row : rows) {
    INFO(row.text);
    auto what = errorOf([&] { MeshConfig::parse(row.text, "deploy/mesh.toml"); });
    std::smatch m;
    REQUIRE(std::regex_search(what, m, std::regex(R"(^deploy/mesh\.toml:(\d+):(\d+): .+)")));
    CHECK(std::stoi(m[1]) == row.line);
    CHECK(std::stoi(m[2]) >= 1);
  }
}

TEST_CASE("MeshConfig::load reads a file and names it in errors", "[config]") {
  const char* tmp = std::getenv("TMPDIR");
  std::string dir =
      std::string(tmp && *tmp ? tmp : "/tmp") + "/zmesh-config-test-" + std::to_string(::getpid());
  std::string good = dir + "-good.toml", bad = dir + "-bad.toml";
  std::ofstream(good) << kMesh;
  std::ofstream(bad) << "[svc]\nname = \"x\"\ncount = = 1\n";

  auto config = MeshConfig::load(good);
  CHECK(config.source() == good);
  CHECK(config.section("svc").string("name", "") == "alpha");

  auto what = errorOf([&] { MeshConfig::load(bad); });
  CHECK(std::regex_search(what, std::regex("^" + bad + R"(:3:\d+: )")));

  auto missing = errorOf([&] { MeshConfig::load(dir + "-does-not-exist.toml"); });
  CHECK(missing.starts_with(dir + "-does-not-exist.toml"));

  ::unlink(good.c_str());
  ::unlink(bad.c_str());
}

TEST_CASE("ConfigSection reads values of the right type", "[config]") {
  auto config = mesh();
  CHECK(config.source() == "mesh.toml");
  auto s = config.section("svc");
  CHECK(s.present());
  CHECK(s.name() == "svc");
  CHECK(s.string("name", "x") == "alpha");
  CHECK(s.integer("count", 0, 1, 10) == 7);
  CHECK(s.integer("count", 0, 7, 7) == 7);  // bounds are inclusive
  CHECK(s.integer("negative", 0, -3, 0) == -3);
  CHECK(s.boolean("on", false));
  CHECK(s.duration("wait", 1s) == 250ms);
  CHECK(s.duration("wait_int", 1s) == 1500ms);  // a bare integer is milliseconds
  CHECK(s.strings("hosts") == std::vector<std::string>{"a", "b", "c"});
  CHECK(s.strings("empty_list").empty());
  CHECK(s.has("name"));
  CHECK_FALSE(s.has("nope"));

  // Missing keys fall back, whatever the fallback is.
  CHECK(s.string("nope", "fb") == "fb");
  CHECK(s.integer("nope", 99, 1, 10) == 99);
  CHECK_FALSE(s.boolean("nope", false));
  CHECK(s.duration("nope", 3s) == 3s);
  CHECK(s.strings("nope").empty());

  CHECK(config.has("svc"));
  CHECK(config.has("other"));
  CHECK_FALSE(config.has("absent"));
}

TEST_CASE("a missing section reads as empty", "[config]") {
  auto config = mesh();
  auto s = config.section("absent");
  CHECK_FALSE(s.present());
  CHECK_FALSE(s.has("name"));
  CHECK(s.string("name", "fb") == "fb");
  CHECK(s.integer("count", 5, 1, 10) == 5);
  CHECK(s.duration("wait", 2s) == 2s);
  CHECK_NOTHROW(s.rejectUnknown({}));

  auto empty = MeshConfig::parse("", "(none)");
  CHECK_FALSE(empty.section("svc").present());
}

TEST_CASE("a key that is no table as a section is an error", "[config]") {
  auto what = errorOf([] { mesh().section("notatable"); });
  CHECK(what.starts_with("mesh.toml: notatable: "));
  CHECK_THAT(what, Catch::Contains("expected a table"));
}

TEST_CASE("type and range errors name section.key", "[config]") {
  auto config = mesh();
  auto s = config.section("svc");
  struct Row {
    std::function<void()> read;
    const char* key;
    const char* reason;
  };
  const Row rows[] = {
      {[&] { s.string("count", ""); }, "count", "expected a string, got 7"},
      {[&] { s.string("on", ""); }, "on", "expected a string"},
      {[&] { s.string("hosts", ""); }, "hosts", "expected a string"},
      {[&] { s.integer("count", 0, 1, 6); }, "count", "expected an integer from 1 to 6, got 7"},
      {[&] { s.integer("count", 0, 8, 100); }, "count", "expected an integer from 8 to 100, got 7"},
      {[&] { s.integer("negative", 0, 0, 10); }, "negative", "got -3"},
      {[&] { s.integer("name", 0, 0, 10); }, "name",
       "expected an integer from 0 to 10, got 'alpha'"},
      {[&] { s.integer("ratio", 0, 0, 10); }, "ratio", "got 0.5"},
      {[&] { s.integer("on", 0, 0, 10); }, "on", "got true"},
      {[&] { s.boolean("name", false); }, "name", "expected true or false, got 'alpha'"},
      {[&] { s.boolean("count", false); }, "count", "expected true or false, got 7"},
      {[&] { s.duration("name", 1s); }, "name", "expected a duration"},
      {[&] { s.duration("negative", 1s); }, "negative", "expected a duration"},
      {[&] { s.duration("ratio", 1s); }, "ratio", "expected a duration"},
      {[&] { s.duration("on", 1s); }, "on", "expected a duration"},
      {[&] { s.strings("name"); }, "name", "expected an array of strings"},
      {[&] { s.strings("mixed"); }, "mixed", "got an element 1"},
      {[&] { s.strings("nested"); }, "nested", "expected an array of strings"},
  };
  for (auto& row : rows) {
    auto what = errorOf(row.read);
    INFO(what);
    CHECK_THAT(what, Catch::Matches(std::string("mesh\\.toml:[0-9]+: svc\\.") + row.key + ": .*"));
    CHECK_THAT(what, Catch::Contains(row.reason));
  }
}

TEST_CASE("fail() names the file, the line and section.key", "[config]") {
  auto config = MeshConfig::parse("[svc]\nname = \"a\"\n\ncount = 7\n", "mesh.toml");
  auto s = config.section("svc");
  CHECK(errorOf([&] { s.fail("count", "must be even"); }) ==
        "mesh.toml:4: svc.count: must be even");
  // A missing key: the line of its table.
  CHECK(errorOf([&] { s.fail("limit", "is required"); }) == "mesh.toml:1: svc.limit: is required");
}

TEST_CASE("rejectUnknown", "[config]") {
  auto config = mesh();
  auto s = config.section("other");
  CHECK_NOTHROW(s.rejectUnknown({"x"}));
  CHECK_NOTHROW(s.rejectUnknown({"a", "x", "b"}));

  auto what = errorOf([&] { s.rejectUnknown({"y", "z"}); });
  CHECK_THAT(what, Catch::StartsWith("mesh.toml:") && Catch::Contains(": other.x: unknown key"));
  CHECK_THAT(what, Catch::Contains("y, z"));
  CHECK_THROWS_AS(s.rejectUnknown({}), ConfigError);

  // A typo in a key is caught, not silently defaulted.
  auto typo = MeshConfig::parse("[idgen]\nblock_sise = 10\n", "mesh.toml");
  auto t = errorOf([&] { typo.section("idgen").rejectUnknown({"block_size", "endpoint"}); });
  CHECK(t.starts_with("mesh.toml:2: idgen.block_sise: unknown key"));
  CHECK_THAT(t, Catch::Contains("block_size, endpoint"));

  // Every key of [svc] known: fine.
  CHECK_NOTHROW(
      config.section("svc").rejectUnknown({"name", "count", "ratio", "on", "wait", "wait_int",
                                           "hosts", "empty_list", "mixed", "nested", "negative"}));
}

TEST_CASE("MeshConfig moves", "[config]") {
  auto a = mesh();
  MeshConfig b = std::move(a);
  CHECK(b.section("svc").integer("count", 0, 0, 100) == 7);
  a = std::move(b);
  CHECK(a.section("svc").string("name", "") == "alpha");
}

TEST_CASE("durations are range-checked: no zero where it breaks, no silent 32-bit narrowing",
          "[config]") {
  auto config = rpc::MeshConfig::parse(
      "[svc]\nzero = \"0ms\"\nhuge = \"100d\"\nbig = 99999999999999\nok = \"2h\"\n", "mesh.toml");
  auto s = config.section("svc");
  CHECK(s.duration("zero", 1s) == 0ms);  // 0 is allowed unless the caller says otherwise
  CHECK_THAT(errorOf([&] { s.duration("zero", 1s, 1ms); }),
             Catch::Contains("svc.zero: expected a duration from 1ms to 1d, got '0ms'"));
  CHECK_THAT(errorOf([&] { s.duration("huge", 1s); }),
             Catch::Contains("svc.huge: expected a duration from 0ms to 1d"));
  CHECK_THAT(errorOf([&] { s.duration("big", 1s); }), Catch::Contains("svc.big: expected"));
  CHECK(s.duration("ok", 1s) == 2h);
  CHECK_THAT(errorOf([&] { s.duration("ok", 1s, 0ms, 1h); }),
             Catch::Contains("expected a duration from 0ms to 1h"));
}

TEST_CASE("every service takes the host's limits and anything else is named", "[config]") {
  auto config = rpc::MeshConfig::parse(
      "[svc]\nmax_in_flight = 5\nretry_window_max_bytes = 65536\nmax_inflight = 5\n", "mesh.toml");
  auto s = config.section("svc");
  CHECK_THAT(errorOf([&] { s.rejectUnknown({"own"}, rpc::kHostKeys); }),
             Catch::Contains("svc.max_inflight: unknown key") && Catch::Contains("max_in_flight"));
  rpc::CommonFlags flags;
  auto o = rpc::hostOptionsFrom(config, "svc", flags, "tcp://127.0.0.1:0");
  CHECK(o.server.maxInFlight == 5);
  CHECK(o.server.retryWindowMaxBytes == 65536);
  auto bad = rpc::MeshConfig::parse("[svc]\nmax_deadline = \"1s\"\ndefault_deadline = \"2s\"\n",
                                    "mesh.toml");
  CHECK_THAT(errorOf([&] { rpc::hostOptionsFrom(bad, "svc", flags, "tcp://127.0.0.1:0"); }),
             Catch::Contains("svc.default_deadline: expected a duration from 1ms to 1s"));
}

TEST_CASE("paths in a mesh file are relative to its directory", "[config]") {
  char dirTemplate[] = "/tmp/zmesh-config-XXXXXX";
  REQUIRE(::mkdtemp(dirTemplate) != nullptr);
  std::string dir = dirTemplate;
  std::ofstream(dir + "/mesh.toml") << "[svc]\ndata = \"var/svc\"\nabs = \"/srv/x\"\n";
  auto config = MeshConfig::load(dir + "/mesh.toml");
  auto s = config.section("svc");
  CHECK(s.path("data", "") == dir + "/var/svc");
  CHECK(s.path("abs", "") == "/srv/x");
  CHECK(s.path("missing", "var/default") == dir + "/var/default");
  // Text that is no file has no directory: relative stays relative.
  CHECK(MeshConfig::parse("[svc]\ndata = \"var/svc\"\n", "text").section("svc").path("data", "") ==
        "var/svc");
  std::remove((dir + "/mesh.toml").c_str());
  ::rmdir(dir.c_str());
}

TEST_CASE("sizes in bytes: integers or units of 1024, range-checked", "[config]") {
  CHECK(rpc::parseBytes("0") == 0u);
  CHECK(rpc::parseBytes("4096") == 4096u);
  CHECK(rpc::parseBytes("512kb") == 512u << 10);
  CHECK(rpc::parseBytes("64MB") == uint64_t{64} << 20);
  CHECK(rpc::parseBytes("64MiB") == uint64_t{64} << 20);
  CHECK(rpc::parseBytes("2gb") == uint64_t{2} << 30);
  CHECK(rpc::parseBytes("1g") == uint64_t{1} << 30);
  for (const char* bad :
       {"", "mb", "-1", "1.5mb", "1 mb", "1tb", "64mbx", "99999999999999999999", "17179869184gb"})
    CHECK_FALSE(rpc::parseBytes(bad).has_value());

  auto config = rpc::MeshConfig::parse(
      "[svc]\nint = 100\ntext = \"1mb\"\nbad = \"1 mb\"\nneg = -1\nlist = [1]\n", "mesh.toml");
  auto s = config.section("svc");
  CHECK(s.bytes("int", 7, 0, 1000) == 100u);
  CHECK(s.bytes("text", 7, 0, UINT64_MAX) == 1u << 20);
  CHECK(s.bytes("missing", 7, 0, 10) == 7u);
  CHECK_THAT(errorOf([&] { s.bytes("bad", 7, 0, UINT64_MAX); }),
             Catch::Contains("svc.bad: expected a size such as 4096"));
  CHECK_THAT(errorOf([&] { s.bytes("neg", 7, 0, UINT64_MAX); }), Catch::Contains("svc.neg"));
  CHECK_THAT(errorOf([&] { s.bytes("list", 7, 0, UINT64_MAX); }), Catch::Contains("svc.list"));
  CHECK_THAT(errorOf([&] { s.bytes("text", 7, 0, 1000); }),
             Catch::Contains("svc.text: expected a size from 0 to 1000 bytes, got '1mb'"));
}
