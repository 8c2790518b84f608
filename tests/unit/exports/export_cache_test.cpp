// The exporter's cache grouped by directory (exports/internal/export_cache.h):
// lookups, path order, and the sharing that makes a scan cost what changed.
#include "exports/internal/export_cache.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

namespace lifeboat::exports::internal {
namespace {

CacheEntry Entry(const std::string& path, uint64_t size = 1) {
  CacheEntry c;
  c.path = path;
  c.size = size;
  c.digest = Xxh3Digest(path + std::to_string(size));
  return c;
}

Cache Build(const std::vector<CacheEntry>& entries, const Cache* previous = nullptr) {
  CacheBuilder b;
  for (const CacheEntry& c : entries) b.Add(c);
  return b.Finish(previous);
}

std::vector<std::string> Paths(const Cache& cache) {
  std::vector<std::string> out;
  for (const CacheEntry* c : cache.Sorted()) out.push_back(c->path);
  return out;
}

struct Diff {
  std::vector<std::string> removed, added, both;
};

Diff DiffOf(const Cache& from, const Cache& to) {
  Diff d;
  DiffCaches(
      from, to, [&](const CacheEntry& o) { d.removed.push_back(o.path); },
      [&](const CacheEntry& n) { d.added.push_back(n.path); },
      [&](const CacheEntry& o, const CacheEntry& n) {
        CHECK(o.path == n.path);
        d.both.push_back(n.path);
      });
  return d;
}

// An export of `dirs` directories of `files` files each, under datasets/u.
std::vector<CacheEntry> Tree(int dirs, int files) {
  std::vector<CacheEntry> out;
  for (int d = 0; d < dirs; ++d) {
    const std::string dir = "datasets/u/d" + std::to_string(d);
    out.push_back(Entry(dir));
    for (int f = 0; f < files; ++f) out.push_back(Entry(dir + "/f" + std::to_string(f)));
  }
  return out;
}

TEST_CASE("export cache: entries added in any order are found and listed in path order") {
  // Bytewise order puts a directory's subtree between its siblings: a < a-c < a.b < a/x < a0.
  const Cache cache = Build({Entry("top/a0"), Entry("top/a/x"), Entry("top/a.b"), Entry("top"),
                             Entry("top/a"), Entry("top/a-c"), Entry("top/a/y/z")});
  CHECK(cache.size() == 7);
  CHECK(Paths(cache) == std::vector<std::string>{"top", "top/a", "top/a-c", "top/a.b", "top/a/x",
                                                 "top/a/y/z", "top/a0"});
  REQUIRE(cache.Find("top/a/x") != nullptr);
  CHECK(cache.Find("top/a/x")->path == "top/a/x");
  CHECK(cache.Find("top/a/y") == nullptr);  // a directory with entries, but no entry of its own
  CHECK(cache.Find("top/a/x/") == nullptr);
  CHECK(cache.Find("") == nullptr);
  REQUIRE(cache.FindDir("top/a") != nullptr);
  CHECK((*cache.FindDir("top/a"))->entries.size() == 1);
  CHECK(cache.FindDir("top/b") == nullptr);
  CHECK(ParentOf("top") == "");
  CHECK(ParentOf("top/a/y/z") == "top/a/y");
}

TEST_CASE("export cache: a later add of a path replaces the earlier one, PopLast takes one back") {
  CacheBuilder b;
  b.Add(Entry("d/f", 1));
  b.Add(Entry("d/g", 1));
  b.Add(Entry("d/f", 2));
  b.Add(Entry("d/h", 1));
  b.PopLast("d");
  const Cache cache = b.Finish();
  CHECK(Paths(cache) == std::vector<std::string>{"d/f", "d/g"});
  CHECK(cache.Find("d/f")->size == 2);
}

TEST_CASE("export cache: a rebuild that finds one change shares every other directory") {
  const Cache before = Build(Tree(50, 20));
  std::vector<CacheEntry> entries = Tree(50, 20);
  for (CacheEntry& c : entries) {
    if (c.path == "datasets/u/d7/f3") c = Entry(c.path, 99);
  }
  const Cache after = Build(entries, &before);
  REQUIRE(after.dirs().size() == before.dirs().size());
  size_t shared = 0;
  for (size_t k = 0; k < after.dirs().size(); ++k) shared += after.dirs()[k] == before.dirs()[k];
  CHECK(shared == before.dirs().size() - 1);
  CHECK_FALSE(after.SharesAll(before));

  const Diff d = DiffOf(before, after);
  CHECK(d.removed.empty());
  CHECK(d.added.empty());
  CHECK(d.both.size() == 20);  // the entries of d7 only, equal or not
  CHECK(after.Find("datasets/u/d7/f3")->size == 99);

  const Cache again = Build(Tree(50, 20), &before);
  CHECK(again.SharesAll(before));
  CHECK(DiffOf(before, again).both.empty());
}

TEST_CASE("export cache: kept directories are shared, and an add to one copies it first") {
  const Cache before = Build(Tree(3, 4));
  CacheBuilder b;
  for (const Cache::DirPtr& d : before.dirs()) b.Keep(d);
  const Cache kept = b.Finish();
  CHECK(kept.SharesAll(before));
  CHECK(kept.size() == before.size());

  for (const Cache::DirPtr& d : before.dirs()) b.Keep(d);
  b.Add(Entry("datasets/u/d1/f0", 7));
  b.Add(Entry("datasets/u/d1/new"));
  const Cache changed = b.Finish(&before);
  CHECK(changed.size() == before.size() + 1);
  CHECK(changed.Find("datasets/u/d1/f0")->size == 7);
  CHECK(before.Find("datasets/u/d1/f0")->size == 1);  // the kept directory was not changed
  const Diff d = DiffOf(before, changed);
  CHECK(d.added == std::vector<std::string>{"datasets/u/d1/new"});
  CHECK(d.both.size() == 4);
}

TEST_CASE("export cache: With removes and upserts, drops emptied directories, shares the rest") {
  const Cache before = Build(Tree(4, 3));
  const Cache after = before.With(
      {Entry("datasets/u/d2/f1", 5), Entry("datasets/u/d9/new"), Entry("datasets/u/d3/f0", 8)},
      {"datasets/u/d0/f0", "datasets/u/d0/f1", "datasets/u/d0/f2", "datasets/u/d3/f0",
       "datasets/u/missing"});
  CHECK(after.FindDir("datasets/u/d0") == nullptr);  // emptied
  CHECK(after.Find("datasets/u/d2/f1")->size == 5);
  CHECK(after.Find("datasets/u/d3/f0")->size == 8);  // an upsert wins over a remove
  CHECK(after.Find("datasets/u/d9/new") != nullptr);
  CHECK(after.size() == before.size() - 3 + 1);
  CHECK(*after.FindDir("datasets/u/d1") == *before.FindDir("datasets/u/d1"));  // untouched: shared
  CHECK(*after.FindDir("datasets/u") == *before.FindDir("datasets/u"));
  const Diff d = DiffOf(before, after);
  CHECK(d.removed ==
        std::vector<std::string>{"datasets/u/d0/f0", "datasets/u/d0/f1", "datasets/u/d0/f2"});
  CHECK(d.added == std::vector<std::string>{"datasets/u/d9/new"});
}

TEST_CASE("export cache: an empty cache and its diffs") {
  const Cache empty;
  CHECK(empty.empty());
  CHECK(empty.Sorted().empty());
  CHECK(empty.Find("x") == nullptr);
  const Cache some = Build({Entry("a"), Entry("b/c")});
  CHECK(DiffOf(empty, some).added == std::vector<std::string>{"a", "b/c"});
  CHECK(DiffOf(some, empty).removed == std::vector<std::string>{"a", "b/c"});
  CHECK(Build({}).SharesAll(empty));
}

}  // namespace
}  // namespace lifeboat::exports::internal
