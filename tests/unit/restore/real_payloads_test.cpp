// The planner's create payload over real VM objects: the `vmadm get` objects
// and create payloads of every brand stored in tests/data/vm-payloads/ (their
// repos, paths and commits are in SOURCES.md there), checked against
// proptable.js's create set and VM.js's create checks (smartos-live e6da73be).
#include "restore/plan.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/unit/restore/restore_test_util.h"

namespace lifeboat::restore {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr char kNewUuid[] = "0b7e4a52-3c1d-4f6e-9a8b-7c6d5e4f3a21";
constexpr char kNewAlias[] = "restored0";

const fs::path& PayloadDir() {
  static const fs::path kDir = fs::path(LIFEBOAT_TEST_DATA_DIR) / "vm-payloads";
  return kDir;
}

struct RealObject {
  std::string file;
  std::string brand;
  bool create_payload = false;  // a create payload, not a `vmadm get` object
  json vm;
};

std::vector<RealObject> LoadAll() {
  std::vector<RealObject> out;
  for (const fs::directory_entry& e : fs::directory_iterator(PayloadDir())) {
    if (e.path().extension() != ".json") continue;
    std::ifstream in(e.path());
    RealObject o;
    o.file = e.path().filename().string();
    o.vm = json::parse(in);
    o.brand = o.vm.value("brand", "");
    o.create_payload = o.file.find("-create") != std::string::npos;
    out.push_back(std::move(o));
  }
  std::sort(out.begin(), out.end(),
            [](const RealObject& a, const RealObject& b) { return a.file < b.file; });
  return out;
}

const RealObject& Find(const std::vector<RealObject>& all, const std::string& file) {
  auto it =
      std::find_if(all.begin(), all.end(), [&](const RealObject& o) { return o.file == file; });
  REQUIRE(it != all.end());
  return *it;
}

// What `vmadm get` prints that create does not take: state, identity of the
// host, timestamps, ZFS and zone runtime facts (proptable.js has no 'create'
// for any of them).
const std::vector<std::string>& ReadOnlyProperties() {
  static const std::vector<std::string> kProps = {"v",
                                                  "datacenter_name",
                                                  "headnode_id",
                                                  "zlog_mode",
                                                  "zlog_name",
                                                  "transition_to",
                                                  "transition_expire",
                                                  "state",
                                                  "zone_state",
                                                  "last_modified",
                                                  "create_timestamp",
                                                  "boot_timestamp",
                                                  "server_uuid",
                                                  "pid",
                                                  "zoneid",
                                                  "zonedid",
                                                  "zonepath",
                                                  "datasets",
                                                  "zfs_filesystem",
                                                  "snapshots",
                                                  "platform_buildstamp",
                                                  "default_gateway",
                                                  "device",
                                                  "exit_status",
                                                  "exit_timestamp",
                                                  "hvm",
                                                  "init_restarts"};
  return kProps;
}

// `<zfs_filesystem>/data`, the delegated dataset VM.js creates; the zone
// XML part of `vmadm get` has no zfs_filesystem, and VM.js names it
// <zpool>/<zonename> (zpool "zones" by default).
std::string DelegatedDatasetName(const json& vm) {
  std::string fsname = vm.value("zfs_filesystem", "");
  if (fsname.empty()) fsname = vm.value("zpool", "zones") + "/" + vm.value("zonename", "");
  return fsname + "/data";
}

bool ListsDelegatedDataset(const json& vm) {
  auto ds = vm.find("datasets");
  if (ds == vm.end() || !ds->is_array()) return false;
  const std::string want = DelegatedDatasetName(vm);
  return std::any_of(ds->begin(), ds->end(), [&](const json& d) { return d == want; });
}

bool IsCdrom(const json& disk) { return disk.value("media", "") == "cdrom"; }

// The sub-properties a create entry may drop although the brand accepts them
// (MakeDiskCreatable in plan.cpp): VM.js's create checks, not the table.
bool DiskMayDrop(const json& disk, const std::string& sub) {
  if (sub == "path") return !IsCdrom(disk) && !disk.value("nocreate", false);
  if (sub == "block_size") return disk.contains("image_uuid");
  if (sub == "image_size") return !disk.contains("image_uuid");
  return false;
}

void CheckEntries(const std::string& brand, const std::string& list, const json& old_entries,
                  const json& new_entries) {
  REQUIRE(new_entries.is_array());
  REQUIRE(new_entries.size() == old_entries.size());
  for (size_t i = 0; i < old_entries.size(); ++i) {
    const json& before = old_entries[i];
    const json& after = new_entries[i];
    INFO(list << "[" << i << "]");
    for (auto it = after.begin(); it != after.end(); ++it) {
      INFO(it.key());
      CHECK(CreateAcceptsVmSubProperty(brand, list, it.key()));
    }
    for (auto it = before.begin(); it != before.end(); ++it) {
      INFO(it.key());
      if (!CreateAcceptsVmSubProperty(brand, list, it.key())) {
        CHECK_FALSE(after.contains(it.key()));
      } else if (list == "disks" && DiskMayDrop(before, it.key())) {
        CHECK_FALSE(after.contains(it.key()));
      } else {
        REQUIRE(after.contains(it.key()));
        CHECK(after[it.key()] == it.value());
      }
    }
  }
}

TEST_CASE("real payloads: every brand has a stored object, every file is in SOURCES.md") {
  std::vector<RealObject> all = LoadAll();
  std::ifstream in(PayloadDir() / "SOURCES.md");
  REQUIRE(in.good());
  std::stringstream sources;
  sources << in.rdbuf();
  std::set<std::string> brands;
  std::set<std::string> vmadm_get_brands;
  for (const RealObject& o : all) {
    INFO(o.file);
    CHECK(sources.str().find("| " + o.file + " |") != std::string::npos);
    CHECK(KnownVmBrand(o.brand));
    brands.insert(o.brand);
    if (!o.create_payload) vmadm_get_brands.insert(o.brand);
  }
  CHECK(brands == std::set<std::string>{"joyent", "joyent-minimal", "lx", "kvm", "bhyve"});
  CHECK(vmadm_get_brands == brands);
}

TEST_CASE("the list entries' create table is proptable.js's") {
  // proptable/create-subproperties.json: the "<list>.*.<sub>" properties
  // whose payload.allowed[brand] contains 'add', per brand, extracted from
  // proptable.js (smartos-live e6da73be). The planner must say the same for
  // every sub-property any brand names.
  const auto table =
      testing::BrandTable((PayloadDir() / "proptable" / "create-subproperties.json").string());
  std::set<std::string> every = {"disks.*.zfs_filesystem", "disks.*.image_name",
                                 "disks.*.dangerous_allow_shrink", "nics.*.cfgif"};
  for (const auto& [brand, listed] : table) every.insert(listed.begin(), listed.end());
  for (const auto& [brand, listed] : table) {
    for (const std::string& p : every) {
      const size_t star = p.find(".*.");
      REQUIRE(star != std::string::npos);
      INFO(brand << " " << p);
      CHECK(CreateAcceptsVmSubProperty(brand, p.substr(0, star), p.substr(star + 3)) ==
            (listed.count(p) == 1));
    }
  }
  CHECK(table.size() == 5);
}

TEST_CASE("real payloads: the create payload holds only what create accepts, all of it") {
  for (const RealObject& o : LoadAll()) {
    INFO(o.file << " (" << o.brand << ")");
    const json& old = o.vm;
    json p = NewVmPayload(old, kNewUuid, kNewAlias, /*new_ips=*/false);

    for (auto it = p.begin(); it != p.end(); ++it) {
      INFO(it.key());
      CHECK(CreateAcceptsVmProperty(o.brand, it.key()));
    }
    for (const std::string& f : ReadOnlyProperties()) {
      INFO(f);
      CHECK_FALSE(p.contains(f));
    }

    CHECK(p["uuid"] == kNewUuid);
    CHECK(p["alias"] == kNewAlias);
    CHECK(p.contains("zonename") == old.contains("zonename"));
    if (p.contains("zonename")) CHECK(p["zonename"] == kNewUuid);

    for (auto it = old.begin(); it != old.end(); ++it) {
      const std::string& key = it.key();
      INFO(key);
      if (!CreateAcceptsVmProperty(o.brand, key)) {
        CHECK_FALSE(p.contains(key));
        continue;
      }
      if (key == "uuid" || key == "zonename" || key == "alias") continue;
      if (key == "delegate_dataset" || key == "indestructible_delegated") continue;
      REQUIRE(p.contains(key));
      if (key == "disks" || key == "nics" || key == "filesystems" || key == "pci_devices") {
        CheckEntries(o.brand, key, it.value(), p[key]);
      } else {
        CHECK(p[key] == it.value());
      }
    }
  }
}

TEST_CASE("real payloads: delegate_dataset exactly when datasets lists <zfs_filesystem>/data") {
  size_t delegated = 0;
  for (const RealObject& o : LoadAll()) {
    INFO(o.file);
    json p = NewVmPayload(o.vm, kNewUuid, kNewAlias, false);
    bool asked = o.vm.value("delegate_dataset", false);  // a create payload's own request
    bool expect = (ListsDelegatedDataset(o.vm) || asked) &&
                  CreateAcceptsVmProperty(o.brand, "delegate_dataset");
    CHECK(p.contains("delegate_dataset") == expect);
    if (expect) {
      CHECK(p["delegate_dataset"] == true);
      ++delegated;
    }
    if (!expect) CHECK_FALSE(p.contains("indestructible_delegated"));
  }
  // maximal-joyent's `datasets` and test-delegate's delegate_dataset.
  CHECK(delegated == 2);
}

TEST_CASE("real payloads: a create payload vmadm accepts comes back unchanged") {
  // Idempotence on smartos-live's own create payloads: nothing of a valid
  // create payload is lost or altered but the identity NewVmPayload assigns.
  size_t checked = 0;
  for (const RealObject& o : LoadAll()) {
    if (!o.create_payload) continue;
    INFO(o.file);
    json p = NewVmPayload(o.vm, kNewUuid, kNewAlias, false);
    json want = o.vm;
    want["uuid"] = kNewUuid;
    want["alias"] = kNewAlias;
    CHECK(p == want);
    ++checked;
  }
  CHECK(checked == 4);
}

TEST_CASE("real payloads: kvm and bhyve disks lose what vmadm sets, keep the rest") {
  std::vector<RealObject> all = LoadAll();
  for (const char* file : {"kvm-vmload.json", "bhyve-vmload.json"}) {
    const RealObject& o = Find(all, file);
    INFO(file);
    json p = NewVmPayload(o.vm, kNewUuid, kNewAlias, false);
    REQUIRE(p["disks"].size() == 2);
    for (const json& disk : p["disks"]) {
      // VM.js: "you cannot specify a path for a disk unless you set
      // nocreate=true"; the old path names the old VM's zvol.
      CHECK_FALSE(disk.contains("path"));
      CHECK_FALSE(disk.contains("zfs_filesystem"));  // 'receive' only
      CHECK(disk["model"] == "virtio");
      CHECK(disk["media"] == "disk");
    }
    const json& boot = p["disks"][0];
    CHECK(boot["boot"] == true);
    CHECK(boot["image_uuid"] == o.vm["disks"][0]["image_uuid"]);
    CHECK(boot["image_size"] == 10240);
    CHECK(p["disks"][1]["boot"] == false);
  }
  // bhyve keeps its per-disk pci_slot and uuid (both 'add' for bhyve).
  json b = NewVmPayload(Find(all, "bhyve-vmload.json").vm, kNewUuid, kNewAlias, false);
  CHECK(b["disks"][0]["pci_slot"] == "0:4:0");
  CHECK(b["disks"][1]["uuid"] == "4869641c-555b-6809-bd97-b9fc2a84e1b9");
  CHECK(b["com1"] == "/dev/zconsole");
  CHECK_FALSE(b.contains("zlog_name"));
  // A cdrom keeps its path: it names the ISO inside the zone, not a zvol.
  json k = NewVmPayload(Find(all, "kvm-create-payload.json").vm, kNewUuid, kNewAlias, false);
  CHECK(k["disks"][1]["path"] == "/foo.iso");
}

TEST_CASE("real payloads: a blank disk as vmadm get prints it stays a valid blank disk") {
  // vmadm get adds the ZFS facts to every disk (vmadm.1m.md, disks.*): a
  // blank disk keeps size, block_size, compression, refreservation and
  // zpool (all 'add'), and loses path and zfs_filesystem.
  json vm = Find(LoadAll(), "kvm-vmload.json").vm;
  json& disk = vm["disks"][1];
  disk["size"] = 4096;
  disk["block_size"] = 8192;
  disk["compression"] = "off";
  disk["refreservation"] = 4096;
  disk["zpool"] = "zones";
  disk["zfs_filesystem"] = "zones/5a02245a-422c-4e0a-c5f8-fd6fac1ac04e-disk1";
  json p = NewVmPayload(vm, kNewUuid, kNewAlias, false);
  CHECK(p["disks"][1] == json::parse(R"({"boot": false, "model": "virtio", "media": "disk",
      "size": 4096, "block_size": 8192, "compression": "off", "refreservation": 4096,
      "zpool": "zones"})"));
}

TEST_CASE("real payloads: nics keep what create accepts for the brand") {
  std::vector<RealObject> all = LoadAll();
  // maximal-joyent's net1 carries allow_unfiltered_promisc, which only kvm and
  // bhyve accept; everything else on it is an 'add' property for joyent.
  const RealObject& joyent = Find(all, "joyent-maximal-vmload.json");
  json p = NewVmPayload(joyent.vm, kNewUuid, kNewAlias, false);
  const json& net1 = p["nics"][1];
  CHECK_FALSE(net1.contains("allow_unfiltered_promisc"));
  for (const char* f : {"allowed_ips", "vrrp_vrid", "vrrp_primary_ip", "blocked_outgoing_ports",
                        "dhcp_server", "network_uuid", "vlan_id", "mac", "ip", "gateway"}) {
    INFO(f);
    CHECK(net1[f] == joyent.vm["nics"][1][f]);
  }
  // kvm keeps the NIC model.
  json k = NewVmPayload(Find(all, "kvm-vmload.json").vm, kNewUuid, kNewAlias, false);
  CHECK(k["nics"][0]["model"] == "virtio");
  // new_ips drops the address fields and keeps what places the NIC.
  for (const RealObject& o : all) {
    INFO(o.file);
    json q = NewVmPayload(o.vm, kNewUuid, kNewAlias, /*new_ips=*/true);
    if (!q.contains("nics")) continue;
    for (size_t i = 0; i < q["nics"].size(); ++i) {
      const json& nic = q["nics"][i];
      const json& before = o.vm["nics"][i];
      for (const std::string& f : NicAddressFields()) CHECK_FALSE(nic.contains(f));
      for (const char* f : {"nic_tag", "network_uuid", "vlan_id", "primary", "interface"}) {
        if (before.contains(f)) CHECK(nic[f] == before[f]);
      }
    }
  }
}

}  // namespace
}  // namespace lifeboat::restore
