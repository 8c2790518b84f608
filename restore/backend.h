// Restore backends: where and how the steps of a plan take effect.
//
//   dir      (embedded default) images into <target>/images/<uuid>/, instances
//            into <target>/zones/<new-uuid>/ with vm.json, sapi.json, data/
//   smartos  imgadm / vmadm / zfs on a SmartOS headnode
//   exec     one operator command per step kind, the step as JSON on stdin
//
// Contract for every backend: Run() of a step is safe to repeat after an
// earlier Run() of the same step failed or was cut short by a crash (the
// journal marks a step done only after Run() returned OK, so a crash between
// the two repeats the step). Backends are used from one thread at a time.
#ifndef LIFEBOAT_RESTORE_BACKEND_H_
#define LIFEBOAT_RESTORE_BACKEND_H_

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/env.h"
#include "base/status.h"
#include "restore/plan.h"
#include "restore/tree_copy.h"

namespace lifeboat::restore {

struct StepResult {
  uint64_t bytes = 0;         // bytes the step wrote (data copied, image installed)
  bool already_done = false;  // the target already had the step's effect (a resumed restore)
  std::string note;           // why nothing was done, when the backend skipped the step
  // Something the step could not do that does not fail the restore, and what
  // the operator must do about it (kept in the journal, shown on every run).
  std::string warning;
};

// What a step needs besides its own fields (not part of the journal).
struct StepInput {
  // restore_data: the exported mode and mtime of each entry of the data tree
  // (the catalog's on-disk copy may differ); null = take them from disk.
  const TreeMeta* data_meta = nullptr;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;    // "dir", "smartos", "exec"
  virtual std::string target() const = 0;  // what it restores into, for messages and the journal

  // Whether image `uuid` is installed on the target.
  virtual Result<bool> HasImage(const std::string& uuid) = 0;
  // Aliases of instances already on the target (so new aliases avoid them).
  virtual Result<std::set<std::string>> TargetAliases() = 0;
  // Checks, before any step runs, that the backend can run every step of `plan`.
  virtual Status Check(const Plan& plan) {
    (void)plan;
    return Status::Ok();
  }
  // The instances of `service` on the target node and whether each looks
  // healthy, for the HA services (HaServices()) everything restored needs;
  // nullopt when the backend cannot tell (no such notion on its target).
  struct LocalInstance {
    std::string uuid;
    std::string alias;
    bool healthy = false;
    std::string detail;  // why not healthy
  };
  virtual Result<std::optional<std::vector<LocalInstance>>> LocalInstances(
      const std::string& service) {
    (void)service;
    return std::optional<std::vector<LocalInstance>>();
  }
  // Runs one step. Errors name the step, the object and the cause.
  virtual Result<StepResult> Run(const Step& step, const StepInput& input) = 0;
};

// A backend with one method per step kind; Run() dispatches on the kind.
// The dir and smartos backends are built on it.
class StepwiseBackend : public Backend {
 public:
  Result<StepResult> Run(const Step& step, const StepInput& input) final;

 protected:
  virtual Result<StepResult> InstallImage(const Step& step) = 0;
  virtual Result<StepResult> CreateInstance(const Step& step) = 0;
  virtual Result<StepResult> RestoreData(const Step& step, const StepInput& input) = 0;
  virtual Result<StepResult> AwaitInstance(const Step& step) = 0;
  virtual Result<StepResult> AdoptInstance(const Step& step) = 0;
  virtual Result<StepResult> RegisterSapi(const Step& step) = 0;
  virtual Result<StepResult> RetireOldRecords(const Step& step) = 0;
  // Runs before every step (e.g. creating the target); an error stops the step.
  virtual Status BeforeStep() { return Status::Ok(); }
};

// ---- dir --------------------------------------------------------------------

struct DirBackendOptions {
  std::string target;  // created (0700) when missing
  int copy_threads = 4;
  bool set_owners = false;  // give restored data its exported owners (needs root)
};
std::unique_ptr<Backend> NewDirBackend(Env& env, DirBackendOptions options);

// Refuses (kUsage, naming both) a directory Lifeboat would write restored
// data into (a dir backend's target, a drill's scratch dir) that is the
// catalog's data_dir, inside it, or contains it: the agent owns every name
// under data_dir and would delete or replace what a restore put there.
// Symlinks are resolved (for a path that does not exist yet, its deepest
// existing parent) before comparing.
Status CheckOutsideCatalog(const std::string& dir, const std::string& data_dir,
                           const std::string& what);

// ---- smartos ----------------------------------------------------------------

struct SmartosBackendOptions {
  std::string imgadm = "imgadm";  // command names (PATH lookup) or paths
  std::string vmadm = "vmadm";
  std::string zfs = "zfs";
  // SAPI registration: argv to which "-d" "@<record file>" is appended.
  // SAPI's CreateInstance adopts the VM of the record's uuid when VMAPI knows
  // it and provisions a new VM with that uuid when it does not; it ignores
  // `exists` (sdc-sapi lib/server/endpoints/instances.js, lib/server/model.js;
  // docs/triton-sapi-vmapi-facts.md). So registration first waits until
  // `<vmapi_get...> /vms/<uuid>` answers HTTP 200 (sdc-vmapi prints the
  // response headers first, as `curl -i`), polling every vmapi_poll_ms for at
  // most vmapi_wait_ms (vm-agent reports a new VM within seconds, within 60 s
  // on platforms without `vmadm events`).
  std::vector<std::string> sapi_register = {"sdc-sapi", "/instances", "-X", "POST"};
  // VMAPI: argv to which "/vms/<uuid>" (GET), or "/vms/<uuid>" "-X" "PUT"
  // "-d" "@<file>" (retire_old_records) is appended.
  std::vector<std::string> vmapi_get = {"sdc-vmapi"};
  // retire_old_records: argv to which "/instances/<old uuid>" "-X" "DELETE"
  // is appended (a `curl -i` wrapper, like sdc-vmapi).
  std::vector<std::string> sapi = {"sdc-sapi"};
  // adopt_instance: argv to which "/nics/<mac>" "-X" "PUT"|"POST" "-d"
  // "@<file>" is appended (a `curl -i` wrapper, like sdc-vmapi);
  // retire_old_records: "/nics?belongs_to_uuid=<old uuid>" (GET) and
  // "/nics/<mac>" "-X" "DELETE".
  std::vector<std::string> napi = {"sdc-napi"};
  std::string server_uuid;  // this node (the NICs' cn_uuid); required for adopt_instance
  int64_t vmapi_wait_ms = 180'000;
  // await_instance: until the zone runs, its setup_complete exists and
  // `<svcs> -xvz <uuid>` prints nothing, for at most await_wait_ms.
  std::string svcs = "svcs";
  int64_t await_wait_ms = 15 * 60'000;
  int64_t poll_ms = 2'000;      // between two polls of VMAPI or of the zone
  std::string zpool = "zones";  // the delegate dataset is <zpool>/<uuid>/data
  std::string work_dir;         // where payload files for vmadm/sdc-sapi are written (required)
  int copy_threads = 4;
  bool set_owners = true;  // give restored data its exported owners (the backend runs as root)
};
std::unique_ptr<Backend> NewSmartosBackend(Env& env, SmartosBackendOptions options);

// ---- exec -------------------------------------------------------------------

struct ExecBackendOptions {
  // argv per step kind name ("install_image", "create_instance", "restore_data",
  // "await_instance", "adopt_instance", "register_sapi", "retire_old_records").
  // The last four are
  // optional (their steps are then skipped with a note); a plan with another
  // step kind that has no command fails Check().
  std::map<std::string, std::vector<std::string>> commands;
  // Optional: argv run with the image uuid appended; exit 0 = installed,
  // 1 = not installed, anything else an error. Without it no image counts as
  // installed.
  std::vector<std::string> has_image;
  std::string target = "exec";  // recorded in the journal
};
std::unique_ptr<Backend> NewExecBackend(ExecBackendOptions options);

}  // namespace lifeboat::restore

#endif  // LIFEBOAT_RESTORE_BACKEND_H_
