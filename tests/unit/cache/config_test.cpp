// The [cache] section as zmesh-cache reads it: defaults, every key, flags over
// the file, and a bad value or an unknown key refused with its line and key.
#include <catch2/catch.hpp>

#include "cache_config.h"

using namespace zmesh;
using Catch::Matchers::Contains;

namespace {

cache::CacheServiceOptions parse(const std::string& text, const cache::CacheFlags& flags = {}) {
  auto config = rpc::MeshConfig::parse("[cache]\n" + text, "mesh.toml");
  return cache::parseCacheOptions(config.section("cache"), flags);
}

std::string refusal(const std::string& text, const cache::CacheFlags& flags = {}) {
  try {
    parse(text, flags);
  } catch (const rpc::ConfigError& e) {
    return e.what();
  }
  return "accepted";
}

}  // namespace

TEST_CASE("cache config: defaults", "[cache][config]") {
  auto o = parse("");
  CHECK(o.fsync == storage::FsyncPolicy::everysec);
  CHECK(o.store.policy == cache::Policy::lru);
  CHECK(o.store.maxMemory == uint64_t{256} << 20);
  CHECK(o.store.maxKeyBytes == 4096);
  CHECK(o.store.maxValueBytes == 512 << 10);
  CHECK(o.maxBatch == 1000);
  CHECK(o.expireInterval == 100);
  CHECK(o.expireStepMaxMicros == 1000);
  CHECK(o.eventsPerSecond == 1000);
  CHECK(o.dataDir.ends_with("var/cache"));
}

TEST_CASE("cache config: every key is read", "[cache][config]") {
  auto o = parse(
      "fsync = \"always\"\npolicy = \"lfu\"\nmax_memory = \"64mb\"\nmax_key_bytes = 100\n"
      "max_value_bytes = \"1kb\"\nmax_ttl = \"1d\"\nmax_batch = 10\nlfu_decay_uses = 5000\n"
      "hash_seed = 7\nrewrite_after_bytes = \"1mb\"\nsnapshot_slice_keys = 50\n"
      "max_journal_queue_bytes = \"2mb\"\nexpire_interval = \"20ms\"\nexpire_budget = 30\n"
      "expire_run_max = \"3ms\"\nevents_per_second = 5\nevent_key_bytes = 16\n");
  CHECK(o.fsync == storage::FsyncPolicy::always);
  CHECK(o.store.policy == cache::Policy::lfu);
  CHECK(o.store.maxMemory == uint64_t{64} << 20);
  CHECK(o.store.maxKeyBytes == 100);
  CHECK(o.store.maxValueBytes == 1024);
  CHECK(o.store.maxTtl == 86'400'000);
  CHECK(o.maxBatch == 10);
  CHECK(o.store.lfuDecayUses == 5000);
  CHECK(o.store.seed == 7);
  CHECK(o.rewriteAfterBytes == 1 << 20);
  CHECK(o.snapshotSliceKeys == 50);
  CHECK(o.maxJournalQueueBytes == 2 << 20);
  CHECK(o.expireInterval == 20);
  CHECK(o.expireBudget == 30);
  CHECK(o.expireStepMaxMicros == 3000);
  CHECK(o.eventsPerSecond == 5);
  CHECK(o.eventKeyBytes == 16);
}

TEST_CASE("cache config: flags win over the file", "[cache][config]") {
  cache::CacheFlags flags{"no", "fifo", "8mb"};
  auto o = parse("fsync = \"always\"\npolicy = \"lfu\"\nmax_memory = \"64mb\"\n", flags);
  CHECK(o.fsync == storage::FsyncPolicy::no);
  CHECK(o.store.policy == cache::Policy::fifo);
  CHECK(o.store.maxMemory == 8 << 20);
}

TEST_CASE("cache config: bad values name their line and key, or their flag", "[cache][config]") {
  CHECK_THAT(refusal("policy = \"lru2\"\n"),
             Contains("mesh.toml:2") && Contains("cache.policy") && Contains("lru2"));
  CHECK_THAT(refusal("max_memory = \"lots\"\n"), Contains("cache.max_memory"));
  CHECK_THAT(refusal("max_memory = 100\n"), Contains("expected a size from 4096"));
  CHECK_THAT(refusal("max_key_bytes = 0\n"), Contains("cache.max_key_bytes"));
  CHECK_THAT(refusal("max_batch = \"ten\"\n"), Contains("cache.max_batch"));
  CHECK_THAT(refusal("fsync = \"sometimes\"\n"), Contains("cache.fsync"));
  CHECK_THAT(refusal("maxmemory = \"1mb\"\n"), Contains("maxmemory"));
  CHECK_THAT(refusal("", {std::nullopt, "lru2", std::nullopt}), Contains("--policy"));
  CHECK_THAT(refusal("", {std::nullopt, std::nullopt, "1 mb"}), Contains("--max-memory"));
  CHECK_THAT(refusal("", {"never", std::nullopt, std::nullopt}), Contains("--fsync"));
}
