// ENOSPC and EIO at every write site of a pull + commit (issue 8). The sites
// are enumerated by counting the mutating Env calls of a clean run (so the
// test follows the commit when its sync strategy changes), then each one is
// failed in turn, sticky like a full disk: the pull reports the injected
// error (operation, path, errno text), the previous generation stays current
// and verifies (unless the failure came after the commit point, and the
// error says so), and the next pull without faults succeeds in the same
// process.
#include <catch2/catch.hpp>
#include <cstring>

#include "base/fault_env.h"
#include "catalog/store.h"
#include "exports/exporter.h"
#include "exports/provider.h"
#include "tests/unit/catalog/test_util.h"

namespace lifeboat::catalog {
namespace {

using exports::Exporter;
using exports::MakeDirProvider;
using exports::Provider;
using testing::DirExport;
using testing::PullFrom;
using testing::Read;
using testing::TempDir;
using testing::Write;

struct Fixture {
  TempDir tmp;
  DirExport exp{tmp / "export"};
  ManualClock clock;
  std::unique_ptr<Provider> provider = MakeDirProvider(*Env::Default(), exp.root);
  std::unique_ptr<Exporter> exporter;
  std::string tmpl = tmp / "template";  // the catalog after a first pull
  std::string cfg;                      // a file the second pull changes
  std::string old_cfg, new_cfg;
  uint64_t old_generation = 0;
  // StoreOptions::bulk_pull_from of every store the test opens after
  // the first pull (1: every commit step is one syncfs).
  size_t bulk_pull_from = StoreOptions{}.bulk_pull_from;

  Fixture() {
    exporter = testing::OpenPeerExporter(clock, provider.get(), tmp / "export-state");
    {
      auto s = Open(*Env::Default(), tmpl);
      REQUIRE(PullFrom(*exporter, *s, "headnode1").ok());
      old_generation = s->Peer("headnode1")->generation;
    }
    // The second pull: an edit, a new file, a new instance's worth of data.
    cfg = "datasets/" + exp.imgapi + "/etc/imgapi.config.json";
    old_cfg = Read(exp.root + "/" + cfg);
    Write(exp.root + "/" + cfg, R"({"port": 9999, "new": true})");
    new_cfg = Read(exp.root + "/" + cfg);
    Write(exp.root + "/datasets/" + exp.sapi + "/sapi/brand-new.txt", std::string(70000, 'n'));
    Write(exp.root + "/datasets/" + exp.ufds + "/ldap/more.ldif", "dn: cn=more\n");
    clock.Advance(60'000);
  }

  std::unique_ptr<Store> Open(Env& env, const std::string& dir) {
    StoreOptions o;
    o.data_dir = dir;
    o.bulk_pull_from = bulk_pull_from;
    auto s = Store::Open(env, clock, o);
    REQUIRE(s.ok());
    return std::move(*s);
  }

  std::string HeldCfg(Store& s) {
    auto inst = s.Instance(exp.imgapi);
    if (!inst.ok()) return "<" + inst.status().ToString() + ">";
    return Read(testing::FileOf(*inst, cfg));
  }

  void ExpectOld(Store& s) {
    CHECK(s.Peer("headnode1")->generation == old_generation);
    CHECK(HeldCfg(s) == old_cfg);
    auto report = s.Verify();
    REQUIRE(report.ok());
    CHECK(report->ok());
  }

  void ExpectNew(Store& s) {
    CHECK(s.Peer("headnode1")->generation > old_generation);
    CHECK(HeldCfg(s) == new_cfg);
    auto report = s.Verify();
    REQUIRE(report.ok());
    CHECK(report->ok());
  }
};

const EnvOp kMutating[] = {EnvOp::kOpenWrite, EnvOp::kWrite,   EnvOp::kSync,    EnvOp::kMakeDir,
                           EnvOp::kRename,    EnvOp::kLink,    EnvOp::kSymlink, EnvOp::kRemoveFile,
                           EnvOp::kRemoveDir, EnvOp::kSyncDir, EnvOp::kSetMode, EnvOp::kSetMtime,
                           EnvOp::kCopyFile,  EnvOp::kSyncFs};

// What one faulted pull left behind.
struct Outcome {
  bool pulled = false;     // the pull reported success
  bool held_old = false;   // the previous generation is current
  bool held_new = false;   // the new generation is current
  bool committed = false;  // the pull failed after its commit point (it said so)
};

// The sites of a clean pull + commit: mutating Env calls by op.
std::map<EnvOp, uint64_t> CountSites(Fixture& f) {
  std::string dir = f.tmp / "count";
  testing::CopyTree(f.tmpl, dir);
  FaultEnv fenv(Env::Default());
  auto s = f.Open(fenv, dir);
  fenv.ResetCounts();
  REQUIRE(PullFrom(*f.exporter, *s, "headnode1").ok());
  std::map<EnvOp, uint64_t> sites;
  for (EnvOp op : kMutating) {
    if (fenv.Count(op) > 0) sites[op] = fenv.Count(op);
  }
  f.ExpectNew(*s);
  RemoveTree(*Env::Default(), dir).IgnoreError();
  return sites;
}

// Every occurrence of an op is failed in turn (~300 faulted pulls, ~30 s).
std::vector<uint64_t> Occurrences(uint64_t count) {
  std::vector<uint64_t> out;
  for (uint64_t n = 1; n <= count; ++n) out.push_back(n);
  return out;
}

// Pulls with the n-th `op` failing (sticky) with `err`; checks what any
// failure must leave: the error names the operation, path and errno; the
// catalog is entirely old or entirely new and verifies (old, unless the error
// says the pull is committed); the next pull
// without faults succeeds in the same process; a restart finds staging empty.
Outcome RunFaulted(Fixture& f, const std::string& dir, EnvOp op, uint64_t n, int err) {
  testing::CopyTree(f.tmpl, dir);
  FaultEnv fenv(Env::Default());
  auto s = f.Open(fenv, dir);
  fenv.FailNth(op, n, err, /*sticky=*/true);
  auto pulled = PullFrom(*f.exporter, *s, "headnode1");
  fenv.ClearFaults();
  Outcome o;
  o.pulled = pulled.ok();
  std::string held = f.HeldCfg(*s);
  uint64_t gen = s->Peer("headnode1")->generation;
  o.held_old = held == f.old_cfg && gen == f.old_generation;
  o.held_new = held == f.new_cfg && gen > f.old_generation;
  CHECK((held == f.old_cfg || held == f.new_cfg));  // the instance is old or new, never a mix
  auto report = s->Verify();
  REQUIRE(report.ok());
  CHECK(report->ok());
  if (o.pulled) {
    CHECK(o.held_new);  // a failed best-effort step (cleanup) must not lose the pull
  } else {
    const std::string& msg = pulled.status().message();
    o.committed = msg.find(" is committed, but ") != std::string::npos;
    // A failed pull changed nothing readers see, unless it failed after the
    // commit point: then everything is new and the error says it is committed.
    if (o.committed) {
      CHECK(o.held_new);
    } else {
      CHECK(o.held_old);
    }
    CHECK_THAT(msg, Catch::Contains(std::strerror(err)));
    CHECK_THAT(msg, Catch::Contains(std::string("injected fault: ") + EnvOpName(op)));
    CHECK_THAT(msg, Catch::Contains(dir));  // the path it failed on
    // The disk has room again: the next pull, same process, succeeds.
    auto again = PullFrom(*f.exporter, *s, "headnode1");
    INFO(again.status().ToString());
    REQUIRE(again.ok());
    f.ExpectNew(*s);
  }
  s.reset();
  auto reopened = f.Open(*Env::Default(), dir);
  auto staging = Env::Default()->ListDir(dir + "/.staging");
  REQUIRE(staging.ok());
  CHECK(staging->empty());
  f.ExpectNew(*reopened);
  RemoveTree(*Env::Default(), dir).IgnoreError();
  return o;
}

// Fails every write site of the fixture's second pull in turn, with ENOSPC
// and with EIO; returns the sites.
std::map<EnvOp, uint64_t> FailEverySite(Fixture& f) {
  std::map<EnvOp, uint64_t> sites = CountSites(f);
  uint64_t total = 0;
  for (const auto& [op, n] : sites) total += n;
  REQUIRE(sites.count(EnvOp::kWrite));
  REQUIRE(sites.count(EnvOp::kRename));
  REQUIRE(total >= 10);
  int runs = 0, failed = 0, tolerated = 0, failed_committed = 0;
  for (int err : {ENOSPC, EIO}) {
    for (const auto& [op, count] : sites) {
      for (uint64_t n : Occurrences(count)) {
        INFO(EnvOpName(op) << " #" << n << " of " << count << " fails with " << std::strerror(err));
        Outcome o = RunFaulted(f, f.tmp / ("run-" + std::to_string(runs++)), op, n, err);
        if (o.pulled) ++tolerated;
        if (!o.pulled) ++failed;
        if (o.committed) ++failed_committed;
      }
    }
  }
  std::string breakdown;
  for (const auto& [op, n] : sites) {
    breakdown += std::string(" ") + EnvOpName(op) + "=" + std::to_string(n);
  }
  WARN(total << " write sites per pull+commit (" << breakdown << "); " << runs
             << " faulted pulls: " << failed << " failed (" << failed_committed
             << " after the commit point), " << tolerated << " tolerated a failed step");
  CHECK(failed > 0);
  return sites;
}

}  // namespace

TEST_CASE("ENOSPC and EIO at every write site of a pull and commit: reported, never a mix") {
  Fixture f;
  std::map<EnvOp, uint64_t> sites = FailEverySite(f);
  CHECK(sites.count(EnvOp::kSync));  // a small pull fsyncs file by file
  CHECK_FALSE(sites.count(EnvOp::kSyncFs));
}

TEST_CASE("ENOSPC and EIO at every write site of a bulk pull (syncfs): reported, never a mix") {
  Fixture f;
  f.bulk_pull_from = 1;
  std::map<EnvOp, uint64_t> sites = FailEverySite(f);
  CHECK(sites.count(EnvOp::kSyncFs));
  CHECK_FALSE(sites.count(EnvOp::kSync));  // no file fsync'd one by one
}

}  // namespace lifeboat::catalog
