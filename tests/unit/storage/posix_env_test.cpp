#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>

#include "test_util.h"
#include "zmesh/storage/env.h"
#include "zmesh/storage/journal.h"

using namespace zmesh::storage;
using zmesh::storage::test::TempDir;
using zmesh::storage::test::TestLoop;

TEST_CASE("posix env: file operations", "[posix_env]") {
  TempDir tmp;
  auto env = makePosixEnv();
  const std::string dir = tmp.path() + "/a/b";
  env->createDirs(dir);
  env->createDirs(dir);  // idempotent
  CHECK(env->exists(dir));

  const std::string f = dir + "/f";
  CHECK_FALSE(env->readFile(f).has_value());
  CHECK_FALSE(env->exists(f));
  {
    auto w = env->openTruncate(f);
    w->append("hello ");
    w->append(std::string(200000, 'x'));
    w->sync();
    w->close();
    CHECK_THROWS_AS(w->append("x"), StorageError);
  }
  {
    auto w = env->openAppend(f);
    w->append("!");
    w->close();
  }
  auto content = env->readFile(f);
  REQUIRE(content.has_value());
  CHECK(content->size() == 6 + 200000 + 1);
  CHECK(content->substr(0, 6) == "hello ");
  CHECK(content->back() == '!');

  env->truncate(f, 5);
  CHECK(env->readFile(f) == "hello");
  env->rename(f, dir + "/g");
  env->syncDir(dir);
  auto names = env->listDir(dir);
  CHECK(names == std::vector<std::string>{"g"});
  env->remove(dir + "/g");
  CHECK(env->listDir(dir).empty());

  CHECK_THROWS_WITH(env->remove(dir + "/g"), Catch::Contains(dir + "/g"));
  CHECK_THROWS_AS(env->listDir(tmp.path() + "/missing"), StorageError);
  CHECK_THROWS_AS(env->openAppend(tmp.path() + "/missing/f"), StorageError);
  try {
    env->remove(dir + "/g");
    FAIL("removing a missing file succeeded");
  } catch (const StorageError& e) {
    CHECK(e.error() == ENOENT);
    CHECK_THAT(e.what(), Catch::Contains("No such file or directory"));
  }
}

TEST_CASE("posix env: a data directory can be locked once", "[posix_env]") {
  TempDir tmp;
  auto env = makePosixEnv();
  const std::string dir = tmp.path() + "/data";
  auto lock = env->lockDir(dir);  // creates the directory
  CHECK(env->readFile(dir + "/LOCK") == std::to_string(::getpid()) + "\n");
  // flock belongs to the open file description, so a second open conflicts
  // even in the same process.
  CHECK_THROWS_WITH(env->lockDir(dir), "data directory " + dir +
                                           " is locked by another process (pid " +
                                           std::to_string(::getpid()) + ")");
  lock.reset();
  auto again = env->lockDir(dir);
  CHECK(again != nullptr);
}

TEST_CASE("posix env: a journal survives a restart", "[posix_env][journal]") {
  TempDir tmp;
  auto env = makePosixEnv();
  const std::string dir = tmp.path() + "/svc";
  TestLoop loop;
  auto lock = env->lockDir(dir);
  int done = 0;
  {
    Recovered rec = Journal::recover(*env, dir, "seq");
    CHECK(rec.records.empty());
    Journal j(*env, {dir, "seq", FsyncPolicy::always}, rec, loop.poster(), nullptr);
    j.append("one", Durability::policy, [&] { ++done; });
    j.append("two", Durability::forceSync, [&] { ++done; });
    REQUIRE(loop.runUntil([&] { return done == 2; }));
    j.rewrite("snap:one,two", [&] { ++done; });
    j.append("three", Durability::policy, [&] { ++done; });
    REQUIRE(loop.runUntil([&] { return done == 4; }));
  }
  auto files = env->listDir(dir);
  std::sort(files.begin(), files.end());
  CHECK(files == std::vector<std::string>{"LOCK", "seq.log.2", "seq.snapshot"});

  Recovered rec = Journal::recover(*env, dir, "seq");
  CHECK(rec.snapshot == "snap:one,two");
  CHECK(rec.records == std::vector<std::string>{"three"});
  CHECK(rec.cutBytes == 0);
  CHECK(rec.nextGeneration == 3);

  // A torn tail on a real file is cut, and the cut is what stays.
  {
    auto w = env->openAppend(Journal::logPath(dir, "seq", 2));
    w->append(std::string_view("\x05\0\0\0garbage", 11));
    w->close();
  }
  rec = Journal::recover(*env, dir, "seq");
  CHECK(rec.records == std::vector<std::string>{"three"});
  CHECK(rec.cutBytes == 11);
  CHECK(Journal::recover(*env, dir, "seq").cutBytes == 0);
}
