// Generation trees (catalog/trees.h): a generation reads back exactly as it
// was written, small directories are listed inline within a bound, a change
// re-encodes only the directories on its path up to the top, trees of the
// older one-per-directory shape build on, and a tree that is not what its
// name says is refused, naming it.
#include "catalog/trees.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <set>

#include "base/env.h"
#include "base/sha256.h"
#include "tests/unit/base/test_dir.h"
#include "tests/unit/catalog/test_util.h"

namespace lifeboat::catalog {
namespace {

using syncproto::EntryKind;
using syncproto::FileEntry;
using testing::DirFileEntry;

constexpr const char* kDs = "datasets/b2f1a9d4-7c3e-4f0a-9e57-2d1c6b8a4e10";

// One tree per directory with entries below it: nothing inline (the shape
// of every tree written before inlining). In a GENERATE, give the type
// (as<TreeShape>): an lvalue first makes Catch keep references to the
// values after it, temporaries gone by the time they are read.
constexpr TreeShape kPerDirectory{0, 0};

FileEntry File(const std::string& path, const std::string& content) {
  FileEntry e;
  e.path = path;
  e.kind = EntryKind::kFile;
  e.mode = 0644;
  e.size = content.size();
  e.sha256 = Sha256Digest(content);
  e.uid = 907;
  return e;
}

void SortByPath(std::vector<FileEntry>* files) {
  std::sort(files->begin(), files->end(),
            [](const FileEntry& a, const FileEntry& b) { return a.path < b.path; });
}

// An instance: its payload, a dataset with `dirs` directories of `per_dir`
// files, names chosen so that bytewise order interleaves siblings and
// subtrees ("d1" < "d1-x" < "d1.y" < "d1/f").
std::vector<FileEntry> Instance(int dirs, int per_dir) {
  std::vector<FileEntry> files{File("vms/b2f1a9d4-7c3e-4f0a-9e57-2d1c6b8a4e10.json", "{}"),
                               DirFileEntry(kDs)};
  for (int d = 0; d < dirs; ++d) {
    const std::string dir = std::string(kDs) + "/d" + std::to_string(d);
    files.push_back(DirFileEntry(dir));
    files.push_back(File(dir + "-x", "sibling " + std::to_string(d)));
    files.push_back(File(dir + ".y", "sibling " + std::to_string(d)));
    for (int f = 0; f < per_dir; ++f) {
      files.push_back(File(dir + "/f" + std::to_string(f), std::to_string(d * 1000 + f)));
    }
  }
  files.push_back(DirFileEntry(std::string(kDs) + "/empty"));
  files.push_back(File(std::string(kDs) + "/caf\xe9/\xff", "a name that is not UTF-8"));
  SortByPath(&files);
  return files;
}

// `files` with the file at `path` given other content.
std::vector<FileEntry> Edited(std::vector<FileEntry> files, const std::string& path) {
  auto it = std::find_if(files.begin(), files.end(),
                         [&](const FileEntry& e) { return e.path == path; });
  REQUIRE(it != files.end());
  *it = File(path, "edited");
  return files;
}

// Writes `built`'s trees as objects (what a commit does) into `objects`.
void Store(Env& env, const ObjectStore& objects, const BuiltTrees& built) {
  for (const TreeText& t : built.encoded) {
    const std::string path = objects.PathOf(t.id);
    REQUIRE(CreateDirs(env, DirName(path)).ok());
    REQUIRE(WriteStringToFile(env, path, t.text).ok());
  }
}

struct Fixture {
  testing::TempDir dir;
  Env& env = *Env::Default();
  ObjectStore objects{env, dir / "objects"};
};

// The number of lines of a tree's text that list a member.
size_t MemberLines(const std::string& text) {
  return static_cast<size_t>(std::count(text.begin(), text.end(), '\n')) -
         2;  // a "\n" before each member, "\n]}\n" at the end
}

// Reads a generation back from `top`, requiring success.
std::vector<FileEntry> ReadBack(Fixture& f, const std::string& top, TreeIds* ids = nullptr) {
  std::vector<FileEntry> back;
  TreeIds unused;
  REQUIRE(ReadTrees(f.env, f.objects, nlohmann::json::parse(top), &back, ids ? ids : &unused).ok());
  return back;
}

TEST_CASE("a generation's entries read back from its trees exactly", "[trees]") {
  Fixture f;
  const std::vector<FileEntry> files = Instance(3, 4);
  BuiltTrees built = BuildTrees(files, nullptr, nullptr, kPerDirectory);
  // One tree per directory entry with entries below it: the dataset and
  // d0..d2. Not "empty"; not "caf\xe9", which is no entry (its file is a
  // member of the dataset's tree); the top is the description's.
  CHECK(built.encoded.size() == 4);
  CHECK(built.ids->size() == 4);
  CHECK(built.ids->count(kDs) == 1);
  CHECK(built.ids->count(std::string(kDs) + "/empty") == 0);
  const nlohmann::json top = nlohmann::json::parse(built.top);
  REQUIRE(top.size() == 2);  // the dataset and the payload, in path order
  CHECK(top[0]["path"] == kDs);
  CHECK(top[0]["tree"] == built.ids->at(kDs).Hex());
  Store(f.env, f.objects, built);

  std::vector<FileEntry> back;
  TreeIds ids;
  REQUIRE(ReadTrees(f.env, f.objects, top, &back, &ids).ok());
  CHECK(back == files);
  CHECK(ids == *built.ids);
}

TEST_CASE("small directories are listed inline in their parent's tree", "[trees]") {
  Fixture f;
  // d0..d2 have 4 files each: inline in the dataset's tree (23 entries
  // below it: a tree of its own).
  const std::vector<FileEntry> files = Instance(3, 4);
  BuiltTrees built = BuildTrees(files, nullptr, nullptr);
  CHECK(built.encoded.size() == 1);
  CHECK(*built.ids == TreeIds{{kDs, built.encoded[0].id}});
  CHECK(built.encoded[0].text.find("\"path\":\"" + std::string(kDs) + "/d1/f3\"") !=
        std::string::npos);
  // Every file's object is the dataset tree's child.
  CHECK(built.encoded[0].children.size() == 3 * 6 + 1);
  Store(f.env, f.objects, built);
  CHECK(ReadBack(f, built.top) == files);

  // An instance whose whole dataset is small: inline in the top.
  const std::vector<FileEntry> tiny = Instance(1, 2);
  BuiltTrees small = BuildTrees(tiny, nullptr, nullptr);
  CHECK(small.encoded.empty());
  CHECK(small.ids->empty());
  CHECK(ReadBack(f, small.top) == tiny);
}

TEST_CASE("a tree lists inline directories only within its line budget", "[trees]") {
  Fixture f;
  // 40 directories d<n> of 3 files, each with two siblings d<n>-x, d<n>.y.
  const std::vector<FileEntry> files = Instance(40, 3);
  BuiltTrees built = BuildTrees(files, nullptr, nullptr, TreeShape{16, 60});
  // In path order the dataset's tree lists "caf\xe9/\xff", then d0 (line 2,
  // + 3 inline = 5), d0-x, d0.y, d1, ..., d17 (line 56, + 3 = 59 <= 60);
  // d18 (line 62) has no room: d0, d1, d10..d17 are inline, the other 30
  // have trees of their own.
  const std::set<std::string> inline_dirs{"d0",  "d1",  "d10", "d11", "d12",
                                          "d13", "d14", "d15", "d16", "d17"};
  const Digest256 ds = built.ids->at(kDs);
  for (int d = 0; d < 40; ++d) {
    std::string name = "d";  // (not "d" + to_string: GCC 12's -Wrestrict false positive)
    name += std::to_string(d);
    CHECK(built.ids->count(std::string(kDs) + "/" + name) == (inline_dirs.count(name) ? 0 : 1));
  }
  REQUIRE(built.encoded.size() == 1 + 30);
  for (const TreeText& t : built.encoded) {
    // The dataset: its 122 direct members and 10 x 3 inline files.
    CHECK(MemberLines(t.text) == (t.id == ds ? 122 + 30 : 3));
  }
  Store(f.env, f.objects, built);
  CHECK(ReadBack(f, built.top) == files);
}

// Builds on `before`'s trees for `after` and checks the result against a
// build from scratch and a read back.
void CheckIncremental(Fixture& f, const std::vector<FileEntry>& before,
                      const std::vector<FileEntry>& after, TreeShape shape) {
  BuiltTrees first = BuildTrees(before, nullptr, nullptr, shape);
  Store(f.env, f.objects, first);
  const std::vector<std::string> changed = ChangedPaths(before, after);
  BuiltTrees next = BuildTrees(after, &changed, first.ids.get(), shape);
  BuiltTrees scratch = BuildTrees(after, nullptr, nullptr, shape);
  CHECK(next.top == scratch.top);
  CHECK(*next.ids == *scratch.ids);
  Store(f.env, f.objects, next);
  TreeIds ids;
  CHECK(ReadBack(f, next.top, &ids) == after);
  CHECK(ids == *next.ids);
}

TEST_CASE("a generation built on the previous one's trees is the one built from scratch",
          "[trees]") {
  Fixture f;
  const TreeShape shape = GENERATE(as<TreeShape>{}, kPerDirectory, TreeShape{}, TreeShape{4, 10});
  INFO("inline_below " << shape.inline_below << ", max_inline_lines " << shape.max_inline_lines);
  const std::vector<FileEntry> before = Instance(12, 3);
  const std::string ds = kDs;
  SECTION("a file edited in a small directory") {
    CheckIncremental(f, before, Edited(before, ds + "/d4/f1"), shape);
  }
  SECTION("a small directory grown past inline_below, one shrunk, one removed, one added") {
    std::vector<FileEntry> after;
    for (const FileEntry& e : before) {
      if (e.path.starts_with(ds + "/d7/") || e.path == ds + "/d7") continue;  // removed
      if (e.path == ds + "/d2/f2") continue;                                  // shrunk
      after.push_back(e);
    }
    for (int i = 3; i < 20; ++i) after.push_back(File(ds + "/d5/g" + std::to_string(i), "g"));
    after.push_back(DirFileEntry(ds + "/new"));
    after.push_back(File(ds + "/new/sub/deep", "deep"));  // "sub" is no entry
    SortByPath(&after);
    CheckIncremental(f, before, after, shape);
  }
  SECTION("an entry removed before unchanged directories makes room to list one inline") {
    std::vector<FileEntry> after;
    for (const FileEntry& e : before) {
      if (e.path != ds + "/caf\xe9/\xff") after.push_back(e);
    }
    CheckIncremental(f, before, after, shape);
    if (shape.max_inline_lines == 10) {
      // d1 (unchanged) had a tree of its own, and now fits: lines 1-6
      // are d0, its 3 files, d0-x and d0.y; d1 is line 7, + 3 = 10.
      CHECK(BuildTrees(before, nullptr, nullptr, shape).ids->count(ds + "/d1") == 1);
      CHECK(BuildTrees(after, nullptr, nullptr, shape).ids->count(ds + "/d1") == 0);
    }
  }
}

TEST_CASE("trees of the one-per-directory shape are read and built on", "[trees]") {
  Fixture f;
  std::vector<FileEntry> before = Instance(20, 3);
  BuiltTrees old = BuildTrees(before, nullptr, nullptr, kPerDirectory);
  Store(f.env, f.objects, old);
  CHECK(old.ids->size() == 21);

  const std::string edited = std::string(kDs) + "/d7/f1";
  const std::vector<FileEntry> after = Edited(before, edited);
  const std::vector<std::string> changed = ChangedPaths(before, after);
  BuiltTrees next = BuildTrees(after, &changed, old.ids.get());
  // The dataset's tree is encoded again, in today's shape: its small
  // directories are inline now, d7 too.
  REQUIRE(next.encoded.size() == 1);
  CHECK(*next.ids == TreeIds{{kDs, next.encoded[0].id}});
  Store(f.env, f.objects, next);
  CHECK(ReadBack(f, next.top) == after);
  CHECK(*next.ids == *BuildTrees(after, nullptr, nullptr).ids);

  // With nothing changed, every old tree is kept as it is.
  const std::vector<std::string> none;
  BuiltTrees same = BuildTrees(before, &none, old.ids.get());
  CHECK(same.encoded.empty());
  CHECK(*same.ids == *old.ids);
  CHECK(ReadBack(f, same.top) == before);
}

// What a built tree references (ObjectRefs::AddTree) is what the store
// registers for it when it reads the tree back at Open (a TreeCache).
TEST_CASE("a built tree's children and the top's ids are what reading them back finds", "[trees]") {
  Fixture f;
  const std::vector<FileEntry> files = Instance(3, 4);
  const TreeShape shape = GENERATE(as<TreeShape>{}, kPerDirectory, TreeShape{});
  BuiltTrees built = BuildTrees(files, nullptr, nullptr, shape);
  Store(f.env, f.objects, built);
  std::vector<FileEntry> back;
  TreeIds ids;
  TreeCache cache;
  REQUIRE(
      ReadTrees(f.env, f.objects, nlohmann::json::parse(built.top), &back, &ids, nullptr, &cache)
          .ok());
  REQUIRE(cache.trees.size() == built.encoded.size());
  auto sorted = [](std::vector<Digest256> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  for (const TreeText& t : built.encoded) {
    const TreeCache::Tree& read = cache.trees.at(t.id);
    std::vector<Digest256> want;
    for (const FileEntry& m : read.members) {
      if (m.kind == EntryKind::kFile) want.push_back(m.sha256);
    }
    for (const auto& [path, sub] : read.subtrees) want.push_back(sub);
    CHECK(sorted(t.children) == sorted(want));
  }
  // The payload's content and the dataset's tree, in path order.
  CHECK(built.top_ids == std::vector<Digest256>{built.ids->at(kDs), Sha256Digest("{}")});
}

TEST_CASE("one changed file re-encodes only the trees on its path up to the top", "[trees]") {
  Fixture f;
  std::vector<FileEntry> before = Instance(50, 20);
  BuiltTrees first = BuildTrees(before, nullptr, nullptr);
  Store(f.env, f.objects, first);

  const std::string edited = std::string(kDs) + "/d17/f3";
  const std::vector<FileEntry> after = Edited(before, edited);
  const std::vector<std::string> changed = ChangedPaths(before, after);
  CHECK(changed == std::vector<std::string>{edited});
  BuiltTrees second = BuildTrees(after, &changed, first.ids.get());
  // d17 and the dataset (and the top, in the description); nothing else.
  std::set<std::string> dirs;
  for (const auto& [dir, id] : *second.ids) {
    if (id != first.ids->at(dir)) dirs.insert(dir);
  }
  CHECK(dirs == std::set<std::string>{kDs, std::string(kDs) + "/d17"});
  CHECK(second.encoded.size() == 2);
  CHECK(second.ids->size() == first.ids->size());
  CHECK(second.top != first.top);
  Store(f.env, f.objects, second);
  std::vector<FileEntry> back;
  TreeIds ids;
  REQUIRE(ReadTrees(f.env, f.objects, nlohmann::json::parse(second.top), &back, &ids).ok());
  CHECK(back == after);

  // The same trees as a build from scratch: ids depend on content only.
  BuiltTrees scratch = BuildTrees(after, nullptr, nullptr);
  CHECK(scratch.top == second.top);
  CHECK(*scratch.ids == *second.ids);
}

TEST_CASE("added and removed directories leave no stale tree behind", "[trees]") {
  Fixture f;
  std::vector<FileEntry> before = Instance(4, 2);
  BuiltTrees first = BuildTrees(before, nullptr, nullptr, kPerDirectory);
  Store(f.env, f.objects, first);
  std::vector<FileEntry> after;
  for (const FileEntry& e : before) {
    if (!e.path.starts_with(std::string(kDs) + "/d2/") && e.path != std::string(kDs) + "/d2") {
      after.push_back(e);
    }
  }
  after.push_back(DirFileEntry(std::string(kDs) + "/new"));
  after.push_back(File(std::string(kDs) + "/new/sub/deep", "deep"));  // "sub" is no entry
  SortByPath(&after);
  const std::vector<std::string> changed = ChangedPaths(before, after);
  BuiltTrees second = BuildTrees(after, &changed, first.ids.get(), kPerDirectory);
  CHECK(second.ids->count(std::string(kDs) + "/d2") == 0);
  CHECK(second.ids->count(std::string(kDs) + "/new") == 1);
  CHECK(second.ids->count(std::string(kDs) + "/new/sub") == 0);
  CHECK(*second.ids == *BuildTrees(after, nullptr, nullptr, kPerDirectory).ids);
  Store(f.env, f.objects, second);
  std::vector<FileEntry> back;
  TreeIds ids;
  REQUIRE(ReadTrees(f.env, f.objects, nlohmann::json::parse(second.top), &back, &ids).ok());
  CHECK(back == after);
}

TEST_CASE("a tree that is not what its name says, or is missing, is refused and named", "[trees]") {
  Fixture f;
  const std::vector<FileEntry> files = Instance(2, 2);
  BuiltTrees built = BuildTrees(files, nullptr, nullptr, kPerDirectory);
  Store(f.env, f.objects, built);
  const Digest256 victim = built.ids->at(std::string(kDs) + "/d1");
  const std::string path = f.objects.PathOf(victim);
  auto text = ReadFileToString(f.env, path);
  REQUIRE(text.ok());

  SECTION("one entry changed in place") {
    std::string bad = *text;
    const size_t at = bad.find("\"mode\":420");
    REQUIRE(at != std::string::npos);
    bad.replace(at, 10, "\"mode\":493");  // valid JSON, another mode
    REQUIRE(WriteStringToFile(f.env, path, bad).ok());
    std::vector<FileEntry> back;
    TreeIds ids;
    TreeFault fault;
    Status st = ReadTrees(f.env, f.objects, nlohmann::json::parse(built.top), &back, &ids, &fault);
    CHECK(st.code() == Code::kData);
    CHECK(st.message().find(victim.Hex().substr(2)) != std::string::npos);
    CHECK(fault.id == victim);
    CHECK_FALSE(fault.missing);
  }
  SECTION("gone") {
    REQUIRE(f.env.RemoveFile(path).ok());
    std::vector<FileEntry> back;
    TreeIds ids;
    TreeFault fault;
    Status st = ReadTrees(f.env, f.objects, nlohmann::json::parse(built.top), &back, &ids, &fault);
    CHECK(st.code() == Code::kNotFound);
    CHECK(fault.id == victim);
    CHECK(fault.missing);
  }
}

}  // namespace
}  // namespace lifeboat::catalog
