#include "restore/plan.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <random>

#include "base/clock.h"

namespace lifeboat::restore {
namespace {

using nlohmann::json;

size_t OrderIndex(const std::vector<std::string>& order, const std::string& service) {
  auto it = std::find(order.begin(), order.end(), service);
  return it == order.end() ? order.size() : static_cast<size_t>(it - order.begin());
}

void ReplaceUuidStrings(json& j, const std::string& from, const std::string& to) {
  if (j.is_string()) {
    if (j.get_ref<const std::string&>() == from) j = to;
  } else if (j.is_array() || j.is_object()) {
    for (auto& v : j) ReplaceUuidStrings(v, from, to);
  }
}

std::string StringField(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return "";
  return it->get<std::string>();
}

uint64_t UintField(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_unsigned()) return 0;
  return it->get<uint64_t>();
}

}  // namespace

const std::vector<std::string>& DefaultServiceOrder() {
  static const std::vector<std::string> kOrder = {
      "assets",  "sapi",     "amonredis", "ufds",   "workflow", "amon",    "sdc", "papi",
      "napi",    "rabbitmq", "imgapi",    "cnapi",  "fwapi",    "vmapi",   "ca",  "mahi",
      "adminui", "cloudapi", "cns",       "docker", "cmon",     "portolan"};
  return kOrder;
}

namespace {

// Which brands accept a property at `vmadm create`: a bit per brand.
enum BrandBit : unsigned {
  kJoyent = 1,
  kJoyentMinimal = 2,
  kLx = 4,
  kKvm = 8,
  kBhyve = 16,
  kAllBrands = 31,
};

unsigned BrandBitOf(std::string_view brand) {
  if (brand.empty() || brand == "joyent") return kJoyent;  // VM.js: a payload without brand is joyent
  if (brand == "joyent-minimal") return kJoyentMinimal;
  if (brand == "lx") return kLx;
  if (brand == "kvm") return kKvm;
  if (brand == "bhyve") return kBhyve;
  return 0;
}

// The top-level properties whose payload.allowed[brand] contains 'create' in
// joyent/smartos-live src/vm/node_modules/proptable.js at commit
// e6da73be09300796409a7feda2c7de4132e85b38 (2021-07-14), extracted from
// exports.properties for the five brands above (data copied, not code).
// Everything else a `vmadm get` prints (v, state, zone_state, zonepath,
// zoneid, zonedid, pid, datasets, create_timestamp, boot_timestamp,
// last_modified, server_uuid, datacenter_name, headnode_id,
// platform_buildstamp, default_gateway, zlog_mode, transition*, exit_*,
// zfs_filesystem, snapshots, hvm, init_restarts, ...) is not a create
// property: vmadm refuses or ignores it, so the planner drops it.
const std::map<std::string, unsigned, std::less<>>& CreateTable() {
  static const std::map<std::string, unsigned, std::less<>> kTable = {
      {"add_pci_devices", kBhyve},
      {"alias", kAllBrands},
      {"archive_on_delete", kAllBrands},
      {"autoboot", kAllBrands},
      {"bhyve_extra_opts", kBhyve},
      {"billing_id", kAllBrands},
      {"boot", kKvm | kBhyve},
      {"bootrom", kBhyve},
      {"brand", kAllBrands},
      {"com1", kBhyve},
      {"com2", kBhyve},
      {"cpu_cap", kAllBrands},
      {"cpu_shares", kAllBrands},
      {"cpu_type", kKvm},
      {"customer_metadata", kAllBrands},
      {"dataset_uuid", kJoyent | kJoyentMinimal | kLx},
      {"delegate_dataset", kJoyent | kJoyentMinimal | kLx},
      {"disk_driver", kKvm | kBhyve},
      {"disks", kKvm | kBhyve},
      {"dns_domain", kJoyent | kJoyentMinimal | kLx},
      {"do_not_inventory", kAllBrands},
      {"docker", kJoyentMinimal | kLx},
      {"filesystems", kJoyent | kJoyentMinimal | kLx},
      {"firewall_enabled", kAllBrands},
      {"flexible_disk_size", kBhyve},
      {"fs_allowed", kJoyent | kJoyentMinimal | kLx},
      {"hostname", kAllBrands},
      {"image_uuid", kAllBrands},
      {"indestructible_delegated", kAllBrands},
      {"indestructible_zoneroot", kAllBrands},
      {"init_name", kJoyent | kJoyentMinimal | kLx},
      {"internal_metadata", kAllBrands},
      {"internal_metadata_namespaces", kAllBrands},
      {"kernel_version", kLx},
      {"limit_priv", kAllBrands},
      {"maintain_resolvers", kJoyent | kJoyentMinimal | kLx},
      {"max_locked_memory", kAllBrands},
      {"max_lwps", kAllBrands},
      {"max_msg_ids", kAllBrands},
      {"max_physical_memory", kAllBrands},
      {"max_sem_ids", kAllBrands},
      {"max_shm_ids", kAllBrands},
      {"max_shm_memory", kAllBrands},
      {"max_swap", kAllBrands},
      {"mdata_exec_timeout", kJoyent | kJoyentMinimal | kLx},
      {"nic_driver", kKvm | kBhyve},
      {"nics", kAllBrands},
      {"nowait", kJoyent | kJoyentMinimal | kLx},
      {"owner_uuid", kAllBrands},
      {"package_name", kJoyent | kJoyentMinimal | kLx | kKvm},
      {"package_version", kJoyent | kJoyentMinimal | kLx | kKvm},
      {"pci_devices", kBhyve},
      {"qemu_extra_opts", kKvm},
      {"qemu_opts", kKvm},
      {"quota", kAllBrands},
      {"ram", kAllBrands},
      {"resolvers", kAllBrands},
      {"restart_init", kJoyent | kJoyentMinimal | kLx},
      {"routes", kAllBrands},
      {"spice_opts", kKvm},
      {"spice_password", kKvm},
      {"spice_port", kKvm},
      {"tags", kAllBrands},
      {"tmpfs", kJoyent | kJoyentMinimal | kLx},
      {"uuid", kAllBrands},
      {"vcpus", kKvm | kBhyve},
      {"vga", kKvm},
      {"virtio_txburst", kKvm},
      {"virtio_txtimer", kKvm},
      {"vnc_password", kKvm | kBhyve},
      {"vnc_port", kKvm | kBhyve},
      {"zfs_data_compression", kJoyent | kJoyentMinimal | kLx},
      {"zfs_data_recsize", kJoyent | kJoyentMinimal | kLx},
      {"zfs_filesystem_limit", kAllBrands},
      {"zfs_io_priority", kAllBrands},
      {"zfs_root_compression", kAllBrands},
      {"zfs_root_recsize", kAllBrands},
      {"zfs_snapshot_limit", kAllBrands},
      {"zfs_storage_pool_name", kJoyent | kJoyentMinimal | kLx | kKvm},
      {"zlog_max_size", kJoyent | kJoyentMinimal | kLx},
      {"zone_dataset_uuid", kKvm | kBhyve},
      {"zonename", kAllBrands},
      {"zpool", kAllBrands},
  };
  return kTable;
}

// The sub-properties of list entries whose payload.allowed[brand] contains
// 'add' in proptable.js at the same commit: VM.js validate() checks every
// entry of a create payload's disks, nics, filesystems and pci_devices as an
// add ("<list>.*.<sub>"), and removes the others with a warning. Deprecated
// and ignored ones (disks.*.image_name, zonexml_size) are left out.
const std::map<std::string, unsigned, std::less<>>& SubPropertyTable() {
  static const std::map<std::string, unsigned, std::less<>> kTable = {
      {"disks.*.block_size", kKvm | kBhyve},
      {"disks.*.boot", kKvm | kBhyve},
      {"disks.*.compression", kKvm | kBhyve},
      {"disks.*.guest_block_size", kBhyve},
      {"disks.*.image_size", kKvm | kBhyve},
      {"disks.*.image_uuid", kKvm | kBhyve},
      {"disks.*.media", kKvm | kBhyve},
      {"disks.*.model", kKvm | kBhyve},
      {"disks.*.nocreate", kKvm | kBhyve},
      {"disks.*.notrim", kBhyve},
      {"disks.*.path", kKvm | kBhyve},
      {"disks.*.pci_slot", kBhyve},
      {"disks.*.refreservation", kKvm | kBhyve},
      {"disks.*.size", kKvm | kBhyve},
      {"disks.*.uuid", kBhyve},
      {"disks.*.zpool", kKvm | kBhyve},
      {"filesystems.*.options", kJoyent | kJoyentMinimal | kLx},
      {"filesystems.*.raw", kJoyent | kJoyentMinimal | kLx},
      {"filesystems.*.source", kJoyent | kJoyentMinimal | kLx},
      {"filesystems.*.target", kJoyent | kJoyentMinimal | kLx},
      {"filesystems.*.type", kJoyent | kJoyentMinimal | kLx},
      {"nics.*.allow_dhcp_spoofing", kAllBrands},
      {"nics.*.allow_ip_spoofing", kAllBrands},
      {"nics.*.allow_mac_spoofing", kAllBrands},
      {"nics.*.allow_restricted_traffic", kAllBrands},
      {"nics.*.allow_unfiltered_promisc", kKvm | kBhyve},
      {"nics.*.allowed_dhcp_cids", kJoyent | kJoyentMinimal | kLx | kKvm},
      {"nics.*.allowed_ips", kAllBrands},
      {"nics.*.blocked_outgoing_ports", kAllBrands},
      {"nics.*.dhcp_server", kAllBrands},
      {"nics.*.gateway", kAllBrands},
      {"nics.*.gateways", kAllBrands},
      {"nics.*.interface", kAllBrands},
      {"nics.*.ip", kAllBrands},
      {"nics.*.ips", kAllBrands},
      {"nics.*.mac", kAllBrands},
      {"nics.*.model", kKvm | kBhyve},
      {"nics.*.mtu", kAllBrands},
      {"nics.*.netmask", kAllBrands},
      {"nics.*.network_uuid", kAllBrands},
      {"nics.*.nic_tag", kAllBrands},
      {"nics.*.primary", kAllBrands},
      {"nics.*.vlan_id", kAllBrands},
      {"nics.*.vrrp_primary_ip", kAllBrands},
      {"nics.*.vrrp_vrid", kAllBrands},
      {"pci_devices.*.path", kBhyve},
      {"pci_devices.*.pci_slot", kBhyve},
  };
  return kTable;
}

bool IsTrue(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() && it->get<bool>();
}

// A `vmadm get` disk as a create entry, beyond the per-property table (VM.js
// validate() and the add_disks check in its create path):
//  - `path` is refused on a disk that is not a cdrom unless nocreate is set
//    ("you cannot specify a path for a disk unless you set nocreate=true");
//    the new zvol's path is vmadm's to choose, so it goes;
//  - a disk cloned from an image takes no block_size (the image's zvol sets
//    it), a blank disk no image_size.
// `size` stays on an image disk: it grows the clone past image_size.
void MakeDiskCreatable(json& disk) {
  const bool cdrom = StringField(disk, "media") == "cdrom";
  if (!cdrom && !IsTrue(disk, "nocreate")) disk.erase("path");
  if (disk.contains("image_uuid")) {
    disk.erase("block_size");
  } else {
    disk.erase("image_size");
  }
}

// Keeps, in every object entry of the list property `list`, only the
// sub-properties create accepts for the brand.
void KeepCreatableEntries(json& entries, std::string_view list, std::string_view brand) {
  if (!entries.is_array()) return;
  for (json& entry : entries) {
    if (!entry.is_object()) continue;
    for (auto it = entry.begin(); it != entry.end();) {
      if (CreateAcceptsVmSubProperty(brand, list, it.key())) {
        ++it;
      } else {
        it = entry.erase(it);
      }
    }
    if (list == "disks") MakeDiskCreatable(entry);
  }
}

}  // namespace

bool CreateAcceptsVmSubProperty(std::string_view brand, std::string_view list,
                                std::string_view sub) {
  std::string key(list);
  key.append(".*.").append(sub);
  auto it = SubPropertyTable().find(key);
  return it != SubPropertyTable().end() && (it->second & BrandBitOf(brand)) != 0;
}

bool KnownVmBrand(std::string_view brand) { return BrandBitOf(brand) != 0; }

bool CreateAcceptsVmProperty(std::string_view brand, std::string_view property) {
  auto it = CreateTable().find(property);
  return it != CreateTable().end() && (it->second & BrandBitOf(brand)) != 0;
}

bool HasDelegatedDataset(const json& vm) {
  // vmadm get never prints delegate_dataset; VM.js creates the delegated
  // dataset as <zfs_filesystem>/data and lists it in `datasets`. An older
  // catalog (or a VMAPI object) may carry delegate_dataset itself.
  if (auto d = vm.find("delegate_dataset"); d != vm.end() && d->is_boolean() && d->get<bool>()) {
    return true;
  }
  auto ds = vm.find("datasets");
  if (ds == vm.end() || !ds->is_array()) return false;
  std::string fs = StringField(vm, "zfs_filesystem");
  if (fs.empty() && !StringField(vm, "zonename").empty()) {
    // VM.js names the zone's dataset <zpool>/<zonename> (zpool "zones" by
    // default); a zone-XML-only object (vmload-xml) lacks zfs_filesystem.
    std::string pool = StringField(vm, "zpool");
    fs = (pool.empty() ? std::string("zones") : pool) + "/" + StringField(vm, "zonename");
  }
  const std::string uuid = StringField(vm, "uuid");
  std::string suffix("/");
  suffix.append(uuid).append("/data");
  for (const json& d : *ds) {
    if (!d.is_string()) continue;
    const std::string& s = d.get_ref<const std::string&>();
    if (!fs.empty() && s == fs + "/data") return true;
    if (!uuid.empty() && s.size() > suffix.size() && std::string_view(s).ends_with(suffix)) {
      return true;
    }
  }
  return false;
}

const std::vector<std::string>& NicAddressFields() {
  static const std::vector<std::string> kFields = {"ip",      "ips",      "netmask",
                                                   "gateway", "gateways", "mac"};
  return kFields;
}

std::string_view StepKindName(StepKind kind) {
  switch (kind) {
    case StepKind::kInstallImage:
      return "install_image";
    case StepKind::kCreateInstance:
      return "create_instance";
    case StepKind::kRestoreData:
      return "restore_data";
    case StepKind::kAwaitInstance:
      return "await_instance";
    case StepKind::kAdoptInstance:
      return "adopt_instance";
    case StepKind::kRegisterSapi:
      return "register_sapi";
    case StepKind::kRetireOldRecords:
      return "retire_old_records";
  }
  return "unknown";
}

bool ParseStepKind(std::string_view name, StepKind* out) {
  for (StepKind k : {StepKind::kInstallImage, StepKind::kCreateInstance, StepKind::kRestoreData,
                     StepKind::kAwaitInstance, StepKind::kAdoptInstance, StepKind::kRegisterSapi,
                     StepKind::kRetireOldRecords}) {
    if (StepKindName(k) == name) {
      *out = k;
      return true;
    }
  }
  return false;
}

json IsoOrNull(int64_t wall_ms) {
  if (wall_ms <= 0) return nullptr;
  return FormatIso8601Ms(wall_ms);
}

json Step::ToJson() const {
  json j = {{"kind", StepKindName(kind)}, {"id", id}};
  if (kind == StepKind::kInstallImage) {
    j["image_uuid"] = image_uuid;
    j["origin"] = image_origin.empty() ? json(nullptr) : json(image_origin);
    j["manifest_path"] = manifest_path;
    j["file_path"] = file_path;
    j["file_digest"] = file_digest;
    j["bytes"] = bytes;
    return j;
  }
  j["old_uuid"] = old_uuid;
  j["new_uuid"] = new_uuid;
  j["alias"] = alias;
  j["service"] = service;
  if (kind == StepKind::kCreateInstance) {
    j["payload"] = payload;
    j["start_after_data"] = start_after_data;
    j["adopt_after"] = adopt_after;
  }
  if (kind == StepKind::kRegisterSapi) j["sapi_record"] = payload;
  if (kind == StepKind::kAdoptInstance) j["adopt"] = payload;
  if (kind == StepKind::kRetireOldRecords) j["new_vm"] = payload;
  if (kind == StepKind::kRestoreData) {
    j["data_path"] = data_path;
    j["bytes"] = bytes;
  }
  return j;
}

Result<Step> Step::FromJson(const json& j) {
  if (!j.is_object()) return DataError("restore step: not a JSON object");
  Step s;
  if (!ParseStepKind(StringField(j, "kind"), &s.kind)) {
    return DataError("restore step: unknown kind '" + StringField(j, "kind") + "'");
  }
  s.id = StringField(j, "id");
  if (s.id.empty()) return DataError("restore step: missing id");
  s.image_uuid = StringField(j, "image_uuid");
  s.image_origin = StringField(j, "origin");
  s.manifest_path = StringField(j, "manifest_path");
  s.file_path = StringField(j, "file_path");
  s.file_digest = StringField(j, "file_digest");
  s.old_uuid = StringField(j, "old_uuid");
  s.new_uuid = StringField(j, "new_uuid");
  s.alias = StringField(j, "alias");
  s.service = StringField(j, "service");
  s.data_path = StringField(j, "data_path");
  s.bytes = UintField(j, "bytes");
  if (s.kind == StepKind::kCreateInstance) {
    s.payload = j.value("payload", json());
    auto flag = [&](const char* key) {
      return j.contains(key) && j[key].is_boolean() && j[key].get<bool>();
    };
    s.start_after_data = flag("start_after_data");
    s.adopt_after = flag("adopt_after");
  }
  if (s.kind == StepKind::kRegisterSapi) s.payload = j.value("sapi_record", json());
  if (s.kind == StepKind::kAdoptInstance) s.payload = j.value("adopt", json());
  if (s.kind == StepKind::kRetireOldRecords) s.payload = j.value("new_vm", json());
  return s;
}

uint64_t Plan::TotalBytes() const {
  uint64_t total = 0;
  for (const Step& s : steps) total += s.bytes;
  return total;
}

json PlannedInstance::ToJson() const {
  return {{"old_uuid", old_uuid},     {"old_alias", old_alias},
          {"new_uuid", new_uuid},     {"alias", alias},
          {"service", service},       {"peer", peer},
          {"generation", generation}, {"seq", seq},
          {"data_bytes", data_bytes}, {"pulled_at", IsoOrNull(pulled_ms)}};
}

json Skip::ToJson() const {
  return {{"uuid", uuid}, {"alias", alias}, {"service", service}, {"reason", reason}};
}

json Plan::ToJson() const {
  json steps_j = json::array();
  for (const Step& s : steps) steps_j.push_back(s.ToJson());
  json inst = json::array();
  for (const PlannedInstance& p : instances) inst.push_back(p.ToJson());
  json skipped_j = json::array();
  for (const Skip& s : skipped) skipped_j.push_back(s.ToJson());
  return {{"instances", inst},
          {"steps", steps_j},
          {"skipped", skipped_j},
          {"bytes", TotalBytes()},
          {"retire_old_records", retire_old_records}};
}

std::string LowestFreeAlias(const std::string& service, const std::set<std::string>& taken) {
  for (uint64_t n = 0;; ++n) {
    std::string candidate = service + std::to_string(n);
    if (!taken.contains(candidate)) return candidate;
  }
}

std::string NewUuidV4(std::mt19937_64& rng) {
  uint64_t hi = rng();
  uint64_t lo = rng();
  hi = (hi & ~0xf000ull) | 0x4000ull;              // version 4
  lo = (lo & ~(0xc0ull << 56)) | (0x80ull << 56);  // RFC 4122 variant
  char buf[37];
  std::snprintf(buf, sizeof(buf), "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(hi >> 32),
                static_cast<unsigned>((hi >> 16) & 0xffff), static_cast<unsigned>(hi & 0xffff),
                static_cast<unsigned>(lo >> 48),
                static_cast<unsigned long long>(lo & 0xffffffffffffull));
  return buf;
}

json NewVmPayload(const json& old, const std::string& new_uuid, const std::string& alias,
                  bool new_ips) {
  std::string brand = StringField(old, "brand");
  json p = json::object();
  for (auto it = old.begin(); it != old.end(); ++it) {
    if (CreateAcceptsVmProperty(brand, it.key())) p[it.key()] = it.value();
  }
  for (const char* list : {"disks", "nics", "filesystems", "pci_devices"}) {
    if (p.contains(list)) KeepCreatableEntries(p[list], list, brand);
  }
  // `datasets` is output only; the delegated dataset is asked for with
  // delegate_dataset (joyent, joyent-minimal, lx). indestructible_delegated
  // means nothing without one (VM.js skips it), so it goes with it.
  if (HasDelegatedDataset(old) && CreateAcceptsVmProperty(brand, "delegate_dataset")) {
    p["delegate_dataset"] = true;
  } else {
    p.erase("delegate_dataset");
    p.erase("indestructible_delegated");
  }
  p["uuid"] = new_uuid;
  p["alias"] = alias;
  if (p.contains("zonename")) p["zonename"] = new_uuid;
  if (new_ips && p.contains("nics") && p["nics"].is_array()) {
    for (json& nic : p["nics"]) {
      if (!nic.is_object()) continue;
      for (const std::string& f : NicAddressFields()) nic.erase(f);
    }
  }
  return p;
}

json AdoptPayload(const json& create_payload) {
  json nics = json::array();
  if (const json* list = create_payload.contains("nics") ? &create_payload["nics"] : nullptr;
      list != nullptr && list->is_array()) {
    for (const json& nic : *list) {
      if (!nic.is_object()) continue;
      json n = json::object();
      for (const char* key : {"mac", "ip", "network_uuid", "nic_tag", "vlan_id"}) {
        if (nic.contains(key)) n[key] = nic[key];
      }
      nics.push_back(std::move(n));
    }
  }
  return {{"owner_uuid", create_payload.value("owner_uuid", json())}, {"nics", std::move(nics)}};
}

json NewSapiRecord(const json& old, const std::string& old_uuid, const std::string& new_uuid,
                   const std::string& alias, const std::string& target_server_uuid) {
  json r = old;
  ReplaceUuidStrings(r, old_uuid, new_uuid);
  if (r.is_object()) {
    r["uuid"] = new_uuid;
    json& params = r["params"];
    if (!params.is_object()) params = json::object();
    params["alias"] = alias;
    if (target_server_uuid.empty()) {
      params.erase("server_uuid");
    } else {
      params["server_uuid"] = target_server_uuid;
    }
  }
  return r;
}

Result<Plan> MakePlan(const std::vector<InstanceSource>& instances,
                      const std::set<std::string>& known_aliases, const PlanOptions& options) {
  std::vector<const InstanceSource*> ordered;
  Plan plan;
  for (const InstanceSource& in : instances) {
    if (!in.vm_payload.is_object()) {
      return DataError("VM payload of instance " + in.uuid + " (" + in.alias +
                       ") is not a JSON object");
    }
    if (std::string brand = StringField(in.vm_payload, "brand"); !KnownVmBrand(brand)) {
      plan.skipped.push_back({in.uuid, in.alias, in.service,
                              "brand '" + brand + "' is not one vmadm create knows"});
      continue;
    }
    if (in.service.empty()) {
      plan.skipped.push_back(
          {in.uuid, in.alias, in.service, "no service (tags.smartdc_role) in its payload"});
      continue;
    }
    std::string missing;
    for (const ImageSource& img : in.image_chain) {
      if (!img.on_target && img.file_path.empty()) {
        missing = img.uuid;
        break;
      }
    }
    if (in.image_chain.empty() && !in.image_uuid.empty()) missing = in.image_uuid;
    if (!missing.empty()) {
      plan.skipped.push_back({in.uuid, in.alias, in.service,
                              "image " + missing +
                                  " of its origin chain is neither in the catalog nor on the "
                                  "target"});
      continue;
    }
    ordered.push_back(&in);
  }
  std::sort(ordered.begin(), ordered.end(), [&](const InstanceSource* a, const InstanceSource* b) {
    size_t ia = OrderIndex(options.service_order, a->service);
    size_t ib = OrderIndex(options.service_order, b->service);
    if (ia != ib) return ia < ib;
    if (a->service != b->service) return a->service < b->service;
    if (a->alias != b->alias) return a->alias < b->alias;
    return a->uuid < b->uuid;
  });

  std::mt19937_64 rng(options.seed != 0 ? options.seed
                                        : (static_cast<uint64_t>(std::random_device{}()) << 32) ^
                                              std::random_device{}());
  std::set<std::string> taken = known_aliases;
  for (const auto& [old_uuid, a] : options.assigned) taken.insert(a.alias);
  std::set<std::string> planned_images;
  std::vector<Step> handovers;  // the second phase, once every instance is up
  std::vector<Step> retirements;  // the last phase, once every instance is adopted

  for (const InstanceSource* in : ordered) {
    Assignment a;
    if (auto it = options.assigned.find(in->uuid); it != options.assigned.end()) {
      a = it->second;
    } else {
      a.new_uuid = NewUuidV4(rng);
      a.alias = LowestFreeAlias(in->service, taken);
      taken.insert(a.alias);
    }

    for (const ImageSource& img : in->image_chain) {
      if (img.on_target || !planned_images.insert(img.uuid).second) continue;
      Step s;
      s.kind = StepKind::kInstallImage;
      s.id = "install_image:" + img.uuid;
      s.image_uuid = img.uuid;
      s.image_origin = img.origin;
      s.manifest_path = img.manifest_path;
      s.file_path = img.file_path;
      s.file_digest = img.file_digest;
      s.bytes = img.file_size;
      plan.steps.push_back(std::move(s));
    }

    auto instance_step = [&](StepKind kind) {
      Step s;
      s.kind = kind;
      s.id = std::string(StepKindName(kind)) + ":" + in->uuid;
      s.old_uuid = in->uuid;
      s.new_uuid = a.new_uuid;
      s.alias = a.alias;
      s.service = in->service;
      return s;
    };
    Step create = instance_step(StepKind::kCreateInstance);
    create.payload = NewVmPayload(in->vm_payload, a.new_uuid, a.alias, options.new_ips);
    create.start_after_data = !in->data_path.empty();
    create.adopt_after = true;
    Step adopt = instance_step(StepKind::kAdoptInstance);
    adopt.payload = AdoptPayload(create.payload);
    if (options.retire_old_records) {
      Step retire = instance_step(StepKind::kRetireOldRecords);
      retire.payload = adopt.payload;
      retirements.push_back(std::move(retire));
    }
    plan.steps.push_back(std::move(create));
    if (!in->data_path.empty()) {
      Step data = instance_step(StepKind::kRestoreData);
      data.data_path = in->data_path;
      data.bytes = in->data_bytes;
      plan.steps.push_back(std::move(data));
    }
    plan.steps.push_back(instance_step(StepKind::kAwaitInstance));
    handovers.push_back(std::move(adopt));
    if (in->sapi_record.is_object()) {
      Step sapi = instance_step(StepKind::kRegisterSapi);
      sapi.payload =
          NewSapiRecord(in->sapi_record, in->uuid, a.new_uuid, a.alias, options.target_server_uuid);
      handovers.push_back(std::move(sapi));
    }
    plan.instances.push_back(PlannedInstance{in->uuid, in->alias, a.new_uuid, a.alias, in->service,
                                             in->peer, in->generation, in->seq, in->data_bytes,
                                             in->pulled_ms});
  }
  for (Step& s : handovers) plan.steps.push_back(std::move(s));
  for (Step& s : retirements) plan.steps.push_back(std::move(s));
  plan.retire_old_records = options.retire_old_records;
  return plan;
}

}  // namespace lifeboat::restore
