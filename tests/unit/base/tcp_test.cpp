#include "base/tcp.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

namespace lifeboat {
namespace {

// A listening socket on 127.0.0.1 with a kernel-chosen port.
struct Listener {
  Listener() {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
    socklen_t len = sizeof(a);
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port = ntohs(a.sin_port);
  }
  ~Listener() { ::close(fd); }
  int fd = -1;
  uint16_t port = 0;
};

TEST_CASE("host:port brackets IPv6 hosts", "[tcp]") {
  CHECK(FormatHostPort("10.0.0.1", 4650) == "10.0.0.1:4650");
  CHECK(FormatHostPort("::1", 4650) == "[::1]:4650");
  CHECK(FormatHostPort("headnode1", 1) == "headnode1:1");
}

TEST_CASE("a connect reaches a listener and fails clearly otherwise", "[tcp]") {
  Listener l;
  REQUIRE(::listen(l.fd, 4) == 0);
  Result<int> fd = ConnectTcp("127.0.0.1", l.port, 2000);
  REQUIRE(fd.ok());
  ::close(*fd);

  Listener closed;  // bound, never listening: connections are refused
  Result<int> refused = ConnectTcp("127.0.0.1", closed.port, 2000);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == Code::kUnavailable);
  CHECK_THAT(refused.status().message(),
             Catch::Contains("connect to 127.0.0.1:" + std::to_string(closed.port)));

  Result<int> unresolved = ConnectTcp("no-such-host.invalid", 1, 2000);
  REQUIRE_FALSE(unresolved.ok());
  CHECK_THAT(unresolved.status().message(), Catch::StartsWith("resolve no-such-host.invalid:1"));
}

}  // namespace
}  // namespace lifeboat
