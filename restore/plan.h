// The restore planner: pure, no I/O.
//
// Given what was selected from the catalog (instances with their VM payload,
// SAPI record, image chain and delegate data), every alias known anywhere,
// and the options, it produces the ordered list of steps a backend executes:
//
//   install_image    root of each origin chain first, once per image across
//                    the whole plan, skipping images the target already has
//   create_instance  the new VM payload (new uuid, fresh alias, the fields
//                    `vmadm create` refuses removed, NICs per the IP option)
//   restore_data     the delegate dataset tree copied into the new instance
//   await_instance   wait until the new instance is up (zone running, its
//                    services online) before the next instance is created
//   adopt_instance   hand the instance to Triton's APIs: its NICs (which keep
//                    the old MACs and IPs) moved in NAPI from the old VM to
//                    the new one, then the VM shown to vm-agent and net-agent
//   register_sapi    the SAPI record with the old uuid replaced by the new one
//   retire_old_records  the lost instance's own records (VMAPI VM, SAPI
//                    instance, NAPI NICs the new VM does not use) marked
//                    destroyed or removed; left out with keep_old_records
//
// in two phases: first, instance by instance in service order (RFD 67's by
// default; services not in the order come last, by name; then by old alias
// and uuid), its images, create_instance, restore_data and await_instance;
// then, once every instance is up (napi, vmapi and sapi among them when they
// were lost too), per instance in the same order adopt_instance and
// register_sapi; last, once every instance is adopted and registered, per
// instance in the same order retire_old_records (the old records are only
// dropped when nothing still needs them, and VMAPI's destroy of the old VM
// deletes the NICs its record lists, so it must come after the NICs were
// handed to the new VM). SAPI adopts a VM only once VMAPI knows it, and net-agent
// strips a NIC NAPI says belongs to another VM (docs/triton-sapi-vmapi-facts.md),
// so both wait for the services they talk to. New uuids are
// random v4 uuids drawn from a seedable generator, so a plan is a pure
// function of its inputs and the seed (tests pin the seed; the restorer pins
// uuids and aliases of a resumed restore through `assigned`).
#ifndef LIFEBOAT_RESTORE_PLAN_H_
#define LIFEBOAT_RESTORE_PLAN_H_

#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"
#include "base/text.h"

namespace lifeboat::restore {

// RFD 67's restore order of the Triton core services.
const std::vector<std::string>& DefaultServiceOrder();

// Whether `vmadm create` accepts `property` for `brand` (joyent,
// joyent-minimal, lx, kvm, bhyve; "" is joyent), per smartos-live's
// proptable.js (commit named in plan.cpp). NewVmPayload keeps only these.
bool CreateAcceptsVmProperty(std::string_view brand, std::string_view property);
bool KnownVmBrand(std::string_view brand);

// Whether `vmadm create` accepts `sub` in an entry of the list property `list`
// ("disks", "nics", "filesystems", "pci_devices") for `brand`: the
// proptable.js entries "<list>.*.<sub>" that allow 'add', which is how VM.js
// validates the entries of a create payload.
bool CreateAcceptsVmSubProperty(std::string_view brand, std::string_view list,
                                std::string_view sub);

// Whether a `vmadm get` object has a delegated dataset: `datasets` lists
// <zfs_filesystem>/data (vmadm get never prints delegate_dataset), or an
// older record carries delegate_dataset: true.
bool HasDelegatedDataset(const nlohmann::json& vm);

// NIC fields that carry the address; removed with new_ips so the new NIC gets
// a fresh IP on the same network (nic_tag, network_uuid, vlan_id are kept).
const std::vector<std::string>& NicAddressFields();

// A point in time for -j output and journals: ISO 8601 UTC with milliseconds,
// null for 0 (never / unknown). The same rule as agent::WallOrNull, which
// restore/ cannot include.
nlohmann::json IsoOrNull(int64_t wall_ms);

// One image of an instance's origin chain.
struct ImageSource {
  std::string uuid;
  std::string origin;         // parent image uuid, "" for a root image
  std::string manifest_path;  // on-disk manifest.json in the catalog ("" when not held)
  std::string file_path;      // on-disk image file in the catalog ("" when not held)
  uint64_t file_size = 0;
  std::string file_digest;  // XXH3-128 hex of the file as recorded by the catalog
  bool on_target = false;   // the target already has it installed
};

// One instance selected for restore, as read from the catalog.
struct InstanceSource {
  std::string uuid;
  std::string alias;
  std::string service;
  std::string peer;            // the node it was pulled from
  uint64_t generation = 0;     // the peer generation it comes from
  uint64_t seq = 0;            // the catalog's local generation number it was read from
  nlohmann::json vm_payload;   // the `vmadm get` object
  nlohmann::json sapi_record;  // null when the instance has none
  std::string image_uuid;
  std::vector<ImageSource> image_chain;  // root first, ending with image_uuid
  std::string data_path;                 // on-disk delegate dataset tree ("" when none)
  uint64_t data_bytes = 0;
  uint64_t data_files = 0;
  int64_t pulled_ms = 0;  // when the catalog last confirmed this copy (wall ms; 0 unknown)
};

struct Assignment {
  std::string new_uuid;
  std::string alias;
};

struct PlanOptions {
  std::vector<std::string> service_order = DefaultServiceOrder();
  bool new_ips = false;  // false: reuse the old NIC addresses (their owner is dead)
  uint64_t seed = 0;     // uuid generator seed; 0 draws one from std::random_device
  // Uuids and aliases fixed in advance (a resumed restore), by old uuid.
  std::map<std::string, Assignment> assigned;
  // The uuid of the server that receives the instances; written into the SAPI
  // record's params.server_uuid (removed when empty).
  std::string target_server_uuid;
  // Plan a retire_old_records step per instance (false: --keep-old-records,
  // the operator cleans up the lost instances' records by hand).
  bool retire_old_records = true;
};

enum class StepKind {
  kInstallImage,
  kCreateInstance,
  kRestoreData,
  kAwaitInstance,
  kAdoptInstance,
  kRegisterSapi,
  kRetireOldRecords
};
std::string_view StepKindName(StepKind kind);  // "install_image", ...
bool ParseStepKind(std::string_view name, StepKind* out);

// One unit of work. `id` is stable across reruns ("install_image:<uuid>",
// "create_instance:<old uuid>", ...) and is what the journal records.
struct Step {
  StepKind kind = StepKind::kInstallImage;
  std::string id;

  // install_image
  std::string image_uuid;
  std::string image_origin;
  std::string manifest_path;
  std::string file_path;
  std::string file_digest;

  // instance steps
  std::string old_uuid;
  std::string new_uuid;
  std::string alias;
  std::string service;
  // create_instance: VM payload; register_sapi: SAPI record; adopt_instance
  // and retire_old_records: {"owner_uuid", "nics": [{mac, ip, network_uuid,
  // nic_tag, vlan_id}]} of the new VM (AdoptPayload)
  nlohmann::json payload;
  // create_instance: a restore_data step follows, which starts the instance
  // once its data is in place (a backend that boots instances creates it
  // stopped, so its first-boot setup runs on the restored data, uninterrupted).
  bool start_after_data = false;
  // create_instance: an adopt_instance step follows (a backend whose node
  // agents would act on the new VM hides it from them until then). False in
  // journals written before adopt_instance existed.
  bool adopt_after = false;
  std::string data_path;   // restore_data: source tree
  uint64_t bytes = 0;      // bytes the step moves (image file, data tree)

  // The step as a JSON object (what the exec backend gets on stdin, what the
  // journal stores, what `--dry-run -j` prints). FromJson is its inverse.
  nlohmann::json ToJson() const;
  static Result<Step> FromJson(const nlohmann::json& j);
};

struct PlannedInstance {
  std::string old_uuid;
  std::string old_alias;
  std::string new_uuid;
  std::string alias;
  std::string service;
  std::string peer;
  uint64_t generation = 0;
  uint64_t seq = 0;
  uint64_t data_bytes = 0;
  int64_t pulled_ms = 0;  // the restore point: when the copy was pulled (wall ms; 0 unknown)

  // The JSON shape shared by the plan (`--dry-run -j`) and the journal:
  // `pulled_at` is ISO 8601 UTC (null when unknown).
  nlohmann::json ToJson() const;
};

struct Skip {
  std::string uuid;
  std::string alias;
  std::string service;
  std::string reason;

  nlohmann::json ToJson() const;
};

struct Plan {
  std::vector<Step> steps;
  std::vector<PlannedInstance> instances;  // in plan order
  std::vector<Skip> skipped;               // instances not planned, and why
  // Whether the plan retires the lost instances' records (retire_old_records
  // steps). False with keep_old_records, and in journals written before the
  // step existed: the records are then left for the operator.
  bool retire_old_records = false;
  uint64_t TotalBytes() const;
  nlohmann::json ToJson() const;
};

// Makes the plan. Instances that cannot be restored (no service tag, an image
// chain with an image neither held nor on the target) are listed in
// `skipped`; a malformed payload (not an object) is a data error.
// `known_aliases` holds every alias the catalog and the target know of.
Result<Plan> MakePlan(const std::vector<InstanceSource>& instances,
                      const std::set<std::string>& known_aliases, const PlanOptions& options);

// The new VM payload for `old` under `new_uuid` / `alias` (exposed for tests):
// only the properties create accepts for its brand, delegate_dataset derived
// from `datasets`, zonename rewritten to the new uuid. Entries of disks, nics,
// filesystems and pci_devices keep only the sub-properties create accepts
// (CreateAcceptsVmSubProperty); a disk that is not a cdrom loses `path` (VM.js
// refuses it without nocreate: vmadm names the new zvol), an image disk its
// block_size, a blank disk its image_size. With new_ips, NICs lose
// NicAddressFields().
nlohmann::json NewVmPayload(const nlohmann::json& old, const std::string& new_uuid,
                            const std::string& alias, bool new_ips);

// What adopt_instance needs of the new VM's create payload: its owner_uuid
// and, per NIC, mac, ip, network_uuid, nic_tag and vlan_id (those present).
nlohmann::json AdoptPayload(const nlohmann::json& create_payload);

// The SAPI record rewritten for the new instance: every string equal to the
// old uuid becomes the new one, params.alias the new alias, params.server_uuid
// the target server (removed when empty).
nlohmann::json NewSapiRecord(const nlohmann::json& old, const std::string& old_uuid,
                             const std::string& new_uuid, const std::string& alias,
                             const std::string& target_server_uuid);

// The lowest `<service>N` (N >= 0) not in `taken`.
std::string LowestFreeAlias(const std::string& service, const std::set<std::string>& taken);

// A random (version 4, RFC 4122 variant) uuid from `rng`.
std::string NewUuidV4(std::mt19937_64& rng);

// base/text.h's, kept under this name for the planner's callers.
using ::lifeboat::IsUuid;

}  // namespace lifeboat::restore

#endif  // LIFEBOAT_RESTORE_PLAN_H_
