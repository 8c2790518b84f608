#include "syncproto/delta.h"

#include <zstd.h>
#include <catch2/catch.hpp>

#include "syncproto/handshake.h"
#include "syncproto/session.h"
#include "tests/unit/syncproto/test_util.h"

namespace lifeboat::syncproto {
namespace {

using testing::kKey;
using testing::RandomBytes;
using testing::ReadFile;
using testing::TempDir;
using testing::WriteFile;

std::unique_ptr<ReadableFile> Open(const std::string& p) { return *Env::Default()->OpenRead(p); }

TEST_CASE("plain signature / delta / patch functions reproduce the new file") {
  std::mt19937_64 rng(1);
  TempDir t;
  std::string old = RandomBytes(rng, 3u << 20);
  std::string neu =
      old.substr(0, 1000000) + "a change" + old.substr(1000100) + RandomBytes(rng, 5000);
  WriteFile(t.Sub("old"), old);
  WriteFile(t.Sub("new"), neu);
  auto sig = ComputeSignature(*Open(t.Sub("old")));
  REQUIRE(sig.ok());
  auto params = *SignatureParamsFor(old.size());
  CHECK(params.magic == 0x72730147u);  // RabinKarp + BLAKE2
  CHECK(params.strong_len < 32);       // minimal strong sum, not the full BLAKE2
  CHECK(sig->size() ==
        12 + CoarseBlockCount(old.size(), params.block_len) * (4 + params.strong_len));
  {
    auto out = *Env::Default()->OpenWrite(t.Sub("delta"));
    REQUIRE(ComputeDelta(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(sig->data()),
                                                  sig->size()),
                         *Open(t.Sub("new")), *out)
                .ok());
    REQUIRE(out->Close().ok());
  }
  CHECK(ReadFile(t.Sub("delta")).size() < 100000);
  auto out = *Env::Default()->OpenWrite(t.Sub("patched"));
  auto digest = ApplyDelta(*Open(t.Sub("old")), *Open(t.Sub("delta")), *out);
  REQUIRE(digest.ok());
  REQUIRE(out->Close().ok());
  CHECK(*digest == Xxh3Digest(neu));
  CHECK(ReadFile(t.Sub("patched")) == neu);
}

TEST_CASE("coarse plan finds same-offset blocks and the summary matches") {
  std::mt19937_64 rng(2);
  TempDir t;
  std::string old = RandomBytes(rng, 1u << 20);
  std::string neu = old;
  neu[300000] ^= 1;
  neu += "tail";
  WriteFile(t.Sub("old"), old);
  WriteFile(t.Sub("new"), neu);
  auto sum = SummarizeBasis(*Open(t.Sub("old")), true);
  REQUIRE(sum.ok());
  CHECK(sum->digest == Xxh3Digest(old));
  CHECK(sum->coarse.block_size == 4096);
  CHECK(sum->coarse.hashes.size() == 256);
  CHECK(sum->signature == *ComputeSignature(*Open(t.Sub("old"))));
  auto plan = PlanCoarse(*Open(t.Sub("new")), neu.size(), sum->coarse);
  REQUIRE(plan.ok());
  CHECK(plan->digest == Xxh3Digest(neu));
  CHECK(plan->unmatched_bytes == 4096 + 4);
  REQUIRE(plan->regions.size() == 4);
  CHECK(plan->regions[1].offset == 299008);
  CHECK_FALSE(plan->regions[1].matched);
  CHECK_FALSE(WantsSignature(*plan));
}

TEST_CASE("bad signatures are refused with a specific error") {
  CHECK_THAT(LoadedSignature::Load(std::vector<uint8_t>{1, 2, 3}).status().message(),
             Catch::Contains("bad signature"));
  // MD4 magic: refused (only RabinKarp + BLAKE2 is accepted).
  std::vector<uint8_t> md4{0x72, 0x73, 0x01, 0x36, 0, 0, 8, 0, 0, 0, 0, 8};
  CHECK_THAT(LoadedSignature::Load(md4).status().message(), Catch::Contains("magic"));
  std::vector<uint8_t> huge{0x72, 0x73, 0x01, 0x47, 0x7f, 0, 0, 0, 0, 0, 0, 8};
  CHECK_THAT(LoadedSignature::Load(huge).status().message(), Catch::Contains("out of range"));
  std::vector<uint8_t> partial{0x72, 0x73, 0x01, 0x47, 0, 0, 8, 0, 0, 0, 0, 8, 1, 2, 3};
  CHECK_THAT(LoadedSignature::Load(partial).status().message(), Catch::Contains("whole number"));
  std::vector<uint8_t> ok{0x72, 0x73, 0x01, 0x47, 0, 0, 8, 0, 0, 0, 0, 8};
  CHECK(LoadedSignature::Load(ok).ok());
}

TEST_CASE("bad deltas are refused with a specific error") {
  TempDir t;
  WriteFile(t.Sub("basis"), "0123456789");
  auto basis = Open(t.Sub("basis"));
  std::string got;
  auto sink = [&](std::span<const uint8_t> d) {
    got.append(d.begin(), d.end());
    return Status::Ok();
  };
  SECTION("garbage") {
    auto job = *PatchJob::Start(basis.get(), sink);
    Status s = job->Feed(std::vector<uint8_t>{'n', 'o', 'p', 'e', 1, 2});
    if (s.ok()) s = job->Finish();
    CHECK_THAT(s.message(), Catch::Contains("bad delta"));
  }
  SECTION("copy beyond the basis") {
    std::vector<uint8_t> d;
    AppendDeltaMagic(&d);
    AppendCopyCommand(100, 5, &d);
    AppendEndCommand(&d);
    auto job = *PatchJob::Start(basis.get(), sink);
    Status s = job->Feed(d);
    if (s.ok()) s = job->Finish();
    CHECK_THAT(s.message(), Catch::Contains("beyond the end of the basis"));
  }
  SECTION("truncated") {
    std::vector<uint8_t> d;
    AppendDeltaMagic(&d);
    AppendLiteralHeader(100, &d);
    d.push_back('x');
    auto job = *PatchJob::Start(basis.get(), sink);
    Status s = job->Feed(d);
    if (s.ok()) s = job->Finish();
    CHECK(s.code() == Code::kData);
  }
  SECTION("hand-written commands work") {
    std::vector<uint8_t> d;
    AppendDeltaMagic(&d);
    AppendCopyCommand(2, 3, &d);
    AppendLiteralHeader(2, &d);
    d.push_back('a');
    d.push_back('b');
    AppendEndCommand(&d);
    auto job = *PatchJob::Start(basis.get(), sink);
    REQUIRE(job->Feed(d).ok());
    REQUIRE(job->Finish().ok());
    CHECK(got == "234ab");
  }
}

// A scripted server: authenticates with a real Handshake, then lets the test
// answer the puller's requests with hand-made frames.
struct Scripted {
  PullerSession puller{kKey, testing::PullerId()};
  Handshake server{Role::kServer, kKey, testing::ServerId()};
  FrameDecoder from_puller;
  std::vector<Frame> requests;

  void Exchange() {
    for (int i = 0; i < 10; ++i) {
      auto out = puller.output();
      std::vector<uint8_t> bytes(out.begin(), out.end());
      puller.ConsumeOutput(bytes.size());
      from_puller.Append(bytes);
      std::vector<uint8_t> reply;
      for (;;) {
        auto f = from_puller.Next();
        REQUIRE(f.ok());
        if (!f->has_value()) break;
        if (!server.authenticated()) {
          REQUIRE(server.OnFrame(**f, &reply).ok());
        } else {
          requests.push_back(std::move(**f));
        }
      }
      if (!reply.empty()) REQUIRE(puller.Feed(reply).ok());
    }
  }
  Status Send(FrameType t, uint8_t flags, uint32_t stream, std::vector<uint8_t> payload) {
    std::vector<uint8_t> b;
    AppendFrame(&b, t, flags, stream, payload);
    return puller.Feed(b);
  }
};

TEST_CASE("malformed server answers fail the file with a specific, located error") {
  TempDir t;
  std::string content = "hello world";
  Scripted sc;
  REQUIRE(sc.puller.Start().ok());
  Status result = InternalError("not called");
  FileRequest req;
  req.path = "vms/u1.json";
  req.expected = testing::EntryFor(req.path, content);
  auto req_out = *Env::Default()->OpenWrite(t.Sub("out"));
  req.out = req_out.get();
  auto id = sc.puller.RequestFile(std::move(req), [&](const Status& s, auto&) { result = s; });
  REQUIRE(id.ok());
  sc.Exchange();
  REQUIRE(sc.server.authenticated());
  REQUIRE(sc.requests.size() == 1);
  CHECK(sc.requests[0].type == FrameType::kFileRequest);
  REQUIRE(sc.Send(FrameType::kFileStart, 0, *id,
                  EncodePayload(FileStartMsg{TransferMethod::kWhole, content.size()}))
              .ok());

  SECTION("bad zstd") {
    REQUIRE(
        sc.Send(FrameType::kFileData, kFlagCompressed, *id, {0x28, 0xb5, 0x2f, 0xfd, 1, 2}).ok());
    CHECK(result.code() == Code::kData);
    CHECK_THAT(result.message(), Catch::Contains("bad zstd") && Catch::Contains("vms/u1.json") &&
                                     Catch::Contains("stream 1"));
  }
  SECTION("decompression bomb") {
    std::vector<uint8_t> zeros(4u << 20, 0);
    std::vector<uint8_t> z(ZSTD_compressBound(zeros.size()));
    z.resize(ZSTD_compress(z.data(), z.size(), zeros.data(), zeros.size(), 1));
    REQUIRE(sc.Send(FrameType::kFileData, kFlagCompressed, *id, z).ok());
    CHECK_THAT(result.message(), Catch::Contains("bad zstd") && Catch::Contains("limit"));
  }
  SECTION("more data than announced") {
    REQUIRE(sc.Send(FrameType::kFileData, 0, *id, std::vector<uint8_t>(100, 'x')).ok());
    CHECK_THAT(result.message(), Catch::Contains("more than the announced"));
  }
  SECTION("digest mismatch") {
    REQUIRE(sc.Send(FrameType::kFileData, 0, *id, std::vector<uint8_t>(content.size(), 'x')).ok());
    REQUIRE(sc.Send(FrameType::kFileEnd, 0, *id,
                    EncodePayload(FileEndMsg{content.size(), Xxh3Digest(content)}))
                .ok());
    CHECK(result.code() == Code::kData);
    CHECK_THAT(result.message(),
               Catch::Contains("digest mismatch") && Catch::Contains("vms/u1.json"));
  }
  SECTION("a correct answer passes") {
    REQUIRE(
        sc.Send(FrameType::kFileData, 0, *id, std::vector<uint8_t>(content.begin(), content.end()))
            .ok());
    REQUIRE(sc.Send(FrameType::kFileEnd, 0, *id,
                    EncodePayload(FileEndMsg{content.size(), Xxh3Digest(content)}))
                .ok());
    CHECK(result.ok());
    CHECK(ReadFile(t.Sub("out")) == content);
  }
  SECTION("frames for a stream never opened fail the connection") {
    Status s = sc.Send(FrameType::kFileEnd, 0, 99, EncodePayload(FileEndMsg{}));
    CHECK(s.code() == Code::kData);
    CHECK_THAT(s.message(), Catch::Contains("unknown stream 99"));
    CHECK(result.code() == Code::kData);  // pending requests learn the connection died
  }
}

TEST_CASE("a bad signature from the puller fails that stream on the server") {
  std::mt19937_64 rng(3);
  TempDir root;
  testing::DirExportSource src(root.path());
  std::string data = RandomBytes(rng, 4u << 20);
  WriteFile(root.Sub("datasets/u/f"), data);
  ServerSession server(&src, kKey, testing::ServerId());
  Handshake h(Role::kPuller, kKey, testing::PullerId());
  std::vector<uint8_t> out;
  REQUIRE(h.Start(&out).ok());
  REQUIRE(server.Feed(out).ok());
  FrameDecoder d;
  auto pump = [&](std::vector<uint8_t>* reply) {
    d.Append(server.output());
    server.ConsumeOutput(server.output().size());
    std::vector<Frame> frames;
    for (;;) {
      auto f = d.Next();
      REQUIRE(f.ok());
      if (!f->has_value()) break;
      if (!h.authenticated() && reply) {
        REQUIRE(h.OnFrame(**f, reply).ok());
      } else {
        frames.push_back(std::move(**f));
      }
    }
    return frames;
  };
  std::vector<uint8_t> auth;
  pump(&auth);
  REQUIRE(server.Feed(auth).ok());
  pump(&auth);
  REQUIRE(h.authenticated());
  // Request with a basis whose hashes match nothing: the server asks for the signature.
  FileRequestMsg req{"datasets/u/f",
                     data.size(),
                     Xxh3Digest(data),
                     true,
                     data.size(),
                     4096,
                     static_cast<uint32_t>(CoarseBlockCount(data.size(), 4096))};
  std::vector<uint8_t> bytes;
  AppendFrame(&bytes, FrameType::kFileRequest, 0, 1, EncodePayload(req));
  AppendFrame(&bytes, FrameType::kFileBasis, kFlagEnd, 1,
              std::vector<uint8_t>(size_t{req.block_count} * 8, 0));
  REQUIRE(server.Feed(bytes).ok());
  auto frames = pump(nullptr);
  REQUIRE(frames.size() == 1);
  CHECK(frames[0].type == FrameType::kSignatureNeeded);
  bytes.clear();
  AppendFrame(&bytes, FrameType::kSignatureData, kFlagEnd, 1,
              std::vector<uint8_t>{0x72, 0x73, 0x01, 0x36, 9, 9});
  REQUIRE(server.Feed(bytes).ok());  // the connection survives
  frames = pump(nullptr);
  REQUIRE(frames.size() == 1);
  CHECK(frames[0].type == FrameType::kError);
  ErrorMsg e;
  REQUIRE(DecodePayload(frames[0].payload, &e).ok());
  CHECK(e.code == ErrorCode::kProtocol);
  CHECK_THAT(e.message, Catch::Contains("bad signature") && Catch::Contains("datasets/u/f"));
}

}  // namespace
}  // namespace lifeboat::syncproto
