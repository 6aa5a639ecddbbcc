// A result many askers share: reused while younger than maxAge, fetched once
// for all who ask meanwhile. /metrics and /readyz answer from one, so a flood
// of them costs one round of calls to the services per maxAge, not one each.
// Thread-safe; the waiters run on the thread that calls put().
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace zmesh::gateway {

template <class T>
class SharedResult {
 public:
  using Clock = std::chrono::steady_clock;
  using Value = std::shared_ptr<const T>;
  using Waiter = std::function<void(const Value&)>;

  // fetchTimeout: a fetch not put() by then is taken as lost, and the next
  // asker starts another (its waiters are still answered by either).
  SharedResult(std::chrono::milliseconds maxAge, std::chrono::milliseconds fetchTimeout,
               std::function<Clock::time_point()> now = Clock::now)
      : maxAge_(maxAge), fetchTimeout_(fetchTimeout), now_(std::move(now)) {}

  enum class Outcome {
    kFresh,   // `value` is the result: answer with it (waiter not kept)
    kJoined,  // a fetch is running: the waiter runs when it is put()
    kFetch,   // the caller fetches, then calls put(); the waiter runs then
  };
  struct Get {
    Outcome outcome;
    Value value;  // set for kFresh
  };
  Get get(Waiter waiter) {
    std::lock_guard lock(mutex_);
    const auto now = now_();
    // The age counts from when its fetch began: what it says is at most that old.
    if (value_ && now - stamp_ < maxAge_) return {Outcome::kFresh, value_};
    waiters_.push_back(std::move(waiter));
    if (fetching_ && now - fetchStarted_ < fetchTimeout_) return {Outcome::kJoined, nullptr};
    fetching_ = true;
    fetchStarted_ = now;
    return {Outcome::kFetch, nullptr};
  }

  void put(T result) {
    auto value = std::make_shared<const T>(std::move(result));
    std::vector<Waiter> waiters;
    {
      std::lock_guard lock(mutex_);
      value_ = value;
      stamp_ = fetchStarted_;
      fetching_ = false;
      waiters.swap(waiters_);
    }
    for (auto& waiter : waiters) waiter(value);
  }

  // Drops the waiters without answering them (at stop).
  void clear() {
    std::vector<Waiter> waiters;
    std::lock_guard lock(mutex_);
    waiters.swap(waiters_);
  }

 private:
  std::chrono::milliseconds maxAge_;
  std::chrono::milliseconds fetchTimeout_;
  std::function<Clock::time_point()> now_;
  std::mutex mutex_;
  Value value_;
  Clock::time_point stamp_{};
  bool fetching_ = false;
  Clock::time_point fetchStarted_{};
  std::vector<Waiter> waiters_;
};

}  // namespace zmesh::gateway
