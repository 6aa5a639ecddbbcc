// Rate limiter routes (API.md "Rate limiter").
#include <boost/json.hpp>

#include "exchange.h"
#include "json_body.h"
#include "routes/routes.h"
#include "token_limit.h"
#include "zmesh/idl/ratelimit.capnp.h"

namespace zmesh::gateway {

namespace {

namespace json = boost::json;
using idl::RateLimit;
using std::chrono::milliseconds;

uint64_t ratelimitInterface() { return capnp::typeId<RateLimit>(); }
uint16_t method(const char* name) {
  return rpc::methodOrdinal(capnp::Schema::from<RateLimit>(), name);
}

// Small params: a first segment this size, not capnp's default 8 KiB (zeroed per request).
constexpr unsigned kParamsWords = 64;

// {"tenant":"acme","route":"/orders"}: an object whose values are all strings.
Problem readDescriptors(const json::value& v, std::string_view name, const json::object*& out) {
  if (!v.is_object())
    return std::string(name) + ": expected an object of strings (descriptor name to value), got " +
           shown(v);
  for (auto& d : v.get_object())
    if (!d.value().is_string())
      return std::string(name) + "." + std::string(d.key()) + ": expected a string, got " +
             shown(d.value());
  out = &v.get_object();
  return std::nullopt;
}

capnp::Text::Reader text(std::string_view s) { return {s.data(), s.size()}; }

// Descriptors of the body, in the body's order (values checked to be strings).
void setDescriptors(capnp::List<idl::Descriptor>::Builder out, const json::object& descriptors) {
  size_t i = 0;
  for (auto& d : descriptors) {
    // capnp copies from a std::string: a key's view need not end in NUL.
    out[i].setKey(std::string(d.key()));
    out[i].setValue(std::string(d.value().get_string()));
    ++i;
  }
}

void writeDescriptors(json::object& out, capnp::List<idl::Descriptor>::Reader list) {
  for (auto d : list)
    out[std::string_view(d.getKey().cStr(), d.getKey().size())] =
        std::string_view(d.getValue().cStr(), d.getValue().size());
}

json::array overridesJson(capnp::List<idl::Override>::Reader list, json::storage_ptr sp) {
  json::array out(sp);
  for (auto o : list) {
    json::object entry(sp);
    json::object descriptors(sp);
    writeDescriptors(descriptors, o.getDescriptors());
    entry["descriptors"] = std::move(descriptors);
    entry["limit"] = o.getLimit();
    entry["burst"] = o.getBurst();
    out.emplace_back(std::move(entry));
  }
  return out;
}

// POST /v1/ratelimit/check: a decision API, 200 either way.
void check(const std::shared_ptr<Exchange>& ex) {
  JsonBody body;
  const json::string* rule = nullptr;
  const json::string* key = nullptr;
  const json::object* descriptors = nullptr;
  uint64_t cost = 1;
  Problem problem = body.parse(ex->request().body());
  if (!problem) problem = body.onlyFields({"rule", "key", "descriptors", "cost"});
  if (!problem) {
    auto& o = body.object();
    if (auto* v = o.if_contains("rule"))
      problem = readString(*v, "rule", rule);
    else
      problem = "rule: missing (the name of a rule of the rate limiter)";
    if (auto* v = o.if_contains("key"); !problem && v) problem = readString(*v, "key", key);
    if (auto* v = o.if_contains("descriptors"); !problem && v)
      problem = readDescriptors(*v, "descriptors", descriptors);
    if (auto* v = o.if_contains("cost"); !problem && v)
      problem = readInteger(*v, "cost", 0, UINT32_MAX, cost);
    if (!problem && key && descriptors) problem = "give either key or descriptors, not both";
    if (!problem && !key && !descriptors)
      problem =
          "give descriptors (an object of strings), or key for a rule keyed on one descriptor";
  }
  if (problem) return ex->fail(rpc::StatusCode::INVALID_ARGUMENT, *problem);

  capnp::MallocMessageBuilder params(kParamsWords);
  auto p = params.initRoot<RateLimit::CheckParams>();
  p.setRule(text(*rule));
  if (key) p.setKey(text(*key));
  if (descriptors) setDescriptors(p.initDescriptors(descriptors->size()), *descriptors);
  p.setCost(static_cast<uint32_t>(cost));
  static const uint16_t kCheck = method("check");
  ex->call(ratelimitInterface(), kCheck, params, [](Exchange& ex, rpc::Reply& reply) {
    auto d = reply.results<RateLimit::CheckResults>().getDecision();
    std::string_view ruleName(d.getRule().cStr(), d.getRule().size());
    std::string_view reason(d.getReason().cStr(), d.getReason().size());
    JsonScratch scratch;
    json::object out(scratch.storage());
    out["allowed"] = d.getAllowed();
    out["limit"] = d.getLimit();
    out["remaining"] = d.getRemaining();
    out["reset_ms"] = d.getResetMs();
    out["retry_after_ms"] = d.getRetryAfterMs();
    out["rule"] = ruleName;
    if (d.getShadowDenied()) out["shadow_denied"] = true;
    if (!reason.empty()) out["reason"] = reason;
    if (d.getUntracked()) out["untracked"] = true;
    if (d.getRefused()) out["refused"] = true;
    auto response = jsonResponse(http::status::ok, out);
    setRateLimitHeaders(response, ruleName, d.getLimit(), milliseconds(d.getWindowMs()),
                        d.getRemaining(), milliseconds(d.getResetMs()));
    // Waiting cannot help a request denied for good (a cost above the
    // capacity: retry_after_ms 0): no Retry-After then.
    if (!d.getAllowed() && d.getRetryAfterMs() > 0)
      setRetryAfter(response, milliseconds(d.getRetryAfterMs()));
    ex.reply(std::move(response));
  });
}

// GET /v1/ratelimit/rules
void rules(const std::shared_ptr<Exchange>& ex) {
  capnp::MallocMessageBuilder params(8);
  params.initRoot<RateLimit::RulesParams>();
  static const uint16_t kRules = method("rules");
  ex->call(ratelimitInterface(), kRules, params, [](Exchange& ex, rpc::Reply& reply) {
    JsonScratch scratch;
    auto sp = scratch.storage();
    json::array list(sp);
    for (auto r : reply.results<RateLimit::RulesResults>().getRules()) {
      json::object rule(sp);
      rule["name"] = std::string_view(r.getName().cStr(), r.getName().size());
      rule["algorithm"] = std::string_view(r.getAlgorithm().cStr(), r.getAlgorithm().size());
      rule["limit"] = r.getLimit();
      rule["window_ms"] = r.getWindowMs();
      rule["burst"] = r.getBurst();
      json::array names(sp);
      for (auto name : r.getDescriptors())
        names.emplace_back(std::string_view(name.cStr(), name.size()));
      rule["descriptors"] = std::move(names);
      rule["shadow_mode"] = r.getShadowMode();
      rule["overrides"] = overridesJson(r.getOverrides(), sp);
      rule["runtime_overrides"] = overridesJson(r.getRuntimeOverrides(), sp);
      list.emplace_back(std::move(rule));
    }
    json::object out(sp);
    out["rules"] = std::move(list);
    ex.replyJson(http::status::ok, out);
  });
}

// PUT /v1/ratelimit/overrides/{rule}
void putOverride(const std::shared_ptr<Exchange>& ex) {
  JsonBody body;
  const json::object* descriptors = nullptr;
  uint64_t limit = 0, burst = 0;
  Problem problem = body.parse(ex->request().body());
  if (!problem) problem = body.onlyFields({"descriptors", "limit", "burst"});
  if (!problem) {
    auto& o = body.object();
    if (auto* v = o.if_contains("descriptors")) {
      problem = readDescriptors(*v, "descriptors", descriptors);
    } else {
      problem = "descriptors: missing (an object of strings: the descriptors the override is for)";
    }
    if (auto* v = o.if_contains("limit"); !problem && v)
      problem = readInteger(*v, "limit", 1, UINT64_MAX, limit);
    else if (!problem)
      problem = "limit: missing (an integer from 1)";
    if (auto* v = o.if_contains("burst"); !problem && v)
      problem = readInteger(*v, "burst", 0, UINT64_MAX, burst);
  }
  if (problem) return ex->fail(rpc::StatusCode::INVALID_ARGUMENT, *problem);

  capnp::MallocMessageBuilder params(kParamsWords);
  auto p = params.initRoot<RateLimit::OverrideParams>();
  p.setRule(std::string(ex->param("rule")));
  setDescriptors(p.initDescriptors(descriptors->size()), *descriptors);
  p.setLimit(limit);
  p.setBurst(burst);
  static const uint16_t kOverride = method("override");
  ex->call(ratelimitInterface(), kOverride, params,
           [](Exchange& ex, rpc::Reply&) { ex.reply(emptyResponse(http::status::no_content)); });
}

}  // namespace

void addRateLimitRoutes(Router& router) {
  // check takes from a limit: an Idempotency-Key retry gets the first decision again.
  router.add(
      {http::verb::post, "/v1/ratelimit/check", Scope::kRatelimit, "ratelimit", true, check});
  router.add(
      {http::verb::get, "/v1/ratelimit/rules", Scope::kRatelimit, "ratelimit", false, rules});
  router.add({http::verb::put, "/v1/ratelimit/overrides/{rule}", Scope::kAdmin, "ratelimit", true,
              putOverride});
}

}  // namespace zmesh::gateway
