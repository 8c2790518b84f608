// FaultEnv: an Env wrapper for tests that counts calls and injects faults
// (after leveldb's db/fault_injection_test.cc).
//
// It forwards every call to a target Env. Rules make chosen calls fail:
//   - FailNth(op, n, err): the n-th call of `op` from now on fails with `err`
//     (sticky: that call and every later one of that op).
//   - CrashAfter(n): after n more mutating calls (writes, syncs, renames,
//     links, mkdirs, removes, ...) every mutating call fails with EIO: the
//     process "crashed" there, so tests can reopen and check recovery.
//   - PartialWrites(true): a failing Append first writes half of its data,
//     like a disk that filled up mid-write.
// SetBeforeCall(hook) runs a test's code right before a call reaches the
// target: how tests race the code under test (a directory swapped for a
// symlink between two steps, a file rewritten while it is read).
// All methods are thread-safe.
#ifndef LIFEBOAT_BASE_FAULT_ENV_H_
#define LIFEBOAT_BASE_FAULT_ENV_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

#include "base/env.h"

namespace lifeboat {

enum class EnvOp : int {
  kOpenRead,
  kOpenWrite,
  kRead,
  kWrite,
  kSync,
  kClose,
  kStat,
  kListDir,
  kMakeDir,
  kRename,
  kLink,
  kSymlink,
  kReadLink,
  kRemoveFile,
  kRemoveDir,
  kSyncDir,
  kSetMode,
  kSetMtime,
  kCopyFile,
  kSyncFs,  // Filesystem::Sync (OpenFilesystem itself counts as kOpenRead)
  kCount_,  // number of ops; not an op
};

// True for ops that change the filesystem.
bool IsMutating(EnvOp op);
const char* EnvOpName(EnvOp op);

class FaultEnv final : public Env {
 public:
  explicit FaultEnv(Env* target);  // target must outlive this

  void FailNth(EnvOp op, uint64_t n, int err = EIO, bool sticky = true);
  void CrashAfter(uint64_t mutating_calls);
  void PartialWrites(bool on) { partial_writes_ = on; }
  void ClearFaults();

  // Calls `hook(op, path)` before each call of this Env's own methods (not
  // the reads and writes of the files it opened) reaches the target, after
  // the fault rules passed it; outside any lock. Set it before the Env is
  // used; not thread-safe against calls in flight.
  void SetBeforeCall(std::function<void(EnvOp, const std::string&)> hook) {
    before_call_ = std::move(hook);
  }

  uint64_t Count(EnvOp op) const { return counts_[static_cast<int>(op)].load(); }
  uint64_t MutatingCount() const { return mutating_.load(); }
  uint64_t BytesRead() const { return bytes_read_.load(); }
  void ResetCounts();

  // Called by the wrapped files; returns the errno to fail with, or 0.
  int Check(EnvOp op);
  void AddBytesRead(uint64_t n) { bytes_read_ += n; }
  bool partial_writes() const { return partial_writes_; }

  Result<std::unique_ptr<ReadableFile>> OpenRead(const std::string& path) override;
  Result<std::unique_ptr<WritableFile>> OpenWrite(const std::string& path, uint32_t mode,
                                                  bool exclusive) override;
  // Counted and failed as kOpenWrite (it creates the file when missing).
  Result<std::unique_ptr<WritableFile>> OpenAppend(const std::string& path, uint32_t mode) override;
  Result<FileStat> Stat(const std::string& path) override;
  Result<std::vector<DirEntry>> ListDir(const std::string& path) override;
  Status MakeDir(const std::string& path, uint32_t mode) override;
  Status Rename(const std::string& from, const std::string& to) override;
  Status Link(const std::string& existing, const std::string& new_path) override;
  Status Symlink(const std::string& target, const std::string& link_path) override;
  Result<std::string> ReadLink(const std::string& path) override;
  Status RemoveFile(const std::string& path) override;
  Status RemoveDir(const std::string& path) override;
  Status SyncDir(const std::string& path) override;
  Status SyncFile(const std::string& path) override;  // counts as kSync
  Result<std::unique_ptr<Filesystem>> OpenFilesystem(const std::string& path) override;
  Status SetMode(const std::string& path, uint32_t mode) override;
  Status SetMtime(const std::string& path, int64_t mtime_ns) override;
  Status CopyFile(const std::string& from, const std::string& to, uint32_t mode) override;

 private:
  struct Rule {
    bool active = false;
    uint64_t fire_at = 0;  // value of the op's counter at which it fires
    int err = 0;
    bool sticky = true;
  };

  // Check(op), then the before-call hook: 0 or the errno to fail with.
  int Enter(EnvOp op, const std::string& path);

  Env* target_;
  std::function<void(EnvOp, const std::string&)> before_call_;
  std::array<std::atomic<uint64_t>, static_cast<int>(EnvOp::kCount_)> counts_{};
  std::atomic<uint64_t> mutating_{0};
  std::atomic<uint64_t> bytes_read_{0};
  std::atomic<bool> partial_writes_{false};

  std::mutex mu_;  // guards the rules
  std::array<Rule, static_cast<int>(EnvOp::kCount_)> rules_{};
  bool crash_armed_ = false;
  uint64_t crash_at_ = 0;
};

}  // namespace lifeboat

#endif  // LIFEBOAT_BASE_FAULT_ENV_H_
