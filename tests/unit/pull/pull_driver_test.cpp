#include "pull/pull_driver.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <random>

#include "catalog/store.h"
#include "exports/exporter.h"
#include "exports/provider.h"
#include "syncproto/session.h"
#include "tests/unit/catalog/test_util.h"

// A full pull, synchronously: a syncproto::ServerSession over a real
// exporter of a dir export, connected by an in-memory pipe to a PullDriver
// over a Store in a temp dir.

namespace lifeboat::pull {
namespace {

using catalog::testing::DirExport;
using catalog::testing::FileOf;
using catalog::testing::Read;
using catalog::testing::TempDir;
using catalog::testing::Write;

const std::string kKey = "0123456789abcdef-cluster-key";
const std::string kPeer = "headnode1";

std::string RandomBytes(uint64_t seed, size_t n) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

// What the pipe does to the bytes the server sends.
struct Wire {
  // Stop delivering once this many bytes went from the server to the driver
  // (the connection is cut there).
  uint64_t cut_after = std::numeric_limits<uint64_t>::max();
  // Called on each delivery before the driver sees it.
  std::function<void(std::vector<uint8_t>&)> tamper;
};

struct PipeEnd {
  Status driver;           // the driver's connection-level status
  bool cut = false;        // Wire::cut_after was reached
  uint64_t delivered = 0;  // server -> driver bytes
};

// Moves bytes both ways until neither side has anything to say, a side
// fails, or the wire is cut.
PipeEnd RunPipe(PullDriver& d, syncproto::ServerSession& s, const Wire& wire = {}) {
  PipeEnd end;
  for (int guard = 0; guard < 1'000'000; ++guard) {
    bool moved = false;
    end.driver = d.Pump();
    if (!end.driver.ok()) return end;
    if (std::vector<uint8_t> out = d.TakeOutput(); !out.empty()) {
      s.Feed(out).IgnoreError();
      moved = true;
    }
    s.Pump().IgnoreError();
    std::vector<uint8_t> in = s.TakeOutput();
    if (in.empty() && !moved) return end;
    if (end.delivered + in.size() >= wire.cut_after) {
      in.resize(wire.cut_after - end.delivered);
      end.cut = true;
    }
    if (wire.tamper) wire.tamper(in);
    end.delivered += in.size();
    end.driver = d.Feed(in);
    if (!end.driver.ok() || end.cut) return end;
  }
  FAIL("the pipe did not settle");
  return end;
}

struct Fixture {
  TempDir tmp;
  DirExport exp{tmp / "export"};
  ManualClock clock;
  std::unique_ptr<exports::Provider> provider = exports::MakeDirProvider(*Env::Default(), exp.root);
  std::unique_ptr<exports::Exporter> exporter =
      catalog::testing::OpenPeerExporter(clock, provider.get(), tmp / "export-state");
  std::unique_ptr<catalog::Store> store;
  uint64_t files_served = 0;  // by the server of the last pull

  // An incompressible dataset file, so a byte of it can be found on the wire.
  std::string blob_rel;

  Fixture() {
    catalog::StoreOptions o;
    o.data_dir = tmp / "data";
    auto s = catalog::Store::Open(*Env::Default(), clock, o);
    REQUIRE(s.ok());
    store = std::move(*s);
    blob_rel = "datasets/" + exp.imgapi + "/blob.bin";
    Write(exp.root + "/" + blob_rel, RandomBytes(1, 200'000));
  }

  std::unique_ptr<PullDriver> Begin() {
    PullDriverOptions o;
    o.peer = kPeer;
    o.cluster_key = kKey;
    o.self = {"00000000-0000-4000-8000-0000000000aa", "headnode0"};
    o.session.max_in_flight = 4;
    auto d = PullDriver::Begin(*store, o);
    REQUIRE(d.ok());
    REQUIRE((*d)->Start().ok());
    return std::move(*d);
  }

  syncproto::ServerSession Server() {
    return syncproto::ServerSession(exporter.get(), kKey,
                                    {"564dd1ac-164d-cc50-247c-b2eb0cf21ce5", kPeer});
  }

  // A pull that runs to its end: committed when the driver finished its
  // transfers, else aborted with the driver's error (or a cut connection).
  Status Pull(const Wire& wire = {}) {
    auto d = Begin();
    syncproto::ServerSession server(exporter.get(), kKey,
                                    {"564dd1ac-164d-cc50-247c-b2eb0cf21ce5", kPeer});
    PipeEnd end = RunPipe(*d, server, wire);
    files_served = server.stats().files_served;
    if (end.driver.ok() && d->error().ok() && d->transfers_done() && !end.cut) {
      return d->Commit().status();
    }
    Status why = !d->error().ok()   ? d->error()
                 : !end.driver.ok() ? end.driver
                                    : UnavailableError("connection cut");
    return d->Abort(why);
  }

  void PullOk() {
    Status st = Pull();
    INFO(st.ToString());
    REQUIRE(st.ok());
  }

  // The bytes of export path `rel` in the current generation of imgapi0.
  std::string Held(const std::string& rel) {
    auto g = store->Instance(exp.imgapi);
    REQUIRE(g.ok());
    const std::string path = FileOf(*g, rel);
    REQUIRE(!path.empty());
    return Read(path);
  }

  uint64_t HeldGeneration() {
    auto p = store->Peer(kPeer);
    return p ? p->generation : 0;
  }
};

TEST_CASE("a pull lands every exported file with its content and commits it") {
  Fixture f;
  f.PullOk();
  CHECK(f.HeldGeneration() > 0);
  CHECK(f.store->Instances().size() == 3);
  CHECK(f.Held("datasets/" + f.exp.imgapi + "/images/ab/cd/file0") == std::string(100000, 'x'));
  CHECK(f.Held("datasets/" + f.exp.imgapi + "/etc/imgapi.config.json") == R"({"port": 8080})");
  CHECK(f.Held(f.blob_rel) == RandomBytes(1, 200'000));
}

TEST_CASE("content the store already holds is not requested again") {
  Fixture f;
  f.PullOk();
  // One file changes; another appears with content the store already holds.
  Write(f.exp.root + "/datasets/" + f.exp.imgapi + "/etc/imgapi.config.json", R"({"port": 8081})");
  Write(f.exp.root + "/datasets/" + f.exp.imgapi + "/copy.mdb", std::string(4096, '\1'));
  auto d = f.Begin();
  auto server = f.Server();
  PipeEnd end = RunPipe(*d, server);
  REQUIRE(end.driver.ok());
  REQUIRE(d->error().ok());
  REQUIRE(d->transfers_done());
  CHECK(d->counts().files_total == 1);
  CHECK(server.stats().files_served == 1);
  REQUIRE(d->Commit().ok());
  CHECK(f.Held("datasets/" + f.exp.imgapi + "/etc/imgapi.config.json") == R"({"port": 8081})");
  CHECK(f.Held("datasets/" + f.exp.imgapi + "/copy.mdb") == std::string(4096, '\1'));
}

TEST_CASE("a pull whose peer answers nothing changed transfers nothing and stays current") {
  Fixture f;
  f.PullOk();
  const uint64_t gen = f.HeldGeneration();
  auto d = f.Begin();
  auto server = f.Server();
  REQUIRE(RunPipe(*d, server).driver.ok());
  REQUIRE(d->transfers_done());
  CHECK(d->unchanged());
  CHECK(server.stats().files_served == 0);
  REQUIRE(d->Commit().ok());
  CHECK(f.HeldGeneration() == gen);
}

TEST_CASE("a byte changed on the wire fails the pull and leaves the previous generation current") {
  Fixture f;
  f.PullOk();
  const uint64_t gen = f.HeldGeneration();
  const std::string fresh = RandomBytes(2, 150'000);
  Write(f.exp.root + "/" + f.blob_rel, fresh);
  // Flip one byte of the new content where it crosses the wire.
  const std::vector<uint8_t> needle(fresh.begin() + 70'000, fresh.begin() + 70'064);
  int flipped = 0;
  Wire wire;
  wire.tamper = [&](std::vector<uint8_t>& bytes) {
    auto it = std::search(bytes.begin(), bytes.end(), needle.begin(), needle.end());
    if (it == bytes.end()) return;
    *it ^= 0x5a;
    ++flipped;
  };
  Status st = f.Pull(wire);
  INFO("pull: " << st.ToString() << " files served " << f.files_served);
  REQUIRE(flipped == 1);
  CHECK_FALSE(st.ok());
  CHECK_FALSE(st.retryable());
  CHECK_THAT(st.message(), Catch::Contains("digest mismatch") && Catch::Contains(f.blob_rel));
  CHECK(f.HeldGeneration() == gen);
  CHECK(f.Held(f.blob_rel) == RandomBytes(1, 200'000));
  // The failure is recorded for the operator.
  CHECK_THAT(f.store->Peer(kPeer)->last_error, Catch::Contains("digest mismatch"));
}

TEST_CASE(
    "a connection cut mid-transfer leaves the previous copy intact and the next pull completes") {
  Fixture f;
  f.PullOk();
  const uint64_t gen = f.HeldGeneration();
  const std::string fresh = RandomBytes(3, 300'000);
  Write(f.exp.root + "/" + f.blob_rel, fresh);
  Wire wire;
  wire.cut_after = 100'000;  // past the handshake and manifest, inside the blob
  Status st = f.Pull(wire);
  CHECK_FALSE(st.ok());
  CHECK_THAT(st.message(), Catch::Contains("in flight") && Catch::Contains(f.blob_rel));
  CHECK(f.HeldGeneration() == gen);
  CHECK(f.Held(f.blob_rel) == RandomBytes(1, 200'000));
  // Nothing of the cut pull is left in the way of the next one.
  f.PullOk();
  CHECK(f.HeldGeneration() > gen);
  CHECK(f.Held(f.blob_rel) == fresh);
}

TEST_CASE("a second pull of the same peer is refused while one is open") {
  Fixture f;
  auto first = f.Begin();
  PullDriverOptions o;
  o.peer = kPeer;
  o.cluster_key = kKey;
  auto second = PullDriver::Begin(*f.store, o);
  REQUIRE_FALSE(second.ok());
  CHECK(second.status().retryable());
  first->Abort(UnavailableError("test over")).IgnoreError();
  CHECK(PullDriver::Begin(*f.store, o).ok());
}

}  // namespace
}  // namespace lifeboat::pull
