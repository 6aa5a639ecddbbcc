// Idempotency-Key for state-changing POSTs: a retry with the same key within
// the window gets the first answer again instead of doing the work twice.
//
// Keys are scoped by the caller (the auth principal, or "" without auth), and
// bound to a fingerprint of the request (method, target, body): reusing a key
// for a different request is an error, not a replay. A key whose first request
// is still running answers "in progress". Responses with a 5xx status are not
// kept (abandon()), so a retry after a failure runs again.
//
// Bounded three ways: entries and bytes over the whole store (the oldest entry
// goes first), and bytes per principal (that principal's oldest entry goes
// first), so one token flooding keys evicts only its own answers. The
// anonymous scope "" (auth off) has no share of its own: the store's bounds
// apply. An answer larger than a bound on its own is not kept.
// Thread-safe (one mutex; the gateway's workers share one store).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace zmesh::gateway {

struct StoredResponse {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // e.g. Content-Type
  std::string body;
};

struct IdempotencyLimits {
  size_t maxEntries = 100000;
  size_t maxBytes = 64 * 1024 * 1024;
  size_t principalMaxBytes = 16 * 1024 * 1024;
};

class IdempotencyStore {
 public:
  using Clock = std::chrono::steady_clock;
  // window: how long a completed answer is kept; maxEntries: bound on memory
  // (the oldest entries go first when full; in-progress entries count too).
  IdempotencyStore(std::chrono::milliseconds window, size_t maxEntries,
                   std::function<Clock::time_point()> now = Clock::now);
  IdempotencyStore(std::chrono::milliseconds window, IdempotencyLimits limits,
                   std::function<Clock::time_point()> now = Clock::now);

  enum class Outcome {
    kFirst,       // run the request, then complete() or abandon()
    kReplay,      // answer `response`
    kInProgress,  // the first request with this key has not finished
    kMismatch,    // the key was used for a different request
  };
  struct Begin {
    Outcome outcome;
    std::optional<StoredResponse> response;  // set for kReplay
  };
  Begin begin(const std::string& scope, const std::string& key, const std::string& fingerprint);
  void complete(const std::string& scope, const std::string& key, StoredResponse response);
  void abandon(const std::string& scope, const std::string& key);

  size_t size() const;
  struct Stats {
    size_t entries = 0;
    size_t bytes = 0;             // as accounted: keys, fingerprints, answers, overhead
    uint64_t evictions = 0;       // store full (entries or bytes), or an answer too big to keep
    uint64_t quotaEvictions = 0;  // a principal over its share
  };
  Stats stats() const;
  size_t principalBytes(const std::string& scope) const;

  // What one entry is accounted as, beyond its strings: map node, list nodes, Entry.
  static constexpr size_t kEntryOverhead = 256;

  // The fingerprint of a request: method, target and a hash of the body.
  static std::string fingerprint(std::string_view method, std::string_view target,
                                 std::string_view body);

 private:
  // Defined here, not in the .cpp: the implicit destructor destroys entries_ in
  // every including file, which needs the complete type.
  struct Entry {
    std::string scope;
    std::string fingerprint;
    std::optional<StoredResponse> response;  // empty while the first request runs
    Clock::time_point stamp;                 // begin(), then complete(): the window runs from here
    size_t bytes = 0;
    std::list<std::string>::iterator order;       // this entry in order_
    std::list<std::string>::iterator scopeOrder;  // this entry in its scope's order
  };
  struct Scope {
    std::list<std::string> order;  // map keys, oldest first
    size_t bytes = 0;
  };
  using Entries = std::unordered_map<std::string, Entry>;
  void expire(Clock::time_point now);  // caller holds mutex_ (as below)
  void erase(Entries::iterator it);
  // Evicts until `incoming` more bytes fit, sparing `keep` (nullptr: none).
  // False when they cannot fit even then.
  bool makeRoom(const std::string& scope, size_t incoming, const Entry* keep);
  std::chrono::milliseconds window_;
  IdempotencyLimits limits_;
  std::function<Clock::time_point()> now_;
  mutable std::mutex mutex_;
  std::list<std::string> order_;  // map keys, oldest first
  Entries entries_;
  std::unordered_map<std::string, Scope> scopes_;
  size_t bytes_ = 0;
  uint64_t evictions_ = 0;
  uint64_t quotaEvictions_ = 0;
};

}  // namespace zmesh::gateway
