#include "base/tcp.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace lifeboat {
namespace {

// Waits for a non-blocking connect on `fd`; 0 when connected, else an errno
// (ETIMEDOUT when the deadline passed).
int FinishConnect(int fd, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) return ETIMEDOUT;
    pollfd p{fd, POLLOUT, 0};
    const int n = ::poll(&p, 1, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return ETIMEDOUT;
    int err = 0;
    socklen_t len = sizeof(err);
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
    return err;
  }
}

}  // namespace

std::string FormatHostPort(const std::string& host, uint16_t port) {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

Result<int> ConnectTcp(const std::string& host, uint16_t port, int64_t timeout_ms) {
  const std::string where = FormatHostPort(host, port);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (rc != 0) return UnavailableError("resolve " + where + ": " + ::gai_strerror(rc));
  Status last = UnavailableError("connect to " + where + ": no address");
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    const int fd =
        ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    int err = ::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ? 0 : errno;
    if (err == EINPROGRESS) err = FinishConnect(fd, deadline);
    if (err == 0) {
      ::freeaddrinfo(res);
      return fd;
    }
    ::close(fd);
    last = err == ETIMEDOUT ? TemporaryError("connect to " + where + ": timed out")
                            : UnavailableError("connect to " + where + ": " + std::strerror(err));
  }
  ::freeaddrinfo(res);
  return last;
}

}  // namespace lifeboat
