#include "base/status.h"

#include <cerrno>

#include <catch2/catch.hpp>

namespace lifeboat {
namespace {

Result<int> Half(int x) {
  if (x % 2 != 0) return DataError("odd number " + std::to_string(x));
  return x / 2;
}

Result<int> Quarter(int x) {
  ASSIGN_OR_RETURN(int h, Half(x));
  return Half(h);
}

Status CheckEven(int x) {
  RETURN_IF_ERROR(Half(x).status());
  return Status::Ok();
}

TEST_CASE("an OK status has no message and exits 0", "[status]") {
  Status s;
  CHECK(s.ok());
  CHECK(s.code() == Code::kOk);
  CHECK(s.ExitCode() == 0);
  CHECK(s.ToString() == "ok");
}

TEST_CASE("error codes map to sysexits", "[status]") {
  CHECK(UsageError("x").ExitCode() == 64);
  CHECK(DataError("x").ExitCode() == 65);
  CHECK(UnavailableError("x").ExitCode() == 69);
  CHECK(IoError("x").ExitCode() == 74);
  CHECK(TemporaryError("x").ExitCode() == 75);
  CHECK(ConfigError("x").ExitCode() == 78);
  CHECK(NotFoundError("x").ExitCode() == 65);
}

TEST_CASE("PosixError says the operation, the path and the errno text", "[status]") {
  Status s = PosixError("write failed on", "/var/x", ENOSPC);
  CHECK(s.code() == Code::kIo);
  CHECK(s.message() == "write failed on /var/x: No space left on device");
  CHECK_FALSE(s.retryable());
  CHECK(PosixError("open", "/nope", ENOENT).code() == Code::kNotFound);
  Status refused = PosixError("connect", "10.0.0.1:4650", ECONNREFUSED);
  CHECK(refused.code() == Code::kUnavailable);
  CHECK(refused.retryable());
}

TEST_CASE("WithContext prefixes the message and keeps code and retryability", "[status]") {
  Status s = TemporaryError("timed out").WithContext("pull from headnode1");
  CHECK(s.message() == "pull from headnode1: timed out");
  CHECK(s.code() == Code::kTemporary);
  CHECK(s.retryable());
  CHECK(Status::Ok().WithContext("x").ok());
}

TEST_CASE("Result carries a value or the error through ASSIGN_OR_RETURN", "[status]") {
  REQUIRE(Quarter(8).ok());
  CHECK(*Quarter(8) == 2);
  Result<int> bad = Quarter(6);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message() == "odd number 3");
  CHECK(CheckEven(4).ok());
  CHECK(CheckEven(5).code() == Code::kData);
}

}  // namespace
}  // namespace lifeboat
