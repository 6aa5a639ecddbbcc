#include "zmesh/storage/fault_env.h"

#include <unistd.h>

#include <cerrno>
#include <map>
#include <mutex>
#include <set>
#include <unordered_set>

#include "path_util.h"

namespace zmesh::storage {
namespace detail {

// A file's data, shared by every directory entry and open handle naming it
// (as an inode is), so renaming or removing an open file behaves as in POSIX.
struct Inode {
  std::string current;
  std::string durable;
};

using Namespace = std::map<std::string, std::shared_ptr<Inode>>;

struct FaultState {
  mutable std::mutex mu;
  Namespace live;     // what the running process sees
  Namespace durable;  // what survives a crash: entries as of the last syncDir of their parent
  std::set<std::string> dirs{".", "/"};
  std::map<std::string, uint64_t> locks;  // directory -> id of the DirLock holding it
  uint64_t nextLockId = 1;
  uint64_t epoch = 0;  // bumped by crash(); handles from an older epoch are dead
  bool down = false;
  bool failSyncs = false;
  bool failAppends = false;
  uint64_t syncs = 0;
  uint64_t dirSyncs = 0;
  std::shared_ptr<const FaultInjectionEnv::OpHook> hook;

  // Runs the hook outside the mutex: it may block, or call crash().
  void before(std::string_view op, const std::string& path) const {
    std::shared_ptr<const FaultInjectionEnv::OpHook> h;
    {
      std::lock_guard lk(mu);
      h = hook;
    }
    if (h && *h) (*h)(op, path);
  }

  void checkUp(const std::string& path) const {
    if (down) {
      throw StorageError("simulated crash: env is down until restart() (" + path + ")");
    }
  }

  void checkParent(std::string_view op, const std::string& path) const {
    if (dirs.count(parentDir(path)) == 0) throw StorageError(op, path, ENOENT);
    if (dirs.count(path) != 0) throw StorageError(op, path, EISDIR);
  }

  std::shared_ptr<Inode> find(std::string_view op, const std::string& path) const {
    auto it = live.find(path);
    if (it == live.end()) throw StorageError(op, path, ENOENT);
    return it->second;
  }

  void checkSync(std::string_view op, const std::string& path) const {
    if (failSyncs) throw StorageError("injected sync failure: " + std::string(op) + " " + path);
  }

  void makeDirs(const std::string& path) {
    for (size_t pos = path.find('/', 1);; pos = path.find('/', pos + 1)) {
      std::string prefix = path.substr(0, pos);
      if (live.count(prefix) != 0) throw StorageError("mkdir", prefix, ENOTDIR);
      dirs.insert(std::move(prefix));
      if (pos == std::string::npos) break;
    }
  }
};

}  // namespace detail

namespace {

using detail::FaultState;
using detail::Inode;

class FaultFile final : public WritableFile {
 public:
  FaultFile(std::shared_ptr<FaultState> state, std::shared_ptr<Inode> inode, std::string path,
            uint64_t epoch)
      : state_(std::move(state)), inode_(std::move(inode)), path_(std::move(path)), epoch_(epoch) {}

  void append(std::string_view data) override {
    state_->before("append", path_);
    std::lock_guard lk(state_->mu);
    checkUsable();
    if (state_->failAppends) throw StorageError("injected append failure: append " + path_);
    inode_->current.append(data);
  }

  void sync() override {
    state_->before("sync", path_);
    std::lock_guard lk(state_->mu);
    checkUsable();
    state_->checkSync("sync", path_);
    inode_->durable = inode_->current;
    ++state_->syncs;
  }

  void close() override {
    state_->before("close", path_);
    std::lock_guard lk(state_->mu);
    checkUsable();
    closed_ = true;
  }

 private:
  void checkUsable() const {
    state_->checkUp(path_);
    if (epoch_ != state_->epoch) {
      throw StorageError("file opened before a simulated crash: " + path_);
    }
    if (closed_) throw StorageError("use of closed file " + path_);
  }

  std::shared_ptr<FaultState> state_;
  std::shared_ptr<Inode> inode_;
  std::string path_;
  uint64_t epoch_;
  bool closed_ = false;
};

class FaultDirLock final : public DirLock {
 public:
  FaultDirLock(std::shared_ptr<FaultState> state, std::string dir, uint64_t id)
      : state_(std::move(state)), dir_(std::move(dir)), id_(id) {}

  ~FaultDirLock() override {
    std::lock_guard lk(state_->mu);
    // After a crash the directory may be held by a lock of the next process.
    auto it = state_->locks.find(dir_);
    if (it != state_->locks.end() && it->second == id_) state_->locks.erase(it);
  }

 private:
  std::shared_ptr<FaultState> state_;
  std::string dir_;
  uint64_t id_;
};

}  // namespace

FaultInjectionEnv::FaultInjectionEnv() : state_(std::make_shared<FaultState>()) {}
FaultInjectionEnv::~FaultInjectionEnv() = default;

std::unique_ptr<WritableFile> FaultInjectionEnv::openAppend(const std::string& path) {
  return open("openAppend", path, false);
}

std::unique_ptr<WritableFile> FaultInjectionEnv::openTruncate(const std::string& path) {
  return open("openTruncate", path, true);
}

std::unique_ptr<WritableFile> FaultInjectionEnv::open(const char* op, const std::string& path,
                                                      bool truncate) {
  state_->before(op, path);
  const std::string p = detail::normalizePath(path);
  std::lock_guard lk(state_->mu);
  state_->checkUp(p);
  state_->checkParent("open", p);
  auto& inode = state_->live[p];
  if (!inode) inode = std::make_shared<Inode>();
  if (truncate)
    inode->current.clear();  // durable content stays until the next sync, as with O_TRUNC
  return std::make_unique<FaultFile>(state_, inode, p, state_->epoch);
}

std::optional<std::string> FaultInjectionEnv::readFile(const std::string& path) {
  state_->before("readFile", path);
  const std::string p = detail::normalizePath(path);
  std::lock_guard lk(state_->mu);
  state_->checkUp(p);
  if (state_->dirs.count(p) != 0) throw StorageError("read", p, EISDIR);
  auto it = state_->live.find(p);
  if (it == state_->live.end()) return std::nullopt;
  return it->second->current;
}

void FaultInjectionEnv::rename(const std::string& from, const std::string& to) {
  state_->before("rename", from);
  const std::string f = detail::normalizePath(from);
  const std::string t = detail::normalizePath(to);
  std::lock_guard lk(state_->mu);
  state_->checkUp(f);
  auto inode = state_->find("rename", f);
  state_->checkParent("rename", t);
  state_->live.erase(f);
  state_->live[t] = std::move(inode);
}

void FaultInjectionEnv::remove(const std::string& path) {
  state_->before("remove", path);
  const std::string p = detail::normalizePath(path);
  std::lock_guard lk(state_->mu);
  state_->checkUp(p);
  state_->find("unlink", p);
  state_->live.erase(p);
}

void FaultInjectionEnv::truncate(const std::string& path, uint64_t size) {
  state_->before("truncate", path);
  const std::string p = detail::normalizePath(path);
  std::lock_guard lk(state_->mu);
  state_->checkUp(p);
  auto inode = state_->find("truncate", p);
  inode->current.resize(size, '\0');  // ftruncate happened; only its fsync can fail
  state_->checkSync("truncate", p);
  inode->durable = inode->current;
  ++state_->syncs;
}

void FaultInjectionEnv::syncDir(const std::string& dir) {
  state_->before("syncDir", dir);
  const std::string d = detail::normalizePath(dir);
  std::lock_guard lk(state_->mu);
  state_->checkUp(d);
  if (state_->dirs.count(d) == 0) throw StorageError("open", d, ENOENT);
  state_->checkSync("syncDir", d);
  auto& durable = state_->durable;
  for (auto it = durable.begin(); it != durable.end();) {
    it = detail::parentDir(it->first) == d ? durable.erase(it) : std::next(it);
  }
  for (const auto& [p, inode] : state_->live) {
    if (detail::parentDir(p) == d) durable[p] = inode;
  }
  ++state_->dirSyncs;
}

void FaultInjectionEnv::createDirs(const std::string& dir) {
  state_->before("createDirs", dir);
  const std::string d = detail::normalizePath(dir);
  std::lock_guard lk(state_->mu);
  state_->checkUp(d);
  state_->makeDirs(d);
}

std::vector<std::string> FaultInjectionEnv::listDir(const std::string& dir) {
  state_->before("listDir", dir);
  const std::string d = detail::normalizePath(dir);
  std::lock_guard lk(state_->mu);
  state_->checkUp(d);
  if (state_->dirs.count(d) == 0) throw StorageError("opendir", d, ENOENT);
  std::vector<std::string> names;
  auto add = [&](const std::string& p) {
    if (p != d && detail::parentDir(p) == d) names.push_back(p.substr(p.rfind('/') + 1));
  };
  for (const auto& entry : state_->live) add(entry.first);
  for (const auto& sub : state_->dirs) add(sub);
  return names;
}

bool FaultInjectionEnv::exists(const std::string& path) {
  state_->before("exists", path);
  const std::string p = detail::normalizePath(path);
  std::lock_guard lk(state_->mu);
  state_->checkUp(p);
  return state_->live.count(p) != 0 || state_->dirs.count(p) != 0;
}

std::unique_ptr<DirLock> FaultInjectionEnv::lockDir(const std::string& dir) {
  state_->before("lockDir", dir);
  const std::string d = detail::normalizePath(dir);
  std::lock_guard lk(state_->mu);
  state_->checkUp(d);
  state_->makeDirs(d);
  // Like PosixEnv, leave a LOCK file holding the pid (never synced).
  auto& inode = state_->live[detail::joinPath(d, "LOCK")];
  if (!inode) inode = std::make_shared<Inode>();
  const std::string pid = std::to_string(::getpid());
  if (state_->locks.count(d) != 0) {
    throw StorageError("data directory " + dir + " is locked by another process (pid " + pid + ")");
  }
  inode->current = pid + "\n";
  const uint64_t id = state_->nextLockId++;
  state_->locks[d] = id;
  return std::make_unique<FaultDirLock>(state_, d, id);
}

void FaultInjectionEnv::crash(std::mt19937_64* tornTails) {
  std::lock_guard lk(state_->mu);
  std::unordered_set<Inode*> seen;
  for (const auto& [path, inode] : state_->durable) {
    if (!seen.insert(inode.get()).second) continue;
    std::string& cur = inode->current;
    std::string& dur = inode->durable;
    if (tornTails != nullptr && cur.size() > dur.size() && cur.compare(0, dur.size(), dur) == 0) {
      std::uniform_int_distribution<size_t> keep(0, cur.size() - dur.size());
      dur.append(cur, dur.size(), keep(*tornTails));
    }
    cur = dur;
  }
  state_->live = state_->durable;
  state_->locks.clear();
  ++state_->epoch;
  state_->down = true;
}

void FaultInjectionEnv::restart() {
  std::lock_guard lk(state_->mu);
  state_->down = false;
}

bool FaultInjectionEnv::isDown() const {
  std::lock_guard lk(state_->mu);
  return state_->down;
}

void FaultInjectionEnv::failSyncs(bool on) {
  std::lock_guard lk(state_->mu);
  state_->failSyncs = on;
}

void FaultInjectionEnv::failAppends(bool on) {
  std::lock_guard lk(state_->mu);
  state_->failAppends = on;
}

uint64_t FaultInjectionEnv::syncCount() const {
  std::lock_guard lk(state_->mu);
  return state_->syncs;
}

uint64_t FaultInjectionEnv::dirSyncCount() const {
  std::lock_guard lk(state_->mu);
  return state_->dirSyncs;
}

void FaultInjectionEnv::setOpHook(OpHook hook) {
  auto h = std::make_shared<const OpHook>(std::move(hook));
  std::lock_guard lk(state_->mu);
  state_->hook = std::move(h);
}

}  // namespace zmesh::storage
