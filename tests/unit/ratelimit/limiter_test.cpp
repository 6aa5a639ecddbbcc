// The limiter's tables: keys from descriptors, overrides, bounds, the clock
// hand, rule reloads, shadow mode and leases. Time is a number.
#include "limiter.h"

#include <catch2/catch.hpp>

#include "coalescer.h"

namespace zmesh::ratelimit {
namespace {

constexpr Nanos kSecond = 1'000'000'000;

Rule fixedRule(std::string name, uint64_t limit, std::vector<std::string> descriptors = {"key"}) {
  Rule r;
  r.name = std::move(name);
  r.quota = Quota{Algorithm::fixedWindow, limit, kSecond, 0};
  r.descriptors = std::move(descriptors);
  return r;
}

Limiter limiterWith(std::vector<Rule> rules, LimiterOptions options = {}) {
  Limiter l(options);
  for (auto& r : rules) REQUIRE_FALSE(validate(r));
  l.setRules(std::move(rules));
  return l;
}

// A check by key; the outcome or a failure's message.
struct Result {
  std::optional<Outcome> outcome;
  std::optional<Failure> failure;
  bool allowed() const { return outcome && outcome->decision.allowed; }
};

Result check(Limiter& l, std::string_view rule, std::string_view key, Nanos now,
             uint64_t cost = 1) {
  auto r = l.check(CheckRequest{rule, key, {}, cost}, now);
  if (auto* f = std::get_if<Failure>(&r)) return {std::nullopt, *f};
  return {std::get<Outcome>(r), std::nullopt};
}

Result check(Limiter& l, std::string_view rule, std::vector<DescriptorView> d, Nanos now,
             uint64_t cost = 1) {
  auto r = l.check(CheckRequest{rule, {}, d, cost}, now);
  if (auto* f = std::get_if<Failure>(&r)) return {std::nullopt, *f};
  return {std::get<Outcome>(r), std::nullopt};
}

}  // namespace

TEST_CASE("a rule admits its limit per key, keys independent", "[limiter]") {
  auto l = limiterWith({fixedRule("api", 3)});
  for (int i = 0; i < 3; ++i) CHECK(check(l, "api", "a", 0).allowed());
  auto denied = check(l, "api", "a", 0);
  REQUIRE(denied.outcome);
  CHECK_FALSE(denied.allowed());
  CHECK(denied.outcome->decision.retryAfter == kSecond);
  CHECK(denied.outcome->key == "a");
  CHECK(check(l, "api", "b", 0).allowed());
  CHECK(l.stats().keys == 2);
  auto stats = l.ruleStats();
  REQUIRE(stats.size() == 1);
  CHECK(stats[0].second.decisions == 5);
  CHECK(stats[0].second.allowed == 4);
  CHECK(stats[0].second.denied == 1);
  CHECK(stats[0].second.keys == 2);
}

TEST_CASE("bad requests are refused naming what is wrong", "[limiter]") {
  auto l = limiterWith({fixedRule("api", 3), fixedRule("tr", 3, {"tenant", "route"})});
  auto fails = [&](Result r, Fail code, const char* text) {
    REQUIRE(r.failure);
    CHECK(r.failure->code == code);
    CHECK_THAT(r.failure->message, Catch::Contains(text));
  };
  fails(check(l, "nope", "a", 0), Fail::notFound, "no rule named \"nope\" (rules: api, tr)");
  fails(check(l, "tr", "a", 0), Fail::invalidArgument, "keyed on tenant, route: give descriptors");
  fails(check(l, "tr", {{"tenant", "acme"}}, 0), Fail::invalidArgument, "missing route");
  fails(check(l, "tr", {{"tenant", "acme"}, {"route", "/x"}, {"user", "u"}}, 0),
        Fail::invalidArgument, "not on descriptor \"user\"");
  fails(check(l, "tr", {{"tenant", "acme"}, {"tenant", "b"}, {"route", "/x"}}, 0),
        Fail::invalidArgument, "descriptor tenant given twice");
  fails(check(l, "tr", {{"tenant", ""}, {"route", "/x"}}, 0), Fail::invalidArgument,
        "descriptor tenant is empty");
  std::string nul("a\0b", 3);
  fails(check(l, "api", nul, 0), Fail::invalidArgument, "contains a NUL byte");
  std::string longValue(kMaxDescriptorValueBytes + 1, 'x');
  fails(check(l, "api", longValue, 0), Fail::invalidArgument, "257 bytes");
  CHECK(check(l, "api", std::string(kMaxDescriptorValueBytes, 'x'), 0).allowed());
  auto both = l.check(CheckRequest{"api", "a", std::vector<DescriptorView>{{"key", "a"}}, 1}, 0);
  REQUIRE(std::holds_alternative<Failure>(both));
  CHECK_THAT(std::get<Failure>(both).message, Catch::Contains("either key or descriptors"));
  CHECK(l.stats().keys == 1);  // nothing tracked for a refused request
}

TEST_CASE("descriptors in any order make the same key", "[limiter]") {
  auto l = limiterWith({fixedRule("tr", 2, {"tenant", "route"})});
  CHECK(check(l, "tr", {{"tenant", "acme"}, {"route", "/x"}}, 0).allowed());
  CHECK(check(l, "tr", {{"route", "/x"}, {"tenant", "acme"}}, 0).allowed());
  CHECK_FALSE(check(l, "tr", {{"route", "/x"}, {"tenant", "acme"}}, 0).allowed());
  // Values cannot run into each other: ("a", "b|c") is not ("a|b", "c").
  CHECK(check(l, "tr", {{"tenant", "a"}, {"route", "b\x01"}}, 0).allowed());
  CHECK(check(l, "tr", {{"tenant", "a\x01"}, {"route", "b"}}, 0).allowed());
  CHECK(l.stats().keys == 3);
}

TEST_CASE("a read (cost 0) of a new key tracks nothing", "[limiter]") {
  auto l = limiterWith({fixedRule("api", 3)});
  auto r = check(l, "api", "a", 0, 0);
  REQUIRE(r.outcome);
  CHECK(r.allowed());
  CHECK(r.outcome->decision.remaining == 3);
  CHECK(l.stats().keys == 0);
}

TEST_CASE("the clock hand drops keys back at their default, and only those", "[limiter]") {
  auto l = limiterWith({fixedRule("api", 3)});
  CHECK(check(l, "api", "a", 0).allowed());
  CHECK(check(l, "api", "b", kSecond / 2).allowed());
  CHECK(l.sweep(kSecond - 1, 100) == 0);  // both windows still count
  CHECK(l.stats().keys == 2);
  CHECK(l.sweep(kSecond, 100) == 2);  // the window both were in has ended
  CHECK(l.stats().keys == 0);
  CHECK(l.stats().keysDropped == 2);
  // Lossless: a dropped key decides exactly as it would have.
  for (int i = 0; i < 3; ++i) CHECK(check(l, "api", "a", kSecond).allowed());
  CHECK_FALSE(check(l, "api", "a", kSecond).allowed());
}

TEST_CASE("the sweep's budget bounds its work", "[limiter]") {
  auto l = limiterWith({fixedRule("api", 3)});
  for (int i = 0; i < 10; ++i) CHECK(check(l, "api", std::to_string(i), 0).allowed());
  CHECK(l.sweep(kSecond, 4) == 4);
  CHECK(l.stats().keys == 6);
  CHECK(l.sweep(kSecond, 100) == 6);
}

TEST_CASE("max_keys: a new key is denied when none is idle, never by resetting one", "[limiter]") {
  LimiterOptions options;
  options.maxKeys = 2;
  auto l = limiterWith({fixedRule("api", 1)}, options);
  CHECK(check(l, "api", "a", 0).allowed());
  CHECK(check(l, "api", "b", 0).allowed());
  auto refused = check(l, "api", "c", 0);
  REQUIRE(refused.outcome);
  CHECK_FALSE(refused.allowed());
  CHECK(refused.outcome->refused);
  CHECK(refused.outcome->decision.retryAfter > 0);
  CHECK(l.stats().keysRefused == 1);
  // The limited keys kept their state.
  CHECK_FALSE(check(l, "api", "a", 0).allowed());
  CHECK_FALSE(check(l, "api", "b", 0).allowed());
  // Once a key is idle, it makes room.
  CHECK(check(l, "api", "c", kSecond).allowed());
  CHECK(l.stats().keys == 2);
  CHECK(l.stats().keysDropped == 1);
}

TEST_CASE("max_keys with when_full = admit: admitted untracked, counted", "[limiter]") {
  LimiterOptions options;
  options.maxKeys = 1;
  options.whenFull = WhenFull::admitUntracked;
  auto l = limiterWith({fixedRule("api", 1)}, options);
  CHECK(check(l, "api", "a", 0).allowed());
  for (int i = 0; i < 3; ++i) {
    auto r = check(l, "api", "b", 0);
    CHECK(r.allowed());
    CHECK(r.outcome->untracked);
  }
  CHECK(l.stats().keysUntracked == 3);
  CHECK(l.stats().keys == 1);
  CHECK_FALSE(check(l, "api", "a", 0).allowed());
}

TEST_CASE("overrides: the most specific wins, run-time over file", "[limiter]") {
  auto rule = fixedRule("tr", 1, {"tenant", "route"});
  rule.overrides.push_back(Override{{{"tenant", "acme"}}, 3, 0});
  auto l = limiterWith({rule});
  auto admitted = [&](std::string tenant, std::string route) {
    int n = 0;
    while (n < 100 && check(l, "tr", {{"tenant", tenant}, {"route", route}}, 0).allowed()) ++n;
    return n;
  };
  CHECK(admitted("other", "/x") == 1);
  CHECK(admitted("acme", "/x") == 3);
  // A run-time override for acme + /y is more specific than the file's for acme.
  auto set = l.setOverride("tr", Override{{{"route", "/y"}, {"tenant", "acme"}}, 5, 0});
  REQUIRE(std::holds_alternative<Override>(set));
  CHECK(std::get<Override>(set).match == Descriptors{{"tenant", "acme"}, {"route", "/y"}});
  CHECK(admitted("acme", "/y") == 5);
  CHECK(admitted("acme", "/z") == 3);
  // A run-time override for exactly the file's descriptors replaces it; clearing brings it back.
  REQUIRE(
      std::holds_alternative<Override>(l.setOverride("tr", Override{{{"tenant", "acme"}}, 7, 0})));
  CHECK(admitted("acme", "/w") == 7);
  auto cleared = l.clearOverride("tr", {{"tenant", "acme"}});
  REQUIRE(std::holds_alternative<bool>(cleared));
  CHECK(std::get<bool>(cleared));
  CHECK(admitted("acme", "/v") == 3);
  CHECK(std::get<bool>(l.clearOverride("tr", {{"tenant", "acme"}})) == false);
  CHECK(l.runtimeOverrides("tr").size() == 1);
  CHECK(l.stats().runtimeOverrides == 1);
}

TEST_CASE("overrides: more descriptors win over a higher position", "[limiter]") {
  auto rule = fixedRule("trr", 1, {"tenant", "route", "region"});
  rule.overrides.push_back(Override{{{"tenant", "acme"}, {"route", "/o"}}, 5, 0});
  rule.overrides.push_back(Override{{{"region", "eu"}}, 7, 0});
  rule.overrides.push_back(Override{{{"route", "/o"}}, 9, 0});
  auto l = limiterWith({rule});
  auto admitted = [&](std::string tenant, std::string route, std::string region) {
    int n = 0;
    while (n < 100 &&
           check(l, "trr", {{"tenant", tenant}, {"route", route}, {"region", region}}, 0).allowed())
      ++n;
    return n;
  };
  CHECK(admitted("acme", "/o", "eu") == 5);   // two descriptors beat one
  CHECK(admitted("other", "/o", "eu") == 7);  // one each: region comes later in the rule
  CHECK(admitted("other", "/o", "us") == 9);
  CHECK(admitted("other", "/p", "us") == 1);
}

TEST_CASE("run-time overrides survive a reload that reorders the rule's descriptors", "[limiter]") {
  auto l = limiterWith({fixedRule("tr", 1, {"tenant", "route"})});
  Override o{{{"tenant", "a"}, {"route", "/x"}}, 4, 0};
  REQUIRE(std::holds_alternative<Override>(l.setOverride("tr", o)));
  l.setRules({fixedRule("tr", 1, {"route", "tenant"})});
  // The same override again replaces the one kept, in either order.
  REQUIRE(std::holds_alternative<Override>(
      l.setOverride("tr", Override{{{"route", "/x"}, {"tenant", "a"}}, 6, 0})));
  CHECK(l.stats().runtimeOverrides == 1);
  int n = 0;
  while (n < 100 && check(l, "tr", {{"tenant", "a"}, {"route", "/x"}}, 0).allowed()) ++n;
  CHECK(n == 6);
  auto cleared = l.clearOverride("tr", {{"tenant", "a"}, {"route", "/x"}});
  REQUIRE(std::holds_alternative<bool>(cleared));
  CHECK(std::get<bool>(cleared));
  CHECK(l.stats().runtimeOverrides == 0);
}

TEST_CASE("validateRequest says what check() would refuse, taking nothing", "[limiter]") {
  auto l = limiterWith({fixedRule("api", 1)});
  CHECK_FALSE(l.validateRequest(CheckRequest{"api", "a", {}, 1}));
  auto f = l.validateRequest(CheckRequest{"nope", "a", {}, 1});
  REQUIRE(f);
  CHECK(f->code == Fail::notFound);
  CHECK(check(l, "api", "a", 0).allowed());  // nothing was taken
}

TEST_CASE("bad overrides are refused", "[limiter]") {
  LimiterOptions options;
  options.maxRuntimeOverrides = 1;
  auto l = limiterWith({fixedRule("tr", 1, {"tenant", "route"})}, options);
  auto fails = [&](std::variant<Failure, Override> r, Fail code, const char* text) {
    REQUIRE(std::holds_alternative<Failure>(r));
    CHECK(std::get<Failure>(r).code == code);
    CHECK_THAT(std::get<Failure>(r).message, Catch::Contains(text));
  };
  fails(l.setOverride("nope", Override{{{"tenant", "a"}}, 1, 0}), Fail::notFound, "nope");
  fails(l.setOverride("tr", Override{{{"user", "a"}}, 1, 0}), Fail::invalidArgument,
        "not among the rule's (tenant, route)");
  fails(l.setOverride("tr", Override{{}, 1, 0}), Fail::invalidArgument, "names no descriptors");
  fails(l.setOverride("tr", Override{{{"tenant", "a"}}, 0, 0}), Fail::invalidArgument, "limit");
  fails(l.setOverride("tr", Override{{{"tenant", "a"}, {"tenant", "b"}}, 1, 0}),
        Fail::invalidArgument, "named twice");
  REQUIRE(std::holds_alternative<Override>(l.setOverride("tr", Override{{{"tenant", "a"}}, 2, 0})));
  // Replacing one is not one more; a second one is.
  CHECK(std::holds_alternative<Override>(l.setOverride("tr", Override{{{"tenant", "a"}}, 3, 0})));
  fails(l.setOverride("tr", Override{{{"tenant", "b"}}, 2, 0}), Fail::exhausted, "max_overrides");
}

TEST_CASE("an override's burst scales with its limit unless given", "[limiter]") {
  Rule r;
  r.name = "burst";
  r.quota = Quota{Algorithm::tokenBucket, 1, kSecond, 5};
  r.descriptors = {"key"};
  CHECK(overridden(r, Override{{{"key", "vip"}}, 10, 0}).burst == 50);
  CHECK(overridden(r, Override{{{"key", "vip"}}, 10, 7}).burst == 7);
  r.quota.burst = 0;
  CHECK(overridden(r, Override{{{"key", "vip"}}, 10, 0}).burst == 0);
}

TEST_CASE("run-time overrides outlive their rule and return with it", "[limiter]") {
  auto l = limiterWith({fixedRule("api", 1)});
  REQUIRE(std::holds_alternative<Override>(l.setOverride("api", Override{{{"key", "vip"}}, 4, 0})));
  l.setRules({fixedRule("other", 1)});
  CHECK(l.runtimeOverrides("api").size() == 1);
  l.setRules({fixedRule("api", 1)});
  int n = 0;
  while (n < 100 && check(l, "api", "vip", 0).allowed()) ++n;
  CHECK(n == 4);
}

TEST_CASE("restored overrides apply once the rules are set", "[limiter]") {
  Limiter l;
  l.restoreOverride("api", Override{{{"key", "vip"}}, 2, 0});
  l.restoreOverride("api", Override{{{"key", "gold"}}, 9, 0});
  CHECK(l.restoreClear("api", {{"key", "gold"}}));
  CHECK_FALSE(l.restoreClear("api", {{"key", "gold"}}));
  l.setRules({fixedRule("api", 1)});
  CHECK(check(l, "api", "vip", 0).allowed());
  CHECK(check(l, "api", "vip", 0).allowed());
  CHECK_FALSE(check(l, "api", "vip", 0).allowed());
  CHECK(check(l, "api", "gold", 0).allowed());
  CHECK_FALSE(check(l, "api", "gold", 0).allowed());
}

TEST_CASE("reloading rules keeps the state of rules whose shape is unchanged", "[limiter]") {
  auto l = limiterWith({fixedRule("a", 2), fixedRule("b", 2), fixedRule("c", 2)});
  for (auto name : {"a", "b", "c"}) {
    CHECK(check(l, name, "k", 0).allowed());
    CHECK(check(l, name, "k", 0).allowed());
  }
  auto a = fixedRule("a", 3);  // limit raised: state kept, one more now
  auto b = fixedRule("b", 2);
  b.quota.window = 2 * kSecond;  // window changed: starts fresh
  CHECK(l.setRules({a, b}) == 1);
  CHECK(check(l, "a", "k", 0).allowed());
  CHECK_FALSE(check(l, "a", "k", 0).allowed());
  CHECK(check(l, "b", "k", 0).allowed());
  CHECK(check(l, "b", "k", 0).allowed());
  CHECK_FALSE(check(l, "b", "k", 0).allowed());
  CHECK(check(l, "c", "k", 0).failure);  // gone
  CHECK(l.stats().keys == 2);
}

TEST_CASE("shadow mode decides and counts but never denies", "[limiter]") {
  auto rule = fixedRule("api", 1);
  rule.shadow = true;
  auto l = limiterWith({rule});
  CHECK(check(l, "api", "a", 0).allowed());
  auto shadow = check(l, "api", "a", 0);
  CHECK(shadow.allowed());
  CHECK(shadow.outcome->shadowDenied);
  CHECK(l.ruleStats()[0].second.shadowDenied == 1);
  CHECK(l.ruleStats()[0].second.denied == 0);
}

TEST_CASE("a lease takes what is available, up to what it wants", "[limiter]") {
  auto l = limiterWith({fixedRule("api", 10)});
  auto lease = [&](uint64_t want) {
    auto r = l.lease(CheckRequest{"api", "a", {}, want}, want, 0);
    REQUIRE(std::holds_alternative<LeaseOutcome>(r));
    return std::get<LeaseOutcome>(r);
  };
  CHECK(lease(4).granted == 4);
  CHECK(lease(4).granted == 4);
  auto last = lease(4);
  CHECK(last.granted == 2);
  CHECK(last.outcome.decision.remaining == 0);
  auto none = lease(4);
  CHECK(none.granted == 0);
  CHECK_FALSE(none.outcome.decision.allowed);
  CHECK(none.outcome.decision.retryAfter == kSecond);
  CHECK(std::holds_alternative<Failure>(l.lease(CheckRequest{"api", "a", {}, 0}, 0, 0)));
}

TEST_CASE("denied events: the first at once, the rest counted per interval", "[coalescer]") {
  DenialCoalescer c(kSecond, 2);
  auto first = c.denied("api", "a", false, 5, 0);
  REQUIRE(first);
  CHECK(first->denials == 1);
  CHECK(first->key == "a");
  CHECK_FALSE(c.denied("api", "a", false, 6, 10));
  CHECK_FALSE(c.denied("api", "a", false, 7, 20));
  CHECK(c.denied("burst", "a", true, 1, 30));       // another rule: another key
  CHECK_FALSE(c.denied("api", "z", false, 1, 40));  // over maxKeys: dropped, counted
  CHECK(c.stats().dropped == 1);
  CHECK(c.flush(kSecond - 1).empty());
  CHECK(c.nextFlush() == kSecond);
  auto events = c.flush(kSecond + 30);
  REQUIRE(events.size() == 1);  // "burst" had nothing after its first
  CHECK(events[0].rule == "api");
  CHECK(events[0].denials == 2);
  CHECK(events[0].retryAfter == 7);
  CHECK_FALSE(events[0].shadow);
  CHECK(c.stats().pending == 1);  // "burst|a" forgotten after a quiet interval
  CHECK(c.flush(3 * kSecond).empty());
  CHECK(c.stats().pending == 0);
  CHECK(c.denied("api", "a", false, 1, 3 * kSecond));  // a new interval: at once again
  CHECK(c.stats().published == 4);
  CHECK(c.stats().coalesced == 2);
}

}  // namespace zmesh::ratelimit
