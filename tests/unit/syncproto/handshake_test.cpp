#include "syncproto/handshake.h"

#include <catch2/catch.hpp>

#include "syncproto/session.h"
#include "tests/unit/syncproto/test_util.h"

namespace lifeboat::syncproto {
namespace {

using testing::DirExportSource;
using testing::kKey;
using testing::PipeResult;
using testing::PullerId;
using testing::RunPipe;
using testing::ServerId;
using testing::TempDir;
using testing::WriteFile;

struct Setup {
  TempDir root;
  DirExportSource src{root.path()};
  Setup() { WriteFile(root.Sub("vms/u1.json"), "{\"secret\": true}"); }
};

TEST_CASE("the right key authenticates both sides and requests flow") {
  Setup s;
  ServerSession server(&s.src, kKey, ServerId());
  PullerSession puller(kKey, PullerId());
  REQUIRE(puller.Start().ok());
  bool got = false;
  REQUIRE(puller.RequestManifest(0, "", {}, [&](Result<ManifestAnswer> a) { got = a.ok(); }).ok());
  PipeResult p = RunPipe(puller, server);
  CHECK(p.puller.ok());
  CHECK(p.server.ok());
  CHECK(puller.authenticated());
  CHECK(server.authenticated());
  CHECK(puller.peer().name == "headnode1");
  CHECK(server.peer().uuid == PullerId().uuid);
  CHECK(got);
}

TEST_CASE("a wrong key is refused on both sides with a clear error") {
  Setup s;
  ServerSession server(&s.src, kKey, ServerId());
  PullerSession puller("another-cluster-key-entirely", PullerId());
  REQUIRE(puller.Start().ok());
  Status manifest = InternalError("not called");
  REQUIRE(
      puller.RequestManifest(0, "", {}, [&](Result<ManifestAnswer> a) { manifest = a.status(); })
          .ok());
  PipeResult p = RunPipe(puller, server);
  CHECK(p.server.code() == Code::kPermission);
  CHECK_THAT(p.server.message(), Catch::Contains("does not know this cluster's key"));
  CHECK_THAT(p.server.message(), Catch::Contains("headnode0"));
  CHECK(p.puller.code() == Code::kPermission);
  CHECK_THAT(p.puller.message(), Catch::Contains("AUTH_FAILED"));
  CHECK(manifest.code() == Code::kPermission);  // the pending request learns why
  CHECK_FALSE(server.authenticated());
  CHECK(s.src.views_opened == 0);  // nothing was served
  CHECK(server.done());
  CHECK(puller.done());
}

TEST_CASE("a server that does not know the key is refused by the puller") {
  // Drive a puller handshake against a fake server that answers with a proof
  // made from the wrong key.
  Handshake::Options o;
  Handshake puller(Role::kPuller, kKey, PullerId(), o);
  Handshake server(Role::kServer, "wrong-key-of-sufficient-length", ServerId(), o);
  std::vector<uint8_t> p2s, s2p;
  REQUIRE(puller.Start(&p2s).ok());
  FrameDecoder sd, pd;
  sd.Append(p2s);
  auto hello = sd.Next();
  REQUIRE(server.OnFrame(*hello.value(), &s2p).ok());
  pd.Append(s2p);
  std::vector<uint8_t> auth;
  REQUIRE(puller.OnFrame(*pd.Next().value(), &auth).ok());
  // The honest server would refuse this proof; the fake one replies with its own.
  Frame fake;
  fake.type = FrameType::kAuth;
  Proof bogus = ServerProof("wrong-key-of-sufficient-length", std::array<uint8_t, 32>{}, Proof{});
  fake.payload = EncodePayload(AuthMsg{bogus});
  std::vector<uint8_t> reply;
  Status st = puller.OnFrame(fake, &reply);
  CHECK(st.code() == Code::kPermission);
  CHECK_THAT(st.message(), Catch::Contains("server headnode1"));
  CHECK_FALSE(puller.authenticated());
  // The puller tells the server why.
  FrameDecoder rd;
  rd.Append(reply);
  auto err = rd.Next();
  REQUIRE(err.ok());
  REQUIRE(err->has_value());
  CHECK((*err)->type == FrameType::kError);
}

TEST_CASE("a replayed puller transcript is refused") {
  Setup s;
  std::vector<uint8_t> recorded;
  {
    ServerSession server(&s.src, kKey, ServerId());
    PullerSession puller(kKey, PullerId());
    REQUIRE(puller.Start().ok());
    REQUIRE(puller.RequestManifest(0, "", {}, [](Result<ManifestAnswer>) {}).ok());
    puller.Finish();
    PipeResult p = RunPipe(puller, server, 1u << 20, &recorded);
    REQUIRE(p.server.ok());
  }
  // An attacker replays every byte the honest puller sent to a new server.
  int views_before = s.src.views_opened;
  ServerSession server(&s.src, kKey, ServerId());
  Status st = server.Feed(recorded);
  CHECK(st.code() == Code::kPermission);
  CHECK_THAT(st.message(), Catch::Contains("does not know this cluster's key"));
  CHECK(s.src.views_opened == views_before);
  // What the server sent back holds its HELLO and an ERROR, no manifest.
  auto out = server.output();
  FrameDecoder d;
  d.Append(out);
  std::vector<FrameType> types;
  for (;;) {
    auto f = d.Next();
    REQUIRE(f.ok());
    if (!f->has_value()) break;
    types.push_back((*f)->type);
  }
  CHECK(types == std::vector<FrameType>{FrameType::kHello, FrameType::kError});
}

TEST_CASE("a peer that skips authentication gets nothing") {
  Setup s;
  ServerSession server(&s.src, kKey, ServerId());
  std::vector<uint8_t> bytes;
  AppendFrame(&bytes, FrameType::kManifestRequest, 0, 1, EncodePayload(ManifestRequestMsg{}));
  Status st = server.Feed(bytes);
  CHECK(st.code() == Code::kPermission);
  CHECK_THAT(st.message(), Catch::Contains("before authentication"));
  CHECK(s.src.views_opened == 0);
  FrameDecoder d;
  d.Append(server.output());
  auto f = d.Next();
  REQUIRE(f.ok());
  REQUIRE(f->has_value());
  CHECK((*f)->type == FrameType::kError);
  ErrorMsg e;
  REQUIRE(DecodePayload((*f)->payload, &e).ok());
  CHECK(e.code == ErrorCode::kNotAuthenticated);
  auto more = d.Next();
  CHECK((more.ok() && !more->has_value()));
  CHECK(server.done() == false);  // the ERROR is still to be written
  server.ConsumeOutput(server.output().size());
  CHECK(server.done());

  // Also after a valid HELLO but before AUTH.
  ServerSession server2(&s.src, kKey, ServerId());
  Handshake h(Role::kPuller, kKey, PullerId());
  std::vector<uint8_t> hello;
  REQUIRE(h.Start(&hello).ok());
  AppendFrame(&hello, FrameType::kFileRequest, 0, 1,
              EncodePayload(FileRequestMsg{.path = "vms/u1.json"}));
  CHECK(server2.Feed(hello).code() == Code::kPermission);
  CHECK(s.src.views_opened == 0);
}

TEST_CASE("version mismatch is refused with both ranges named") {
  Setup s;
  ServerSession server(&s.src, kKey, ServerId());
  PullerOptions po;
  po.handshake.min_version = kMaxProtocolVersion + 1;
  po.handshake.max_version = kMaxProtocolVersion + 2;
  PullerSession puller(kKey, PullerId(), po);
  REQUIRE(puller.Start().ok());
  PipeResult p = RunPipe(puller, server);
  CHECK(p.server.code() == Code::kData);
  const std::string ours =
      std::to_string(kMinProtocolVersion) + ".." + std::to_string(kMaxProtocolVersion);
  const std::string theirs =
      std::to_string(kMaxProtocolVersion + 1) + ".." + std::to_string(kMaxProtocolVersion + 2);
  CHECK_THAT(p.server.message(), Catch::Contains(theirs) && Catch::Contains(ours));
  CHECK_THAT(p.puller.message(), Catch::Contains("VERSION"));
}

TEST_CASE("short cluster keys are rejected") {
  CHECK(ValidateClusterKey("short").code() == Code::kConfig);
  PullerSession puller("short", PullerId());
  CHECK(puller.Start().code() == Code::kConfig);
}

TEST_CASE("proofs depend on the key, the direction and the transcript") {
  std::array<uint8_t, 32> t1{}, t2{};
  t2[0] = 1;
  Proof a = PullerProof(kKey, t1);
  CHECK(ProofsEqual(a, PullerProof(kKey, t1)));
  CHECK_FALSE(ProofsEqual(a, PullerProof(kKey, t2)));
  CHECK_FALSE(ProofsEqual(a, PullerProof("another-key-of-16+bytes", t1)));
  CHECK_FALSE(ProofsEqual(a, ServerProof(kKey, t1, Proof{})));
}

}  // namespace
}  // namespace lifeboat::syncproto
