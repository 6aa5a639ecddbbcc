// What both stores do alike: the per-write limits and the updated_ms clock.
// Internal to zmesh_cache_backing.
#pragma once

#include <chrono>
#include <string>

#include "backing_store.h"

namespace zmesh::cache::detail {

// Checked as each write executes inside the transaction, so a refusal
// mid-batch rolls back the writes before it.
inline void checkWrite(const BackingConfig& config, const Write& write, const std::string& store) {
  if (write.key.size() > config.maxKeyBytes)
    throw StoreError(StoreError::Kind::kRejected,
                     store + ": key of " + std::to_string(write.key.size()) +
                         " bytes is over the limit of " + std::to_string(config.maxKeyBytes));
  if (write.value && write.value->size() > config.maxValueBytes)
    throw StoreError(StoreError::Kind::kRejected,
                     store + ": value of " + std::to_string(write.value->size()) +
                         " bytes is over the limit of " + std::to_string(config.maxValueBytes));
}

// Every store checks it itself: the name is spliced into SQL (quoted).
inline void checkTableName(const BackingConfig& config) {
  if (!isValidTableName(config.table))
    throw StoreError(StoreError::Kind::kBadConfig,
                     "backing store table name '" + config.table +
                         "' is not an identifier ([A-Za-z_][A-Za-z0-9_]{0,62})");
}

inline int64_t nowMs(const BackingConfig& config) {
  if (config.nowMs) return config.nowMs();
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace zmesh::cache::detail
