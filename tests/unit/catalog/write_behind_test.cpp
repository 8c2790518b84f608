#include "catalog/internal/write_behind.h"

#include <catch2/catch.hpp>
#include <cstring>

#include "base/fault_env.h"
#include "tests/unit/catalog/test_util.h"

namespace lifeboat::catalog::internal {
namespace {

using testing::Read;
using testing::TempDir;

std::unique_ptr<WritableFile> Create(Env& env, const std::string& path) {
  auto file = env.OpenWrite(path, 0600, /*exclusive=*/true);
  REQUIRE(file.ok());
  return std::move(*file);
}

std::string Chunk(char c, size_t n) { return std::string(n, c); }

std::string Name(int i) {
  std::string name = "f";
  name += std::to_string(i);
  return name;
}

}  // namespace

TEST_CASE("write-behind: the bytes of many files land in order, each file closed") {
  TempDir tmp;
  FaultEnv fenv(Env::Default());
  WriteBehind writer(/*max_queued_bytes=*/64 << 10);  // smaller than what goes through
  std::vector<std::unique_ptr<WritableFile>> files;
  for (int i = 0; i < 8; ++i) {
    files.push_back(writer.Wrap(Create(fenv, tmp / Name(i))));
  }
  for (int round = 0; round < 20; ++round) {
    for (int i = 0; i < 8; ++i) REQUIRE(files[i]->Append(Chunk('a' + round, 10000 + i)).ok());
  }
  files[0]->StartWriteback(0, 0);  // a hint, queued in order
  for (auto& f : files) REQUIRE(f->Close().ok());
  REQUIRE(writer.Drain().ok());
  CHECK(fenv.Count(EnvOp::kWrite) == 160);
  CHECK(fenv.Count(EnvOp::kClose) == 8);
  for (int i = 0; i < 8; ++i) {
    std::string want;
    for (int round = 0; round < 20; ++round) want += Chunk('a' + round, 10000 + i);
    CHECK(Read(tmp / Name(i)) == want);
  }
}

TEST_CASE("write-behind: a failed write is returned by Drain and by every later call") {
  TempDir tmp;
  FaultEnv fenv(Env::Default());
  fenv.FailNth(EnvOp::kWrite, 3, ENOSPC);
  WriteBehind writer(1 << 20);
  auto a = writer.Wrap(Create(fenv, tmp / "a"));
  auto b = writer.Wrap(Create(fenv, tmp / "b"));
  for (int i = 0; i < 3; ++i) REQUIRE(a->Append(Chunk('x', 100)).ok());  // queued: no error yet
  Status drained = writer.Drain();
  REQUIRE_FALSE(drained.ok());
  CHECK(drained.message().find(tmp / "a") != std::string::npos);
  CHECK(drained.message().find(std::strerror(ENOSPC)) != std::string::npos);
  Status later = b->Append(Chunk('y', 10));  // another file: the pull stops at its next write
  CHECK(later.message() == drained.message());
  CHECK(b->Close().message() == drained.message());
  CHECK(a->Close().message() == drained.message());
  writer.Stop();
}

TEST_CASE("write-behind: Sync waits for the queued bytes, a file outliving the writer fails cleanly") {
  TempDir tmp;
  auto writer = std::make_unique<WriteBehind>(1 << 20);
  auto f = writer->Wrap(Create(*Env::Default(), tmp / "f"));
  REQUIRE(f->Append(Chunk('s', 300000)).ok());
  REQUIRE(f->Sync().ok());
  CHECK(Read(tmp / "f") == Chunk('s', 300000));
  auto late = writer->Wrap(Create(*Env::Default(), tmp / "late"));
  writer.reset();  // stopped and joined
  Status after = late->Append("x");
  CHECK_FALSE(after.ok());
  CHECK(after.message().find("after the pull ended") != std::string::npos);
  late.reset();  // closes the file without the thread
  f.reset();
}

TEST_CASE(
    "write-behind: a check runs after the writes queued before it, and its failure stops the pull") {
  TempDir tmp;
  WriteBehind writer(1 << 20);
  std::shared_ptr<WritableFile> file = Create(*Env::Default(), tmp / "c");
  auto c = writer.Wrap(file);
  REQUIRE(c->Append(Chunk('c', 200000)).ok());
  REQUIRE(c->Close().ok());
  std::string seen;
  REQUIRE(writer
              .Then([&] {
                seen = Read(tmp / "c");  // on the thread, after the write and the close
                return Status::Ok();
              })
              .ok());
  REQUIRE(writer.Drain().ok());
  CHECK(seen == Chunk('c', 200000));

  REQUIRE(writer.Then([] { return DataError("digest mismatch for c"); }).ok());  // queued
  bool ran_after_failure = false;
  writer
      .Then([&] {
        ran_after_failure = true;
        return Status::Ok();
      })
      .IgnoreError();
  Status drained = writer.Drain();
  CHECK(drained.code() == Code::kData);
  CHECK(drained.message() == "digest mismatch for c");
  CHECK_FALSE(ran_after_failure);
  auto d = writer.Wrap(Create(*Env::Default(), tmp / "d"));
  CHECK(d->Append("x").message() == drained.message());  // the next write fails with it
  CHECK(writer.Then([] { return Status::Ok(); }).message() == drained.message());
}

}  // namespace lifeboat::catalog::internal
