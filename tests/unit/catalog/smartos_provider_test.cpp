#include <stdlib.h>

#include <openssl/sha.h>

#include <algorithm>
#include <set>
#include <sstream>

#include "base/digest.h"
#include "catalog/exporter.h"
#include "catalog/provider.h"
#include "tests/unit/catalog/test_util.h"

namespace lifeboat::catalog {
namespace {

using testing::TempDir;
using testing::Uuid;
using testing::Write;

const std::string kFakes = std::string(LIFEBOAT_TEST_DATA_DIR) + "/fake-smartos";

std::string Sha1Hex(const std::string& data) {
  unsigned char md[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(data.data()), data.size(), md);
  return HexEncode(std::span<const uint8_t>(md, sizeof(md)));
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
  std::string log = tmp / "commands.log";
  ManualClock clock;
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
    Write(tmp / "sapi/application.json", R"({"name":"sdc"})");
    Write(tmp / ("sapi/" + imgapi + ".json"), R"({"uuid":"x"})");
    ::setenv("FAKE_SMARTOS_LOG", log.c_str(), 1);
    ::setenv("FAKE_SMARTOS_DATA", (tmp / "data").c_str(), 1);
    ::setenv("FAKE_SMARTOS_ZONES", (tmp / "zones").c_str(), 1);
    ::unsetenv("FAKE_SMARTOS_FAIL_SNAPSHOT");
    provider = MakeProvider(kFakes);
  }

  std::vector<std::string> Lines() const { return lifeboat::catalog::Lines(log); }

  std::unique_ptr<Provider> MakeProvider(const std::string& command_dir,
                                         bool destroy_leftovers = false) {
    SmartosOptions o;
    o.command_dir = command_dir;
    o.destroy_leftover_snapshots = destroy_leftovers;
    o.zones_root = tmp / "zones";
    o.cache_dir = tmp / "cache";
    o.sapi_dir = tmp / "sapi";
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
    CHECK(paths.count("sapi/" + f.imgapi + ".json"));
    CHECK(paths.count("sapi/application.json"));
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
    auto got = (*mfile)->ReadAt(0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(mtext.data()),
                                                      mtext.size()));
    REQUIRE(got.ok());
    nlohmann::json man = nlohmann::json::parse(mtext);
    REQUIRE(man["files"].size() == 1);
    CHECK(man["files"][0]["size"] == entry.size);
    CHECK(man["files"][0]["compression"] == "none");
    std::string data(entry.size, '\0');
    auto n = (*file)->ReadAt(0, std::span<uint8_t>(reinterpret_cast<uint8_t*>(data.data()),
                                                   data.size()));
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
}  // namespace lifeboat::catalog
