// Cache routes (API.md "Cache"). Values travel as raw bytes both ways (any
// bytes, NULs included); the key is the path segment, percent-decoded, so a
// binary key is reachable as /v1/cache/%00%FF.
#include <boost/json.hpp>
#include <cstdint>
#include <limits>

#include "exchange.h"
#include "routes/routes.h"
#include "zmesh/idl/cache.capnp.h"

namespace zmesh::gateway {

namespace {

namespace json = boost::json;
using idl::Cache;

uint64_t cacheInterface() { return capnp::typeId<Cache>(); }
uint16_t method(const char* name) { return rpc::methodOrdinal(capnp::Schema::from<Cache>(), name); }

// A first segment that holds the params, a value included: no second
// allocation for a large value, and no 8 KiB zeroed for a small one.
unsigned paramsWords(size_t payloadBytes) { return static_cast<unsigned>(payloadBytes / 8 + 32); }

capnp::Data::Reader bytes(std::string_view s) {
  return {reinterpret_cast<const capnp::byte*>(s.data()), s.size()};
}

// The {key} capture, or a 400 answered here and an empty view. The router
// lets an empty segment reach the handler for this (/v1/cache/).
std::optional<std::string_view> keyOf(Exchange& ex) {
  auto key = ex.param("key");
  if (key.empty()) {
    ex.fail(rpc::StatusCode::INVALID_ARGUMENT,
            "the key is empty: /v1/cache/{key} needs a key of at least one byte "
            "(percent-encoded in the path)");
    return std::nullopt;
  }
  return key;
}

// PUT /v1/cache/{key}?ttl_ms=N, body = the value's bytes (Content-Type ignored): 204.
void put(const std::shared_ptr<Exchange>& ex) {
  auto key = keyOf(*ex);
  if (!key) return;
  auto ttl = ex->queryInteger("ttl_ms", 0, 1, std::numeric_limits<int64_t>::max());
  if (!ttl) return;
  const std::string& value = ex->request().body();
  capnp::MallocMessageBuilder params(paramsWords(key->size() + value.size()));
  auto p = params.initRoot<Cache::SetParams>();
  p.setKey(bytes(*key));
  p.setValue(bytes(value));
  p.setTtlMs(static_cast<uint64_t>(*ttl));
  static const uint16_t kSet = method("set");
  ex->call(cacheInterface(), kSet, params,
           [](Exchange& ex, rpc::Reply&) { ex.reply(emptyResponse(http::status::no_content)); });
}

// GET /v1/cache/{key}: 200 with the bytes; 404 on a miss.
void get(const std::shared_ptr<Exchange>& ex) {
  auto key = keyOf(*ex);
  if (!key) return;
  capnp::MallocMessageBuilder params(paramsWords(key->size()));
  params.initRoot<Cache::GetParams>().setKey(bytes(*key));
  static const uint16_t kGet = method("get");
  ex->call(cacheInterface(), kGet, params, [](Exchange& ex, rpc::Reply& reply) {
    auto r = reply.results<Cache::GetResults>();
    if (!r.getFound())
      return ex.fail(rpc::StatusCode::NOT_FOUND, "no value under this key (absent or expired)");
    auto value = r.getValue();
    ex.reply(textResponse(http::status::ok, "application/octet-stream",
                          std::string(reinterpret_cast<const char*>(value.begin()), value.size())));
  });
}

// DELETE /v1/cache/{key}: 204; 404 when there was no such key.
void del(const std::shared_ptr<Exchange>& ex) {
  auto key = keyOf(*ex);
  if (!key) return;
  capnp::MallocMessageBuilder params(paramsWords(key->size()));
  params.initRoot<Cache::DelParams>().setKey(bytes(*key));
  static const uint16_t kDel = method("del");
  ex->call(cacheInterface(), kDel, params, [](Exchange& ex, rpc::Reply& reply) {
    if (!reply.results<Cache::DelResults>().getExisted())
      return ex.fail(rpc::StatusCode::NOT_FOUND, "no such key (absent or expired)");
    ex.reply(emptyResponse(http::status::no_content));
  });
}

// GET /v1/cache?stats: the counters; counts are JSON numbers.
void stats(const std::shared_ptr<Exchange>& ex) {
  if (!ex->query("stats"))
    return ex->fail(rpc::StatusCode::INVALID_ARGUMENT,
                    "GET /v1/cache answers the statistics: ask for /v1/cache?stats (a value is "
                    "at /v1/cache/{key})");
  capnp::MallocMessageBuilder params(8);
  params.initRoot<Cache::StatsParams>();
  static const uint16_t kStats = method("stats");
  ex->call(cacheInterface(), kStats, params, [](Exchange& ex, rpc::Reply& reply) {
    auto s = reply.results<Cache::StatsResults>().getStats();
    JsonScratch scratch;
    json::object out(scratch.storage());
    out["policy"] = std::string_view(s.getPolicy().cStr(), s.getPolicy().size());
    out["keys"] = s.getKeys();
    out["memory_used"] = s.getMemoryUsed();
    out["memory_limit"] = s.getMemoryLimit();
    out["hits"] = s.getHits();
    out["misses"] = s.getMisses();
    out["evictions"] = s.getEvictions();
    out["expired"] = s.getExpired();
    out["refused_full"] = s.getRefusedFull();
    out["persistence_lag_records"] = s.getPersistenceLagRecords();
    out["fsync"] = std::string_view(s.getFsync().cStr(), s.getFsync().size());
    ex.replyJson(http::status::ok, out);
  });
}

}  // namespace

void addCacheRoutes(Router& router) {
  // PUT and DELETE honour Idempotency-Key (a retried DELETE gets its first
  // 204 again, not a 404); GETs are resent on a lost connection, as reads are.
  Route putRoute{http::verb::put, "/v1/cache/{key}", Scope::kCache, "cache", true, put};
  Route getRoute{http::verb::get, "/v1/cache/{key}", Scope::kCache, "cache", false, get};
  Route delRoute{http::verb::delete_, "/v1/cache/{key}", Scope::kCache, "cache", true, del};
  for (Route* r : {&putRoute, &getRoute, &delRoute}) {
    r->emptyCaptures = true;  // /v1/cache/ is a 400 naming the empty key, not a 404
    router.add(std::move(*r));
  }
  router.add({http::verb::get, "/v1/cache", Scope::kCache, "cache", false, stats});
}

}  // namespace zmesh::gateway
