// Manifest size limits (docs/syncproto.md section 7): a legitimately large
// manifest still goes through the real sessions, a manifest over
// kMaxManifestEntries is refused, and the streaming decompressor refuses it
// from its first bytes instead of inflating the whole answer.
#include <catch2/catch.hpp>
#include <chrono>

#include "syncproto/frame.h"
#include "syncproto/internal/coding.h"
#include "syncproto/manifest_codec.h"
#include "syncproto/session.h"
#include "tests/unit/syncproto/test_util.h"

namespace lifeboat::syncproto {
namespace {

const std::string kInstance = "7b4f3a9e-1c2d-4e5f-8a9b-0c1d2e3f4a5b";

FileEntry Entry(uint64_t i) {
  FileEntry f;
  char name[32];
  std::snprintf(name, sizeof name, "f%08llu", static_cast<unsigned long long>(i));
  f.path = "datasets/" + kInstance + "/d" + std::to_string(i / 1000) + "/" + name;
  f.size = 1 + i % 4096;
  f.mode = 0644;
  f.mtime_ns = 1'700'000'000'000'000'000 + static_cast<int64_t>(i);
  f.digest = Xxh3Digest(f.path);
  return f;
}

ManifestAnswer Answer(uint64_t files) {
  ManifestAnswer a;
  a.kind = ManifestAnswer::Kind::kFull;
  a.manifest.generation = 42;
  a.manifest.boot_id = "boot-1";
  a.manifest.node_uuid = "564dd1ac-164d-cc50-247c-b2eb0cf21ce5";
  a.manifest.node_name = "headnode1";
  a.manifest.instances.push_back({kInstance, "imgapi0", "imgapi", ""});
  a.manifest.files.reserve(files);
  for (uint64_t i = 0; i < files; ++i) a.manifest.files.push_back(Entry(i));
  std::sort(a.manifest.files.begin(), a.manifest.files.end(),
            [](const FileEntry& x, const FileEntry& y) { return x.path < y.path; });
  return a;
}

// An answer's bytes announcing `files` files, without building FileEntry
// objects (so millions cost the test little): the header of Answer(0), the
// count, then `files` minimal valid entries.
std::vector<uint8_t> EncodedWithFiles(uint64_t files, uint64_t written) {
  std::vector<uint8_t> out = EncodeManifestAnswer(Answer(0));
  out.resize(out.size() - 2);  // drop file_count 0 and removed_count 0
  internal::PutVarint(&out, files);
  FileEntry f;
  f.size = 1;
  f.mode = 0644;
  f.mtime_ns = 1'700'000'000'000'000'000;
  f.digest = Xxh3Digest(std::string_view("same"));
  for (uint64_t i = 0; i < written; ++i) {
    char name[96];
    std::snprintf(name, sizeof name, "datasets/%s/f%09llu", kInstance.c_str(),
                  static_cast<unsigned long long>(i));
    f.path = name;
    AppendFileEntry(&out, f);
  }
  internal::PutVarint(&out, 0);
  return out;
}

}  // namespace

TEST_CASE("manifest limits: 200k entries go through the real sessions intact") {
  testing::TempDir tmp;
  constexpr uint64_t kFiles = 200'000;
  auto want = std::make_shared<ManifestAnswer>(Answer(kFiles));
  // An export whose manifest is the 200k-entry answer.
  struct BigSource final : ExportSource {
    std::shared_ptr<ManifestAnswer> a;
    struct View final : ExportView {
      std::shared_ptr<ManifestAnswer> a;
      Result<ManifestAnswer> ManifestSince(uint64_t, const std::string&,
                                           const std::vector<std::string>&) override {
        return *a;
      }
      Result<std::unique_ptr<ReadableFile>> OpenFile(const std::string& p, FileEntry*) override {
        return NotFoundError(p);
      }
    };
    Result<std::unique_ptr<ExportView>> OpenView() override {
      auto v = std::make_unique<View>();
      v->a = a;
      return std::unique_ptr<ExportView>(std::move(v));
    }
  } src;
  src.a = want;
  ServerSession server(&src, testing::kKey, testing::ServerId());
  PullerSession puller(testing::kKey, testing::PullerId());
  REQUIRE(puller.Start().ok());
  std::optional<Result<ManifestAnswer>> got;
  REQUIRE(puller.RequestManifest(0, "", {}, [&](Result<ManifestAnswer> a) { got = std::move(a); })
              .ok());
  auto t0 = std::chrono::steady_clock::now();
  testing::PipeResult p = testing::RunPipe(puller, server);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  INFO(p.puller.ToString() << " / " << p.server.ToString());
  REQUIRE(got);
  REQUIRE(got->ok());
  CHECK((*got)->manifest.files.size() == kFiles);
  CHECK((*got)->manifest.files == want->manifest.files);
  CHECK(secs < 20);  // generous: a few hundred ms on a quiet machine
  WARN("200k-entry manifest: " << p.server_to_puller << " bytes on the wire, " << secs << " s");
}

TEST_CASE("manifest limits: more than kMaxManifestEntries entries is a clean data error") {
  SECTION("files over the limit") {
    auto bytes = EncodedWithFiles(kMaxManifestEntries + 1, kMaxManifestEntries + 1);
    auto r = DecodeManifestAnswer(bytes);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == Code::kData);
    CHECK_THAT(r.status().message(),
               Catch::Contains("entries exceed the limit of 1000000 entries per manifest"));
    CHECK_THAT(r.status().message(), Catch::Contains("file_count"));
  }
  SECTION("instances count toward the limit too: 1 + 1000000 is one over") {
    auto bytes = EncodedWithFiles(kMaxManifestEntries, kMaxManifestEntries);
    auto r = DecodeManifestAnswer(bytes);
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.status().message(), Catch::Contains("1000001 entries exceed the limit"));
  }
  SECTION("exactly at the limit decodes") {
    auto bytes = EncodedWithFiles(kMaxManifestEntries - 1, kMaxManifestEntries - 1);
    auto r = DecodeManifestAnswer(bytes);
    INFO(r.status().ToString());
    REQUIRE(r.ok());
    CHECK(r->manifest.files.size() + r->manifest.instances.size() == kMaxManifestEntries);
  }
}

TEST_CASE("manifest limits: the decompressor refuses millions of entries from the first frame") {
  constexpr uint64_t kFiles = 2'000'000;
  std::vector<uint8_t> encoded = EncodedWithFiles(kFiles, kFiles);
  REQUIRE(encoded.size() < kMaxManifestBytes);  // under the byte cap: only the count can stop it
  auto compressed = CompressManifest(encoded);
  REQUIRE(compressed.ok());
  size_t encoded_size = encoded.size();
  encoded = {};
  ManifestDecompressor dec(kMaxManifestBytes);
  size_t fed = 0;
  Status st;
  while (fed < compressed->size() && st.ok()) {
    size_t n = std::min<size_t>(kMaxFramePayload, compressed->size() - fed);
    st = dec.Feed(std::span<const uint8_t>(compressed->data() + fed, n));
    fed += n;
  }
  INFO(encoded_size << " bytes encoded, " << compressed->size() << " compressed, " << fed
                    << " fed");
  REQUIRE_FALSE(st.ok());
  CHECK(st.code() == Code::kData);
  CHECK_THAT(st.message(), Catch::Contains("2000001 entries exceed the limit"));
  CHECK(fed <= kMaxFramePayload);  // refused within the first frame
  CHECK_FALSE(dec.End().ok());     // unusable afterwards

  SECTION("the same count within the limit decompresses in full") {
    ManifestDecompressor roomy(kMaxManifestBytes, kFiles + 1);
    REQUIRE(roomy.Feed(*compressed).ok());
    auto out = roomy.End();
    REQUIRE(out.ok());
    CHECK(out->size() == encoded_size);
  }
}

}  // namespace lifeboat::syncproto
