#include "catalog/exporter.h"

#include <time.h>

#include <algorithm>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "base/log.h"
#include "catalog/internal/util.h"

namespace lifeboat::catalog {

using syncproto::EntryKind;
using syncproto::FileEntry;
using syncproto::ImageInfo;
using syncproto::InstanceInfo;
using syncproto::Manifest;
using syncproto::ManifestAnswer;

namespace {

constexpr std::string_view kStateMagic = "LBEXPST2";     // entries with owners and hard links
constexpr std::string_view kOldStateMagic = "LBEXPST1";  // before them: a new lineage
constexpr const char* kStateFile = "export-state.bin";

enum class ParseAs : uint8_t { kNone = 0, kPayload = 1, kImageManifest = 2 };

// What the scan knows about one export path: its manifest entry, the stat key
// it was hashed under, and the metadata parsed from it (payloads, image manifests).
struct CacheEntry {
  FileEntry entry;
  uint64_t dev = 0;
  uint64_t ino = 0;
  int64_t ctime_ns = 0;
  bool racy = false;     // changed too recently to trust the stat key next time
  bool exported = true;  // false: cached only (a payload of a filtered-out service)
  ParseAs parse = ParseAs::kNone;
  std::string parse_error;  // "" when the parse succeeded
  std::string uuid, alias, service, image_uuid, origin;
  std::string local_path;  // not persisted: set by every scan
  uint64_t nlink = 1;      // not persisted: set by every scan
};

struct JournalEntry {
  uint64_t generation = 0;
  std::vector<std::string> added, changed, removed;
  size_t paths() const { return added.size() + changed.size() + removed.size(); }
};

// Entries are shared and immutable so that copying the journal is cheap.
using Journal = std::deque<std::shared_ptr<const JournalEntry>>;
using Cache = std::map<std::string, CacheEntry>;  // by export path, bytewise

struct State {
  uint64_t generation = 0;
  std::string boot_id;
  Journal journal;
  std::vector<InstanceInfo> instances;
  std::vector<ImageInfo> images;
  std::shared_ptr<const Cache> cache = std::make_shared<const Cache>();
};

// What a view serves: immutable, shared by the views of one scan.
struct ScanResult {
  std::shared_ptr<const Manifest> manifest;
  std::shared_ptr<const Journal> journal;
  std::shared_ptr<const Cache> cache;  // local paths and stat keys of the files served
  bool stable_devices = true;
};

// A symlink's entry size is 0 (FileEntry's convention), so its key ignores size:
// a new target changes ctime.
bool SameKey(const CacheEntry& c, const FileStat& st, bool use_dev) {
  const bool size_ok = c.entry.kind == EntryKind::kSymlink || c.entry.size == st.size;
  return (!use_dev || c.dev == st.dev) && c.ino == st.ino && size_ok &&
         c.entry.mtime_ns == st.mtime_ns && c.ctime_ns == st.ctime_ns;
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

// ---- State file ------------------------------------------------------------

void EncodeStrings(internal::Encoder& e, const std::vector<std::string>& v) {
  e.U32(static_cast<uint32_t>(v.size()));
  for (const auto& s : v) e.Str(s);
}

bool DecodeStrings(internal::Decoder& d, std::vector<std::string>* v) {
  uint32_t n;
  if (!d.U32(&n)) return false;
  v->resize(n);
  for (auto& s : *v) {
    if (!d.Str(&s)) return false;
  }
  return true;
}

std::string EncodeState(const State& s) {
  internal::Encoder e;
  e.out().append(kStateMagic);
  e.U64(s.generation);
  e.Str(s.boot_id);
  e.U32(static_cast<uint32_t>(s.journal.size()));
  for (const auto& j : s.journal) {
    e.U64(j->generation);
    EncodeStrings(e, j->added);
    EncodeStrings(e, j->changed);
    EncodeStrings(e, j->removed);
  }
  e.U32(static_cast<uint32_t>(s.instances.size()));
  for (const InstanceInfo& i : s.instances) {
    e.Str(i.uuid);
    e.Str(i.alias);
    e.Str(i.service);
    e.Str(i.image_uuid);
  }
  e.U32(static_cast<uint32_t>(s.images.size()));
  for (const ImageInfo& i : s.images) {
    e.Str(i.uuid);
    e.Str(i.origin);
  }
  e.U32(static_cast<uint32_t>(s.cache->size()));
  for (const auto& [path, c] : *s.cache) {
    e.Str(path);
    e.U8(static_cast<uint8_t>(c.entry.kind));
    e.U64(c.entry.size);
    e.U32(c.entry.mode);
    e.I64(c.entry.mtime_ns);
    e.Dig(c.entry.digest);
    e.Str(c.entry.target);
    e.U32(c.entry.uid);
    e.U32(c.entry.gid);
    e.Str(c.entry.hardlink_of);
    e.U64(c.dev);
    e.U64(c.ino);
    e.I64(c.ctime_ns);
    e.U8(static_cast<uint8_t>((c.racy ? 1 : 0) | (c.exported ? 2 : 0)));
    e.U8(static_cast<uint8_t>(c.parse));
    e.Str(c.parse_error);
    e.Str(c.uuid);
    e.Str(c.alias);
    e.Str(c.service);
    e.Str(c.image_uuid);
    e.Str(c.origin);
  }
  Digest128 sum = Xxh3Digest(e.out());
  e.Dig(sum);
  return std::move(e.out());
}

bool DecodeState(std::string_view data, State* s) {
  if (data.size() < kStateMagic.size() + 16 || data.substr(0, kStateMagic.size()) != kStateMagic) {
    return false;
  }
  std::string_view body = data.substr(0, data.size() - 16);
  Digest128 want;
  std::copy(data.end() - 16, data.end(), want.bytes.begin());
  if (Xxh3Digest(body) != want) return false;
  internal::Decoder d(body.substr(kStateMagic.size()));
  uint32_t n;
  if (!d.U64(&s->generation) || !d.Str(&s->boot_id) || !d.U32(&n)) return false;
  for (uint32_t k = 0; k < n; ++k) {
    auto j = std::make_shared<JournalEntry>();
    if (!d.U64(&j->generation) || !DecodeStrings(d, &j->added) || !DecodeStrings(d, &j->changed) ||
        !DecodeStrings(d, &j->removed)) {
      return false;
    }
    s->journal.push_back(std::move(j));
  }
  if (!d.U32(&n)) return false;
  s->instances.resize(n);
  for (InstanceInfo& i : s->instances) {
    if (!d.Str(&i.uuid) || !d.Str(&i.alias) || !d.Str(&i.service) || !d.Str(&i.image_uuid)) {
      return false;
    }
  }
  if (!d.U32(&n)) return false;
  s->images.resize(n);
  for (ImageInfo& i : s->images) {
    if (!d.Str(&i.uuid) || !d.Str(&i.origin)) return false;
  }
  if (!d.U32(&n)) return false;
  auto cache = std::make_shared<Cache>();
  for (uint32_t k = 0; k < n; ++k) {
    std::string path;
    CacheEntry c;
    uint8_t kind, flags, parse;
    if (!d.Str(&path) || !d.U8(&kind) || !d.U64(&c.entry.size) || !d.U32(&c.entry.mode) ||
        !d.I64(&c.entry.mtime_ns) || !d.Dig(&c.entry.digest) || !d.Str(&c.entry.target) ||
        !d.U32(&c.entry.uid) || !d.U32(&c.entry.gid) || !d.Str(&c.entry.hardlink_of) ||
        !d.U64(&c.dev) || !d.U64(&c.ino) || !d.I64(&c.ctime_ns) || !d.U8(&flags) || !d.U8(&parse) ||
        !d.Str(&c.parse_error) || !d.Str(&c.uuid) || !d.Str(&c.alias) || !d.Str(&c.service) ||
        !d.Str(&c.image_uuid) || !d.Str(&c.origin)) {
      return false;
    }
    if (kind < 1 || kind > 3 || parse > 2) return false;
    c.entry.path = path;
    c.entry.kind = static_cast<EntryKind>(kind);
    c.racy = flags & 1;
    c.exported = flags & 2;
    c.parse = static_cast<ParseAs>(parse);
    cache->emplace(std::move(path), std::move(c));
  }
  s->cache = std::move(cache);
  return d.done();
}

// ---- The scan --------------------------------------------------------------

class Scanner {
 public:
  Scanner(Env& env, const ExporterOptions& opts, const ServiceFilter& filter, const Cache& old,
          bool stable_devices)
      : env_(env), opts_(opts), filter_(filter), old_(old), use_dev_(stable_devices) {}

  void Run(ProviderSnapshot& snap) {
    for (const InstanceSource& src : snap.instances()) ScanInstance(src);
    std::set<std::string> needed;
    for (const InstanceInfo& i : instances_) {
      if (!i.image_uuid.empty()) needed.insert(i.image_uuid);
    }
    ScanImages(snap, needed);
    if (std::string app = snap.application_path(); !app.empty()) {
      AddFile(app, "sapi/application.json", ParseAs::kNone);
    }
    for (const auto& [svc, path] : snap.service_record_paths()) {
      if (!internal::IsSafeName(svc) || !filter_.Matches(svc)) continue;
      AddFile(path, "sapi/services/" + svc + ".json", ParseAs::kNone);
    }
    std::sort(instances_.begin(), instances_.end(),
              [](const InstanceInfo& a, const InstanceInfo& b) { return a.uuid < b.uuid; });
    GroupHardlinks();
  }

  Cache& cache() { return new_; }
  std::vector<InstanceInfo>& instances() { return instances_; }
  std::vector<ImageInfo>& images() { return images_; }
  ScanStats& stats() { return stats_; }
  uint64_t readlinks() const { return readlinks_; }

 private:
  void Skip(const std::string& path, const std::string& reason) {
    ++stats_.skipped;
    log::Warn("export: skipping", {{"path", path}, {"reason", reason}});
  }

  // Files of one dataset tree that share an inode: each but the smallest
  // path names that one in hardlink_of (new_ is sorted by path, so the first
  // seen of a group is its smallest).
  void GroupHardlinks() {
    std::map<std::tuple<std::string, uint64_t, uint64_t>, const std::string*> first;
    for (auto& [path, c] : new_) {
      c.entry.hardlink_of.clear();
      if (!c.exported || c.entry.kind != EntryKind::kFile || c.nlink < 2 ||
          !path.starts_with("datasets/")) {
        continue;
      }
      auto [it, inserted] =
          first.try_emplace({syncproto::InstanceOfPath(path), c.dev, c.ino}, &path);
      if (!inserted) c.entry.hardlink_of = *it->second;
    }
  }

  void ScanInstance(const InstanceSource& src) {
    if (!internal::IsSafeName(src.uuid)) {
      Skip(src.payload_path, "instance uuid is not a valid path component");
      return;
    }
    const std::string vm_path = "vms/" + src.uuid + ".json";
    CacheEntry* payload = AddFile(src.payload_path, vm_path, ParseAs::kPayload);
    if (payload == nullptr) return;
    auto drop = [&](const std::string& reason) {
      payload->exported = false;  // cached, so an unchanged bad payload is not read again
      --stats_.files;
      stats_.bytes -= payload->entry.size;
      Skip(src.payload_path, reason);
    };
    if (!payload->parse_error.empty()) return drop(payload->parse_error);
    if (payload->uuid != src.uuid)
      return drop("payload uuid \"" + payload->uuid + "\" does not match");
    if (payload->service.empty()) return drop("payload has no tags.smartdc_role");
    if (!filter_.Matches(payload->service)) {
      payload->exported = false;  // cached so the next scan need not read it to filter it
      --stats_.files;
      stats_.bytes -= payload->entry.size;
      return;
    }
    InstanceInfo info{src.uuid, payload->alias, payload->service, payload->image_uuid};
    if (!info.image_uuid.empty() && !internal::IsSafeName(info.image_uuid)) {
      Skip(src.payload_path, "image_uuid is not a valid path component");
      info.image_uuid.clear();
    }
    if (!src.sapi_path.empty())
      AddFile(src.sapi_path, "sapi/" + src.uuid + ".json", ParseAs::kNone);
    if (!src.dataset_path.empty()) {
      const std::string root = "datasets/" + src.uuid;
      auto st = env_.Stat(src.dataset_path);
      if (!st.ok() || st->type != FileType::kDirectory) {
        Skip(src.dataset_path, st.ok() ? "dataset is not a directory" : st.status().message());
      } else {
        AddDir(*st, src.dataset_path, root);
        Walk(src.dataset_path, root, 0);
      }
    }
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
      if (!m->parse_error.empty()) {
        new_.erase(dir + "/manifest.json");
        Skip(img->manifest_path, m->parse_error);
        continue;
      }
      std::string origin = m->origin;
      if (!origin.empty() && !internal::IsSafeName(origin)) {
        Skip(img->manifest_path, "origin is not a valid path component");
        origin.clear();
      }
      if (AddFile(img->file_path, dir + "/file", ParseAs::kNone) == nullptr) {
        new_.erase(dir + "/manifest.json");
        continue;
      }
      images_.push_back(ImageInfo{uuid, origin});
      if (!origin.empty()) queue.insert(origin);
    }
    std::sort(images_.begin(), images_.end(),
              [](const ImageInfo& a, const ImageInfo& b) { return a.uuid < b.uuid; });
  }

  void Walk(const std::string& local_dir, const std::string& export_dir, int depth) {
    if (depth > 256) return Skip(local_dir, "directory tree deeper than 256 levels");
    auto entries = env_.ListDir(local_dir);
    if (!entries.ok()) return Skip(local_dir, entries.status().message());
    for (const DirEntry& e : *entries) {
      const std::string local = JoinPath(local_dir, e.name);
      const std::string path = export_dir + "/" + e.name;
      if (Status valid = syncproto::ValidateExportPath(path); !valid.ok()) {
        Skip(local, valid.message());
        continue;
      }
      auto st = env_.Stat(local);
      if (!st.ok()) {
        Skip(local, st.status().message());
        continue;
      }
      switch (st->type) {
        case FileType::kRegular:
          AddFile(local, path, ParseAs::kNone, &*st);
          break;
        case FileType::kDirectory:
          AddDir(*st, local, path);
          Walk(local, path, depth + 1);
          break;
        case FileType::kSymlink:
          AddSymlink(*st, local, path);
          break;
        case FileType::kOther:
          Skip(local, "not a regular file, directory or symlink");
          break;
      }
    }
  }

  void AddDir(const FileStat& st, const std::string& local, const std::string& path) {
    CacheEntry c;
    c.entry.path = path;
    c.entry.kind = EntryKind::kDir;
    c.entry.mode = st.mode;
    c.entry.mtime_ns = st.mtime_ns;
    c.entry.uid = st.uid;
    c.entry.gid = st.gid;
    c.dev = st.dev;
    c.ino = st.ino;
    c.ctime_ns = st.ctime_ns;
    c.local_path = local;
    new_[path] = std::move(c);
    ++stats_.dirs;
  }

  void AddSymlink(const FileStat& st, const std::string& local, const std::string& path) {
    CacheEntry c;
    auto it = old_.find(path);
    if (it != old_.end() && it->second.entry.kind == EntryKind::kSymlink && !it->second.racy &&
        SameKey(it->second, st, use_dev_)) {
      c = it->second;
    } else {
      auto target = env_.ReadLink(local);
      if (!target.ok()) return Skip(local, target.status().message());
      c.entry.target = *target;
      c.entry.digest = Xxh3Digest(c.entry.target);
      c.entry.size = 0;
      c.dev = st.dev;
      c.ino = st.ino;
      c.ctime_ns = st.ctime_ns;
      ++readlinks_;
    }
    c.entry.path = path;
    c.entry.kind = EntryKind::kSymlink;
    c.entry.mode = st.mode;
    c.entry.mtime_ns = st.mtime_ns;
    c.entry.uid = st.uid;
    c.entry.gid = st.gid;
    c.exported = true;
    if (Status ok = syncproto::ValidateSymlinkTarget(path, c.entry.target); !ok.ok()) {
      return Skip(local, ok.message());
    }
    if (!Exists(env_, JoinPath(DirName(local), c.entry.target))) {
      return Skip(local, "dangling symlink to \"" + c.entry.target + "\"");
    }
    c.local_path = local;
    new_[path] = std::move(c);
    ++stats_.symlinks;
  }

  // Adds regular file `local` as export path `path`, hashing it unless the
  // stat cache has it. Returns the new cache entry, or null when skipped.
  CacheEntry* AddFile(const std::string& local, const std::string& path, ParseAs parse,
                      const FileStat* known = nullptr) {
    FileStat st;
    if (known != nullptr) {
      st = *known;
    } else {
      auto s = env_.Stat(local);
      if (!s.ok()) {
        Skip(local, s.status().message());
        return nullptr;
      }
      st = *s;
    }
    if (st.type != FileType::kRegular) {
      Skip(local, "not a regular file");
      return nullptr;
    }
    auto it = old_.find(path);
    if (it != old_.end() && it->second.entry.kind == EntryKind::kFile && !it->second.racy &&
        it->second.parse == parse && SameKey(it->second, st, use_dev_)) {
      CacheEntry& c = new_[path] = it->second;
      c.local_path = local;
      c.exported = true;
      c.entry.mode = st.mode;
      c.entry.uid = st.uid;
      c.entry.gid = st.gid;
      c.dev = st.dev;
      c.nlink = st.nlink;
      Count(c);
      return &c;
    }
    for (int attempt = 0; attempt < std::max(1, opts_.hash_attempts); ++attempt) {
      if (attempt > 0) {
        auto again = env_.Stat(local);
        if (!again.ok() || again->type != FileType::kRegular) {
          Skip(local, again.ok() ? "no longer a regular file" : again.status().message());
          return nullptr;
        }
        st = *again;
      }
      auto file = env_.OpenRead(local);
      if (!file.ok()) {
        Skip(local, "unreadable: " + file.status().message());
        return nullptr;
      }
      CacheEntry c;
      std::string content;
      uint64_t size = 0;
      Status hashed = internal::HashOpenFile(**file, &c.entry.digest, &size,
                                             parse == ParseAs::kNone ? nullptr : &content,
                                             64ull << 20, st.size);
      if (!hashed.ok()) {
        Skip(local, "unreadable: " + hashed.message());
        return nullptr;
      }
      auto after = (*file)->Stat();
      ++stats_.hashed_files;
      stats_.hashed_bytes += size;
      if (!after.ok() || !SameFile(st, *after) || size != st.size) continue;  // changed: retry
      c.entry.path = path;
      c.entry.kind = EntryKind::kFile;
      c.entry.size = size;
      c.entry.mode = st.mode;
      c.entry.mtime_ns = st.mtime_ns;
      c.entry.uid = st.uid;
      c.entry.gid = st.gid;
      c.dev = st.dev;
      c.nlink = st.nlink;
      c.ino = st.ino;
      c.ctime_ns = st.ctime_ns;
      const int64_t window_ns = opts_.racy_window_ms * 1000000;
      c.racy = window_ns > 0 && std::max(st.ctime_ns, st.mtime_ns) + window_ns > RealNowNs();
      c.parse = parse;
      c.local_path = local;
      if (parse != ParseAs::kNone) Parse(content, local, &c);
      CacheEntry& placed = new_[path] = std::move(c);
      Count(placed);
      return &placed;
    }
    Skip(local, "kept changing while being hashed");
    return nullptr;
  }

  void Count(const CacheEntry& c) {
    ++stats_.files;
    stats_.bytes += c.entry.size;
  }

  static void Parse(const std::string& content, const std::string& local, CacheEntry* c) {
    auto json = internal::ParseJson(content, local);
    if (!json.ok()) {
      c->parse_error = json.status().message();
      return;
    }
    if (!json->is_object()) {
      c->parse_error = local + ": not a JSON object";
      return;
    }
    c->uuid = internal::JsonString(*json, "uuid");
    if (c->parse == ParseAs::kPayload) {
      c->alias = internal::JsonString(*json, "alias");
      c->image_uuid = internal::JsonString(*json, "image_uuid");
      auto tags = json->find("tags");
      if (tags != json->end()) c->service = internal::JsonString(*tags, "smartdc_role");
    } else {
      c->origin = internal::JsonString(*json, "origin");
    }
  }

  Env& env_;
  const ExporterOptions& opts_;
  const ServiceFilter& filter_;
  const Cache& old_;
  bool use_dev_;
  Cache new_;
  std::vector<InstanceInfo> instances_;
  std::vector<ImageInfo> images_;
  ScanStats stats_;
  uint64_t readlinks_ = 0;  // symlinks whose stat key missed the cache
};

// ---- The view ----------------------------------------------------------------

class View final : public syncproto::ExportView {
 public:
  View(Env& env, std::shared_ptr<const ScanResult> scan, std::unique_ptr<ProviderSnapshot> snap)
      : env_(env), scan_(std::move(scan)), snap_(std::move(snap)) {}

  Result<ManifestAnswer> ManifestSince(uint64_t since, const std::string& boot_id,
                                       const std::vector<std::string>& services) override {
    const Manifest& m = *scan_->manifest;
    ManifestAnswer a;
    a.manifest.node_uuid = m.node_uuid;
    a.manifest.node_name = m.node_name;
    a.manifest.generation = m.generation;
    a.manifest.boot_id = m.boot_id;
    if (boot_id == m.boot_id && since == m.generation) {
      a.kind = ManifestAnswer::Kind::kUnchanged;
      return a;
    }
    ServiceFilter filter(services);
    std::set<std::string> instances, images;
    std::map<std::string, std::string> origin;
    for (const ImageInfo& i : m.images) origin[i.uuid] = i.origin;
    for (const InstanceInfo& i : m.instances) {
      if (!filter.Matches(i.service)) continue;
      instances.insert(i.uuid);
      a.manifest.instances.push_back(i);
      for (std::string img = i.image_uuid; !img.empty() && images.insert(img).second;) {
        auto it = origin.find(img);
        img = it == origin.end() ? "" : it->second;
      }
    }
    for (const ImageInfo& i : m.images) {
      if (images.count(i.uuid)) a.manifest.images.push_back(i);
    }
    auto included = [&](const std::string& path) {
      if (!filter.all()) {
        std::string inst = syncproto::InstanceOfPath(path);
        if (!inst.empty()) return instances.count(inst) > 0;
        if (path.starts_with("images/")) {
          return images.count(path.substr(7, path.find('/', 7) - 7)) > 0;
        }
      }
      return true;
    };
    const Journal& journal = *scan_->journal;
    const bool covered = boot_id == m.boot_id && since > 0 && since < m.generation &&
                         !journal.empty() && journal.front()->generation <= since + 1 &&
                         journal.back()->generation == m.generation;
    if (!covered) {
      a.kind = ManifestAnswer::Kind::kFull;
      for (const FileEntry& f : m.files) {
        if (included(f.path)) a.manifest.files.push_back(f);
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
      auto it =
          std::lower_bound(m.files.begin(), m.files.end(), path,
                           [](const FileEntry& f, const std::string& p) { return f.path < p; });
      if (it != m.files.end() && it->path == path) {
        if (included(path)) a.manifest.files.push_back(*it);
      } else {
        a.removed.push_back(path);
      }
    }
    return a;
  }

  Result<std::unique_ptr<ReadableFile>> OpenFile(const std::string& path,
                                                 FileEntry* entry) override {
    auto it = scan_->cache->find(path);
    if (it == scan_->cache->end() || !it->second.exported ||
        it->second.entry.kind != EntryKind::kFile) {
      return NotFoundError("export has no file " + path);
    }
    const CacheEntry& f = it->second;
    ASSIGN_OR_RETURN(auto file, env_.OpenRead(f.local_path));
    ASSIGN_OR_RETURN(FileStat st, file->Stat());
    if ((scan_->stable_devices && st.dev != f.dev) || st.ino != f.ino || st.size != f.entry.size ||
        st.mtime_ns != f.entry.mtime_ns || st.ctime_ns != f.ctime_ns) {
      return TemporaryError("export file " + path + " (" + f.local_path +
                            ") changed since the scan; try again");
    }
    if (entry != nullptr) *entry = f.entry;
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
    RETURN_IF_ERROR(CreateDirs(env_, opts_.state_dir, 0700));
    state_path_ = JoinPath(opts_.state_dir, kStateFile);
    auto data = ReadFileToString(env_, state_path_, 4ull << 30);
    if (data.ok()) {
      State s;
      if (DecodeState(*data, &s)) {
        state_ = std::move(s);
        return Status::Ok();
      }
      if (std::string_view(*data).starts_with(kOldStateMagic)) {
        log::Warn(
            "export state of an older version (no owners, no hard links): starting a new "
            "lineage (peers keep their copies aside)",
            {{"path", state_path_}});
      } else {
        log::Warn(
            "export state is corrupt: starting a new lineage (peers will keep their copies aside)",
            {{"path", state_path_}});
        RETURN_IF_ERROR(env_.Rename(state_path_, state_path_ + ".corrupt"));
      }
    } else if (data.status().code() != Code::kNotFound) {
      return data.status().WithContext("export state");
    }
    state_ = State{};
    state_.boot_id = internal::RandomHex();
    return WriteFileAtomic(env_, state_path_, EncodeState(state_), 0600);
  }

  Result<std::pair<std::shared_ptr<const ScanResult>, std::unique_ptr<ProviderSnapshot>>> Scan() {
    std::lock_guard<std::mutex> scan_lock(scan_mu_);
    const int64_t start = clock_.MonotonicMs();
    ASSIGN_OR_RETURN(auto snap, opts_.provider->Snapshot(filter_));
    const bool stable = snap->stable_devices();
    Scanner scanner(env_, opts_, filter_, *state_.cache, stable);
    scanner.Run(*snap);

    State next;
    next.generation = state_.generation;
    next.boot_id = state_.boot_id;
    next.journal = state_.journal;
    next.instances = std::move(scanner.instances());
    next.images = std::move(scanner.images());
    auto cache = std::make_shared<Cache>(std::move(scanner.cache()));
    next.cache = cache;

    // Diff the exported entries against the previous scan's (both sorted: one merge walk).
    auto j = std::make_shared<JournalEntry>();
    auto o = state_.cache->begin(), oe = state_.cache->end();
    auto n = cache->begin(), ne = cache->end();
    while (o != oe || n != ne) {
      if (o != oe && !o->second.exported) {
        ++o;
      } else if (n != ne && !n->second.exported) {
        ++n;
      } else if (n == ne || (o != oe && o->first < n->first)) {
        j->removed.push_back(o->first);
        ++o;
      } else if (o == oe || n->first < o->first) {
        j->added.push_back(n->first);
        ++n;
      } else {
        if (!(o->second.entry == n->second.entry)) j->changed.push_back(n->first);
        ++o;
        ++n;
      }
    }
    const bool changed = j->paths() > 0 || next.instances != state_.instances ||
                         next.images != state_.images || state_.generation == 0;
    ScanStats stats = scanner.stats();
    bool dirty = changed || stats.hashed_files > 0 || scanner.readlinks() > 0 ||
                 cache->size() != state_.cache->size();
    if (changed) {
      ++next.generation;
      j->generation = next.generation;
      next.journal.push_back(std::move(j));
      size_t total = 0;
      for (const auto& e : next.journal) total += e->paths();
      while (!next.journal.empty() &&
             (next.journal.size() > opts_.journal_generations || total > opts_.journal_max_paths)) {
        total -= next.journal.front()->paths();
        next.journal.pop_front();
      }
    }
    if (dirty) {
      // Persist before serving: a generation that could be lost must never be served.
      RETURN_IF_ERROR(WriteFileAtomic(env_, state_path_, EncodeState(next), 0600)
                          .WithContext("saving export state"));
    }
    auto result = std::make_shared<ScanResult>();
    std::shared_ptr<const Manifest> previous;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (last_) previous = last_->manifest;
    }
    if (!changed && previous && previous->generation == next.generation) {
      result->manifest = previous;  // same content: no need to rebuild it
    } else {
      auto manifest = std::make_shared<Manifest>();
      manifest->node_uuid = opts_.node_uuid;
      manifest->node_name = opts_.node_name;
      manifest->generation = next.generation;
      manifest->boot_id = next.boot_id;
      manifest->instances = next.instances;
      manifest->images = next.images;
      manifest->files.reserve(cache->size());
      for (const auto& [path, c] : *cache) {
        if (c.exported) manifest->files.push_back(c.entry);
      }
      result->manifest = std::move(manifest);
    }
    result->cache = cache;
    result->journal = std::make_shared<const Journal>(next.journal);
    result->stable_devices = stable;

    stats.generation = next.generation;
    stats.changed = changed;
    stats.duration_ms = clock_.MonotonicMs() - start;
    if (changed) {
      log::Info("export changed", {{"generation", next.generation},
                                   {"files", stats.files},
                                   {"hashed_files", stats.hashed_files},
                                   {"hashed_bytes", stats.hashed_bytes}});
    }
    std::lock_guard<std::mutex> lock(mu_);
    state_ = std::move(next);
    last_ = result;
    last_stats_ = stats;
    return std::make_pair(std::shared_ptr<const ScanResult>(result), std::move(snap));
  }

  Env& env_;
  Clock& clock_;
  ExporterOptions opts_;
  ServiceFilter filter_;
  std::string state_path_;
  std::mutex scan_mu_;     // serializes scans
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
  std::lock_guard<std::mutex> lock(impl_->mu_);
  return impl_->last_ ? impl_->last_->manifest : nullptr;
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

}  // namespace lifeboat::catalog
