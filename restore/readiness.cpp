#include "restore/readiness.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "base/clock.h"
#include "base/units.h"

namespace lifeboat::restore {
namespace {

std::string Plural(uint64_t n, const char* word) {
  return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}

InstanceFacts GatherInstance(const catalog::Store& store, const catalog::InstanceRecord& r) {
  InstanceFacts f;
  f.record = r;
  Result<catalog::InstanceGeneration> g = store.Instance(r.uuid);
  if (g.ok()) {
    f.readable = true;
    f.sapi_record = !g->sapi_record.empty();
  } else {
    f.read_error = g.status().message();
  }
  if (!r.image_uuid.empty()) {
    Result<std::vector<catalog::StoredImage>> chain = store.ImageChain(r.image_uuid);
    if (chain.ok()) {
      for (const auto& im : *chain) f.chain.emplace_back(im.uuid, im.size);
    } else {
      f.missing_image = chain.status().message();
    }
  }
  return f;
}

// The freshest copy of `peer`: the highest generation; this node on a tie.
struct Freshest {
  std::string node;
  uint64_t generation = 0;
  int64_t pulled_ms = 0;
};

Freshest FindFreshest(const ReadinessInput& in, const std::string& peer) {
  Freshest best;
  for (const auto& p : in.peer_states) {
    if (p.name == peer && p.generation > 0) best = {in.node, p.generation, p.last_pull_ms};
  }
  auto it = in.cluster_copies.find(peer);
  if (it == in.cluster_copies.end()) return best;
  for (const PeerCopy& c : it->second) {
    if (c.reachable && c.generation > best.generation) best = {c.node, c.generation, c.pulled_ms};
  }
  return best;
}

// An instance whose peer's exporter skipped paths of it: one line naming
// the instance and the first paths skipped.
Blocker SkippedBlocker(const catalog::InstanceRecord& r) {
  constexpr size_t kShown = 3;
  std::string what;
  for (size_t i = 0; i < r.warnings.size() && i < kShown; ++i) {
    what += (i ? "; " : "") + r.warnings[i].path + " (" + r.warnings[i].reason + ")";
  }
  if (r.warnings.size() > kShown) what += "; " + std::to_string(r.warnings.size() - kShown) + " more";
  return {"incomplete_copy", r.alias + " (" + r.uuid + "): the copy is incomplete, " + r.peer +
                                 "'s exporter skipped " + Plural(r.warnings.size(), "path") +
                                 ": " + what};
}

void AddInstanceCounts(const ReadinessInput& in, PeerReadiness& r) {
  std::set<std::string> images;
  for (const InstanceFacts& f : in.instances) {
    if (f.record.peer != r.peer) continue;
    ++r.instances;
    r.data_bytes += f.record.size;
    const bool chain_ok = f.missing_image.empty();
    r.images_complete += chain_ok;
    r.sapi_records += f.sapi_record;
    r.restorable += chain_ok && f.readable;
    for (const auto& [uuid, size] : f.chain) {
      if (images.insert(uuid).second) r.data_bytes += size;
    }
    const auto& ha = HaServices();
    if (std::find(ha.begin(), ha.end(), f.record.service) != ha.end()) {
      ++r.ha_instances;
      r.notes.push_back(f.record.alias + " (" + f.record.service +
                        ") is HA: a restore leaves it out; its service must be up on another node");
    }
    if (!chain_ok) {
      r.blockers.push_back({"missing_image", f.record.alias + ": " + f.missing_image});
    }
    if (!f.readable) {
      r.blockers.push_back({"incomplete_copy", f.record.alias + ": " + f.read_error});
    }
    if (!f.record.warnings.empty()) r.blockers.push_back(SkippedBlocker(f.record));
  }
}

void AddFreshness(const ReadinessInput& in, PeerReadiness& r) {
  Freshest f = FindFreshest(in, r.peer);
  if (f.generation == 0) {
    r.blockers.push_back({"never_pulled", "no node holds a copy of " + r.peer + " yet"});
    return;
  }
  r.freshest_node = f.node;
  r.freshest_generation = f.generation;
  if (f.node != in.node) {
    r.notes.push_back(f.node + " holds a fresher copy (generation " +
                      std::to_string(f.generation) +
                      "): restore with --from-freshest, or pull it first");
  }
  if (f.pulled_ms <= 0) return;  // the node did not say when: age unknown
  const int64_t age = in.now_ms - f.pulled_ms;
  if (age < 0) {
    r.blockers.push_back({"clock_changed", "the copy on " + f.node +
                                               " was pulled after this node's time now: the "
                                               "wall clock changed, its age is unknown"});
    return;
  }
  r.rpo_ms = age;
  if (age > in.stale_after_ms) {
    r.blockers.push_back({"stale", "the freshest copy (" + f.node + ") is " + HumanAge(age / 1000) +
                                       " old, more than stale_after " +
                                       HumanAge(in.stale_after_ms / 1000)});
  }
}

void AddChecks(const ReadinessInput& in, PeerReadiness& r) {
  if (auto it = in.drills.find(r.peer); it != in.drills.end()) {
    r.last_drill = it->second;
    if (!it->second.ok) {
      r.blockers.push_back({"drill_failed", "the last drill of " + r.peer + " failed: " +
                                                it->second.error});
    }
  }
  size_t deposed = 0;
  std::string which;
  for (const auto& d : in.deposed) {
    if (d.old.peer != r.peer) continue;
    ++deposed;
    which += (which.empty() ? "" : ", ") + d.old.alias + " (" + d.old.uuid + ") on " +
             d.restored.node + " as " + d.restored.alias;
  }
  if (deposed > 0) {
    r.blockers.push_back({"deposed", Plural(deposed, "instance") + " of " + r.peer +
                                         " were restored elsewhere yet are still exported by " +
                                         r.peer + " (" + which +
                                         "): retire them (lifeboat retire on " + r.peer + ")"});
  }
  if (in.verify && !in.verify->ok && r.instances > 0) {
    r.blockers.push_back({"verify_failed", "the last catalog verify found " +
                                               Plural(in.verify->problems, "problem") + " (" +
                                               in.verify->first_problem + ")"});
  }
}

void EstimateRto(const ReadinessInput& in, PeerReadiness& r) {
  double bps = kAssumedThroughputBps;
  r.rto_basis = "estimate";
  if (r.last_drill && r.last_drill->ok && r.last_drill->ThroughputBps() > 0) {
    bps = r.last_drill->ThroughputBps();
    r.rto_basis = "drill";
  }
  const double data_ms = static_cast<double>(r.data_bytes) * 1000.0 / bps;
  r.rto_ms = static_cast<int64_t>(std::ceil(data_ms)) +
             static_cast<int64_t>(r.instances) * in.per_instance_overhead_ms;
}

nlohmann::json SecondsOrNull(const std::optional<int64_t>& ms) {
  return ms ? nlohmann::json(*ms / 1000) : nlohmann::json();
}

nlohmann::json PeerJson(const PeerReadiness& p) {
  nlohmann::json blockers = nlohmann::json::array();
  for (const Blocker& b : p.blockers) blockers.push_back({{"kind", b.kind}, {"message", b.message}});
  nlohmann::json drill = p.last_drill ? p.last_drill->ToApiJson() : nlohmann::json();
  return {{"peer", p.peer},
          {"ready", p.ready()},
          {"instances", p.instances},
          {"restorable", p.restorable},
          {"images_complete", p.images_complete},
          {"sapi_records", p.sapi_records},
          {"ha_instances", p.ha_instances},
          {"freshest",
           p.freshest_node.empty()
               ? nlohmann::json()
               : nlohmann::json{{"node", p.freshest_node}, {"generation", p.freshest_generation}}},
          {"rpo_seconds", SecondsOrNull(p.rpo_ms)},
          {"data_bytes", p.data_bytes},
          {"rto_seconds", p.rto_ms / 1000},
          {"rto_basis", p.rto_basis},
          {"last_drill", drill},
          {"blockers", blockers},
          {"notes", p.notes}};
}

}  // namespace

const std::vector<std::string>& BlockerKinds() {
  static const std::vector<std::string> kKinds = {
      "never_pulled", "stale",        "missing_image", "incomplete_copy",
      "deposed",      "drill_failed", "verify_failed", "clock_changed"};
  return kKinds;
}

const std::vector<std::string>& HaServices() {
  // sdc-headnode config/sapi/services: manatee and moray are deployed as HA
  // clusters across headnodes, binder carries the ZooKeeper ensemble.
  static const std::vector<std::string> kHa = {"binder", "manatee", "moray"};
  return kHa;
}

Result<ReadinessInput> GatherReadiness(
    Env& env, const catalog::Store& store, const std::string& data_dir,
    const std::vector<std::string>& peers,
    const std::map<std::string, RestoredInstance>& restored_elsewhere) {
  ReadinessInput in;
  in.peers = peers;
  in.peer_states = store.Peers();
  for (const catalog::InstanceRecord& r : store.Instances()) {
    if (!r.removed) in.instances.push_back(GatherInstance(store, r));
  }
  Result<std::vector<DeposedInstance>> deposed = FindDeposed(env, store, data_dir, restored_elsewhere);
  if (deposed.ok()) {
    in.deposed = std::move(*deposed);
  } else {
    in.read_errors.push_back("restore journals: " + deposed.status().message());
  }
  for (const std::string& p : peers) {
    Result<std::optional<DrillRecord>> d = LoadDrillRecord(env, data_dir, p);
    if (!d.ok()) {
      in.read_errors.push_back(d.status().message());
    } else if (*d) {
      in.drills.emplace(p, std::move(**d));
    }
  }
  Result<std::optional<VerifyRecord>> v = LoadVerifyRecord(env, data_dir);
  if (!v.ok()) {
    in.read_errors.push_back(v.status().message());
  } else {
    in.verify = std::move(*v);
  }
  return in;
}

ReadinessReport AssessReadiness(const ReadinessInput& in) {
  ReadinessReport out;
  out.now_ms = in.now_ms;
  out.node = in.node;
  out.verify = in.verify;
  out.read_errors = in.read_errors;
  for (const std::string& peer : in.peers) {
    PeerReadiness r;
    r.peer = peer;
    AddInstanceCounts(in, r);
    AddFreshness(in, r);
    AddChecks(in, r);
    EstimateRto(in, r);
    out.peers.push_back(std::move(r));
  }
  return out;
}

bool ReadinessReport::ready() const {
  return std::all_of(peers.begin(), peers.end(), [](const PeerReadiness& p) { return p.ready(); });
}

nlohmann::json ReadinessReport::ToJson() const {
  nlohmann::json list = nlohmann::json::array();
  for (const PeerReadiness& p : peers) list.push_back(PeerJson(p));
  nlohmann::json v;
  if (verify) {
    v = {{"ok", verify->ok},
         {"at", FormatIso8601Ms(verify->finished_ms)},
         {"files_checked", verify->files_checked},
         {"problems", verify->problems},
         {"first_problem", verify->first_problem}};
  }
  return {{"node", node},
          {"now", FormatIso8601Ms(now_ms)},
          {"ready", ready()},
          {"verify", v},
          {"peers", std::move(list)},
          {"blocker_kinds", BlockerKinds()},
          {"read_errors", read_errors}};
}

}  // namespace lifeboat::restore
