// Rules from the mesh file: every field, the rate shorthand, overrides, and
// errors that name the line, the key and the reason.
#include <catch2/catch.hpp>

#include "rules_config.h"

namespace zmesh::ratelimit {
namespace {

constexpr Nanos kSecond = 1'000'000'000;

std::vector<Rule> rulesOf(const std::string& text) {
  auto config = rpc::MeshConfig::parse(text, "mesh.toml");
  return parseRules(config.section("ratelimit"));
}

std::string errorOf(const std::string& text) {
  try {
    rulesOf(text);
  } catch (const rpc::ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("the shipped default rules", "[rules]") {
  auto rules = parseRules(rpc::MeshConfig::load(ZMESH_MESH_TOML).section("ratelimit"));
  REQUIRE(rules.size() == 3);
  auto find = [&](const char* name) -> const Rule& {
    for (auto& r : rules)
      if (r.name == name) return r;
    FAIL("no rule " << name);
    return rules[0];
  };
  auto& api = find("api");
  CHECK(api.quota == Quota{Algorithm::slidingWindowLog, 10, 10 * kSecond, 0});
  CHECK(api.descriptors == std::vector<std::string>{"key"});
  auto& burst = find("burst");
  CHECK(burst.quota == Quota{Algorithm::tokenBucket, 1, kSecond, 5});
  auto& tr = find("tenant_route");
  CHECK(tr.quota == Quota{Algorithm::slidingWindowCounter, 100, 60 * kSecond, 0});
  CHECK(tr.descriptors == std::vector<std::string>{"tenant", "route"});
  CHECK_FALSE(tr.shadow);
}

TEST_CASE("every field of a rule", "[rules]") {
  auto rules = rulesOf(R"(
[ratelimit.rules.g]
algorithm = "gcra"
limit = 100
window = "250ms"
burst = 20
descriptors = ["tenant", "route"]
shadow_mode = true
overrides = [{ descriptors = { route = "/b", tenant = "acme" }, limit = 7, burst = 3 },
             { descriptors = { tenant = "big" }, limit = 1000 }]
)");
  REQUIRE(rules.size() == 1);
  auto& g = rules[0];
  CHECK(g.name == "g");
  CHECK(g.quota == Quota{Algorithm::gcra, 100, kSecond / 4, 20});
  CHECK(g.shadow);
  REQUIRE(g.overrides.size() == 2);
  // Kept in the rule's descriptor order, whatever order the file gives.
  CHECK(g.overrides[0].match == Descriptors{{"tenant", "acme"}, {"route", "/b"}});
  CHECK(g.overrides[0].limit == 7);
  CHECK(g.overrides[0].burst == 3);
  CHECK(g.overrides[1].burst == 0);
}

TEST_CASE("rate = \"N/duration\" is limit per window", "[rules]") {
  CHECK(parseRate("10/s") == std::pair<uint64_t, Nanos>{10, kSecond});
  CHECK(parseRate("1/1s") == std::pair<uint64_t, Nanos>{1, kSecond});
  CHECK(parseRate("100/1m") == std::pair<uint64_t, Nanos>{100, 60 * kSecond});
  CHECK(parseRate("5/250ms") == std::pair<uint64_t, Nanos>{5, kSecond / 4});
  CHECK(parseRate("3/h") == std::pair<uint64_t, Nanos>{3, 3600 * kSecond});
  for (auto bad : {"", "10", "/s", "0/s", "-1/s", "10/", "10/1", "10/0s", "10/sec", "x/s", "10/s/2",
                   "1/18446744073711ms", "1/367d", "1.5/s"})
    CHECK_FALSE(parseRate(bad));
}

TEST_CASE("a bad rule names the line, the key and the reason", "[rules]") {
  struct Row {
    std::string body;
    std::string expected;
  };
  const std::string head = "[ratelimit.rules.r]\n";
  const Row rows[] = {
      {"limit = 1\nwindow = \"1s\"\ndescriptors = [\"k\"]\n",
       "mesh.toml:1: ratelimit.rules.r.algorithm: required"},
      {"algorithm = \"leaky\"\nlimit = 1\nwindow = \"1s\"\ndescriptors = [\"k\"]\n",
       "mesh.toml:2: ratelimit.rules.r.algorithm: expected token_bucket"},
      {"algorithm = \"gcra\"\nwindow = \"1s\"\ndescriptors = [\"k\"]\n",
       "ratelimit.rules.r.limit: required (or rate)"},
      {"algorithm = \"gcra\"\nlimit = 1\ndescriptors = [\"k\"]\n",
       "ratelimit.rules.r.window: required (or rate)"},
      {"algorithm = \"gcra\"\nlimit = 0\nwindow = \"1s\"\ndescriptors = [\"k\"]\n",
       "mesh.toml:3: ratelimit.rules.r.limit: expected an integer from 1"},
      {"algorithm = \"gcra\"\nlimit = 1\nwindow = \"0ms\"\ndescriptors = [\"k\"]\n",
       "mesh.toml:4: ratelimit.rules.r.window: expected a duration from 1ms"},
      {"algorithm = \"gcra\"\nlimit = 1\nwindow = \"soon\"\ndescriptors = [\"k\"]\n",
       "ratelimit.rules.r.window: expected a duration"},
      {"algorithm = \"gcra\"\nrate = \"1/s\"\nlimit = 1\ndescriptors = [\"k\"]\n",
       "mesh.toml:3: ratelimit.rules.r.rate: give rate or limit + window, not both"},
      {"algorithm = \"gcra\"\nrate = \"fast\"\ndescriptors = [\"k\"]\n",
       "ratelimit.rules.r.rate: expected \"<count>/<duration>\""},
      {"algorithm = \"gcra\"\nrate = \"1/s\"\n", "ratelimit.rules.r.descriptors: required"},
      {"algorithm = \"gcra\"\nrate = \"1/s\"\ndescriptors = []\n", "descriptors: expected 1 to 8"},
      {"algorithm = \"gcra\"\nrate = \"1/s\"\ndescriptors = [\"k\", \"k\"]\n", "named twice"},
      {"algorithm = \"gcra\"\nrate = \"1/s\"\ndescriptors = [\"k\"]\nlimt = 3\n",
       "mesh.toml:5: ratelimit.rules.r.limt: unknown key"},
      {"algorithm = \"sliding_window_log\"\nlimit = 1000000\nwindow = \"1s\"\ndescriptors = "
       "[\"k\"]\n",
       "ratelimit.rules.r: rule r: "},
      {"algorithm = \"gcra\"\nrate = \"1/s\"\ndescriptors = [\"k\"]\noverrides = [{ descriptors "
       "= { user = \"u\" }, limit = 2 }]\n",
       "ratelimit.rules.r.overrides[0].descriptors: rule r: override: descriptors user are not"},
      {"algorithm = \"gcra\"\nrate = \"1/s\"\ndescriptors = [\"k\"]\noverrides = [{ descriptors "
       "= { k = \"u\" } }]\n",
       "ratelimit.rules.r.overrides[0].limit: required"},
      {"algorithm = \"gcra\"\nrate = \"1/s\"\ndescriptors = [\"k\"]\noverrides = [{ descriptors "
       "= { k = 5 }, limit = 1 }]\n",
       "ratelimit.rules.r.overrides[0].descriptors: expected a table of strings, got k = 5"},
      {"algorithm = \"gcra\"\nrate = \"1/s\"\ndescriptors = [\"k\"]\noverrides = 3\n",
       "ratelimit.rules.r.overrides: expected an array of tables"},
  };
  for (auto& row : rows) {
    auto what = errorOf(head + row.body);
    INFO(row.body);
    CHECK_THAT(what, Catch::Contains(row.expected));
  }
  CHECK_THAT(errorOf("[ratelimit.rules]\nr = 3\n"),
             Catch::Contains("ratelimit.rules.r: expected a table"));
  CHECK_THAT(errorOf("[ratelimit.rules.\"bad name\"]\nalgorithm = \"gcra\"\nrate = \"1/s\"\n"
                     "descriptors = [\"k\"]\n"),
             Catch::Contains("must be 1-64 characters"));
}

TEST_CASE("settings and their bounds", "[rules]") {
  auto config = rpc::MeshConfig::parse(
      "[ratelimit]\nmax_keys = 5\nwhen_full = \"admit\"\nlease_max = \"2s\"\n", "mesh.toml");
  auto s = parseSettings(config.section("ratelimit"));
  CHECK(s.limiter.maxKeys == 5);
  CHECK(s.limiter.whenFull == WhenFull::admitUntracked);
  CHECK(s.leaseMax == 2 * kSecond);
  auto bad = rpc::MeshConfig::parse("[ratelimit]\nwhen_full = \"drop\"\n", "mesh.toml");
  CHECK_THROWS_WITH(parseSettings(bad.section("ratelimit")),
                    Catch::Contains("mesh.toml:2: ratelimit.when_full: expected \"deny\""));
}

}  // namespace zmesh::ratelimit
