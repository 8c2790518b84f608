// ViewPrefill (catalog/internal/view_prefill.h): a new view filled before
// its pull adopts its objects shows, once they are adopted, each file as
// its object (one inode), also when another pull adopted an object first.
#include "catalog/internal/view_prefill.h"

#include <catch2/catch.hpp>

#include "tests/unit/catalog/test_util.h"

namespace lifeboat::catalog::internal {
namespace {

using syncproto::EntryKind;
using syncproto::FileEntry;
using testing::DirFileEntry;
using testing::TempDir;

Digest256 Id(const std::string& text) { return Sha256Digest(text); }

FileEntry File(const std::string& path, const std::string& text) {
  FileEntry e;
  e.path = path;
  e.kind = EntryKind::kFile;
  e.size = text.size();
  e.sha256 = Id(text);
  return e;
}

FileEntry Symlink(const std::string& path, const std::string& target) {
  FileEntry e;
  e.path = path;
  e.kind = EntryKind::kSymlink;
  e.target = target;
  return e;
}

// objects/ holding "held", and a pull's staging holding "new".
struct PrefillFixture {
  TempDir tmp;
  Env& env = *Env::Default();
  ObjectStore objects{env, tmp / "objects"};
  const std::string staged = tmp / "staged";
  const std::vector<FileEntry> entries = {DirFileEntry("d"), File("d/a", "new"),
                                          File("d/b", "held"), Symlink("l", "d/a")};

  PrefillFixture() {
    REQUIRE(env.MakeDir(objects.dir()).ok());
    testing::Write(objects.PathOf(Id("held")), "held");
    testing::Write(ObjectStore::StagedPath(staged, Id("new")), "new");
  }
  // A skeleton as the precreator leaves it: some directories, maybe none.
  std::string Skeleton(const std::string& name) {
    const std::string dir = tmp / name;
    REQUIRE(env.MakeDir(dir).ok());
    return dir;
  }
  // The fixture's entries prefilled into a new skeleton, as a commit does.
  std::string Prefilled() {
    const std::string view = Skeleton("view");
    ViewPrefill prefill(env, objects, staged, {Id("new")}, {{&entries, view}});
    prefill.Join();
    REQUIRE(prefill.filled() == std::vector<bool>{true});
    return view;
  }
  // AdoptStaged of "new"; the ids it found held already.
  std::vector<Digest256> Adopt() {
    std::set<std::string> changed;
    std::vector<Digest256> already_held;
    REQUIRE(objects.AdoptStaged(staged, {Id("new")}, &changed, &already_held).ok());
    return already_held;
  }
  uint64_t Ino(const std::string& path) {
    auto st = env.Stat(path);
    REQUIRE(st.ok());
    return st->ino;
  }
};

TEST_CASE(
    "a prefilled view's files are the staged copies and held objects, its objects once adopted") {
  PrefillFixture f;
  const std::string view = f.Prefilled();
  CHECK(f.Ino(view + "/d/a") == f.Ino(ObjectStore::StagedPath(f.staged, Id("new"))));
  CHECK(f.Ino(view + "/d/b") == f.Ino(f.objects.PathOf(Id("held"))));
  CHECK(f.env.ReadLink(view + "/l").value() == "d/a");
  CHECK(f.Adopt().empty());
  CHECK(f.Ino(view + "/d/a") == f.Ino(f.objects.PathOf(Id("new"))));
}

// Two pulls staged the same new content: the first to commit adopts its
// copy, the second's is dropped, and its view must show the adopted one.
TEST_CASE(
    "a prefilled view's file whose object another pull adopted first is linked to that object") {
  PrefillFixture f;
  const std::string view = f.Prefilled();
  testing::Write(f.objects.PathOf(Id("new")), "new");  // the other pull's copy
  const std::vector<Digest256> already_held = f.Adopt();
  REQUIRE(already_held == std::vector<Digest256>{Id("new")});
  CHECK(f.Ino(view + "/d/a") != f.Ino(f.objects.PathOf(Id("new"))));
  REQUIRE(ViewPrefill::Relink(f.env, f.objects, f.entries, already_held, view).ok());
  CHECK(f.Ino(view + "/d/a") == f.Ino(f.objects.PathOf(Id("new"))));
  CHECK(f.Ino(view + "/d/b") == f.Ino(f.objects.PathOf(Id("held"))));
  CHECK(testing::Read(view + "/d/a") == "new");
}

TEST_CASE("a view that cannot be prefilled is reported, the others are filled") {
  PrefillFixture f;
  const std::vector<FileEntry> broken = {File("gone", "neither staged nor held")};
  const std::string bad = f.Skeleton("bad");
  const std::string good = f.Skeleton("good");
  ViewPrefill prefill(f.env, f.objects, f.staged, {Id("new")},
                      {{&broken, bad}, {&f.entries, good}});
  prefill.Join();
  CHECK(prefill.filled() == std::vector<bool>{false, true});
  CHECK(testing::Read(good + "/d/a") == "new");
}

}  // namespace
}  // namespace lifeboat::catalog::internal
