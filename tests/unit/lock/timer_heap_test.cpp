// The indexed timer heap: order by (deadline, id), moves and erases anywhere
// in the heap, and a long random run against std::set as the model.
#include "timer_heap.h"

#include <catch2/catch.hpp>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace zmesh::lock {
namespace {

template <class Id>
std::vector<std::pair<Millis, Id>> drain(TimerHeap<Id>& h) {
  std::vector<std::pair<Millis, Id>> out;
  while (auto t = h.top()) {
    out.push_back(*t);
    h.pop();
  }
  return out;
}

using Order = std::vector<std::pair<Millis, uint64_t>>;

}  // namespace

TEST_CASE("an empty heap has no top and pop does nothing", "[timer_heap]") {
  TimerHeap<uint64_t> h;
  CHECK(h.empty());
  CHECK(h.size() == 0);
  CHECK_FALSE(h.top());
  h.pop();
  CHECK_FALSE(h.erase(1));
  CHECK_FALSE(h.contains(1));
  CHECK_FALSE(h.deadline(1));
}

TEST_CASE("timers pop in deadline order", "[timer_heap]") {
  TimerHeap<uint64_t> h;
  h.set(1, 50);
  h.set(2, 10);
  h.set(3, 40);
  h.set(4, 20);
  h.set(5, 30);
  CHECK(h.size() == 5);
  CHECK(h.top() == std::pair<Millis, uint64_t>{10, 2});
  CHECK(drain(h) == Order{{10, 2}, {20, 4}, {30, 5}, {40, 3}, {50, 1}});
  CHECK(h.empty());
}

TEST_CASE("equal deadlines pop in id order whatever the insertion order", "[timer_heap]") {
  TimerHeap<uint64_t> h;
  for (uint64_t id : {7, 3, 9, 1, 5}) h.set(id, 100);
  h.set(8, 50);
  CHECK(drain(h) == Order{{50, 8}, {100, 1}, {100, 3}, {100, 5}, {100, 7}, {100, 9}});
}

TEST_CASE("string ids break ties by name", "[timer_heap]") {
  TimerHeap<std::string> h;
  h.set("b", 5);
  h.set("a", 5);
  h.set("c", 1);
  auto order = drain(h);
  REQUIRE(order.size() == 3);
  CHECK(order[0].second == "c");
  CHECK(order[1].second == "a");
  CHECK(order[2].second == "b");
}

TEST_CASE("set on a present id moves it earlier or later", "[timer_heap]") {
  TimerHeap<uint64_t> h;
  for (uint64_t id = 1; id <= 6; ++id) h.set(id, static_cast<Millis>(id * 10));
  h.set(6, 5);   // to the front
  h.set(1, 45);  // from the front to the middle
  h.set(3, 30);  // unchanged
  CHECK(h.size() == 6);
  CHECK(h.deadline(1) == 45);
  CHECK(drain(h) == Order{{5, 6}, {20, 2}, {30, 3}, {40, 4}, {45, 1}, {50, 5}});
}

TEST_CASE("erase removes the top or a middle node or the last node", "[timer_heap]") {
  TimerHeap<uint64_t> h;
  for (uint64_t id = 1; id <= 9; ++id) h.set(id, static_cast<Millis>(id));
  CHECK(h.erase(1));  // top
  CHECK(h.erase(5));  // middle
  CHECK(h.erase(9));  // wherever it sits
  CHECK_FALSE(h.erase(5));
  CHECK_FALSE(h.contains(5));
  CHECK(h.contains(6));
  CHECK(h.size() == 6);
  CHECK(drain(h) == Order{{2, 2}, {3, 3}, {4, 4}, {6, 6}, {7, 7}, {8, 8}});
}

TEST_CASE("erase of a node whose replacement must rise keeps the heap ordered", "[timer_heap]") {
  // Deep right subtree with large deadlines, left subtree small: erasing in
  // the right subtree pulls the last (small) node up past its new parent.
  TimerHeap<uint64_t> h;
  const Millis deadlines[] = {1, 100, 2, 101, 102, 3, 4, 103, 104, 105, 106, 5};
  for (uint64_t i = 0; i < std::size(deadlines); ++i) h.set(i, deadlines[i]);
  CHECK(h.erase(4));  // deadline 102, replaced by the last node (deadline 5)
  Millis last = -1;
  size_t n = 0;
  while (auto t = h.top()) {
    CHECK(t->first >= last);
    last = t->first;
    h.pop();
    ++n;
  }
  CHECK(n == std::size(deadlines) - 1);
}

TEST_CASE("random sets and moves and erases and pops agree with an ordered set", "[timer_heap]") {
  std::mt19937_64 rng(20240607);
  TimerHeap<uint64_t> h;
  std::set<std::pair<Millis, uint64_t>> model;
  std::vector<Millis> at(64, -1);  // id -> deadline in the model, -1 absent
  auto pick = [&](uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng); };
  for (int step = 0; step < 50'000; ++step) {
    uint64_t id = pick(at.size());
    switch (pick(4)) {
      case 0:
      case 1: {
        auto d = static_cast<Millis>(pick(200));  // few values: many ties
        if (at[id] >= 0) model.erase({at[id], id});
        at[id] = d;
        model.insert({d, id});
        h.set(id, d);
        break;
      }
      case 2: {
        bool present = at[id] >= 0;
        if (present) model.erase({at[id], id});
        at[id] = -1;
        REQUIRE(h.erase(id) == present);
        break;
      }
      case 3:
        if (!model.empty()) {
          auto first = *model.begin();
          model.erase(model.begin());
          at[first.second] = -1;
        }
        h.pop();
        break;
    }
    REQUIRE(h.size() == model.size());
    if (model.empty()) {
      REQUIRE_FALSE(h.top());
    } else {
      REQUIRE(h.top() == *model.begin());
    }
    REQUIRE(h.contains(id) == (at[id] >= 0));
  }
  std::vector<std::pair<Millis, uint64_t>> rest(model.begin(), model.end());
  CHECK(drain(h) == rest);
}

}  // namespace zmesh::lock
