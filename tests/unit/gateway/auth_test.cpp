#include "auth.h"

#include <catch2/catch.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

using namespace zmesh::gateway;
using Outcome = Authenticator::Outcome;

namespace {

const std::vector<Scope> kAllScopes = {Scope::kIds,   Scope::kRatelimit, Scope::kLocks,
                                       Scope::kCache, Scope::kEvents,    Scope::kAdmin,
                                       Scope::kStats};

// alice: ids + locks; bob: events; root: everything.
Authenticator makeAuth() {
  Authenticator auth;
  auth.addToken("alice-secret-0123", Principal{"alice", {Scope::kIds, Scope::kLocks}});
  auth.addToken("bob-secret-4567", Principal{"bob", {Scope::kEvents}});
  auth.addToken("root/Token+with.chars~=",
                Principal{"root", {kAllScopes.begin(), kAllScopes.end()}});
  return auth;
}

// The matched principal's name, safe to compare when nothing matched.
std::string who(const Authenticator::Decision& d) {
  return d.principal == nullptr ? "(none)" : d.principal->name;
}

using Header = std::optional<std::string_view>;
const Header kNone = std::nullopt;

}  // namespace

TEST_CASE("Auth: scope names round trip", "[auth]") {
  const std::vector<std::pair<Scope, std::string_view>> names = {
      {Scope::kIds, "ids"},     {Scope::kRatelimit, "ratelimit"}, {Scope::kLocks, "locks"},
      {Scope::kCache, "cache"}, {Scope::kEvents, "events"},       {Scope::kAdmin, "admin"},
      {Scope::kStats, "stats"},
  };
  REQUIRE(names.size() == kAllScopes.size());
  for (const auto& [scope, name] : names) {
    INFO("scope: " << name);
    CHECK(scopeName(scope) == name);
    CHECK(parseScope(name) == scope);
    CHECK(parseScope(scopeName(scope)) == scope);
  }
  for (std::string_view bad :
       {"", "id", "IDS", "Ids", " ids", "ids ", "admin2", "rate-limit", "*"}) {
    INFO("name: '" << bad << "'");
    CHECK_FALSE(parseScope(bad).has_value());
  }
}

TEST_CASE("Auth: stats is read-only and admin implies it", "[auth]") {
  Authenticator auth;
  auth.addToken("viewer", Principal{"viewer", {Scope::kStats}});
  auth.addToken("operator", Principal{"operator", {Scope::kAdmin}});
  for (Scope scope : kAllScopes) {
    INFO("scope " << scopeName(scope));
    CHECK(auth.check("Bearer viewer", kNone, scope).outcome ==
          (scope == Scope::kStats ? Outcome::kAllowed : Outcome::kForbidden));
    CHECK(auth.check("Bearer operator", kNone, scope).outcome ==
          (scope == Scope::kStats || scope == Scope::kAdmin ? Outcome::kAllowed
                                                            : Outcome::kForbidden));
  }
  // Only one way: stats never grants admin.
  CHECK_THAT(auth.check("Bearer viewer", kNone, Scope::kAdmin).reason, Catch::Contains("'admin'"));
  CHECK(grants({Scope::kAdmin}, Scope::kStats));
  CHECK_FALSE(grants({Scope::kStats}, Scope::kAdmin));
  CHECK_FALSE(grants({}, Scope::kStats));
}

TEST_CASE("Auth: disabled without tokens", "[auth]") {
  const Authenticator auth;
  CHECK_FALSE(auth.enabled());
  const std::vector<std::pair<Header, Header>> inputs = {
      {kNone, kNone}, {"Bearer x", kNone}, {"", kNone}, {"Basic abc", "tok"}, {kNone, ""}};
  for (const auto& [header, query] : inputs) {
    for (Scope scope : kAllScopes) {
      auto d = auth.check(header, query, scope);
      CHECK(d.outcome == Outcome::kAllowed);
      CHECK(d.principal == nullptr);
      CHECK(d.reason.empty());
    }
  }
}

TEST_CASE("Auth: adding tokens", "[auth]") {
  Authenticator auth;
  CHECK_THROWS_AS(auth.addToken("", Principal{"empty", {}}), std::invalid_argument);
  CHECK_FALSE(auth.enabled());
  auth.addToken("tok-1", Principal{"one", {Scope::kIds}});
  CHECK(auth.enabled());

  SECTION("a token given twice") {
    try {
      auth.addToken("tok-1", Principal{"two", {Scope::kAdmin}});
      FAIL("no exception");
    } catch (const std::invalid_argument& e) {
      const std::string message = e.what();
      CHECK_THAT(message, Catch::Contains("'two'") && Catch::Contains("'one'"));
      CHECK_THAT(message, !Catch::Contains("tok-1"));  // never log a secret
    }
    // The first registration still holds, with its own scopes.
    auto d = auth.check("Bearer tok-1", kNone, Scope::kAdmin);
    CHECK(d.outcome == Outcome::kForbidden);
    REQUIRE(d.principal != nullptr);
    CHECK(d.principal->name == "one");
  }
  SECTION("tokens that could never be sent in a header") {
    for (const std::string& bad :
         {std::string("a b"), std::string("a\tb"), std::string("tok\n"), std::string(" tok"),
          std::string("t\x7fk"), std::string("t\xc3\xa9"), std::string("a\0b", 3)}) {
      CHECK_THROWS_AS(auth.addToken(bad, Principal{"bad", {}}), std::invalid_argument);
    }
  }
  SECTION("tokens differing only in case or length are distinct") {
    auth.addToken("TOK-1", Principal{"upper", {Scope::kIds}});
    auth.addToken("tok-12", Principal{"longer", {Scope::kIds}});
    CHECK(who(auth.check("Bearer tok-1", kNone, Scope::kIds)) == "one");
    CHECK(who(auth.check("Bearer TOK-1", kNone, Scope::kIds)) == "upper");
    CHECK(who(auth.check("Bearer tok-12", kNone, Scope::kIds)) == "longer");
  }
}

TEST_CASE("Auth: outcomes", "[auth]") {
  const Authenticator auth = makeAuth();

  SECTION("allowed") {
    auto d = auth.check("Bearer alice-secret-0123", kNone, Scope::kIds);
    CHECK(d.outcome == Outcome::kAllowed);
    REQUIRE(d.principal != nullptr);
    CHECK(d.principal->name == "alice");
    CHECK(d.reason.empty());
    for (Scope scope : kAllScopes) {
      auto root = auth.check("Bearer root/Token+with.chars~=", kNone, scope);
      CHECK(root.outcome == Outcome::kAllowed);
      CHECK(who(root) == "root");
    }
  }
  SECTION("forbidden names the scope needed") {
    for (Scope scope : kAllScopes) {
      const bool has = scope == Scope::kIds || scope == Scope::kLocks;
      auto d = auth.check("Bearer alice-secret-0123", kNone, scope);
      INFO("scope " << scopeName(scope));
      CHECK(d.outcome == (has ? Outcome::kAllowed : Outcome::kForbidden));
      REQUIRE(d.principal != nullptr);
      CHECK(d.principal->name == "alice");
      if (!has) {
        CHECK_THAT(d.reason, Catch::Contains("'" + std::string(scopeName(scope)) + "'"));
        CHECK_THAT(d.reason, !Catch::Contains("alice-secret"));
      }
    }
  }
  SECTION("unknown tokens") {
    for (std::string_view token : {"nope", "alice-secret-012", "alice-secret-01234",
                                   "ALICE-SECRET-0123", "alice-secret-0124", "bob-secret-4567x",
                                   "root", "alice-secret-0123bob-secret-4567", "a", "\xff"}) {
      INFO("token " << token);
      const std::string header = "Bearer " + std::string(token);
      for (auto d :
           {auth.check(header, kNone, Scope::kIds), auth.check(kNone, token, Scope::kIds)}) {
        CHECK(d.outcome == Outcome::kUnauthenticated);
        CHECK(d.principal == nullptr);
        CHECK(d.reason == "invalid token");
      }
    }
  }
  SECTION("no credentials") {
    auto d = auth.check(kNone, kNone, Scope::kIds);
    CHECK(d.outcome == Outcome::kUnauthenticated);
    CHECK(d.principal == nullptr);
    CHECK_THAT(d.reason, Catch::Contains("Bearer") && Catch::Contains("access_token"));
  }
}

TEST_CASE("Auth: the header and access_token", "[auth]") {
  const Authenticator auth = makeAuth();
  struct Row {
    Header header;
    Header query;
    Outcome outcome;
    std::string who;     // principal name, "" for none
    std::string reason;  // expected substring when not allowed
  };
  const std::vector<Row> rows = {
      // access_token alone (EventSource).
      {kNone, "bob-secret-4567", Outcome::kAllowed, "bob", ""},
      {kNone, "", Outcome::kUnauthenticated, "", "empty access_token"},
      {kNone, " bob-secret-4567", Outcome::kUnauthenticated, "", "invalid token"},
      {kNone, "Bearer bob-secret-4567", Outcome::kUnauthenticated, "", "invalid token"},
      {kNone, "alice-secret-0123", Outcome::kForbidden, "alice", "'events'"},
      // The header wins whether it is better or worse.
      {"Bearer bob-secret-4567", "nope", Outcome::kAllowed, "bob", ""},
      {"Bearer bob-secret-4567", "alice-secret-0123", Outcome::kAllowed, "bob", ""},
      {"Bearer alice-secret-0123", "bob-secret-4567", Outcome::kForbidden, "alice", "'events'"},
      {"Bearer nope", "bob-secret-4567", Outcome::kUnauthenticated, "", "invalid token"},
      {"", "bob-secret-4567", Outcome::kUnauthenticated, "", "empty Authorization header"},
      {"   ", "bob-secret-4567", Outcome::kUnauthenticated, "", "empty Authorization header"},
      {"Basic Ym9iOnB3", "bob-secret-4567", Outcome::kUnauthenticated, "", "Bearer"},
      {"Bearer", "bob-secret-4567", Outcome::kUnauthenticated, "", "missing token"},
  };
  for (const Row& row : rows) {
    INFO("header: " << (row.header ? "'" + std::string(*row.header) + "'" : "none")
                    << ", access_token: "
                    << (row.query ? "'" + std::string(*row.query) + "'" : "none"));
    auto d = auth.check(row.header, row.query, Scope::kEvents);
    CHECK(d.outcome == row.outcome);
    if (row.who.empty()) {
      CHECK(d.principal == nullptr);
    } else {
      REQUIRE(d.principal != nullptr);
      CHECK(d.principal->name == row.who);
    }
    if (row.outcome == Outcome::kAllowed) {
      CHECK(d.reason.empty());
    } else {
      CHECK_THAT(d.reason, Catch::Contains(row.reason));
    }
  }
}

TEST_CASE("Auth: parsing the Authorization header", "[auth]") {
  const Authenticator auth = makeAuth();
  SECTION("the scheme is case-insensitive; spaces and tabs around the parts are ignored") {
    for (std::string_view header :
         {"Bearer bob-secret-4567", "bearer bob-secret-4567", "BEARER bob-secret-4567",
          "bEaReR bob-secret-4567", "Bearer   bob-secret-4567", "Bearer\tbob-secret-4567",
          "  Bearer bob-secret-4567  ", "\tBearer \t bob-secret-4567\t",
          "Bearer bob-secret-4567 "}) {
      INFO("header '" << header << "'");
      auto d = auth.check(header, kNone, Scope::kEvents);
      CHECK(d.outcome == Outcome::kAllowed);
      REQUIRE(d.principal != nullptr);
      CHECK(d.principal->name == "bob");
    }
  }
  SECTION("rejected") {
    const std::vector<std::pair<std::string_view, std::string_view>> rows = {
        {"", "empty Authorization header"},
        {" \t ", "empty Authorization header"},
        {"Bearer", "missing token after Bearer"},
        {"bearer   ", "missing token after Bearer"},
        {"Bearer \t", "missing token after Bearer"},
        {"bob-secret-4567", "scheme must be Bearer"},  // no scheme at all
        {"Basic bob-secret-4567", "scheme must be Bearer"},
        {"Token bob-secret-4567", "scheme must be Bearer"},
        {"Bearerbob-secret-4567", "scheme must be Bearer"},
        {"Bearer:bob-secret-4567", "scheme must be Bearer"},
        {"Bear bob-secret-4567", "scheme must be Bearer"},
        {"Bearers bob-secret-4567", "scheme must be Bearer"},
        {"Bearer bob-secret-4567 extra", "invalid token"},
        {"Bearer bob-secret 4567", "invalid token"},
        {"Bearer bob-secret-4567\n", "invalid token"},  // only spaces and tabs are trimmed
        {"Bearer \"bob-secret-4567\"", "invalid token"},
    };
    for (const auto& [header, reason] : rows) {
      INFO("header '" << header << "'");
      auto d = auth.check(header, kNone, Scope::kEvents);
      CHECK(d.outcome == Outcome::kUnauthenticated);
      CHECK(d.principal == nullptr);
      CHECK_THAT(d.reason, Catch::Contains(std::string(reason)));
    }
  }
}
