// Test helpers shared by the exports, catalog, pull, agent and restore
// tests: temp dirs, sample payloads, a realistic dir export and an exporter
// over it.
#ifndef LIFEBOAT_TESTS_UNIT_EXPORTS_TEST_UTIL_H_
#define LIFEBOAT_TESTS_UNIT_EXPORTS_TEST_UTIL_H_

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "base/env.h"
#include "base/fault_env.h"
#include "exports/exporter.h"
#include "exports/provider.h"
#include "syncproto/manifest.h"
#include "tests/unit/base/test_dir.h"

namespace lifeboat::exports::testing {

using TempDir = ::lifeboat::testing::TestDir;

inline void Write(const std::string& path, const std::string& data) {
  Env& env = *Env::Default();
  REQUIRE(CreateDirs(env, DirName(path), 0755).ok());
  REQUIRE(WriteStringToFile(env, path, data).ok());
}

inline std::string Read(const std::string& path) {
  auto r = ReadFileToString(*Env::Default(), path);
  REQUIRE(r.ok());
  return *r;
}

inline std::string SamplesDir() { return "/work/shared/samples"; }

inline nlohmann::json SamplePayload() {
  std::ifstream in(std::string(LIFEBOAT_TEST_DATA_DIR) + "/catalog/vmadm-get-imgapi0.json");
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

inline nlohmann::json SampleImageManifest() {
  std::ifstream in(std::string(LIFEBOAT_TEST_DATA_DIR) + "/catalog/imgapi-manifest-imgapi.json");
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

inline std::string Uuid(int n) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%08x-0000-4000-8000-%012x", n, n);
  return buf;
}

// A dir export shaped like a headnode's: three services, five images with a
// 3-deep origin chain, nested datasets with symlinks and empty files, plus
// things the scanner must skip (dangling and escaping symlinks, a socket).
struct DirExport {
  std::string root;
  std::string imgapi = Uuid(0x11), sapi = Uuid(0x12), ufds = Uuid(0x13);
  std::string img_root = Uuid(0x21), img_base = Uuid(0x22), img_imgapi = Uuid(0x23),
              img_sapi = Uuid(0x24), img_ufds = Uuid(0x25);

  explicit DirExport(std::string r) : root(std::move(r)) {
    AddInstance(imgapi, "imgapi0", "imgapi", img_imgapi);
    AddInstance(sapi, "sapi0", "sapi", img_sapi);
    AddInstance(ufds, "ufds0", "ufds", img_ufds);
    AddImage(img_root, "");
    AddImage(img_base, img_root);
    AddImage(img_imgapi, img_base);  // imgapi -> base -> root: 3 deep
    AddImage(img_sapi, img_base);
    AddImage(img_ufds, img_root);
    Write(root + "/sapi/application.json", R"({"uuid":"app","name":"sdc"})");
    Write(root + "/sapi/services/imgapi.json", R"({"name":"imgapi"})");
    Write(root + "/sapi/services/sapi.json", R"({"name":"sapi"})");

    const std::string d = root + "/datasets/" + imgapi;
    Write(d + "/etc/imgapi.config.json", R"({"port": 8080})");
    Write(d + "/images/ab/cd/file0", std::string(100000, 'x'));
    Write(d + "/images/ab/cd/manifest0.json", "{}");
    Write(d + "/empty", "");
    Write(d + "/logs/.keep", "");
    REQUIRE(::symlink("images/ab/cd/file0", (d + "/latest").c_str()) == 0);
    REQUIRE(::symlink("../etc/imgapi.config.json", (d + "/logs/config").c_str()) == 0);
    REQUIRE(::symlink("does/not/exist", (d + "/dangling").c_str()) == 0);
    REQUIRE(::symlink("../../../../etc/passwd", (d + "/logs/escape").c_str()) == 0);
    const std::string s = root + "/datasets/" + sapi;
    Write(s + "/sapi/db.json", R"({"instances": []})");
    Write(s + "/sapi/nested/deeper/deepest/leaf.txt", "leaf\n");
    Write(root + "/datasets/" + ufds + "/ldap/data.mdb", std::string(4096, '\1'));
    MakeSocket(d + "/logs/agent.sock");
  }

  void AddInstance(const std::string& uuid, const std::string& alias, const std::string& svc,
                   const std::string& image) {
    nlohmann::json vm = SamplePayload();
    vm["uuid"] = uuid;
    vm["zonename"] = uuid;
    vm["alias"] = alias;
    vm["image_uuid"] = image;
    vm["tags"]["smartdc_role"] = svc;
    Write(root + "/vms/" + uuid + ".json", vm.dump(2));
    nlohmann::json rec = {{"uuid", uuid}, {"params", {{"alias", alias}}}, {"type", "vm"}};
    Write(root + "/sapi/" + uuid + ".json", rec.dump());
  }

  void AddImage(const std::string& uuid, const std::string& origin) {
    nlohmann::json m = SampleImageManifest();
    m["uuid"] = uuid;
    if (origin.empty()) {
      m.erase("origin");
    } else {
      m["origin"] = origin;
    }
    Write(root + "/images/" + uuid + "/manifest.json", m.dump(2));
    Write(root + "/images/" + uuid + "/file", "image bytes of " + uuid);
  }

  static void MakeSocket(const std::string& path) {
    sockaddr_un addr{};
    if (path.size() >= sizeof(addr.sun_path)) return;  // $TMPDIR too deep for a socket
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    ::close(fd);
  }
};

// The manifest entry of directory `path` (mode 0755).
inline syncproto::FileEntry DirFileEntry(const std::string& path) {
  syncproto::FileEntry e;
  e.path = path;
  e.kind = syncproto::EntryKind::kDir;
  e.mode = 0755;
  return e;
}

// A DirExport on disk and what an exporter over it needs: a faultable Env,
// a clock that moves only when told, and the dir provider.
struct ExportFixture {
  TempDir tmp;
  DirExport exp{tmp / "export"};
  FaultEnv env{Env::Default()};
  ManualClock clock;
  std::unique_ptr<Provider> provider = MakeDirProvider(env, exp.root);
};

// The exporter of the peer the catalog tests pull from ("headnode1"), over
// `provider`, keeping its state in `state_dir`.
inline std::unique_ptr<Exporter> OpenPeerExporter(Clock& clock, Provider* provider,
                                                  const std::string& state_dir) {
  ExporterOptions o;
  o.provider = provider;
  o.state_dir = state_dir;
  o.node_uuid = "564dd1ac-164d-cc50-247c-b2eb0cf21ce5";
  o.node_name = "headnode1";
  auto e = Exporter::Open(*Env::Default(), clock, o);
  REQUIRE(e.ok());
  return std::move(*e);
}

// cp -a for tests (files copied, symlinks recreated, modes and mtimes kept).
inline void CopyTree(const std::string& from, const std::string& to) {
  Env& env = *Env::Default();
  auto st = env.Stat(from);
  REQUIRE(st.ok());
  REQUIRE(env.MakeDir(to, st->mode).ok());
  auto entries = env.ListDir(from);
  REQUIRE(entries.ok());
  for (const DirEntry& e : *entries) {
    const std::string a = from + "/" + e.name, b = to + "/" + e.name;
    auto fs = env.Stat(a);
    REQUIRE(fs.ok());
    if (fs->type == FileType::kDirectory) {
      CopyTree(a, b);
    } else if (fs->type == FileType::kSymlink) {
      REQUIRE(env.Symlink(*env.ReadLink(a), b).ok());
    } else {
      REQUIRE(env.CopyFile(a, b, fs->mode).ok());
    }
    REQUIRE(env.SetMtime(b, fs->mtime_ns).ok());
  }
  REQUIRE(env.SetMtime(to, st->mtime_ns).ok());
}

}  // namespace lifeboat::exports::testing

#endif  // LIFEBOAT_TESTS_UNIT_EXPORTS_TEST_UTIL_H_
