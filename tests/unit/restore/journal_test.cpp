#include "restore/journal.h"

#include <catch2/catch.hpp>

#include "base/fault_env.h"
#include "restore/shared_restores.h"
#include "tests/unit/restore/restore_test_util.h"

namespace lifeboat::restore {
namespace {

using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;

const std::string kA = "11111111-1111-4111-8111-111111111111";
const std::string kB = "22222222-2222-4222-8222-222222222222";

Plan TwoInstancePlan() {
  std::vector<InstanceSource> in(2);
  in[0].uuid = kA;
  in[0].alias = "vmapi0";
  in[0].service = "vmapi";
  in[0].peer = "headnode1";
  in[0].generation = 4;
  in[0].seq = 2;
  in[0].vm_payload = {{"uuid", kA}};
  in[0].data_path = "/cat/a";
  in[1] = in[0];
  in[1].uuid = kB;
  in[1].alias = "napi0";
  in[1].service = "napi";
  in[1].vm_payload = {{"uuid", kB}};
  in[1].sapi_record = {{"uuid", kB}};
  PlanOptions opt;
  opt.seed = 8;
  return MakePlan(in, {"vmapi0", "napi0"}, opt).value();
}

TEST_CASE("journal ids follow the selection, not the order it was typed in") {
  Selection a;
  a.services = {"vmapi", "napi"};
  Selection b;
  b.services = {"napi", "vmapi", "napi"};
  CHECK(JournalId(a, "dir", "/t") == JournalId(b, "dir", "/t"));
  CHECK(JournalId(a, "dir", "/t").starts_with("service-napi-"));
  CHECK(JournalId(a, "dir", "/t") != JournalId(a, "dir", "/u"));
  CHECK(JournalId(a, "dir", "/t") != JournalId(a, "exec", "/t"));
  Selection p;
  p.peer = "headnode1";
  CHECK(JournalId(p, "dir", "/t").starts_with("peer-headnode1-"));
  Selection g = p;
  g.generation = 3;
  CHECK(JournalId(g, "dir", "/t") != JournalId(p, "dir", "/t"));
}

TEST_CASE("journal saves atomically after each step and loads back what it saved") {
  TempDir dir;
  Env& env = *Env::Default();
  Plan plan = TwoInstancePlan();
  Selection sel;
  sel.peer = "headnode1";
  CHECK_FALSE(Journal::Load(env, dir.path(), "x").value().has_value());
  Journal j = Journal::Create(env, dir.path(), "x", sel, "headnode0", "dir", "/t", plan, 1000);
  REQUIRE(j.Save().ok());
  CHECK(Env::Default()->Stat(dir / "restores").value().mode == 0700);
  REQUIRE(j.MarkDone(plan.steps[0].id, 2000).ok());

  auto loaded = Journal::Load(env, dir.path(), "x");
  REQUIRE(loaded.ok());
  REQUIRE(loaded->has_value());
  const Journal& back = **loaded;
  CHECK(back.ToJson() == j.ToJson());
  CHECK(back.done_count() == 1);
  CHECK(back.steps()[0].done);
  CHECK(back.steps()[0].finished_ms == 2000);
  CHECK_FALSE(back.complete());
  CHECK(back.ToPlan().ToJson() == plan.ToJson());
  auto assigned = back.Assignments();
  CHECK(assigned.at(kA).new_uuid == plan.instances[1].new_uuid);
  CHECK(assigned.at(kA).alias == "vmapi1");
  CHECK(back.instances()[0].seq == 2);
  // No temp files are left beside it.
  CHECK(env.ListDir(dir / "restores").value().size() == 1);
}

TEST_CASE(
    "a journal keeps step warnings and whether the old records are retired, an older journal "
    "retires none") {
  TempDir dir;
  Env& env = *Env::Default();
  Plan plan = TwoInstancePlan();
  REQUIRE(plan.retire_old_records);
  Journal j = Journal::Create(env, dir.path(), "r1", Selection{"headnode1"}, "hn0", "smartos",
                              "zones", plan, 1000);
  REQUIRE(j.Save().ok());
  const std::string retire_a = "retire_old_records:" + kA;
  REQUIRE(j.MarkDone(retire_a, 2000, "SAPI kept it; do this by hand").ok());
  auto loaded = Journal::Load(env, dir.path(), "r1");
  REQUIRE(loaded.ok());
  REQUIRE(loaded->has_value());
  CHECK((*loaded)->ToPlan().retire_old_records);
  CHECK((*loaded)->StepWarnings() ==
        std::vector<std::string>{retire_a + ": SAPI kept it; do this by hand"});

  // Keeping the old records after all: the retirement not run yet goes, the
  // one that ran stays (with its warning).
  auto dropped = (*loaded)->DropUndoneRetirements(3000);
  REQUIRE(dropped.ok());
  CHECK(*dropped == 1);
  auto again = Journal::Load(env, dir.path(), "r1");
  REQUIRE(again.ok());
  CHECK_FALSE((*again)->ToPlan().retire_old_records);
  size_t retirements = 0;
  for (const JournalStep& s : (*again)->steps())
    retirements += s.step.kind == StepKind::kRetireOldRecords;
  CHECK(retirements == 1);
  CHECK((*again)->StepWarnings().size() == 1);

  // A journal written before retire_old_records: no such key, no such step.
  nlohmann::json old = (*again)->ToJson();
  old.erase("retire_old_records");
  auto& steps = old["steps"];
  steps.erase(std::remove_if(steps.begin(), steps.end(),
                             [](const nlohmann::json& s) {
                               return s["step"]["kind"] == "retire_old_records";
                             }),
              steps.end());
  for (auto& s : steps) s.erase("warning");
  auto from_old = Journal::FromJson(env, dir.path(), old);
  REQUIRE(from_old.ok());
  CHECK_FALSE(from_old->ToPlan().retire_old_records);
  CHECK(from_old->StepWarnings().empty());
  CHECK(from_old->steps().size() == plan.steps.size() - 2);
}

TEST_CASE("a journal write that fails leaves the previous journal and marks nothing") {
  TempDir dir;
  FaultEnv fault(Env::Default());
  Plan plan = TwoInstancePlan();
  Journal j =
      Journal::Create(fault, dir.path(), "x", Selection{"hn1"}, "hn0", "dir", "/t", plan, 1);
  REQUIRE(j.Save().ok());
  std::string before = ReadFile(j.path());
  fault.FailNth(EnvOp::kRename, 1, EIO);
  Status st = j.MarkDone(plan.steps[0].id, 5);
  REQUIRE_FALSE(st.ok());
  CHECK(st.code() == Code::kIo);
  CHECK_FALSE(j.steps()[0].done);
  CHECK(ReadFile(j.path()) == before);
  CHECK(fault.ListDir(dir / "restores").value().size() == 1);
}

TEST_CASE("a damaged journal is a data error naming the file") {
  TempDir dir;
  WriteFile(dir / "restores/x.json", "{\"format\": 1, \"id\": \"x\", \"steps\": [");
  auto r = Journal::Load(*Env::Default(), dir.path(), "x");
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kData);
  CHECK(r.status().message().find("restores/x.json") != std::string::npos);
}

TEST_CASE("restored instances are listed once all their steps finished") {
  TempDir dir;
  Env& env = *Env::Default();
  CHECK(ListRestoredInstances(env, dir.path()).value().empty());
  Plan plan = TwoInstancePlan();
  Journal j = Journal::Create(env, dir.path(), "x", Selection{"headnode1"}, "headnode0", "dir",
                              "/t", plan, 1);
  REQUIRE(j.Save().ok());
  // Every step of napi0 (create, data, await, and its SAPI registration at
  // the end of the plan), none of vmapi0.
  int64_t t = 100;
  for (const Step& s : plan.steps) {
    if (s.old_uuid == kB) REQUIRE(j.MarkDone(s.id, t++).ok());
  }
  auto restored = ListRestoredInstances(env, dir.path());
  REQUIRE(restored.ok());
  REQUIRE(restored->size() == 1);
  const RestoredInstance& r = restored->at(kB);
  CHECK(r.old_alias == "napi0");
  CHECK(r.alias == "napi1");
  CHECK(r.new_uuid == plan.instances[0].new_uuid);
  CHECK(r.peer == "headnode1");
  CHECK(r.node == "headnode0");
  CHECK(r.target == "/t");
  CHECK(r.restored_ms == t - 1);  // when its last step finished
  for (const Step& s : plan.steps) {
    if (s.old_uuid != kB) REQUIRE(j.MarkDone(s.id, 200).ok());
  }
  CHECK(j.complete());
  CHECK(ListRestoredInstances(env, dir.path()).value().size() == 2);
}

TEST_CASE("a node's finished restores reach the other nodes exactly, unfinished ones depose nothing") {
  RestoredInstance done{"11111111-1111-4111-8111-111111111111", "imgapi0", "22222222-2222-4222-8222-222222222222",
                        "imgapi1", "imgapi", "headnode1", 7, "headnode0", "dir", "/t",
                        1'800'000'123'456, "j1"};
  RestoredInstance running = done;
  running.old_uuid = "33333333-3333-4333-8333-333333333333";
  running.restored_ms = 0;
  nlohmann::json doc = {{"node", "headnode0"},
                        {"restored", {RestoredJson(done), RestoredJson(running)}}};
  CHECK(doc["restored"][0]["restored_at"] == "2027-01-15T08:02:03.456Z");
  CHECK(doc["restored"][1]["restored_at"].is_null());
  auto got = FinishedRestoresOf(nlohmann::json::parse(doc.dump()), "headnode0");
  REQUIRE(got.ok());
  REQUIRE(got->size() == 1);
  const RestoredInstance& r = got->front();
  CHECK(r.old_uuid == done.old_uuid);
  CHECK(r.new_uuid == done.new_uuid);
  CHECK(r.alias == "imgapi1");
  CHECK(r.peer == "headnode1");
  CHECK(r.node == "headnode0");
  CHECK(r.restored_ms == done.restored_ms);

  auto bad = FinishedRestoresOf(nlohmann::json::array(), "headnode2");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message().find("node headnode2") != std::string::npos);

  // Merging: a finished restore wins over an unfinished one, then the newer.
  std::map<std::string, RestoredInstance> m;
  RestoredInstance unfinished = done;
  unfinished.restored_ms = 0;
  MergeRestored(m, done);
  MergeRestored(m, unfinished);
  CHECK(m.at(done.old_uuid).restored_ms == done.restored_ms);
}

}  // namespace
}  // namespace lifeboat::restore
