// The durable state of one stateful service: an append-only log of its writes
// plus a compact snapshot, written by a helper thread with group commit so the
// service's event loop never waits on the disk (DESIGN.md §3, §4).
//
// Files in the data directory, for a journal called <name>:
//   <name>.log.<generation>  records appended since the snapshot that precedes
//                            it (record_log.h framing); generation is decimal
//   <name>.snapshot          record_log.h framing: a header record
//                            {format version u32le, next log generation u64le,
//                            payload size u64le (version 1) or 0 (version 2)},
//                            the payload split into records of at most
//                            kMaxRecordSize, and (version 2, written now: the
//                            payload is streamed) a last record {payload size
//                            u64le}
//   <name>.snapshot.tmp      a snapshot being written; never read
//
// Crash safety rests on three orderings: a log is fsynced before a later
// generation is created (so what survives is always a prefix of the history,
// even across files); the snapshot is fsynced before it is renamed into place
// and the directory fsynced after; a log is removed only once a durable
// snapshot covers it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "zmesh/storage/env.h"

namespace zmesh::storage {

// When appended records are fsynced, as Redis's appendfsync.
enum class FsyncPolicy {
  always,    // before the append's completion runs
  everysec,  // at least once a second; completion runs after the write
  no,        // when the journal rotates or closes; completion runs after the write
};

// Throws std::invalid_argument "fsync must be one of always|everysec|no, got 'x'".
FsyncPolicy parseFsyncPolicy(std::string_view text);
std::string_view toString(FsyncPolicy policy);

enum class Durability {
  policy,     // as the journal's FsyncPolicy says
  forceSync,  // fsynced before the completion runs under every policy: for
              // reservations that must never go backwards (sequence blocks,
              // fencing-token blocks, Snowflake time bounds)
};

struct JournalOptions {
  std::string dir;
  std::string name;  // file name prefix; non-empty, no '/'
  FsyncPolicy policy = FsyncPolicy::everysec;
};

// What recover() found, to rebuild the service's state: apply the snapshot,
// then every record in order.
struct Recovered {
  std::optional<std::string> snapshot;
  std::vector<std::string> records;
  uint64_t cutBytes = 0;        // torn/corrupt tail bytes cut from the last log
  uint64_t nextGeneration = 1;  // the log generation the Journal will open
};

struct JournalStats {
  uint64_t appends = 0;   // records written to the log
  uint64_t syncs = 0;     // fsyncs of appended records (what group commit saves)
  uint64_t bytes = 0;     // bytes written to the log, framing included
  uint64_t batches = 0;   // writes to the log (one per group of queued records)
  uint64_t maxBatch = 0;  // most records in one batch
  uint64_t rewrites = 0;  // snapshots completed
  // Waiting for the helper thread now: a caller can refuse work when the disk
  // falls behind instead of queueing without bound.
  uint64_t queuedRecords = 0;
  uint64_t queuedBytes = 0;
  // Snapshot slices waiting to be written (not counted above): a writer of
  // slices paces itself by it.
  uint64_t snapshotQueuedBytes = 0;
};

class Journal {
 public:
  // Runs a closure on the owner's event-loop thread; callable from any thread,
  // in order (FIFO), and must not throw. Every completion, and every callback
  // the journal drops, is run or destroyed on the owner's thread through it,
  // so closures may hold state that belongs to that thread.
  using Poster = std::function<void(std::function<void()>)>;
  using Done = std::function<void()>;

  // Start-up, before the event loop: creates `dir` if missing, loads the
  // snapshot (a corrupt one throws StorageError: it is never skipped), replays
  // every log from the snapshot's generation on, cuts a torn tail of the last
  // log (truncate + fsync) and removes files the snapshot made obsolete.
  // Corruption in a log that is not the last throws StorageError: records
  // after it were once durable, and replaying later logs past the gap would
  // build a state that never existed. The caller should hold Env::lockDir(dir).
  static Recovered recover(Env& env, const std::string& dir, const std::string& name);

  static std::string logPath(const std::string& dir, const std::string& name, uint64_t generation);
  static std::string snapshotPath(const std::string& dir, const std::string& name);

  // Creates log `recovered.nextGeneration` (synchronously: its failure throws
  // StorageError here, at start-up) and starts the helper thread. Every
  // restart therefore begins a fresh log; the next rewrite removes the old
  // ones. `onFatal` is posted once if any storage operation fails (write,
  // fsync, rename, ...): the journal then stops, and the completions of
  // everything not yet durable never run. The process should stop rather than
  // carry on without durability.
  Journal(Env& env, JournalOptions options, const Recovered& recovered, Poster post,
          std::function<void(std::string)> onFatal);
  // close().
  ~Journal();

  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Owner thread only. Queues `payload` (at most kMaxRecordSize bytes, else
  // std::length_error); `done` (may be empty) is posted once the record is as
  // durable as `durability` and the policy require. Completions are posted in
  // append order, all those of one batch in a single post. After a fatal
  // error the call is ignored and `done` never runs.
  void append(std::string payload, Durability durability, Done done);

  // Owner thread only. Replaces the snapshot by `snapshotPayload`, which must
  // reflect exactly the appends made before this call: in queue order, the
  // helper starts a new log generation for later appends, writes and fsyncs
  // `<name>.snapshot.tmp`, renames it over `<name>.snapshot`, fsyncs the
  // directory and removes the logs it covers; then posts `done`.
  void rewrite(std::string snapshotPayload, Done done);

  // A snapshot built a slice at a time while appends go on, for a state too
  // large to serialise in one turn of the owner's loop. beginSnapshot() is
  // rewrite()'s cut: later appends go to a new log generation, and the
  // snapshot covers every log before it. The slices (joined, they are the
  // payload) may reflect appends made after the cut, so this is only for
  // records that set state absolutely — replaying one over a state that
  // already has it changes nothing — as the cache's do. endSnapshot() writes
  // it as rewrite() does (the log fsynced first, so the snapshot shows no
  // record a crash could still lose), then posts `done`. One at a time
  // (std::logic_error otherwise); slices are written to the .tmp file as they
  // come, never held whole.
  void beginSnapshot();
  void addToSnapshot(std::string slice);
  void endSnapshot(Done done);

  // Bytes in the current log generation, counting queued appends; resets when
  // rewrite() or beginSnapshot() is called. For the owner's decision to rewrite. Any thread.
  uint64_t logBytes() const;

  // True once a storage error stopped the journal. Any thread.
  bool failed() const;

  // Owner thread. Writes and fsyncs everything queued (under every policy),
  // posts the remaining completions and joins the helper. Idempotent; append
  // and rewrite after close() throw std::logic_error.
  void close();

  FsyncPolicy policy() const;
  JournalStats stats() const;  // any thread
  // stats() and logBytes() as named statistics ("journal.appends", …), as a
  // service's Admin.stats shows them: a counter only goes up, a gauge is a level.
  struct Counter {
    const char* name;
    const char* help;
    bool gauge;
    uint64_t value;
  };
  std::vector<Counter> counters() const;
  // Writes counters() into a statistics sink (rpc::MetricsOut): a template, so
  // storage/ needs no rpc/ header.
  template <typename Out>
  void collect(Out& out) const {
    for (const Counter& c : counters())
      c.gauge ? out.gauge(c.name, c.help, static_cast<double>(c.value))
              : out.counter(c.name, c.help, static_cast<double>(c.value));
  }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace zmesh::storage
