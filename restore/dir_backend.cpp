// The dir backend: restores into a plain directory tree.
//
//   <target>/images/<uuid>/manifest.json, file     installed images
//   <target>/zones/<new-uuid>/vm.json              the VM payload
//   <target>/zones/<new-uuid>/sapi.json            the SAPI record
//   <target>/zones/<new-uuid>/data/                the delegate dataset
//
// await_instance only checks that vm.json is there: nothing boots;
// adopt_instance does nothing (no NAPI, no vm-agent); nor does
// retire_old_records (no VMAPI, SAPI or NAPI record of the old instance here).
// Images and data trees are built under a ".partial" name and renamed into
// place, so a name that exists is complete; a rerun removes leftovers.
#include <climits>
#include <cstdlib>
#include <memory>
#include <vector>

#include "base/digest.h"
#include "base/text.h"
#include "restore/backend.h"
#include "restore/tree_copy.h"

namespace lifeboat::restore {
namespace {

using nlohmann::json;

Result<Digest128> HashFile(Env& env, const std::string& path) {
  ASSIGN_OR_RETURN(auto file, env.OpenRead(path));
  Xxh3Hasher hasher;
  RETURN_IF_ERROR(ForEachChunk(*file, 1 << 20, [&](std::span<const uint8_t> chunk) {
    hasher.Update(chunk);
    return Status::Ok();
  }));
  return hasher.Finish();
}

class DirBackend final : public StepwiseBackend {
 public:
  DirBackend(Env& env, DirBackendOptions options) : env_(env), options_(std::move(options)) {}

  std::string name() const override { return "dir"; }
  std::string target() const override { return options_.target; }

  Result<bool> HasImage(const std::string& uuid) override {
    auto st = env_.Stat(JoinPath(ImagesDir(), uuid));
    if (st.ok()) return st->type == FileType::kDirectory;
    if (st.status().code() == Code::kNotFound) return false;
    return st.status();
  }

  Result<std::set<std::string>> TargetAliases() override {
    std::set<std::string> aliases;
    auto entries = env_.ListDir(ZonesDir());
    if (!entries.ok()) {
      if (entries.status().code() == Code::kNotFound) return aliases;
      return entries.status();
    }
    for (const DirEntry& e : *entries) {
      auto text = ReadFileToString(env_, JoinPath(JoinPath(ZonesDir(), e.name), "vm.json"));
      if (!text.ok()) continue;  // a zone whose create step has not run yet
      json vm = json::parse(*text, nullptr, false);
      if (vm.is_object() && vm.contains("alias") && vm["alias"].is_string()) {
        aliases.insert(vm["alias"].get<std::string>());
      }
    }
    return aliases;
  }

  Status BeforeStep() override { return CreateDirs(env_, options_.target, 0700); }

 private:
  std::string ImagesDir() const { return JoinPath(options_.target, "images"); }
  std::string ZonesDir() const { return JoinPath(options_.target, "zones"); }
  std::string ZoneDir(const Step& s) const { return JoinPath(ZonesDir(), s.new_uuid); }

  Result<StepResult> InstallImage(const Step& step) override {
    ASSIGN_OR_RETURN(bool installed, HasImage(step.image_uuid));
    if (installed) return StepResult{0, true};
    if (!step.image_origin.empty()) {
      ASSIGN_OR_RETURN(bool origin_installed, HasImage(step.image_origin));
      if (!origin_installed) {
        return DataError("install image " + step.image_uuid + ": its origin image " +
                         step.image_origin + " is not installed in " + ImagesDir());
      }
    }
    RETURN_IF_ERROR(CreateDirs(env_, ImagesDir(), 0700));
    const std::string final_dir = JoinPath(ImagesDir(), step.image_uuid);
    const std::string partial = final_dir + ".partial";
    RETURN_IF_ERROR(RemoveTree(env_, partial));
    RETURN_IF_ERROR(env_.MakeDir(partial, 0755));
    const std::string file = JoinPath(partial, "file");
    RETURN_IF_ERROR(env_.CopyFile(step.manifest_path, JoinPath(partial, "manifest.json"), 0644));
    RETURN_IF_ERROR(env_.CopyFile(step.file_path, file, 0644));
    if (!step.file_digest.empty()) {
      ASSIGN_OR_RETURN(Digest128 got, HashFile(env_, file));
      if (got.Hex() != step.file_digest) {
        RemoveTree(env_, partial).IgnoreError();
        return DataError("install image " + step.image_uuid + ": copied file " + file +
                         " has digest " + got.Hex() + ", expected " + step.file_digest);
      }
    }
    ASSIGN_OR_RETURN(FileStat st, env_.Stat(file));
    RETURN_IF_ERROR(env_.SyncDir(partial));
    RETURN_IF_ERROR(env_.Rename(partial, final_dir));
    RETURN_IF_ERROR(env_.SyncDir(ImagesDir()));
    return StepResult{st.size, false};
  }

  Result<StepResult> CreateInstance(const Step& step) override {
    RETURN_IF_ERROR(CreateDirs(env_, ZonesDir(), 0700));
    const std::string zone = ZoneDir(step);
    RETURN_IF_ERROR(CreateDirs(env_, zone, 0700));
    return WriteOnce(JoinPath(zone, "vm.json"), DumpJson(step.payload, 2) + "\n");
  }

  Result<StepResult> RestoreData(const Step& step, const StepInput& input) override {
    const std::string zone = ZoneDir(step);
    auto zone_st = env_.Stat(zone);
    if (!zone_st.ok()) {
      return zone_st.status().WithContext("restore data of " + step.alias +
                                          ": instance not created");
    }
    const std::string final_dir = JoinPath(zone, "data");
    if (Exists(env_, final_dir)) return StepResult{0, true};
    const std::string partial = final_dir + ".partial";
    RETURN_IF_ERROR(RemoveTree(env_, partial));
    auto stats = CopyTree(env_, step.data_path, partial,
                          CopyOptions{options_.copy_threads, input.data_meta, options_.set_owners});
    if (!stats.ok()) return stats.status().WithContext("restore data of " + step.alias);
    RETURN_IF_ERROR(env_.Rename(partial, final_dir));
    RETURN_IF_ERROR(env_.SyncDir(zone));
    return StepResult{stats->bytes, false};
  }

  // A directory instance is up once its payload is there (nothing boots).
  Result<StepResult> AwaitInstance(const Step& step) override {
    const std::string vm = JoinPath(ZoneDir(step), "vm.json");
    if (!Exists(env_, vm)) {
      return DataError("await " + step.alias + " (" + step.new_uuid + "): " + vm +
                       " does not exist (create_instance did not run)");
    }
    return StepResult{0, false};
  }

  // A directory has no NAPI or vm-agent to hand the instance to.
  Result<StepResult> AdoptInstance(const Step& step) override {
    (void)step;
    return StepResult{0, false};
  }

  Result<StepResult> RetireOldRecords(const Step& step) override {
    (void)step;
    return StepResult{0, false};
  }

  Result<StepResult> RegisterSapi(const Step& step) override {
    const std::string zone = ZoneDir(step);
    RETURN_IF_ERROR(CreateDirs(env_, zone, 0700));
    return WriteOnce(JoinPath(zone, "sapi.json"), DumpJson(step.payload, 2) + "\n");
  }

  // Publishes `text` at `path` atomically unless it is there already.
  Result<StepResult> WriteOnce(const std::string& path, const std::string& text) {
    auto existing = ReadFileToString(env_, path);
    if (existing.ok() && *existing == text) return StepResult{0, true};
    RETURN_IF_ERROR(WriteFileAtomic(env_, path, text, 0644));
    return StepResult{text.size(), false};
  }

  Env& env_;
  DirBackendOptions options_;
};

}  // namespace

std::unique_ptr<Backend> NewDirBackend(Env& env, DirBackendOptions options) {
  return std::make_unique<DirBackend>(env, std::move(options));
}

namespace {

// `path` with symlinks resolved: realpath of its deepest existing ancestor,
// then the components that do not exist yet, "." and ".." applied lexically.
std::string ResolveExisting(const std::string& path) {
  std::string head = path;
  std::vector<std::string> missing;  // innermost first
  char buf[PATH_MAX];
  while (::realpath(head.c_str(), buf) == nullptr) {
    const size_t slash = head.find_last_of('/');
    if (slash == std::string::npos || head == "/") return path;
    missing.push_back(head.substr(slash + 1));
    head = slash == 0 ? "/" : head.substr(0, slash);
  }
  std::vector<std::string> parts;
  std::string resolved = buf;
  for (size_t start = 1; start <= resolved.size();) {
    const size_t slash = std::min(resolved.find('/', start), resolved.size());
    if (slash > start) parts.push_back(resolved.substr(start, slash - start));
    start = slash + 1;
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    if (it->empty() || *it == ".") continue;
    if (*it == "..") {
      if (!parts.empty()) parts.pop_back();
      continue;
    }
    parts.push_back(*it);
  }
  std::string out;
  for (const auto& p : parts) out += "/" + p;
  return out.empty() ? "/" : out;
}

bool Within(const std::string& path, const std::string& root) {
  return path == root || (path.size() > root.size() && path.compare(0, root.size(), root) == 0 &&
                          (root == "/" || path[root.size()] == '/'));
}

}  // namespace

Status CheckOutsideCatalog(const std::string& dir, const std::string& data_dir,
                           const std::string& what) {
  const std::string d = ResolveExisting(dir), c = ResolveExisting(data_dir);
  if (Within(d, c)) {
    return UsageError(what + " " + dir + " is inside the catalog (agent.data_dir " + data_dir +
                      "): the agent would delete what is restored there; choose a directory "
                      "outside it");
  }
  if (Within(c, d)) {
    return UsageError(what + " " + dir + " contains the catalog (agent.data_dir " + data_dir +
                      "); choose a directory outside it");
  }
  return Status::Ok();
}

}  // namespace lifeboat::restore
