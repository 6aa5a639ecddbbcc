// The rate limiter's state: rules, the keys they track, overrides, and the
// bounds on all of them. Pure (time is passed in), single-threaded: the
// service's loop owns it.
//
// A key is (rule, the values of the rule's descriptors in the rule's order).
// Keys live in one table per rule with a clock hand over them: a sweep visits
// keys oldest-visited first and drops each whose state has returned to its
// default (nothing lost), so idle keys go without a scan of the whole table.
// When max_keys are tracked and a new key arrives, the hand looks a bounded
// distance for such a key to drop; finding none, the new key is denied or
// admitted untracked, as configured, and counted — a key being limited is
// never reset to make room.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "algorithm.h"

namespace zmesh::ratelimit {

// One descriptor of a request: what a limit is keyed on (tenant=acme).
struct DescriptorView {
  std::string_view key;
  std::string_view value;
};
using Descriptors = std::vector<std::pair<std::string, std::string>>;

inline constexpr size_t kMaxRuleDescriptors = 8;
inline constexpr size_t kMaxDescriptorValueBytes = 256;
inline constexpr size_t kMaxRuleNameBytes = 64;

// A different quota for the keys whose descriptors include all of `match`.
// Where several apply, the one naming more descriptors wins; of equally many,
// the one naming descriptors later in the rule's list; a run-time override
// replaces a file one for the same descriptors.
struct Override {
  Descriptors match;   // a subset of the rule's descriptors (kept in the rule's order)
  uint64_t limit = 0;  // >= 1
  uint64_t burst = 0;  // 0: the rule's burst scaled by limit / rule limit
  friend bool operator==(const Override&, const Override&) = default;
};

struct Rule {
  std::string name;  // 1-64 of [A-Za-z0-9_.-]
  Quota quota;
  std::vector<std::string> descriptors;  // the key's parts, in order; 1-8, distinct
  bool shadow = false;                   // decide and count, never deny
  std::vector<Override> overrides;       // from the rules file
  friend bool operator==(const Rule&, const Rule&) = default;
};

// Why the rule cannot be used, or nullopt.
std::optional<std::string> validate(const Rule& rule);
// Descriptors sorted by name, and equality regardless of order: how overrides
// are compared (a rules file may reorder a rule's descriptors).
Descriptors sortedByName(Descriptors d);
bool sameDescriptors(const Descriptors& a, const Descriptors& b);
// `match` sorted into the order of the rule's descriptors (how overrides are
// kept and compared); names the rule lacks go last.
Descriptors inRuleOrder(const Rule& rule, Descriptors match);
// Why the override cannot apply to the rule, or nullopt.
std::optional<std::string> validate(const Rule& rule, const Override& o);
// The quota an override gives the rule's keys.
Quota overridden(const Rule& rule, const Override& o);

enum class WhenFull : uint8_t {
  deny,            // a new key is denied while max_keys are tracked and none is idle
  admitUntracked,  // a new key is admitted without being tracked
};

struct LimiterOptions {
  size_t maxKeys = 1'000'000;
  WhenFull whenFull = WhenFull::deny;
  size_t maxRuntimeOverrides = 100'000;
  size_t evictionScan = 64;  // keys the hand looks at for one new key when full
};

enum class Fail : uint8_t {
  invalidArgument,  // the request itself is wrong
  notFound,         // no such rule
  exhausted,        // a bound on the limiter's own tables (overrides) is reached
};
struct Failure {
  Fail code;
  std::string message;
};

struct CheckRequest {
  std::string_view rule;
  std::string_view key;  // for a rule keyed on one descriptor: its value (else empty)
  std::span<const DescriptorView> descriptors;
  uint64_t cost = 1;
};

struct Outcome {
  Decision decision;  // allowed already reflects shadow mode
  const Rule* rule;   // valid until the rules change
  Quota quota;        // after overrides
  bool shadowDenied = false;
  bool untracked = false;  // admitted or denied without a tracked key (max_keys)
  bool refused = false;    // denied because max_keys are tracked (not by the quota)
  std::string_view key;    // the key: the values NUL-separated; valid until the next call
};

struct LeaseOutcome {
  uint64_t granted = 0;
  Outcome outcome;
};

struct RuleStats {
  uint64_t decisions = 0;
  uint64_t allowed = 0;
  uint64_t denied = 0;
  uint64_t shadowDenied = 0;
  uint64_t keys = 0;
};

struct LimiterStats {
  uint64_t keys = 0;           // tracked now
  uint64_t keysDropped = 0;    // returned to default and dropped (lossless)
  uint64_t keysRefused = 0;    // new keys denied: max_keys tracked, none idle
  uint64_t keysUntracked = 0;  // new keys admitted untracked: max_keys tracked, none idle
  uint64_t heapBytes = 0;      // sliding logs' entries
  uint64_t runtimeOverrides = 0;
};

class Limiter {
 public:
  explicit Limiter(LimiterOptions options = {});
  ~Limiter();
  Limiter(Limiter&&) noexcept;
  Limiter& operator=(Limiter&&) noexcept;

  // Replaces the rules (already validated). A rule whose algorithm, window and
  // descriptors are unchanged keeps its keys' state; the others start fresh.
  // Returns how many kept their state.
  size_t setRules(std::vector<Rule> rules);
  const std::vector<Rule>& rules() const;

  std::variant<Failure, Outcome> check(const CheckRequest& request, Nanos now);
  // Why check() would fail for this request (no rule, bad descriptors), or
  // nullopt; changes nothing. A batch is validated whole before any is taken.
  std::optional<Failure> validateRequest(const CheckRequest& request);
  // Takes up to `want` of what is available now (two-stage limiting).
  std::variant<Failure, LeaseOutcome> lease(const CheckRequest& request, uint64_t want, Nanos now);

  // Run-time overrides, by rule name; kept when a rule leaves the rules and
  // applied again if it returns. Returns the override as kept (what to persist).
  std::variant<Failure, Override> setOverride(std::string_view rule, Override o);
  // What setOverride would keep, or why it would fail; changes nothing.
  std::variant<Failure, Override> checkOverride(std::string_view rule, Override o) const;
  std::variant<Failure, bool> clearOverride(std::string_view rule, const Descriptors& match);
  // Every run-time override (for the snapshot), rule by rule.
  std::vector<std::pair<std::string, Override>> runtimeOverrides() const;
  std::vector<Override> runtimeOverrides(std::string_view rule) const;
  // Replays the log, with no check against the rules (call before setRules).
  void restoreOverride(std::string rule, Override o);
  bool restoreClear(std::string_view rule, const Descriptors& match);

  // Visits up to `budget` keys and drops those at their default. Returns how many it dropped.
  size_t sweep(Nanos now, size_t budget);

  LimiterStats stats() const;
  // Per rule in force, in the rules' order.
  std::vector<std::pair<std::string, RuleStats>> ruleStats() const;

 private:
  struct Table;
  struct RuleSlot;
  RuleSlot* find(std::string_view name) const;
  Failure noRule(std::string_view name) const;
  std::variant<Failure, Outcome> decideFor(const CheckRequest& request, uint64_t cost,
                                           uint64_t want, Nanos now, uint64_t* granted);
  std::optional<Failure> keyOf(const RuleSlot& slot, const CheckRequest& request);
  Quota quotaFor(const RuleSlot& slot) const;
  bool makeRoom(Nanos now);
  size_t visit(Nanos now, size_t budget, bool stopAtFirstDrop);

  LimiterOptions options_;
  std::vector<Rule> rules_;
  std::vector<std::unique_ptr<RuleSlot>> slots_;  // parallel to rules_
  std::map<std::string, std::vector<Override>, std::less<>> runtime_;
  size_t runtimeCount_ = 0;
  size_t hand_ = 0;  // the rule table the clock hand visits next
  std::string keyScratch_;
  std::vector<std::string_view> valueScratch_;
  LimiterStats stats_;
};

}  // namespace zmesh::ratelimit
