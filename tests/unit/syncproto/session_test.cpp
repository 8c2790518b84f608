#include "syncproto/session.h"

#include <catch2/catch.hpp>

#include "syncproto/frame.h"
#include "tests/unit/syncproto/test_util.h"

namespace lifeboat::syncproto {
namespace {

using testing::DirExportSource;
using testing::kKey;
using testing::PipeResult;
using testing::PullerId;
using testing::ReadFile;
using testing::RunPipe;
using testing::ServerId;
using testing::TempDir;
using testing::WriteFile;

struct PullResult {
  Status status = InternalError("callback not called");
  FileTransferStats stats;
  std::string data;
  PipeResult pipe;
};

struct Fixture {
  TempDir root;
  TempDir tmp;
  DirExportSource src{root.path()};
};

PullResult PullData(Fixture& fx, const std::string& newdata,
                    const std::optional<std::string>& basis,
                    const std::string& path = "datasets/u1/file.bin", PullerOptions popts = {},
                    size_t pipe_chunk = 1u << 20, ServerOptions sopts = {}) {
  WriteFile(fx.root.Sub(path), newdata);
  PullResult res;
  ServerSession server(&fx.src, kKey, ServerId(), sopts);
  PullerSession puller(kKey, PullerId(), popts);
  REQUIRE(puller.Start().ok());
  FileRequest req;
  req.path = path;
  req.expected = testing::EntryFor(path, newdata);
  if (basis) {
    WriteFile(fx.tmp.Sub("basis"), *basis);
    req.basis = *Env::Default()->OpenRead(fx.tmp.Sub("basis"));
  }
  std::string out_path = fx.tmp.Sub("out.tmp");
  auto req_out = *Env::Default()->OpenWrite(out_path);
  req.out = req_out.get();
  req.sync_output = false;
  REQUIRE(puller
              .RequestFile(std::move(req),
                           [&](const Status& s, const FileTransferStats& st) {
                             res.status = s;
                             res.stats = st;
                           })
              .ok());
  puller.Finish();
  res.pipe = RunPipe(puller, server, pipe_chunk);
  res.data = ReadFile(out_path);
  return res;
}

std::string Mutate(std::mt19937_64& rng, std::string s, int kind) {
  auto pos = [&](size_t n) { return n == 0 ? 0 : static_cast<size_t>(rng() % (n + 1)); };
  switch (kind) {
    case 0: {  // scattered in-place edits
      for (int i = 0; i < 5 && !s.empty(); ++i) {
        size_t p = pos(s.size() - 1);
        size_t n = std::min<size_t>(1 + rng() % 5000, s.size() - p);
        std::string r = testing::RandomBytes(rng, n);
        s.replace(p, n, r);
      }
      return s;
    }
    case 1:  // insert
      return s.insert(pos(s.size()), testing::RandomBytes(rng, 1 + rng() % 20000));
    case 2: {  // delete
      if (s.empty()) return s;
      size_t p = pos(s.size() - 1);
      return s.erase(p, std::min<size_t>(1 + rng() % 30000, s.size() - p));
    }
    case 3:  // append
      return s + testing::RandomBytes(rng, 1 + rng() % 70000);
    case 4:  // truncate
      return s.substr(0, pos(s.size()));
    case 5:  // empty
      return "";
    case 6:  // one byte
      return testing::RandomBytes(rng, 1);
    default:  // entirely new
      return testing::RandomBytes(rng, rng() % 300000);
  }
}

TEST_CASE("randomized old/new pairs come out byte-identical through the sessions") {
  std::mt19937_64 rng(20240611);
  int deltas = 0, signatures = 0;
  for (int iter = 0; iter < 60; ++iter) {
    Fixture fx;
    size_t size = iter % 10 == 0 ? rng() % 100 : 70000 + rng() % 400000;
    // Text-like content compresses; random does not: mix both.
    std::string old = (iter % 3 == 0) ? std::string(size, 'a') + testing::RandomBytes(rng, 100)
                                      : testing::RandomBytes(rng, size);
    int kind = iter % 8;
    std::string neu = Mutate(rng, old, kind);
    bool with_basis = iter % 9 != 8;
    INFO("iter " << iter << " kind " << kind << " old " << old.size() << " new " << neu.size());
    ServerOptions so;
    so.limits.signature_above = iter % 2 ? 8192 : (1u << 20);  // both delta paths
    PullResult r = PullData(fx, neu, with_basis ? std::optional<std::string>(old) : std::nullopt,
                            "datasets/u1/file.bin", {}, 1 + rng() % 70000, so);
    REQUIRE(r.status.ok());
    REQUIRE(r.data.size() == neu.size());
    REQUIRE(r.data == neu);
    CHECK(r.stats.bytes_written == neu.size());
    deltas += r.stats.delta;
    signatures += r.stats.signature_sent;
  }
  // The mix exercised both the coarse-only and the rolling (signature) paths.
  CHECK(deltas > 20);
  CHECK(signatures > 3);
}

TEST_CASE("a few scattered edits send far fewer bytes than the file") {
  std::mt19937_64 rng(7);
  Fixture fx;
  std::string old = testing::RandomBytes(rng, 8u << 20);
  std::string neu = old;
  for (int i = 0; i < 10; ++i) {
    size_t p = (rng() % (neu.size() - 4096));
    neu.replace(p, 4096, testing::RandomBytes(rng, 4096));
  }
  PullResult r = PullData(fx, neu, old);
  REQUIRE(r.status.ok());
  REQUIRE(r.data == neu);
  CHECK(r.stats.delta);
  CHECK_FALSE(r.stats.signature_sent);
  CHECK(r.pipe.server_to_puller < 400u << 10);
}

TEST_CASE("an insert near the start asks for the signature and still sends little") {
  std::mt19937_64 rng(8);
  Fixture fx;
  std::string old = testing::RandomBytes(rng, 8u << 20);
  std::string neu = old;
  neu.insert(1000, "inserted bytes shift everything after them");
  PullResult r = PullData(fx, neu, old);
  REQUIRE(r.status.ok());
  REQUIRE(r.data == neu);
  CHECK(r.stats.signature_sent);
  CHECK(r.pipe.server_to_puller < 200u << 10);
}

TEST_CASE("small files, new files and image files are sent whole") {
  std::mt19937_64 rng(9);
  Fixture fx;
  std::string big = testing::RandomBytes(rng, 200000);
  PullResult img = PullData(fx, big, big, "images/0b3e0e8a-3a4e-4c1b-a5b1-cb1f1e0e5f4a/file");
  REQUIRE(img.status.ok());
  CHECK_FALSE(img.stats.delta);
  CHECK(img.data == big);
  PullResult small = PullData(fx, "tiny new content", std::string("tiny old content"));
  REQUIRE(small.status.ok());
  CHECK_FALSE(small.stats.delta);
  CHECK(small.data == "tiny new content");
  PullResult fresh = PullData(fx, big, std::nullopt);
  REQUIRE(fresh.status.ok());
  CHECK_FALSE(fresh.stats.delta);
}

TEST_CASE("compressible data is compressed on the wire") {
  Fixture fx;
  std::string text;
  while (text.size() < (2u << 20)) text += "{\"uuid\": \"564dd1ac\", \"alias\": \"imgapi0\"}\n";
  PullResult r = PullData(fx, text, std::nullopt);
  REQUIRE(r.status.ok());
  REQUIRE(r.data == text);
  CHECK(r.pipe.server_to_puller < text.size() / 10);
}

TEST_CASE("a digest mismatch fails the file, names it, and keeps the connection") {
  Fixture fx;
  std::string data = "the real content of the file";
  WriteFile(fx.root.Sub("vms/u1.json"), data);
  ServerSession server(&fx.src, kKey, ServerId());
  PullerSession puller(kKey, PullerId());
  REQUIRE(puller.Start().ok());
  // The manifest said something else: the server answers CHANGED.
  FileRequest req;
  req.path = "vms/u1.json";
  req.expected = testing::EntryFor(req.path, "what the manifest said");
  auto req_out = *Env::Default()->OpenWrite(fx.tmp.Sub("o1"));
  req.out = req_out.get();
  Status st1 = InternalError("not called");
  REQUIRE(puller.RequestFile(std::move(req), [&](const Status& s, auto&) { st1 = s; }).ok());
  // The server claims the expected digest but serves other bytes: the puller catches it.
  Digest128 claimed = Xxh3Digest(std::string_view("claimed"));
  fx.src.digest_override["vms/u1.json"] = claimed;
  FileRequest req2;
  req2.path = "vms/u1.json";
  req2.expected = testing::EntryFor(req2.path, data);
  req2.expected.digest = claimed;
  auto req2_out = *Env::Default()->OpenWrite(fx.tmp.Sub("o2"));
  req2.out = req2_out.get();
  Status st2 = InternalError("not called");
  REQUIRE(puller.RequestFile(std::move(req2), [&](const Status& s, auto&) { st2 = s; }).ok());
  puller.Finish();
  PipeResult p = RunPipe(puller, server);
  CHECK(p.puller.ok());
  CHECK(st1.code() == Code::kTemporary);
  CHECK_THAT(st1.message(), Catch::Contains("vms/u1.json") && Catch::Contains("CHANGED"));
  // Second: the server's own check sees the bytes do not hash to what it exports.
  CHECK_FALSE(st2.ok());
  CHECK_THAT(st2.message(), Catch::Contains("vms/u1.json"));
}

TEST_CASE("a missing file is NOT_FOUND for that stream only") {
  Fixture fx;
  WriteFile(fx.root.Sub("vms/a.json"), "aaa");
  ServerSession server(&fx.src, kKey, ServerId());
  PullerSession puller(kKey, PullerId());
  REQUIRE(puller.Start().ok());
  Status missing = InternalError("not called"), found = InternalError("not called");
  FileRequest r1;
  r1.path = "vms/nope.json";
  r1.expected = testing::EntryFor(r1.path, "x");
  auto r1_out = *Env::Default()->OpenWrite(fx.tmp.Sub("o1"));
  r1.out = r1_out.get();
  REQUIRE(puller.RequestFile(std::move(r1), [&](const Status& s, auto&) { missing = s; }).ok());
  FileRequest r2;
  r2.path = "vms/a.json";
  r2.expected = testing::EntryFor(r2.path, "aaa");
  auto r2_out = *Env::Default()->OpenWrite(fx.tmp.Sub("o2"));
  r2.out = r2_out.get();
  REQUIRE(puller.RequestFile(std::move(r2), [&](const Status& s, auto&) { found = s; }).ok());
  puller.Finish();
  RunPipe(puller, server);
  CHECK(missing.code() == Code::kNotFound);
  CHECK_THAT(missing.message(), Catch::Contains("vms/nope.json"));
  CHECK(found.ok());
  CHECK(ReadFile(fx.tmp.Sub("o2")) == "aaa");
}

TEST_CASE("manifest exchange: full, then unchanged in one small frame") {
  Fixture fx;
  WriteFile(fx.root.Sub("vms/u1.json"), "{}");
  WriteFile(fx.root.Sub("datasets/u1/a/b.txt"), "hello");
  ServerSession server(&fx.src, kKey, ServerId());
  PullerSession puller(kKey, PullerId());
  REQUIRE(puller.Start().ok());
  std::optional<ManifestAnswer> full, same;
  REQUIRE(puller
              .RequestManifest(0, "", {},
                               [&](Result<ManifestAnswer> a) {
                                 REQUIRE(a.ok());
                                 full = *a;
                               })
              .ok());
  PipeResult p1 = RunPipe(puller, server);
  REQUIRE(full);
  CHECK(full->kind == ManifestAnswer::Kind::kFull);
  REQUIRE(full->manifest.files.size() == 2);
  CHECK(full->manifest.files[0].path == "datasets/u1/a/b.txt");
  CHECK(full->manifest.files[0].digest == Xxh3Digest(std::string_view("hello")));
  uint64_t before = p1.server_to_puller;
  REQUIRE(puller
              .RequestManifest(full->manifest.generation, full->manifest.boot_id, {"imgapi"},
                               [&](Result<ManifestAnswer> a) {
                                 REQUIRE(a.ok());
                                 same = *a;
                               })
              .ok());
  PipeResult p2 = RunPipe(puller, server);
  REQUIRE(same);
  CHECK(same->kind == ManifestAnswer::Kind::kUnchanged);
  CHECK(p2.server_to_puller < 100);
  CHECK(before > 0);
  CHECK(fx.src.views_opened == 1);  // one view per session
}

TEST_CASE("many files in flight interleave and a cancel ends only its stream") {
  std::mt19937_64 rng(11);
  Fixture fx;
  PullerOptions po;
  po.max_in_flight = 4;
  ServerOptions so;
  so.limits.output_high_water = 256u << 10;
  ServerSession server(&fx.src, kKey, ServerId(), so);
  PullerSession puller(kKey, PullerId(), po);
  REQUIRE(puller.Start().ok());
  std::vector<std::string> contents;
  std::vector<Status> results(12, InternalError("not called"));
  std::vector<uint32_t> ids;
  std::vector<std::unique_ptr<WritableFile>> outs;  // alive until the callbacks ran
  for (int i = 0; i < 12; ++i) {
    std::string p = "datasets/u1/f" + std::to_string(i);
    contents.push_back(testing::RandomBytes(rng, i == 0 ? (6u << 20) : 1000 + rng() % 300000));
    WriteFile(fx.root.Sub(p), contents.back());
    FileRequest r;
    r.path = p;
    r.expected = testing::EntryFor(p, contents.back());
    outs.push_back(*Env::Default()->OpenWrite(fx.tmp.Sub("o" + std::to_string(i))));
    r.out = outs.back().get();
    r.sync_output = false;
    auto id = puller.RequestFile(std::move(r), [&, i](const Status& s, auto&) { results[i] = s; });
    REQUIRE(id.ok());
    ids.push_back(*id);
  }
  puller.Cancel(ids[5]);  // queued, never sent
  CHECK(results[5].code() == Code::kTemporary);
  // Start, then cancel the big one after a little of it went through.
  PipeResult p = RunPipe(puller, server, 64u << 10);
  (void)p;
  puller.Finish();
  RunPipe(puller, server);
  for (int i = 0; i < 12; ++i) {
    if (i == 5) continue;
    INFO("file " << i);
    CHECK(results[i].ok());
    CHECK(ReadFile(fx.tmp.Sub("o" + std::to_string(i))) == contents[i]);
  }
  CHECK(puller.done());
  CHECK(server.done());
}

TEST_CASE("cancel of a file in transfer stops it and the server ends the stream") {
  std::mt19937_64 rng(12);
  Fixture fx;
  std::string big = testing::RandomBytes(rng, 16u << 20);
  WriteFile(fx.root.Sub("datasets/u1/big"), big);
  ServerOptions so;
  so.limits.output_high_water = 512u << 10;
  ServerSession server(&fx.src, kKey, ServerId(), so);
  PullerSession puller(kKey, PullerId());
  REQUIRE(puller.Start().ok());
  Status st = InternalError("not called");
  FileTransferStats stats;
  FileRequest r;
  r.path = "datasets/u1/big";
  r.expected = testing::EntryFor(r.path, big);
  auto r_out = *Env::Default()->OpenWrite(fx.tmp.Sub("o"));
  r.out = r_out.get();
  auto id = puller.RequestFile(std::move(r), [&](const Status& s, const FileTransferStats& fs) {
    st = s;
    stats = fs;
  });
  REQUIRE(id.ok());
  // Handshake and the start of the transfer, by hand: a few exchanges.
  for (int i = 0; i < 6; ++i) {
    auto po = puller.output();
    std::vector<uint8_t> a(po.begin(), po.end());
    puller.ConsumeOutput(a.size());
    REQUIRE(server.Feed(a).ok());
    auto so2 = server.output();
    std::vector<uint8_t> b(so2.begin(), so2.end());
    server.ConsumeOutput(b.size());
    REQUIRE(puller.Feed(b).ok());
  }
  REQUIRE(st.code() == Code::kInternal);  // still running
  puller.Cancel(*id);
  CHECK(st.code() == Code::kTemporary);
  CHECK_THAT(st.message(), Catch::Contains("cancelled"));
  uint64_t written = stats.bytes_written;
  CHECK(written < big.size());
  puller.Finish();
  PipeResult p = RunPipe(puller, server);
  CHECK(p.puller.ok());
  CHECK(p.server.ok());
  CHECK(server.done());
  CHECK(p.server_to_puller < big.size() / 2);
}

TEST_CASE("the server caps buffered output and resumes on Pump") {
  std::mt19937_64 rng(13);
  Fixture fx;
  std::string big = testing::RandomBytes(rng, 8u << 20);
  WriteFile(fx.root.Sub("datasets/u1/big"), big);
  ServerOptions so;
  so.limits.output_high_water = 1u << 20;
  ServerSession server(&fx.src, kKey, ServerId(), so);
  PullerSession puller(kKey, PullerId());
  REQUIRE(puller.Start().ok());
  Status st = InternalError("not called");
  FileRequest r;
  r.path = "datasets/u1/big";
  r.expected = testing::EntryFor(r.path, big);
  auto r_out = *Env::Default()->OpenWrite(fx.tmp.Sub("o"));
  r.out = r_out.get();
  REQUIRE(puller.RequestFile(std::move(r), [&](const Status& s, auto&) { st = s; }).ok());
  size_t max_seen = 0;
  for (int i = 0; i < 10000 && st.code() == Code::kInternal; ++i) {
    auto po = puller.output();
    std::vector<uint8_t> a(po.begin(), po.end());
    puller.ConsumeOutput(a.size());
    REQUIRE(server.Feed(a).ok());
    max_seen = std::max(max_seen, server.output().size());
    auto so2 = server.output();
    size_t n = std::min<size_t>(so2.size(), 100000);  // a slow socket
    std::vector<uint8_t> b(so2.begin(), so2.begin() + n);
    server.ConsumeOutput(n);
    REQUIRE(server.Pump().ok());
    REQUIRE(puller.Feed(b).ok());
  }
  CHECK(st.ok());
  CHECK(ReadFile(fx.tmp.Sub("o")) == big);
  CHECK(max_seen < (1u << 20) + (300u << 10));
}

}  // namespace
}  // namespace lifeboat::syncproto

namespace lifeboat::syncproto {
namespace {

struct ServedFile {
  Status status = InternalError("callback not called");
  std::string data;
  ServerStats stats;
  PipeResult pipe;
};

ServedFile Serve(const std::string& content) {
  TempDir root, tmp;
  DirExportSource src{root.path()};
  const std::string path = "datasets/u1/file.bin";
  WriteFile(root.Sub(path), content);
  ServerSession server(&src, kKey, ServerId());
  PullerSession puller(kKey, PullerId());
  REQUIRE(puller.Start().ok());
  FileRequest req;
  req.path = path;
  req.expected = testing::EntryFor(path, content);
  auto req_out = *Env::Default()->OpenWrite(tmp.Sub("out"));
  req.out = req_out.get();
  req.sync_output = false;
  ServedFile r;
  REQUIRE(puller.RequestFile(std::move(req), [&](const Status& s, auto&) { r.status = s; }).ok());
  puller.Finish();
  r.pipe = RunPipe(puller, server);
  r.data = ReadFile(tmp.Sub("out"));
  r.stats = server.stats();
  return r;
}

TEST_CASE("zstd is adaptive per stream: incompressible chunks are sampled, not compressed") {
  std::mt19937_64 rng(11);
  const size_t chunk = SessionLimits{}.chunk_bytes;
  SECTION("random data: the first chunk is tried whole, the others by a sample") {
    std::string random = testing::RandomBytes(rng, 16 * chunk);
    ServedFile r = Serve(random);
    REQUIRE(r.status.ok());
    CHECK(r.data == random);
    CHECK(r.stats.chunks_compressed == 0);
    CHECK(r.stats.chunks_raw == 16);
    CHECK(r.stats.chunks_sampled == 15);
  }
  SECTION("random then text: compression resumes as soon as it pays") {
    std::string mixed = testing::RandomBytes(rng, 4 * chunk);
    for (size_t i = 0; mixed.size() < 8 * chunk; ++i) mixed += "line " + std::to_string(i) + "\n";
    mixed.resize(8 * chunk);
    ServedFile r = Serve(mixed);
    REQUIRE(r.status.ok());
    CHECK(r.data == mixed);
    CHECK(r.stats.chunks_raw == 4);
    CHECK(r.stats.chunks_compressed == 4);
    CHECK(r.pipe.server_to_puller < 5 * chunk);
  }
}

}  // namespace
}  // namespace lifeboat::syncproto
