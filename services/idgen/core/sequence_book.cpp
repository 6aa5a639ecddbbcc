#include "sequence_book.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <utility>

namespace zmesh::idgen {
namespace {

constexpr uint64_t kMaxLimit = std::numeric_limits<uint64_t>::max();
constexpr std::string_view kAllowed = "A-Z a-z 0-9 . _ : -";

// Empties `v` and frees its buffer: `v = {}` and clear() keep the capacity.
template <typename T>
void release(std::vector<T>& v) {
  std::vector<T>().swap(v);
}

bool allowedChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == ':' || c == '-';
}

// Echoes untrusted bytes into a message without control characters or unbounded length.
std::string printable(std::string_view s, size_t maxChars = 64) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < s.size() && i < maxChars; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  if (s.size() > maxChars) out += "...";
  return out;
}

Failure invalid(std::string message) { return Failure{Fail::invalidArgument, std::move(message)}; }

}  // namespace

std::optional<Failure> validateNamespace(std::string_view ns) {
  if (ns.empty()) {
    return invalid("namespace is empty; it must be 1-" + std::to_string(kMaxNamespaceLength) +
                   " characters of " + std::string(kAllowed));
  }
  if (ns.size() > kMaxNamespaceLength) {
    return invalid("namespace '" + printable(ns) + "' is " + std::to_string(ns.size()) +
                   " characters long; at most " + std::to_string(kMaxNamespaceLength) + " allowed");
  }
  for (size_t i = 0; i < ns.size(); ++i) {
    if (!allowedChar(ns[i])) {
      return invalid("namespace '" + printable(ns) + "' has invalid character '" +
                     printable(ns.substr(i, 1)) + "' at position " + std::to_string(i) +
                     "; allowed: " + std::string(kAllowed));
    }
  }
  return std::nullopt;
}

std::optional<Failure> SequenceBookOptions::validate() const {
  if (blockSize < 1 || blockSize > kMaxBlockSize) {
    return invalid("blockSize " + std::to_string(blockSize) + " is out of range; must be 1.." +
                   std::to_string(kMaxBlockSize));
  }
  if (maxBlockSize < blockSize || maxBlockSize > kMaxBlockSize) {
    return invalid("maxBlockSize " + std::to_string(maxBlockSize) + " is out of range; must be " +
                   std::to_string(blockSize) + " (blockSize).." + std::to_string(kMaxBlockSize));
  }
  if (blockDuration.count() < 0) {
    return invalid("blockDuration " + std::to_string(blockDuration.count()) +
                   " ms is negative; 0 keeps blocks at blockSize");
  }
  if (blockDuration.count() > 0 && !clock) {
    return invalid("blockDuration " + std::to_string(blockDuration.count()) +
                   " ms needs a clock to measure how long blocks last");
  }
  // Written so that NaN fails too.
  if (!(prefetchFraction >= 0.0 && prefetchFraction <= 1.0)) {
    return invalid("prefetchFraction " + std::to_string(prefetchFraction) +
                   " is out of range; must be 0..1");
  }
  if (maxNamespaces < 1) return invalid("maxNamespaces must be at least 1");
  return std::nullopt;
}

SequenceBook::SequenceBook(SequenceBookOptions options) : options_(options) {
  if (auto failure = options_.validate()) throw std::invalid_argument(failure->message);
}

SequenceBook::Outcome SequenceBook::request(uint64_t ticket, std::string_view ns, uint32_t count) {
  if (auto failure = validateCount(count)) return *std::move(failure);
  if (auto failure = validateNamespace(ns)) return *std::move(failure);
  if (waiting_.contains(ticket)) {
    return invalid("ticket " + std::to_string(ticket) + " is already waiting");
  }
  auto it = table_.find(ns);
  if (it == table_.end()) {
    if (table_.size() >= options_.maxNamespaces) {
      return Failure{Fail::failedPrecondition,
                     "too many namespaces: the limit of " + std::to_string(options_.maxNamespaces) +
                         " is reached; namespace '" + std::string(ns) + "' not created"};
    }
    it = table_.emplace(std::string(ns), fresh()).first;
  }
  Entry& entry = *it;
  Sequence& seq = entry.second;

  // Waiters ahead take their ids first; the ids this request would get start after them.
  // next + waitingIds never exceeds kMaxLimit: every admitted request was checked here.
  const uint64_t start = seq.next + seq.waitingIds;
  if (count > kMaxLimit - start) {
    return Failure{Fail::failedPrecondition,
                   "sequence '" + std::string(ns) + "' exhausted: " + std::to_string(count) +
                       " ids asked, " + std::to_string(kMaxLimit - start) + " left"};
  }

  if (seq.waiters.empty() && count <= seq.limit - seq.next) {
    IdRange range = issue(seq, count);
    markIfLow(entry);
    return range;
  }
  seq.waiters.push_back(Waiter{ticket, count});
  seq.waitingIds += count;
  ++ticketsWaited_;
  waiting_.emplace(ticket, &entry);
  markIfLow(entry);
  return Pending{};
}

std::vector<Reservation> SequenceBook::takeReservations() {
  std::vector<Reservation> out;
  for (Entry* entry : dirty_) {
    Sequence& seq = entry->second;
    seq.queued = false;
    if (!needsReservation(seq)) continue;
    resize(seq);
    // Cover every waiting id, then one block more so the next requests are served from memory.
    const uint64_t base = std::max(seq.limit, seq.next + seq.waitingIds);
    const uint64_t newLimit = base > kMaxLimit - seq.block ? kMaxLimit : base + seq.block;
    seq.inFlightLimit = newLimit;
    ++inFlight_;
    ++reservationsIssued_;
    out.push_back(Reservation{entry->first, seq.limit, newLimit});
  }
  dirty_.clear();
  return out;
}

SequenceBook::Served SequenceBook::reserved(std::string_view ns, uint64_t newLimit) {
  auto it = table_.find(ns);
  if (it == table_.end()) return {};
  Sequence& seq = it->second;
  if (seq.inFlightLimit != 0) {
    seq.inFlightLimit = 0;
    --inFlight_;
    seq.durableAt = now().value_or(kNotDurable);
  }
  // A durable limit is never lowered: ids below the current one may already be out.
  seq.limit = std::max(seq.limit, newLimit);
  Served served = serveWaiters(seq);
  markIfLow(*it);
  return served;
}

SequenceBook::Failed SequenceBook::reservationFailed(std::string_view ns,
                                                     std::string_view message) {
  auto it = table_.find(ns);
  if (it == table_.end()) return {};
  Sequence& seq = it->second;
  if (seq.inFlightLimit != 0) {
    seq.inFlightLimit = 0;
    --inFlight_;
    ++reservationsFailed_;
  }
  // Retries against a failing disk come fast; they must not grow the block (and with it
  // what a crash skips). Start again as a new namespace does.
  setBlock(seq, options_.blockSize);
  seq.durableAt = kNotDurable;
  Failed failed;
  failed.reserve(seq.waiters.size());
  for (const Waiter& waiter : seq.waiters) {
    if (waiter.count == 0) continue;  // cancelled
    waiting_.erase(waiter.ticket);
    failed.emplace_back(waiter.ticket, Failure{Fail::unavailable,
                                               "could not reserve ids for namespace '" +
                                                   std::string(ns) + "': " + std::string(message)});
  }
  release(seq.waiters);
  seq.waitingIds = 0;
  // Not marked for another reservation: retrying at once would spin against a failing disk.
  // The next request() of this namespace asks again.
  return failed;
}

bool SequenceBook::cancel(uint64_t ticket) {
  auto it = waiting_.find(ticket);
  if (it == waiting_.end()) return false;
  Sequence& seq = it->second->second;
  // Marked (count 0), not erased: cancelling many at once (a burst of
  // deadlines) is not quadratic. No live waiter left: none at all.
  auto pos = findWaiter(seq.waiters, ticket);
  seq.waitingIds -= pos->count;
  pos->count = 0;
  if (seq.waitingIds == 0) release(seq.waiters);
  waiting_.erase(it);
  return true;
}

std::optional<Failure> SequenceBook::restore(std::string_view ns, uint64_t limit) {
  if (auto failure = validateNamespace(ns)) return failure;
  if (limit == 0) {
    return invalid("restored limit 0 for namespace '" + std::string(ns) +
                   "' is invalid; limits start at 1");
  }
  auto it = table_.find(ns);
  if (it == table_.end()) it = table_.emplace(std::string(ns), fresh()).first;
  Sequence& seq = it->second;
  seq.limit = std::max(seq.limit, limit);
  // Ids between the last issued one and the limit may have been handed out before the crash
  // without a trace; only the limit itself is known to be unused.
  seq.next = std::max(seq.next, limit);
  // No reservation here: a restart would otherwise write one record per namespace at once.
  // The first request() of the namespace asks for its block.
  return std::nullopt;
}

std::vector<std::pair<std::string, uint64_t>> SequenceBook::snapshot() const {
  std::vector<std::pair<std::string, uint64_t>> out;
  out.reserve(table_.size());
  for (const auto& [name, seq] : table_)
    out.emplace_back(name, std::max(seq.limit, seq.inFlightLimit));
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<SequenceState> SequenceBook::inspect(std::string_view ns) const {
  auto it = table_.find(ns);
  if (it == table_.end()) return std::nullopt;
  const Sequence& seq = it->second;
  auto live = std::count_if(seq.waiters.begin(), seq.waiters.end(),
                            [](const Waiter& w) { return w.count != 0; });  // not cancelled
  return SequenceState{
      seq.next, seq.limit, seq.inFlightLimit, seq.block, static_cast<size_t>(live), seq.waitingIds};
}

SequenceBookStats SequenceBook::stats() const {
  return SequenceBookStats{table_.size(),       waiting_.size(), inFlight_,     reservationsIssued_,
                           reservationsFailed_, idsIssued_,      ticketsWaited_};
}

SequenceBook::Sequence SequenceBook::fresh() const {
  static_assert(sizeof(Sequence) <= 80, "a table node must fit jemalloc's 128-byte class");
  Sequence seq;
  setBlock(seq, options_.blockSize);
  return seq;
}

void SequenceBook::setBlock(Sequence& seq, uint64_t block) const {
  static_assert(kMaxBlockSize <= std::numeric_limits<uint32_t>::max());
  seq.block = static_cast<uint32_t>(block);  // <= maxBlockSize <= kMaxBlockSize (validated)
  // remaining < fraction * block  <=>  remaining < ceil(fraction * block) for integers.
  seq.prefetchBelow =
      static_cast<uint32_t>(std::ceil(options_.prefetchFraction * static_cast<double>(block)));
}

std::optional<std::chrono::milliseconds> SequenceBook::now() const {
  if (options_.blockDuration.count() == 0) return std::nullopt;
  return options_.clock();
}

// Called as a reservation is taken: the block lasted from the previous reservation becoming
// durable until now.
void SequenceBook::resize(Sequence& seq) const {
  if (seq.durableAt == kNotDurable) return;  // a first block, or blockDuration 0
  const auto target = options_.blockDuration;
  const auto lasted = *now() - seq.durableAt;
  if (lasted < target) {
    setBlock(seq, std::min(uint64_t{seq.block} * 2, options_.maxBlockSize));
  } else if (lasted - target > target) {  // lasted > 2 * target, without overflow
    setBlock(seq, std::max(uint64_t{seq.block} / 2, options_.blockSize));
  }
}

IdRange SequenceBook::issue(Sequence& seq, uint32_t count) {
  IdRange range{seq.next, count};
  seq.next += count;
  idsIssued_ += count;
  return range;
}

SequenceBook::Served SequenceBook::serveWaiters(Sequence& seq) {
  Served served;
  auto waiter = seq.waiters.begin();
  for (; waiter != seq.waiters.end() && waiter->count <= seq.limit - seq.next; ++waiter) {
    if (waiter->count == 0) continue;  // cancelled
    seq.waitingIds -= waiter->count;
    waiting_.erase(waiter->ticket);
    served.emplace_back(waiter->ticket, issue(seq, waiter->count));
  }
  if (waiter == seq.waiters.end())
    release(seq.waiters);
  else
    seq.waiters.erase(seq.waiters.begin(), waiter);
  return served;
}

void SequenceBook::markIfLow(Entry& entry) {
  if (entry.second.queued || !needsReservation(entry.second)) return;
  entry.second.queued = true;
  dirty_.push_back(&entry);
}

bool SequenceBook::needsReservation(const Sequence& seq) const {
  if (seq.inFlightLimit != 0 || seq.limit == kMaxLimit) return false;
  return !seq.waiters.empty() || seq.limit - seq.next < seq.prefetchBelow;
}

}  // namespace zmesh::idgen
