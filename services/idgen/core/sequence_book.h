// Durable sequences with INCR semantics, handed out from memory in Meituan-Leaf segment mode.
//
// Each namespace has a durable upper bound `limit` (exclusive): ids below it may be issued
// because a record saying so is on disk. Ids come from memory until the block runs low; then
// the book asks its caller to make a higher limit durable (a Reservation) and, once the caller
// reports it durable (reserved()), serves the requests that waited for it. After a crash the
// sequence continues AT the last durable limit, so no id is ever repeated or goes backwards;
// the unissued rest of a block is skipped (gaps are allowed).
//
// The book is pure: no clock, file or socket. Durability is a handshake with the caller:
//   request()            answers now, or keeps the ticket (Pending);
//   takeReservations()   records the caller must append to its log and fsync;
//   reserved()           the record is durable: tickets that can now be served, in order;
//   reservationFailed()  the record could not be written: the waiting tickets fail.
// Call takeReservations() after every request(), cancel(), reserved() and reservationFailed().
//
// Block size adapts to demand as Leaf's dynamic step does. A block "lasts" from the moment
// the previous reservation became durable to the moment the next one is taken. Lasting less
// than blockDuration makes the next block twice as large (up to maxBlockSize); lasting more
// than twice blockDuration makes it half as large (down to blockSize). So a busy namespace
// reserves (and fsyncs) about once per blockDuration until its blocks reach maxBlockSize, and
// its prefetch has that long to become durable; a slow fsync shortens the measured time and
// so grows the block. A namespace whose demand falls halves its block once per reservation.
// A failed reservation, a restart and a new namespace start again at blockSize. Time comes
// from the injected options.clock.
//
// Ordering: per namespace, tickets are answered in the order request() saw them, so calls that
// do not overlap in time get increasing ids. Namespaces are independent.
//
// Thread-safety: none; the owner (the service's loop thread) serialises all calls.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "idgen_common.h"

namespace zmesh::idgen {

inline constexpr size_t kMaxNamespaceLength = 128;

// nullopt when ns is 1-128 characters of [A-Za-z0-9._:-]; otherwise an invalidArgument whose
// message names what is wrong, e.g. "namespace 'a b' has invalid character ' ' at position 1;
// allowed: A-Z a-z 0-9 . _ : -".
std::optional<Failure> validateNamespace(std::string_view ns);

// The ids first ... first+count-1.
struct IdRange {
  uint64_t first = 0;
  uint32_t count = 0;

  friend bool operator==(const IdRange&, const IdRange&) = default;
};

// A record the caller must make durable: "ids of `ns` below `limit` may be issued".
// `from` is the limit it replaces, i.e. the first id the new block adds (for idgen.block).
struct Reservation {
  std::string ns;
  uint64_t from = 0;
  uint64_t limit = 0;

  friend bool operator==(const Reservation&, const Reservation&) = default;
};

inline constexpr uint64_t kMaxBlockSize = 1'000'000'000;  // Fits a uint32_t.

struct SequenceBookOptions {
  // Ids one reservation adds beyond the demand waiting for it: a namespace's first block, and
  // the smallest.
  uint64_t blockSize = 1000;
  uint64_t maxBlockSize = 1'000'000;  // The largest a block grows to.
  // A block should last at least this long; 0 keeps every block at blockSize.
  std::chrono::milliseconds blockDuration{0};
  // Monotonic time, read when a reservation is taken or becomes durable; needed only when
  // blockDuration > 0.
  std::function<std::chrono::milliseconds()> clock = nullptr;
  double prefetchFraction = 0.5;  // Reserve ahead once fewer than this * the block remain.
  size_t maxNamespaces = 100000;  // request() refuses to create more (restore() never refuses).

  // nullopt when usable: 1 <= blockSize <= maxBlockSize <= 10^9, blockDuration >= 0 and a
  // clock when it is > 0, 0 <= prefetchFraction <= 1, maxNamespaces >= 1.
  std::optional<Failure> validate() const;
};

struct SequenceBookStats {
  size_t namespaces = 0;
  size_t waitingTickets = 0;
  size_t reservationsInFlight = 0;
  uint64_t reservationsIssued = 0;  // Handed out by takeReservations().
  uint64_t reservationsFailed = 0;
  uint64_t idsIssued = 0;
  uint64_t ticketsWaited = 0;  // Requests that had to wait for a reservation to be durable.
};

// What the book holds for one namespace (for stats, `inspect` and tests).
struct SequenceState {
  uint64_t next = 0;           // Next id to hand out.
  uint64_t limit = 0;          // Durable bound, exclusive.
  uint64_t inFlightLimit = 0;  // Limit being made durable; 0 when none.
  uint64_t blockSize = 0;      // The current block size (the next reservation may resize it).
  size_t waitingTickets = 0;
  uint64_t waitingIds = 0;
};

class SequenceBook {
 public:
  using Outcome = std::variant<IdRange, Pending, Failure>;
  using Served = std::vector<std::pair<uint64_t, IdRange>>;
  using Failed = std::vector<std::pair<uint64_t, Failure>>;

  // Throws std::invalid_argument when options.validate() fails (a configuration error that
  // main() reports before building the service).
  explicit SequenceBook(SequenceBookOptions options = {});

  // Pointers into the namespace table make copies unsafe; moving keeps the nodes.
  SequenceBook(const SequenceBook&) = delete;
  SequenceBook& operator=(const SequenceBook&) = delete;
  SequenceBook(SequenceBook&&) = default;
  SequenceBook& operator=(SequenceBook&&) = default;

  // The next `count` ids of `ns`. Answered at once when the durable block has room and no
  // earlier ticket of `ns` waits; otherwise Pending, and the ticket is answered by reserved()
  // or reservationFailed(), or dropped by cancel(). Failures: invalidArgument (namespace,
  // count, a ticket that is already waiting), failedPrecondition (sequence exhausted near
  // UINT64_MAX, too many namespaces). `ticket` is the caller's id for the call.
  Outcome request(uint64_t ticket, std::string_view ns, uint32_t count);

  // Records to make durable, at most one in flight per namespace. Each new limit covers all
  // demand waiting at this moment plus one block; with nothing waiting it is one block more.
  std::vector<Reservation> takeReservations();

  // The reservation of `ns` up to `newLimit` is durable: raises the limit and returns the
  // waiting tickets it serves, oldest first. Unknown namespaces are ignored (returns {}).
  Served reserved(std::string_view ns, uint64_t newLimit);

  // The reservation of `ns` could not be made durable: every waiting ticket of `ns` fails
  // with unavailable (carrying `message`). The next request() of `ns` reserves again; not at
  // once, so a failing disk is not hammered.
  Failed reservationFailed(std::string_view ns, std::string_view message);

  // Drops a waiting ticket (its deadline passed); false when it is not waiting. Ids it would
  // have got stay with the namespace; tickets behind it are served by the next reserved().
  bool cancel(uint64_t ticket);

  // Recovery: the durable limit of `ns` read back from a snapshot or log. Ids continue AT the
  // limit. Restoring is monotone (the highest limit seen wins): that is the last record of a
  // log written from this class, and stays safe if an older record is higher (a reservation
  // reported failed may still have reached the disk). Never refused for maxNamespaces: a
  // forgotten sequence would restart at 1. Fails (invalidArgument) on an invalid namespace or
  // limit 0. Meant to be called before the first request().
  std::optional<Failure> restore(std::string_view ns, uint64_t limit);

  // (namespace, limit) for every namespace, sorted by name, for log compaction. A limit in
  // flight is included: persisting a higher limit never repeats an id, while leaving it out
  // could lose it if the compaction drops the log holding its record.
  std::vector<std::pair<std::string, uint64_t>> snapshot() const;

  std::optional<SequenceState> inspect(std::string_view ns) const;
  SequenceBookStats stats() const;
  const SequenceBookOptions& options() const { return options_; }

 private:
  struct Waiter {
    uint64_t ticket;
    uint32_t count;
  };
  // Kept to 80 bytes, so that a table node fits jemalloc's 128-byte size class: a book may
  // hold maxNamespaces of them.
  static constexpr std::chrono::milliseconds kNotDurable = std::chrono::milliseconds::min();
  struct Sequence {
    uint64_t next = 1;
    uint64_t limit = 1;  // Nothing durable yet: the first request waits for a reservation.
    uint64_t inFlightLimit = 0;
    uint32_t block = 0;          // Current block size (<= kMaxBlockSize); set at creation.
    uint32_t prefetchBelow = 0;  // ceil(prefetchFraction * block).
    // When the last reservation became durable; kNotDurable before the first, after a
    // failure, or when blocks do not resize (blockDuration 0).
    std::chrono::milliseconds durableAt = kNotDurable;
    uint64_t waitingIds = 0;  // Sum of waiters' counts.
    // Oldest first. A vector, released when it empties: an idle namespace holds no
    // allocation for it (an empty std::deque holds ~600 bytes, three times the rest of a
    // namespace).
    std::vector<Waiter> waiters;
    bool queued = false;  // Listed in dirty_.
  };
  // Heterogeneous lookup so a string_view finds a std::string key without a copy.
  struct NameHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using Table = std::unordered_map<std::string, Sequence, NameHash, std::equal_to<>>;
  using Entry = Table::value_type;

  Sequence fresh() const;
  void resize(Sequence& seq) const;
  std::optional<std::chrono::milliseconds> now() const;
  void setBlock(Sequence& seq, uint64_t block) const;
  IdRange issue(Sequence& seq, uint32_t count);
  Served serveWaiters(Sequence& seq);
  void markIfLow(Entry& entry);
  bool needsReservation(const Sequence& seq) const;

  SequenceBookOptions options_;
  Table table_;
  std::unordered_map<uint64_t, Entry*> waiting_;  // ticket -> its namespace.
  std::vector<Entry*> dirty_;  // Namespaces that may need a reservation; deduplicated by queued.
  size_t inFlight_ = 0;
  uint64_t reservationsIssued_ = 0;
  uint64_t reservationsFailed_ = 0;
  uint64_t idsIssued_ = 0;
  uint64_t ticketsWaited_ = 0;
};

}  // namespace zmesh::idgen
