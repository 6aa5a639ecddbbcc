// Lock service routes (API.md "Lock service"). Bodies are decoded by
// lock_request.h; tokens and session ids travel as JSON strings.
#include <boost/json.hpp>

#include "exchange.h"
#include "gateway.h"
#include "lock_request.h"
#include "routes/routes.h"
#include "zmesh/idl/lock.capnp.h"

namespace zmesh::gateway {

namespace {

namespace json = boost::json;
using idl::Lock;

uint64_t lockInterface() { return capnp::typeId<Lock>(); }
uint16_t method(const char* name) { return rpc::methodOrdinal(capnp::Schema::from<Lock>(), name); }

// Small params: a first segment this size, not capnp's default 8 KiB (zeroed per request).
constexpr unsigned kParamsWords = 64;

std::string_view view(capnp::Text::Reader t) { return {t.cStr(), t.size()}; }
const char* modeName(idl::LockMode mode) {
  return mode == idl::LockMode::SHARED ? "shared" : "exclusive";
}

// The decoded request, or a 400 answered here and nullopt.
template <class T>
std::optional<T> decoded(Exchange& ex, Decoded<T> d) {
  if (auto* problem = std::get_if<std::string>(&d)) {
    ex.fail(rpc::StatusCode::INVALID_ARGUMENT, *problem);
    return std::nullopt;
  }
  return std::move(std::get<T>(d));
}

// POST /v1/locks/{name}: 200 with the grant; 409 when not granted in time.
void acquire(const std::shared_ptr<Exchange>& ex) {
  auto body = decoded(*ex, decodeLockAcquire(ex->request().body()));
  if (!body) return;
  capnp::MallocMessageBuilder params(kParamsWords);
  auto p = params.initRoot<Lock::AcquireParams>();
  p.setName(std::string(ex->param("name")));
  p.setOwner(body->owner);
  p.setTtlMs(body->ttlMs);
  p.setWaitMs(body->waitMs);
  p.setMode(body->shared ? idl::LockMode::SHARED : idl::LockMode::EXCLUSIVE);
  p.setPermits(body->permits);
  p.setSession(body->session);
  static const uint16_t kAcquire = method("acquire");
  // The call outlives the wait: the service answers CONFLICT when the wait
  // runs out, well before the deadline.
  auto timeout =
      std::chrono::milliseconds(body->waitMs) + ex->worker().gateway().config().requestTimeout;
  ex->call(
      lockInterface(), kAcquire, params,
      [](Exchange& ex, rpc::Reply& reply) {
        auto r = reply.results<Lock::AcquireResults>();
        JsonScratch scratch;
        json::object out(scratch.storage());
        out["token"] = std::to_string(r.getToken());
        out["expires_ms"] = r.getExpiresMs();
        ex.replyJson(http::status::ok, out);
      },
      timeout);
}

// POST /v1/locks/{name}/renew
void renew(const std::shared_ptr<Exchange>& ex) {
  auto body = decoded(*ex, decodeLockRenew(ex->request().body()));
  if (!body) return;
  capnp::MallocMessageBuilder params(kParamsWords);
  auto p = params.initRoot<Lock::RenewParams>();
  p.setName(std::string(ex->param("name")));
  p.setOwner(body->owner);
  p.setToken(body->token);
  p.setTtlMs(body->ttlMs);
  static const uint16_t kRenew = method("renew");
  ex->call(lockInterface(), kRenew, params, [](Exchange& ex, rpc::Reply& reply) {
    JsonScratch scratch;
    json::object out(scratch.storage());
    out["expires_ms"] = reply.results<Lock::RenewResults>().getExpiresMs();
    ex.replyJson(http::status::ok, out);
  });
}

// DELETE /v1/locks/{name}?owner=..&token=..
void release(const std::shared_ptr<Exchange>& ex) {
  auto query = decoded(*ex, decodeLockRelease(ex->query("owner"), ex->query("token")));
  if (!query) return;
  capnp::MallocMessageBuilder params(kParamsWords);
  auto p = params.initRoot<Lock::ReleaseParams>();
  p.setName(std::string(ex->param("name")));
  p.setOwner(query->owner);
  p.setToken(query->token);
  static const uint16_t kRelease = method("release");
  ex->call(lockInterface(), kRelease, params,
           [](Exchange& ex, rpc::Reply&) { ex.reply(emptyResponse(http::status::no_content)); });
}

// GET /v1/locks/{name}: 404 when free.
void inspect(const std::shared_ptr<Exchange>& ex) {
  capnp::MallocMessageBuilder params(kParamsWords);
  params.initRoot<Lock::InspectParams>().setName(std::string(ex->param("name")));
  static const uint16_t kInspect = method("inspect");
  ex->call(lockInterface(), kInspect, params, [](Exchange& ex, rpc::Reply& reply) {
    auto info = reply.results<Lock::InspectResults>().getInfo();
    // Shared holders may be many: more than the stack scratch holds.
    json::array holders;
    for (auto h : info.getHolders()) {
      json::object holder;
      holder["owner"] = view(h.getOwner());
      holder["token"] = std::to_string(h.getToken());
      holder["expires_ms"] = h.getExpiresMs();
      holder["mode"] = modeName(h.getMode());
      holder["session"] = std::to_string(h.getSession());
      holders.emplace_back(std::move(holder));
    }
    json::object out;
    out["name"] = view(info.getName());
    out["holders"] = std::move(holders);
    out["waiters"] = info.getWaiters();
    out["permits"] = info.getPermits();
    out["last_token"] = std::to_string(info.getLastToken());
    out["delayed_ms"] = info.getDelayedMs();
    ex.replyJson(http::status::ok, out);
  });
}

// POST /v1/locks/{name}/validate: read-only, 200 either way.
void validate(const std::shared_ptr<Exchange>& ex) {
  auto token = decoded(*ex, decodeLockValidate(ex->request().body()));
  if (!token) return;
  capnp::MallocMessageBuilder params(kParamsWords);
  auto p = params.initRoot<Lock::ValidateParams>();
  p.setName(std::string(ex->param("name")));
  p.setToken(*token);
  static const uint16_t kValidate = method("validate");
  ex->call(lockInterface(), kValidate, params, [](Exchange& ex, rpc::Reply& reply) {
    auto r = reply.results<Lock::ValidateResults>();
    JsonScratch scratch;
    json::object out(scratch.storage());
    out["valid"] = r.getValid();
    out["current"] = std::to_string(r.getCurrent());
    ex.replyJson(http::status::ok, out);
  });
}

}  // namespace

void addLockRoutes(Router& router) {
  // Acquire and renew answer the lease's time left, which a stored answer
  // replayed later would overstate: they do without Idempotency-Key, since
  // the service makes a resend by the same owner safe (the same grant, the
  // time left now). Release honours it; inspect and validate only read.
  router.add({http::verb::post, "/v1/locks/{name}", Scope::kLocks, "lock", false, acquire});
  router.add({http::verb::post, "/v1/locks/{name}/renew", Scope::kLocks, "lock", false, renew});
  router.add({http::verb::delete_, "/v1/locks/{name}", Scope::kLocks, "lock", true, release});
  router.add({http::verb::get, "/v1/locks/{name}", Scope::kLocks, "lock", false, inspect});
  router.add(
      {http::verb::post, "/v1/locks/{name}/validate", Scope::kLocks, "lock", false, validate});
}

}  // namespace zmesh::gateway
