#include "restore/check_records.h"

#include "base/clock.h"
#include "base/text.h"

namespace lifeboat::restore {
namespace {

constexpr int kCheckFormat = 1;

// A peer name as a file name component: configured names are validated by
// conf, but a record file name must never leave checks/ whatever it gets.
Result<std::string> DrillPath(const std::string& data_dir, const std::string& peer) {
  if (peer.empty() || peer.front() == '.' || peer.find('/') != std::string::npos) {
    return UsageError("drill record: '" + peer + "' cannot name a peer record file");
  }
  return JoinPath(ChecksDir(data_dir), "drill-" + peer + ".json");
}

Status SaveJson(Env& env, const std::string& data_dir, const std::string& path,
                const nlohmann::json& j) {
  RETURN_IF_ERROR(CreateDirs(env, ChecksDir(data_dir), 0700));
  return WriteFileAtomic(env, path, DumpJson(j, 2) +
                                        "\n",
                         0600);
}

Result<std::optional<nlohmann::json>> LoadJson(Env& env, const std::string& path) {
  if (!Exists(env, path)) return std::optional<nlohmann::json>();
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(env, path, 1 << 20));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return DataError(path + ": not a JSON object");
  if (j.value("format_version", 0) != kCheckFormat) {
    return DataError(path + ": unknown format_version " + DumpJson(j.value("format_version", nlohmann::json())));
  }
  return std::optional<nlohmann::json>(std::move(j));
}

// Reads a field of the expected type or reports which one is wrong.
template <typename T>
Status Field(const nlohmann::json& j, const char* key, T* out) {
  auto it = j.find(key);
  if (it == j.end()) return DataError(std::string("missing \"") + key + "\"");
  try {
    *out = it->get<T>();
  } catch (const nlohmann::json::exception&) {
    return DataError(std::string("\"") + key + "\" has the wrong type");
  }
  return Status::Ok();
}

}  // namespace

double DrillRecord::ThroughputBps() const {
  if (wall_ms <= 0 || bytes == 0) return 0;
  return static_cast<double>(bytes) * 1000.0 / static_cast<double>(wall_ms);
}

nlohmann::json DrillRecord::ToJson() const {
  return {{"format_version", kCheckFormat},
          {"peer", peer},
          {"ok", ok},
          {"error", error},
          {"started_ms", started_ms},
          {"wall_ms", wall_ms},
          {"instances", instances},
          {"images", images},
          {"bytes", bytes},
          {"files_verified", files_verified},
          {"generation", generation}};
}

Result<DrillRecord> DrillRecord::FromJson(const nlohmann::json& j) {
  DrillRecord r;
  RETURN_IF_ERROR(Field(j, "peer", &r.peer));
  RETURN_IF_ERROR(Field(j, "ok", &r.ok));
  RETURN_IF_ERROR(Field(j, "error", &r.error));
  RETURN_IF_ERROR(Field(j, "started_ms", &r.started_ms));
  RETURN_IF_ERROR(Field(j, "wall_ms", &r.wall_ms));
  RETURN_IF_ERROR(Field(j, "instances", &r.instances));
  RETURN_IF_ERROR(Field(j, "images", &r.images));
  RETURN_IF_ERROR(Field(j, "bytes", &r.bytes));
  RETURN_IF_ERROR(Field(j, "files_verified", &r.files_verified));
  RETURN_IF_ERROR(Field(j, "generation", &r.generation));
  return r;
}

nlohmann::json DrillRecord::ToApiJson() const {
  return {{"peer", peer},
          {"ok", ok},
          {"error", error},
          {"at", FormatIso8601Ms(started_ms)},
          {"at_unix_seconds", started_ms / 1000},
          {"duration_seconds", static_cast<double>(wall_ms) / 1000.0},
          {"bytes", bytes},
          {"throughput_bytes_per_second", static_cast<uint64_t>(ThroughputBps())},
          {"instances", instances},
          {"images", images},
          {"files_verified", files_verified},
          {"generation", generation}};
}

nlohmann::json VerifyRecord::ToJson() const {
  return {{"format_version", kCheckFormat}, {"ok", ok},
          {"finished_ms", finished_ms},     {"files_checked", files_checked},
          {"bytes_checked", bytes_checked}, {"problems", problems},
          {"first_problem", first_problem}};
}

Result<VerifyRecord> VerifyRecord::FromJson(const nlohmann::json& j) {
  VerifyRecord r;
  RETURN_IF_ERROR(Field(j, "ok", &r.ok));
  RETURN_IF_ERROR(Field(j, "finished_ms", &r.finished_ms));
  RETURN_IF_ERROR(Field(j, "files_checked", &r.files_checked));
  RETURN_IF_ERROR(Field(j, "bytes_checked", &r.bytes_checked));
  RETURN_IF_ERROR(Field(j, "problems", &r.problems));
  RETURN_IF_ERROR(Field(j, "first_problem", &r.first_problem));
  return r;
}

std::string ChecksDir(const std::string& data_dir) { return JoinPath(data_dir, "checks"); }

Status SaveDrillRecord(Env& env, const std::string& data_dir, const DrillRecord& r) {
  ASSIGN_OR_RETURN(std::string path, DrillPath(data_dir, r.peer));
  return SaveJson(env, data_dir, path, r.ToJson());
}

Status SaveVerifyRecord(Env& env, const std::string& data_dir, const VerifyRecord& r) {
  return SaveJson(env, data_dir, JoinPath(ChecksDir(data_dir), "verify.json"), r.ToJson());
}

Result<std::optional<DrillRecord>> LoadDrillRecord(Env& env, const std::string& data_dir,
                                                   const std::string& peer) {
  ASSIGN_OR_RETURN(std::string path, DrillPath(data_dir, peer));
  ASSIGN_OR_RETURN(auto j, LoadJson(env, path));
  if (!j) return std::optional<DrillRecord>();
  Result<DrillRecord> r = DrillRecord::FromJson(*j);
  if (!r.ok()) return DataError(path + ": " + r.status().message());
  return std::optional<DrillRecord>(std::move(*r));
}

Result<std::optional<VerifyRecord>> LoadVerifyRecord(Env& env, const std::string& data_dir) {
  const std::string path = JoinPath(ChecksDir(data_dir), "verify.json");
  ASSIGN_OR_RETURN(auto j, LoadJson(env, path));
  if (!j) return std::optional<VerifyRecord>();
  Result<VerifyRecord> r = VerifyRecord::FromJson(*j);
  if (!r.ok()) return DataError(path + ": " + r.status().message());
  return std::optional<VerifyRecord>(std::move(*r));
}

}  // namespace lifeboat::restore
