#include "base/subprocess.h"

#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "base/env.h"
#include "tests/unit/base/test_dir.h"

namespace lifeboat {
namespace {

TEST_CASE("RunCommand captures bounded output and survives a child that ignores stdin") {
  CommandOptions opts;
  opts.stdin_data = std::string(1 << 20, 'a');  // more than a pipe holds
  opts.max_output = 10;
  auto r = RunCommand({"/bin/sh", "-c", "echo 0123456789abcdef; echo err >&2; exit 4"}, opts);
  REQUIRE(r.ok());
  CHECK(r->exit_code == 4);
  CHECK(r->out == "0123456789");
  CHECK(r->truncated);
  CHECK(r->err == "err\n");
  auto cat = RunCommand({"cat"}, CommandOptions{.stdin_data = "hello", .max_output = 1024});
  REQUIRE(cat.ok());
  CHECK(cat->out == "hello");
  auto missing = RunCommand({"/nonexistent/tool"});
  CHECK(missing.status().code() == Code::kUnavailable);
}

TEST_CASE("RunCommand can send stdout to a file descriptor", "[subprocess]") {
  testing::TestDir dir;
  const std::string path = dir / "out";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  CommandOptions opts;
  opts.stdout_fd = fd;
  auto r = RunCommand({"/bin/sh", "-c", "head -c 200000 /dev/zero; echo done >&2"}, opts);
  ::close(fd);
  REQUIRE(r.ok());
  CHECK(r->exit_code == 0);
  CHECK(r->out.empty());
  CHECK(r->err == "done\n");
  CHECK(Env::Default()->Stat(path)->size == 200000);
}

TEST_CASE("CommandLine quotes what a shell would split", "[subprocess]") {
  CHECK(CommandLine({"imgadm", "install", "-m", "/a b/manifest.json"}) ==
        "imgadm install -m '/a b/manifest.json'");
}

}  // namespace
}  // namespace lifeboat
