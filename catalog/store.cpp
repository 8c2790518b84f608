#include "catalog/store.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_set>
#include <utility>

#include "base/file_digest.h"
#include "base/log.h"
#include "base/text.h"
#include "catalog/checkout.h"
#include "catalog/internal/store_impl.h"
#include "catalog/trash.h"

namespace lifeboat::catalog {

namespace {
constexpr size_t kSyncThreads = 4;     // fsyncs in flight at once
constexpr size_t kSyncPerThread = 16;  // fewer than this per thread: fewer threads
}  // namespace

Status SyncAll(Env& env, const SyncSet& set, Filesystem* fs, size_t fs_from) {
  if (set.empty()) return Status::Ok();
  if (fs != nullptr && set.files.size() + set.dirs.size() >= fs_from) return fs->Sync();
  std::vector<std::pair<const std::string*, bool>> work;  // path, is a directory
  work.reserve(set.files.size() + set.dirs.size());
  for (const std::string& f : set.files) work.emplace_back(&f, false);
  for (const std::string& d : set.dirs) work.emplace_back(&d, true);
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

FileCheck CheckStoredFile(Env& env, const std::string& path, const Digest128& want,
                          uint64_t want_size, const Digest256* want_sha) {
  FileCheck c;
  auto in = env.OpenRead(path);
  if (!in.ok()) {
    c.ok = false;
    c.missing = in.status().code() == Code::kNotFound;
    c.what = c.missing ? "missing" : in.status().message();
    return c;
  }
  Digest128 got;
  Digest256 got_sha;
  Status h = HashOpenFile(**in, &got, &c.bytes, nullptr, 0, want_size,
                          want_sha != nullptr ? &got_sha : nullptr);
  c.ok = false;
  if (!h.ok()) {
    c.what = h.message();
  } else if (c.bytes != want_size) {
    c.what = "size " + std::to_string(c.bytes) + " != " + std::to_string(want_size);
  } else if (got != want) {
    c.what = "digest mismatch: expected " + want.Hex() + ", got " + got.Hex();
  } else if (want_sha != nullptr && got_sha != *want_sha) {
    c.what = "SHA-256 mismatch: the object is not named by its content";
  } else {
    c.ok = true;
  }
  return c;
}

// ---- Store::Impl -----------------------------------------------------------------

Status Store::Impl::Open() {
  if (o_.data_dir.empty()) return ConfigError("store: no data_dir");
  if (!o_.read_only) {
    RETURN_IF_ERROR(CreateDirs(env_, o_.data_dir, 0700));
    for (const char* d : {"instances", "images", "orphans", kObjects}) {
      RETURN_IF_ERROR(CreateDirs(env_, P(d), 0700));
    }
    ASSIGN_OR_RETURN(trash_, Trash::Open(env_, P(kTrash)));
    if (Exists(env_, P(kStaging))) RETURN_IF_ERROR(trash_->Discard(P(kStaging)));
    RETURN_IF_ERROR(env_.MakeDir(P(kStaging), 0700));
  } else if (!Exists(env_, o_.data_dir)) {
    return Status::Ok();  // nothing pulled yet: an empty catalog
  }
  // The file read, for Verify's question whether a commit replaced it
  // since (read-only stores: another process's commits).
  auto before = env_.Stat(P(kCatalogFile));
  auto text = ReadFileToString(env_, P(kCatalogFile));
  auto after = env_.Stat(P(kCatalogFile));
  if (text.ok() && before.ok() && after.ok() && SameFileState(*before, *after)) {
    opened_index_ = *before;
  }
  bool index_loaded = false;
  if (text.ok()) {
    Status loaded = LoadCatalog(*text);
    if (!loaded.ok() && loaded_format_ > kCatalogFormatVersion) {
      // Rebuilding it could not read the newer descriptions: leave it all alone.
      return DataError(P(kCatalogFile) + " is in format " + std::to_string(loaded_format_) +
                       ", newer than this lifeboat's (" + std::to_string(kCatalogFormatVersion) +
                       "): run the lifeboat that wrote it; nothing was changed");
    }
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
  if (index_loaded && loaded_format_ == 1) {
    if (o_.read_only) {
      return DataError("the catalog at " + o_.data_dir +
                       " is in format 1: start the agent once, it converts the catalog");
    }
    RETURN_IF_ERROR(RemoveTempLeftovers());
    RETURN_IF_ERROR(MigrateFormat1());
  }
  if (!o_.read_only) RETURN_IF_ERROR(RemoveTempLeftovers());
  bool changed = false;
  RETURN_IF_ERROR(Reconcile(index_loaded, &changed));
  if (o_.read_only) return Status::Ok();
  if (changed) RETURN_IF_ERROR(WriteCatalog());
  RETURN_IF_ERROR(LoadRefs());
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

Status Store::Impl::RemoveTempLeftovers() {
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
  if (auto insts = env_.ListDir(P("instances")); insts.ok()) {
    for (const DirEntry& e : *insts) {
      if (IsSafeName(e.name)) RETURN_IF_ERROR(clean(InstDir(e.name)));
    }
  }
  ASSIGN_OR_RETURN(auto top, env_.ListDir(o_.data_dir));
  for (const DirEntry& e : top) {
    if (!e.name.starts_with("svc-")) continue;
    RETURN_IF_ERROR(clean(P(e.name)));
    RETURN_IF_ERROR(clean(P(e.name + "/data")));
  }
  return Status::Ok();
}

Status Store::Impl::LoadCatalog(const std::string& text) {
  ASSIGN_OR_RETURN(json j, ParseJson(text, P(kCatalogFile)));
  try {
    int version = j.at("format_version").get<int>();
    loaded_format_ = version;
    // 2: descriptions list their entries (still read); 1: converted by Open.
    if (version != kCatalogFormatVersion && version != 2 && version != 1) {
      return DataError("catalog.json format_version " + std::to_string(version) +
                       " is not supported (expected " + std::to_string(kCatalogFormatVersion) +
                       ")");
    }
    for (auto& [name, p] : j.at("peers").items()) cat_.peers[name] = PeerFromJson(name, p);
    for (auto& [uuid, r] : j.at("instances").items()) {
      if (IsSafeName(uuid)) cat_.instances[uuid] = InstanceFromJson(uuid, r);
    }
    for (auto& [uuid, i] : j.at("images").items()) {
      if (!IsSafeName(uuid)) continue;
      StoredImage img;
      img.uuid = uuid;
      img.origin = i.value("origin", "");
      img.size = i.value("size", uint64_t{0});
      img.manifest_size = i.value("manifest_size", uint64_t{0});
      if (auto d = Digest128::FromHex(i.value("file_digest", ""))) img.file_digest = *d;
      if (auto d = Digest128::FromHex(i.value("manifest_digest", ""))) img.manifest_digest = *d;
      if (auto d = Digest256::FromHex(i.value("file_sha256", ""))) img.file_sha256 = *d;
      if (auto d = Digest256::FromHex(i.value("manifest_sha256", ""))) img.manifest_sha256 = *d;
      img.unreferenced_since_ms = i.value("unreferenced_since_ms", int64_t{0});
      img.referenced = img.unreferenced_since_ms == 0;
      img.manifest_path = ImageDir(uuid) + "/manifest.json";
      img.file_path = ImageDir(uuid) + "/file";
      cat_.images[uuid] = img;
    }
    if (j.contains("last_scrub") && j["last_scrub"].is_object()) {
      const json& l = j["last_scrub"];
      ScrubRecord r;
      r.finished_ms = l.value("finished_ms", int64_t{0});
      r.repair = l.value("repair", false);
      r.objects_checked = l.value("objects_checked", uint64_t{0});
      r.problems = l.value("problems", uint64_t{0});
      r.repaired = l.value("repaired", uint64_t{0});
      r.first_problem = l.value("first_problem", "");
      cat_.last_scrub = r;
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
          if (IsSafeName(svc)) cat_.services[svc] = rec(r);
        }
      }
    }
  } catch (const json::exception& e) {
    return DataError(std::string("catalog.json: ") + e.what());
  }
  return Status::Ok();
}

std::string Store::Impl::EncodeCatalog(const Catalog& cat) const {
  json peers = json::object(), instances = json::object(), images = json::object();
  for (const auto& [name, p] : cat.peers) peers[name] = PeerToJson(p);
  for (const auto& [uuid, r] : cat.instances) instances[uuid] = InstanceToJson(r);
  for (const auto& [uuid, i] : cat.images) {
    images[uuid] = {{"origin", i.origin},
                    {"size", i.size},
                    {"file_digest", i.file_digest.Hex()},
                    {"manifest_digest", i.manifest_digest.Hex()},
                    {"file_sha256", i.file_sha256.Hex()},
                    {"manifest_sha256", i.manifest_sha256.Hex()},
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
  if (cat.last_scrub) {
    const ScrubRecord& r = *cat.last_scrub;
    j["last_scrub"] = {{"finished_ms", r.finished_ms},
                       {"repair", r.repair},
                       {"objects_checked", r.objects_checked},
                       {"problems", r.problems},
                       {"repaired", r.repaired},
                       {"first_problem", r.first_problem}};
  }
  return DumpJson(j, 1) + "\n";
}

std::vector<uint64_t> DescriptionSeqs(const std::vector<DirEntry>& entries) {
  std::vector<uint64_t> seqs;
  for (const DirEntry& e : entries) {
    uint64_t seq;
    if (e.name.ends_with(".json") && ParseSeq(e.name.substr(0, e.name.size() - 5), &seq)) {
      seqs.push_back(seq);
    }
  }
  std::sort(seqs.begin(), seqs.end());
  return seqs;
}

namespace {}  // namespace

Status Store::Impl::Reconcile(bool index_loaded, bool* changed) {
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
    if (!IsSafeName(uuid)) continue;
    auto it = cat_.instances.find(uuid);
    if (it != cat_.instances.end() && Exists(env_, DescPath(uuid, it->second.r.seq))) {
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
    // No index entry (or its generation is gone): the view's generation, at
    // most one commit behind the lost index, else the newest description.
    auto list = env_.ListDir(InstDir(uuid));
    std::vector<uint64_t> seqs = list.ok() ? DescriptionSeqs(*list) : std::vector<uint64_t>{};
    uint64_t seq = ViewSeq(uuid);
    if (seq == 0 || !std::binary_search(seqs.begin(), seqs.end(), seq)) {
      seq = seqs.empty() ? 0 : seqs.back();
    }
    if (seq == 0) {
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
      // Its peer's next pull must be a full one: a delta cannot rebuild it.
      log::Warn(
          "catalog: instance listed in catalog.json has no generation on disk; "
          "its peer is pulled whole next time",
          {{"instance", it->first}, {"peer", it->second.r.peer}});
      if (auto p = cat_.peers.find(it->second.r.peer); p != cat_.peers.end()) {
        p->second.generation = 0;
      }
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

Result<std::shared_ptr<const std::vector<FileEntry>>> Store::Impl::CurrentFiles(
    const std::string& uuid, uint64_t seq) const {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = current_files_.find(uuid);
    if (it != current_files_.end() && it->second.first == seq) return it->second.second;
  }
  ASSIGN_OR_RETURN(auto desc, ReadDescription(uuid, seq));
  return std::make_shared<const std::vector<FileEntry>>(std::move(desc.first.files));
}

std::shared_ptr<const TreeIds> Store::Impl::CurrentTrees(const std::string& uuid,
                                                         uint64_t seq) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = current_trees_.find(uuid);
  return it != current_trees_.end() && it->second.first == seq ? it->second.second : nullptr;
}

uint64_t Store::Impl::ViewSeq(const std::string& uuid) const {
  auto text = ReadFileToString(env_, ViewSeqPath(uuid), 64);
  uint64_t seq = 0;
  if (!text.ok()) return 0;
  return ParseSeq(TrimTrailingSpace(*text), &seq) ? seq : 0;
}

namespace {

// What generation `d` references itself (RetainedGeneration::ids): its
// top's files and trees, or every file of a description without trees.
std::vector<Digest256> TopIds(const Description& d) {
  std::vector<Digest256> ids;
  if (!d.has_tree) {
    for (const FileEntry& f : d.files) {
      if (f.kind == EntryKind::kFile) ids.push_back(f.sha256);
    }
    return ids;
  }
  for (const json& e : d.top) {  // read and checked by ReadTrees already
    auto f = EntryFromJson(e);
    if (f.ok() && f->kind == EntryKind::kFile) ids.push_back(f->sha256);
    if (e.contains("tree")) {
      if (auto tree = Digest256::FromHex(e["tree"].get<std::string>())) ids.push_back(*tree);
    }
  }
  return ids;
}

// Registers in `refs` every tree of `cache` reachable from `ids` that is
// not registered yet, with its members' files and subtrees as children.
void RegisterTrees(const TreeCache& cache, const std::vector<Digest256>& ids, ObjectRefs* refs) {
  std::vector<Digest256> todo(ids);
  std::vector<Digest256> children;
  while (!todo.empty()) {
    const Digest256 id = todo.back();
    todo.pop_back();
    auto it = cache.trees.find(id);
    if (it == cache.trees.end() || refs->IsTree(id)) continue;
    children.clear();
    for (const FileEntry& f : it->second.members) {
      if (f.kind == EntryKind::kFile) children.push_back(f.sha256);
    }
    for (const auto& [path, sub] : it->second.subtrees) {
      children.push_back(sub);
      todo.push_back(sub);
    }
    refs->AddTree(id, children);
  }
}

}  // namespace

Status Store::Impl::LoadRefs() {
  std::map<std::string, Record> instances;
  {
    std::lock_guard<std::mutex> lock(mu_);
    instances = cat_.instances;
  }
  decltype(gen_ids_) gens;
  decltype(current_files_) current;
  decltype(current_trees_) current_trees;
  ObjectRefs refs;
  size_t unreadable = 0;  // retained generations whose objects are not known
  TreeCache trees;        // generations share most trees: each is parsed once
  for (const auto& [uuid, rec] : instances) {
    ASSIGN_OR_RETURN(auto list, env_.ListDir(InstDir(uuid)));
    for (uint64_t seq : DescriptionSeqs(list)) {
      if (seq > rec.r.seq) continue;
      auto desc = ReadDescription(uuid, seq, &trees);
      if (!desc.ok()) {
        log::Warn("catalog: unreadable description of a retained generation",
                  {{"instance", uuid}, {"seq", seq}, {"error", desc.status().message()}});
        ++unreadable;
        continue;
      }
      gens[uuid][seq].committed_ms = desc->first.r.pulled_at_ms;
      std::vector<Digest256>& ids = gens[uuid][seq].ids;
      ids = TopIds(desc->first);
      RegisterTrees(trees, ids, &refs);
      refs.Add(ids);
      if (seq == rec.r.seq) {
        current[uuid] = {seq,
                         std::make_shared<std::vector<FileEntry>>(std::move(desc->first.files))};
        if (desc->first.trees) current_trees[uuid] = {seq, desc->first.trees};
      }
    }
  }
  ASSIGN_OR_RETURN(ObjectStore::Listing on_disk, objects_.List());
  std::lock_guard<std::mutex> lock(mu_);
  refs_ = std::move(refs);
  gen_ids_ = std::move(gens);
  current_files_ = std::move(current);
  current_trees_ = std::move(current_trees);
  // An unreadable generation (a damaged description or tree) names objects
  // nobody can list: none is deleted until every generation reads again
  // (a scrub with repair and the pull after it), so that no content of a
  // damaged generation is lost with it.
  if (unreadable > 0) {
    log::Warn(
        "catalog: garbage collection skipped: some retained generations are unreadable "
        "(run `lifeboat catalog repair`)",
        {{"generations", unreadable}});
    return Status::Ok();
  }
  std::vector<Digest256> garbage;
  for (const Digest256& id : on_disk.ids) {
    if (refs_.Count(id) == 0) garbage.push_back(id);
  }
  if (!garbage.empty()) {
    log::Info("catalog: deleting objects no generation names", {{"objects", garbage.size()}});
  }
  RemoveObjects(garbage);
  return Status::Ok();
}

size_t Store::Impl::RemoveObjects(const std::vector<Digest256>& ids) {
  size_t removed = 0;
  for (const Digest256& id : ids) {
    if (refs_.Count(id) != 0) continue;
    Status st = objects_.Remove(id);
    if (st.ok()) {
      ++removed;
    } else if (st.code() != Code::kNotFound) {
      log::Warn("catalog: cannot delete an unused object (the next open retries)",
                {{"object", id.Hex()}, {"error", st.message()}});
    }
  }
  return removed;
}

Status Store::Impl::RefreshView(const std::string& uuid, uint64_t seq,
                                const std::vector<FileEntry>& entries,
                                const std::vector<FileEntry>* from, uint64_t from_seq,
                                const std::vector<std::string>* changed,
                                const ViewSkeleton& skeleton) {
  const std::string dir = ViewDir(uuid);
  const std::string marker = ViewSeqPath(uuid);
  const bool was_dir = IsDirectory(env_, dir);
  Status made = Status::Ok();
  if (from != nullptr && changed != nullptr && was_dir && ViewSeq(uuid) == from_seq) {
    RETURN_IF_ERROR(env_.RemoveFile(marker));  // the view is in between
    made = UpdateCheckout(env_, objects_, *from, entries, *changed, dir);
  } else {
    made = DataError("rebuild");
  }
  if (!made.ok()) {
    if (auto gone = env_.RemoveFile(marker); !gone.ok() && gone.code() != Code::kNotFound) {
      return gone;
    }
    if (Exists(env_, dir)) RETURN_IF_ERROR(trash_->Discard(dir));
    if (!skeleton.dir.empty() && IsDirectory(env_, skeleton.dir) &&
        env_.Rename(skeleton.dir, dir).ok()) {
      if (!skeleton.filled) RETURN_IF_ERROR(FillCheckout(env_, objects_, entries, dir));
    } else {
      RETURN_IF_ERROR(BuildCheckout(env_, objects_, entries, dir));
    }
  }
  std::vector<PendingReplace> pending;
  RETURN_IF_ERROR(StageReplace(marker, std::to_string(seq) + "\n", &pending));
  return FinishReplaces(&pending);
}

void Store::Impl::AdoptRecords(bool* changed) {
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
    if (!IsSafeName(svc)) continue;
    auto it = cat_.services.find(svc);
    bool has = it != cat_.services.end();
    SapiRecord rec = has ? it->second : SapiRecord{};
    adopt(RecordPath(svc), &rec, &has);
    if (has) cat_.services[svc] = rec;
  }
}

Status Store::Impl::CleanInstanceDir(const std::string& uuid, uint64_t current) {
  ASSIGN_OR_RETURN(auto entries, env_.ListDir(InstDir(uuid)));
  for (const DirEntry& e : entries) {
    uint64_t seq = 0;
    if (e.name == kCurrent || e.name == kCurrentSeq) continue;
    const bool description =
        e.name.ends_with(".json") && ParseSeq(e.name.substr(0, e.name.size() - 5), &seq);
    if (!description || seq > current) {
      RETURN_IF_ERROR(trash_->Discard(InstDir(uuid) + "/" + e.name));
    }
  }
  return Status::Ok();
}

Result<std::pair<Description, Digest128>> Store::Impl::ReadDescription(const std::string& uuid,
                                                                       uint64_t seq,
                                                                       TreeCache* cache) const {
  const std::string path = DescPath(uuid, seq);
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(env_, path, 1ull << 30));
  ASSIGN_OR_RETURN(Description d, DecodeDescription(text, path));
  if (d.r.uuid != uuid) return DataError(path + ": describes instance " + d.r.uuid);
  d.r.seq = seq;
  RETURN_IF_ERROR(ReadEntries(&d, path, nullptr, cache));
  return std::make_pair(std::move(d), Xxh3Digest(text));
}

Status Store::Impl::ReadEntries(Description* d, const std::string& where, TreeFault* fault,
                                TreeCache* cache) const {
  if (!d->has_tree) return Status::Ok();
  auto ids = std::make_shared<TreeIds>();
  RETURN_IF_ERROR(
      ReadTrees(env_, objects_, d->top, &d->files, ids.get(), fault, cache).WithContext(where));
  d->trees = std::move(ids);
  d->r.files = d->files.size();
  d->r.size = 0;
  for (const FileEntry& f : d->files) {
    if (f.kind == EntryKind::kFile) d->r.size += f.size;
  }
  return Status::Ok();
}

Status Store::Impl::MakeDirsUnder(const std::string& root, const std::string& rel,
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

Status Store::Impl::PointLink(const std::string& link, const std::string& target) {
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

Status Store::Impl::LinkServiceNames(const InstanceRecord& r) {
  const std::string svc = SvcDir(r.service);
  RETURN_IF_ERROR(MakeDirsUnder(o_.data_dir, "svc-" + r.service + "/data", nullptr));
  RETURN_IF_ERROR(PointLink(svc + "/vm-" + r.uuid + ".json",
                            "../instances/" + r.uuid + "/current/vms/" + r.uuid + ".json"));
  return PointLink(svc + "/data/" + r.uuid,
                   "../../instances/" + r.uuid + "/current/datasets/" + r.uuid);
}

Status Store::Impl::LinkApplicationRecord(const std::string& service) {
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

Status Store::Impl::UpdateViews(const std::set<std::string>& instances,
                                const std::set<std::string>& services) {
  Status first;
  auto note = [&](const Status& st) {
    if (!st.ok() && first.ok()) first = st;
  };
  for (const std::string& uuid : instances) {
    auto it = cat_.instances.find(uuid);
    if (it == cat_.instances.end()) continue;
    const uint64_t seq = it->second.r.seq;
    if (ViewSeq(uuid) != seq || !Exists(env_, ViewDir(uuid))) {
      auto desc = ReadDescription(uuid, seq);
      note(desc.ok() ? RefreshView(uuid, seq, desc->first.files) : desc.status());
    }
    note(LinkServiceNames(it->second.r));
  }
  for (const std::string& svc : services) {
    if (!Exists(env_, SvcDir(svc))) continue;
    note(WriteSapiInstances(svc));
    if (cat_.has_application) note(LinkApplicationRecord(svc));
  }
  return first;
}

Status Store::Impl::StageReplace(const std::string& path, const std::string& data,
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

Status Store::Impl::FinishReplaces(std::vector<PendingReplace>* pending) {
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

Status Store::Impl::WriteSapiInstances(const std::string& service) {
  json arr = json::array();
  for (const auto& [uuid, rec] : cat_.instances) {
    if (rec.r.service != service) continue;
    auto text = ReadFileToString(env_, ViewDir(uuid) + "/sapi/" + uuid + ".json");
    if (!text.ok()) continue;
    auto j = ParseJson(*text, "SAPI record of " + uuid);
    if (j.ok()) arr.push_back(std::move(*j));
  }
  if (!Exists(env_, SvcDir(service))) return Status::Ok();
  const std::string path = SvcDir(service) + "/sapi-insts.json";
  const std::string text = DumpJson(arr, 2) + "\n";
  if (auto cur = ReadFileToString(env_, path); cur.ok() && *cur == text) return Status::Ok();
  std::vector<PendingReplace> pending;
  RETURN_IF_ERROR(StageReplace(path, text, &pending));
  return FinishReplaces(&pending);
}

bool Store::Impl::HeldForWentBack(const std::string& peer) const {
  auto it = cat_.peers.find(peer);
  return it != cat_.peers.end() && it->second.went_back_ms != 0 &&
         !o_.release_went_back.contains(peer);
}

Status Store::Impl::ApplyRetentionLocked() {
  const int64_t now = clock_.WallMs();
  bool changed = false;
  std::set<std::string> touched_services;
  for (auto it = cat_.instances.begin(); it != cat_.instances.end();) {
    Record& rec = it->second;
    if (rec.r.removed && now - rec.r.removed_since_ms >= o_.removed_grace_ms &&
        rec.r.removed_pulls >= kRemovedPullsBeforeDrop && !HeldForWentBack(rec.r.peer)) {
      log::Info("catalog: deleting an instance its peer stopped exporting",
                {{"instance", rec.r.uuid},
                 {"alias", rec.r.alias},
                 {"peer", rec.r.peer},
                 {"removed_since", FormatIso8601Ms(rec.r.removed_since_ms)}});
      UnlinkServiceNames(rec.r.service, rec.r.uuid);
      RETURN_IF_ERROR(trash_->Discard(InstDir(rec.r.uuid)));
      std::vector<Digest256> freed;
      for (const auto& [seq, gen] : gen_ids_[rec.r.uuid]) refs_.Release(gen.ids, &freed);
      gen_ids_.erase(rec.r.uuid);
      current_files_.erase(rec.r.uuid);
      current_trees_.erase(rec.r.uuid);
      RemoveObjects(freed);
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

Status Store::Impl::PruneGenerations(const std::string& uuid, uint64_t current) {
  auto held = gen_ids_.find(uuid);
  if (held == gen_ids_.end()) return Status::Ok();
  std::map<uint64_t, RetainedGeneration>& gens = held->second;
  std::vector<std::pair<uint64_t, int64_t>> times;
  for (const auto& [seq, gen] : gens) {
    if (seq <= current) times.emplace_back(seq, gen.committed_ms);
  }
  const std::set<uint64_t> keep = RetainedGenerations(times, clock_.WallMs(), o_.retention);
  std::vector<Digest256> freed;
  for (auto it = gens.begin(); it != gens.end() && it->first < current;) {
    if (keep.count(it->first)) {
      ++it;
      continue;
    }
    Status gone = env_.RemoveFile(DescPath(uuid, it->first));
    if (!gone.ok() && gone.code() != Code::kNotFound) return gone;
    refs_.Release(it->second.ids, &freed);
    it = gens.erase(it);
  }
  RemoveObjects(freed);
  return Status::Ok();
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

Status Store::RecordPullError(const std::string& peer, const Status& error) {
  Impl& st = *impl_;
  if (st.o_.read_only) return InternalError("RecordPullError on a read-only store");
  // Serialized with commits: a commit writes the index it copied at its
  // start, which must not drop this peer's error recorded meanwhile.
  std::lock_guard<std::mutex> commit_lock(st.commit_mu_);
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
  if (!IsSafeName(uuid)) return NotFoundError("no instance " + uuid);
  ASSIGN_OR_RETURN(auto entries, impl_->env_.ListDir(impl_->InstDir(uuid)));
  auto cur = FindInstance(uuid);
  std::vector<uint64_t> out;
  for (uint64_t seq : DescriptionSeqs(entries)) {
    if (!cur || seq <= cur->seq) out.push_back(seq);
  }
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
  if (seq != rec->seq) g.record.warnings = desc.first.r.warnings;  // as of that generation
  g.current = seq == rec->seq;
  g.committed_at_ms = desc.first.r.pulled_at_ms;
  if (g.current && impl_->ViewSeq(uuid) == seq) g.dir = impl_->ViewDir(uuid);
  std::string vm_object, sapi_object;
  for (FileEntry& f : desc.first.files) {
    StoredFile sf;
    if (!g.dir.empty()) {
      sf.local_path = g.dir + "/" + f.path;
    } else if (f.kind == EntryKind::kFile) {
      sf.local_path = impl_->objects_.PathOf(f.sha256);
    }
    if (f.kind == EntryKind::kFile) {
      if (f.path == "vms/" + uuid + ".json") vm_object = impl_->objects_.PathOf(f.sha256);
      if (f.path == "sapi/" + uuid + ".json") sapi_object = impl_->objects_.PathOf(f.sha256);
    }
    sf.entry = std::move(f);
    g.files.push_back(std::move(sf));
  }
  if (vm_object.empty()) return DataError(impl_->DescPath(uuid, seq) + ": no VM payload");
  ASSIGN_OR_RETURN(g.vm_payload, ReadFileToString(impl_->env_, vm_object));
  if (!sapi_object.empty()) {
    ASSIGN_OR_RETURN(g.sapi_record, ReadFileToString(impl_->env_, sapi_object));
  }
  return g;
}

Status Store::Checkout(const std::string& uuid, uint64_t seq, const std::string& dir) const {
  if (!IsSafeName(uuid)) return NotFoundError("no instance " + uuid);
  ASSIGN_OR_RETURN(auto desc, impl_->ReadDescription(uuid, seq));
  return BuildCheckout(impl_->env_, impl_->objects_, desc.first.files, dir)
      .WithContext("checkout of " + uuid + " generation " + std::to_string(seq));
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

void Store::Impl::CheckInto(VerifyReport* report, const std::string& path, const Digest128& want,
                            uint64_t want_size, const Digest256* want_sha) const {
  ++report->files_checked;
  FileCheck c = CheckStoredFile(env_, path, want, want_size, want_sha);
  report->bytes_checked += c.bytes;
  if (!c.ok) report->problems.push_back({path, c.what});
}

void Store::Impl::CheckImagesAndRecords(VerifyReport* report) const {
  std::map<std::string, StoredImage> images;
  Catalog copy;
  std::set<std::string> services_held;
  {
    std::lock_guard<std::mutex> lock(mu_);
    images = cat_.images;
    copy.services = cat_.services;
    copy.application = cat_.application;
    copy.has_application = cat_.has_application;
    for (const auto& [uuid, rec] : cat_.instances) services_held.insert(rec.r.service);
  }
  for (const auto& [uuid, img] : images) {
    CheckInto(report, img.manifest_path, img.manifest_digest, img.manifest_size);
    CheckInto(report, img.file_path, img.file_digest, img.size);
  }
  for (const auto& [svc, r] : copy.services) {
    CheckInto(report, SvcDir(svc) + "/sapi-svc.json", r.digest, r.size);
  }
  if (!copy.has_application) return;
  // The canonical file; a catalog from before it existed: a per-service copy.
  if (Exists(env_, RecordPath(""))) {
    CheckInto(report, RecordPath(""), copy.application.digest, copy.application.size);
    return;
  }
  for (const std::string& svc : services_held) {
    const std::string p = SvcDir(svc) + "/sapi-app.json";
    if (Exists(env_, p)) {
      CheckInto(report, p, copy.application.digest, copy.application.size);
      return;
    }
  }
}

Result<Description> Store::Impl::ReadCheckedDescription(const std::string& uuid, uint64_t seq,
                                                        const Digest128& want, TreeFault* fault,
                                                        TreeCache* cache) const {
  const std::string path = DescPath(uuid, seq);
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(env_, path, 1ull << 30));
  if (!want.IsZero() && Xxh3Digest(text) != want) {
    return DataError(path + ": generation description does not match catalog.json");
  }
  ASSIGN_OR_RETURN(Description d, DecodeDescription(text, path));
  RETURN_IF_ERROR(ReadEntries(&d, path, fault, cache));
  return d;
}

Status Store::ApplyRetention() {
  if (impl_->o_.read_only) return InternalError("ApplyRetention on a read-only store");
  std::lock_guard<std::mutex> commit_lock(impl_->commit_mu_);
  std::lock_guard<std::mutex> lock(impl_->mu_);
  return impl_->ApplyRetentionLocked();
}

}  // namespace lifeboat::catalog
