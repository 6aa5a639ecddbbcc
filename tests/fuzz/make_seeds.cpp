// Writes the seed corpora under <dir>/<harness>/: valid messages and messages
// built to be almost right (wrong pointer kinds, unterminated Text, far
// pointers to missing segments, capabilities, huge lists, deep nesting). The
// committed tests/fuzz/corpus is its output plus whatever crashes were found.
//   zmesh-fuzz-seeds tests/fuzz/corpus
#include <capnp/message.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "bloom_filter.h"
#include "checkshapes.capnp.h"
#include "crafted.h"
#include "testsvc.capnp.h"
#include "wire.h"
#include "zmesh/idl/cache.capnp.h"
#include "zmesh/idl/idgen.capnp.h"
#include "zmesh/idl/lock.capnp.h"
#include "zmesh/idl/ratelimit.capnp.h"
#include "zmesh/rpc/client.h"
#include "zmesh/rpc/frame.h"
#include "zmesh/storage/record_log.h"

namespace {

using namespace zmesh;
namespace crafted = zmesh::testing::crafted;
using crafted::Bytes;
using test::TestService;

std::filesystem::path root;

void write(const std::string& harness, const std::string& name, const void* data, size_t size) {
  auto dir = root / harness;
  std::filesystem::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary).write(static_cast<const char*>(data), size);
}
void write(const std::string& harness, const std::string& name, const Bytes& b) {
  write(harness, name, b.data(), b.size());
}
void write(const std::string& harness, const std::string& name, const std::string& s) {
  write(harness, name, s.data(), s.size());
}

Bytes cat(const zmq::message_t& head, const Bytes& tail) {
  Bytes out = crafted::bytesOf(head);
  out.insert(out.end(), tail.begin(), tail.end());
  return out;
}

std::string slug(crafted::Damage d) {
  std::string s = crafted::name(d);
  for (auto& c : s)
    if (c == ' ') c = '-';
  return s;
}

void requestSeeds() {
  auto method = [](const char* name) {
    return rpc::methodOrdinal(capnp::Schema::from<TestService>(), name);
  };
  auto header = [&](const char* m, bool retryable = false, const char* trace = "") {
    rpc::wire::RequestHeader h;
    h.requestId = 1;
    h.interfaceId = capnp::typeId<TestService>();
    h.methodId = method(m);
    h.budgetMs = 1000;
    h.retryable = retryable;
    h.traceId = trace;
    return rpc::wire::encodeRequest(h, zmq::message_t());
  };
  capnp::MallocMessageBuilder echo;
  echo.initRoot<TestService::EchoParams>().setText("hello");
  echo.getRoot<TestService::EchoParams>().initPad(3);
  Bytes echoParams = crafted::bytesOf(rpc::toFrame(echo));
  write("request", "echo", cat(header("echo"), echoParams));
  write("request", "echo-retryable-traced", cat(header("echo", true, "trace-1"), echoParams));
  write("request", "bump", crafted::bytesOf(header("bump")));
  write("request", "crash", crafted::bytesOf(header("crash")));
  capnp::MallocMessageBuilder fail;
  fail.initRoot<TestService::FailParams>().setCode(5);
  fail.getRoot<TestService::FailParams>().setMessage("no");
  write("request", "fail", cat(header("fail"), crafted::bytesOf(rpc::toFrame(fail))));
  capnp::MallocMessageBuilder park;
  park.initRoot<TestService::ParkParams>().setKey("k");
  write("request", "park", cat(header("park", true), crafted::bytesOf(rpc::toFrame(park))));
  write("request", "list-as-root", crafted::listAsRoot());
  write("request", "echo-params-list-as-root", cat(header("echo"), crafted::listAsRoot()));
  write("request", "echo-params-deep", cat(header("echo"), crafted::deepNesting(100)));
  for (auto d : crafted::kAllDamage) {
    capnp::MallocMessageBuilder p;
    p.initRoot<TestService::EchoParams>().setText("hello");
    write("request", "echo-text-" + slug(d), cat(header("echo"), crafted::damaged(p, 0, d)));
    if (d == crafted::Damage::kUnterminatedText || d == crafted::Damage::kListPointer) continue;
    for (unsigned field = 0; field < 3; ++field) {
      capnp::MallocMessageBuilder h;
      auto b = h.initRoot<idl::RpcHeader>();
      b.setInterfaceId(capnp::typeId<TestService>());
      b.setTraceId("t");
      b.setIdempotencyKey("k");
      b.setMessage("m");
      write("request", "header-" + std::to_string(field) + "-" + slug(d),
            cat(zmq::message_t(), crafted::damaged(h, field, d)));
    }
  }
}

void replySeeds() {
  auto results = [](const char* text) {
    capnp::MallocMessageBuilder m;
    m.initRoot<TestService::EchoResults>().setText(text);
    return crafted::bytesOf(rpc::toFrame(m));
  };
  auto mode = [](uint8_t m, Bytes rest) {
    rest.insert(rest.begin(), m);
    return rest;
  };
  write("reply", "ok-results", mode(1, results("fine")));
  write("reply", "ok-no-results", mode(1, {}));
  write("reply", "not-found", mode(3, Bytes{5}));
  write("reply", "whole-list-as-root", mode(0, crafted::listAsRoot()));
  write("reply", "whole-valid",
        mode(0, crafted::bytesOf(rpc::wire::encodeReply(1, rpc::StatusCode::OK, "", nullptr))));
  for (auto d : crafted::kAllDamage) {
    capnp::MallocMessageBuilder m;
    m.initRoot<TestService::EchoResults>().setText("fine");
    write("reply", "results-text-" + slug(d), mode(1, crafted::damaged(m, 0, d)));
    capnp::MallocMessageBuilder h;
    auto b = h.initRoot<idl::RpcHeader>();
    b.setStatus(rpc::StatusCode::NOT_FOUND);
    b.setMessage("gone");
    if (d != crafted::Damage::kListPointer)
      write("reply", "header-message-" + slug(d), mode(0, crafted::damaged(h, 2, d)));
  }
  write("reply", "results-deep", mode(1, crafted::deepNesting(100)));
}

void eventSeeds() {
  auto event = [](const std::string& topic, capnp::MallocMessageBuilder& m) {
    Bytes out{static_cast<uint8_t>(topic.size())};
    out.insert(out.end(), topic.begin(), topic.end());
    auto body = crafted::bytesOf(rpc::toFrame(m));
    out.insert(out.end(), body.begin(), body.end());
    return out;
  };
  auto build = [](capnp::MallocMessageBuilder& m, const std::string& topic) {
    auto e = m.initRoot<idl::Event>();
    e.setPublisher("idgen@seed");
    e.setIncarnation(1);
    e.setSequence(1);
    e.setTopic(topic);
    e.setBodyType(capnp::typeId<idl::BlockReserved>());
    auto b = e.getBody().initAs<idl::BlockReserved>();
    b.setNamespace("orders");
    b.setLimit(10);
  };
  capnp::MallocMessageBuilder valid;
  build(valid, "idgen.block");
  write("event", "block", event("idgen.block", valid));
  capnp::MallocMessageBuilder other;
  build(other, "idgen.other");
  write("event", "topic-mismatch", event("idgen.block", other));
  Bytes list{1, 't'};
  auto root = crafted::listAsRoot();
  list.insert(list.end(), root.begin(), root.end());
  write("event", "list-as-root", list);
  for (auto d : crafted::kAllDamage) {
    for (unsigned field : {0u, 1u}) {  // publisher, topic
      capnp::MallocMessageBuilder m;
      build(m, "t");
      Bytes out{1, 't'};
      auto bytes = crafted::damaged(m, field, d);
      out.insert(out.end(), bytes.begin(), bytes.end());
      write("event", "field-" + std::to_string(field) + "-" + slug(d), out);
    }
  }
}

void configSeeds(const std::string& sourceDir) {
  std::ifstream in(sourceDir + "/deploy/local/mesh.toml");
  std::string mesh((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  write("config", "mesh", mesh);
  write("config", "bad-types",
        std::string("[idgen]\nendpoint = 5\nmax_in_flight = \"many\"\nretry_window = \"-1s\"\n"));
  write("config", "huge-durations",
        std::string("[idgen]\ndefault_deadline = \"99999999999d\"\nstop_grace = 99999999999999\n"));
  write("config", "not-toml", std::string("[idgen\nendpoint = "));
  write("config", "bad-rules",
        std::string("[ratelimit.rules.r]\nalgorithm = \"gcra\"\nrate = \"0/s\"\ndescriptors = "
                    "[\"k\", \"k\"]\noverrides = [{ descriptors = { k = 5 }, limit = -1 }]\n"));
}

void journalSeeds() {
  auto record = [](auto fill) {
    capnp::MallocMessageBuilder m;
    fill(m);
    auto b = crafted::bytesOf(rpc::toFrame(m));
    return std::string(b.begin(), b.end());
  };
  auto reserve = [](capnp::MallocMessageBuilder& m) {
    auto r = m.initRoot<idl::IdGenLogRecord>().initReserve();
    r.setNamespace("orders");
    r.setLimit(1000);
  };
  // The first two bytes: the snapshot's length (0 here: a log only).
  auto logOnly = [](const std::vector<std::string>& payloads) {
    std::string out(2, '\0');
    out += storage::logFileHeader();
    for (auto& p : payloads) storage::appendRecord(out, p);
    return out;
  };
  std::string good = record(reserve);
  std::string bound =
      record([](auto& m) { m.template initRoot<idl::IdGenLogRecord>().setTimeBound(5); });
  write("journal", "log", logOnly({good, bound}));
  for (auto d : crafted::kAllDamage) {
    capnp::MallocMessageBuilder m;
    reserve(m);
    auto bad = crafted::damaged(m, 0, d);
    write("journal", "log-record-" + slug(d), logOnly({good, std::string(bad.begin(), bad.end())}));
  }
  write("journal", "log-torn", logOnly({good}).substr(0, 2 + 8 + 12 + 3));
  // A snapshot (header record, then the payload) and a log behind it.
  std::string payload = record([](auto& m) {
    auto s = m.template initRoot<idl::IdGenSnapshot>();
    s.setTimeBound(7);
    auto n = s.initNamespaces(1);
    n[0].setName("orders");
    n[0].setLimit(100);
  });
  std::string header(20, '\0');
  uint32_t version = 1;
  uint64_t nextGeneration = 1, size = payload.size();
  std::memcpy(header.data(), &version, 4);
  std::memcpy(header.data() + 4, &nextGeneration, 8);
  std::memcpy(header.data() + 12, &size, 8);
  std::string snapshot = storage::logFileHeader();
  storage::appendRecord(snapshot, header);
  storage::appendRecord(snapshot, payload);
  std::string both(2, '\0');
  both[0] = static_cast<char>(snapshot.size() >> 8);
  both[1] = static_cast<char>(snapshot.size() & 0xff);
  both += snapshot;
  both += storage::logFileHeader();
  storage::appendRecord(both, good);
  write("journal", "snapshot-and-log", both);

  // The rate limiter's overrides: set and clear, and a set damaged every way.
  auto set = [](capnp::MallocMessageBuilder& m) {
    auto r = m.initRoot<idl::RateLimitLogRecord>().initSet();
    r.setRule("tr");
    auto o = r.initOverride();
    auto d = o.initDescriptors(1);
    d[0].setKey("tenant");
    d[0].setValue("acme");
    o.setLimit(10);
  };
  std::string clear = record([](auto& m) {
    auto r = m.template initRoot<idl::RateLimitLogRecord>().initClear();
    r.setRule("tr");
    auto d = r.initDescriptors(1);
    d[0].setKey("tenant");
    d[0].setValue("acme");
  });
  write("journal", "ratelimit-log", logOnly({record(set), clear, record(set)}));
  for (auto d : crafted::kAllDamage) {
    capnp::MallocMessageBuilder m;
    set(m);
    auto bad = crafted::damaged(m, 0, d);
    write("journal", "ratelimit-record-" + slug(d),
          logOnly({record(set), std::string(bad.begin(), bad.end())}));
  }

  // The lock service's: a token block, a session, grants (one tied to it),
  // a renewal, a free, the session closed; and a grant damaged every way.
  auto grant = [](capnp::MallocMessageBuilder& m) {
    auto g = m.initRoot<idl::LockLogRecord>().initGrant();
    g.setName("report");
    g.setOwner("alice");
    g.setToken(2);
    g.setExpiresAtMs(1'700'000'060'000);
  };
  auto lockRecord = [&](auto fill) {
    return record([&](auto& m) { fill(m.template initRoot<idl::LockLogRecord>()); });
  };
  std::vector<std::string> lockLog{
      lockRecord([](auto r) { r.setTokens(100); }),
      lockRecord([](auto r) {
        r.initOpenSession().setId(1);
        r.getOpenSession().setTimeoutMs(10000);
      }),
      record(grant),
      lockRecord([](auto r) {
        auto g = r.initGrant();
        g.setName("pool");
        g.setOwner("bob");
        g.setToken(3);
        g.setPermits(2);
        g.setSession(1);
        g.setExpiresAtMs(1'700'000'001'000);
      }),
      lockRecord([](auto r) {
        r.initRenew().setToken(2);
        r.getRenew().setExpiresAtMs(1'700'000'090'000);
      }),
      lockRecord([](auto r) { r.setFree(3); }),
      lockRecord([](auto r) { r.setCloseSession(1); }),
  };
  write("journal", "lock-log", logOnly(lockLog));
  for (auto d : crafted::kAllDamage) {
    capnp::MallocMessageBuilder m;
    grant(m);
    auto bad = crafted::damaged(m, 0, d);
    write("journal", "lock-record-" + slug(d),
          logOnly({lockLog[0], std::string(bad.begin(), bad.end())}));
  }

  // The cache's: sets (binary key, an expiry, an expired one), a del; a
  // snapshot of length-prefixed sets with a log behind it; a set damaged
  // every way.
  auto cacheSet = [](capnp::MallocMessageBuilder& m) {
    auto r = m.initRoot<idl::CacheLogRecord>().initSet();
    r.setKey(capnp::Data::Reader(reinterpret_cast<const kj::byte*>("k\0y"), 3));
    r.setValue(capnp::Data::Reader(reinterpret_cast<const kj::byte*>("v"), 1));
    r.setExpiresAtMs(1'800'000'000'000);
  };
  auto cacheRecord = [&](auto fill) {
    return record([&](auto& m) { fill(m.template initRoot<idl::CacheLogRecord>()); });
  };
  auto data = [](const char* text) {
    return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(text), std::strlen(text));
  };
  std::vector<std::string> cacheLog{
      record(cacheSet),
      cacheRecord([&](auto r) {
        auto set = r.initSet();
        set.setKey(data("user:1"));
        set.setValue(data("alice"));
      }),
      cacheRecord([&](auto r) {
        auto set = r.initSet();
        set.setKey(data("old"));
        set.setValue(data("gone"));
        set.setExpiresAtMs(1000);
      }),
      cacheRecord([&](auto r) { r.setDel(data("user:1")); }),
      cacheRecord([&](auto r) {  // an mset and the eviction it made room with
        auto batch = r.initBatch(2);
        batch[0].setDel(data("old"));
        auto set = batch[1].initSet();
        set.setKey(data("user:2"));
        set.setValue(data("bob"));
      }),
  };
  write("journal", "cache-log", logOnly(cacheLog));
  for (auto d : crafted::kAllDamage) {
    capnp::MallocMessageBuilder m;
    cacheSet(m);
    auto bad = crafted::damaged(m, 0, d);
    write("journal", "cache-record-" + slug(d),
          logOnly({cacheLog[1], std::string(bad.begin(), bad.end())}));
  }
  std::string cachePayload;
  for (size_t i = 0; i < 2; ++i) {
    const std::string& entry = cacheLog[i];
    for (int b = 0; b < 4; ++b)
      cachePayload.push_back(static_cast<char>((entry.size() >> (8 * b)) & 0xff));
    cachePayload += entry;
  }
  std::string cacheHeader(20, '\0');
  uint64_t cacheSize = cachePayload.size();
  std::memcpy(cacheHeader.data(), &version, 4);
  std::memcpy(cacheHeader.data() + 4, &nextGeneration, 8);
  std::memcpy(cacheHeader.data() + 12, &cacheSize, 8);
  std::string cacheSnapshot = storage::logFileHeader();
  storage::appendRecord(cacheSnapshot, cacheHeader);
  storage::appendRecord(cacheSnapshot, cachePayload);
  std::string cacheBoth(2, '\0');
  cacheBoth[0] = static_cast<char>(cacheSnapshot.size() >> 8);
  cacheBoth[1] = static_cast<char>(cacheSnapshot.size() & 0xff);
  cacheBoth += cacheSnapshot;
  cacheBoth += storage::logFileHeader();
  storage::appendRecord(cacheBoth, cacheLog[3]);
  write("journal", "cache-snapshot-and-log", cacheBoth);
}

void httpSeeds() {
  auto put = [](const std::string& name, const std::string& text) { write("http", name, text); };
  put("healthz", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  put("ids",
      "POST /v1/ids/orders?count=3 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
      "fuzz-token\r\nContent-Length: 0\r\n\r\n");
  put("ids-idempotent",
      "POST /v1/ids/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
      "fuzz-token\r\nIdempotency-Key: k1\r\nContent-Length: 0\r\n\r\n");
  put("decode",
      "GET /v1/snowflake/251626037446709248 HTTP/1.1\r\nHost: x\r\nAuthorization: "
      "Bearer fuzz-token\r\n\r\n");
  put("events",
      "GET /v1/events?topic=idgen.&access_token=fuzz-token HTTP/1.1\r\nHost: "
      "x\r\nLast-Event-ID: 5-abc\r\n\r\n");
  put("pipelined",
      "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: "
      "x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  // Rate-limit bodies: right, and almost right in one place each.
  auto post = [&](const std::string& name, const std::string& target, const std::string& body,
                  const char* method = "POST", const char* headers = "") {
    put(name, std::string(method) + " " + target +
                  " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer fuzz-token\r\n" + headers +
                  "Content-Type: application/json\r\nContent-Length: " +
                  std::to_string(body.size()) + "\r\n\r\n" + body);
  };
  const std::string check = "/v1/ratelimit/check";
  post("rl-check", check, R"({"rule":"api","key":"user:1","cost":1})");
  post("rl-check-descriptors", check,
       R"({"rule":"tenant_route","descriptors":{"tenant":"acme","route":"/orders"}})");
  post("rl-check-wrong-type", check, R"({"rule":"tenant_route","descriptors":{"tenant":5}})");
  post("rl-check-cost-fraction", check, R"({"rule":"api","key":"k","cost":1.5})");
  post("rl-check-cost-huge", check, R"({"rule":"api","key":"k","cost":1e300})");
  post("rl-check-duplicate", check, R"({"rule":"api","rule":"burst","key":"k"})");
  post("rl-check-nested", check,
       "{\"rule\":" + std::string(200, '[') + std::string(200, ']') + "}");
  post("rl-check-unknown", check, R"({"rule":"api","key":"k","costs":2})");
  post("rl-check-not-object", check, R"(["api"])");
  post("rl-check-truncated", check, R"({"rule":"api","key":)");
  post("rl-override", "/v1/ratelimit/overrides/tenant_route",
       R"({"descriptors":{"tenant":"acme"},"limit":1000})", "PUT");
  post("rl-override-negative", "/v1/ratelimit/overrides/api",
       R"({"descriptors":{"key":"vip"},"limit":-1})", "PUT");
  put("rl-rules",
      "GET /v1/ratelimit/rules HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer fuzz-token\r\n\r\n");
  // Lock bodies and queries: right, and almost right in one place each (a
  // wrong type per field, tokens as numbers, out-of-range integers).
  const std::string lock = "/v1/locks/report";
  post("lock-acquire", lock, R"({"owner":"alice","ttl_ms":30000})");
  post("lock-acquire-all-fields", lock,
       R"({"owner":"alice","ttl_ms":30000,"wait_ms":0,"mode":"shared","permits":3,"session":"7"})");
  post("lock-acquire-idempotent", lock, R"({"owner":"alice","ttl_ms":30000})", "POST",
       "Idempotency-Key: k2\r\n");
  post("lock-acquire-name-encoded", "/v1/locks/a%2Fb%00", R"({"owner":"alice","ttl_ms":1})");
  post("lock-acquire-owner-number", lock, R"({"owner":5,"ttl_ms":30000})");
  post("lock-acquire-owner-empty", lock, R"({"owner":"","ttl_ms":30000})");
  post("lock-acquire-owner-missing", lock, R"({"ttl_ms":30000})");
  post("lock-acquire-ttl-string", lock, R"({"owner":"alice","ttl_ms":"30s"})");
  post("lock-acquire-ttl-negative", lock, R"({"owner":"alice","ttl_ms":-5})");
  post("lock-acquire-ttl-zero", lock, R"({"owner":"alice","ttl_ms":0})");
  post("lock-acquire-ttl-fraction", lock, R"({"owner":"alice","ttl_ms":1.5})");
  post("lock-acquire-ttl-missing", lock, R"({"owner":"alice"})");
  post("lock-acquire-wait-string", lock, R"({"owner":"alice","ttl_ms":1000,"wait_ms":"1s"})");
  // Accepted and cut to the gateway's longest wait: the call outlasts the input.
  post("lock-acquire-wait-huge", lock,
       R"({"owner":"alice","ttl_ms":1000,"wait_ms":18446744073709551615})");
  post("lock-acquire-wait-past-64-bits", lock,
       R"({"owner":"alice","ttl_ms":1000,"wait_ms":18446744073709551616})");
  post("lock-acquire-wait-exponent", lock, R"({"owner":"alice","ttl_ms":1000,"wait_ms":1e300})");
  post("lock-acquire-mode-unknown", lock, R"({"owner":"alice","ttl_ms":1000,"mode":"upgrade"})");
  post("lock-acquire-mode-number", lock, R"({"owner":"alice","ttl_ms":1000,"mode":1})");
  post("lock-acquire-mode-case", lock, R"({"owner":"alice","ttl_ms":1000,"mode":"Shared"})");
  post("lock-acquire-permits-string", lock,
       R"({"owner":"alice","ttl_ms":1000,"mode":"shared","permits":"3"})");
  post("lock-acquire-permits-past-32-bits", lock,
       R"({"owner":"alice","ttl_ms":1000,"mode":"shared","permits":4294967296})");
  post("lock-acquire-session-number", lock, R"({"owner":"alice","ttl_ms":1000,"session":7})");
  post("lock-acquire-session-signed", lock, R"({"owner":"alice","ttl_ms":1000,"session":"-7"})");
  post("lock-acquire-unknown", lock, R"({"owner":"alice","ttl_ms":1000,"ttl":5})");
  post("lock-acquire-duplicate", lock, R"({"owner":"alice","owner":"bob","ttl_ms":1000})");
  post("lock-acquire-array", lock, R"(["alice",30000])");
  post("lock-acquire-null", lock, "null");
  post("lock-acquire-empty", lock, "");
  post("lock-acquire-truncated", lock, R"({"owner":"alice","ttl_ms":)");
  const std::string renew = lock + "/renew";
  post("lock-renew", renew, R"({"owner":"alice","token":"42","ttl_ms":30000})");
  post("lock-renew-token-number", renew, R"({"owner":"alice","token":42,"ttl_ms":30000})");
  post("lock-renew-token-hex", renew, R"({"owner":"alice","token":"0x2a","ttl_ms":30000})");
  post("lock-renew-token-past-64-bits", renew,
       R"({"owner":"alice","token":"18446744073709551616","ttl_ms":30000})");
  post("lock-renew-token-missing", renew, R"({"owner":"alice","ttl_ms":30000})");
  post("lock-renew-owner-array", renew, R"({"owner":["alice"],"token":"42","ttl_ms":30000})");
  post("lock-renew-ttl-negative", renew, R"({"owner":"alice","token":"42","ttl_ms":-1})");
  post("lock-renew-array", renew, R"([{"owner":"alice","token":"42","ttl_ms":30000}])");
  const std::string validate = lock + "/validate";
  post("lock-validate", validate, R"({"token":"42"})");
  post("lock-validate-token-number", validate, R"({"token":42})");
  post("lock-validate-token-exponent", validate, R"({"token":1e19})");
  post("lock-validate-token-empty", validate, R"({"token":""})");
  post("lock-validate-array", validate, R"(["42"])");
  post("lock-release", lock + "?owner=alice&token=42", "", "DELETE");
  post("lock-release-token-bad", lock + "?owner=alice&token=4x2", "", "DELETE");
  post("lock-release-token-negative", lock + "?owner=alice&token=-42", "", "DELETE");
  post("lock-release-token-past-64-bits", lock + "?owner=alice&token=18446744073709551616", "",
       "DELETE");
  post("lock-release-token-encoded", lock + "?owner=al%20ice&token=%34%32", "", "DELETE");
  post("lock-release-token-empty", lock + "?owner=alice&token=", "", "DELETE");
  post("lock-release-owner-missing", lock + "?token=42", "", "DELETE");
  put("lock-inspect",
      "GET /v1/locks/report HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer fuzz-token\r\n\r\n");
  post("lock-wrong-method", lock, R"({"owner":"alice","ttl_ms":30000})", "PUT");
  // Cache requests: right, and almost right in one place each (the key's
  // encoding, ttl_ms, the body's framing, the route's shape). Bodies are raw bytes.
  auto cache = [&](const std::string& name, const char* method, const std::string& target,
                   const std::string& body, const std::string& headers = "") {
    put(name, std::string(method) + " " + target +
                  " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer fuzz-token\r\n" + headers +
                  "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
  };
  const std::string binary("\x00\xff\x01\r\n\x00", 6);
  cache("cache-put", "PUT", "/v1/cache/user:1", "alice",
        "Content-Type: application/octet-stream\r\n");
  cache("cache-put-ttl", "PUT", "/v1/cache/user:1?ttl_ms=5000", "alice");
  cache("cache-put-binary", "PUT", "/v1/cache/%00%FFk%2Fx", binary);
  cache("cache-put-idempotent", "PUT", "/v1/cache/user:1", "alice", "Idempotency-Key: k3\r\n");
  cache("cache-put-json-type", "PUT", "/v1/cache/user:1", "{not json",
        "Content-Type: application/json\r\n");
  cache("cache-put-empty-body", "PUT", "/v1/cache/user:1", "");
  cache("cache-put-ttl-zero", "PUT", "/v1/cache/k?ttl_ms=0", "v");
  cache("cache-put-ttl-negative", "PUT", "/v1/cache/k?ttl_ms=-5", "v");
  cache("cache-put-ttl-fraction", "PUT", "/v1/cache/k?ttl_ms=1.5", "v");
  cache("cache-put-ttl-unit", "PUT", "/v1/cache/k?ttl_ms=5s", "v");
  cache("cache-put-ttl-empty", "PUT", "/v1/cache/k?ttl_ms=", "v");
  cache("cache-put-ttl-no-value", "PUT", "/v1/cache/k?ttl_ms", "v");
  cache("cache-put-ttl-exponent", "PUT", "/v1/cache/k?ttl_ms=1e3", "v");
  cache("cache-put-ttl-max", "PUT", "/v1/cache/k?ttl_ms=9223372036854775807", "v");
  cache("cache-put-ttl-past-63-bits", "PUT", "/v1/cache/k?ttl_ms=9223372036854775808", "v");
  cache("cache-put-ttl-twice", "PUT", "/v1/cache/k?ttl_ms=1&ttl_ms=x", "v");
  cache("cache-put-ttl-encoded", "PUT", "/v1/cache/k?ttl%5Fms=%35%30", "v");
  cache("cache-put-key-empty", "PUT", "/v1/cache/", "v");
  cache("cache-put-key-bad-percent", "PUT", "/v1/cache/%ZZ%0", "v");
  cache("cache-put-key-long", "PUT", "/v1/cache/" + std::string(300, 'k'), "v");
  cache("cache-put-over-body-limit", "PUT", "/v1/cache/k", std::string(5000, 'v'));
  put("cache-put-chunked",
      "PUT /v1/cache/k HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer fuzz-token\r\n"
      "Transfer-Encoding: chunked\r\n\r\n3\r\na" +
          std::string(1, '\0') + "b\r\n0\r\n\r\n");
  put("cache-put-no-length",
      "PUT /v1/cache/k HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer fuzz-token\r\n\r\n");
  cache("cache-get", "GET", "/v1/cache/user:1", "");
  cache("cache-get-binary-key", "GET", "/v1/cache/%00", "");
  cache("cache-get-key-empty", "GET", "/v1/cache/", "");
  cache("cache-get-extra-segment", "GET", "/v1/cache/a/b", "");
  cache("cache-get-with-body", "GET", "/v1/cache/k", binary);
  cache("cache-head", "HEAD", "/v1/cache/k", "");
  cache("cache-delete", "DELETE", "/v1/cache/user:1", "");
  cache("cache-delete-idempotent", "DELETE", "/v1/cache/user:1", "", "Idempotency-Key: k4\r\n");
  cache("cache-delete-key-empty", "DELETE", "/v1/cache/", "");
  cache("cache-stats", "GET", "/v1/cache?stats", "");
  cache("cache-stats-value", "GET", "/v1/cache?stats=yes&stats", "");
  cache("cache-stats-missing", "GET", "/v1/cache", "");
  cache("cache-stats-slash", "GET", "/v1/cache/?stats", "");
  cache("cache-wrong-method", "POST", "/v1/cache/k", "v");
  cache("cache-stats-wrong-method", "PUT", "/v1/cache?stats", "v");
  put("invented-method", "BREW /v1/ids/x HTTP/1.1\r\nHost: x\r\n\r\n");
  put("long-uri", "GET /" + std::string(3000, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n");
  put("long-header", "GET / HTTP/1.1\r\nX: " + std::string(3000, 'b') + "\r\n\r\n");
  put("bad-length", "POST /v1/ids/x HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n");
  put("two-lengths", "POST /v1/ids/x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab");
  put("chunked",
      "POST /v1/ids/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nab\r\n0\r\n\r\n");
  put("big-body",
      "POST /v1/ids/x HTTP/1.1\r\nContent-Length: 9000\r\n\r\n" + std::string(9000, 'c'));
  put("bad-version", "GET / HTTP/9.9\r\n\r\n");
  put("percent", "GET /v1/ids/%ZZ%00?count=%FF HTTP/1.1\r\nHost: x\r\n\r\n");
  put("bad-token", "POST /v1/ids/x HTTP/1.1\r\nAuthorization: Bearer \x01\xff\r\n\r\n");
}

// check_fuzz: a byte picking the schema (its index in check_fuzz.cpp's list),
// then the message: well-formed ones of every shape, and some damaged.
void checkSeeds() {
  auto seed = [](uint8_t schema, const Bytes& message) {
    Bytes out{schema};
    out.insert(out.end(), message.begin(), message.end());
    return out;
  };
  capnp::MallocMessageBuilder shapes;
  {
    auto s = shapes.initRoot<test::Shapes>();
    s.setText("text");
    s.initLeaf().setName("leaf");
    s.initSelf().initSelf().setText("self");
    s.initBools(3).set(1, true);
    s.initColors(2).set(1, test::Color::GREEN);
    s.initFloats(2).set(0, 1.5);
    s.initTexts(2).set(1, "t");
    s.initLeaves(2)[1].setName("l");
    s.initNested(2).init(1, 1).set(0, "n");
    s.initDeeper(1).init(0, 1).init(0, 2)[1].setName("deep");
    s.initMatrix(1).init(0, 3).set(2, 2.5f);
    s.getAny().setAs<capnp::Text>("any");
    auto pair = s.initPair();
    pair.setLeft("left");
    pair.initMore().setDeep("deep");
    pair.getMore().initTail(1).set(0, "tail");
    s.getChoice().setFirst("first");
    s.getSettings().setLabel("label");
  }
  write("check", "shapes", seed(0, crafted::bytesOf(rpc::toFrame(shapes))));
  // Pointers 0 (text), 2 (leaf), 13 (leaves), 15 (deeper): each the wrong kind.
  for (auto d : {crafted::Damage::kStructPointer, crafted::Damage::kListPointer})
    for (unsigned field : {0u, 2u, 13u, 15u})
      write("check", "shapes-" + std::to_string(field) + "-" + slug(d),
            seed(0, crafted::damaged(shapes, field, d)));
  write("check", "shapes-0-unterminated",
        seed(0, crafted::damaged(shapes, 0, crafted::Damage::kUnterminatedText)));
  capnp::MallocMessageBuilder kids;
  {
    auto k = kids.initRoot<test::Shapes>().initKids(2);
    k[0].setWord("w");
    k[1].initKids(1)[0].initPair().setOn(
        capnp::Data::Reader(reinterpret_cast<const capnp::byte*>("on"), 2));
  }
  write("check", "shapes-kids", seed(0, crafted::bytesOf(rpc::toFrame(kids))));
  capnp::MallocMessageBuilder batch;
  {
    auto b = batch.initRoot<idl::CacheLogRecord>().initBatch(2);
    auto set = b[0].initSet();
    set.setKey(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>("k"), 1));
    set.setValue(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>("v"), 1));
    b[1].setDel(capnp::Data::Reader(reinterpret_cast<const capnp::byte*>("k"), 1));
  }
  write("check", "cache-batch", seed(1, crafted::bytesOf(rpc::toFrame(batch))));
  write("check", "cache-batch-list-pointer",
        seed(1, crafted::damaged(batch, 0, crafted::Damage::kStructPointer)));
  capnp::MallocMessageBuilder reserve;
  reserve.initRoot<idl::IdGenLogRecord>().initReserve().setNamespace("orders");
  write("check", "idgen-reserve", seed(2, crafted::bytesOf(rpc::toFrame(reserve))));
  capnp::MallocMessageBuilder header;
  {
    auto h = header.initRoot<idl::RpcHeader>();
    h.setTraceId("t");
    h.setIdempotencyKey("k");
    h.setMessage("m");
  }
  write("check", "header", seed(5, crafted::bytesOf(rpc::toFrame(header))));
  write("check", "header-unterminated",
        seed(5, crafted::damaged(header, 1, crafted::Damage::kUnterminatedText)));
}

// bloom_fuzz: a mode byte (0 as is, 1 checksum recomputed, 2 made from n and
// p), then a serialized filter, or n, p and keys.
void bloomSeeds() {
  auto f = *cache::BloomFilter::make(64, 0.01, 1);
  for (int i = 0; i < 40; ++i) f.insert("key:" + std::to_string(i));
  f.insert(std::string("\0\xff", 2));
  f.markDeleted("key:0");
  const std::string bytes = f.serialize();
  write("bloom", "valid", std::string(1, '\0') + bytes);
  write("bloom", "valid-resealed", std::string(1, '\1') + bytes);
  write("bloom", "truncated", std::string(1, '\0') + bytes.substr(0, 40));
  std::string k = bytes;
  k[16] = 31;  // k out of range: refused by its own check once resealed
  write("bloom", "k-resealed", std::string(1, '\1') + k);
  write("bloom", "make", std::string("\2\x40\0\x02", 4) + std::string("key:1key:2key:3\0\xff", 17));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: zmesh-fuzz-seeds <corpus-dir> <source-dir>\n");
    return 2;
  }
  root = argv[1];
  requestSeeds();
  replySeeds();
  eventSeeds();
  configSeeds(argv[2]);
  journalSeeds();
  httpSeeds();
  checkSeeds();
  bloomSeeds();
  return 0;
}
