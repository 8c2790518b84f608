// Check records: what the last restore drill and the last catalog verify
// found, kept under `<data_dir>/checks/` so that `lifeboat readiness`, status
// and the agent can show them without re-running anything.
//
//   checks/drill-<peer>.json   the last drill of a peer's instances (restore/drill.h)
//   checks/verify.json         the last `lifeboat catalog verify` of the whole catalog
//
// Each file is written with WriteFileAtomic (temp, fsync, rename, fsync of
// the directory): a reader sees the previous record or the new one, never a
// mix. A missing file means "never ran"; an unreadable one is an error naming
// the file (the caller decides whether to show it or fail).
#ifndef LIFEBOAT_RESTORE_CHECK_RECORDS_H_
#define LIFEBOAT_RESTORE_CHECK_RECORDS_H_

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "base/env.h"
#include "base/status.h"

namespace lifeboat::restore {

// One restore drill: the peer's instances restored with the dir backend into
// a scratch target, every byte verified against the catalog, then removed.
struct DrillRecord {
  std::string peer;
  bool ok = false;
  std::string error;         // why it failed ("" when ok)
  int64_t started_ms = 0;    // wall time
  int64_t wall_ms = 0;       // the whole drill, verify included (the measured RTO)
  uint64_t instances = 0;    // instances restored
  uint64_t images = 0;       // images installed
  uint64_t bytes = 0;        // bytes restored (data trees and image files)
  uint64_t files_verified = 0;
  uint64_t generation = 0;   // the peer generation the drill restored
  // Bytes per second of the whole drill; 0 when nothing was measured.
  double ThroughputBps() const;

  // The record file's format (timestamps and durations in ms).
  nlohmann::json ToJson() const;
  static Result<DrillRecord> FromJson(const nlohmann::json& j);
  // The shape shown to people and scripts (`drill -j`, readiness
  // "last_drill"): ok, error, at (ISO 8601), at_unix_seconds,
  // duration_seconds, bytes, throughput_bytes_per_second, instances, images,
  // files_verified, generation.
  nlohmann::json ToApiJson() const;
};

// One `lifeboat catalog verify` run.
struct VerifyRecord {
  bool ok = false;
  int64_t finished_ms = 0;  // wall time
  uint64_t files_checked = 0;
  uint64_t bytes_checked = 0;
  uint64_t problems = 0;
  std::string first_problem;  // "<path>: <what>" of the first problem, "" when ok

  nlohmann::json ToJson() const;
  static Result<VerifyRecord> FromJson(const nlohmann::json& j);
};

std::string ChecksDir(const std::string& data_dir);  // <data_dir>/checks

// Writes the record atomically, creating checks/ (0700) when missing.
Status SaveDrillRecord(Env& env, const std::string& data_dir, const DrillRecord& r);
Status SaveVerifyRecord(Env& env, const std::string& data_dir, const VerifyRecord& r);

// nullopt when the record does not exist.
Result<std::optional<DrillRecord>> LoadDrillRecord(Env& env, const std::string& data_dir,
                                                   const std::string& peer);
Result<std::optional<VerifyRecord>> LoadVerifyRecord(Env& env, const std::string& data_dir);

}  // namespace lifeboat::restore

#endif  // LIFEBOAT_RESTORE_CHECK_RECORDS_H_
