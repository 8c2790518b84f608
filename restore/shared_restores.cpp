#include "restore/shared_restores.h"

#include <ctime>

#include "restore/plan.h"

namespace lifeboat::restore {
namespace {

using nlohmann::json;

// "2026-11-21T16:25:03.123Z" -> wall ms; 0 when null or not that shape.
int64_t ParseIso8601Ms(const json& v) {
  if (!v.is_string()) return 0;
  std::tm tm{};
  int ms = 0;
  char z = 0;
  if (std::sscanf(v.get<std::string>().c_str(), "%4d-%2d-%2dT%2d:%2d:%2d.%3d%c", &tm.tm_year,
                  &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms, &z) != 8 ||
      z != 'Z') {
    return 0;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<int64_t>(::timegm(&tm)) * 1000 + ms;
}

}  // namespace

json RestoredJson(const RestoredInstance& r) {
  return {{"old_uuid", r.old_uuid}, {"old_alias", r.old_alias},
          {"peer", r.peer},         {"new_uuid", r.new_uuid},
          {"alias", r.alias},       {"service", r.service},
          {"generation", r.generation}, {"node", r.node},
          {"backend", r.backend},   {"target", r.target},
          {"restored_at", IsoOrNull(r.restored_ms)}, {"journal_id", r.journal_id}};
}

Result<json> RestoresDocument(Env& env, const std::string& data_dir, const std::string& node) {
  ASSIGN_OR_RETURN(auto claims, ListRestoreClaims(env, data_dir));
  json list = json::array();
  for (const auto& [uuid, r] : claims) list.push_back(RestoredJson(r));
  return json{{"node", node}, {"restored", std::move(list)}};
}

Result<std::vector<RestoredInstance>> FinishedRestoresOf(const json& doc, const std::string& from) {
  if (!doc.is_object() || !doc.contains("restored") || !doc["restored"].is_array()) {
    return DataError("the restores of node " + from + ": not a {\"restored\": [...]} document");
  }
  std::vector<RestoredInstance> out;
  for (const json& j : doc["restored"]) {
    if (!j.is_object() || !j.contains("old_uuid") || !j["old_uuid"].is_string()) {
      return DataError("the restores of node " + from + ": an entry without old_uuid");
    }
    RestoredInstance r;
    r.restored_ms = ParseIso8601Ms(j.value("restored_at", json()));
    if (r.restored_ms == 0) continue;  // unfinished: nothing is deposed by it yet
    r.old_uuid = j["old_uuid"].get<std::string>();
    r.old_alias = j.value("old_alias", "");
    r.peer = j.value("peer", "");
    r.new_uuid = j.value("new_uuid", "");
    r.alias = j.value("alias", "");
    r.service = j.value("service", "");
    r.generation = j.value("generation", uint64_t{0});
    r.node = j.value("node", from);
    r.backend = j.value("backend", "");
    r.target = j.value("target", "");
    r.journal_id = j.value("journal_id", "");
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace lifeboat::restore
