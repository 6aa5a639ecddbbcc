#include "idempotency.h"

#include <xxhash.h>

#include <iterator>
#include <stdexcept>

namespace zmesh::gateway {
namespace {

// Length-prefixed so that no (scope, key) pair can collide with another one,
// whatever characters either contains.
std::string mapKey(const std::string& scope, const std::string& key) {
  std::string out = std::to_string(scope.size());
  out += ':';
  out += scope;
  out += key;
  return out;
}

void appendHex(std::string& out, uint64_t v) {
  static constexpr char kDigits[] = "0123456789abcdef";
  for (int shift = 60; shift >= 0; shift -= 4) out += kDigits[(v >> shift) & 0xf];
}

}  // namespace

IdempotencyStore::IdempotencyStore(std::chrono::milliseconds window, size_t maxEntries,
                                   std::function<Clock::time_point()> now)
    : window_(window), maxEntries_(maxEntries), now_(std::move(now)) {
  if (window_.count() <= 0) throw std::invalid_argument("idempotency window must be positive");
  if (maxEntries_ < 1) throw std::invalid_argument("idempotency maxEntries must be at least 1");
  if (!now_) throw std::invalid_argument("idempotency clock is empty");
}

// order_ is sorted by stamp (complete() moves an entry to the back), so the
// expired entries are a prefix of it. In-progress entries expire too: a request
// running longer than the whole window is taken as lost (its owner never
// called complete() or abandon()), and must not block its key for ever.
void IdempotencyStore::expire(Clock::time_point now) {
  while (!order_.empty()) {
    auto it = entries_.find(order_.front());
    if (now - it->second.stamp < window_) break;
    entries_.erase(it);
    order_.pop_front();
  }
}

IdempotencyStore::Begin IdempotencyStore::begin(const std::string& scope, const std::string& key,
                                                const std::string& fingerprint) {
  std::lock_guard lock(mutex_);
  const Clock::time_point now = now_();
  expire(now);
  std::string k = mapKey(scope, key);
  if (auto it = entries_.find(k); it != entries_.end()) {
    const Entry& entry = it->second;
    if (entry.fingerprint != fingerprint) return {Outcome::kMismatch, std::nullopt};
    if (!entry.response) return {Outcome::kInProgress, std::nullopt};
    return {Outcome::kReplay, entry.response};
  }
  while (entries_.size() >= maxEntries_) {
    entries_.erase(order_.front());
    order_.pop_front();
  }
  order_.push_back(k);
  entries_.emplace(std::move(k), Entry{fingerprint, std::nullopt, now, std::prev(order_.end())});
  return {Outcome::kFirst, std::nullopt};
}

void IdempotencyStore::complete(const std::string& scope, const std::string& key,
                                StoredResponse response) {
  // A failure is not an answer worth replaying: the retry should run again.
  if (response.status >= 500) {
    abandon(scope, key);
    return;
  }
  std::lock_guard lock(mutex_);
  const Clock::time_point now = now_();
  expire(now);
  auto it = entries_.find(mapKey(scope, key));
  // Gone (evicted or expired while running) or already completed: nothing to
  // do; re-inserting would undo the eviction.
  if (it == entries_.end() || it->second.response) return;
  Entry& entry = it->second;
  entry.response = std::move(response);
  entry.stamp = now;
  order_.splice(order_.end(), order_, entry.order);
}

void IdempotencyStore::abandon(const std::string& scope, const std::string& key) {
  std::lock_guard lock(mutex_);
  expire(now_());
  auto it = entries_.find(mapKey(scope, key));
  // Only a running request is abandoned: a completed answer stays replayable.
  if (it == entries_.end() || it->second.response) return;
  order_.erase(it->second.order);
  entries_.erase(it);
}

size_t IdempotencyStore::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

std::string IdempotencyStore::fingerprint(std::string_view method, std::string_view target,
                                          std::string_view body) {
  const XXH128_hash_t hash = XXH3_128bits(body.data(), body.size());
  std::string out;
  out.reserve(method.size() + target.size() + 2 + 32);
  out += method;
  out += ' ';
  out += target;
  out += ' ';
  // High half first: the canonical (xxh128sum) spelling.
  appendHex(out, hash.high64);
  appendHex(out, hash.low64);
  return out;
}

}  // namespace zmesh::gateway
