// The rate limiter's section of the mesh file: its rules and its bounds.
//
//   [ratelimit.rules.burst]
//   algorithm = "token_bucket"
//   rate = "1/s"              # or: limit = 1, window = "1s"
//   burst = 5
//   descriptors = ["key"]
//   overrides = [{ descriptors = { key = "vip" }, limit = 10 }]
//
// Every error names the file, the line and the key; a file that fails leaves
// the rules in force untouched (reload).
#pragma once

#include <string>
#include <vector>

#include "limiter.h"
#include "zmesh/rpc/config.h"

namespace zmesh::ratelimit {

struct RateLimitSettings {
  LimiterOptions limiter;
  Nanos sweepInterval = 100 * kNanosPerMs;    // the clock hand's tick
  size_t sweepBudget = 10'000;                // keys it looks at per tick
  Nanos deniedInterval = 1000 * kNanosPerMs;  // ratelimit.denied: one event per key per this
  size_t deniedMaxKeys = 100'000;             // keys with a pending denied event
  Nanos leaseMax = 1000 * kNanosPerMs;        // the longest lease a local stage may hold
  size_t maxBatch = 1000;                     // checks in one checkBatch
};

// The keys of [ratelimit] besides the host's and the rules.
RateLimitSettings parseSettings(const rpc::ConfigSection& ratelimit);
// [ratelimit.rules.<name>] tables, each validated; throws rpc::ConfigError.
std::vector<Rule> parseRules(const rpc::ConfigSection& ratelimit);
// Both, from the mesh file at `path` (reload).
std::vector<Rule> loadRules(const std::string& path);

// "10/s", "1/1s", "100/1m", "5/250ms": limit and window; nullopt when malformed
// or the window is over kMaxWindow.
std::optional<std::pair<uint64_t, Nanos>> parseRate(std::string_view text);

}  // namespace zmesh::ratelimit
