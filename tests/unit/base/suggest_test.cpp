#include "base/suggest.h"

#include <catch2/catch.hpp>

namespace lifeboat {
namespace {

TEST_CASE("edit distance counts insertions, deletions and substitutions", "[suggest]") {
  CHECK(EditDistance("", "") == 0);
  CHECK(EditDistance("status", "status") == 0);
  CHECK(EditDistance("statsu", "status") == 2);
  CHECK(EditDistance("--dryrun", "--dry-run") == 1);
  CHECK(EditDistance("abc", "") == 3);
}

TEST_CASE("the closest name is suggested only when it is close", "[suggest]") {
  const std::vector<std::string> names = {"status", "sync-now", "restore", "readiness"};
  CHECK(ClosestName("statsu", names) == "status");
  CHECK(ClosestName("restroe", names) == "restore");
  CHECK(ClosestName("frobnicate", names).empty());
  CHECK(ClosestName("x", {}).empty());
  // Ties go to the first candidate.
  CHECK(ClosestName("ab", {"aa", "bb"}) == "aa");
}

}  // namespace
}  // namespace lifeboat
