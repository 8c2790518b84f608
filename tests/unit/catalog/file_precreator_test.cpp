#include "catalog/internal/file_precreator.h"

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <mutex>
#include <thread>

#include "base/fault_env.h"
#include "tests/unit/catalog/test_util.h"

namespace lifeboat::catalog::internal {
namespace {

using testing::Read;
using testing::TempDir;

std::string Name(size_t i) {
  std::string name = "f";
  name += std::to_string(i);
  return name;
}

std::vector<FilePrecreator::File> Files(const TempDir& tmp, int n, uint32_t mode = 0400) {
  std::vector<FilePrecreator::File> files;
  for (int i = 0; i < n; ++i) files.push_back({tmp / Name(i), mode});
  return files;
}

// Waits (bounded) until `n` creations were made.
void AwaitCreates(FaultEnv& fenv, uint64_t n) {
  for (int spins = 0; fenv.Count(EnvOp::kOpenWrite) < n && spins < 10'000'000; ++spins) {
    std::this_thread::yield();
  }
  REQUIRE(fenv.Count(EnvOp::kOpenWrite) >= n);
}

// Takes file `index`, or creates it as a pull does when the creator has not
// reached it (exclusively: the creator must have skipped it), and checks it
// is writable with the mode asked for.
void TakeOrCreate(FilePrecreator& pre, Env& env, const TempDir& tmp, size_t index, uint32_t mode) {
  const std::string path = tmp / Name(index);
  auto taken = pre.Take(index);
  if (!taken) taken = env.OpenWrite(path, mode, /*exclusive=*/true);
  REQUIRE(taken->ok());
  std::unique_ptr<WritableFile> file = std::move(**taken);
  REQUIRE(file->Append("content " + std::to_string(index)).ok());
  REQUIRE(file->Close().ok());
  CHECK(Read(path) == "content " + std::to_string(index));
  auto st = Env::Default()->Stat(path);
  REQUIRE(st.ok());
  CHECK(st->mode == mode);
}

}  // namespace

TEST_CASE("precreated files: created in order ahead of the taker, never more than depth waiting") {
  TempDir tmp;
  FaultEnv fenv(Env::Default());
  // Each creation by the creator (the taker creates nothing here: it waits
  // for each file) sees how many were created and not taken before it.
  std::atomic<int> created{0}, takes_started{0}, most_waiting{0};
  fenv.SetBeforeCall([&](EnvOp op, const std::string&) {
    if (op != EnvOp::kOpenWrite) return;
    int waiting = ++created - takes_started.load();  // this one included
    int most = most_waiting.load();
    while (waiting > most && !most_waiting.compare_exchange_weak(most, waiting)) {
    }
  });
  FilePrecreator pre(fenv, Files(tmp, 10), /*depth=*/3);
  for (size_t i = 0; i < 10; ++i) {
    AwaitCreates(fenv, std::min<uint64_t>(i + 3, 10));  // the creator is ahead by depth
    ++takes_started;
    TakeOrCreate(pre, fenv, tmp, i, 0400);
  }
  CHECK(fenv.Count(EnvOp::kOpenWrite) == 10);  // each file once
  CHECK(most_waiting == 3);                    // ahead by depth, never more
}

TEST_CASE("precreated files: one the creator has not reached is the taker's, and skipped") {
  TempDir tmp;
  FaultEnv fenv(Env::Default());
  FilePrecreator pre(fenv, Files(tmp, 6, 0600), /*depth=*/1);
  AwaitCreates(fenv, 1);  // f0 made; the creator waits for room
  CHECK_FALSE(pre.Take(4).has_value());  // not reached: the caller creates it
  TakeOrCreate(pre, fenv, tmp, 4, 0600);
  for (size_t i : {0, 1, 2, 3, 5}) TakeOrCreate(pre, fenv, tmp, i, 0600);
  CHECK(fenv.Count(EnvOp::kOpenWrite) == 6);  // f4 was not created twice
  CHECK_FALSE(pre.Take(4).has_value());       // taken already
  CHECK_FALSE(pre.Take(6).has_value());       // out of range
}

TEST_CASE("precreated files: a failed creation is handed over as the error, the rest go on") {
  TempDir tmp;
  FaultEnv fenv(Env::Default());
  fenv.FailNth(EnvOp::kOpenWrite, 2, ENOSPC, /*sticky=*/false);
  FilePrecreator pre(fenv, Files(tmp, 4), /*depth=*/4);
  AwaitCreates(fenv, 4);  // the failure is the creator's, not ours
  TakeOrCreate(pre, fenv, tmp, 0, 0400);
  auto failed = pre.Take(1);
  REQUIRE(failed.has_value());
  REQUIRE_FALSE(failed->ok());
  CHECK(failed->status().message().find(tmp / "f1") != std::string::npos);
  CHECK(failed->status().message().find(std::strerror(ENOSPC)) != std::string::npos);
  TakeOrCreate(pre, fenv, tmp, 2, 0400);
  TakeOrCreate(pre, fenv, tmp, 3, 0400);
  CHECK(fenv.Count(EnvOp::kOpenWrite) == 4);
}

TEST_CASE("precreated files: Stop joins and closes what was never taken") {
  TempDir tmp;
  FaultEnv fenv(Env::Default());
  FilePrecreator pre(fenv, Files(tmp, 100), /*depth=*/8);
  AwaitCreates(fenv, 8);
  TakeOrCreate(pre, fenv, tmp, 0, 0400);
  pre.Stop();
  CHECK(fenv.Count(EnvOp::kOpenWrite) <= 9);  // ahead by depth at most
  // Stopped: a file created ahead is closed, one never created is not the
  // caller's to create either (the pull is over).
  for (size_t i : {1, 50}) {
    auto late = pre.Take(i);
    REQUIRE(late.has_value());
    CHECK_FALSE(late->ok());
    CHECK(late->status().message().find("after the pull ended") != std::string::npos);
  }
}

// Waits (bounded) until `path` exists: FaultEnv counts a call before it
// reaches the filesystem.
void AwaitPath(const std::string& path) {
  for (int spins = 0; !Exists(*Env::Default(), path) && spins < 10'000'000; ++spins) {
    std::this_thread::yield();
  }
  REQUIRE(Exists(*Env::Default(), path));
}

TEST_CASE("precreated files: spare directories are made while no file is due, files first") {
  TempDir tmp;
  FaultEnv fenv(Env::Default());
  // Each directory made sees how many files were created before it.
  std::mutex mu;
  std::vector<uint64_t> files_before_dir;
  fenv.SetBeforeCall([&](EnvOp op, const std::string&) {
    if (op != EnvOp::kMakeDir) return;
    std::lock_guard<std::mutex> lock(mu);
    files_before_dir.push_back(fenv.Count(EnvOp::kOpenWrite));
  });
  const std::vector<std::string> dirs{tmp / "v", tmp / "v/a", tmp / "v/a/b", tmp / "v/c"};
  FilePrecreator pre(fenv, Files(tmp, 6), /*depth=*/2, dirs);
  // Two files wait to be taken: the creator has no room, so it makes the
  // directories (parents first), then waits.
  AwaitPath(dirs.back());
  {
    std::lock_guard<std::mutex> lock(mu);
    CHECK(files_before_dir == std::vector<uint64_t>(dirs.size(), 2));
  }
  for (const std::string& d : dirs) {
    auto st = Env::Default()->Stat(d);
    REQUIRE(st.ok());
    CHECK(st->type == FileType::kDirectory);
    CHECK(st->mode == 0700);
  }
  for (size_t i = 0; i < 6; ++i) TakeOrCreate(pre, fenv, tmp, i, 0400);
}

TEST_CASE("precreated files: a spare directory that cannot be made stops nothing") {
  TempDir tmp;
  FaultEnv fenv(Env::Default());
  fenv.FailNth(EnvOp::kMakeDir, 1, ENOSPC, /*sticky=*/false);
  const std::vector<std::string> dirs{tmp / "x", tmp / "y"};
  FilePrecreator pre(fenv, Files(tmp, 3), /*depth=*/8, dirs);
  // Every file created, then both directories tried: x fails, y is made.
  for (size_t i = 0; i < 3; ++i) TakeOrCreate(pre, fenv, tmp, i, 0400);
  AwaitPath(tmp / "y");
  pre.Stop();
  CHECK(fenv.Count(EnvOp::kMakeDir) == 2);
  CHECK_FALSE(Exists(*Env::Default(), tmp / "x"));  // failed, and not reported
}

}  // namespace lifeboat::catalog::internal
