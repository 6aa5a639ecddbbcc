// The rate limiter's capnp adapter: RateLimit methods on top of the pure core
// (Limiter, DenialCoalescer), run-time overrides made durable through the
// journal, the clock hand and the denied events on the loop's timer.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "coalescer.h"
#include "limiter.h"
#include "rules_config.h"
#include "zmesh/idl/ratelimit.capnp.h"
#include "zmesh/rpc/events.h"
#include "zmesh/rpc/server.h"
#include "zmesh/storage/env.h"
#include "zmesh/storage/journal.h"

namespace zmesh::ratelimit {

struct RateLimitOptions {
  RateLimitSettings settings;
  std::string configPath;  // where reload() reads the rules; empty: reload refused
  std::string dataDir;     // empty: run-time overrides are not persisted
  storage::FsyncPolicy fsync = storage::FsyncPolicy::everysec;
  uint64_t rewriteAfterBytes = 1 << 20;  // fold the log into a snapshot past this
};

// The log of run-time overrides, replayed into `limiter` (before its rules are
// set). A record that does not read as its type throws storage::StorageError
// naming it.
void replaySnapshot(Limiter& limiter, const std::string& bytes);
void replayRecord(Limiter& limiter, const std::string& bytes);

// Monotonic nanoseconds; injected so tests control time.
using MonoClock = std::function<Nanos()>;

class RateLimitService final : public idl::RateLimit::Server {
 public:
  // Locks and recovers the data directory (throws storage::StorageError when it
  // is locked by another process or unreadable). `publisher` may be null.
  RateLimitService(rpc::Server& server, rpc::Publisher* publisher, storage::Env& env,
                   RateLimitOptions options, std::vector<Rule> rules, MonoClock clock);
  ~RateLimitService();

  kj::Promise<void> check(CheckContext context) override;
  kj::Promise<void> checkBatch(CheckBatchContext context) override;
  kj::Promise<void> rules(RulesContext context) override;
  kj::Promise<void> override(OverrideContext context) override;
  kj::Promise<void> clearOverride(ClearOverrideContext context) override;
  kj::Promise<void> reload(ReloadContext context) override;
  kj::Promise<void> lease(LeaseContext context) override;

  // Re-reads the rules from options.configPath (SIGHUP, reload): (rules, kept),
  // or the file's error, with the rules in force untouched.
  std::variant<std::string, std::pair<size_t, size_t>> reloadRules();
  std::pair<bool, std::string> health() const;
  // Flushes the journal and releases the data directory; the loop is stopping.
  void close();

 private:
  template <typename Params>
  Outcome decideOne(Params p, uint64_t cost, idl::Decision::Builder out);
  void report(const Outcome& outcome, uint64_t cost, idl::Decision::Builder out);
  void publishDenied(const DeniedEvent& event);
  void recover();
  void append(capnp::MessageBuilder& record, std::function<void()> done);
  void maybeRewrite(bool force = false);
  void tick();
  void onFatal(const std::string& message);

  rpc::Server& server_;
  rpc::Publisher* publisher_;
  storage::Env& env_;
  RateLimitOptions options_;
  MonoClock clock_;
  Limiter limiter_;
  DenialCoalescer coalescer_;
  std::unique_ptr<storage::DirLock> lock_;
  std::unique_ptr<storage::Journal> journal_;
  // The run-time overrides as the log has them (appended, durable or not),
  // by (rule, descriptors sorted by name): what a snapshot holds.
  std::map<std::pair<std::string, Descriptors>, Override> journaled_;
  kj::Promise<void> ticker_ = nullptr;
  bool rewriting_ = false;
  std::string fatal_;
  uint64_t reloads_ = 0, reloadFailures_ = 0, leases_ = 0, leasedTokens_ = 0;
};

}  // namespace zmesh::ratelimit
