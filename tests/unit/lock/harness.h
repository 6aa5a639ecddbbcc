// What the lock table's tests share: a table on a clock the test sets, call
// ids handed out in order, and events and failures as one line of text each
// (compared whole, printed whole when a check fails).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "lock_table.h"

namespace zmesh::lock::test {

inline const char* codeName(Fail f) {
  switch (f) {
    case Fail::invalidArgument:
      return "invalidArgument";
    case Fail::conflict:
      return "conflict";
    case Fail::notFound:
      return "notFound";
    case Fail::resourceExhausted:
      return "resourceExhausted";
    case Fail::unavailable:
      return "unavailable";
  }
  return "?";
}

// "" for no failure, else "code: message".
inline std::string why(const std::optional<Failure>& f) {
  return f ? std::string(codeName(f->code)) + ": " + f->message : "";
}

// "granted c3 bob t7", "rejected c4: not granted within 100 ms", "expired bob t7",
// "opened s2", "closed s2".
inline std::string said(const Event& e) {
  auto lease = [&](const char* kind) {
    return std::string(kind) + " " + e.lease.owner + " t" + std::to_string(e.lease.token);
  };
  switch (e.kind) {
    case Event::Kind::granted:
      return "granted c" + std::to_string(e.call) + " " + e.lease.owner + " t" +
             std::to_string(e.lease.token);
    case Event::Kind::rejected:
      return "rejected c" + std::to_string(e.call) + ": " + (e.failure ? e.failure->message : "?");
    case Event::Kind::released:
      return lease("released");
    case Event::Kind::expired:
      return lease("expired");
    case Event::Kind::lost:
      return lease("lost");
    case Event::Kind::renewed:
      return lease("renewed");
    case Event::Kind::sessionOpened:
      return "opened s" + std::to_string(e.session);
    case Event::Kind::sessionClosed:
      return "closed s" + std::to_string(e.session);
  }
  return "?";
}

using Lines = std::vector<std::string>;

inline Lines said(const Events& events) {
  Lines lines;
  for (auto& e : events) lines.push_back(said(e));
  return lines;
}

constexpr Millis kTtl = 1000;

// A table whose token supply is already reserved (unless told otherwise).
// Each call clears `out` and leaves there what the call set in motion.
struct Harness {
  explicit Harness(LockOptions options = {}, uint64_t tokenLimit = 1'000'000) : table(options) {
    if (tokenLimit > 1) table.setTokenLimit(tokenLimit, 0, out);
  }

  LockTable table;
  Millis now = 0;
  uint64_t lastCall = 0;
  Events out;

  // A request with ttl 0 is given kTtl (so that most tests need not say it).
  std::optional<Failure> acquire(AcquireRequest r) {
    if (r.ttl == 0) r.ttl = kTtl;
    out.clear();
    auto result = table.acquire(r, ++lastCall, now, out);
    if (auto* f = std::get_if<Failure>(&result)) return *f;
    return std::nullopt;
  }
  std::optional<Failure> release(std::string_view name, std::string_view owner, uint64_t token) {
    out.clear();
    return table.release(name, owner, token, now, out);
  }
  // The new expiresAt as text, or the failure as why() gives it.
  std::string renew(std::string_view name, std::string_view owner, uint64_t token,
                    Millis ttl = kTtl) {
    out.clear();
    auto result = table.renew(name, owner, token, ttl, now, out);
    if (auto* f = std::get_if<Failure>(&result)) return why(*f);
    return "expires " + std::to_string(std::get<Millis>(result));
  }
  // Moves the clock to `t` and advances the table.
  void at(Millis t) {
    now = t;
    out.clear();
    table.advance(now, out);
  }
  uint64_t openSession(Millis timeout) {
    out.clear();
    auto result = table.openSession(timeout, now, out);
    return std::get<std::pair<uint64_t, Millis>>(result).first;
  }
  bool cancel(uint64_t call) {
    out.clear();
    return table.cancel(call, now, out);
  }
  void setTokenLimit(uint64_t limit) {
    out.clear();
    table.setTokenLimit(limit, now, out);
  }
  Lines events() const { return said(out); }

  // The lease the last events granted to `call`.
  std::optional<Lease> grantOf(uint64_t call) const {
    for (auto& e : out)
      if (e.kind == Event::Kind::granted && e.call == call) return e.lease;
    return std::nullopt;
  }
  uint64_t tokenOf(uint64_t call) const {
    auto lease = grantOf(call);
    return lease ? lease->token : 0;
  }
};

}  // namespace zmesh::lock::test
