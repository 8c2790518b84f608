// The smartos backend: restores onto a SmartOS headnode with its own tools.
//
//   install_image    imgadm get <uuid> (installed already?), else
//                    imgadm install -m <manifest.json> -f <file>
//   create_instance  vmadm get <uuid> (created already?), else
//                    vmadm create -f <payload file>; with autoboot false
//                    when data follows (start_after_data): the zone's
//                    first-boot setup then runs once, on the restored data
//   restore_data     vmadm stop <uuid> (unless stopped),
//                    zfs get -Hp -o value mountpoint <zpool>/<uuid>/data,
//                    empty that directory, copy the tree into it,
//                    vmadm update <uuid> autoboot=true, vmadm start <uuid>
//   await_instance   until vmadm get <uuid> says running, <zonepath>/root/
//                    var/svc/setup_complete exists and `svcs -xvz <uuid>`
//                    prints nothing (every enabled service of the zone is
//                    fine); setup_failed or a service in maintenance fails
//                    at once (sdc-headnode scripts/headnode.sh create_zone,
//                    sdcadm lib/procedures/shared.js waitForInstToBeUp;
//                    docs/triton-readiness-facts.md)
//   adopt_instance   per NIC: <napi...> /nics/<mac> -X PUT -d
//                    {belongs_to_uuid: new, belongs_to_type: zone, cn_uuid}
//                    (POST /nics when NAPI does not know the MAC), then
//                    vmadm update <uuid> do_not_inventory=false. Until then
//                    the VM carries do_not_inventory (set at create): the
//                    node's net-agent would otherwise strip every NIC NAPI
//                    says belongs to another VM (the old one) and reboot the
//                    zone, and vm-agent would report it to VMAPI early
//                    (sdc-net-agent lib/nic-fsm.js, sdc-napi
//                    lib/models/nic/update.js; docs/triton-sapi-vmapi-facts.md)
//   register_sapi    <vmapi_get...> /vms/<uuid> until HTTP 200 (VMAPI knows
//                    the VM, so SAPI adopts it instead of provisioning a
//                    second one), then <sapi_register...> -d @<record file>
//
// Every command runs without a shell (RunCommand); a non-zero exit fails the
// step with the command line and its stderr.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <functional>
#include <memory>
#include <thread>

#include "base/subprocess.h"
#include "base/text.h"
#include "restore/backend.h"
#include "restore/tree_copy.h"

namespace lifeboat::restore {
namespace {

using nlohmann::json;

class SmartosBackend final : public StepwiseBackend {
 public:
  SmartosBackend(Env& env, SmartosBackendOptions options)
      : env_(env), options_(std::move(options)) {}

  std::string name() const override { return "smartos"; }
  std::string target() const override { return options_.zpool; }

  Result<bool> HasImage(const std::string& uuid) override {
    ASSIGN_OR_RETURN(CommandResult r, RunCmd({options_.imgadm, "get", uuid}));
    return r.ok();
  }

  Result<std::set<std::string>> TargetAliases() override {
    ASSIGN_OR_RETURN(CommandResult r, MustRun({options_.vmadm, "list", "-H", "-o", "alias"}));
    std::set<std::string> aliases;
    size_t start = 0;
    while (start < r.out.size()) {
      size_t nl = r.out.find('\n', start);
      std::string line = TrimTrailingSpace(
          std::string_view(r.out).substr(start, nl == std::string::npos ? nl : nl - start));
      if (!line.empty() && line != "-") aliases.insert(line);
      if (nl == std::string::npos) break;
      start = nl + 1;
    }
    return aliases;
  }

  // vmadm lookup of the service's zones; a running one is healthy when
  // `svcs -xvz` explains nothing (every enabled service of it runs).
  Result<std::optional<std::vector<LocalInstance>>> LocalInstances(
      const std::string& service) override {
    ASSIGN_OR_RETURN(CommandResult r,
                     MustRun({options_.vmadm, "lookup", "-j", "-o", "uuid,alias,state",
                              "tags.smartdc_role=" + service}));
    json vms = json::parse(r.out, nullptr, false);
    if (!vms.is_array()) return DataError("vmadm lookup -j printed no JSON array");
    std::vector<LocalInstance> out;
    for (const json& vm : vms) {
      if (!vm.is_object()) continue;
      LocalInstance li{vm.value("uuid", ""), vm.value("alias", ""), false, ""};
      const std::string state = vm.value("state", "");
      if (state != "running") {
        li.detail = "the zone is " + state;
      } else {
        ASSIGN_OR_RETURN(CommandResult svcs, RunCmd({options_.svcs, "-xvz", li.uuid}));
        const std::string report = TrimTrailingSpace(svcs.out + svcs.err);
        li.healthy = svcs.ok() && report.empty();
        if (!li.healthy) li.detail = "svcs -xvz: " + (report.empty() ? svcs.Describe() : report);
      }
      out.push_back(std::move(li));
    }
    return std::optional<std::vector<LocalInstance>>(std::move(out));
  }

  Status Check(const Plan& plan) override {
    (void)plan;
    if (options_.work_dir.empty()) return ConfigError("smartos backend: no work directory");
    return Status::Ok();
  }

 private:
  Result<CommandResult> RunCmd(const std::vector<std::string>& argv) { return RunCommand(argv); }

  // Runs argv and turns a non-zero exit into an error naming the command.
  Result<CommandResult> MustRun(const std::vector<std::string>& argv) {
    ASSIGN_OR_RETURN(CommandResult r, RunCommand(argv));
    if (!r.ok()) return IoError(CommandLine(argv) + " failed: " + r.Describe());
    return r;
  }

  Result<std::string> WriteWorkFile(const std::string& name, const json& content) {
    RETURN_IF_ERROR(CreateDirs(env_, options_.work_dir, 0700));
    std::string path = JoinPath(options_.work_dir, name);
    RETURN_IF_ERROR(WriteFileAtomic(env_, path, DumpJson(content, 2) + "\n", 0600));
    return path;
  }

  Result<StepResult> InstallImage(const Step& step) override {
    ASSIGN_OR_RETURN(bool installed, HasImage(step.image_uuid));
    if (installed) return StepResult{0, true};
    if (!step.image_origin.empty()) {
      ASSIGN_OR_RETURN(bool origin_installed, HasImage(step.image_origin));
      if (!origin_installed) {
        return DataError("install image " + step.image_uuid + ": its origin image " +
                         step.image_origin + " is not installed");
      }
    }
    auto r = MustRun({options_.imgadm, "install", "-m", step.manifest_path, "-f", step.file_path});
    if (!r.ok()) return r.status().WithContext("install image " + step.image_uuid);
    return StepResult{step.bytes, false};
  }

  Result<bool> VmExists(const std::string& uuid) {
    ASSIGN_OR_RETURN(CommandResult r, RunCmd({options_.vmadm, "get", uuid}));
    return r.ok();
  }

  Result<StepResult> CreateInstance(const Step& step) override {
    ASSIGN_OR_RETURN(bool exists, VmExists(step.new_uuid));
    if (exists) return StepResult{0, true};
    json vm = step.payload;
    if (vm.is_object()) {
      if (step.start_after_data) vm["autoboot"] = false;
      if (step.adopt_after) vm["do_not_inventory"] = true;  // until adopt_instance
    }
    ASSIGN_OR_RETURN(std::string payload, WriteWorkFile(step.new_uuid + ".vm.json", vm));
    auto r = MustRun({options_.vmadm, "create", "-f", payload});
    if (!r.ok()) return r.status().WithContext("create instance " + step.alias);
    return StepResult{0, false};
  }

  Result<StepResult> RestoreData(const Step& step, const StepInput& input) override {
    const std::string what = "restore data of " + step.alias + " (" + step.new_uuid + ")";
    auto vm = GetVm(step.new_uuid);
    if (!vm.ok()) return vm.status().WithContext(what);
    if (vm->state != "stopped") {
      auto r = MustRun({options_.vmadm, "stop", step.new_uuid});
      if (!r.ok()) return r.status().WithContext(what);
    }
    const std::string dataset = options_.zpool + "/" + step.new_uuid + "/data";
    auto mp = MustRun({options_.zfs, "get", "-Hp", "-o", "value", "mountpoint", dataset});
    if (!mp.ok()) return mp.status().WithContext(what);
    const std::string mountpoint = TrimTrailingSpace(mp->out);
    if (mountpoint.empty() || mountpoint.front() != '/') {
      return IoError(what + ": dataset " + dataset + " has no mountpoint ('" + mountpoint + "')");
    }
    Status cleared = ClearDir(env_, mountpoint);
    if (!cleared.ok()) return cleared.WithContext(what);
    auto stats = CopyTree(env_, step.data_path, mountpoint,
                          CopyOptions{options_.copy_threads, input.data_meta, options_.set_owners});
    if (!stats.ok()) return stats.status().WithContext(what);
    for (const std::vector<std::string>& argv :
         {std::vector<std::string>{options_.vmadm, "update", step.new_uuid, "autoboot=true"},
          std::vector<std::string>{options_.vmadm, "start", step.new_uuid}}) {
      auto r = MustRun(argv);
      if (!r.ok()) return r.status().WithContext(what);
    }
    return StepResult{stats->bytes, false};
  }

  // Calls `probe` every poll_ms until it answers true or fails, for at most
  // `wait_ms`; then a temporary (resumable) error: `late` says what is late.
  Status PollUntil(int64_t wait_ms, const std::function<Result<bool>()>& probe,
                   const std::function<std::string()>& late) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
    for (;;) {
      ASSIGN_OR_RETURN(bool done, probe());
      if (done) return Status::Ok();
      if (std::chrono::steady_clock::now() >= deadline) return TemporaryError(late());
      std::this_thread::sleep_for(std::chrono::milliseconds(options_.poll_ms));
    }
  }

  static std::string Seconds(int64_t ms) { return std::to_string(ms / 1000) + " s"; }

  // Polls VMAPI until it knows the new VM (options_.vmapi_get).
  Status WaitUntilVmapiKnows(const Step& step) {
    std::vector<std::string> argv = options_.vmapi_get;
    argv.push_back("/vms/" + step.new_uuid);
    auto known = [&]() -> Result<bool> {
      ASSIGN_OR_RETURN(CommandResult r, MustRun(argv));
      const int code = ParseCurlOutput(r.out).status;
      if (code == 200 || code == 404) return code == 200;
      return IoError(CommandLine(argv) + " answered " +
                     (code == 0 ? "without an HTTP status line" : "HTTP " + std::to_string(code)) +
                     " (200 or 404 expected)");
    };
    return PollUntil(options_.vmapi_wait_ms, known, [&] {
      return "VMAPI does not know " + step.alias + " (" + step.new_uuid + ") after " +
             Seconds(options_.vmapi_wait_ms) +
             ": registering it in SAPI now would make SAPI provision a second VM with its "
             "uuid; check vm-agent on this node (svcs vm-agent), then run the restore again "
             "(it resumes here)";
    });
  }

  struct VmInfo {
    std::string state;     // running, stopped, provisioning, ...
    std::string zonepath;  // /zones/<uuid>
  };
  Result<VmInfo> GetVm(const std::string& uuid) {
    ASSIGN_OR_RETURN(CommandResult got, MustRun({options_.vmadm, "get", uuid}));
    json vm = json::parse(got.out, nullptr, false);
    if (!vm.is_object() || !vm.contains("state") || !vm["state"].is_string()) {
      return DataError("vmadm get " + uuid + " printed no VM object with a state");
    }
    return VmInfo{vm["state"].get<std::string>(), vm.value("zonepath", "")};
  }

  // One look at a booting zone: true when it is up, false while it is not
  // yet, an error when it failed (no point waiting). `why` says what it waits on.
  Result<bool> ZoneUp(const std::string& uuid, std::string* why) {
    ASSIGN_OR_RETURN(VmInfo vm, GetVm(uuid));
    if (vm.state != "running") {
      *why = "the zone is " + vm.state;
      return false;
    }
    if (vm.zonepath.empty() || vm.zonepath.front() != '/') {
      return DataError("vmadm get " + uuid + " printed no zonepath");
    }
    const std::string svc_dir = vm.zonepath + "/root/var/svc";
    if (Exists(env_, svc_dir + "/setup_failed")) {
      return DataError("its first-boot setup failed (" + svc_dir +
                       "/setup_failed exists; see the zone's /var/svc/setup.log)");
    }
    if (!Exists(env_, svc_dir + "/setup_complete")) {
      *why = "its first-boot setup has not finished (no " + svc_dir + "/setup_complete)";
      return false;
    }
    ASSIGN_OR_RETURN(CommandResult svcs, RunCmd({options_.svcs, "-xvz", uuid}));
    const std::string report = TrimTrailingSpace(svcs.out + svcs.err);
    if (svcs.ok() && report.empty()) return true;
    if (report.find("State: maintenance") != std::string::npos) {
      return DataError("a service of the zone is in maintenance: " + report);
    }
    *why = "`svcs -xvz " + uuid + "` reports: " + (report.empty() ? svcs.Describe() : report);
    return false;
  }

  Result<StepResult> AwaitInstance(const Step& step) override {
    const std::string what = "await " + step.alias + " (" + step.new_uuid + ")";
    std::string why;
    Status st = PollUntil(
        options_.await_wait_ms, [&] { return ZoneUp(step.new_uuid, &why); },
        [&] {
          return "not up after " + Seconds(options_.await_wait_ms) + ": " + why +
                 "; fix the zone, then run the restore again (it resumes here)";
        });
    if (!st.ok()) return st.WithContext(what);
    return StepResult{0, false};
  }

  // `<napi...> <path> -X <method> -d @<body file>`: the HTTP status and body.
  Result<std::pair<int, std::string>> CallNapi(const std::string& path, const char* method,
                                               const json& body, const std::string& file) {
    ASSIGN_OR_RETURN(std::string body_file, WriteWorkFile(file, body));
    std::vector<std::string> argv = options_.napi;
    for (const std::string& a :
         {path, std::string("-X"), std::string(method), std::string("-d"), "@" + body_file}) {
      argv.push_back(a);
    }
    ASSIGN_OR_RETURN(CommandResult r, MustRun(argv));
    const CurlAnswer answer = ParseCurlOutput(r.out);
    return std::pair<int, std::string>(answer.status, TrimTrailingSpace(answer.body));
  }

  // Makes NAPI say the NIC `nic` (of the create payload) belongs to the new
  // VM: PUT when NAPI knows its MAC (the old VM's NIC), POST when it never did.
  Status HandOverNic(const Step& step, const json& nic) {
    std::string mac = nic.is_object() ? nic.value("mac", "") : "";
    std::erase(mac, ':');
    std::transform(mac.begin(), mac.end(), mac.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (mac.size() != 12 || mac.find_first_not_of("0123456789abcdef") != std::string::npos) {
      return DataError("a NIC has no MAC address ('" + mac + "'), and NAPI knows NICs by MAC");
    }
    const std::string file = step.new_uuid + ".nic-" + mac + ".json";
    json owned = {{"belongs_to_uuid", step.new_uuid},
                  {"belongs_to_type", "zone"},
                  {"cn_uuid", options_.server_uuid}};
    ASSIGN_OR_RETURN(auto answer, CallNapi("/nics/" + mac, "PUT", owned, file));
    if (answer.first == 404) {
      json created = owned;
      created["mac"] = nic["mac"];
      for (const char* key : {"ip", "network_uuid", "nic_tag", "vlan_id"}) {
        if (nic.contains(key)) created[key] = nic[key];
      }
      created["owner_uuid"] = step.payload.value("owner_uuid", json());
      ASSIGN_OR_RETURN(answer, CallNapi("/nics", "POST", created, file));
    }
    if (answer.first != 200) {
      return IoError("NAPI answered " + std::to_string(answer.first) + " for NIC " + mac + ": " +
                     answer.second);
    }
    return Status::Ok();
  }

  Result<StepResult> AdoptInstance(const Step& step) override {
    const std::string what = "adopt " + step.alias + " (" + step.new_uuid + ")";
    if (options_.server_uuid.empty()) return ConfigError(what + ": no server uuid (node.uuid)");
    if (!step.payload.is_object()) return DataError(what + ": the step has no adopt object");
    for (const json& nic : step.payload.value("nics", json::array())) {
      if (Status handed = HandOverNic(step, nic); !handed.ok()) return handed.WithContext(what);
    }
    auto r = MustRun({options_.vmadm, "update", step.new_uuid, "do_not_inventory=false"});
    if (!r.ok()) return r.status().WithContext(what);
    return StepResult{0, false};
  }

  Result<StepResult> RegisterSapi(const Step& step) override {
    if (Status known = WaitUntilVmapiKnows(step); !known.ok()) {
      return known.WithContext("register SAPI instance " + step.alias);
    }
    ASSIGN_OR_RETURN(std::string record, WriteWorkFile(step.new_uuid + ".sapi.json", step.payload));
    std::vector<std::string> argv = options_.sapi_register;
    argv.push_back("-d");
    argv.push_back("@" + record);
    auto r = MustRun(argv);
    if (!r.ok()) return r.status().WithContext("register SAPI instance " + step.alias);
    return StepResult{0, false};
  }

  Env& env_;
  SmartosBackendOptions options_;
};

}  // namespace

std::unique_ptr<Backend> NewSmartosBackend(Env& env, SmartosBackendOptions options) {
  return std::make_unique<SmartosBackend>(env, std::move(options));
}

}  // namespace lifeboat::restore
