// PullTxn: plan, transfer and commit of one pull (docs/catalog.md section 4).
#include "catalog/store.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "base/digest.h"
#include "base/file_digest.h"
#include "base/log.h"
#include "base/text.h"
#include "catalog/checkout.h"
#include "catalog/internal/background_sync.h"
#include "catalog/internal/file_precreator.h"
#include "catalog/internal/plan_entries.h"
#include "catalog/internal/store_impl.h"
#include "catalog/internal/view_prefill.h"
#include "catalog/internal/write_behind.h"
#include "catalog/trash.h"
#include "syncproto/manifest_filter.h"

namespace lifeboat::catalog {

using syncproto::ServiceFilter;

// ---- Orphans -------------------------------------------------------------------

namespace {

// Keeps a checkout of every current generation of `instances` (files
// hard-linked to their objects: they outlive the objects' names) and the
// held peer state under orphans/<peer>-<generation>-<time>/.
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
  RETURN_IF_ERROR(env.MakeDir(staged, 0700));
  RETURN_IF_ERROR(env.MakeDir(staged + "/instances", 0700));
  SyncSet made;
  made.dirs.insert(staged + "/instances");
  for (const auto& [uuid, rec] : instances) {
    ASSIGN_OR_RETURN(auto desc, st.ReadDescription(uuid, rec.r.seq));
    const std::string dir = staged + "/instances/" + uuid;
    RETURN_IF_ERROR(BuildCheckout(env, st.objects_, desc.first.files, dir));
    for (const FileEntry& f : desc.first.files) {
      if (f.kind == EntryKind::kDir) made.dirs.insert(dir + "/" + f.path);
    }
    made.dirs.insert(dir);
  }
  json peer = PeerToJson(held);
  peer["name"] = held.name;
  peer["kept_at"] = FormatIso8601Ms(st.clock_.WallMs());
  RETURN_IF_ERROR(WriteFileAtomic(env, staged + "/peer.json", DumpJson(peer, 2) + "\n", 0600));
  RETURN_IF_ERROR(SyncAll(env, made));  // peer.json's publish fsync'd `staged` itself
  const std::string final_dir = st.P("orphans/" + name);
  RETURN_IF_ERROR(env.Rename(staged, final_dir));
  RETURN_IF_ERROR(env.SyncDir(st.P("orphans")));
  return final_dir;
}

}  // namespace

// ---- PullTxn -----------------------------------------------------------------

// Threads fsyncing transferred files while the pull goes on (fsync mostly
// waits for the device; two let the filesystem batch them).
constexpr size_t kBackgroundSyncThreads = 2;
// Staged files a bulk pull creates ahead of its transfers (open descriptors).
constexpr size_t kPrecreatedFiles = 32;
// Bytes a bulk pull's transfers may have queued for its writer thread.
constexpr size_t kWriteBehindBytes = 4u << 20;

struct PullTxn::State {
  Store::Impl* store = nullptr;
  std::string peer;
  Store::PullSource source = Store::PullSource::kPeer;
  ServiceFilter filter;
  bool filtered = false;
  std::string staging;  // absolute: <data_dir>/.staging/<id>
  bool planned = false;
  bool done = false;  // committed or aborted
  ManifestAnswer::Kind kind = ManifestAnswer::Kind::kFull;
  PeerState new_peer;        // what the peer state becomes on commit
  uint64_t scrub_epoch = 0;  // the store's scrub_epoch_ at Plan
  bool keep_marks = false;   // a scrub marked instances after Plan: its marks stay

  struct StagedInstance {
    Description desc;
    std::string old_service;  // "" when new
    // Of prev_seq (the view's): every entry, or only those at changed_paths
    // when the held list became the next one (NextFromHeld).
    std::shared_ptr<const std::vector<FileEntry>> prev_files;
    uint64_t prev_seq = 0;
    // Pinned until the pull ends: the previous generation's top (which
    // holds its trees and files) and each file at a changed path, or every
    // file when no previous generation is of use (ObjectRefs).
    std::vector<Digest256> pins;
    bool held_top_pinned = false;  // pins hold the held generation's top (its trees may be kept)
    // What the new generation references itself (its top, StageTrees): its
    // references once committed, released by a pull that fails.
    std::vector<Digest256> top_ids;
    bool rebuild_trees = false;              // every tree encoded and checked (a damaged instance)
    std::vector<std::string> changed_paths;  // differing from prev_seq's entries (with prev_seq)
    // Its view made ahead by a bulk pull (a new instance's: directories
    // during the transfers, StartTransfers; files during the commit,
    // StartViewPrefill); no dir when none.
    ViewSkeleton view_skeleton;
  };
  std::vector<StagedInstance> changed;
  std::vector<std::string> confirmed;  // unchanged instances: pulled_at/generation refreshed
  std::vector<std::string> newly_removed;
  std::vector<std::string> still_removed;  // removed before, missed again by this pull
  std::vector<std::string> reappeared;

  // Objects this pull brings, each content once, staged at
  // ObjectStore::StagedPath(staging + "/objects", id).
  std::set<Digest256> new_objects;

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
    bool object = false;  // an instance file, staged as an object
    bool opened = false;  // StageFile created the staged file (again: a retry)
    size_t order = 0;     // its index in `transfers` (the order they are requested in; bulk pulls)
    bool finished = false;
    uint64_t finishes = 0;  // FinishFile successes (a file may be staged again)
    uint64_t synced = 0;    // the finish whose bytes `syncer` made durable
  };
  // fsyncs each finished file while the transfers go on; Commit stops it and
  // fsyncs what it did not get to (or got to before a later re-stage). Null
  // for a bulk pull: its commit makes them durable with one syncfs
  // (StoreOptions::bulk_pull_from).
  std::unique_ptr<internal::BackgroundSync> syncer;
  // The catalog's filesystem, opened before this pull wrote anything: its
  // syncfs reports any writeback error since (SyncAll).
  std::unique_ptr<Filesystem> fs;
  // A bulk pull's staged files, created ahead of their transfers on a
  // thread of their own (null for a smaller pull).
  std::unique_ptr<internal::FilePrecreator> precreator;
  // A bulk pull's staged-file writes, done on a thread of their own (null
  // for a smaller pull).
  std::unique_ptr<internal::WriteBehind> writer;
  // A bulk pull's new views filled during its commit (null otherwise).
  std::unique_ptr<internal::ViewPrefill> prefill;
  std::unordered_map<std::string, TransferState> xfer;
  std::unordered_set<std::string> known_dirs;  // staged directories (and the staging root's)
  std::vector<std::string> plan_files;         // staged by Plan: empty files
  PlanSummary summary;

  // What an instance's plan starts from: the held copy (also one held from
  // another peer, or just orphaned).
  struct HeldBasis {
    bool have = false;  // the catalog has a record of the instance
    Record rec;
    // The held generation's entries; empty when none is held or it cannot
    // be read (files_ok false: the instance is pulled whole).
    std::shared_ptr<const std::vector<FileEntry>> files =
        std::make_shared<const std::vector<FileEntry>>();
    bool files_ok = false;
  };
  HeldBasis HeldBasisOf(const std::string& uuid);

  // A changed instance as `info` at generation `m` with entries `files`,
  // nothing pinned or planned yet; *regular_files counts its files.
  StagedInstance NewStagedInstance(const syncproto::InstanceInfo& info,
                                   const syncproto::Manifest& m, const HeldBasis& held,
                                   std::vector<FileEntry> files, uint64_t* regular_files) const;

  void PinPlanned(StagedInstance* si, const std::vector<std::string>& changed, bool all_files);

  // The next entry list of a delta that changes the `changed` paths of
  // `uuid`'s held generation `seq`, whose entries `*held` holds: the held
  // list itself, taken out of the store's current_files_, when the store's
  // copy and `*held` are its only references (a pull that fails leaves
  // the next Plan to read it from its description), else a copy; either
  // patched in place (internal::ApplyChanges). `*held` becomes the held
  // entries at the changed paths: all PlanFile and UpdateCheckout look at.
  std::vector<FileEntry> NextFromHeld(const std::string& uuid, uint64_t seq,
                                      std::shared_ptr<const std::vector<FileEntry>>* held,
                                      const std::vector<std::string>& changed,
                                      const std::map<std::string, FileEntry>& answered);

  // Releases the pins of `si`, an instance not (yet) in `changed`.
  void Unpin(StagedInstance* si) {
    std::vector<Digest256> freed;
    std::lock_guard<std::mutex> lock(store->mu_);
    store->refs_.Release(si->pins, &freed);
    si->pins.clear();
    store->RemoveObjects(freed);
  }

  // Releases the pins of every staged instance (and, unless committed,
  // its new top: Abort, a failed commit, or after the commit point):
  // objects only this pull named are deleted. Caller holds store->mu_.
  void ReleasePins() {
    std::vector<Digest256> freed;
    for (StagedInstance& si : changed) {
      store->refs_.Release(si.pins, &freed);
      store->refs_.Release(si.top_ids, &freed);
      si.pins.clear();
      si.top_ids.clear();
    }
    store->RemoveObjects(freed);
  }
};

// Pins what generation `si` will name before anything is checked, so that
// no retention pass or failed pull deletes it (store_impl.h, RemoveObjects):
// the held generation's top (its trees hold every unchanged file and
// subtree the new generation keeps) and the file at each `changed` path;
// with `all_files` (a damaged instance, or no held generation) or when the
// held generation is not retained, every file of si->desc.
void PullTxn::State::PinPlanned(StagedInstance* si, const std::vector<std::string>& changed,
                                bool all_files) {
  Store::Impl& st = *store;
  const std::vector<FileEntry>& files = si->desc.files;
  std::lock_guard<std::mutex> lock(st.mu_);
  const std::vector<Digest256>* held_top = nullptr;
  if (auto inst = st.gen_ids_.find(si->desc.r.uuid); inst != st.gen_ids_.end() && si->prev_seq) {
    if (auto gen = inst->second.find(si->prev_seq); gen != inst->second.end()) {
      held_top = &gen->second.ids;
    }
  }
  if (all_files || held_top == nullptr) {
    for (const FileEntry& f : files) {
      if (f.kind == EntryKind::kFile) si->pins.push_back(f.sha256);
    }
  } else {
    si->pins = *held_top;
    si->held_top_pinned = true;
    for (const std::string& path : changed) {
      const size_t k = internal::FindEntry(files, path);
      if (k != files.size() && files[k].kind == EntryKind::kFile) {
        si->pins.push_back(files[k].sha256);
      }
    }
  }
  st.refs_.Add(si->pins);
}

std::vector<FileEntry> PullTxn::State::NextFromHeld(
    const std::string& uuid, uint64_t seq, std::shared_ptr<const std::vector<FileEntry>>* held,
    const std::vector<std::string>& changed, const std::map<std::string, FileEntry>& answered) {
  std::vector<FileEntry> before, after;  // the held and the answered entries at `changed`
  for (const std::string& path : changed) {
    if (const size_t k = internal::FindEntry(**held, path); k != (*held)->size()) {
      before.push_back((**held)[k]);
    }
    if (auto it = answered.find(path); it != answered.end()) after.push_back(it->second);
  }
  std::vector<FileEntry> next;
  {
    std::lock_guard<std::mutex> lock(store->mu_);  // no reference is copied meanwhile
    auto it = store->current_files_.find(uuid);
    if (it != store->current_files_.end() && it->second.first == seq &&
        it->second.second == *held && held->use_count() == 2) {
      std::shared_ptr<const std::vector<FileEntry>> taken = std::move(it->second.second);
      store->current_files_.erase(it);
      held->reset();
      // Made non-const (store_impl.h current_files_), now referenced here only.
      next = std::move(const_cast<std::vector<FileEntry>&>(*taken));
    }
  }
  if (*held) next = **held;
  internal::ApplyChanges(&next, changed, after);
  *held = std::make_shared<const std::vector<FileEntry>>(std::move(before));
  return next;
}

Result<std::unique_ptr<PullTxn>> Store::BeginPull(const std::string& peer,
                                                  std::vector<std::string> services,
                                                  PullSource source) {
  Impl& st = *impl_;
  if (st.o_.read_only) return InternalError("BeginPull on a read-only store");
  if (!IsSafeName(peer)) return ConfigError("bad peer name \"" + peer + "\"");
  {
    std::lock_guard<std::mutex> lock(st.mu_);
    if (!st.active_.insert(peer).second) {
      return TemporaryError("a pull from " + peer + " is already in progress");
    }
  }
  auto state = std::make_unique<PullTxn::State>();
  state->store = &st;
  state->peer = peer;
  state->source = source;
  state->filtered = !ServiceFilter(services).all();
  state->filter = ServiceFilter(std::move(services));
  state->staging = st.P(std::string(kStaging) + "/" + peer + "-" + RandomHex().substr(0, 12));
  Status made = st.env_.MakeDir(state->staging, 0700);
  if (made.ok()) {
    auto fs = st.env_.OpenFilesystem(st.o_.data_dir);
    if (fs.ok()) state->fs = std::move(*fs);
    if (!fs.ok()) made = fs.status();
  }
  if (!made.ok()) {
    st.env_.RemoveDir(state->staging).IgnoreError();
    std::lock_guard<std::mutex> lock(st.mu_);
    st.active_.erase(peer);
    return made;
  }
  return std::unique_ptr<PullTxn>(new PullTxn(std::move(state)));
}

PullTxn::PullTxn(std::unique_ptr<State> state) : s_(std::move(state)) {}

PullTxn::~PullTxn() {
  if (s_ && !s_->done) Abort();
}

const std::string& PullTxn::peer() const { return s_->peer; }
const std::vector<Transfer>& PullTxn::transfers() const { return s_->transfers; }

void PullTxn::Abort() {
  if (s_->done) return;
  s_->done = true;
  if (s_->writer) s_->writer->Stop();
  if (s_->syncer) s_->syncer->Stop().IgnoreError();
  if (s_->precreator) s_->precreator->Stop();
  s_->prefill.reset();  // its thread links under the staging directory
  s_->store->trash_->Discard(s_->staging).IgnoreError();
  std::lock_guard<std::mutex> lock(s_->store->mu_);
  s_->ReleasePins();
  s_->store->active_.erase(s_->peer);
}

namespace {

// The tree rule, for the answered entries with the rest of `next` (the
// held entries passed it when they were answered): no entry under one that
// is not a directory, no symlink pointing out of its dataset.
Status CheckTree(const std::vector<FileEntry>& next,
                 const std::map<std::string, FileEntry>& answered) {
  std::string below;
  for (const auto& [path, f] : answered) {
    for (size_t slash = path.find('/'); slash != std::string::npos;
         slash = path.find('/', slash + 1)) {
      const size_t parent = internal::FindEntry(next, std::string_view(path).substr(0, slash));
      if (parent != next.size() && next[parent].kind != EntryKind::kDir) {
        return DataError("manifest puts " + path + " under " + next[parent].path +
                         ", which is not a directory");
      }
    }
    if (f.kind != EntryKind::kDir) {
      below.assign(path).push_back('/');
      auto it =
          std::lower_bound(next.begin(), next.end(), below,
                           [](const FileEntry& e, const std::string& p) { return e.path < p; });
      if (it != next.end() && it->path.starts_with(below)) {
        return DataError("manifest puts " + it->path + " under " + path +
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

// What Plan reads of the store for one peer, under the store's mutex once.
struct PullTxn::Held {
  PeerState peer;
  std::map<std::string, Record> instances;  // the peer's
};

namespace {

bool WentBack(const PeerState& held, const syncproto::Manifest& m) {
  return held.generation > 0 && (m.generation < held.generation ||
                                 (m.boot_id != held.boot_id && m.generation <= held.generation));
}

// The answer's entries by instance; images and SAPI records in `other`.
struct Grouped {
  std::map<std::string, std::map<std::string, FileEntry>> by_instance;
  std::map<std::string, FileEntry> other;
  std::set<std::string> removed;
};

Result<Grouped> GroupAnswer(const ManifestAnswer& answer) {
  Grouped g;
  for (const FileEntry& f : answer.manifest.files) {
    RETURN_IF_ERROR(syncproto::ValidateExportPath(f.path));
    std::string inst = syncproto::InstanceOfPath(f.path);
    if (!inst.empty()) {
      if (!IsSafeName(inst)) return DataError("bad instance in path " + f.path);
      g.by_instance[inst][f.path] = f;
    } else if (f.path.starts_with("images/") || f.path == "sapi/application.json" ||
               f.path.starts_with("sapi/services/")) {
      g.other[f.path] = f;
    } else {
      return DataError("manifest path " + f.path + " belongs to no instance, image or SAPI record");
    }
  }
  for (const std::string& r : answer.removed) {
    RETURN_IF_ERROR(syncproto::ValidateExportPath(r));
    g.removed.insert(r);
  }
  return g;
}

}  // namespace

// The rollback guard (store.h, Plan) and the answer's consistency with what
// we hold. Returns true when the answer is "unchanged" (nothing more to plan).
Result<bool> PullTxn::CheckAnswer(const ManifestAnswer& answer, const Held& held) {
  State& s = *s_;
  const syncproto::Manifest& m = answer.manifest;
  const bool went_back = WentBack(held.peer, m);
  if (went_back && s.source == Store::PullSource::kHeldCopy) {
    return TemporaryError("refusing another node's copy of " + s.peer + " (generation " +
                          std::to_string(m.generation) + ", boot " + m.boot_id +
                          "): it is not newer than the generation " +
                          std::to_string(held.peer.generation) + " (boot " + held.peer.boot_id +
                          ") held here; ask for it explicitly (older=1) to take it anyway");
  }
  if (went_back) {
    ASSIGN_OR_RETURN(std::string orphan,
                     KeepOrphan(*s.store, s.staging, held.peer, held.instances));
    s.summary.orphaned = true;
    s.summary.orphan_dir = orphan;
    log::Warn("peer went backwards: kept what we held under orphans/ before taking its new state",
              {{"peer", s.peer},
               {"held_generation", held.peer.generation},
               {"held_boot_id", held.peer.boot_id},
               {"peer_generation", m.generation},
               {"peer_boot_id", m.boot_id},
               {"orphan", orphan}});
  }
  if (answer.kind == ManifestAnswer::Kind::kUnchanged) {
    if (went_back || m.generation != held.peer.generation || m.boot_id != held.peer.boot_id) {
      return DataError("peer " + s.peer + " answered \"unchanged\" at generation " +
                       std::to_string(m.generation) + " but we hold " +
                       std::to_string(held.peer.generation));
    }
    for (const auto& [uuid, rec] : held.instances) {
      if (!s.filter.Matches(rec.r.service)) continue;
      (rec.r.removed ? s.still_removed : s.confirmed).push_back(uuid);
    }
    return true;
  }
  if (answer.kind == ManifestAnswer::Kind::kDelta &&
      (went_back || answer.since_generation != held.peer.generation ||
       m.boot_id != held.peer.boot_id)) {
    return DataError("peer " + s.peer + " sent a delta since generation " +
                     std::to_string(answer.since_generation) + " but we hold generation " +
                     std::to_string(held.peer.generation) + " of boot " + held.peer.boot_id);
  }
  return false;
}

Result<PlanSummary> PullTxn::Plan(const ManifestAnswer& answer) {
  State& s = *s_;
  Store::Impl& st = *s.store;
  if (s.planned || s.done) return InternalError("PullTxn::Plan called twice or after the end");
  s.planned = true;
  s.kind = answer.kind;
  const syncproto::Manifest& m = answer.manifest;

  Held held;
  {
    std::lock_guard<std::mutex> lock(st.mu_);
    if (auto it = st.cat_.peers.find(s.peer); it != st.cat_.peers.end()) held.peer = it->second;
    for (const auto& [uuid, rec] : st.cat_.instances) {
      if (rec.r.peer == s.peer) held.instances[uuid] = rec;
    }
    s.scrub_epoch = st.scrub_epoch_;
  }
  held.peer.name = s.peer;
  s.new_peer = held.peer;
  s.new_peer.node_uuid = m.node_uuid;
  s.new_peer.node_name = m.node_name;
  s.new_peer.generation = m.generation;
  s.new_peer.boot_id = m.boot_id;

  ASSIGN_OR_RETURN(bool unchanged, CheckAnswer(answer, held));
  if (unchanged) return s.summary;
  ASSIGN_OR_RETURN(Grouped g, GroupAnswer(answer));
  for (const char* d : {"/objects", "/images", "/sapi", "/descriptions"}) {
    RETURN_IF_ERROR(st.env_.MakeDir(s.staging + d, 0700));
    s.known_dirs.insert(s.staging + d);
  }

  std::set<std::string> in_answer;
  for (const syncproto::InstanceInfo& info : m.instances) {
    if (!IsSafeName(info.uuid)) return DataError("bad instance uuid " + info.uuid);
    if (!IsSafeName(info.service)) {
      return DataError("instance " + info.uuid + " has a bad service name \"" + info.service +
                       "\"");
    }
    if (!s.filter.Matches(info.service)) continue;
    in_answer.insert(info.uuid);
    RETURN_IF_ERROR(PlanInstance(info, m, g.by_instance[info.uuid], g.removed,
                                 answer.kind == ManifestAnswer::Kind::kFull, held));
  }
  // Instances of this peer that it no longer exports (within the filter).
  for (const auto& [uuid, rec] : held.instances) {
    if (in_answer.count(uuid) || !s.filter.Matches(rec.r.service)) continue;
    if (rec.r.removed) {
      s.still_removed.push_back(uuid);
    } else {
      s.newly_removed.push_back(uuid);
      ++s.summary.removed_instances;
    }
  }
  RETURN_IF_ERROR(PlanImages(m, g.other));
  RETURN_IF_ERROR(PlanRecords(g.other));
  std::sort(s.transfers.begin(), s.transfers.end(),
            [](const Transfer& a, const Transfer& b) { return a.entry.path < b.entry.path; });
  StartTransfers();
  return s.summary;
}

// A pull of fewer than StoreOptions::bulk_pull_from transfers fsyncs each
// finished file in the background; a bulk pull leaves them to its commit's
// syncfs and creates its staged files ahead of the transfers.
void PullTxn::StartTransfers() {
  State& s = *s_;
  Store::Impl& st = *s.store;
  if (s.transfers.size() < st.o_.bulk_pull_from) {
    s.syncer = std::make_unique<internal::BackgroundSync>(st.env_, kBackgroundSyncThreads);
    return;
  }
  std::vector<internal::FilePrecreator::File> files;  // in the order they are requested
  files.reserve(s.transfers.size());
  for (size_t i = 0; i < s.transfers.size(); ++i) {
    State::TransferState& x = s.xfer[s.transfers[i].entry.path];
    x.order = i;
    files.push_back({x.staged_path, x.object ? kObjectMode : 0600});
  }
  s.precreator = std::make_unique<internal::FilePrecreator>(st.env_, std::move(files),
                                                            kPrecreatedFiles, ViewSkeletons());
  s.writer = std::make_unique<internal::WriteBehind>(kWriteBehindBytes);
}

// The directories of the views of the new instances (no held generation,
// so no view to update: AfterCommit builds each whole), under
// <staging>/views/<uuid>, parents first: what a bulk pull's precreator makes
// in its spare time, for RefreshView to move into place and fill.
std::vector<std::string> PullTxn::ViewSkeletons() {
  State& s = *s_;
  std::vector<std::string> dirs;
  std::unordered_set<std::string> listed;
  auto add = [&](const std::string& dir) {
    if (listed.insert(dir).second) dirs.push_back(dir);
  };
  const std::string root = s.staging + "/views";
  for (State::StagedInstance& si : s.changed) {
    if (si.prev_seq != 0) continue;
    si.view_skeleton.dir = root + "/" + si.desc.r.uuid;
    add(root);
    add(si.view_skeleton.dir);
    for (const FileEntry& f : si.desc.files) {
      if (f.kind != syncproto::EntryKind::kDir) continue;
      // Its parents first: those that are no entry (e.g. "datasets").
      for (size_t slash = f.path.find('/'); slash != std::string::npos;
           slash = f.path.find('/', slash + 1)) {
        add(si.view_skeleton.dir + "/" + f.path.substr(0, slash));
      }
      add(si.view_skeleton.dir + "/" + f.path);
    }
  }
  return dirs;
}

Result<std::string> PullTxn::StagedObjectPath(const Digest256& id) {
  State& s = *s_;
  const std::string staged = ObjectStore::StagedPath(s.staging + "/objects", id);
  const std::string fan = DirName(staged);
  std::lock_guard<std::mutex> lock(s.mu);
  if (!s.known_dirs.count(fan)) {
    RETURN_IF_ERROR(s.store->env_.MakeDir(fan, 0700));
    s.known_dirs.insert(fan);
  }
  return staged;
}

PullTxn::State::HeldBasis PullTxn::State::HeldBasisOf(const std::string& uuid) {
  HeldBasis b;
  {
    std::lock_guard<std::mutex> lock(store->mu_);
    if (auto it = store->cat_.instances.find(uuid); it != store->cat_.instances.end()) {
      b.rec = it->second;
      b.have = true;
    }
  }
  if (!b.have) return b;
  auto held_files = store->CurrentFiles(uuid, b.rec.r.seq);
  if (held_files.ok()) {
    b.files = std::move(*held_files);
    b.files_ok = true;
  } else {
    log::Warn("catalog: cannot read the held generation; pulling the instance whole",
              {{"instance", uuid}, {"error", held_files.status().message()}});
  }
  return b;
}

PullTxn::State::StagedInstance PullTxn::State::NewStagedInstance(
    const syncproto::InstanceInfo& info, const syncproto::Manifest& m, const HeldBasis& held,
    std::vector<FileEntry> files, uint64_t* regular_files) const {
  StagedInstance si;
  si.old_service = held.have ? held.rec.r.service : "";
  si.rebuild_trees = held.have && held.rec.r.damaged;
  si.prev_seq = held.files_ok ? held.rec.r.seq : 0;
  InstanceRecord& r = si.desc.r;
  r.uuid = info.uuid;
  r.alias = info.alias;
  r.service = info.service;
  r.image_uuid = info.image_uuid;
  r.warnings = info.warnings;
  r.peer = peer;
  r.generation = m.generation;
  si.desc.node_uuid = m.node_uuid;
  si.desc.boot_id = m.boot_id;
  *regular_files = 0;
  for (const FileEntry& f : files) {
    if (f.kind == EntryKind::kFile) {
      r.size += f.size;
      ++*regular_files;
    }
  }
  si.desc.files = std::move(files);
  r.files = si.desc.files.size();
  return si;
}

Status PullTxn::PlanInstance(const syncproto::InstanceInfo& info, const syncproto::Manifest& m,
                             const std::map<std::string, FileEntry>& answered,
                             const std::set<std::string>& removed, bool full, const Held& held) {
  State& s = *s_;
  State::HeldBasis basis = s.HeldBasisOf(info.uuid);
  const Record& prev_rec = basis.rec;
  if (!full && basis.have && !basis.files_ok) {
    return DataError("delta for instance " + info.uuid + " but its held copy is unreadable");
  }
  // A scrub found objects of it missing: a new generation, transferring them.
  const bool damaged = basis.have && prev_rec.r.damaged;
  internal::NextEntries planned;
  if (!full && basis.files_ok && !damaged) {  // a delta: what it changes, found by lookup
    planned.changed = internal::DeltaChanges(*basis.files, removed, answered);
    if (!planned.changed.empty()) {
      planned.files =
          s.NextFromHeld(info.uuid, prev_rec.r.seq, &basis.files, planned.changed, answered);
    }
  } else {
    planned = internal::PlanEntries(*basis.files, removed, answered, full);
  }
  auto held_it = held.instances.find(info.uuid);
  if (basis.have && held_it != held.instances.end() && held_it->second.r.removed) {
    s.reappeared.push_back(info.uuid);
  }
  const bool same_meta = basis.have && prev_rec.r.alias == info.alias &&
                         prev_rec.r.service == info.service &&
                         prev_rec.r.image_uuid == info.image_uuid && prev_rec.r.peer == s.peer &&
                         prev_rec.r.warnings == info.warnings;
  const bool same_files = basis.files_ok && planned.changed.empty();
  if (same_meta && same_files && !damaged) {  // the held entries passed the checks below
    s.confirmed.push_back(info.uuid);
    return Status::Ok();
  }
  const std::vector<FileEntry>& next = planned.files ? *planned.files : *basis.files;
  RETURN_IF_ERROR(CheckTree(next, answered));
  const size_t vm = internal::FindEntry(next, "vms/" + info.uuid + ".json");
  if (vm == next.size() || next[vm].kind != EntryKind::kFile) {
    return DataError("instance " + info.uuid + " has no VM payload in the manifest");
  }
  // The held list is copied only when metadata alone changed (or damaged).
  // (Not a conditional expression: its result would be a const prvalue,
  // a copy of the planned list too.)
  std::vector<FileEntry> files;
  if (planned.files) {
    files = std::move(*planned.files);
  } else {
    files = *basis.files;
  }
  uint64_t regular_files = 0;
  State::StagedInstance si = s.NewStagedInstance(info, m, basis, std::move(files), &regular_files);
  const bool every_file = damaged || !basis.files_ok;
  s.PinPlanned(&si, planned.changed, every_file);
  // Each file with the held entry at its path. An unchanged path of an
  // instance that is not damaged needs nothing: only the changed paths are
  // looked at (all of them when nothing is held).
  const std::vector<FileEntry>& prev_files = *basis.files;
  auto plan_file = [&](const FileEntry& f) {
    const size_t k = internal::FindEntry(prev_files, f.path);
    const bool held_file = k != prev_files.size() && prev_files[k].kind == EntryKind::kFile;
    return PlanFile(f, held_file ? &prev_files[k] : nullptr, damaged);
  };
  Status all_planned = [&]() -> Status {
    if (every_file) {
      for (const FileEntry& f : si.desc.files) {
        if (f.kind == EntryKind::kFile) RETURN_IF_ERROR(plan_file(f));
      }
      return Status::Ok();
    }
    uint64_t changed_files = 0;
    for (const std::string& path : planned.changed) {
      const size_t k = internal::FindEntry(si.desc.files, path);
      if (k == si.desc.files.size() || si.desc.files[k].kind != EntryKind::kFile) continue;
      ++changed_files;
      RETURN_IF_ERROR(plan_file(si.desc.files[k]));
    }
    s.summary.unchanged_files += regular_files - changed_files;
    return Status::Ok();
  }();
  if (!all_planned.ok()) {
    // Not in s.changed yet, so Abort's ReleasePins would not see its pins.
    s.Unpin(&si);
    return all_planned;
  }
  si.changed_paths = std::move(planned.changed);
  si.prev_files = std::move(basis.files);
  s.changed.push_back(std::move(si));
  ++s.summary.changed_instances;
  return Status::Ok();
}

// One file of a changed instance: nothing to do when the store holds its
// content (an unchanged file, or the same content under any name), staged
// at once when empty, else a transfer (each content once per pull) with the
// held file at the same path as the delta basis. In a `damaged` instance an
// unchanged file counts as held only when its object is there.
Status PullTxn::PlanFile(const FileEntry& f, const FileEntry* prev, bool damaged) {
  State& s = *s_;
  Store::Impl& st = *s.store;
  const bool unchanged = prev != nullptr && prev->sha256 == f.sha256 && prev->size == f.size &&
                         prev->digest == f.digest;
  if ((unchanged && !damaged) || s.new_objects.count(f.sha256) || st.objects_.Has(f.sha256)) {
    ++s.summary.unchanged_files;
    return Status::Ok();
  }
  ASSIGN_OR_RETURN(const std::string staged, StagedObjectPath(f.sha256));
  s.new_objects.insert(f.sha256);
  if (f.size == 0) {
    if (f.digest != Xxh3Digest(std::string_view()) ||
        f.sha256 != Sha256Digest(std::string_view())) {
      return DataError("empty file " + f.path + " with a non-empty digest");
    }
    ASSIGN_OR_RETURN(auto w, st.env_.OpenWrite(staged, kObjectMode, true));
    RETURN_IF_ERROR(w->Close());
    s.plan_files.push_back(staged);
    return Status::Ok();
  }
  Transfer t;
  t.entry = f;
  if (prev != nullptr && st.objects_.Has(prev->sha256)) {
    t.basis_path = st.objects_.PathOf(prev->sha256);
  }
  State::TransferState x;
  x.entry = f;
  x.staged_path = staged;
  x.object = true;
  s.xfer[f.path] = std::move(x);
  s.transfers.push_back(std::move(t));
  ++s.summary.transfer_files;
  s.summary.transfer_bytes += f.size;
  return Status::Ok();
}

// Images: pulled once by uuid, never again.
Status PullTxn::PlanImages(const syncproto::Manifest& m,
                           const std::map<std::string, FileEntry>& other) {
  State& s = *s_;
  Store::Impl& st = *s.store;
  Env& env = st.env_;
  for (const syncproto::ImageInfo& info : m.images) {
    if (!IsSafeName(info.uuid) || (!info.origin.empty() && !IsSafeName(info.origin))) {
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
    si.img.file_sha256 = ff->second.sha256;
    si.img.manifest_sha256 = mf->second.sha256;
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
  return Status::Ok();
}

// SAPI application and service records: each replaces its one file.
Status PullTxn::PlanRecords(const std::map<std::string, FileEntry>& other) {
  State& s = *s_;
  Store::Impl& st = *s.store;
  Env& env = st.env_;
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
        if (!IsSafeName(service)) return DataError("bad SAPI service record path " + path);
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
  return Status::Ok();
}

Result<std::unique_ptr<ReadableFile>> PullTxn::OpenBasis(const Transfer& t) {
  if (t.basis_path.empty()) return NotFoundError("transfer " + t.entry.path + " has no basis");
  return s_->store->env_.OpenRead(t.basis_path);
}

namespace {

// Ok when a staged file of `size` bytes with digests `got` and `got_sha` is
// `want`; else the data error naming `context`.
Status CheckDigests(const FileEntry& want, uint64_t size, const Digest128& got,
                    const Digest256& got_sha, const std::string& context) {
  if (size == want.size && got == want.digest && got_sha == want.sha256) return Status::Ok();
  return DataError("digest mismatch for " + context + ": expected " + want.digest.Hex() +
                   " sha256 " + want.sha256.Hex() + " (" + std::to_string(want.size) +
                   " bytes), got " + got.Hex() + " sha256 " + got_sha.Hex() + " (" +
                   std::to_string(size) + " bytes)");
}

// The store's own write path: hashes every byte it passes to the Env file
// (XXH3 and SHA-256), so a staged file's digest is known without reading it
// back. It does not fsync: for a large file it starts the writeback every
// 8 MiB and at close, and Commit makes every staged file durable before
// anything is renamed in. In a bulk pull it runs on the write-behind thread
// (the hashing off the transfers' thread), else on the caller's.
class HashingFile final : public WritableFile {
 public:
  explicit HashingFile(std::unique_ptr<WritableFile> file) : file_(std::move(file)) {}
  Status Append(std::span<const uint8_t> data) override {
    if (failed_) return IoError("write after a failed write on " + file_->path());
    Status st = file_->Append(data);
    if (!st.ok()) {
      failed_ = true;  // what is on disk is unknown: never trusted
      return st;
    }
    hasher_.Update(data);
    sha_.Update(data);
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

  // Once every Append returned and the file is closed: whether `want` is
  // exactly what was written; `context` names the file in the error.
  Status Verify(const FileEntry& want, const std::string& context) {
    if (failed_) return IoError("a write of " + context + " failed");
    return CheckDigests(want, size_, hasher_.Finish(), sha_.Finish(), context);
  }

 private:
  std::unique_ptr<WritableFile> file_;
  static constexpr uint64_t kWritebackStep = 8u << 20;
  Xxh3Hasher hasher_;
  Sha256Hasher sha_;
  uint64_t size_ = 0;
  uint64_t writeback_from_ = 0;  // bytes before this offset are under writeback
  bool failed_ = false;
};

// Whether the file at `path` holds exactly `want`, read back.
Status VerifyByReading(Env& env, const std::string& path, const FileEntry& want,
                       const std::string& context) {
  Digest128 got;
  Digest256 got_sha;
  uint64_t size = 0;
  ASSIGN_OR_RETURN(auto in, env.OpenRead(path));
  RETURN_IF_ERROR(HashOpenFile(*in, &got, &size, nullptr, 0, want.size, &got_sha));
  return CheckDigests(want, size, got, got_sha, context);
}

// The file StageFile hands out: its HashingFile, called directly or (a bulk
// pull) through the write-behind thread, and which transaction and path it
// was staged for.
class StagedFile final : public WritableFile {
 public:
  StagedFile(const void* txn, std::string path, std::shared_ptr<HashingFile> hashing,
             std::unique_ptr<WritableFile> behind)
      : txn_(txn),
        export_path_(std::move(path)),
        hashing_(std::move(hashing)),
        behind_(std::move(behind)) {}
  Status Append(std::span<const uint8_t> data) override { return front().Append(data); }
  Status Sync() override { return front().Sync(); }
  Status Close() override { return front().Close(); }
  void StartWriteback(uint64_t offset, uint64_t length) override {
    front().StartWriteback(offset, length);
  }
  const std::string& path() const override { return hashing_->path(); }

  // The hashing writer when this file was staged by `txn` for `path`.
  std::shared_ptr<HashingFile> HashingFor(const void* txn, const std::string& path) const {
    return txn == txn_ && path == export_path_ ? hashing_ : nullptr;
  }

 private:
  WritableFile& front() { return behind_ ? *behind_ : *hashing_; }

  const void* txn_;
  std::string export_path_;
  std::shared_ptr<HashingFile> hashing_;
  std::unique_ptr<WritableFile> behind_;  // null: no write-behind thread
};

}  // namespace

Result<std::unique_ptr<WritableFile>> PullTxn::StageFile(const std::string& path) {
  State& s = *s_;
  Env& env = s.store->env_;
  std::string staged;
  bool object = false;
  bool again = false;
  size_t order = 0;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.xfer.find(path);
    if (it == s.xfer.end()) return NotFoundError("pull plan has no transfer for " + path);
    it->second.finished = false;
    staged = it->second.staged_path;
    object = it->second.object;
    order = it->second.order;
    // Every parent under the staging root must be a directory we made.
    for (std::string dir = DirName(staged); dir.size() > s.staging.size(); dir = DirName(dir)) {
      if (s.known_dirs.count(dir)) continue;
      auto st = env.Stat(dir);
      if (!st.ok() || st->type != FileType::kDirectory) {
        return DataError("refusing to stage " + path + ": " + dir + " is not a directory");
      }
      s.known_dirs.insert(dir);
    }
    again = it->second.opened;
    it->second.opened = true;
  }
  // An object is created read-only (ObjectStore::Adopt does not chmod), so a
  // retry starts from a new file rather than opening it for writing again.
  if (again) {
    Status removed = env.RemoveFile(staged);
    if (!removed.ok() && removed.code() != Code::kNotFound) return removed;
  }
  std::optional<Result<std::unique_ptr<WritableFile>>> ahead;
  if (s.precreator && !again) ahead = s.precreator->Take(order);
  if (!ahead) ahead = env.OpenWrite(staged, object ? kObjectMode : 0600, /*exclusive=*/true);
  ASSIGN_OR_RETURN(auto file, std::move(*ahead));
  auto hashing = std::make_shared<HashingFile>(std::move(file));
  std::unique_ptr<WritableFile> behind = s.writer ? s.writer->Wrap(hashing) : nullptr;
  return std::unique_ptr<WritableFile>(
      new StagedFile(&s, path, std::move(hashing), std::move(behind)));
}

Status PullTxn::FinishFile(const std::string& path, std::unique_ptr<WritableFile> file) {
  State& s = *s_;
  Env& env = s.store->env_;
  if (!file) return InternalError("FinishFile(" + path + "): no file");
  FileEntry want;
  std::string staged;
  bool object = false;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.xfer.find(path);
    if (it == s.xfer.end()) return NotFoundError("pull plan has no transfer for " + path);
    want = it->second.entry;
    staged = it->second.staged_path;
    object = it->second.object;
  }
  auto* ours = dynamic_cast<StagedFile*>(file.get());
  std::shared_ptr<HashingFile> hashing = ours != nullptr ? ours->HashingFor(&s, path) : nullptr;
  RETURN_IF_ERROR(file->Close());
  file.reset();
  auto check = [&env, hashing, want, staged, context = path + " from peer " + s.peer] {
    // The store's own write path hashed every byte it wrote; a file written
    // any other way is read back.
    Status st =
        hashing ? hashing->Verify(want, context) : VerifyByReading(env, staged, want, context);
    if (!st.ok()) env.RemoveFile(staged).IgnoreError();
    return st;
  };
  if (s.writer && hashing) {
    // Runs once the write-behind thread wrote the bytes, while the transfers
    // go on: a mismatch fails the pull at its next write, or at Commit.
    RETURN_IF_ERROR(s.writer->Then(std::move(check)));
  } else {
    RETURN_IF_ERROR(check());
  }
  // An object keeps the time its content first arrived (it serves many
  // paths); images and records carry the exported mtime.
  if (!object) {
    if (s.writer) RETURN_IF_ERROR(s.writer->Drain());  // written and closed first
    RETURN_IF_ERROR(env.SetMtime(staged, want.mtime_ns));
  }
  uint64_t finish;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    State::TransferState& x = s.xfer[path];
    x.finished = true;
    finish = ++x.finishes;
  }
  if (!s.syncer) return Status::Ok();  // Commit's syncfs makes it durable
  s.syncer->Add(staged, [&s, path, finish] {
    std::lock_guard<std::mutex> lock(s.mu);
    State::TransferState& x = s.xfer[path];
    x.synced = std::max(x.synced, finish);
  });
  return Status::Ok();
}

// ---- Commit -----------------------------------------------------------------------

// A bulk pull's new views, their directories made during the transfers,
// get their files on a thread of their own while StageDescriptions encodes
// and syncs (internal/view_prefill.h). Called once the precreator stopped.
void PullTxn::StartViewPrefill() {
  State& s = *s_;
  Store::Impl& st = *s.store;
  if (!s.precreator) return;
  std::vector<internal::ViewPrefill::View> views;
  for (const State::StagedInstance& si : s.changed) {
    if (!si.view_skeleton.dir.empty() && IsDirectory(st.env_, si.view_skeleton.dir)) {
      views.push_back({&si.desc.files, si.view_skeleton.dir});
    }
  }
  if (views.empty()) return;
  std::vector<Digest256> staged(s.new_objects.begin(), s.new_objects.end());  // sorted
  s.prefill = std::make_unique<internal::ViewPrefill>(st.env_, st.objects_, s.staging + "/objects",
                                                      std::move(staged), std::move(views));
}

// Joins the prefill before the staged objects move: each filled skeleton
// is marked so, one that is not is discarded (RefreshView then builds the
// view after the commit point).
void PullTxn::FinishViewPrefill() {
  State& s = *s_;
  if (!s.prefill) return;
  s.prefill->Join();
  std::map<std::string, bool> filled;  // skeleton -> filled
  for (size_t i = 0; i < s.prefill->views().size(); ++i) {
    filled[s.prefill->views()[i].skeleton] = s.prefill->filled()[i];
  }
  s.prefill.reset();
  for (State::StagedInstance& si : s.changed) {
    auto it = filled.find(si.view_skeleton.dir);
    if (it == filled.end()) continue;
    si.view_skeleton.filled = it->second;
    if (!it->second) {
      s.store->trash_->Discard(si.view_skeleton.dir).IgnoreError();
      si.view_skeleton.dir.clear();
    }
  }
}

// Phase 0: each changed instance's description written under .staging/ (its
// seq: past every description on disk, also those of failed commits), then
// every file and directory this pull staged (but the objects' fan-out
// directories) is fsync'd, several at once,
// before anything is renamed in. Returns the description texts.
Result<std::vector<std::string>> PullTxn::StageDescriptions(int64_t now) {
  State& s = *s_;
  Store::Impl& st = *s.store;
  Env& env = st.env_;
  SyncSet sync;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    for (const auto& [path, x] : s.xfer) {
      if (x.synced != x.finishes) sync.files.push_back(x.staged_path);
    }
    sync.files.insert(sync.files.end(), s.plan_files.begin(), s.plan_files.end());
    // A staged fan-out directory needs no fsync here: its objects are
    // renamed out of it (the directory they land in is fsync'd), or it is
    // moved in whole and fsync'd in its new place (ObjectStore::AdoptStaged).
    const std::string fans = s.staging + "/objects/";
    for (const std::string& dir : s.known_dirs) {
      if (!dir.starts_with(fans)) sync.dirs.insert(dir);
    }
  }
  std::vector<std::string> texts(s.changed.size());
  for (size_t i = 0; i < s.changed.size(); ++i) {
    State::StagedInstance& si = s.changed[i];
    uint64_t seq = 1;
    if (auto entries = env.ListDir(st.InstDir(si.desc.r.uuid)); entries.ok()) {
      for (const DirEntry& e : *entries) {
        uint64_t n;
        if (e.name.ends_with(".json") && ParseSeq(e.name.substr(0, e.name.size() - 5), &n)) {
          seq = std::max(seq, n + 1);
        }
      }
    }
    si.desc.r.seq = seq;
    si.desc.r.pulled_at_ms = now;
    RETURN_IF_ERROR(StageTrees(i, &sync.files));
    texts[i] = EncodeDescription(si.desc);
    const std::string staged = s.staging + "/descriptions/" + si.desc.r.uuid + ".json";
    ASSIGN_OR_RETURN(auto w, env.OpenWrite(staged, 0600, true));
    RETURN_IF_ERROR(w->Append(texts[i]));
    RETURN_IF_ERROR(w->Close());
    sync.files.push_back(staged);
  }
  RETURN_IF_ERROR(SyncAll(env, sync, s.fs.get(), st.o_.bulk_pull_from));
  return texts;
}

// The trees of changed instance `changed_index`'s new generation (trees.h): only the
// changed directories' are encoded (all of them when the previous
// generation's trees are not known, or the instance is damaged). Every tree
// the generation names is pinned first; each one the store lacks is staged
// as a new object. A rebuilt tree whose object is there but differs (found
// damaged) is set aside and staged again. Every tree is rebuilt when a
// scrub ran since Plan.
Status PullTxn::StageTrees(size_t changed_index, std::vector<std::string>* staged_files) {
  State& s = *s_;
  Store::Impl& st = *s.store;
  State::StagedInstance* si = &s.changed[changed_index];
  bool rebuild = si->rebuild_trees;
  {
    // A scrub since Plan may have set aside a tree the previous generation names.
    std::lock_guard<std::mutex> lock(st.mu_);
    rebuild = rebuild || st.scrub_epoch_ != s.scrub_epoch;
  }
  // Only trees the pins keep alive (the held generation's) may be kept.
  std::shared_ptr<const TreeIds> prev_ids = si->prev_seq && !rebuild && si->held_top_pinned
                                                ? st.CurrentTrees(si->desc.r.uuid, si->prev_seq)
                                                : nullptr;
  BuiltTrees built = BuildTrees(si->desc.files, prev_ids ? &si->changed_paths : nullptr,
                                prev_ids.get(), st.o_.tree_shape);
  {
    // The new trees registered (each holds its members), then the new top
    // referenced: every object the generation names is counted from here.
    std::lock_guard<std::mutex> lock(st.mu_);
    for (const TreeText& t : built.encoded) st.refs_.AddTree(t.id, t.children);
    st.refs_.Add(built.top_ids);
    if (!si->top_ids.empty()) {  // staged before (no caller does today): its top released
      std::vector<Digest256> freed;
      st.refs_.Release(si->top_ids, &freed);
      st.RemoveObjects(freed);
    }
    si->top_ids = std::move(built.top_ids);
  }
  const bool check = prev_ids == nullptr;
  for (const TreeText& t : built.encoded) {
    if (s.new_objects.count(t.id)) continue;
    if (st.objects_.Has(t.id)) {
      if (!check) continue;
      auto held = ReadFileToString(st.env_, st.objects_.PathOf(t.id), t.text.size() + 1);
      if (held.ok() && *held == t.text) continue;
      if (!held.ok() && held.status().code() != Code::kData) {  // unreadable, not known bad
        return held.status().WithContext("checking a held generation tree");
      }
      log::Warn("catalog: a damaged generation tree is written again",
                {{"instance", si->desc.r.uuid}, {"tree", t.id.Hex()}});
      RETURN_IF_ERROR(st.trash_->Discard(st.objects_.PathOf(t.id)));
    }
    ASSIGN_OR_RETURN(const std::string staged, StagedObjectPath(t.id));
    ASSIGN_OR_RETURN(auto w, st.env_.OpenWrite(staged, kObjectMode, true));
    RETURN_IF_ERROR(w->Append(t.text));
    RETURN_IF_ERROR(w->Close());
    staged_files->push_back(staged);
    s.new_objects.insert(t.id);
  }
  si->desc.has_tree = true;
  si->desc.top = json::parse(built.top);
  si->desc.trees = std::move(built.ids);
  return Status::Ok();
}

// What phases 1-5 did, for the phases after the commit point (or the cleanup
// of a failed commit).
struct PullTxn::Published {
  std::set<std::string> switched;                          // instances with a new generation
  std::vector<std::pair<std::string, std::string>> moved;  // (uuid, old service)
  std::vector<State::StagedRecord> records_in;             // record files renamed into place
};

// Phases 1-5, building `next` (what catalog.json will say): objects, images,
// descriptions and SAPI records renamed in, the new index and every
// directory those renames changed fsync'd, then the commit point: the index
// renamed over catalog.json.
Status PullTxn::Publish(const std::vector<std::string>& texts, int64_t now, Catalog* next,
                        Published* out) {
  State& s = *s_;
  Store::Impl& st = *s.store;
  Env& env = st.env_;
  SyncSet sync;
  // 1. Objects, then images (before the generations that name them). What a
  // commit that fails later renamed in is garbage: unpinned, then deleted.
  const std::vector<Digest256> ids(s.new_objects.begin(), s.new_objects.end());
  std::vector<Digest256> already_held;
  RETURN_IF_ERROR(st.objects_.AdoptStaged(s.staging + "/objects", ids, &sync.dirs, &already_held));
  RelinkPrefilledViews(already_held);
  for (const State::StagedImage& si : s.images) {
    const std::string final_dir = st.ImageDir(si.img.uuid);
    if (!Exists(env, final_dir)) {
      RETURN_IF_ERROR(env.Rename(si.dir, final_dir));
      sync.dirs.insert(st.P("images"));
    }
    next->images[si.img.uuid] = si.img;
  }
  // 2. Each changed instance's description renamed in, under a seq that no
  // index names yet (Open discards it if the commit point is not reached).
  for (size_t i = 0; i < s.changed.size(); ++i) {
    const State::StagedInstance& si = s.changed[i];
    const std::string& uuid = si.desc.r.uuid;
    RETURN_IF_ERROR(st.MakeDirsUnder(st.o_.data_dir, "instances/" + uuid, nullptr));
    RETURN_IF_ERROR(env.Rename(s.staging + "/descriptions/" + uuid + ".json",
                               st.DescPath(uuid, si.desc.r.seq)));
    sync.dirs.insert(st.P("instances"));
    sync.dirs.insert(st.InstDir(uuid));
    Record rec;
    rec.r = si.desc.r;
    rec.description_digest = Xxh3Digest(texts[i]);
    if (auto old = next->instances.find(uuid); old != next->instances.end() && s.keep_marks) {
      rec.r.damaged = old->second.r.damaged;  // marked after this pull planned
    }
    next->instances[uuid] = rec;
    out->switched.insert(uuid);
    if (!si.old_service.empty() && si.old_service != rec.r.service) {
      out->moved.emplace_back(uuid, si.old_service);
    }
  }
  MarkInstances(now, next);
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
    out->records_in.push_back(r);
    if (r.service.empty()) {
      next->application = r.rec;
      next->has_application = true;
    } else {
      next->services[r.service] = r.rec;
    }
  }
  PeerState& peer = next->peers[s.peer];
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
  KeepFullPullWhileDamaged(*next);
  if (s.summary.orphaned) peer.went_back_ms = now;
  // 4. The index: staged, then it and every directory steps 1-3 changed are
  // fsync'd, so everything it names is durable before it is.
  std::vector<Store::Impl::PendingReplace> index;
  RETURN_IF_ERROR(st.StageReplace(st.P(kCatalogFile), st.EncodeCatalog(*next), &index));
  sync.dirs.insert(st.o_.data_dir);
  sync.files.push_back(index.front().tmp);
  Status synced = SyncAll(env, sync, s.fs.get(), st.o_.bulk_pull_from);
  if (!synced.ok()) {
    env.RemoveFile(index.front().tmp).IgnoreError();
    return synced;
  }
  // 5. The commit point.
  return st.FinishReplaces(&index);
}

// A prefilled view links each file to its staged copy; an object another
// pull adopted first kept that pull's copy, so its files are linked to it
// (a view's file is its object). A view that cannot be is built after the
// commit point instead.
void PullTxn::RelinkPrefilledViews(const std::vector<Digest256>& already_held) {
  State& s = *s_;
  Store::Impl& st = *s.store;
  if (already_held.empty()) return;
  std::vector<Digest256> sorted = already_held;
  std::sort(sorted.begin(), sorted.end());
  for (State::StagedInstance& si : s.changed) {
    if (!si.view_skeleton.filled) continue;
    Status relinked = internal::ViewPrefill::Relink(st.env_, st.objects_, si.desc.files, sorted,
                                                    si.view_skeleton.dir);
    if (!relinked.ok()) si.view_skeleton = {};  // discarded with the staging directory
  }
}

// An instance of this peer still marked damaged (a filtered pull, a mark set
// after this pull planned) needs the next pull to be a full one.
void PullTxn::KeepFullPullWhileDamaged(Catalog& next) {
  State& s = *s_;
  for (const auto& [uuid, rec] : next.instances) {
    if (rec.r.peer != s.peer || !rec.r.damaged) continue;
    PeerState& peer = next.peers[s.peer];
    peer.generation = 0;
    peer.boot_id.clear();
    return;
  }
}

// The instances this pull confirmed, saw again, or missed.
void PullTxn::MarkInstances(int64_t now, Catalog* next) {
  State& s = *s_;
  for (const std::string& uuid : s.confirmed) {
    if (auto it = next->instances.find(uuid); it != next->instances.end()) {
      it->second.r.generation = s.new_peer.generation;
      it->second.r.pulled_at_ms = now;
    }
  }
  for (const std::string& uuid : s.reappeared) {
    if (auto it = next->instances.find(uuid); it != next->instances.end()) {
      it->second.r.removed = false;
      it->second.r.removed_since_ms = 0;
      it->second.r.removed_pulls = 0;
    }
  }
  for (const std::string& uuid : s.still_removed) {
    if (auto it = next->instances.find(uuid); it != next->instances.end()) {
      ++it->second.r.removed_pulls;
      it->second.r.damaged = false;  // the peer has nothing to send for it
    }
  }
  for (const std::string& uuid : s.newly_removed) {
    auto it = next->instances.find(uuid);
    if (it != next->instances.end() && !it->second.r.removed) {
      it->second.r.damaged = false;  // the peer has nothing to send for it
      it->second.r.removed = true;
      it->second.r.removed_since_ms = now;
      it->second.r.removed_pulls = 1;
      log::Info("catalog: peer no longer exports an instance; kept for removed_grace",
                {{"peer", s.peer}, {"instance", uuid}, {"alias", it->second.r.alias}});
    }
  }
}

// Phases 6-7, after the commit point (caller holds store->mu_): each changed
// instance's view moved to its new generation (only what changed), the
// svc-* names and sapi-insts.json; each new top becomes its generation's
// reference and the pins are released. A view failure is logged (Open
// repairs views).
void PullTxn::AfterCommit(const Published& pub) {
  State& s = *s_;
  Store::Impl& st = *s.store;
  Status views;
  auto note = [&](const Status& v) {
    if (views.ok() && !v.ok()) views = v;
  };
  for (State::StagedInstance& si : s.changed) {
    const std::string& uuid = si.desc.r.uuid;
    note(st.RefreshView(uuid, si.desc.r.seq, si.desc.files,
                        si.prev_seq ? si.prev_files.get() : nullptr, si.prev_seq, &si.changed_paths,
                        si.view_skeleton));
    st.gen_ids_[uuid][si.desc.r.seq] = {si.desc.r.pulled_at_ms, std::move(si.top_ids)};
    si.top_ids.clear();
    st.current_files_[uuid] = {si.desc.r.seq,
                               std::make_shared<std::vector<FileEntry>>(std::move(si.desc.files))};
    st.current_trees_[uuid] = {si.desc.r.seq, si.desc.trees};
  }
  s.ReleasePins();  // the new generations reference what they name
  std::set<std::string> services;
  for (const std::string& uuid : pub.switched) services.insert(st.cat_.instances[uuid].r.service);
  for (const auto& [uuid, old_service] : pub.moved) {
    st.UnlinkServiceNames(old_service, uuid);
    services.insert(old_service);
  }
  for (const std::string& uuid : s.newly_removed) {
    if (auto it = st.cat_.instances.find(uuid); it != st.cat_.instances.end()) {
      services.insert(it->second.r.service);
    }
  }
  if (!pub.records_in.empty()) {
    for (const auto& [uuid, rec] : st.cat_.instances) services.insert(rec.r.service);
  }
  note(st.UpdateViews(pub.switched, services));
  if (!views.ok()) {
    log::Warn("catalog: the svc-*/current views lag the index (repaired at the next open)",
              {{"peer", s.peer}, {"error", views.message()}});
  }
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
  // What the background fsyncs did not get to is fsync'd below, with the rest.
  if (s.writer) {
    // The writes of a bulk pull: all done, or the pull fails with the first failure.
    RETURN_IF_ERROR(s.writer->Drain());
    s.writer->Stop();
  }
  if (s.precreator) s.precreator->Stop();
  if (s.syncer) RETURN_IF_ERROR(s.syncer->Stop());
  StartViewPrefill();
  std::lock_guard<std::mutex> commit_lock(st.commit_mu_);
  const int64_t now = st.clock_.WallMs();
  Result<std::vector<std::string>> staged = StageDescriptions(now);
  FinishViewPrefill();  // joined on every path: before Publish moves the staged objects
  if (!staged.ok()) return staged.status();
  const std::vector<std::string>& texts = *staged;

  // `next` becomes the store's index (what readers see) only when
  // catalog.json is renamed over: the commit point of the whole pull.
  Catalog next;
  {
    std::lock_guard<std::mutex> lock(st.mu_);
    next = st.cat_;
    s.keep_marks = st.scrub_epoch_ != s.scrub_epoch;
  }
  Published pub;
  Status failed = Publish(texts, now, &next, &pub);

  std::lock_guard<std::mutex> lock(st.mu_);
  s.done = true;
  if (!failed.ok()) {
    // Nothing this pull changed is in the index. The record files renamed in
    // are complete records: the index takes them as they are.
    for (const State::StagedRecord& r : pub.records_in) {
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
    s.ReleasePins();
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
  AfterCommit(pub);
  if (durable.ok()) {
    if (Status r = st.ApplyRetentionLocked(); !r.ok()) {
      log::Warn("catalog: retention failed", {{"error", r.message()}});
    }
  }
  st.trash_->Discard(s.staging).IgnoreError();
  st.active_.erase(s.peer);
  return durable;
}

}  // namespace lifeboat::catalog
