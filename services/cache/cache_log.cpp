#include "cache_log.h"

#include <capnp/message.h>

#include "zmesh/idl/cache.capnp.h"
#include "zmesh/rpc/frame.h"
#include "zmesh/storage/env.h"

namespace zmesh::cache {
namespace {

capnp::Data::Reader bytesOf(std::string_view s) {
  return {reinterpret_cast<const kj::byte*>(s.data()), s.size()};
}

std::string_view view(capnp::Data::Reader d) {
  return {reinterpret_cast<const char*>(d.begin()), d.size()};
}

// Words enough for the record in one segment: no second allocation.
capnp::uint firstSegmentWords(size_t bytes) { return static_cast<capnp::uint>(bytes / 8 + 16); }

template <typename Fn>
void readRecord(const std::string& bytes, const char* what, Fn fn) {
  try {
    rpc::readRecord<idl::CacheLogRecord>(bytes, what, fn);
  } catch (const rpc::FrameError& e) {
    throw storage::StorageError(std::string("cache journal: ") + e.what());
  }
}

void applySet(CacheStore& store, std::string_view key, std::string_view value, Millis expiresAt,
              Millis now) {
  if (key.empty()) throw storage::StorageError("cache journal: a set of an empty key");
  if (expiresAt != 0 && expiresAt <= now) {
    store.del(key, now);  // what the record replaced is gone too
    return;
  }
  store.restore(key, value, expiresAt, now);
}

}  // namespace

std::string setRecord(std::string_view key, std::string_view value, Millis expiresAt) {
  capnp::MallocMessageBuilder message(firstSegmentWords(key.size() + value.size()));
  auto set = message.initRoot<idl::CacheLogRecord>().initSet();
  set.setKey(bytesOf(key));
  set.setValue(bytesOf(value));
  set.setExpiresAtMs(expiresAt);
  return rpc::toRecord(message);
}

std::string delRecord(std::string_view key) {
  capnp::MallocMessageBuilder message(firstSegmentWords(key.size()));
  message.initRoot<idl::CacheLogRecord>().setDel(bytesOf(key));
  return rpc::toRecord(message);
}

void LogRecorder::onSet(std::string_view key, std::string_view value, Millis expiresAt) {
  if (!batching_) return append_(setRecord(key, value, expiresAt));
  record({false, std::string(key), std::string(value), expiresAt});
}

void LogRecorder::onRemoved(std::string_view key, Removal why) {
  if (why != Removal::deleted && why != Removal::evicted) return;
  if (!batching_) return append_(delRecord(key));
  record({true, std::string(key), {}, 0});
}

void LogRecorder::onExpireSet(std::string_view key, std::string_view value, Millis expiresAt) {
  onSet(key, value, expiresAt);
}

void LogRecorder::record(Change change) { batch_.push_back(std::move(change)); }

void LogRecorder::beginBatch() {
  batching_ = true;
  batch_.clear();
}

void LogRecorder::endBatch() {
  batching_ = false;
  if (batch_.empty()) return;
  size_t bytes = 0;
  for (auto& c : batch_) bytes += c.key.size() + c.value.size() + 32;
  capnp::MallocMessageBuilder message(firstSegmentWords(bytes));
  auto records =
      message.initRoot<idl::CacheLogRecord>().initBatch(static_cast<capnp::uint>(batch_.size()));
  for (size_t i = 0; i < batch_.size(); ++i) {
    auto r = records[static_cast<capnp::uint>(i)];
    const Change& c = batch_[i];
    if (c.del) {
      r.setDel(bytesOf(c.key));
      continue;
    }
    auto set = r.initSet();
    set.setKey(bytesOf(c.key));
    set.setValue(bytesOf(c.value));
    set.setExpiresAtMs(c.expiresAt);
  }
  batch_.clear();
  append_(rpc::toRecord(message));
}

void appendSnapshotEntry(std::string& slice, std::string_view key, std::string_view value,
                         Millis expiresAt) {
  std::string record = setRecord(key, value, expiresAt);
  const auto n = static_cast<uint32_t>(record.size());
  for (int i = 0; i < 4; ++i) slice.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  slice += record;
}

namespace {

// A set or a del; `inBatch`: a batch may not hold another.
void apply(CacheStore& store, idl::CacheLogRecord::Reader r, Millis now, bool inBatch) {
  switch (r.which()) {
    case idl::CacheLogRecord::SET: {
      auto s = r.getSet();
      applySet(store, view(s.getKey()), view(s.getValue()), s.getExpiresAtMs(), now);
      return;
    }
    case idl::CacheLogRecord::DEL:
      store.del(view(r.getDel()), now);
      return;
    case idl::CacheLogRecord::BATCH:
      if (inBatch) throw storage::StorageError("cache journal: log record: a batch inside a batch");
      for (auto inner : r.getBatch()) apply(store, inner, now, true);
      return;
  }
  throw storage::StorageError("cache journal: log record: a kind this version does not know (" +
                              std::to_string(static_cast<int>(r.which())) + ")");
}

}  // namespace

void replayRecord(CacheStore& store, const std::string& bytes, Millis now) {
  readRecord(bytes, "log record",
             [&](idl::CacheLogRecord::Reader r) { apply(store, r, now, false); });
}

void replaySnapshot(CacheStore& store, const std::string& payload, Millis now) {
  size_t at = 0, entry = 0;
  std::string record;
  while (at < payload.size()) {
    if (payload.size() - at < 4)
      throw storage::StorageError("cache journal: snapshot: entry " + std::to_string(entry) +
                                  " is cut inside its length");
    uint32_t n = 0;
    for (int i = 0; i < 4; ++i)
      n |= static_cast<uint32_t>(static_cast<unsigned char>(payload[at + i])) << (8 * i);
    at += 4;
    if (n > payload.size() - at)
      throw storage::StorageError("cache journal: snapshot: entry " + std::to_string(entry) +
                                  " claims " + std::to_string(n) + " bytes, " +
                                  std::to_string(payload.size() - at) + " remain");
    record.assign(payload, at, n);
    at += n;
    readRecord(record, "snapshot entry", [&](idl::CacheLogRecord::Reader r) {
      if (!r.isSet())
        throw storage::StorageError("cache journal: snapshot: entry " + std::to_string(entry) +
                                    " is not a set");
      auto s = r.getSet();
      applySet(store, view(s.getKey()), view(s.getValue()), s.getExpiresAtMs(), now);
    });
    ++entry;
  }
}

}  // namespace zmesh::cache
