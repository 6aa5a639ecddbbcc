#include "cache_log.h"

#include <capnp/message.h>

#include "zmesh/idl/cache.capnp.h"
#include "zmesh/rpc/frame.h"
#include "zmesh/storage/env.h"

namespace zmesh::cache {
namespace {

capnp::Data::Reader data(std::string_view s) {
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
  set.setKey(data(key));
  set.setValue(data(value));
  set.setExpiresAtMs(expiresAt);
  return rpc::toRecord(message);
}

std::string delRecord(std::string_view key) {
  capnp::MallocMessageBuilder message(firstSegmentWords(key.size()));
  message.initRoot<idl::CacheLogRecord>().setDel(data(key));
  return rpc::toRecord(message);
}

void LogRecorder::onSet(std::string_view key, std::string_view value, Millis expiresAt) {
  append_(setRecord(key, value, expiresAt));
}

void LogRecorder::onRemoved(std::string_view key, Removal why) {
  if (why == Removal::deleted || why == Removal::evicted) append_(delRecord(key));
}

void LogRecorder::onExpireSet(std::string_view key, std::string_view value, Millis expiresAt) {
  append_(setRecord(key, value, expiresAt));
}

void appendSnapshotEntry(std::string& slice, std::string_view key, std::string_view value,
                         Millis expiresAt) {
  std::string record = setRecord(key, value, expiresAt);
  const auto n = static_cast<uint32_t>(record.size());
  for (int i = 0; i < 4; ++i) slice.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  slice += record;
}

void replayRecord(CacheStore& store, const std::string& bytes, Millis now) {
  readRecord(bytes, "log record", [&](idl::CacheLogRecord::Reader r) {
    switch (r.which()) {
      case idl::CacheLogRecord::SET: {
        auto s = r.getSet();
        applySet(store, view(s.getKey()), view(s.getValue()), s.getExpiresAtMs(), now);
        return;
      }
      case idl::CacheLogRecord::DEL:
        store.del(view(r.getDel()), now);
        return;
    }
    throw storage::StorageError("cache journal: log record: a kind this version does not know (" +
                                std::to_string(static_cast<int>(r.which())) + ")");
  });
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
