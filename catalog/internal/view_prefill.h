// ViewPrefill: fills a bulk pull's view skeletons (PullTxn::ViewSkeletons:
// the directories of each new instance's view, made during the transfers)
// with their files on a thread of its own, while the commit stages its
// trees and descriptions and waits for their syncfs. A new instance's view
// is one hard link per file (~22k for the bench's first pull, 0.3-0.4 s on
// one thread): made after the commit point, as before, they were a
// sequential tail of every first pull.
//
// Before the commit adopts them, this pull's objects are at their staged
// paths: a link to the staged file is a link to the object, since adoption
// renames that file (or its whole fan-out directory) into objects/ and the
// inode stays the same. The one exception is an object another pull adopted
// first (ObjectStore::AdoptStaged then drops the staged copy): the caller
// relinks those entries to the adopted object (Relink).
//
// The skeletons stay under the pull's staging directory; nothing here is
// visible to a reader until RefreshView moves a filled skeleton into place
// after the commit point. Best effort: a skeleton that could not be filled
// is reported as not filled, and the caller discards it (the view is then
// built after the commit point, as without a prefill).
//
// Join() must be called (or the destructor runs it) before the staged
// objects move: the links are made by path.
#ifndef LIFEBOAT_CATALOG_INTERNAL_VIEW_PREFILL_H_
#define LIFEBOAT_CATALOG_INTERNAL_VIEW_PREFILL_H_

#include <string>
#include <thread>
#include <vector>

#include "base/env.h"
#include "base/sha256.h"
#include "base/status.h"
#include "catalog/objects.h"
#include "syncproto/manifest.h"

namespace lifeboat::catalog::internal {

class ViewPrefill {
 public:
  struct View {
    const std::vector<syncproto::FileEntry>* entries;  // sorted by path; outlives Join()
    std::string skeleton;                              // an existing directory
  };

  // Starts filling `views`. `staged` (sorted) are the ids of this pull's
  // objects, linked at ObjectStore::StagedPath(staged_dir, id); every other
  // file's object is held in `objects` (pinned by the pull).
  ViewPrefill(Env& env, const ObjectStore& objects, std::string staged_dir,
              std::vector<Digest256> staged, std::vector<View> views);
  ~ViewPrefill();  // Join()
  ViewPrefill(const ViewPrefill&) = delete;
  ViewPrefill& operator=(const ViewPrefill&) = delete;

  // Waits for the thread. Then filled()[i] says whether views[i] holds all
  // its entries. Idempotent.
  void Join();
  const std::vector<View>& views() const { return views_; }
  const std::vector<bool>& filled() const { return filled_; }

  // After adoption: each file of `entries` in the filled `skeleton` whose
  // object is among `not_adopted` (sorted: ids whose staged copy was
  // dropped because the object was there already) linked again, to the
  // object in `objects`.
  static Status Relink(Env& env, const ObjectStore& objects,
                       const std::vector<syncproto::FileEntry>& entries,
                       const std::vector<Digest256>& not_adopted, const std::string& skeleton);

 private:
  void Run();

  Env& env_;
  const ObjectStore& objects_;
  const std::string staged_dir_;
  const std::vector<Digest256> staged_;
  const std::vector<View> views_;
  std::vector<bool> filled_;
  std::thread thread_;
};

}  // namespace lifeboat::catalog::internal

#endif  // LIFEBOAT_CATALOG_INTERNAL_VIEW_PREFILL_H_
