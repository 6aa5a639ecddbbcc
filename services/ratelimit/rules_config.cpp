#include "rules_config.h"

#include <charconv>

namespace zmesh::ratelimit {
namespace {

constexpr auto kMaxWindowMs = std::chrono::milliseconds(kMaxWindow / kNanosPerMs);

Rule parseRule(const rpc::ConfigSection& rules, const std::string& name) {
  auto r = rules.child(name);
  r.rejectUnknown(
      {"algorithm", "limit", "window", "rate", "burst", "descriptors", "shadow_mode", "overrides"});
  Rule rule;
  rule.name = name;
  if (!r.has("algorithm")) r.fail("algorithm", "required");
  auto algorithm = parseAlgorithm(r.string("algorithm", ""));
  if (!algorithm)
    r.fail("algorithm",
           "expected token_bucket, leaky_bucket, fixed_window, sliding_window_log, "
           "sliding_window_counter or gcra, got \"" +
               r.string("algorithm", "") + "\"");
  rule.quota.algorithm = *algorithm;
  if (r.has("rate")) {
    if (r.has("limit") || r.has("window")) r.fail("rate", "give rate or limit + window, not both");
    auto rate = parseRate(r.string("rate", ""));
    if (!rate)
      r.fail("rate", "expected \"<count>/<duration>\" such as \"10/s\" or \"100/1m\", got \"" +
                         r.string("rate", "") + "\"");
    rule.quota.limit = rate->first;
    rule.quota.window = rate->second;
  } else {
    if (!r.has("limit")) r.fail("limit", "required (or rate)");
    if (!r.has("window")) r.fail("window", "required (or rate)");
    rule.quota.limit = r.integer("limit", 1, 1, kMaxLimit);
    rule.quota.window =
        r.duration("window", {}, std::chrono::milliseconds(1), kMaxWindowMs).count() * kNanosPerMs;
  }
  rule.quota.burst = r.integer("burst", 0, 1, kMaxLimit);
  if (!r.has("descriptors")) r.fail("descriptors", "required: the names the key is made of");
  rule.descriptors = r.strings("descriptors");
  rule.shadow = r.boolean("shadow_mode", false);
  for (auto& o : r.tables("overrides")) {
    o.rejectUnknown({"descriptors", "limit", "burst"});
    Override override;
    if (!o.has("descriptors")) o.fail("descriptors", "required");
    if (!o.has("limit")) o.fail("limit", "required");
    override.match = inRuleOrder(rule, o.stringTable("descriptors"));
    override.limit = o.integer("limit", 1, 1, kMaxLimit);
    override.burst = o.integer("burst", 0, 1, kMaxLimit);
    if (auto why = validate(rule, override)) o.fail("descriptors", *why);
    rule.overrides.push_back(std::move(override));
  }
  if (auto why = validate(rule)) rules.fail(name, *why);
  return rule;
}

}  // namespace

std::optional<std::pair<uint64_t, Nanos>> parseRate(std::string_view text) {
  auto slash = text.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  uint64_t count = 0;
  auto head = text.substr(0, slash);
  auto [end, ec] = std::from_chars(head.data(), head.data() + head.size(), count);
  if (ec != std::errc() || end != head.data() + head.size() || count == 0) return std::nullopt;
  std::string per(text.substr(slash + 1));
  if (!per.empty() && (per[0] < '0' || per[0] > '9')) per.insert(0, "1");  // "10/s" = "10/1s"
  if (per == "1") return std::nullopt;                                     // no unit at all
  auto window = rpc::parseDuration(per);
  if (!window || window->count() == 0 || window->count() > kMaxWindow / kNanosPerMs)
    return std::nullopt;
  return std::pair{count, static_cast<Nanos>(window->count()) * kNanosPerMs};
}

RateLimitSettings parseSettings(const rpc::ConfigSection& s) {
  using std::chrono::milliseconds;
  RateLimitSettings out;
  out.limiter.maxKeys = s.integer("max_keys", 1'000'000, 1, int64_t{1} << 32);
  auto whenFull = s.string("when_full", "deny");
  if (whenFull == "deny")
    out.limiter.whenFull = WhenFull::deny;
  else if (whenFull == "admit")
    out.limiter.whenFull = WhenFull::admitUntracked;
  else
    s.fail("when_full", "expected \"deny\" or \"admit\", got \"" + whenFull + "\"");
  out.limiter.maxRuntimeOverrides = s.integer("max_overrides", 100'000, 0, 10'000'000);
  out.sweepInterval =
      s.duration("sweep_interval", milliseconds(100), milliseconds(1)).count() * kNanosPerMs;
  out.sweepBudget = s.integer("sweep_budget", 10'000, 1, 10'000'000);
  out.deniedInterval =
      s.duration("denied_event_interval", milliseconds(1000), milliseconds(1)).count() *
      kNanosPerMs;
  out.deniedMaxKeys = s.integer("denied_event_max_keys", 100'000, 1, 10'000'000);
  out.leaseMax = s.duration("lease_max", milliseconds(1000), milliseconds(1)).count() * kNanosPerMs;
  out.maxBatch = s.integer("max_batch", 1000, 1, 100'000);
  return out;
}

std::vector<Rule> parseRules(const rpc::ConfigSection& ratelimit) {
  auto rules = ratelimit.child("rules");
  std::vector<Rule> out;
  for (auto& name : rules.keys()) out.push_back(parseRule(rules, name));
  return out;
}

std::vector<Rule> loadRules(const std::string& path) {
  return parseRules(rpc::MeshConfig::load(path).section("ratelimit"));
}

}  // namespace zmesh::ratelimit
