#include "agent/session_pump.h"

#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>

#include "agent/connection.h"
#include "agent/uv.h"

namespace lifeboat::agent {
namespace {

// Echoes what it is fed; done once it has echoed a 'q'.
class EchoSession {
 public:
  Status Feed(std::span<const uint8_t> d) {
    out_.insert(out_.end(), d.begin(), d.end());
    if (std::find(d.begin(), d.end(), 'q') != d.end()) bye_ = true;
    return Status::Ok();
  }
  Status Pump() { return Status::Ok(); }
  std::span<const uint8_t> output() const { return out_; }
  void ConsumeOutput(size_t n) { out_.erase(out_.begin(), out_.begin() + static_cast<long>(n)); }
  std::vector<uint8_t> TakeOutput() { return std::exchange(out_, {}); }
  bool done() const { return bye_ && out_.empty(); }

 private:
  std::vector<uint8_t> out_;
  bool bye_ = false;
};

// Reads from `fd` until EOF (or 10 s); what was read.
std::string ReadAll(int fd) {
  std::string got;
  char buf[256];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

TEST_CASE("a session pump's times say when it waited for its peer") {
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  auto* tcp = new uv_tcp_t;
  uv_tcp_init(&loop, tcp);
  REQUIRE(uv_tcp_open(tcp, fds[0]) == 0);
  auto conn = std::make_shared<Connection>(&loop, tcp, "test peer");
  bool closed = false;
  Status why;
  SessionPump<EchoSession>::Hooks hooks;
  hooks.on_closed = [&](const Status& s) {
    closed = true;
    why = s;
  };
  auto pump = std::make_shared<SessionPump<EchoSession>>(&loop, conn,
                                                         std::make_shared<EchoSession>(), hooks);
  pump->Start();

  // The peer: one line, a pause the pump spends waiting for it, the last line.
  std::string echoed;
  std::thread peer([&] {
    REQUIRE(::write(fds[1], "hello\n", 6) == 6);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    REQUIRE(::write(fds[1], "q\n", 2) == 2);
    echoed = ReadAll(fds[1]);
  });
  const bool ended = RunLoopUntil(&loop, [&] { return closed; }, 10'000);
  peer.join();
  ::close(fds[1]);
  REQUIRE(ended);
  CHECK(why.ok());
  CHECK(echoed == "hello\nq\n");

  const PumpTimes t = pump->times();
  INFO("items " << t.items << " work " << t.work_ms << " queued " << t.queued_ms << " wait_peer "
                << t.wait_peer_ms << " wait_socket " << t.wait_socket_ms);
  CHECK(t.items >= 2);  // the start, then each line's bytes
  CHECK(t.wait_peer_ms >= 250);
  CHECK(t.wait_peer_ms < 5'000);
  CHECK(t.wait_socket_ms == 0);  // never more than write_high_water unsent
  CHECK(t.work_ms < t.wait_peer_ms);
  const auto json = t.Json();
  CHECK(json["items"] == t.items);
  CHECK(json["wait_peer"].get<int64_t>() >= 250);

  pump.reset();
  conn.reset();
  DrainAndCloseLoop(&loop);
}

}  // namespace
}  // namespace lifeboat::agent
