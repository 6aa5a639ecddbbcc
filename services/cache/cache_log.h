// The cache's log and snapshot: the records its writes append, replayed into
// a store as a restart does, and the snapshot written a slice at a time.
// Kept apart from the adapter so the fuzzer and the durability tests drive
// exactly the code a restart runs.
//
// Every record is a key's whole state (set with its value and expiry — also
// for an incr or an expire — or del), so replaying the log written since a
// snapshot began over a snapshot taken while writes went on gives the state
// the cache had (storage::Journal::beginSnapshot), and a record whose expiry
// has passed by the time it is replayed is simply dropped. Expiry times are
// Unix ms.
//
// Snapshot payload: entries one after another, each a 4-byte little-endian
// length and a CacheLogRecord `set` of that many bytes.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cache_store.h"

namespace zmesh::cache {

std::string setRecord(std::string_view key, std::string_view value, Millis expiresAt);
std::string delRecord(std::string_view key);

// What the store reports, as the log's records: the one place that says which
// changes are logged. An expiry is not (the log keeps expiry times, so a
// replay drops the key as well), nor an overwrite (the set that follows it is).
class LogRecorder final : public Listener {
 public:
  explicit LogRecorder(std::function<void(std::string)> append) : append_(std::move(append)) {}
  void onSet(std::string_view key, std::string_view value, Millis expiresAt) override;
  void onRemoved(std::string_view key, Removal why) override;
  void onExpireSet(std::string_view key, std::string_view value, Millis expiresAt) override;

  // What is recorded between the two is appended as one record (a batch),
  // so a crash keeps all of a call's changes or none of them.
  void beginBatch();
  void endBatch();

 private:
  struct Change {
    bool del = false;
    std::string key, value;
    Millis expiresAt = 0;
  };
  void record(Change change);

  std::function<void(std::string)> append_;
  bool batching_ = false;
  std::vector<Change> batch_;
};

// Appends one entry to a snapshot slice.
void appendSnapshotEntry(std::string& slice, std::string_view key, std::string_view value,
                         Millis expiresAt);

// Apply a record / a whole snapshot payload to `store` at Unix time `now`
// (no listener calls: restore() and the store's own removal). A key whose
// expiry has passed is left out (removed, if the store had it). Bytes that do
// not read as their type throw storage::StorageError naming the fault.
void replayRecord(CacheStore& store, const std::string& bytes, Millis now);
void replaySnapshot(CacheStore& store, const std::string& payload, Millis now);

}  // namespace zmesh::cache
