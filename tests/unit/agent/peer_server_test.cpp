#include "agent/peer_server.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <future>
#include <thread>

#include "agent/uv.h"
#include "tests/unit/syncproto/test_util.h"

namespace lifeboat::agent {
namespace {

using syncproto::testing::DirExportSource;
using syncproto::testing::kKey;
using syncproto::testing::TempDir;
using syncproto::testing::WriteFile;

struct ServerFixture {
  uv_loop_t loop;
  std::unique_ptr<PeerServer> server;
  std::unique_ptr<LoopTasks> tasks;
  std::thread thread;
  PeerServerStats final_stats;

  ServerFixture(syncproto::ExportSource* src, int64_t handshake_ms = 5'000) {
    uv_loop_init(&loop);
    tasks = std::make_unique<LoopTasks>(&loop);
    PeerServerOptions o;
    o.host = "127.0.0.1";
    o.port = 0;
    o.cluster_key = kKey;
    o.self = {"00000000-0000-4000-8000-0000000000aa", "server"};
    o.handshake_timeout_ms = handshake_ms;
    auto s = PeerServer::Start(&loop, src, o);
    REQUIRE(s.ok());
    server = std::move(s).value();
    thread = std::thread([this] { uv_run(&loop, UV_RUN_DEFAULT); });
  }
  ~ServerFixture() {
    tasks->Post([this] {
      final_stats = server->stats();
      server.reset();
      tasks->Close();
    });
    thread.join();
    DrainAndCloseLoop(&loop);
  }
  PeerServerStats Stats() {  // read on the loop thread
    std::promise<PeerServerStats> p;
    tasks->Post([&] { p.set_value(server->stats()); });
    return p.get_future().get();
  }
};

int Dial(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  return fd;
}

// Moves bytes between a blocking socket and a PullerSession until `until`
// holds, the peer closes (false) or 10 s pass (false).
bool Drive(int fd, syncproto::PullerSession& s, const std::function<bool()>& until) {
  for (int rounds = 0; rounds < 1000; ++rounds) {
    if (!s.Pump().ok()) return until();
    auto out = s.output();
    size_t off = 0;
    while (off < out.size()) {
      ssize_t n = ::send(fd, out.data() + off, out.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return until();
      off += static_cast<size_t>(n);
    }
    s.ConsumeOutput(out.size());
    if (until()) return true;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 10) <= 0) continue;
    uint8_t buf[65536];
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return until();
    if (!s.Feed(std::span<const uint8_t>(buf, static_cast<size_t>(n))).ok()) return until();
  }
  return false;
}

TEST_CASE("the peer server serves the manifest and files to an authenticated puller") {
  TempDir dir;
  std::string content(300000, 'q');
  WriteFile(dir.Sub("vms/a.json"), "{\"uuid\":\"a\"}");
  WriteFile(dir.Sub("datasets/a/big.bin"), content);
  DirExportSource src(dir.path());
  ServerFixture f(&src);

  int fd = Dial(f.server->port());
  syncproto::PullerSession s(kKey, {"00000000-0000-4000-8000-0000000000bb", "puller"});
  REQUIRE(s.Start().ok());
  std::optional<Result<syncproto::ManifestAnswer>> answer;
  REQUIRE(s.RequestManifest(0, "", {}, [&](Result<syncproto::ManifestAnswer> a) {
             answer = std::move(a);
           }).ok());
  REQUIRE(Drive(fd, s, [&] { return answer.has_value(); }));
  REQUIRE(answer->ok());
  CHECK(s.peer().name == "server");
  const auto& files = (*answer)->manifest.files;
  auto it = std::find_if(files.begin(), files.end(), [](const syncproto::FileEntry& e) {
    return e.path == "datasets/a/big.bin";
  });
  REQUIRE(it != files.end());

  syncproto::FileRequest req;
  req.path = it->path;
  req.expected = *it;
  auto out = Env::Default()->OpenWrite(dir.Sub("got.bin"));
  REQUIRE(out.ok());
  req.out = out->get();
  std::optional<Status> file_status;
  REQUIRE(s.RequestFile(std::move(req), [&](const Status& st, const syncproto::FileTransferStats&) {
             file_status = st;
           }).ok());
  REQUIRE(Drive(fd, s, [&] { return file_status.has_value(); }));
  CHECK(file_status->ok());
  CHECK(syncproto::testing::ReadFile(dir.Sub("got.bin")) == content);
  s.Finish();
  Drive(fd, s, [&] { return s.done(); });
  ::close(fd);
  CHECK(f.Stats().accepted == 1);
}

TEST_CASE("a puller with the wrong cluster key is refused and counted") {
  TempDir dir;
  WriteFile(dir.Sub("vms/a.json"), "{}");
  DirExportSource src(dir.path());
  ServerFixture f(&src);
  int fd = Dial(f.server->port());
  syncproto::PullerSession s("another-cluster-key-entirely!!",
                             {"00000000-0000-4000-8000-0000000000bb", "intruder"});
  REQUIRE(s.Start().ok());
  std::optional<Result<syncproto::ManifestAnswer>> answer;
  REQUIRE(s.RequestManifest(0, "", {}, [&](Result<syncproto::ManifestAnswer> a) {
             answer = std::move(a);
           }).ok());
  Drive(fd, s, [&] { return !s.status().ok(); });
  ::close(fd);
  CHECK_FALSE(s.status().ok());
  CHECK_FALSE(s.authenticated());
  CHECK(src.views_opened == 0);  // nothing of the export was touched
}

TEST_CASE("a peer that never speaks is dropped after the handshake timeout") {
  TempDir dir;
  DirExportSource src(dir.path());
  ServerFixture f(&src, /*handshake_ms=*/200);
  int fd = Dial(f.server->port());
  pollfd p{fd, POLLIN, 0};
  REQUIRE(::poll(&p, 1, 5'000) == 1);  // the server closes: readable EOF
  uint8_t b;
  CHECK(::recv(fd, &b, 1, 0) == 0);
  ::close(fd);
}

}  // namespace
}  // namespace lifeboat::agent
