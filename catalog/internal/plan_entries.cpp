#include "catalog/internal/plan_entries.h"

#include <algorithm>

#include "catalog/trees.h"

namespace lifeboat::catalog::internal {
namespace {

using syncproto::FileEntry;

// The held entries but the removed ones, with the answered ones replacing
// or adding: one pass over both.
EntryList Merge(const EntryList& held, const std::set<std::string>& removed,
                const std::map<std::string, FileEntry>& answered) {
  EntryList next;
  next.reserve(held.size() + answered.size());
  auto a = answered.begin();
  for (const FileEntry& h : held) {
    for (; a != answered.end() && a->first < h.path; ++a) next.push_back(a->second);
    if (a != answered.end() && a->first == h.path) {
      next.push_back((a++)->second);
    } else if (removed.empty() || !removed.count(h.path)) {
      next.push_back(h);
    }
  }
  for (; a != answered.end(); ++a) next.push_back(a->second);
  return next;
}

}  // namespace

std::vector<std::string> DeltaChanges(const EntryList& held, const std::set<std::string>& removed,
                                      const std::map<std::string, FileEntry>& answered) {
  std::vector<std::string> changed;
  for (const auto& [path, f] : answered) {
    const size_t k = FindEntry(held, path);
    if (k == held.size() || !(held[k] == f)) changed.push_back(path);
  }
  for (const std::string& path : removed) {
    if (!answered.count(path) && FindEntry(held, path) != held.size()) changed.push_back(path);
  }
  std::sort(changed.begin(), changed.end());
  return changed;
}

namespace {

// Each insertion or erasure in place moves the list's tail: past this many,
// one merge pass over the list is cheaper (a delta adding 100k files to
// 100k held would otherwise move ~10^10 entries).
constexpr size_t kMaxMovesInPlace = 64;

// ApplyChanges as one pass: `files` rebuilt, its unchanged entries moved.
void MergeChanges(EntryList* files, const std::vector<std::string>& changed,
                  const EntryList& source) {
  EntryList next;
  next.reserve(files->size() + changed.size());
  auto c = changed.begin();
  auto take = [&](const std::string& path) {
    if (const size_t k = FindEntry(source, path); k != source.size()) next.push_back(source[k]);
  };
  for (FileEntry& f : *files) {
    for (; c != changed.end() && *c < f.path; ++c) take(*c);
    if (c != changed.end() && *c == f.path) {
      take(*c++);
    } else {
      next.push_back(std::move(f));
    }
  }
  for (; c != changed.end(); ++c) take(*c);
  *files = std::move(next);
}

}  // namespace

void ApplyChanges(EntryList* files, const std::vector<std::string>& changed,
                  const EntryList& source) {
  size_t moves = 0;
  for (const std::string& path : changed) {
    const bool held = FindEntry(*files, path) != files->size();
    if (held != (FindEntry(source, path) != source.size())) ++moves;
  }
  if (moves > kMaxMovesInPlace) return MergeChanges(files, changed, source);
  for (const std::string& path : changed) {
    auto at = std::lower_bound(files->begin(), files->end(), path,
                               [](const FileEntry& f, const std::string& p) { return f.path < p; });
    const bool held = at != files->end() && at->path == path;
    const size_t k = FindEntry(source, path);
    if (k == source.size()) {
      if (held) files->erase(at);
    } else if (held) {
      *at = source[k];
    } else {
      files->insert(at, source[k]);
    }
  }
}

size_t FindEntry(const EntryList& files, std::string_view path) {
  auto it = std::lower_bound(files.begin(), files.end(), path,
                             [](const FileEntry& f, std::string_view p) { return f.path < p; });
  return it != files.end() && it->path == path ? static_cast<size_t>(it - files.begin())
                                               : files.size();
}

NextEntries PlanEntries(const EntryList& held, const std::set<std::string>& removed,
                        const std::map<std::string, FileEntry>& answered, bool full) {
  NextEntries out;
  if (full) {
    EntryList next = Merge(EntryList(), {}, answered);
    out.changed = ChangedPaths(held, next);
    if (!out.changed.empty()) out.files = std::move(next);
    return out;
  }
  out.changed = DeltaChanges(held, removed, answered);
  if (!out.changed.empty()) out.files = Merge(held, removed, answered);
  return out;
}

}  // namespace lifeboat::catalog::internal
