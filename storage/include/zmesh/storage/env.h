// The file-system interface every durable write in zmesh goes through.
//
// It is deliberately small (in the spirit of leveldb's Env): the journal needs
// append-only files, whole-file reads, atomic rename, directory fsync and a
// directory lock, nothing more. Keeping it this narrow is what lets
// FaultInjectionEnv (fault_env.h) model a crash faithfully — `kill -9` keeps
// the page cache, so only a simulated crash that drops everything not fsynced
// can prove that an fsync was really issued.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace zmesh::storage {

// Any I/O failure. Durable-state code treats it as fatal: after a failed write
// or fsync the state of the file is unknown, and retrying an fsync can report
// success for data the kernel already dropped.
class StorageError : public std::runtime_error {
 public:
  explicit StorageError(const std::string& message);
  // "<op> <path>: <strerror(err)>"; keeps errno for callers that branch on it
  // (e.g. ENOSPC).
  StorageError(std::string_view op, const std::string& path, int err);

  // The errno behind the error, 0 for errors that did not come from a syscall.
  int error() const noexcept { return error_; }

 private:
  int error_ = 0;
};

// An open file that is only ever appended to. Not thread-safe: one owner.
class WritableFile {
 public:
  virtual ~WritableFile();  // closes the file if still open, ignoring errors

  WritableFile() = default;
  WritableFile(const WritableFile&) = delete;
  WritableFile& operator=(const WritableFile&) = delete;

  // Writes all of `data` (short writes are continued) at the end of the file.
  virtual void append(std::string_view data) = 0;
  // Makes everything appended so far durable.
  virtual void sync() = 0;
  // Closes the file; a close error is reported (it can be the first sign of a
  // lost write on some file systems). Further calls are errors.
  virtual void close() = 0;
};

// Exclusive ownership of a data directory; released on destruction.
class DirLock {
 public:
  virtual ~DirLock();

  DirLock() = default;
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;
};

// Every operation throws StorageError on failure. Paths are plain strings;
// `dir` arguments name directories, everything else names regular files.
// Implementations are thread-safe.
class Env {
 public:
  virtual ~Env();

  // Opens (creating if missing) for appending at the end.
  virtual std::unique_ptr<WritableFile> openAppend(const std::string& path) = 0;
  // Opens (creating if missing) and cuts the file to zero length.
  virtual std::unique_ptr<WritableFile> openTruncate(const std::string& path) = 0;
  // The whole content, or nullopt when the file does not exist.
  virtual std::optional<std::string> readFile(const std::string& path) = 0;
  // Atomically replaces `to` (if any) by `from`. Durable after syncDir().
  virtual void rename(const std::string& from, const std::string& to) = 0;
  // Removes a file (missing is an error). Durable after syncDir().
  virtual void remove(const std::string& path) = 0;
  // Cuts a file to `size` bytes and fsyncs it, so the cut is durable on return.
  virtual void truncate(const std::string& path, uint64_t size) = 0;
  // Makes the directory's entries (creations, renames, removals) durable.
  virtual void syncDir(const std::string& dir) = 0;
  // mkdir -p; every directory created is made durable in its parent.
  virtual void createDirs(const std::string& dir) = 0;
  // Names (not paths) of the entries of `dir`, in no particular order.
  virtual std::vector<std::string> listDir(const std::string& dir) = 0;
  virtual bool exists(const std::string& path) = 0;
  // Takes `<dir>/LOCK` exclusively (creating `dir` if missing), or throws
  // StorageError "data directory <dir> is locked by another process (pid N)".
  virtual std::unique_ptr<DirLock> lockDir(const std::string& dir) = 0;
};

// The real implementation over POSIX (open/write/fdatasync/rename/flock).
std::unique_ptr<Env> makePosixEnv();

}  // namespace zmesh::storage
