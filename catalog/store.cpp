#include "catalog/store.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "base/log.h"
#include "catalog/internal/util.h"
#include "catalog/provider.h"
#include "catalog/trash.h"

namespace lifeboat::catalog {

using nlohmann::json;
using syncproto::EntryKind;
using syncproto::FileEntry;
using syncproto::ManifestAnswer;

namespace {

constexpr const char* kCatalogFile = "catalog.json";
constexpr const char* kGenerationFile = "lifeboat-generation.json";
constexpr const char* kStaging = ".staging";
constexpr const char* kTrash = ".trash";
constexpr const char* kCurrent = "current";

// ---- JSON (de)serialization --------------------------------------------------

const char* KindName(EntryKind k) {
  switch (k) {
    case EntryKind::kFile:
      return "file";
    case EntryKind::kDir:
      return "dir";
    case EntryKind::kSymlink:
      return "symlink";
  }
  return "file";
}

json EntryToJson(const FileEntry& f) {
  json j = {
      {"path", f.path}, {"kind", KindName(f.kind)}, {"mode", f.mode}, {"mtime_ns", f.mtime_ns}};
  if (f.kind == EntryKind::kFile) {
    j["size"] = f.size;
    j["digest"] = f.digest.Hex();
  }
  if (f.kind == EntryKind::kSymlink) {
    j["target"] = f.target;
    j["digest"] = f.digest.Hex();
  }
  j["uid"] = f.uid;
  j["gid"] = f.gid;
  if (!f.hardlink_of.empty()) j["hardlink_of"] = f.hardlink_of;
  return j;
}

Result<FileEntry> EntryFromJson(const json& j) {
  try {
    FileEntry f;
    f.path = j.at("path").get<std::string>();
    std::string kind = j.at("kind").get<std::string>();
    f.kind = kind == "dir"       ? EntryKind::kDir
             : kind == "symlink" ? EntryKind::kSymlink
                                 : EntryKind::kFile;
    f.mode = j.at("mode").get<uint32_t>();
    f.mtime_ns = j.at("mtime_ns").get<int64_t>();
    f.size = j.value("size", uint64_t{0});
    f.target = j.value("target", std::string());
    // Descriptions written before owners were exported have none: root.
    f.uid = j.value("uid", uint32_t{0});
    f.gid = j.value("gid", uint32_t{0});
    f.hardlink_of = j.value("hardlink_of", std::string());
    if (!f.hardlink_of.empty()) RETURN_IF_ERROR(syncproto::ValidateHardlink(f.path, f.hardlink_of));
    if (j.contains("digest")) {
      auto d = Digest128::FromHex(j["digest"].get<std::string>());
      if (!d) return DataError("bad digest for " + f.path);
      f.digest = *d;
    }
    RETURN_IF_ERROR(syncproto::ValidateExportPath(f.path));
    return f;
  } catch (const json::exception& e) {
    return DataError(std::string("bad file entry: ") + e.what());
  }
}

json PeerToJson(const PeerState& p) {
  return {{"node_uuid", p.node_uuid},       {"node_name", p.node_name},
          {"generation", p.generation},     {"boot_id", p.boot_id},
          {"last_pull_ms", p.last_pull_ms}, {"last_attempt_ms", p.last_attempt_ms},
          {"last_error", p.last_error}};
}

PeerState PeerFromJson(const std::string& name, const json& j) {
  PeerState p;
  p.name = name;
  p.node_uuid = j.value("node_uuid", "");
  p.node_name = j.value("node_name", "");
  p.generation = j.value("generation", uint64_t{0});
  p.boot_id = j.value("boot_id", "");
  p.last_pull_ms = j.value("last_pull_ms", int64_t{0});
  p.last_attempt_ms = j.value("last_attempt_ms", int64_t{0});
  p.last_error = j.value("last_error", "");
  return p;
}

struct Record {  // a catalog.json instance: the public record + integrity of its description
  InstanceRecord r;
  Digest128 description_digest;  // XXH3 of the current generation's lifeboat-generation.json
};

json InstanceToJson(const Record& rec) {
  const InstanceRecord& r = rec.r;
  return {{"alias", r.alias},
          {"service", r.service},
          {"peer", r.peer},
          {"image_uuid", r.image_uuid},
          {"generation", r.generation},
          {"seq", r.seq},
          {"pulled_at_ms", r.pulled_at_ms},
          {"size", r.size},
          {"files", r.files},
          {"removed", r.removed},
          {"removed_since_ms", r.removed_since_ms},
          {"description_digest", rec.description_digest.Hex()}};
}

Record InstanceFromJson(const std::string& uuid, const json& j) {
  Record rec;
  InstanceRecord& r = rec.r;
  r.uuid = uuid;
  r.alias = j.value("alias", "");
  r.service = j.value("service", "");
  r.peer = j.value("peer", "");
  r.image_uuid = j.value("image_uuid", "");
  r.generation = j.value("generation", uint64_t{0});
  r.seq = j.value("seq", uint64_t{0});
  r.pulled_at_ms = j.value("pulled_at_ms", int64_t{0});
  r.size = j.value("size", uint64_t{0});
  r.files = j.value("files", uint64_t{0});
  r.removed = j.value("removed", false);
  r.removed_since_ms = j.value("removed_since_ms", int64_t{0});
  if (auto d = Digest128::FromHex(j.value("description_digest", ""))) rec.description_digest = *d;
  return rec;
}

struct SapiRecord {
  Digest128 digest;
  uint64_t size = 0;
  std::string peer;
};

struct Catalog {
  std::map<std::string, PeerState> peers;
  std::map<std::string, Record> instances;
  std::map<std::string, StoredImage> images;
  SapiRecord application;  // size 0 and zero digest: none
  bool has_application = false;
  std::map<std::string, SapiRecord> services;  // sapi-svc.json per service
};

// A generation description (lifeboat-generation.json).
struct Description {
  InstanceRecord r;
  std::string node_uuid, boot_id;
  std::vector<FileEntry> files;  // sorted by path
};

std::string EncodeDescription(const Description& d) {
  json files = json::array();
  for (const FileEntry& f : d.files) files.push_back(EntryToJson(f));
  json j = {{"format_version", kCatalogFormatVersion},
            {"uuid", d.r.uuid},
            {"alias", d.r.alias},
            {"service", d.r.service},
            {"image_uuid", d.r.image_uuid},
            {"peer", d.r.peer},
            {"node_uuid", d.node_uuid},
            {"generation", d.r.generation},
            {"boot_id", d.boot_id},
            {"seq", d.r.seq},
            {"pulled_at_ms", d.r.pulled_at_ms},
            {"files", files}};
  return j.dump(1) + "\n";
}

Result<Description> DecodeDescription(const std::string& text, const std::string& where) {
  ASSIGN_OR_RETURN(json j, internal::ParseJson(text, where));
  try {
    Description d;
    d.r.uuid = j.at("uuid").get<std::string>();
    d.r.alias = j.value("alias", "");
    d.r.service = j.value("service", "");
    d.r.image_uuid = j.value("image_uuid", "");
    d.r.peer = j.value("peer", "");
    d.node_uuid = j.value("node_uuid", "");
    d.r.generation = j.value("generation", uint64_t{0});
    d.boot_id = j.value("boot_id", "");
    d.r.seq = j.value("seq", uint64_t{0});
    d.r.pulled_at_ms = j.value("pulled_at_ms", int64_t{0});
    for (const json& f : j.at("files")) {
      ASSIGN_OR_RETURN(FileEntry e, EntryFromJson(f));
      if (e.kind == EntryKind::kFile) d.r.size += e.size;
      d.files.push_back(std::move(e));
    }
    d.r.files = d.files.size();
    std::sort(d.files.begin(), d.files.end(),
              [](const FileEntry& a, const FileEntry& b) { return a.path < b.path; });
    return d;
  } catch (const json::exception& e) {
    return DataError("bad generation description " + where + ": " + e.what());
  }
}

bool ParseSeq(const std::string& name, uint64_t* seq) {
  if (name.empty() || name.size() > 19) return false;
  auto [p, ec] = std::from_chars(name.data(), name.data() + name.size(), *seq);
  return ec == std::errc() && p == name.data() + name.size() && *seq > 0;
}

// Permission bits put on disk: what the peer had, but always readable and
// traversable by the store's owner, never setuid/setgid/sticky.
uint32_t DiskMode(const FileEntry& e) {
  uint32_t m = e.mode & 0777;
  return e.kind == EntryKind::kDir ? (m | 0700) : (m | 0600);
}

std::string CompactTime(int64_t wall_ms) {
  std::string iso = FormatIso8601Ms(wall_ms);  // 2026-11-21T16:25:03.123Z
  std::string out;
  for (char c : iso) {
    if (c != '-' && c != ':' && c != '.') out += c;
  }
  return out;
}

// The files and directories a commit step makes durable before its renames.
struct SyncSet {
  std::vector<std::string> files;
  std::set<std::string> dirs;
  bool empty() const { return files.empty() && dirs.empty(); }
  void clear() {
    files.clear();
    dirs.clear();
  }
};

constexpr size_t kSyncThreads = 4;     // fsyncs in flight at once
constexpr size_t kSyncPerThread = 16;  // fewer than this per thread: fewer threads

// fsyncs every file and directory of `set`, several at once: each fsync waits
// for the device, and the filesystem batches concurrent ones into one journal
// commit. Returns the first failure (after every started fsync finished).
Status SyncAll(Env& env, const SyncSet& set) {
  std::vector<std::pair<const std::string*, bool>> work;  // path, is a directory
  work.reserve(set.files.size() + set.dirs.size());
  for (const std::string& f : set.files) work.emplace_back(&f, false);
  for (const std::string& d : set.dirs) work.emplace_back(&d, true);
  if (work.empty()) return Status::Ok();
  const size_t threads = std::clamp<size_t>(work.size() / kSyncPerThread, 1, kSyncThreads);
  std::atomic<size_t> next{0};
  std::mutex mu;
  Status first;
  auto run = [&] {
    for (size_t i = next++; i < work.size(); i = next++) {
      Status st = work[i].second ? env.SyncDir(*work[i].first) : env.SyncFile(*work[i].first);
      if (!st.ok()) {
        std::lock_guard<std::mutex> lock(mu);
        if (first.ok()) first = st;
        next = work.size();  // stop handing out work
      }
    }
  };
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(run);
  run();
  for (std::thread& t : pool) t.join();
  return first;
}

}  // namespace

// ---- Store::Impl -----------------------------------------------------------------

class Store::Impl {
 public:
  Impl(Env& env, Clock& clock, StoreOptions o) : env_(env), clock_(clock), o_(std::move(o)) {}

  Env& env_;
  Clock& clock_;
  StoreOptions o_;
  mutable std::mutex mu_;  // guards cat_ and active_
  Catalog cat_;
  std::set<std::string> active_;  // peers with a pull in progress
  std::mutex commit_mu_;          // serializes commits and retention
  std::unique_ptr<Trash> trash_;  // what retention and cleanup delete (not when read_only)

  std::string P(std::string_view rel) const { return JoinPath(o_.data_dir, rel); }
  std::string InstDir(const std::string& uuid) const { return P("instances/" + uuid); }
  std::string GenDir(const std::string& uuid, uint64_t seq) const {
    return InstDir(uuid) + "/" + std::to_string(seq);
  }
  std::string SvcDir(const std::string& svc) const { return P("svc-" + svc); }
  std::string ImageDir(const std::string& uuid) const { return P("images/" + uuid); }

  // ---- Open / recovery ----

  Status Open() {
    if (o_.data_dir.empty()) return ConfigError("store: no data_dir");
    if (!o_.read_only) {
      RETURN_IF_ERROR(CreateDirs(env_, o_.data_dir, 0700));
      for (const char* d : {"instances", "images", "orphans"}) {
        RETURN_IF_ERROR(CreateDirs(env_, P(d), 0700));
      }
      ASSIGN_OR_RETURN(trash_, Trash::Open(env_, P(kTrash)));
      if (Exists(env_, P(kStaging))) RETURN_IF_ERROR(trash_->Discard(P(kStaging)));
      RETURN_IF_ERROR(env_.MakeDir(P(kStaging), 0700));
    } else if (!Exists(env_, o_.data_dir)) {
      return Status::Ok();  // nothing pulled yet: an empty catalog
    }
    auto text = ReadFileToString(env_, P(kCatalogFile));
    bool index_loaded = false;
    if (text.ok()) {
      Status loaded = LoadCatalog(*text);
      if (!loaded.ok()) {
        log::Warn("catalog.json is unreadable: rebuilding it from the generations on disk",
                  {{"error", loaded.message()}});
        cat_ = Catalog{};
      } else {
        index_loaded = true;
      }
    } else if (text.status().code() != Code::kNotFound) {
      return text.status();
    }
    if (!o_.read_only) RETURN_IF_ERROR(RemoveTempLeftovers());
    bool changed = false;
    RETURN_IF_ERROR(Reconcile(index_loaded, &changed));
    if (o_.read_only) return Status::Ok();
    if (changed) RETURN_IF_ERROR(WriteCatalog());
    std::set<std::string> instances, services;
    for (const auto& [uuid, rec] : cat_.instances) {
      instances.insert(uuid);
      services.insert(rec.r.service);
    }
    if (Status views = UpdateViews(instances, services); !views.ok()) {
      log::Warn("catalog: cannot repair the svc-*/current views", {{"error", views.message()}});
    }
    return Status::Ok();
  }

  // "<name>.tmp.<pid>.<n>" files of an atomic publish a crash interrupted:
  // catalog.json's, and those in svc-<service>/ and svc-<service>/data/.
  Status RemoveTempLeftovers() {
    auto clean = [&](const std::string& dir) -> Status {
      auto entries = env_.ListDir(dir);
      if (!entries.ok()) return Status::Ok();
      for (const DirEntry& e : *entries) {
        if (e.name.find(".tmp.") != std::string::npos) {
          RETURN_IF_ERROR(env_.RemoveFile(JoinPath(dir, e.name)));
        }
      }
      return Status::Ok();
    };
    RETURN_IF_ERROR(clean(o_.data_dir));
    ASSIGN_OR_RETURN(auto top, env_.ListDir(o_.data_dir));
    for (const DirEntry& e : top) {
      if (!e.name.starts_with("svc-")) continue;
      RETURN_IF_ERROR(clean(P(e.name)));
      RETURN_IF_ERROR(clean(P(e.name + "/data")));
    }
    return Status::Ok();
  }

  Status LoadCatalog(const std::string& text) {
    ASSIGN_OR_RETURN(json j, internal::ParseJson(text, P(kCatalogFile)));
    try {
      int version = j.at("format_version").get<int>();
      if (version != kCatalogFormatVersion) {
        return DataError("catalog.json format_version " + std::to_string(version) +
                         " is not supported (expected " + std::to_string(kCatalogFormatVersion) +
                         ")");
      }
      for (auto& [name, p] : j.at("peers").items()) cat_.peers[name] = PeerFromJson(name, p);
      for (auto& [uuid, r] : j.at("instances").items()) {
        if (internal::IsSafeName(uuid)) cat_.instances[uuid] = InstanceFromJson(uuid, r);
      }
      for (auto& [uuid, i] : j.at("images").items()) {
        if (!internal::IsSafeName(uuid)) continue;
        StoredImage img;
        img.uuid = uuid;
        img.origin = i.value("origin", "");
        img.size = i.value("size", uint64_t{0});
        img.manifest_size = i.value("manifest_size", uint64_t{0});
        if (auto d = Digest128::FromHex(i.value("file_digest", ""))) img.file_digest = *d;
        if (auto d = Digest128::FromHex(i.value("manifest_digest", ""))) img.manifest_digest = *d;
        img.unreferenced_since_ms = i.value("unreferenced_since_ms", int64_t{0});
        img.referenced = img.unreferenced_since_ms == 0;
        img.manifest_path = ImageDir(uuid) + "/manifest.json";
        img.file_path = ImageDir(uuid) + "/file";
        cat_.images[uuid] = img;
      }
      if (j.contains("sapi")) {
        const json& s = j["sapi"];
        auto rec = [](const json& r) {
          SapiRecord out;
          out.size = r.value("size", uint64_t{0});
          out.peer = r.value("peer", "");
          if (auto d = Digest128::FromHex(r.value("digest", ""))) out.digest = *d;
          return out;
        };
        if (s.contains("application") && s["application"].is_object()) {
          cat_.application = rec(s["application"]);
          cat_.has_application = true;
        }
        if (s.contains("services")) {
          for (auto& [svc, r] : s["services"].items()) {
            if (internal::IsSafeName(svc)) cat_.services[svc] = rec(r);
          }
        }
      }
    } catch (const json::exception& e) {
      return DataError(std::string("catalog.json: ") + e.what());
    }
    return Status::Ok();
  }

  std::string EncodeCatalog() const { return EncodeCatalog(cat_); }
  std::string EncodeCatalog(const Catalog& cat) const {
    json peers = json::object(), instances = json::object(), images = json::object();
    for (const auto& [name, p] : cat.peers) peers[name] = PeerToJson(p);
    for (const auto& [uuid, r] : cat.instances) instances[uuid] = InstanceToJson(r);
    for (const auto& [uuid, i] : cat.images) {
      images[uuid] = {{"origin", i.origin},
                      {"size", i.size},
                      {"file_digest", i.file_digest.Hex()},
                      {"manifest_digest", i.manifest_digest.Hex()},
                      {"manifest_size", i.manifest_size},
                      {"unreferenced_since_ms", i.unreferenced_since_ms}};
    }
    auto rec = [](const SapiRecord& r) {
      return json{{"digest", r.digest.Hex()}, {"size", r.size}, {"peer", r.peer}};
    };
    json services = json::object();
    for (const auto& [svc, r] : cat.services) services[svc] = rec(r);
    json sapi = {{"application", cat.has_application ? rec(cat.application) : json(nullptr)},
                 {"services", services}};
    json j = {{"format_version", kCatalogFormatVersion},
              {"updated_at", FormatIso8601Ms(clock_.WallMs())},
              {"peers", peers},
              {"instances", instances},
              {"images", images},
              {"sapi", sapi}};
    return j.dump(1) + "\n";
  }

  // Caller holds mu_ or is single-threaded (Open).
  Status WriteCatalog() { return WriteFileAtomic(env_, P(kCatalogFile), EncodeCatalog(), 0600); }

  Result<std::string> ReadCurrentLink(const std::string& uuid) const {
    return env_.ReadLink(InstDir(uuid) + "/" + kCurrent);
  }

  // Makes the index and the disk agree. catalog.json is the commit point of
  // every pull: when it was read (`index_loaded`), each instance is at the
  // seq it names, and a generation or instance directory it does not name
  // was renamed in by a commit that never reached its commit point (unless
  // read_only: discarded). Without it, the index is rebuilt from the
  // `current` links (which lag the index by at most one commit). An instance
  // whose indexed generation is gone falls back to its `current` link.
  Status Reconcile(bool index_loaded, bool* changed) {
    auto entries = env_.ListDir(P("instances"));
    if (!entries.ok()) {
      if (entries.status().code() == Code::kNotFound) {
        *changed = !cat_.instances.empty();
        cat_.instances.clear();
        return Status::Ok();
      }
      return entries.status();
    }
    std::set<std::string> on_disk;
    for (const DirEntry& e : *entries) {
      const std::string& uuid = e.name;
      if (!internal::IsSafeName(uuid)) continue;
      auto it = cat_.instances.find(uuid);
      if (it != cat_.instances.end() &&
          Exists(env_, GenDir(uuid, it->second.r.seq) + "/" + kGenerationFile)) {
        on_disk.insert(uuid);
        if (!o_.read_only) RETURN_IF_ERROR(CleanInstanceDir(uuid, it->second.r.seq));
        continue;
      }
      if (it == cat_.instances.end() && index_loaded) {
        // Renamed in by a commit that did not reach its commit point.
        log::Info("catalog: discarding an instance no committed pull holds", {{"instance", uuid}});
        if (!o_.read_only) RETURN_IF_ERROR(trash_->Discard(InstDir(uuid)));
        continue;
      }
      auto link = ReadCurrentLink(uuid);
      uint64_t seq = 0;
      if (!link.ok() || !ParseSeq(*link, &seq)) {
        if (!o_.read_only) RETURN_IF_ERROR(trash_->Discard(InstDir(uuid)));
        continue;
      }
      auto desc = ReadDescription(uuid, seq);
      if (!desc.ok()) {
        log::Error("catalog: current generation has no readable description",
                   {{"instance", uuid}, {"error", desc.status().message()}});
        continue;
      }
      on_disk.insert(uuid);
      if (!o_.read_only) RETURN_IF_ERROR(CleanInstanceDir(uuid, seq));
      Record rec;
      if (it != cat_.instances.end()) rec = it->second;
      const bool was_removed = rec.r.removed;
      const int64_t removed_since = rec.r.removed_since_ms;
      rec.r = desc->first.r;
      rec.r.removed = was_removed;
      rec.r.removed_since_ms = removed_since;
      rec.description_digest = desc->second;
      log::Info("catalog: recovered the current generation of an instance",
                {{"instance", uuid}, {"seq", seq}});
      cat_.instances[uuid] = rec;
      *changed = true;
    }
    for (auto it = cat_.instances.begin(); it != cat_.instances.end();) {
      if (!on_disk.count(it->first)) {
        log::Warn("catalog: instance listed in catalog.json has no generation on disk",
                  {{"instance", it->first}});
        it = cat_.instances.erase(it);
        *changed = true;
      } else {
        ++it;
      }
    }
    for (auto it = cat_.images.begin(); it != cat_.images.end();) {
      if (!Exists(env_, it->second.file_path)) {
        it = cat_.images.erase(it);
        *changed = true;
      } else {
        ++it;
      }
    }
    AdoptRecords(changed);
    return Status::Ok();
  }

  // A SAPI record file renamed into place by a commit that did not reach its
  // commit point is a complete record newer than the index says: the index
  // takes it (size and digest of what is on disk).
  void AdoptRecords(bool* changed) {
    auto adopt = [&](const std::string& path, SapiRecord* rec, bool* has) {
      auto fs = env_.Stat(path);
      if (!fs.ok() || fs->type != FileType::kRegular) return;
      auto text = ReadFileToString(env_, path, 64ull << 20);
      if (!text.ok()) return;
      const Digest128 d = Xxh3Digest(*text);
      if (*has && d == rec->digest && text->size() == rec->size) return;
      log::Info("catalog: adopting a SAPI record newer than catalog.json", {{"path", path}});
      rec->digest = d;
      rec->size = text->size();
      *has = true;
      *changed = true;
    };
    adopt(RecordPath(""), &cat_.application, &cat_.has_application);
    auto top = env_.ListDir(o_.data_dir);
    if (!top.ok()) return;
    for (const DirEntry& e : *top) {
      if (!e.name.starts_with("svc-")) continue;
      const std::string svc = e.name.substr(4);
      if (!internal::IsSafeName(svc)) continue;
      auto it = cat_.services.find(svc);
      bool has = it != cat_.services.end();
      SapiRecord rec = has ? it->second : SapiRecord{};
      adopt(RecordPath(svc), &rec, &has);
      if (has) cat_.services[svc] = rec;
    }
  }

  Status CleanInstanceDir(const std::string& uuid, uint64_t current) {
    ASSIGN_OR_RETURN(auto entries, env_.ListDir(InstDir(uuid)));
    for (const DirEntry& e : entries) {
      uint64_t seq;
      if (e.name == kCurrent) continue;
      if (!ParseSeq(e.name, &seq) || seq > current) {
        RETURN_IF_ERROR(trash_->Discard(InstDir(uuid) + "/" + e.name));
      }
    }
    return Status::Ok();
  }

  Result<std::pair<Description, Digest128>> ReadDescription(const std::string& uuid,
                                                            uint64_t seq) const {
    const std::string path = GenDir(uuid, seq) + "/" + kGenerationFile;
    ASSIGN_OR_RETURN(std::string text, ReadFileToString(env_, path, 1ull << 30));
    ASSIGN_OR_RETURN(Description d, DecodeDescription(text, path));
    if (d.r.uuid != uuid) return DataError(path + ": describes instance " + d.r.uuid);
    d.r.seq = seq;
    return std::make_pair(std::move(d), Xxh3Digest(text));
  }

  // ---- Writing helpers that never follow a symlink ----

  // Ensures `dir` (under `root`, both absolute, root existing) is a real
  // directory chain: every component is lstat'ed and created 0700 when missing.
  Status MakeDirsUnder(const std::string& root, const std::string& rel,
                       std::unordered_set<std::string>* known) {
    std::string path = root;
    size_t start = 0;
    while (start < rel.size()) {
      size_t slash = rel.find('/', start);
      std::string part =
          rel.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
      path += "/" + part;
      start = slash == std::string::npos ? rel.size() : slash + 1;
      if (known && known->count(path)) continue;
      auto st = env_.Stat(path);
      if (st.ok()) {
        if (st->type != FileType::kDirectory) {
          return DataError("refusing to write under " + path + ": not a directory (a symlink?)");
        }
      } else if (st.status().code() == Code::kNotFound) {
        RETURN_IF_ERROR(env_.MakeDir(path, 0700));
      } else {
        return st.status();
      }
      if (known) known->insert(path);
    }
    return Status::Ok();
  }

  // Points symlink `link` at `target` atomically (new link, then rename over).
  // Does not fsync: the caller fsyncs DirName(link) before it relies on the switch.
  Status PointLink(const std::string& link, const std::string& target) {
    auto cur = env_.ReadLink(link);
    if (cur.ok() && *cur == target) return Status::Ok();
    const std::string tmp = TempPathFor(link);
    RETURN_IF_ERROR(env_.Symlink(target, tmp));
    Status st = env_.Rename(tmp, link);
    if (!st.ok()) {
      env_.RemoveFile(tmp).IgnoreError();
      return st;
    }
    return Status::Ok();
  }

  // svc-<service>/vm-<uuid>.json and svc-<service>/data/<uuid> (see PointLink).
  Status LinkServiceNames(const InstanceRecord& r) {
    const std::string svc = SvcDir(r.service);
    RETURN_IF_ERROR(MakeDirsUnder(o_.data_dir, "svc-" + r.service + "/data", nullptr));
    RETURN_IF_ERROR(PointLink(svc + "/vm-" + r.uuid + ".json",
                              "../instances/" + r.uuid + "/current/vms/" + r.uuid + ".json"));
    return PointLink(svc + "/data/" + r.uuid,
                     "../../instances/" + r.uuid + "/current/datasets/" + r.uuid);
  }

  void UnlinkServiceNames(const std::string& service, const std::string& uuid) {
    env_.RemoveFile(SvcDir(service) + "/vm-" + uuid + ".json").IgnoreError();
    env_.RemoveFile(SvcDir(service) + "/data/" + uuid).IgnoreError();
  }

  // Where a SAPI record lives: the application record (service "") at
  // <data_dir>/sapi-app.json, hard-linked into every svc-<service>/ as a
  // view; a service record at svc-<service>/sapi-svc.json.
  std::string RecordPath(const std::string& service) const {
    return service.empty() ? P("sapi-app.json") : SvcDir(service) + "/sapi-svc.json";
  }

  // svc-<service>/sapi-app.json: a hard link to <data_dir>/sapi-app.json.
  // (A catalog written before that file existed keeps its per-service copies.)
  Status LinkApplicationRecord(const std::string& service) {
    const std::string src = RecordPath(""), dst = SvcDir(service) + "/sapi-app.json";
    auto have = env_.Stat(src);
    if (!have.ok()) return have.status().code() == Code::kNotFound ? Status::Ok() : have.status();
    if (auto cur = env_.Stat(dst); cur.ok() && cur->ino == have->ino && cur->dev == have->dev) {
      return Status::Ok();
    }
    const std::string tmp = TempPathFor(dst);
    RETURN_IF_ERROR(env_.Link(src, tmp));
    Status st = env_.Rename(tmp, dst);
    if (!st.ok()) env_.RemoveFile(tmp).IgnoreError();
    return st;
  }

  // Makes the views agree with the index: for each of `instances`, its
  // `current` link and svc-<service> names; for each of `services`,
  // sapi-insts.json and sapi-app.json. Each is an atomic replace, not
  // fsync'd: the index is the truth and Open repairs every view. Tries
  // everything; returns the first failure. Caller holds mu_ (or is Open).
  Status UpdateViews(const std::set<std::string>& instances,
                     const std::set<std::string>& services) {
    Status first;
    auto note = [&](const Status& st) {
      if (!st.ok() && first.ok()) first = st;
    };
    for (const std::string& uuid : instances) {
      auto it = cat_.instances.find(uuid);
      if (it == cat_.instances.end()) continue;
      note(PointLink(InstDir(uuid) + "/" + kCurrent, std::to_string(it->second.r.seq)));
      note(LinkServiceNames(it->second.r));
    }
    for (const std::string& svc : services) {
      if (!Exists(env_, SvcDir(svc))) continue;
      note(WriteSapiInstances(svc));
      if (cat_.has_application) note(LinkApplicationRecord(svc));
    }
    return first;
  }

  // A file replace staged for a commit: `tmp` is written and closed, not yet
  // synced or renamed over `path`.
  struct PendingReplace {
    std::string tmp, path;
  };

  // Writes `data` to a temp file beside `path` without syncing it.
  Status StageReplace(const std::string& path, const std::string& data,
                      std::vector<PendingReplace>* pending) {
    const std::string tmp = TempPathFor(path);
    Status st = [&]() -> Status {
      ASSIGN_OR_RETURN(auto w, env_.OpenWrite(tmp, 0600, /*exclusive=*/true));
      RETURN_IF_ERROR(w->Append(data));
      return w->Close();
    }();
    if (!st.ok()) {
      env_.RemoveFile(tmp).IgnoreError();
      return st;
    }
    pending->push_back({tmp, path});
    return Status::Ok();
  }

  // Renames the staged replaces into place, in order, stopping at the first
  // failure (a caller that needs them durable fsyncs them before). Temp files
  // left by a failure are removed here or by Open.
  Status FinishReplaces(std::vector<PendingReplace>* pending) {
    Status first;
    for (const PendingReplace& r : *pending) {
      Status st = first.ok() ? env_.Rename(r.tmp, r.path) : first;
      if (!st.ok()) {
        env_.RemoveFile(r.tmp).IgnoreError();
        if (first.ok()) first = st;
      }
    }
    pending->clear();
    return first;
  }

  // svc-<service>/sapi-insts.json (a view): the SAPI records of the
  // service's held instances; replaced, not fsync'd, when its content differs.
  Status WriteSapiInstances(const std::string& service) {
    json arr = json::array();
    for (const auto& [uuid, rec] : cat_.instances) {
      if (rec.r.service != service) continue;
      auto text = ReadFileToString(env_, GenDir(uuid, rec.r.seq) + "/sapi/" + uuid + ".json");
      if (!text.ok()) continue;
      auto j = internal::ParseJson(*text, "SAPI record of " + uuid);
      if (j.ok()) arr.push_back(std::move(*j));
    }
    if (!Exists(env_, SvcDir(service))) return Status::Ok();
    const std::string path = SvcDir(service) + "/sapi-insts.json";
    const std::string text = arr.dump(2) + "\n";
    if (auto cur = ReadFileToString(env_, path); cur.ok() && *cur == text) return Status::Ok();
    std::vector<PendingReplace> pending;
    RETURN_IF_ERROR(StageReplace(path, text, &pending));
    return FinishReplaces(&pending);
  }

  // ---- Retention ----

  Status ApplyRetentionLocked() {
    const int64_t now = clock_.WallMs();
    bool changed = false;
    std::set<std::string> touched_services;
    for (auto it = cat_.instances.begin(); it != cat_.instances.end();) {
      Record& rec = it->second;
      if (rec.r.removed && now - rec.r.removed_since_ms >= o_.removed_grace_ms) {
        log::Info("catalog: deleting an instance its peer stopped exporting",
                  {{"instance", rec.r.uuid},
                   {"alias", rec.r.alias},
                   {"peer", rec.r.peer},
                   {"removed_since", FormatIso8601Ms(rec.r.removed_since_ms)}});
        UnlinkServiceNames(rec.r.service, rec.r.uuid);
        RETURN_IF_ERROR(trash_->Discard(InstDir(rec.r.uuid)));
        touched_services.insert(rec.r.service);
        it = cat_.instances.erase(it);
        changed = true;
        continue;
      }
      RETURN_IF_ERROR(PruneGenerations(rec.r.uuid, rec.r.seq));
      ++it;
    }
    // Images: referenced by any held instance's origin chain.
    std::set<std::string> referenced;
    for (const auto& [uuid, rec] : cat_.instances) {
      for (std::string img = rec.r.image_uuid; !img.empty() && referenced.insert(img).second;) {
        auto i = cat_.images.find(img);
        img = i == cat_.images.end() ? "" : i->second.origin;
      }
    }
    for (auto it = cat_.images.begin(); it != cat_.images.end();) {
      StoredImage& img = it->second;
      if (referenced.count(img.uuid)) {
        if (img.unreferenced_since_ms != 0) changed = true;
        img.unreferenced_since_ms = 0;
        img.referenced = true;
      } else if (img.unreferenced_since_ms == 0) {
        img.unreferenced_since_ms = now;
        img.referenced = false;
        changed = true;
      } else if (now - img.unreferenced_since_ms >= o_.removed_grace_ms) {
        log::Info("catalog: deleting an image no held instance uses", {{"image", img.uuid}});
        RETURN_IF_ERROR(trash_->Discard(ImageDir(img.uuid)));
        it = cat_.images.erase(it);
        changed = true;
        continue;
      }
      ++it;
    }
    for (const std::string& svc : touched_services) RETURN_IF_ERROR(WriteSapiInstances(svc));
    if (changed) RETURN_IF_ERROR(WriteCatalog());
    return Status::Ok();
  }

  Status PruneGenerations(const std::string& uuid, uint64_t current) {
    ASSIGN_OR_RETURN(auto entries, env_.ListDir(InstDir(uuid)));
    std::vector<uint64_t> seqs;
    for (const DirEntry& e : entries) {
      uint64_t seq;
      if (ParseSeq(e.name, &seq) && seq <= current) seqs.push_back(seq);
    }
    std::sort(seqs.rbegin(), seqs.rend());
    const size_t keep = std::max<uint32_t>(1, o_.generations_kept);
    for (size_t i = keep; i < seqs.size(); ++i) {
      if (seqs[i] == current) continue;
      RETURN_IF_ERROR(trash_->Discard(GenDir(uuid, seqs[i])));
    }
    return Status::Ok();
  }
};

// ---- Orphans -------------------------------------------------------------------

// Copies the tree at `from` to `to` with hard links (files), new symlinks and
// new directories; never follows a symlink. Adds every directory made to `made`.
Status LinkTree(Env& env, const std::string& from, const std::string& to, SyncSet* made) {
  RETURN_IF_ERROR(env.MakeDir(to, 0700));
  made->dirs.insert(to);
  ASSIGN_OR_RETURN(auto entries, env.ListDir(from));
  for (const DirEntry& e : entries) {
    const std::string a = from + "/" + e.name, b = to + "/" + e.name;
    ASSIGN_OR_RETURN(FileStat fs, env.Stat(a));
    switch (fs.type) {
      case FileType::kDirectory:
        RETURN_IF_ERROR(LinkTree(env, a, b, made));
        break;
      case FileType::kRegular:
        RETURN_IF_ERROR(env.Link(a, b));
        break;
      case FileType::kSymlink: {
        ASSIGN_OR_RETURN(std::string target, env.ReadLink(a));
        RETURN_IF_ERROR(env.Symlink(target, b));
        break;
      }
      case FileType::kOther:
        break;
    }
  }
  return Status::Ok();
}

Result<std::string> KeepOrphan(Store::Impl& st, const std::string& staging, const PeerState& held,
                               const std::map<std::string, Record>& instances) {
  Env& env = st.env_;
  const std::string prefix = held.name + "-" + std::to_string(held.generation) + "-";
  if (auto existing = env.ListDir(st.P("orphans")); existing.ok()) {
    for (const DirEntry& e : *existing) {
      if (e.name.starts_with(prefix)) return st.P("orphans/" + e.name);  // kept already
    }
  }
  const std::string name = prefix + CompactTime(st.clock_.WallMs());
  const std::string staged = staging + "/orphan";
  SyncSet made;
  RETURN_IF_ERROR(env.MakeDir(staged, 0700));
  RETURN_IF_ERROR(env.MakeDir(staged + "/instances", 0700));
  made.dirs.insert(staged + "/instances");
  for (const auto& [uuid, rec] : instances) {
    RETURN_IF_ERROR(
        LinkTree(env, st.GenDir(uuid, rec.r.seq), staged + "/instances/" + uuid, &made));
  }
  json peer = PeerToJson(held);
  peer["name"] = held.name;
  peer["kept_at"] = FormatIso8601Ms(st.clock_.WallMs());
  RETURN_IF_ERROR(WriteFileAtomic(env, staged + "/peer.json", peer.dump(2) + "\n", 0600));
  RETURN_IF_ERROR(SyncAll(env, made));  // peer.json's publish fsync'd `staged` itself
  const std::string final_dir = st.P("orphans/" + name);
  RETURN_IF_ERROR(env.Rename(staged, final_dir));
  RETURN_IF_ERROR(env.SyncDir(st.P("orphans")));
  return final_dir;
}

// ---- PullTxn -----------------------------------------------------------------

struct PullTxn::State {
  Store::Impl* store = nullptr;
  std::string peer;
  ServiceFilter filter;
  bool filtered = false;
  std::string staging;  // absolute: <data_dir>/.staging/<id>
  bool planned = false;
  bool done = false;  // committed or aborted
  ManifestAnswer::Kind kind = ManifestAnswer::Kind::kFull;
  PeerState new_peer;  // what the peer state becomes on commit

  struct StagedInstance {
    Description desc;
    std::string dir;          // staged generation root
    std::string old_service;  // "" when new
  };
  std::vector<StagedInstance> changed;
  std::vector<std::string> confirmed;  // unchanged instances: pulled_at/generation refreshed
  std::vector<std::string> newly_removed;
  std::vector<std::string> reappeared;

  struct StagedImage {
    StoredImage img;
    std::string dir;
  };
  std::vector<StagedImage> images;

  struct StagedRecord {
    std::string service;  // "" for the application record
    std::string staged_path;
    SapiRecord rec;
  };
  std::vector<StagedRecord> records;

  std::mutex mu;  // guards the transfer states and `known_dirs`
  std::vector<Transfer> transfers;
  struct TransferState {
    FileEntry entry;
    std::string staged_path;
    bool finished = false;
  };
  std::unordered_map<std::string, TransferState> xfer;
  std::unordered_set<std::string> known_dirs;  // staged directories (and the staging root's)
  std::vector<std::string> plan_files;         // staged by Plan: copies and empty files
  PlanSummary summary;
};

PullTxn::PullTxn(std::unique_ptr<State> state) : s_(std::move(state)) {}

PullTxn::~PullTxn() {
  if (s_ && !s_->done) Abort();
}

const std::string& PullTxn::peer() const { return s_->peer; }
const std::vector<Transfer>& PullTxn::transfers() const { return s_->transfers; }

void PullTxn::Abort() {
  if (s_->done) return;
  s_->done = true;
  s_->store->trash_->Discard(s_->staging).IgnoreError();
  std::lock_guard<std::mutex> lock(s_->store->mu_);
  s_->store->active_.erase(s_->peer);
}

namespace {

// The tree rule: no entry may live under a symlink or a file of the same set.
Status CheckTree(const std::map<std::string, FileEntry>& files) {
  for (const auto& [path, f] : files) {
    for (size_t slash = path.find('/'); slash != std::string::npos;
         slash = path.find('/', slash + 1)) {
      auto parent = files.find(path.substr(0, slash));
      if (parent != files.end() && parent->second.kind != EntryKind::kDir) {
        return DataError("manifest puts " + path + " under " + parent->first +
                         ", which is not a directory");
      }
    }
    if (f.kind == EntryKind::kSymlink) {
      RETURN_IF_ERROR(syncproto::ValidateSymlinkTarget(path, f.target));
    }
  }
  return Status::Ok();
}

}  // namespace

Result<PlanSummary> PullTxn::Plan(const ManifestAnswer& answer) {
  State& s = *s_;
  Store::Impl& st = *s.store;
  Env& env = st.env_;
  if (s.planned || s.done) return InternalError("PullTxn::Plan called twice or after the end");
  s.planned = true;
  s.kind = answer.kind;
  const syncproto::Manifest& m = answer.manifest;

  PeerState held;
  std::map<std::string, Record> held_instances;
  {
    std::lock_guard<std::mutex> lock(st.mu_);
    if (auto it = st.cat_.peers.find(s.peer); it != st.cat_.peers.end()) held = it->second;
    for (const auto& [uuid, rec] : st.cat_.instances) {
      if (rec.r.peer == s.peer) held_instances[uuid] = rec;
    }
  }
  held.name = s.peer;
  s.new_peer = held;
  s.new_peer.node_uuid = m.node_uuid;
  s.new_peer.node_name = m.node_name;
  s.new_peer.generation = m.generation;
  s.new_peer.boot_id = m.boot_id;

  // Rollback guard.
  const bool went_back =
      held.generation > 0 && (m.generation < held.generation ||
                              (m.boot_id != held.boot_id && m.generation <= held.generation));
  if (went_back) {
    ASSIGN_OR_RETURN(std::string orphan, KeepOrphan(st, s.staging, held, held_instances));
    s.summary.orphaned = true;
    s.summary.orphan_dir = orphan;
    log::Warn("peer went backwards: kept what we held under orphans/ before taking its new state",
              {{"peer", s.peer},
               {"held_generation", held.generation},
               {"held_boot_id", held.boot_id},
               {"peer_generation", m.generation},
               {"peer_boot_id", m.boot_id},
               {"orphan", orphan}});
  }

  if (answer.kind == ManifestAnswer::Kind::kUnchanged) {
    if (went_back || m.generation != held.generation || m.boot_id != held.boot_id) {
      return DataError("peer " + s.peer + " answered \"unchanged\" at generation " +
                       std::to_string(m.generation) + " but we hold " +
                       std::to_string(held.generation));
    }
    for (const auto& [uuid, rec] : held_instances) {
      if (!rec.r.removed && s.filter.Matches(rec.r.service)) s.confirmed.push_back(uuid);
    }
    return s.summary;
  }
  if (answer.kind == ManifestAnswer::Kind::kDelta &&
      (went_back || answer.since_generation != held.generation || m.boot_id != held.boot_id)) {
    return DataError("peer " + s.peer + " sent a delta since generation " +
                     std::to_string(answer.since_generation) + " but we hold generation " +
                     std::to_string(held.generation) + " of boot " + held.boot_id);
  }

  // Group the answer's entries.
  std::map<std::string, std::map<std::string, FileEntry>> by_instance;
  std::map<std::string, FileEntry> other;  // images/..., sapi app/service records
  for (const FileEntry& f : m.files) {
    RETURN_IF_ERROR(syncproto::ValidateExportPath(f.path));
    std::string inst = syncproto::InstanceOfPath(f.path);
    if (!inst.empty()) {
      if (!internal::IsSafeName(inst)) return DataError("bad instance in path " + f.path);
      by_instance[inst][f.path] = f;
    } else if (f.path.starts_with("images/") || f.path == "sapi/application.json" ||
               f.path.starts_with("sapi/services/")) {
      other[f.path] = f;
    } else {
      return DataError("manifest path " + f.path + " belongs to no instance, image or SAPI record");
    }
  }
  std::set<std::string> removed(answer.removed.begin(), answer.removed.end());
  for (const std::string& r : removed) RETURN_IF_ERROR(syncproto::ValidateExportPath(r));

  RETURN_IF_ERROR(env.MakeDir(s.staging + "/instances", 0700));
  RETURN_IF_ERROR(env.MakeDir(s.staging + "/images", 0700));
  RETURN_IF_ERROR(env.MakeDir(s.staging + "/sapi", 0700));

  const bool full = answer.kind == ManifestAnswer::Kind::kFull;
  std::set<std::string> in_answer;
  for (const syncproto::InstanceInfo& info : m.instances) {
    if (!internal::IsSafeName(info.uuid)) return DataError("bad instance uuid " + info.uuid);
    if (!internal::IsSafeName(info.service)) {
      return DataError("instance " + info.uuid + " has a bad service name \"" + info.service +
                       "\"");
    }
    if (!s.filter.Matches(info.service)) continue;
    in_answer.insert(info.uuid);
    auto held_it = held_instances.find(info.uuid);
    // The held copy (also one held from another peer, or just orphaned) is the basis.
    Record prev_rec;
    bool have = false;
    {
      std::lock_guard<std::mutex> lock(st.mu_);
      if (auto it = st.cat_.instances.find(info.uuid); it != st.cat_.instances.end()) {
        prev_rec = it->second;
        have = true;
      }
    }
    std::map<std::string, FileEntry> prev;
    std::string prev_dir;
    if (have) {
      auto desc = st.ReadDescription(info.uuid, prev_rec.r.seq);
      if (desc.ok()) {
        for (FileEntry& f : desc->first.files) prev[f.path] = std::move(f);
        prev_dir = st.GenDir(info.uuid, prev_rec.r.seq);
      } else {
        log::Warn("catalog: cannot read the held generation; pulling the instance whole",
                  {{"instance", info.uuid}, {"error", desc.status().message()}});
      }
    }
    std::map<std::string, FileEntry> next;
    if (full || prev_dir.empty()) {
      if (!full && prev_dir.empty() && have) {
        return DataError("delta for instance " + info.uuid + " but its held copy is unreadable");
      }
      next = by_instance[info.uuid];
    } else {
      next = prev;
      for (const std::string& r : removed) next.erase(r);
      for (auto& [path, f] : by_instance[info.uuid]) next[path] = f;
    }
    RETURN_IF_ERROR(CheckTree(next));
    auto vm = next.find("vms/" + info.uuid + ".json");
    if (vm == next.end() || vm->second.kind != EntryKind::kFile) {
      return DataError("instance " + info.uuid + " has no VM payload in the manifest");
    }
    if (have && held_it != held_instances.end() && held_it->second.r.removed) {
      s.reappeared.push_back(info.uuid);
    }
    const bool same_meta = have && prev_rec.r.alias == info.alias &&
                           prev_rec.r.service == info.service &&
                           prev_rec.r.image_uuid == info.image_uuid && prev_rec.r.peer == s.peer;
    if (same_meta && !prev_dir.empty() && next == prev) {
      s.confirmed.push_back(info.uuid);
      continue;
    }
    // Build the staged generation.
    State::StagedInstance si;
    si.dir = s.staging + "/instances/" + info.uuid;
    si.old_service = have ? prev_rec.r.service : "";
    si.desc.r.uuid = info.uuid;
    si.desc.r.alias = info.alias;
    si.desc.r.service = info.service;
    si.desc.r.image_uuid = info.image_uuid;
    si.desc.r.peer = s.peer;
    si.desc.r.generation = m.generation;
    si.desc.node_uuid = m.node_uuid;
    si.desc.boot_id = m.boot_id;
    RETURN_IF_ERROR(env.MakeDir(si.dir, 0700));
    s.known_dirs.insert(si.dir);
    std::unordered_map<std::string, std::string> by_digest;  // digest -> prev local path
    for (const auto& [path, f] : prev) {
      if (f.kind == EntryKind::kFile)
        by_digest.emplace(f.digest.Hex() + std::to_string(f.size), prev_dir + "/" + path);
    }
    for (const auto& [path, f] : next) {
      const std::string staged = si.dir + "/" + path;
      const std::string parent_rel = DirName(path);
      RETURN_IF_ERROR(st.MakeDirsUnder(si.dir, parent_rel, &s.known_dirs));
      si.desc.files.push_back(f);
      if (f.kind == EntryKind::kFile) si.desc.r.size += f.size;
      switch (f.kind) {
        case EntryKind::kDir: {
          auto ex = env.Stat(staged);
          if (!ex.ok())
            RETURN_IF_ERROR(env.MakeDir(staged, 0700));
          else if (ex->type != FileType::kDirectory)
            return DataError("staging conflict at " + path);
          s.known_dirs.insert(staged);
          break;
        }
        case EntryKind::kSymlink:
          RETURN_IF_ERROR(env.Symlink(f.target, staged));
          break;
        case EntryKind::kFile: {
          auto p = prev.find(path);
          std::string same;
          if (p != prev.end() && p->second.kind == EntryKind::kFile &&
              p->second.digest == f.digest && p->second.size == f.size) {
            same = prev_dir + "/" + path;
          } else if (auto d = by_digest.find(f.digest.Hex() + std::to_string(f.size));
                     d != by_digest.end()) {
            same = d->second;
          }
          if (!same.empty()) {
            auto basis = env.Stat(same);
            if (basis.ok() && basis->type == FileType::kRegular && basis->mode == DiskMode(f) &&
                basis->mtime_ns == f.mtime_ns) {
              RETURN_IF_ERROR(env.Link(same, staged));  // unchanged: costs nothing
            } else {
              RETURN_IF_ERROR(env.CopyFile(same, staged, 0600));  // metadata differs: own inode
              RETURN_IF_ERROR(env.SetMode(staged, DiskMode(f)));
              RETURN_IF_ERROR(env.SetMtime(staged, f.mtime_ns));
              s.plan_files.push_back(staged);
            }
            ++s.summary.unchanged_files;
          } else if (f.size == 0) {
            if (f.digest != Xxh3Digest(std::string_view())) {
              return DataError("empty file " + path + " with a non-empty digest");
            }
            ASSIGN_OR_RETURN(auto w, env.OpenWrite(staged, 0600, true));
            RETURN_IF_ERROR(w->Close());
            RETURN_IF_ERROR(env.SetMode(staged, DiskMode(f)));
            RETURN_IF_ERROR(env.SetMtime(staged, f.mtime_ns));
            s.plan_files.push_back(staged);
          } else {
            Transfer t;
            t.entry = f;
            if (p != prev.end() && p->second.kind == EntryKind::kFile)
              t.basis_path = prev_dir + "/" + path;
            s.xfer[path] = State::TransferState{f, staged, false};
            s.transfers.push_back(std::move(t));
            ++s.summary.transfer_files;
            s.summary.transfer_bytes += f.size;
          }
          break;
        }
      }
    }
    si.desc.r.files = si.desc.files.size();
    s.changed.push_back(std::move(si));
    ++s.summary.changed_instances;
  }
  // Instances of this peer that it no longer exports (within the filter).
  for (const auto& [uuid, rec] : held_instances) {
    if (!in_answer.count(uuid) && !rec.r.removed && s.filter.Matches(rec.r.service)) {
      s.newly_removed.push_back(uuid);
      ++s.summary.removed_instances;
    }
  }

  // Images: pulled once by uuid, never again.
  for (const syncproto::ImageInfo& info : m.images) {
    if (!internal::IsSafeName(info.uuid) ||
        (!info.origin.empty() && !internal::IsSafeName(info.origin))) {
      return DataError("bad image uuid " + info.uuid);
    }
    {
      std::lock_guard<std::mutex> lock(st.mu_);
      if (st.cat_.images.count(info.uuid)) continue;
    }
    const std::string base = "images/" + info.uuid;
    auto mf = other.find(base + "/manifest.json");
    auto ff = other.find(base + "/file");
    if (mf == other.end() || ff == other.end() || mf->second.kind != EntryKind::kFile ||
        ff->second.kind != EntryKind::kFile) {
      log::Warn("catalog: the peer's answer lacks the files of an image we do not hold",
                {{"peer", s.peer}, {"image", info.uuid}});
      continue;
    }
    State::StagedImage si;
    si.dir = s.staging + "/images/" + info.uuid;
    si.img.uuid = info.uuid;
    si.img.origin = info.origin;
    si.img.size = ff->second.size;
    si.img.file_digest = ff->second.digest;
    si.img.manifest_digest = mf->second.digest;
    si.img.manifest_size = mf->second.size;
    si.img.manifest_path = st.ImageDir(info.uuid) + "/manifest.json";
    si.img.file_path = st.ImageDir(info.uuid) + "/file";
    RETURN_IF_ERROR(env.MakeDir(si.dir, 0700));
    s.known_dirs.insert(si.dir);
    for (const FileEntry* f : {&mf->second, &ff->second}) {
      const std::string staged = si.dir + "/" + BaseName(f->path);
      if (f->size == 0) {
        ASSIGN_OR_RETURN(auto w, env.OpenWrite(staged, 0600, true));
        RETURN_IF_ERROR(w->Close());
        s.plan_files.push_back(staged);
        continue;
      }
      s.xfer[f->path] = State::TransferState{*f, staged, false};
      s.transfers.push_back(Transfer{*f, ""});
      ++s.summary.transfer_files;
      s.summary.transfer_bytes += f->size;
    }
    s.images.push_back(std::move(si));
  }

  // SAPI application and service records.
  for (const auto& [path, f] : other) {
    if (!path.starts_with("sapi/")) continue;
    if (f.kind != EntryKind::kFile) return DataError("SAPI record " + path + " is not a file");
    std::string service;
    std::string current;
    SapiRecord held_rec;
    bool held_has = false;
    {
      std::lock_guard<std::mutex> lock(st.mu_);
      if (path == "sapi/application.json") {
        held_has = st.cat_.has_application;
        held_rec = st.cat_.application;
      } else {
        service = BaseName(path);
        if (!service.ends_with(".json") || path.substr(0, 14) != "sapi/services/" ||
            path.find('/', 14) != std::string::npos) {
          return DataError("bad SAPI service record path " + path);
        }
        service.resize(service.size() - 5);
        if (!internal::IsSafeName(service))
          return DataError("bad SAPI service record path " + path);
        if (auto it = st.cat_.services.find(service); it != st.cat_.services.end()) {
          held_has = true;
          held_rec = it->second;
        }
      }
    }
    if (held_has && held_rec.digest == f.digest && held_rec.size == f.size) continue;
    State::StagedRecord r;
    r.service = service;
    r.staged_path =
        s.staging + "/sapi/" + (service.empty() ? "application" : "svc-" + service) + ".json";
    r.rec = SapiRecord{f.digest, f.size, s.peer};
    Transfer t{f, ""};
    if (held_has && service.empty() && Exists(env, st.RecordPath(""))) {
      t.basis_path = st.RecordPath("");
    } else if (held_has) {
      std::string svc_for_basis = service;
      if (service.empty()) {
        std::lock_guard<std::mutex> lock(st.mu_);
        for (const auto& [svc, rec] : st.cat_.services) {
          if (Exists(env, st.SvcDir(svc) + "/sapi-app.json")) {
            svc_for_basis = svc;
            break;
          }
        }
      }
      if (!svc_for_basis.empty()) {
        t.basis_path =
            st.SvcDir(svc_for_basis) + (service.empty() ? "/sapi-app.json" : "/sapi-svc.json");
        if (!Exists(env, t.basis_path)) t.basis_path.clear();
      }
    }
    if (f.size == 0) {
      ASSIGN_OR_RETURN(auto w, env.OpenWrite(r.staged_path, 0600, true));
      RETURN_IF_ERROR(w->Close());
      s.plan_files.push_back(r.staged_path);
    } else {
      s.xfer[path] = State::TransferState{f, r.staged_path, false};
      s.transfers.push_back(std::move(t));
      ++s.summary.transfer_files;
      s.summary.transfer_bytes += f.size;
    }
    s.records.push_back(std::move(r));
  }
  std::sort(s.transfers.begin(), s.transfers.end(),
            [](const Transfer& a, const Transfer& b) { return a.entry.path < b.entry.path; });
  return s.summary;
}

Result<std::unique_ptr<ReadableFile>> PullTxn::OpenBasis(const Transfer& t) {
  if (t.basis_path.empty()) return NotFoundError("transfer " + t.entry.path + " has no basis");
  return s_->store->env_.OpenRead(t.basis_path);
}

namespace {

// The file StageFile hands out: the store's own write path. It hashes every
// byte it passes to the Env file, so FinishFile knows the digest of exactly
// what was written without reading the file back. It does not fsync: for a
// large file it starts the writeback every 8 MiB and at close, and Commit
// fsyncs every staged file before anything is renamed in.
class StagedFile final : public WritableFile {
 public:
  StagedFile(const void* txn, std::string path, std::unique_ptr<WritableFile> file)
      : txn_(txn), export_path_(std::move(path)), file_(std::move(file)) {}
  Status Append(std::span<const uint8_t> data) override {
    if (failed_) return IoError("write after a failed write on " + file_->path());
    Status st = file_->Append(data);
    if (!st.ok()) {
      failed_ = true;  // what is on disk is unknown: FinishFile re-reads it
      return st;
    }
    hasher_.Update(data);
    size_ += data.size();
    if (size_ - writeback_from_ >= kWritebackStep) {
      file_->StartWriteback(writeback_from_, size_ - writeback_from_);
      writeback_from_ = size_;
    }
    return Status::Ok();
  }
  Status Sync() override { return file_->Sync(); }
  // Small files are left to Commit's fsync: starting their writeback one by
  // one (block allocation, I/O submission) would sit on the transfer's path.
  Status Close() override {
    if (size_ >= kWritebackStep && size_ > writeback_from_) {
      file_->StartWriteback(writeback_from_, 0);
    }
    writeback_from_ = size_;
    return file_->Close();
  }
  void StartWriteback(uint64_t offset, uint64_t length) override {
    file_->StartWriteback(offset, length);
  }
  const std::string& path() const override { return file_->path(); }
  int fd() const override { return file_->fd(); }

  // True when every byte went through Append of this object for this txn and path.
  bool Written(const void* txn, const std::string& path) const {
    return !failed_ && txn == txn_ && path == export_path_;
  }
  Digest128 digest() { return hasher_.Finish(); }
  uint64_t size() const { return size_; }

 private:
  const void* txn_;
  std::string export_path_;
  std::unique_ptr<WritableFile> file_;
  static constexpr uint64_t kWritebackStep = 8u << 20;
  Xxh3Hasher hasher_;
  uint64_t size_ = 0;
  uint64_t writeback_from_ = 0;  // bytes before this offset are under writeback
  bool failed_ = false;
};

}  // namespace

Result<std::unique_ptr<WritableFile>> PullTxn::StageFile(const std::string& path) {
  State& s = *s_;
  Env& env = s.store->env_;
  std::string staged;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.xfer.find(path);
    if (it == s.xfer.end()) return NotFoundError("pull plan has no transfer for " + path);
    it->second.finished = false;
    staged = it->second.staged_path;
    // Every parent under the staging root must be a directory we made.
    for (std::string dir = DirName(staged); dir.size() > s.staging.size(); dir = DirName(dir)) {
      if (s.known_dirs.count(dir)) continue;
      auto st = env.Stat(dir);
      if (!st.ok() || st->type != FileType::kDirectory) {
        return DataError("refusing to stage " + path + ": " + dir + " is not a directory");
      }
      s.known_dirs.insert(dir);
    }
  }
  ASSIGN_OR_RETURN(auto file, env.OpenWrite(staged, 0600, /*exclusive=*/false));
  return std::unique_ptr<WritableFile>(new StagedFile(&s, path, std::move(file)));
}

Status PullTxn::FinishFile(const std::string& path, std::unique_ptr<WritableFile> file) {
  State& s = *s_;
  Env& env = s.store->env_;
  if (!file) return InternalError("FinishFile(" + path + "): no file");
  FileEntry want;
  std::string staged;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.xfer.find(path);
    if (it == s.xfer.end()) return NotFoundError("pull plan has no transfer for " + path);
    want = it->second.entry;
    staged = it->second.staged_path;
  }
  RETURN_IF_ERROR(file->Close());
  Digest128 got;
  uint64_t size = 0;
  auto* ours = dynamic_cast<StagedFile*>(file.get());
  if (ours != nullptr && ours->Written(&s, path)) {
    got = ours->digest();  // the store's own write path hashed every byte it wrote
    size = ours->size();
  } else {
    ASSIGN_OR_RETURN(auto in, env.OpenRead(staged));
    RETURN_IF_ERROR(internal::HashOpenFile(*in, &got, &size, nullptr, 0, want.size));
  }
  file.reset();
  if (size != want.size || got != want.digest) {
    env.RemoveFile(staged).IgnoreError();
    return DataError("digest mismatch for " + path + " from peer " + s.peer + ": expected " +
                     want.digest.Hex() + " (" + std::to_string(want.size) + " bytes), got " +
                     got.Hex() + " (" + std::to_string(size) + " bytes)");
  }
  if (!path.starts_with("images/") && !path.starts_with("sapi/")) {
    RETURN_IF_ERROR(env.SetMode(staged, DiskMode(want)));
  }
  RETURN_IF_ERROR(env.SetMtime(staged, want.mtime_ns));
  std::lock_guard<std::mutex> lock(s.mu);
  s.xfer[path].finished = true;
  return Status::Ok();
}

Status PullTxn::Commit() {
  State& s = *s_;
  Store::Impl& st = *s.store;
  Env& env = st.env_;
  if (!s.planned || s.done) return InternalError("PullTxn::Commit without Plan, or after the end");
  {
    std::lock_guard<std::mutex> lock(s.mu);
    for (const Transfer& t : s.transfers) {
      if (!s.xfer[t.entry.path].finished) {
        return DataError("pull from " + s.peer + " cannot commit: " + t.entry.path +
                         " was not transferred and verified");
      }
    }
  }
  std::lock_guard<std::mutex> commit_lock(st.commit_mu_);
  const int64_t now = st.clock_.WallMs();

  // 0. Finish the staged trees: directory modes and mtimes (children first),
  // each generation's description; then every staged file, directory and
  // description is fsync'd (exactly what this pull wrote, several at once)
  // before anything is renamed in.
  SyncSet sync;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    for (const auto& [path, x] : s.xfer) sync.files.push_back(x.staged_path);
    sync.files.insert(sync.files.end(), s.plan_files.begin(), s.plan_files.end());
    sync.dirs.insert(s.known_dirs.begin(), s.known_dirs.end());
  }
  std::vector<std::string> texts(s.changed.size());
  for (size_t i = 0; i < s.changed.size(); ++i) {
    State::StagedInstance& si = s.changed[i];
    for (auto it = si.desc.files.rbegin(); it != si.desc.files.rend(); ++it) {
      if (it->kind != EntryKind::kDir) continue;
      const std::string d = si.dir + "/" + it->path;
      RETURN_IF_ERROR(env.SetMode(d, DiskMode(*it)));
      RETURN_IF_ERROR(env.SetMtime(d, it->mtime_ns));
    }
    uint64_t seq = 1;
    if (auto entries = env.ListDir(st.InstDir(si.desc.r.uuid)); entries.ok()) {
      for (const DirEntry& e : *entries) {
        uint64_t n;
        if (ParseSeq(e.name, &n)) seq = std::max(seq, n + 1);
      }
    }
    si.desc.r.seq = seq;
    si.desc.r.pulled_at_ms = now;
    texts[i] = EncodeDescription(si.desc);
    const std::string desc_path = si.dir + "/" + kGenerationFile;
    ASSIGN_OR_RETURN(auto w, env.OpenWrite(desc_path, 0600, true));
    RETURN_IF_ERROR(w->Append(texts[i]));
    RETURN_IF_ERROR(w->Close());
    sync.files.push_back(desc_path);
  }
  RETURN_IF_ERROR(SyncAll(env, sync));
  sync.clear();

  // From here on `next` is what catalog.json will say. The store's index
  // (what readers see) becomes `next` only when catalog.json is renamed over:
  // that rename is the commit point of the whole pull.
  Catalog next;
  {
    std::lock_guard<std::mutex> lock(st.mu_);
    next = st.cat_;
  }
  std::set<std::string> switched;                          // instances with a new generation
  std::vector<std::pair<std::string, std::string>> moved;  // (uuid, old service)
  std::vector<State::StagedRecord> records_in;             // record files renamed into place
  std::vector<Store::Impl::PendingReplace> index;
  Status failed = [&]() -> Status {
    // 1. Images (before the instances that need them). An image renamed in
    // by a commit that fails later is found in place by the next pull.
    for (const State::StagedImage& si : s.images) {
      const std::string final_dir = st.ImageDir(si.img.uuid);
      if (!Exists(env, final_dir)) {
        RETURN_IF_ERROR(env.Rename(si.dir, final_dir));
        sync.dirs.insert(st.P("images"));
      }
      next.images[si.img.uuid] = si.img;
    }
    // 2. Each changed instance's generation renamed in, under a seq that no
    // index names yet (Open discards it if the commit point is not reached).
    for (size_t i = 0; i < s.changed.size(); ++i) {
      const State::StagedInstance& si = s.changed[i];
      const std::string& uuid = si.desc.r.uuid;
      RETURN_IF_ERROR(st.MakeDirsUnder(st.o_.data_dir, "instances/" + uuid, nullptr));
      RETURN_IF_ERROR(env.Rename(si.dir, st.GenDir(uuid, si.desc.r.seq)));
      sync.dirs.insert(st.P("instances"));
      sync.dirs.insert(st.InstDir(uuid));
      Record rec;
      rec.r = si.desc.r;
      rec.description_digest = Xxh3Digest(texts[i]);
      next.instances[uuid] = rec;
      switched.insert(uuid);
      if (!si.old_service.empty() && si.old_service != rec.r.service) {
        moved.emplace_back(uuid, si.old_service);
      }
    }
    for (const std::string& uuid : s.confirmed) {
      if (auto it = next.instances.find(uuid); it != next.instances.end()) {
        it->second.r.generation = s.new_peer.generation;
        it->second.r.pulled_at_ms = now;
      }
    }
    for (const std::string& uuid : s.reappeared) {
      if (auto it = next.instances.find(uuid); it != next.instances.end()) {
        it->second.r.removed = false;
        it->second.r.removed_since_ms = 0;
      }
    }
    for (const std::string& uuid : s.newly_removed) {
      auto it = next.instances.find(uuid);
      if (it != next.instances.end() && !it->second.r.removed) {
        it->second.r.removed = true;
        it->second.r.removed_since_ms = now;
        log::Info("catalog: peer no longer exports an instance; kept for removed_grace",
                  {{"peer", s.peer}, {"instance", uuid}, {"alias", it->second.r.alias}});
      }
    }
    // 3. SAPI records: each staged file renamed over its one canonical file
    // (an atomic replace: a record is the latest one seen, not part of a
    // generation; Open adopts a record file that catalog.json lags behind).
    for (const State::StagedRecord& r : s.records) {
      const std::string dst = st.RecordPath(r.service);
      if (!r.service.empty()) {
        RETURN_IF_ERROR(st.MakeDirsUnder(st.o_.data_dir, "svc-" + r.service, nullptr));
      }
      RETURN_IF_ERROR(env.Rename(r.staged_path, dst));
      sync.dirs.insert(DirName(dst));
      records_in.push_back(r);
      if (r.service.empty()) {
        next.application = r.rec;
        next.has_application = true;
      } else {
        next.services[r.service] = r.rec;
      }
    }
    PeerState& peer = next.peers[s.peer];
    peer.name = s.peer;
    peer.last_attempt_ms = now;
    if (!s.filtered) {
      peer.generation = s.new_peer.generation;
      peer.boot_id = s.new_peer.boot_id;
    }
    peer.node_uuid = s.new_peer.node_uuid;
    peer.node_name = s.new_peer.node_name;
    peer.last_pull_ms = now;
    peer.last_error.clear();
    // 4. The index: staged, then it and every directory steps 1-3 changed are
    // fsync'd, so everything it names is durable before it is.
    RETURN_IF_ERROR(st.StageReplace(st.P(kCatalogFile), st.EncodeCatalog(next), &index));
    sync.dirs.insert(st.o_.data_dir);
    sync.files.push_back(index.front().tmp);
    RETURN_IF_ERROR(SyncAll(env, sync));
    // 5. The commit point.
    return st.FinishReplaces(&index);
  }();
  sync.clear();
  for (const auto& r : index) env.RemoveFile(r.tmp).IgnoreError();

  std::lock_guard<std::mutex> lock(st.mu_);
  if (!failed.ok()) {
    // Nothing this pull changed is in the index. The record files renamed in
    // are complete records: the index takes them as they are.
    for (const State::StagedRecord& r : records_in) {
      if (r.service.empty()) {
        st.cat_.application = r.rec;
        st.cat_.has_application = true;
      } else {
        st.cat_.services[r.service] = r.rec;
      }
    }
    PeerState& peer = st.cat_.peers[s.peer];
    peer.name = s.peer;
    peer.last_attempt_ms = now;
    peer.last_error = failed.ToString();
    st.WriteCatalog().IgnoreError();  // best effort: the error is returned either way
    s.done = true;
    st.trash_->Discard(s.staging).IgnoreError();
    st.active_.erase(s.peer);
    return failed;
  }
  st.cat_ = std::move(next);
  // Committed. Its directory fsync'd, catalog.json is durable.
  Status durable = env.SyncDir(st.o_.data_dir);
  if (!durable.ok()) {
    durable =
        IoError("the pull from " + s.peer +
                " is committed, but catalog.json may not survive a crash: " + durable.message());
  }
  // The views follow the index; Open repairs whatever a crash or a failure
  // here left behind, so they are not fsync'd.
  std::set<std::string> services;
  for (const std::string& uuid : switched) services.insert(st.cat_.instances[uuid].r.service);
  for (const auto& [uuid, old_service] : moved) {
    st.UnlinkServiceNames(old_service, uuid);
    services.insert(old_service);
  }
  for (const std::string& uuid : s.newly_removed) {
    if (auto it = st.cat_.instances.find(uuid); it != st.cat_.instances.end()) {
      services.insert(it->second.r.service);
    }
  }
  if (!records_in.empty()) {
    for (const auto& [uuid, rec] : st.cat_.instances) services.insert(rec.r.service);
  }
  if (Status views = st.UpdateViews(switched, services); !views.ok()) {
    log::Warn("catalog: the svc-*/current views lag the index (repaired at the next open)",
              {{"peer", s.peer}, {"error", views.message()}});
  }
  if (durable.ok()) {
    if (Status r = st.ApplyRetentionLocked(); !r.ok()) {
      log::Warn("catalog: retention failed", {{"error", r.message()}});
    }
  }
  s.done = true;
  st.trash_->Discard(s.staging).IgnoreError();
  st.active_.erase(s.peer);
  return durable;
}

// ---- Store -------------------------------------------------------------------

Result<std::unique_ptr<Store>> Store::Open(Env& env, Clock& clock, StoreOptions options) {
  auto impl = std::make_unique<Impl>(env, clock, std::move(options));
  RETURN_IF_ERROR(impl->Open());
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::~Store() = default;

const std::string& Store::data_dir() const { return impl_->o_.data_dir; }

Result<std::unique_ptr<PullTxn>> Store::BeginPull(const std::string& peer,
                                                  std::vector<std::string> services) {
  Impl& st = *impl_;
  if (st.o_.read_only) return InternalError("BeginPull on a read-only store");
  if (!internal::IsSafeName(peer)) return ConfigError("bad peer name \"" + peer + "\"");
  {
    std::lock_guard<std::mutex> lock(st.mu_);
    if (!st.active_.insert(peer).second) {
      return TemporaryError("a pull from " + peer + " is already in progress");
    }
  }
  auto state = std::make_unique<PullTxn::State>();
  state->store = &st;
  state->peer = peer;
  state->filtered = !ServiceFilter(services).all();
  state->filter = ServiceFilter(std::move(services));
  state->staging =
      st.P(std::string(kStaging) + "/" + peer + "-" + internal::RandomHex().substr(0, 12));
  Status made = st.env_.MakeDir(state->staging, 0700);
  if (!made.ok()) {
    std::lock_guard<std::mutex> lock(st.mu_);
    st.active_.erase(peer);
    return made;
  }
  return std::unique_ptr<PullTxn>(new PullTxn(std::move(state)));
}

Status Store::RecordPullError(const std::string& peer, const Status& error) {
  Impl& st = *impl_;
  if (st.o_.read_only) return InternalError("RecordPullError on a read-only store");
  std::lock_guard<std::mutex> lock(st.mu_);
  PeerState& p = st.cat_.peers[peer];
  p.name = peer;
  p.last_attempt_ms = st.clock_.WallMs();
  p.last_error = error.ToString();
  return st.WriteCatalog();
}

std::vector<PeerState> Store::Peers() const {
  std::lock_guard<std::mutex> lock(impl_->mu_);
  std::vector<PeerState> out;
  for (const auto& [name, p] : impl_->cat_.peers) out.push_back(p);
  return out;
}

std::optional<PeerState> Store::Peer(const std::string& name) const {
  std::lock_guard<std::mutex> lock(impl_->mu_);
  auto it = impl_->cat_.peers.find(name);
  if (it == impl_->cat_.peers.end()) return std::nullopt;
  return it->second;
}

std::vector<InstanceRecord> Store::Instances() const {
  std::vector<InstanceRecord> out;
  {
    std::lock_guard<std::mutex> lock(impl_->mu_);
    for (const auto& [uuid, rec] : impl_->cat_.instances) out.push_back(rec.r);
  }
  std::sort(out.begin(), out.end(), [](const InstanceRecord& a, const InstanceRecord& b) {
    return std::tie(a.service, a.alias, a.uuid) < std::tie(b.service, b.alias, b.uuid);
  });
  return out;
}

std::vector<std::string> Store::Services() const {
  std::set<std::string> s;
  std::lock_guard<std::mutex> lock(impl_->mu_);
  for (const auto& [uuid, rec] : impl_->cat_.instances) s.insert(rec.r.service);
  return {s.begin(), s.end()};
}

std::optional<InstanceRecord> Store::FindInstance(const std::string& uuid) const {
  std::lock_guard<std::mutex> lock(impl_->mu_);
  auto it = impl_->cat_.instances.find(uuid);
  if (it == impl_->cat_.instances.end()) return std::nullopt;
  return it->second.r;
}

Result<std::vector<uint64_t>> Store::Generations(const std::string& uuid) const {
  if (!internal::IsSafeName(uuid)) return NotFoundError("no instance " + uuid);
  ASSIGN_OR_RETURN(auto entries, impl_->env_.ListDir(impl_->InstDir(uuid)));
  auto cur = FindInstance(uuid);
  std::vector<uint64_t> out;
  for (const DirEntry& e : entries) {
    uint64_t seq;
    if (ParseSeq(e.name, &seq) && (!cur || seq <= cur->seq)) out.push_back(seq);
  }
  std::sort(out.begin(), out.end());
  return out;
}

Result<InstanceGeneration> Store::Instance(const std::string& uuid, uint64_t seq) const {
  auto rec = FindInstance(uuid);
  if (!rec) return NotFoundError("the catalog holds no instance " + uuid);
  if (seq == 0) seq = rec->seq;
  ASSIGN_OR_RETURN(auto desc, impl_->ReadDescription(uuid, seq));
  InstanceGeneration g;
  g.record = *rec;
  g.record.seq = seq;
  g.record.generation = seq == rec->seq ? rec->generation : desc.first.r.generation;
  g.record.pulled_at_ms = seq == rec->seq ? rec->pulled_at_ms : desc.first.r.pulled_at_ms;
  g.record.size = desc.first.r.size;
  g.record.files = desc.first.r.files;
  g.current = seq == rec->seq;
  g.dir = impl_->GenDir(uuid, seq);
  for (FileEntry& f : desc.first.files) {
    StoredFile sf;
    sf.local_path = g.dir + "/" + f.path;
    sf.entry = std::move(f);
    g.files.push_back(std::move(sf));
  }
  ASSIGN_OR_RETURN(g.vm_payload, ReadFileToString(impl_->env_, g.dir + "/vms/" + uuid + ".json"));
  auto sapi = ReadFileToString(impl_->env_, g.dir + "/sapi/" + uuid + ".json");
  if (sapi.ok()) g.sapi_record = std::move(*sapi);
  return g;
}

std::vector<StoredImage> Store::Images() const {
  std::lock_guard<std::mutex> lock(impl_->mu_);
  std::vector<StoredImage> out;
  for (const auto& [uuid, img] : impl_->cat_.images) out.push_back(img);
  return out;
}

Result<std::vector<StoredImage>> Store::ImageChain(const std::string& image_uuid) const {
  std::lock_guard<std::mutex> lock(impl_->mu_);
  std::vector<StoredImage> chain;
  std::set<std::string> seen;
  for (std::string u = image_uuid; !u.empty();) {
    if (!seen.insert(u).second) return DataError("image origin cycle at " + u);
    auto it = impl_->cat_.images.find(u);
    if (it == impl_->cat_.images.end()) {
      return NotFoundError("the catalog holds no image " + u +
                           (u == image_uuid ? "" : " (origin in the chain of " + image_uuid + ")"));
    }
    chain.push_back(it->second);
    u = it->second.origin;
  }
  std::reverse(chain.begin(), chain.end());
  return chain;
}

Result<VerifyReport> Store::Verify() const {
  Impl& st = *impl_;
  Env& env = st.env_;
  VerifyReport report;
  auto check_file = [&](const std::string& path, const Digest128& want, uint64_t want_size) {
    ++report.files_checked;
    auto in = env.OpenRead(path);
    if (!in.ok()) {
      report.problems.push_back(
          {path, in.status().code() == Code::kNotFound ? "missing" : in.status().message()});
      return;
    }
    Digest128 got;
    uint64_t size = 0;
    Status h = internal::HashOpenFile(**in, &got, &size, nullptr, 0, want_size);
    report.bytes_checked += size;
    if (!h.ok()) {
      report.problems.push_back({path, h.message()});
    } else if (size != want_size) {
      report.problems.push_back(
          {path, "size " + std::to_string(size) + " != " + std::to_string(want_size)});
    } else if (got != want) {
      report.problems.push_back(
          {path, "digest mismatch: expected " + want.Hex() + ", got " + got.Hex()});
    }
  };
  std::map<std::string, Record> instances;
  std::map<std::string, StoredImage> images;
  Catalog copy;
  {
    std::lock_guard<std::mutex> lock(st.mu_);
    instances = st.cat_.instances;
    images = st.cat_.images;
    copy.services = st.cat_.services;
    copy.application = st.cat_.application;
    copy.has_application = st.cat_.has_application;
  }
  for (const auto& [uuid, rec] : instances) {
    const std::string desc_path = st.GenDir(uuid, rec.r.seq) + "/" + kGenerationFile;
    auto text = ReadFileToString(env, desc_path, 1ull << 30);
    if (!text.ok()) {
      report.problems.push_back({desc_path, text.status().message()});
      continue;
    }
    if (!rec.description_digest.IsZero() && Xxh3Digest(*text) != rec.description_digest) {
      report.problems.push_back({desc_path, "generation description does not match catalog.json"});
      continue;
    }
    auto desc = DecodeDescription(*text, desc_path);
    if (!desc.ok()) {
      report.problems.push_back({desc_path, desc.status().message()});
      continue;
    }
    const std::string dir = st.GenDir(uuid, rec.r.seq);
    for (const FileEntry& f : desc->files) {
      const std::string path = dir + "/" + f.path;
      if (f.kind == EntryKind::kFile) {
        check_file(path, f.digest, f.size);
      } else if (f.kind == EntryKind::kSymlink) {
        ++report.files_checked;
        auto target = env.ReadLink(path);
        if (!target.ok() || *target != f.target) {
          report.problems.push_back({path, "symlink target differs from \"" + f.target + "\""});
        }
      } else {
        auto fs = env.Stat(path);
        if (!fs.ok() || fs->type != FileType::kDirectory)
          report.problems.push_back({path, "directory missing"});
      }
    }
  }
  for (const auto& [uuid, img] : images) {
    check_file(img.manifest_path, img.manifest_digest, img.manifest_size);
    check_file(img.file_path, img.file_digest, img.size);
  }
  for (const auto& [svc, r] : copy.services) {
    check_file(st.SvcDir(svc) + "/sapi-svc.json", r.digest, r.size);
  }
  if (copy.has_application) {
    // The canonical file; a catalog from before it existed: a per-service copy.
    if (Exists(env, st.RecordPath(""))) {
      check_file(st.RecordPath(""), copy.application.digest, copy.application.size);
    } else {
      for (const auto& [uuid, rec] : instances) {
        const std::string p = st.SvcDir(rec.r.service) + "/sapi-app.json";
        if (Exists(env, p)) {
          check_file(p, copy.application.digest, copy.application.size);
          break;
        }
      }
    }
  }
  return report;
}

Status Store::ApplyRetention() {
  if (impl_->o_.read_only) return InternalError("ApplyRetention on a read-only store");
  std::lock_guard<std::mutex> commit_lock(impl_->commit_mu_);
  std::lock_guard<std::mutex> lock(impl_->mu_);
  return impl_->ApplyRetentionLocked();
}

}  // namespace lifeboat::catalog
