#include "syncproto/frame.h"

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <iterator>

#include "base/env.h"
#include "syncproto/handshake.h"
#include "syncproto/manifest_codec.h"

namespace lifeboat::syncproto {
namespace {

std::vector<uint8_t> Bytes(std::string_view s) { return {s.begin(), s.end()}; }

Digest128 D(uint8_t seed) {
  Digest128 d;
  for (int i = 0; i < 16; ++i) d.bytes[i] = static_cast<uint8_t>(seed + i);
  return d;
}

ManifestAnswer SampleAnswer() {
  ManifestAnswer a;
  a.kind = ManifestAnswer::Kind::kDelta;
  a.since_generation = 41;
  Manifest& m = a.manifest;
  m.node_uuid = "564dd1ac-164d-cc50-247c-b2eb0cf21ce5";
  m.node_name = "headnode1";
  m.generation = 42;
  m.boot_id = "b0b0";
  m.instances = {{"0b3e0e8a-0000-0000-0000-000000000001", "imgapi0", "imgapi",
                  "c1a1e0e8-0000-0000-0000-00000000000a",
                  {{"datasets/0b3e0e8a-0000-0000-0000-000000000001/fifo",
                    "not a regular file, directory or symlink"}}}};
  m.images = {{"c1a1e0e8-0000-0000-0000-00000000000a", ""}};
  FileEntry dir{"datasets/0b3e0e8a-0000-0000-0000-000000000001",
                EntryKind::kDir,
                0,
                0755,
                1700000000000000000,
                {},
                ""};
  FileEntry file{"datasets/0b3e0e8a-0000-0000-0000-000000000001/a.txt",
                 EntryKind::kFile,
                 5,
                 0644,
                 1700000000123456789,
                 D(1),
                 ""};
  for (uint8_t& b : file.sha256.bytes) b = 0xa5;
  FileEntry link{"datasets/0b3e0e8a-0000-0000-0000-000000000001/l",
                 EntryKind::kSymlink,
                 0,
                 0777,
                 -5,
                 D(2),
                 "a.txt"};
  m.files = {dir, file, link};
  a.removed = {"vms/0b3e0e8a-0000-0000-0000-000000000009.json"};
  return a;
}

// One frame of every type, with fixed content.
std::vector<std::pair<std::string, Frame>> GoldenFrames() {
  std::vector<std::pair<std::string, Frame>> v;
  auto add = [&](std::string name, FrameType t, uint8_t flags, uint32_t stream,
                 std::vector<uint8_t> payload) {
    v.push_back({std::move(name), Frame{t, flags, stream, std::move(payload)}});
  };
  HelloMsg hello;
  hello.role = Role::kPuller;
  hello.node_uuid = "11111111-2222-3333-4444-555555555555";
  hello.node_name = "headnode0";
  for (int i = 0; i < 32; ++i) hello.nonce[i] = static_cast<uint8_t>(i);
  add("hello", FrameType::kHello, 0, 0, EncodePayload(hello));
  AuthMsg auth;
  for (int i = 0; i < 32; ++i) auth.proof[i] = static_cast<uint8_t>(0xa0 + i);
  add("auth", FrameType::kAuth, 0, 0, EncodePayload(auth));
  add("error", FrameType::kError, 0, 3,
      EncodePayload(ErrorMsg{ErrorCode::kChanged, true, "vms/x.json changed"}));
  add("bye", FrameType::kBye, 0, 0, {});
  add("manifest_request", FrameType::kManifestRequest, 0, 1,
      EncodePayload(ManifestRequestMsg{41, "b0b0", {"imgapi", "sapi"}}));
  add("manifest_data", FrameType::kManifestData, kFlagEnd, 1,
      *CompressManifest(EncodeManifestAnswer(SampleAnswer())));
  FileRequestMsg req;
  req.path = "datasets/0b3e0e8a-0000-0000-0000-000000000001/a.txt";
  req.expected_size = 300000;
  req.expected_digest = D(3);
  req.has_basis = true;
  req.basis_size = 290000;
  req.block_size = 4096;
  req.block_count = 71;
  add("file_request", FrameType::kFileRequest, 0, 2, EncodePayload(req));
  add("file_basis", FrameType::kFileBasis, kFlagEnd, 2,
      {1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0});
  add("signature_needed", FrameType::kSignatureNeeded, 0, 2, {});
  add("signature_data", FrameType::kSignatureData, kFlagEnd, 2,
      {0x72, 0x73, 0x01, 0x47, 0, 0, 0x08, 0, 0, 0, 0, 8});
  add("file_start", FrameType::kFileStart, 0, 2,
      EncodePayload(FileStartMsg{TransferMethod::kDelta, 300000}));
  add("file_data", FrameType::kFileData, 0, 2, Bytes("rs\x02\x36"));
  add("file_end", FrameType::kFileEnd, 0, 2, EncodePayload(FileEndMsg{300000, D(3)}));
  add("cancel", FrameType::kCancel, 0, 2, {});
  add("held_manifest_request", FrameType::kHeldManifestRequest, 0, 4,
      EncodePayload(HeldManifestRequestMsg{ManifestRequestMsg{7, "b1b1", {}}, "headnode1"}));
  add("held_query", FrameType::kHeldQuery, 0, 5, EncodePayload(HeldQueryMsg{"headnode1"}));
  add("held_answer", FrameType::kHeldAnswer, 0, 5,
      EncodePayload(HeldAnswerMsg{
          {HeldPeer{"headnode1", "22222222-3333-4444-5555-666666666666", 42, "b1b1", 1700000000123},
           HeldPeer{"headnode2", "", 0, "", 0}}}));
  return v;
}

std::string GoldenPath(const std::string& name) {
  return std::string(LIFEBOAT_TEST_DATA_DIR) + "/syncproto/" + name + ".bin";
}

TEST_CASE("golden frame vectors: every frame type encodes to the recorded bytes") {
  bool regen = std::getenv("LIFEBOAT_REGEN_GOLDEN") != nullptr;
  auto frames = GoldenFrames();
  REQUIRE(frames.size() == 17);  // one per frame type
  for (auto& [name, frame] : frames) {
    INFO(name);
    std::vector<uint8_t> enc = EncodeFrame(frame);
    if (regen) {
      REQUIRE(
          WriteStringToFile(*Env::Default(), GoldenPath(name), std::string(enc.begin(), enc.end()))
              .ok());
    }
    Result<std::string> golden = ReadFileToString(*Env::Default(), GoldenPath(name));
    REQUIRE(golden.ok());
    CHECK(std::vector<uint8_t>(golden->begin(), golden->end()) == enc);
    // And it decodes back to the same frame.
    FrameDecoder d;
    d.Append(std::vector<uint8_t>(golden->begin(), golden->end()));
    auto f = d.Next();
    REQUIRE(f.ok());
    REQUIRE(f->has_value());
    CHECK((*f)->type == frame.type);
    CHECK((*f)->flags == frame.flags);
    CHECK((*f)->stream == frame.stream);
    CHECK((*f)->payload == frame.payload);
  }
}

TEST_CASE("the header layout is the documented one") {
  std::vector<uint8_t> out;
  AppendFrame(&out, FrameType::kFileData, kFlagCompressed, 0x01020304, Bytes("ab"));
  CHECK(out == std::vector<uint8_t>{2, 0, 0, 0, 0x25, 0x02, 4, 3, 2, 1, 'a', 'b'});
}

TEST_CASE("payload round trips") {
  HelloMsg h{1, 3, Role::kServer, "uuid", "name", {}};
  h.nonce[5] = 9;
  HelloMsg h2;
  REQUIRE(DecodePayload(EncodePayload(h), &h2).ok());
  CHECK(h2 == h);
  ErrorMsg e{ErrorCode::kIo, true, "disk on fire"}, e2;
  REQUIRE(DecodePayload(EncodePayload(e), &e2).ok());
  CHECK(e2 == e);
  ManifestRequestMsg m{5, "boot", {"a", "b"}}, m2;
  REQUIRE(DecodePayload(EncodePayload(m), &m2).ok());
  CHECK(m2 == m);
  FileRequestMsg r{"vms/a.json", 10, D(1), false, 0, 0, 0}, r2;
  REQUIRE(DecodePayload(EncodePayload(r), &r2).ok());
  CHECK(r2 == r);
  FileStartMsg s{TransferMethod::kWhole, 77}, s2;
  REQUIRE(DecodePayload(EncodePayload(s), &s2).ok());
  CHECK(s2 == s);
  FileEndMsg fe{77, D(4)}, fe2;
  REQUIRE(DecodePayload(EncodePayload(fe), &fe2).ok());
  CHECK(fe2 == fe);
}

TEST_CASE("the decoder yields frames split across arbitrary reads") {
  std::vector<uint8_t> all;
  for (auto& [name, f] : GoldenFrames()) {
    auto e = EncodeFrame(f);
    all.insert(all.end(), e.begin(), e.end());
  }
  FrameDecoder d;
  int count = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    d.Append(std::span<const uint8_t>(&all[i], 1));
    for (;;) {
      auto f = d.Next();
      REQUIRE(f.ok());
      if (!f->has_value()) break;
      ++count;
    }
  }
  CHECK(count == 17);
  CHECK(d.Finish().ok());
}

TEST_CASE("Feed/NextView decode in place from reads cut anywhere, buffering only a partial frame") {
  std::vector<uint8_t> all;
  std::vector<Frame> want;
  for (auto& [name, f] : GoldenFrames()) {
    auto e = EncodeFrame(f);
    all.insert(all.end(), e.begin(), e.end());
    want.push_back(f);
  }
  for (size_t cut : {size_t{1}, size_t{3}, size_t{10}, size_t{11}, size_t{64}, all.size()}) {
    INFO("reads of " << cut << " bytes");
    FrameDecoder d;
    size_t count = 0, in_place = 0;
    for (size_t i = 0; i < all.size(); i += cut) {
      // A fresh copy per read, overwritten afterwards: nothing may point into it later.
      std::vector<uint8_t> read(
          all.begin() + static_cast<ptrdiff_t>(i),
          all.begin() + static_cast<ptrdiff_t>(std::min(all.size(), i + cut)));
      d.Feed(read);
      for (;;) {
        auto f = d.NextView();
        REQUIRE(f.ok());
        if (!f->has_value()) break;
        const FrameView& v = **f;
        REQUIRE(count < want.size());
        CHECK(v.type == want[count].type);
        CHECK(v.flags == want[count].flags);
        CHECK(v.stream == want[count].stream);
        CHECK(std::vector<uint8_t>(v.payload.begin(), v.payload.end()) == want[count].payload);
        if (!v.payload.empty() && v.payload.data() >= read.data() &&
            v.payload.data() < read.data() + read.size()) {
          ++in_place;
        }
        ++count;
      }
      CHECK(d.buffered() < kFrameHeaderBytes + kMaxFramePayload);
      std::fill(read.begin(), read.end(), 0xee);
    }
    CHECK(count == want.size());
    CHECK(d.Finish().ok());
    if (cut == all.size()) CHECK(in_place > 10);  // one read: no payload copied
  }
}

TEST_CASE("Feed rejects a bad header before its payload arrives, and Stash keeps the rest") {
  FrameDecoder bad;
  std::vector<uint8_t> hdr = {0x01, 0x00, 0x10, 0x00, 0x25, 0, 1, 0, 0, 0};
  bad.Feed(hdr);
  auto f = bad.NextView();
  REQUIRE_FALSE(f.ok());
  CHECK_THAT(f.status().message(), Catch::Contains("oversized frame"));

  std::vector<uint8_t> two;
  AppendFrame(&two, FrameType::kBye, 0, 0, {});
  AppendFrame(&two, FrameType::kFileData, 0, 7, Bytes("payload"));
  FrameDecoder d;
  {
    std::vector<uint8_t> read = two;
    d.Feed(read);
    auto first = d.NextView();
    REQUIRE(first.ok());
    REQUIRE(first->has_value());
    CHECK((*first)->type == FrameType::kBye);
    d.Stash();  // the caller stops early: the second frame is copied
    std::fill(read.begin(), read.end(), 0);
  }
  auto second = d.Next();
  REQUIRE(second.ok());
  REQUIRE(second->has_value());
  CHECK((*second)->stream == 7);
  CHECK((*second)->payload == Bytes("payload"));
}

Status DecodeError(std::vector<uint8_t> bytes) {
  FrameDecoder d;
  d.Append(bytes);
  auto f = d.Next();
  if (!f.ok()) return f.status();
  if (!f->has_value()) return d.Finish();
  return Status::Ok();
}

TEST_CASE("malformed frames produce specific errors") {
  SECTION("oversized: rejected from the header alone") {
    Status s = DecodeError({0x01, 0x00, 0x10, 0x00, 0x25, 0, 1, 0, 0, 0});
    CHECK(s.code() == Code::kData);
    CHECK_THAT(s.message(), Catch::Contains("oversized frame") && Catch::Contains("FILE_DATA") &&
                                Catch::Contains("stream 1"));
  }
  SECTION("unknown type") {
    Status s = DecodeError({0, 0, 0, 0, 0x7f, 0, 0, 0, 0, 0});
    CHECK_THAT(s.message(), Catch::Contains("unknown frame type 0x7f"));
  }
  SECTION("reserved or unused flags") {
    CHECK_THAT(DecodeError({0, 0, 0, 0, 0x01, 0x80, 0, 0, 0, 0}).message(),
               Catch::Contains("bad flags"));
    CHECK_THAT(DecodeError({0, 0, 0, 0, 0x26, kFlagCompressed, 0, 0, 0, 0}).message(),
               Catch::Contains("bad flags"));
  }
  SECTION("truncated") {
    Status s = DecodeError({5, 0, 0, 0, 0x25, 0, 1, 0, 0, 0, 'a', 'b'});
    CHECK_THAT(s.message(), Catch::Contains("truncated frame"));
    CHECK_THAT(DecodeError({5, 0, 0}).message(), Catch::Contains("truncated frame"));
  }
  SECTION("errors are sticky") {
    FrameDecoder d;
    d.Append(std::vector<uint8_t>{0, 0, 0, 0, 0x7f, 0, 0, 0, 0, 0});
    CHECK_FALSE(d.Next().ok());
    d.Append(EncodeFrame(Frame{FrameType::kBye, 0, 0, {}}));
    CHECK_FALSE(d.Next().ok());
  }
}

TEST_CASE("malformed payloads produce specific errors") {
  HelloMsg h;
  auto hello = EncodePayload(HelloMsg{1, 1, Role::kPuller, "u", "n", {}});
  SECTION("bad magic") {
    auto b = hello;
    b[0] = 'X';
    CHECK_THAT(DecodePayload(b, &h).message(), Catch::Contains("HELLO: magic"));
  }
  SECTION("truncated and trailing") {
    auto b = hello;
    b.pop_back();
    CHECK_THAT(DecodePayload(b, &h).message(), Catch::Contains("HELLO: nonce: truncated"));
    b = hello;
    b.push_back(0);
    CHECK_THAT(DecodePayload(b, &h).message(), Catch::Contains("trailing bytes"));
  }
  SECTION("bad role and version range") {
    auto b = hello;
    b[12] = 9;
    CHECK_THAT(DecodePayload(b, &h).message(), Catch::Contains("role"));
    auto c = EncodePayload(HelloMsg{3, 2, Role::kPuller, "u", "n", {}});
    CHECK_THAT(DecodePayload(c, &h).message(), Catch::Contains("bad range 3..2"));
  }
  SECTION("overlong and overflowing varints, oversized strings") {
    ManifestRequestMsg m;
    std::vector<uint8_t> b(8, 0);
    b.push_back(0x80);
    b.push_back(0x00);  // overlong 0
    CHECK_THAT(DecodePayload(b, &m).message(), Catch::Contains("overlong varint"));
    std::vector<uint8_t> c(8, 0);
    for (int i = 0; i < 9; ++i) c.push_back(0xff);
    c.push_back(0x7f);
    CHECK_THAT(DecodePayload(c, &m).message(), Catch::Contains("overflows"));
    std::vector<uint8_t> d(8, 0);
    d.push_back(200);
    d.push_back(1);  // boot id of 200 bytes > 128
    CHECK_THAT(DecodePayload(d, &m).message(), Catch::Contains("exceeds limit"));
  }
  SECTION("service count beyond the payload") {
    ManifestRequestMsg m;
    std::vector<uint8_t> b(8, 0);
    b.push_back(0);     // boot id ""
    b.push_back(0xe8);  // 1000 services
    b.push_back(0x07);
    CHECK_THAT(DecodePayload(b, &m).message(), Catch::Contains("service_count"));
  }
  SECTION("bad paths") {
    for (std::string p : std::vector<std::string>{"/etc/passwd", "a/../../b", "a//b",
                                                  std::string("a\0b", 3), "", "./a"}) {
      FileRequestMsg r{p, 1, {}, false, 0, 0, 0}, r2;
      INFO(p);
      Status s = DecodePayload(EncodePayload(r), &r2);
      CHECK(s.code() == Code::kData);
      CHECK_THAT(s.message(), Catch::Contains("FILE_REQUEST: path"));
    }
  }
  SECTION("bad block geometry") {
    FileRequestMsg r{"vms/a", 1, {}, true, 100000, 4096, 3}, r2;
    CHECK_THAT(DecodePayload(EncodePayload(r), &r2).message(), Catch::Contains("block_count"));
    r.block_size = 5000;
    CHECK_THAT(DecodePayload(EncodePayload(r), &r2).message(), Catch::Contains("block_size"));
    r = {"vms/a", 1, {}, true, 1ull << 40, 4096, static_cast<uint32_t>((1ull << 40) / 4096)};
    CHECK_THAT(DecodePayload(EncodePayload(r), &r2).message(), Catch::Contains("block_count"));
  }
  SECTION("bad enums") {
    FileStartMsg s;
    CHECK_THAT(DecodePayload(std::vector<uint8_t>{3, 0, 0, 0, 0, 0, 0, 0, 0}, &s).message(),
               Catch::Contains("method"));
    ErrorMsg e;
    CHECK_THAT(DecodePayload(std::vector<uint8_t>{99, 0, 0, 0}, &e).message(),
               Catch::Contains("unknown error code"));
  }
}

}  // namespace
}  // namespace lifeboat::syncproto
