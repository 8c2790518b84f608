// Copying a delegate dataset tree into a restored instance.
//
// Regular files are copied with Env::CopyFile (copy_file_range: a reflink or
// in-kernel copy where the filesystem can) by a small pool of threads; modes
// and mtimes of files, directories and symlinks are reproduced; files that
// share an inode inside the source tree become hard links of one copy;
// symlinks are recreated verbatim after checking that they cannot point
// outside the tree (absolute targets and targets climbing above the root are
// refused). Sockets, fifos and devices are refused. Owners are not copied
// (the Env seam and the catalog do not carry them): files belong to the user
// running the restore.
#ifndef LIFEBOAT_RESTORE_TREE_COPY_H_
#define LIFEBOAT_RESTORE_TREE_COPY_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "base/env.h"
#include "base/status.h"

namespace lifeboat::restore {

struct CopyStats {
  uint64_t files = 0;
  uint64_t dirs = 0;
  uint64_t symlinks = 0;
  uint64_t hardlinks = 0;
  uint64_t bytes = 0;
};

// The mode and mtime an entry must get, when they are not those of the
// source on disk (the catalog stores entries with its own modes and keeps the
// exported ones in its records).
struct EntryMeta {
  uint32_t mode = 0;
  int64_t mtime_ns = 0;
};
// By path relative to the tree root, "" for the root itself.
using TreeMeta = std::map<std::string, EntryMeta>;

struct CopyOptions {
  int threads = 4;                 // file copies in flight
  const TreeMeta* meta = nullptr;  // overrides the source's modes and mtimes where it has an entry
};

// Copies the tree at `from` to `to`. `to` must not exist, or be an empty
// directory (a dataset mountpoint); `from`'s own mode and mtime are applied
// to it (or the meta of ""). Every symlink is validated before anything is created, so an
// escaping link leaves `to` untouched. On another failure `to` holds a
// partial copy: callers copy into a staging name and rename, or clear and
// repeat. Thread-safe with respect to other trees; `env` must be thread-safe.
Result<CopyStats> CopyTree(Env& env, const std::string& from, const std::string& to,
                           const CopyOptions& options = {});

// Checks that a symlink at `rel_link_path` (relative to the tree root, e.g.
// "a/b/link") with `target` resolves inside the tree: the target is relative
// and never climbs above the root. Error names the link and the target.
Status CheckSymlinkInside(std::string_view rel_link_path, std::string_view target);

// Removes everything inside directory `dir`, keeping `dir` itself.
Status ClearDir(Env& env, const std::string& dir);

}  // namespace lifeboat::restore

#endif  // LIFEBOAT_RESTORE_TREE_COPY_H_
