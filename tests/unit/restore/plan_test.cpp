#include "restore/plan.h"

#include <catch2/catch.hpp>

#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "tests/unit/restore/restore_test_util.h"

namespace lifeboat::restore {
namespace {

using nlohmann::json;

// vmadm get of a core zone in the real shape: `datasets` (never
// delegate_dataset), zfs_filesystem, v, datacenter_name, headnode_id,
// platform_buildstamp and other output-only properties, as in
// joyent/sdc-vm-agent tests/data.js (commit 935ce67e) and VM.js.
json SampleVm(const std::string& uuid, const std::string& alias, const std::string& role) {
  json vm = json::parse(R"({
    "uuid": "b2f1a9d4-7c3e-4f0a-9e57-2d1c6b8a4e10", "alias": "imgapi0", "autoboot": true,
    "brand": "joyent-minimal", "owner_uuid": "930896af-bf8c-48d4-885c-6573a94b1853",
    "image_uuid": "2d74d0fb-5c5e-4ad8-ab2a-0b6a3f8d4f8e",
    "server_uuid": "564dd1ac-164d-cc50-247c-b2eb0cf21ce5",
    "zonename": "b2f1a9d4-7c3e-4f0a-9e57-2d1c6b8a4e10",
    "zonepath": "/zones/b2f1a9d4-7c3e-4f0a-9e57-2d1c6b8a4e10", "zoneid": 12, "zonedid": 12,
    "pid": 4711, "state": "running", "zone_state": "running",
    "create_timestamp": "2026-03-02T10:14:07.115Z", "boot_timestamp": "2026-11-01T08:02:55.000Z",
    "last_modified": "2026-11-01T08:02:58.000Z", "max_physical_memory": 2048, "quota": 100,
    "datasets": ["zones/b2f1a9d4-7c3e-4f0a-9e57-2d1c6b8a4e10/data"],
    "zfs_filesystem": "zones/b2f1a9d4-7c3e-4f0a-9e57-2d1c6b8a4e10", "zpool": "zones",
    "indestructible_delegated": true, "v": 1, "datacenter_name": "coal", "headnode_id": 0,
    "platform_buildstamp": "20261101T000000Z", "zlog_mode": "g-t", "zlog_max_size": 1048576,
    "transition_to": "", "snapshots": [], "routes": {},
    "nics": [
      {"interface": "net0", "mac": "90:b8:d0:1a:2b:3c", "nic_tag": "admin", "vlan_id": 0,
       "ip": "10.99.99.21", "ips": ["10.99.99.21/24"], "netmask": "255.255.255.0",
       "network_uuid": "4a3c2f5e-0b1d-4c6e-8f7a-9b0c1d2e3f40", "primary": true},
      {"interface": "net1", "mac": "90:b8:d0:4d:5e:6f", "nic_tag": "external", "vlan_id": 0,
       "ip": "203.0.113.21", "ips": ["203.0.113.21/24"], "netmask": "255.255.255.0",
       "gateway": "203.0.113.1", "gateways": ["203.0.113.1"],
       "network_uuid": "7e6d5c4b-3a29-4180-b7c6-d5e4f3a2b1c0"}],
    "customer_metadata": {"sapi-url": "http://sapi.coal.example.com"},
    "tags": {"smartdc_role": "imgapi", "smartdc_type": "core"}
  })");
  vm.update(json{{"uuid", uuid},
                 {"alias", alias},
                 {"zonename", uuid},
                 {"zfs_filesystem", "zones/" + uuid},
                 {"datasets", {"zones/" + uuid + "/data"}},
                 {"tags", {{"smartdc_role", role}, {"smartdc_type", "core"}}}});
  return vm;
}

json SampleSapi(const std::string& uuid, const std::string& alias) {
  return json{
      {"uuid", uuid},
      {"service_uuid", "6e3b2a1c-9d8f-4e7a-b6c5-d4e3f2a1b0c9"},
      {"params", {{"alias", alias}, {"server_uuid", "564dd1ac-164d-cc50-247c-b2eb0cf21ce5"}}},
      {"metadata", {{"SELF", uuid}, {"IMGAPI_SERVICE_NAME", "imgapi.coal.example.com"}}},
      {"type", "vm"}};
}

ImageSource Image(const std::string& uuid, const std::string& origin, bool on_target = false) {
  return ImageSource{uuid,
                     origin,
                     "/cat/images/" + uuid + "/manifest.json",
                     "/cat/images/" + uuid + "/file",
                     100,
                     "00",
                     on_target};
}

InstanceSource Instance(const std::string& uuid, const std::string& alias,
                        const std::string& service, std::vector<ImageSource> chain) {
  InstanceSource in;
  in.uuid = uuid;
  in.alias = alias;
  in.service = service;
  in.peer = "headnode1";
  in.generation = 7;
  in.vm_payload = SampleVm(uuid, alias, service);
  in.sapi_record = SampleSapi(uuid, alias);
  in.image_uuid = chain.empty() ? "" : chain.back().uuid;
  in.image_chain = std::move(chain);
  in.data_path = "/cat/svc-" + service + "/data/" + uuid;
  in.data_bytes = 1000;
  return in;
}

const std::string kU1 = "11111111-1111-4111-8111-111111111111";
const std::string kU2 = "22222222-2222-4222-8222-222222222222";
const std::string kU3 = "33333333-3333-4333-8333-333333333333";
const std::string kU4 = "44444444-4444-4444-8444-444444444444";

std::vector<std::string> StepIds(const Plan& plan) {
  std::vector<std::string> ids;
  for (const Step& s : plan.steps) ids.push_back(s.id);
  return ids;
}

TEST_CASE("plan orders instances by RFD 67 service order, unknown services last by name") {
  std::vector<InstanceSource> in = {
      Instance(kU1, "zzz0", "zzz", {}), Instance(kU2, "vmapi0", "vmapi", {}),
      Instance(kU3, "aaa0", "aaa", {}), Instance(kU4, "sapi0", "sapi", {})};
  for (auto& i : in) i.image_uuid.clear();
  PlanOptions opt;
  opt.seed = 42;
  auto plan = MakePlan(in, {"zzz0", "vmapi0", "aaa0", "sapi0"}, opt);
  REQUIRE(plan.ok());
  std::vector<std::string> services;
  for (const auto& p : plan->instances) services.push_back(p.service);
  CHECK(services == std::vector<std::string>{"sapi", "vmapi", "aaa", "zzz"});

  opt.service_order = {"zzz", "vmapi"};
  plan = MakePlan(in, {}, opt);
  REQUIRE(plan.ok());
  services.clear();
  for (const auto& p : plan->instances) services.push_back(p.service);
  CHECK(services == std::vector<std::string>{"zzz", "vmapi", "aaa", "sapi"});
}

TEST_CASE("plan gives the lowest free <service>N across every known alias") {
  std::vector<InstanceSource> in = {Instance(kU1, "vmapi0", "vmapi", {}),
                                    Instance(kU2, "imgapi0", "imgapi", {}),
                                    Instance(kU3, "imgapi1", "imgapi", {})};
  for (auto& i : in) i.image_uuid.clear();
  PlanOptions opt;
  opt.seed = 1;
  // imgapi0/1 are the ones being restored; imgapi2 lives elsewhere.
  auto plan = MakePlan(in, {"vmapi0", "imgapi0", "imgapi1", "imgapi2"}, opt);
  REQUIRE(plan.ok());
  REQUIRE(plan->instances.size() == 3);
  CHECK(plan->instances[0].old_alias == "imgapi0");
  CHECK(plan->instances[0].alias == "imgapi3");
  CHECK(plan->instances[1].alias == "imgapi4");
  CHECK(plan->instances[2].old_alias == "vmapi0");
  CHECK(plan->instances[2].alias == "vmapi1");
  CHECK(LowestFreeAlias("cnapi", {"cnapi0", "cnapi2"}) == "cnapi1");
  CHECK(LowestFreeAlias("cnapi", {}) == "cnapi0");
}

TEST_CASE("new payload: new uuid, read-only fields stripped, IPs reused by default") {
  std::vector<InstanceSource> in = {Instance(kU1, "imgapi0", "imgapi", {})};
  in[0].image_uuid.clear();
  PlanOptions opt;
  opt.seed = 7;
  auto plan = MakePlan(in, {"imgapi0"}, opt);
  REQUIRE(plan.ok());
  const Step& create = plan->steps.at(0);
  REQUIRE(create.kind == StepKind::kCreateInstance);
  const json& p = create.payload;
  CHECK(IsUuid(create.new_uuid));
  CHECK(create.new_uuid != kU1);
  CHECK(p["uuid"] == create.new_uuid);
  CHECK(p["zonename"] == create.new_uuid);
  CHECK(p["alias"] == "imgapi1");
  for (const char* f : {"state", "zone_state", "zonepath", "zoneid", "zonedid", "pid", "datasets",
                        "create_timestamp", "boot_timestamp", "last_modified", "server_uuid", "v",
                        "datacenter_name", "headnode_id", "platform_buildstamp", "zlog_mode",
                        "transition_to", "zfs_filesystem", "snapshots"}) {
    INFO(f);
    CHECK_FALSE(p.contains(f));
  }
  // What the operator configured is kept.
  CHECK(p["max_physical_memory"] == 2048);
  // Derived from `datasets`: vmadm get never prints delegate_dataset.
  CHECK(p["delegate_dataset"] == true);
  CHECK(p["indestructible_delegated"] == true);
  CHECK(p["zlog_max_size"] == 1048576);
  CHECK(p["tags"]["smartdc_role"] == "imgapi");
  CHECK(p["customer_metadata"]["sapi-url"] == "http://sapi.coal.example.com");
  CHECK(p["nics"][0]["ip"] == "10.99.99.21");
  CHECK(p["nics"][1]["gateway"] == "203.0.113.1");
  CHECK(p["nics"][0]["mac"] == "90:b8:d0:1a:2b:3c");
  // The old payload, as the catalog holds it, is not modified.
  CHECK(in[0].vm_payload["state"] == "running");
}

TEST_CASE("new payload with new_ips drops addresses but keeps the network") {
  json p = NewVmPayload(SampleVm(kU1, "imgapi0", "imgapi"), kU2, "imgapi1", /*new_ips=*/true);
  for (const json& nic : p["nics"]) {
    for (const char* f : {"ip", "ips", "netmask", "gateway", "gateways", "mac"}) {
      INFO(f);
      CHECK_FALSE(nic.contains(f));
    }
    CHECK(nic.contains("nic_tag"));
    CHECK(nic.contains("network_uuid"));
    CHECK(nic.contains("interface"));
  }
  CHECK(p["nics"][0]["primary"] == true);
}

TEST_CASE("SAPI record gets the new uuid everywhere, the new alias and the target server") {
  json r = NewSapiRecord(SampleSapi(kU1, "imgapi0"), kU1, kU2, "imgapi1", "target-server");
  CHECK(r["uuid"] == kU2);
  CHECK(r["metadata"]["SELF"] == kU2);
  CHECK(r["params"]["alias"] == "imgapi1");
  CHECK(r["params"]["server_uuid"] == "target-server");
  CHECK(r["service_uuid"] == "6e3b2a1c-9d8f-4e7a-b6c5-d4e3f2a1b0c9");
  CHECK(r.dump().find(kU1) == std::string::npos);
  json no_server = NewSapiRecord(SampleSapi(kU1, "imgapi0"), kU1, kU2, "imgapi1", "");
  CHECK_FALSE(no_server["params"].contains("server_uuid"));
}

TEST_CASE(
    "images install root first, once across instances, skipping those on the target, SAPI and "
    "old records last") {
  const std::string root = "aaaaaaaa-0000-4000-8000-000000000000";
  const std::string mid = "bbbbbbbb-0000-4000-8000-000000000000";
  const std::string leaf1 = "cccccccc-0000-4000-8000-000000000000";
  const std::string leaf2 = "dddddddd-0000-4000-8000-000000000000";
  std::vector<InstanceSource> in = {
      Instance(kU1, "vmapi0", "vmapi",
               {Image(root, "", true), Image(mid, root), Image(leaf1, mid)}),
      Instance(kU2, "sapi0", "sapi", {Image(root, "", true), Image(mid, root), Image(leaf2, mid)}),
  };
  PlanOptions opt;
  opt.seed = 3;
  auto plan = MakePlan(in, {}, opt);
  REQUIRE(plan.ok());
  // Instance by instance, each up before the next; then, in the same service
  // order, each handed to NAPI/vm-agent and registered in SAPI (napi, vmapi
  // and sapi must be up for that); last, each one's old records retired.
  CHECK(StepIds(*plan) ==
        std::vector<std::string>{
            "install_image:" + mid, "install_image:" + leaf2, "create_instance:" + kU2,
            "restore_data:" + kU2, "await_instance:" + kU2, "install_image:" + leaf1,
            "create_instance:" + kU1, "restore_data:" + kU1, "await_instance:" + kU1,
            "adopt_instance:" + kU2, "register_sapi:" + kU2, "adopt_instance:" + kU1,
            "register_sapi:" + kU1, "retire_old_records:" + kU2, "retire_old_records:" + kU1});
  CHECK(plan->steps[0].image_origin == root);
  CHECK(plan->steps[0].manifest_path == "/cat/images/" + mid + "/manifest.json");
  CHECK(plan->TotalBytes() == 3 * 100 + 2 * 1000);
}

TEST_CASE("instances with a broken image chain or no service are skipped with a reason") {
  const std::string img = "aaaaaaaa-0000-4000-8000-000000000000";
  ImageSource missing = Image(img, "");
  missing.file_path.clear();
  std::vector<InstanceSource> in = {Instance(kU1, "vmapi0", "vmapi", {missing}),
                                    Instance(kU2, "x0", "", {}),
                                    Instance(kU3, "napi0", "napi", {})};
  in[1].image_uuid.clear();
  in[2].image_uuid.clear();
  auto plan = MakePlan(in, {}, PlanOptions{});
  REQUIRE(plan.ok());
  REQUIRE(plan->instances.size() == 1);
  CHECK(plan->instances[0].old_uuid == kU3);
  REQUIRE(plan->skipped.size() == 2);
  CHECK(plan->skipped[0].uuid == kU1);
  CHECK(plan->skipped[0].reason.find(img) != std::string::npos);
  CHECK(plan->skipped[1].uuid == kU2);

  in[2].vm_payload = json::array();
  CHECK(MakePlan(in, {}, PlanOptions{}).status().code() == Code::kData);
}

TEST_CASE("plans are deterministic for a seed, and assignments pin uuids and aliases") {
  std::vector<InstanceSource> in = {Instance(kU1, "vmapi0", "vmapi", {}),
                                    Instance(kU2, "napi0", "napi", {})};
  for (auto& i : in) i.image_uuid.clear();
  PlanOptions opt;
  opt.seed = 99;
  auto a = MakePlan(in, {"vmapi0", "napi0"}, opt);
  auto b = MakePlan(in, {"vmapi0", "napi0"}, opt);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(a->ToJson() == b->ToJson());
  opt.seed = 100;
  auto c = MakePlan(in, {"vmapi0", "napi0"}, opt);
  CHECK(c->instances[0].new_uuid != a->instances[0].new_uuid);

  // A resumed restore: the catalog now also knows the first run's aliases, yet
  // the pinned assignments come back unchanged.
  opt.assigned = {{kU1, {"aaaaaaaa-1111-4111-8111-111111111111", "vmapi1"}},
                  {kU2, {"bbbbbbbb-1111-4111-8111-111111111111", "napi1"}}};
  auto d = MakePlan(in, {"vmapi0", "napi0", "vmapi1", "napi1"}, opt);
  REQUIRE(d.ok());
  CHECK(d->instances[0].alias == "napi1");
  CHECK(d->instances[0].new_uuid == "bbbbbbbb-1111-4111-8111-111111111111");
  CHECK(d->instances[1].alias == "vmapi1");
}

TEST_CASE("new uuids are valid v4 uuids and steps round-trip through JSON") {
  std::mt19937_64 rng(5);
  std::set<std::string> seen;
  for (int i = 0; i < 100; ++i) {
    std::string u = NewUuidV4(rng);
    REQUIRE(IsUuid(u));
    CHECK(u[14] == '4');
    CHECK((u[19] == '8' || u[19] == '9' || u[19] == 'a' || u[19] == 'b'));
    seen.insert(u);
  }
  CHECK(seen.size() == 100);

  std::vector<InstanceSource> in = {
      Instance(kU1, "vmapi0", "vmapi", {Image("aaaaaaaa-0000-4000-8000-000000000000", "")})};
  auto plan = MakePlan(in, {}, PlanOptions{});
  REQUIRE(plan.ok());
  for (const Step& s : plan->steps) {
    auto back = Step::FromJson(s.ToJson());
    REQUIRE(back.ok());
    CHECK(back->ToJson() == s.ToJson());
  }
  CHECK(Step::FromJson(json{{"kind", "explode"}, {"id", "x"}}).status().code() == Code::kData);
}

TEST_CASE("the old records are retired last, with the NICs the new VM uses, unless kept") {
  std::vector<InstanceSource> in = {Instance(kU1, "vmapi0", "vmapi", {}),
                                    Instance(kU2, "sapi0", "sapi", {})};
  for (InstanceSource& i : in) {
    i.image_uuid.clear();
    i.vm_payload["nics"] = {
        {{"mac", "90:b8:d0:00:00:0" + i.uuid.substr(0, 1)}, {"ip", "10.0.0.1"}}};
  }
  PlanOptions opt;
  opt.seed = 5;
  auto plan = MakePlan(in, {}, opt);
  REQUIRE(plan.ok());
  CHECK(plan->retire_old_records);
  CHECK(plan->ToJson()["retire_old_records"] == true);
  // Every retirement comes after every adopt_instance and register_sapi.
  size_t last_handover = 0, first_retire = plan->steps.size();
  for (size_t i = 0; i < plan->steps.size(); ++i) {
    StepKind k = plan->steps[i].kind;
    if (k == StepKind::kAdoptInstance || k == StepKind::kRegisterSapi) last_handover = i;
    if (k == StepKind::kRetireOldRecords) first_retire = std::min(first_retire, i);
  }
  REQUIRE(first_retire == plan->steps.size() - 2);
  CHECK(last_handover < first_retire);
  const Step& retire = plan->steps.back();
  CHECK(retire.id == "retire_old_records:" + kU1);
  CHECK(retire.old_uuid == kU1);
  CHECK(retire.new_uuid == plan->instances[1].new_uuid);
  CHECK(retire.payload["nics"][0]["mac"] == "90:b8:d0:00:00:01");
  auto back = Step::FromJson(retire.ToJson());
  REQUIRE(back.ok());
  CHECK(back->kind == StepKind::kRetireOldRecords);
  CHECK(back->payload == retire.payload);

  opt.retire_old_records = false;  // --keep-old-records
  auto kept = MakePlan(in, {}, opt);
  REQUIRE(kept.ok());
  CHECK_FALSE(kept->retire_old_records);
  CHECK(kept->ToJson()["retire_old_records"] == false);
  for (const Step& s : kept->steps) CHECK(s.kind != StepKind::kRetireOldRecords);
  CHECK(kept->steps.size() == plan->steps.size() - 2);
}

TEST_CASE("a create step says what follows it, and an older journal's step says nothing") {
  std::vector<InstanceSource> in = {Instance(kU1, "vmapi0", "vmapi", {})};
  in[0].image_uuid.clear();
  auto plan = MakePlan(in, {}, PlanOptions{});
  REQUIRE(plan.ok());
  const Step& create = plan->steps.at(0);
  REQUIRE(create.kind == StepKind::kCreateInstance);
  CHECK(create.start_after_data == !in[0].data_path.empty());
  CHECK(create.adopt_after);
  CHECK(Step::FromJson(create.ToJson())->adopt_after);
  // A journal written before adopt_instance existed: the backend must not
  // hide the VM from vm-agent, since no step would show it again.
  json old = create.ToJson();
  old.erase("adopt_after");
  old.erase("start_after_data");
  auto back = Step::FromJson(old);
  REQUIRE(back.ok());
  CHECK_FALSE(back->adopt_after);
  CHECK_FALSE(back->start_after_data);
}


// joyent/sdc-vm-agent tests/data.js at commit 935ce67ec08424c084049a2f3fb5cae23fa28bf9:
// smartosPayloads[0], a real `vmadm get` of a joyent-minimal zone (data copied).
json SdcVmAgentPayload() {
  return json::parse(R"({
    "zonename": "6d7d6f4b-4553-49f1-bc0b-7fd16dcf0f2c", "autoboot": true,
    "brand": "joyent-minimal", "limit_priv": "default", "v": 1,
    "create_timestamp": "2015-11-27T05:01:25.838Z",
    "image_uuid": "cd2d08a0-83f1-11e5-8684-f383641a9854", "cpu_shares": 128, "max_lwps": 1000,
    "max_msg_ids": 4096, "max_sem_ids": 4096, "max_shm_ids": 4096, "max_shm_memory": 128,
    "zfs_io_priority": 10, "max_physical_memory": 128, "max_locked_memory": 128,
    "max_swap": 256, "cpu_cap": 100, "billing_id": "73a1ca34-1e30-48c7-8681-70314a9c67d3",
    "owner_uuid": "930896af-bf8c-48d4-885c-6573a94b1853", "package_name": "sdc_128",
    "package_version": "1.0.0", "tmpfs": 128, "dns_domain": "local",
    "archive_on_delete": true, "maintain_resolvers": true, "resolvers": ["10.192.0.11"],
    "alias": "testvm",
    "nics": [{"interface": "net0", "mac": "92:88:1a:79:75:71", "vlan_id": 0,
              "nic_tag": "admin", "netmask": "255.192.0.0", "ip": "10.192.0.8",
              "ips": ["10.192.0.8/10"], "primary": true}],
    "uuid": "6d7d6f4b-4553-49f1-bc0b-7fd16dcf0f2c", "zone_state": "running",
    "zonepath": "/zones/6d7d6f4b-4553-49f1-bc0b-7fd16dcf0f2c", "zoneid": 9,
    "last_modified": "2015-11-27T06:19:37.000Z", "firewall_enabled": false,
    "server_uuid": "564dfd57-1dd4-6fc0-d973-4f137ee12afe", "datacenter_name": "coal",
    "platform_buildstamp": "20151126T011339Z", "state": "running",
    "boot_timestamp": "2015-11-28T07:56:44.000Z", "pid": 5200, "customer_metadata": {},
    "internal_metadata": {}, "routes": {}, "tags": {}, "quota": 25,
    "zfs_root_recsize": 131072, "zfs_filesystem": "zones/6d7d6f4b-4553-49f1-bc0b-7fd16dcf0f2c",
    "zpool": "zones", "snapshots": []
  })");
}

TEST_CASE("real vmadm get (sdc-vm-agent tests/data.js): create keeps what proptable.js allows") {
  json old = SdcVmAgentPayload();
  json p = NewVmPayload(old, kU2, "testvm1", /*new_ips=*/false);
  // Output-only properties of this real object, absent from proptable.js's
  // create set (smartos-live e6da73be).
  for (const char* f : {"v", "create_timestamp", "zone_state", "zonepath", "zoneid",
                        "last_modified", "server_uuid", "datacenter_name", "platform_buildstamp",
                        "state", "boot_timestamp", "pid", "zfs_filesystem", "snapshots"}) {
    INFO(f);
    CHECK_FALSE(p.contains(f));
  }
  // Everything else it holds is a create property and is kept as it was.
  for (auto it = old.begin(); it != old.end(); ++it) {
    if (!CreateAcceptsVmProperty("joyent-minimal", it.key())) continue;
    INFO(it.key());
    if (it.key() == "uuid" || it.key() == "zonename") {
      CHECK(p[it.key()] == kU2);
    } else if (it.key() == "alias") {
      CHECK(p["alias"] == "testvm1");
    } else {
      CHECK(p[it.key()] == it.value());
    }
  }
  CHECK(p.size() == 36);
  // No `datasets` in this zone: no delegated dataset asked for.
  CHECK_FALSE(p.contains("delegate_dataset"));
}

TEST_CASE("delegate_dataset is derived from datasets, indestructible_delegated follows it") {
  json old = SdcVmAgentPayload();
  old["datasets"] = {"zones/6d7d6f4b-4553-49f1-bc0b-7fd16dcf0f2c/data"};
  old["indestructible_delegated"] = true;
  CHECK(HasDelegatedDataset(old));
  json p = NewVmPayload(old, kU2, "testvm1", false);
  CHECK(p["delegate_dataset"] == true);
  CHECK(p["indestructible_delegated"] == true);
  CHECK_FALSE(p.contains("datasets"));
  // A dataset that is not <zfs_filesystem>/data is not the delegated one.
  old["datasets"] = {"zones/other"};
  CHECK_FALSE(HasDelegatedDataset(old));
  p = NewVmPayload(old, kU2, "testvm1", false);
  CHECK_FALSE(p.contains("delegate_dataset"));
  CHECK_FALSE(p.contains("indestructible_delegated"));
}

TEST_CASE("per-brand create properties follow proptable.js (lx, kvm, bhyve)") {
  // Spot checks of the table against proptable.js at smartos-live e6da73be.
  CHECK(CreateAcceptsVmProperty("lx", "kernel_version"));
  CHECK_FALSE(CreateAcceptsVmProperty("joyent", "kernel_version"));
  CHECK(CreateAcceptsVmProperty("kvm", "disks"));
  CHECK(CreateAcceptsVmProperty("bhyve", "bootrom"));
  CHECK_FALSE(CreateAcceptsVmProperty("kvm", "bootrom"));
  CHECK_FALSE(CreateAcceptsVmProperty("kvm", "delegate_dataset"));
  CHECK(CreateAcceptsVmProperty("", "delegate_dataset"));  // no brand: joyent (VM.js)
  for (const char* b : {"joyent", "joyent-minimal", "lx", "kvm", "bhyve"}) {
    INFO(b);
    for (const char* f : {"v", "datasets", "datacenter_name", "headnode_id", "default_gateway",
                          "zlog_mode", "transition_to", "state", "server_uuid"}) {
      INFO(f);
      CHECK_FALSE(CreateAcceptsVmProperty(b, f));
    }
    CHECK(CreateAcceptsVmProperty(b, "nics"));
    CHECK(CreateAcceptsVmProperty(b, "zonename"));
  }
  // A kvm VM never gets delegate_dataset, even with a datasets list.
  json kvm = SdcVmAgentPayload();
  kvm["brand"] = "kvm";
  kvm["datasets"] = {"zones/6d7d6f4b-4553-49f1-bc0b-7fd16dcf0f2c/data"};
  kvm["disks"] = json::array({{{"boot", true}, {"model", "virtio"}, {"size", 10240}}});
  kvm["tmpfs"] = 128;
  json p = NewVmPayload(kvm, kU2, "kvm1", false);
  CHECK_FALSE(p.contains("delegate_dataset"));
  CHECK_FALSE(p.contains("tmpfs"));  // joyent/lx only
  CHECK(p["disks"][0]["size"] == 10240);
}

TEST_CASE("the create table is proptable.js's, as the fake vmadm enforces it") {
  // tests/data/fake-smartos-restore/vmadm-create-properties.json is the
  // create set per brand extracted from proptable.js (smartos-live e6da73be);
  // the fake vmadm drops what it does not list, as VM.js does. The planner's
  // table must say the same for every property either side names.
  const auto table = testing::BrandTable(std::string(LIFEBOAT_TEST_DATA_DIR) +
                                         "/fake-smartos-restore/vmadm-create-properties.json");
  std::set<std::string> every;
  for (const auto& [brand, listed] : table) every.insert(listed.begin(), listed.end());
  for (const char* f : {"datasets", "v", "state", "zfs_filesystem", "transition_to"}) every.insert(f);
  for (const auto& [brand, listed] : table) {
    for (const std::string& p : every) {
      INFO(brand << " " << p);
      CHECK(CreateAcceptsVmProperty(brand, p) == (listed.count(p) == 1));
    }
  }
  CHECK(table.size() == 5);
}

TEST_CASE("an unknown brand is skipped with the reason, not created blind") {
  std::vector<InstanceSource> in = {Instance(kU1, "imgapi0", "imgapi", {})};
  in[0].image_uuid.clear();
  in[0].vm_payload["brand"] = "sngl";
  PlanOptions opt;
  opt.seed = 3;
  auto plan = MakePlan(in, {}, opt);
  REQUIRE(plan.ok());
  CHECK(plan->instances.empty());
  REQUIRE(plan->skipped.size() == 1);
  CHECK(plan->skipped[0].reason.find("sngl") != std::string::npos);
}

}  // namespace
}  // namespace lifeboat::restore
