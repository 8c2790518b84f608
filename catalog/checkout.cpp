#include "catalog/checkout.h"

#include <algorithm>
#include <unordered_set>

namespace lifeboat::catalog {

using syncproto::EntryKind;
using syncproto::FileEntry;

namespace {

// The same object on disk: a checkout entry that needs no change.
bool SameOnDisk(const FileEntry& a, const FileEntry& b) {
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case EntryKind::kFile:
      return a.sha256 == b.sha256;
    case EntryKind::kSymlink:
      return a.target == b.target;
    case EntryKind::kDir:
      return true;
  }
  return false;
}

class Maker {
 public:
  Maker(Env& env, ObjectPathFn object_path, std::string dir)
      : env_(env), object_path_(std::move(object_path)), dir_(std::move(dir)) {
    known_.insert(dir_);
  }

  Status Make(const FileEntry& e) {
    const std::string path = dir_ + "/" + e.path;
    RETURN_IF_ERROR(EnsureParents(e.path));
    switch (e.kind) {
      case EntryKind::kDir: {
        auto st = env_.Stat(path);
        if (st.ok() && st->type == FileType::kDirectory) {
          known_.insert(path);
          return Status::Ok();
        }
        RETURN_IF_ERROR(env_.MakeDir(path, 0700));
        known_.insert(path);
        return Status::Ok();
      }
      case EntryKind::kSymlink:
        return env_.Symlink(e.target, path);
      case EntryKind::kFile:
        return LinkObject(e, path);
    }
    return InternalError("unknown entry kind at " + path);
  }

 private:
  Status LinkObject(const FileEntry& e, const std::string& path) {
    const std::string object = object_path_(e.sha256);
    Status linked = env_.Link(object, path);
    if (linked.ok()) return linked;
    if (linked.code() == Code::kNotFound) {
      return DataError("object " + e.sha256.Hex() + " of " + e.path +
                       " is missing from the catalog (lifeboat catalog verify names all such)");
    }
    // Another filesystem, or the inode's link limit: a copy of its own.
    return env_.CopyFile(object, path, 0400);
  }

  // Every directory above `rel` is a real directory under dir_ (lstat), made
  // 0700 when missing.
  Status EnsureParents(const std::string& rel) {
    std::string path = dir_;
    for (size_t slash = rel.find('/'); slash != std::string::npos;
         slash = rel.find('/', slash + 1)) {
      path = dir_ + "/" + rel.substr(0, slash);
      if (known_.count(path)) continue;
      auto st = env_.Stat(path);
      if (!st.ok()) {
        if (st.status().code() != Code::kNotFound) return st.status();
        RETURN_IF_ERROR(env_.MakeDir(path, 0700));
      } else if (st->type != FileType::kDirectory) {
        return DataError("refusing to write under " + path + ": not a directory");
      }
      known_.insert(path);
    }
    return Status::Ok();
  }

  Env& env_;
  ObjectPathFn object_path_;
  std::string dir_;
  std::unordered_set<std::string> known_;
};

ObjectPathFn PathsIn(const ObjectStore& objects) {
  return [&objects](const Digest256& id) { return objects.PathOf(id); };
}

// The entry at `path` in `files` (sorted by path), or null.
const FileEntry* Find(const std::vector<FileEntry>& files, const std::string& path) {
  auto it = std::lower_bound(files.begin(), files.end(), path,
                             [](const FileEntry& f, const std::string& p) { return f.path < p; });
  return it != files.end() && it->path == path ? &*it : nullptr;
}

Status RemoveEntry(Env& env, const std::string& dir, const FileEntry& e) {
  const std::string path = dir + "/" + e.path;
  Status st = e.kind == EntryKind::kDir ? env.RemoveDir(path) : env.RemoveFile(path);
  return st.code() == Code::kNotFound ? Status::Ok() : st;
}

}  // namespace

Status BuildCheckout(Env& env, const ObjectStore& objects, const std::vector<FileEntry>& entries,
                     const std::string& dir) {
  RETURN_IF_ERROR(env.MakeDir(dir, 0700));
  return FillCheckout(env, objects, entries, dir);
}

Status FillCheckout(Env& env, const ObjectStore& objects, const std::vector<FileEntry>& entries,
                    const std::string& dir) {
  return FillCheckout(env, PathsIn(objects), entries, dir);
}

Status FillCheckout(Env& env, const ObjectPathFn& object_path,
                    const std::vector<FileEntry>& entries, const std::string& dir) {
  Maker maker(env, object_path, dir);  // a directory there already is taken as it is
  for (const FileEntry& e : entries) RETURN_IF_ERROR(maker.Make(e));
  return Status::Ok();
}

Status UpdateCheckout(Env& env, const ObjectStore& objects, const std::vector<FileEntry>& from,
                      const std::vector<FileEntry>& to, const std::vector<std::string>& changed,
                      const std::string& dir) {
  // Each changed path's entry on both sides (null: not there).
  std::vector<std::pair<const FileEntry*, const FileEntry*>> diff;
  diff.reserve(changed.size());
  for (const std::string& path : changed) {
    const FileEntry* a = Find(from, path);
    const FileEntry* b = Find(to, path);
    if (a != nullptr && b != nullptr && SameOnDisk(*a, *b)) continue;
    diff.emplace_back(a, b);
  }
  // Deepest first: a directory's entries sort after it.
  for (auto it = diff.rbegin(); it != diff.rend(); ++it) {
    if (it->first != nullptr) RETURN_IF_ERROR(RemoveEntry(env, dir, *it->first));
  }
  Maker maker(env, PathsIn(objects), dir);
  for (const auto& [a, b] : diff) {
    if (b != nullptr) RETURN_IF_ERROR(maker.Make(*b));
  }
  return Status::Ok();
}

}  // namespace lifeboat::catalog
