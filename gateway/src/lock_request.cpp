#include "lock_request.h"

#include "json_body.h"

namespace zmesh::gateway {

namespace json = boost::json;

namespace {

constexpr const char* kOwnerMissing =
    "owner: missing (who holds the lease: 1-128 printable ASCII characters)";
constexpr const char* kTokenMissing =
    "token: missing (the fencing token the acquire answered, as a string of decimal digits)";

// A required field: its value, or the problem that it is missing.
const json::value* required(const json::object& o, std::string_view name, const char* missing,
                            Problem& problem) {
  if (problem) return nullptr;
  auto* v = o.if_contains(name);
  if (!v) problem = missing;
  return v;
}

}  // namespace

Decoded<LockAcquireBody> decodeLockAcquire(std::string_view text) {
  JsonBody body;
  LockAcquireBody out;
  Problem problem = body.parse(text);
  if (!problem)
    problem = body.onlyFields({"owner", "ttl_ms", "wait_ms", "mode", "permits", "session"});
  if (problem) return *problem;
  auto& o = body.object();
  const json::string* owner = nullptr;
  if (auto* v = required(o, "owner", kOwnerMissing, problem))
    problem = readString(*v, "owner", owner);
  if (auto* v =
          required(o, "ttl_ms", "ttl_ms: missing (the lease's length in milliseconds)", problem);
      v && !problem)
    problem = readInteger(*v, "ttl_ms", 1, UINT64_MAX, out.ttlMs);
  if (auto* v = o.if_contains("wait_ms"); v && !problem) {
    problem = readInteger(*v, "wait_ms", 0, UINT64_MAX, out.waitMs);
    out.waitMs = std::min<uint64_t>(out.waitMs, kLockMaxWait.count());
  }
  if (auto* v = o.if_contains("mode"); v && !problem) {
    if (v->is_string() && v->get_string() == "shared")
      out.shared = true;
    else if (!v->is_string() || v->get_string() != "exclusive")
      problem = "mode: expected \"exclusive\" or \"shared\", got " + shown(*v);
  }
  uint64_t permits = 0;
  if (auto* v = o.if_contains("permits"); v && !problem)
    problem = readInteger(*v, "permits", 0, UINT32_MAX, permits);
  if (auto* v = o.if_contains("session"); v && !problem)
    problem = readDecimalString(*v, "session", out.session);
  if (problem) return *problem;
  out.owner.assign(owner->data(), owner->size());
  out.permits = static_cast<uint32_t>(permits);
  return out;
}

Decoded<LockRenewBody> decodeLockRenew(std::string_view text) {
  JsonBody body;
  LockRenewBody out;
  Problem problem = body.parse(text);
  if (!problem) problem = body.onlyFields({"owner", "token", "ttl_ms"});
  if (problem) return *problem;
  auto& o = body.object();
  const json::string* owner = nullptr;
  if (auto* v = required(o, "owner", kOwnerMissing, problem))
    problem = readString(*v, "owner", owner);
  if (auto* v = required(o, "token", kTokenMissing, problem); v && !problem)
    problem = readDecimalString(*v, "token", out.token);
  if (auto* v = required(o, "ttl_ms", "ttl_ms: missing (the lease's new length in milliseconds)",
                         problem);
      v && !problem)
    problem = readInteger(*v, "ttl_ms", 1, UINT64_MAX, out.ttlMs);
  if (problem) return *problem;
  out.owner.assign(owner->data(), owner->size());
  return out;
}

Decoded<uint64_t> decodeLockValidate(std::string_view text) {
  JsonBody body;
  uint64_t token = 0;
  Problem problem = body.parse(text);
  if (!problem) problem = body.onlyFields({"token"});
  if (!problem) {
    if (auto* v = required(body.object(), "token", kTokenMissing, problem))
      problem = readDecimalString(*v, "token", token);
  }
  if (problem) return *problem;
  return token;
}

Decoded<LockReleaseQuery> decodeLockRelease(std::optional<std::string_view> owner,
                                            std::optional<std::string_view> token) {
  if (!owner || owner->empty())
    return std::string("query parameter owner: missing (who holds the lease)");
  if (!token)
    return std::string("query parameter token: missing (the fencing token the acquire answered)");
  auto value = parseDecimal(*token);
  if (!value)
    return "query parameter token must be a decimal 64-bit unsigned integer, got \"" +
           std::string(*token) + "\"";
  return LockReleaseQuery{std::string(*owner), *value};
}

}  // namespace zmesh::gateway
