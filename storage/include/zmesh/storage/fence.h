// Keeps what a service shows behind what it journaled (DESIGN.md §4: under
// `always`, no reply, event or read shows a change before its record is
// durable). Counts the records appended and those the journal reports done,
// and runs a callback once every record appended before it is done.
// Completions run in append order, so one counter suffices.
//
// Owner (event-loop) thread only, like the journal it wraps.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <utility>

#include "zmesh/storage/journal.h"

namespace zmesh::storage {

class Fence {
 public:
  // `journal` may be null (nothing persisted): then everything is durable at once.
  explicit Fence(Journal* journal = nullptr) : journal_(journal) {}
  Fence(const Fence&) = delete;
  Fence& operator=(const Fence&) = delete;

  void attach(Journal* journal) { journal_ = journal; }

  // Appends a record; `done` (may be empty) runs once it is durable, after
  // everything that waited for the records before it.
  void append(std::string payload, Durability durability, Journal::Done done = {});

  // Runs `fn` once every record appended so far is durable: now, if all are.
  void whenDurable(Journal::Done fn);
  bool allDurable() const { return durable_ >= appended_; }

  // Stops: nothing more is appended or run (the process is stopping, and
  // what was not durable is not answered).
  void close() { closed_ = true; }
  bool closed() const { return closed_; }

  uint64_t lag() const { return appended_ - durable_; }  // records not yet durable
  uint64_t waits() const { return waits_; }              // whenDurable calls that had to wait
  size_t waiting() const { return after_.size(); }

 private:
  void completed();

  Journal* journal_;
  uint64_t appended_ = 0, durable_ = 0, waits_ = 0;
  bool closed_ = false;
  std::deque<std::pair<uint64_t, Journal::Done>> after_;
};

}  // namespace zmesh::storage
