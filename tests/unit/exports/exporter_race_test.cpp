// Whoever can write in a dataset (a zone's root, for a delegated dataset)
// can swap a directory for a symlink while the exporter scans it. Nothing
// outside the dataset may then be exported under the dataset's paths.
#include <unistd.h>

#include <string>

#include "base/fault_env.h"
#include "exports/exporter.h"
#include "tests/unit/exports/test_util.h"

namespace lifeboat::exports {
namespace {

using syncproto::FileEntry;
using testing::Write;

const std::string kSecret = "root:secret-hash-from-outside-the-dataset\n";

struct Fixture : testing::ExportFixture {
  std::string ds = exp.root + "/datasets/" + exp.sapi;  // holds sapi/nested/deeper/deepest/leaf.txt
  std::string outside = tmp / "outside";

  Fixture() {
    Write(outside + "/deeper/secret.txt", kSecret);
    Write(outside + "/deeper/deepest/leaf.txt", kSecret);
  }

  // Replaces the dataset's sapi/nested by a symlink to `outside`.
  void SwapNestedForSymlink() {
    REQUIRE(::rename((ds + "/sapi/nested").c_str(), (ds + "/sapi/nested.moved").c_str()) == 0);
    REQUIRE(::symlink(outside.c_str(), (ds + "/sapi/nested").c_str()) == 0);
  }

  std::shared_ptr<const syncproto::Manifest> Scan() {
    ExporterOptions o;
    o.provider = provider.get();
    o.state_dir = tmp / "state";
    o.racy_window_ms = 0;
    auto e = Exporter::Open(env, clock, std::move(o));
    REQUIRE(e.ok());
    REQUIRE((*e)->Rescan().ok());
    return (*e)->current();
  }

  void CheckNothingFromOutside(const syncproto::Manifest& m, const std::string& reason) {
    const Digest128 secret = Xxh3Digest(kSecret);
    for (const FileEntry& f : m.files) {
      INFO(f.path);
      CHECK(f.path.find("secret.txt") == std::string::npos);
      CHECK_FALSE(f.digest == secret);
    }
    bool warned = false;
    for (const auto& i : m.instances) {
      for (const auto& w : i.warnings) warned |= w.reason == reason;
    }
    CHECK(warned);
  }
};

TEST_CASE(
    "a directory above the one being listed, swapped for a symlink, exports nothing outside") {
  Fixture f;
  int stats_of_deeper = 0;
  f.env.SetBeforeCall([&](EnvOp op, const std::string& path) {
    // The first stat is the parent's listing; the second, the listing of
    // deeper itself: the swap lands between the two.
    if (op == EnvOp::kStat && path == f.ds + "/sapi/nested/deeper" && ++stats_of_deeper == 2) {
      f.SwapNestedForSymlink();
    }
  });
  auto m = f.Scan();
  REQUIRE(stats_of_deeper >= 2);
  f.CheckNothingFromOutside(*m, "directory replaced while being scanned");
}

TEST_CASE("a directory swapped for a symlink while a file in it is read exports nothing outside") {
  Fixture f;
  bool swapped = false;
  f.env.SetBeforeCall([&](EnvOp op, const std::string& path) {
    if (op == EnvOp::kOpenRead && path == f.ds + "/sapi/nested/deeper/deepest/leaf.txt" &&
        !swapped) {
      swapped = true;
      f.SwapNestedForSymlink();
    }
  });
  auto m = f.Scan();
  REQUIRE(swapped);
  f.CheckNothingFromOutside(*m, "replaced while being read");
}

TEST_CASE(
    "a directory swapped for a symlink while a symlink in it is read exports no outside target") {
  Fixture f;
  REQUIRE(::symlink("deepest/leaf.txt", (f.ds + "/sapi/nested/deeper/link").c_str()) == 0);
  REQUIRE(::symlink("secret.txt", (f.outside + "/deeper/link").c_str()) == 0);
  bool swapped = false;
  f.env.SetBeforeCall([&](EnvOp op, const std::string& path) {
    if (op == EnvOp::kReadLink && path == f.ds + "/sapi/nested/deeper/link" && !swapped) {
      swapped = true;
      f.SwapNestedForSymlink();
    }
  });
  auto m = f.Scan();
  REQUIRE(swapped);
  for (const FileEntry& e : m->files) {
    INFO(e.path);
    CHECK(e.target != "secret.txt");
  }
  f.CheckNothingFromOutside(*m, "replaced while being read");
}

}  // namespace
}  // namespace lifeboat::exports
