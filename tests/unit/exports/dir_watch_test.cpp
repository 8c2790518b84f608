#include "exports/dir_watch.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>

#include "tests/unit/exports/test_util.h"

namespace lifeboat::exports {
namespace {

using testing::TempDir;
using testing::Write;

struct Fixture {
  TempDir tmp;
  std::string root = tmp / "root";
  std::string sub = root + "/sub";
  std::unique_ptr<DirWatch> watch;

  Fixture() {
    Write(sub + "/file", "one");
    auto w = DirWatch::Create();
    REQUIRE(w.ok());
    watch = std::move(*w);
    REQUIRE(watch->Watch(root) == DirWatch::Outcome::kAdded);
    REQUIRE(watch->Watch(sub) == DirWatch::Outcome::kAdded);
    watch->Settle();
  }
  // A round starts: the changes made so far are read.
  void Round() { watch->Drain(); }
  // The round ends adopted and the next one starts.
  void NextRound() {
    watch->Settle();
    watch->Drain();
  }
};

TEST_CASE("a watched directory is clean until something in it changes") {
  Fixture f;
  f.Round();
  CHECK(f.watch->Clean(f.root));
  CHECK(f.watch->Clean(f.sub));

  Write(f.sub + "/file", "two");  // a write: the directory holding it, not its parent
  f.Round();
  CHECK_FALSE(f.watch->Clean(f.sub));
  CHECK(f.watch->Clean(f.root));

  f.NextRound();  // settled: the change was adopted
  CHECK(f.watch->Clean(f.sub));
}

TEST_CASE("a change of a directory's entries or attributes marks its parent too") {
  Fixture f;
  SECTION("a file created") { Write(f.sub + "/new", "x"); }
  SECTION("a file removed") { REQUIRE(unlink((f.sub + "/file").c_str()) == 0); }
  SECTION("a file renamed") {
    REQUIRE(rename((f.sub + "/file").c_str(), (f.sub + "/moved").c_str()) == 0);
  }
  SECTION("the directory chmod-ed") { REQUIRE(chmod(f.sub.c_str(), 0700) == 0); }
  f.Round();
  CHECK_FALSE(f.watch->Clean(f.sub));
  CHECK_FALSE(f.watch->Clean(f.root));  // its listing holds sub's mtime and mode
}

TEST_CASE("a file's attributes and a truncation are changes") {
  Fixture f;
  SECTION("chmod") { REQUIRE(chmod((f.sub + "/file").c_str(), 0600) == 0); }
  SECTION("truncate") { REQUIRE(truncate((f.sub + "/file").c_str(), 1) == 0); }
  SECTION("mtime set back") {
    struct timespec times[2] = {{0, UTIME_OMIT}, {1000, 0}};
    REQUIRE(utimensat(AT_FDCWD, (f.sub + "/file").c_str(), times, 0) == 0);
  }
  f.Round();
  CHECK_FALSE(f.watch->Clean(f.sub));
}

TEST_CASE("a directory watched in this round is not clean before it settles") {
  Fixture f;
  const std::string fresh = f.root + "/fresh";
  REQUIRE(mkdir(fresh.c_str(), 0755) == 0);
  f.NextRound();
  REQUIRE(f.watch->Watch(fresh) == DirWatch::Outcome::kAdded);
  CHECK(f.watch->Watch(fresh) == DirWatch::Outcome::kAlready);
  CHECK_FALSE(f.watch->Clean(fresh));  // its listing of this round is not adopted yet
  f.watch->Drain();                    // a failed round: no Settle
  CHECK_FALSE(f.watch->Clean(fresh));
  f.NextRound();
  CHECK(f.watch->Clean(fresh));
  CHECK_FALSE(f.watch->Clean(f.root + "/never-watched"));
}

TEST_CASE("dirty marks survive a round that did not settle") {
  Fixture f;
  Write(f.sub + "/file", "two");
  f.Round();
  REQUIRE_FALSE(f.watch->Clean(f.sub));
  f.Round();  // the round failed and is retried: no Settle in between
  CHECK_FALSE(f.watch->Clean(f.sub));
}

TEST_CASE("a moved or removed directory loses its watches, its subtree's too") {
  Fixture f;
  const std::string deep = f.sub + "/deep";
  REQUIRE(mkdir(deep.c_str(), 0755) == 0);
  REQUIRE(f.watch->Watch(deep) == DirWatch::Outcome::kAdded);
  f.NextRound();
  REQUIRE(f.watch->Clean(deep));
  const std::string elsewhere = f.root + "/elsewhere";
  SECTION("moved") {
    REQUIRE(rename(f.sub.c_str(), elsewhere.c_str()) == 0);
    f.Round();
    CHECK_FALSE(f.watch->Clean(f.root));
    f.NextRound();  // even once settled, the old paths name nothing watched
    CHECK_FALSE(f.watch->Clean(f.sub));
    CHECK_FALSE(f.watch->Clean(deep));
    CHECK_FALSE(f.watch->Clean(elsewhere));
    CHECK_FALSE(f.watch->Clean(elsewhere + "/deep"));
  }
  SECTION("removed") {
    REQUIRE(rmdir(deep.c_str()) == 0);
    f.Round();
    CHECK_FALSE(f.watch->Clean(f.sub));
    f.NextRound();
    CHECK_FALSE(f.watch->Clean(deep));
    CHECK(f.watch->Clean(f.sub));  // settled after the removal
  }
  CHECK(f.watch->watches() <= 2);
}

TEST_CASE("an overflowed event queue makes every directory dirty for one round") {
  Fixture f;
  // Alternating writes are not merged by the kernel: far more events than
  // fs.inotify.max_queued_events (16384 by default) are queued.
  int max_queued = 16384;
  if (FILE* p = std::fopen("/proc/sys/fs/inotify/max_queued_events", "r")) {
    REQUIRE(std::fscanf(p, "%d", &max_queued) == 1);
    std::fclose(p);
  }
  REQUIRE(max_queued <= 1 << 20);
  const int a = open((f.root + "/a").c_str(), O_WRONLY | O_CREAT, 0644);
  const int b = open((f.root + "/b").c_str(), O_WRONLY | O_CREAT, 0644);
  REQUIRE(a >= 0);
  REQUIRE(b >= 0);
  for (int k = 0; k < max_queued + 16; ++k) {
    REQUIRE(write(a, "x", 1) == 1);
    REQUIRE(write(b, "x", 1) == 1);
  }
  close(a);
  close(b);
  f.Round();
  CHECK_FALSE(f.watch->Clean(f.sub));  // nothing happened in sub: the overflow hides that
  f.NextRound();
  CHECK(f.watch->Clean(f.sub));
}

TEST_CASE("what is not a directory is not watched") {
  Fixture f;
  CHECK(f.watch->Watch(f.sub + "/file") == DirWatch::Outcome::kFailed);
  CHECK(f.watch->Watch(f.root + "/missing") == DirWatch::Outcome::kFailed);
  const std::string link = f.root + "/link";
  REQUIRE(symlink(f.sub.c_str(), link.c_str()) == 0);
  CHECK(f.watch->Watch(link) == DirWatch::Outcome::kFailed);  // not followed
}

TEST_CASE("a path that names another directory now is watched anew") {
  Fixture f;
  // The watched path goes through a symlink that is re-pointed: no event
  // reaches the watched directory.
  const std::string a = f.tmp / "a", b = f.tmp / "b", via = f.tmp / "via";
  Write(a + "/x", "a");
  Write(b + "/x", "b");
  REQUIRE(symlink(a.c_str(), via.c_str()) == 0);
  REQUIRE(f.watch->Watch(via + "/.") == DirWatch::Outcome::kAdded);
  f.NextRound();
  REQUIRE(f.watch->Clean(via + "/."));
  REQUIRE(unlink(via.c_str()) == 0);
  REQUIRE(symlink(b.c_str(), via.c_str()) == 0);
  CHECK(f.watch->Watch(via + "/.") == DirWatch::Outcome::kAdded);
  CHECK_FALSE(f.watch->Clean(via + "/."));
  f.NextRound();
  CHECK(f.watch->Clean(via + "/."));
  Write(b + "/x", "changed");  // the new directory's events are the ones read now
  f.Round();
  CHECK_FALSE(f.watch->Clean(via + "/."));
}

}  // namespace
}  // namespace lifeboat::exports
