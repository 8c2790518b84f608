#include "exports/retired.h"

#include <catch2/catch.hpp>

#include "tests/unit/exports/test_util.h"

namespace lifeboat::exports {
namespace {

using syncproto::ServiceFilter;
using testing::TempDir;

// GCC 12 warns -Wrestrict on inlined std::string assignments here (a false
// positive of libstdc++'s _M_replace, GCC PR 105329).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wrestrict"
RetiredInstance Record(const std::string& uuid, const std::string& alias) {
  RetiredInstance r;
  r.uuid = uuid;
  r.alias = alias;
  r.service = "imgapi";
  r.restored_on = "A";
  r.new_uuid = uuid + "-new";
  r.new_alias = alias + "-new";
  r.retired_ms = 1234;
  r.how = "vmadm stop + autoboot=false";
  return r;
}
#pragma GCC diagnostic pop

TEST_CASE("retired instances are recorded, read back, and replaced by uuid") {
  TempDir dir;
  Env& env = *Env::Default();
  auto none = LoadRetired(env, dir.path());
  REQUIRE(none.ok());
  CHECK(none->empty());

  REQUIRE(RecordRetired(env, dir.path(), Record("u1", "imgapi0")).ok());
  REQUIRE(RecordRetired(env, dir.path(), Record("u2", "sapi0")).ok());
  RetiredInstance again = Record("u1", "imgapi0");
  again.retired_ms = 5678;
  REQUIRE(RecordRetired(env, dir.path(), again).ok());

  auto all = LoadRetired(env, dir.path());
  REQUIRE(all.ok());
  REQUIRE(all->size() == 2);
  CHECK(all->at("u1").retired_ms == 5678);
  CHECK(all->at("u1").restored_on == "A");
  CHECK(all->at("u1").new_uuid == "u1-new");
  CHECK(all->at("u2").alias == "sapi0");
  CHECK(all->at("u2").how == "vmadm stop + autoboot=false");
}

TEST_CASE("a damaged retired record is a data error naming the file") {
  TempDir dir;
  Env& env = *Env::Default();
  REQUIRE(WriteStringToFile(env, RetiredPath(dir.path()), "{\"retired\": 3}").ok());
  auto r = LoadRetired(env, dir.path());
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kData);
  CHECK_THAT(r.status().message(), Catch::Contains(RetiredPath(dir.path())));
}

TEST_CASE("a retired instance is no longer offered by the provider, the others are") {
  TempDir dir;
  Env& env = *Env::Default();
  const std::string root = dir / "export";
  const std::string data_dir = dir / "data";
  REQUIRE(CreateDirs(env, root + "/vms").ok());
  REQUIRE(CreateDirs(env, data_dir).ok());
  for (const char* u : {"u1", "u2"}) {
    REQUIRE(WriteStringToFile(env, root + "/vms/" + u + ".json", "{}").ok());
  }
  auto provider = WithoutRetired(env, MakeDirProvider(env, root), data_dir);
  auto uuids = [&] {
    auto snap = provider->Snapshot(ServiceFilter());
    REQUIRE(snap.ok());
    std::set<std::string> out;
    for (const InstanceSource& i : (*snap)->instances()) out.insert(i.uuid);
    return out;
  };
  CHECK(uuids() == std::set<std::string>{"u1", "u2"});
  REQUIRE(RecordRetired(env, data_dir, Record("u1", "imgapi0")).ok());
  CHECK(uuids() == std::set<std::string>{"u2"});

  REQUIRE(WriteStringToFile(env, RetiredPath(data_dir), "not json").ok());
  CHECK_FALSE(provider->Snapshot(ServiceFilter()).ok());
}

// A provider whose snapshots warn about the SAPI record of u2.
class WarningProvider final : public Provider {
 public:
  class Snap final : public ProviderSnapshot {
   public:
    Snap() { instances_ = {{"u1", "/p1", "", ""}, {"u2", "/p2", "", ""}}; }
    const std::vector<InstanceSource>& instances() const override { return instances_; }
    std::string application_path() const override { return ""; }
    std::map<std::string, std::string> service_record_paths() const override { return {}; }
    Result<ImageSource> Image(const std::string& uuid) override {
      return NotFoundError("image " + uuid);
    }
    std::vector<ProviderWarning> warnings() const override {
      return {{"u2", "", "sapi/u2.json", "SAPI record not refreshed"}};
    }
    std::vector<InstanceSource> instances_;
  };
  const char* name() const override { return "warning"; }
  Result<std::unique_ptr<ProviderSnapshot>> Snapshot(const ServiceFilter&) override {
    return std::unique_ptr<ProviderSnapshot>(std::make_unique<Snap>());
  }
};

TEST_CASE("the retired filter passes the provider's warnings on") {
  TempDir dir;
  Env& env = *Env::Default();
  const std::string data_dir = dir / "data";
  REQUIRE(CreateDirs(env, data_dir).ok());
  REQUIRE(RecordRetired(env, data_dir, Record("u1", "imgapi0")).ok());
  auto provider = WithoutRetired(env, std::make_unique<WarningProvider>(), data_dir);
  auto snap = provider->Snapshot(ServiceFilter());
  REQUIRE(snap.ok());
  REQUIRE((*snap)->instances().size() == 1);
  REQUIRE((*snap)->warnings().size() == 1);
  CHECK((*snap)->warnings()[0].path == "sapi/u2.json");
}

}  // namespace
}  // namespace lifeboat::exports
