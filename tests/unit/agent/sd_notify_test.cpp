#include "agent/sd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <string>

namespace lifeboat::agent {
namespace {

TEST_CASE("sd_notify sends one datagram to $NOTIFY_SOCKET, and is a no-op without it") {
  ::unsetenv("NOTIFY_SOCKET");
  CHECK(SdNotify("READY=1").ok());

  std::string path = std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") +
                     "/lb-notify-" + std::to_string(::getpid());
  int fd = ::socket(AF_UNIX, SOCK_DGRAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  REQUIRE(path.size() < sizeof(addr.sun_path));
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  ::unlink(path.c_str());
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  ::setenv("NOTIFY_SOCKET", path.c_str(), 1);
  REQUIRE(SdNotify("READY=1\nSTATUS=up").ok());
  char buf[256];
  ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
  REQUIRE(n > 0);
  CHECK(std::string(buf, static_cast<size_t>(n)) == "READY=1\nSTATUS=up");
  ::close(fd);
  ::unlink(path.c_str());
  // Nobody listening any more: a clear error naming the socket.
  Status st = SdNotify("READY=1");
  CHECK_FALSE(st.ok());
  CHECK(st.message().find(path) != std::string::npos);
  ::setenv("NOTIFY_SOCKET", "relative/path", 1);
  CHECK(SdNotify("READY=1").code() == Code::kConfig);
  ::unsetenv("NOTIFY_SOCKET");
}

}  // namespace
}  // namespace lifeboat::agent
