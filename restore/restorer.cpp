#include "restore/restorer.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "base/digest.h"
#include "base/lock_file.h"
#include "base/log.h"
#include "restore/readiness.h"
#include "restore/verify_item.h"

namespace lifeboat::restore {
namespace {

using nlohmann::json;

std::string Minutes(int64_t ms) {
  int64_t m = ms / 60000;
  if (m < 120) return std::to_string(m) + " min";
  return std::to_string(m / 60) + " h " + std::to_string(m % 60) + " min";
}

// Takes the flock(2) lock file `path` for this process (released, and left
// in place, when the LockFile goes); another holder is a temporary error.
Result<LockFile> TakeLock(const std::string& path, const std::string& what) {
  Result<LockFile> lock = LockFile::Acquire(path, what);
  if (!lock.ok() && lock.status().code() == Code::kUnavailable) {
    return TemporaryError(lock.status().message() + "; wait for it");
  }
  return lock;
}

struct Loaded {
  InstanceSource source;
  std::vector<VerifyItem> files;
};

Result<json> ParseJsonText(const std::string& text, const std::string& what) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return DataError(what + ": not valid JSON");
  return j;
}

}  // namespace

json RestoreReport::ToJson() const {
  json copies_j = json::array();
  for (const PeerCopy& c : copies) {
    copies_j.push_back({{"node", c.node},
                        {"reachable", c.reachable},
                        {"error", c.error.empty() ? json() : json(c.error)},
                        {"generation", c.generation},
                        {"pulled_at", IsoOrNull(c.pulled_ms)}});
  }
  double secs = static_cast<double>(wall_ms) / 1000.0;
  return {{"plan", plan.ToJson()},
          {"started_at", IsoOrNull(started_ms)},
          {"finished_at", IsoOrNull(finished_ms)},
          {"journal",
           {{"id", journal_id},
            {"path", journal_path},
            {"started_at", IsoOrNull(journal_started_ms)},
            {"finished_at", IsoOrNull(journal_finished_ms)}}},
          {"resumed", resumed},
          {"already_complete", already_complete},
          {"warnings", warnings},
          {"copies", copies_j},
          {"fresher_node", fresher_node.empty() ? json() : json(fresher_node)},
          {"fresher_generation", fresher_generation},
          {"local_generation", local_generation},
          {"verified", {{"files", files_verified}, {"bytes", bytes_verified}, {"ms", verify_ms}}},
          {"steps_run", steps_run},
          {"steps_already_done", steps_skipped_done},
          {"bytes_restored", bytes_restored},
          {"wall_ms", wall_ms},
          {"bytes_per_second",
           secs > 0 ? static_cast<uint64_t>(static_cast<double>(bytes_restored) / secs) : 0},
          {"notes", notes},
          {"not_restorable_services", not_restorable_services}};
}

Restorer::Restorer(RestoreContext ctx) : ctx_(std::move(ctx)) {}

namespace {

class RunState {
 public:
  RunState(const RestoreContext& ctx, const RestoreRequest& req, RestoreReport* report)
      : ctx_(ctx), req_(req), report_(*report), env_(*ctx.env) {}

  Status Go() {
    const int64_t start = ctx_.clock->MonotonicMs();
    report_.started_ms = ctx_.clock->WallMs();
    Status st = Steps();
    report_.wall_ms = ctx_.clock->MonotonicMs() - start;
    report_.finished_ms = ctx_.clock->WallMs();
    return st;
  }

 private:
  Status Steps() {
    ASSIGN_OR_RETURN(std::vector<catalog::InstanceRecord> selected, Select());
    RETURN_IF_ERROR(GuardAlive(selected));
    RETURN_IF_ERROR(Freshest(selected));
    if (req_.from_freshest && !report_.fresher_node.empty()) {
      ASSIGN_OR_RETURN(selected, Select());  // the pull brought newer generations
    }
    RETURN_IF_ERROR(GuardStale(selected));

    const std::string id = JournalId(req_.selection, ctx_.backend->name(), ctx_.backend->target());
    report_.journal_id = id;
    RETURN_IF_ERROR(SkipRestoredElsewhere(id, &selected));
    LeaveOutHa(&selected);
    ASSIGN_OR_RETURN(std::optional<Journal> journal, Journal::Load(env_, ctx_.data_dir, id));
    if (journal) {
      NoteJournal(*journal);
      for (std::string& w : journal->StepWarnings()) report_.warnings.push_back(std::move(w));
    }
    if (journal && journal->complete()) {
      report_.already_complete = true;
      report_.plan = journal->ToPlan();
      report_.steps_skipped_done = journal->steps().size();
      return Status::Ok();
    }
    RETURN_IF_ERROR(GuardHaServices(selected));

    std::vector<Loaded> loaded;
    if (journal) {
      report_.resumed = true;
      RETURN_IF_ERROR(LoadJournalInstances(*journal, &loaded));
      report_.plan = journal->ToPlan();
      if (req_.keep_old_records) LeaveOutUndoneRetirements(*journal, &report_.plan);
    } else {
      RETURN_IF_ERROR(LoadSelected(selected, &loaded));
    }
    RETURN_IF_ERROR(VerifyAll(loaded, journal ? &*journal : nullptr));
    if (!journal) RETURN_IF_ERROR(MakeNewPlan(loaded));
    NoteNotRestorable(selected);
    // A dry run ends here with the verdict the real run would reach: the
    // first guard that would refuse, else the backend's own check.
    if (req_.dry_run) {
      RemoveCheckouts();
      return !dry_verdict_.ok() ? dry_verdict_ : ctx_.backend->Check(report_.plan);
    }
    if (!journal && report_.plan.steps.empty()) {  // nothing to do, no journal
      RemoveCheckouts();
      return Status::Ok();
    }
    RETURN_IF_ERROR(ctx_.backend->Check(report_.plan));
    RETURN_IF_ERROR(ConfirmPlan());
    RETURN_IF_ERROR(CreateDirs(env_, RestoresDir(ctx_.data_dir), 0700));
    ASSIGN_OR_RETURN(LockFile lock,
                     TakeLock(JoinPath(RestoresDir(ctx_.data_dir), id + ".lock"), "restore " + id));
    std::vector<LockFile> claims;
    RETURN_IF_ERROR(ClaimInstances(&claims));
    // Another process may have run this restore between our look at the
    // journal and taking the lock: then its journal, not our plan, is the truth.
    ASSIGN_OR_RETURN(std::optional<Journal> now, Journal::Load(env_, ctx_.data_dir, id));
    if (now.has_value() != journal.has_value() ||
        (now && now->done_count() != journal->done_count())) {
      return TemporaryError("restore " + id +
                            " was run by another process meanwhile; run the "
                            "command again to continue from its journal");
    }
    if (journal && req_.keep_old_records) {
      RETURN_IF_ERROR(journal->DropUndoneRetirements(ctx_.clock->WallMs()).status());
    }
    if (!journal) {
      journal = Journal::Create(env_, ctx_.data_dir, id, req_.selection, ctx_.node_name,
                                ctx_.backend->name(), ctx_.backend->target(), report_.plan,
                                ctx_.clock->WallMs());
      RETURN_IF_ERROR(journal->Save());
      NoteJournal(*journal);
    }
    Status done = Execute(*journal);
    NoteJournal(*journal);
    if (done.ok()) RemoveCheckouts();  // a failed run resumes from them
    return done;
  }

  // ---- 1. select -------------------------------------------------------------

  Result<std::vector<catalog::InstanceRecord>> Select() {
    const Selection& sel = req_.selection;
    int kinds = !sel.peer.empty() + !sel.services.empty() + !sel.instances.empty();
    if (kinds != 1) {
      return UsageError("select exactly one of --peer, --service or --instance");
    }
    std::vector<catalog::InstanceRecord> all = ctx_.store->Instances();
    std::vector<catalog::InstanceRecord> out;
    report_.plan.skipped.clear();
    if (!sel.peer.empty()) {
      bool known = ctx_.store->Peer(sel.peer).has_value() ||
                   std::any_of(ctx_.peers.begin(), ctx_.peers.end(),
                               [&](const NodeAddress& a) { return a.name == sel.peer; });
      if (!known) return NotFoundError("no peer named '" + sel.peer + "' in the config or catalog");
      const int64_t went_back_ms = WentBackMs(sel.peer);
      for (const auto& r : all) {
        if (r.peer != sel.peer) continue;
        if (r.removed && went_back_ms != 0) {
          report_.warnings.push_back(r.alias + " (" + r.uuid + ") is no longer exported by " +
                                     r.peer + ", which went backwards at " +
                                     FormatIso8601Ms(went_back_ms) +
                                     " (reinstalled?): restoring its last copy");
        } else if (r.removed) {
          report_.plan.skipped.push_back(
              {r.uuid, r.alias, r.service, "no longer exported by " + r.peer + " (removed)"});
          continue;
        }
        out.push_back(r);
      }
      if (out.empty()) {
        return NotFoundError("the catalog holds no instances from peer '" + sel.peer + "'");
      }
    } else if (!sel.services.empty()) {
      for (const std::string& service : sel.services) {
        size_t before = out.size();
        for (const auto& r : all) {
          if (r.service == service && !r.removed) out.push_back(r);
        }
        if (out.size() == before) {
          return NotFoundError("the catalog holds no instances of service '" + service + "'");
        }
      }
    } else {
      for (const std::string& uuid : sel.instances) {
        auto it = std::find_if(all.begin(), all.end(),
                               [&](const catalog::InstanceRecord& r) { return r.uuid == uuid; });
        if (it == all.end()) return NotFoundError("no instance " + uuid + " in the catalog");
        out.push_back(*it);
      }
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.uuid < b.uuid; });
    out.erase(std::unique(out.begin(), out.end(),
                          [](const auto& a, const auto& b) { return a.uuid == b.uuid; }),
              out.end());
    return out;
  }

  // When `peer` last went backwards (catalog::PeerState::went_back_ms); 0 = never.
  int64_t WentBackMs(const std::string& peer) const {
    std::optional<catalog::PeerState> p = ctx_.store->Peer(peer);
    return p ? p->went_back_ms : 0;
  }

  std::set<std::string> PeersOf(const std::vector<catalog::InstanceRecord>& selected) {
    std::set<std::string> peers;
    for (const auto& r : selected) peers.insert(r.peer);
    return peers;
  }

  const NodeAddress* AddressOf(const std::string& peer) {
    for (const NodeAddress& a : ctx_.peers) {
      if (a.name == peer) return &a;
    }
    return nullptr;
  }

  // ---- 1b. earlier restores ---------------------------------------------------

  // Instances another restore (any selection, any target) began or finished
  // on this node, or finished on another node, are not restored again: they
  // are listed as skipped, saying where they went, unless --again. The
  // restore's own journal (a resume) is not "another".
  Status SkipRestoredElsewhere(const std::string& own_id,
                               std::vector<catalog::InstanceRecord>* selected) {
    WarnUnaskedNodes(*selected);
    if (req_.again) return Status::Ok();
    ASSIGN_OR_RETURN(auto claims, ListRestoreClaims(env_, ctx_.data_dir));
    for (const auto& [uuid, r] : ctx_.restored_elsewhere) claims.emplace(uuid, r);  // ours first
    std::erase_if(*selected, [&](const catalog::InstanceRecord& r) {
      auto it = claims.find(r.uuid);
      if (it == claims.end() || it->second.journal_id == own_id) return false;
      const RestoredInstance& c = it->second;
      const std::string where =
          c.alias + " (" + c.new_uuid + ") by " + c.node + " into " + c.backend + " " + c.target;
      report_.plan.skipped.push_back(
          {r.uuid, r.alias, r.service,
           c.restored_ms != 0
               ? "already restored as " + where + " at " + FormatIso8601Ms(c.restored_ms) +
                     "; --again restores it once more"
               : "an unfinished restore (journal " + c.journal_id + ") began restoring it as " +
                     where + "; rerun that restore to finish it, or --again"});
      return true;
    });
    return Status::Ok();
  }

  // HA services (manatee, moray, binder) keep serving from their other
  // instances: the restore of a whole peer leaves theirs out (listed as
  // skipped, saying how to restore one); naming the service or the instance
  // restores it.
  void LeaveOutHa(std::vector<catalog::InstanceRecord>* selected) {
    if (req_.selection.peer.empty() || req_.include_ha) return;  // named, or asked for
    const std::vector<std::string>& ha = HaServices();
    std::erase_if(*selected, [&](const catalog::InstanceRecord& r) {
      if (std::find(ha.begin(), ha.end(), r.service) == ha.end()) return false;
      report_.plan.skipped.push_back(
          {r.uuid, r.alias, r.service,
           "HA service: its instances on the other nodes keep serving; restore this one by "
           "naming it (--service " +
               r.service + " or --instance " + r.uuid + ")"});
      return true;
    });
  }

  // Everything restored needs manatee, moray and binder. What the backend
  // sees of them on this node: no healthy instance of one refuses the
  // restore (unless --force); no instance here and none held from a node
  // other than the lost ones is a warning (the lost node may have held the
  // only one). Services being restored themselves are not checked.
  Status GuardHaServices(const std::vector<catalog::InstanceRecord>& selected) {
    std::set<std::string> lost, restoring;
    for (const catalog::InstanceRecord& r : selected) {
      lost.insert(r.peer);
      restoring.insert(r.service);
    }
    for (const std::string& service : HaServices()) {
      if (restoring.count(service)) continue;
      ASSIGN_OR_RETURN(auto local, ctx_.backend->LocalInstances(service));
      if (!local) continue;  // the backend cannot tell
      std::string unhealthy;
      bool healthy = false;
      for (const Backend::LocalInstance& li : *local) {
        healthy = healthy || li.healthy;
        if (!li.healthy) {
          unhealthy +=
              (unhealthy.empty() ? "" : "; ") + li.alias + " (" + li.uuid + "): " + li.detail;
        }
      }
      if (local->empty()) {
        const std::vector<catalog::InstanceRecord> held = ctx_.store->Instances();
        const bool elsewhere = std::any_of(held.begin(), held.end(), [&](const auto& r) {
          return r.service == service && !r.removed && !lost.count(r.peer);
        });
        if (!elsewhere) {
          report_.warnings.push_back(
              "no " + service +
              " instance on this node and none held from a node that is not "
              "being restored: if the lost node held the only one, restore it first (--service " +
              service + "); everything else needs it");
        }
        continue;
      }
      if (healthy) {
        if (!unhealthy.empty()) report_.warnings.push_back(service + " here: " + unhealthy);
        continue;
      }
      RETURN_IF_ERROR(RefuseUnlessForced("HA service " + service +
                                             " is not healthy on this node (" + unhealthy +
                                             "); the restored instances need it",
                                         ": fix it first, or pass --force to restore anyway"));
    }
    return Status::Ok();
  }

  // A guard's refusal (kTemporary, `msg` + `how_to_force`): with force only
  // a warning; in a dry run a warning and the verdict the real run would
  // reach (the first refusal), so the dry run goes on to show the plan.
  Status RefuseUnlessForced(const std::string& msg, const std::string& how_to_force) {
    if (req_.force) {
      report_.warnings.push_back(msg + "; going ahead (--force)");
      return Status::Ok();
    }
    Status refused = TemporaryError(msg + how_to_force);
    if (!req_.dry_run) return refused;
    report_.warnings.push_back(msg);
    if (dry_verdict_.ok()) dry_verdict_ = refused;
    return Status::Ok();
  }

  // A node that did not answer GET /restores may have rebuilt some of the
  // selection already; the lost peers themselves are expected not to answer.
  void WarnUnaskedNodes(const std::vector<catalog::InstanceRecord>& selected) {
    std::set<std::string> lost;
    for (const catalog::InstanceRecord& r : selected) lost.insert(r.peer);
    for (const auto& [node, why] : ctx_.unasked_nodes) {
      if (lost.count(node)) continue;
      report_.warnings.push_back("could not ask node " + node + " what it restored (" + why +
                                 "): an instance it rebuilt would be rebuilt again here");
    }
  }

  // Holds restores/<old uuid>.claim for every planned instance while the
  // restore runs: two restores started at once with overlapping selections
  // cannot both rebuild one instance (the second stops before its first step).
  Status ClaimInstances(std::vector<LockFile>* claims) {
    for (const PlannedInstance& p : report_.plan.instances) {
      Result<LockFile> claim = LockFile::Acquire(
          JoinPath(RestoresDir(ctx_.data_dir), p.old_uuid + ".claim"), p.old_alias);
      if (!claim.ok()) {
        if (claim.status().code() != Code::kUnavailable) return claim.status();
        return TemporaryError(p.old_alias + " (" + p.old_uuid +
                              ") is being restored by another restore right now; rerun when it "
                              "finished (" +
                              p.old_alias + " will then be skipped)");
      }
      claims->push_back(std::move(*claim));
    }
    return Status::Ok();
  }

  // ---- 2. guards -------------------------------------------------------------

  Status GuardAlive(const std::vector<catalog::InstanceRecord>& selected) {
    if (ctx_.probe == nullptr) return Status::Ok();
    for (const std::string& peer : PeersOf(selected)) {
      const NodeAddress* addr = AddressOf(peer);
      if (addr == nullptr || !ctx_.probe->Alive(*addr)) continue;
      RETURN_IF_ERROR(RefuseUnlessForced(
          "peer " + peer + " still answers at " + addr->ToString() +
              ": it is alive, so restoring its instances here would run them twice "
              "(that is a migration, not a restore)",
          "; pass --force to restore anyway"));
    }
    return Status::Ok();
  }

  Status GuardStale(const std::vector<catalog::InstanceRecord>& selected) {
    int64_t now = ctx_.clock->WallMs();
    int64_t oldest = now;
    std::string oldest_alias, future_alias;
    for (const auto& r : selected) {
      if (WallAgeMs(r.pulled_at_ms, now) == kClockChangedMs) future_alias = r.alias;
      if (r.pulled_at_ms < oldest) {
        oldest = r.pulled_at_ms;
        oldest_alias = r.alias;
      }
    }
    int64_t age = now - oldest;
    std::string msg;
    if (!future_alias.empty()) {
      // A pull time after "now": the clock was set back and no age can be
      // trusted; it is treated as stale (asked, or -y).
      msg = "the wall clock is behind the time " + future_alias +
            " was pulled: the clock changed and the age of the data to restore is unknown";
    } else if (age > ctx_.stale_after_ms) {
      msg = "the data to restore is stale: " + oldest_alias + " was last pulled " + Minutes(age) +
            " ago (" + FormatIso8601Ms(oldest) + "), more than stale_after (" +
            Minutes(ctx_.stale_after_ms) + ")";
    } else {
      return Status::Ok();
    }
    if (req_.dry_run || req_.assume_yes) {
      report_.warnings.push_back(msg);
      return Status::Ok();
    }
    if (ctx_.confirm && ctx_.confirm(msg + ". Restore it anyway?")) {
      report_.warnings.push_back(msg + " (confirmed)");
      return Status::Ok();
    }
    return TemporaryError(msg + "; pass -y to restore it anyway");
  }

  // Shows the plan and asks before the first step of a new restore (a
  // resumed one was confirmed when it started). -y and a missing
  // confirm_plan (nobody to ask) go ahead.
  Status ConfirmPlan() {
    if (req_.assume_yes || !ctx_.confirm_plan || report_.resumed) return Status::Ok();
    if (ctx_.confirm_plan(report_)) return Status::Ok();
    return TemporaryError("restore not confirmed; nothing was changed");
  }

  // ---- 3. freshest copy ------------------------------------------------------

  Status Freshest(const std::vector<catalog::InstanceRecord>& selected) {
    if (ctx_.probe == nullptr) return Status::Ok();
    std::set<std::string> peers = PeersOf(selected);
    for (const std::string& peer : peers) {
      uint64_t local = 0;
      if (auto p = ctx_.store->Peer(peer)) local = p->generation;
      report_.local_generation = std::max(report_.local_generation, local);
      std::vector<NodeAddress> others;
      for (const NodeAddress& a : ctx_.peers) {
        if (a.name != peer) others.push_back(a);
      }
      if (others.empty()) continue;
      std::vector<PeerCopy> copies = ctx_.probe->CopiesOf(peer, others);
      const PeerCopy* best = nullptr;
      for (const PeerCopy& c : copies) {
        report_.copies.push_back(c);
        if (!c.reachable) {
          report_.warnings.push_back("could not learn which generation of " + peer + " node " +
                                     c.node + " holds (" + c.error +
                                     "): the copy here may not be the freshest");
        }
        if (c.reachable && c.generation > local && (!best || c.generation > best->generation)) {
          best = &c;
        }
      }
      if (best == nullptr) continue;
      report_.fresher_node = best->node;
      report_.fresher_generation = best->generation;
      std::string msg = "node " + best->node + " holds generation " +
                        std::to_string(best->generation) + " of " + peer +
                        ", newer than generation " + std::to_string(local) + " held here";
      if (!req_.from_freshest || req_.dry_run) {
        report_.warnings.push_back(msg + ": run the restore on " + best->node +
                                   ", or pass --from-freshest to pull it here first");
        continue;
      }
      const NodeAddress* holder = AddressOf(best->node);
      if (holder == nullptr) return InternalError("no address for node " + best->node);
      RETURN_IF_ERROR(ctx_.probe->PullFrom(*holder, peer)
                          .WithContext("pulling " + peer + "'s data from " + best->node));
      if (ctx_.reopen_store) {
        ASSIGN_OR_RETURN(ctx_.store, ctx_.reopen_store());
      }
      report_.warnings.push_back(msg + ": pulled it here first (--from-freshest)");
      if (auto p = ctx_.store->Peer(peer)) report_.local_generation = p->generation;
    }
    return Status::Ok();
  }

  // ---- 4. load and verify ----------------------------------------------------

  // A checkout of generation `seq` of `uuid` under restores/trees/ (kept
  // while the restore may resume; removed when it completes). One left by an
  // earlier run of the same restore is used as it is: verification checks it.
  Result<std::string> CheckOut(const std::string& uuid, uint64_t seq) {
    const std::string dir =
        JoinPath(RestoresDir(ctx_.data_dir), "trees/" + uuid + "-" + std::to_string(seq));
    checkouts_.push_back(dir);
    if (Exists(env_, dir)) return dir;
    const std::string partial = dir + ".partial";
    RETURN_IF_ERROR(RemoveTree(env_, partial));
    RETURN_IF_ERROR(CreateDirs(env_, DirName(dir), 0700));
    RETURN_IF_ERROR(ctx_.store->Checkout(uuid, seq, partial));
    RETURN_IF_ERROR(env_.Rename(partial, dir));
    return dir;
  }

  void RemoveCheckouts() {
    for (const std::string& dir : checkouts_) RemoveTree(env_, dir).IgnoreError();
    checkouts_.clear();
  }

  Result<Loaded> LoadInstance(const catalog::InstanceRecord& record, uint64_t seq) {
    auto gen = ctx_.store->Instance(record.uuid, seq);
    if (!gen.ok()) {
      return gen.status().WithContext("instance " + record.alias + " (" + record.uuid + ")" +
                                      (seq ? " generation " + std::to_string(seq) : ""));
    }
    // The restore reads a tree: the catalog's view when it shows this
    // generation, else a checkout of its own (files hard-linked to objects).
    std::string dir = gen->dir;
    if (dir.empty()) {
      ASSIGN_OR_RETURN(dir, CheckOut(record.uuid, gen->record.seq));
    }
    Loaded out;
    InstanceSource& s = out.source;
    s.uuid = record.uuid;
    s.alias = record.alias;
    s.service = record.service;
    s.peer = record.peer;
    s.generation = gen->record.generation;
    s.seq = gen->record.seq;
    s.pulled_ms = gen->record.pulled_at_ms ? gen->record.pulled_at_ms : record.pulled_at_ms;
    ASSIGN_OR_RETURN(s.vm_payload,
                     ParseJsonText(gen->vm_payload, "VM payload of " + record.uuid + " in " + dir));
    if (!gen->sapi_record.empty()) {
      ASSIGN_OR_RETURN(
          s.sapi_record,
          ParseJsonText(gen->sapi_record, "SAPI record of " + record.uuid + " in " + dir));
    }
    s.image_uuid = gen->record.image_uuid;
    if (s.image_uuid.empty() && s.vm_payload.contains("image_uuid") &&
        s.vm_payload["image_uuid"].is_string()) {
      s.image_uuid = s.vm_payload["image_uuid"].get<std::string>();
    }
    const std::string data_prefix = "datasets/" + record.uuid;
    std::map<std::string_view, const syncproto::FileEntry*> by_path;
    for (const catalog::StoredFile& f : gen->files) by_path.emplace(f.entry.path, &f.entry);
    // A hard link is recreated only to a file with the same content.
    auto link_rel = [&](const syncproto::FileEntry& e) -> std::string {
      if (e.hardlink_of.empty()) return "";
      auto it = by_path.find(e.hardlink_of);
      if (it == by_path.end() || it->second->kind != syncproto::EntryKind::kFile ||
          it->second->size != e.size || it->second->digest != e.digest ||
          !e.hardlink_of.starts_with(data_prefix + "/")) {
        log::Warn("restore: hard link to a different or missing file; restored as a copy",
                  {{"path", e.path}, {"hardlink_of", e.hardlink_of}});
        return "";
      }
      return e.hardlink_of.substr(data_prefix.size() + 1);
    };
    for (const catalog::StoredFile& f : gen->files) {
      out.files.push_back(VerifyItem{dir + "/" + f.entry.path, f.entry.kind, f.entry.size,
                                     f.entry.digest, f.entry.target});
      if (f.entry.path == data_prefix || f.entry.path.starts_with(data_prefix + "/")) {
        s.data_path = JoinPath(dir, data_prefix);
        std::string rel = f.entry.path.size() == data_prefix.size()
                              ? std::string()
                              : f.entry.path.substr(data_prefix.size() + 1);
        meta_[record.uuid][rel] =
            EntryMeta{f.entry.mode, f.entry.mtime_ns, f.entry.uid, f.entry.gid, link_rel(f.entry)};
        if (f.entry.kind == syncproto::EntryKind::kFile) {
          s.data_bytes += f.entry.size;
          ++s.data_files;
        }
      }
    }
    ASSIGN_OR_RETURN(s.image_chain, ImageChain(s.image_uuid));
    return out;
  }

  // The origin chain of `image_uuid`, root first, stopping at the first image
  // the target has; an image neither held nor on the target ends the chain
  // with an ImageSource without file_path (the planner skips the instance).
  Result<std::vector<ImageSource>> ImageChain(const std::string& image_uuid) {
    if (images_.empty()) {
      for (const catalog::StoredImage& img : ctx_.store->Images()) images_[img.uuid] = img;
    }
    std::vector<ImageSource> chain;
    std::set<std::string> seen;
    for (std::string uuid = image_uuid; !uuid.empty();) {
      if (!seen.insert(uuid).second) return DataError("image origin loop at " + uuid);
      ImageSource src;
      src.uuid = uuid;
      auto cached = on_target_.find(uuid);
      if (cached == on_target_.end()) {
        ASSIGN_OR_RETURN(bool has, ctx_.backend->HasImage(uuid));
        cached = on_target_.emplace(uuid, has).first;
      }
      if (cached->second) {
        src.on_target = true;
        chain.push_back(src);
        break;
      }
      auto it = images_.find(uuid);
      if (it == images_.end()) {
        chain.push_back(src);  // neither held nor installed
        break;
      }
      src.origin = it->second.origin;
      src.manifest_path = it->second.manifest_path;
      src.file_path = it->second.file_path;
      src.file_size = it->second.size;
      src.file_digest = it->second.file_digest.Hex();
      chain.push_back(src);
      uuid = src.origin;
    }
    std::reverse(chain.begin(), chain.end());
    return chain;
  }

  Status LoadSelected(const std::vector<catalog::InstanceRecord>& selected,
                      std::vector<Loaded>* loaded) {
    for (const auto& r : selected) {
      uint64_t seq = req_.selection.generation.value_or(0);
      if (req_.selection.at_ms) {
        ASSIGN_OR_RETURN(seq, GenerationAt(r, *req_.selection.at_ms));
        if (seq == 0) continue;  // listed as skipped
      }
      ASSIGN_OR_RETURN(Loaded l, LoadInstance(r, seq));
      loaded->push_back(std::move(l));
    }
    if (loaded->empty() && !selected.empty()) {  // --at found nothing that old
      return NotFoundError("no selected instance has a generation held from " +
                           FormatIso8601Ms(req_.selection.at_ms.value_or(0)) + " or before");
    }
    return Status::Ok();
  }

  // --at TIME: the newest retained generation of `r` that was current at
  // `at_ms` (committed then or before); 0, with `r` listed as skipped, when
  // every retained generation is newer.
  Result<uint64_t> GenerationAt(const catalog::InstanceRecord& r, int64_t at_ms) {
    ASSIGN_OR_RETURN(std::vector<uint64_t> seqs, ctx_.store->Generations(r.uuid));
    int64_t oldest = 0;
    for (auto it = seqs.rbegin(); it != seqs.rend(); ++it) {
      ASSIGN_OR_RETURN(catalog::InstanceGeneration g, ctx_.store->Instance(r.uuid, *it));
      if (g.committed_at_ms <= at_ms) return *it;
      oldest = g.committed_at_ms;
    }
    report_.plan.skipped.push_back({r.uuid, r.alias, r.service,
                                    "no generation held from " + FormatIso8601Ms(at_ms) +
                                        " or before (the oldest is from " +
                                        FormatIso8601Ms(oldest) + ")"});
    return uint64_t{0};
  }

  Status LoadJournalInstances(const Journal& journal, std::vector<Loaded>* loaded) {
    for (const PlannedInstance& p : journal.instances()) {
      auto record = ctx_.store->FindInstance(p.old_uuid);
      if (!record) {
        return DataError("resuming restore " + journal.id() + ": instance " + p.old_uuid +
                         " is no longer in the catalog; remove " + journal.path() +
                         " to plan a new restore");
      }
      auto l = LoadInstance(*record, p.seq);
      if (!l.ok()) {
        return l.status().WithContext("resuming restore " + journal.id() + " (remove " +
                                      journal.path() + " to plan a new restore)");
      }
      loaded->push_back(std::move(*l));
    }
    return Status::Ok();
  }

  Status VerifyAll(const std::vector<Loaded>& loaded, const Journal* journal) {
    const int64_t start = ctx_.clock->MonotonicMs();
    std::vector<VerifyItem> items;
    for (const Loaded& l : loaded) items.insert(items.end(), l.files.begin(), l.files.end());
    std::set<std::string> images_done;
    if (journal != nullptr) {
      for (const JournalStep& s : journal->steps()) {
        if (s.done || s.step.kind != StepKind::kInstallImage) continue;
        AddImageItems(s.step.image_uuid, &items, &images_done);
      }
    } else {
      for (const Loaded& l : loaded) {
        for (const ImageSource& img : l.source.image_chain) {
          if (!img.on_target && !img.file_path.empty()) {
            AddImageItems(img.uuid, &items, &images_done);
          }
        }
      }
    }

    std::atomic<size_t> next{0};
    std::atomic<uint64_t> bytes{0};
    std::mutex mu;
    std::vector<std::pair<std::string, std::string>> problems;
    auto worker = [&] {
      for (size_t i; (i = next.fetch_add(1)) < items.size();) {
        uint64_t b = 0;
        std::string what = CheckItem(env_, items[i], &b);
        bytes += b;
        if (!what.empty()) {
          std::lock_guard<std::mutex> lock(mu);
          problems.emplace_back(items[i].path, what);
        }
      }
    };
    int threads = std::clamp(req_.verify_threads, 1, 32);
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
    worker();
    for (std::thread& t : pool) t.join();

    report_.files_verified = items.size();
    report_.bytes_verified = bytes.load();
    report_.verify_ms = ctx_.clock->MonotonicMs() - start;
    if (problems.empty()) return Status::Ok();
    std::sort(problems.begin(), problems.end());
    std::string msg =
        "verification failed, nothing was restored: " + std::to_string(problems.size()) +
        " file(s) do not match their digest";
    size_t shown = 0;
    for (const auto& [path, what] : problems) {
      if (++shown > 50) {
        msg += "\n  ... and " + std::to_string(problems.size() - 50) + " more";
        break;
      }
      msg += "\n  " + path + ": " + what;
    }
    return DataError(msg);
  }

  void AddImageItems(const std::string& uuid, std::vector<VerifyItem>* items,
                     std::set<std::string>* done) {
    if (!done->insert(uuid).second) return;
    if (images_.empty()) {
      for (const catalog::StoredImage& img : ctx_.store->Images()) images_[img.uuid] = img;
    }
    auto it = images_.find(uuid);
    if (it == images_.end()) {
      items->push_back(VerifyItem{
          "image " + uuid + " (not in the catalog)", syncproto::EntryKind::kDir, 0, {}, ""});
      return;
    }
    const catalog::StoredImage& img = it->second;
    auto manifest_size = env_.Stat(img.manifest_path);
    items->push_back(VerifyItem{img.manifest_path, syncproto::EntryKind::kFile,
                                manifest_size.ok() ? manifest_size->size : 0, img.manifest_digest,
                                ""});
    items->push_back(
        VerifyItem{img.file_path, syncproto::EntryKind::kFile, img.size, img.file_digest, ""});
  }

  // ---- 5. plan ---------------------------------------------------------------

  Status MakeNewPlan(const std::vector<Loaded>& loaded) {
    std::vector<InstanceSource> sources;
    for (const Loaded& l : loaded) sources.push_back(l.source);
    std::set<std::string> aliases;
    for (const auto& r : ctx_.store->Instances()) aliases.insert(r.alias);
    ASSIGN_OR_RETURN(std::set<std::string> on_target, ctx_.backend->TargetAliases());
    aliases.insert(on_target.begin(), on_target.end());
    // Aliases handed out by earlier restores of this node, whatever their target.
    ASSIGN_OR_RETURN(auto restored, ListRestoredInstances(env_, ctx_.data_dir));
    for (const auto& [old_uuid, r] : restored) aliases.insert(r.alias);

    PlanOptions opt;
    opt.service_order = req_.service_order;
    opt.new_ips = req_.new_ips;
    opt.seed = req_.seed;
    opt.target_server_uuid = ctx_.node_uuid;
    opt.retire_old_records = !req_.keep_old_records;
    std::vector<Skip> earlier = std::move(report_.plan.skipped);
    ASSIGN_OR_RETURN(report_.plan, MakePlan(sources, aliases, opt));
    report_.plan.skipped.insert(report_.plan.skipped.begin(), earlier.begin(), earlier.end());
    return Status::Ok();
  }

  void NoteNotRestorable(const std::vector<catalog::InstanceRecord>& selected) {
    std::set<std::string> planned, unplanned;
    for (const PlannedInstance& p : report_.plan.instances) planned.insert(p.service);
    for (const Skip& s : report_.plan.skipped) {
      if (!planned.contains(s.service)) unplanned.insert(s.service.empty() ? "(none)" : s.service);
    }
    (void)selected;
    report_.not_restorable_services.assign(unplanned.begin(), unplanned.end());
  }

  // A resumed restore with keep_old_records: the retire_old_records steps it
  // has not run yet are left out (the journal follows once the lock is held).
  void LeaveOutUndoneRetirements(const Journal& journal, Plan* plan) {
    const size_t before = plan->steps.size();
    std::erase_if(plan->steps, [&](const Step& s) {
      if (s.kind != StepKind::kRetireOldRecords) return false;
      for (const JournalStep& js : journal.steps()) {
        if (js.step.id == s.id) return !js.done;
      }
      return true;
    });
    if (plan->steps.size() == before) return;
    plan->retire_old_records = false;
    report_.warnings.push_back(
        "resuming with --keep-old-records: " + std::to_string(before - plan->steps.size()) +
        " retire_old_records step(s) not run yet are left out");
  }

  // ---- 6. execute ------------------------------------------------------------

  void NoteJournal(const Journal& journal) {
    report_.journal_path = journal.path();
    report_.journal_started_ms = journal.started_ms();
    report_.journal_finished_ms = journal.finished_ms();
  }

  Status Execute(Journal& journal) {
    RestoreContext::Progress progress;
    progress.total = journal.steps().size();
    progress.bytes_total = report_.plan.TotalBytes();
    for (size_t i = 0; i < journal.steps().size(); ++i) {
      const JournalStep& js = journal.steps()[i];
      progress.index = i;
      progress.step = &js.step;
      if (js.done) {
        ++report_.steps_skipped_done;
        progress.bytes_done += js.step.bytes;
        progress.finished = true;
        progress.already_done = true;
        if (ctx_.progress) ctx_.progress(progress);
        continue;
      }
      progress.finished = false;
      progress.already_done = false;
      if (ctx_.progress) ctx_.progress(progress);
      log::Info("restore step",
                {{"step", js.step.id}, {"alias", js.step.alias}, {"new_uuid", js.step.new_uuid}});
      StepInput input;
      if (js.step.kind == StepKind::kRestoreData) {
        auto it = meta_.find(js.step.old_uuid);
        if (it != meta_.end()) input.data_meta = &it->second;
      }
      auto result = ctx_.backend->Run(js.step, input);
      if (!result.ok()) {
        Status failed = result.status().WithContext("restore step " + js.step.id);
        journal.RecordError(failed.ToString(), ctx_.clock->WallMs()).IgnoreError();
        return failed;
      }
      RETURN_IF_ERROR(journal.MarkDone(js.step.id, ctx_.clock->WallMs(), result->warning));
      ++report_.steps_run;
      report_.bytes_restored += result->bytes;
      if (!result->note.empty()) report_.notes.push_back(js.step.id + ": " + result->note);
      if (!result->warning.empty()) report_.warnings.push_back(js.step.id + ": " + result->warning);
      progress.bytes_done += js.step.bytes;
      progress.finished = true;
      progress.already_done = result->already_done;
      if (ctx_.progress) ctx_.progress(progress);
    }
    return Status::Ok();
  }

  RestoreContext ctx_;
  const RestoreRequest& req_;
  RestoreReport& report_;
  Env& env_;
  std::map<std::string, catalog::StoredImage> images_;
  std::map<std::string, bool> on_target_;
  std::map<std::string, TreeMeta> meta_;  // exported modes/mtimes of data trees, by old uuid
  Status dry_verdict_;                    // dry run: the first refusal the real run would meet
  std::vector<std::string> checkouts_;    // restores/trees/ made by this run
};

}  // namespace

Status Restorer::Run(const RestoreRequest& request, RestoreReport* report) {
  *report = RestoreReport();
  RunState run(ctx_, request, report);
  return run.Go();
}

}  // namespace lifeboat::restore
