#include "exports/retired.h"

#include <nlohmann/json.hpp>

#include "base/text.h"

namespace lifeboat::exports {

using syncproto::ServiceFilter;
namespace {

using nlohmann::json;

json ToJson(const RetiredInstance& r) {
  return {{"uuid", r.uuid},
          {"alias", r.alias},
          {"service", r.service},
          {"restored_on", r.restored_on},
          {"new_uuid", r.new_uuid},
          {"new_alias", r.new_alias},
          {"retired_at_ms", r.retired_ms},
          {"how", r.how}};
}

Result<RetiredInstance> FromJson(const json& j, const std::string& path) {
  if (!j.is_object() || !j.contains("uuid") || !j["uuid"].is_string()) {
    return DataError(path + ": a retired entry without uuid");
  }
  try {
    RetiredInstance r;
    r.uuid = j["uuid"].get<std::string>();
    r.alias = j.value("alias", "");
    r.service = j.value("service", "");
    r.restored_on = j.value("restored_on", "");
    r.new_uuid = j.value("new_uuid", "");
    r.new_alias = j.value("new_alias", "");
    r.retired_ms = j.value("retired_at_ms", int64_t{0});
    r.how = j.value("how", "");
    return r;
  } catch (const json::exception& e) {
    return DataError(path + ": retired entry " + j["uuid"].get<std::string>() + ": " + e.what());
  }
}

class FilteredSnapshot final : public ProviderSnapshot {
 public:
  FilteredSnapshot(std::unique_ptr<ProviderSnapshot> inner,
                   const std::map<std::string, RetiredInstance>& retired)
      : inner_(std::move(inner)) {
    for (const InstanceSource& i : inner_->instances()) {
      if (!retired.contains(i.uuid)) instances_.push_back(i);
    }
  }
  const std::vector<InstanceSource>& instances() const override { return instances_; }
  std::string application_path() const override { return inner_->application_path(); }
  std::map<std::string, std::string> service_record_paths() const override {
    return inner_->service_record_paths();
  }
  Result<ImageSource> Image(const std::string& uuid) override { return inner_->Image(uuid); }
  bool stable_devices() const override { return inner_->stable_devices(); }
  bool live_paths() const override { return inner_->live_paths(); }
  std::vector<ProviderWarning> warnings() const override { return inner_->warnings(); }

 private:
  std::unique_ptr<ProviderSnapshot> inner_;
  std::vector<InstanceSource> instances_;
};

class RetiredFilter final : public Provider {
 public:
  RetiredFilter(Env& env, std::unique_ptr<Provider> inner, std::string data_dir)
      : env_(env), inner_(std::move(inner)), data_dir_(std::move(data_dir)) {}
  const char* name() const override { return inner_->name(); }
  Result<std::unique_ptr<ProviderSnapshot>> Snapshot(const ServiceFilter& filter) override {
    ASSIGN_OR_RETURN(auto retired, LoadRetired(env_, data_dir_));
    ASSIGN_OR_RETURN(auto snap, inner_->Snapshot(filter));
    if (retired.empty()) return snap;
    return std::unique_ptr<ProviderSnapshot>(
        std::make_unique<FilteredSnapshot>(std::move(snap), retired));
  }

 private:
  Env& env_;
  std::unique_ptr<Provider> inner_;
  std::string data_dir_;
};

}  // namespace

std::string RetiredPath(const std::string& data_dir) { return JoinPath(data_dir, "retired.json"); }

Result<std::map<std::string, RetiredInstance>> LoadRetired(Env& env, const std::string& data_dir) {
  const std::string path = RetiredPath(data_dir);
  std::map<std::string, RetiredInstance> out;
  if (!Exists(env, path)) return out;
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(env, path, 16ull << 20));
  json doc = json::parse(text, nullptr, false);
  if (!doc.is_object() || !doc.contains("retired") || !doc["retired"].is_array()) {
    return DataError(path + ": not a {\"retired\": [...]} document");
  }
  for (const json& j : doc["retired"]) {
    ASSIGN_OR_RETURN(RetiredInstance r, FromJson(j, path));
    out[r.uuid] = std::move(r);
  }
  return out;
}

Status RecordRetired(Env& env, const std::string& data_dir, const RetiredInstance& r) {
  ASSIGN_OR_RETURN(auto all, LoadRetired(env, data_dir));
  all[r.uuid] = r;
  json list = json::array();
  for (const auto& [uuid, e] : all) list.push_back(ToJson(e));
  json doc = {{"format", 1}, {"retired", std::move(list)}};
  return WriteFileAtomic(env, RetiredPath(data_dir), DumpJson(doc, 2) + "\n", 0600);
}

std::unique_ptr<Provider> WithoutRetired(Env& env, std::unique_ptr<Provider> inner,
                                         std::string data_dir) {
  return std::make_unique<RetiredFilter>(env, std::move(inner), std::move(data_dir));
}

}  // namespace lifeboat::exports
