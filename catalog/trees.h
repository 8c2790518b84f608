// Generation trees: how a generation's entries are stored so that a new
// generation costs what changed (docs/catalog.md, section 3).
//
// The entries of one generation of an instance (export paths such as
// "datasets/<uuid>/d/f", sorted bytewise) are split at the directories
// that are entries: the tree of directory entry D lists D's **members**,
// the entries below D with no entry between them and D (its children,
// and the entries under a directory the peer did not list). A member
// directory with few descendants is listed **inline**: its descendants
// are members of D's tree too (TreeShape says which); any other member
// with descendants carries the id of its own tree. The members of no
// directory (vms/<uuid>.json, sapi/<uuid>.json, datasets/<uuid>) are the
// **top**, listed in the generation's description. A tree is an object
// (objects.h) named by the SHA-256 of its text, so the description's
// digest in catalog.json covers every entry (a Merkle tree).
//
// Which directories are inline is decided from the entries alone (the
// same entries always give the same trees); a reader takes any shape: a
// member may be anywhere below its tree's directory, and trees written
// before inlining (one per directory) read and build on as they are.
//
// A directory whose subtree did not change since the previous generation
// keeps its tree: a pull that changes k entries writes the trees of the
// directories on the paths from those k entries up to the top, and no
// other. Trees are shared by every generation (of any instance) with the
// same subtree, kept alive and collected with the file objects.
//
// Tree text (UTF-8 JSON, one member per line, in bytewise path order; each
// member as a description's entry, with its full export path; names that
// are not UTF-8 use the "<key>_hex" keys of base/text.h):
//
//   {"lifeboat_tree":1,"dir":"datasets/<uuid>","entries":[
//   {"kind":"file","path":"datasets/<uuid>/f",...},
//   {"kind":"dir","path":"datasets/<uuid>/d",...,"tree":"<sha256 hex>"}
//   ]}
#ifndef LIFEBOAT_CATALOG_TREES_H_
#define LIFEBOAT_CATALOG_TREES_H_

#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/env.h"
#include "base/sha256.h"
#include "base/status.h"
#include "catalog/objects.h"
#include "syncproto/manifest.h"

namespace lifeboat::catalog {

// Directory entry path -> id of its tree, for every tree of one
// generation.
using TreeIds = std::map<std::string, Digest256>;

struct TreeText {
  Digest256 id;  // SHA-256 of text
  std::string text;
  // Its members' objects, in member order: each file's and each subtree's
  // (what the tree holds a reference to, objects.h ObjectRefs::AddTree).
  std::vector<Digest256> children;
};

struct BuiltTrees {
  std::string top;                     // the top's members: a JSON array, for the description
  std::shared_ptr<const TreeIds> ids;  // every tree of the generation
  std::vector<TreeText> encoded;       // the trees encoded by this call (children first)
  // The top's members' objects (each top file's and each top directory's
  // tree): what the generation itself references (ObjectRefs).
  std::vector<Digest256> top_ids;
};

// Which member directories a tree lists inline. Inlining saves a tree
// object (an inode, a write, a sync) per small directory, ~5,000 of them
// for 22k files in the bench's fixture; the budget bounds what a change
// in a small directory re-encodes (its parent's tree, at most
// max_inline_lines lines plus the parent's own members).
struct TreeShape {
  // A member directory with fewer descendants than this is inline...
  size_t inline_below = 16;
  // ...while its tree's lines (its direct members and the inline
  // descendants before it, in path order) stay within this.
  size_t max_inline_lines = 4096;
};

// The paths whose entry differs between two generations `a` and `b` (both
// sorted by path, paths unique): added, removed or changed. Sorted, unique.
// One pass over both (a full answer; a delta's planner finds them in
// O(changes), pull planning).
std::vector<std::string> ChangedPaths(const std::vector<syncproto::FileEntry>& a,
                                      const std::vector<syncproto::FileEntry>& b);

// The trees of `files` (one generation, sorted by path, paths unique).
// When `changed` (the paths whose entry differs from the previous
// generation's, as ChangedPaths gives them) and `prev_ids` (the previous
// generation's trees) are given, a directory with no changed path below it
// keeps its id and is not encoded: `encoded` holds only the trees of the
// changed directories and of their ancestors. Cost: the changed paths'
// ancestors, plus a copy of the kept ids. Without them every tree is
// encoded. A kept tree keeps its shape: a directory with a tree of an
// older shape keeps it until its parent's tree is encoded again.
BuiltTrees BuildTrees(const std::vector<syncproto::FileEntry>& files,
                      const std::vector<std::string>* changed, const TreeIds* prev_ids,
                      TreeShape shape = {});

// Where ReadTrees failed: the id of the tree that is missing, unreadable or
// not what its name says (zero when the failure is not one tree's).
struct TreeFault {
  Digest256 id;
  bool missing = false;
};

// Trees ReadTrees read and checked, by id: reading many generations that
// share trees (Store::Open reads every retained one) parses each distinct
// tree once. Holds the members of every tree read: keep it only while
// reading. A tree that failed a check is not kept. Not thread-safe.
struct TreeCache {
  struct Tree {
    std::string dir;
    std::vector<syncproto::FileEntry> members;
    std::vector<std::pair<std::string, Digest256>> subtrees;  // (member path, its tree)
  };
  std::unordered_map<Digest256, Tree, Digest256Hash> trees;
};

// Reads a generation from its top (the description's "entries") and the
// trees below it out of `objects`: every entry (sorted by path) and every
// tree id. Each tree is checked against its name (SHA-256), its directory,
// and its members' paths; a failure is kData (kNotFound for a missing tree)
// naming the tree, with `*fault` set when given. With `cache`, a tree found
// there is not read again (its directory is still checked), and each tree
// read is added.
Status ReadTrees(Env& env, const ObjectStore& objects, const nlohmann::json& top,
                 std::vector<syncproto::FileEntry>* files, TreeIds* ids, TreeFault* fault = nullptr,
                 TreeCache* cache = nullptr);

}  // namespace lifeboat::catalog

#endif  // LIFEBOAT_CATALOG_TREES_H_
