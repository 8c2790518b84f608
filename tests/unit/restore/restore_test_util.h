// Helpers shared by the restore tests: temp dirs, tree snapshots that capture
// what an operator cares about (types, contents, modes, mtimes, symlink
// targets, hard-link structure), and the fake SmartOS commands.
#ifndef LIFEBOAT_TESTS_UNIT_RESTORE_RESTORE_TEST_UTIL_H_
#define LIFEBOAT_TESTS_UNIT_RESTORE_RESTORE_TEST_UTIL_H_

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "base/digest.h"
#include "base/env.h"
#include "restore/backend.h"

#include "tests/unit/base/test_dir.h"

namespace lifeboat::restore::testing {

using TempDir = ::lifeboat::testing::TestDir;

inline void WriteFile(const std::string& path, const std::string& content, mode_t mode = 0644) {
  CreateDirs(*Env::Default(), DirName(path), 0755).IgnoreError();
  std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
  ::chmod(path.c_str(), mode);
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// One line per entry: "path type mode mtime content-digest/link-target
// owner [link-group]". Hard links show as the first path (in sorted order) of
// their inode group. `with_links` = false leaves out the hard-link structure.
// A catalog's .trash/ (emptied in the background, not part of the catalog) is
// left out.
inline std::string SnapshotTree(const std::string& root, bool with_root_meta = true,
                                bool with_links = true) {
  Env& env = *Env::Default();
  std::vector<std::string> lines;
  std::map<std::pair<uint64_t, uint64_t>, std::string> inode_first;
  std::vector<std::string> stack = {""};
  std::vector<std::pair<std::string, FileStat>> all;
  while (!stack.empty()) {
    std::string rel = stack.back();
    stack.pop_back();
    std::string path = rel.empty() ? root : JoinPath(root, rel);
    auto st = env.Stat(path);
    if (!st.ok()) return "ERROR " + st.status().ToString();
    all.emplace_back(rel, *st);
    if (st->type == FileType::kDirectory) {
      auto entries = env.ListDir(path);
      if (!entries.ok()) return "ERROR " + entries.status().ToString();
      for (const auto& e : *entries) {
        if (rel.empty() && e.name == ".trash") continue;
        stack.push_back(rel.empty() ? e.name : JoinPath(rel, e.name));
      }
    }
  }
  std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [rel, st] : all) {
    if (rel.empty() && !with_root_meta) continue;
    std::string path = rel.empty() ? root : JoinPath(root, rel);
    std::ostringstream line;
    line << (rel.empty() ? "." : rel) << " ";
    switch (st.type) {
      case FileType::kDirectory:
        line << "dir " << std::oct << st.mode << std::dec << " " << st.mtime_ns;
        break;
      case FileType::kSymlink:
        line << "symlink -> " << env.ReadLink(path).value() << " " << st.mtime_ns;
        break;
      case FileType::kRegular: {
        line << "file " << std::oct << st.mode << std::dec << " " << st.mtime_ns << " "
             << Xxh3Digest(ReadFile(path)).Hex();
        if (with_links && st.nlink > 1) {
          auto [it, inserted] = inode_first.emplace(std::make_pair(st.dev, st.ino), rel);
          line << " link-group=" << it->second;
        }
        break;
      }
      default:
        line << "other";
    }
    line << " owner=" << st.uid << ":" << st.gid;
    lines.push_back(line.str());
  }
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

// A delegate dataset with what real ones have: nested dirs with odd modes, an
// executable, an empty file, a relative symlink inside the tree, a hard link,
// a read-only directory, a 1 MiB file.
inline void MakeDataTree(const std::string& root) {
  Env& env = *Env::Default();
  CreateDirs(env, root, 0755).IgnoreError();
  WriteFile(root + "/etc/config.json", "{\"listen\": 8080}\n", 0640);
  WriteFile(root + "/bin/run.sh", "#!/bin/sh\nexit 0\n", 0755);
  WriteFile(root + "/empty", "", 0600);
  WriteFile(root + "/db/images.db", std::string(1 << 20, 'x') + "tail", 0600);
  WriteFile(root + "/db/wal/0001", "wal record", 0600);
  ::link((root + "/db/wal/0001").c_str(), (root + "/db/wal/0001.hardlink").c_str());
  ::symlink("../etc/config.json", (root + "/db/config-link").c_str());
  ::symlink("wal/0001", (root + "/db/current").c_str());
  WriteFile(root + "/readonly/frozen.txt", "frozen", 0444);
  ::chmod((root + "/readonly").c_str(), 0555);
  ::chmod((root + "/etc").c_str(), 0750);
  // Distinct, old mtimes so a copy that forgets them shows.
  int64_t t = 1'600'000'000'000'000'000;
  for (const char* rel : {"etc/config.json", "bin/run.sh", "empty", "db/images.db", "db/wal/0001",
                          "db/config-link", "db/current", "readonly/frozen.txt"}) {
    env.SetMtime(JoinPath(root, rel), t += 1'000'000'123).IgnoreError();
  }
  for (const char* rel : {"etc", "bin", "db/wal", "db", "readonly"}) {
    env.SetMtime(JoinPath(root, rel), t += 1'000'000'123).IgnoreError();
  }
  env.SetMtime(root, t += 7).IgnoreError();
  // Owners other than the test's, where it may set them (root): postgres-like
  // data, and a directory of another group.
  if (::geteuid() == 0) {
    ::lchown((root + "/db/wal/0001").c_str(), 907, 908);
    ::lchown((root + "/db/current").c_str(), 907, 908);
    ::lchown((root + "/etc").c_str(), 0, 908);
  }
}

// Dir backend options that restore owners wherever the test can (as root),
// so tree snapshots, which show owners, compare equal.
inline DirBackendOptions DirOptions(std::string target, int threads) {
  return DirBackendOptions{std::move(target), threads, ::geteuid() == 0};
}

// A per-brand table of property names (brand -> [name, ...]; keys starting
// with '_' are comments), as in vmadm-create-properties.json: brand -> names.
inline std::map<std::string, std::set<std::string>> BrandTable(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  const nlohmann::json table = nlohmann::json::parse(in);
  std::map<std::string, std::set<std::string>> out;
  for (auto it = table.begin(); it != table.end(); ++it) {
    if (it.key()[0] == '_') continue;
    for (const nlohmann::json& p : it.value()) out[it.key()].insert(p.get<std::string>());
  }
  return out;
}

inline std::string FakeSmartosDir() {
  return std::string(LIFEBOAT_TEST_DATA_DIR) + "/fake-smartos-restore";
}

// The calls the fakes recorded, one "cmd arg arg..." string per call.
// The smartos backend running the fakes of FakeSmartosDir(), polling fast.
inline SmartosBackendOptions FakeSmartosOptions(const std::string& work_dir) {
  SmartosBackendOptions o;
  o.imgadm = FakeSmartosDir() + "/imgadm";
  o.vmadm = FakeSmartosDir() + "/vmadm";
  o.zfs = FakeSmartosDir() + "/zfs";
  o.sapi_register = {FakeSmartosDir() + "/sdc-sapi", "/instances", "-X", "POST"};
  o.vmapi_get = {FakeSmartosDir() + "/sdc-vmapi"};
  o.napi = {FakeSmartosDir() + "/sdc-napi"};
  o.sapi = {FakeSmartosDir() + "/sdc-sapi"};
  o.server_uuid = "564dd1ac-164d-cc50-247c-b2eb0cf21ce5";
  o.svcs = FakeSmartosDir() + "/svcs";
  o.poll_ms = 10;
  o.work_dir = work_dir;
  return o;
}

inline std::vector<std::string> FakeCalls(const std::string& state_dir) {
  std::vector<std::string> calls;
  std::ifstream in(state_dir + "/calls.log");
  for (std::string line; std::getline(in, line);) {
    std::replace(line.begin(), line.end(), '\t', ' ');
    calls.push_back(line);
  }
  return calls;
}

// Sets an environment variable for the life of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (had_) {
      ::setenv(name_, old_.c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

}  // namespace lifeboat::restore::testing

#endif  // LIFEBOAT_TESTS_UNIT_RESTORE_RESTORE_TEST_UTIL_H_
