// Providers: where the objects a node exports live on its local filesystem.
//
// A Provider does not hash or walk anything; it says, for one point in time
// (a ProviderSnapshot), which local file holds each instance's VM payload and
// SAPI record, which local directory holds its delegate dataset tree, and
// where each image's manifest and file are. The Exporter (exports/exporter.h)
// walks and hashes those through the Env.
//
// Two providers:
//   - DirProvider: an export root laid out like the export paths
//     (vms/<uuid>.json, sapi/<uuid>.json, sapi/application.json,
//     sapi/services/<service>.json, datasets/<uuid>/..., images/<uuid>/{manifest.json,file}).
//   - the smartos provider (MakeSmartosProvider): `vmadm lookup -j
//     tags.smartdc_type=core`, a ZFS snapshot of zones/<uuid>/data per snapshot
//     (destroyed when the snapshot object is destroyed), `imgadm get <uuid>`,
//     and image files made by `zfs send <pool>/<image_uuid>@final`, cached by
//     image uuid (images are immutable).
#ifndef LIFEBOAT_EXPORTS_PROVIDER_H_
#define LIFEBOAT_EXPORTS_PROVIDER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/env.h"
#include "base/status.h"
#include "syncproto/manifest_filter.h"

namespace lifeboat::exports {

// Where one instance's objects are, for one snapshot. Paths are absolute
// local paths readable through the Env.
struct InstanceSource {
  std::string uuid;
  std::string payload_path;  // VM payload JSON (required)
  std::string sapi_path;     // SAPI instance record; "" when there is none
  std::string dataset_path;  // root directory of the delegate dataset tree; "" when none
};

// Something a provider could not get right for this snapshot that is not the
// exporter's to find (a SAPI record that could not be refreshed, say). The
// exporter logs it and adds it to the warnings of the instances it concerns
// (syncproto::InstanceWarning), so pullers, `status` and readiness see it.
struct ProviderWarning {
  // Which instances it concerns: the one named by `instance_uuid` when set,
  // else every instance of `service` when set, else every instance.
  std::string instance_uuid;
  std::string service;
  std::string path;    // the export path concerned ("sapi/<uuid>.json")
  std::string reason;  // stable while the cause lasts (no timings): it is instance metadata
};

struct ImageSource {
  std::string uuid;
  std::string manifest_path;  // IMGAPI manifest JSON
  std::string file_path;      // the image file
};

// One point-in-time view of the provider's objects. Destroying it releases
// what it pinned (the smartos provider destroys its ZFS snapshots there, and
// logs a failure to do so). Used by one thread at a time.
class ProviderSnapshot {
 public:
  virtual ~ProviderSnapshot() = default;

  // Every instance the provider offers. A provider may already drop instances
  // of services outside the filter it was opened with (the smartos provider
  // does, from the payload it got); the exporter filters again on the
  // payload's tags.smartdc_role, so a provider is free not to.
  virtual const std::vector<InstanceSource>& instances() const = 0;

  // SAPI application record ("" when none) and service records by service name.
  virtual std::string application_path() const = 0;
  virtual std::map<std::string, std::string> service_record_paths() const = 0;

  // Where image `uuid` is; produces it first if needed (smartos: imgadm get +
  // zfs send, once per uuid). kNotFound when the provider has no such image.
  virtual Result<ImageSource> Image(const std::string& uuid) = 0;

  // False when the device number of a file may differ between snapshots of
  // the same unchanged file (a ZFS snapshot is its own mount): the exporter's
  // stat cache then ignores dev.
  virtual bool stable_devices() const { return true; }

  // True when the dataset paths are the live directories, the same in every
  // snapshot (the dir provider): the exporter may then watch them for
  // changes (exports/dir_watch.h) and list only what changed. False for a
  // provider whose snapshots are frozen copies at new paths (ZFS snapshots).
  virtual bool live_paths() const { return false; }

  // What the provider could not get right for this snapshot (none by default).
  virtual std::vector<ProviderWarning> warnings() const { return {}; }
};

class Provider {
 public:
  virtual ~Provider() = default;
  virtual const char* name() const = 0;
  // Takes a snapshot for one scan/pull. Thread-safe; snapshots are independent.
  virtual Result<std::unique_ptr<ProviderSnapshot>> Snapshot(
      const syncproto::ServiceFilter& filter) = 0;
};

// The `dir` provider over `root` (which must exist when Snapshot is called;
// missing subdirectories mean "nothing of that kind"). Reads nothing but
// directory listings when taking a snapshot. `env` must outlive it.
std::unique_ptr<Provider> MakeDirProvider(Env& env, std::string root);

struct SmartosOptions {
  // Directory holding vmadm, imgadm and zfs; "" searches $PATH (execvp).
  std::string command_dir;
  // Mount point prefix of the zones pool's datasets: the delegate dataset of
  // <uuid> is mounted at <zones_root>/<uuid>/data.
  std::string zones_root = "/zones";
  std::string pool = "zones";  // ZFS pool holding zones/<uuid>/data and zones/<image_uuid>
  // Where the provider keeps payload files and zfs-send image files
  // (required; created 0700). Image files are kept across restarts.
  std::string cache_dir;
  // The SAPI source (`export.sapi_command`): a `curl -i` wrapper called as
  // `<argv...> <route>` that prints the status line, headers and JSON body
  // (the headnode's sdc-sapi). argv[0] without '/' is looked up like vmadm.
  // Each Snapshot asks it for the `sdc` application, its services and the
  // instances of each exported service, and keeps what SAPI answered under
  // <cache_dir>/sapi/ laid out like the dir provider's sapi/ folder
  // (<uuid>.json, application.json, services/<svc>.json), only for the
  // exported instances and their services. A call that fails (exit status,
  // timeout, HTTP status other than 200, invalid JSON, a record that does not
  // belong where it was asked for) never fails the snapshot and never
  // replaces a kept record: the last good one stays exported, and the
  // snapshot's warnings() say what could not be refreshed. A record SAPI
  // answered without (200, not listed) is no longer exported. Empty: no
  // SAPI records at all.
  std::vector<std::string> sapi_command;
  int64_t sapi_timeout_ms = 60000;            // per SAPI call; the command is killed after it
  uint64_t max_command_output = 64ull << 20;  // bytes of stdout kept from one command
  // At creation, destroy the snapshots a crashed process left behind: every
  // <pool>/<uuid>/data@lifeboat-<id> (the names this provider gives; nothing
  // else is touched). Only the one process that takes snapshots on this node
  // (the agent) may set it: another process's snapshots may be in use.
  bool destroy_leftover_snapshots = false;
};

// The `smartos` provider. Commands run with fork/exec (no shell); their
// stderr is put in the error message when they fail. `env` must outlive it.
Result<std::unique_ptr<Provider>> MakeSmartosProvider(Env& env, SmartosOptions options);

// Runs `argv` (argv[0] looked up in `command_dir`, or $PATH when empty)
// without a shell and returns its stdout; fails when it exits non-zero (the
// message names the command, exit status and stderr) or prints more than
// `max_output` bytes. When `stdout_fd` >= 0, stdout goes there instead and
// the returned string is empty. Exposed for the smartos provider's tests.
Result<std::string> RunCommand(const std::string& command_dir, const std::vector<std::string>& argv,
                               uint64_t max_output, int stdout_fd = -1);

}  // namespace lifeboat::exports

#endif  // LIFEBOAT_EXPORTS_PROVIDER_H_
