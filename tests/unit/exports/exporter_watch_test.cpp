// The exporter with a change watch (ExporterOptions::full_walk_interval_ms,
// exports/dir_watch.h): a scan that lists only what changed must serve
// exactly what a full walk serves.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>

#include "base/fault_env.h"
#include "exports/exporter.h"
#include "tests/unit/exports/test_util.h"

namespace lifeboat::exports {
namespace {

using testing::DirExport;
using testing::TempDir;
using testing::Write;

constexpr int64_t kHourMs = 3600 * 1000;

// Two exporters over one export: `watched` lists what its watch saw change,
// `full` lists everything on every scan.
struct Fixture : testing::ExportFixture {
  std::unique_ptr<Exporter> watched = Open("watched", kHourMs);
  std::unique_ptr<Exporter> full = Open("full", 0);
  std::string data = exp.root + "/datasets/" + exp.imgapi;

  std::unique_ptr<Exporter> Open(const std::string& name, int64_t interval_ms,
                                 Provider* over = nullptr) {
    ExporterOptions o;
    o.provider = over != nullptr ? over : provider.get();
    o.state_dir = tmp / name;
    o.node_uuid = "564dd1ac-164d-cc50-247c-b2eb0cf21ce5";
    o.racy_window_ms = 0;  // files are written right before each scan here
    o.full_walk_interval_ms = interval_ms;
    auto e = Exporter::Open(env, clock, std::move(o));
    REQUIRE(e.ok());
    return std::move(*e);
  }

  // Scans with both and checks they serve the same files and instances.
  // Returns the watched scan's stats.
  ScanStats ScanBoth() {
    auto w = watched->Rescan();
    INFO(w.status().message());
    REQUIRE(w.ok());
    REQUIRE(full->Rescan().ok());
    auto wm = watched->current();
    auto fm = full->current();
    CHECK(wm->instances == fm->instances);
    CHECK(wm->images == fm->images);
    REQUIRE(wm->files.size() == fm->files.size());
    for (size_t k = 0; k < fm->files.size(); ++k) {
      INFO(fm->files[k].path);
      CHECK(wm->files[k] == fm->files[k]);
    }
    return *w;
  }
};

TEST_CASE("a watched scan lists only the directories that changed") {
  Fixture f;
  const ScanStats first = f.ScanBoth();
  CHECK(first.reused_dirs == 0);  // nothing watched yet: a full walk
  CHECK(first.listed_dirs > 5);
  const ScanStats quiet = f.ScanBoth();
  CHECK(quiet.reused_dirs > 0);
  CHECK(quiet.listed_dirs < first.listed_dirs);

  Write(f.data + "/images/ab/cd/manifest0.json", R"({"edited": true})");
  const ScanStats edit = f.ScanBoth();
  CHECK(edit.changed);
  CHECK(edit.hashed_files == 1);
  // The edited file's directory, plus those listed on every scan (they hold
  // symlinks or skipped entries): no more than the quiet scan listed, plus one.
  CHECK(edit.listed_dirs <= quiet.listed_dirs + 1);
  CHECK(edit.reused_dirs + edit.listed_dirs == first.listed_dirs);
}

TEST_CASE("a watched scan serves what a full walk serves after every kind of change") {
  Fixture f;
  // A directory with a symlink and nothing skipped: only the symlink rule lists it again.
  Write(f.data + "/plain/file", "plain");
  REQUIRE(symlink("../etc/imgapi.config.json", (f.data + "/plain/to-config").c_str()) == 0);
  f.ScanBoth();
  f.ScanBoth();
  const std::string cd = f.data + "/images/ab/cd";
  const std::string s = f.exp.root + "/datasets/" + f.exp.sapi;
  struct Change {
    const char* what;
    std::function<void()> make;
  };
  const std::vector<Change> changes = {
      {"write", [&] { Write(cd + "/file0", std::string(100000, 'y')); }},
      {"append", [&] { Write(cd + "/manifest0.json", "{}\n{}"); }},
      {"truncate", [&] { REQUIRE(truncate((cd + "/file0").c_str(), 10) == 0); }},
      {"create", [&] { Write(cd + "/new.txt", "new"); }},
      {"remove", [&] { REQUIRE(unlink((cd + "/new.txt").c_str()) == 0); }},
      {"chmod a file", [&] { REQUIRE(chmod((cd + "/file0").c_str(), 0600) == 0); }},
      {"chmod a directory", [&] { REQUIRE(chmod(cd.c_str(), 0700) == 0); }},
      {"mtime set back",
       [&] {
         struct timespec times[2] = {{0, UTIME_OMIT}, {1000, 0}};
         REQUIRE(utimensat(AT_FDCWD, (cd + "/file0").c_str(), times, 0) == 0);
       }},
      {"rename within a directory",
       [&] { REQUIRE(rename((cd + "/file0").c_str(), (cd + "/file1").c_str()) == 0); }},
      {"rename across directories",
       [&] { REQUIRE(rename((cd + "/file1").c_str(), (f.data + "/etc/file1").c_str()) == 0); }},
      {"new directory with files",
       [&] {
         Write(f.data + "/var/db/a", "a");
         Write(f.data + "/var/db/b", "b");
       }},
      {"directory moved",
       [&] { REQUIRE(rename((f.data + "/var").c_str(), (s + "/var").c_str()) == 0); }},
      {"directory tree removed",
       [&] {
         REQUIRE(unlink((s + "/var/db/a").c_str()) == 0);
         REQUIRE(unlink((s + "/var/db/b").c_str()) == 0);
         REQUIRE(rmdir((s + "/var/db").c_str()) == 0);
         REQUIRE(rmdir((s + "/var").c_str()) == 0);
       }},
      {"symlink retargeted",
       [&] {
         REQUIRE(unlink((f.data + "/latest").c_str()) == 0);
         REQUIRE(symlink("etc/imgapi.config.json", (f.data + "/latest").c_str()) == 0);
       }},
      {"a symlink's target removed elsewhere",
       [&] { REQUIRE(unlink((f.data + "/etc/imgapi.config.json").c_str()) == 0); }},
      {"a fifo appears", [&] { REQUIRE(mkfifo((cd + "/pipe").c_str(), 0644) == 0); }},
      {"file replaced by a directory",
       [&] {
         REQUIRE(unlink((cd + "/manifest0.json").c_str()) == 0);
         Write(cd + "/manifest0.json/inner", "inner");
       }},
      {"nothing", [] {}},
  };
  uint64_t reused = 0;
  for (const Change& c : changes) {
    INFO(c.what);
    c.make();
    reused += f.ScanBoth().reused_dirs;
  }
  CHECK(reused > changes.size());  // the watch was used, not every scan a full walk
}

TEST_CASE("a write through a new hard link in another directory is served under both names") {
  Fixture f;
  const std::string a = f.data + "/etc/imgapi.config.json";
  const std::string b = f.exp.root + "/datasets/" + f.exp.imgapi + "/logs/link";
  f.ScanBoth();
  f.ScanBoth();
  REQUIRE(link(a.c_str(), b.c_str()) == 0);
  Write(b, R"({"port": 9090})");  // O_TRUNC through the new name: the event is in logs/ only
  f.ScanBoth();
  Write(b, R"({"port": 9091, "more": 1})");
  f.ScanBoth();
  auto m = f.watched->current();
  for (const auto& e : m->files) {
    if (e.path.ends_with("etc/imgapi.config.json")) {
      CHECK(e.digest == Xxh3Digest(std::string(R"({"port": 9091, "more": 1})")));
    }
  }
}

TEST_CASE("an export root re-pointed by a symlink above it serves the new tree at once") {
  Fixture f;
  // via -> tmp (holding export/), then via -> alt (holding a changed copy):
  // no event reaches a watched directory.
  const std::string alt = f.tmp / "alt", via = f.tmp / "via";
  REQUIRE(std::system(("mkdir " + alt + " && cp -a " + f.exp.root + " " + alt + "/").c_str()) == 0);
  const std::string copy = alt + "/export/datasets/" + f.exp.imgapi;
  Write(copy + "/etc/imgapi.config.json", R"({"port": 1})");
  Write(copy + "/images/ab/cd/only-in-copy", "new");
  REQUIRE(symlink(f.tmp.path().c_str(), via.c_str()) == 0);
  auto through = MakeDirProvider(f.env, via + "/export");
  f.watched = f.Open("watched-via", kHourMs, through.get());
  f.full = f.Open("full-via", 0, through.get());
  f.ScanBoth();
  CHECK(f.ScanBoth().reused_dirs > 0);
  REQUIRE(unlink(via.c_str()) == 0);
  REQUIRE(symlink(alt.c_str(), via.c_str()) == 0);
  f.ScanBoth();  // compares with the full walk
  f.ScanBoth();  // and once the new tree's watches are in place
  Write(copy + "/etc/imgapi.config.json", R"({"port": 2})");
  f.ScanBoth();
}

TEST_CASE("what the watch cannot see is found by the periodic full walk") {
  Fixture f;
  const std::string file = f.data + "/images/ab/cd/file0";
  f.ScanBoth();
  REQUIRE(f.watched->Rescan().ok());
  // A write through a shared mapping: no inotify event (the mtime moves).
  // The file stays mapped: the last unmap would report a close-after-write.
  const int fd = open(file.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  void* p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  REQUIRE(p != MAP_FAILED);
  close(fd);
  static_cast<char*>(p)[0] = 'z';
  REQUIRE(msync(p, 4096, MS_SYNC) == 0);
  std::string want(100000, 'x');
  want[0] = 'z';
  auto digest_of_file0 = [&] {
    const auto m = f.watched->current();
    for (const auto& e : m->files) {
      if (e.path.ends_with("cd/file0")) return e.digest;
    }
    return Digest128{};
  };
  REQUIRE(f.watched->Rescan().ok());
  CHECK(digest_of_file0() != Xxh3Digest(want));  // the documented blind spot
  f.clock.Advance(kHourMs);
  auto walked = f.watched->Rescan();
  REQUIRE(walked.ok());
  CHECK(walked->reused_dirs == 0);
  CHECK(digest_of_file0() == Xxh3Digest(want));
  munmap(p, 4096);
}

TEST_CASE("a scan that failed to be saved is listed again by the next one") {
  Fixture f;
  f.ScanBoth();
  f.ScanBoth();
  Write(f.data + "/images/ab/cd/manifest0.json", R"({"edited": 1})");
  f.env.FailNth(EnvOp::kSync, 1, EIO);  // the state is saved durably (fsync) before serving
  REQUIRE_FALSE(f.watched->Rescan().ok());
  f.env.ClearFaults();
  const ScanStats next = f.ScanBoth();  // compares with the full walk
  CHECK(next.changed);
}

TEST_CASE("full_walk_interval_ms 0 lists every directory on every scan") {
  Fixture f;
  const ScanStats first = f.ScanBoth();
  auto again = f.full->Rescan();
  REQUIRE(again.ok());
  CHECK(again->reused_dirs == 0);
  CHECK(again->listed_dirs == first.listed_dirs);
}

}  // namespace
}  // namespace lifeboat::exports
