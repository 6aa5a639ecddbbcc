// Named counters a process exposes through Admin.stats.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace zmesh::rpc {

struct CounterValue {
  std::string name;
  int64_t value;
};

// Collects counters from every part of a process when Admin.stats is called.
// Only used on the owning loop thread.
class StatsRegistry {
 public:
  using Source = std::function<void(std::vector<CounterValue>&)>;
  void add(Source source) { sources_.push_back(std::move(source)); }
  std::vector<CounterValue> collect() const {
    std::vector<CounterValue> out;
    for (auto& s : sources_) s(out);
    return out;
  }

 private:
  std::vector<Source> sources_;
};

}  // namespace zmesh::rpc
