// Vocabulary shared by the ID generator's pure core: result types and request limits.
//
// Expected failures are values, not exceptions: the service adapter turns a Failure into
// an RPC status (DESIGN.md §5) in one place. Pending means "the answer comes later": the
// ticket is kept and completed by a later call (reserved(), poll()).
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace zmesh::idgen {

enum class Fail {
  invalidArgument,     // INVALID_ARGUMENT: the request itself is wrong.
  failedPrecondition,  // FAILED_PRECONDITION: state forbids it (sequence or epoch exhausted).
  unavailable,         // UNAVAILABLE: try again later (clock behind, storage failing).
};

struct Failure {
  Fail code;
  std::string message;
  int64_t retryAfterMs = 0;  // Only meaningful for Fail::unavailable; 0 = no hint.
};

// The request was accepted and will be answered by a later call of the same object.
struct Pending {};

// Stable lower-case name, for logs and stats.
constexpr std::string_view toString(Fail code) {
  switch (code) {
    case Fail::invalidArgument:
      return "invalid_argument";
    case Fail::failedPrecondition:
      return "failed_precondition";
    case Fail::unavailable:
      return "unavailable";
  }
  return "unknown";
}

// Most ids one call may ask for (API.md: 1 <= count <= 10000), for sequences and Snowflake.
inline constexpr uint32_t kMaxIdsPerCall = 10000;

// nullopt when 1 <= count <= kMaxIdsPerCall, else an invalidArgument naming the value.
std::optional<Failure> validateCount(uint32_t count);

// A waiter by ticket in a queue kept in ticket order (tickets are handed out
// increasing and waiters appended): a binary search, with a scan for a queue
// filled in any other order. The ticket must be there.
template <typename Queue>
auto findWaiter(Queue& queue, uint64_t ticket) {
  auto pos = std::lower_bound(queue.begin(), queue.end(), ticket,
                              [](const auto& w, uint64_t t) { return w.ticket < t; });
  if (pos != queue.end() && pos->ticket == ticket) return pos;
  return std::find_if(queue.begin(), queue.end(),
                      [ticket](const auto& w) { return w.ticket == ticket; });
}

}  // namespace zmesh::idgen
