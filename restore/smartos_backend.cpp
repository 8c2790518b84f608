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
//   retire_old_records  for the lost instance's uuid OLD, after every
//                    instance was adopted (docs/triton-sapi-vmapi-facts.md,
//                    "Cleaning up a lost instance's records"):
//                    refuse when vmadm here knows OLD (its destroy would be
//                    real) or when NAPI still says a NIC the new VM uses
//                    belongs to OLD (<napi...> "/nics?belongs_to_uuid=OLD");
//                    <vmapi_get...> /vms/OLD, PUT back whole (PutVm replaces
//                    the record) with state and zone_state "destroyed" and
//                    nics [] (VMAPI's destroy job deletes every MAC its
//                    record lists, the new VM's included: sdc-vmapi
//                    lib/workflows/destroy.js removeNics);
//                    <sapi...> /instances/OLD -X DELETE: 204 or 404 done; a
//                    500 (SAPI keeps the record while OLD's server is in
//                    CNAPI and not running) is a warning naming the manual
//                    follow-up, not a failure; then the NICs NAPI still
//                    gives OLD (none the new VM uses) deleted, freeing their
//                    IPs (404: gone already). Safe to run again.
//
// Every command runs without a shell (RunCommand); a non-zero exit fails the
// step with the command line and its stderr.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <functional>
#include <memory>
#include <set>
#include <string_view>
#include <thread>
#include <utility>

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
    const std::string path = "/vms/" + step.new_uuid;
    auto known = [&]() -> Result<bool> {
      ASSIGN_OR_RETURN(ApiAnswer got, CallApi(options_.vmapi_get, path, "GET"));
      if (got.status == 200 || got.status == 404) return got.status == 200;
      return UnexpectedAnswer(CommandLine(options_.vmapi_get) + " " + path, got, "200 or 404");
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

  struct ApiAnswer {
    int status = 0;  // 0: no HTTP status line
    std::string body;
  };

  // `<base...> <path>`, plus `-X <method>` unless GET and `-d @<file>` (the
  // work file `file` holding `body`) when body is not null: a `curl -i`
  // wrapper's HTTP status and body. A non-zero exit is an error.
  Result<ApiAnswer> CallApi(const std::vector<std::string>& base, const std::string& path,
                            std::string_view method, const json* body = nullptr,
                            const std::string& file = "") {
    std::vector<std::string> argv = base;
    argv.push_back(path);
    if (method != "GET") {
      argv.push_back("-X");
      argv.push_back(std::string(method));
    }
    if (body != nullptr) {
      ASSIGN_OR_RETURN(std::string body_file, WriteWorkFile(file, *body));
      argv.push_back("-d");
      argv.push_back("@" + body_file);
    }
    ASSIGN_OR_RETURN(CommandResult r, MustRun(argv));
    const CurlAnswer answer = ParseCurlOutput(r.out);
    return ApiAnswer{answer.status, TrimTrailingSpace(answer.body)};
  }

  // The error for an answer other than `expected` ("200", "204 or 404").
  static Status UnexpectedAnswer(const std::string& call, const ApiAnswer& answer,
                                 const std::string& expected) {
    return IoError(call + " answered " +
                   (answer.status == 0 ? std::string("without an HTTP status line")
                                       : "HTTP " + std::to_string(answer.status)) +
                   " (" + expected + " expected)" +
                   (answer.body.empty() ? std::string() : ": " + answer.body));
  }

  // A MAC as NAPI wants it in a path: 12 lowercase hex digits, no colons;
  // "" when `mac` is not a MAC address.
  static std::string NapiMac(std::string mac) {
    std::erase(mac, ':');
    std::transform(mac.begin(), mac.end(), mac.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (mac.size() != 12 || mac.find_first_not_of("0123456789abcdef") != std::string::npos) {
      return "";
    }
    return mac;
  }

  // Makes NAPI say the NIC `nic` (of the create payload) belongs to the new
  // VM: PUT when NAPI knows its MAC (the old VM's NIC), POST when it never did.
  Status HandOverNic(const Step& step, const json& nic) {
    const std::string given = nic.is_object() ? nic.value("mac", "") : "";
    const std::string mac = NapiMac(given);
    if (mac.empty()) {
      return DataError("a NIC has no MAC address ('" + given + "'), and NAPI knows NICs by MAC");
    }
    const std::string file = step.new_uuid + ".nic-" + mac + ".json";
    json owned = {{"belongs_to_uuid", step.new_uuid},
                  {"belongs_to_type", "zone"},
                  {"cn_uuid", options_.server_uuid}};
    ASSIGN_OR_RETURN(ApiAnswer answer, CallApi(options_.napi, "/nics/" + mac, "PUT", &owned, file));
    if (answer.status == 404) {
      json created = owned;
      created["mac"] = nic["mac"];
      for (const char* key : {"ip", "network_uuid", "nic_tag", "vlan_id"}) {
        if (nic.contains(key)) created[key] = nic[key];
      }
      created["owner_uuid"] = step.payload.value("owner_uuid", json());
      ASSIGN_OR_RETURN(answer, CallApi(options_.napi, "/nics", "POST", &created, file));
    }
    if (answer.status != 200) {
      return IoError("NAPI answered " + std::to_string(answer.status) + " for NIC " + mac + ": " +
                     answer.body);
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

  // The NICs NAPI says belong to the old VM, as NAPI MACs, for dropping; an
  // error when one of them is a NIC the new VM uses (adopt_instance's
  // handover did not hold: the old VM's destroy would take it from the new one).
  Result<std::vector<std::string>> OldNicsToDrop(const Step& step) {
    std::set<std::string> in_use;
    for (const json& nic : step.payload.value("nics", json::array())) {
      if (nic.is_object()) in_use.insert(NapiMac(nic.value("mac", "")));
    }
    const std::string path = "/nics?belongs_to_uuid=" + step.old_uuid;
    ASSIGN_OR_RETURN(ApiAnswer answer, CallApi(options_.napi, path, "GET"));
    if (answer.status != 200) return UnexpectedAnswer("NAPI GET " + path, answer, "200");
    json nics = json::parse(answer.body, nullptr, false);
    if (!nics.is_array()) return DataError("NAPI GET " + path + " answered no JSON array");
    std::vector<std::string> drop;
    std::vector<std::string> still_old;
    for (const json& nic : nics) {
      const std::string mac = nic.is_object() ? NapiMac(nic.value("mac", "")) : "";
      if (mac.empty()) return DataError("NAPI GET " + path + " listed a NIC without a MAC");
      (in_use.contains(mac) ? still_old : drop).push_back(mac);
    }
    if (!still_old.empty()) {
      std::string macs;
      for (const std::string& m : still_old) macs += (macs.empty() ? "" : ", ") + m;
      return DataError("NAPI still says NIC(s) " + macs + " belong to the old VM, but " +
                       step.alias + " (" + step.new_uuid +
                       ") uses them: their handover (adopt_instance) did not hold, and "
                       "destroying the old VM would delete them; nothing was changed. Hand them "
                       "over (sdc-napi /nics/<mac> -X PUT -d '{\"belongs_to_uuid\":\"" +
                       step.new_uuid + "\",\"belongs_to_type\":\"zone\",\"cn_uuid\":\"" +
                       options_.server_uuid + "\"}'), then run the restore again");
    }
    return drop;
  }

  // Marks the old VM's VMAPI record destroyed, with no NICs, keeping every
  // other field (PutVm replaces the whole record). Returns the record's
  // server_uuid ("" when VMAPI does not know the VM) and whether it changed.
  Result<std::pair<std::string, bool>> MarkOldVmDestroyed(const Step& step) {
    const std::string path = "/vms/" + step.old_uuid;
    ASSIGN_OR_RETURN(ApiAnswer got, CallApi(options_.vmapi_get, path, "GET"));
    if (got.status == 404) return std::pair<std::string, bool>("", false);
    if (got.status != 200) return UnexpectedAnswer("VMAPI GET " + path, got, "200 or 404");
    json vm = json::parse(got.body, nullptr, false);
    if (!vm.is_object()) return DataError("VMAPI GET " + path + " answered no VM object");
    std::string server = vm.value("server_uuid", json()).is_string()
                             ? vm["server_uuid"].get<std::string>()
                             : std::string();
    const bool done = vm.value("state", json()) == "destroyed" &&
                      vm.value("zone_state", json()) == "destroyed" &&
                      vm.value("nics", json()) == json::array();
    if (done) return std::pair(std::move(server), false);
    vm["state"] = "destroyed";
    vm["zone_state"] = "destroyed";
    vm["nics"] = json::array();
    ASSIGN_OR_RETURN(ApiAnswer put, CallApi(options_.vmapi_get, path, "PUT", &vm,
                                            step.old_uuid + ".vmapi-destroyed.json"));
    if (put.status != 200) return UnexpectedAnswer("VMAPI PUT " + path, put, "200");
    return std::pair(std::move(server), true);
  }

  // DELETE of the old SAPI instance: "" when it is gone (204, or 404 from an
  // earlier run), the warning when SAPI kept it (500), else an error.
  Result<std::string> DeleteOldSapiInstance(const Step& step, const std::string& server,
                                            bool* changed) {
    const std::string path = "/instances/" + step.old_uuid;
    ASSIGN_OR_RETURN(ApiAnswer answer, CallApi(options_.sapi, path, "DELETE"));
    *changed = answer.status == 204;
    if (answer.status == 204 || answer.status == 404) return std::string();
    if (answer.status != 500) return UnexpectedAnswer("SAPI DELETE " + path, answer, "204 or 404");
    const std::string dead = server.empty() ? "<its server_uuid>" : server;
    const std::string why = "SAPI kept the old instance " + step.old_uuid + " (DELETE " + path +
                            " answered HTTP 500" + (answer.body.empty() ? "" : ": " + answer.body) +
                            "), as it does while the old VM's server " + dead +
                            " is in CNAPI and not running.";
    const std::string safe =
        " Its VMAPI record is marked destroyed without NICs, so " + step.alias + " keeps its NICs.";
    const std::string todo =
        " To finish by hand once that server will not come back: sdc-cnapi /servers/" + dead +
        " -X DELETE, then sdc-sapi " + path + " -X DELETE (docs/operator-guide.md, section 6)";
    return why + safe + todo;
  }

  Result<StepResult> RetireOldRecords(const Step& step) override {
    const std::string what = "retire the records of lost instance " + step.old_uuid +
                             " (replaced by " + step.alias + " " + step.new_uuid + ")";
    auto here = VmExists(step.old_uuid);
    if (!here.ok()) return here.status().WithContext(what);
    if (*here) {
      return DataError(what + ": vmadm on this node knows VM " + step.old_uuid +
                       ", so it is not lost here and destroying its records would destroy it");
    }
    auto drop = OldNicsToDrop(step);
    if (!drop.ok()) return drop.status().WithContext(what);
    auto marked = MarkOldVmDestroyed(step);
    if (!marked.ok()) return marked.status().WithContext(what);
    bool sapi_changed = false;
    auto warning = DeleteOldSapiInstance(step, marked->first, &sapi_changed);
    if (!warning.ok()) return warning.status().WithContext(what);
    for (const std::string& mac : *drop) {
      auto answer = CallApi(options_.napi, "/nics/" + mac, "DELETE");
      if (!answer.ok()) return answer.status().WithContext(what);
      if (answer->status != 204 && answer->status != 404) {
        return UnexpectedAnswer("NAPI DELETE /nics/" + mac, *answer, "204 or 404")
            .WithContext(what);
      }
    }
    StepResult result;
    result.already_done = !marked->second && !sapi_changed && drop->empty();
    result.warning = std::move(*warning);
    return result;
  }

  Env& env_;
  SmartosBackendOptions options_;
};

}  // namespace

std::unique_ptr<Backend> NewSmartosBackend(Env& env, SmartosBackendOptions options) {
  return std::make_unique<SmartosBackend>(env, std::move(options));
}

}  // namespace lifeboat::restore
