#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <string>
#include <utility>

#include "path_util.h"
#include "zmesh/storage/env.h"

namespace zmesh::storage {
namespace {

// Retries a syscall interrupted by a signal before it did anything.
template <typename F>
auto retryEintr(F&& f) {
  for (;;) {
    auto r = f();
    if (r != -1 || errno != EINTR) return r;
  }
}

// Owns a descriptor for the scope of one operation.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

void writeAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = retryEintr([&] { return ::write(fd, data.data(), data.size()); });
    if (n < 0) throw StorageError("write", path, errno);
    data.remove_prefix(static_cast<size_t>(n));  // a short write continues where it stopped
  }
}

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  void append(std::string_view data) override {
    checkOpen();
    writeAll(fd_, data, path_);
  }

  void sync() override {
    checkOpen();
    // fdatasync also flushes the size change an append makes, which is all a
    // reader needs. A failed fsync is never retried by callers: Linux may have
    // dropped the dirty pages already and would report the retry as success.
    if (retryEintr([&] { return ::fdatasync(fd_); }) != 0)
      throw StorageError("fsync", path_, errno);
  }

  void close() override {
    checkOpen();
    int fd = std::exchange(fd_, -1);
    // On Linux the descriptor is gone even when close reports EINTR, so it
    // must not be retried (that could close a descriptor another thread got).
    if (::close(fd) != 0 && errno != EINTR) throw StorageError("close", path_, errno);
  }

 private:
  void checkOpen() const {
    if (fd_ < 0) throw StorageError("use of closed file " + path_);
  }

  int fd_;
  std::string path_;
};

class PosixDirLock final : public DirLock {
 public:
  explicit PosixDirLock(int fd) : fd_(fd) {}
  // Closing the descriptor releases the flock. The LOCK file itself stays:
  // unlinking it could let a third process lock a fresh inode while a second
  // one still holds the old.
  ~PosixDirLock() override { ::close(fd_); }

 private:
  int fd_;
};

class PosixEnv final : public Env {
 public:
  std::unique_ptr<WritableFile> openAppend(const std::string& path) override {
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC);
  }

  std::unique_ptr<WritableFile> openTruncate(const std::string& path) override {
    return open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC);
  }

  std::optional<std::string> readFile(const std::string& path) override {
    Fd fd(retryEintr([&] { return ::open(path.c_str(), O_RDONLY | O_CLOEXEC); }));
    if (fd.get() < 0) {
      if (errno == ENOENT) return std::nullopt;
      throw StorageError("open", path, errno);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw StorageError("stat", path, errno);
    std::string out;
    out.reserve(static_cast<size_t>(st.st_size));
    char buf[64 * 1024];
    for (;;) {
      ssize_t n = retryEintr([&] { return ::read(fd.get(), buf, sizeof buf); });
      if (n < 0) throw StorageError("read", path, errno);
      if (n == 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    return out;
  }

  void rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0)
      throw StorageError("rename", from + " -> " + to, errno);
  }

  void remove(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) throw StorageError("unlink", path, errno);
  }

  void truncate(const std::string& path, uint64_t size) override {
    Fd fd(retryEintr([&] { return ::open(path.c_str(), O_WRONLY | O_CLOEXEC); }));
    if (fd.get() < 0) throw StorageError("open", path, errno);
    if (retryEintr([&] { return ::ftruncate(fd.get(), static_cast<off_t>(size)); }) != 0) {
      throw StorageError("ftruncate", path, errno);
    }
    // fsync, not fdatasync: the new size is the whole point.
    if (retryEintr([&] { return ::fsync(fd.get()); }) != 0)
      throw StorageError("fsync", path, errno);
  }

  void syncDir(const std::string& dir) override {
    Fd fd(retryEintr([&] { return ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); }));
    if (fd.get() < 0) throw StorageError("open", dir, errno);
    if (retryEintr([&] { return ::fsync(fd.get()); }) != 0) throw StorageError("fsync", dir, errno);
  }

  void createDirs(const std::string& dir) override {
    const std::string path = detail::normalizePath(dir);
    // Walk the components so every directory we create gets its parent synced;
    // otherwise a crash could lose a freshly made data directory with the
    // files that were synced into it.
    for (size_t pos = path.find('/', 1);; pos = path.find('/', pos + 1)) {
      const std::string prefix = path.substr(0, pos);
      if (::mkdir(prefix.c_str(), 0755) == 0) {
        syncDir(detail::parentDir(prefix));
      } else if (errno == EEXIST) {
        struct stat st {};
        if (::stat(prefix.c_str(), &st) != 0) throw StorageError("stat", prefix, errno);
        if (!S_ISDIR(st.st_mode)) throw StorageError("mkdir", prefix, ENOTDIR);
      } else {
        throw StorageError("mkdir", prefix, errno);
      }
      if (pos == std::string::npos) break;
    }
  }

  std::vector<std::string> listDir(const std::string& dir) override {
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) throw StorageError("opendir", dir, errno);
    std::vector<std::string> names;
    for (;;) {
      errno = 0;
      const dirent* e = ::readdir(d);
      if (e == nullptr) {
        int err = errno;
        ::closedir(d);
        if (err != 0) throw StorageError("readdir", dir, err);
        return names;
      }
      std::string_view name = e->d_name;
      if (name != "." && name != "..") names.emplace_back(name);
    }
  }

  bool exists(const std::string& path) override {
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) return true;
    if (errno == ENOENT || errno == ENOTDIR) return false;
    throw StorageError("stat", path, errno);
  }

  std::unique_ptr<DirLock> lockDir(const std::string& dir) override {
    createDirs(dir);
    const std::string path = detail::joinPath(dir, "LOCK");
    Fd fd(retryEintr([&] { return ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644); }));
    if (fd.get() < 0) throw StorageError("open", path, errno);
    // flock locks belong to the open file description, so a second open of the
    // same file conflicts even within one process; the lock dies with the
    // process, so a crashed owner never leaves the directory locked.
    if (retryEintr([&] { return ::flock(fd.get(), LOCK_EX | LOCK_NB); }) != 0) {
      if (errno != EWOULDBLOCK) throw StorageError("flock", path, errno);
      throw StorageError("data directory " + dir + " is locked by another process (pid " +
                         readPid(fd.get()) + ")");
    }
    // The pid is only for the error message above; it needs no fsync.
    const std::string pid = std::to_string(::getpid()) + "\n";
    if (retryEintr([&] { return ::ftruncate(fd.get(), 0); }) != 0) {
      throw StorageError("ftruncate", path, errno);
    }
    ssize_t n = retryEintr([&] { return ::pwrite(fd.get(), pid.data(), pid.size(), 0); });
    if (n != static_cast<ssize_t>(pid.size()))
      throw StorageError("write", path, n < 0 ? errno : EIO);
    return std::make_unique<PosixDirLock>(fd.release());
  }

 private:
  std::unique_ptr<WritableFile> open(const std::string& path, int flags) {
    int fd = retryEintr([&] { return ::open(path.c_str(), flags, 0644); });
    if (fd < 0) throw StorageError("open", path, errno);
    return std::make_unique<PosixWritableFile>(fd, path);
  }

  static std::string readPid(int fd) {
    char buf[32];
    ssize_t n = retryEintr([&] { return ::pread(fd, buf, sizeof buf, 0); });
    long pid = 0;
    if (n > 0) {
      auto [end, ec] = std::from_chars(buf, buf + n, pid);
      if (ec == std::errc() && end != buf && pid > 0) return std::to_string(pid);
    }
    return "unknown";
  }
};

}  // namespace

std::unique_ptr<Env> makePosixEnv() { return std::make_unique<PosixEnv>(); }

}  // namespace zmesh::storage
