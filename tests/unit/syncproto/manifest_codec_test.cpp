#include "syncproto/manifest_codec.h"

#include <zstd.h>
#include <catch2/catch.hpp>

namespace lifeboat::syncproto {
namespace {

ManifestAnswer Sample(size_t files) {
  ManifestAnswer a;
  a.kind = ManifestAnswer::Kind::kFull;
  a.manifest.node_uuid = "564dd1ac-164d-cc50-247c-b2eb0cf21ce5";
  a.manifest.node_name = "headnode1";
  a.manifest.generation = 9;
  a.manifest.boot_id = "boot";
  a.manifest.instances = {{"a-uuid", "imgapi0", "imgapi", "img-1"},
                          {"b-uuid", "sapi0", "sapi", "img-2"}};
  a.manifest.images = {{"img-1", ""}, {"img-2", "img-1"}};
  a.manifest.instances[0].warnings = {
      {"datasets/a-uuid/fifo", "not a regular file, directory or symlink"},
      {"datasets/a-uuid/caf\xe9", "dangling symlink to \"gone\""}};  // names are bytes
  for (size_t i = 0; i < files; ++i) {
    FileEntry f;
    f.path = "datasets/a-uuid/dir/file" + std::to_string(100000 + i);
    f.size = i * 13;
    f.mode = 0640;
    f.mtime_ns = 1700000000000000000 + static_cast<int64_t>(i);
    f.digest = Xxh3Digest(f.path);
    f.uid = static_cast<uint32_t>(i % 3 == 0 ? 0 : 907 + i);  // root and others, varint widths
    f.gid = static_cast<uint32_t>(i % 5 == 0 ? 4294967294u : 907);
    if (i % 7 == 1) f.hardlink_of = a.manifest.files.front().path;
    a.manifest.files.push_back(f);
  }
  FileEntry link;
  link.path = "datasets/a-uuid/link";
  link.kind = EntryKind::kSymlink;
  link.mode = 0777;
  link.target = "dir/file100000";
  a.manifest.files.push_back(link);
  return a;
}

void CheckEqual(const ManifestAnswer& a, const ManifestAnswer& b) {
  CHECK(a.kind == b.kind);
  CHECK(a.since_generation == b.since_generation);
  CHECK(a.removed == b.removed);
  CHECK(a.manifest.node_uuid == b.manifest.node_uuid);
  CHECK(a.manifest.generation == b.manifest.generation);
  CHECK(a.manifest.boot_id == b.manifest.boot_id);
  CHECK(a.manifest.instances == b.manifest.instances);
  CHECK(a.manifest.images == b.manifest.images);
  CHECK(a.manifest.files == b.manifest.files);
}

TEST_CASE("manifest answers round trip, compressed and not") {
  ManifestAnswer a = Sample(20000);
  std::vector<uint8_t> enc = EncodeManifestAnswer(a);
  auto dec = DecodeManifestAnswer(enc);
  REQUIRE(dec.ok());
  CheckEqual(a, *dec);
  auto z = CompressManifest(enc);
  REQUIRE(z.ok());
  CHECK(z->size() < enc.size() * 2 / 3);  // digests do not compress; paths do
  ManifestDecompressor d;
  for (size_t i = 0; i < z->size(); i += 1000) {
    REQUIRE(d.Feed(std::span<const uint8_t>(*z).subspan(i, std::min<size_t>(1000, z->size() - i)))
                .ok());
  }
  auto raw = d.End();
  REQUIRE(raw.ok());
  CHECK(*raw == enc);

  ManifestAnswer delta = Sample(2);
  delta.kind = ManifestAnswer::Kind::kDelta;
  delta.since_generation = 8;
  delta.removed = {"vms/gone.json"};
  auto dd = DecodeManifestAnswer(EncodeManifestAnswer(delta));
  REQUIRE(dd.ok());
  CheckEqual(delta, *dd);
}

Status DecodeStatus(const ManifestAnswer& a) {
  return DecodeManifestAnswer(EncodeManifestAnswer(a)).status();
}

TEST_CASE("AnswerHeader: UNCHANGED only for the export's generation and boot id") {
  Manifest m;
  m.node_uuid = "564dd1ac-164d-cc50-247c-b2eb0cf21ce5";
  m.node_name = "headnode1";
  m.generation = 7;
  m.boot_id = "boot-a";
  m.files.push_back({"vms/x.json", EntryKind::kFile, 2, 0644, 0, Xxh3Digest("{}"), ""});
  const ManifestAnswer same = AnswerHeader(m, 7, "boot-a");
  CHECK(same.kind == ManifestAnswer::Kind::kUnchanged);
  CHECK(same.manifest.node_uuid == m.node_uuid);
  CHECK(same.manifest.node_name == "headnode1");
  CHECK(same.manifest.generation == 7);
  CHECK(same.manifest.boot_id == "boot-a");
  CHECK(same.manifest.files.empty());
  for (const auto& [since, boot] : std::vector<std::pair<uint64_t, std::string>>{
           {6, "boot-a"}, {7, "boot-b"}, {0, ""}, {8, "boot-a"}}) {
    CAPTURE(since, boot);
    const ManifestAnswer a = AnswerHeader(m, since, boot);
    CHECK(a.kind == ManifestAnswer::Kind::kFull);
    CHECK(a.manifest.generation == 7);
    CHECK(a.manifest.files.empty());
  }
}

TEST_CASE("manifest validation rejects what a hostile peer could send") {
  SECTION("bad paths") {
    for (std::string p : {"/etc/shadow", "datasets/../../etc", "a//b", ""}) {
      ManifestAnswer a = Sample(1);
      a.manifest.files[0].path = p;
      INFO(p);
      CHECK(DecodeStatus(a).code() == Code::kData);
    }
  }
  SECTION("symlink escaping its tree") {
    ManifestAnswer a = Sample(1);
    a.manifest.files.back().target = "../../../etc/passwd";
    CHECK_THAT(DecodeStatus(a).message(), Catch::Contains("points outside"));
  }
  SECTION("unsorted or duplicate files") {
    ManifestAnswer a = Sample(3);
    std::swap(a.manifest.files[0], a.manifest.files[1]);
    CHECK_THAT(DecodeStatus(a).message(), Catch::Contains("not sorted"));
    ManifestAnswer b = Sample(3);
    b.manifest.files[1] = b.manifest.files[0];
    CHECK_THAT(DecodeStatus(b).message(), Catch::Contains("not sorted"));
  }
  SECTION("mode and kind") {
    ManifestAnswer a = Sample(1);
    a.manifest.files[0].mode = 010000;
    CHECK_THAT(DecodeStatus(a).message(), Catch::Contains("mode"));
    std::vector<uint8_t> enc = EncodeManifestAnswer(Sample(0));
    enc[0] = 7;
    CHECK_THAT(DecodeManifestAnswer(enc).status().message(), Catch::Contains("kind"));
  }
  SECTION("counts larger than the input") {
    ManifestAnswer a = Sample(0);
    a.manifest.files.clear();
    a.manifest.instances.clear();
    a.manifest.images.clear();
    std::vector<uint8_t> enc = EncodeManifestAnswer(a);
    // instance_count is the byte after the fixed header; claim 2^40 entries.
    size_t at = enc.size() - 4;  // three zero counts + removed count
    std::vector<uint8_t> bad(enc.begin(), enc.begin() + at);
    for (uint8_t b : {0x80, 0x80, 0x80, 0x80, 0x80, 0x20}) bad.push_back(b);
    Status s = DecodeManifestAnswer(bad).status();
    CHECK_THAT(s.message(), Catch::Contains("instance_count") && Catch::Contains("cannot fit"));
  }
  SECTION("hard links only between files of one dataset tree, to a smaller path") {
    auto with_link = [](std::string of, EntryKind kind = EntryKind::kFile) {
      ManifestAnswer a = Sample(3);
      a.manifest.files[2].hardlink_of = std::move(of);
      a.manifest.files[2].kind = kind;
      if (kind != EntryKind::kFile) a.manifest.files[2].size = 0;
      return DecodeStatus(a);
    };
    CHECK(with_link("datasets/a-uuid/dir/file100000").ok());
    CHECK_THAT(with_link("datasets/a-uuid/dir/file100002").message(),
               Catch::Contains("smaller path"));
    CHECK_THAT(with_link("datasets/a-uuid/zzz").message(), Catch::Contains("smaller path"));
    CHECK_THAT(with_link("datasets/0-other/file").message(), Catch::Contains("same datasets"));
    CHECK_THAT(with_link("apps/a-uuid/file").message(), Catch::Contains("same datasets"));
    CHECK(with_link("datasets/a-uuid/../../etc/passwd").code() == Code::kData);
    CHECK_THAT(with_link("datasets/a-uuid/dir/file100000", EntryKind::kDir).message(),
               Catch::Contains("non-file"));
  }
  SECTION("instance warnings beyond their bounds") {
    ManifestAnswer a = Sample(1);
    a.manifest.instances[0].warnings.assign(kMaxInstanceWarnings, {"datasets/a-uuid/x", "why"});
    CHECK(DecodeStatus(a).ok());
    a.manifest.instances[0].warnings.push_back({"datasets/a-uuid/y", "why"});
    CHECK_THAT(DecodeStatus(a).message(), Catch::Contains("warnings exceed the limit"));
    ManifestAnswer b = Sample(1);
    b.manifest.instances[0].warnings[0].path.assign(kMaxWarningPathBytes + 1, 'p');
    CHECK_THAT(DecodeStatus(b).message(), Catch::Contains("warning path"));
    ManifestAnswer c = Sample(1);
    c.manifest.instances[0].warnings[0].reason.assign(kMaxWarningReasonBytes + 1, 'r');
    CHECK_THAT(DecodeStatus(c).message(), Catch::Contains("warning reason"));
  }
  SECTION("truncated and trailing") {
    std::vector<uint8_t> enc = EncodeManifestAnswer(Sample(3));
    for (size_t n : {size_t{0}, size_t{1}, enc.size() / 2, enc.size() - 1}) {
      CHECK(DecodeManifestAnswer(std::span<const uint8_t>(enc).first(n)).status().code() ==
            Code::kData);
    }
    enc.push_back(0);
    CHECK_THAT(DecodeManifestAnswer(enc).status().message(), Catch::Contains("trailing"));
  }
}

TEST_CASE("manifest zstd: garbage, truncation and bombs are bounded errors") {
  ManifestDecompressor garbage;
  Status s = garbage.Feed(std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 7, 8});
  CHECK_THAT(s.message(), Catch::Contains("bad zstd in manifest"));

  std::vector<uint8_t> enc = EncodeManifestAnswer(Sample(100));
  auto z = *CompressManifest(enc);
  ManifestDecompressor trunc;
  REQUIRE(trunc.Feed(std::span<const uint8_t>(z).first(z.size() - 3)).ok());
  CHECK_THAT(trunc.End().status().message(), Catch::Contains("truncated"));

  // 64 MiB of zeros compress to a few KiB; a 1 MiB cap stops it early.
  std::vector<uint8_t> zeros(64u << 20, 0);
  std::vector<uint8_t> bomb(ZSTD_compressBound(zeros.size()));
  bomb.resize(ZSTD_compress(bomb.data(), bomb.size(), zeros.data(), zeros.size(), 1));
  ManifestDecompressor capped(1u << 20);
  Status b = capped.Feed(bomb);
  CHECK(b.code() == Code::kData);
  CHECK_THAT(b.message(), Catch::Contains("exceeds"));
}

}  // namespace
}  // namespace lifeboat::syncproto
