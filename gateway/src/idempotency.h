// Idempotency-Key for state-changing POSTs: a retry with the same key within
// the window gets the first answer again instead of doing the work twice.
//
// Keys are scoped by the caller (the auth principal, or "" without auth), and
// bound to a fingerprint of the request (method, target, body): reusing a key
// for a different request is an error, not a replay. A key whose first request
// is still running answers "in progress". Responses with a 5xx status are not
// kept (abandon()), so a retry after a failure runs again.
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

class IdempotencyStore {
 public:
  using Clock = std::chrono::steady_clock;
  // window: how long a completed answer is kept; maxEntries: bound on memory
  // (the oldest entries go first when full; in-progress entries count too).
  IdempotencyStore(std::chrono::milliseconds window, size_t maxEntries,
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

  // The fingerprint of a request: method, target and a hash of the body.
  static std::string fingerprint(std::string_view method, std::string_view target,
                                 std::string_view body);

 private:
  // Defined here, not in the .cpp: the implicit destructor destroys entries_ in
  // every including file, which needs the complete type.
  struct Entry {
    std::string fingerprint;
    std::optional<StoredResponse> response;  // empty while the first request runs
    Clock::time_point stamp;                 // begin(), then complete(): the window runs from here
    std::list<std::string>::iterator order;  // this entry in order_
  };
  void expire(Clock::time_point now);  // caller holds mutex_
  std::chrono::milliseconds window_;
  size_t maxEntries_;
  std::function<Clock::time_point()> now_;
  mutable std::mutex mutex_;
  std::list<std::string> order_;  // map keys, oldest first
  std::unordered_map<std::string, Entry> entries_;
};

}  // namespace zmesh::gateway
