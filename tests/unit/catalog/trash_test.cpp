#include "catalog/trash.h"

#include <catch2/catch.hpp>

#include "base/fault_env.h"
#include "tests/unit/catalog/test_util.h"

namespace lifeboat::catalog {
namespace {

using testing::TempDir;
using testing::Write;

// A tree of `n` directories with three files each.
void MakeTree(const std::string& root, int n) {
  for (int i = 0; i < n; ++i) {
    for (int f = 0; f < 3; ++f) {
      Write(root + "/d" + std::to_string(i) + "/f" + std::to_string(f), "data");
    }
  }
}

bool Exists(const std::string& p) { return Env::Default()->Stat(p).ok(); }

size_t Entries(const std::string& dir) {
  auto e = Env::Default()->ListDir(dir);
  REQUIRE(e.ok());
  return e->size();
}

}  // namespace

TEST_CASE("a discarded tree leaves its place at once and is deleted in the background") {
  TempDir tmp;
  MakeTree(tmp / "gen/3", 50);
  auto trash = Trash::Open(*Env::Default(), tmp / "trash");
  REQUIRE(trash.ok());
  REQUIRE((*trash)->Discard(tmp / "gen/3").ok());
  CHECK_FALSE(Exists(tmp / "gen/3"));
  REQUIRE((*trash)->Drain().ok());
  CHECK(Entries(tmp / "trash") == 0);
  CHECK(Exists(tmp / "gen"));  // only the discarded tree went
}

TEST_CASE("a missing path cannot be discarded, and nothing changes") {
  TempDir tmp;
  auto trash = Trash::Open(*Env::Default(), tmp / "trash");
  REQUIRE(trash.ok());
  Status st = (*trash)->Discard(tmp / "nope");
  CHECK(st.code() == Code::kNotFound);
  REQUIRE((*trash)->Drain().ok());
  CHECK(Entries(tmp / "trash") == 0);
}

TEST_CASE("what a crash left in the trash is deleted by the next open") {
  TempDir tmp;
  MakeTree(tmp / "trash/abc123", 10);
  Write(tmp / "trash/loose-file", "x");
  auto trash = Trash::Open(*Env::Default(), tmp / "trash");
  REQUIRE(trash.ok());
  REQUIRE((*trash)->Drain().ok());
  CHECK(Entries(tmp / "trash") == 0);
}

TEST_CASE("a deletion that fails is reported by Drain and retried by the next open") {
  TempDir tmp;
  MakeTree(tmp / "old", 5);
  FaultEnv fenv(Env::Default());
  {
    auto trash = Trash::Open(fenv, tmp / "trash");
    REQUIRE(trash.ok());
    fenv.FailNth(EnvOp::kRemoveFile, 1, EIO);
    REQUIRE((*trash)->Discard(tmp / "old").ok());
    Status drained = (*trash)->Drain();
    CHECK(drained.code() != Code::kOk);
    CHECK_THAT(drained.message(), Catch::Contains(tmp / "trash"));
    CHECK(Entries(tmp / "trash") == 1);  // kept, not half-lost
  }
  fenv.ClearFaults();
  auto again = Trash::Open(fenv, tmp / "trash");
  REQUIRE(again.ok());
  REQUIRE((*again)->Drain().ok());
  CHECK(Entries(tmp / "trash") == 0);
}

TEST_CASE("destroying a trash with work pending returns, the next open finishes it") {
  TempDir tmp;
  {
    auto trash = Trash::Open(*Env::Default(), tmp / "trash");
    REQUIRE(trash.ok());
    for (int i = 0; i < 20; ++i) {
      MakeTree(tmp / ("gen" + std::to_string(i)), 20);
      REQUIRE((*trash)->Discard(tmp / ("gen" + std::to_string(i))).ok());
    }
  }  // the destructor stops the worker after the tree in hand
  auto again = Trash::Open(*Env::Default(), tmp / "trash");
  REQUIRE(again.ok());
  REQUIRE((*again)->Drain().ok());
  CHECK(Entries(tmp / "trash") == 0);
}

}  // namespace lifeboat::catalog
