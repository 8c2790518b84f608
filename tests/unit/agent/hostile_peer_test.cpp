// Hostile peers: the agent's real puller (StartPeerPull, libuv, TLS-PSK,
// catalog Store) pulls over a real TCP connection on 127.0.0.1 from a
// scripted malicious server. The server is a genuine ServerSession behind
// TLS with the cluster key, serving an export that lies (bad paths, escaping
// symlinks, content that does not match the manifest) and whose frames can
// be rewritten on the way out (oversized frames, zstd bombs, trickling).
//
// Every attack must end with: the pull fails with an error naming the peer
// (and the path where there is one), nothing is written outside data_dir,
// and the generation held from an earlier honest pull stays current and
// verifies clean.
#include <catch2/catch.hpp>
#include <random>

#include "tests/unit/agent/hostile_peer.h"

namespace lifeboat::agent {
namespace {

using namespace hostile;  // NOLINT: the harness vocabulary
using syncproto::FileEntry;
using syncproto::Frame;
using syncproto::FrameType;
using syncproto::ManifestAnswer;

}  // namespace

TEST_CASE("hostile peer: TLS-PSK pull works, a peer with another key gets nothing") {
  Fixture f;
  f.HonestPull();
  Script honest;
  LyingSource src(f.exporter.get(), &honest);
  HostileServer server(&src, &honest);
  PullResult r = f.Pull(server.port(), "hn1", 20'000, "a-different-cluster-key-0123456789abcdef");
  INFO(r.status.ToString());
  CHECK(r.status.code() == Code::kPermission);
  CHECK(r.status.message().find("authentication failed") != std::string::npos);
  CHECK(r.status.message().find("hn1") != std::string::npos);
}

TEST_CASE("hostile peer: bad paths in the manifest are refused, nothing written outside") {
  Fixture f;
  f.HonestPull();
  std::string inst = "datasets/" + f.exp->imgapi + "/";
  struct Case {
    const char* what;
    std::string path;
    std::string mention;
  };
  std::vector<Case> cases = {
      {"absolute", f.root.Sub("pwned"), f.root.Sub("pwned")},
      {"dot-dot", "../pwned", "../pwned"},
      {"dot-dot inside", inst + "../../../pwned", "../pwned"},
      {"empty component", inst + "a//pwned", "a//pwned"},
      {"NUL", inst + std::string("pw\0ned", 6), "pw"},
      {"very long", inst + std::string(5000, 'a'), "exceeds limit"},
      {"long component", inst + std::string(300, 'b') + "/pwned", "bbbb"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    Script s;
    s.announce[c.path] = "PWNED";
    LyingSource src(f.exporter.get(), &s);
    HostileServer server(&src, &s);
    ExpectRefused(f.Pull(server.port()), {c.mention});
    f.ExpectPreviousGenerationIntact();
  }
}

TEST_CASE("hostile peer: a symlink pointing outside, or a file under a symlink, is refused") {
  Fixture f;
  f.HonestPull();
  std::string inst = "datasets/" + f.exp->imgapi + "/";
  SECTION("symlink escaping the tree") {
    Script s;
    s.manifest = [&](ManifestAnswer& a) {
      FileEntry link;
      link.path = inst + "escape";
      link.kind = syncproto::EntryKind::kSymlink;
      link.target = "../../../../../../../../" + f.root.Sub("pwned");
      link.digest = Xxh3Digest(link.target);
      a.manifest.files.push_back(link);
      std::sort(a.manifest.files.begin(), a.manifest.files.end(),
                [](const FileEntry& x, const FileEntry& y) { return x.path < y.path; });
    };
    LyingSource src(f.exporter.get(), &s);
    HostileServer server(&src, &s);
    ExpectRefused(f.Pull(server.port()), {inst + "escape"});
    f.ExpectPreviousGenerationIntact();
  }
  SECTION("a file written through a symlink the held generation has") {
    // DirExport's imgapi dataset has `latest -> images/ab/cd/file0`.
    Script s;
    s.announce[inst + "latest/pwned"] = "PWNED";
    LyingSource src(f.exporter.get(), &s);
    HostileServer server(&src, &s);
    ExpectRefused(f.Pull(server.port()), {"latest"});
    f.ExpectPreviousGenerationIntact();
    CHECK(catalog::testing::Read(f.export_root + "/datasets/" + f.exp->imgapi +
                                 "/images/ab/cd/file0") == std::string(100000, 'x'));
  }
}

TEST_CASE("hostile peer: content that does not match the manifest is never committed") {
  // The server announces a new file honestly, then lies on the wire. The
  // content is random so it travels in raw (uncompressed) FILE_DATA frames.
  Fixture f;
  f.HonestPull();
  std::string path = "datasets/" + f.exp->imgapi + "/new.bin";
  std::mt19937_64 rng(5);
  std::string announced(200000, '\0');
  for (auto& ch : announced) ch = static_cast<char>(rng());
  Script s;
  s.announce[path] = announced;
  SECTION("digest mismatch: a flipped byte, same size") {
    s.frame = OnFirstFileData([](const Frame& fr, std::vector<uint8_t>* out) {
      std::vector<uint8_t> p = fr.payload;
      p[p.size() / 2] ^= 0x01;
      syncproto::AppendFrame(out, fr.type, fr.flags, fr.stream, p);
    });
  }
  SECTION("a file larger than announced: an extra chunk before FILE_END") {
    s.frame = [](const Frame& fr, std::vector<uint8_t>* out) {
      if (fr.type == FrameType::kFileEnd) {
        std::vector<uint8_t> extra(1u << 20, 'x');
        syncproto::AppendFrame(out, FrameType::kFileData, 0, fr.stream, extra);
      }
      syncproto::AppendFrame(out, fr.type, fr.flags, fr.stream, fr.payload);
    };
  }
  SECTION("a file shorter than announced: a truncated chunk") {
    s.frame = OnFirstFileData([](const Frame& fr, std::vector<uint8_t>* out) {
      std::vector<uint8_t> p(fr.payload.begin(), fr.payload.begin() + fr.payload.size() / 2);
      syncproto::AppendFrame(out, fr.type, fr.flags, fr.stream, p);
    });
  }
  LyingSource src(f.exporter.get(), &s);
  HostileServer server(&src, &s);
  ExpectRefused(f.Pull(server.port()), {path});
  f.ExpectPreviousGenerationIntact();
  CHECK_FALSE(
      Exists(*Env::Default(), f.data_dir + "/instances/" + f.exp->imgapi + "/current/" + path));
}

TEST_CASE("hostile peer: oversized frames and zstd bombs are refused with bounded memory") {
  Fixture f;
  f.HonestPull();
  std::string path = "datasets/" + f.exp->imgapi + "/new.bin";
  Script s;
  s.announce[path] = std::string(300000, 'n');
  SECTION("a frame header announcing more than the limit") {
    s.frame = OnFirstFileData([](const Frame& fr, std::vector<uint8_t>* out) {
      // Header: length (4, big endian) = 64 MiB, then type, flags, stream.
      std::vector<uint8_t> hdr;
      syncproto::AppendFrame(&hdr, fr.type, fr.flags, fr.stream, {});
      uint32_t len = 64u << 20;
      hdr[0] = static_cast<uint8_t>(len >> 24);
      hdr[1] = static_cast<uint8_t>(len >> 16);
      hdr[2] = static_cast<uint8_t>(len >> 8);
      hdr[3] = static_cast<uint8_t>(len);
      out->insert(out->end(), hdr.begin(), hdr.end());
      out->insert(out->end(), fr.payload.begin(), fr.payload.end());
    });
  }
  SECTION("a FILE_DATA chunk that inflates to 64 MiB") {
    std::vector<uint8_t> zeros(64u << 20, 0);
    auto bomb = syncproto::CompressManifest(zeros);
    REQUIRE(bomb.ok());
    REQUIRE(bomb->size() < syncproto::kMaxFramePayload);
    auto payload = std::make_shared<std::vector<uint8_t>>(std::move(bomb).value());
    s.frame = OnFirstFileData([payload](const Frame& fr, std::vector<uint8_t>* out) {
      syncproto::AppendFrame(out, fr.type, fr.flags | syncproto::kFlagCompressed, fr.stream,
                             *payload);
    });
  }
  LyingSource src(f.exporter.get(), &s);
  HostileServer server(&src, &s);
  ExpectRefused(f.Pull(server.port()), {});
  f.ExpectPreviousGenerationIntact();
}

TEST_CASE("hostile peer: a trickling peer hits the deadline while another peer is pulled") {
  Fixture f;
  f.HonestPull();
  Script slow;
  slow.trickle_ms = 50;  // 20 bytes/s: never idle long enough for io_timeout
  LyingSource slow_src(f.exporter.get(), &slow);
  HostileServer slowloris(&slow_src, &slow);
  Script honest;
  LyingSource honest_src(f.exporter.get(), &honest);
  HostileServer good(&honest_src, &honest);
  std::vector<std::string> order;
  auto results = f.PullAll({{"hn1", slowloris.port()}, {"hn2", good.port()}}, 3'000, kKey, &order);
  INFO(results["hn1"].status.ToString());
  INFO(results["hn2"].status.ToString());
  CHECK(results["hn2"].status.ok());
  REQUIRE(order.size() == 2);
  CHECK(order[0] == "hn2");  // the honest peer was not held up by the slow one
  ExpectRefused(results["hn1"], {});
  f.ExpectPreviousGenerationIntact();
}

}  // namespace lifeboat::agent
