// Checkout: one generation of an instance as a directory tree, files
// hard-linked to their objects (docs/catalog.md, section 4 "Views").
//
// The store keeps a checkout of every instance's current generation at
// instances/<uuid>/current/ (the view the svc-* names point into) and moves
// it from one generation to the next in O(changes) with UpdateCheckout;
// restore and drills check a generation out into their own directory.
//
// What a checkout shows faithfully: the names (bytes), the tree, symlink
// targets and file contents. What it does not: a file shares its inode with
// the object, so its mode (0400), owner (the store's) and mtime (when the
// content first arrived) are the object's; directories are 0700 and owned by
// the store. The exported mode, owner and mtime are in the description, and
// restore applies them.
//
// Safety: entries are validated export paths of a tree that passed the tree
// rule (nothing under a symlink or a file); every parent is checked with
// lstat before anything is made in it, and link(2)/symlink(2) never follow a
// symlink at the new name. A file whose object cannot be linked (another
// filesystem, the link limit of the inode) is copied.
#ifndef LIFEBOAT_CATALOG_CHECKOUT_H_
#define LIFEBOAT_CATALOG_CHECKOUT_H_

#include <functional>
#include <string>
#include <vector>

#include "base/env.h"
#include "base/status.h"
#include "catalog/objects.h"
#include "syncproto/manifest.h"

namespace lifeboat::catalog {

// Makes `dir` (which must not exist; created 0700) hold `entries` (sorted by
// path). Fails, naming the path, when an object is missing: the caller
// discards the partial tree.
Status BuildCheckout(Env& env, const ObjectStore& objects,
                     const std::vector<syncproto::FileEntry>& entries, const std::string& dir);

// Makes `dir`, an existing directory holding nothing but directories of
// `entries` (sorted by path), or some of them and their parents, made
// 0700 ahead of time (a skeleton: PullTxn makes one while a pull's
// transfers run), hold `entries`, as BuildCheckout would have.
Status FillCheckout(Env& env, const ObjectStore& objects,
                    const std::vector<syncproto::FileEntry>& entries, const std::string& dir);

// Where the file of an object is: ObjectStore::PathOf, or, before a pull
// adopts its objects, their staged copies (the same inodes once adopted).
using ObjectPathFn = std::function<std::string(const Digest256&)>;

// FillCheckout, each file linked to `object_path(its id)`.
Status FillCheckout(Env& env, const ObjectPathFn& object_path,
                    const std::vector<syncproto::FileEntry>& entries, const std::string& dir);

// Changes the checkout at `dir`, which holds `from`, into one of `to` (both
// sorted by path): what went away or changed is removed (deepest first),
// then what is new or changed is made (parents first). `changed` lists the
// paths whose entries differ (sorted, unique: trees.h ChangedPaths); every
// other path has the same entry in both, and only the listed ones are
// looked at (O(changes log entries)). Stops at the first failure; the tree
// is then neither and the caller rebuilds it.
Status UpdateCheckout(Env& env, const ObjectStore& objects,
                      const std::vector<syncproto::FileEntry>& from,
                      const std::vector<syncproto::FileEntry>& to,
                      const std::vector<std::string>& changed, const std::string& dir);

}  // namespace lifeboat::catalog

#endif  // LIFEBOAT_CATALOG_CHECKOUT_H_
