// The cache's writes under crashes (DESIGN.md §4). A writer sends random
// set / del / incr / expire / mset and keeps a model of what was
// acknowledged (and of the one call in doubt when a crash cut it off);
// after every restart the whole state — a scan by cursor, then get and ttl
// of every key — is compared with it:
//   (1) real kill -9 under fsync=always, with snapshots written a slice at a
//       time mid-run, so restarts load a snapshot and the log after it: the
//       state equals the model (expiry times within the calls' windows);
//   (2) real kill -9 under everysec and no: the state is a prefix of the
//       acknowledged history (kill -9 keeps the page cache, so in fact all of it);
//   (3) the service in this process over FaultInjectionEnv, power lost before
//       every storage operation of a workload that takes sliced snapshots: the
//       state loads and, under always, equals the model (everysec / no: a prefix);
//   (4) a corrupted or torn last log record is cut and everything before it loads.
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "cache_process.h"
#include "in_process.h"
#include "service.h"
#include "zmesh/rpc/clock.h"
#include "zmesh/storage/fault_env.h"

using namespace zmesh;
using namespace zmesh::testing;
using Catch::Matchers::Contains;
using Clock = std::chrono::steady_clock;
using Millis = int64_t;

namespace {

// What ms truncation on both sides can add to an expiry window.
constexpr Millis kSlackMs = 5;

bool inDoubt(StatusCode code) {
  return code == StatusCode::UNAVAILABLE || code == StatusCode::DEADLINE_EXCEEDED;
}

int64_t msSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

// ---- the model ----

// A key's value and when it expires: at a Unix ms in [lo, hi] (the window of
// the call that set it), or never (lo = hi = 0).
struct Entry {
  std::string value;
  Millis lo = 0, hi = 0;
};
using State = std::map<std::string, Entry>;

enum class Kind : uint8_t { set, del, incr, expire, mset };

struct Op {
  Kind kind;
  std::vector<std::pair<std::string, std::string>> entries;  // set, mset; else the key alone
  Millis ttl = 0;                                            // set, mset, expire
  int64_t by = 0;                                            // incr
  const std::string& key() const { return entries.front().first; }
};

std::string describe(const Op& op) {
  static const char* names[] = {"set", "del", "incr", "expire", "mset"};
  std::string out = names[static_cast<int>(op.kind)];
  for (auto& [k, v] : op.entries) {
    out += " " + k;
    if (op.kind == Kind::set || op.kind == Kind::mset)
      out += "=<" + std::to_string(v.size()) + "B>";
  }
  if (op.kind == Kind::incr) out += " by " + std::to_string(op.by);
  if (op.ttl) out += " ttl " + std::to_string(op.ttl) + "ms";
  return out;
}

std::string show(const std::optional<Entry>& e) {
  if (!e) return "absent";
  std::string v = e->value.size() > 24
                      ? e->value.substr(0, 24) + "…(" + std::to_string(e->value.size()) + "B)"
                      : e->value;
  if (e->lo == 0) return "'" + v + "' no expiry";
  return "'" + v + "' expiring in [" + std::to_string(e->lo) + ", " + std::to_string(e->hi) + "]";
}

std::optional<Entry> find(const State& s, const std::string& key) {
  auto it = s.find(key);
  if (it == s.end()) return std::nullopt;
  return it->second;
}

// What the service was seen to hold: a scan by cursor, then get (mget) and
// ttl of every key, all between Unix ms q0 and q1.
struct Observed {
  std::set<std::string> scanned;
  std::map<std::string, std::optional<std::string>> values;
  std::map<std::string, Millis> ttls;  // ms left; -1: no expiry; -2: absent
  Millis q0 = 0, q1 = 0;
};

// Whether `e` (the model's word for one key) explains what was seen of it.
bool explains(const std::optional<Entry>& e, const Observed& o, const std::string& key) {
  const auto& value = o.values.at(key);
  const Millis ttl = o.ttls.at(key);
  if (!e) return !value;
  const bool mayBeGone = e->hi != 0 && e->hi <= o.q1 + kSlackMs;
  const bool mayBeThere = e->lo == 0 || e->lo > o.q0 - kSlackMs;
  if (!value) return mayBeGone;
  if (!mayBeThere || *value != e->value) return false;
  if (ttl == -2) return mayBeGone;  // ran out between the get and the ttl
  if (e->lo == 0) return ttl == -1;
  return ttl >= e->lo - o.q1 - kSlackMs && ttl <= e->hi - o.q0 + kSlackMs;
}

std::string showSeen(const Observed& o, const std::string& key) {
  const auto& value = o.values.at(key);
  if (!value) return "absent";
  std::string v = value->size() > 24
                      ? value->substr(0, 24) + "…(" + std::to_string(value->size()) + "B)"
                      : *value;
  return "'" + v + "' ttl " + std::to_string(o.ttls.at(key)) + " ms at [" + std::to_string(o.q0) +
         ", " + std::to_string(o.q1) + "]";
}

// ---- the writer ----

struct WorkloadOptions {
  int stringKeys = 24;  // s:0.. set, del, expire, mset (values of any size)
  int counterKeys = 6;  // n:0.. set (numbers), del, incr, expire (long ttls only)
  bool shortTtls = true;
  size_t maxValue = 6000;
  bool retryable = true;  // as CacheClient sends its calls (incr never)
  std::chrono::milliseconds timeout = 1s;
};

// One writer (one connection, so its calls reach the service in order), the
// model of what it was answered, the history of values for the prefix check,
// and the one call in doubt, if a crash cut it off.
class Writer {
 public:
  // The values each acknowledged call left its keys with (nullopt: absent).
  struct Step {
    std::string what;
    std::vector<std::pair<std::string, std::optional<std::string>>> after;
    bool doubt = false;
  };

  Writer(uint64_t seed, WorkloadOptions options) : rng_(seed), options_(options) {}

  Op next() {
    ++serial_;
    const uint64_t r = rng_() % 100;
    Op op{Kind::set, {}};
    if (r < 40) {
      op.entries = {{stringKey(), value()}};
      op.ttl = stringTtl();
    } else if (r < 48) {
      op.entries = {{counterKey(), std::to_string(static_cast<int64_t>(rng_() % 2001) - 1000)}};
      op.ttl = rng_() % 4 == 0 ? longTtl() : 0;
    } else if (r < 60) {
      op.kind = Kind::del;
      op.entries = {{rng_() % 4 == 0 ? counterKey() : stringKey(), ""}};
    } else if (r < 76) {
      op.kind = Kind::incr;
      op.entries = {{counterKey(), ""}};
      op.by = static_cast<int64_t>(rng_() % 101) - 50;
    } else if (r < 86) {
      op.kind = Kind::expire;
      const bool counter = rng_() % 3 == 0;
      op.entries = {{counter ? counterKey() : stringKey(), ""}};
      op.ttl = counter ? (rng_() % 3 == 0 ? 0 : longTtl()) : (rng_() % 4 == 0 ? 0 : stringTtl());
      if (op.ttl == 0 && !counter && rng_() % 2) op.ttl = longTtl();
    } else {
      op.kind = Kind::mset;
      const int n = 2 + static_cast<int>(rng_() % 4);
      for (int i = 0; i < n; ++i) op.entries.emplace_back(stringKey(), value());
      op.ttl = stringTtl();
    }
    return op;
  }

  // A set of string key `i`: to fill the key space first.
  Op fill(int i) {
    ++serial_;
    return Op{Kind::set, {{"s:" + std::to_string(i), value()}}};
  }

  enum class Result { ok, inDoubt, failed };

  // Sends `op` and, once answered, applies it to the model. In doubt (the
  // call failed with UNAVAILABLE or DEADLINE_EXCEEDED): kept as the call in
  // doubt until the next check says whether it was done.
  Result run(const rpc::Channel& channel, const Op& op) {
    rpc::CallOptions o;
    o.timeout = options_.timeout;
    o.retryable = options_.retryable && op.kind != Kind::incr;
    for (auto& [k, v] : op.entries) written_.insert(k);
    const Millis t0 = rpc::unixMillis();
    auto reply = send(channel, op, o);
    const Millis t1 = rpc::unixMillis();
    if (!reply.status.ok()) {
      if (inDoubt(reply.status.code)) {
        doubt_ = Doubt{op, t0};
        ++inDoubt_;
        return Result::inDoubt;
      }
      unexpected_.push_back(describe(op) + ": " + std::string(rpc::statusName(reply.status.code)) +
                            ": " + reply.status.message);
      return Result::failed;
    }
    ++acknowledged_;
    Step step{describe(op), {}, false};
    switch (op.kind) {
      case Kind::set:
      case Kind::mset:
        for (auto& [k, v] : op.entries)
          model_[k] = Entry{v, window(op.ttl, t0), window(op.ttl, t1)};
        break;
      case Kind::del: {
        bool existed = reply.results<idl::Cache::DelResults>().getExisted();
        // A del resent to the next incarnation may find the key gone by its first attempt.
        if (existed && surelyAbsent(op.key(), t0)) mismatch(op, "answered existed = true");
        model_.erase(op.key());
        break;
      }
      case Kind::incr: {
        const int64_t value = reply.results<idl::Cache::IncrResults>().getValue();
        auto old = find(model_, op.key());
        const int64_t expected = (old ? std::stoll(old->value) : 0) + op.by;
        if (value != expected)
          mismatch(op, "answered " + std::to_string(value) + ", the model says " +
                           std::to_string(expected) + " (was " + show(old) + ")");
        Entry e = old.value_or(Entry{});
        e.value = std::to_string(value);
        model_[op.key()] = e;
        break;
      }
      case Kind::expire: {
        bool found = reply.results<idl::Cache::ExpireResults>().getFound();
        if (found && surelyAbsent(op.key(), t0)) mismatch(op, "answered found = true");
        // Not found: absent, or ran out (also between a first attempt and its resend).
        if (!found) {
          model_.erase(op.key());
        } else {
          Entry& e = model_[op.key()];
          e.lo = window(op.ttl, t0);
          e.hi = window(op.ttl, t1);
        }
        break;
      }
    }
    for (auto& [k, v] : op.entries) {
      auto e = find(model_, k);
      step.after.emplace_back(k, e ? std::optional<std::string>(e->value) : std::nullopt);
    }
    history_.push_back(std::move(step));
    return Result::ok;
  }

  // The state as the call in doubt would have left it (applied by `end` at the latest).
  State withDoubtApplied(Millis end) const {
    State s = model_;
    if (!doubt_) return s;
    const Op& op = doubt_->op;
    const Millis t0 = doubt_->t0;
    switch (op.kind) {
      case Kind::set:
      case Kind::mset:
        for (auto& [k, v] : op.entries) s[k] = Entry{v, window(op.ttl, t0), window(op.ttl, end)};
        break;
      case Kind::del:
        s.erase(op.key());
        break;
      case Kind::incr: {
        auto old = find(s, op.key());
        Entry e = old.value_or(Entry{});
        e.value = std::to_string((old ? std::stoll(old->value) : 0) + op.by);
        s[op.key()] = e;
        break;
      }
      case Kind::expire: {
        auto it = s.find(op.key());
        if (it != s.end()) {
          it->second.lo = window(op.ttl, t0);
          it->second.hi = window(op.ttl, end);
        }
        break;
      }
    }
    return s;
  }

  // Reads everything the service holds, through `channel` (the writer's own
  // connection: a call in doubt still queued in it reaches the service first).
  Observed observe(const rpc::Channel& channel) {
    rpc::CallOptions o;
    o.timeout = 5s;
    o.retryable = true;
    Observed seen;
    seen.q0 = rpc::unixMillis();
    std::string cursor;
    int calls = 0;
    do {
      auto reply = callCache<idl::Cache::ScanParams>(
          channel, "scan",
          [&](auto p) {
            p.setCursor(cursor);
            p.setCount(7);
          },
          o);
      reply.check();
      auto r = reply.results<idl::Cache::ScanResults>();
      for (auto k : r.getKeys())
        seen.scanned.insert(std::string(reinterpret_cast<const char*>(k.begin()), k.size()));
      cursor = r.getCursor().cStr();
      REQUIRE(++calls < 10000);
    } while (!cursor.empty());
    std::vector<std::string> keys(written_.begin(), written_.end());
    for (auto& k : seen.scanned)
      if (!written_.count(k)) keys.push_back(k);
    auto reply = callCache<idl::Cache::MgetParams>(
        channel, "mget",
        [&](auto p) {
          auto list = p.initKeys(static_cast<unsigned>(keys.size()));
          for (unsigned i = 0; i < keys.size(); ++i) list.set(i, dataOf(keys[i]));
        },
        o);
    reply.check();
    auto entries = reply.results<idl::Cache::MgetResults>().getEntries();
    REQUIRE(entries.size() == keys.size());
    for (unsigned i = 0; i < keys.size(); ++i) {
      auto v = entries[i].getValue();
      seen.values[keys[i]] = entries[i].getFound()
                                 ? std::optional<std::string>(std::string(
                                       reinterpret_cast<const char*>(v.begin()), v.size()))
                                 : std::nullopt;
    }
    for (auto& k : keys) {
      auto t = callCache<idl::Cache::TtlParams>(
          channel, "ttl", [&](auto p) { p.setKey(dataOf(k)); }, o);
      t.check();
      auto r = t.results<idl::Cache::TtlResults>();
      seen.ttls[k] = r.getFound() ? r.getTtlMs() : -2;
    }
    seen.q1 = rpc::unixMillis();
    return seen;
  }

  // Keys never written, and keys present by get that the scan did not return.
  void checkKeys(const Observed& seen) {
    for (auto& k : seen.scanned)
      if (!written_.count(k)) FAIL("the scan returned '" << k << "', which was never written");
    for (auto& [k, v] : seen.values)
      if (v && !seen.scanned.count(k))
        FAIL("'" << k << "' is there (get) but a complete scan did not return it");
  }

  // The state equals the model — or the model with the call in doubt
  // applied, whole (an mset is all or nothing). `end`: the last moment the
  // call in doubt could have been done. Then the model is what was seen.
  void checkExact(const Observed& seen, Millis end) {
    checkKeys(seen);
    const State applied = withDoubtApplied(end);
    std::vector<std::string> notA, notB;
    for (auto& [k, v] : seen.values) {
      if (!explains(find(model_, k), seen, k)) notA.push_back(k);
      if (!explains(find(applied, k), seen, k)) notB.push_back(k);
    }
    if (!notA.empty() && (!doubt_ || !notB.empty())) {
      std::string why;
      for (auto& k : notA)
        why += "\n  " + k + ": seen " + showSeen(seen, k) + ", the model says " +
               show(find(model_, k));
      if (doubt_) {
        why += "\nwith the call in doubt (" + describe(doubt_->op) + ") applied:";
        for (auto& k : notB)
          why += "\n  " + k + ": seen " + showSeen(seen, k) + ", the model says " +
                 show(find(applied, k));
      }
      FAIL("after " << acknowledged_ << " acknowledged calls the state is not the model's:" << why
                    << "\nlast calls:" << lastCalls());
    }
    if (notA.empty() && doubt_ && notB.empty()) {
      // Either way: take what was seen, the wider expiry window.
      for (auto& [k, v] : applied) {
        auto a = find(model_, k);
        if (a && a->value == v.value && a->lo != 0 && v.lo != 0)
          model_[k] = Entry{v.value, std::min(a->lo, v.lo), std::max(a->hi, v.hi)};
      }
    } else if (!notA.empty()) {
      model_ = applied;  // the call in doubt was done
      doubtsDone_++;
    }
    for (auto& [k, v] : seen.values)
      if (!v) model_.erase(k);  // ran out, as its window allowed
    doubt_.reset();
    ++checks_;
  }

  // The values seen are those the history left after some prefix of it (a
  // call in doubt at its end counting as part of it or not). Returns the
  // longest such prefix; history and model go back to it.
  size_t checkPrefix(const Observed& seen) {
    checkKeys(seen);
    if (doubt_) {
      State applied = withDoubtApplied(rpc::unixMillis());
      Step step{describe(doubt_->op) + " (in doubt)", {}, true};
      for (auto& [k, v] : doubt_->op.entries) {
        auto e = find(applied, k);
        step.after.emplace_back(k, e ? std::optional<std::string>(e->value) : std::nullopt);
      }
      history_.push_back(std::move(step));
    }
    // Sweep the prefixes, counting the keys whose value there differs from the one seen.
    std::map<std::string, std::optional<std::string>> at;
    for (auto& [k, v] : seen.values) at[k] = std::nullopt;
    auto differs = [&](const std::string& k) { return at[k] != seen.values.at(k); };
    size_t wrong = 0;
    for (auto& [k, v] : seen.values) wrong += differs(k);
    std::vector<size_t> valid;
    size_t best = 0, bestWrong = wrong;  // the prefix explaining the most keys, for a message
    if (wrong == 0) valid.push_back(0);
    for (size_t p = 0; p < history_.size(); ++p) {
      for (auto& [k, v] : history_[p].after) {
        wrong -= differs(k);
        at[k] = v;
        wrong += differs(k);
      }
      if (wrong == 0) valid.push_back(p + 1);
      if (wrong <= bestWrong) {
        best = p + 1;
        bestWrong = wrong;
      }
    }
    if (valid.empty()) {
      std::map<std::string, std::optional<std::string>> there;
      for (size_t p = 0; p < best; ++p)
        for (auto& [k, v] : history_[p].after) there[k] = v;
      auto shown = [](const std::optional<std::string>& v) -> std::string {
        if (!v) return "absent";
        return "'" + (v->size() > 24 ? v->substr(0, 24) + "…" : *v) + "'";
      };
      std::string why;
      for (auto& [k, v] : seen.values)
        if (there[k] != v) {
          std::string when = v ? "never" : "before its first write";
          for (size_t p = 0; p < history_.size(); ++p)
            for (auto& [hk, hv] : history_[p].after)
              if (hk == k && hv == v) when = "after #" + std::to_string(p);
          why += "\n  " + k + ": seen " + shown(v) + " (the value it had " + when + "), there " +
                 shown(there[k]);
        }
      FAIL("the state is no prefix of the "
           << history_.size() << " calls' history; the closest is the first " << best << " calls, "
           << bestWrong << " keys off:" << why << "\nlast calls:" << lastCalls(best));
    }
    const size_t p = valid.back();
    history_.resize(p);
    // The model: the values there (ttls are long in this mode: none runs out).
    State model;
    for (auto& step : history_)
      for (auto& [k, v] : step.after) {
        if (v)
          model[k] = Entry{*v, find(model_, k) ? find(model_, k)->lo : 0,
                           find(model_, k) ? find(model_, k)->hi : 0};
        else
          model.erase(k);
      }
    for (auto& step : history_) step.doubt = false;
    model_ = std::move(model);
    doubt_.reset();
    ++checks_;
    return p;
  }

  size_t historySize() const { return history_.size(); }
  bool hasDoubt() const { return doubt_.has_value(); }
  uint64_t acknowledged() const { return acknowledged_; }
  uint64_t inDoubtCalls() const { return inDoubt_; }
  uint64_t doubtsDone() const { return doubtsDone_; }
  const State& model() const { return model_; }
  void requireNoSurprises() const {
    for (size_t i = 0; i < unexpected_.size() && i < 10; ++i) UNSCOPED_INFO(unexpected_[i]);
    REQUIRE(unexpected_.empty());
  }

 private:
  struct Doubt {
    Op op;
    Millis t0;
  };

  static Millis window(Millis ttl, Millis t) { return ttl ? t + ttl : 0; }

  rpc::Reply send(const rpc::Channel& channel, const Op& op, const rpc::CallOptions& o) {
    switch (op.kind) {
      case Kind::set:
        return callCache<idl::Cache::SetParams>(
            channel, "set",
            [&](auto p) {
              p.setKey(dataOf(op.key()));
              p.setValue(dataOf(op.entries.front().second));
              p.setTtlMs(static_cast<uint64_t>(op.ttl));
            },
            o);
      case Kind::del:
        return callCache<idl::Cache::DelParams>(
            channel, "del", [&](auto p) { p.setKey(dataOf(op.key())); }, o);
      case Kind::incr:
        return callCache<idl::Cache::IncrParams>(
            channel, "incr",
            [&](auto p) {
              p.setKey(dataOf(op.key()));
              p.setBy(op.by);
            },
            o);
      case Kind::expire:
        return callCache<idl::Cache::ExpireParams>(
            channel, "expire",
            [&](auto p) {
              p.setKey(dataOf(op.key()));
              p.setTtlMs(static_cast<uint64_t>(op.ttl));
            },
            o);
      case Kind::mset:
        return callCache<idl::Cache::MsetParams>(
            channel, "mset",
            [&](auto p) {
              auto list = p.initEntries(static_cast<unsigned>(op.entries.size()));
              for (unsigned i = 0; i < op.entries.size(); ++i) {
                list[i].setKey(dataOf(op.entries[i].first));
                list[i].setValue(dataOf(op.entries[i].second));
              }
              p.setTtlMs(static_cast<uint64_t>(op.ttl));
            },
            o);
    }
    throw std::logic_error("unknown op");
  }

  // Sure to be absent when the call ran (from `t` on): no entry, or one whose window has passed.
  bool surelyAbsent(const std::string& key, Millis t) const {
    auto e = find(model_, key);
    return !e || (e->hi != 0 && e->hi + kSlackMs <= t);
  }

  void mismatch(const Op& op, const std::string& what) {
    unexpected_.push_back(describe(op) + ": " + what);
  }

  // The calls around `around` (default: the last ones).
  std::string lastCalls(size_t around = SIZE_MAX) const {
    std::string out;
    const size_t end = around == SIZE_MAX ? history_.size() : std::min(history_.size(), around + 8);
    size_t from = end > 16 ? end - 16 : 0;
    for (size_t i = from; i < end; ++i)
      out += "\n  #" + std::to_string(i) + " " + history_[i].what +
             (history_[i].doubt ? " (in doubt)" : "");
    if (doubt_) out += "\n  in doubt: " + describe(doubt_->op);
    return out;
  }

  std::string stringKey() { return "s:" + std::to_string(rng_() % options_.stringKeys); }
  std::string counterKey() { return "n:" + std::to_string(rng_() % options_.counterKeys); }
  // Unique per call, so a value seen names the call that wrote it.
  std::string value() {
    const uint64_t r = rng_() % 100;
    // Most small, a quarter up to 2 KB, a few up to maxValue.
    size_t size = r < 70 ? 10 + rng_() % 190 : r < 95 ? 200 + rng_() % 1800 : 2000 + rng_() % 4000;
    size = std::min(size, options_.maxValue);
    std::string v = "v" + std::to_string(serial_) + ":";
    v.resize(std::max(size, v.size()), static_cast<char>('a' + serial_ % 26));
    return v;
  }
  Millis longTtl() { return 30000 + static_cast<Millis>(rng_() % 90000); }
  Millis stringTtl() {
    const uint64_t r = rng_() % 100;
    if (r < 55) return 0;
    if (r < 85 || !options_.shortTtls) return longTtl();
    return 300 + static_cast<Millis>(rng_() % 1200);
  }

  std::mt19937_64 rng_;
  WorkloadOptions options_;
  uint64_t serial_ = 0;
  State model_;
  std::set<std::string> written_;
  std::vector<Step> history_;
  std::optional<Doubt> doubt_;
  std::vector<std::string> unexpected_;
  uint64_t acknowledged_ = 0, inDoubt_ = 0, doubtsDone_ = 0, checks_ = 0;
};

// A call on `channel` retried while it answers UNAVAILABLE or DEADLINE_EXCEEDED
// (the service restarting), for 10 s at most.
void barrier(const rpc::Channel& channel) {
  rpc::CallOptions o;
  o.timeout = 2s;
  o.retryable = true;
  auto deadline = Clock::now() + 10s;
  while (true) {
    auto reply = callCache<idl::Cache::ExistsParams>(
        channel, "exists", [](auto p) { p.setKey(dataOf("barrier")); }, o);
    if (reply.status.ok()) return;
    INFO(rpc::statusName(reply.status.code) << ": " << reply.status.message);
    REQUIRE(inDoubt(reply.status.code));
    REQUIRE(Clock::now() < deadline);
    std::this_thread::sleep_for(20ms);
  }
}

// The writer on a thread of its own, paused for each check.
class WriterThread {
 public:
  WriterThread(Writer& writer, const std::string& endpoint)
      : writer_(writer), connection_(endpoint) {
    thread_ = std::thread([this] { run(); });
  }
  ~WriterThread() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  // Returns once no call is in flight; none starts until resume().
  void pause() {
    paused_ = true;
    while (!idle_) std::this_thread::sleep_for(1ms);
  }
  void resume() { paused_ = false; }
  const rpc::Channel& channel() const { return connection_.channel; }

 private:
  void run() {
    while (!stop_) {
      if (paused_) {
        idle_ = true;
        std::this_thread::sleep_for(1ms);
        continue;
      }
      idle_ = false;
      if (paused_) continue;  // pause() may have seen idle just now
      if (writer_.hasDoubt()) {
        // After a call in doubt nothing more is sent until a check has said
        // what became of it.
        idle_ = true;
        std::this_thread::sleep_for(1ms);
        continue;
      }
      writer_.run(connection_.channel, writer_.next());
    }
    idle_ = true;
  }

  Writer& writer_;
  CacheConnection connection_;
  std::atomic<bool> stop_{false}, paused_{false}, idle_{false};
  std::thread thread_;
};

std::string section(const std::string& fsync) {
  return "fsync = \"" + fsync +
         "\"\n"
         "rewrite_after_bytes = 4096\n"  // snapshots, and their crash windows, mid-run
         "snapshot_slice_keys = 4\n"     // each one in several slices
         "expire_interval = \"20ms\"\n"
         "stop_grace = \"500ms\"\n";
}

// ---- (3): the service in this process ----

// The in-process service's log off while it lives (it logs every crash,
// critical, and every recovery).
struct QuietLogs {
  spdlog::level::level_enum was = spdlog::get_level();
  QuietLogs() { spdlog::set_level(spdlog::level::off); }
  ~QuietLogs() { spdlog::set_level(was); }
};

class InProcessCache : public InProcessServer {
 public:
  InProcessCache(storage::Env& env, std::string endpoint, cache::CacheServiceOptions options)
      : InProcessServer("cache", std::move(endpoint),
                        [&env, options](rpc::Server& server) -> std::function<void()> {
                          auto impl = kj::heap<cache::CacheService>(server, nullptr, env, options,
                                                                    rpc::unixMillis);
                          auto& service = *impl;
                          server.serve<idl::Cache>(kj::mv(impl));
                          return [&service] { service.close(); };
                        }) {}
};

cache::CacheServiceOptions faultOptions(storage::FsyncPolicy policy) {
  cache::CacheServiceOptions o;
  o.dataDir = "/data/cache";
  o.fsync = policy;
  o.rewriteAfterBytes = 1024;  // a snapshot every few calls
  o.snapshotSliceKeys = 2;     // in several slices, appends going on between them
  o.expireInterval = 2;        // the loop's tick, which starts a snapshot
  return o;
}

// The last log file of the data directory: the highest generation.
std::string lastLog(const std::string& dir) {
  std::string best;
  uint64_t highest = 0;
  for (auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename();
    if (name.rfind("cache.log.", 0) != 0) continue;
    uint64_t gen = std::stoull(name.substr(10));
    if (best.empty() || gen > highest) {
      highest = gen;
      best = entry.path();
    }
  }
  return best;
}

}  // namespace

TEST_CASE(
    "cache: kill -9 rounds under fsync always - the state equals the model of "
    "acknowledged writes",
    "[cache][durability]") {
  const uint64_t seed = testSeed();
  INFO("seed " << seed << " (rerun with ZMESH_TEST_SEED)");
  auto began = Clock::now();
  CacheProcess service({.section = section("always"), .persist = true});
  std::mt19937_64 rng(seed);
  Writer writer(seed, {});
  WriterThread thread(writer, service.endpoint());
  constexpr int kRounds = 12;
  int overSnapshot = 0;
  uint64_t snapshots = 0;
  for (int round = 0; round < kRounds; ++round) {
    INFO("round " << round);
    std::this_thread::sleep_for(std::chrono::milliseconds(150 + rng() % 250));
    snapshots +=
        static_cast<uint64_t>(CacheConnection(service.endpoint(), 2s).stat("cache.snapshots"));
    service.kill9();
    overSnapshot += std::filesystem::exists(service.dataDir() + "/cache.snapshot");
    service.start();
    thread.pause();
    barrier(thread.channel());
    const Millis end = rpc::unixMillis();
    writer.checkExact(writer.observe(thread.channel()), end);
    thread.resume();
  }
  std::this_thread::sleep_for(200ms);
  thread.pause();
  // A clean stop and start too.
  int status = service.stop();
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  service.start();
  barrier(thread.channel());
  writer.checkExact(writer.observe(thread.channel()), rpc::unixMillis());
  thread.stop();
  writer.requireNoSurprises();
  CHECK(writer.acknowledged() >= 200);
  CHECK(overSnapshot >= kRounds / 2);  // restarts loaded a snapshot, then the logs after it
  CHECK(snapshots >= kRounds / 2);
  WARN(kRounds << " kill -9 rounds in " << msSince(began) << " ms: " << writer.acknowledged()
               << " calls acknowledged, " << writer.inDoubtCalls() << " in doubt ("
               << writer.doubtsDone() << " found done), " << snapshots << " snapshots, "
               << overSnapshot << " restarts over a snapshot, " << writer.model().size()
               << " keys at the end");
}

TEST_CASE(
    "cache: kill -9 rounds under fsync everysec and no - the state is a prefix of the "
    "acknowledged history",
    "[cache][durability]") {
  const std::string fsync = GENERATE("everysec", "no");
  const uint64_t seed = testSeed();
  INFO("seed " << seed << " (rerun with ZMESH_TEST_SEED), fsync " << fsync);
  auto began = Clock::now();
  CacheProcess service({.section = section(fsync), .persist = true});
  std::mt19937_64 rng(seed);
  WorkloadOptions wo;
  wo.shortTtls = false;  // values only: nothing runs out meanwhile
  Writer writer(seed, wo);
  WriterThread thread(writer, service.endpoint());
  constexpr int kRounds = 8;
  size_t lostAcknowledged = 0;
  for (int round = 0; round < kRounds; ++round) {
    INFO("round " << round);
    std::this_thread::sleep_for(std::chrono::milliseconds(100 + rng() % 200));
    service.kill9();
    service.start();
    thread.pause();
    barrier(thread.channel());
    const size_t acknowledged = writer.historySize();
    const size_t prefix = writer.checkPrefix(writer.observe(thread.channel()));
    // kill -9 keeps the page cache and the journal writes before it answers
    // under every policy: no acknowledged call is lost.
    if (prefix < acknowledged) lostAcknowledged += acknowledged - prefix;
    thread.resume();
  }
  thread.pause();
  thread.stop();
  writer.requireNoSurprises();
  CHECK(lostAcknowledged == 0);
  CHECK(writer.acknowledged() >= 100);
  WARN("fsync " << fsync << ": " << kRounds << " kill -9 rounds in " << msSince(began) << " ms, "
                << writer.acknowledged() << " calls acknowledged, " << writer.inDoubtCalls()
                << " in doubt");
}

TEST_CASE(
    "cache on FaultInjectionEnv: power lost before every storage operation of a workload "
    "with sliced snapshots",
    "[cache][durability]") {
  const auto policy = GENERATE(storage::FsyncPolicy::always, storage::FsyncPolicy::everysec,
                               storage::FsyncPolicy::no);
  const bool always = policy == storage::FsyncPolicy::always;
  const uint64_t seed = testSeed();
  INFO("seed " << seed << " (rerun with ZMESH_TEST_SEED), fsync " << storage::toString(policy));
  QuietLogs quiet;  // the service logs every crash (critical) and recovery
  const auto options = faultOptions(policy);
  const std::string endpoint = tcpEndpoint(freePort());
  WorkloadOptions wo;
  wo.stringKeys = 8;
  wo.counterKeys = 3;
  wo.maxValue = 600;
  wo.shortTtls = always;
  wo.retryable = false;  // fails at once when the service stops under it
  // A call sent once it has stopped waits for its deadline: short, as every
  // call here is answered within a few ms.
  wo.timeout = 500ms;
  constexpr int kCalls = 20;
  auto began = Clock::now();

  std::map<std::string, int> crashedBefore;  // storage operation -> crashes before it
  int iterations = 0, torn = 0;
  // One run: power lost before occurrence `at` of storage operation `target`
  // ("" or an occurrence never reached: after the whole workload). Returns
  // how many times each operation ran before power was lost.
  auto run = [&](const std::string& target, int at) {
    INFO("power lost before occurrence " << at << " of storage operation '" << target << "'");
    ++iterations;
    storage::FaultInjectionEnv env;
    std::mt19937_64 rng(seed + static_cast<uint64_t>(iterations));
    Writer writer(seed, wo);  // the same calls every time
    std::map<std::string, int> seenOps;
    {
      auto server = std::make_unique<InProcessCache>(env, endpoint, options);
      std::atomic<bool> crashed{false};
      const bool tear = rng() % 2 == 0;
      env.setOpHook([&](std::string_view op, const std::string&) {
        if (crashed) return;
        const std::string name(op);
        if (name == target && seenOps[name] == at) {
          crashed = true;
          ++crashedBefore[name];
          if (tear)
            env.crash(&rng);
          else
            env.crash();
          return;
        }
        ++seenOps[name];
      });
      {
        CacheConnection connection(endpoint);
        for (int i = 0; i < kCalls; ++i) {
          if (writer.run(connection.channel, writer.next()) != Writer::Result::ok) break;
          // Spread over a few of the loop's ticks, which start the snapshots.
          std::this_thread::sleep_for(1ms);
        }
      }
      if (crashed) {
        torn += tear;
      } else {
        env.setOpHook(nullptr);
        env.crash();  // the workload ended first: lose power after all of it
      }
      server.reset();  // the dead process's threads stop; its files stay dead
      env.setOpHook(nullptr);
    }
    env.restart();
    std::unique_ptr<InProcessCache> server;
    REQUIRE_NOTHROW(server = std::make_unique<InProcessCache>(env, endpoint, options));
    CacheConnection probe(endpoint);
    auto seen = writer.observe(probe.channel);
    if (always)
      writer.checkExact(seen, rpc::unixMillis());
    else
      writer.checkPrefix(seen);
    // The recovered state takes writes; a clean stop writes and syncs them
    // under every policy, so they survive the next power loss.
    CHECK(probe.cache.set("after", "crash"));
    server.reset();
    env.crash();
    env.restart();
    REQUIRE_NOTHROW(server = std::make_unique<InProcessCache>(env, endpoint, options));
    CacheConnection again(endpoint);
    CHECK(again.cache.get("after") == std::optional<std::string>("crash"));
    server.reset();
    writer.requireNoSurprises();
    return seenOps;
  };
  // The workload whole, counting its storage operations; then power lost
  // before each of them in turn (timing moves a few between runs).
  const auto reference = run("", 0);
  REQUIRE(reference.count("rename"));  // it wrote a snapshot
  for (auto& [op, n] : reference)
    for (int at = 0; at < n; ++at) run(op, at);
  std::string where;
  for (auto& [op, n] : crashedBefore) where += " " + op + " " + std::to_string(n);
  WARN("fsync " << storage::toString(policy) << ": " << iterations << " crashes (" << torn
                << " torn) in " << msSince(began) << " ms, before:" << where);
  // The workload wrote snapshots: power was lost inside them too.
  CHECK(crashedBefore["rename"] > 0);
  CHECK(crashedBefore["syncDir"] > 0);
  CHECK(crashedBefore["sync"] > 0);
  CHECK(crashedBefore["append"] > 0);
}

TEST_CASE(
    "cache on FaultInjectionEnv: an mset cut short by power loss leaves all of its keys "
    "or none",
    "[cache][durability]") {
  // Its reply never came (fsync always: the call is in doubt), but what the
  // restart shows must be the mset whole or not at all — the log's records
  // are cut at a checksum boundary, which must not fall inside one mset.
  QuietLogs quiet;
  auto options = faultOptions(storage::FsyncPolicy::always);
  options.rewriteAfterBytes = uint64_t{64} << 20;  // no snapshot: the log alone
  const std::string endpoint = tcpEndpoint(freePort());
  constexpr int kKeys = 8;
  int partial = 0, whole = 0, none = 0;
  for (uint64_t seed = 1; seed <= 16; ++seed) {
    INFO("torn tails from seed " << seed);
    storage::FaultInjectionEnv env;
    std::mt19937_64 rng(seed);
    std::vector<std::pair<std::string, std::string>> entries;
    {
      auto server = std::make_unique<InProcessCache>(env, endpoint, options);
      CacheConnection c(endpoint);
      for (int i = 0; i < kKeys; ++i) REQUIRE(c.cache.set("k" + std::to_string(i), "old"));
      for (int i = 0; i < kKeys; ++i)
        entries.emplace_back("k" + std::to_string(i), "new:" + std::string(100, 'n'));
      std::atomic<bool> armed{true};
      env.setOpHook([&](std::string_view op, const std::string&) {
        if (op == "sync" && armed.exchange(false)) env.crash(&rng);  // before the mset's fsync
      });
      rpc::CallOptions o;
      o.timeout = 5s;
      auto reply = callCache<idl::Cache::MsetParams>(
          c.channel, "mset",
          [&](auto p) {
            auto list = p.initEntries(kKeys);
            for (unsigned i = 0; i < kKeys; ++i) {
              list[i].setKey(dataOf(entries[i].first));
              list[i].setValue(dataOf(entries[i].second));
            }
          },
          o);
      CHECK_FALSE(reply.status.ok());  // never answered OK: it was not durable
      server.reset();
      env.setOpHook(nullptr);
    }
    env.restart();
    InProcessCache server(env, endpoint, options);
    CacheConnection c(endpoint);
    std::vector<std::string> keys;
    for (auto& [k, v] : entries) keys.push_back(k);
    auto values = c.cache.mget(keys);
    int fresh = 0, old = 0;
    std::string seen;
    for (size_t i = 0; i < values.size(); ++i) {
      fresh += values[i] == std::optional<std::string>(entries[i].second);
      old += values[i] == std::optional<std::string>("old");
      seen += " " + keys[i] + "=" + (values[i] ? values[i]->substr(0, 3) : "absent");
    }
    INFO("after the restart:" << seen);
    CHECK(fresh + old == kKeys);
    if (fresh == kKeys)
      ++whole;
    else if (old == kKeys)
      ++none;
    else
      ++partial;
  }
  WARN(whole << " msets survived whole, " << none << " not at all, " << partial << " in part");
  CHECK(partial == 0);
}

TEST_CASE(
    "cache on FaultInjectionEnv: a snapshot written in slices is never durable ahead of "
    "the log it reflects",
    "[cache][durability]") {
  // Under fsync no (and everysec) the log since the snapshot's cut may be
  // lost in a crash; the slices taken after writes went on reflect some of
  // those writes and not others. Once such a snapshot is durable without the
  // log it reflects, the state after a crash is no prefix of the history.
  QuietLogs quiet;
  const auto policy = GENERATE(storage::FsyncPolicy::no, storage::FsyncPolicy::everysec);
  INFO("fsync " << storage::toString(policy));
  auto options = faultOptions(policy);
  options.snapshotSliceKeys = 1;  // a loop turn per key: writes go on between every two
  options.expireInterval = 1;
  const std::string endpoint = tcpEndpoint(freePort());
  WorkloadOptions wo;
  wo.stringKeys = 400;  // hundreds of slices: writes land between them
  wo.counterKeys = 2;
  wo.maxValue = 300;
  wo.shortTtls = false;
  wo.retryable = false;
  wo.timeout = 500ms;
  std::string summary;
  for (int round = 1; round <= 3; ++round) {
    INFO("power lost right after the snapshot renamed into place "
         << round << " after the key space filled");
    storage::FaultInjectionEnv env;
    Writer writer(static_cast<uint64_t>(round), wo);
    {
      auto server = std::make_unique<InProcessCache>(env, endpoint, options);
      std::atomic<int> renamed{0}, target{1 << 30};
      std::atomic<bool> crashed{false};
      env.setOpHook([&](std::string_view op, const std::string& path) {
        if (crashed) return;
        if (op == "rename" && path.find("snapshot") != std::string::npos) {
          ++renamed;
          return;
        }
        // The first operation after that snapshot's directory fsync.
        if (renamed >= target && op != "syncDir") {
          crashed = true;
          env.crash();
        }
      });
      CacheConnection c(endpoint);
      for (int i = 0; i < wo.stringKeys; ++i)
        REQUIRE(writer.run(c.channel, writer.fill(i)) == Writer::Result::ok);
      target = renamed + round;
      for (int i = 0; i < 20000 && !crashed; ++i)
        if (writer.run(c.channel, writer.next()) != Writer::Result::ok) break;
      REQUIRE(crashed);
      server.reset();
      env.setOpHook(nullptr);
    }
    env.restart();
    InProcessCache server(env, endpoint, options);
    CacheConnection probe(endpoint);
    const size_t calls = writer.historySize();
    const size_t kept = writer.checkPrefix(writer.observe(probe.channel));
    summary += " " + std::to_string(kept) + "/" + std::to_string(calls);
    writer.requireNoSurprises();
  }
  WARN("fsync " << storage::toString(policy) << ": calls kept after each crash:" << summary);
}

TEST_CASE("cache: a corrupted or torn last log record is cut and everything before it loads",
          "[cache][durability]") {
  const std::string damage = GENERATE("flipped byte", "truncated");
  INFO(damage);
  CacheProcess service({.section = "fsync = \"always\"\n", .persist = true, .logLevel = "info"});
  {
    CacheConnection c(service.endpoint());
    for (int i = 0; i < 5; ++i) REQUIRE(c.cache.set("a" + std::to_string(i), "before"));
    c.cache.set("t", "with ttl", {.ttl = 60s});
  }
  // A restart writes what the log replayed into a snapshot; the writes after
  // it go to a new log.
  service.kill9();
  service.start();
  {
    CacheConnection c(service.endpoint());
    REQUIRE(waitUntil([&] { return c.stat("cache.snapshots") >= 1; }));
    REQUIRE(c.cache.set("b", "after the snapshot"));
    REQUIRE(c.cache.incr("n", 5) == 5);
    REQUIRE(c.cache.set("x", "old"));
    REQUIRE(c.cache.set("x", "new"));  // the last record
  }
  service.kill9();
  REQUIRE(std::filesystem::exists(service.dataDir() + "/cache.snapshot"));
  const std::string log = lastLog(service.dataDir());
  REQUIRE_FALSE(log.empty());
  const auto size = std::filesystem::file_size(log);
  REQUIRE(size > 12);
  if (damage == "truncated") {
    std::filesystem::resize_file(log, size - 5);
  } else {
    std::fstream f(log, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(size - 1));
    char ch = 0;
    f.get(ch);
    f.seekp(static_cast<std::streamoff>(size - 1));
    f.put(static_cast<char>(ch ^ 0x5a));
  }
  service.start();
  CHECK_THAT(service.log(), Contains("cut a torn log tail"));
  {
    CacheConnection c(service.endpoint());
    CHECK(c.cache.get("x") == std::optional<std::string>("old"));
    CHECK(c.cache.get("b") == std::optional<std::string>("after the snapshot"));
    CHECK(c.cache.get("n") == std::optional<std::string>("5"));
    for (int i = 0; i < 5; ++i)
      CHECK(c.cache.get("a" + std::to_string(i)) == std::optional<std::string>("before"));
    auto left = c.cache.ttl("t");
    REQUIRE(left);
    CHECK(*left > 50s);
    CHECK(*left <= 60s);
    CHECK(c.cache.stats().keys == 9);
    REQUIRE(c.cache.set("y", "later"));
  }
  // What was cut stays cut; what came after it is kept.
  service.kill9();
  service.start();
  CacheConnection c(service.endpoint());
  CHECK(c.cache.get("x") == std::optional<std::string>("old"));
  CHECK(c.cache.get("y") == std::optional<std::string>("later"));
  CHECK(c.cache.stats().keys == 10);
}
