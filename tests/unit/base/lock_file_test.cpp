#include "base/lock_file.h"

#include <unistd.h>

#include <catch2/catch.hpp>

#include "base/env.h"
#include "tests/unit/base/test_dir.h"

namespace lifeboat {
namespace {

TEST_CASE("a lock file is held by one holder at a time and names the holder") {
  testing::TestDir dir;
  const std::string path = dir.path() + "/.agent.lock";
  auto first = LockFile::Acquire(path, "data_dir " + dir.path());
  REQUIRE(first.ok());
  CHECK(*ReadFileToString(*Env::Default(), path) == std::to_string(::getpid()) + "\n");

  auto second = LockFile::Acquire(path, "data_dir " + dir.path());
  REQUIRE_FALSE(second.ok());
  CHECK(second.status().code() == Code::kUnavailable);
  const std::string msg = second.status().message();
  CHECK(msg.find("data_dir " + dir.path() + " is in use by another process") != std::string::npos);
  CHECK(msg.find("(pid " + std::to_string(::getpid()) + ")") != std::string::npos);

  { LockFile released = std::move(*first); }  // destroyed: released
  CHECK(LockFile::Acquire(path, "data_dir").ok());
}

TEST_CASE("a lock file that cannot be created is an I/O error naming it") {
  auto r = LockFile::Acquire("/nonexistent-dir/for/lock", "data_dir x");
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message().find("/nonexistent-dir/for/lock") != std::string::npos);
}

}  // namespace
}  // namespace lifeboat
