// Checkouts (catalog/checkout.h): an update touches the changed paths only
// and leaves the same tree as a checkout made from scratch.
#include "catalog/checkout.h"

#include <catch2/catch.hpp>

#include "base/env.h"
#include "base/sha256.h"
#include "catalog/trees.h"
#include "tests/unit/base/test_dir.h"

namespace lifeboat::catalog {
namespace {

using syncproto::EntryKind;
using syncproto::FileEntry;

struct Fixture {
  testing::TestDir dir;
  Env& env = *Env::Default();
  ObjectStore objects{env, dir / "objects"};

  // A file entry whose object is in the store.
  FileEntry File(const std::string& path, const std::string& content) {
    FileEntry e;
    e.path = path;
    e.size = content.size();
    e.sha256 = Sha256Digest(content);
    const std::string object = objects.PathOf(e.sha256);
    REQUIRE(CreateDirs(env, DirName(object)).ok());
    REQUIRE(WriteStringToFile(env, object, content).ok());
    return e;
  }
};

FileEntry Dir(const std::string& path) {
  FileEntry e;
  e.path = path;
  e.kind = EntryKind::kDir;
  return e;
}

std::string Content(Env& env, const std::string& path) {
  auto text = ReadFileToString(env, path);
  return text.ok() ? *text : "<" + text.status().message() + ">";
}

TEST_CASE("a checkout update looks at the changed paths only", "[checkout]") {
  Fixture f;
  const std::vector<FileEntry> from{Dir("d"), f.File("d/a", "a"), f.File("d/b", "b"), Dir("d/sub"),
                                    f.File("d/sub/c", "c")};
  const std::string view = f.dir / "view";
  REQUIRE(BuildCheckout(f.env, f.objects, from, view).ok());
  // b edited, sub and its file removed, e added.
  const std::vector<FileEntry> to{Dir("d"), f.File("d/a", "a"), f.File("d/b", "b2"),
                                  f.File("d/e", "e")};
  const std::vector<std::string> changed = ChangedPaths(from, to);
  CHECK(changed == std::vector<std::string>{"d/b", "d/e", "d/sub", "d/sub/c"});

  SECTION("the changed paths given: the same tree as one made from scratch") {
    REQUIRE(UpdateCheckout(f.env, f.objects, from, to, changed, view).ok());
    CHECK(Content(f.env, view + "/d/b") == "b2");
    CHECK(Content(f.env, view + "/d/e") == "e");
    CHECK_FALSE(Exists(f.env, view + "/d/sub"));
    CHECK(Content(f.env, view + "/d/a") == "a");
  }
  SECTION("a path left out of `changed` is not looked at") {
    REQUIRE(UpdateCheckout(f.env, f.objects, from, to, {"d/e"}, view).ok());
    CHECK(Content(f.env, view + "/d/e") == "e");
    CHECK(Content(f.env, view + "/d/b") == "b");  // untouched: not listed
    CHECK(Exists(f.env, view + "/d/sub/c"));
  }
}

}  // namespace
}  // namespace lifeboat::catalog
