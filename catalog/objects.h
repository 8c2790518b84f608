// Objects: the file contents of the catalog, each stored once under the
// SHA-256 of its bytes (docs/catalog.md, section 1):
//
//   <data_dir>/objects/<first 2 hex>/<other 62 hex>
//
// An object is written under .staging/ (created read-only, kObjectMode),
// verified (size, XXH3 and SHA-256 of exactly the bytes written), made
// durable, and renamed in; it is never modified afterwards. One object
// serves every path, instance, generation and peer with that content, so a
// pull never transfers content the store holds, and a generation costs only
// the objects it adds.
//
// ObjectStore is the on-disk side (names, adopt, link, list, remove);
// ObjectRefs counts, in memory, how many retained generations and pulls in
// progress name each object: an object whose count reaches zero is garbage.
#ifndef LIFEBOAT_CATALOG_OBJECTS_H_
#define LIFEBOAT_CATALOG_OBJECTS_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/env.h"
#include "base/sha256.h"
#include "base/status.h"

namespace lifeboat::catalog {

// The mode of every object (and of every staged file that becomes one: it
// is created with it, so adopting it needs no chmod).
inline constexpr uint32_t kObjectMode = 0400;

class ObjectStore {
 public:
  // `dir` is <data_dir>/objects (created by the store's Open).
  ObjectStore(Env& env, std::string dir) : env_(env), dir_(std::move(dir)) {}

  const std::string& dir() const { return dir_; }
  std::string PathOf(const Digest256& id) const;

  // True when a regular file is there under the object's name (lstat: a
  // symlink planted there is not an object).
  bool Has(const Digest256& id) const;

  // Moves the verified and durable file `staged` (created with kObjectMode)
  // in as object `id`; its fan-out directory (made when missing, refused
  // when not a directory: never through a symlink) and, when made,
  // objects/ are added to `changed_dirs` for the caller to fsync. When the
  // object is there already, `staged` is removed instead: objects are
  // immutable, the first copy stays (`*was_held` says which, when given).
  Status Adopt(const std::string& staged, const Digest256& id, std::set<std::string>* changed_dirs,
               bool* was_held = nullptr);

  // Where a pull stages object `id` under `staged_dir`: the layout of
  // objects/ itself (<staged_dir>/<2 hex>/<62 hex>), so that AdoptStaged
  // can move a whole fan-out directory in.
  static std::string StagedPath(const std::string& staged_dir, const Digest256& id);

  // Adopts each of `ids`, staged (verified and durable) at
  // StagedPath(staged_dir, id). A fan-out directory objects/ lacks is moved
  // in whole, one rename, when its staged directory holds exactly the
  // staged objects named there (a first pull into an empty catalog adopts
  // 256 directories, not one file per object); every other object goes
  // through Adopt. Changed directories as Adopt, plus each directory moved
  // in (its ".." changed). The ids whose staged copy was dropped because
  // the object was there already (another pull adopted it first) are
  // appended to `already_held` when given.
  Status AdoptStaged(const std::string& staged_dir, const std::vector<Digest256>& ids,
                     std::set<std::string>* changed_dirs,
                     std::vector<Digest256>* already_held = nullptr);

  // What objects/ holds: every object (by name), and the paths of the
  // entries that are not objects (a name that is not <2 hex>/<62 hex>, or
  // a fan-out entry that is not a directory).
  struct Listing {
    std::vector<Digest256> ids;
    std::vector<std::string> strays;
  };
  // Fails only when objects/ cannot be listed; a fan-out directory that
  // cannot is skipped.
  Result<Listing> List() const;

  Status Remove(const Digest256& id) { return env_.RemoveFile(PathOf(id)); }

 private:
  bool HoldsExactly(const std::string& staged_fan, const std::vector<Digest256>& ids);

  Env& env_;
  std::string dir_;
};

// Counts references to objects. A reference comes from a retained
// generation (the objects of its top: docs/catalog.md section 3), a pull in
// progress (its pins), or a registered tree: a tree registered with AddTree
// holds one reference to each of its children (its members' file objects
// and subtrees) for as long as it is registered, and is unregistered when
// its own count drops to zero. So a generation counts only its top, and a
// tree shared by many generations counts its children once: adding or
// dropping a generation costs the trees it adds or frees, not its files.
//
// An object is garbage when its count is zero. Not thread-safe: the store
// guards it with its index mutex.
class ObjectRefs {
 public:
  // One more reference to each of `ids` (repeats count again).
  void Add(const std::vector<Digest256>& ids);
  // Registers tree `id` with its `children`: one reference to each. A tree
  // registered already keeps its children (same id, same text). The caller
  // must reference `id` (Add, or a registered parent) in the same critical
  // section: a registered tree is released only through its own count.
  void AddTree(const Digest256& id, const std::vector<Digest256>& children);
  // Decrements each of `ids`; those that reach zero are appended to
  // `freed`, and a registered tree among them is unregistered and releases
  // its children the same way.
  void Release(const std::vector<Digest256>& ids, std::vector<Digest256>* freed);
  uint32_t Count(const Digest256& id) const;
  bool IsTree(const Digest256& id) const { return trees_.count(id) != 0; }
  size_t size() const { return counts_.size(); }

 private:
  std::unordered_map<Digest256, uint32_t, Digest256Hash> counts_;
  std::unordered_map<Digest256, std::vector<Digest256>, Digest256Hash> trees_;
};

}  // namespace lifeboat::catalog

#endif  // LIFEBOAT_CATALOG_OBJECTS_H_
