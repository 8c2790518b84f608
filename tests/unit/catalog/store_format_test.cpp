// Generation descriptions keep names as bytes: an export path, symlink target
// or hard-link name that is not UTF-8 is written as "<key>_hex" and read back
// exactly; descriptions written before that (plain "path") still read.
#include <catch2/catch.hpp>

#include <algorithm>

#include "base/text.h"
#include "catalog/internal/store_impl.h"

namespace lifeboat::catalog {
namespace {

TEST_CASE("entries with names that are not UTF-8 round-trip exactly", "[store_format]") {
  FileEntry link;
  link.path = "datasets/b2f1a9d4-7c3e-4f0a-9e57-2d1c6b8a4e10/link\xe9";
  link.kind = EntryKind::kSymlink;
  link.target = "caf\xe9.txt";
  link.mode = 0777;
  FileEntry file;
  file.path = "datasets/b2f1a9d4-7c3e-4f0a-9e57-2d1c6b8a4e10/esc\x1b\xff";
  file.kind = EntryKind::kFile;
  file.size = 3;
  file.hardlink_of = "datasets/b2f1a9d4-7c3e-4f0a-9e57-2d1c6b8a4e10/caf\xe9.txt";
  for (const FileEntry& e : {link, file}) {
    const std::string text = DumpJson(EntryToJson(e));
    CHECK(IsUtf8(text));
    auto back = EntryFromJson(json::parse(text));
    REQUIRE(back.ok());
    CHECK(*back == e);
  }
  CHECK(EntryToJson(link).contains("path_hex"));
}

TEST_CASE("a description's text reads back as it was, whatever its names hold", "[store_format]") {
  Description d;
  d.r.uuid = "b2f1a9d4-7c3e-4f0a-9e57-2d1c6b8a4e10";
  d.r.alias = "imgapi0";
  d.r.service = "imgapi";
  d.r.seq = 4;
  d.r.generation = 17;
  const std::string ds = "datasets/" + d.r.uuid + "/";
  for (std::string name :
       {std::string("plain"), std::string("quote\"back\\slash"), std::string("ctl\x01\x1f\n\t"),
        std::string("caf\xe9"), std::string("utf8-\xc3\xa9-\xe2\x82\xac")}) {
    FileEntry f;
    f.path = ds + name;
    f.kind = EntryKind::kFile;
    f.size = 3;
    f.mode = 0640;
    f.mtime_ns = -5;
    f.uid = 907;
    f.gid = 4294967295u;
    f.digest = Xxh3Digest(std::string_view("abc"));
    f.sha256 = Sha256Digest(std::string_view("abc"));
    d.files.push_back(f);
  }
  FileEntry link;
  link.path = ds + "zlink";
  link.kind = EntryKind::kSymlink;
  link.target = "caf\xe9\"";
  link.digest = Xxh3Digest(link.target);
  d.files.push_back(link);
  FileEntry dir;
  dir.path = ds + "zz";
  dir.kind = EntryKind::kDir;
  dir.mode = 0755;
  d.files.push_back(dir);
  d.files[1].hardlink_of = d.files[0].path;
  std::sort(d.files.begin(), d.files.end(),
            [](const FileEntry& a, const FileEntry& b) { return a.path < b.path; });
  const std::string text = EncodeDescription(d);
  CHECK(IsUtf8(text));
  auto back = DecodeDescription(text, "test");
  REQUIRE(back.ok());
  CHECK(back->files == d.files);
  CHECK(back->r.uuid == d.r.uuid);
  CHECK(back->r.seq == 4);
  CHECK(back->format_version == 2);  // a description listing every entry
  // Each entry is what EntryToJson says.
  auto j = json::parse(text);
  for (size_t i = 0; i < d.files.size(); ++i) CHECK(j["files"][i] == EntryToJson(d.files[i]));
}

TEST_CASE("a description written with plain names still reads", "[store_format]") {
  json j = json::parse(R"({"path": "vms/x.json", "kind": "file", "mode": 420,
                           "mtime_ns": 1, "size": 0})");
  auto e = EntryFromJson(j);
  REQUIRE(e.ok());
  CHECK(e->path == "vms/x.json");
  json bad = json::parse(R"({"path_hex": "2e2e", "kind": "file", "mode": 420, "mtime_ns": 1})");
  CHECK(EntryFromJson(bad).status().code() == Code::kData);  // ".." is refused as before
}

}  // namespace
}  // namespace lifeboat::catalog
