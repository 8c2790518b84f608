#include "restore/retire.h"

#include <catch2/catch.hpp>

#include "tests/unit/restore/restore_test_util.h"

namespace lifeboat::restore {
namespace {

using testing::FakeCalls;
using testing::FakeSmartosDir;
using testing::ReadFile;
using testing::ScopedEnv;
using testing::TempDir;
using testing::WriteFile;

RestoredInstance Restored(const std::string& old_uuid, const std::string& old_alias,
                          const std::string& peer, int64_t restored_ms) {
  RestoredInstance r;
  r.old_uuid = old_uuid;
  r.old_alias = old_alias;
  r.peer = peer;
  r.node = "A";
  r.new_uuid = "new-" + old_uuid;
  r.alias = old_alias == "imgapi0" ? "imgapi1" : old_alias + "x";
  r.service = "svc";
  r.restored_ms = restored_ms;
  return r;
}

std::map<std::string, RestoredInstance> ByUuid(std::vector<RestoredInstance> list) {
  std::map<std::string, RestoredInstance> out;
  for (auto& r : list) out[r.old_uuid] = std::move(r);
  return out;
}

TEST_CASE("retire selects this node's finished restores, by alias, minus the retired ones") {
  auto restored = ByUuid({Restored("u3", "vmapi0", "B", 300), Restored("u1", "imgapi0", "B", 100),
                          Restored("u2", "sapi0", "B", 0),    // unfinished: B's is the only one
                          Restored("u4", "ufds0", "C", 400),  // another node's instance
                          Restored("u5", "amon0", "B", 500)});
  std::map<std::string, exports::RetiredInstance> retired;
  retired["u5"] = RetiredRecord(restored["u5"], 600, "vmadm stop + autoboot=false");

  RetireSelection sel = SelectRetirements("B", restored, retired);
  REQUIRE(sel.to_retire.size() == 2);
  CHECK(sel.to_retire[0].old_alias == "imgapi0");
  CHECK(sel.to_retire[1].old_alias == "vmapi0");
  REQUIRE(sel.already_retired.size() == 1);
  CHECK(sel.already_retired[0].old_uuid == "u5");

  CHECK(SelectRetirements("A", restored, retired).to_retire.empty());
  CHECK(SelectRetirements("B", {}, retired).to_retire.empty());
}

TEST_CASE("a retired record says what replaced the instance and when") {
  exports::RetiredInstance r = RetiredRecord(Restored("u1", "imgapi0", "B", 100), 777, "how");
  CHECK(r.uuid == "u1");
  CHECK(r.alias == "imgapi0");
  CHECK(r.restored_on == "A");
  CHECK(r.new_uuid == "new-u1");
  CHECK(r.new_alias == "imgapi1");
  CHECK(r.retired_ms == 777);
  CHECK(r.how == "how");
}

// A zone the fake vmadm knows, in `state`.
void FakeVm(const std::string& state_dir, const std::string& uuid, const std::string& state) {
  WriteFile(state_dir + "/vms/" + uuid + ".json", "{\n  \"uuid\": \"" + uuid + "\"\n}\n");
  WriteFile(state_dir + "/vms/" + uuid + ".state", state + "\n");
}

TEST_CASE(
    "the vmadm retirer stops a running zone, then turns autoboot off, and a rerun stops nothing") {
  TempDir dir;
  const std::string state = dir / "smartos";
  ScopedEnv env("FAKE_SMARTOS_STATE", state);
  FakeVm(state, "u1", "running");
  auto retirer = NewVmadmRetirer(FakeSmartosDir() + "/vmadm");

  auto first = retirer->Retire("u1");
  REQUIRE(first.ok());
  CHECK(first->was_running);
  CHECK_FALSE(first->missing);
  CHECK(ReadFile(state + "/vms/u1.state") == "stopped\n");
  CHECK(ReadFile(state + "/vms/u1.autoboot") == "false\n");

  auto again = retirer->Retire("u1");  // the fake refuses to stop a stopped zone, as VM.js
  REQUIRE(again.ok());
  CHECK_FALSE(again->was_running);
  std::vector<std::string> calls = FakeCalls(state);
  REQUIRE(calls.size() == 5);
  CHECK(calls[1] == "vmadm stop u1");
  CHECK(calls[2] == "vmadm update u1 autoboot=false");
  CHECK(calls[3] == "vmadm get u1");
  CHECK(calls[4] == "vmadm update u1 autoboot=false");
}

TEST_CASE("the vmadm retirer says a zone that is not here is missing and changes nothing") {
  TempDir dir;
  const std::string state = dir / "smartos";
  ScopedEnv env("FAKE_SMARTOS_STATE", state);
  auto r = NewVmadmRetirer(FakeSmartosDir() + "/vmadm")->Retire("gone");
  REQUIRE(r.ok());
  CHECK(r->missing);
  CHECK(FakeCalls(state).size() == 1);
}

TEST_CASE("a failed vmadm stop in retire is an error naming the command and the tool's message") {
  TempDir dir;
  const std::string state = dir / "smartos";
  ScopedEnv env("FAKE_SMARTOS_STATE", state);
  ScopedEnv fail("FAKE_SMARTOS_FAIL_MATCH", "vmadm\tstop");
  FakeVm(state, "u1", "running");
  auto r = NewVmadmRetirer(FakeSmartosDir() + "/vmadm")->Retire("u1");
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.status().message(), Catch::Contains("vmadm stop u1"));
  CHECK_THAT(r.status().message(), Catch::Contains("injected failure"));
  CHECK(ReadFile(state + "/vms/u1.state") == "running\n");
}

}  // namespace
}  // namespace lifeboat::restore
