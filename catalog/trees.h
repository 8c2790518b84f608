// Generation trees: how a generation's entries are stored so that a new
// generation costs what changed (docs/catalog.md, section 3).
//
// The entries of one generation of an instance (export paths such as
// "datasets/<uuid>/d/f", sorted bytewise) are split by directory: one tree
// per directory, listing that directory's direct children, each child
// directory with the id of its own tree. A tree is an object (objects.h),
// named by the SHA-256 of its text, so the description of a generation names
// only the root tree (a Merkle tree: the description's digest in
// catalog.json covers every entry).
//
// A directory whose subtree did not change since the previous generation
// keeps its tree: a pull that changes k entries writes the trees of the
// directories on the paths from those k entries up to the root, and no
// other. Trees are shared by every generation (of any instance) that has
// the same subtree, kept alive and collected with the file objects.
//
// Tree text (UTF-8 JSON, one child per line, children in bytewise path
// order of the entry or, for a directory with no entry of its own, of its
// first descendant):
//
//   {"lifeboat_tree":1,"dir":"datasets/<uuid>","entries":[
//   {"kind":"file","path":"datasets/<uuid>/f",...same keys as a description's entries...},
//   {"kind":"dir","path":"datasets/<uuid>/d",...,"tree":"<sha256 hex>"},
//   {"implied":true,"path":"datasets/<uuid>/implied","tree":"<sha256 hex>"}
//   ]}
//
// The top tree has "dir":"" (its children are paths without a slash, or
// directories implied by deeper paths, such as "datasets"). A child entry
// with descendants (a directory) carries "tree"; a directory implied by its
// descendants but not itself an entry is an "implied" line. Names that are not UTF-8 use the "<key>_hex" keys (base/text.h).
#ifndef LIFEBOAT_CATALOG_TREES_H_
#define LIFEBOAT_CATALOG_TREES_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/env.h"
#include "base/sha256.h"
#include "base/status.h"
#include "catalog/objects.h"
#include "syncproto/manifest.h"

namespace lifeboat::catalog {

// Directory path ("" for the top) -> id of its tree, for every tree of one
// generation.
using TreeIds = std::map<std::string, Digest256>;

struct TreeText {
  Digest256 id;  // SHA-256 of text
  std::string text;
};

struct BuiltTrees {
  Digest256 root;                     // the top tree
  std::shared_ptr<const TreeIds> ids;  // every tree of the generation
  std::vector<TreeText> encoded;      // the trees encoded by this call (children first)
};

// The trees of `files` (one generation, sorted by path, paths unique).
// When `prev_files` and `prev_ids` (the previous generation's entries and
// trees) are given, a directory whose subtree is identical in both keeps
// its id and is not encoded: `encoded` holds only the changed directories'
// trees and their ancestors'. Without them every tree is encoded.
BuiltTrees BuildTrees(const std::vector<syncproto::FileEntry>& files,
                      const std::vector<syncproto::FileEntry>* prev_files,
                      const TreeIds* prev_ids);

// Where ReadTrees failed: the id of the tree that is missing, unreadable or
// not what its name says (zero when the failure is not one tree's).
struct TreeFault {
  Digest256 id;
  bool missing = false;
};

// Reads the trees from `root` out of `objects`: every entry (sorted by
// path) and every tree id. Each tree is checked against its name (SHA-256)
// and its directory; a failure is kData (kNotFound for a missing tree)
// naming the tree, with `*fault` set when given.
Status ReadTrees(Env& env, const ObjectStore& objects, const Digest256& root,
                 std::vector<syncproto::FileEntry>* files, TreeIds* ids,
                 TreeFault* fault = nullptr);

}  // namespace lifeboat::catalog

#endif  // LIFEBOAT_CATALOG_TREES_H_
