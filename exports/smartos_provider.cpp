// The smartos provider: vmadm, imgadm and zfs, run without a shell.
#include "exports/provider.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <sstream>
#include <unordered_map>
#include <vector>

#include <openssl/evp.h>

#include "base/clock.h"
#include "base/digest.h"
#include "base/log.h"
#include "base/subprocess.h"
#include "base/text.h"

namespace lifeboat::exports {

using syncproto::ServiceFilter;
namespace {

struct FileDigestSha1 {
  uint64_t size = 0;
  std::string sha1_hex;
};

// SHA-1 (what imgadm checks, files[0].sha1) and size of a file, streamed.
Result<FileDigestSha1> Sha1OfFile(Env& env, const std::string& path) {
  ASSIGN_OR_RETURN(auto file, env.OpenRead(path));
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha1(), nullptr) != 1) {
    return InternalError("SHA-1 of " + path + ": digest init failed");
  }
  std::vector<uint8_t> buf(1 << 20);
  FileDigestSha1 out;
  for (;;) {
    ASSIGN_OR_RETURN(size_t n, file->ReadAt(out.size, std::span<uint8_t>(buf)));
    if (n == 0) break;
    if (EVP_DigestUpdate(ctx.get(), buf.data(), n) != 1) {
      return InternalError("SHA-1 of " + path + ": digest update failed");
    }
    out.size += n;
  }
  uint8_t md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), md, &len) != 1) {
    return InternalError("SHA-1 of " + path + ": digest final failed");
  }
  out.sha1_hex = HexEncode(std::span<const uint8_t>(md, len));
  return out;
}

}  // namespace

Result<std::string> RunCommand(const std::string& command_dir, const std::vector<std::string>& argv,
                               uint64_t max_output, int stdout_fd) {
  if (argv.empty()) return InternalError("RunCommand: empty argv");
  std::vector<std::string> full = argv;
  if (!command_dir.empty()) full[0] = JoinPath(command_dir, argv[0]);
  CommandOptions options;
  options.max_output = static_cast<size_t>(max_output);
  options.stdout_fd = stdout_fd;
  ASSIGN_OR_RETURN(CommandResult r, lifeboat::RunCommand(full, options));
  const std::string cmdline = CommandLine(argv);
  if (r.truncated && r.out.size() >= max_output) {
    return IoError("`" + cmdline + "` printed more than " + std::to_string(max_output) + " bytes");
  }
  if (!r.ok()) {
    // "`zfs send ...` exited 1: cannot open ..." (Describe() says "exit 1: ...").
    return IoError("`" + cmdline + "` exited" + r.Describe().substr(4), /*retryable=*/true);
  }
  return std::move(r.out);
}

namespace {

class SmartosProvider;

class SmartosSnapshot final : public ProviderSnapshot {
 public:
  SmartosSnapshot(SmartosProvider& provider, std::string id)
      : provider_(provider), id_(std::move(id)) {}
  ~SmartosSnapshot() override;

  const std::vector<InstanceSource>& instances() const override { return instances_; }
  std::string application_path() const override { return application_; }
  std::map<std::string, std::string> service_record_paths() const override { return services_; }
  Result<ImageSource> Image(const std::string& uuid) override;
  bool stable_devices() const override { return false; }
  std::vector<ProviderWarning> warnings() const override { return warnings_; }

  SmartosProvider& provider_;
  std::string id_;
  std::vector<InstanceSource> instances_;
  std::string application_;
  std::map<std::string, std::string> services_;
  std::vector<std::string> zfs_snapshots_;  // to destroy
  std::vector<ProviderWarning> warnings_;
};

class SmartosProvider final : public Provider {
 public:
  SmartosProvider(Env& env, SmartosOptions o) : env_(env), o_(std::move(o)) {}
  const char* name() const override { return "smartos"; }

  Status Init() {
    if (o_.cache_dir.empty()) return ConfigError("smartos provider: no cache directory");
    RETURN_IF_ERROR(CreateDirs(env_, JoinPath(o_.cache_dir, "vms"), 0700));
    RETURN_IF_ERROR(CreateDirs(env_, JoinPath(o_.cache_dir, "images"), 0700));
    if (!o_.sapi_command.empty()) {
      RETURN_IF_ERROR(CreateDirs(env_, JoinPath(o_.cache_dir, "sapi/services"), 0700));
    }
    if (o_.destroy_leftover_snapshots) DestroyLeftoverSnapshots();
    return Status::Ok();
  }

  // Best effort: a snapshot that cannot be listed or destroyed is logged and
  // left (it costs space, not correctness).
  void DestroyLeftoverSnapshots() {
    auto out = Run({"zfs", "list", "-H", "-t", "snapshot", "-o", "name", "-r", o_.pool});
    if (!out.ok()) {
      log::Warn("smartos provider: cannot list ZFS snapshots to clean up",
                {{"error", out.status().message()}});
      return;
    }
    const std::string prefix = o_.pool + "/";
    const std::string marker = "/data@lifeboat-";
    size_t destroyed = 0;
    std::istringstream in(*out);
    for (std::string name; std::getline(in, name);) {
      // <pool>/<uuid>/data@lifeboat-<id>, the uuid a safe name.
      if (!name.starts_with(prefix)) continue;
      const size_t at = name.find(marker, prefix.size());
      if (at == std::string::npos || !IsSafeName(name.substr(prefix.size(), at - prefix.size())) ||
          !IsSafeName(name.substr(at + marker.size()))) {
        continue;
      }
      log::Info("smartos provider: destroying a snapshot left by an earlier run",
                {{"snapshot", name}});
      Destroy(name);
      ++destroyed;
    }
    if (destroyed > 0) {
      log::Info("smartos provider: leftover snapshots destroyed", {{"count", destroyed}});
    }
  }

  Result<std::string> Run(const std::vector<std::string>& argv, int stdout_fd = -1) {
    return RunCommand(o_.command_dir, argv, o_.max_command_output, stdout_fd);
  }

  Result<std::unique_ptr<ProviderSnapshot>> Snapshot(const ServiceFilter& filter) override {
    static std::atomic<uint64_t> counter{0};
    auto snap = std::make_unique<SmartosSnapshot>(
        *this, RandomHex().substr(0, 12) + "-" + std::to_string(counter++));
    ASSIGN_OR_RETURN(std::string out, Run({"vmadm", "lookup", "-j", "tags.smartdc_type=core"}));
    ASSIGN_OR_RETURN(nlohmann::json vms, ParseJson(out, "`vmadm lookup -j` output"));
    if (!vms.is_array()) return DataError("`vmadm lookup -j` did not print a JSON array");
    std::map<std::string, std::vector<size_t>> by_service;  // -> indexes into instances_
    for (const nlohmann::json& vm : vms) {
      const std::string uuid = JsonString(vm, "uuid");
      if (!IsSafeName(uuid)) {
        log::Warn("smartos provider: skipping a VM without a valid uuid", {{"uuid", uuid}});
        continue;
      }
      std::string service;
      if (auto tags = vm.find("tags"); tags != vm.end()) {
        service = JsonString(*tags, "smartdc_role");
      }
      if (!filter.Matches(service)) continue;
      InstanceSource src;
      src.uuid = uuid;
      src.payload_path = JoinPath(o_.cache_dir, "vms/" + uuid + ".json");
      RETURN_IF_ERROR(PublishIfChanged(src.payload_path, DumpJson(vm, 2) + "\n"));
      if (HasDelegateDataset(vm, uuid)) {
        const std::string dataset = o_.pool + "/" + uuid + "/data";
        const std::string snapname = dataset + "@lifeboat-" + snap->id_;
        RETURN_IF_ERROR(Run({"zfs", "snapshot", snapname}).status());
        snap->zfs_snapshots_.push_back(snapname);
        src.dataset_path =
            JoinPath(o_.zones_root, uuid + "/data/.zfs/snapshot/lifeboat-" + snap->id_);
      }
      snap->instances_.push_back(std::move(src));
      by_service[service].push_back(snap->instances_.size() - 1);
    }
    if (!o_.sapi_command.empty()) DumpSapi(*snap, by_service);
    return std::unique_ptr<ProviderSnapshot>(std::move(snap));
  }

  Result<ImageSource> Image(const std::string& uuid) {
    if (!IsSafeName(uuid)) return DataError("invalid image uuid \"" + uuid + "\"");
    ImageSource img;
    img.uuid = uuid;
    const std::string dir = JoinPath(o_.cache_dir, "images/" + uuid);
    img.manifest_path = JoinPath(dir, "manifest.json");
    img.file_path = JoinPath(dir, "file");
    std::lock_guard<std::mutex> lock(image_mu_);
    if (manifests_done_.count(uuid) && Exists(env_, img.file_path)) return img;
    auto out = Run({"imgadm", "get", uuid});
    if (!out.ok()) return NotFoundError("image " + uuid + ": " + out.status().message());
    ASSIGN_OR_RETURN(nlohmann::json m, ParseJson(*out, "`imgadm get " + uuid + "`"));
    // imgadm get prints {"manifest": {...}, "zpool": ..., "source": ...}.
    nlohmann::json manifest = m.contains("manifest") ? m["manifest"] : m;
    RETURN_IF_ERROR(CreateDirs(env_, dir, 0700));
    if (!Exists(env_, img.file_path)) {
      // Images are immutable: the send stream is made once per uuid and kept.
      const std::string tmp = TempPathFor(img.file_path);
      ASSIGN_OR_RETURN(auto file, env_.OpenWrite(tmp, 0600, /*exclusive=*/true));
      Status sent = Run({"zfs", "send", o_.pool + "/" + uuid + "@final"}, file->fd()).status();
      if (sent.ok()) sent = file->Sync();
      if (sent.ok()) sent = file->Close();
      if (sent.ok()) sent = env_.Rename(tmp, img.file_path);
      if (!sent.ok()) {
        env_.RemoveFile(tmp).IgnoreError();
        return sent;
      }
      RETURN_IF_ERROR(env_.SyncDir(dir));
    }
    // The file shipped is this raw send stream, not IMGAPI's (often gzip)
    // file: `imgadm install -m -f` checks files[0].size, then files[0].sha1,
    // then uncompresses by files[0].compression (smartos-live
    // src/img/lib/imgadm.js), so files[0] must describe the stream.
    ASSIGN_OR_RETURN(FileDigestSha1 d, Sha1OfFile(env_, img.file_path));
    nlohmann::json f0 = nlohmann::json::object();
    if (manifest.contains("files") && manifest["files"].is_array() && !manifest["files"].empty() &&
        manifest["files"][0].is_object()) {
      f0 = manifest["files"][0];
    }
    f0["size"] = d.size;
    f0["sha1"] = d.sha1_hex;
    f0["compression"] = "none";
    // Docker layer digests describe IMGAPI's file, not this stream.
    f0.erase("digest");
    f0.erase("uncompressedDigest");
    manifest["files"] = nlohmann::json::array({f0});
    RETURN_IF_ERROR(PublishIfChanged(img.manifest_path, DumpJson(manifest, 2) + "\n"));
    manifests_done_.insert(uuid);
    return img;
  }

  // ---- The SAPI source (SmartosOptions::sapi_command) ----

  // One SAPI GET: the parsed 200 body, or why not (a stable text, without
  // timings or stderr: it becomes instance metadata; the details are logged).
  Result<nlohmann::json> SapiGet(const std::string& route) {
    std::vector<std::string> argv = o_.sapi_command;
    if (!o_.command_dir.empty() && argv[0].find('/') == std::string::npos) {
      argv[0] = JoinPath(o_.command_dir, argv[0]);
    }
    argv.push_back(route);
    auto fail = [&](const std::string& why, const std::string& detail) -> Status {
      log::Warn("smartos provider: SAPI call failed",
                {{"command", CommandLine(argv)}, {"error", why}, {"detail", detail}});
      return UnavailableError(SapiCall(route) + ": " + why, /*retryable=*/true);
    };
    CommandOptions options;
    options.max_output = static_cast<size_t>(o_.max_command_output);
    options.timeout_ms = o_.sapi_timeout_ms;
    auto run = lifeboat::RunCommand(argv, options);
    if (!run.ok()) return fail("could not run", run.status().message());
    const CommandResult& r = *run;
    if (r.timed_out) {
      return fail("did not finish within " + std::to_string(o_.sapi_timeout_ms) + " ms", "");
    }
    if (r.truncated && r.out.size() >= o_.max_command_output) {
      return fail("printed more than " + std::to_string(o_.max_command_output) + " bytes", "");
    }
    if (!r.ok()) return fail("exited " + std::to_string(r.exit_code), r.Describe());
    const CurlAnswer answer = ParseCurlOutput(r.out);
    if (answer.status == 0) return fail("printed no HTTP status line", r.out.substr(0, 200));
    if (answer.status != 200) {
      std::string code;  // restify's {"code": "ResourceNotFound", "message": ...}
      auto body = ParseJson(answer.body, "body");
      if (body.ok() && body->is_object()) code = JsonString(*body, "code");
      return fail("answered HTTP " + std::to_string(answer.status) +
                      (code.empty() || !IsSafeName(code) ? "" : " " + code),
                  std::string(answer.body.substr(0, 500)));
    }
    auto body = ParseJson(answer.body, "body");
    if (!body.ok()) return fail("answered invalid JSON", body.status().message());
    if (!body->is_array()) return fail("answered something other than a JSON array", "");
    return std::move(*body);
  }

  // "GET /route through `sdc-sapi`", the start of what is said about a call.
  std::string SapiCall(const std::string& route) const {
    return "GET " + route + " through `" + CommandLine(o_.sapi_command) + "`";
  }

  // Checks that every element of a SAPI list is an object with a uuid
  // `uuid` and, when `parent_key` is set, `parent_key` == `parent`. "" when
  // all are, else what is wrong with the first that is not.
  static std::string BadRecordIn(const nlohmann::json& list, const char* parent_key,
                                 const std::string& parent) {
    for (const nlohmann::json& rec : list) {
      if (!rec.is_object()) return "answered a list with an element that is not an object";
      const std::string uuid = JsonString(rec, "uuid");
      if (!IsUuid(uuid)) {
        return "answered a record whose uuid \"" + uuid.substr(0, 64) + "\" is not a uuid";
      }
      if (parent_key != nullptr && JsonString(rec, parent_key) != parent) {
        return "answered record " + uuid + " whose " + parent_key + " is not " + parent;
      }
    }
    return "";
  }

  // The uuid in a record this provider kept earlier ("" when none).
  std::string KeptUuid(const std::string& path) {
    auto text = ReadFileToString(env_, path, 1 << 20);
    if (!text.ok()) return "";
    auto j = ParseJson(*text, path);
    if (!j.ok() || !j->is_object()) return "";
    std::string uuid = JsonString(*j, "uuid");
    return IsUuid(uuid) ? uuid : "";
  }

  // Records `why` the record at `local` (export path `path`) was not
  // refreshed, saying whether an earlier one is still exported.
  void SapiWarn(SmartosSnapshot& snap, ProviderWarning w, const std::string& local,
                const std::string& why) {
    auto st = env_.Stat(local);
    w.reason = "SAPI record not refreshed: " + why +
               (st.ok() ? "; exporting the one kept at " + FormatIso8601Ms(st->mtime_ns / 1000000)
                        : "; no earlier record to export");
    snap.warnings_.push_back(std::move(w));
  }

  // Publishes `record` at `local`; a failure to write is a warning too (the
  // earlier file, if any, is left as it was).
  void SapiKeep(SmartosSnapshot& snap, const ProviderWarning& w, const std::string& local,
                const nlohmann::json& record) {
    Status st = PublishIfChanged(local, DumpJson(record, 2) + "\n");
    if (!st.ok()) {
      log::Warn("smartos provider: cannot keep a SAPI record",
                {{"path", local}, {"error", st.message()}});
      SapiWarn(snap, w, local, "cannot write " + local);
    }
  }

  // SAPI answered without this record: it is no longer exported.
  void SapiForget(const std::string& local) {
    if (!Exists(env_, local)) return;
    log::Info("smartos provider: SAPI no longer lists a record; not exporting it",
              {{"path", local}});
    std::lock_guard<std::mutex> lock(publish_mu_);
    published_.erase(local);
    env_.RemoveFile(local).IgnoreError();
  }

  // Fills the SAPI paths of `snap`: the application, the service records of
  // the services in `by_service` and the instance records of their
  // instances (indexes into snap.instances_). Never fails: see
  // SmartosOptions::sapi_command.
  void DumpSapi(SmartosSnapshot& snap,
                const std::map<std::string, std::vector<size_t>>& by_service) {
    std::lock_guard<std::mutex> lock(sapi_mu_);  // one dump at a time writes the cache
    const std::string dir = JoinPath(o_.cache_dir, "sapi");
    // The application: one call; its uuid scopes the services.
    const std::string app_local = JoinPath(dir, "application.json");
    const ProviderWarning app_w{"", "", "sapi/application.json", ""};
    std::string app_uuid;
    if (auto apps = SapiGet("/applications?name=sdc"); !apps.ok()) {
      SapiWarn(snap, app_w, app_local, apps.status().message());
    } else if (std::string bad = BadRecordIn(*apps, "name", "sdc"); !bad.empty()) {
      SapiWarn(snap, app_w, app_local, SapiCall("/applications?name=sdc") + ": " + bad);
    } else if (apps->size() != 1) {
      SapiWarn(snap, app_w, app_local,
               SapiCall("/applications?name=sdc") + ": answered " + std::to_string(apps->size()) +
                   " applications (1 expected)");
    } else {
      app_uuid = JsonString((*apps)[0], "uuid");
      SapiKeep(snap, app_w, app_local, (*apps)[0]);
    }
    if (app_uuid.empty()) app_uuid = KeptUuid(app_local);
    if (Exists(env_, app_local)) snap.application_ = app_local;

    // The services: one call for all, by name.
    std::optional<std::map<std::string, nlohmann::json>> services;
    std::string services_error = "the sdc application's uuid is unknown";
    if (!app_uuid.empty()) {
      const std::string route = "/services?application_uuid=" + app_uuid;
      auto list = SapiGet(route);
      if (!list.ok()) {
        services_error = list.status().message();
      } else if (std::string bad = BadRecordIn(*list, "application_uuid", app_uuid); !bad.empty()) {
        services_error = SapiCall(route) + ": " + bad;
      } else {
        services.emplace();
        for (const nlohmann::json& rec : *list) {
          const std::string name = JsonString(rec, "name");
          if (IsSafeName(name)) (*services)[name] = rec;
        }
      }
    }

    for (const auto& [service, indexes] : by_service) {
      if (!IsSafeName(service)) continue;
      const std::string svc_local = JoinPath(dir, "services/" + service + ".json");
      const ProviderWarning svc_w{"", service, "sapi/services/" + service + ".json", ""};
      std::string svc_uuid;
      bool listed = true;
      if (!services) {
        SapiWarn(snap, svc_w, svc_local, services_error);
        svc_uuid = KeptUuid(svc_local);
      } else if (auto it = services->find(service); it == services->end()) {
        listed = false;  // SAPI has no such service: nothing of it to export
        SapiForget(svc_local);
      } else {
        svc_uuid = JsonString(it->second, "uuid");
        SapiKeep(snap, svc_w, svc_local, it->second);
      }
      if (Exists(env_, svc_local)) snap.services_[service] = svc_local;
      DumpInstances(snap, service, svc_uuid, listed, indexes);
    }
  }

  // The instance records of one service's exported instances: one call.
  void DumpInstances(SmartosSnapshot& snap, const std::string& service, const std::string& svc_uuid,
                     bool listed, const std::vector<size_t>& indexes) {
    const std::string dir = JoinPath(o_.cache_dir, "sapi");
    std::optional<nlohmann::json> list;
    std::string error = "the uuid of SAPI service " + service + " is unknown";
    if (!listed) {
      list = nlohmann::json::array();  // SAPI said: no such service, so no such instances
    } else if (!svc_uuid.empty()) {
      const std::string route = "/instances?service_uuid=" + svc_uuid;
      auto got = SapiGet(route);
      if (!got.ok()) {
        error = got.status().message();
      } else if (std::string bad = BadRecordIn(*got, "service_uuid", svc_uuid); !bad.empty()) {
        error = SapiCall(route) + ": " + bad;
      } else {
        list = std::move(*got);
      }
    }
    for (size_t i : indexes) {
      InstanceSource& src = snap.instances_[i];
      const std::string local = JoinPath(dir, src.uuid + ".json");
      const ProviderWarning w{src.uuid, "", "sapi/" + src.uuid + ".json", ""};
      if (!list) {
        SapiWarn(snap, w, local, error);
      } else {
        const nlohmann::json* found = nullptr;
        for (const nlohmann::json& rec : *list) {
          if (JsonString(rec, "uuid") == src.uuid) found = &rec;
        }
        if (found == nullptr) {
          SapiForget(local);
        } else {
          SapiKeep(snap, w, local, *found);
        }
      }
      if (Exists(env_, local)) src.sapi_path = local;
    }
  }

  void Destroy(const std::string& snapname) {
    auto st = Run({"zfs", "destroy", snapname});
    if (!st.ok()) {
      log::Error("could not destroy a ZFS snapshot taken for a pull",
                 {{"snapshot", snapname}, {"error", st.status().message()}});
    }
  }

 private:
  bool HasDelegateDataset(const nlohmann::json& vm, const std::string& uuid) const {
    if (auto d = vm.find("delegate_dataset"); d != vm.end() && d->is_boolean() && d->get<bool>()) {
      return true;
    }
    if (auto ds = vm.find("datasets"); ds != vm.end() && ds->is_array()) {
      for (const auto& name : *ds) {
        if (name.is_string() && name.get<std::string>() == o_.pool + "/" + uuid + "/data")
          return true;
      }
    }
    return false;
  }

  // Writes `content` to `path` atomically unless it already holds exactly
  // that (so an unchanged payload keeps its stat and the exporter's cache hits).
  Status PublishIfChanged(const std::string& path, const std::string& content) {
    std::lock_guard<std::mutex> lock(publish_mu_);
    auto it = published_.find(path);
    if (it != published_.end() && it->second == Xxh3Digest(content)) return Status::Ok();
    if (it == published_.end()) {
      auto existing = ReadFileToString(env_, path);
      if (existing.ok() && *existing == content) {
        published_[path] = Xxh3Digest(content);
        return Status::Ok();
      }
    }
    RETURN_IF_ERROR(WriteFileAtomic(env_, path, content, 0600));
    published_[path] = Xxh3Digest(content);
    return Status::Ok();
  }

  Env& env_;
  SmartosOptions o_;
  std::mutex publish_mu_;
  std::unordered_map<std::string, Digest128> published_;
  std::mutex image_mu_;
  std::set<std::string> manifests_done_;
  std::mutex sapi_mu_;
};

SmartosSnapshot::~SmartosSnapshot() {
  for (const std::string& s : zfs_snapshots_) provider_.Destroy(s);
}

Result<ImageSource> SmartosSnapshot::Image(const std::string& uuid) {
  return provider_.Image(uuid);
}

}  // namespace

Result<std::unique_ptr<Provider>> MakeSmartosProvider(Env& env, SmartosOptions options) {
  auto p = std::make_unique<SmartosProvider>(env, std::move(options));
  RETURN_IF_ERROR(p->Init());
  return std::unique_ptr<Provider>(std::move(p));
}

}  // namespace lifeboat::exports
