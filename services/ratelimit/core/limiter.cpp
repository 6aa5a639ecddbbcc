#include "limiter.h"

#include <xxhash.h>

#include <algorithm>
#include <bit>

namespace zmesh::ratelimit {
namespace {

bool validName(std::string_view name) {
  if (name.empty() || name.size() > kMaxRuleNameBytes) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
  });
}

// Why a descriptor value cannot be part of a key, or nullopt. NUL separates
// the values inside a key, so no value may contain one.
std::optional<std::string> badValue(std::string_view name, std::string_view value) {
  if (value.empty()) return "descriptor " + std::string(name) + " is empty";
  if (value.size() > kMaxDescriptorValueBytes)
    return "descriptor " + std::string(name) + " is " + std::to_string(value.size()) +
           " bytes, more than " + std::to_string(kMaxDescriptorValueBytes);
  if (value.find('\0') != std::string_view::npos)
    return "descriptor " + std::string(name) + " contains a NUL byte";
  return std::nullopt;
}

std::string joinNames(const std::vector<std::string>& names) {
  std::string out;
  for (auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

struct KeyHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return XXH3_64bits(s.data(), s.size()); }
};

// Which of the rule's descriptors an override names, as a bit mask; nullopt
// when it names one the rule lacks, or one twice.
std::optional<uint32_t> maskOf(const Rule& rule, const Descriptors& match) {
  uint32_t mask = 0;
  for (auto& [k, v] : match) {
    auto it = std::find(rule.descriptors.begin(), rule.descriptors.end(), k);
    if (it == rule.descriptors.end()) return std::nullopt;
    uint32_t bit = 1u << (it - rule.descriptors.begin());
    if (mask & bit) return std::nullopt;
    mask |= bit;
  }
  return mask;
}

}  // namespace

std::optional<std::string> validate(const Rule& rule) {
  if (!validName(rule.name))
    return "rule name \"" + rule.name + "\" must be 1-64 characters of [A-Za-z0-9_.-]";
  if (auto why = validate(rule.quota)) return "rule " + rule.name + ": " + *why;
  if (rule.descriptors.empty() || rule.descriptors.size() > kMaxRuleDescriptors)
    return "rule " + rule.name + ": descriptors: expected 1 to " +
           std::to_string(kMaxRuleDescriptors) + " names, got " +
           std::to_string(rule.descriptors.size());
  for (size_t i = 0; i < rule.descriptors.size(); ++i) {
    if (!validName(rule.descriptors[i]))
      return "rule " + rule.name + ": descriptor name \"" + rule.descriptors[i] +
             "\" must be 1-64 characters of [A-Za-z0-9_.-]";
    for (size_t j = 0; j < i; ++j)
      if (rule.descriptors[j] == rule.descriptors[i])
        return "rule " + rule.name + ": descriptor " + rule.descriptors[i] + " named twice";
  }
  for (auto& o : rule.overrides)
    if (auto why = validate(rule, o)) return why;
  for (size_t i = 0; i < rule.overrides.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (rule.overrides[i].match == rule.overrides[j].match)
        return "rule " + rule.name + ": two overrides for the same descriptors";
  return std::nullopt;
}

Descriptors sortedByName(Descriptors d) {
  std::sort(d.begin(), d.end());
  return d;
}

bool sameDescriptors(const Descriptors& a, const Descriptors& b) {
  return a.size() == b.size() && sortedByName(a) == sortedByName(b);
}

Descriptors inRuleOrder(const Rule& rule, Descriptors match) {
  auto index = [&](const std::string& k) {
    return std::find(rule.descriptors.begin(), rule.descriptors.end(), k) -
           rule.descriptors.begin();
  };
  std::stable_sort(match.begin(), match.end(),
                   [&](auto& a, auto& b) { return index(a.first) < index(b.first); });
  return match;
}

std::optional<std::string> validate(const Rule& rule, const Override& o) {
  const std::string where = "rule " + rule.name + ": override: ";
  if (o.match.empty()) return where + "names no descriptors (set the rule's own limit instead)";
  if (!maskOf(rule, o.match)) {
    std::string names;
    for (auto& [k, v] : o.match) names += (names.empty() ? "" : ", ") + k;
    return where + "descriptors " + names + " are not among the rule's (" +
           joinNames(rule.descriptors) + "), or one is named twice";
  }
  for (auto& [k, v] : o.match)
    if (auto why = badValue(k, v)) return where + *why;
  if (auto why = validate(overridden(rule, o))) return where + *why;
  return std::nullopt;
}

Quota overridden(const Rule& rule, const Override& o) {
  Quota q = rule.quota;
  q.limit = o.limit;
  if (o.burst != 0) {
    q.burst = o.burst;
  } else if (rule.quota.burst != 0) {
    // The rule's burst in proportion: 5 of 1 per second becomes 50 of 10.
    auto scaled = static_cast<unsigned __int128>(rule.quota.burst) * o.limit / rule.quota.limit;
    q.burst = static_cast<uint64_t>(std::clamp<unsigned __int128>(scaled, 1, kMaxLimit + 1));
  }
  return q;
}

// ---- the key tables ----

// One rule's keys, linked in the order the clock hand visits them.
struct Limiter::Table {
  struct Entry {
    KeyState state;
    Entry* prev = nullptr;
    Entry* next = nullptr;
    const std::string* key = nullptr;
  };
  std::unordered_map<std::string, Entry, KeyHash, std::equal_to<>> map;
  Entry* head = nullptr;  // visited next
  Entry* tail = nullptr;

  void link(Entry& e) {
    e.prev = tail;
    e.next = nullptr;
    (tail ? tail->next : head) = &e;
    tail = &e;
  }
  void unlink(Entry& e) {
    (e.prev ? e.prev->next : head) = e.next;
    (e.next ? e.next->prev : tail) = e.prev;
    e.prev = e.next = nullptr;
  }
};

struct Limiter::RuleSlot {
  Table table;
  RuleStats stats;
  // Overrides by match key (mask byte + values); run-time ones written last, so they win.
  std::unordered_map<std::string, Quota, KeyHash, std::equal_to<>> overrides;
  // Masks in use, most specific (most descriptors) first; equally specific, the
  // one naming later descriptors first (documented in limiter.h).
  struct MoreSpecific {
    bool operator()(uint32_t a, uint32_t b) const {
      int pa = std::popcount(a), pb = std::popcount(b);
      return pa != pb ? pa > pb : a > b;
    }
  };
  std::map<uint32_t, size_t, MoreSpecific> masks;
  const Rule* rule = nullptr;
};

namespace {

std::string matchKey(uint32_t mask, const Descriptors& match) {
  std::string key(1, static_cast<char>(mask));
  for (auto& [k, v] : match) key.append(v).push_back('\0');
  return key;
}

}  // namespace

Limiter::Limiter(LimiterOptions options) : options_(options) {}
Limiter::~Limiter() = default;
// Rule slots point into rules_, whose elements a move leaves where they are.
Limiter::Limiter(Limiter&&) noexcept = default;
Limiter& Limiter::operator=(Limiter&&) noexcept = default;

const std::vector<Rule>& Limiter::rules() const { return rules_; }

size_t Limiter::setRules(std::vector<Rule> rules) {
  std::vector<std::unique_ptr<RuleSlot>> slots;
  size_t kept = 0;
  for (auto& rule : rules) {
    auto slot = std::make_unique<RuleSlot>();
    for (size_t i = 0; i < rules_.size(); ++i) {
      const Rule& old = rules_[i];
      if (old.name != rule.name || !slots_[i]) continue;
      if (old.quota.algorithm == rule.quota.algorithm && old.quota.window == rule.quota.window &&
          old.descriptors == rule.descriptors) {
        slot->table = std::move(slots_[i]->table);
        slot->stats = slots_[i]->stats;
        slots_[i].reset();
        ++kept;
      }
      break;
    }
    slots.push_back(std::move(slot));
  }
  for (auto& old : slots_) {
    if (!old) continue;
    stats_.keys -= old->table.map.size();
    for (auto& [k, e] : old->table.map) stats_.heapBytes -= e.state.heapBytes();
  }
  rules_ = std::move(rules);
  slots_ = std::move(slots);
  hand_ = 0;
  for (size_t i = 0; i < rules_.size(); ++i) {
    auto& slot = *slots_[i];
    slot.rule = &rules_[i];
    auto add = [&](const Override& o) {
      auto mask = maskOf(rules_[i], o.match);
      if (!mask || validate(rules_[i], o)) return;  // a run-time one the new rule no longer fits
      auto match = inRuleOrder(rules_[i], o.match);
      auto [it, inserted] =
          slot.overrides.insert_or_assign(matchKey(*mask, match), overridden(rules_[i], o));
      if (inserted) ++slot.masks[*mask];
    };
    for (auto& o : rules_[i].overrides) add(o);
    if (auto it = runtime_.find(rules_[i].name); it != runtime_.end())
      for (auto& o : it->second) add(o);
  }
  return kept;
}

Failure Limiter::noRule(std::string_view name) const {
  std::string names;
  for (auto& r : rules_) names += (names.empty() ? "" : ", ") + r.name;
  return Failure{Fail::notFound, "no rule named \"" + std::string(name) +
                                     "\" (rules: " + (names.empty() ? "none" : names) + ")"};
}

Limiter::RuleSlot* Limiter::find(std::string_view name) const {
  for (size_t i = 0; i < rules_.size(); ++i)
    if (rules_[i].name == name) return slots_[i].get();
  return nullptr;
}

std::optional<Failure> Limiter::keyOf(const RuleSlot& slot, const CheckRequest& request) {
  const Rule& rule = *slot.rule;
  valueScratch_.assign(rule.descriptors.size(), {});
  if (!request.key.empty()) {
    if (!request.descriptors.empty())
      return Failure{Fail::invalidArgument, "give either key or descriptors, not both"};
    if (rule.descriptors.size() != 1)
      return Failure{Fail::invalidArgument, "rule " + rule.name + " is keyed on " +
                                                joinNames(rule.descriptors) +
                                                ": give descriptors, not key"};
    valueScratch_[0] = request.key;
  } else {
    for (auto& d : request.descriptors) {
      auto it = std::find(rule.descriptors.begin(), rule.descriptors.end(), d.key);
      if (it == rule.descriptors.end())
        return Failure{Fail::invalidArgument,
                       "rule " + rule.name + " is keyed on " + joinNames(rule.descriptors) +
                           ", not on descriptor \"" + std::string(d.key) + "\""};
      auto& slotValue = valueScratch_[static_cast<size_t>(it - rule.descriptors.begin())];
      if (slotValue.data() != nullptr)
        return Failure{Fail::invalidArgument, "descriptor " + std::string(d.key) + " given twice"};
      slotValue = d.value;
    }
  }
  for (size_t i = 0; i < valueScratch_.size(); ++i) {
    if (valueScratch_[i].data() == nullptr)
      return Failure{Fail::invalidArgument, "rule " + rule.name + " is keyed on " +
                                                joinNames(rule.descriptors) + ": missing " +
                                                rule.descriptors[i]};
    if (auto why = badValue(rule.descriptors[i], valueScratch_[i]))
      return Failure{Fail::invalidArgument, *why};
  }
  keyScratch_.clear();
  for (size_t i = 0; i < valueScratch_.size(); ++i) {
    if (i) keyScratch_.push_back('\0');
    keyScratch_.append(valueScratch_[i]);
  }
  return std::nullopt;
}

Quota Limiter::quotaFor(const RuleSlot& slot) const {
  if (slot.masks.empty()) return slot.rule->quota;
  std::string key;
  for (auto& [mask, count] : slot.masks) {
    key.assign(1, static_cast<char>(mask));
    for (size_t i = 0; i < valueScratch_.size(); ++i)
      if (mask & (1u << i)) key.append(valueScratch_[i]).push_back('\0');
    if (auto it = slot.overrides.find(key); it != slot.overrides.end()) return it->second;
  }
  return slot.rule->quota;
}

std::optional<Failure> Limiter::validateRequest(const CheckRequest& request) {
  RuleSlot* slot = find(request.rule);
  if (!slot) return noRule(request.rule);
  return keyOf(*slot, request);
}

std::variant<Failure, Outcome> Limiter::check(const CheckRequest& request, Nanos now) {
  return decideFor(request, request.cost, 0, now, nullptr);
}

std::variant<Failure, LeaseOutcome> Limiter::lease(const CheckRequest& request, uint64_t want,
                                                   Nanos now) {
  if (want == 0) return Failure{Fail::invalidArgument, "a lease must want at least 1"};
  uint64_t granted = 0;
  auto result = decideFor(request, 0, want, now, &granted);
  if (auto* f = std::get_if<Failure>(&result)) return *f;
  return LeaseOutcome{granted, std::get<Outcome>(result)};
}

// A check takes `cost`; a lease (granted != null) takes what is available of `want`.
std::variant<Failure, Outcome> Limiter::decideFor(const CheckRequest& request, uint64_t cost,
                                                  uint64_t want, Nanos now, uint64_t* granted) {
  RuleSlot* slot = find(request.rule);
  if (!slot) return noRule(request.rule);
  if (auto f = keyOf(*slot, request)) return *f;
  const Rule& rule = *slot->rule;
  Outcome out{};
  out.rule = &rule;
  out.quota = quotaFor(*slot);
  Table& table = slot->table;
  auto it = table.map.find(std::string_view(keyScratch_));
  KeyState fresh;
  KeyState* state = nullptr;
  if (it != table.map.end()) {
    state = &it->second.state;
    out.key = it->first;
  } else {
    out.key = keyScratch_;
    bool reads = granted ? false : cost == 0;
    if (reads || stats_.keys < options_.maxKeys || makeRoom(now)) {
      state = &fresh;  // inserted below if the decision leaves it changed
    } else if (options_.whenFull == WhenFull::admitUntracked) {
      state = &fresh;
      out.untracked = true;
      ++stats_.keysUntracked;
    } else {
      out.refused = true;
      ++stats_.keysRefused;
    }
  }

  auto& d = out.decision;
  if (out.refused) {
    d.allowed = false;
    d.limit = out.quota.capacity();
    // One unit of the quota's rate: as good a hint as there is while the table is full.
    d.retryAfter = std::max<Nanos>(out.quota.window / static_cast<Nanos>(out.quota.limit), 1);
  } else if (granted) {
    uint64_t take = std::min<uint64_t>(want, available(out.quota, *state, now));
    size_t before = state->heapBytes();
    d = decide(out.quota, *state, take > 0 ? take : 1, now);
    stats_.heapBytes += state->heapBytes() - before;
    if (take == 0 && d.allowed) {
      // decide() took 1 that available() said was not there: cannot happen; never grant it.
      d.allowed = false;
    }
    *granted = d.allowed ? take : 0;
    if (out.untracked || (rule.shadow && !out.refused)) *granted = want;
  } else {
    size_t before = state->heapBytes();
    d = decide(out.quota, *state, cost, now);
    stats_.heapBytes += state->heapBytes() - before;  // wraps back when it shrank: exact
  }

  if (state == &fresh) {
    if (!out.untracked && !atDefault(out.quota, fresh, now)) {
      auto [pos, inserted] = table.map.emplace(std::string(keyScratch_), Table::Entry{});
      pos->second.state = std::move(fresh);
      pos->second.key = &pos->first;
      table.link(pos->second);
      out.key = pos->first;
      ++stats_.keys;
    } else {
      stats_.heapBytes -= fresh.heapBytes();  // counted above, gone with `fresh`
    }
  }

  ++slot->stats.decisions;
  if (d.allowed) {
    ++slot->stats.allowed;
  } else if (rule.shadow && !out.refused) {
    ++slot->stats.shadowDenied;
    out.shadowDenied = true;
    d.allowed = true;
  } else {
    ++slot->stats.denied;
  }
  return out;
}

bool Limiter::makeRoom(Nanos now) { return visit(now, options_.evictionScan, true) > 0; }

size_t Limiter::sweep(Nanos now, size_t budget) {
  // Each key once at most: a small table is not gone round again and again.
  return visit(now, std::min<size_t>(budget, stats_.keys), false);
}

// Moves the clock hand over up to `budget` keys, a rule's table at a time
// round-robin: drops each key at its default, sends the others to the back.
size_t Limiter::visit(Nanos now, size_t budget, bool stopAtFirstDrop) {
  size_t dropped = 0;
  size_t idleTables = 0;  // consecutive tables found empty: all of them means nothing to visit
  while (budget > 0 && !slots_.empty() && idleTables < slots_.size()) {
    auto& slot = *slots_[hand_];
    hand_ = (hand_ + 1) % slots_.size();
    Table& t = slot.table;
    if (!t.head) {
      ++idleTables;
      continue;
    }
    idleTables = 0;
    --budget;
    Table::Entry* e = t.head;
    t.unlink(*e);
    Quota q = slot.rule->quota;
    if (!slot.masks.empty()) {
      // The key's own quota: its values are in the key, NUL-separated.
      valueScratch_.clear();
      std::string_view rest = *e->key;
      for (size_t i = 0; i < slot.rule->descriptors.size(); ++i) {
        auto end = rest.find('\0');
        valueScratch_.push_back(rest.substr(0, end));
        rest = end == std::string_view::npos ? std::string_view{} : rest.substr(end + 1);
      }
      q = quotaFor(slot);
    }
    if (!atDefault(q, e->state, now)) {
      t.link(*e);
      continue;
    }
    stats_.heapBytes -= e->state.heapBytes();
    t.map.erase(*e->key);
    --stats_.keys;
    ++stats_.keysDropped;
    ++dropped;
    if (stopAtFirstDrop) break;
  }
  return dropped;
}

// ---- run-time overrides ----

std::variant<Failure, Override> Limiter::checkOverride(std::string_view ruleName,
                                                       Override o) const {
  RuleSlot* slot = find(ruleName);
  if (!slot) return noRule(ruleName);
  if (auto why = validate(*slot->rule, o)) return Failure{Fail::invalidArgument, *why};
  o.match = inRuleOrder(*slot->rule, std::move(o.match));
  auto it = runtime_.find(ruleName);
  bool replaces = it != runtime_.end() &&
                  std::any_of(it->second.begin(), it->second.end(),
                              [&](auto& x) { return sameDescriptors(x.match, o.match); });
  if (!replaces && runtimeCount_ >= options_.maxRuntimeOverrides)
    return Failure{Fail::exhausted, "already " + std::to_string(runtimeCount_) +
                                        " run-time overrides (max_overrides)"};
  return o;
}

std::variant<Failure, Override> Limiter::setOverride(std::string_view ruleName, Override given) {
  auto checked = checkOverride(ruleName, std::move(given));
  if (auto* f = std::get_if<Failure>(&checked)) return *f;
  auto& o = std::get<Override>(checked);
  RuleSlot* slot = find(ruleName);
  auto mask = *maskOf(*slot->rule, o.match);
  auto [it, inserted] =
      slot->overrides.insert_or_assign(matchKey(mask, o.match), overridden(*slot->rule, o));
  if (inserted) ++slot->masks[mask];
  restoreOverride(std::string(ruleName), o);
  return o;
}

std::variant<Failure, bool> Limiter::clearOverride(std::string_view ruleName,
                                                   const Descriptors& unordered) {
  RuleSlot* slot = find(ruleName);
  if (!slot) return noRule(ruleName);
  auto match = inRuleOrder(*slot->rule, unordered);
  if (!restoreClear(ruleName, match)) return false;
  if (auto mask = maskOf(*slot->rule, match)) {
    auto key = matchKey(*mask, match);
    // The rules file's override for the same descriptors, if any, applies again.
    auto file = std::find_if(slot->rule->overrides.begin(), slot->rule->overrides.end(),
                             [&](auto& x) { return sameDescriptors(x.match, match); });
    if (file != slot->rule->overrides.end()) {
      slot->overrides.insert_or_assign(key, overridden(*slot->rule, *file));
    } else if (slot->overrides.erase(key) && --slot->masks[*mask] == 0) {
      slot->masks.erase(*mask);
    }
  }
  return true;
}

void Limiter::restoreOverride(std::string rule, Override o) {
  auto& list = runtime_[std::move(rule)];
  auto same = std::find_if(list.begin(), list.end(),
                           [&](auto& x) { return sameDescriptors(x.match, o.match); });
  if (same != list.end()) {
    *same = std::move(o);
  } else {
    list.push_back(std::move(o));
    ++runtimeCount_;
  }
}

bool Limiter::restoreClear(std::string_view rule, const Descriptors& match) {
  auto it = runtime_.find(rule);
  if (it == runtime_.end()) return false;
  auto& list = it->second;
  auto same = std::find_if(list.begin(), list.end(),
                           [&](auto& x) { return sameDescriptors(x.match, match); });
  if (same == list.end()) return false;
  list.erase(same);
  --runtimeCount_;
  if (list.empty()) runtime_.erase(it);
  return true;
}

std::vector<std::pair<std::string, Override>> Limiter::runtimeOverrides() const {
  std::vector<std::pair<std::string, Override>> out;
  for (auto& [rule, list] : runtime_)
    for (auto& o : list) out.emplace_back(rule, o);
  return out;
}

std::vector<Override> Limiter::runtimeOverrides(std::string_view rule) const {
  auto it = runtime_.find(rule);
  return it == runtime_.end() ? std::vector<Override>{} : it->second;
}

// ---- stats ----

LimiterStats Limiter::stats() const {
  LimiterStats s = stats_;
  s.runtimeOverrides = runtimeCount_;
  return s;
}

std::vector<std::pair<std::string, RuleStats>> Limiter::ruleStats() const {
  std::vector<std::pair<std::string, RuleStats>> out;
  for (size_t i = 0; i < rules_.size(); ++i) {
    RuleStats s = slots_[i]->stats;
    s.keys = slots_[i]->table.map.size();
    out.emplace_back(rules_[i].name, s);
  }
  return out;
}

}  // namespace zmesh::ratelimit
