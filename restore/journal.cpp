#include "restore/journal.h"

#include <algorithm>

#include "base/clock.h"
#include "base/digest.h"
#include "base/text.h"

namespace lifeboat::restore {
namespace {

using nlohmann::json;

std::string SafeName(std::string_view s) {
  std::string out;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.';
    out += ok ? c : '_';
    if (out.size() >= 40) break;
  }
  return out;
}

std::vector<std::string> Sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

}  // namespace

json Selection::ToJson() const {
  json j = json::object();
  if (!peer.empty()) j["peer"] = peer;
  if (!services.empty()) j["services"] = Sorted(services);
  if (!instances.empty()) j["instances"] = Sorted(instances);
  j["generation"] = generation ? json(*generation) : json(nullptr);
  if (at_ms) j["at"] = FormatIso8601Ms(*at_ms);  // absent otherwise: earlier ids stay
  return j;
}

std::string Selection::Describe() const {
  auto join = [](const std::vector<std::string>& v) {
    std::string out;
    for (const std::string& s : Sorted(v)) out += (out.empty() ? "" : ",") + s;
    return out;
  };
  std::string d;
  if (!peer.empty()) d = "peer " + peer;
  if (!services.empty()) d += (d.empty() ? "" : ", ") + std::string("services ") + join(services);
  if (!instances.empty()) {
    d += (d.empty() ? "" : ", ") + std::string("instances ") + join(instances);
  }
  if (generation) d += " at generation " + std::to_string(*generation);
  if (at_ms) d += " as of " + FormatIso8601Ms(*at_ms);
  return d;
}

std::string JournalId(const Selection& selection, const std::string& backend,
                      const std::string& target) {
  json canonical = {{"selection", selection.ToJson()}, {"backend", backend}, {"target", target}};
  std::string digest = Xxh3Digest(DumpJson(canonical)).Hex().substr(0, 16);
  std::string prefix;
  if (!selection.peer.empty()) {
    prefix = "peer-" + SafeName(selection.peer);
  } else if (!selection.services.empty()) {
    prefix = "service-" + SafeName(Sorted(selection.services).front());
  } else {
    prefix = "instance-" + SafeName(Sorted(selection.instances).empty()
                                        ? std::string()
                                        : Sorted(selection.instances).front().substr(0, 8));
  }
  return prefix + "-" + digest;
}

std::string RestoresDir(const std::string& data_dir) { return JoinPath(data_dir, "restores"); }

std::string Journal::path() const { return JoinPath(RestoresDir(data_dir_), id_ + ".json"); }

Journal Journal::Create(Env& env, const std::string& data_dir, const std::string& id,
                        const Selection& selection, const std::string& node,
                        const std::string& backend, const std::string& target, const Plan& plan,
                        int64_t now_ms) {
  Journal j(env, data_dir);
  j.id_ = id;
  j.selection_ = selection.ToJson();
  j.node_ = node;
  j.backend_ = backend;
  j.target_ = target;
  j.started_ms_ = now_ms;
  j.updated_ms_ = now_ms;
  j.instances_ = plan.instances;
  j.skipped_ = plan.skipped;
  j.retire_old_records_ = plan.retire_old_records;
  for (const Step& s : plan.steps) j.steps_.push_back(JournalStep{s, false, 0, ""});
  if (j.steps_.empty()) j.finished_ms_ = now_ms;
  return j;
}

bool Journal::complete() const { return done_count() == steps_.size(); }

size_t Journal::done_count() const {
  return static_cast<size_t>(
      std::count_if(steps_.begin(), steps_.end(), [](const JournalStep& s) { return s.done; }));
}

std::map<std::string, Assignment> Journal::Assignments() const {
  std::map<std::string, Assignment> out;
  for (const PlannedInstance& p : instances_) out[p.old_uuid] = Assignment{p.new_uuid, p.alias};
  return out;
}

Plan Journal::ToPlan() const {
  Plan plan;
  for (const JournalStep& s : steps_) plan.steps.push_back(s.step);
  plan.instances = instances_;
  plan.skipped = skipped_;
  plan.retire_old_records = retire_old_records_;
  return plan;
}

std::vector<std::string> Journal::StepWarnings() const {
  std::vector<std::string> out;
  for (const JournalStep& s : steps_) {
    if (s.done && !s.warning.empty()) out.push_back(s.step.id + ": " + s.warning);
  }
  return out;
}

Result<size_t> Journal::DropUndoneRetirements(int64_t now_ms) {
  std::vector<JournalStep> before = steps_;
  const bool retire_before = retire_old_records_;
  const int64_t updated_before = updated_ms_;
  const int64_t finished_before = finished_ms_;
  const size_t dropped = std::erase_if(steps_, [](const JournalStep& s) {
    return !s.done && s.step.kind == StepKind::kRetireOldRecords;
  });
  if (dropped == 0) return dropped;
  retire_old_records_ = false;
  updated_ms_ = now_ms;
  if (complete()) finished_ms_ = now_ms;
  Status st = Save();
  if (!st.ok()) {
    steps_ = std::move(before);
    retire_old_records_ = retire_before;
    updated_ms_ = updated_before;
    finished_ms_ = finished_before;
    return st;
  }
  return dropped;
}

Status Journal::MarkDone(const std::string& step_id, int64_t now_ms, const std::string& warning) {
  auto it = std::find_if(steps_.begin(), steps_.end(),
                         [&](const JournalStep& s) { return s.step.id == step_id; });
  if (it == steps_.end()) return InternalError("journal " + id_ + ": no step " + step_id);
  JournalStep before = *it;
  int64_t before_finished = finished_ms_;
  it->done = true;
  it->finished_ms = now_ms;
  it->warning = warning;
  updated_ms_ = now_ms;
  if (complete()) finished_ms_ = now_ms;
  last_error_.clear();
  Status st = Save();
  if (!st.ok()) {
    *it = before;
    finished_ms_ = before_finished;
  }
  return st;
}

Status Journal::RecordError(const std::string& message, int64_t now_ms) {
  last_error_ = message;
  updated_ms_ = now_ms;
  return Save();
}

Status Journal::Save() {
  RETURN_IF_ERROR(CreateDirs(*env_, RestoresDir(data_dir_), 0700));
  return WriteFileAtomic(*env_, path(), DumpJson(ToJson(), 2) + "\n", 0600);
}

json Journal::ToJson() const {
  json inst = json::array();
  for (const PlannedInstance& p : instances_) {
    inst.push_back(p.ToJson());
    inst.back()["pulled_ms"] = p.pulled_ms;  // exact, for a resumed run
  }
  json skipped = json::array();
  for (const Skip& s : skipped_) skipped.push_back(s.ToJson());
  json steps = json::array();
  for (const JournalStep& s : steps_) {
    steps.push_back({{"done", s.done},
                     {"finished_at", s.done ? IsoOrNull(s.finished_ms) : json()},
                     {"finished_ms", s.finished_ms},
                     {"step", s.step.ToJson()}});
    if (!s.warning.empty()) steps.back()["warning"] = s.warning;
  }
  return {{"format", kJournalFormat},
          {"id", id_},
          {"selection", selection_},
          {"node", node_},
          {"backend", backend_},
          {"target", target_},
          {"started_ms", started_ms_},
          {"started_at", FormatIso8601Ms(started_ms_)},
          {"updated_ms", updated_ms_},
          {"finished_ms", finished_ms_},
          {"finished_at", IsoOrNull(finished_ms_)},
          {"last_error", last_error_.empty() ? json() : json(last_error_)},
          {"retire_old_records", retire_old_records_},
          {"instances", inst},
          {"skipped", skipped},
          {"steps", steps}};
}

Result<Journal> Journal::FromJson(Env& env, const std::string& data_dir, const json& j) {
  try {
    if (!j.is_object() || j.value("format", 0) != kJournalFormat) {
      return DataError("restore journal: not format " + std::to_string(kJournalFormat));
    }
    Journal out(env, data_dir);
    out.id_ = j.at("id").get<std::string>();
    out.selection_ = j.value("selection", json::object());
    out.node_ = j.value("node", "");
    out.backend_ = j.value("backend", "");
    out.target_ = j.value("target", "");
    out.started_ms_ = j.value("started_ms", int64_t{0});
    out.updated_ms_ = j.value("updated_ms", int64_t{0});
    out.finished_ms_ = j.value("finished_ms", int64_t{0});
    if (j.contains("last_error") && j["last_error"].is_string()) {
      out.last_error_ = j["last_error"].get<std::string>();
    }
    // Absent in journals from before retire_old_records: they have no such step.
    if (j.contains("retire_old_records") && j["retire_old_records"].is_boolean()) {
      out.retire_old_records_ = j["retire_old_records"].get<bool>();
    }
    for (const json& p : j.at("instances")) {
      out.instances_.push_back(PlannedInstance{
          p.at("old_uuid").get<std::string>(), p.value("old_alias", ""),
          p.at("new_uuid").get<std::string>(), p.at("alias").get<std::string>(),
          p.value("service", ""), p.value("peer", ""), p.value("generation", uint64_t{0}),
          p.value("seq", uint64_t{0}), p.value("data_bytes", uint64_t{0}),
          p.value("pulled_ms", int64_t{0})});
    }
    for (const json& s : j.value("skipped", json::array())) {
      out.skipped_.push_back(Skip{s.value("uuid", ""), s.value("alias", ""), s.value("service", ""),
                                  s.value("reason", "")});
    }
    for (const json& s : j.at("steps")) {
      ASSIGN_OR_RETURN(Step step, Step::FromJson(s.at("step")));
      std::string warning;
      if (s.contains("warning") && s["warning"].is_string())
        warning = s["warning"].get<std::string>();
      out.steps_.push_back(JournalStep{std::move(step), s.value("done", false),
                                       s.value("finished_ms", int64_t{0}), std::move(warning)});
    }
    return out;
  } catch (const json::exception& e) {
    return DataError(std::string("restore journal: ") + e.what());
  }
}

Result<std::optional<Journal>> Journal::Load(Env& env, const std::string& data_dir,
                                             const std::string& id) {
  std::string path = JoinPath(RestoresDir(data_dir), id + ".json");
  auto text = ReadFileToString(env, path);
  if (!text.ok()) {
    if (text.status().code() == Code::kNotFound) return std::optional<Journal>();
    return text.status();
  }
  json j = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return DataError("restore journal " + path + ": not valid JSON");
  auto journal = FromJson(env, data_dir, j);
  if (!journal.ok()) return journal.status().WithContext(path);
  if (journal->id_ != id) return DataError("restore journal " + path + ": id does not match");
  return std::optional<Journal>(std::move(*journal));
}

void MergeRestored(std::map<std::string, RestoredInstance>& into, RestoredInstance r) {
  auto it = into.find(r.old_uuid);
  if (it != into.end() && (it->second.restored_ms > r.restored_ms ||
                           (it->second.restored_ms == r.restored_ms && r.restored_ms != 0))) {
    return;
  }
  into[r.old_uuid] = std::move(r);
}

Result<std::map<std::string, RestoredInstance>> ListRestoreClaims(Env& env,
                                                                  const std::string& data_dir) {
  std::map<std::string, RestoredInstance> out;
  std::string dir = RestoresDir(data_dir);
  auto entries = env.ListDir(dir);
  if (!entries.ok()) {
    if (entries.status().code() == Code::kNotFound) return out;
    return entries.status();
  }
  std::vector<std::string> names;
  for (const DirEntry& e : *entries) {
    constexpr std::string_view kExt = ".json";
    if (e.name.size() > kExt.size() && e.name.ends_with(kExt) &&
        e.name.find(".tmp.") == e.name.npos) {
      names.push_back(e.name.substr(0, e.name.size() - kExt.size()));
    }
  }
  std::sort(names.begin(), names.end());
  for (const std::string& id : names) {
    ASSIGN_OR_RETURN(auto journal, Journal::Load(env, data_dir, id));
    if (!journal) continue;
    for (const PlannedInstance& p : journal->instances()) {
      int64_t last = 0;
      bool all_done = true, any_done = false;
      for (const JournalStep& s : journal->steps()) {
        if (s.step.old_uuid != p.old_uuid) continue;
        all_done = all_done && s.done;
        any_done = any_done || s.done;
        last = std::max(last, s.finished_ms);
      }
      if (!any_done) continue;
      const int64_t restored_ms = all_done ? last : 0;
      MergeRestored(out, RestoredInstance{p.old_uuid, p.old_alias, p.new_uuid, p.alias, p.service,
                                          p.peer, p.generation, journal->node(),
                                          journal->backend(), journal->target(), restored_ms, id});
    }
  }
  return out;
}

Result<std::map<std::string, RestoredInstance>> ListRestoredInstances(Env& env,
                                                                      const std::string& data_dir) {
  ASSIGN_OR_RETURN(auto claims, ListRestoreClaims(env, data_dir));
  std::erase_if(claims, [](const auto& kv) { return kv.second.restored_ms == 0; });
  return claims;
}

}  // namespace lifeboat::restore
