#include "exports/provider.h"

#include <algorithm>
#include <utility>

#include "base/log.h"

namespace lifeboat::exports {

using syncproto::ServiceFilter;

namespace {

constexpr std::string_view kJsonExt = ".json";

bool StripJson(const std::string& name, std::string* stem) {
  if (name.size() <= kJsonExt.size() ||
      name.compare(name.size() - kJsonExt.size(), kJsonExt.size(), kJsonExt) != 0) {
    return false;
  }
  *stem = name.substr(0, name.size() - kJsonExt.size());
  return true;
}

// Lists `dir`; a missing directory is an empty list.
Result<std::vector<DirEntry>> ListIfExists(Env& env, const std::string& dir) {
  auto entries = env.ListDir(dir);
  if (!entries.ok() && entries.status().code() == Code::kNotFound) {
    return std::vector<DirEntry>{};
  }
  return entries;
}

bool IsRegular(Env& env, const std::string& path, const DirEntry& e) {
  if (e.type == FileType::kRegular) return true;
  if (e.type != FileType::kOther) return false;
  auto st = env.Stat(path);
  return st.ok() && st->type == FileType::kRegular;
}

class DirSnapshot final : public ProviderSnapshot {
 public:
  DirSnapshot(Env& env, std::string root) : env_(env), root_(std::move(root)) {}

  Status Load() {
    auto root_stat = env_.Stat(root_);
    if (!root_stat.ok()) return root_stat.status().WithContext("export root");
    if (root_stat->type != FileType::kDirectory) {
      return ConfigError("export root " + root_ + " is not a directory");
    }
    const std::string vms = JoinPath(root_, "vms");
    ASSIGN_OR_RETURN(auto vm_entries, ListIfExists(env_, vms));
    for (const DirEntry& e : vm_entries) {
      std::string uuid;
      const std::string path = JoinPath(vms, e.name);
      if (!StripJson(e.name, &uuid) || !IsRegular(env_, path, e)) {
        log::Warn("export: skipping unexpected entry",
                  {{"path", path}, {"reason", "not a <uuid>.json file"}});
        continue;
      }
      InstanceSource src;
      src.uuid = uuid;
      src.payload_path = path;
      std::string sapi = JoinPath(root_, "sapi/" + uuid + ".json");
      if (Exists(env_, sapi)) src.sapi_path = sapi;
      std::string ds = JoinPath(root_, "datasets/" + uuid);
      // Anything there is the dataset: one that is not a directory (a
      // symlink put in its place, say) is the exporter's to refuse and report.
      if (auto st = env_.Stat(ds); st.ok() || st.status().code() != Code::kNotFound) {
        src.dataset_path = ds;
      }
      instances_.push_back(std::move(src));
    }
    std::sort(instances_.begin(), instances_.end(),
              [](const InstanceSource& a, const InstanceSource& b) { return a.uuid < b.uuid; });
    std::string app = JoinPath(root_, "sapi/application.json");
    if (Exists(env_, app)) application_ = app;
    const std::string services = JoinPath(root_, "sapi/services");
    ASSIGN_OR_RETURN(auto svc_entries, ListIfExists(env_, services));
    for (const DirEntry& e : svc_entries) {
      std::string svc;
      const std::string path = JoinPath(services, e.name);
      if (StripJson(e.name, &svc) && IsRegular(env_, path, e)) service_records_[svc] = path;
    }
    return Status::Ok();
  }

  const std::vector<InstanceSource>& instances() const override { return instances_; }
  bool live_paths() const override { return true; }
  std::string application_path() const override { return application_; }
  std::map<std::string, std::string> service_record_paths() const override {
    return service_records_;
  }
  Result<ImageSource> Image(const std::string& uuid) override {
    ImageSource img;
    img.uuid = uuid;
    const std::string dir = JoinPath(root_, "images/" + uuid);
    img.manifest_path = JoinPath(dir, "manifest.json");
    img.file_path = JoinPath(dir, "file");
    if (!Exists(env_, img.manifest_path)) {
      return NotFoundError("image " + uuid + ": no " + img.manifest_path);
    }
    return img;
  }

 private:
  Env& env_;
  std::string root_;
  std::vector<InstanceSource> instances_;
  std::string application_;
  std::map<std::string, std::string> service_records_;
};

class DirProvider final : public Provider {
 public:
  DirProvider(Env& env, std::string root) : env_(env), root_(std::move(root)) {}
  const char* name() const override { return "dir"; }
  Result<std::unique_ptr<ProviderSnapshot>> Snapshot(const ServiceFilter&) override {
    auto snap = std::make_unique<DirSnapshot>(env_, root_);
    RETURN_IF_ERROR(snap->Load());
    return std::unique_ptr<ProviderSnapshot>(std::move(snap));
  }

 private:
  Env& env_;
  std::string root_;
};

}  // namespace

std::unique_ptr<Provider> MakeDirProvider(Env& env, std::string root) {
  return std::make_unique<DirProvider>(env, std::move(root));
}

}  // namespace lifeboat::exports
