// Copying a delegate dataset tree into a restored instance.
//
// Regular files are copied with Env::CopyFile (copy_file_range: a reflink or
// in-kernel copy where the filesystem can) by a small pool of threads; modes
// and mtimes of files, directories and symlinks are reproduced, and owners
// when asked (root only); hard links are recreated (from the exported link
// groups in the meta when there is one, else from the inodes the source tree
// shares); symlinks are recreated verbatim after checking that they cannot
// point outside the tree (absolute targets and targets climbing above the
// root are refused). Sockets, fifos and devices are refused.
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

// What an entry must get when it is not what the source on disk has (the
// catalog stores entries with its own modes and owner, and keeps the exported
// ones in its generation descriptions).
struct EntryMeta {
  uint32_t mode = 0;
  int64_t mtime_ns = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  // Regular files: the tree-relative path of the file this one is a hard link
  // of ("" for none). The caller vouches that both have the same content.
  std::string hardlink_of;
};
// By path relative to the tree root, "" for the root itself.
using TreeMeta = std::map<std::string, EntryMeta>;

struct CopyOptions {
  int threads = 4;  // file copies in flight
  // Overrides the source's modes, mtimes and owners where it has an entry;
  // when set, hard links come from its hardlink_of alone (the catalog may
  // share inodes between files that were not links on the exporter).
  const TreeMeta* meta = nullptr;
  bool set_owners = false;  // lchown every entry to its owner (needs root)
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
