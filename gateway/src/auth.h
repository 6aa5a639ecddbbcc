// Bearer tokens with scopes. Without configured tokens auth is off and every
// request is allowed. Tokens are compared in constant time against every
// configured token, so response timing does not reveal a prefix.
// Immutable after setup: safe to share between threads.
#pragma once

#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace zmesh::gateway {

// kStats reads the mesh's statistics (/v1/mesh) and nothing else; kAdmin
// changes the mesh at run time and implies kStats.
enum class Scope { kIds, kRatelimit, kLocks, kCache, kEvents, kAdmin, kStats };

std::optional<Scope> parseScope(std::string_view name);  // "ids", "ratelimit", …
std::string_view scopeName(Scope scope);
// Whether a token with `scopes` may use a route that needs `needed`: it has
// that scope, or one that implies it (admin implies stats).
bool grants(const std::set<Scope>& scopes, Scope needed);

struct Principal {
  std::string name;  // for logs and idempotency scoping; never the token
  std::set<Scope> scopes;
};

class Authenticator {
 public:
  // Throws std::invalid_argument for an empty token or a token given twice.
  void addToken(std::string token, Principal principal);
  bool enabled() const { return !tokens_.empty(); }

  enum class Outcome { kAllowed, kUnauthenticated, kForbidden };
  struct Decision {
    Outcome outcome;
    const Principal* principal;  // set when a token matched (kAllowed, kForbidden)
    std::string reason;          // for the error body when not allowed
  };
  // authorization: the Authorization header, if any ("Bearer <token>", scheme
  // case-insensitive). accessToken: the ?access_token= query value, if any
  // (browsers' EventSource cannot set headers). The header wins when both are given.
  Decision check(std::optional<std::string_view> authorization,
                 std::optional<std::string_view> accessToken, Scope needed) const;

 private:
  struct Entry {
    std::string token;
    Principal principal;
  };
  std::vector<Entry> tokens_;
};

}  // namespace zmesh::gateway
