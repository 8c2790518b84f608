#include "base/fault_env.h"

#include <cerrno>

namespace lifeboat {
namespace {

Status Injected(EnvOp op, const std::string& path, int err) {
  return PosixError(std::string("injected fault: ") + EnvOpName(op), path, err);
}

class FaultReadableFile final : public ReadableFile {
 public:
  FaultReadableFile(FaultEnv* env, std::unique_ptr<ReadableFile> file)
      : env_(env), file_(std::move(file)) {}
  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> buf) override {
    if (int err = env_->Check(EnvOp::kRead)) return Injected(EnvOp::kRead, path(), err);
    auto n = file_->ReadAt(offset, buf);
    if (n.ok()) env_->AddBytesRead(*n);
    return n;
  }
  Result<FileStat> Stat() override { return file_->Stat(); }
  const std::string& path() const override { return file_->path(); }
  int fd() const override { return file_->fd(); }

 private:
  FaultEnv* env_;
  std::unique_ptr<ReadableFile> file_;
};

class FaultWritableFile final : public WritableFile {
 public:
  FaultWritableFile(FaultEnv* env, std::unique_ptr<WritableFile> file)
      : env_(env), file_(std::move(file)) {}
  Status Append(std::span<const uint8_t> data) override {
    if (int err = env_->Check(EnvOp::kWrite)) {
      if (env_->partial_writes() && data.size() > 1) {
        file_->Append(data.first(data.size() / 2)).IgnoreError();
      }
      return Injected(EnvOp::kWrite, path(), err);
    }
    return file_->Append(data);
  }
  Status Sync() override {
    if (int err = env_->Check(EnvOp::kSync)) return Injected(EnvOp::kSync, path(), err);
    return file_->Sync();
  }
  Status Close() override {
    if (int err = env_->Check(EnvOp::kClose)) {
      file_->Close().IgnoreError();
      return Injected(EnvOp::kClose, path(), err);
    }
    return file_->Close();
  }
  const std::string& path() const override { return file_->path(); }
  int fd() const override { return file_->fd(); }

 private:
  FaultEnv* env_;
  std::unique_ptr<WritableFile> file_;
};

class FaultFilesystem final : public Filesystem {
 public:
  FaultFilesystem(FaultEnv* env, std::unique_ptr<Filesystem> fs) : env_(env), fs_(std::move(fs)) {}
  Status Sync() override {
    if (int err = env_->Check(EnvOp::kSyncFs)) return Injected(EnvOp::kSyncFs, path(), err);
    return fs_->Sync();
  }
  const std::string& path() const override { return fs_->path(); }

 private:
  FaultEnv* env_;
  std::unique_ptr<Filesystem> fs_;
};

}  // namespace

bool IsMutating(EnvOp op) {
  switch (op) {
    case EnvOp::kOpenWrite:
    case EnvOp::kWrite:
    case EnvOp::kSync:
    case EnvOp::kMakeDir:
    case EnvOp::kRename:
    case EnvOp::kLink:
    case EnvOp::kSymlink:
    case EnvOp::kRemoveFile:
    case EnvOp::kRemoveDir:
    case EnvOp::kSyncDir:
    case EnvOp::kSetMode:
    case EnvOp::kSetMtime:
    case EnvOp::kCopyFile:
    case EnvOp::kSyncFs:
      return true;
    default:
      return false;
  }
}

const char* EnvOpName(EnvOp op) {
  static const char* kNames[] = {"open",      "create",  "read",      "write",  "fsync",
                                 "close",     "stat",    "readdir",   "mkdir",  "rename",
                                 "link",      "symlink", "readlink",  "unlink", "rmdir",
                                 "fsync dir", "chmod",   "utimensat", "copy",   "syncfs"};
  static_assert(sizeof(kNames) / sizeof(kNames[0]) == static_cast<int>(EnvOp::kCount_));
  return kNames[static_cast<int>(op)];
}

FaultEnv::FaultEnv(Env* target) : target_(target) {}

void FaultEnv::FailNth(EnvOp op, uint64_t n, int err, bool sticky) {
  std::lock_guard<std::mutex> lock(mu_);
  Rule& r = rules_[static_cast<int>(op)];
  r.active = true;
  r.fire_at = Count(op) + (n == 0 ? 1 : n);
  r.err = err;
  r.sticky = sticky;
}

void FaultEnv::CrashAfter(uint64_t mutating_calls) {
  std::lock_guard<std::mutex> lock(mu_);
  crash_armed_ = true;
  crash_at_ = mutating_.load() + mutating_calls;
}

void FaultEnv::ClearFaults() {
  std::lock_guard<std::mutex> lock(mu_);
  for (Rule& r : rules_) r = Rule{};
  crash_armed_ = false;
  partial_writes_ = false;
}

void FaultEnv::ResetCounts() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& c : counts_) c = 0;
  mutating_ = 0;
  bytes_read_ = 0;
}

int FaultEnv::Check(EnvOp op) {
  uint64_t n = ++counts_[static_cast<int>(op)];
  uint64_t m = IsMutating(op) ? ++mutating_ : mutating_.load();
  std::lock_guard<std::mutex> lock(mu_);
  if (crash_armed_ && IsMutating(op) && m > crash_at_) return EIO;
  Rule& r = rules_[static_cast<int>(op)];
  if (!r.active) return 0;
  if (n == r.fire_at || (r.sticky && n > r.fire_at)) {
    if (!r.sticky) r.active = false;
    return r.err;
  }
  return 0;
}

int FaultEnv::Enter(EnvOp op, const std::string& path) {
  if (int err = Check(op)) return err;
  if (before_call_) before_call_(op, path);
  return 0;
}

Result<std::unique_ptr<ReadableFile>> FaultEnv::OpenRead(const std::string& path) {
  if (int err = Enter(EnvOp::kOpenRead, path)) return Injected(EnvOp::kOpenRead, path, err);
  ASSIGN_OR_RETURN(auto file, target_->OpenRead(path));
  return std::unique_ptr<ReadableFile>(new FaultReadableFile(this, std::move(file)));
}

Result<std::unique_ptr<WritableFile>> FaultEnv::OpenWrite(const std::string& path, uint32_t mode,
                                                          bool exclusive) {
  if (int err = Enter(EnvOp::kOpenWrite, path)) return Injected(EnvOp::kOpenWrite, path, err);
  ASSIGN_OR_RETURN(auto file, target_->OpenWrite(path, mode, exclusive));
  return std::unique_ptr<WritableFile>(new FaultWritableFile(this, std::move(file)));
}

Result<std::unique_ptr<WritableFile>> FaultEnv::OpenAppend(const std::string& path, uint32_t mode) {
  if (int err = Enter(EnvOp::kOpenWrite, path)) return Injected(EnvOp::kOpenWrite, path, err);
  ASSIGN_OR_RETURN(auto file, target_->OpenAppend(path, mode));
  return std::unique_ptr<WritableFile>(new FaultWritableFile(this, std::move(file)));
}

#define LIFEBOAT_FORWARD_(op, path, call)                        \
  if (int err = Enter(op, path)) return Injected(op, path, err); \
  return target_->call

Result<FileStat> FaultEnv::Stat(const std::string& path) {
  LIFEBOAT_FORWARD_(EnvOp::kStat, path, Stat(path));
}
Result<std::vector<DirEntry>> FaultEnv::ListDir(const std::string& path) {
  LIFEBOAT_FORWARD_(EnvOp::kListDir, path, ListDir(path));
}
Status FaultEnv::MakeDir(const std::string& path, uint32_t mode) {
  LIFEBOAT_FORWARD_(EnvOp::kMakeDir, path, MakeDir(path, mode));
}
Status FaultEnv::Rename(const std::string& from, const std::string& to) {
  LIFEBOAT_FORWARD_(EnvOp::kRename, from, Rename(from, to));
}
Status FaultEnv::Link(const std::string& existing, const std::string& new_path) {
  LIFEBOAT_FORWARD_(EnvOp::kLink, new_path, Link(existing, new_path));
}
Status FaultEnv::Symlink(const std::string& target, const std::string& link_path) {
  LIFEBOAT_FORWARD_(EnvOp::kSymlink, link_path, Symlink(target, link_path));
}
Result<std::string> FaultEnv::ReadLink(const std::string& path) {
  LIFEBOAT_FORWARD_(EnvOp::kReadLink, path, ReadLink(path));
}
Status FaultEnv::RemoveFile(const std::string& path) {
  LIFEBOAT_FORWARD_(EnvOp::kRemoveFile, path, RemoveFile(path));
}
Status FaultEnv::RemoveDir(const std::string& path) {
  LIFEBOAT_FORWARD_(EnvOp::kRemoveDir, path, RemoveDir(path));
}
Status FaultEnv::SyncDir(const std::string& path) {
  LIFEBOAT_FORWARD_(EnvOp::kSyncDir, path, SyncDir(path));
}
Status FaultEnv::SyncFile(const std::string& path) {
  LIFEBOAT_FORWARD_(EnvOp::kSync, path, SyncFile(path));
}
Result<std::unique_ptr<Filesystem>> FaultEnv::OpenFilesystem(const std::string& path) {
  if (int err = Enter(EnvOp::kOpenRead, path)) return Injected(EnvOp::kOpenRead, path, err);
  ASSIGN_OR_RETURN(auto fs, target_->OpenFilesystem(path));
  return std::unique_ptr<Filesystem>(new FaultFilesystem(this, std::move(fs)));
}
Status FaultEnv::SetMode(const std::string& path, uint32_t mode) {
  LIFEBOAT_FORWARD_(EnvOp::kSetMode, path, SetMode(path, mode));
}
Status FaultEnv::SetMtime(const std::string& path, int64_t mtime_ns) {
  LIFEBOAT_FORWARD_(EnvOp::kSetMtime, path, SetMtime(path, mtime_ns));
}
Status FaultEnv::CopyFile(const std::string& from, const std::string& to, uint32_t mode) {
  LIFEBOAT_FORWARD_(EnvOp::kCopyFile, to, CopyFile(from, to, mode));
}

#undef LIFEBOAT_FORWARD_

}  // namespace lifeboat
