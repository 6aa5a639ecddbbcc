// cache_hit_ratio: hit ratio of each eviction policy of zmesh-cache's core
// (zmesh::cache::CacheStore, called directly: no sockets, no service) on
// Zipf-distributed traces, beside an exact LRU written here (std::list +
// std::unordered_map, bounded by a count of entries) that shares no code with
// the core. The core's lru must give the reference's hits exactly, and hold
// the same keys at the end: that checks the core as well as the table.
//
//   cache_hit_ratio [--requests 1000000] [--keys 100000] [--zipf 0.8,1.0]
//                   [--sizes 1,10] [--seed 1]
//
// Each request is what a cache-aside client does: a get, and on a miss (the
// get returns nothing) a set of the key. Keys are 16 bytes
// ("key:" + 12 digits), values 32 bytes, no TTL, so every entry has the same
// charge. The core's limit is memory, not a count: for each policy and size
// N the limit is the memoryUsed() of a store of that policy holding N such
// entries (filled with a limit it never reaches, its index resize finished),
// so that store holds N entries. lfu's frequency nodes are index bytes that
// come and go with the counts, so under the same limit lfu holds a few
// entries fewer at times; the entries each policy held are printed too.
//
// Trace: rank r (1..keys) is drawn with probability ∝ 1/r^s by inverse CDF
// from std::mt19937_64 (seed --seed + the trace's index; its raw 64-bit
// output, so the trace is the same with any standard library), and rank r is
// key perm[r] of a fixed shuffle of the key space.
//
// Prints markdown tables for bench/RESULTS.md; each run's details to stderr.
// Exits 1 when the core's lru and the reference differ.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <list>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cache_store.h"

using namespace zmesh::cache;

namespace {

constexpr Millis kNow = 1'000'000;  // no TTLs: any time will do
const std::string kValue(32, 'v');

std::vector<uint32_t> zipfTrace(size_t keys, double s, size_t requests, uint64_t seed) {
  std::vector<double> cdf(keys);
  double sum = 0;
  for (size_t r = 0; r < keys; ++r) cdf[r] = sum += 1.0 / std::pow(static_cast<double>(r + 1), s);
  for (auto& c : cdf) c /= sum;
  std::mt19937_64 rng(seed);
  // A fixed shuffle: popularity has nothing to do with the key's name (or hash).
  std::vector<uint32_t> perm(keys);
  for (size_t i = 0; i < keys; ++i) perm[i] = static_cast<uint32_t>(i);
  for (size_t i = keys - 1; i > 0; --i) std::swap(perm[i], perm[rng() % (i + 1)]);
  std::vector<uint32_t> trace(requests);
  for (auto& t : trace) {
    double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
    size_t rank = static_cast<size_t>(std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin());
    t = perm[std::min(rank, keys - 1)];
  }
  return trace;
}

// Exact LRU over `capacity` entries: the reference.
class ReferenceLru {
 public:
  explicit ReferenceLru(size_t capacity) : capacity_(capacity) { where_.reserve(capacity * 2); }
  bool access(uint32_t key) {  // true: hit
    auto it = where_.find(key);
    if (it != where_.end()) {
      order_.splice(order_.begin(), order_, it->second);
      return true;
    }
    order_.push_front(key);
    where_.emplace(key, order_.begin());
    if (order_.size() > capacity_) {
      where_.erase(order_.back());
      order_.pop_back();
    }
    return false;
  }
  const std::list<uint32_t>& keys() const { return order_; }

 private:
  size_t capacity_;
  std::list<uint32_t> order_;  // most recently used first
  std::unordered_map<uint32_t, std::list<uint32_t>::iterator> where_;
};

// memoryUsed() of a store of this policy holding `entries` entries of the
// bench's shape, its index resize finished.
uint64_t memoryFor(Policy policy, const std::vector<std::string>& names, size_t entries) {
  CacheOptions o;
  o.policy = policy;
  o.maxMemory = uint64_t{1} << 40;
  CacheStore store(o);
  for (size_t i = 0; i < entries; ++i)
    if (!std::holds_alternative<bool>(store.set(names[i], kValue, {}, kNow))) std::exit(2);
  // exists() moves the resize on without counting as a use.
  for (size_t i = 0; i < 4 * entries + 64; ++i) store.exists(names[i % entries], kNow);
  return store.memoryUsed();
}

struct Run {
  uint64_t hits = 0;
  size_t heldMin = SIZE_MAX, heldMax = 0, heldEnd = 0;
  uint64_t evictions = 0, limit = 0;
  double seconds = 0;
};

Run replay(Policy policy, uint64_t limit, const std::vector<std::string>& names,
           const std::vector<uint32_t>& trace, size_t fullAfter, ReferenceLru* check) {
  CacheOptions o;
  o.policy = policy;
  o.maxMemory = limit;
  o.seed = 7;  // the random policy's generator (and the hash seed): fixed
  CacheStore store(o);
  Run run;
  run.limit = limit;
  auto begin = std::chrono::steady_clock::now();
  for (size_t i = 0; i < trace.size(); ++i) {
    const std::string& key = names[trace[i]];
    if (store.get(key, kNow)) {
      ++run.hits;
    } else if (auto r = store.set(key, kValue, {}, kNow); !std::holds_alternative<bool>(r)) {
      std::fprintf(stderr, "set refused: %s\n", std::get<Failure>(r).message.c_str());
      std::exit(2);
    }
    if (i >= fullAfter) {
      run.heldMin = std::min(run.heldMin, store.size());
      run.heldMax = std::max(run.heldMax, store.size());
    }
  }
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  auto st = store.stats();
  run.heldEnd = st.keys;
  run.evictions = st.evictions;
  if (st.hits != run.hits) {
    std::fprintf(stderr, "%s: stats().hits %llu, counted %llu\n", toString(policy).data(),
                 static_cast<unsigned long long>(st.hits),
                 static_cast<unsigned long long>(run.hits));
    std::exit(2);
  }
  if (check != nullptr) {  // the same keys as the reference holds
    bool same = store.size() == check->keys().size();
    for (uint32_t k : check->keys()) same = same && store.exists(names[k], kNow);
    if (!same) run.heldEnd = SIZE_MAX;  // flagged by the caller
  }
  return run;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cache_hit_ratio: hit ratio per eviction policy on Zipf traces"};
  size_t requests = 1'000'000, keys = 100'000;
  std::vector<double> zipf{0.8, 1.0}, sizes{1, 10};
  uint64_t seed = 1;
  app.add_option("--requests", requests, "requests per trace")
      ->check(CLI::Range(size_t{1}, size_t{1'000'000'000}));
  app.add_option("--keys", keys, "key space")->check(CLI::Range(size_t{10}, size_t{100'000'000}));
  app.add_option("--zipf", zipf, "Zipf exponents s")->delimiter(',');
  app.add_option("--sizes", sizes, "cache sizes, % of the key space")->delimiter(',');
  app.add_option("--seed", seed, "trace i is drawn with seed + i");
  CLI11_PARSE(app, argc, argv);

  std::vector<std::string> names(keys);
  for (size_t i = 0; i < keys; ++i) {
    char b[32];
    std::snprintf(b, sizeof b, "key:%012zu", i);
    names[i] = b;
  }
  const Policy policies[] = {Policy::fifo, Policy::lifo, Policy::lru,
                             Policy::mru,  Policy::lfu,  Policy::random};
  struct Row {
    double s, pct;
    size_t entries;
    uint64_t referenceHits;
    std::vector<Run> runs;
    bool lruSame;
  };
  std::vector<Row> rows;
  bool allSame = true;
  for (size_t t = 0; t < zipf.size(); ++t) {
    auto trace = zipfTrace(keys, zipf[t], requests, seed + t);
    for (double pct : sizes) {
      Row row{zipf[t], pct, static_cast<size_t>(std::llround(keys * pct / 100)), 0, {}, true};
      if (row.entries < 1 || row.entries > keys) {
        std::fprintf(stderr, "size %g %% of %zu keys: out of range\n", pct, keys);
        return 2;
      }
      ReferenceLru reference(row.entries);
      // From the request that first fills the reference on, a full cache.
      size_t fullAfter = trace.size();
      for (size_t i = 0; i < trace.size(); ++i) {
        row.referenceHits += reference.access(trace[i]);
        if (fullAfter == trace.size() && reference.keys().size() == row.entries) fullAfter = i;
      }
      for (Policy p : policies) {
        uint64_t limit = memoryFor(p, names, row.entries);
        Run r = replay(p, limit, names, trace, fullAfter, p == Policy::lru ? &reference : nullptr);
        if (p == Policy::lru) {
          row.lruSame = r.hits == row.referenceHits && r.heldEnd != SIZE_MAX;
          allSame = allSame && row.lruSame;
          if (r.heldEnd == SIZE_MAX) r.heldEnd = 0;
        }
        std::fprintf(stderr,
                     "# s=%.2f size=%g%% (%zu entries) %s: limit=%llu hits=%llu held=%zu..%zu "
                     "end=%zu evictions=%llu %.2f s\n",
                     zipf[t], pct, row.entries, toString(p).data(),
                     static_cast<unsigned long long>(limit),
                     static_cast<unsigned long long>(r.hits), r.heldMin, r.heldMax, r.heldEnd,
                     static_cast<unsigned long long>(r.evictions), r.seconds);
        row.runs.push_back(r);
      }
      std::fprintf(stderr, "# s=%.2f size=%g%% reference LRU: hits=%llu, full from request %zu\n",
                   zipf[t], pct, static_cast<unsigned long long>(row.referenceHits), fullAfter);
      rows.push_back(std::move(row));
    }
  }

  auto pctOf = [&](uint64_t hits) { return 100.0 * static_cast<double>(hits) / requests; };
  std::printf(
      "Hit ratio, %% of %zu requests (get; on a miss, set), %zu keys, 16-byte keys and 32-byte "
      "values:\n\n",
      requests, keys);
  std::printf(
      "| Zipf s | cache size | fifo | lifo | lru | mru | lfu | random | exact LRU (reference) | "
      "lru = reference |\n");
  std::printf("|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
  for (auto& row : rows) {
    std::printf("| %.1f | %g %% (%zu entries) |", row.s, row.pct, row.entries);
    for (auto& r : row.runs) std::printf(" %.2f |", pctOf(r.hits));
    std::printf(" %.2f | %s |\n", pctOf(row.referenceHits),
                row.lruSame ? "yes: same hits, same keys held" : "**NO**");
  }
  std::printf(
      "\nEntries held once full (min–max from the request that fills the reference on), and the "
      "memory limit that holds N entries of that policy, bytes:\n\n");
  std::printf("| Zipf s | cache size | fifo | lifo | lru | mru | lfu | random |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  for (auto& row : rows) {
    std::printf("| %.1f | %g %% (%zu entries) |", row.s, row.pct, row.entries);
    for (auto& r : row.runs)
      std::printf(" %zu–%zu (%llu) |", r.heldMin, r.heldMax,
                  static_cast<unsigned long long>(r.limit));
    std::printf("\n");
  }
  return allSame ? 0 : 1;
}
