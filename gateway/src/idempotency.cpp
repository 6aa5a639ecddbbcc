#include "idempotency.h"

#include <xxhash.h>

#include <cstdint>
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
    : IdempotencyStore(window, IdempotencyLimits{maxEntries, SIZE_MAX, SIZE_MAX}, std::move(now)) {}

IdempotencyStore::IdempotencyStore(std::chrono::milliseconds window, IdempotencyLimits limits,
                                   std::function<Clock::time_point()> now)
    : window_(window), limits_(limits), now_(std::move(now)) {
  if (window_.count() <= 0) throw std::invalid_argument("idempotency window must be positive");
  if (limits_.maxEntries < 1)
    throw std::invalid_argument("idempotency maxEntries must be at least 1");
  if (limits_.maxBytes < kEntryOverhead || limits_.principalMaxBytes < kEntryOverhead)
    throw std::invalid_argument("idempotency byte limits must fit one entry");
  if (!now_) throw std::invalid_argument("idempotency clock is empty");
}

namespace {

size_t responseBytes(const StoredResponse& response) {
  size_t n = response.body.size();
  for (auto& [name, value] : response.headers) n += name.size() + value.size() + 64;
  return n;
}

}  // namespace

void IdempotencyStore::erase(Entries::iterator it) {
  Entry& entry = it->second;
  bytes_ -= entry.bytes;
  auto scope = scopes_.find(entry.scope);
  scope->second.bytes -= entry.bytes;
  scope->second.order.erase(entry.scopeOrder);
  if (scope->second.order.empty()) scopes_.erase(scope);
  order_.erase(entry.order);
  entries_.erase(it);
}

// order_ is sorted by stamp (complete() moves an entry to the back), so the
// expired entries are a prefix of it. In-progress entries expire too: a request
// running longer than the whole window is taken as lost (its owner never
// called complete() or abandon()), and must not block its key for ever.
void IdempotencyStore::expire(Clock::time_point now) {
  while (!order_.empty()) {
    auto it = entries_.find(order_.front());
    if (now - it->second.stamp < window_) break;
    erase(it);
  }
}

bool IdempotencyStore::makeRoom(const std::string& scope, size_t incoming, const Entry* keep) {
  // The anonymous scope has no share of its own: only the store's bounds.
  const size_t share = scope.empty() ? limits_.maxBytes : limits_.principalMaxBytes;
  const size_t total = incoming + (keep ? keep->bytes : 0);  // the entry once it grows
  if (total > share || total > limits_.maxBytes) return false;
  // The oldest entry of `order` other than `keep`. Since `total` fits, one
  // exists whenever the loops below need one.
  auto oldest = [&](const std::list<std::string>& order) {
    auto victim = entries_.find(order.front());
    if (&victim->second == keep) victim = entries_.find(*std::next(order.begin()));
    return victim;
  };
  if (auto s = scopes_.find(scope); s != scopes_.end()) {
    while (s->second.bytes + incoming > share) {
      const bool last = s->second.order.size() == 1;
      erase(oldest(s->second.order));
      ++quotaEvictions_;
      if (last) break;  // the scope's entry is gone with it
    }
  }
  size_t entries = entries_.size() + (keep ? 0 : 1);
  while (!order_.empty() &&
         (bytes_ + incoming > limits_.maxBytes || entries > limits_.maxEntries)) {
    erase(oldest(order_));
    ++evictions_;
    --entries;
  }
  return true;
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
  // The key is held three times: the map, the store's order and its scope's.
  const size_t bytes = kEntryOverhead + 3 * k.size() + scope.size() + fingerprint.size();
  if (!makeRoom(scope, bytes, nullptr)) {
    // Too big to track at all: run it unprotected rather than refuse it.
    ++evictions_;
    return {Outcome::kFirst, std::nullopt};
  }
  order_.push_back(k);
  auto& s = scopes_[scope];
  s.order.push_back(k);
  s.bytes += bytes;
  bytes_ += bytes;
  entries_.emplace(std::move(k), Entry{scope, fingerprint, std::nullopt, now, bytes,
                                       std::prev(order_.end()), std::prev(s.order.end())});
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
  const size_t extra = responseBytes(response);
  if (!makeRoom(scope, extra, &entry)) {
    erase(it);  // an answer bigger than a bound: not kept
    ++evictions_;
    return;
  }
  entry.bytes += extra;
  bytes_ += extra;
  auto& s = scopes_.at(scope);
  s.bytes += extra;
  entry.response = std::move(response);
  entry.stamp = now;
  order_.splice(order_.end(), order_, entry.order);
  s.order.splice(s.order.end(), s.order, entry.scopeOrder);
}

void IdempotencyStore::abandon(const std::string& scope, const std::string& key) {
  std::lock_guard lock(mutex_);
  expire(now_());
  auto it = entries_.find(mapKey(scope, key));
  // Only a running request is abandoned: a completed answer stays replayable.
  if (it == entries_.end() || it->second.response) return;
  erase(it);
}

size_t IdempotencyStore::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

IdempotencyStore::Stats IdempotencyStore::stats() const {
  std::lock_guard lock(mutex_);
  return {entries_.size(), bytes_, evictions_, quotaEvictions_};
}

size_t IdempotencyStore::principalBytes(const std::string& scope) const {
  std::lock_guard lock(mutex_);
  auto it = scopes_.find(scope);
  return it == scopes_.end() ? 0 : it->second.bytes;
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
