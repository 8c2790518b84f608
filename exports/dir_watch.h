// DirWatch: which directories of the export may have changed since the last
// scan, so that the exporter lists (and stats) only those (issue 13: a pull
// costs what changed, not what is exported).
//
// The contract, for one consumer that scans in rounds:
//   1. Drain() at the start of a round: every change the kernel reported
//      since the previous Drain marks its directory dirty.
//   2. Before listing a directory, Watch(dir). From then on, any change of an
//      entry directly in `dir` (created, deleted, renamed, written,
//      truncated, chmod/chown/utimes) and of `dir` itself marks `dir` dirty;
//      a change of the entries of `dir` that alters `dir`'s own mtime
//      (create, delete, rename) and a change of `dir`'s attributes also mark
//      its parent dirty (the parent's listing holds `dir`'s entry).
//   3. Clean(dir) is true when `dir` was watched before the previous
//      Settle() and nothing marked it dirty since: what the consumer saw of
//      `dir`'s entries in the last settled round still holds (as far as the
//      kernel reports). A directory never watched, whose watch was lost
//      (deleted, moved, the watch limit reached), or after an overflow of
//      the event queue is not clean.
//   4. Settle() once the round's results were adopted: clears the dirty
//      marks read so far and counts the watches added in the round as
//      established. A round that failed does not settle, so its dirty marks
//      stay for the next round.
//
// What it cannot see (the reason the exporter still walks everything every
// ExporterOptions::full_scan_interval_ms): writes through a shared mmap,
// changes made through another hard link in a directory it does not watch
// (the exporter lists every directory holding a multiply-linked file), and
// remote filesystems. Directory moves drop the watches of the moved subtree.
//
// Linux inotify (one descriptor, O(watched directories) kernel memory, capped
// by fs.inotify.max_user_watches). Not thread-safe: used under the
// exporter's scan lock.
#ifndef LIFEBOAT_EXPORTS_DIR_WATCH_H_
#define LIFEBOAT_EXPORTS_DIR_WATCH_H_

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>

#include "base/status.h"

namespace lifeboat::exports {

class DirWatch {
 public:
  // Fails when inotify is not available (the exporter then walks everything).
  static Result<std::unique_ptr<DirWatch>> Create();
  ~DirWatch();
  DirWatch(const DirWatch&) = delete;
  DirWatch& operator=(const DirWatch&) = delete;

  // Reads every pending event (never blocks).
  void Drain();
  // Starts watching `dir` (an absolute path; not followed when a symlink)
  // unless its directory is already watched under that path. kAdded: a new
  // watch (also when the path now names another directory than the one
  // watched under it: that one's marks are dropped); the parent's listing,
  // made before this watch, may hold a stale entry for `dir`. kFailed: it
  // cannot be watched (gone, not a directory, the watch limit) and is never
  // clean.
  enum class Outcome { kAlready, kAdded, kFailed };
  Outcome Watch(const std::string& dir);
  bool Clean(const std::string& dir) const;
  void Settle();

  size_t watches() const { return by_path_.size(); }

 private:
  struct Mark {
    int wd;
    uint64_t round;  // the round its watch was added in
  };
  explicit DirWatch(int fd) : fd_(fd) {}
  void Handle(int wd, uint32_t mask, const char* name);
  // Drops the watches of `dir` and below (in the kernel too, except
  // `keep_wd`, about to be mapped anew) and marks those paths dirty.
  void Forget(const std::string& dir, int keep_wd = -1);

  int fd_;
  uint64_t round_ = 1;  // incremented by Settle
  std::map<std::string, Mark> by_path_;
  std::unordered_map<int, std::string> by_wd_;
  std::set<std::string> dirty_;
  bool overflow_ = false;  // every directory is dirty until the next Settle
  bool limit_logged_ = false;
};

}  // namespace lifeboat::exports

#endif  // LIFEBOAT_EXPORTS_DIR_WATCH_H_
