#include "base/subprocess.h"

#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <thread>

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

TEST_CASE("RunCommand kills a command and its children after timeout_ms", "[subprocess]") {
  // A wrapper script whose grandchild (like sdc-sapi's curl) hangs holding stdout.
  CommandOptions opts;
  opts.timeout_ms = 200;
  const auto start = std::chrono::steady_clock::now();
  auto r = RunCommand({"/bin/sh", "-c", "echo started; (sleep 30; echo late); echo never"}, opts);
  const auto took = std::chrono::steady_clock::now() - start;
  REQUIRE(r.ok());
  CHECK(r->timed_out);
  CHECK_FALSE(r->ok());
  CHECK(r->out == "started\n");
  CHECK(took < std::chrono::seconds(10));
  // The grandchild was killed with it, not left to hold SAPI's connection:
  // gone or a zombie (reaped by init) within moments, not after 30 s.
  testing::TestDir dir;
  const std::string pidfile = dir / "pid";
  auto g = RunCommand({"/bin/sh", "-c", "sleep 30 & echo $! > " + pidfile + "; wait"}, opts);
  REQUIRE(g.ok());
  CHECK(g->timed_out);
  auto pid_text = ReadFileToString(*Env::Default(), pidfile);
  REQUIRE(pid_text.ok());
  const std::string stat_path = "/proc/" + pid_text->substr(0, pid_text->find('\n')) + "/stat";
  auto alive = [&] {
    auto stat = ReadFileToString(*Env::Default(), stat_path);
    if (!stat.ok()) return false;
    const size_t paren = stat->rfind(')');
    return paren != std::string::npos && paren + 2 < stat->size() && (*stat)[paren + 2] != 'Z';
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (alive() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  CHECK_FALSE(alive());
  auto quick = RunCommand({"/bin/sh", "-c", "echo fine"}, opts);
  REQUIRE(quick.ok());
  CHECK_FALSE(quick->timed_out);
  CHECK(quick->exit_code == 0);
}

TEST_CASE("ParseCurlOutput finds the final status and the body of curl -i output", "[subprocess]") {
  auto ok = ParseCurlOutput("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n[1]\n");
  CHECK(ok.status == 200);
  CHECK(ok.body == "[1]\n");
  auto cont = ParseCurlOutput("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\n\r\n{}");
  CHECK(cont.status == 404);
  CHECK(cont.body == "{}");
  CHECK(ParseCurlOutput("[1]").status == 0);
  CHECK(ParseCurlOutput("").status == 0);
  CHECK(ParseCurlOutput("HTTP/1.1 2x0 OK\r\n\r\n").status == 0);
  auto headers_only = ParseCurlOutput("HTTP/1.1 503 Service Unavailable\r\nX: y\r\n");
  CHECK(headers_only.status == 503);
  CHECK(headers_only.body.empty());
}

TEST_CASE("CommandLine quotes what a shell would split", "[subprocess]") {
  CHECK(CommandLine({"imgadm", "install", "-m", "/a b/manifest.json"}) ==
        "imgadm install -m '/a b/manifest.json'");
}

}  // namespace
}  // namespace lifeboat
