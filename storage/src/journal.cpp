#include "zmesh/storage/journal.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <thread>

#ifdef __linux__
#include <pthread.h>
#endif

#include "encoding.h"
#include "path_util.h"
#include "zmesh/storage/record_log.h"

namespace zmesh::storage {
namespace {

using Clock = std::chrono::steady_clock;

// Version 1: the header's payload size is the size. Version 2 (written now):
// the snapshot is streamed a slice at a time, so the header's size is 0 and
// the last record, 8 bytes, is the payload size.
constexpr uint32_t kSnapshotFormatVersion = 2;
constexpr size_t kSnapshotHeaderSize = 4 + 8 + 8;
constexpr size_t kSnapshotTrailerSize = 8;
constexpr auto kEverysecInterval = std::chrono::seconds(1);

void checkName(const std::string& name) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos) {
    throw std::invalid_argument("journal name must be a non-empty file name, got '" + name + "'");
  }
}

// The generation of `<name>.log.<digits>`, or nullopt for any other file.
std::optional<uint64_t> parseGeneration(std::string_view file, const std::string& name) {
  const std::string prefix = name + ".log.";
  if (file.size() <= prefix.size() || file.substr(0, prefix.size()) != prefix) return std::nullopt;
  const std::string_view digits = file.substr(prefix.size());
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  uint64_t gen = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), gen);
  if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return gen;
}

std::vector<uint64_t> listLogs(Env& env, const std::string& dir, const std::string& name) {
  std::vector<uint64_t> gens;
  for (const auto& file : env.listDir(dir)) {
    if (auto gen = parseGeneration(file, name)) gens.push_back(*gen);
  }
  std::sort(gens.begin(), gens.end());
  return gens;
}

ReplayResult readLogAt(std::string_view bytes, const std::string& path) {
  try {
    return readLog(bytes);
  } catch (const StorageError& e) {
    throw StorageError(path + ": " + e.what());
  }
}

struct Snapshot {
  uint64_t nextGeneration = 0;
  std::string payload;
};

Snapshot parseSnapshot(std::string_view bytes, const std::string& path) {
  // The snapshot was fsynced before it was renamed into place, so any damage
  // is corruption, not a torn write: refuse it rather than start from a state
  // that silently lost everything the snapshot held.
  const ReplayResult r = readLogAt(bytes, path);
  if (r.torn || r.records.empty() || r.records[0].size() != kSnapshotHeaderSize) {
    throw StorageError("corrupt snapshot " + path + " (damaged at offset " +
                       std::to_string(r.validBytes) + " of " + std::to_string(bytes.size()) + ")");
  }
  const std::string_view header = r.records[0];
  const uint64_t version = detail::getLe(header, 0, 4);
  if (version != 1 && version != 2) {
    throw StorageError(path + ": unsupported snapshot format version " + std::to_string(version) +
                       " (this build reads versions 1 and " +
                       std::to_string(kSnapshotFormatVersion) + ")");
  }
  Snapshot s;
  s.nextGeneration = detail::getLe(header, 4, 8);
  size_t end = r.records.size();  // one past the last payload record
  uint64_t size = detail::getLe(header, 12, 8);
  if (version == 2) {
    if (end < 2 || r.records[end - 1].size() != kSnapshotTrailerSize)
      throw StorageError("corrupt snapshot " + path + " (no trailer: cut short)");
    size = detail::getLe(r.records[end - 1], 0, 8);
    --end;
  }
  uint64_t total = 0;
  for (size_t i = 1; i < end; ++i) total += r.records[i].size();
  if (total != size) {
    throw StorageError("corrupt snapshot " + path + " (holds " + std::to_string(total) +
                       " payload bytes, its size record says " + std::to_string(size) + ")");
  }
  s.payload.reserve(size);
  for (size_t i = 1; i < end; ++i) s.payload.append(r.records[i]);
  return s;
}

// Makes a file's current content durable. After `kill -9` what recovery read
// may exist only in the page cache; it must be on disk before a later log
// generation can hold records that depend on it.
void syncFile(Env& env, const std::string& path) {
  auto f = env.openAppend(path);
  f->sync();
  f->close();
}

}  // namespace

FsyncPolicy parseFsyncPolicy(std::string_view text) {
  if (text == "always") return FsyncPolicy::always;
  if (text == "everysec") return FsyncPolicy::everysec;
  if (text == "no") return FsyncPolicy::no;
  throw std::invalid_argument("fsync must be one of always|everysec|no, got '" + std::string(text) +
                              "'");
}

std::string_view toString(FsyncPolicy policy) {
  switch (policy) {
    case FsyncPolicy::always:
      return "always";
    case FsyncPolicy::everysec:
      return "everysec";
    case FsyncPolicy::no:
      return "no";
  }
  return "unknown";
}

std::string Journal::logPath(const std::string& dir, const std::string& name, uint64_t generation) {
  return detail::joinPath(dir, name + ".log." + std::to_string(generation));
}

std::string Journal::snapshotPath(const std::string& dir, const std::string& name) {
  return detail::joinPath(dir, name + ".snapshot");
}

Recovered Journal::recover(Env& env, const std::string& dir, const std::string& name) {
  checkName(name);
  env.createDirs(dir);
  // A previous process may have renamed a snapshot into place and died before
  // its directory fsync. Make the directory as we see it durable before
  // acting on it, so the removal of logs that snapshot covers can never reach
  // the disk without the snapshot itself.
  env.syncDir(dir);

  Recovered out;
  const std::string snapPath = snapshotPath(dir, name);
  const std::string tmpPath = snapPath + ".tmp";
  if (env.exists(tmpPath)) env.remove(tmpPath);  // a rewrite that never got renamed

  uint64_t firstGeneration = 0;  // logs before this are covered by the snapshot
  if (auto bytes = env.readFile(snapPath)) {
    Snapshot s = parseSnapshot(*bytes, snapPath);
    firstGeneration = s.nextGeneration;
    out.snapshot = std::move(s.payload);
  }
  out.nextGeneration = std::max<uint64_t>(1, firstGeneration);

  const std::vector<uint64_t> gens = listLogs(env, dir, name);
  for (size_t i = 0; i < gens.size(); ++i) {
    const uint64_t gen = gens[i];
    const std::string path = logPath(dir, name, gen);
    if (gen < firstGeneration) {
      env.remove(path);
      continue;
    }
    const std::optional<std::string> bytes = env.readFile(path);
    if (!bytes) continue;
    const ReplayResult r = readLogAt(*bytes, path);
    if (r.torn) {
      // Only the newest log can legitimately end torn: every older one was
      // fsynced before a later generation was created.
      if (i + 1 != gens.size()) {
        throw StorageError("log " + path + " is corrupt at offset " + std::to_string(r.validBytes) +
                           " but later logs exist; refusing to replay past the gap");
      }
      out.cutBytes += bytes->size() - r.validBytes;
      env.truncate(path, r.validBytes);
    } else {
      syncFile(env, path);
    }
    for (std::string_view rec : r.records) out.records.emplace_back(rec);
    out.nextGeneration = std::max(out.nextGeneration, gen + 1);
  }
  return out;
}

namespace {

struct Item {
  // A record to append, or a step of a snapshot: begin (later records go to
  // a new log generation), a slice of its payload, end (write it, rename it
  // into place, remove the logs it covers).
  enum class Kind : uint8_t { record, snapshotBegin, snapshotSlice, snapshotEnd };
  Kind kind = Kind::record;
  std::string payload;
  Durability durability = Durability::policy;
  Journal::Done done;
};

}  // namespace

struct Journal::Impl {
  Impl(Env& e, JournalOptions o, Poster p, std::function<void(std::string)> f)
      : env(e), opts(std::move(o)), post(std::move(p)), onFatal(std::move(f)) {}

  Env& env;
  const JournalOptions opts;
  const Poster post;
  const std::function<void(std::string)> onFatal;

  std::mutex mu;
  std::condition_variable cv;
  std::vector<Item> queue;    // guarded by mu
  bool stopping = false;      // guarded by mu
  bool closed = false;        // owner thread only
  bool snapshotOpen = false;  // owner thread only: beginSnapshot() without its end yet
  std::thread thread;

  // Set under mu (so no item can slip into the queue after fail() drained
  // it), read anywhere.
  std::atomic<bool> failed{false};
  std::atomic<uint64_t> logBytes{kLogHeaderSize};
  std::atomic<uint64_t> appends{0}, syncs{0}, bytes{0}, batches{0}, maxBatch{0}, rewrites{0};
  // What waits for the helper (set under mu, read anywhere).
  std::atomic<uint64_t> queuedRecords{0}, queuedBytes{0};
  // Snapshot slices waiting for the helper, apart: a snapshot is not the disk falling behind.
  std::atomic<uint64_t> snapshotQueued{0};

  // Helper thread only (the constructor's thread before the helper starts).
  std::unique_ptr<WritableFile> log;
  uint64_t generation = 0;
  uint64_t snapshotGeneration = 0;  // the first log a snapshot being written does not cover
  std::unique_ptr<WritableFile> snapshotFile;  // its .tmp, while it is written
  uint64_t snapshotBytes = 0;                  // its payload so far
  bool unsynced = false;                       // records written to `log` since its last fsync
  Clock::time_point lastSync;

  // Creates log `gen` with a durable header and a durable directory entry,
  // and makes it the one appended to.
  void openLog(uint64_t gen) {
    auto f = env.openTruncate(logPath(opts.dir, opts.name, gen));
    f->append(logFileHeader());
    f->sync();
    env.syncDir(opts.dir);
    if (log) log->close();
    log = std::move(f);
    generation = gen;
    unsynced = false;
    lastSync = Clock::now();
  }

  void syncLog() {
    log->sync();
    unsynced = false;
    lastSync = Clock::now();
    syncs.fetch_add(1, std::memory_order_relaxed);
  }

  void run() {
#ifdef __linux__
    // Shows up in top/gdb/perf; Linux caps names at 15 characters.
    ::pthread_setname_np(::pthread_self(), ("journal:" + opts.name).substr(0, 15).c_str());
#endif
    std::vector<Item> work;
    for (;;) {
      bool stop = false;
      {
        std::unique_lock lk(mu);
        while (queue.empty() && !stopping) {
          if (unsynced && opts.policy == FsyncPolicy::everysec) {
            if (cv.wait_until(lk, lastSync + kEverysecInterval) == std::cv_status::timeout) break;
          } else {
            cv.wait(lk);
          }
        }
        work.swap(queue);
        queuedRecords.store(0, std::memory_order_relaxed);
        queuedBytes.store(0, std::memory_order_relaxed);
        stop = stopping;  // close() takes no more work, so `work` is the last of it
      }
      try {
        process(work);
        if (unsynced && opts.policy == FsyncPolicy::everysec &&
            Clock::now() - lastSync >= kEverysecInterval) {
          syncLog();
        }
        if (stop) {
          if (unsynced) syncLog();
          log->close();
          return;
        }
      } catch (const std::exception& e) {
        fail(e.what(), work);
        return;
      }
      work.clear();
    }
  }

  // Runs queued items in order; appends between two rewrites form one batch.
  void process(std::vector<Item>& work) {
    for (size_t i = 0; i < work.size();) {
      switch (work[i].kind) {
        case Item::Kind::snapshotBegin:
          beginSnapshot();
          ++i;
          continue;
        case Item::Kind::snapshotSlice:
          addToSnapshot(work[i].payload);
          std::string().swap(work[i].payload);
          ++i;
          continue;
        case Item::Kind::snapshotEnd:
          endSnapshot(work[i]);
          ++i;
          continue;
        case Item::Kind::record:
          break;
      }
      size_t end = i;
      while (end < work.size() && work[end].kind == Item::Kind::record) ++end;
      commit(work, i, end);
      i = end;
    }
  }

  // Group commit: one write and at most one fsync for work[begin, end).
  void commit(std::vector<Item>& work, size_t begin, size_t end) {
    size_t size = 0;
    bool needSync = opts.policy == FsyncPolicy::always;
    for (size_t k = begin; k < end; ++k) {
      size += kRecordHeaderSize + work[k].payload.size();
      needSync |= work[k].durability == Durability::forceSync;
    }
    std::string buf;
    buf.reserve(size);
    for (size_t k = begin; k < end; ++k) {
      appendRecord(buf, work[k].payload);
      std::string().swap(work[k].payload);  // a big batch shouldn't be held twice
    }
    log->append(buf);
    unsynced = true;
    if (needSync) syncLog();

    const uint64_t n = end - begin;
    appends.fetch_add(n, std::memory_order_relaxed);
    bytes.fetch_add(buf.size(), std::memory_order_relaxed);
    batches.fetch_add(1, std::memory_order_relaxed);
    uint64_t prev = maxBatch.load(std::memory_order_relaxed);
    while (n > prev && !maxBatch.compare_exchange_weak(prev, n, std::memory_order_relaxed)) {
    }

    // Moved out only now: if anything above threw, fail() still finds them.
    std::vector<Done> dones;
    for (size_t k = begin; k < end; ++k) {
      if (work[k].done) dones.push_back(std::move(work[k].done));
    }
    if (!dones.empty()) {
      post([dones = std::move(dones)] {
        for (const auto& d : dones) d();
      });
    }
  }

  void beginSnapshot() {
    // The old log must be durable before a newer generation exists: otherwise
    // a crash could keep records of the new log while losing older ones.
    if (unsynced) syncLog();
    openLog(generation + 1);
    snapshotGeneration = generation;
    snapshotBytes = 0;
    snapshotFile = env.openTruncate(snapshotPath(opts.dir, opts.name) + ".tmp");
    std::string header;
    detail::putLe(header, kSnapshotFormatVersion, 4);
    detail::putLe(header, snapshotGeneration, 8);
    detail::putLe(header, 0, 8);  // version 2: the size is the trailer's
    snapshotFile->append(logFileHeader() + encodeRecord(header));
  }

  // Written as it comes, in records of at most kMaxRecordSize, so a snapshot
  // of any size is never held whole.
  void addToSnapshot(std::string_view slice) {
    for (size_t off = 0; off < slice.size(); off += kMaxRecordSize)
      snapshotFile->append(encodeRecord(slice.substr(off, kMaxRecordSize)));
    snapshotBytes += slice.size();
    snapshotQueued.fetch_sub(slice.size(), std::memory_order_relaxed);
  }

  void endSnapshot(Item& item) {
    // The slices may show records of the new log that are not durable yet
    // (everysec, no): they must be before the snapshot is, or a crash could
    // keep a later write the snapshot shows and lose an earlier one it does
    // not — a state that never existed.
    if (unsynced) syncLog();
    const std::string snapPath = snapshotPath(opts.dir, opts.name);
    std::string trailer;
    detail::putLe(trailer, snapshotBytes, 8);
    snapshotFile->append(encodeRecord(trailer));
    snapshotFile->sync();
    snapshotFile->close();
    snapshotFile.reset();
    env.rename(snapPath + ".tmp", snapPath);
    env.syncDir(opts.dir);

    // Not followed by a directory fsync: a removal that is lost in a crash
    // leaves a covered log behind, which recovery removes again.
    for (uint64_t gen : listLogs(env, opts.dir, opts.name)) {
      if (gen < snapshotGeneration) env.remove(logPath(opts.dir, opts.name, gen));
    }
    rewrites.fetch_add(1, std::memory_order_relaxed);
    if (item.done) post(std::move(item.done));
  }

  // Stops for good. Callbacks that will never run are handed to the owner's
  // thread to be destroyed there, since they may hold state of that thread.
  void fail(std::string message, std::vector<Item>& work) {
    std::vector<Done> dropped;
    for (auto& item : work) {
      if (item.done) dropped.push_back(std::move(item.done));
    }
    {
      std::lock_guard lk(mu);
      failed.store(true);
      for (auto& item : queue) {
        if (item.done) dropped.push_back(std::move(item.done));
      }
      queue.clear();
      queuedRecords.store(0, std::memory_order_relaxed);
      queuedBytes.store(0, std::memory_order_relaxed);
      snapshotQueued.store(0, std::memory_order_relaxed);
    }
    log.reset();
    snapshotFile.reset();  // closes without reporting: the error that matters is `message`
    post([onFatal = onFatal, message = std::move(message), dropped = std::move(dropped)]() mutable {
      dropped.clear();
      if (onFatal) onFatal(message);
    });
  }

  void enqueue(Item item) {
    if (closed) throw std::logic_error("journal " + opts.name + " is closed");
    {
      std::lock_guard lk(mu);
      // After a fatal error nothing is durable any more; `item.done` is
      // destroyed here, on the owner's thread, without running.
      if (failed.load()) return;
      if (item.kind == Item::Kind::record) {
        queuedRecords.fetch_add(1, std::memory_order_relaxed);
        queuedBytes.fetch_add(item.payload.size(), std::memory_order_relaxed);
      } else {
        snapshotQueued.fetch_add(item.payload.size(), std::memory_order_relaxed);
      }
      queue.push_back(std::move(item));
    }
    cv.notify_one();
  }
};

Journal::Journal(Env& env, JournalOptions options, const Recovered& recovered, Poster post,
                 std::function<void(std::string)> onFatal) {
  checkName(options.name);
  if (!post) throw std::invalid_argument("journal needs a Poster");
  impl_ = std::make_unique<Impl>(env, std::move(options), std::move(post), std::move(onFatal));
  const std::string first = logPath(impl_->opts.dir, impl_->opts.name, recovered.nextGeneration);
  // Opening it would truncate records recover() has not seen.
  if (env.exists(first)) {
    throw StorageError("log " + first +
                       " already exists: construct the journal from the result of " +
                       "Journal::recover on this directory");
  }
  impl_->openLog(recovered.nextGeneration);
  impl_->thread = std::thread([impl = impl_.get()] { impl->run(); });
}

Journal::~Journal() { close(); }

void Journal::append(std::string payload, Durability durability, Done done) {
  if (payload.size() > kMaxRecordSize) {
    throw std::length_error("journal record of " + std::to_string(payload.size()) +
                            " bytes exceeds the maximum of " + std::to_string(kMaxRecordSize));
  }
  const uint64_t size = kRecordHeaderSize + payload.size();
  impl_->enqueue(Item{Item::Kind::record, std::move(payload), durability, std::move(done)});
  impl_->logBytes.fetch_add(size, std::memory_order_relaxed);
}

void Journal::rewrite(std::string snapshotPayload, Done done) {
  beginSnapshot();
  addToSnapshot(std::move(snapshotPayload));
  endSnapshot(std::move(done));
}

void Journal::beginSnapshot() {
  if (impl_->snapshotOpen)
    throw std::logic_error("journal " + impl_->opts.name + ": a snapshot is already being written");
  impl_->enqueue(Item{Item::Kind::snapshotBegin, {}, Durability::forceSync, nullptr});
  impl_->snapshotOpen = true;
  impl_->logBytes.store(kLogHeaderSize, std::memory_order_relaxed);
}

void Journal::addToSnapshot(std::string slice) {
  if (!impl_->snapshotOpen)
    throw std::logic_error("journal " + impl_->opts.name + ": no snapshot begun");
  impl_->enqueue(Item{Item::Kind::snapshotSlice, std::move(slice), Durability::forceSync, nullptr});
}

void Journal::endSnapshot(Done done) {
  if (!impl_->snapshotOpen)
    throw std::logic_error("journal " + impl_->opts.name + ": no snapshot begun");
  impl_->snapshotOpen = false;
  impl_->enqueue(Item{Item::Kind::snapshotEnd, {}, Durability::forceSync, std::move(done)});
}

uint64_t Journal::logBytes() const { return impl_->logBytes.load(std::memory_order_relaxed); }

bool Journal::failed() const { return impl_->failed.load(); }

void Journal::close() {
  if (!impl_ || impl_->closed) return;
  impl_->closed = true;
  {
    std::lock_guard lk(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_one();
  if (impl_->thread.joinable()) impl_->thread.join();
}

FsyncPolicy Journal::policy() const { return impl_->opts.policy; }

std::vector<Journal::Counter> Journal::counters() const {
  auto j = stats();
  return {
      {"journal.appends", "Records written to the log", false, j.appends},
      {"journal.syncs", "Fsyncs of appended records", false, j.syncs},
      {"journal.batches", "Writes to the log, one per group of queued records", false, j.batches},
      {"journal.max_batch", "Most records written in one batch", true, j.maxBatch},
      {"journal.rewrites", "Snapshots completed", false, j.rewrites},
      {"journal.queued_records", "Records waiting for the journal's thread", true, j.queuedRecords},
      {"journal.queued_bytes", "Bytes waiting for the journal's thread", true, j.queuedBytes},
      {"journal.log_bytes", "Bytes in the current log generation", true, logBytes()},
      {"journal.snapshot_queued_bytes", "Snapshot bytes waiting to be written", true,
       j.snapshotQueuedBytes}};
}

JournalStats Journal::stats() const {
  const Impl& i = *impl_;
  JournalStats s;
  s.appends = i.appends.load(std::memory_order_relaxed);
  s.syncs = i.syncs.load(std::memory_order_relaxed);
  s.bytes = i.bytes.load(std::memory_order_relaxed);
  s.batches = i.batches.load(std::memory_order_relaxed);
  s.maxBatch = i.maxBatch.load(std::memory_order_relaxed);
  s.rewrites = i.rewrites.load(std::memory_order_relaxed);
  s.queuedRecords = i.queuedRecords.load(std::memory_order_relaxed);
  s.queuedBytes = i.queuedBytes.load(std::memory_order_relaxed);
  s.snapshotQueuedBytes = i.snapshotQueued.load(std::memory_order_relaxed);
  return s;
}

}  // namespace zmesh::storage
