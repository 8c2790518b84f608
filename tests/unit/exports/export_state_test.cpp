// The exporter's persisted state (exports/internal/export_state.h): a base
// plus an append-only log, through the exporter and directly.
#include "exports/internal/export_state.h"

#include <unistd.h>

#include <cstring>
#include <map>

#include "base/fault_env.h"
#include "exports/exporter.h"
#include "tests/unit/exports/test_util.h"

namespace lifeboat::exports {
namespace {

using internal::CacheEntry;
using internal::ExportStateFile;
using internal::JournalEntry;
using internal::State;
using syncproto::FileEntry;
using syncproto::ManifestAnswer;
using testing::DirExport;
using testing::TempDir;
using testing::Write;

uint64_t SizeOf(const std::string& path) {
  auto st = Env::Default()->Stat(path);
  REQUIRE(st.ok());
  return st->size;
}

std::string ReadAll(const std::string& path) { return testing::Read(path); }

void Overwrite(const std::string& path, const std::string& data) {
  REQUIRE(WriteStringToFile(*Env::Default(), path, data).ok());
}

// ---- Through the exporter ----------------------------------------------------

struct Fixture : testing::ExportFixture {
  std::string state = tmp / "state";
  std::string base = state + "/" + internal::kStateFile;
  std::string log = state + "/" + internal::kStateLogFile;

  // `files` more small files in the imgapi dataset (a large record is what
  // makes a save write a new base).
  explicit Fixture(int files = 0) {
    for (int i = 0; i < files; ++i) Write(Many(i), "file " + std::to_string(i));
  }
  std::string Many(int i) const {
    return exp.root + "/datasets/" + exp.imgapi + "/many/d" + std::to_string(i / 100) + "/f" +
           std::to_string(i);
  }
  std::string Edited() const { return exp.root + "/datasets/" + exp.ufds + "/ldap/data.mdb"; }

  std::unique_ptr<Exporter> Open(Env& with) {
    ExporterOptions o;
    o.provider = provider.get();
    o.state_dir = state;
    o.node_uuid = "564dd1ac-164d-cc50-247c-b2eb0cf21ce5";
    o.node_name = "headnode0";
    o.racy_window_ms = 0;
    auto e = Exporter::Open(with, clock, o);
    REQUIRE(e.ok());
    return std::move(*e);
  }
  std::unique_ptr<Exporter> Open() { return Open(env); }
};

ManifestAnswer Since(Exporter& e, uint64_t g, const std::string& boot) {
  auto view = e.OpenView();
  REQUIRE(view.ok());
  auto a = (*view)->ManifestSince(g, boot, {});
  REQUIRE(a.ok());
  return *a;
}

std::map<std::string, FileEntry> ByPath(const std::vector<FileEntry>& files) {
  std::map<std::string, FileEntry> out;
  for (const auto& f : files) out[f.path] = f;
  return out;
}

void CheckSameAnswer(const ManifestAnswer& a, const ManifestAnswer& b) {
  CHECK(a.kind == b.kind);
  CHECK(a.manifest.generation == b.manifest.generation);
  CHECK(a.manifest.boot_id == b.manifest.boot_id);
  CHECK(a.removed == b.removed);
  auto fa = ByPath(a.manifest.files), fb = ByPath(b.manifest.files);
  CHECK(fa.size() == fb.size());
  for (const auto& [path, f] : fa) {
    INFO(path);
    REQUIRE(fb.count(path));
    CHECK(f == fb.at(path));
  }
}

TEST_CASE("a changed scan appends a record of its change, not the whole state") {
  Fixture f(2000);
  auto e = f.Open();
  REQUIRE(e->Rescan().ok());
  const uint64_t base = SizeOf(f.base);
  const uint64_t log = SizeOf(f.log);
  const auto base_ino = Env::Default()->Stat(f.base)->ino;
  CHECK(base > 2000 * 100);

  Write(f.Edited(), std::string(5000, '\7'));
  f.env.ResetCounts();
  auto s = e->Rescan();
  REQUIRE(s.ok());
  CHECK(s->changed);
  CHECK(s->hashed_files == 1);
  const uint64_t grown = SizeOf(f.log) - log;
  INFO("base " << base << " bytes, one edit appended " << grown);
  CHECK(grown > 0);
  CHECK(grown < 2000);        // the record of one entry and its journal entry
  CHECK(grown < base / 100);  // O(changes), not O(files)
  CHECK(SizeOf(f.base) == base);
  CHECK(Env::Default()->Stat(f.base)->ino == base_ino);  // not rewritten
  CHECK(f.env.Count(EnvOp::kSync) == 1);                 // one fdatasync
  CHECK(f.env.Count(EnvOp::kRename) == 0);
  CHECK(f.env.Count(EnvOp::kSyncDir) == 0);

  // A no-change scan writes nothing.
  f.env.ResetCounts();
  REQUIRE(e->Rescan().ok());
  CHECK(f.env.MutatingCount() == 0);
}

TEST_CASE("a restart after changed scans restores the generation, journal and cache") {
  Fixture f;
  std::string boot;
  uint64_t first = 0, last = 0;
  ManifestAnswer before;
  {
    auto e = f.Open();
    REQUIRE(e->Rescan().ok());
    first = e->generation();
    boot = e->boot_id();
    const std::string ds = f.exp.root + "/datasets/" + f.exp.sapi;
    Write(f.Edited(), std::string(4096, '\2'));
    REQUIRE(e->Rescan().ok());
    Write(ds + "/added.txt", "added");
    REQUIRE(e->Rescan().ok());
    REQUIRE(::unlink((ds + "/sapi/db.json").c_str()) == 0);
    REQUIRE(e->Rescan().ok());
    Write(ds + "/added.txt", "changed again");
    REQUIRE(e->Rescan().ok());
    last = e->generation();
    CHECK(last == first + 4);
    before = Since(*e, first, boot);
    CHECK(before.kind == ManifestAnswer::Kind::kDelta);
    CHECK(before.removed.size() == 1);
  }
  CHECK(SizeOf(f.log) > 0);  // the changes are in the log, not (only) a base
  auto e = f.Open();
  CHECK(e->generation() == last);
  CHECK(e->boot_id() == boot);
  auto s = e->Rescan();
  REQUIRE(s.ok());
  CHECK(s->hashed_files == 0);  // the stat cache came back whole
  CHECK_FALSE(s->changed);
  CheckSameAnswer(Since(*e, first, boot), before);
  CHECK(Since(*e, last, boot).kind == ManifestAnswer::Kind::kUnchanged);
}

TEST_CASE("a torn last record is cut and its generation was never served") {
  Fixture f;
  auto e = f.Open();
  REQUIRE(e->Rescan().ok());
  const uint64_t g = e->generation();
  const std::string boot = e->boot_id();
  const uint64_t log = SizeOf(f.log);

  // The append fails half-way (a disk that filled up): nothing is served.
  Write(f.Edited(), std::string(4096, '\2'));
  f.env.PartialWrites(true);
  f.env.FailNth(EnvOp::kWrite, 1, EIO);
  CHECK_FALSE(e->Rescan().ok());
  CHECK_FALSE(e->OpenView().ok());
  f.env.ClearFaults();
  CHECK(e->generation() == g);
  CHECK(SizeOf(f.log) > log);  // half a record
  {
    // A crash here: the restart cuts the torn record.
    auto again = f.Open(*Env::Default());
    CHECK(again->generation() == g);
    CHECK(again->boot_id() == boot);
    CHECK(Since(*again, g, boot).kind != ManifestAnswer::Kind::kUnchanged);  // the edit, as new
    CHECK(again->generation() == g + 1);
  }
  // The next save never appends after a torn record.
  auto reopened = f.Open(*Env::Default());
  CHECK(reopened->generation() == g + 1);
  auto s = reopened->Rescan();
  REQUIRE(s.ok());
  CHECK(s->hashed_files == 0);
  CHECK_FALSE(s->changed);

  // A record cut short by a crash during its append (never synced, so never
  // served) is cut too: the state is the one before it.
  reopened.reset();
  {
    auto e2 = f.Open(*Env::Default());
    Write(f.Edited(), std::string(100, '\3'));
    REQUIRE(e2->Rescan().ok());
    CHECK(e2->generation() == g + 2);
  }
  const std::string whole = ReadAll(f.log);
  REQUIRE(whole.size() > 40);
  Overwrite(f.log, whole.substr(0, whole.size() - 7));
  auto cut = f.Open(*Env::Default());
  CHECK(cut->generation() == g + 1);
  CHECK(cut->boot_id() == boot);
  CHECK_FALSE(Exists(*Env::Default(), f.log + ".corrupt"));
  REQUIRE(cut->Rescan().ok());
  CHECK(cut->generation() == g + 2);
}

TEST_CASE("a corrupt record followed by valid ones starts a new lineage") {
  Fixture f;
  std::string boot;
  {
    auto e = f.Open();
    REQUIRE(e->Rescan().ok());
    for (int i = 0; i < 3; ++i) {
      Write(f.Edited(), std::string(100 + i, '\4'));
      REQUIRE(e->Rescan().ok());
    }
    CHECK(e->generation() == 4);
    boot = e->boot_id();
  }
  std::string log = ReadAll(f.log);
  const size_t second = log.find("LBXR", 1);  // the second record
  REQUIRE(second != std::string::npos);
  REQUIRE(log.find("LBXR", second + 1) != std::string::npos);  // and one after it
  log[second + 30] ^= 0x40;                                    // in its payload
  Overwrite(f.log, log);
  auto e = f.Open();
  CHECK(e->boot_id() != boot);
  REQUIRE(e->Rescan().ok());
  CHECK(e->generation() == 1);
  CHECK(Exists(*Env::Default(), f.base + ".corrupt"));
  CHECK(Exists(*Env::Default(), f.log + ".corrupt"));
  // The new lineage persists.
  e.reset();
  auto again = f.Open();
  CHECK(again->generation() == 1);
}

TEST_CASE("a large change writes a new base and empties the log") {
  Fixture f(500);
  auto e = f.Open();
  REQUIRE(e->Rescan().ok());
  Write(f.Edited(), std::string(100, '\5'));
  REQUIRE(e->Rescan().ok());
  CHECK(SizeOf(f.log) > 0);
  const auto base_ino = Env::Default()->Stat(f.base)->ino;
  for (int i = 0; i < 450; ++i) Write(f.Many(i), "rewritten " + std::to_string(i));
  auto s = e->Rescan();
  REQUIRE(s.ok());
  CHECK(s->hashed_files == 450);
  CHECK(Env::Default()->Stat(f.base)->ino != base_ino);  // renamed in
  CHECK(SizeOf(f.log) == 0);
  const uint64_t g = e->generation();
  e.reset();
  auto again = f.Open();
  CHECK(again->generation() == g);
  auto r = again->Rescan();
  REQUIRE(r.ok());
  CHECK(r->hashed_files == 0);
  CHECK_FALSE(r->changed);
}

const EnvOp kMutating[] = {EnvOp::kOpenWrite, EnvOp::kWrite,   EnvOp::kSync,    EnvOp::kMakeDir,
                           EnvOp::kRename,    EnvOp::kLink,    EnvOp::kSymlink, EnvOp::kRemoveFile,
                           EnvOp::kRemoveDir, EnvOp::kSyncDir, EnvOp::kSetMode, EnvOp::kSetMtime,
                           EnvOp::kCopyFile};

// The edit of one scan: small (an append) or large (a new base).
void Edit(Fixture& f, bool large, int round) {
  Write(f.Edited(), std::string(100 + round, '\6'));
  if (large) {
    for (int i = 0; i < 450; ++i) Write(f.Many(i), std::to_string(round) + " " + std::to_string(i));
  }
}

// Mutating calls of one clean changed scan, by op.
std::map<EnvOp, uint64_t> CountSites(bool large) {
  Fixture f(large ? 500 : 0);
  auto e = f.Open();
  REQUIRE(e->Rescan().ok());
  Edit(f, large, 1);
  f.env.ResetCounts();
  REQUIRE(e->Rescan().ok());
  std::map<EnvOp, uint64_t> sites;
  for (EnvOp op : kMutating) {
    if (f.env.Count(op) > 0) sites[op] = f.env.Count(op);
  }
  return sites;
}

// A changed scan whose n-th `op` fails (sticky) with `err`, a failing write
// leaving half its data.
void RunFaulted(bool large, EnvOp op, uint64_t n, int err) {
  Fixture f(large ? 500 : 0);
  auto e = f.Open();
  REQUIRE(e->Rescan().ok());
  const uint64_t g = e->generation();
  Edit(f, large, 1);
  f.env.FailNth(op, n, err, /*sticky=*/true);
  f.env.PartialWrites(true);  // a failing write leaves half its bytes
  auto failed = e->Rescan();
  f.env.ClearFaults();
  REQUIRE_FALSE(failed.ok());
  CHECK_THAT(failed.status().message(), Catch::Contains(std::strerror(err)));
  CHECK(e->generation() == g);  // nothing served
  {
    // A crash right here: the state is the old scan's or the new one's.
    TempDir copy;
    testing::CopyTree(f.state, copy / "state");
    ExporterOptions o;
    o.provider = f.provider.get();
    o.state_dir = copy / "state";
    o.racy_window_ms = 0;
    auto crashed = Exporter::Open(*Env::Default(), f.clock, o);
    REQUIRE(crashed.ok());
    const uint64_t loaded = (*crashed)->generation();
    CHECK((loaded == g || loaded == g + 1));
    CHECK((*crashed)->boot_id() == e->boot_id());
    auto s = (*crashed)->Rescan();
    REQUIRE(s.ok());
    if (loaded == g + 1) CHECK(s->hashed_files == 0);  // the new scan's cache came back whole
    CHECK((*crashed)->generation() == g + 1);
  }
  // Room again: the next scan, same process, succeeds and persists.
  auto s = e->Rescan();
  REQUIRE(s.ok());
  CHECK(e->generation() == g + 1);
  Edit(f, false, 2);
  REQUIRE(e->Rescan().ok());
  CHECK(e->generation() == g + 2);
  const std::string boot = e->boot_id();
  auto before = e->current();
  e.reset();
  auto again = f.Open(*Env::Default());
  CHECK(again->generation() == g + 2);
  CHECK(again->boot_id() == boot);
  auto r = again->Rescan();
  REQUIRE(r.ok());
  CHECK(r->hashed_files == 0);
  CHECK_FALSE(r->changed);
  CHECK(ByPath(again->current()->files) == ByPath(before->files));
}

TEST_CASE("ENOSPC and EIO at every write site of a state save fail the scan cleanly") {
  for (bool large : {false, true}) {
    std::map<EnvOp, uint64_t> sites = CountSites(large);
    if (large) {
      CHECK(sites.count(EnvOp::kRename));  // a new base
    } else {
      CHECK(sites.size() == 2);  // one append, one fdatasync
      CHECK(sites[EnvOp::kWrite] == 1);
      CHECK(sites[EnvOp::kSync] == 1);
    }
    for (int err : {ENOSPC, EIO}) {
      for (const auto& [op, count] : sites) {
        for (uint64_t n = 1; n <= count; ++n) {
          INFO((large ? "new base: " : "append: ")
               << EnvOpName(op) << " #" << n << " fails with " << std::strerror(err));
          RunFaulted(large, op, n, err);
        }
      }
    }
  }
}

// ---- ExportStateFile directly --------------------------------------------------

CacheEntry Entry(const std::string& path, int version) {
  CacheEntry c;
  c.path = path;
  c.size = 100 + version;
  c.mode = 0644;
  c.mtime_ns = version;
  c.ctime_ns = version;
  c.ino = 1000 + version;
  c.digest = Xxh3Digest(path + std::to_string(version));
  return c;
}

// A state of `files` entries, `version` of each; generation `g` with one
// journal entry per generation (at most 4 kept).
State MakeState(const std::string& boot, uint64_t g, int files, int version) {
  State s;
  s.boot_id = boot;
  s.generation = g;
  for (uint64_t k = g > 4 ? g - 3 : 1; k <= g; ++k) {
    auto j = std::make_shared<JournalEntry>();
    j->generation = k;
    j->changed.push_back("f" + std::to_string(k));
    s.journal.push_back(std::move(j));
  }
  s.instances.push_back({"uuid-" + std::to_string(g % 3), "alias", "svc", "", {}});
  internal::CacheBuilder cache;  // 16 files a directory, and a few at the top
  for (int i = 0; i < files; ++i) {
    char name[32];
    std::snprintf(name, sizeof(name), i % 50 == 0 ? "f%05d" : "d%02d/f%05d", i / 16, i);
    cache.Add(Entry(name, i < version ? version : 0));
  }
  s.cache = std::make_shared<const internal::Cache>(cache.Finish());
  return s;
}

void CheckSameState(const State& a, const State& b) {
  CHECK(a.generation == b.generation);
  CHECK(a.boot_id == b.boot_id);
  REQUIRE(a.journal.size() == b.journal.size());
  for (size_t k = 0; k < a.journal.size(); ++k) {
    CHECK(a.journal[k]->generation == b.journal[k]->generation);
    CHECK(a.journal[k]->changed == b.journal[k]->changed);
  }
  CHECK(a.instances == b.instances);
  CHECK(a.images == b.images);
  const auto want = a.cache->Sorted();
  const auto got = b.cache->Sorted();
  REQUIRE(want.size() == got.size());
  for (size_t k = 0; k < want.size(); ++k) {
    INFO(k);
    CHECK(want[k]->SamePersisted(*got[k]));
  }
}

TEST_CASE("the state log is compacted, and a crash between the new base and the log reset loads") {
  TempDir tmp;
  const std::string dir = tmp / "state";
  const std::string log = dir + "/" + internal::kStateLogFile;
  ExportStateFile::Options small;
  small.min_log_limit = 0;  // half the base
  State loaded;
  auto file = ExportStateFile::Open(*Env::Default(), dir, &loaded, small);
  REQUIRE(file.ok());
  const std::string boot = loaded.boot_id;
  int compactions = 0;
  for (uint64_t g = 1; g <= 40; ++g) {
    const uint64_t id = (*file)->base_id();
    const std::string log_before = ReadAll(log);
    const State next = MakeState(boot, g, 200, static_cast<int>(g));
    REQUIRE((*file)->Save(next).ok());
    CHECK((*file)->log_bytes() <= std::max<uint64_t>((*file)->base_bytes() / 2, 0));
    if ((*file)->base_id() != id) {
      ++compactions;
      CHECK((*file)->log_bytes() == 0);
      // A crash after the new base, before the log was emptied: the old
      // records name the old base and are ignored.
      TempDir crash;
      testing::CopyTree(dir, crash / "state");
      Overwrite(crash / "state/" + internal::kStateLogFile, log_before);
      State s;
      auto reopened = ExportStateFile::Open(*Env::Default(), crash / "state", &s, small);
      REQUIRE(reopened.ok());
      CheckSameState(s, next);
      // And the next save after that restart is kept.
      const State after = MakeState(boot, g + 1, 200, static_cast<int>(g + 1));
      REQUIRE((*reopened)->Save(after).ok());
      reopened->reset();
      State s2;
      REQUIRE(ExportStateFile::Open(*Env::Default(), crash / "state", &s2, small).ok());
      CheckSameState(s2, after);
    }
  }
  CHECK(compactions >= 2);
  file->reset();
  State s;
  REQUIRE(ExportStateFile::Open(*Env::Default(), dir, &s, small).ok());
  CheckSameState(s, MakeState(boot, 40, 200, 40));
}

TEST_CASE("a state of the previous format loads, and its first save writes a new base") {
  TempDir tmp;
  const std::string dir = tmp / "state";
  State old = MakeState("boot-of-st4", 7, 50, 3);
  // LBEXPST4 is LBEXPST5 without the base id: build one from an encoded base.
  std::string v5 = internal::EncodeBase(old, 42);
  std::string v4 = "LBEXPST4" + v5.substr(16, v5.size() - 16 - 16);
  Digest128 sum = Xxh3Digest(v4);
  v4.append(reinterpret_cast<const char*>(sum.bytes.data()), 16);
  Write(dir + "/" + internal::kStateFile, v4);
  State s;
  auto file = ExportStateFile::Open(*Env::Default(), dir, &s);
  REQUIRE(file.ok());
  CheckSameState(s, old);
  CHECK((*file)->base_id() == 0);
  const State next = MakeState("boot-of-st4", 8, 50, 4);
  REQUIRE((*file)->Save(next).ok());
  CHECK((*file)->base_id() != 0);
  CHECK(ReadAll(dir + "/" + internal::kStateFile).starts_with("LBEXPST5"));
  file->reset();
  State s2;
  REQUIRE(ExportStateFile::Open(*Env::Default(), dir, &s2).ok());
  CheckSameState(s2, next);
}

}  // namespace
}  // namespace lifeboat::exports
