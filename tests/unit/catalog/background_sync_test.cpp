#include "catalog/internal/background_sync.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <thread>

#include "base/fault_env.h"
#include "tests/unit/catalog/test_util.h"

namespace lifeboat::catalog::internal {
namespace {

using testing::TempDir;
using testing::Write;

}  // namespace

TEST_CASE("background fsyncs: every queued file is fsync'd and reported") {
  TempDir tmp;
  FaultEnv fenv(Env::Default());
  std::atomic<int> reported{0};
  BackgroundSync sync(fenv, 2);
  for (int i = 0; i < 40; ++i) {
    const std::string p = tmp / "f" + std::to_string(i);
    Write(p, "data");
    sync.Add(p, [&] { ++reported; });
  }
  // Stop drops what is still queued: wait for the reports first (bounded).
  for (int spins = 0; reported < 40 && spins < 100000; ++spins) std::this_thread::yield();
  REQUIRE(sync.Stop().ok());
  CHECK(reported == 40);
  CHECK(fenv.Count(EnvOp::kSync) == 40);
}

TEST_CASE("background fsyncs: a failure is returned by Stop and the file is not reported") {
  TempDir tmp;
  FaultEnv fenv(Env::Default());
  fenv.FailNth(EnvOp::kSync, 1, EIO);
  std::atomic<int> reported{0};
  BackgroundSync sync(fenv, 1);
  Write(tmp / "f", "data");
  sync.Add(tmp / "f", [&] { ++reported; });
  for (int spins = 0; fenv.Count(EnvOp::kSync) < 1 && spins < 100000; ++spins) {
    std::this_thread::yield();
  }
  Status st = sync.Stop();
  CHECK(st.code() != Code::kOk);
  CHECK_THAT(st.message(), Catch::Contains(tmp / "f"));
  CHECK(reported == 0);
}

TEST_CASE("background fsyncs: a file removed before its turn is neither reported nor a failure") {
  TempDir tmp;
  FaultEnv fenv(Env::Default());
  std::atomic<int> reported{0};
  BackgroundSync sync(fenv, 1);
  sync.Add(tmp / "gone", [&] { ++reported; });  // removed to be staged again
  Write(tmp / "f", "data");
  sync.Add(tmp / "f", [&] { ++reported; });
  for (int spins = 0; reported < 1 && spins < 100000; ++spins) std::this_thread::yield();
  REQUIRE(sync.Stop().ok());
  CHECK(reported == 1);  // only the file that was there
  CHECK(fenv.Count(EnvOp::kSync) == 2);
}

TEST_CASE("background fsyncs: Stop returns without draining, later files are ignored") {
  TempDir tmp;
  std::atomic<int> reported{0};
  BackgroundSync sync(*Env::Default(), 1);
  for (int i = 0; i < 200; ++i) {
    const std::string p = tmp / "f" + std::to_string(i);
    Write(p, "data");
    sync.Add(p, [&] { ++reported; });
  }
  REQUIRE(sync.Stop().ok());
  const int at_stop = reported;
  CHECK(at_stop <= 200);
  sync.Add(tmp / "f0", [&] { ++reported; });
  REQUIRE(sync.Stop().ok());
  CHECK(reported == at_stop);
}

}  // namespace lifeboat::catalog::internal
