// An exclusive, advisory lock on a file, held by this process until the
// LockFile is destroyed (or the process dies: the kernel drops flock locks,
// so a crash never leaves a stale lock behind).
//
// Used by the agent to make sure one data_dir has one agent: two agents
// pulling into the same catalog would each stage and commit over the other.
#ifndef LIFEBOAT_BASE_LOCK_FILE_H_
#define LIFEBOAT_BASE_LOCK_FILE_H_

#include <string>

#include "base/status.h"

namespace lifeboat {

class LockFile {
 public:
  // Creates `path` (0600) when missing and takes flock(LOCK_EX) without
  // waiting; writes this process's pid into it. Fails with kUnavailable,
  // naming the path and the holder's pid as written in the file, when
  // another process holds it; with an I/O error when it cannot be opened.
  // `what` names the protected thing in that message (e.g. "data_dir /var/x").
  static Result<LockFile> Acquire(const std::string& path, const std::string& what);

  // True when some process holds a flock on `path` now (probed with a shared
  // lock that is released at once; the file is neither created nor written).
  // False when it does not exist or is free.
  static bool IsHeld(const std::string& path);

  LockFile(LockFile&& other) noexcept;
  LockFile& operator=(LockFile&& other) noexcept;
  LockFile(const LockFile&) = delete;
  LockFile& operator=(const LockFile&) = delete;
  ~LockFile();

 private:
  explicit LockFile(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace lifeboat

#endif  // LIFEBOAT_BASE_LOCK_FILE_H_
