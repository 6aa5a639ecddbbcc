// The lock service's log and snapshot: what their records hold, replayed into
// the state a restart restores, and the snapshot written from a live table.
// Kept apart from the adapter so the fuzzer and the durability tests drive
// exactly the code a restart runs.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <utility>

#include "lock_table.h"
#include "zmesh/idl/lock.capnp.h"

namespace zmesh::lock {

idl::LockMode toWire(Mode m);
Mode fromWire(idl::LockMode m);
// A duration from the wire as the core's Millis; values beyond any range the
// core accepts stay beyond it (so the core's own check names them) without
// overflowing later arithmetic.
Millis millis(uint64_t ms);

// What the log and snapshot hold, replayed: the leases and sessions to restore
// (lease expiry in Unix ms), the freed names remembered, and the token bound.
struct LockLogState {
  std::unordered_map<uint64_t, Lease> leases;  // by token; expiresAt in Unix ms
  std::unordered_map<uint64_t, Millis> sessions;
  std::deque<std::pair<std::string, uint64_t>> retained;  // oldest first
  struct Delay {
    uint32_t permits = 0;
    int64_t untilMs = 0;  // Unix ms
  };
  std::unordered_map<std::string, Delay> delays;  // lock-delays, by name
  uint64_t tokens = 1;                            // tokens below it may have been issued
};

// A record or snapshot that does not read as its type throws
// storage::StorageError naming it.
void replaySnapshot(LockLogState& state, const std::string& bytes);
void replayRecord(LockLogState& state, const std::string& bytes);

// Restores `state` into a fresh table at monotonic `now` / Unix `wallNow`:
// each lease keeps the time it had left; a lease whose session is gone ended
// with it; tokens resume at the bound. State no table can hold (two exclusive
// holders, a name that is not one) throws storage::StorageError.
void restore(LockTable& table, const LockLogState& state, Millis now, int64_t wallNow);

// A snapshot of `table` (LockSnapshot bytes) with `tokens` as the bound, its
// lease expiries turned into Unix ms.
std::string lockSnapshot(const LockTable& table, uint64_t tokens, Millis now, int64_t wallNow);

}  // namespace zmesh::lock
