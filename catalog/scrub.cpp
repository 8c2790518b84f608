// Store::Scrub: every object of every retained generation re-hashed once;
// with repair, damaged objects removed and their instances marked for a
// re-fetch (docs/catalog.md, section 6 "Scrub and repair").
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
// generations name it.
struct WantedObject {
  Digest128 digest;
  uint64_t size = 0;
  std::set<std::string> instances;
  bool tree = false;  // a generation tree: checked against its name when read
};

struct ScrubFindings {
  std::unordered_map<Digest256, WantedObject, Digest256Hash> objects;
  std::vector<Digest256> damaged;  // there, with the wrong content (or unreadable)
  std::vector<Digest256> missing;  // not there
  std::set<std::string> bad_descriptions;  // instances whose current description is bad
  std::set<Digest256> bad_trees;           // in damaged or missing already
};

void AddProblem(RepairReport* report, const std::string& path, const std::string& what) {
  report->problems.push_back({path, what});
}

}  // namespace

// Reads the description of every retained generation (the current one
// checked against catalog.json) and lists the objects they name.
static void CollectObjects(const Store::Impl& st, RepairReport* report, ScrubFindings* out) {
  std::map<std::string, Record> instances;
  std::map<std::string, std::vector<uint64_t>> seqs;
  {
    std::lock_guard<std::mutex> lock(st.mu_);
    instances = st.cat_.instances;
    for (const auto& [uuid, gens] : st.gen_ids_) {
      for (const auto& [seq, gen] : gens) seqs[uuid].push_back(seq);
    }
  }
  for (const auto& [uuid, rec] : instances) {
    std::vector<uint64_t>& list = seqs[uuid];
    if (std::find(list.begin(), list.end(), rec.r.seq) == list.end()) list.push_back(rec.r.seq);
    for (uint64_t seq : list) {
      if (seq > rec.r.seq) continue;
      const bool current = seq == rec.r.seq;
      TreeFault fault;
      auto desc = st.ReadCheckedDescription(uuid, seq,
                                            current ? rec.description_digest : Digest128(), &fault);
      ++report->generations_checked;
      if (!desc.ok()) {
        AddProblem(report, st.DescPath(uuid, seq), desc.status().message());
        if (current) out->bad_descriptions.insert(uuid);
        if (!fault.id.IsZero()) {
          WantedObject& w = out->objects[fault.id];
          w.tree = true;
          w.instances.insert(uuid);
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
          w.instances.insert(uuid);
        }
      }
      for (const FileEntry& f : desc->files) {
        if (f.kind != EntryKind::kFile) continue;
        WantedObject& w = out->objects[f.sha256];
        w.digest = f.digest;
        w.size = f.size;
        w.instances.insert(uuid);
      }
    }
  }
}

// Re-hashes each listed object once, sorting the bad ones into damaged/missing.
static void CheckObjects(const Store::Impl& st, RepairReport* report, ScrubFindings* f) {
  for (const auto& [id, w] : f->objects) {
    if (w.tree) {  // checked against its name while its generation was read
      ++report->objects_checked;
      continue;
    }
    const std::string path = st.objects_.PathOf(id);
    FileCheck c = CheckStoredFile(st.env_, path, w.digest, w.size, &id);
    ++report->objects_checked;
    ++report->files_checked;
    report->bytes_checked += c.bytes;
    if (c.ok) continue;
    AddProblem(report, path, c.what);
    (c.missing ? f->missing : f->damaged).push_back(id);
  }
}

// Under commit_mu_ and mu_: damaged objects to .trash, their instances
// marked, their peers reset to a full pull; the scrub recorded. One write of
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
        const WantedObject& w = f.objects.at(id);
        marked.insert(w.instances.begin(), w.instances.end());
      }
    }
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

Result<RepairReport> Store::Scrub(bool repair) {
  Impl& st = *impl_;
  if (st.o_.read_only) return InternalError("Scrub on a read-only store");
  RepairReport report;
  report.repair = repair;
  report.started_ms = st.clock_.WallMs();
  ScrubFindings found;
  CollectObjects(st, &report, &found);
  CheckObjects(st, &report, &found);
  VerifyReport records;
  st.CheckImagesAndRecords(&records);
  report.files_checked += records.files_checked;
  report.bytes_checked += records.bytes_checked;
  for (VerifyProblem& p : records.problems) report.problems.push_back(std::move(p));
  std::sort(report.problems.begin(), report.problems.end(),
            [](const VerifyProblem& a, const VerifyProblem& b) { return a.path < b.path; });
  RETURN_IF_ERROR(ApplyScrub(st, found, &report));
  log::Info("catalog: scrub finished",
            {{"repair", repair},
             {"objects_checked", report.objects_checked},
             {"problems", report.problems.size()},
             {"objects_removed", report.objects_removed},
             {"instances_marked", report.damaged_instances.size()}});
  return report;
}

std::optional<ScrubRecord> Store::LastScrub() const {
  std::lock_guard<std::mutex> lock(impl_->mu_);
  return impl_->cat_.last_scrub;
}

}  // namespace lifeboat::catalog
