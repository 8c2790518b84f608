// The parts of the status object (`GET /status`, `lifeboat status -j`) that
// come from the catalog alone. The agent builds its status with them; so does
// `lifeboat status` when the agent is not running, reading the catalog on disk.
#ifndef LIFEBOAT_AGENT_STATUS_JSON_H_
#define LIFEBOAT_AGENT_STATUS_JSON_H_

#include <cstdint>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

#include "catalog/store.h"
#include "conf/config.h"

namespace lifeboat::agent {

// ISO 8601 of a wall time in ms; null for 0 (never).
nlohmann::json WallOrNull(int64_t wall_ms);

// "services": per service held, sorted by name: instances, removed, the ages
// of its newest and oldest copies (seconds before `now_ms`) and the peers
// they came from.
nlohmann::json ServicesJson(const std::vector<catalog::InstanceRecord>& instances, int64_t now_ms);

// One held instance, the same in `GET /catalog`, `catalog ls -j` and
// `catalog show -j`: uuid, alias, service, peer, image_uuid, generation, seq,
// pulled_at (ISO 8601, null if never), age_seconds (before `now_ms`; null
// when never pulled or the clock is behind the pull), size, files, removed,
// removed_since (null unless removed), incomplete (the peer's exporter
// skipped some of it) and warnings (what it skipped: [{path or path_hex,
// reason}]).
nlohmann::json InstanceJson(const catalog::InstanceRecord& r, int64_t now_ms);

// An instance's warnings as InstanceJson shows them.
nlohmann::json WarningsJson(const std::vector<syncproto::InstanceWarning>& warnings);

// What a scrub found and did (POST /repair, `catalog repair -j`): repair,
// started, finished (ISO 8601), generations_checked, objects_checked,
// files_checked, bytes_checked, problems [{path or path_hex, what}],
// objects_removed, damaged_instances, peers_to_pull, ok.
nlohmann::json RepairJson(const catalog::RepairReport& r);

// "last_scrub" of the status objects: null when none ran, else finished
// (ISO 8601), age_seconds, repair, objects_checked, problems, repaired,
// first_problem (null when none).
nlohmann::json LastScrubJson(const std::optional<catalog::ScrubRecord>& r, int64_t now_ms);

// The whole status object when no agent is running: "agent_running": false,
// node, now, stale_after_seconds, interval_seconds, "peers" (every configured
// peer, in configuration order, with what the catalog records of it: last
// attempt and success, age, stale, generation, last error; "reachable" and
// "phase" null: nobody is asking), "services" and "last_scrub".
nlohmann::json OfflineStatusJson(const conf::Config& config, const catalog::Store& store,
                                 int64_t now_ms);

}  // namespace lifeboat::agent

#endif  // LIFEBOAT_AGENT_STATUS_JSON_H_
