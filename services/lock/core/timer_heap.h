// An indexed binary min-heap of timers: each id has at most one deadline, and
// the heap knows where every id sits, so moving or erasing a timer is
// O(log n) rather than a scan. Equal deadlines pop in id order, so the order
// in which due timers fire depends only on what was set, never on history.
//
// Id must be hashable (std::hash) and ordered (operator<). Not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

namespace zmesh::lock {

using Millis = int64_t;  // monotonic milliseconds, as the adapter's clock reads them

template <class Id>
class TimerHeap {
 public:
  // Inserts `id`, or moves it to `deadline` if it is already there.
  void set(const Id& id, Millis deadline) {
    if (auto it = index_.find(id); it != index_.end()) {
      size_t at = it->second;
      nodes_[at].deadline = deadline;
      fix(at);
      return;
    }
    nodes_.push_back(Node{deadline, id});
    index_.emplace(id, nodes_.size() - 1);
    siftUp(nodes_.size() - 1);
  }

  // False when `id` has no timer.
  bool erase(const Id& id) {
    auto it = index_.find(id);
    if (it == index_.end()) return false;
    size_t at = it->second;
    index_.erase(it);
    removeAt(at);
    return true;
  }

  // The earliest (deadline, id), or nullopt when empty.
  std::optional<std::pair<Millis, Id>> top() const {
    if (nodes_.empty()) return std::nullopt;
    return std::pair<Millis, Id>{nodes_.front().deadline, nodes_.front().id};
  }
  // Removes the earliest; nothing when empty.
  void pop() {
    if (nodes_.empty()) return;
    index_.erase(nodes_.front().id);
    removeAt(0);
  }

  bool contains(const Id& id) const { return index_.count(id) != 0; }
  std::optional<Millis> deadline(const Id& id) const {
    auto it = index_.find(id);
    if (it == index_.end()) return std::nullopt;
    return nodes_[it->second].deadline;
  }
  size_t size() const { return nodes_.size(); }
  bool empty() const { return nodes_.empty(); }

 private:
  struct Node {
    Millis deadline;
    Id id;
  };

  bool before(size_t a, size_t b) const {
    const Node& x = nodes_[a];
    const Node& y = nodes_[b];
    if (x.deadline != y.deadline) return x.deadline < y.deadline;
    return x.id < y.id;
  }

  // Swaps two slots and keeps the index pointing at them.
  void swapAt(size_t a, size_t b) {
    std::swap(nodes_[a], nodes_[b]);
    index_[nodes_[a].id] = a;
    index_[nodes_[b].id] = b;
  }

  size_t siftUp(size_t at) {
    while (at > 0) {
      size_t parent = (at - 1) / 2;
      if (!before(at, parent)) break;
      swapAt(at, parent);
      at = parent;
    }
    return at;
  }

  void siftDown(size_t at) {
    for (;;) {
      size_t least = at;
      size_t left = 2 * at + 1;
      size_t right = left + 1;
      if (left < nodes_.size() && before(left, least)) least = left;
      if (right < nodes_.size() && before(right, least)) least = right;
      if (least == at) return;
      swapAt(at, least);
      at = least;
    }
  }

  // A node whose key changed either rises or sinks, never both.
  void fix(size_t at) {
    if (siftUp(at) == at) siftDown(at);
  }

  // The index entry of the node at `at` is already gone: the last node fills
  // the hole and is moved into place.
  void removeAt(size_t at) {
    size_t last = nodes_.size() - 1;
    if (at != last) {
      nodes_[at] = std::move(nodes_[last]);
      index_[nodes_[at].id] = at;
    }
    nodes_.pop_back();
    if (at < nodes_.size()) fix(at);
  }

  std::vector<Node> nodes_;
  std::unordered_map<Id, size_t> index_;
};

}  // namespace zmesh::lock
