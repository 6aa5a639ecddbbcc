#include "zmesh/storage/fault_env.h"

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <set>
#include <thread>

using namespace zmesh::storage;

namespace {

// Writes a file whose content and directory entry are both durable.
void writeDurable(FaultInjectionEnv& env, const std::string& path, const std::string& data) {
  auto f = env.openTruncate(path);
  f->append(data);
  f->sync();
  f->close();
  env.syncDir(path.substr(0, path.rfind('/')));
}

void reboot(FaultInjectionEnv& env, std::mt19937_64* torn = nullptr) {
  env.crash(torn);
  env.restart();
}

std::vector<std::string> sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

}  // namespace

TEST_CASE("fault env: files read back what was written", "[fault_env]") {
  FaultInjectionEnv env;
  env.createDirs("/a/b");
  CHECK(env.exists("/a"));
  CHECK(env.exists("/a/b"));
  CHECK_FALSE(env.readFile("/a/b/f").has_value());

  auto f = env.openAppend("/a/b/f");
  f->append("hello ");
  f->append("world");
  CHECK(env.readFile("/a/b/f") == "hello world");
  f->close();
  CHECK_THROWS_AS(f->append("x"), StorageError);

  env.openAppend("/a/b/f")->append("!");
  CHECK(env.readFile("/a/b/f") == "hello world!");
  env.openTruncate("/a/b/f");
  CHECK(env.readFile("/a/b/f") == "");

  env.rename("/a/b/f", "/a/b/g");
  CHECK_FALSE(env.exists("/a/b/f"));
  CHECK(sorted(env.listDir("/a/b")) == std::vector<std::string>{"g"});
  CHECK(sorted(env.listDir("/a")) == std::vector<std::string>{"b"});
  env.remove("/a/b/g");
  CHECK(env.listDir("/a/b").empty());

  CHECK_THROWS_AS(env.remove("/a/b/g"), StorageError);
  CHECK_THROWS_AS(env.rename("/a/b/g", "/a/b/h"), StorageError);
  CHECK_THROWS_AS(env.openAppend("/missing/f"), StorageError);
  CHECK_THROWS_AS(env.listDir("/missing"), StorageError);
}

TEST_CASE("fault env: a crash keeps synced data and loses the rest", "[fault_env]") {
  FaultInjectionEnv env;
  env.createDirs("/d");

  SECTION("unsynced appends are lost, synced ones survive") {
    auto f = env.openAppend("/d/f");
    env.syncDir("/d");
    f->append("durable");
    f->sync();
    f->append(" lost");
    reboot(env);
    CHECK(env.readFile("/d/f") == "durable");
  }
  SECTION("a file whose directory entry was never synced disappears") {
    auto f = env.openAppend("/d/f");
    f->append("data");
    f->sync();
    reboot(env);
    CHECK_FALSE(env.exists("/d/f"));
  }
  SECTION("a synced entry of a never-synced file survives empty") {
    auto f = env.openAppend("/d/f");
    env.syncDir("/d");
    f->append("data");
    reboot(env);
    CHECK(env.readFile("/d/f") == "");
  }
  SECTION("an unsynced rename is undone; a synced one survives") {
    writeDurable(env, "/d/old", "old");
    writeDurable(env, "/d/tmp", "new");
    env.rename("/d/tmp", "/d/old");
    CHECK(env.readFile("/d/old") == "new");
    reboot(env);
    CHECK(env.readFile("/d/old") == "old");
    CHECK(env.readFile("/d/tmp") == "new");

    env.rename("/d/tmp", "/d/old");
    env.syncDir("/d");
    reboot(env);
    CHECK(env.readFile("/d/old") == "new");
    CHECK_FALSE(env.exists("/d/tmp"));
  }
  SECTION("an unsynced removal is undone") {
    writeDurable(env, "/d/f", "keep");
    env.remove("/d/f");
    reboot(env);
    CHECK(env.readFile("/d/f") == "keep");
    env.remove("/d/f");
    env.syncDir("/d");
    reboot(env);
    CHECK_FALSE(env.exists("/d/f"));
  }
  SECTION("an unsynced truncation by openTruncate is undone") {
    writeDurable(env, "/d/f", "old content");
    env.openTruncate("/d/f")->append("new");
    reboot(env);
    CHECK(env.readFile("/d/f") == "old content");
  }
  SECTION("truncate is durable at once") {
    writeDurable(env, "/d/f", "0123456789");
    env.truncate("/d/f", 4);
    reboot(env);
    CHECK(env.readFile("/d/f") == "0123");
  }
  SECTION("syncing one directory does not sync another") {
    env.createDirs("/e");
    env.openAppend("/d/f");
    env.openAppend("/e/f");
    env.syncDir("/e");
    reboot(env);
    CHECK_FALSE(env.exists("/d/f"));
    CHECK(env.exists("/e/f"));
  }
  SECTION("a handle keeps writing to a renamed file") {
    auto f = env.openAppend("/d/f");
    env.rename("/d/f", "/d/g");
    f->append("x");
    CHECK(env.readFile("/d/g") == "x");
  }
}

TEST_CASE("fault env: torn tails keep a random prefix of the unsynced bytes", "[fault_env]") {
  std::set<size_t> lengths;
  for (uint64_t seed = 0; seed < 64; ++seed) {
    FaultInjectionEnv env;
    env.createDirs("/d");
    writeDurable(env, "/d/f", "synced|");
    auto f = env.openAppend("/d/f");
    const std::string tail = "0123456789abcdef";
    f->append(tail);
    std::mt19937_64 rng(seed);
    reboot(env, &rng);
    const auto content = env.readFile("/d/f");
    REQUIRE(content.has_value());
    REQUIRE(content->size() >= 7);
    REQUIRE(content->substr(0, 7) == "synced|");
    const std::string kept = content->substr(7);
    REQUIRE(kept == tail.substr(0, kept.size()));
    lengths.insert(kept.size());
  }
  // Torn at many different points, including not at all and fully written.
  CHECK(lengths.size() > 8);
  CHECK(lengths.count(0) + lengths.count(16) >= 1);
}

TEST_CASE("fault env: after a crash it is down until restart", "[fault_env]") {
  FaultInjectionEnv env;
  env.createDirs("/d");
  auto f = env.openAppend("/d/f");
  env.syncDir("/d");
  env.crash();
  CHECK(env.isDown());
  CHECK_THROWS_WITH(env.readFile("/d/f"), Catch::Contains("simulated crash"));
  CHECK_THROWS_AS(env.openAppend("/d/g"), StorageError);
  CHECK_THROWS_AS(f->append("x"), StorageError);
  env.restart();
  CHECK_FALSE(env.isDown());
  // The dead process's handles stay dead.
  CHECK_THROWS_WITH(f->append("x"), Catch::Contains("before a simulated crash"));
  CHECK_THROWS_AS(f->sync(), StorageError);
  CHECK(env.readFile("/d/f") == "");
}

TEST_CASE("fault env: injected failures", "[fault_env]") {
  FaultInjectionEnv env;
  env.createDirs("/d");
  auto f = env.openAppend("/d/f");

  env.failAppends(true);
  CHECK_THROWS_WITH(f->append("x"), Catch::Contains("injected append failure"));
  CHECK(env.readFile("/d/f") == "");
  env.failAppends(false);
  f->append("x");

  env.failSyncs(true);
  CHECK_THROWS_WITH(f->sync(), Catch::Contains("injected sync failure"));
  CHECK_THROWS_WITH(env.syncDir("/d"), Catch::Contains("injected sync failure"));
  CHECK_THROWS_WITH(env.truncate("/d/f", 0), Catch::Contains("injected sync failure"));
  CHECK(env.syncCount() == 0);
  CHECK(env.dirSyncCount() == 0);
  env.failSyncs(false);
  f->sync();
  env.syncDir("/d");
  CHECK(env.syncCount() == 1);
  CHECK(env.dirSyncCount() == 1);
}

TEST_CASE("fault env: the op hook sees every operation and can crash before one", "[fault_env]") {
  FaultInjectionEnv env;
  env.createDirs("/d");
  std::vector<std::string> ops;
  env.setOpHook([&](std::string_view op, const std::string& path) {
    ops.push_back(std::string(op) + " " + path);
    if (op == "sync") env.crash();
  });
  auto f = env.openAppend("/d/f");
  f->append("x");
  CHECK_THROWS_WITH(f->sync(), Catch::Contains("simulated crash"));
  CHECK(ops == std::vector<std::string>{"openAppend /d/f", "append /d/f", "sync /d/f"});
  env.setOpHook(nullptr);
  env.restart();
  CHECK_FALSE(env.exists("/d/f"));
}

TEST_CASE("fault env: directory locks are exclusive", "[fault_env]") {
  FaultInjectionEnv env;
  auto lock = env.lockDir("/data");
  CHECK(env.exists("/data/LOCK"));
  CHECK_THROWS_WITH(env.lockDir("/data"),
                    Catch::StartsWith("data directory /data is locked by another process (pid "));
  auto other = env.lockDir("/other");  // another directory is independent
  lock.reset();
  auto again = env.lockDir("/data");

  // A crash releases every lock; the dead process's lock object must not
  // release the lock the next process takes.
  reboot(env);
  auto next = env.lockDir("/data");
  again.reset();
  CHECK_THROWS_AS(env.lockDir("/data"), StorageError);
}

TEST_CASE("fault env: concurrent appends from many threads are all kept", "[fault_env]") {
  FaultInjectionEnv env;
  env.createDirs("/d");
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&env, t] {
      auto f = env.openAppend("/d/f" + std::to_string(t));
      for (int i = 0; i < 1000; ++i) f->append("x");
      f->sync();
    });
  }
  for (auto& t : threads) t.join();
  for (int t = 0; t < 4; ++t) CHECK(env.readFile("/d/f" + std::to_string(t))->size() == 1000);
  CHECK(env.syncCount() == 4);
}
