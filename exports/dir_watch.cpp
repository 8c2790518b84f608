#include "exports/dir_watch.h"

#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/env.h"
#include "base/log.h"

namespace lifeboat::exports {
namespace {

// Everything that changes what a listing of the directory, or of its parent,
// would show. IN_CLOSE_WRITE besides IN_MODIFY: a write that raced the
// listing is still reported once the writer is done.
constexpr uint32_t kMask = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_CREATE | IN_DELETE |
                           IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF |
                           IN_ONLYDIR | IN_DONT_FOLLOW;
// Child events that change the directory's own mtime (its entry in the parent's listing).
constexpr uint32_t kChangesDirMtime = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO;

}  // namespace

Result<std::unique_ptr<DirWatch>> DirWatch::Create() {
  int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) return IoError(std::string("inotify_init1: ") + std::strerror(errno));
  return std::unique_ptr<DirWatch>(new DirWatch(fd));
}

DirWatch::~DirWatch() { close(fd_); }

void DirWatch::Drain() {
  alignas(struct inotify_event) char buf[64 * 1024];
  for (;;) {
    const ssize_t n = read(fd_, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n < 0 && errno != EAGAIN) {
        log::Warn("export: reading directory changes failed: every directory is listed",
                  {{"error", std::strerror(errno)}});
        overflow_ = true;
      }
      return;
    }
    for (ssize_t at = 0; at + static_cast<ssize_t>(sizeof(struct inotify_event)) <= n;) {
      struct inotify_event ev;
      std::memcpy(&ev, buf + at, sizeof(ev));
      const char* name = ev.len > 0 ? buf + at + sizeof(ev) : nullptr;
      Handle(ev.wd, ev.mask, name != nullptr && name[0] != '\0' ? name : nullptr);
      at += static_cast<ssize_t>(sizeof(ev) + ev.len);
    }
  }
}

void DirWatch::Handle(int wd, uint32_t mask, const char* name) {
  if (mask & IN_Q_OVERFLOW) {
    overflow_ = true;
    return;
  }
  auto it = by_wd_.find(wd);
  if (it == by_wd_.end()) return;  // a watch already forgotten
  const std::string dir = it->second;
  dirty_.insert(dir);
  if (mask & (IN_IGNORED | IN_MOVE_SELF | IN_UNMOUNT)) {
    // Gone, or its path (and its subtree's) no longer names it.
    dirty_.insert(DirName(dir));
    Forget(dir);
    return;
  }
  if (name == nullptr || (mask & kChangesDirMtime)) dirty_.insert(DirName(dir));
}

DirWatch::Outcome DirWatch::Watch(const std::string& dir) {
  // Asked of the kernel every time: the path may name another directory now
  // (a symlink above it re-pointed, a mount), which has another watch.
  const int wd = inotify_add_watch(fd_, dir.c_str(), kMask);
  if (wd < 0) {
    if (errno == ENOSPC && !limit_logged_) {
      limit_logged_ = true;
      log::Warn(
          "export: the inotify watch limit is reached (fs.inotify.max_user_watches): "
          "directories beyond it are listed on every scan",
          {{"watches", static_cast<uint64_t>(by_path_.size())}, {"path", dir}});
    }
    Forget(dir);
    return Outcome::kFailed;
  }
  if (auto it = by_path_.find(dir); it != by_path_.end() && it->second.wd == wd) {
    return Outcome::kAlready;
  }
  // The path named another directory, or this directory was watched under
  // another path (a bind mount, a move not yet read): neither old path, nor
  // anything below it, gets the events they would need.
  Forget(dir, wd);
  if (auto old = by_wd_.find(wd); old != by_wd_.end()) Forget(std::string(old->second), wd);
  by_wd_[wd] = dir;
  by_path_[dir] = Mark{wd, round_};
  return Outcome::kAdded;
}

bool DirWatch::Clean(const std::string& dir) const {
  if (overflow_ || dirty_.count(dir)) return false;
  auto it = by_path_.find(dir);
  return it != by_path_.end() && it->second.round < round_;
}

void DirWatch::Settle() {
  dirty_.clear();
  overflow_ = false;
  ++round_;
}

void DirWatch::Forget(const std::string& dir, int keep_wd) {
  const std::string below = dir + "/";
  for (auto it = by_path_.lower_bound(dir); it != by_path_.end();) {
    if (it->first != dir && !it->first.starts_with(below)) {
      // "dir-x" sorts between "dir" and "dir/": skip it, not stop.
      if (it->first > below) break;
      ++it;
      continue;
    }
    dirty_.insert(it->first);
    const int wd = it->second.wd;
    if (wd != keep_wd) inotify_rm_watch(fd_, wd);  // may already be gone: nothing to do then
    if (auto w = by_wd_.find(wd); w != by_wd_.end() && w->second == it->first) by_wd_.erase(w);
    it = by_path_.erase(it);
  }
}

}  // namespace lifeboat::exports
