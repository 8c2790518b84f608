// Store::Verify and Store::Scrub: one walk over every retained generation,
// each object re-hashed once, objects/ listed for files nothing names; with
// repair, damaged objects removed and their instances marked for a
// re-fetch (docs/catalog.md, section 6 "Verify, scrub and repair").
#include <algorithm>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>
#include <utility>

#include "base/log.h"
#include "base/text.h"
#include "catalog/internal/store_impl.h"
#include "catalog/store.h"

namespace lifeboat::catalog {

namespace {

// An object as the descriptions name it, and the instances whose retained
// generations name it, each with the newest of those generations.
struct WantedObject {
  Digest128 digest;
  uint64_t size = 0;
  std::map<std::string, uint64_t> newest;  // instance uuid -> seq
  bool tree = false;                       // a generation tree: checked against its name when read

  void NamedBy(const std::string& uuid, uint64_t seq) {
    uint64_t& s = newest[uuid];
    s = std::max(s, seq);
  }
};

struct ScrubFindings {
  std::unordered_map<Digest256, WantedObject, Digest256Hash> objects;
  std::vector<Digest256> damaged;  // there, with the wrong content (or unreadable)
  std::vector<Digest256> missing;  // not there
  std::set<std::string> bad_descriptions;  // instances whose current description is bad
  std::set<Digest256> bad_trees;           // in damaged or missing already
  std::vector<Digest256> unnamed;          // the objects among VerifyReport::unnamed
  size_t unreadable = 0;  // generations whose description or trees could not be read
};

// The instances and the seqs of their retained generations as the walk
// starts.
struct WalkStart {
  std::map<std::string, Record> instances;
  std::map<std::string, std::vector<uint64_t>> seqs;  // ascending, up to the current one
};

void AddProblem(VerifyReport* report, const std::string& path, const std::string& what) {
  report->problems.push_back({path, what});
}

void SortByPath(std::vector<VerifyProblem>* list) {
  std::sort(list->begin(), list->end(),
            [](const VerifyProblem& a, const VerifyProblem& b) { return a.path < b.path; });
}

}  // namespace

// The generations to read: those a writable store knows it retains
// (gen_ids_) and every description on disk up to each current seq (one
// Open could not read is not in gen_ids_, and a read-only store knows only
// the disk).
static WalkStart TakeWalkStart(const Store::Impl& st) {
  WalkStart w;
  {
    std::lock_guard<std::mutex> lock(st.mu_);
    w.instances = st.cat_.instances;
    for (const auto& [uuid, gens] : st.gen_ids_) {
      for (const auto& [seq, gen] : gens) w.seqs[uuid].push_back(seq);
    }
  }
  for (const auto& [uuid, rec] : w.instances) {
    std::vector<uint64_t>& list = w.seqs[uuid];
    if (auto names = st.env_.ListDir(st.InstDir(uuid)); names.ok()) {
      for (uint64_t seq : DescriptionSeqs(*names)) list.push_back(seq);
    }
    std::erase_if(list, [&](uint64_t seq) { return seq >= rec.r.seq; });
    list.push_back(rec.r.seq);
    std::sort(list.begin(), list.end());
    list.erase(std::unique(list.begin(), list.end()), list.end());
  }
  return w;
}

// True when catalog.json is the file a read-only store's Open read: no
// commit since (each replaces the file).
static bool IndexUnchangedSinceOpen(const Store::Impl& st) {
  if (!st.opened_index_) return false;
  auto now = st.env_.Stat(st.P(kCatalogFile));
  return now.ok() && SameFileState(*now, *st.opened_index_);
}

// Whether generation `seq` of `uuid` is still retained: the walk reads
// beside pulls, whose retention drops generations (their description
// first, then the objects only they named), so a description or object
// found missing is damage only while a generation naming it is retained.
// A writable store knows (gen_ids_); for a read-only one, nothing was
// dropped while catalog.json is the file its Open read, and after that the
// description on disk says.
static bool StillRetained(const Store::Impl& st, const std::string& uuid, uint64_t seq) {
  if (st.o_.read_only && IndexUnchangedSinceOpen(st)) return true;
  if (!st.o_.read_only) {
    std::lock_guard<std::mutex> lock(st.mu_);
    auto it = st.gen_ids_.find(uuid);
    if (it != st.gen_ids_.end() && it->second.count(seq) != 0) return true;
  }
  return Exists(st.env_, st.DescPath(uuid, seq));
}

// Reads the description of every retained generation (the current one
// checked against catalog.json) and lists the objects they name. Each
// distinct tree is read and checked once (generations share most trees).
static void CollectObjects(const Store::Impl& st, const WalkStart& start, VerifyReport* report,
                           ScrubFindings* out) {
  TreeCache trees;
  for (const auto& [uuid, rec] : start.instances) {
    for (uint64_t seq : start.seqs.at(uuid)) {
      const bool current = seq == rec.r.seq;
      TreeFault fault;
      auto desc = st.ReadCheckedDescription(
          uuid, seq, current ? rec.description_digest : Digest128(), &fault, &trees);
      if (!desc.ok() && desc.status().code() == Code::kNotFound && !StillRetained(st, uuid, seq)) {
        continue;  // listed, then dropped by retention
      }
      ++report->generations_checked;
      if (!desc.ok()) {
        ++out->unreadable;
        AddProblem(report, st.DescPath(uuid, seq), desc.status().message());
        if (current) out->bad_descriptions.insert(uuid);
        if (!fault.id.IsZero()) {
          WantedObject& w = out->objects[fault.id];
          w.tree = true;
          w.NamedBy(uuid, seq);
          if (out->bad_trees.insert(fault.id).second) {
            (fault.missing ? out->missing : out->damaged).push_back(fault.id);
          }
        }
        continue;
      }
      if (desc->trees) {
        for (const auto& [dir, id] : *desc->trees) {
          WantedObject& w = out->objects[id];
          w.tree = true;
          w.NamedBy(uuid, seq);
        }
      }
      for (const FileEntry& f : desc->files) {
        if (f.kind != EntryKind::kFile) continue;
        WantedObject& w = out->objects[f.sha256];
        w.digest = f.digest;
        w.size = f.size;
        w.NamedBy(uuid, seq);
      }
    }
  }
}

// True when some pull is staging (or an agent stopped during one: its next
// start removes what it left), or .staging/ cannot be listed.
static bool PullStaging(const Store::Impl& st) {
  auto pulls = st.env_.ListDir(st.P(kStaging));
  if (!pulls.ok()) return pulls.status().code() != Code::kNotFound;
  return !pulls->empty();
}

// Lists objects/ and reports what nothing names (VerifyReport::unnamed).
// Called right after CollectObjects, so that the window in which a
// read-only store can be overtaken by another process's commit is short.
static void FindUnnamed(const Store::Impl& st, ScrubFindings* f, VerifyReport* report) {
  // An unreadable generation names objects nobody can list (as for
  // garbage collection at Open).
  if (f->unreadable > 0) return;
  auto listing = st.objects_.List();
  if (!listing.ok()) {
    AddProblem(report, st.objects_.dir(), listing.status().message());
    return;
  }
  std::vector<Digest256> unnamed;
  if (st.o_.read_only) {
    // Another process's commit adopts objects before it replaces
    // catalog.json, and removes its staging directory after: an object
    // listed here that no generation read above names is unnamed only if
    // neither happened.
    for (const Digest256& id : listing->ids) {
      if (!f->objects.count(id)) unnamed.push_back(id);
    }
    if (!IndexUnchangedSinceOpen(st) || PullStaging(st)) return;
  } else {
    // Under the commit lock no commit is between its adoption of objects
    // and its catalog.json, and refs_ counts every generation Open read or
    // a commit added and every pull in progress (their pins). A generation
    // Open could not read is not counted there, but the walk read it (or
    // found it unreadable, above).
    std::lock_guard<std::mutex> commit_lock(st.commit_mu_);
    std::lock_guard<std::mutex> lock(st.mu_);
    for (const Digest256& id : listing->ids) {
      if (st.refs_.Count(id) == 0 && !f->objects.count(id) && st.objects_.Has(id)) {
        unnamed.push_back(id);
      }
    }
  }
  report->unnamed_checked = true;
  for (const Digest256& id : unnamed) {
    const std::string path = st.objects_.PathOf(id);
    auto stat = st.env_.Stat(path);
    if (!stat.ok()) continue;  // deleted meanwhile (garbage collection)
    report->unnamed.push_back(
        {path, "no retained generation names this object (the agent's next start deletes it)"});
    report->unnamed_bytes += stat->size;
    f->unnamed.push_back(id);
  }
  for (const std::string& path : listing->strays) {
    auto stat = st.env_.Stat(path);
    report->unnamed.push_back({path, "not an object of the catalog (nothing deletes it)"});
    if (stat.ok() && stat->type == FileType::kRegular) report->unnamed_bytes += stat->size;
  }
  SortByPath(&report->unnamed);
}

// Whether some generation naming `w` is still retained (StillRetained):
// otherwise a missing object was deleted with the generations that named it.
static bool NamedByRetained(const Store::Impl& st, const WantedObject& w) {
  for (const auto& [uuid, seq] : w.newest) {
    if (StillRetained(st, uuid, seq)) return true;
  }
  return false;
}

// Re-hashes each listed object once, sorting the bad ones into
// damaged/missing (a missing one only while a generation naming it is
// retained).
static void CheckObjects(const Store::Impl& st, VerifyReport* report, ScrubFindings* f) {
  for (const auto& [id, w] : f->objects) {
    ++report->objects_checked;
    if (w.tree) continue;  // checked against its name while its generation was read
    const std::string path = st.objects_.PathOf(id);
    FileCheck c = CheckStoredFile(st.env_, path, w.digest, w.size, &id);
    ++report->files_checked;
    report->bytes_checked += c.bytes;
    if (c.ok) continue;
    if (c.missing && !NamedByRetained(st, w)) continue;
    AddProblem(report, path, c.what);
    (c.missing ? f->missing : f->damaged).push_back(id);
  }
}

// The whole check, shared by Verify and Scrub.
static ScrubFindings CheckCatalog(const Store::Impl& st, VerifyReport* report) {
  ScrubFindings found;
  CollectObjects(st, TakeWalkStart(st), report, &found);
  FindUnnamed(st, &found, report);
  CheckObjects(st, report, &found);
  st.CheckImagesAndRecords(report);
  SortByPath(&report->problems);
  return found;
}

// Under commit_mu_ and mu_ (repair): damaged objects to .trash, their
// instances marked, their peers reset to a full pull, unnamed objects
// deleted; the scrub recorded either way. One write of
// catalog.json.
static Status ApplyScrub(Store::Impl& st, const ScrubFindings& f, RepairReport* report) {
  std::lock_guard<std::mutex> commit_lock(st.commit_mu_);
  std::lock_guard<std::mutex> lock(st.mu_);
  std::set<std::string> marked = f.bad_descriptions;
  if (report->repair) {
    for (const Digest256& id : f.damaged) {
      if (st.refs_.Count(id) == 0) continue;  // dropped by retention meanwhile
      Status gone = st.trash_->Discard(st.objects_.PathOf(id));
      if (!gone.ok() && gone.code() != Code::kNotFound) {
        return gone.WithContext("scrub: cannot remove the damaged object " + id.Hex());
      }
      ++report->objects_removed;
    }
    for (const auto* ids : {&f.damaged, &f.missing}) {
      for (const Digest256& id : *ids) {
        if (st.refs_.Count(id) == 0) continue;  // its generations were dropped meanwhile
        for (const auto& [uuid, seq] : f.objects.at(id).newest) marked.insert(uuid);
      }
    }
    // What garbage collection at Open would delete, deleted now.
    report->unnamed_removed = st.RemoveObjects(f.unnamed);
    std::set<std::string> peers;
    for (const std::string& uuid : marked) {
      auto it = st.cat_.instances.find(uuid);
      if (it == st.cat_.instances.end()) continue;
      it->second.r.damaged = true;
      report->damaged_instances.push_back(uuid);
      PeerState& p = st.cat_.peers[it->second.r.peer];
      p.name = it->second.r.peer;
      p.generation = 0;  // the next pull asks for a full manifest
      p.boot_id.clear();
      peers.insert(p.name);
    }
    report->peers_to_pull.assign(peers.begin(), peers.end());
    if (!marked.empty()) ++st.scrub_epoch_;
  }
  report->finished_ms = st.clock_.WallMs();
  ScrubRecord rec;
  rec.finished_ms = report->finished_ms;
  rec.repair = report->repair;
  rec.objects_checked = report->objects_checked;
  rec.problems = report->problems.size();
  rec.repaired = report->objects_removed + report->damaged_instances.size();
  if (!report->problems.empty()) {
    rec.first_problem = report->problems.front().path + ": " + report->problems.front().what;
  }
  st.cat_.last_scrub = rec;
  return st.WriteCatalog().WithContext("scrub: recording the result in catalog.json");
}

Result<VerifyReport> Store::Verify() const {
  VerifyReport report;
  CheckCatalog(*impl_, &report);
  return report;
}

Result<RepairReport> Store::Scrub(bool repair) {
  Impl& st = *impl_;
  if (st.o_.read_only) return InternalError("Scrub on a read-only store");
  RepairReport report;
  report.repair = repair;
  report.started_ms = st.clock_.WallMs();
  const ScrubFindings found = CheckCatalog(st, &report);
  RETURN_IF_ERROR(ApplyScrub(st, found, &report));
  log::Info("catalog: scrub finished", {{"repair", repair},
                                        {"objects_checked", report.objects_checked},
                                        {"problems", report.problems.size()},
                                        {"unnamed", report.unnamed.size()},
                                        {"objects_removed", report.objects_removed},
                                        {"unnamed_removed", report.unnamed_removed},
                                        {"instances_marked", report.damaged_instances.size()}});
  return report;
}

std::optional<ScrubRecord> Store::LastScrub() const {
  std::lock_guard<std::mutex> lock(impl_->mu_);
  return impl_->cat_.last_scrub;
}

}  // namespace lifeboat::catalog
