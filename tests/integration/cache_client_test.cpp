// CacheClient against a real zmesh-cache: every method of the stub, binary
// keys and values, the conditions and TTLs, scan as a range, the errors the
// service answers as RpcError; the cache known to schema-driven calls; and
// zmeshctl call cache … with Data given and printed as text or base64.
#include <capnp/message.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>
#include <set>
#include <thread>

#include "process.h"
#include "zmesh/client.h"
#include "zmesh/idl/cache.capnp.h"

using namespace zmesh;
using namespace zmesh::testing;
using Catch::Matchers::Contains;
using Clock = std::chrono::steady_clock;

namespace {

// zmesh-cache alone, persisting nothing, with a mesh file that names it.
// `section` goes into [cache].
struct CacheService {
  TempDir dir;
  std::string path = dir.path() + "/mesh.toml";
  std::string endpoint = tcpEndpoint(freePort());
  std::optional<Process> process;

  explicit CacheService(const std::string& section = "", std::vector<std::string> extraArgs = {}) {
    std::ofstream(path) << "[cache]\nendpoint = \"" << endpoint << "\"\n" << section << "\n";
    std::vector<std::string> argv{bin("zmesh-cache"), "--config", path,
                                  "--broker",         "none",     "--memory"};
    argv.insert(argv.end(), extraArgs.begin(), extraArgs.end());
    process.emplace(argv, dir.path() + "/cache.log");
    requireHealthy(*process, endpoint, 15s);
  }
};

StatusCode codeOf(const std::function<void()>& call) {
  try {
    call();
  } catch (const RpcError& e) {
    return e.code();
  }
  return StatusCode::OK;
}

// Bytes no text encoding would survive: NULs, a lone 0xFF, a newline.
const std::string kBinary("\x00\xff\x01\n\x00z", 6);

}  // namespace

TEST_CASE("CacheClient: through Mesh as API.md writes it", "[cache][client]") {
  CacheService service;
  zmesh::Mesh mesh{service.path};
  CHECK(mesh.cache().set("user:1", "alice", {.ttl = 5s}));
  CHECK(mesh.cache().get("user:1") == std::optional<std::string>("alice"));
  CHECK_FALSE(mesh.cache().get("user:2"));
  // A scan straight off a temporary stub: the scan keeps a copy of it.
  std::vector<std::string> keys;
  for (const std::string& key : mesh.cache().scan("user:")) keys.push_back(key);
  CHECK(keys == std::vector<std::string>{"user:1"});
}

TEST_CASE("CacheClient: get, set, del and exists with binary keys and values", "[cache][client]") {
  CacheService service;
  zmesh::Mesh mesh{service.path};
  auto cache = mesh.cache();

  CHECK(cache.set(kBinary, kBinary));
  auto got = cache.get(kBinary);
  REQUIRE(got);
  CHECK(*got == kBinary);
  CHECK(got->size() == 6);
  CHECK(cache.exists(kBinary));
  // A key one byte shorter is another key.
  CHECK_FALSE(cache.exists(kBinary.substr(0, 5)));

  // An empty value is a hit, not a miss.
  CHECK(cache.set("empty", ""));
  auto empty = cache.get("empty");
  REQUIRE(empty);
  CHECK(empty->empty());

  // Overwritten.
  CHECK(cache.set("k", "one"));
  CHECK(cache.set("k", "two"));
  CHECK(cache.get("k") == std::optional<std::string>("two"));

  CHECK(cache.del("k"));
  CHECK_FALSE(cache.del("k"));
  CHECK_FALSE(cache.get("k"));
  CHECK_FALSE(cache.exists("k"));
  CHECK(cache.del(kBinary));
  CHECK_FALSE(cache.exists(kBinary));
}

TEST_CASE("CacheClient: set's conditions and keepTtl", "[cache][client]") {
  CacheService service;
  zmesh::Mesh mesh{service.path};
  auto cache = mesh.cache();

  // NX: only when absent.
  CHECK(cache.set("nx", "first", {.condition = SetCondition::ifAbsent}));
  CHECK_FALSE(cache.set("nx", "second", {.condition = SetCondition::ifAbsent}));
  CHECK(cache.get("nx") == std::optional<std::string>("first"));
  // XX: only when present.
  CHECK_FALSE(cache.set("xx", "v", {.condition = SetCondition::ifPresent}));
  CHECK_FALSE(cache.exists("xx"));
  CHECK(cache.set("nx", "third", {.condition = SetCondition::ifPresent}));
  CHECK(cache.get("nx") == std::optional<std::string>("third"));

  // keepTtl: a new value, the old expiry.
  CHECK(cache.set("kt", "a", {.ttl = 60s}));
  CHECK(cache.set("kt", "b", {.keepTtl = true}));
  CHECK(cache.get("kt") == std::optional<std::string>("b"));
  auto kept = cache.ttl("kt");
  REQUIRE(kept);
  CHECK(*kept > 50s);
  CHECK(*kept <= 60s);
  // Without keepTtl a set drops the expiry.
  CHECK(cache.set("kt", "c"));
  CHECK(cache.ttl("kt") == CacheClient::kNoExpiry);
}

TEST_CASE("CacheClient: ttl, expire and expiry", "[cache][client]") {
  CacheService service;
  zmesh::Mesh mesh{service.path};
  auto cache = mesh.cache();

  CHECK_FALSE(cache.ttl("absent"));  // nullopt: no such key
  CHECK(cache.set("forever", "v"));
  auto forever = cache.ttl("forever");
  REQUIRE(forever);
  CHECK(*forever == CacheClient::kNoExpiry);

  CHECK(cache.set("short", "v", {.ttl = 10s}));
  auto left = cache.ttl("short");
  REQUIRE(left);
  CHECK(*left > 9s);
  CHECK(*left <= 10s);

  CHECK(cache.expire("forever", 30s));
  auto now = cache.ttl("forever");
  REQUIRE(now);
  CHECK(*now > 29s);
  CHECK(*now <= 30s);
  CHECK(cache.expire("forever", 0ms));  // 0: persists again
  CHECK(cache.ttl("forever") == CacheClient::kNoExpiry);
  CHECK_FALSE(cache.expire("absent", 1s));

  // A key whose time runs out is gone for every read.
  CHECK(cache.set("brief", "v", {.ttl = 150ms}));
  CHECK(cache.exists("brief"));
  std::this_thread::sleep_for(400ms);
  CHECK_FALSE(cache.get("brief"));
  CHECK_FALSE(cache.exists("brief"));
  CHECK_FALSE(cache.ttl("brief"));
  CHECK(cache.set("brief2", "v"));
  CHECK(cache.expire("brief2", 150ms));
  std::this_thread::sleep_for(400ms);
  CHECK_FALSE(cache.exists("brief2"));
  CHECK(cache.stats().expired >= 2);
}

TEST_CASE("CacheClient: mget and mset", "[cache][client]") {
  CacheService service("max_value_bytes = 1024\nmax_batch = 10");
  zmesh::Mesh mesh{service.path};
  auto cache = mesh.cache();

  cache.mset({{"a", "1"}, {kBinary, kBinary}, {"c", ""}});
  auto got = cache.mget({"a", "missing", kBinary, "c", "a"});
  REQUIRE(got.size() == 5);
  CHECK(got[0] == std::optional<std::string>("1"));
  CHECK_FALSE(got[1]);
  CHECK(got[2] == std::optional<std::string>(kBinary));
  CHECK(got[3] == std::optional<std::string>(""));
  CHECK(got[4] == std::optional<std::string>("1"));
  CHECK(cache.mget({}).empty());

  cache.mset({{"t1", "x"}, {"t2", "y"}}, 20s);
  for (auto key : {"t1", "t2"}) {
    auto left = cache.ttl(key);
    REQUIRE(left);
    CHECK(*left > 19s);
    CHECK(*left <= 20s);
  }

  // All or nothing: one value over max_value_bytes, and none is written.
  CHECK(codeOf([&] {
          cache.mset({{"n1", "ok"}, {"n2", std::string(1025, 'v')}, {"n3", "ok"}});
        }) == StatusCode::PAYLOAD_TOO_LARGE);
  CHECK_FALSE(cache.exists("n1"));
  CHECK_FALSE(cache.exists("n3"));

  // At most max_batch keys or entries.
  std::vector<std::string> eleven;
  std::vector<std::pair<std::string, std::string>> elevenEntries;
  for (int i = 0; i < 11; ++i) {
    eleven.push_back("b" + std::to_string(i));
    elevenEntries.emplace_back("b" + std::to_string(i), "v");
  }
  CHECK(codeOf([&] { cache.mget(eleven); }) == StatusCode::INVALID_ARGUMENT);
  CHECK(codeOf([&] { cache.mset(elevenEntries); }) == StatusCode::INVALID_ARGUMENT);
  CHECK_FALSE(cache.exists("b0"));
}

TEST_CASE("CacheClient: incr and decr", "[cache][client]") {
  CacheService service;
  zmesh::Mesh mesh{service.path};
  auto cache = mesh.cache();

  CHECK(cache.incr("n") == 1);  // absent counts from 0
  CHECK(cache.incr("n", 41) == 42);
  CHECK(cache.decr("n") == 41);
  CHECK(cache.decr("n", 50) == -9);
  CHECK(cache.incr("n", -1) == -10);
  CHECK(cache.get("n") == std::optional<std::string>("-10"));
  CHECK(cache.ttl("n") == CacheClient::kNoExpiry);  // an absent key gets no TTL

  // A present key keeps its TTL.
  CHECK(cache.set("withttl", "5", {.ttl = 30s}));
  CHECK(cache.incr("withttl") == 6);
  auto left = cache.ttl("withttl");
  REQUIRE(left);
  CHECK(*left > 25s);

  // Not a decimal 64-bit integer, or an overflow: FAILED_PRECONDITION, and nothing changes.
  CHECK(cache.set("text", "abc"));
  CHECK(codeOf([&] { cache.incr("text"); }) == StatusCode::FAILED_PRECONDITION);
  CHECK(cache.get("text") == std::optional<std::string>("abc"));
  CHECK(cache.set("big", "9223372036854775807"));
  CHECK(codeOf([&] { cache.incr("big"); }) == StatusCode::FAILED_PRECONDITION);
  CHECK(cache.get("big") == std::optional<std::string>("9223372036854775807"));
  CHECK(cache.set("small", "-9223372036854775808"));
  CHECK(codeOf([&] { cache.decr("small"); }) == StatusCode::FAILED_PRECONDITION);
  // decr by -2^63 cannot be negated: refused here, before any call.
  CHECK(codeOf([&] { cache.decr("n", std::numeric_limits<int64_t>::min()); }) ==
        StatusCode::INVALID_ARGUMENT);
  CHECK(cache.get("n") == std::optional<std::string>("-10"));
}

TEST_CASE("CacheClient: scan as a range and page by page", "[cache][client]") {
  CacheService service;
  zmesh::Mesh mesh{service.path};
  auto cache = mesh.cache();
  std::set<std::string> users;
  for (int i = 0; i < 250; ++i) {
    std::string key = "user:" + std::to_string(i);
    CHECK(cache.set(key, "v"));
    users.insert(key);
  }
  for (int i = 0; i < 50; ++i) CHECK(cache.set("order:" + std::to_string(i), "v"));
  CHECK(cache.set(std::string("user:\0bin", 9), "v"));
  users.insert(std::string("user:\0bin", 9));

  SECTION("range-for, a few keys a call") {
    std::set<std::string> seen;
    size_t visits = 0;
    for (const std::string& key : cache.scan("user:", 7)) {
      CHECK(key.rfind("user:", 0) == 0);
      seen.insert(key);
      ++visits;
    }
    CHECK(seen == users);  // each at least once
    CHECK(visits >= users.size());
    // The iterator as the standard's algorithms see it.
    static_assert(std::input_iterator<CacheScan::iterator>);
    static_assert(std::sentinel_for<std::default_sentinel_t, CacheScan::iterator>);
    auto scan = cache.scan("order:");
    CHECK(std::ranges::distance(scan.begin(), scan.end()) >= 50);
  }
  SECTION("every key with an empty prefix; none with a prefix nothing has") {
    size_t n = 0;
    for (auto& key : cache.scan()) n += !key.empty();
    CHECK(n >= 301);
    size_t none = 0;
    for (auto& key : cache.scan("nothing:")) none += !key.empty();
    CHECK(none == 0);
  }
  SECTION("page by page until the cursor is empty") {
    std::set<std::string> seen;
    std::string cursor;
    int calls = 0;
    do {
      auto page = cache.scanPage("user:", cursor, 50);
      for (auto& k : page.keys) seen.insert(k);
      cursor = page.cursor;
      REQUIRE(++calls < 1000);
    } while (!cursor.empty());
    CHECK(seen == users);
    CHECK(calls >= 2);
  }
  SECTION("a cursor the service did not hand out") {
    CHECK(codeOf([&] { cache.scanPage("user:", "not-a-cursor", 10); }) ==
          StatusCode::INVALID_ARGUMENT);
    // And through the range: the failure comes out of the loop, not a hang.
    CHECK(codeOf([&] {
            for (auto& key : cache.scan("user:", 0)) (void)key;
          }) != StatusCode::OK);
  }
}

TEST_CASE("CacheClient: stats", "[cache][client]") {
  CacheService service("policy = \"lfu\"\nmax_memory = \"64mb\"");
  zmesh::Mesh mesh{service.path};
  auto cache = mesh.cache();
  CHECK(cache.set("a", "1"));
  CHECK(cache.set("b", "2"));
  CHECK(cache.get("a"));
  CHECK(cache.get("b"));
  CHECK_FALSE(cache.get("c"));
  auto s = cache.stats();
  CHECK(s.policy == "lfu");
  CHECK(s.keys == 2);
  CHECK(s.hits == 2);
  CHECK(s.misses == 1);
  CHECK(s.evictions == 0);
  CHECK(s.refusedFull == 0);
  CHECK(s.memoryLimit == 64ull << 20);
  CHECK(s.memoryUsed > 0);
  CHECK(s.memoryUsed < s.memoryLimit);
  CHECK(s.fsync == "off");  // --memory: nothing persisted
  CHECK(s.persistenceLagRecords == 0);
}

TEST_CASE("CacheClient: the service's limits come back as RpcError", "[cache][client]") {
  CacheService service("max_key_bytes = 64\nmax_value_bytes = 1024",
                       {"--policy", "noeviction", "--max-memory", "65536"});
  zmesh::Mesh mesh{service.path};
  auto cache = mesh.cache();
  CHECK(codeOf([&] { cache.set("", "v"); }) == StatusCode::INVALID_ARGUMENT);
  CHECK(codeOf([&] { cache.incr("", 1); }) == StatusCode::INVALID_ARGUMENT);
  CHECK(codeOf([&] { cache.set(std::string(65, 'k'), "v"); }) == StatusCode::PAYLOAD_TOO_LARGE);
  CHECK(codeOf([&] {
          cache.mset({{std::string(65, 'k'), "v"}});
        }) == StatusCode::PAYLOAD_TOO_LARGE);
  CHECK(cache.set(std::string(64, 'k'), "v"));
  // A read of a key no write can store is the caller's mistake, not a miss.
  CHECK(codeOf([&] { cache.get(""); }) == StatusCode::INVALID_ARGUMENT);
  CHECK(codeOf([&] { cache.get(std::string(65, 'k')); }) == StatusCode::PAYLOAD_TOO_LARGE);
  CHECK(codeOf([&] { cache.exists(std::string(65, 'k')); }) == StatusCode::PAYLOAD_TOO_LARGE);
  CHECK(codeOf([&] { cache.del(std::string(65, 'k')); }) == StatusCode::PAYLOAD_TOO_LARGE);
  CHECK(codeOf([&] { cache.ttl(std::string(65, 'k')); }) == StatusCode::PAYLOAD_TOO_LARGE);
  CHECK(codeOf([&] { cache.mget({"a", std::string(65, 'k')}); }) == StatusCode::PAYLOAD_TOO_LARGE);
  // keepTtl with a ttl, and a TTL past the service's longest (10 years).
  CHECK(codeOf([&] { cache.set("k", "v", {.ttl = 1s, .keepTtl = true}); }) ==
        StatusCode::INVALID_ARGUMENT);
  CHECK(codeOf([&] { cache.set("k", "v", {.ttl = std::chrono::hours(24 * 365 * 11)}); }) ==
        StatusCode::INVALID_ARGUMENT);
  CHECK(codeOf([&] { cache.set("k", std::string(1025, 'v')); }) == StatusCode::PAYLOAD_TOO_LARGE);
  CHECK(cache.set("k", std::string(1024, 'v')));

  // Full under noeviction: INSUFFICIENT_STORAGE, counted; nothing was evicted.
  StatusCode refused = StatusCode::OK;
  int stored = 0;
  for (int i = 0; i < 1000 && refused == StatusCode::OK; ++i) {
    refused = codeOf([&] { cache.set("fill:" + std::to_string(i), std::string(1000, 'f')); });
    if (refused == StatusCode::OK) ++stored;
  }
  CHECK(refused == StatusCode::INSUFFICIENT_STORAGE);
  CHECK(stored > 0);
  auto s = cache.stats();
  CHECK(s.policy == "noeviction");
  CHECK(s.refusedFull >= 1);
  CHECK(s.evictions == 0);
  CHECK(s.memoryUsed <= s.memoryLimit);
  CHECK(cache.exists("fill:0"));
  // Room again after a delete.
  for (int i = 0; i < stored; ++i) CHECK(cache.del("fill:" + std::to_string(i)));
  CHECK(cache.set("fill:again", std::string(1000, 'f')));
}

TEST_CASE("CacheClient: schema-driven calls know the cache service", "[cache][client]") {
  auto interfaces = interfacesOf("cache");
  REQUIRE(interfaces.size() == 2);
  CHECK(interfaces[0].getProto().getId() == capnp::typeId<idl::Cache>());
  DynamicCall set("cache", "set");
  CHECK(set.paramsSchema().findFieldByName("ttlMs") != nullptr);
  // Cache.stats comes before Admin.stats by name; health is Admin's.
  CHECK(DynamicCall("cache", "stats").interface().getProto().getId() ==
        capnp::typeId<idl::Cache>());
  CHECK(DynamicCall("cache", "health").interface().getProto().getId() !=
        capnp::typeId<idl::Cache>());
  CHECK(defaultEndpoint("cache") == "tcp://127.0.0.1:7140");

  // cache.* events render by their schema, not as an unknown body type.
  capnp::MallocMessageBuilder message;
  auto event = message.initRoot<idl::CacheEvent>();
  event.setKey(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>("k1"), 2));
  event.setKeyHash(9007199254740993ull);
  event.setReason(idl::ChangeReason::EXPIRED);
  event.setCount(3);
  capnp::MallocMessageBuilder any;
  any.initRoot<capnp::AnyPointer>().setAs<idl::CacheEvent>(event.asReader());
  auto json =
      eventBodyJson(capnp::typeId<idl::CacheEvent>(), any.getRoot<capnp::AnyPointer>().asReader());
  CHECK_THAT(json, Contains("\"keyHash\":\"9007199254740993\""));  // 64-bit: a string
  CHECK_THAT(json, Contains("\"reason\":\"expired\""));
  CHECK_THAT(json, Contains("\"count\":3"));
  CHECK_THAT(json, !Contains("bodyType"));
}

namespace {

struct CtlResult {
  int exitCode = -1;
  std::string output;  // stdout and stderr together
};

CtlResult zmeshctl(const CacheService& service, std::vector<std::string> args) {
  static int runs = 0;
  std::string out = service.dir.path() + "/zmeshctl-" + std::to_string(++runs) + ".out";
  std::vector<std::string> argv{bin("zmeshctl"), "-c", service.path, "call", "cache"};
  argv.insert(argv.end(), args.begin(), args.end());
  Process p(argv, out);
  auto deadline = Clock::now() + 20s;
  while (p.running() && Clock::now() < deadline) std::this_thread::sleep_for(10ms);
  int status = p.stop(1s);
  CtlResult r;
  if (WIFEXITED(status)) r.exitCode = WEXITSTATUS(status);
  r.output = readText(out);
  return r;
}

}  // namespace

TEST_CASE("zmeshctl call cache: Data as text or base64", "[cache][zmeshctl]") {
  CacheService service;
  zmesh::Mesh mesh{service.path};
  auto cache = mesh.cache();

  auto set = zmeshctl(service, {"set", "user:1", "alice", "--ttl", "5000"});
  INFO(set.output);
  CHECK(set.exitCode == 0);
  CHECK_THAT(set.output, Contains("stored: true"));
  auto left = cache.ttl("user:1");  // --ttl named ttlMs
  REQUIRE(left);
  CHECK(*left > 4s);

  auto get = zmeshctl(service, {"get", "user:1"});
  INFO(get.output);
  CHECK(get.exitCode == 0);
  CHECK_THAT(get.output, Contains("found: true") && Contains("value: alice\n"));
  auto json = zmeshctl(service, {"get", "user:1", "--json"});
  CHECK_THAT(json.output, Contains(R"({"found":true,"value":"alice"})"));

  // Bytes that are not printable text come out as base64, and go in so.
  CHECK(cache.set("bin", kBinary));
  auto bin = zmeshctl(service, {"get", "bin"});
  INFO(bin.output);
  CHECK_THAT(bin.output, Contains("value: base64:AP8BCgB6\n"));
  CHECK(zmeshctl(service, {"set", "base64:AP8=", "base64:AP8BCgB6"}).exitCode == 0);
  CHECK(cache.get(std::string("\x00\xff", 2)) == std::optional<std::string>(kBinary));
  // Text that begins with "base64:" is printed as base64 too, so it reads back as itself.
  CHECK(cache.set("tricky", "base64:AAAA"));
  CHECK_THAT(zmeshctl(service, {"get", "tricky"}).output,
             Contains("value: base64:YmFzZTY0OkFBQUE=\n"));
  // UTF-8 text prints as itself; a control character makes it base64.
  CHECK(cache.set("utf8", "gr\xc3\xbc\xc3\x9f"));
  CHECK_THAT(zmeshctl(service, {"get", "utf8"}).output, Contains("value: gr\xc3\xbc\xc3\x9f\n"));
  CHECK(cache.set("tab", "a\tb"));
  CHECK_THAT(zmeshctl(service, {"get", "tab"}).output, Contains("value: base64:YQli\n"));
  auto badBase64 = zmeshctl(service, {"set", "k", "base64:!!"});
  CHECK(badBase64.exitCode == 2);
  CHECK_THAT(badBase64.output, Contains("base64"));

  // The condition by its name; other methods by their fields.
  auto nx = zmeshctl(service, {"set", "user:1", "bob", "--condition", "if-absent"});
  INFO(nx.output);
  CHECK_THAT(nx.output, Contains("stored: false"));
  CHECK(cache.get("user:1") == std::optional<std::string>("alice"));
  auto badCondition = zmeshctl(service, {"set", "user:1", "bob", "--condition", "sometimes"});
  CHECK(badCondition.exitCode == 2);
  CHECK_THAT(badCondition.output, Contains("always, ifAbsent, ifPresent"));

  CHECK_THAT(zmeshctl(service, {"incr", "visits", "5"}).output, Contains("value: 5"));
  CHECK_THAT(zmeshctl(service, {"incr", "visits", "--by", "-2"}).output, Contains("value: 3"));
  CHECK_THAT(zmeshctl(service, {"ttl", "visits"}).output,
             Contains("found: true") && Contains("ttlMs: -1"));
  CHECK_THAT(zmeshctl(service, {"exists", "visits"}).output, Contains("found: true"));
  CHECK_THAT(zmeshctl(service, {"expire", "visits", "60000"}).output, Contains("found: true"));

  auto mset = zmeshctl(service, {"mset", "m1=one,m2=base64:AAE=", "--ttl", "60000"});
  INFO(mset.output);
  CHECK(mset.exitCode == 0);
  CHECK(cache.get("m2") == std::optional<std::string>(std::string("\x00\x01", 2)));
  auto mget = zmeshctl(service, {"mget", "m1,m2,nope", "--json"});
  INFO(mget.output);
  CHECK_THAT(mget.output, Contains(R"("value":"one")") && Contains(R"("value":"base64:AAE=")") &&
                              Contains(R"("found":false)"));

  auto scan = zmeshctl(service, {"scan", "user:", "--json"});
  INFO(scan.output);
  CHECK(scan.exitCode == 0);
  CHECK_THAT(scan.output, Contains(R"("user:1")"));

  auto params =
      zmeshctl(service, {"set", "--params", R"({"key":"p","value":"base64:AP8=","ttlMs":"9000"})"});
  INFO(params.output);
  CHECK(params.exitCode == 0);
  CHECK(cache.get("p") == std::optional<std::string>(std::string("\x00\xff", 2)));

  auto stats = zmeshctl(service, {"stats", "--json"});
  INFO(stats.output);
  CHECK(stats.exitCode == 0);
  CHECK_THAT(stats.output, Contains(R"("policy":)") && Contains(R"("hits":)"));

  CHECK_THAT(zmeshctl(service, {"del", "user:1"}).output, Contains("existed: true"));
  CHECK_THAT(zmeshctl(service, {"get", "user:1"}).output, Contains("found: false"));
}
