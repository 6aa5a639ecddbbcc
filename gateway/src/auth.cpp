#include "auth.h"

#include <array>
#include <stdexcept>
#include <utility>

namespace zmesh::gateway {
namespace {

constexpr std::array<std::pair<Scope, std::string_view>, 7> kScopeNames = {{
    {Scope::kIds, "ids"},
    {Scope::kRatelimit, "ratelimit"},
    {Scope::kLocks, "locks"},
    {Scope::kCache, "cache"},
    {Scope::kEvents, "events"},
    {Scope::kAdmin, "admin"},
    {Scope::kStats, "stats"},
}};

bool isHttpSpace(char c) { return c == ' ' || c == '\t'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && isHttpSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && isHttpSpace(s.back())) s.remove_suffix(1);
  return s;
}

char asciiLower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (asciiLower(a[i]) != asciiLower(b[i])) return false;
  }
  return true;
}

// Runs over every byte of `presented` whatever the contents, so the time taken
// depends only on the presented length (which the caller already knows), never
// on how much of `secret` it matches, nor on the secret's length.
bool constantTimeEquals(std::string_view presented, std::string_view secret) {
  unsigned diff = presented.size() == secret.size() ? 0 : 1;
  for (size_t i = 0; i < presented.size(); ++i) {
    const unsigned char s = secret.empty() ? 0 : secret[i % secret.size()];
    diff |= static_cast<unsigned char>(presented[i]) ^ s;
  }
  return diff == 0;
}

Authenticator::Decision unauthenticated(std::string reason) {
  return {Authenticator::Outcome::kUnauthenticated, nullptr, std::move(reason)};
}

}  // namespace

std::optional<Scope> parseScope(std::string_view name) {
  for (const auto& [scope, scopeText] : kScopeNames) {
    if (scopeText == name) return scope;
  }
  return std::nullopt;
}

std::string_view scopeName(Scope scope) {
  for (const auto& [s, scopeText] : kScopeNames) {
    if (s == scope) return scopeText;
  }
  return "unknown";
}

bool grants(const std::set<Scope>& scopes, Scope needed) {
  if (scopes.contains(needed)) return true;
  return needed == Scope::kStats && scopes.contains(Scope::kAdmin);
}

void Authenticator::addToken(std::string token, Principal principal) {
  if (token.empty()) {
    throw std::invalid_argument("token for '" + principal.name + "' is empty");
  }
  // Such a token could never be presented as "Bearer <token>": catch the
  // misconfiguration at startup rather than as a mysterious 401.
  for (unsigned char c : token) {
    if (c <= ' ' || c >= 0x7f) {
      throw std::invalid_argument("token for '" + principal.name +
                                  "' contains whitespace or a non-printable character");
    }
  }
  for (const Entry& entry : tokens_) {
    if (entry.token == token) {
      throw std::invalid_argument("token for '" + principal.name +
                                  "' is already configured (for '" + entry.principal.name + "')");
    }
  }
  tokens_.push_back(Entry{std::move(token), std::move(principal)});
}

Authenticator::Decision Authenticator::check(std::optional<std::string_view> authorization,
                                             std::optional<std::string_view> accessToken,
                                             Scope needed) const {
  if (!enabled()) return {Outcome::kAllowed, nullptr, {}};

  std::string_view presented;
  if (authorization) {
    const std::string_view value = trim(*authorization);
    if (value.empty()) return unauthenticated("empty Authorization header");
    size_t schemeEnd = 0;
    while (schemeEnd < value.size() && !isHttpSpace(value[schemeEnd])) ++schemeEnd;
    if (!equalsIgnoreCase(value.substr(0, schemeEnd), "bearer")) {
      return unauthenticated("Authorization scheme must be Bearer");
    }
    presented = trim(value.substr(schemeEnd));
    if (presented.empty()) return unauthenticated("missing token after Bearer");
  } else if (accessToken) {
    presented = *accessToken;
    if (presented.empty()) return unauthenticated("empty access_token");
  } else {
    return unauthenticated(
        "missing credentials: send Authorization: Bearer <token> or ?access_token=");
  }

  // No early exit: every configured token is compared, matched or not.
  const Principal* principal = nullptr;
  for (const Entry& entry : tokens_) {
    if (constantTimeEquals(presented, entry.token)) principal = &entry.principal;
  }
  if (principal == nullptr) return unauthenticated("invalid token");
  if (!grants(principal->scopes, needed)) {
    return {Outcome::kForbidden, principal,
            "token lacks the '" + std::string(scopeName(needed)) + "' scope"};
  }
  return {Outcome::kAllowed, principal, {}};
}

}  // namespace zmesh::gateway
