#include <stdlib.h>

#include <openssl/sha.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <sstream>
#include <stdexcept>

#include "base/digest.h"
#include "exports/exporter.h"
#include "exports/provider.h"
#include "tests/unit/exports/test_util.h"

namespace lifeboat::exports {
namespace {

using syncproto::ServiceFilter;
using testing::TempDir;
using testing::Uuid;
using testing::Write;

const std::string kFakes = std::string(LIFEBOAT_TEST_DATA_DIR) + "/fake-smartos";

std::string Sha1Hex(const std::string& data) {
  unsigned char md[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(data.data()), data.size(), md);
  return HexEncode(std::span<const uint8_t>(md, sizeof(md)));
}

// The content a peer would pull for `path`.
std::string ReadExported(syncproto::ExportView& view, const std::string& path) {
  syncproto::FileEntry entry;
  auto file = view.OpenFile(path, &entry);
  REQUIRE(file.ok());
  std::string data(entry.size, '\0');
  auto n =
      (*file)->ReadAt(0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(data.data()), data.size()));
  REQUIRE(n.ok());
  return data;
}

std::vector<std::string> Lines(const std::string& path) {
  std::vector<std::string> out;
  auto text = ReadFileToString(*Env::Default(), path);
  if (!text.ok()) return out;
  std::istringstream in(*text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

struct SmartosFixture {
  TempDir tmp;
  std::string imgapi = Uuid(0x31), sapi = Uuid(0x32), manatee = Uuid(0x33);
  std::string img_root = Uuid(0x41), img_imgapi = Uuid(0x42), img_sapi = Uuid(0x43);
  // SAPI: the sdc application, its services, and an imgapi instance of
  // another node (imgapi1) that this node must not export.
  std::string app = Uuid(0x51), svc_imgapi = Uuid(0x52), svc_sapi = Uuid(0x53),
              svc_manatee = Uuid(0x54), imgapi1 = Uuid(0x61);
  std::string log = tmp / "commands.log";
  ManualClock clock;
  std::vector<std::string> sapi_command{"sdc-sapi"};
  int64_t sapi_timeout_ms = 60000;
  std::unique_ptr<Provider> provider;

  SmartosFixture() {
    nlohmann::json vms = nlohmann::json::array();
    auto vm = [&](const std::string& uuid, const std::string& alias, const std::string& svc,
                  const std::string& image, bool delegate) {
      nlohmann::json v = testing::SamplePayload();
      v["uuid"] = uuid;
      v["alias"] = alias;
      v["image_uuid"] = image;
      v["tags"]["smartdc_role"] = svc;
      // Real `vmadm get` shape: `datasets`, never delegate_dataset.
      v.erase("delegate_dataset");
      v["datasets"] =
          delegate ? nlohmann::json::array({"zones/" + uuid + "/data"}) : nlohmann::json::array();
      vms.push_back(v);
    };
    vm(imgapi, "imgapi0", "imgapi", img_imgapi, true);
    vm(sapi, "sapi0", "sapi", img_sapi, true);
    vm(manatee, "manatee0", "manatee", img_sapi, true);
    Write(tmp / "data/vmadm-lookup.json", vms.dump());
    auto image = [&](const std::string& uuid, const std::string& origin) {
      nlohmann::json m = testing::SampleImageManifest();
      m["uuid"] = uuid;
      if (origin.empty())
        m.erase("origin");
      else
        m["origin"] = origin;
      Write(tmp / ("data/images/" + uuid + ".json"), m.dump());
    };
    image(img_root, "");
    image(img_imgapi, img_root);
    image(img_sapi, img_root);
    Write(tmp / ("zones/" + imgapi + "/data/imgapi/images/one"), "image one");
    Write(tmp / ("zones/" + imgapi + "/data/imgapi/empty"), "");
    Write(tmp / ("zones/" + sapi + "/data/sapi.db"), "sapi state");
    Write(tmp / ("zones/" + manatee + "/data/pg/base"), "postgres");
    WriteSapi();
    ::setenv("FAKE_SMARTOS_LOG", log.c_str(), 1);
    ::setenv("FAKE_SMARTOS_DATA", (tmp / "data").c_str(), 1);
    ::setenv("FAKE_SMARTOS_ZONES", (tmp / "zones").c_str(), 1);
    ::unsetenv("FAKE_SMARTOS_FAIL_SNAPSHOT");
    ::unsetenv("FAKE_SAPI_DOWN");
    ::unsetenv("FAKE_SAPI_HANG");
    provider = MakeProvider(kFakes);
  }
  ~SmartosFixture() {
    ::unsetenv("FAKE_SAPI_DOWN");
    ::unsetenv("FAKE_SAPI_HANG");
  }

  // Records shaped like sdc-sapi's (docs/triton-sapi-vmapi-facts.md, section 4:
  // the service and instance serializations of lib/server/endpoints/*.js).
  nlohmann::json InstanceRecord(const std::string& uuid, const std::string& svc,
                                const std::string& alias) const {
    return {{"uuid", uuid},
            {"service_uuid", svc},
            {"params", {{"alias", alias}, {"server_uuid", Uuid(0x99)}}},
            {"metadata", {{"SERVICE_NAME", alias}}},
            {"manifests", nlohmann::json::object()},
            {"type", "vm"}};
  }
  nlohmann::json ServiceRecord(const std::string& uuid, const std::string& name) const {
    return {{"uuid", uuid},
            {"name", name},
            {"application_uuid", app},
            {"params", {{"image_uuid", img_imgapi}}},
            {"metadata", {{"SERVICE_NAME", name}}},
            {"manifests", nlohmann::json::object()},
            {"type", "vm"}};
  }
  std::string Answer(const std::string& route) const { return tmp / ("data/sapi/" + route); }
  void WriteSapi() {
    Write(Answer("applications_name=sdc"),
          nlohmann::json::array({{{"uuid", app},
                                  {"name", "sdc"},
                                  {"owner_uuid", Uuid(0x98)},
                                  {"metadata", {{"datacenter_name", "coal"}}}}})
              .dump());
    Write(
        Answer("services_application_uuid=" + app),
        nlohmann::json::array({ServiceRecord(svc_imgapi, "imgapi"), ServiceRecord(svc_sapi, "sapi"),
                               ServiceRecord(svc_manatee, "manatee")})
            .dump());
    Write(Answer("instances_service_uuid=" + svc_imgapi),
          nlohmann::json::array({InstanceRecord(imgapi1, svc_imgapi, "imgapi1"),
                                 InstanceRecord(imgapi, svc_imgapi, "imgapi0")})
              .dump());
    Write(Answer("instances_service_uuid=" + svc_sapi),
          nlohmann::json::array({InstanceRecord(sapi, svc_sapi, "sapi0")}).dump());
    Write(Answer("instances_service_uuid=" + svc_manatee),
          nlohmann::json::array({InstanceRecord(manatee, svc_manatee, "manatee0")}).dump());
  }

  std::vector<std::string> Lines() const { return lifeboat::exports::Lines(log); }

  std::unique_ptr<Provider> MakeProvider(const std::string& command_dir,
                                         bool destroy_leftovers = false) {
    SmartosOptions o;
    o.command_dir = command_dir;
    o.destroy_leftover_snapshots = destroy_leftovers;
    o.zones_root = tmp / "zones";
    o.cache_dir = tmp / "cache";
    o.sapi_command = sapi_command;
    o.sapi_timeout_ms = sapi_timeout_ms;
    auto p = MakeSmartosProvider(*Env::Default(), o);
    REQUIRE(p.ok());
    return std::move(*p);
  }

  std::unique_ptr<Exporter> OpenExporter(std::vector<std::string> services) {
    ExporterOptions o;
    o.provider = provider.get();
    o.services = std::move(services);
    o.state_dir = tmp / "state";
    auto e = Exporter::Open(*Env::Default(), clock, o);
    REQUIRE(e.ok());
    return std::move(*e);
  }
};

TEST_CASE("smartos provider runs the right commands and releases its snapshots") {
  SmartosFixture f;
  auto e = f.OpenExporter({"imgapi", "sapi"});
  std::string snapname;
  {
    auto view = e->OpenView();
    REQUIRE(view.ok());
    auto log = f.Lines();
    REQUIRE(log.size() >= 7);
    CHECK(log[0] == "vmadm lookup -j tags.smartdc_type=core");
    REQUIRE(log[1].rfind("zfs snapshot zones/" + f.imgapi + "/data@lifeboat-", 0) == 0);
    snapname = log[1].substr(log[1].find('@') + 1);
    CHECK(log[2] == "zfs snapshot zones/" + f.sapi + "/data@" + snapname);
    // manatee is not exported: never snapshotted.
    for (const auto& l : log) CHECK(l.find(f.manatee) == std::string::npos);
    CHECK(std::count(log.begin(), log.end(), "imgadm get " + f.img_imgapi) == 1);
    CHECK(std::count(log.begin(), log.end(), "imgadm get " + f.img_root) == 1);
    CHECK(std::count(log.begin(), log.end(), "zfs send zones/" + f.img_root + "@final") == 1);
    CHECK(std::count(log.begin(), log.end(), "zfs send zones/" + f.img_sapi + "@final") == 1);
    // Dataset content came from the snapshot, which exists while the view lives.
    CHECK(
        Exists(*Env::Default(), f.tmp / ("zones/" + f.imgapi + "/data/.zfs/snapshot/" + snapname)));
    auto m = e->current();
    REQUIRE(m->instances.size() == 2);
    CHECK(m->images.size() == 3);
    std::set<std::string> paths;
    for (const auto& fe : m->files) paths.insert(fe.path);
    CHECK(paths.count("datasets/" + f.imgapi + "/imgapi/images/one"));
    CHECK(paths.count("datasets/" + f.sapi + "/sapi.db"));
    CHECK(paths.count("vms/" + f.imgapi + ".json"));
    // SAPI records of the exported instances and their services only.
    CHECK(paths.count("sapi/" + f.imgapi + ".json"));
    CHECK(paths.count("sapi/" + f.sapi + ".json"));
    CHECK(paths.count("sapi/application.json"));
    CHECK(paths.count("sapi/services/imgapi.json"));
    CHECK(paths.count("sapi/services/sapi.json"));
    CHECK_FALSE(paths.count("sapi/" + f.manatee + ".json"));
    CHECK_FALSE(paths.count("sapi/" + f.imgapi1 + ".json"));
    CHECK_FALSE(paths.count("sapi/services/manatee.json"));
    CHECK(nlohmann::json::parse(ReadExported(**view, "sapi/" + f.imgapi + ".json")) ==
          f.InstanceRecord(f.imgapi, f.svc_imgapi, "imgapi0"));
    CHECK(std::count(log.begin(), log.end(), "sdc-sapi /applications?name=sdc") == 1);
    CHECK(std::count(log.begin(), log.end(), "sdc-sapi /instances?service_uuid=" + f.svc_imgapi) ==
          1);
    for (const auto& i : m->instances) CHECK(i.warnings.empty());
    CHECK(paths.count("images/" + f.img_root + "/file"));
    syncproto::FileEntry entry;
    auto file = (*view)->OpenFile("images/" + f.img_root + "/file", &entry);
    REQUIRE(file.ok());
    CHECK(entry.size > 100000);
    // The manifest shipped with it describes this raw send stream (what
    // `imgadm install -m -f` checks: size, sha1, compression), not IMGAPI's file.
    syncproto::FileEntry mentry;
    auto mfile = (*view)->OpenFile("images/" + f.img_root + "/manifest.json", &mentry);
    REQUIRE(mfile.ok());
    std::string mtext(mentry.size, '\0');
    auto got = (*mfile)->ReadAt(
        0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(mtext.data()), mtext.size()));
    REQUIRE(got.ok());
    nlohmann::json man = nlohmann::json::parse(mtext);
    REQUIRE(man["files"].size() == 1);
    CHECK(man["files"][0]["size"] == entry.size);
    CHECK(man["files"][0]["compression"] == "none");
    std::string data(entry.size, '\0');
    auto n = (*file)->ReadAt(
        0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(data.data()), data.size()));
    REQUIRE(n.ok());
    CHECK(man["files"][0]["sha1"] == Sha1Hex(data));
    CHECK(man["files"][0]["sha1"] != testing::SampleImageManifest()["files"][0]["sha1"]);
  }
  auto log = f.Lines();
  CHECK(std::count(log.begin(), log.end(), "zfs destroy zones/" + f.imgapi + "/data@" + snapname) ==
        1);
  CHECK(std::count(log.begin(), log.end(), "zfs destroy zones/" + f.sapi + "/data@" + snapname) ==
        1);
  CHECK_FALSE(
      Exists(*Env::Default(), f.tmp / ("zones/" + f.imgapi + "/data/.zfs/snapshot/" + snapname)));

  // A second pull: new snapshots, but images are never sent or fetched again.
  ::unlink(f.log.c_str());
  auto again = e->OpenView();
  REQUIRE(again.ok());
  log = f.Lines();
  CHECK(std::count_if(log.begin(), log.end(),
                      [](const std::string& l) { return l.rfind("zfs send", 0) == 0; }) == 0);
  CHECK(std::count_if(log.begin(), log.end(),
                      [](const std::string& l) { return l.rfind("imgadm", 0) == 0; }) == 0);
  CHECK_FALSE(e->last_scan().changed);  // same content through a new snapshot: same generation
}

TEST_CASE("smartos provider destroys the snapshots it took when a later one fails") {
  SmartosFixture f;
  ::setenv("FAKE_SMARTOS_FAIL_SNAPSHOT", ("zones/" + f.sapi + "/data").c_str(), 1);
  auto e = f.OpenExporter({});
  auto view = e->OpenView();
  REQUIRE_FALSE(view.ok());
  CHECK(view.status().message().find("out of space") != std::string::npos);
  CHECK(view.status().message().find("zfs snapshot zones/" + f.sapi + "/data@") !=
        std::string::npos);
  auto log = f.Lines();
  REQUIRE(log.size() == 4);
  CHECK(log[1].rfind("zfs snapshot zones/" + f.imgapi + "/data@lifeboat-", 0) == 0);
  CHECK(log[3] == "zfs destroy " + log[1].substr(13));
  ::unsetenv("FAKE_SMARTOS_FAIL_SNAPSHOT");
}

TEST_CASE("the agent's provider destroys the snapshots a crashed run left, and only those") {
  SmartosFixture f;
  const std::string snaps = f.tmp / ("zones/" + f.imgapi + "/data/.zfs/snapshot/");
  Write(snaps + "lifeboat-0123456789ab-7/x", "left by a crash");
  Write(snaps + "daily-2026-11-20/x", "the operator's");
  Write(f.tmp / ("zones/" + f.sapi + "/data/.zfs/snapshot/lifeboat-ba9876543210-0/y"), "left");

  f.MakeProvider(kFakes);  // not the agent: leaves them alone
  CHECK(Exists(*Env::Default(), snaps + "lifeboat-0123456789ab-7"));

  f.MakeProvider(kFakes, /*destroy_leftovers=*/true);
  auto log = f.Lines();
  CHECK(std::count(log.begin(), log.end(), "zfs list -H -t snapshot -o name -r zones") == 1);
  CHECK_FALSE(Exists(*Env::Default(), snaps + "lifeboat-0123456789ab-7"));
  CHECK_FALSE(Exists(*Env::Default(),
                     f.tmp / ("zones/" + f.sapi + "/data/.zfs/snapshot/lifeboat-ba9876543210-0")));
  CHECK(Exists(*Env::Default(), snaps + "daily-2026-11-20"));
  CHECK(std::count_if(log.begin(), log.end(),
                      [](const std::string& l) { return l.rfind("zfs destroy", 0) == 0; }) == 2);
}

TEST_CASE("smartos commands are found on PATH when no command directory is set") {
  SmartosFixture f;
  std::string old_path = ::getenv("PATH") ? ::getenv("PATH") : "";
  ::setenv("PATH", (kFakes + ":" + old_path).c_str(), 1);
  auto provider = f.MakeProvider("");
  size_t instances = 0;
  {
    auto snap = provider->Snapshot(ServiceFilter({"sapi"}));
    REQUIRE(snap.ok());
    instances = (*snap)->instances().size();
  }  // the snapshot's zfs destroy also runs from PATH
  ::setenv("PATH", old_path.c_str(), 1);
  CHECK(instances == 1);
  auto log = f.Lines();
  CHECK(std::count_if(log.begin(), log.end(),
                      [](const std::string& l) { return l.rfind("zfs destroy", 0) == 0; }) == 1);
}

const syncproto::InstanceInfo& InstanceOf(const syncproto::Manifest& m, const std::string& uuid) {
  for (const auto& i : m.instances) {
    if (i.uuid == uuid) return i;
  }
  FAIL("instance " << uuid << " not exported");
  throw std::logic_error("unreachable");
}

// The reason of the warning about export path `path`, "" when none.
std::string WarningAbout(const syncproto::InstanceInfo& i, const std::string& path) {
  for (const auto& w : i.warnings) {
    if (w.path == path) return w.reason;
  }
  return "";
}

const syncproto::FileEntry* FileOf(const syncproto::Manifest& m, const std::string& path) {
  for (const auto& fe : m.files) {
    if (fe.path == path) return &fe;
  }
  return nullptr;
}

TEST_CASE(
    "SAPI down: the snapshot succeeds, the last good records stay exported, and warnings "
    "say which and why") {
  SmartosFixture f;
  auto e = f.OpenExporter({"imgapi", "sapi"});
  REQUIRE(e->Rescan().ok());
  const std::string rec = "sapi/" + f.imgapi + ".json";
  const syncproto::FileEntry good = *FileOf(*e->current(), rec);

  ::setenv("FAKE_SAPI_DOWN", "1", 1);
  auto down = e->Rescan();
  REQUIRE(down.ok());
  auto m = e->current();
  const syncproto::FileEntry* kept = FileOf(*m, rec);
  REQUIRE(kept != nullptr);
  CHECK(kept->digest == good.digest);
  CHECK(FileOf(*m, "sapi/application.json") != nullptr);
  CHECK(FileOf(*m, "sapi/services/imgapi.json") != nullptr);
  const auto& imgapi = InstanceOf(*m, f.imgapi);
  const std::string why = WarningAbout(imgapi, rec);
  CHECK(why.find("SAPI record not refreshed") != std::string::npos);
  CHECK(why.find("GET /instances?service_uuid=" + f.svc_imgapi + " through `sdc-sapi`: exited 7") !=
        std::string::npos);
  CHECK(WarningAbout(imgapi, "sapi/application.json")
            .find("GET /applications?name=sdc through `sdc-sapi`: exited 7") != std::string::npos);
  CHECK(why.find("exporting the one kept at 20") != std::string::npos);
  CHECK_FALSE(WarningAbout(imgapi, "sapi/application.json").empty());
  CHECK_FALSE(WarningAbout(imgapi, "sapi/services/imgapi.json").empty());
  CHECK(WarningAbout(imgapi, "sapi/services/sapi.json").empty());  // another service's
  CHECK_FALSE(WarningAbout(InstanceOf(*m, f.sapi), "sapi/" + f.sapi + ".json").empty());
  // Still down: the same warnings, so no new generation for peers to pull.
  auto again = e->Rescan();
  REQUIRE(again.ok());
  CHECK_FALSE(again->changed);

  ::unsetenv("FAKE_SAPI_DOWN");
  REQUIRE(e->Rescan().ok());
  const auto healed = e->current();  // held: a temporary's member dies in a range-for
  for (const auto& i : healed->instances) CHECK(i.warnings.empty());
}

TEST_CASE("SAPI down from the start: no SAPI record, the snapshot still succeeds") {
  SmartosFixture f;
  ::setenv("FAKE_SAPI_DOWN", "1", 1);
  auto e = f.OpenExporter({"imgapi"});
  REQUIRE(e->Rescan().ok());
  auto m = e->current();
  CHECK(FileOf(*m, "vms/" + f.imgapi + ".json") != nullptr);
  CHECK(FileOf(*m, "sapi/" + f.imgapi + ".json") == nullptr);
  CHECK(FileOf(*m, "sapi/application.json") == nullptr);
  CHECK(WarningAbout(InstanceOf(*m, f.imgapi), "sapi/" + f.imgapi + ".json")
            .find("no earlier record to export") != std::string::npos);
}

TEST_CASE("a malformed SAPI answer is never exported, the last good record is") {
  struct Case {
    const char* what;
    std::string body;    // the answer to /instances?service_uuid=<imgapi's>
    std::string status;  // "" = 200
    std::string reason;
  };
  SmartosFixture names;  // for the uuids only
  const std::string svc = names.svc_imgapi, inst = names.imgapi;
  auto record = [&](const nlohmann::json& patch) {
    nlohmann::json r = names.InstanceRecord(inst, svc, "imgapi0");
    for (const auto& [k, v] : patch.items()) r[k] = v;
    r["params"]["evil"] = true;
    return nlohmann::json::array({r}).dump();
  };
  const std::vector<Case> cases = {
      {"invalid JSON", "[{\"uuid\": \"" + inst + "\", ", "", "answered invalid JSON"},
      {"not a list",
       record(nlohmann::json::object()).substr(1, record(nlohmann::json::object()).size() - 2), "",
       "answered something other than a JSON array"},
      {"uuid not a uuid", record({{"uuid", "../../" + inst}}), "",
       "answered a record whose uuid \"../../" + inst + "\" is not a uuid"},
      {"record of another service", record({{"service_uuid", Uuid(0x77)}}), "",
       "answered record " + inst + " whose service_uuid is not " + svc},
      {"HTTP error", R"({"code":"InternalError","message":"moray timeout"})",
       "500 Internal Server Error", "answered HTTP 500 InternalError"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    {
      SmartosFixture f;
      auto e = f.OpenExporter({"imgapi"});
      REQUIRE(e->Rescan().ok());
      const std::string rec = "sapi/" + f.imgapi + ".json";
      const syncproto::FileEntry good = *FileOf(*e->current(), rec);
      Write(f.Answer("instances_service_uuid=" + f.svc_imgapi), c.body);
      if (!c.status.empty()) {
        Write(f.Answer("instances_service_uuid=" + f.svc_imgapi + ".status"), c.status);
      }
      auto view = e->OpenView();
      REQUIRE(view.ok());
      auto m = e->current();
      REQUIRE(FileOf(*m, rec) != nullptr);
      CHECK(FileOf(*m, rec)->digest == good.digest);
      CHECK(ReadExported(**view, rec).find("evil") == std::string::npos);
      const std::string why = WarningAbout(InstanceOf(*m, f.imgapi), rec);
      CHECK(why.find("/instances?service_uuid=" + f.svc_imgapi +
                     " through `sdc-sapi`: " + c.reason) != std::string::npos);
      CHECK(why.find("exporting the one kept at") != std::string::npos);
    }

    // Malformed from the first scan on: nothing exported for it.
    const std::string rec = "sapi/" + names.imgapi + ".json";
    SmartosFixture fresh;
    Write(fresh.Answer("instances_service_uuid=" + fresh.svc_imgapi), c.body);
    if (!c.status.empty()) {
      Write(fresh.Answer("instances_service_uuid=" + fresh.svc_imgapi + ".status"), c.status);
    }
    auto e2 = fresh.OpenExporter({"imgapi"});
    REQUIRE(e2->Rescan().ok());
    CHECK(FileOf(*e2->current(), rec) == nullptr);
    CHECK(WarningAbout(InstanceOf(*e2->current(), fresh.imgapi), rec)
              .find("no earlier record to export") != std::string::npos);
  }
}

TEST_CASE("a record SAPI no longer lists is no longer exported") {
  SmartosFixture f;
  auto e = f.OpenExporter({"imgapi"});
  REQUIRE(e->Rescan().ok());
  const std::string rec = "sapi/" + f.imgapi + ".json";
  REQUIRE(FileOf(*e->current(), rec) != nullptr);
  Write(f.Answer("instances_service_uuid=" + f.svc_imgapi),
        nlohmann::json::array({f.InstanceRecord(f.imgapi1, f.svc_imgapi, "imgapi1")}).dump());
  REQUIRE(e->Rescan().ok());
  CHECK(FileOf(*e->current(), rec) == nullptr);
  CHECK(InstanceOf(*e->current(), f.imgapi).warnings.empty());  // SAPI answered: nothing is wrong
}

TEST_CASE("a SAPI that never answers is given up on after the timeout") {
  SmartosFixture f;
  f.sapi_timeout_ms = 300;
  f.provider = f.MakeProvider(kFakes);
  auto e = f.OpenExporter({"imgapi"});
  REQUIRE(e->Rescan().ok());  // a good dump first
  ::setenv("FAKE_SAPI_HANG", "1", 1);
  const auto start = std::chrono::steady_clock::now();
  auto scan = e->Rescan();
  const auto took = std::chrono::steady_clock::now() - start;
  REQUIRE(scan.ok());
  CHECK(took < std::chrono::seconds(20));  // the fake sleeps 30 s per call
  const std::string rec = "sapi/" + f.imgapi + ".json";
  CHECK(FileOf(*e->current(), rec) != nullptr);
  CHECK(
      WarningAbout(InstanceOf(*e->current(), f.imgapi), rec).find("did not finish within 300 ms") !=
      std::string::npos);
}

TEST_CASE("an empty sapi_command exports no SAPI records and runs no sdc-sapi") {
  SmartosFixture f;
  f.sapi_command.clear();
  f.provider = f.MakeProvider(kFakes);
  auto e = f.OpenExporter({"imgapi"});
  REQUIRE(e->Rescan().ok());
  const auto manifest = e->current();  // held: a temporary's member dies in a range-for
  for (const auto& fe : manifest->files) CHECK_FALSE(fe.path.starts_with("sapi/"));
  for (const auto& l : f.Lines()) CHECK(l.find("sdc-sapi") == std::string::npos);
  CHECK(InstanceOf(*e->current(), f.imgapi).warnings.empty());
}

TEST_CASE("RunCommand reports exit status and stderr, and bounds output") {
  auto ok = RunCommand("", {"sh", "-c", "printf hello"}, 100);
  REQUIRE(ok.ok());
  CHECK(*ok == "hello");
  auto bad = RunCommand("", {"sh", "-c", "echo oops >&2; exit 3"}, 100);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message().find("exited 3: oops") != std::string::npos);
  auto big = RunCommand("", {"sh", "-c", "head -c 100000 /dev/zero"}, 1000);
  REQUIRE_FALSE(big.ok());
  CHECK(big.status().message().find("more than 1000 bytes") != std::string::npos);
  auto missing = RunCommand("/nonexistent", {"vmadm"}, 100);
  CHECK_FALSE(missing.ok());
}

}  // namespace
}  // namespace lifeboat::exports
