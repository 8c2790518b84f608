#include "restore/check_records.h"

#include <catch2/catch.hpp>

#include "base/fault_env.h"
#include "tests/unit/restore/restore_test_util.h"

namespace lifeboat::restore {
namespace {

using testing::TempDir;
using testing::WriteFile;

TEST_CASE("drill and verify records round-trip and a missing one is 'never'", "[check_records]") {
  TempDir dir;
  Env& env = *Env::Default();
  const std::string data = dir / "data";
  CHECK_FALSE(LoadDrillRecord(env, data, "headnode1").value());
  CHECK_FALSE(LoadVerifyRecord(env, data).value());

  DrillRecord d;
  d.peer = "headnode1";
  d.ok = true;
  d.started_ms = 1'800'000'000'000;
  d.wall_ms = 2500;
  d.instances = 3;
  d.images = 4;
  d.bytes = 5'000'000;
  d.files_verified = 42;
  d.generation = 17;
  REQUIRE(SaveDrillRecord(env, data, d).ok());
  auto back = LoadDrillRecord(env, data, "headnode1").value();
  REQUIRE(back);
  CHECK(back->ToJson() == d.ToJson());
  CHECK(back->ThroughputBps() == Approx(2'000'000.0));
  CHECK_FALSE(LoadDrillRecord(env, data, "headnode2").value());

  VerifyRecord v;
  v.ok = false;
  v.finished_ms = 1'800'000'000'000;
  v.problems = 1;
  v.first_problem = "/x: digest mismatch";
  REQUIRE(SaveVerifyRecord(env, data, v).ok());
  CHECK(LoadVerifyRecord(env, data).value()->ToJson() == v.ToJson());
}

TEST_CASE("a damaged record is an error naming the file", "[check_records]") {
  TempDir dir;
  const std::string data = dir / "data";
  WriteFile(data + "/checks/drill-headnode1.json", "{\"format_version\": 1, \"peer\": 3}");
  auto r = LoadDrillRecord(*Env::Default(), data, "headnode1");
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kData);
  CHECK_THAT(r.status().message(), Catch::Contains("drill-headnode1.json"));
  WriteFile(data + "/checks/verify.json", "not json");
  CHECK(LoadVerifyRecord(*Env::Default(), data).status().code() == Code::kData);
}

TEST_CASE("a peer name never leads a record out of checks/", "[check_records]") {
  TempDir dir;
  DrillRecord d;
  for (const char* bad : {"../x", "", ".hidden", "a/b"}) {
    d.peer = bad;
    CHECK(SaveDrillRecord(*Env::Default(), dir / "data", d).code() == Code::kUsage);
  }
}

TEST_CASE("a failed write leaves the previous record", "[check_records]") {
  TempDir dir;
  const std::string data = dir / "data";
  DrillRecord d;
  d.peer = "p";
  d.ok = true;
  REQUIRE(SaveDrillRecord(*Env::Default(), data, d).ok());
  FaultEnv env(Env::Default());
  env.FailNth(EnvOp::kWrite, 1, ENOSPC);
  d.ok = false;
  CHECK_FALSE(SaveDrillRecord(env, data, d).ok());
  CHECK(LoadDrillRecord(*Env::Default(), data, "p").value()->ok);
}

}  // namespace
}  // namespace lifeboat::restore
