#include "restore/backend.h"

#include <catch2/catch.hpp>

#include "base/digest.h"
#include "base/fault_env.h"
#include "restore/tree_copy.h"
#include "tests/unit/restore/image_files.h"
#include "tests/unit/restore/restore_test_util.h"

namespace lifeboat::restore {
namespace {

using nlohmann::json;
using testing::DirOptions;
using testing::FakeCalls;
using testing::FakeSmartosDir;
using testing::MakeDataTree;
using testing::ReadFile;
using testing::ScopedEnv;
using testing::SnapshotTree;
using testing::TempDir;
using testing::WriteFile;

const std::string kRootImage = "04a48d7d-6bb5-4e83-8c3b-e60a99e0f48f";
const std::string kLeafImage = "2d74d0fb-5c5e-4ad8-ab2a-0b6a3f8d4f8e";
const std::string kOld = "b2f1a9d4-7c3e-4f0a-9e57-2d1c6b8a4e10";

// A catalog-shaped source: two images (root and child) and one instance.
struct Source {
  explicit Source(const TempDir& dir) {
    for (const auto& [uuid, origin] :
         {std::pair{kRootImage, std::string()}, std::pair{kLeafImage, kRootImage}}) {
      json manifest = {{"v", 2}, {"uuid", uuid}, {"name", "img"}};
      if (!origin.empty()) manifest["origin"] = origin;
      manifest["files"] = testing::ImageFiles("image bytes of " + uuid);
      std::string img_dir = dir / ("catalog/images/" + uuid);
      WriteFile(img_dir + "/manifest.json", manifest.dump(2) + "\n");
      WriteFile(img_dir + "/file", "image bytes of " + uuid);
      images.push_back(ImageSource{uuid, origin, img_dir + "/manifest.json", img_dir + "/file",
                                   ReadFile(img_dir + "/file").size(),
                                   Xxh3Digest(ReadFile(img_dir + "/file")).Hex(), false});
    }
    data = dir / ("catalog/data/" + kOld);
    MakeDataTree(data);
    instance.uuid = kOld;
    instance.alias = "imgapi0";
    instance.service = "imgapi";
    instance.peer = "headnode1";
    instance.vm_payload = {{"uuid", kOld},
                           {"alias", "imgapi0"},
                           {"image_uuid", kLeafImage},
                           {"state", "running"},
                           {"zonepath", "/zones/" + kOld},
                           {"zfs_filesystem", "zones/" + kOld},
                           {"datasets", {"zones/" + kOld + "/data"}},
                           {"owner_uuid", "930896af-bf8c-48d4-885c-6573a94b1853"},
                           {"nics",
                            {{{"interface", "net0"},
                              {"mac", "90:b8:d0:1a:2b:3c"},
                              {"nic_tag", "admin"},
                              {"ip", "10.99.99.21"},
                              {"network_uuid", "4a3c2f5e-0b1d-4c6e-8f7a-9b0c1d2e3f40"}},
                             {{"interface", "net1"},
                              {"mac", "90:b8:d0:4d:5e:6f"},
                              {"nic_tag", "external"},
                              {"ip", "203.0.113.21"},
                              {"network_uuid", "7e6d5c4b-3a29-4180-b7c6-d5e4f3a2b1c0"}}}},
                           {"tags", {{"smartdc_role", "imgapi"}}}};
    instance.sapi_record = {{"uuid", kOld},
                            {"service_uuid", "6e3b2a1c-9d8f-4e7a-b6c5-d4e3f2a1b0c9"},
                            {"params", {{"alias", "imgapi0"}}}};
    instance.image_uuid = kLeafImage;
    instance.image_chain = images;
    instance.data_path = data;
    instance.data_bytes = 100;
  }

  Plan MakeTestPlan(bool root_on_target = false) {
    InstanceSource in = instance;
    in.image_chain[0].on_target = root_on_target;
    PlanOptions opt;
    opt.seed = 11;
    auto plan = MakePlan({in}, {"imgapi0"}, opt);
    REQUIRE(plan.ok());
    return *plan;
  }

  std::vector<ImageSource> images;
  std::string data;
  InstanceSource instance;
};

TEST_CASE("dir backend restores images, payload, SAPI record and an identical data tree") {
  TempDir dir;
  Source src(dir);
  Plan plan = src.MakeTestPlan();
  REQUIRE(plan.steps.size() == 8);  // 2 images, create, data, await, adopt, sapi, retire
  const std::string target = dir / "target";
  auto backend = NewDirBackend(*Env::Default(), DirOptions(target, 3));
  CHECK_FALSE(backend->HasImage(kRootImage).value());
  for (const Step& s : plan.steps) {
    INFO(s.id);
    auto r = backend->Run(s, {});
    REQUIRE(r.ok());
    CHECK_FALSE(r->already_done);
  }
  const std::string new_uuid = plan.instances[0].new_uuid;
  const std::string zone = target + "/zones/" + new_uuid;
  CHECK(SnapshotTree(zone + "/data") == SnapshotTree(src.data));
  json vm = json::parse(ReadFile(zone + "/vm.json"));
  CHECK(vm["uuid"] == new_uuid);
  CHECK(vm["alias"] == "imgapi1");
  CHECK_FALSE(vm.contains("state"));
  CHECK_FALSE(vm.contains("zonepath"));
  json sapi = json::parse(ReadFile(zone + "/sapi.json"));
  CHECK(sapi["uuid"] == new_uuid);
  for (const auto& img : src.images) {
    CHECK(ReadFile(target + "/images/" + img.uuid + "/file") == ReadFile(img.file_path));
    CHECK(ReadFile(target + "/images/" + img.uuid + "/manifest.json") ==
          ReadFile(img.manifest_path));
  }
  CHECK(backend->HasImage(kRootImage).value());
  CHECK(backend->TargetAliases().value() == std::set<std::string>{"imgapi1"});

  // Running every step again changes nothing and says so.
  std::string before = SnapshotTree(target);
  for (const Step& s : plan.steps) REQUIRE(backend->Run(s, {}).ok());
  CHECK(SnapshotTree(target) == before);
  CHECK(backend->Run(plan.steps[0], {})->already_done);
}

TEST_CASE("dir backend refuses an image whose origin is not installed, and a corrupt image") {
  TempDir dir;
  Source src(dir);
  Plan plan = src.MakeTestPlan();
  auto backend = NewDirBackend(*Env::Default(), DirOptions(dir / "target", 2));
  const Step& leaf = plan.steps[1];
  REQUIRE(leaf.image_uuid == kLeafImage);
  auto r = backend->Run(leaf, {});
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kData);
  CHECK(r.status().message().find("origin image " + kRootImage) != std::string::npos);
  CHECK_FALSE(Exists(*Env::Default(), dir / ("target/images/" + kLeafImage)));

  Step root = plan.steps[0];
  WriteFile(root.file_path, "flipped bytes");
  r = backend->Run(root, {});
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kData);
  CHECK(r.status().message().find("expected " + root.file_digest) != std::string::npos);
  CHECK_FALSE(backend->HasImage(kRootImage).value());
  CHECK(Env::Default()->ListDir(dir / "target/images").value().empty());
}

TEST_CASE("a symlink pointing outside the instance is refused before anything is written") {
  TempDir dir;
  Source src(dir);
  ::symlink("../../../../etc/passwd", (src.data + "/db/escape").c_str());
  Plan plan = src.MakeTestPlan();
  auto backend = NewDirBackend(*Env::Default(), DirOptions(dir / "target", 2));
  for (size_t i = 0; i < 3; ++i) REQUIRE(backend->Run(plan.steps[i], {}).ok());
  REQUIRE(plan.steps[3].kind == StepKind::kRestoreData);
  auto r = backend->Run(plan.steps[3], {});
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kData);
  CHECK(r.status().message().find("db/escape") != std::string::npos);
  const std::string zone = dir / ("target/zones/" + plan.instances[0].new_uuid);
  CHECK_FALSE(Exists(*Env::Default(), zone + "/data"));
  CHECK_FALSE(Exists(*Env::Default(), zone + "/data.partial"));

  CHECK(CheckSymlinkInside("a/b/link", "../../x").ok());
  CHECK_FALSE(CheckSymlinkInside("a/b/link", "../../../x").ok());
  CHECK_FALSE(CheckSymlinkInside("link", "/etc/passwd").ok());
  CHECK(CheckSymlinkInside("a/link", "./b/../c").ok());
  CHECK_FALSE(CheckSymlinkInside("a/link", "b/../../../c").ok());
}

TEST_CASE("a data copy that fails halfway is redone cleanly on the next run") {
  TempDir dir;
  Source src(dir);
  Plan plan = src.MakeTestPlan();
  FaultEnv fault(Env::Default());
  auto backend = NewDirBackend(fault, DirOptions(dir / "target", 1));
  for (size_t i = 0; i < 3; ++i) REQUIRE(backend->Run(plan.steps[i], {}).ok());
  fault.FailNth(EnvOp::kCopyFile, 3, ENOSPC);
  auto r = backend->Run(plan.steps[3], {});
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message().find("No space left") != std::string::npos);
  const std::string zone = dir / ("target/zones/" + plan.instances[0].new_uuid);
  CHECK_FALSE(Exists(*Env::Default(), zone + "/data"));
  fault.ClearFaults();
  REQUIRE(backend->Run(plan.steps[3], {}).ok());
  CHECK(SnapshotTree(zone + "/data") == SnapshotTree(src.data));
  CHECK_FALSE(Exists(*Env::Default(), zone + "/data.partial"));
}

// ---- smartos, against the recording fakes ----------------------------------

SmartosBackendOptions FakeSmartos(const TempDir& dir) {
  return testing::FakeSmartosOptions(dir / "work");
}

std::vector<std::string> Mutations(const std::vector<std::string>& calls) {
  std::vector<std::string> out;
  for (const std::string& c : calls) {
    std::string cmd = c.substr(c.rfind('/', c.find(' ')) + 1);
    if (cmd.find(" get") != std::string::npos || cmd.find(" list") != std::string::npos ||
        cmd.starts_with("sdc-vmapi ") || cmd.starts_with("svcs ")) {
      continue;
    }
    out.push_back(cmd);
  }
  return out;
}

TEST_CASE("smartos backend never registers in SAPI a VM that VMAPI does not know") {
  TempDir dir;
  Source src(dir);
  ScopedEnv state("FAKE_SMARTOS_STATE", dir / "smartos");
  ScopedEnv lag("FAKE_VMAPI_LAG", "1000000");  // vm-agent never reports the VM
  Plan plan = src.MakeTestPlan();
  SmartosBackendOptions o = FakeSmartos(dir);
  o.vmapi_wait_ms = 100;
  auto backend = NewSmartosBackend(*Env::Default(), o);
  Status failed;
  for (const Step& s : plan.steps) {
    auto r = backend->Run(s, {});
    if (!r.ok()) {
      failed = r.status();
      REQUIRE(s.kind == StepKind::kRegisterSapi);
      break;
    }
  }
  CHECK(failed.code() == Code::kTemporary);
  CHECK_THAT(failed.message(), Catch::Contains("VMAPI does not know imgapi1"));
  CHECK_THAT(failed.message(), Catch::Contains("second VM"));
  for (const std::string& c : FakeCalls(dir / "smartos")) CHECK(c.find("sdc-sapi") == std::string::npos);
}

TEST_CASE("smartos backend runs imgadm, vmadm and zfs with the right arguments in order") {
  TempDir dir;
  Source src(dir);
  ScopedEnv state("FAKE_SMARTOS_STATE", dir / "smartos");
  // NAPI knows the old VM's admin NIC, not its external one.
  WriteFile(dir / "smartos/napi/90b8d01a2b3c.json",
            json({{"mac", "90:b8:d0:1a:2b:3c"},
                  {"ip", "10.99.99.21"},
                  {"belongs_to_uuid", kOld},
                  {"belongs_to_type", "zone"},
                  {"owner_uuid", "930896af-bf8c-48d4-885c-6573a94b1853"}})
                .dump());
  Plan plan = src.MakeTestPlan();
  auto backend = NewSmartosBackend(*Env::Default(), FakeSmartos(dir));
  REQUIRE(backend->Check(plan).ok());
  for (const Step& s : plan.steps) {
    INFO(s.id);
    auto r = backend->Run(s, {});
    INFO(r.status().ToString());
    REQUIRE(r.ok());
  }
  const std::string u = plan.instances[0].new_uuid;
  const auto& img = src.images;
  CHECK(Mutations(FakeCalls(dir / "smartos")) ==
        std::vector<std::string>{
            "imgadm install -m " + img[0].manifest_path + " -f " + img[0].file_path,
            "imgadm install -m " + img[1].manifest_path + " -f " + img[1].file_path,
            "vmadm create -f " + (dir / ("work/" + u + ".vm.json")),
            "vmadm update " + u + " autoboot=true",
            "vmadm start " + u,
            "sdc-napi /nics/90b8d01a2b3c -X PUT -d @" +
                (dir / ("work/" + u + ".nic-90b8d01a2b3c.json")),
            "sdc-napi /nics/90b8d04d5e6f -X PUT -d @" +
                (dir / ("work/" + u + ".nic-90b8d04d5e6f.json")),
            "sdc-napi /nics -X POST -d @" + (dir / ("work/" + u + ".nic-90b8d04d5e6f.json")),
            "vmadm update " + u + " do_not_inventory=false",
            "sdc-sapi /instances -X POST -d @" + (dir / ("work/" + u + ".sapi.json")),
            // retire_old_records: NAPI has no NIC of the old VM left, VMAPI
            // and SAPI do not know it (nothing to PUT, SAPI answers 404).
            "sdc-napi /nics?belongs_to_uuid=" + kOld,
            "sdc-sapi /instances/" + kOld + " -X DELETE",
        });
  // Both NICs belong to the new VM in NAPI before net-agent could see it:
  // it never stripped one (the fake logs it when it would have).
  for (const char* mac : {"90b8d01a2b3c", "90b8d04d5e6f"}) {
    json nic = json::parse(ReadFile(dir / ("smartos/napi/" + std::string(mac) + ".json")));
    CHECK(nic["belongs_to_uuid"] == u);
    CHECK(nic["cn_uuid"] == "564dd1ac-164d-cc50-247c-b2eb0cf21ce5");
  }
  CHECK(json::parse(ReadFile(dir / "smartos/napi/90b8d04d5e6f.json"))["ip"] == "203.0.113.21");
  CHECK_FALSE(Exists(*Env::Default(), dir / "smartos/net-agent.log"));
  auto calls = FakeCalls(dir / "smartos");
  // SAPI adopts the VM only once VMAPI knows it: VMAPI was asked until it
  // did (the fake's vm-agent lag: one 404 first), and only then SAPI.
  std::vector<std::string> vmapi_then_sapi;
  for (const std::string& c : calls) {
    if (c.find("sdc-vmapi") != std::string::npos || c.find("sdc-sapi") != std::string::npos) {
      vmapi_then_sapi.push_back(c.substr(c.rfind('/', c.find(' ')) + 1, 9));
    }
  }
  CHECK(vmapi_then_sapi ==
        std::vector<std::string>{"sdc-vmapi", "sdc-vmapi", "sdc-sapi ", "sdc-vmapi", "sdc-sapi "});
  CHECK(std::find(calls.begin(), calls.end(),
                  "zfs get -Hp -o value mountpoint zones/" + u + "/data") != calls.end());
  // The fake vmadm refuses read-only fields, so the create above proves they
  // were stripped; the data replaced what the zone's first boot wrote.
  CHECK(SnapshotTree(dir / ("smartos/zones/" + u + "/data"), false) ==
        SnapshotTree(src.data, false));
  CHECK(json::parse(ReadFile(dir / ("smartos/sapi/" + u + ".json")))["params"]["alias"] ==
        "imgapi1");
  CHECK(backend->TargetAliases().value() == std::set<std::string>{"imgapi1"});
}

TEST_CASE("smartos backend steps are safe to repeat after a failure") {
  TempDir dir;
  Source src(dir);
  ScopedEnv state("FAKE_SMARTOS_STATE", dir / "smartos");
  Plan plan = src.MakeTestPlan(/*root_on_target=*/false);
  auto backend = NewSmartosBackend(*Env::Default(), FakeSmartos(dir));
  for (size_t i = 0; i < 3; ++i) REQUIRE(backend->Run(plan.steps[i], {}).ok());
  {
    // `vmadm start` fails after the data was copied: the rerun stops nothing
    // (already stopped), copies again into a cleared dataset and starts.
    ScopedEnv fail("FAKE_SMARTOS_FAIL_MATCH", "vmadm\tstart");
    auto r = backend->Run(plan.steps[3], {});
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().message().find("injected failure") != std::string::npos);
    CHECK(r.status().message().find("vmadm start") != std::string::npos);
  }
  const std::string u = plan.instances[0].new_uuid;
  WriteFile(dir / ("smartos/zones/" + u + "/data/stray"), "left by someone");
  REQUIRE(backend->Run(plan.steps[3], {}).ok());
  CHECK(SnapshotTree(dir / ("smartos/zones/" + u + "/data"), false) ==
        SnapshotTree(src.data, false));
  // A repeated create or image install finds its work done and runs nothing.
  size_t calls = FakeCalls(dir / "smartos").size();
  CHECK(backend->Run(plan.steps[2], {})->already_done);
  CHECK(backend->Run(plan.steps[0], {})->already_done);
  auto after = FakeCalls(dir / "smartos");
  CHECK(Mutations(std::vector<std::string>(after.begin() + calls, after.end())).empty());
}

// Runs the plan's steps up to the first await_instance, which it returns.
Result<StepResult> RunUntilAwait(Backend& backend, const Plan& plan) {
  for (const Step& s : plan.steps) {
    if (s.kind == StepKind::kAwaitInstance) return backend.Run(s, {});
    auto r = backend.Run(s, {});
    if (!r.ok()) return r;
  }
  return InternalError("the plan has no await_instance step");
}

TEST_CASE("smartos await_instance waits for the zone's setup and services, then passes") {
  TempDir dir;
  Source src(dir);
  ScopedEnv state("FAKE_SMARTOS_STATE", dir / "smartos");
  ScopedEnv lag("FAKE_SVCS_LAG", "3");  // a service still starting on the first three looks
  Plan plan = src.MakeTestPlan();
  auto backend = NewSmartosBackend(*Env::Default(), FakeSmartos(dir));
  auto r = RunUntilAwait(*backend, plan);
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  size_t svcs = 0;
  for (const std::string& c : FakeCalls(dir / "smartos"))
    svcs += c.find("svcs -xvz") != std::string::npos;
  CHECK(svcs == 4);
}

TEST_CASE("smartos await_instance stops at once on a failed setup or a service in maintenance") {
  TempDir dir;
  Source src(dir);
  ScopedEnv state("FAKE_SMARTOS_STATE", dir / "smartos");
  Plan plan = src.MakeTestPlan();
  SmartosBackendOptions o = FakeSmartos(dir);
  o.await_wait_ms = 60'000;  // a wait would make the test time out, not pass
  auto backend = NewSmartosBackend(*Env::Default(), o);
  SECTION("setup_failed") {
    ScopedEnv setup("FAKE_ZONE_SETUP", "failed");
    auto r = RunUntilAwait(*backend, plan);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == Code::kData);
    CHECK_THAT(r.status().message(),
               Catch::Contains("await imgapi1") && Catch::Contains("setup_failed exists"));
  }
  SECTION("maintenance") {
    ScopedEnv svc("FAKE_SVCS_STATE", "maintenance");
    auto r = RunUntilAwait(*backend, plan);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == Code::kData);
    CHECK_THAT(r.status().message(), Catch::Contains("in maintenance") &&
                                         Catch::Contains("svc:/smartdc/site/imgapi:default"));
  }
}

TEST_CASE("smartos await_instance gives up after its deadline with a resumable error") {
  TempDir dir;
  Source src(dir);
  ScopedEnv state("FAKE_SMARTOS_STATE", dir / "smartos");
  ScopedEnv setup("FAKE_ZONE_SETUP", "never");
  Plan plan = src.MakeTestPlan();
  SmartosBackendOptions o = FakeSmartos(dir);
  o.await_wait_ms = 200;
  auto backend = NewSmartosBackend(*Env::Default(), o);
  auto r = RunUntilAwait(*backend, plan);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kTemporary);
  CHECK_THAT(r.status().message(), Catch::Contains("not up after") &&
                                       Catch::Contains("setup has not finished") &&
                                       Catch::Contains("resumes here"));
}

TEST_CASE("smartos backend sees this node's HA zones and whether their services run") {
  TempDir dir;
  ScopedEnv state("FAKE_SMARTOS_STATE", dir / "smartos");
  const std::string binder = "2f5d3c2e-0000-4000-8000-00000000000b";
  const std::string manatee = "2f5d3c2e-0000-4000-8000-00000000000c";
  WriteFile(
      dir / ("smartos/vms/" + binder + ".json"),
      R"({"uuid": ")" + binder + R"(", "alias": "binder0", "tags": {"smartdc_role": "binder"}})");
  WriteFile(dir / ("smartos/vms/" + binder + ".state"), "running\n");
  WriteFile(dir / ("smartos/vms/" + manatee + ".json"),
            R"({"uuid": ")" + manatee +
                R"(", "alias": "manatee0", "tags": {"smartdc_role": "manatee"}})");
  WriteFile(dir / ("smartos/vms/" + manatee + ".state"), "stopped\n");
  ScopedEnv settled("FAKE_SVCS_LAG", "0");
  auto backend = NewSmartosBackend(*Env::Default(), FakeSmartos(dir));

  auto b = backend->LocalInstances("binder");
  REQUIRE(b.ok());
  REQUIRE(b->has_value());
  REQUIRE((*b)->size() == 1);
  CHECK((**b)[0].alias == "binder0");
  CHECK((**b)[0].healthy);
  auto m = backend->LocalInstances("manatee");
  REQUIRE(m.ok());
  REQUIRE((*m)->size() == 1);
  CHECK_FALSE((**m)[0].healthy);
  CHECK((**m)[0].detail == "the zone is stopped");
  CHECK(backend->LocalInstances("moray").value()->empty());
  {
    ScopedEnv broken("FAKE_SVCS_STATE", "maintenance");
    auto sick = backend->LocalInstances("binder");
    REQUIRE(sick.ok());
    CHECK_FALSE((**sick)[0].healthy);
    CHECK_THAT((**sick)[0].detail, Catch::Contains("State: maintenance"));
  }
}

TEST_CASE("smartos backend reports a missing command as unavailable") {
  TempDir dir;
  Source src(dir);
  auto opts = FakeSmartos(dir);
  opts.imgadm = dir / "no-such-imgadm";
  auto backend = NewSmartosBackend(*Env::Default(), opts);
  auto r = backend->HasImage(kRootImage);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kUnavailable);
  CHECK(r.status().message().find("no-such-imgadm") != std::string::npos);
}

// ---- smartos retire_old_records ---------------------------------------------

const std::string kHere = "564dd1ac-164d-cc50-247c-b2eb0cf21ce5";  // FakeSmartosOptions' server
const std::string kDead = "44454144-0000-4000-8000-00000000dead";  // the lost headnode
const std::string kStrayMac = "90b8d0777777";  // a NIC of the old VM the new one does not use

// What Triton still holds of the lost instance kOld: its VMAPI record on
// `server` (listed in CNAPI with `server_status`, "" = not listed), its SAPI
// instance, and in NAPI its two NICs plus a third the new VM does not reuse.
json SeedOldRecords(const TempDir& dir, const std::string& server,
                    const std::string& server_status) {
  const std::string st = dir / "smartos";
  json vm = {{"uuid", kOld},
             {"alias", "imgapi0"},
             {"owner_uuid", "930896af-bf8c-48d4-885c-6573a94b1853"},
             {"server_uuid", server},
             {"brand", "joyent-minimal"},
             {"state", "running"},
             {"zone_state", "running"},
             {"ram", 512},
             {"tags", {{"smartdc_role", "imgapi"}}},
             {"customer_metadata", {{"user-script", "#!/bin/sh\n"}}},
             {"nics",
              {{{"mac", "90:b8:d0:1a:2b:3c"}, {"ip", "10.99.99.21"}},
               {{"mac", "90:b8:d0:4d:5e:6f"}, {"ip", "203.0.113.21"}},
               {{"mac", "90:b8:d0:77:77:77"}, {"ip", "10.99.99.77"}}}}};
  WriteFile(st + "/vmapi/vms/" + kOld + ".json", vm.dump(2));
  WriteFile(
      st + "/sapi/" + kOld + ".json",
      json({{"uuid", kOld}, {"service_uuid", "6e3b2a1c-9d8f-4e7a-b6c5-d4e3f2a1b0c9"}}).dump());
  for (const auto& [mac, ip] :
       {std::pair{"90b8d01a2b3c", "10.99.99.21"}, std::pair{"90b8d04d5e6f", "203.0.113.21"},
        std::pair{"90b8d0777777", "10.99.99.77"}}) {
    WriteFile(st + "/napi/" + mac + ".json",
              json({{"mac", mac},
                    {"ip", ip},
                    {"belongs_to_uuid", kOld},
                    {"belongs_to_type", "zone"},
                    {"owner_uuid", "930896af-bf8c-48d4-885c-6573a94b1853"}})
                  .dump());
  }
  if (!server_status.empty()) WriteFile(st + "/cnapi/servers/" + server, server_status);
  return vm;
}

json OldVmapiRecord(const TempDir& dir) {
  return json::parse(ReadFile(dir / ("smartos/vmapi/vms/" + kOld + ".json")));
}

// Runs every step of `plan` in order; returns the retire_old_records result.
Result<StepResult> RunPlan(Backend& backend, const Plan& plan) {
  Result<StepResult> retired = InternalError("the plan has no retire_old_records step");
  for (const Step& s : plan.steps) {
    auto r = backend.Run(s, {});
    if (!r.ok()) return r.status().WithContext(s.id);
    if (s.kind == StepKind::kRetireOldRecords) retired = r;
  }
  return retired;
}

TEST_CASE(
    "smartos retire_old_records marks the old VM destroyed without NICs and the new VM keeps "
    "them") {
  TempDir dir;
  Source src(dir);
  ScopedEnv state("FAKE_SMARTOS_STATE", dir / "smartos");
  // The old VM's record names a running server, so VMAPI's destroy job runs
  // through and deletes every MAC the record lists (the fake enforces it).
  const json before = SeedOldRecords(dir, kHere, "running");
  Plan plan = src.MakeTestPlan();
  REQUIRE(plan.steps.back().kind == StepKind::kRetireOldRecords);
  auto backend = NewSmartosBackend(*Env::Default(), FakeSmartos(dir));
  auto retired = RunPlan(*backend, plan);
  INFO(retired.status().ToString());
  REQUIRE(retired.ok());
  CHECK(retired->warning.empty());
  const std::string u = plan.instances[0].new_uuid;

  // The new VM still has both NICs, as its own; the destroy job deleted none.
  for (const char* mac : {"90b8d01a2b3c", "90b8d04d5e6f"}) {
    INFO(mac);
    REQUIRE(Exists(*Env::Default(), dir / ("smartos/napi/" + std::string(mac) + ".json")));
    CHECK(json::parse(ReadFile(
              dir / ("smartos/napi/" + std::string(mac) + ".json")))["belongs_to_uuid"] == u);
  }
  CHECK_FALSE(Exists(*Env::Default(), dir / "smartos/napi-deleted.log"));
  // The old VM's NIC the new one does not use is gone (its IP free again).
  CHECK_FALSE(Exists(*Env::Default(), dir / ("smartos/napi/" + kStrayMac + ".json")));

  // The old record: destroyed, no NICs, every other field as it was.
  json after = OldVmapiRecord(dir);
  CHECK(after["state"] == "destroyed");
  CHECK(after["zone_state"] == "destroyed");
  CHECK(after["nics"] == json::array());
  CHECK(after.contains("destroyed"));
  for (const char* key :
       {"alias", "owner_uuid", "server_uuid", "brand", "ram", "tags", "customer_metadata"}) {
    INFO(key);
    CHECK(after[key] == before[key]);
  }
  // SAPI's instance of the old VM is gone.
  CHECK_FALSE(Exists(*Env::Default(), dir / ("smartos/sapi/" + kOld + ".json")));
  // The retirement came after the new instance was registered, and PUT the
  // record before SAPI's DELETE destroyed the VM.
  auto calls = FakeCalls(dir / "smartos");
  auto at = [&](const std::string& prefix) {
    auto it = std::find_if(calls.begin(), calls.end(), [&](const std::string& c) {
      return c.find(prefix) != std::string::npos;
    });
    REQUIRE(it != calls.end());
    return it - calls.begin();
  };
  CHECK(at("sdc-sapi /instances -X POST") < at("sdc-vmapi /vms/" + kOld + " -X PUT"));
  CHECK(at("sdc-vmapi /vms/" + kOld + " -X PUT") <
        at("sdc-sapi /instances/" + kOld + " -X DELETE"));
}

TEST_CASE(
    "smartos retire_old_records: SAPI keeping the instance while the lost server is in CNAPI is a "
    "warning, and reruns are safe") {
  TempDir dir;
  Source src(dir);
  ScopedEnv state("FAKE_SMARTOS_STATE", dir / "smartos");
  SeedOldRecords(dir, kDead, "unknown");  // the lost headnode, still listed, not running
  Plan plan = src.MakeTestPlan();
  const Step& retire = plan.steps.back();
  REQUIRE(retire.kind == StepKind::kRetireOldRecords);
  auto backend = NewSmartosBackend(*Env::Default(), FakeSmartos(dir));
  auto first = RunPlan(*backend, plan);
  INFO(first.status().ToString());
  REQUIRE(first.ok());  // not a failure of the restore
  CHECK_THAT(first->warning, Catch::Contains("HTTP 500") &&
                                 Catch::Contains("sdc-cnapi /servers/" + kDead + " -X DELETE") &&
                                 Catch::Contains("sdc-sapi /instances/" + kOld + " -X DELETE"));
  CHECK(Exists(*Env::Default(), dir / ("smartos/sapi/" + kOld + ".json")));  // SAPI kept it
  CHECK(OldVmapiRecord(dir)["state"] == "destroyed");
  CHECK(OldVmapiRecord(dir)["nics"] == json::array());
  CHECK_FALSE(Exists(*Env::Default(), dir / ("smartos/napi/" + kStrayMac + ".json")));

  // Still listed: a rerun changes nothing and warns again.
  auto again = backend->Run(retire, {});
  REQUIRE(again.ok());
  CHECK_FALSE(again->warning.empty());

  // The operator removes the lost server from CNAPI: the rerun finishes.
  REQUIRE(::unlink((dir / ("smartos/cnapi/servers/" + kDead)).c_str()) == 0);
  auto finished = backend->Run(retire, {});
  REQUIRE(finished.ok());
  CHECK(finished->warning.empty());
  CHECK_FALSE(Exists(*Env::Default(), dir / ("smartos/sapi/" + kOld + ".json")));

  // Everything gone already: VMAPI says destroyed, SAPI and NAPI 404. Done,
  // and nothing but the SAPI DELETE was sent.
  const size_t calls_before = FakeCalls(dir / "smartos").size();
  auto rerun = backend->Run(retire, {});
  REQUIRE(rerun.ok());
  CHECK(rerun->already_done);
  CHECK(rerun->warning.empty());
  auto calls = FakeCalls(dir / "smartos");
  CHECK(Mutations(std::vector<std::string>(calls.begin() + calls_before, calls.end())) ==
        std::vector<std::string>{"sdc-napi /nics?belongs_to_uuid=" + kOld,
                                 "sdc-sapi /instances/" + kOld + " -X DELETE"});
  for (size_t i = calls_before; i < calls.size(); ++i) {
    CHECK(calls[i].find(" PUT") == std::string::npos);
  }
  for (const char* mac : {"90b8d01a2b3c", "90b8d04d5e6f"}) {
    CHECK(Exists(*Env::Default(), dir / ("smartos/napi/" + std::string(mac) + ".json")));
  }
}

TEST_CASE(
    "smartos retire_old_records changes nothing while NAPI gives the old VM a NIC the new one "
    "uses") {
  TempDir dir;
  Source src(dir);
  ScopedEnv state("FAKE_SMARTOS_STATE", dir / "smartos");
  const json before = SeedOldRecords(dir, kHere, "running");
  Plan plan = src.MakeTestPlan();
  const Step& retire = plan.steps.back();
  REQUIRE(retire.kind == StepKind::kRetireOldRecords);
  // adopt_instance never ran: NAPI still says the NICs belong to kOld.
  auto backend = NewSmartosBackend(*Env::Default(), FakeSmartos(dir));
  auto r = backend->Run(retire, {});
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kData);
  CHECK_THAT(r.status().message(), Catch::Contains("90b8d01a2b3c, 90b8d04d5e6f") &&
                                       Catch::Contains("nothing was changed"));
  CHECK(OldVmapiRecord(dir) == before);
  CHECK(Exists(*Env::Default(), dir / ("smartos/sapi/" + kOld + ".json")));
  for (const std::string& mac : {std::string("90b8d01a2b3c"), kStrayMac}) {
    CHECK(Exists(*Env::Default(), dir / ("smartos/napi/" + mac + ".json")));
  }
}

TEST_CASE("dir backend's retire_old_records does nothing, exec's is an optional hook") {
  TempDir dir;
  Source src(dir);
  Plan plan = src.MakeTestPlan();
  const Step& retire = plan.steps.back();
  REQUIRE(retire.kind == StepKind::kRetireOldRecords);
  auto dir_backend = NewDirBackend(*Env::Default(), DirOptions(dir / "target", 2));
  REQUIRE(CreateDirs(*Env::Default(), dir / "target", 0700).ok());
  const std::string before = SnapshotTree(dir.path());
  auto r = dir_backend->Run(retire, {});
  REQUIRE(r.ok());
  CHECK(SnapshotTree(dir.path()) == before);

  ExecBackendOptions opts;
  for (const char* kind : {"install_image", "create_instance", "restore_data"}) {
    opts.commands[kind] = {"/bin/true"};
  }
  auto without = NewExecBackend(opts);
  REQUIRE(without->Check(plan).ok());
  auto skipped = without->Run(retire, {});
  REQUIRE(skipped.ok());
  CHECK_THAT(skipped->note, Catch::Contains("no retire_old_records command"));

  const std::string hook = dir / "retire.sh";
  WriteFile(hook, "#!/bin/sh\ncat > \"$HOOK_OUT\"\n", 0755);
  ScopedEnv out("HOOK_OUT", dir / "retire.json");
  opts.commands["retire_old_records"] = {hook};
  auto with = NewExecBackend(opts);
  REQUIRE(with->Run(retire, {}).ok());
  json got = json::parse(ReadFile(dir / "retire.json"));
  CHECK(got["kind"] == "retire_old_records");
  CHECK(got["old_uuid"] == kOld);
  CHECK(got["new_uuid"] == plan.instances[0].new_uuid);
  CHECK(got["new_vm"]["nics"].size() == 2);
}

// ---- exec ---------------------------------------------------------------------

TEST_CASE("exec backend gives the hook the step as JSON on stdin and reports its stderr") {
  TempDir dir;
  Source src(dir);
  Plan plan = src.MakeTestPlan();
  const std::string hook = dir / "hook.sh";
  WriteFile(hook,
            "#!/bin/sh\n"
            "cat > \"$HOOK_OUT/$LIFEBOAT_STEP_ID.json\"\n"
            "if [ \"$LIFEBOAT_STEP_KIND\" = restore_data ]; then\n"
            "  echo \"disk on fire for $LIFEBOAT_NEW_UUID\" >&2; exit 3\n"
            "fi\n",
            0755);
  CreateDirs(*Env::Default(), dir / "out").IgnoreError();
  ScopedEnv out("HOOK_OUT", dir / "out");
  ExecBackendOptions opts;
  for (const char* kind : {"install_image", "create_instance", "restore_data", "register_sapi"}) {
    opts.commands[kind] = {hook};
  }
  auto backend = NewExecBackend(opts);
  REQUIRE(backend->Check(plan).ok());
  for (size_t i = 0; i < 3; ++i) REQUIRE(backend->Run(plan.steps[i], {}).ok());
  json create = json::parse(ReadFile(dir / ("out/" + plan.steps[2].id + ".json")));
  CHECK(create == [&] {
    json j = plan.steps[2].ToJson();
    j["backend"] = "exec";
    return j;
  }());
  CHECK(create["payload"]["alias"] == "imgapi1");
  TreeMeta meta = {{"", {0750, 1'600'000'000'000'000'000}}, {"etc/config.json", {0640, 42}}};
  auto r = backend->Run(plan.steps[3], StepInput{&meta});
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message().find("exit 3: disk on fire for " + plan.instances[0].new_uuid) !=
        std::string::npos);
  json data = json::parse(ReadFile(dir / ("out/" + plan.steps[3].id + ".json")));
  CHECK(data["data_path"] == src.data);
  CHECK(data["data_meta"]["."]["mode"] == 0750);
  CHECK(data["data_meta"]["etc/config.json"]["mtime_ns"] == 42);

  opts.commands.erase("create_instance");
  auto partial = NewExecBackend(opts);
  auto check = partial->Check(plan);
  CHECK(check.code() == Code::kConfig);
  CHECK(check.message().find("create_instance") != std::string::npos);
}

TEST_CASE("a restore target or drill dir inside the catalog, or around it, is refused") {
  TempDir dir;
  const std::string data = dir / "svc-restore-data";
  REQUIRE(CreateDirs(*Env::Default(), data + "/images", 0700).ok());
  REQUIRE(::symlink(data.c_str(), (dir / "alias").c_str()) == 0);
  for (const std::string& bad :
       {data, data + "/restored", data + "/images/x", data + "/svc-imgapi/data", data + "/restores",
        dir / "alias" + "/new/deeper", dir / "nothere/../svc-restore-data/x", dir.path(),
        std::string("/")}) {
    INFO(bad);
    Status st = CheckOutsideCatalog(bad, data, "the restore target");
    CHECK(st.code() == Code::kUsage);
    CHECK(st.message().find("the restore target " + bad) == 0);
  }
  for (const std::string& ok : {dir / "restored", dir / "svc-restore-data2", dir / "a/b/c"}) {
    INFO(ok);
    CHECK(CheckOutsideCatalog(ok, data, "the restore target").ok());
  }
}

}  // namespace
}  // namespace lifeboat::restore
