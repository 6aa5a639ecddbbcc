// An in-memory Env for tests that can lose power.
//
// Every file has two contents: what a reader sees now, and what is durable
// (as of its last sync). Every directory entry likewise exists in the live
// namespace at once, but in the durable namespace only after syncDir() of its
// parent. crash() throws away everything that is not durable — the state a
// machine comes back with after power loss, which `kill -9` (page cache kept)
// cannot produce. Directories themselves are durable as soon as createDirs()
// returns, matching PosixEnv::createDirs, which syncs their parents.
//
// Thread-safe: one mutex guards all state, so each operation is atomic with
// respect to crash().
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <string_view>

#include "zmesh/storage/env.h"

namespace zmesh::storage {

namespace detail {
struct FaultState;
}

class FaultInjectionEnv final : public Env {
 public:
  FaultInjectionEnv();
  ~FaultInjectionEnv() override;

  std::unique_ptr<WritableFile> openAppend(const std::string& path) override;
  std::unique_ptr<WritableFile> openTruncate(const std::string& path) override;
  std::optional<std::string> readFile(const std::string& path) override;
  void rename(const std::string& from, const std::string& to) override;
  void remove(const std::string& path) override;
  void truncate(const std::string& path, uint64_t size) override;
  void syncDir(const std::string& dir) override;
  void createDirs(const std::string& dir) override;
  std::vector<std::string> listDir(const std::string& dir) override;
  bool exists(const std::string& path) override;
  std::unique_ptr<DirLock> lockDir(const std::string& dir) override;

  // Power loss. Every directory goes back to its durable entries (an unsynced
  // new file disappears, an unsynced rename or removal is undone) and every
  // file to its durable content (unsynced appends are lost). With
  // `tornTails`, each file whose unsynced content extends its durable content
  // keeps a random-length prefix of that tail instead — a torn write. All
  // directory locks are released.
  //
  // The env is then down: every operation, including those on files opened
  // before the crash, throws StorageError until restart(). This stops the
  // threads of the "dead" process (still running in the test) from writing
  // into the state the "next" process will recover. Files opened before the
  // crash stay dead after restart().
  void crash(std::mt19937_64* tornTails = nullptr);
  // Boots the machine again after crash().
  void restart();
  bool isDown() const;

  // While on, WritableFile::sync, truncate and syncDir throw
  // StorageError("injected sync failure ...") and make nothing durable.
  void failSyncs(bool on);
  // While on, WritableFile::append throws StorageError("injected append
  // failure ...") and writes nothing.
  void failAppends(bool on);

  // Successful WritableFile::sync and truncate calls (file fsyncs).
  uint64_t syncCount() const;
  // Successful syncDir calls.
  uint64_t dirSyncCount() const;

  // Called on the calling thread before every operation (file operations
  // included), with no lock held, so it may block to hold a thread at a
  // precise point or call crash() to lose power right before that operation.
  // `op` is the member function's name ("append", "sync", "rename", ...).
  using OpHook = std::function<void(std::string_view op, const std::string& path)>;
  void setOpHook(OpHook hook);

 private:
  std::unique_ptr<WritableFile> open(const char* op, const std::string& path, bool truncate);

  std::shared_ptr<detail::FaultState> state_;  // shared with open files and locks
};

}  // namespace zmesh::storage
