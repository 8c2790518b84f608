// The exporter's stat cache (exports/exporter.cpp): what a scan knows about
// every export path, grouped by the export directory that holds it, so that
// a scan costs what changed and not what is exported. Not part of the public
// API: include only from the exporter, its state file and their tests.
//
// A Cache is immutable once built and made of shared, immutable directories
// (CacheDir). A cache built from another (CacheBuilder::Keep, Finish with a
// previous cache, Cache::With) holds the very same CacheDir objects for the
// directories that did not change. So copying a cache, telling whether two
// are equal and diffing them cost O(directories) plus the entries of the
// directories that differ: one edit in 100k files touches one directory.
#ifndef LIFEBOAT_EXPORTS_INTERNAL_EXPORT_CACHE_H_
#define LIFEBOAT_EXPORTS_INTERNAL_EXPORT_CACHE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/digest.h"
#include "base/sha256.h"
#include "syncproto/manifest.h"

namespace lifeboat::exports::internal {

enum class ParseAs : uint8_t { kNone = 0, kPayload = 1, kImageManifest = 2 };

// The metadata parsed from a VM payload or an image manifest (a few dozen
// entries of an export carry one; shared and immutable so copying an entry is cheap).
struct Parsed {
  std::string error;  // "" when the parse succeeded
  std::string uuid, alias, service, image_uuid, origin;
  bool operator==(const Parsed&) const = default;
};

const Parsed& NoParse();

// What the scan knows about one export path: the fields of its manifest
// entry, the stat key it was hashed under, and the metadata parsed from it.
// Kept flat (one path string, no per-entry copy of the FileEntry): at 20k+
// files the cache is the exporter's main memory cost.
struct CacheEntry {
  std::string path;                      // export path
  std::string local_path;                // not persisted: set by every scan
  std::string target;                    // symlinks
  std::string hardlink_of;               // set by every scan (GroupHardlinks)
  std::shared_ptr<const Parsed> parsed;  // null unless parse != kNone
  Digest128 digest;
  Digest256 sha256;  // files
  uint64_t size = 0;
  uint64_t dev = 0;
  uint64_t ino = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;
  uint32_t mode = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t nlink = 1;  // not persisted: set by every scan
  syncproto::EntryKind kind = syncproto::EntryKind::kFile;
  ParseAs parse = ParseAs::kNone;
  bool racy = false;     // changed too recently to trust the stat key next time
  bool exported = true;  // false: cached only (a payload of a filtered-out service)

  const Parsed& meta() const { return parsed ? *parsed : NoParse(); }

  syncproto::FileEntry ToFileEntry() const;

  // The fields served in the manifest (FileEntry's), path aside.
  bool SameServed(const CacheEntry& o) const {
    return kind == o.kind && size == o.size && mode == o.mode && mtime_ns == o.mtime_ns &&
           digest == o.digest && sha256 == o.sha256 && target == o.target && uid == o.uid &&
           gid == o.gid && hardlink_of == o.hardlink_of;
  }

  // The fields the state file keeps (all but local_path and nlink).
  bool SamePersisted(const CacheEntry& o) const {
    return path == o.path && SameServed(o) && dev == o.dev && ino == o.ino &&
           ctime_ns == o.ctime_ns && parse == o.parse && racy == o.racy && exported == o.exported &&
           meta() == o.meta();
  }

  // Everything, so that a scan that found exactly this can keep the old entry.
  bool Identical(const CacheEntry& o) const {
    return SamePersisted(o) && local_path == o.local_path && nlink == o.nlink;
  }
};

// The export directory of `path`: everything before its last '/', "" for a
// top-level path.
std::string_view ParentOf(std::string_view path);

// The entries whose parent (ParentOf) is `dir`: sorted by path (bytewise),
// unique, never empty.
struct CacheDir {
  std::string dir;
  std::vector<CacheEntry> entries;

  const CacheEntry* Find(std::string_view path) const;
};

class Cache {
 public:
  using DirPtr = std::shared_ptr<const CacheDir>;

  // The entry of `path`, or null. O(log directories + log entries of one).
  const CacheEntry* Find(std::string_view path) const;
  // The directory `dir` (its entries), or null when it holds none.
  const DirPtr* FindDir(std::string_view dir) const;

  const std::vector<DirPtr>& dirs() const { return dirs_; }  // sorted by dir
  size_t size() const { return size_; }                      // entries
  bool empty() const { return size_ == 0; }

  // Every entry in path order (bytewise): the order of a full manifest and
  // of the state's base. O(n log n): for full answers and compactions only.
  std::vector<const CacheEntry*> Sorted() const;

  // True when both hold exactly the same directory objects (so the same entries).
  bool SharesAll(const Cache& o) const;

  // This cache with the paths of `removes` taken out and `upserts` put
  // (replacing entries of the same path; an upsert wins over a remove of its
  // path). Directories neither touches are shared.
  Cache With(std::vector<CacheEntry> upserts, const std::vector<std::string>& removes) const;

 private:
  friend class CacheBuilder;
  std::vector<DirPtr> dirs_;
  size_t size_ = 0;
};

// Calls, for every path in `from` or `to` outside the directories both share:
// removed(old) for a path only in `from`, added(entry) for one only in `to`,
// both(old, entry) for one in each (equal or not). Directories in order,
// entries in path order within each.
void DiffCaches(const Cache& from, const Cache& to,
                const std::function<void(const CacheEntry&)>& removed,
                const std::function<void(const CacheEntry&)>& added,
                const std::function<void(const CacheEntry&, const CacheEntry&)>& both);

// Builds a Cache from entries added in any order and directories kept whole
// from another cache. Not thread-safe.
class CacheBuilder {
 public:
  // Adds `e`; a later add of the same path replaces the earlier one. Returns
  // the stored entry, valid until the next Add, PopLast or Keep in its directory.
  CacheEntry& Add(CacheEntry e);

  // Takes back the entry added last to directory `dir` (one must be there).
  void PopLast(std::string_view dir);

  // Holds `dir` (a directory of another cache) whole, shared. An Add to the
  // same directory afterwards copies it first.
  void Keep(const Cache::DirPtr& dir);

  // Calls `f` on every entry added (not on kept directories), which it may
  // change (the path excepted).
  void ForEachAdded(const std::function<void(CacheEntry&)>& f);

  // The cache. A directory built Identical to the same directory of
  // `previous` is replaced by previous's object: the two then share it, and
  // SharesAll / DiffCaches see it unchanged. Leaves the builder empty.
  Cache Finish(const Cache* previous = nullptr);

 private:
  struct Slot {
    Cache::DirPtr kept;
    std::vector<CacheEntry> added;
  };
  Slot& SlotOf(std::string_view dir);

  std::map<std::string, Slot, std::less<>> slots_;
  Slot* last_ = nullptr;  // the slot of the last Add (most adds go to the same directory)
  std::string last_dir_;
};

}  // namespace lifeboat::exports::internal

#endif  // LIFEBOAT_EXPORTS_INTERNAL_EXPORT_CACHE_H_
