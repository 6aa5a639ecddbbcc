#include "zmesh/storage/fence.h"

namespace zmesh::storage {

void Fence::append(std::string payload, Durability durability, Journal::Done done) {
  if (closed_) return;
  if (!journal_) {
    if (done) done();
    return;
  }
  // Counted once the journal took it: a record it refuses (too large) must
  // not leave the count waiting for a completion that never comes.
  journal_->append(std::move(payload), durability, [this, done = std::move(done)] {
    completed();
    if (done) done();
  });
  ++appended_;
}

void Fence::completed() {
  ++durable_;
  // What waited for the records before this one goes first, in order.
  while (!after_.empty() && after_.front().first <= durable_) {
    auto fn = std::move(after_.front().second);
    after_.pop_front();
    fn();
  }
}

void Fence::whenDurable(Journal::Done fn) {
  if (closed_) return;
  if (allDurable()) {
    fn();
    return;
  }
  ++waits_;
  after_.emplace_back(appended_, std::move(fn));
}

}  // namespace zmesh::storage
