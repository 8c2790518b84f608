#include "exports/internal/export_cache.h"

#include <algorithm>
#include <iterator>
#include <optional>
#include <utility>

namespace lifeboat::exports::internal {

namespace {

bool PathLess(const CacheEntry& a, const CacheEntry& b) { return a.path < b.path; }

// `entries` sorted by path with one entry per path: of equal paths the one
// added last stays (as a map assignment would).
void SortUnique(std::vector<CacheEntry>* entries) {
  if (!std::is_sorted(entries->begin(), entries->end(), PathLess)) {
    std::stable_sort(entries->begin(), entries->end(), PathLess);
  }
  auto out = entries->begin();
  for (auto it = entries->begin(); it != entries->end(); ++it) {
    if (out != entries->begin() && std::prev(out)->path == it->path) {
      *std::prev(out) = std::move(*it);
    } else {
      if (out != it) *out = std::move(*it);
      ++out;
    }
  }
  entries->erase(out, entries->end());
}

bool SameEntries(const std::vector<CacheEntry>& a, const std::vector<CacheEntry>& b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(),
                    [](const CacheEntry& x, const CacheEntry& y) { return x.Identical(y); });
}

auto DirLess() {
  return [](const Cache::DirPtr& d, std::string_view dir) { return d->dir < dir; };
}

}  // namespace

const Parsed& NoParse() {
  static const Parsed none;
  return none;
}

syncproto::FileEntry CacheEntry::ToFileEntry() const {
  syncproto::FileEntry f;
  f.path = path;
  f.kind = kind;
  f.size = size;
  f.mode = mode;
  f.mtime_ns = mtime_ns;
  f.digest = digest;
  f.sha256 = sha256;
  f.target = target;
  f.uid = uid;
  f.gid = gid;
  f.hardlink_of = hardlink_of;
  return f;
}

std::string_view ParentOf(std::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? std::string_view() : path.substr(0, slash);
}

// ---- CacheDir / Cache ----------------------------------------------------------

const CacheEntry* CacheDir::Find(std::string_view path) const {
  auto it = std::lower_bound(entries.begin(), entries.end(), path,
                             [](const CacheEntry& c, std::string_view p) { return c.path < p; });
  return it != entries.end() && it->path == path ? &*it : nullptr;
}

const Cache::DirPtr* Cache::FindDir(std::string_view dir) const {
  auto it = std::lower_bound(dirs_.begin(), dirs_.end(), dir, DirLess());
  return it != dirs_.end() && (*it)->dir == dir ? &*it : nullptr;
}

const CacheEntry* Cache::Find(std::string_view path) const {
  const DirPtr* dir = FindDir(ParentOf(path));
  return dir == nullptr ? nullptr : (*dir)->Find(path);
}

std::vector<const CacheEntry*> Cache::Sorted() const {
  std::vector<const CacheEntry*> out;
  out.reserve(size_);
  for (const DirPtr& d : dirs_) {
    for (const CacheEntry& c : d->entries) out.push_back(&c);
  }
  std::sort(out.begin(), out.end(),
            [](const CacheEntry* a, const CacheEntry* b) { return a->path < b->path; });
  return out;
}

bool Cache::SharesAll(const Cache& o) const { return dirs_ == o.dirs_; }

Cache Cache::With(std::vector<CacheEntry> upserts, const std::vector<std::string>& removes) const {
  // The changes by directory, then by path (nullopt: removed).
  using Changes = std::map<std::string, std::optional<CacheEntry>, std::less<>>;
  std::map<std::string, Changes, std::less<>> by_dir;
  for (const std::string& path : removes) by_dir[std::string(ParentOf(path))][path] = std::nullopt;
  for (CacheEntry& c : upserts) {
    Changes& changes = by_dir[std::string(ParentOf(c.path))];
    std::string path = c.path;
    changes[std::move(path)] = std::move(c);
  }
  CacheBuilder b;
  for (const DirPtr& d : dirs_) {
    if (!by_dir.count(d->dir)) b.Keep(d);
  }
  for (auto& [dir, changes] : by_dir) {
    const DirPtr* old = FindDir(dir);
    if (old != nullptr) {
      for (const CacheEntry& c : (*old)->entries) {
        if (!changes.count(c.path)) b.Add(c);
      }
    }
    for (auto& [path, entry] : changes) {
      if (entry) b.Add(std::move(*entry));
    }
  }
  return b.Finish(this);
}

void DiffCaches(const Cache& from, const Cache& to,
                const std::function<void(const CacheEntry&)>& removed,
                const std::function<void(const CacheEntry&)>& added,
                const std::function<void(const CacheEntry&, const CacheEntry&)>& both) {
  static const std::vector<CacheEntry> kNone;
  auto f = from.dirs().begin(), fe = from.dirs().end();
  auto t = to.dirs().begin(), te = to.dirs().end();
  while (f != fe || t != te) {
    const std::vector<CacheEntry>* o = &kNone;
    const std::vector<CacheEntry>* n = &kNone;
    if (t == te || (f != fe && (*f)->dir < (*t)->dir)) {
      o = &(*f++)->entries;
    } else if (f == fe || (*t)->dir < (*f)->dir) {
      n = &(*t++)->entries;
    } else {
      const bool shared = *f == *t;
      o = &(*f++)->entries;
      n = &(*t++)->entries;
      if (shared) continue;
    }
    auto oi = o->begin();
    auto ni = n->begin();
    while (oi != o->end() || ni != n->end()) {
      if (ni == n->end() || (oi != o->end() && oi->path < ni->path)) {
        removed(*oi++);
      } else if (oi == o->end() || ni->path < oi->path) {
        added(*ni++);
      } else {
        both(*oi++, *ni++);
      }
    }
  }
}

// ---- CacheBuilder --------------------------------------------------------------

CacheBuilder::Slot& CacheBuilder::SlotOf(std::string_view dir) {
  if (last_ != nullptr && last_dir_ == dir) return *last_;
  auto it = slots_.find(dir);
  if (it == slots_.end()) it = slots_.emplace(std::string(dir), Slot()).first;
  last_ = &it->second;
  last_dir_ = dir;
  return *last_;
}

CacheEntry& CacheBuilder::Add(CacheEntry e) {
  Slot& slot = SlotOf(ParentOf(e.path));
  if (slot.kept) {
    slot.added.insert(slot.added.begin(), slot.kept->entries.begin(), slot.kept->entries.end());
    slot.kept.reset();
  }
  return slot.added.emplace_back(std::move(e));
}

void CacheBuilder::PopLast(std::string_view dir) { SlotOf(dir).added.pop_back(); }

void CacheBuilder::Keep(const Cache::DirPtr& dir) {
  Slot& slot = SlotOf(dir->dir);
  if (slot.added.empty()) {
    slot.kept = dir;
    return;
  }
  // Added before: the kept entries go first, so the added ones replace them.
  slot.added.insert(slot.added.begin(), dir->entries.begin(), dir->entries.end());
}

void CacheBuilder::ForEachAdded(const std::function<void(CacheEntry&)>& f) {
  for (auto& [dir, slot] : slots_) {
    for (CacheEntry& c : slot.added) f(c);
  }
}

Cache CacheBuilder::Finish(const Cache* previous) {
  Cache out;
  out.dirs_.reserve(slots_.size());
  for (auto& [dir, slot] : slots_) {
    if (slot.kept) {
      out.size_ += slot.kept->entries.size();
      out.dirs_.push_back(std::move(slot.kept));
      continue;
    }
    if (slot.added.empty()) continue;
    SortUnique(&slot.added);
    out.size_ += slot.added.size();
    const Cache::DirPtr* same = previous == nullptr ? nullptr : previous->FindDir(dir);
    if (same != nullptr && SameEntries((*same)->entries, slot.added)) {
      out.dirs_.push_back(*same);
      continue;
    }
    auto d = std::make_shared<CacheDir>();
    d->dir = dir;
    d->entries = std::move(slot.added);
    out.dirs_.push_back(std::move(d));
  }
  slots_.clear();
  last_ = nullptr;
  last_dir_.clear();
  return out;
}

}  // namespace lifeboat::exports::internal
