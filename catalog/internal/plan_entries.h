// Pull planning over sorted entry lists (docs/catalog.md, section 4 "Plan"):
// the next generation of an instance from the held one and an answer. Pure
// functions, no I/O. Private to catalog/ (pull_txn.cpp and its tests).
#ifndef LIFEBOAT_CATALOG_INTERNAL_PLAN_ENTRIES_H_
#define LIFEBOAT_CATALOG_INTERNAL_PLAN_ENTRIES_H_

#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "syncproto/manifest.h"

namespace lifeboat::catalog::internal {

using EntryList = std::vector<syncproto::FileEntry>;

struct NextEntries {
  // The next generation's entries, sorted by path; none when nothing
  // differs from the held generation (the held list is the next one: no
  // copy made).
  std::optional<EntryList> files;
  // The paths whose entry differs from the held generation's (added,
  // removed or changed), sorted, unique: what trees.h BuildTrees and
  // checkout.h UpdateCheckout need to look at.
  std::vector<std::string> changed;
};

// The next generation of one instance. A delta (`full` false): the `held`
// entries but the `removed` paths (the answer's, of any instance), with
// the `answered` ones (this instance's) replacing or adding; an answered
// path wins over a removal of it. Cost: O((answered + removed) log held)
// to find what changed, and one copy of `held` only when something did.
// A full answer: `answered` alone, compared with `held` in one pass.
NextEntries PlanEntries(const EntryList& held, const std::set<std::string>& removed,
                        const std::map<std::string, syncproto::FileEntry>& answered, bool full);

// What a delta changes in `held`: each answered path whose entry is new
// or differs, each removed path held and not answered again. Sorted,
// unique (NextEntries::changed). O((answered + removed) log held).
std::vector<std::string> DeltaChanges(const EntryList& held, const std::set<std::string>& removed,
                                      const std::map<std::string, syncproto::FileEntry>& answered);

// Makes `files` (sorted by path) the next generation in place: each
// `changed` path (sorted) takes its entry in `source` (sorted by path), or
// is erased when `source` has none. Paths not listed are not looked at.
// O(changed log files) plus, for a few insertions or erasures, the moves of
// each; past a few dozen, one pass over `files` instead (O(files)).
void ApplyChanges(EntryList* files, const std::vector<std::string>& changed,
                  const EntryList& source);

// Index of `path` in `files` (sorted by path), or files.size().
size_t FindEntry(const EntryList& files, std::string_view path);

}  // namespace lifeboat::catalog::internal

#endif  // LIFEBOAT_CATALOG_INTERNAL_PLAN_ENTRIES_H_
