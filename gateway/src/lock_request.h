// The lock routes' bodies and query, decoded and checked (API.md "Lock
// service"). What is wrong becomes the 400's message, naming the field. The
// lock service checks names, owners and the ttl's range itself; here only
// types, presence and what the wire cannot carry.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace zmesh::gateway {

// The longest an acquire waits through the gateway: wait_ms above it is cut
// to it (as the service cuts a wait to its own max_wait, 60 s by default).
// The service call's deadline is the wait plus request_timeout.
inline constexpr std::chrono::milliseconds kLockMaxWait{60'000};

// POST /v1/locks/{name} {"owner","ttl_ms","wait_ms","mode","permits","session"}
struct LockAcquireBody {
  std::string owner;
  uint64_t ttlMs = 0;
  uint64_t waitMs = 0;  // at most kLockMaxWait
  bool shared = false;  // "mode": "shared" (default "exclusive")
  uint32_t permits = 0;
  uint64_t session = 0;  // a decimal string in JSON; 0: none
};

// POST /v1/locks/{name}/renew {"owner","token","ttl_ms"}
struct LockRenewBody {
  std::string owner;
  uint64_t token = 0;  // a decimal string in JSON
  uint64_t ttlMs = 0;
};

// DELETE /v1/locks/{name}?owner=..&token=..
struct LockReleaseQuery {
  std::string owner;
  uint64_t token = 0;
};

// The decoded request, or the message of the 400.
template <class T>
using Decoded = std::variant<T, std::string>;

Decoded<LockAcquireBody> decodeLockAcquire(std::string_view body);
Decoded<LockRenewBody> decodeLockRenew(std::string_view body);
// POST /v1/locks/{name}/validate {"token"}: the token.
Decoded<uint64_t> decodeLockValidate(std::string_view body);
Decoded<LockReleaseQuery> decodeLockRelease(std::optional<std::string_view> owner,
                                            std::optional<std::string_view> token);

}  // namespace zmesh::gateway
