// Pull planning over sorted entry lists (catalog/internal/plan_entries.h):
// a delta costs what it changes, and what it changes is exactly what differs.
#include "catalog/internal/plan_entries.h"

#include <catch2/catch.hpp>

#include "base/sha256.h"
#include "catalog/trees.h"
#include "tests/unit/catalog/test_util.h"

namespace lifeboat::catalog::internal {
namespace {

using catalog::testing::DirFileEntry;
using syncproto::EntryKind;
using syncproto::FileEntry;

constexpr const char* kDs = "datasets/b2f1a9d4-7c3e-4f0a-9e57-2d1c6b8a4e10";

FileEntry File(const std::string& path, const std::string& content) {
  FileEntry e;
  e.path = path;
  e.size = content.size();
  e.mode = 0644;
  e.sha256 = Sha256Digest(content);
  return e;
}

// The held generation: a dataset of 3 directories of 4 files.
EntryList Held() {
  EntryList held{DirFileEntry(kDs)};
  for (int d = 0; d < 3; ++d) {
    const std::string dir = std::string(kDs) + "/d" + std::to_string(d);
    held.push_back(DirFileEntry(dir));
    for (int f = 0; f < 4; ++f)
      held.push_back(File(dir + "/f" + std::to_string(f), dir + std::to_string(f)));
  }
  held.push_back(File("vms/b2f1a9d4-7c3e-4f0a-9e57-2d1c6b8a4e10.json", "{}"));
  return held;
}

std::map<std::string, FileEntry> Answer(const std::vector<FileEntry>& entries) {
  std::map<std::string, FileEntry> a;
  for (const FileEntry& e : entries) a[e.path] = e;
  return a;
}

TEST_CASE("a delta that changes nothing of an instance makes no copy of its entries", "[plan]") {
  const EntryList held = Held();
  // Nothing answered for it, and removals of another instance's paths.
  NextEntries none = PlanEntries(held, {"datasets/other/x", "vms/other.json"}, {}, false);
  CHECK_FALSE(none.files.has_value());
  CHECK(none.changed.empty());
  // Entries answered again as they are held, a removed path answered again.
  const std::string f1 = std::string(kDs) + "/d1/f1";
  NextEntries same = PlanEntries(held, {f1}, Answer({held[3], held[8]}), false);
  CHECK_FALSE(same.files.has_value());
  CHECK(same.changed.empty());
}

TEST_CASE("a delta's changed paths are exactly what differs from the held entries", "[plan]") {
  const EntryList held = Held();
  const std::string d2 = std::string(kDs) + "/d2";
  const std::set<std::string> removed{d2 + "/f0", d2 + "/f9" /* not held */, "datasets/other/x"};
  const auto answered = Answer({File(d2 + "/f1", "edited"), held[3] /* as held */,
                                DirFileEntry(d2 + "/new"), File(d2 + "/new/g", "new")});
  NextEntries next = PlanEntries(held, removed, answered, false);
  REQUIRE(next.files.has_value());
  CHECK(next.changed ==
        std::vector<std::string>{d2 + "/f0", d2 + "/f1", d2 + "/new", d2 + "/new/g"});
  CHECK(next.changed == ChangedPaths(held, *next.files));
  CHECK(next.files->size() == held.size() + 1);
  CHECK(FindEntry(*next.files, d2 + "/f0") == next.files->size());
  CHECK(next.files->at(FindEntry(*next.files, d2 + "/f1")).sha256 == Sha256Digest("edited"));
}

TEST_CASE("a full answer is compared with the held entries in one pass", "[plan]") {
  const EntryList held = Held();
  NextEntries same = PlanEntries(held, {}, Answer(held), true);
  CHECK_FALSE(same.files.has_value());           // the held list is the next one
  EntryList less(held.begin() + 1, held.end());  // the dataset's own entry left out
  NextEntries next = PlanEntries(held, {}, Answer(less), true);
  REQUIRE(next.files.has_value());
  CHECK(*next.files == less);
  CHECK(next.changed == std::vector<std::string>{kDs});
}

// What the puller does with the held list when it is the only copy
// (PullTxn NextFromHeld): the same next generation as a merge, made in
// place, and undone by applying the held entries at the same paths.
TEST_CASE("a delta applied in place gives what the merge gives, and applies back", "[plan]") {
  const EntryList held = Held();
  const std::string d1 = std::string(kDs) + "/d1";
  std::vector<FileEntry> answer{File(d1 + "/f2", "edited"), File(d1 + "/f9", "added"),
                                DirFileEntry(d1 + "/new"),
                                File(std::string(kDs) + "/a", "added first")};
  std::set<std::string> removed{d1 + "/f0", std::string(kDs) + "/d2/f3", "images/x/file"};
  // A few insertions are made in place; many (a tarball unpacked) in one pass.
  const int added = GENERATE(0, 200);
  for (int i = 0; i < added; ++i) {
    answer.push_back(File(std::string(kDs) + "/many/f" + std::to_string(i), "new"));
  }
  if (added > 0) {
    for (const FileEntry& f : held) {
      if (f.path.starts_with(std::string(kDs) + "/d2/")) removed.insert(f.path);
    }
  }
  const std::map<std::string, FileEntry> answered = Answer(answer);
  const NextEntries merged = PlanEntries(held, removed, answered, /*full=*/false);
  REQUIRE(merged.files.has_value());
  const std::vector<std::string> changed = DeltaChanges(held, removed, answered);
  CHECK(changed == merged.changed);
  EntryList after, before;
  for (const std::string& path : changed) {
    if (auto it = answered.find(path); it != answered.end()) after.push_back(it->second);
    if (size_t k = FindEntry(held, path); k != held.size()) before.push_back(held[k]);
  }
  EntryList next = held;
  ApplyChanges(&next, changed, after);
  CHECK(next == *merged.files);
  ApplyChanges(&next, changed, before);
  CHECK(next == held);
}

}  // namespace
}  // namespace lifeboat::catalog::internal
