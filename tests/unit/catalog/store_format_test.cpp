// Generation descriptions keep names as bytes: an export path, symlink target
// or hard-link name that is not UTF-8 is written as "<key>_hex" and read back
// exactly; descriptions written before that (plain "path") still read.
#include <catch2/catch.hpp>

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
