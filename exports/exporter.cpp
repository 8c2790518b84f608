#include "exports/exporter.h"

#include <time.h>

#include <algorithm>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include "base/file_digest.h"
#include "base/log.h"
#include "base/memory.h"
#include "base/text.h"
#include "exports/dir_watch.h"
#include "exports/internal/export_state.h"
#include "syncproto/manifest_filter.h"

namespace lifeboat::exports {

using syncproto::EntryKind;
using syncproto::FileEntry;
using syncproto::ImageInfo;
using syncproto::InstanceInfo;
using syncproto::InstanceWarning;
using syncproto::Manifest;
using syncproto::ManifestAnswer;
using syncproto::ServiceFilter;

namespace {

using internal::Cache;
using internal::CacheBuilder;
using internal::CacheEntry;
using internal::ExportStateFile;
using internal::Journal;
using internal::JournalEntry;
using internal::ParseAs;
using internal::Parsed;
using internal::State;

// What a view serves: immutable, shared by the views of one scan (and, when
// a scan found nothing changed, by the views of the next scans too).
struct ScanResult {
  std::shared_ptr<const Manifest> header;  // node, generation, boot id, instances, images; no files
  std::shared_ptr<const Journal> journal;
  std::shared_ptr<const Cache> cache;  // the files served: entries, local paths, stat keys
  bool stable_devices = true;
};

// A symlink's entry size is 0 (FileEntry's convention), so its key ignores size:
// a new target changes ctime.
bool SameKey(const CacheEntry& c, const FileStat& st, bool use_dev) {
  const bool size_ok = c.kind == EntryKind::kSymlink || c.size == st.size;
  return (!use_dev || c.dev == st.dev) && c.ino == st.ino && size_ok && c.mtime_ns == st.mtime_ns &&
         c.ctime_ns == st.ctime_ns;
}

// The same inode: `ino`, and `dev` when devices are stable (use_dev).
bool SameInode(const FileStat& st, uint64_t dev, uint64_t ino, bool use_dev) {
  return st.ino == ino && (!use_dev || st.dev == dev);
}

bool SameFile(const FileStat& a, const FileStat& b) {
  return a.dev == b.dev && a.ino == b.ino && a.size == b.size && a.mtime_ns == b.mtime_ns &&
         a.ctime_ns == b.ctime_ns;
}

int64_t RealNowNs() {
  struct timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// ---- The scan --------------------------------------------------------------

// Directories (local paths) that must be listed on every scan even when the
// change watch calls them clean, because what the previous listing found in
// them can change without an event in them: see Scanner::ListAgain.
using DirSet = std::set<std::string>;

// How a scan may use the change watch (exports/dir_watch.h).
struct WatchUse {
  DirWatch* watch = nullptr;         // null: none (every directory is listed, nothing is watched)
  bool reuse = false;                // may reuse the previous scan's entries of clean directories
  const DirSet* unstable = nullptr;  // of the previous scan; required when reuse
};

class Scanner {
 public:
  Scanner(Env& env, const ExporterOptions& opts, const ServiceFilter& filter, const Cache& old,
          bool stable_devices, WatchUse watch = {})
      : env_(env),
        opts_(opts),
        filter_(filter),
        old_(old),
        use_dev_(stable_devices),
        watch_(watch) {}

  // Scans `snap` into cache(). Entries of a directory are produced in path
  // order, so Old() hits its hint.
  void Run(ProviderSnapshot& snap) {
    provider_warnings_ = snap.warnings();
    for (const ProviderWarning& w : provider_warnings_) {
      log::Warn("export: provider warning", {{"path", w.path},
                                             {"instance", w.instance_uuid},
                                             {"service", w.service},
                                             {"reason", w.reason}});
    }
    std::vector<const InstanceSource*> sources;
    for (const InstanceSource& src : snap.instances()) sources.push_back(&src);
    std::stable_sort(
        sources.begin(), sources.end(),
        [](const InstanceSource* a, const InstanceSource* b) { return a->uuid < b->uuid; });
    for (const InstanceSource* src : sources) ScanInstance(*src);
    std::set<std::string> needed;
    for (const InstanceInfo& i : instances_) {
      if (!i.image_uuid.empty()) needed.insert(i.image_uuid);
    }
    ScanImages(snap, needed);
    if (std::string app = snap.application_path(); !app.empty()) {
      AddFile(app, "sapi/application.json", ParseAs::kNone);
    }
    for (const auto& [svc, path] : snap.service_record_paths()) {
      if (!IsSafeName(svc) || !filter_.Matches(svc)) continue;
      AddFile(path, "sapi/services/" + svc + ".json", ParseAs::kNone);
    }
    std::sort(instances_.begin(), instances_.end(),
              [](const InstanceInfo& a, const InstanceInfo& b) { return a.uuid < b.uuid; });
    GroupHardlinks();
    cache_ = builder_.Finish(&old_);
  }

  // The scan's cache: it shares with the previous one every directory that
  // is the same (reused, or listed and found identical).
  Cache& cache() { return cache_; }
  std::vector<InstanceInfo>& instances() { return instances_; }
  std::vector<ImageInfo>& images() { return images_; }
  ScanStats& stats() { return stats_; }
  DirSet& unstable() { return unstable_; }
  // A file got a new hard link while some directories were reused: its
  // other names may sit in a reused directory, stale. The caller scans again
  // without reuse.
  bool needs_full_walk() const { return new_hardlink_ && stats_.reused_dirs > 0; }

 private:
  // Leaves `local` out of the export. While an instance is scanned, the
  // skip also becomes one of its warnings, named by `path` (its export
  // path; `local` when it has none).
  void Skip(const std::string& local, const std::string& reason, const std::string& path = "") {
    ++stats_.skipped;
    // Found, and warned about, again by the next scan (`local` may be the
    // directory whose listing failed).
    ListAgain(DirName(local));
    ListAgain(local);
    log::Warn("export: skipping", {{"path", local}, {"reason", reason}});
    if (warnings_ == nullptr) return;
    ++skipped_in_instance_;
    if (warnings_->size() >= syncproto::kMaxInstanceWarnings) return;
    const std::string& name = path.empty() ? local : path;
    warnings_->push_back({name.substr(0, syncproto::kMaxWarningPathBytes),
                          reason.substr(0, syncproto::kMaxWarningReasonBytes)});
  }

  // Adds the provider's warnings that concern instance `uuid` of `service`
  // to the ones being collected (logged once, in Run).
  void AddProviderWarnings(const std::string& uuid, const std::string& service) {
    for (const ProviderWarning& w : provider_warnings_) {
      const bool concerns = !w.instance_uuid.empty() ? w.instance_uuid == uuid
                            : !w.service.empty()     ? w.service == service
                                                     : true;
      if (!concerns || warnings_ == nullptr) continue;
      ++skipped_in_instance_;
      if (warnings_->size() >= syncproto::kMaxInstanceWarnings) continue;
      warnings_->push_back({w.path.substr(0, syncproto::kMaxWarningPathBytes),
                            w.reason.substr(0, syncproto::kMaxWarningReasonBytes)});
    }
  }

  // Starts collecting the skips of instance `uuid` into `*warnings`.
  void BeginWarnings(std::vector<InstanceWarning>* warnings) {
    warnings_ = warnings;
    skipped_in_instance_ = 0;
  }

  // Stops collecting; more skips than the wire carries end in a summary.
  void EndWarnings(const std::string& root) {
    if (warnings_ != nullptr && skipped_in_instance_ > warnings_->size()) {
      const size_t kept = syncproto::kMaxInstanceWarnings - 1;
      warnings_->resize(kept);
      warnings_->push_back(
          {root, std::to_string(skipped_in_instance_ - kept) + " more paths skipped"});
    }
    warnings_ = nullptr;
  }

  // The previous scan's entry for `path`. Entries of a directory are
  // visited in path order, so the entry after the last hit is tried first.
  const CacheEntry* Old(const std::string& path) {
    const std::string_view dir = internal::ParentOf(path);
    if (old_dir_ == nullptr || old_dir_->dir != dir) {
      const Cache::DirPtr* d = old_.FindDir(dir);
      if (d == nullptr) return nullptr;
      old_dir_ = d->get();
      hint_ = 0;
    }
    const std::vector<CacheEntry>& entries = old_dir_->entries;
    if (hint_ < entries.size() && entries[hint_].path == path) return &entries[hint_++];
    const CacheEntry* c = old_dir_->Find(path);
    if (c != nullptr) hint_ = static_cast<size_t>(c - entries.data()) + 1;
    return c;
  }

  // Files of one dataset tree that share an inode: each but the smallest
  // path names that one in hardlink_of. Only entries listed by this scan
  // can have other links: a directory holding one is never reused (ListAgain).
  void GroupHardlinks() {
    std::vector<CacheEntry*> linked;
    builder_.ForEachAdded([&](CacheEntry& c) {
      c.hardlink_of.clear();
      if (c.exported && c.kind == EntryKind::kFile && c.nlink >= 2 &&
          c.path.starts_with("datasets/")) {
        linked.push_back(&c);
      }
    });
    std::sort(linked.begin(), linked.end(),
              [](const CacheEntry* a, const CacheEntry* b) { return a->path < b->path; });
    std::map<std::tuple<std::string, uint64_t, uint64_t>, const CacheEntry*> first;
    for (CacheEntry* c : linked) {
      auto [it, inserted] =
          first.try_emplace({syncproto::InstanceOfPath(c->path), c->dev, c->ino}, c);
      if (!inserted) c->hardlink_of = it->second->path;
    }
  }

  void ScanInstance(const InstanceSource& src) {
    if (!IsSafeName(src.uuid)) {
      Skip(src.payload_path, "instance uuid is not a valid path component");
      return;
    }
    const std::string vm_path = "vms/" + src.uuid + ".json";
    CacheEntry* payload = AddFile(src.payload_path, vm_path, ParseAs::kPayload);
    if (payload == nullptr) return;
    auto drop = [&](const std::string& reason) {
      payload->exported = false;  // cached, so an unchanged bad payload is not read again
      --stats_.files;
      stats_.bytes -= payload->size;
      Skip(src.payload_path, reason);
    };
    const Parsed& meta = payload->meta();
    if (!meta.error.empty()) return drop(meta.error);
    if (meta.uuid != src.uuid) return drop("payload uuid \"" + meta.uuid + "\" does not match");
    if (meta.service.empty()) return drop("payload has no tags.smartdc_role");
    if (!filter_.Matches(meta.service)) {
      payload->exported = false;  // cached so the next scan need not read it to filter it
      --stats_.files;
      stats_.bytes -= payload->size;
      return;
    }
    // `payload` points into the scan's cache: used no more once other entries are added.
    InstanceInfo info{src.uuid, meta.alias, meta.service, meta.image_uuid, {}};
    if (!info.image_uuid.empty() && !IsSafeName(info.image_uuid)) {
      Skip(src.payload_path, "image_uuid is not a valid path component");
      info.image_uuid.clear();
    }
    const std::string root = "datasets/" + src.uuid;
    BeginWarnings(&info.warnings);
    AddProviderWarnings(src.uuid, info.service);
    if (!src.sapi_path.empty())
      AddFile(src.sapi_path, "sapi/" + src.uuid + ".json", ParseAs::kNone);
    if (!src.dataset_path.empty()) {
      auto st = env_.Stat(src.dataset_path);
      if (!st.ok() || st->type != FileType::kDirectory) {
        Skip(src.dataset_path,
             !st.ok()                         ? st.status().message()
             : st->type == FileType::kSymlink ? "dataset folder is a symlink (not followed)"
                                              : "dataset is not a directory",
             root);
      } else {
        AddDir(*st, src.dataset_path, root);
        Walk(src.dataset_path, root, 0, &*st);
      }
    }
    EndWarnings(root);
    instances_.push_back(std::move(info));
  }

  void ScanImages(ProviderSnapshot& snap, std::set<std::string> queue) {
    std::set<std::string> done;
    while (!queue.empty()) {
      std::string uuid = *queue.begin();
      queue.erase(queue.begin());
      if (!done.insert(uuid).second) continue;
      auto img = snap.Image(uuid);
      if (!img.ok()) {
        Skip("images/" + uuid, img.status().message());
        continue;
      }
      const std::string dir = "images/" + uuid;
      CacheEntry* m = AddFile(img->manifest_path, dir + "/manifest.json", ParseAs::kImageManifest);
      if (m == nullptr) continue;
      if (!m->meta().error.empty()) {
        Skip(img->manifest_path, m->meta().error);
        Unadd(m);
        continue;
      }
      std::string origin = m->meta().origin;
      if (!origin.empty() && !IsSafeName(origin)) {
        Skip(img->manifest_path, "origin is not a valid path component");
        origin.clear();
      }
      if (AddFile(img->file_path, dir + "/file", ParseAs::kNone) == nullptr) {
        Unadd(m);  // still the last entry added to its directory
        continue;
      }
      images_.push_back(ImageInfo{uuid, origin});
      if (!origin.empty()) queue.insert(origin);
    }
    std::sort(images_.begin(), images_.end(),
              [](const ImageInfo& a, const ImageInfo& b) { return a.uuid < b.uuid; });
  }

  // Takes back file entry `c`, the last one added to its directory
  // (neither exported nor cached).
  void Unadd(CacheEntry* c) {
    --stats_.files;
    stats_.bytes -= c->size;
    builder_.PopLast(internal::ParentOf(c->path));
  }

  // Adds the entries below directory `local_dir` (export path `export_dir`),
  // whose own entry was just added from `st` (null when it was reused: the
  // previous scan's entry `old` holds).
  void Walk(const std::string& local_dir, const std::string& export_dir, int depth,
            const FileStat* st, const CacheEntry* old = nullptr) {
    if (depth > 256) return Skip(local_dir, "directory tree deeper than 256 levels", export_dir);
    if (Reusable(local_dir, export_dir, st)) return Reuse(local_dir, export_dir, depth);
    // Watched before it is listed: a change after the listing is an event.
    // A new watch (or none) leaves a gap since the parent's listing stat'ed
    // this directory: the parent is listed again next time.
    if (watch_.watch != nullptr && watch_.watch->Watch(local_dir) != DirWatch::Outcome::kAlready) {
      ListAgain(DirName(local_dir));
    }
    ++stats_.listed_dirs;
    auto listing = env_.ListDirStat(local_dir);
    if (!listing.ok()) return Skip(local_dir, listing.status().message(), export_dir);
    // What was listed must be the directory its parent's listing found
    // there: a directory above it swapped for a symlink (by whoever can
    // write in the dataset) would otherwise export what lies outside.
    if (!SameInode(listing->dir, st != nullptr ? st->dev : old->dev,
                   st != nullptr ? st->ino : old->ino, use_dev_)) {
      return Skip(local_dir, "directory replaced while being scanned", export_dir);
    }
    std::vector<Env::StatEntry>* entries = &listing->entries;
    // Visited in the bytewise order of the export paths they produce: an
    // entry at its name, a directory's subtree at its name + "/" (so
    // "a" < "a-c" < "a.b" < "a/x" < "a0"), which is the cache's order.
    struct Step {
      std::string key;
      size_t index;
      bool subtree;
    };
    std::vector<Step> steps;
    steps.reserve(entries->size() + 8);
    for (size_t k = 0; k < entries->size(); ++k) {
      const Env::StatEntry& e = (*entries)[k];
      steps.push_back(Step{e.name, k, false});
      if (e.stat.ok() && e.stat->type == FileType::kDirectory) {
        steps.push_back(Step{e.name + "/", k, true});
      }
    }
    std::sort(steps.begin(), steps.end(),
              [](const Step& a, const Step& b) { return a.key < b.key; });
    std::vector<bool> valid(entries->size(), false);
    for (const Step& step : steps) {
      Env::StatEntry& e = (*entries)[step.index];
      std::string local = JoinPath(local_dir, e.name);
      std::string path;
      path.reserve(export_dir.size() + 1 + e.name.size());
      path.append(export_dir).append("/").append(e.name);
      if (step.subtree) {
        if (valid[step.index]) Walk(local, path, depth + 1, &*e.stat);
        continue;
      }
      if (Status ok = syncproto::ValidateExportPath(path); !ok.ok()) {
        Skip(local, ok.message(), path);
        continue;
      }
      if (!e.stat.ok()) {
        Skip(local, e.stat.status().message(), path);
        continue;
      }
      const FileStat& st = *e.stat;
      switch (st.type) {
        case FileType::kRegular:
          AddFile(std::move(local), std::move(path), ParseAs::kNone, &st);
          break;
        case FileType::kDirectory:
          AddDir(st, local, path);
          valid[step.index] = true;
          break;
        case FileType::kSymlink:
          AddSymlink(st, std::move(local), std::move(path));
          break;
        case FileType::kOther:
          Skip(local, "not a regular file, directory or symlink", path);
          break;
      }
    }
  }

  // True when the previous scan's entries of `local_dir` (export path
  // `export_dir`) still hold: the watch saw nothing change in it since it
  // was listed here, nothing in it made it unstable, and (when stat'ed by
  // this scan, `st`) it is the same directory with the same mtime and ctime:
  // a filesystem mounted over it or a symlink above it re-pointed raise no
  // event in the watched directory.
  bool Reusable(const std::string& local_dir, const std::string& export_dir, const FileStat* st) {
    if (!watch_.reuse || watch_.unstable->count(local_dir) || !watch_.watch->Clean(local_dir)) {
      return false;
    }
    const CacheEntry* dir = Old(export_dir);
    if (dir == nullptr || dir->kind != EntryKind::kDir || dir->local_path != local_dir) {
      return false;
    }
    return st == nullptr || (dir->ino == st->ino && (!use_dev_ || dir->dev == st->dev) &&
                             dir->mtime_ns == st->mtime_ns && dir->ctime_ns == st->ctime_ns);
  }

  // Keeps the previous scan's entries of a clean directory (shared, not
  // copied) and walks its subdirectories, each reused or listed on its own.
  void Reuse(const std::string& local_dir, const std::string& export_dir, int depth) {
    ++stats_.reused_dirs;
    const Cache::DirPtr* dir = old_.FindDir(export_dir);
    if (dir == nullptr) return;  // it held nothing
    builder_.Keep(*dir);
    for (const CacheEntry& c : (*dir)->entries) {
      switch (c.kind) {
        case EntryKind::kFile:
          Count(c);
          break;
        case EntryKind::kDir:
          ++stats_.dirs;
          Walk(JoinPath(local_dir, c.path.substr(export_dir.size() + 1)), c.path, depth + 1,
               nullptr, &c);
          break;
        case EntryKind::kSymlink:
          ++stats_.symlinks;
          break;
      }
    }
  }

  // Lists directory `dir` (local) again on the next scan whatever the watch
  // says, because of what this scan found in it: a skip (found and warned
  // about again), a symlink (its target may vanish elsewhere), a file
  // hashed too recently to trust (racy) or with other hard links (written
  // through a name in another directory, the event goes there).
  void ListAgain(const std::string& dir) {
    if (watch_.watch != nullptr) unstable_.insert(dir);
  }

  void AddDir(const FileStat& st, const std::string& local, const std::string& path) {
    CacheEntry c;
    c.path = path;
    c.kind = EntryKind::kDir;
    c.mode = st.mode;
    c.mtime_ns = st.mtime_ns;
    c.uid = st.uid;
    c.gid = st.gid;
    c.dev = st.dev;
    c.ino = st.ino;
    c.ctime_ns = st.ctime_ns;
    c.local_path = local;
    builder_.Add(std::move(c));
    ++stats_.dirs;
  }

  void AddSymlink(const FileStat& st, std::string local, std::string path) {
    CacheEntry c;
    const CacheEntry* old = Old(path);
    if (old != nullptr && old->kind == EntryKind::kSymlink && !old->racy &&
        SameKey(*old, st, use_dev_)) {
      c.target = old->target;
      c.digest = old->digest;
      c.dev = old->dev;
      c.ino = old->ino;
      c.ctime_ns = old->ctime_ns;
    } else {
      auto target = env_.ReadLink(local);
      if (!target.ok()) return Skip(local, target.status().message(), path);
      // Read by name: still the symlink the listing found (see AddFile).
      auto again = env_.Stat(local);
      if (!again.ok() || !SameInode(*again, st.dev, st.ino, use_dev_)) {
        return Skip(local, "replaced while being read", path);
      }
      c.target = *target;
      c.digest = Xxh3Digest(c.target);
      c.dev = st.dev;
      c.ino = st.ino;
      c.ctime_ns = st.ctime_ns;
    }
    c.kind = EntryKind::kSymlink;
    c.size = 0;
    c.mode = st.mode;
    c.mtime_ns = st.mtime_ns;
    c.uid = st.uid;
    c.gid = st.gid;
    c.exported = true;
    if (Status ok = syncproto::ValidateSymlinkTarget(path, c.target); !ok.ok()) {
      return Skip(local, ok.message(), path);
    }
    if (!Exists(env_, JoinPath(DirName(local), c.target))) {
      return Skip(local, "dangling symlink to \"" + c.target + "\"", path);
    }
    ListAgain(DirName(local));
    c.path = std::move(path);
    c.local_path = std::move(local);
    builder_.Add(std::move(c));
    ++stats_.symlinks;
  }

  // Adds regular file `local` as export path `path`, hashing it unless the
  // stat cache has it. Returns the new cache entry (valid until the next
  // add), or null when skipped.
  CacheEntry* AddFile(std::string local, std::string path, ParseAs parse,
                      const FileStat* known = nullptr) {
    FileStat st;
    if (known != nullptr) {
      st = *known;
    } else {
      auto s = env_.Stat(local);
      if (!s.ok()) {
        Skip(local, s.status().message(), path);
        return nullptr;
      }
      st = *s;
    }
    if (st.type != FileType::kRegular) {
      Skip(local, "not a regular file", path);
      return nullptr;
    }
    const CacheEntry* old = Old(path);
    if (st.nlink > 1) {
      ListAgain(DirName(local));
      if (old == nullptr || old->nlink < 2 || old->ino != st.ino) new_hardlink_ = true;
    }
    if (old != nullptr && old->kind == EntryKind::kFile && !old->racy && old->parse == parse &&
        SameKey(*old, st, use_dev_)) {
      CacheEntry c;
      c.path = std::move(path);
      c.local_path = std::move(local);
      c.parsed = old->parsed;
      c.digest = old->digest;
      c.sha256 = old->sha256;
      c.size = old->size;
      c.dev = st.dev;
      c.ino = old->ino;
      c.mtime_ns = old->mtime_ns;
      c.ctime_ns = old->ctime_ns;
      c.mode = st.mode;
      c.uid = st.uid;
      c.gid = st.gid;
      c.nlink = static_cast<uint32_t>(std::min<uint64_t>(st.nlink, UINT32_MAX));
      c.kind = EntryKind::kFile;
      c.parse = parse;
      c.racy = false;
      c.exported = true;
      Count(c);
      return &builder_.Add(std::move(c));
    }
    // A file found by a listing stays that inode: the path is opened and
    // stat'ed again by name, and a directory above it swapped for a symlink
    // meanwhile would lead outside the dataset (another inode).
    const bool keep_inode = known != nullptr;
    for (int attempt = 0; attempt < std::max(1, opts_.hash_attempts); ++attempt) {
      if (attempt > 0) {
        auto again = env_.Stat(local);
        if (!again.ok() || again->type != FileType::kRegular) {
          Skip(local, again.ok() ? "no longer a regular file" : again.status().message(), path);
          return nullptr;
        }
        if (keep_inode && !SameInode(*again, st.dev, st.ino, use_dev_)) {
          Skip(local, "replaced while being read", path);
          return nullptr;
        }
        st = *again;
      }
      auto file = env_.OpenRead(local);
      if (!file.ok()) {
        Skip(local, "unreadable: " + file.status().message(), path);
        return nullptr;
      }
      CacheEntry c;
      std::string content;
      uint64_t size = 0;
      Status hashed =
          HashOpenFile(**file, &c.digest, &size, parse == ParseAs::kNone ? nullptr : &content,
                       64ull << 20, st.size, &c.sha256);
      if (!hashed.ok()) {
        Skip(local, "unreadable: " + hashed.message(), path);
        return nullptr;
      }
      auto after = (*file)->Stat();
      ++stats_.hashed_files;
      stats_.hashed_bytes += size;
      if (!after.ok() || !SameFile(st, *after) || size != st.size) continue;  // changed: retry
      c.kind = EntryKind::kFile;
      c.size = size;
      c.mode = st.mode;
      c.mtime_ns = st.mtime_ns;
      c.uid = st.uid;
      c.gid = st.gid;
      c.dev = st.dev;
      c.nlink = static_cast<uint32_t>(std::min<uint64_t>(st.nlink, UINT32_MAX));
      c.ino = st.ino;
      c.ctime_ns = st.ctime_ns;
      const int64_t window_ns = opts_.racy_window_ms * 1000000;
      c.racy = window_ns > 0 && std::max(st.ctime_ns, st.mtime_ns) + window_ns > RealNowNs();
      if (c.racy) ListAgain(DirName(local));
      c.parse = parse;
      if (parse != ParseAs::kNone) c.parsed = Parse(content, local, parse);
      c.path = std::move(path);
      c.local_path = std::move(local);
      Count(c);
      return &builder_.Add(std::move(c));
    }
    Skip(local, "kept changing while being hashed", path);
    return nullptr;
  }

  void Count(const CacheEntry& c) {
    ++stats_.files;
    stats_.bytes += c.size;
  }

  static std::shared_ptr<const Parsed> Parse(const std::string& content, const std::string& local,
                                             ParseAs as) {
    auto p = std::make_shared<Parsed>();
    auto json = ParseJson(content, local);
    if (!json.ok()) {
      p->error = json.status().message();
      return p;
    }
    if (!json->is_object()) {
      p->error = local + ": not a JSON object";
      return p;
    }
    p->uuid = JsonString(*json, "uuid");
    if (as == ParseAs::kPayload) {
      p->alias = JsonString(*json, "alias");
      p->image_uuid = JsonString(*json, "image_uuid");
      auto tags = json->find("tags");
      if (tags != json->end()) p->service = JsonString(*tags, "smartdc_role");
    } else {
      p->origin = JsonString(*json, "origin");
    }
    return p;
  }

  Env& env_;
  const ExporterOptions& opts_;
  const ServiceFilter& filter_;
  const Cache& old_;
  bool use_dev_;
  const internal::CacheDir* old_dir_ = nullptr;  // see Old()
  size_t hint_ = 0;                              // in old_dir_
  CacheBuilder builder_;                         // what this scan found
  Cache cache_;                                  // built from builder_ by Run
  std::vector<InstanceInfo> instances_;
  std::vector<ImageInfo> images_;
  ScanStats stats_;
  WatchUse watch_;
  DirSet unstable_;                                   // see ListAgain
  bool new_hardlink_ = false;                         // see needs_full_walk
  std::vector<InstanceWarning>* warnings_ = nullptr;  // the scanned instance's (see Skip)
  size_t skipped_in_instance_ = 0;
  std::vector<ProviderWarning> provider_warnings_;  // of the snapshot being scanned
};

// ---- The view ----------------------------------------------------------------

class View final : public syncproto::ExportView {
 public:
  View(Env& env, std::shared_ptr<const ScanResult> scan, std::unique_ptr<ProviderSnapshot> snap)
      : env_(env), scan_(std::move(scan)), snap_(std::move(snap)) {}

  Result<ManifestAnswer> ManifestSince(uint64_t since, const std::string& boot_id,
                                       const std::vector<std::string>& services) override {
    const Manifest& m = *scan_->header;
    const Cache& cache = *scan_->cache;
    ManifestAnswer a = syncproto::AnswerHeader(m, since, boot_id);
    if (a.kind == ManifestAnswer::Kind::kUnchanged) return a;
    const syncproto::ManifestSelection selection(ServiceFilter(services), m.instances, m.images);
    a.manifest.instances = selection.instances();
    a.manifest.images = selection.images();
    const Journal& journal = *scan_->journal;
    const bool covered = boot_id == m.boot_id && since > 0 && since < m.generation &&
                         !journal.empty() && journal.front()->generation <= since + 1 &&
                         journal.back()->generation == m.generation;
    if (!covered) {
      a.kind = ManifestAnswer::Kind::kFull;
      a.manifest.files.reserve(cache.size());
      for (const CacheEntry* c : cache.Sorted()) {
        if (c->exported && selection.Includes(c->path))
          a.manifest.files.push_back(c->ToFileEntry());
      }
      return a;
    }
    a.kind = ManifestAnswer::Kind::kDelta;
    a.since_generation = since;
    std::set<std::string> touched;
    for (const auto& j : journal) {
      if (j->generation <= since) continue;
      touched.insert(j->added.begin(), j->added.end());
      touched.insert(j->changed.begin(), j->changed.end());
      touched.insert(j->removed.begin(), j->removed.end());
    }
    for (const std::string& path : touched) {
      const CacheEntry* c = cache.Find(path);
      if (c != nullptr && c->exported) {
        if (selection.Includes(path)) a.manifest.files.push_back(c->ToFileEntry());
      } else {
        a.removed.push_back(path);
      }
    }
    return a;
  }

  Result<std::unique_ptr<ReadableFile>> OpenFile(const std::string& path,
                                                 FileEntry* entry) override {
    const CacheEntry* f = scan_->cache->Find(path);
    if (f == nullptr || !f->exported || f->kind != EntryKind::kFile) {
      return NotFoundError("export has no file " + path);
    }
    ASSIGN_OR_RETURN(auto file, env_.OpenRead(f->local_path));
    ASSIGN_OR_RETURN(FileStat st, file->Stat());
    if ((scan_->stable_devices && st.dev != f->dev) || st.ino != f->ino || st.size != f->size ||
        st.mtime_ns != f->mtime_ns || st.ctime_ns != f->ctime_ns) {
      return TemporaryError("export file " + path + " (" + f->local_path +
                            ") changed since the scan; try again");
    }
    if (entry != nullptr) *entry = f->ToFileEntry();
    return file;
  }

 private:
  Env& env_;
  std::shared_ptr<const ScanResult> scan_;
  std::unique_ptr<ProviderSnapshot> snap_;  // released last: pins what scan_ points into
};

}  // namespace

// ---- Exporter ----------------------------------------------------------------

class Exporter::Impl {
 public:
  Impl(Env& env, Clock& clock, ExporterOptions opts)
      : env_(env), clock_(clock), opts_(std::move(opts)), filter_(opts_.services) {}

  Status Load() {
    ASSIGN_OR_RETURN(state_file_, ExportStateFile::Open(env_, opts_.state_dir, &state_));
    return Status::Ok();
  }

  // Scans, persists what changed, and adopts the result: the scan's view
  // data and the provider snapshot it points into.
  Result<std::pair<std::shared_ptr<const ScanResult>, std::unique_ptr<ProviderSnapshot>>> Scan() {
    std::lock_guard<std::mutex> scan_lock(scan_mu_);
    const int64_t start = clock_.MonotonicMs();
    ASSIGN_OR_RETURN(auto snap, opts_.provider->Snapshot(filter_));
    const bool stable = snap->stable_devices();
    WatchUse use = PlanWatchUse(*snap, start);
    std::unique_ptr<Scanner> scanner = RunScanner(*snap, stable, &use);

    State next;
    next.generation = state_.generation;
    next.boot_id = state_.boot_id;
    next.journal = state_.journal;
    next.instances = std::move(scanner->instances());
    next.images = std::move(scanner->images());
    Cache& fresh = scanner->cache();
    const bool identical = fresh.SharesAll(*state_.cache);
    std::shared_ptr<JournalEntry> j = JournalOf(*state_.cache, fresh, identical);
    const bool changed = j->paths() > 0 || next.instances != state_.instances ||
                         next.images != state_.images || state_.generation == 0;
    // An identical scan keeps the previous cache object (its views share it).
    next.cache = identical ? state_.cache : std::make_shared<const Cache>(std::move(fresh));
    if (changed) AddToJournal(std::move(j), &next);
    if (changed || !identical) {
      // Persist before serving: a generation that could be lost must never be served.
      RETURN_IF_ERROR(state_file_->Save(next).WithContext("saving export state"));
    }
    std::shared_ptr<const ScanResult> result = ResultOf(next, changed, stable);

    ScanStats stats = scanner->stats();
    stats.generation = next.generation;
    stats.changed = changed;
    stats.duration_ms = clock_.MonotonicMs() - start;
    if (changed) LogChanged(stats);
    {
      std::lock_guard<std::mutex> lock(mu_);
      state_ = std::move(next);
      last_ = result;
      last_stats_ = stats;
    }
    if (use.watch != nullptr) {
      // Adopted: what the watch reported is now in the cache.
      use.watch->Settle();
      unstable_ = std::move(scanner->unstable());
      if (!use.reuse) last_full_walk_ms_ = start;
    }
    ReleaseFreedMemory();  // a scan's cache was allocated on this worker's arena
    return std::make_pair(std::move(result), std::move(snap));
  }

  // How the scan starting at `start_ms` uses the change watch: none unless
  // the provider serves live paths; reuse unless a full walk is due.
  WatchUse PlanWatchUse(ProviderSnapshot& snap, int64_t start_ms) {
    WatchUse use;
    use.watch = snap.live_paths() ? Watch() : nullptr;
    use.reuse = use.watch != nullptr && last_full_walk_ms_ &&
                start_ms - *last_full_walk_ms_ < opts_.full_walk_interval_ms;
    use.unstable = &unstable_;
    if (use.watch != nullptr) use.watch->Drain();
    return use;
  }

  // Runs a scanner over `snap`; again without reuse when it asks for a full
  // walk (then `use->reuse` is false).
  std::unique_ptr<Scanner> RunScanner(ProviderSnapshot& snap, bool stable, WatchUse* use) {
    auto scanner = std::make_unique<Scanner>(env_, opts_, filter_, *state_.cache, stable, *use);
    scanner->Run(snap);
    if (scanner->needs_full_walk()) {
      use->reuse = false;
      scanner = std::make_unique<Scanner>(env_, opts_, filter_, *state_.cache, stable, *use);
      scanner->Run(snap);
    }
    return scanner;
  }

  // The exported paths added, changed and removed from `old` to `fresh`
  // (only in the directories the two caches do not share).
  static std::shared_ptr<JournalEntry> JournalOf(const Cache& old, const Cache& fresh,
                                                 bool identical) {
    auto j = std::make_shared<JournalEntry>();
    if (identical) return j;
    DiffCaches(
        old, fresh,
        [&](const CacheEntry& o) {
          if (o.exported) j->removed.push_back(o.path);
        },
        [&](const CacheEntry& n) {
          if (n.exported) j->added.push_back(n.path);
        },
        [&](const CacheEntry& o, const CacheEntry& n) {
          if (o.exported && n.exported) {
            if (!o.SameServed(n)) j->changed.push_back(n.path);
          } else if (o.exported) {
            j->removed.push_back(o.path);
          } else if (n.exported) {
            j->added.push_back(n.path);
          }
        });
    return j;
  }

  // Bumps `next`'s generation with journal entry `j`, dropping the oldest
  // entries beyond the journal's bounds.
  void AddToJournal(std::shared_ptr<JournalEntry> j, State* next) const {
    ++next->generation;
    j->generation = next->generation;
    next->journal.push_back(std::move(j));
    size_t total = 0;
    for (const auto& e : next->journal) total += e->paths();
    while (!next->journal.empty() &&
           (next->journal.size() > opts_.journal_generations || total > opts_.journal_max_paths)) {
      total -= next->journal.front()->paths();
      next->journal.pop_front();
    }
  }

  // What views of state `next` serve: the previous result when it is the
  // same (shared, no copy of anything), else a new one.
  std::shared_ptr<const ScanResult> ResultOf(const State& next, bool changed, bool stable) {
    std::shared_ptr<const ScanResult> previous;
    {
      std::lock_guard<std::mutex> lock(mu_);
      previous = last_;
    }
    if (previous && !changed && previous->cache == next.cache &&
        previous->header->generation == next.generation && previous->stable_devices == stable) {
      return previous;
    }
    auto header = std::make_shared<Manifest>();
    header->node_uuid = opts_.node_uuid;
    header->node_name = opts_.node_name;
    header->generation = next.generation;
    header->boot_id = next.boot_id;
    header->instances = next.instances;
    header->images = next.images;
    auto result = std::make_shared<ScanResult>();
    result->header = std::move(header);
    result->cache = next.cache;
    result->journal = std::make_shared<const Journal>(next.journal);
    result->stable_devices = stable;
    return result;
  }

  static void LogChanged(const ScanStats& stats) {
    log::Info("export changed", {{"generation", stats.generation},
                                 {"files", stats.files},
                                 {"hashed_files", stats.hashed_files},
                                 {"hashed_bytes", stats.hashed_bytes},
                                 {"listed_dirs", stats.listed_dirs},
                                 {"reused_dirs", stats.reused_dirs},
                                 {"scan_ms", stats.duration_ms}});
  }

  // The change watch, created at the first scan of live paths; null when
  // off or inotify is not available.
  DirWatch* Watch() {
    if (opts_.full_walk_interval_ms <= 0 || watch_failed_) return nullptr;
    if (!watch_) {
      auto w = DirWatch::Create();
      if (!w.ok()) {
        watch_failed_ = true;
        log::Warn("export: no change watch: every scan lists every directory",
                  {{"error", w.status().message()}});
        return nullptr;
      }
      watch_ = std::move(*w);
    }
    return watch_.get();
  }

  Env& env_;
  Clock& clock_;
  ExporterOptions opts_;
  ServiceFilter filter_;
  std::unique_ptr<ExportStateFile> state_file_;
  // The change watch (scan thread only, under scan_mu_): see Watch().
  std::unique_ptr<DirWatch> watch_;
  bool watch_failed_ = false;
  DirSet unstable_;                           // of the last adopted scan
  std::optional<int64_t> last_full_walk_ms_;  // monotonic start of the last full walk
  std::mutex scan_mu_;                        // serializes scans
  mutable std::mutex mu_;  // guards last_, last_stats_ and reads of state_ outside scans
  State state_;
  std::shared_ptr<const ScanResult> last_;
  ScanStats last_stats_;
};

Result<std::unique_ptr<Exporter>> Exporter::Open(Env& env, Clock& clock, ExporterOptions options) {
  if (options.provider == nullptr) return ConfigError("exporter: no provider");
  if (options.state_dir.empty()) return ConfigError("exporter: no state directory");
  auto impl = std::make_unique<Impl>(env, clock, std::move(options));
  RETURN_IF_ERROR(impl->Load());
  return std::unique_ptr<Exporter>(new Exporter(std::move(impl)));
}

Exporter::Exporter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Exporter::~Exporter() = default;

Result<std::unique_ptr<syncproto::ExportView>> Exporter::OpenView() {
  ASSIGN_OR_RETURN(auto scanned, impl_->Scan());
  return std::unique_ptr<syncproto::ExportView>(
      new View(impl_->env_, std::move(scanned.first), std::move(scanned.second)));
}

Result<ScanStats> Exporter::Rescan() {
  ASSIGN_OR_RETURN(auto scanned, impl_->Scan());
  (void)scanned;
  return last_scan();
}

std::shared_ptr<const Manifest> Exporter::current() const {
  std::shared_ptr<const ScanResult> last;
  {
    std::lock_guard<std::mutex> lock(impl_->mu_);
    last = impl_->last_;
  }
  if (!last) return nullptr;
  auto m = std::make_shared<Manifest>(*last->header);
  m->files.reserve(last->cache->size());
  for (const CacheEntry* c : last->cache->Sorted()) {
    if (c->exported) m->files.push_back(c->ToFileEntry());
  }
  return m;
}

uint64_t Exporter::generation() const {
  std::lock_guard<std::mutex> lock(impl_->mu_);
  return impl_->state_.generation;
}

std::string Exporter::boot_id() const {
  std::lock_guard<std::mutex> lock(impl_->mu_);
  return impl_->state_.boot_id;
}

ScanStats Exporter::last_scan() const {
  std::lock_guard<std::mutex> lock(impl_->mu_);
  return impl_->last_stats_;
}

}  // namespace lifeboat::exports
