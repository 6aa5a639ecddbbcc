// ID generator routes (API.md "ID generator").
#include <boost/json.hpp>

#include "exchange.h"
#include "json_body.h"
#include "routes/routes.h"
#include "zmesh/idl/idgen.capnp.h"

namespace zmesh::gateway {

namespace {

using idl::IdGen;

uint64_t idgenInterface() { return capnp::typeId<IdGen>(); }
uint16_t method(const char* name) { return rpc::methodOrdinal(capnp::Schema::from<IdGen>(), name); }

constexpr int64_t kMaxCount = 10000;
// Small params: a first segment this size, not capnp's default 8 KiB (zeroed per request).
constexpr unsigned kParamsWords = 32;

void next(const std::shared_ptr<Exchange>& ex) {
  auto count = ex->queryInteger("count", 1, 1, kMaxCount);
  if (!count) return;
  capnp::MallocMessageBuilder params(kParamsWords);
  auto p = params.initRoot<IdGen::NextParams>();
  p.setNamespace(std::string(ex->param("namespace")));
  p.setCount(static_cast<uint32_t>(*count));
  static const uint16_t kNext = method("next");
  ex->call(idgenInterface(), kNext, params, [](Exchange& ex, rpc::Reply& reply) {
    auto r = reply.results<IdGen::NextResults>();
    JsonScratch scratch;
    boost::json::object body(scratch.storage());
    body["namespace"] = ex.param("namespace");
    body["first"] = std::to_string(r.getFirst());
    body["count"] = r.getCount();
    ex.replyJson(http::status::ok, body);
  });
}

void snowflake(const std::shared_ptr<Exchange>& ex) {
  auto count = ex->queryInteger("count", 1, 1, kMaxCount);
  if (!count) return;
  capnp::MallocMessageBuilder params(kParamsWords);
  params.initRoot<IdGen::SnowflakeParams>().setCount(static_cast<uint32_t>(*count));
  static const uint16_t kSnowflake = method("snowflake");
  ex->call(idgenInterface(), kSnowflake, params, [](Exchange& ex, rpc::Reply& reply) {
    JsonScratch scratch;
    boost::json::array ids(scratch.storage());
    for (auto id : reply.results<IdGen::SnowflakeResults>().getIds())
      ids.emplace_back(std::to_string(id));
    boost::json::object body(scratch.storage());
    body["ids"] = std::move(ids);
    ex.replyJson(http::status::ok, body);
  });
}

void decode(const std::shared_ptr<Exchange>& ex) {
  auto text = ex->param("id");
  auto parsed = parseDecimal(text);
  if (!parsed)
    return ex->fail(
        rpc::StatusCode::INVALID_ARGUMENT,
        "id must be a decimal 64-bit unsigned integer, got \"" + std::string(text) + "\"");
  uint64_t id = *parsed;
  capnp::MallocMessageBuilder params(kParamsWords);
  params.initRoot<IdGen::DecodeParams>().setId(id);
  static const uint16_t kDecode = method("decode");
  ex->call(idgenInterface(), kDecode, params, [id](Exchange& ex, rpc::Reply& reply) {
    auto r = reply.results<IdGen::DecodeResults>();
    JsonScratch scratch;
    boost::json::object body(scratch.storage());
    body["id"] = std::to_string(id);
    body["timestamp_ms"] = r.getTimestampMs();
    body["worker"] = r.getWorker();
    body["sequence"] = r.getSequence();
    ex.replyJson(http::status::ok, body);
  });
}

}  // namespace

void addIdGenRoutes(Router& router) {
  router.add({http::verb::post, "/v1/ids/{namespace}", Scope::kIds, "idgen", true, next});
  router.add({http::verb::post, "/v1/snowflake", Scope::kIds, "idgen", true, snowflake});
  router.add({http::verb::get, "/v1/snowflake/{id}", Scope::kIds, "idgen", false, decode});
}

}  // namespace zmesh::gateway
