// Converting a format-1 catalog (a tree per generation) into format 2
// (objects + descriptions): catalog/migrate.cpp.
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "base/fault_env.h"
#include "catalog/store.h"
#include "tests/unit/catalog/test_util.h"

namespace lifeboat::catalog {
namespace {

using nlohmann::json;
using testing::FileOf;
using testing::Read;
using testing::TempDir;
using testing::Write;

const std::string kUuid = "8a1e2c3d-0000-4000-8000-000000000001";

json Entry(const std::string& path, const std::string& content) {
  return {{"path", path},
          {"kind", "file"},
          {"mode", 420},
          {"mtime_ns", 7},
          {"uid", 0},
          {"gid", 0},
          {"size", content.size()},
          {"digest", Xxh3Digest(content).Hex()}};
}

// Writes what a format-1 store held after two pulls: generation 1 with
// a.txt "one", generation 2 with a.txt "two" and b.txt (unchanged, a hard
// link to generation 1's), `current` -> 2, catalog.json format 1.
void WriteFormat1(const std::string& data) {
  const std::string vm = R"({"uuid": ")" + kUuid + R"(", "alias": "sapi0"})";
  const std::string inst = data + "/instances/" + kUuid;
  const std::string ds = "datasets/" + kUuid;
  for (int seq : {1, 2}) {
    const std::string gen = inst + "/" + std::to_string(seq);
    const std::string a = seq == 1 ? "one" : "two";
    Write(gen + "/vms/" + kUuid + ".json", vm);
    Write(gen + "/" + ds + "/a.txt", a);
    if (seq == 1) Write(gen + "/" + ds + "/b.txt", "same");
    if (seq == 2)
      REQUIRE(::link((inst + "/1/" + ds + "/b.txt").c_str(), (gen + "/" + ds + "/b.txt").c_str()) ==
              0);
    json files = json::array({json{{"path", ds}, {"kind", "dir"}, {"mode", 493}, {"mtime_ns", 1}},
                              Entry(ds + "/a.txt", a), Entry(ds + "/b.txt", "same"),
                              Entry("vms/" + kUuid + ".json", vm)});
    json desc = {{"format_version", 1}, {"uuid", kUuid},     {"alias", "sapi0"},
                 {"service", "sapi"},   {"peer", "hn1"},     {"generation", 10 + seq},
                 {"seq", seq},          {"pulled_at_ms", 5}, {"files", files}};
    Write(gen + "/lifeboat-generation.json", desc.dump());
  }
  REQUIRE(::symlink("2", (inst + "/current").c_str()) == 0);
  json cat = {{"format_version", 1},
              {"peers", {{"hn1", {{"generation", 12}, {"boot_id", "b"}}}}},
              {"instances",
               {{kUuid,
                 {{"alias", "sapi0"},
                  {"service", "sapi"},
                  {"peer", "hn1"},
                  {"generation", 12},
                  {"seq", 2},
                  {"pulled_at_ms", 5},
                  {"size", 7},
                  {"files", 4}}}}},
              {"images", json::object()}};
  Write(data + "/catalog.json", cat.dump());
}

std::unique_ptr<Store> Open(Env& env, Clock& clock, const std::string& data, bool ro = false) {
  StoreOptions o;
  o.data_dir = data;
  o.read_only = ro;
  auto s = Store::Open(env, clock, o);
  REQUIRE(s.ok());
  return std::move(*s);
}

void ExpectConverted(Env& env, Clock& clock, const std::string& data) {
  auto store = Open(env, clock, data);
  CHECK(json::parse(Read(data + "/catalog.json"))["format_version"] == kCatalogFormatVersion);
  const std::string ds = "datasets/" + kUuid;
  auto cur = store->Instance(kUuid);
  REQUIRE(cur.ok());
  CHECK(cur->record.seq == 2);
  CHECK(Read(FileOf(*cur, ds + "/a.txt")) == "two");
  CHECK(Read(data + "/svc-sapi/data/" + kUuid + "/a.txt") == "two");
  auto old = store->Instance(kUuid, 1);
  REQUIRE(old.ok());
  CHECK(Read(FileOf(*old, ds + "/a.txt")) == "one");
  // b.txt is one object for both generations.
  struct stat x, y;
  REQUIRE(::stat(FileOf(*cur, ds + "/b.txt").c_str(), &x) == 0);
  REQUIRE(::stat(FileOf(*old, ds + "/b.txt").c_str(), &y) == 0);
  CHECK(x.st_ino == y.st_ino);
  auto report = store->Verify();
  REQUIRE(report.ok());
  CHECK(report->ok());
  // The format-1 trees are gone from the instance directory.
  CHECK_FALSE(Exists(env, data + "/instances/" + kUuid + "/1"));
  CHECK_FALSE(Exists(env, data + "/instances/" + kUuid + "/2"));
}

TEST_CASE("a format-1 catalog is converted on open, every generation kept") {
  TempDir tmp;
  ManualClock clock;
  const std::string data = tmp / "data";
  WriteFormat1(data);
  // A read-only open (the CLI) does not convert: it says what to do.
  StoreOptions ro;
  ro.data_dir = data;
  ro.read_only = true;
  auto reader = Store::Open(*Env::Default(), clock, ro);
  REQUIRE_FALSE(reader.ok());
  CHECK(reader.status().message().find("start the agent once") != std::string::npos);
  ExpectConverted(*Env::Default(), clock, data);
}

TEST_CASE("a crash at any step of the conversion loses nothing, the next open finishes it") {
  TempDir tmp;
  ManualClock clock;
  bool completed = false;
  uint64_t crashes = 0;
  for (uint64_t n = 0; n < 500 && !completed; ++n) {
    const std::string data = tmp / ("run-" + std::to_string(n));
    WriteFormat1(data);
    FaultEnv fenv(Env::Default());
    fenv.CrashAfter(n);
    {
      StoreOptions o;
      o.data_dir = data;
      auto s = Store::Open(fenv, clock, o);
      completed = s.ok() && fenv.MutatingCount() <= n;
    }
    if (!completed) ++crashes;
    INFO("crash after " << n << " mutating calls");
    ExpectConverted(*Env::Default(), clock, data);
  }
  CHECK(completed);
  CHECK(crashes > 10);
}

}  // namespace
}  // namespace lifeboat::catalog
