#include "zmesh/storage/journal.h"

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "test_util.h"
#include "zmesh/storage/fault_env.h"
#include "zmesh/storage/record_log.h"

using namespace zmesh::storage;
using zmesh::storage::test::TestLoop;

namespace {

// A service's view of its journal: the env, its loop, and what it was told.
struct Harness {
  FaultInjectionEnv env;
  TestLoop loop;
  const std::string dir = "/data";
  const std::string name = "svc";
  std::optional<std::string> fatal;
  std::unique_ptr<Journal> journal;

  Journal& open(FsyncPolicy policy) {
    const Recovered rec = Journal::recover(env, dir, name);
    return open(policy, rec);
  }

  Journal& open(FsyncPolicy policy, const Recovered& rec) {
    fatal.reset();
    journal = std::make_unique<Journal>(env, JournalOptions{dir, name, policy}, rec, loop.poster(),
                                        [this](std::string m) { fatal = std::move(m); });
    return *journal;
  }

  // Power loss under a running journal. Its helper thread then fails against
  // the downed env; whatever it posted before runs, as the owner's loop would
  // have run it before dying (so it counts as acknowledged).
  void crashAndRestart(std::mt19937_64* torn = nullptr) {
    env.crash(torn);
    journal.reset();
    loop.runReady();
    env.setOpHook(nullptr);
    env.restart();
  }

  void close() {
    journal.reset();
    loop.runReady();
  }

  Recovered recover() { return Journal::recover(env, dir, name); }

  std::string path(const std::string& file) const { return dir + "/" + file; }

  void writeDurable(const std::string& file, const std::string& data) {
    auto f = env.openTruncate(path(file));
    f->append(data);
    f->sync();
    f->close();
    env.syncDir(dir);
  }

  std::vector<std::string> files() {
    auto v = env.listDir(dir);
    std::sort(v.begin(), v.end());
    return v;
  }
};

std::string join(const std::vector<std::string>& v, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) out += (i == 0 ? "" : ",") + v[i];
  return out;
}

// The service state a recovery rebuilds, for a service whose snapshot is its
// records joined by ','.
std::vector<std::string> stateOf(const Recovered& rec) {
  std::vector<std::string> state;
  if (rec.snapshot && !rec.snapshot->empty()) {
    size_t start = 0;
    for (;;) {
      const size_t comma = rec.snapshot->find(',', start);
      state.push_back(rec.snapshot->substr(start, comma - start));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  state.insert(state.end(), rec.records.begin(), rec.records.end());
  return state;
}

std::vector<std::string> numbered(size_t n, const std::string& prefix = "r") {
  std::vector<std::string> v;
  for (size_t i = 0; i < n; ++i) v.push_back(prefix + std::to_string(i));
  return v;
}

bool isPrefix(const std::vector<std::string>& prefix, const std::vector<std::string>& of) {
  return prefix.size() <= of.size() && std::equal(prefix.begin(), prefix.end(), of.begin());
}

}  // namespace

TEST_CASE("fsync policy parses and prints", "[journal]") {
  for (auto p : {FsyncPolicy::always, FsyncPolicy::everysec, FsyncPolicy::no}) {
    CHECK(parseFsyncPolicy(toString(p)) == p);
  }
  CHECK(toString(FsyncPolicy::everysec) == "everysec");
  CHECK_THROWS_MATCHES(
      parseFsyncPolicy("sometimes"), std::invalid_argument,
      Catch::Matchers::Message("fsync must be one of always|everysec|no, got 'sometimes'"));
}

TEST_CASE("journal: recovering an empty directory creates it", "[journal]") {
  Harness h;
  const Recovered rec = h.recover();
  CHECK(h.env.exists("/data"));
  CHECK_FALSE(rec.snapshot.has_value());
  CHECK(rec.records.empty());
  CHECK(rec.cutBytes == 0);
  CHECK(rec.nextGeneration == 1);
  CHECK_THROWS_AS(Journal::recover(h.env, "/data", "a/b"), std::invalid_argument);
  CHECK_THROWS_AS(Journal::recover(h.env, "/data", ""), std::invalid_argument);
}

TEST_CASE("journal: records and snapshots come back in order after a clean close", "[journal]") {
  const FsyncPolicy policy = GENERATE(FsyncPolicy::always, FsyncPolicy::everysec, FsyncPolicy::no);
  Harness h;
  Journal& j = h.open(policy);
  CHECK(j.policy() == policy);
  std::vector<int> order;
  int next = 0;
  for (int i = 0; i < 50; ++i) {
    j.append("a" + std::to_string(i), i % 7 == 0 ? Durability::forceSync : Durability::policy,
             [&order, n = next++] { order.push_back(n); });
  }
  j.rewrite("snapshot-1", [&order, n = next++] { order.push_back(n); });
  for (int i = 0; i < 50; ++i) {
    j.append("b" + std::to_string(i), Durability::policy,
             [&order, n = next++] { order.push_back(n); });
  }
  j.append("no-callback", Durability::policy, nullptr);
  REQUIRE(h.loop.runUntil([&] { return order.size() == 101; }));
  for (int i = 0; i < 101; ++i) REQUIRE(order[static_cast<size_t>(i)] == i);

  const JournalStats s = j.stats();
  CHECK(s.rewrites == 1);
  h.close();
  CHECK_FALSE(h.fatal);

  const Recovered rec = h.recover();
  CHECK(rec.snapshot == "snapshot-1");
  auto expected = numbered(50, "b");
  expected.push_back("no-callback");
  CHECK(rec.records == expected);
  CHECK(rec.cutBytes == 0);
  CHECK(rec.nextGeneration == 3);
}

TEST_CASE("journal: a snapshot written in slices covers the logs before its cut", "[journal]") {
  Harness h;
  Journal& j = h.open(FsyncPolicy::always);
  for (const auto& r : numbered(5, "a")) j.append(r, Durability::policy, nullptr);
  j.beginSnapshot();
  CHECK_THROWS_AS(j.beginSnapshot(), std::logic_error);
  // Appends between the slices belong to the log after the cut, whatever
  // the slices show of them.
  j.addToSnapshot("slice-1;");
  for (const auto& r : numbered(3, "b")) j.append(r, Durability::policy, nullptr);
  j.addToSnapshot("slice-2");
  bool done = false;
  j.endSnapshot([&] { done = true; });
  CHECK_THROWS_AS(j.addToSnapshot("late"), std::logic_error);
  CHECK_THROWS_AS(j.endSnapshot(nullptr), std::logic_error);
  j.append("c", Durability::policy, nullptr);
  REQUIRE(h.loop.runUntil([&] { return done; }));
  CHECK(j.stats().rewrites == 1);
  h.close();
  CHECK_FALSE(h.fatal);

  const Recovered rec = h.recover();
  CHECK(rec.snapshot == "slice-1;slice-2");
  auto expected = numbered(3, "b");
  expected.push_back("c");
  CHECK(rec.records == expected);
}

TEST_CASE("journal: a sliced snapshot never outlives the records its slices show", "[journal]") {
  // Under `no` nothing forces the log to disk; the slices were taken after
  // the appends, so the snapshot may show them. Once it is in place they
  // must be durable too, or a crash would keep the snapshot's later state
  // beside an earlier log.
  Harness h;
  Journal& j = h.open(FsyncPolicy::no);
  j.beginSnapshot();
  j.append("after-cut-1", Durability::policy, nullptr);
  j.append("after-cut-2", Durability::policy, nullptr);
  j.addToSnapshot("shows both");
  bool done = false;
  j.endSnapshot([&] { done = true; });
  REQUIRE(h.loop.runUntil([&] { return done; }));
  h.crashAndRestart();
  const Recovered rec = h.recover();
  CHECK(rec.snapshot == "shows both");
  CHECK(rec.records == std::vector<std::string>{"after-cut-1", "after-cut-2"});
}

TEST_CASE("journal: what survives a crash is what the policy promised", "[journal]") {
  Harness h;

  SECTION("always: every completed append") {
    Journal& j = h.open(FsyncPolicy::always);
    int done = 0;
    for (const auto& r : numbered(10)) j.append(r, Durability::policy, [&] { ++done; });
    REQUIRE(h.loop.runUntil([&] { return done == 10; }));
    h.crashAndRestart();
    CHECK(h.recover().records == numbered(10));
  }
  SECTION("no: nothing until forced, then everything before the forced record") {
    Journal& j = h.open(FsyncPolicy::no);
    int done = 0;
    for (const auto& r : numbered(10)) j.append(r, Durability::policy, [&] { ++done; });
    REQUIRE(h.loop.runUntil([&] { return done == 10; }));
    h.crashAndRestart();
    CHECK(h.recover().records.empty());

    Journal& j2 = h.open(FsyncPolicy::no);
    done = 0;
    const auto records = numbered(11);
    for (size_t i = 0; i < records.size(); ++i) {
      j2.append(records[i], i == 10 ? Durability::forceSync : Durability::policy, [&] { ++done; });
    }
    REQUIRE(h.loop.runUntil([&] { return done == 11; }));
    h.crashAndRestart();
    CHECK(h.recover().records == records);
  }
  SECTION("everysec: forced records at once, the rest within a second") {
    Journal& j = h.open(FsyncPolicy::everysec);
    bool forced = false;
    j.append("block", Durability::forceSync, [&] { forced = true; });
    REQUIRE(h.loop.runUntil([&] { return forced; }));
    const uint64_t syncs = h.env.syncCount();
    int done = 0;
    for (const auto& r : numbered(5)) j.append(r, Durability::policy, [&] { ++done; });
    REQUIRE(h.loop.runUntil([&] { return done == 5; }));
    // Nothing waits on it, yet the helper fsyncs within about a second.
    REQUIRE(h.loop.runUntil([&] { return h.env.syncCount() > syncs; }, std::chrono::seconds(5)));
    h.crashAndRestart();
    auto expected = numbered(5);
    expected.insert(expected.begin(), "block");
    CHECK(h.recover().records == expected);
  }
}

TEST_CASE("journal: under everysec and no a completion runs after the write and before the fsync",
          "[journal]") {
  Harness h;
  const FsyncPolicy policy = GENERATE(FsyncPolicy::everysec, FsyncPolicy::no);
  Journal& j = h.open(policy);
  h.env.failSyncs(true);
  bool done = false;
  j.append("x", Durability::policy, [&] { done = true; });
  REQUIRE(h.loop.runUntil([&] { return done; }));
  if (policy == FsyncPolicy::everysec) {
    // The background fsync a second later fails, and that is fatal.
    REQUIRE(h.loop.runUntil([&] { return h.fatal.has_value(); }, std::chrono::seconds(5)));
  } else {
    bool forced = false;
    j.append("y", Durability::forceSync, [&] { forced = true; });
    REQUIRE(h.loop.runUntil([&] { return h.fatal.has_value(); }));
    CHECK_FALSE(forced);
  }
  CHECK_THAT(*h.fatal, Catch::Contains("injected sync failure"));
}

TEST_CASE("journal: group commit writes and fsyncs queued appends together", "[journal]") {
  Harness h;
  Journal& j = h.open(FsyncPolicy::always);

  // Hold the helper inside its first fsync while 99 more appends queue up.
  std::mutex m;
  std::condition_variable cv;
  bool entered = false;
  bool released = false;
  std::atomic<bool> armed{true};
  h.env.setOpHook([&](std::string_view op, const std::string&) {
    if (op != "sync" || !armed.exchange(false)) return;
    std::unique_lock lk(m);
    entered = true;
    cv.notify_all();
    cv.wait(lk, [&] { return released; });
  });
  const uint64_t syncsBefore = h.env.syncCount();
  const uint64_t postsBefore = h.loop.posts();

  std::vector<int> order;
  j.append("r0", Durability::policy, [&] { order.push_back(0); });
  {
    std::unique_lock lk(m);
    REQUIRE(cv.wait_for(lk, std::chrono::seconds(20), [&] { return entered; }));
  }
  uint64_t queuedBytes = 0;
  for (int i = 1; i < 100; ++i) {
    j.append("r" + std::to_string(i), Durability::policy, [&order, i] { order.push_back(i); });
    queuedBytes += ("r" + std::to_string(i)).size();
  }
  // The helper is held: what waits for it is visible to a caller deciding to refuse work.
  CHECK(j.stats().queuedRecords == 99);
  CHECK(j.stats().queuedBytes == queuedBytes);
  {
    std::lock_guard lk(m);
    released = true;
  }
  cv.notify_all();
  REQUIRE(h.loop.runUntil([&] { return order.size() == 100; }));
  for (int i = 0; i < 100; ++i) REQUIRE(order[static_cast<size_t>(i)] == i);
  CHECK(j.stats().queuedRecords == 0);
  CHECK(j.stats().queuedBytes == 0);

  const JournalStats s = j.stats();
  CHECK(s.appends == 100);
  CHECK(s.batches == 2);
  CHECK(s.syncs == 2);
  CHECK(s.maxBatch == 99);
  CHECK(s.bytes == 100 * kRecordHeaderSize + 10 * 2 + 90 * 3);
  CHECK(h.env.syncCount() - syncsBefore == 2);
  CHECK(h.loop.posts() - postsBefore == 2);  // one post per batch
  h.env.setOpHook(nullptr);
}

TEST_CASE("journal: a crash at any point recovers a consistent prefix", "[journal]") {
  const FsyncPolicy policy = GENERATE(FsyncPolicy::always, FsyncPolicy::everysec, FsyncPolicy::no);
  const auto mainThread = std::this_thread::get_id();
  bool reachedEnd = false;
  for (int crashAt = 0; !reachedEnd; ++crashAt) {
    INFO("policy " << toString(policy) << ", crash before helper operation " << crashAt);
    Harness h;
    std::mt19937_64 rng(static_cast<uint64_t>(crashAt));
    Journal& j = h.open(policy);

    std::vector<std::string> history;
    std::vector<bool> forced;
    std::vector<bool> acked;
    size_t snapshotAcked = 0;  // records covered by the newest acknowledged snapshot
    size_t callbacks = 0;
    auto append = [&](Durability d) {
      const size_t i = history.size();
      history.push_back("r" + std::to_string(i));
      forced.push_back(d == Durability::forceSync);
      acked.push_back(false);
      j.append(history.back(), d, [&, i] {
        acked[i] = true;
        ++callbacks;
      });
    };
    auto rewrite = [&] {
      const size_t n = history.size();
      j.rewrite(join(history, n), [&, n] {
        snapshotAcked = std::max(snapshotAcked, n);
        ++callbacks;
      });
    };

    for (int i = 0; i < 5; ++i) append(Durability::policy);
    REQUIRE(h.loop.runUntil([&] { return callbacks == 5; }));

    std::atomic<int> ops{0};
    std::atomic<bool> crashed{false};
    h.env.setOpHook([&](std::string_view, const std::string&) {
      if (std::this_thread::get_id() != mainThread && ops++ == crashAt) {
        crashed = true;
        h.env.crash(&rng);
      }
    });
    append(Durability::policy);
    append(Durability::forceSync);
    rewrite();
    for (int i = 0; i < 3; ++i) append(Durability::policy);
    append(Durability::forceSync);
    rewrite();
    append(Durability::policy);
    append(Durability::policy);
    const size_t total = 5 + 2 + 1 + 4 + 1 + 2;
    REQUIRE(h.loop.runUntil([&] { return callbacks == total || h.fatal.has_value(); }));
    if (!crashed) {
      reachedEnd = true;  // every operation of the sequence ran: crash after all of it
      h.env.setOpHook(nullptr);
    }
    h.crashAndRestart(&rng);

    const Recovered rec = h.recover();
    const std::vector<std::string> state = stateOf(rec);
    // What survives is a prefix of the history: nothing reordered or doubled.
    REQUIRE(isPrefix(state, history));
    // And it holds every record the journal promised was durable.
    size_t mustSurvive = snapshotAcked;
    for (size_t i = 0; i < history.size(); ++i) {
      if (acked[i] && (policy == FsyncPolicy::always || forced[i]))
        mustSurvive = std::max(mustSurvive, i + 1);
    }
    REQUIRE(state.size() >= mustSurvive);
    if (policy == FsyncPolicy::always) REQUIRE(state.size() >= 5);

    // The recovered directory is fit for the next process.
    Journal& next = h.open(FsyncPolicy::always, rec);
    bool done = false;
    next.append("r" + std::to_string(state.size()), Durability::policy, [&] { done = true; });
    REQUIRE(h.loop.runUntil([&] { return done; }));
    h.close();
    REQUIRE_FALSE(h.fatal);
    const auto after = stateOf(h.recover());
    REQUIRE(after.size() == state.size() + 1);
    REQUIRE(isPrefix(state, after));
    REQUIRE(crashAt < 1000);
    if (reachedEnd) CHECK(crashAt > 20);  // the sequence has that many crash points
  }
}

TEST_CASE("journal: a failed fsync is fatal and completions never run", "[journal]") {
  Harness h;
  const auto mainThread = std::this_thread::get_id();
  SECTION("sync") {
    Journal& j = h.open(FsyncPolicy::always);
    h.env.failSyncs(true);
    bool ran = false;
    std::optional<std::thread::id> releasedOn;
    auto tracker = std::shared_ptr<int>(new int(0), [&](int* p) {
      releasedOn = std::this_thread::get_id();
      delete p;
    });
    j.append("x", Durability::policy, [&ran, t = std::move(tracker)] { ran = true; });
    REQUIRE(h.loop.runUntil([&] { return h.fatal.has_value(); }));
    CHECK_THAT(*h.fatal, Catch::Contains("injected sync failure"));
    CHECK_FALSE(ran);
    CHECK(j.failed());
    // The dropped completion was released on the owner's thread.
    CHECK(releasedOn == mainThread);

    j.append("y", Durability::policy, [&] { ran = true; });
    j.rewrite("s", [&] { ran = true; });
    h.close();
    CHECK_FALSE(ran);
  }
  SECTION("append") {
    Journal& j = h.open(FsyncPolicy::no);
    h.env.failAppends(true);
    bool ran = false;
    j.append("x", Durability::policy, [&] { ran = true; });
    REQUIRE(h.loop.runUntil([&] { return h.fatal.has_value(); }));
    CHECK_THAT(*h.fatal, Catch::Contains("injected append failure"));
    CHECK_FALSE(ran);
  }
  SECTION("rewrite") {
    Journal& j = h.open(FsyncPolicy::no);
    bool ran = false;
    j.append("x", Durability::policy, [&] { ran = true; });
    REQUIRE(h.loop.runUntil([&] { return ran; }));
    h.env.failSyncs(true);
    bool rewritten = false;
    j.rewrite("x", [&] { rewritten = true; });
    REQUIRE(h.loop.runUntil([&] { return h.fatal.has_value(); }));
    CHECK_FALSE(rewritten);
    h.close();
    h.env.failSyncs(false);
    CHECK(h.recover().snapshot == std::nullopt);
  }
}

TEST_CASE("journal: a torn tail is cut once and reported and stays cut", "[journal]") {
  uint64_t everCut = 0;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    Harness h;
    Journal& j = h.open(FsyncPolicy::no);
    const auto records = numbered(40);
    int done = 0;
    for (size_t i = 0; i < records.size(); ++i) {
      j.append(records[i], i == 9 ? Durability::forceSync : Durability::policy, [&] { ++done; });
      if (i == 9) REQUIRE(h.loop.runUntil([&] { return done == 10; }));
    }
    REQUIRE(h.loop.runUntil([&] { return done == 40; }));
    std::mt19937_64 rng(seed);
    h.crashAndRestart(&rng);

    const Recovered rec = h.recover();
    CHECK(rec.records.size() >= 10);
    CHECK(isPrefix(rec.records, records));
    everCut += rec.cutBytes;
    const Recovered again = h.recover();
    CHECK(again.cutBytes == 0);
    CHECK(again.records == rec.records);
  }
  CHECK(everCut > 0);
}

TEST_CASE("journal: a damaged snapshot is fatal and never skipped", "[journal]") {
  Harness h;
  Journal& j = h.open(FsyncPolicy::always);
  bool done = false;
  j.rewrite("the whole state", [&] { done = true; });
  REQUIRE(h.loop.runUntil([&] { return done; }));
  h.close();
  const std::string snap = *h.env.readFile(h.path("svc.snapshot"));
  REQUIRE(h.recover().snapshot == "the whole state");

  SECTION("flipped byte") {
    std::string bad = snap;
    bad[bad.size() - 3] ^= 0x20;
    h.writeDurable("svc.snapshot", bad);
    CHECK_THROWS_WITH(h.recover(), Catch::Contains("corrupt snapshot /data/svc.snapshot"));
  }
  SECTION("truncated") {
    h.writeDurable("svc.snapshot", snap.substr(0, snap.size() - 1));
    CHECK_THROWS_WITH(h.recover(), Catch::Contains("corrupt snapshot"));
  }
  SECTION("a whole record missing") {
    h.writeDurable("svc.snapshot",
                   snap.substr(0, snap.size() - encodeRecord("the whole state").size()));
    CHECK_THROWS_WITH(h.recover(), Catch::Contains("corrupt snapshot"));
  }
  SECTION("empty") {
    h.writeDurable("svc.snapshot", "");
    CHECK_THROWS_WITH(h.recover(), Catch::Contains("corrupt snapshot"));
  }
  SECTION("unknown snapshot version") {
    std::string header(20, '\0');
    header[0] = 3;
    h.writeDurable("svc.snapshot", logFileHeader() + encodeRecord(header));
    CHECK_THROWS_WITH(h.recover(), Catch::Contains("unsupported snapshot format version 3"));
  }
  SECTION("unknown log version") {
    std::string bad = snap;
    bad[5] = 9;
    h.writeDurable("svc.snapshot", bad);
    CHECK_THROWS_WITH(h.recover(), Catch::Contains("unsupported log format version 9"));
  }
}

TEST_CASE("journal: corruption in an older log stops recovery", "[journal]") {
  Harness h;
  for (const char* r : {"a", "b"}) {
    Journal& j = h.open(FsyncPolicy::always);
    bool done = false;
    j.append(r, Durability::policy, [&] { done = true; });
    REQUIRE(h.loop.runUntil([&] { return done; }));
    h.close();
  }
  REQUIRE(h.files() == std::vector<std::string>{"svc.log.1", "svc.log.2"});
  REQUIRE(h.recover().records == std::vector<std::string>{"a", "b"});

  SECTION("in the older one") {
    std::string log = *h.env.readFile(h.path("svc.log.1"));
    log.back() ^= 1;
    h.writeDurable("svc.log.1", log);
    CHECK_THROWS_WITH(h.recover(), Catch::Contains("refusing to replay past the gap"));
  }
  SECTION("in the newest one it is a torn tail") {
    std::string log = *h.env.readFile(h.path("svc.log.2"));
    log.back() ^= 1;
    h.writeDurable("svc.log.2", log);
    const Recovered rec = h.recover();
    CHECK(rec.records == std::vector<std::string>{"a"});
    CHECK(rec.cutBytes == kRecordHeaderSize + 1);
  }
}

TEST_CASE("journal: every restart starts a generation and a rewrite removes them all",
          "[journal]") {
  Harness h;
  for (int i = 0; i < 3; ++i) {
    Journal& j = h.open(FsyncPolicy::always);
    j.append("r" + std::to_string(i), Durability::policy, nullptr);
    h.close();
  }
  CHECK(h.files() == std::vector<std::string>{"svc.log.1", "svc.log.2", "svc.log.3"});
  Recovered rec = h.recover();
  CHECK(rec.records == numbered(3));
  CHECK(rec.nextGeneration == 4);

  Journal& j = h.open(FsyncPolicy::always, rec);
  bool done = false;
  j.rewrite(join(rec.records, 3), [&] { done = true; });
  REQUIRE(h.loop.runUntil([&] { return done; }));
  CHECK(h.files() == std::vector<std::string>{"svc.log.5", "svc.snapshot"});
  h.close();
  rec = h.recover();
  CHECK(stateOf(rec) == numbered(3));
  CHECK(rec.records.empty());
  CHECK(rec.nextGeneration == 6);
}

TEST_CASE("journal: recovery removes what a snapshot covers and leftovers", "[journal]") {
  Harness h;
  Journal& j = h.open(FsyncPolicy::always);
  int done = 0;
  j.append("a", Durability::policy, [&] { ++done; });
  j.rewrite("a", [&] { ++done; });
  j.append("b", Durability::policy, [&] { ++done; });
  REQUIRE(h.loop.runUntil([&] { return done == 3; }));
  h.close();
  // A covered log whose removal was lost, a rewrite that died before its
  // rename, and files that belong to others.
  h.writeDurable("svc.log.1", logFileHeader() + encodeRecord("stale"));
  h.writeDurable("svc.snapshot.tmp", "half a snapshot");
  h.writeDurable("other.log.1", "not ours");
  h.writeDurable("svc.log.x", "not a log");

  const Recovered rec = h.recover();
  CHECK(rec.snapshot == "a");
  CHECK(rec.records == std::vector<std::string>{"b"});
  CHECK(h.files() ==
        std::vector<std::string>{"other.log.1", "svc.log.2", "svc.log.x", "svc.snapshot"});
}

TEST_CASE("journal: refuses to open over a log recovery has not seen", "[journal]") {
  Harness h;
  const Recovered stale = h.recover();
  h.open(FsyncPolicy::always, stale);
  h.close();
  CHECK_THROWS_WITH(h.open(FsyncPolicy::always, stale), Catch::Contains("already exists"));
}

TEST_CASE("journal: close drains the queue and makes it durable under every policy", "[journal]") {
  const FsyncPolicy policy = GENERATE(FsyncPolicy::always, FsyncPolicy::everysec, FsyncPolicy::no);
  Harness h;
  Journal& j = h.open(policy);
  std::vector<int> order;
  for (int i = 0; i < 1000; ++i) {
    j.append("r" + std::to_string(i), Durability::policy, [&order, i] { order.push_back(i); });
  }
  j.close();
  j.close();  // idempotent
  h.loop.runReady();
  REQUIRE(order.size() == 1000);
  for (int i = 0; i < 1000; ++i) REQUIRE(order[static_cast<size_t>(i)] == i);
  CHECK_THROWS_AS(j.append("late", Durability::policy, nullptr), std::logic_error);
  CHECK_THROWS_AS(j.rewrite("late", nullptr), std::logic_error);

  h.crashAndRestart();
  CHECK(h.recover().records == numbered(1000));
}

TEST_CASE("journal: logBytes measures the current generation", "[journal]") {
  Harness h;
  Journal& j = h.open(FsyncPolicy::no);
  CHECK(j.logBytes() == kLogHeaderSize);
  j.append("abc", Durability::policy, nullptr);
  j.append("", Durability::policy, nullptr);
  CHECK(j.logBytes() == kLogHeaderSize + 2 * kRecordHeaderSize + 3);
  j.rewrite("abc", nullptr);
  CHECK(j.logBytes() == kLogHeaderSize);
  j.append("d", Durability::policy, nullptr);
  CHECK(j.logBytes() == kLogHeaderSize + kRecordHeaderSize + 1);
  h.close();
  CHECK(h.env.readFile(h.path("svc.log.2"))->size() == kLogHeaderSize + kRecordHeaderSize + 1);
}

TEST_CASE("journal: oversized records are refused but snapshots of any size are kept",
          "[journal]") {
  Harness h;
  Journal& j = h.open(FsyncPolicy::no);
  CHECK_THROWS_AS(j.append(std::string(kMaxRecordSize + 1, 'x'), Durability::policy, nullptr),
                  std::length_error);

  std::string big(kMaxRecordSize + 1000, 's');
  big.back() = 'e';
  bool done = false;
  j.rewrite(big, [&] { done = true; });
  REQUIRE(h.loop.runUntil([&] { return done; }));
  h.close();
  CHECK_FALSE(h.fatal);
  const Recovered rec = h.recover();
  REQUIRE(rec.snapshot.has_value());
  CHECK(rec.snapshot->size() == big.size());
  CHECK(*rec.snapshot == big);
}
