#include "agent/status_json.h"

#include <algorithm>
#include <map>
#include <string>

#include "agent/schedule.h"
#include "base/clock.h"
#include "base/text.h"

namespace lifeboat::agent {
namespace {

int64_t Ms(conf::Duration d) { return static_cast<int64_t>(d.count()); }

}  // namespace

nlohmann::json WarningsJson(const std::vector<syncproto::InstanceWarning>& warnings) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& w : warnings) {
    nlohmann::json j = {{"reason", w.reason}};
    PutBytes(j, "path", w.path);  // names are bytes: "path_hex" when not UTF-8
    out.push_back(std::move(j));
  }
  return out;
}

nlohmann::json InstanceJson(const catalog::InstanceRecord& r, int64_t now_ms) {
  const int64_t age_ms = WallAgeMs(r.pulled_at_ms, now_ms);
  return {{"uuid", r.uuid},
          {"alias", r.alias},
          {"service", r.service},
          {"peer", r.peer},
          {"image_uuid", r.image_uuid},
          {"generation", r.generation},
          {"seq", r.seq},
          {"pulled_at", WallOrNull(r.pulled_at_ms)},
          {"age_seconds", age_ms >= 0 ? nlohmann::json(age_ms / 1000) : nlohmann::json()},
          {"size", r.size},
          {"files", r.files},
          {"removed", r.removed},
          {"removed_since", r.removed ? WallOrNull(r.removed_since_ms) : nlohmann::json()},
          {"incomplete", !r.warnings.empty()},
          {"warnings", WarningsJson(r.warnings)}};
}

nlohmann::json WallOrNull(int64_t wall_ms) {
  if (wall_ms <= 0) return nullptr;
  return FormatIso8601Ms(wall_ms);
}

nlohmann::json ServicesJson(const std::vector<catalog::InstanceRecord>& instances, int64_t now_ms) {
  std::map<std::string, nlohmann::json> services;
  for (const auto& i : instances) {
    auto& s = services[i.service];
    if (s.is_null()) {
      s = {{"service", i.service},
           {"instances", 0},
           {"removed", 0},
           {"newest_age_seconds", nullptr},
           {"oldest_age_seconds", nullptr},
           {"clock_changed", false},
           {"peers", nlohmann::json::array()}};
    }
    s["instances"] = s["instances"].get<int>() + 1;
    if (i.removed) s["removed"] = s["removed"].get<int>() + 1;
    // Wall time is all the catalog has: a copy pulled "in the future" (the
    // clock was set back) has no age, and says so.
    const int64_t age_ms = WallAgeMs(i.pulled_at_ms, now_ms);
    if (age_ms == kClockChangedMs) s["clock_changed"] = true;
    if (age_ms < 0) {
      auto& peers = s["peers"];
      if (std::find(peers.begin(), peers.end(), i.peer) == peers.end()) peers.push_back(i.peer);
      continue;
    }
    const int64_t age = age_ms / 1000;
    if (s["newest_age_seconds"].is_null() || age < s["newest_age_seconds"].get<int64_t>()) {
      s["newest_age_seconds"] = age;
    }
    if (s["oldest_age_seconds"].is_null() || age > s["oldest_age_seconds"].get<int64_t>()) {
      s["oldest_age_seconds"] = age;
    }
    auto& peers = s["peers"];
    if (std::find(peers.begin(), peers.end(), i.peer) == peers.end()) peers.push_back(i.peer);
  }
  nlohmann::json arr = nlohmann::json::array();
  for (auto& [name, s] : services) arr.push_back(std::move(s));
  return arr;
}

namespace {

nlohmann::json FilesJson(const std::vector<catalog::VerifyProblem>& list) {
  nlohmann::json out = nlohmann::json::array();
  for (const catalog::VerifyProblem& p : list) {
    nlohmann::json j = {{"what", p.what}};
    PutBytes(j, "path", p.path);
    out.push_back(std::move(j));
  }
  return out;
}

}  // namespace

nlohmann::json RepairJson(const catalog::RepairReport& r) {
  return {{"repair", r.repair},
          {"started", WallOrNull(r.started_ms)},
          {"finished", WallOrNull(r.finished_ms)},
          {"generations_checked", r.generations_checked},
          {"objects_checked", r.objects_checked},
          {"files_checked", r.files_checked},
          {"bytes_checked", r.bytes_checked},
          {"problems", FilesJson(r.problems)},
          {"objects_removed", r.objects_removed},
          {"damaged_instances", r.damaged_instances},
          {"peers_to_pull", r.peers_to_pull},
          {"unnamed_checked", r.unnamed_checked},
          {"unnamed", FilesJson(r.unnamed)},
          {"unnamed_bytes", r.unnamed_bytes},
          {"unnamed_removed", r.unnamed_removed},
          {"ok", r.ok()}};
}

nlohmann::json LastScrubJson(const std::optional<catalog::ScrubRecord>& r, int64_t now_ms) {
  if (!r) return nullptr;
  const int64_t age = WallAgeMs(r->finished_ms, now_ms);
  nlohmann::json j = {{"finished", WallOrNull(r->finished_ms)},
                      {"age_seconds", age >= 0 ? nlohmann::json(age / 1000) : nlohmann::json()},
                      {"repair", r->repair},
                      {"objects_checked", r->objects_checked},
                      {"problems", r->problems},
                      {"repaired", r->repaired},
                      {"first_problem", nullptr}};
  if (!r->first_problem.empty()) PutBytes(j, "first_problem", r->first_problem);
  return j;
}

nlohmann::json OfflineStatusJson(const conf::Config& config, const catalog::Store& store,
                                 int64_t now_ms) {
  std::map<std::string, catalog::PeerState> held;
  for (auto& p : store.Peers()) held[p.name] = p;
  const int64_t stale_after_ms = Ms(config.agent.stale_after);
  nlohmann::json peers = nlohmann::json::array();
  for (const auto& cp : config.peers) {
    catalog::PeerState p;
    if (auto it = held.find(cp.name); it != held.end()) p = it->second;
    peers.push_back(
        {{"name", cp.name},
         {"address", cp.address.ToString()},
         {"reachable", nullptr},
         {"phase", nullptr},
         {"last_attempt", WallOrNull(p.last_attempt_ms)},
         {"last_success", WallOrNull(p.last_pull_ms)},
         {"age_seconds", WallAgeMs(p.last_pull_ms, now_ms) >= 0
                             ? nlohmann::json(WallAgeMs(p.last_pull_ms, now_ms) / 1000)
                             : nlohmann::json(nullptr)},
         {"clock_changed", WallAgeMs(p.last_pull_ms, now_ms) == kClockChangedMs},
         {"stale", IsStale(p.last_pull_ms, now_ms, stale_after_ms)},
         {"generation", p.generation},
         {"last_error",
          p.last_error.empty() ? nlohmann::json(nullptr) : nlohmann::json(p.last_error)}});
  }
  return {{"agent_running", false},
          {"node", {{"uuid", config.node.uuid}, {"name", config.node.name}}},
          {"now", FormatIso8601Ms(now_ms)},
          {"stale_after_seconds", stale_after_ms / 1000},
          {"interval_seconds", Ms(config.agent.interval) / 1000},
          {"peers", std::move(peers)},
          {"services", ServicesJson(store.Instances(), now_ms)},
          {"last_scrub", LastScrubJson(store.LastScrub(), now_ms)}};
}

}  // namespace lifeboat::agent
