// HELD_QUERY / HELD_MANIFEST_REQUEST through a puller and a server session.
#include <catch2/catch.hpp>

#include "syncproto/frame.h"
#include "syncproto/session.h"
#include "tests/unit/syncproto/test_util.h"

namespace lifeboat::syncproto {
namespace {

using testing::DirExportSource;
using testing::kKey;
using testing::PullerId;
using testing::ReadFile;
using testing::RunPipe;
using testing::ServerId;
using testing::TempDir;
using testing::WriteFile;

// Holds "headnode2" at generation 9 (served from `held_root`) and "headnode3"
// at generation 4 (no data).
class FakeHeld : public HeldSource {
 public:
  explicit FakeHeld(std::string held_root) : held_src(std::move(held_root)) {
    held_src.generation = 9;
    held_src.boot_id = "boot-h2";
  }
  Result<std::vector<HeldPeer>> Held(const std::string& peer) override {
    queries.push_back(peer);
    std::vector<HeldPeer> all = {{"headnode2", "uuid-2", 9, "boot-h2", 1000},
                                 {"headnode3", "uuid-3", 4, "boot-h3", 2000}};
    std::vector<HeldPeer> out;
    for (const HeldPeer& p : all) {
      if (peer.empty() || p.peer == peer) out.push_back(p);
    }
    return out;
  }
  Result<std::unique_ptr<ExportView>> OpenHeldView(const std::string& peer) override {
    if (peer != "headnode2") return NotFoundError("nothing held of " + peer);
    return held_src.OpenView();
  }
  DirExportSource held_src;
  std::vector<std::string> queries;
};

struct Fixture {
  TempDir tmp;
  TempDir own_root, held_root;
  DirExportSource own{own_root.path()};
  FakeHeld held{held_root.path()};
};

TEST_CASE("HELD_QUERY returns what the server holds, filtered by peer") {
  Fixture fx;
  ServerOptions so;
  so.held = &fx.held;
  ServerSession server(&fx.own, kKey, ServerId(), so);
  PullerSession puller(kKey, PullerId());
  REQUIRE(puller.Start().ok());
  std::optional<Result<HeldAnswerMsg>> all, one, unknown;
  REQUIRE(puller.RequestHeld("", [&](Result<HeldAnswerMsg> a) { all = std::move(a); }).ok());
  REQUIRE(
      puller.RequestHeld("headnode3", [&](Result<HeldAnswerMsg> a) { one = std::move(a); }).ok());
  REQUIRE(
      puller.RequestHeld("nobody", [&](Result<HeldAnswerMsg> a) { unknown = std::move(a); }).ok());
  puller.Finish();
  RunPipe(puller, server);
  REQUIRE(all);
  REQUIRE(all->ok());
  REQUIRE((*all)->peers.size() == 2);
  CHECK((*all)->peers[0] == HeldPeer{"headnode2", "uuid-2", 9, "boot-h2", 1000});
  REQUIRE(one);
  REQUIRE(one->ok());
  REQUIRE((*one)->peers.size() == 1);
  CHECK((*one)->peers[0].generation == 4);
  REQUIRE(unknown);
  REQUIRE(unknown->ok());
  CHECK((*unknown)->peers.empty());
  CHECK(fx.held.queries == std::vector<std::string>{"", "headnode3", "nobody"});
  CHECK(server.stats().held_queries == 3);
  CHECK(fx.own.views_opened == 0);  // a query opens no export view
}

TEST_CASE("a server without a HeldSource answers HELD_QUERY with no peers") {
  Fixture fx;
  ServerSession server(&fx.own, kKey, ServerId());
  PullerSession puller(kKey, PullerId());
  REQUIRE(puller.Start().ok());
  std::optional<Result<HeldAnswerMsg>> got;
  REQUIRE(
      puller.RequestHeld("headnode2", [&](Result<HeldAnswerMsg> a) { got = std::move(a); }).ok());
  puller.Finish();
  RunPipe(puller, server);
  REQUIRE(got);
  REQUIRE(got->ok());
  CHECK((*got)->peers.empty());
}

TEST_CASE("HELD_MANIFEST_REQUEST serves the held copy, and files come from it") {
  Fixture fx;
  WriteFile(fx.own_root.Sub("vms/own.json"), "own");
  WriteFile(fx.held_root.Sub("vms/h2.json"), "held-by-server");
  ServerOptions so;
  so.held = &fx.held;
  ServerSession server(&fx.own, kKey, ServerId(), so);
  PullerSession puller(kKey, PullerId());
  REQUIRE(puller.Start().ok());
  std::optional<ManifestAnswer> answer;
  Status missing = InternalError("not called");
  REQUIRE(puller
              .RequestHeldManifest("headnode2", 0, "", {},
                                   [&](Result<ManifestAnswer> a) {
                                     REQUIRE(a.ok());
                                     answer = *a;
                                   })
              .ok());
  RunPipe(puller, server);
  REQUIRE(answer);
  CHECK(answer->manifest.generation == 9);
  CHECK(answer->manifest.boot_id == "boot-h2");
  REQUIRE(answer->manifest.files.size() == 1);
  CHECK(answer->manifest.files[0].path == "vms/h2.json");
  FileRequest r;
  r.path = "vms/h2.json";
  r.expected = answer->manifest.files[0];
  auto r_out = *Env::Default()->OpenWrite(fx.tmp.Sub("o"));
  r.out = r_out.get();
  Status st = InternalError("not called");
  REQUIRE(puller.RequestFile(std::move(r), [&](const Status& s, auto&) { st = s; }).ok());
  puller.Finish();
  RunPipe(puller, server);
  CHECK(st.ok());
  CHECK(ReadFile(fx.tmp.Sub("o")) == "held-by-server");
  CHECK(fx.own.views_opened == 0);
}

TEST_CASE("HELD_MANIFEST_REQUEST for a peer not held is NOT_FOUND on its stream") {
  Fixture fx;
  ServerOptions so;
  so.held = &fx.held;
  ServerSession server(&fx.own, kKey, ServerId(), so);
  PullerSession puller(kKey, PullerId());
  REQUIRE(puller.Start().ok());
  Status got = InternalError("not called");
  REQUIRE(puller
              .RequestHeldManifest("headnode9", 0, "", {},
                                   [&](Result<ManifestAnswer> a) { got = a.status(); })
              .ok());
  puller.Finish();
  RunPipe(puller, server);
  CHECK(got.code() == Code::kNotFound);
  CHECK_THAT(got.message(), Catch::Contains("headnode9"));
}

}  // namespace
}  // namespace lifeboat::syncproto
