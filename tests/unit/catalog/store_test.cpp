#include "catalog/store.h"

#include <sys/stat.h>
#include <atomic>
#include <fstream>

#include <mutex>
#include <set>
#include <thread>

#include "base/fault_env.h"
#include "catalog/internal/store_impl.h"
#include "catalog/trees.h"
#include "exports/exporter.h"
#include "tests/unit/catalog/test_util.h"

namespace lifeboat::catalog {
namespace {

using exports::Exporter;
using exports::MakeDirProvider;
using exports::Provider;
using syncproto::EntryKind;
using syncproto::FileEntry;
using syncproto::ManifestAnswer;
using testing::DirExport;
using testing::FileOf;
using testing::PullFrom;
using testing::Read;
using testing::TempDir;
using testing::Write;

constexpr int64_t kHour = 3600 * 1000;

struct StoreFixture {
  TempDir tmp;
  DirExport exp{tmp / "export"};
  ManualClock clock;
  std::unique_ptr<Provider> provider = MakeDirProvider(*Env::Default(), exp.root);
  std::unique_ptr<Exporter> exporter;
  std::string data_dir = tmp / "data";

  StoreFixture() { OpenExporter(); }

  void OpenExporter() {
    exporter.reset();  // one exporter on its state at a time
    exporter = testing::OpenPeerExporter(clock, provider.get(), tmp / "export-state");
  }

  std::unique_ptr<Store> OpenStore(Env& env, uint32_t gens = 3, int64_t grace = 24 * kHour) {
    StoreOptions o;
    o.data_dir = data_dir;
    o.retention.keep_last = gens;
    o.removed_grace_ms = grace;
    o.bulk_pull_from = bulk_pull_from;
    o.tree_shape = tree_shape;
    auto s = Store::Open(env, clock, o);
    REQUIRE(s.ok());
    return std::move(*s);
  }
  std::unique_ptr<Store> OpenStore(uint32_t gens = 3, int64_t grace = 24 * kHour) {
    return OpenStore(*Env::Default(), gens, grace);
  }
  // The store as the CLI opens it (read-only), beside a writable one.
  Result<std::unique_ptr<Store>> OpenReadOnly() {
    StoreOptions o;
    o.data_dir = data_dir;
    o.read_only = true;
    return Store::Open(*Env::Default(), clock, o);
  }
  std::string Ds(const std::string& uuid) const { return exp.root + "/datasets/" + uuid; }
  size_t bulk_pull_from = StoreOptions{}.bulk_pull_from;  // of the stores OpenStore opens
  TreeShape tree_shape;                                   // likewise
};

// One tree per directory with entries below it, none inline: the tests
// about trees (their syncs, damage, repair) get one per directory of the
// small fixture, where the default shape lists most of them inline.
constexpr TreeShape kTreePerDirectory{0, 0};

PlanSummary MustPull(StoreFixture& f, Store& store) {
  auto plan = PullFrom(*f.exporter, store, "headnode1");
  REQUIRE(plan.ok());
  return *plan;
}

// The store sets an image file's exported mtime after writing it. In a bulk
// pull the writes run on the write-behind thread, so FinishFile drains it
// first: a write landing after SetMtime would stamp the time of the write
// (that ordering is a race, so only likely to show here; the mtime itself
// is checked exactly, in both modes).
TEST_CASE("pulled images keep their exported mtimes, in a bulk pull too") {
  StoreFixture f;
  f.bulk_pull_from = GENERATE(StoreOptions{}.bulk_pull_from, size_t{1});
  INFO("bulk_pull_from " << f.bulk_pull_from);
  Env& env = *Env::Default();
  auto images = env.ListDir(f.exp.root + "/images");
  REQUIRE(images.ok());
  REQUIRE_FALSE(images->empty());
  const int64_t old_ns = int64_t{1577836800} * 1000000000 + 123456789;  // 2020-01-01, odd ns
  for (const DirEntry& img : *images) {
    for (const char* name : {"file", "manifest.json"}) {
      REQUIRE(env.SetMtime(f.exp.root + "/images/" + img.name + "/" + name, old_ns).ok());
    }
  }
  auto store = f.OpenStore();
  MustPull(f, *store);
  for (const DirEntry& img : *images) {
    for (const char* name : {"file", "manifest.json"}) {
      auto held = env.Stat(f.data_dir + "/images/" + img.name + "/" + name);
      REQUIRE(held.ok());
      CHECK(held->mtime_ns == old_ns);
    }
  }
}

// The view of `uuid`'s current generation shows its entries, each as it
// is (directories, symlink targets, files that are their objects: one
// inode), and nothing else.
void CheckView(StoreFixture& f, Store& store, const std::string& uuid) {
  auto gen = store.Instance(uuid);
  REQUIRE(gen.ok());
  const std::string view = f.data_dir + "/instances/" + uuid + "/current";
  Env& env = *Env::Default();
  std::set<std::string> want;  // every entry and the directories above it
  for (const StoredFile& sf : gen->files) {
    INFO(sf.entry.path);
    for (size_t slash = sf.entry.path.find('/'); slash != std::string::npos;
         slash = sf.entry.path.find('/', slash + 1)) {
      want.insert(sf.entry.path.substr(0, slash));
    }
    want.insert(sf.entry.path);
    const std::string at = view + "/" + sf.entry.path;
    switch (sf.entry.kind) {
      case EntryKind::kDir:
        CHECK(IsDirectory(env, at));
        break;
      case EntryKind::kFile: {
        // The view's file is the object (same inode), whose content it is.
        const std::string hex = sf.entry.sha256.Hex();
        const std::string object =
            f.data_dir + "/objects/" + hex.substr(0, 2) + "/" + hex.substr(2);
        auto shown = env.Stat(at);
        auto held = env.Stat(object);
        REQUIRE((shown.ok() && held.ok()));
        CHECK(shown->ino == held->ino);
        CHECK(Sha256Digest(Read(at)) == sf.entry.sha256);
        break;
      }
      case EntryKind::kSymlink:
        CHECK(env.ReadLink(at).value() == sf.entry.target);
        break;
    }
  }
  std::set<std::string> shown;
  std::vector<std::string> todo{""};
  while (!todo.empty()) {
    const std::string rel = todo.back();
    todo.pop_back();
    auto listed = env.ListDir(rel.empty() ? view : view + "/" + rel);
    REQUIRE(listed.ok());
    for (const DirEntry& e : *listed) {
      const std::string path = rel.empty() ? e.name : rel + "/" + e.name;
      shown.insert(path);
      if (IsDirectory(env, view + "/" + path)) todo.push_back(path);
    }
  }
  CHECK(shown == want);
}

TEST_CASE("a pull commits a complete catalog with RFD 67 names") {
  StoreFixture f;
  // File by file, and as a bulk pull (its views' directories made ahead).
  f.bulk_pull_from = GENERATE(StoreOptions{}.bulk_pull_from, size_t{1});
  const bool bulk = f.bulk_pull_from == 1;
  FaultEnv fenv(Env::Default());
  // In a bulk pull, the precreator makes the new views' directories under
  // .staging/<pull>/views/<uuid> in its spare time, and the commit moves
  // each into place.
  auto in_views = [](const std::string& path) {
    return path.find("/.staging/") != std::string::npos &&
           path.find("/views/") != std::string::npos;
  };
  // Their files are linked during the commit (ViewPrefill), not after it
  // in the view's place.
  auto in_current = [](const std::string& path) {
    return path.find("/instances/") != std::string::npos &&
           path.find("/current/") != std::string::npos;
  };
  // Each new instance's skeleton is <staging>/views/<uuid>.
  auto skeleton_root = [&](const std::string& path) {
    for (const std::string& uuid : {f.exp.imgapi, f.exp.sapi, f.exp.ufds}) {
      if (path.ends_with("/views/" + uuid)) return true;
    }
    return false;
  };
  std::atomic<int> skeletons{0}, moved_in{0}, linked_ahead{0}, linked_after{0};
  fenv.SetBeforeCall([&](EnvOp op, const std::string& path) {
    if (op == EnvOp::kMakeDir && in_views(path) && skeleton_root(path)) ++skeletons;
    if (op == EnvOp::kRename && in_views(path)) ++moved_in;
    if (op == EnvOp::kLink && in_views(path)) ++linked_ahead;
    if (op == EnvOp::kLink && in_current(path)) ++linked_after;
    // A staged image's mtime is set during the transfers, before the
    // commit stops the precreator: wait (bounded) for the three views'
    // skeletons, so that the commit prefills every view.
    for (int spins = 0; op == EnvOp::kSetMtime && bulk && skeletons < 3 && spins < 10'000'000;
         ++spins) {
      std::this_thread::yield();
    }
  });
  auto store = f.OpenStore(fenv);
  struct stat sb;
  REQUIRE(::stat(f.data_dir.c_str(), &sb) == 0);
  CHECK((sb.st_mode & 0777) == 0700);

  auto plan = MustPull(f, *store);
  CHECK(plan.changed_instances == 3);
  CHECK(plan.transfer_files > 10);
  const std::string d = f.data_dir;
  CHECK(Read(d + "/svc-imgapi/vm-" + f.exp.imgapi + ".json") ==
        Read(f.exp.root + "/vms/" + f.exp.imgapi + ".json"));
  CHECK(Read(d + "/svc-imgapi/data/" + f.exp.imgapi + "/images/ab/cd/file0") ==
        std::string(100000, 'x'));
  CHECK(Read(d + "/svc-imgapi/data/" + f.exp.imgapi + "/empty").empty());
  auto link = Env::Default()->ReadLink(d + "/svc-imgapi/data/" + f.exp.imgapi + "/latest");
  REQUIRE(link.ok());
  CHECK(*link == "images/ab/cd/file0");
  CHECK(Read(d + "/svc-sapi/sapi-svc.json") == R"({"name":"sapi"})");
  CHECK(Read(d + "/svc-sapi/sapi-app.json") == R"({"uuid":"app","name":"sdc"})");
  CHECK(Read(d + "/svc-ufds/sapi-app.json") == R"({"uuid":"app","name":"sdc"})");
  auto insts = nlohmann::json::parse(Read(d + "/svc-imgapi/sapi-insts.json"));
  REQUIRE(insts.size() == 1);
  CHECK(insts[0]["uuid"] == f.exp.imgapi);
  CHECK(Read(d + "/images/" + f.exp.img_root + "/file") == "image bytes of " + f.exp.img_root);
  CHECK(Exists(*Env::Default(), d + "/catalog.json"));
  auto staging = Env::Default()->ListDir(d + "/.staging");
  REQUIRE(staging.ok());
  CHECK(staging->empty());
  for (const std::string& uuid : {f.exp.imgapi, f.exp.sapi, f.exp.ufds}) CheckView(f, *store, uuid);
  CHECK((moved_in > 0) == bulk);
  CHECK((linked_ahead > 0) == bulk);
  CHECK((linked_after > 0) == !bulk);

  // The read API.
  auto peer = store->Peer("headnode1");
  REQUIRE(peer);
  CHECK(peer->generation == f.exporter->generation());
  CHECK(peer->boot_id == f.exporter->boot_id());
  CHECK(peer->node_name == "headnode1");
  CHECK(peer->last_pull_ms == f.clock.WallMs());
  auto instances = store->Instances();
  REQUIRE(instances.size() == 3);
  CHECK(instances[0].service == "imgapi");
  CHECK(instances[0].alias == "imgapi0");
  CHECK(instances[0].peer == "headnode1");
  CHECK(instances[0].seq == 1);
  CHECK(instances[0].size > 100000);
  CHECK(store->Services() == std::vector<std::string>{"imgapi", "sapi", "ufds"});
  auto gen = store->Instance(f.exp.imgapi);
  REQUIRE(gen.ok());
  CHECK(gen->current);
  CHECK(nlohmann::json::parse(gen->vm_payload)["alias"] == "imgapi0");
  CHECK(!gen->sapi_record.empty());
  bool found = false;
  for (const StoredFile& sf : gen->files) {
    if (sf.entry.path == "datasets/" + f.exp.imgapi + "/images/ab/cd/file0") {
      found = true;
      CHECK(Read(sf.local_path) == std::string(100000, 'x'));
      CHECK(sf.entry.digest == Xxh3Digest(std::string(100000, 'x')));
    }
  }
  CHECK(found);
  auto chain = store->ImageChain(f.exp.img_imgapi);
  REQUIRE(chain.ok());
  REQUIRE(chain->size() == 3);
  CHECK((*chain)[0].uuid == f.exp.img_root);  // root first
  CHECK((*chain)[1].uuid == f.exp.img_base);
  CHECK((*chain)[2].uuid == f.exp.img_imgapi);
  CHECK(Read((*chain)[0].file_path) == "image bytes of " + f.exp.img_root);
  CHECK(store->ImageChain("nope").status().code() == Code::kNotFound);
  auto report = store->Verify();
  REQUIRE(report.ok());
  CHECK(report->ok());
  CHECK(report->files_checked > 20);

  // A read-only store (the CLI) sees the same.
  auto reader = f.OpenReadOnly();
  REQUIRE(reader.ok());
  CHECK((*reader)->Instances().size() == 3);
}

TEST_CASE("later pulls transfer only what changed and keep the rest as it is") {
  StoreFixture f;
  auto store = f.OpenStore();
  MustPull(f, *store);
  // Nothing changed: one small answer, nothing planned, same generation.
  auto same = MustPull(f, *store);
  CHECK(same.transfer_files == 0);
  CHECK(same.changed_instances == 0);
  CHECK(store->FindInstance(f.exp.imgapi)->seq == 1);

  f.clock.Advance(60000);
  Write(f.Ds(f.exp.imgapi) + "/etc/imgapi.config.json", R"({"port": 8081})");
  auto plan = PullFrom(*f.exporter, *store, "headnode1");
  REQUIRE(plan.ok());
  CHECK(plan->transfer_files == 1);
  CHECK(plan->changed_instances == 1);
  CHECK(plan->unchanged_files >= 4);
  auto cur = store->Instance(f.exp.imgapi);
  REQUIRE(cur.ok());
  CHECK(cur->record.seq == 2);
  CHECK(cur->record.pulled_at_ms == f.clock.WallMs());
  auto old = store->Instance(f.exp.imgapi, 1);
  REQUIRE(old.ok());
  CHECK_FALSE(old->current);
  const std::string rel = "datasets/" + f.exp.imgapi + "/images/ab/cd/file0";
  struct stat a, b;
  REQUIRE(::stat(FileOf(*cur, rel).c_str(), &a) == 0);
  REQUIRE(::stat(FileOf(*old, rel).c_str(), &b) == 0);
  CHECK(a.st_ino == b.st_ino);  // unchanged: the same object
  const std::string cfg = "datasets/" + f.exp.imgapi + "/etc/imgapi.config.json";
  CHECK(Read(FileOf(*cur, cfg)) == R"({"port": 8081})");
  CHECK(Read(FileOf(*old, cfg)) == R"({"port": 8080})");
  CHECK(cur->dir == f.data_dir + "/instances/" + f.exp.imgapi + "/current");
  CHECK(old->dir.empty());  // no checkout of an old generation until asked
  CHECK(Read(f.data_dir + "/svc-imgapi/data/" + f.exp.imgapi + "/etc/imgapi.config.json") ==
        R"({"port": 8081})");
  // Other instances were confirmed, not copied.
  CHECK(store->FindInstance(f.exp.sapi)->seq == 1);
  CHECK(store->FindInstance(f.exp.sapi)->pulled_at_ms == f.clock.WallMs());
}

TEST_CASE("transfers name their basis, and a wrong digest never becomes current") {
  StoreFixture f;
  f.bulk_pull_from = GENERATE(StoreOptions{}.bulk_pull_from, size_t{1});
  const bool bulk = f.bulk_pull_from == 1;
  INFO("bulk pull " << bulk);
  auto store = f.OpenStore();
  MustPull(f, *store);
  Write(f.Ds(f.exp.ufds) + "/ldap/data.mdb", std::string(4096, '\7'));
  auto view = f.exporter->OpenView();
  REQUIRE(view.ok());
  auto txn = store->BeginPull("headnode1");
  REQUIRE(txn.ok());
  CHECK(store->BeginPull("headnode1").status().code() == Code::kTemporary);
  auto held = store->Peer("headnode1");
  auto answer = (*view)->ManifestSince(held->generation, held->boot_id, {});
  REQUIRE(answer.ok());
  CHECK(answer->kind == ManifestAnswer::Kind::kDelta);
  REQUIRE((*txn)->Plan(*answer).ok());
  REQUIRE((*txn)->transfers().size() == 1);
  const Transfer& t = (*txn)->transfers()[0];
  CHECK(t.entry.path == "datasets/" + f.exp.ufds + "/ldap/data.mdb");
  REQUIRE_FALSE(t.basis_path.empty());
  auto basis = (*txn)->OpenBasis(t);
  REQUIRE(basis.ok());
  auto out = (*txn)->StageFile(t.entry.path);
  REQUIRE(out.ok());
  REQUIRE((*out)->Append(std::string(4096, '\6')).ok());  // not what the digest says
  Status st = (*txn)->FinishFile(t.entry.path, std::move(*out));
  // A bulk pull checks on its writer thread: the mismatch stops the commit.
  if (bulk) st = (*txn)->Commit();
  CHECK(st.code() == Code::kData);
  CHECK(st.message().find("digest mismatch for datasets/" + f.exp.ufds + "/ldap/data.mdb") !=
        std::string::npos);
  CHECK_FALSE((*txn)->Commit().ok());
  txn->reset();  // aborts
  CHECK(Read(f.data_dir + "/svc-ufds/data/" + f.exp.ufds + "/ldap/data.mdb") ==
        std::string(4096, '\1'));
  CHECK(store->FindInstance(f.exp.ufds)->seq == 1);
  // And a mangling puller cannot commit either.
  auto bad = PullFrom(*f.exporter, *store, "headnode1", [](std::string& d) { d[0] ^= 1; });
  CHECK(bad.status().code() == Code::kData);
  CHECK(store->FindInstance(f.exp.ufds)->seq == 1);
  REQUIRE(PullFrom(*f.exporter, *store, "headnode1").ok());
  CHECK(store->FindInstance(f.exp.ufds)->seq == 2);
}

// The trees of a generation (catalog/trees.h) in kTreePerDirectory's shape:
// one per directory entry that has entries below it.
size_t TreeCount(const std::vector<StoredFile>& files) {
  size_t trees = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string below = files[i].entry.path + "/";
    trees += std::any_of(files.begin() + static_cast<ptrdiff_t>(i) + 1, files.end(),
                         [&](const StoredFile& f) { return f.entry.path.starts_with(below); });
  }
  return trees;
}

TEST_CASE("a commit fsyncs exactly the files it staged, and staged files are not read back") {
  StoreFixture f;
  f.tree_shape = kTreePerDirectory;
  FaultEnv fenv(Env::Default());
  auto store = f.OpenStore(fenv);
  fenv.ResetCounts();
  auto first = PullFrom(*f.exporter, *store, "headnode1");
  REQUIRE(first.ok());
  REQUIRE(first->transfer_files > 10);
  // The digest was taken while writing: no staged file is opened again.
  CHECK(fenv.Count(EnvOp::kOpenRead) < first->transfer_files);
  const size_t syncs = fenv.Count(EnvOp::kSync);
  size_t trees = 0;
  for (const InstanceRecord& r : store->Instances()) {
    auto gen = store->Instance(r.uuid);
    REQUIRE(gen.ok());
    trees += TreeCount(gen->files);
  }
  // Every transferred file, each instance's trees and description; a few
  // more for the index and the sapi-insts.json files.
  const uint64_t staged = first->transfer_files + trees + first->changed_instances;
  CHECK(syncs >= staged);
  CHECK(syncs <= staged + 8);

  fenv.ResetCounts();
  f.clock.Advance(60000);
  for (int i = 0; i < 5; ++i) {
    Write(f.Ds(f.exp.imgapi) + "/etc/extra" + std::to_string(i) + ".json",
          "{\"n\": " + std::to_string(i) + "}");
  }
  auto second = PullFrom(*f.exporter, *store, "headnode1");
  REQUIRE(second.ok());
  CHECK(second->transfer_files == 5);
  CHECK(second->unchanged_files >= 5);
  // The hard-linked unchanged files are not synced again: the 5 new files,
  // the trees of etc and of the dataset, one description, the index (and
  // at most a sapi-insts.json).
  CHECK(fenv.Count(EnvOp::kSync) >= 5 + 2 + 1 + 1);
  CHECK(fenv.Count(EnvOp::kSync) <= 5 + 2 + 1 + 2);
  auto report = store->Verify();
  REQUIRE(report.ok());
  CHECK(report->ok());
}

// Records the mutating calls (op, path) in order, forwarding to the real Env.
class RecordingEnv final : public Env {
 public:
  struct Call {
    std::string op, path, to;
  };
  std::vector<Call> calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }

  Result<std::unique_ptr<ReadableFile>> OpenRead(const std::string& p) override {
    return real_->OpenRead(p);
  }
  Result<std::unique_ptr<WritableFile>> OpenWrite(const std::string& p, uint32_t mode,
                                                  bool exclusive) override {
    Add("create", p);
    return real_->OpenWrite(p, mode, exclusive);
  }
  Result<std::unique_ptr<WritableFile>> OpenAppend(const std::string& p, uint32_t mode) override {
    Add("append", p);
    return real_->OpenAppend(p, mode);
  }
  Result<FileStat> Stat(const std::string& p) override { return real_->Stat(p); }
  Result<std::vector<DirEntry>> ListDir(const std::string& p) override { return real_->ListDir(p); }
  Status MakeDir(const std::string& p, uint32_t mode) override {
    Add("mkdir", p);
    return real_->MakeDir(p, mode);
  }
  Status Rename(const std::string& from, const std::string& to) override {
    Add("rename", from, to);
    return real_->Rename(from, to);
  }
  Status Link(const std::string& a, const std::string& b) override {
    Add("link", b);
    return real_->Link(a, b);
  }
  Status Symlink(const std::string& t, const std::string& l) override {
    Add("symlink", l);
    return real_->Symlink(t, l);
  }
  Result<std::string> ReadLink(const std::string& p) override { return real_->ReadLink(p); }
  Status RemoveFile(const std::string& p) override { return real_->RemoveFile(p); }
  Status RemoveDir(const std::string& p) override { return real_->RemoveDir(p); }
  Status SyncDir(const std::string& p) override {
    Add("fsync dir", p);
    return real_->SyncDir(p);
  }
  Status SyncFile(const std::string& p) override {
    Add("fsync", p);
    return real_->SyncFile(p);
  }
  Result<std::unique_ptr<Filesystem>> OpenFilesystem(const std::string& p) override {
    ASSIGN_OR_RETURN(auto fs, real_->OpenFilesystem(p));
    return std::unique_ptr<Filesystem>(new RecordedFilesystem(this, std::move(fs)));
  }
  Status SetMode(const std::string& p, uint32_t mode) override { return real_->SetMode(p, mode); }
  Status SetMtime(const std::string& p, int64_t ns) override { return real_->SetMtime(p, ns); }
  Status CopyFile(const std::string& a, const std::string& b, uint32_t mode) override {
    Add("create", b);
    return real_->CopyFile(a, b, mode);
  }

 private:
  class RecordedFilesystem final : public Filesystem {
   public:
    RecordedFilesystem(RecordingEnv* env, std::unique_ptr<Filesystem> fs)
        : env_(env), fs_(std::move(fs)) {}
    Status Sync() override {
      env_->Add("syncfs", fs_->path());
      return fs_->Sync();
    }
    const std::string& path() const override { return fs_->path(); }

   private:
    RecordingEnv* env_;
    std::unique_ptr<Filesystem> fs_;
  };

  void Add(const char* op, const std::string& path, const std::string& to = "") {
    std::lock_guard<std::mutex> lock(mu_);
    calls_.push_back({op, path, to});
  }
  Env* real_ = Env::Default();
  std::mutex mu_;
  std::vector<Call> calls_;
};

TEST_CASE("a commit fsyncs what it staged before renaming it in, and all of it before the index") {
  StoreFixture f;
  f.tree_shape = kTreePerDirectory;
  // File by file (fsyncs), and as a bulk pull (one syncfs per step).
  f.bulk_pull_from = GENERATE(StoreOptions{}.bulk_pull_from, size_t{1});
  const bool bulk = f.bulk_pull_from == 1;
  RecordingEnv renv;
  auto store = f.OpenStore(renv);
  REQUIRE(PullFrom(*f.exporter, *store, "headnode1").ok());
  f.clock.Advance(60000);
  Write(f.Ds(f.exp.imgapi) + "/etc/new-dir/new.json", "{\"new\": 1}");
  Write(f.Ds(f.exp.sapi) + "/sapi/db.json", "{\"v\": 2}");
  const size_t skip = renv.calls().size();
  auto plan = PullFrom(*f.exporter, *store, "headnode1");
  REQUIRE(plan.ok());
  REQUIRE(plan->changed_instances == 2);
  std::vector<RecordingEnv::Call> calls = renv.calls();
  calls.erase(calls.begin(), calls.begin() + static_cast<ptrdiff_t>(skip));

  // Index of the first call with `op` on exactly `path` (calls.size() if none).
  auto find = [&](const std::string& op, const std::string& path, size_t from = 0) {
    for (size_t i = from; i < calls.size(); ++i) {
      if (calls[i].op == op && calls[i].path == path) return i;
    }
    return calls.size();
  };
  // Index of the first call after `from` that makes `path` durable: its
  // fsync (`op`), or in a bulk pull the catalog filesystem's syncfs.
  auto synced = [&](const std::string& op, const std::string& path, size_t from = 0) {
    const size_t i = bulk ? find("syncfs", f.data_dir, from) : find(op, path, from);
    if (bulk) CHECK(find(op, path, from) == calls.size());  // no fsync besides
    return i;
  };
  // The index (the commit point) is renamed over catalog.json once.
  const size_t index = [&] {
    for (size_t j = 0; j < calls.size(); ++j) {
      if (calls[j].op == "rename" && calls[j].to == f.data_dir + "/catalog.json") return j;
    }
    return calls.size();
  }();
  REQUIRE(index < calls.size());
  CHECK(synced("fsync", calls[index].path, find("create", calls[index].path)) < index);  // new text
  CHECK(find("fsync dir", f.data_dir, index) < calls.size());  // and its rename
  size_t objects = 0, descriptions = 0;
  for (size_t i = 0; i < calls.size(); ++i) {
    const RecordingEnv::Call& c = calls[i];
    if (c.op != "rename" || c.path.find("/.staging/") == std::string::npos) continue;
    const bool object = c.to.starts_with(f.data_dir + "/objects/");
    const bool description = c.to.starts_with(f.data_dir + "/instances/");
    if (!object && !description) continue;
    if (object && find("mkdir", c.path) < i) {
      // A fan-out directory moved in whole: each object staged in it was
      // fsync'd after it was written and before the move; the directory, in
      // its new place, and objects/ are fsync'd before the index.
      size_t in_dir = 0;
      for (size_t j = 0; j < i; ++j) {
        if (calls[j].op != "create" || DirName(calls[j].path) != c.path) continue;
        CHECK(synced("fsync", calls[j].path, j) < i);
        ++in_dir;
      }
      CHECK(in_dir > 0);
      objects += in_dir;
      CHECK(synced("fsync dir", c.to, i) < index);
      CHECK(synced("fsync dir", DirName(c.to), i) < index);
      CHECK(i < index);
      continue;
    }
    // An object or a description renamed in: it was fsync'd after it was
    // written, the directory that gained it is fsync'd, both before the index.
    const size_t created = find("create", c.path);
    REQUIRE(created < i);
    CHECK(synced("fsync", c.path, created) < i);
    CHECK(synced("fsync dir", DirName(c.to), i) < index);
    CHECK(i < index);
    (object ? objects : descriptions)++;
    if (!description) continue;
    // The view follows the committed index.
    const std::string marker = DirName(c.to) + "/current.seq";
    size_t switched = calls.size();
    for (size_t j = index; j < calls.size(); ++j) {
      if (calls[j].op == "rename" && calls[j].to == marker) switched = j;
    }
    CHECK(switched < calls.size());
  }
  // new.json and db.json, and the trees from their directories up:
  // etc/new-dir, etc and the dataset for imgapi; sapi and the dataset for
  // sapi (trees.h).
  CHECK(objects == 2 + 3 + 2);
  CHECK(descriptions == 2);  // one generation per changed instance
}

TEST_CASE("a file staged again after its background fsync is fsync'd again before the commit") {
  StoreFixture f;
  RecordingEnv renv;
  auto store = f.OpenStore(renv);
  auto view = f.exporter->OpenView();
  REQUIRE(view.ok());
  auto txn = store->BeginPull("headnode1");
  REQUIRE(txn.ok());
  auto answer = (*view)->ManifestSince(0, "", {});
  REQUIRE(answer.ok());
  REQUIRE((*txn)->Plan(*answer).ok());
  auto stage = [&](const Transfer& t) {
    syncproto::FileEntry entry;
    auto in = (*view)->OpenFile(t.entry.path, &entry);
    REQUIRE(in.ok());
    auto out = (*txn)->StageFile(t.entry.path);
    REQUIRE(out.ok());
    REQUIRE(ForEachChunk(**in, 1 << 16, [&](std::span<const uint8_t> c) {
              return (*out)->Append(c);
            }).ok());
    REQUIRE((*txn)->FinishFile(t.entry.path, std::move(*out)).ok());
  };
  for (const Transfer& t : (*txn)->transfers()) stage(t);
  // Wait (bounded) until the background fsync of the first file happened.
  const Transfer first = (*txn)->transfers().front();
  auto last = [&](const std::string& op, const std::string& suffix) {
    auto calls = renv.calls();
    for (size_t i = calls.size(); i-- > 0;) {
      if (calls[i].op == op && calls[i].path.ends_with(suffix)) return static_cast<int64_t>(i);
    }
    return int64_t{-1};
  };
  const std::string hex = first.entry.sha256.Hex();
  const std::string suffix = "/" + hex.substr(0, 2) + "/" + hex.substr(2);  // staged like objects/
  for (int spins = 0; last("fsync", suffix) < 0 && spins < 1000000; ++spins) {
    std::this_thread::yield();
  }
  REQUIRE(last("fsync", suffix) >= 0);
  const int64_t first_fsync = last("fsync", suffix);
  stage(first);  // written again after its fsync (a retried transfer)
  const int64_t rewritten = last("create", suffix);
  REQUIRE(rewritten > first_fsync);
  REQUIRE((*txn)->Commit().ok());
  // The rewritten bytes are fsync'd (by the background thread, which may
  // already have run, or by the commit) before the index is renamed in.
  CHECK(last("fsync", suffix) > rewritten);
  int64_t index = -1;
  const auto calls = renv.calls();
  for (size_t i = 0; i < calls.size(); ++i) {
    if (calls[i].op == "rename" && calls[i].to == f.data_dir + "/catalog.json") {
      index = static_cast<int64_t>(i);
    }
  }
  CHECK(last("fsync", suffix) < index);
}

TEST_CASE("the store keeps an instance's warnings, a pull that clears them clears them") {
  StoreFixture f;
  const std::string d = "datasets/" + f.exp.imgapi;
  {
    auto store = f.OpenStore();
    MustPull(f, *store);
    // The fixture's dangling and escaping symlinks and its socket.
    auto imgapi = store->FindInstance(f.exp.imgapi);
    REQUIRE(imgapi->warnings.size() == 3);
    CHECK(imgapi->warnings[0].path == d + "/dangling");
    CHECK(store->FindInstance(f.exp.sapi)->warnings.empty());
  }
  // Kept in catalog.json (only where there are some), so a reopen has them.
  const std::string index = Read(f.data_dir + "/catalog.json");
  CHECK(index.find("\"warnings\"") != std::string::npos);
  CHECK(index.find("\"warnings\"") == index.rfind("\"warnings\""));
  auto store = f.OpenStore();
  CHECK(store->FindInstance(f.exp.imgapi)->warnings.size() == 3);

  // A FIFO appears in sapi's dataset: nothing else changed, yet the instance
  // has new metadata, so a new generation records it.
  REQUIRE(::mkfifo((f.Ds(f.exp.sapi) + "/pipe").c_str(), 0600) == 0);
  auto plan = MustPull(f, *store);
  CHECK(plan.changed_instances == 1);
  CHECK(plan.transfer_files == 0);
  auto sapi = store->FindInstance(f.exp.sapi);
  REQUIRE(sapi->warnings.size() == 1);
  CHECK(sapi->warnings[0].path == "datasets/" + f.exp.sapi + "/pipe");
  CHECK(sapi->seq == 2);

  // Fixed on the peer: the next pull clears them, also on disk.
  for (const char* p : {"/dangling", "/logs/escape", "/logs/agent.sock", ""}) {
    const std::string path = *p ? f.Ds(f.exp.imgapi) + p : f.Ds(f.exp.sapi) + "/pipe";
    REQUIRE(::unlink(path.c_str()) == 0);
  }
  MustPull(f, *store);
  CHECK(store->FindInstance(f.exp.imgapi)->warnings.empty());
  CHECK(store->FindInstance(f.exp.sapi)->warnings.empty());
  store.reset();
  store = f.OpenStore();
  CHECK(store->FindInstance(f.exp.imgapi)->warnings.empty());
  CHECK(store->FindInstance(f.exp.sapi)->warnings.empty());
  CHECK(Read(f.data_dir + "/catalog.json").find("\"warnings\"") == std::string::npos);
}

TEST_CASE("Open reads a tree shared by many retained generations once") {
  StoreFixture f;
  for (int d = 0; d < 30; ++d) {
    Write(f.Ds(f.exp.sapi) + "/many/d" + std::to_string(d) + "/f", std::to_string(d));
  }
  auto reads_at_open = [&] {
    FaultEnv fenv(Env::Default());
    auto store = f.OpenStore(fenv, /*gens=*/10);
    return fenv.Count(EnvOp::kOpenRead);
  };
  {
    auto store = f.OpenStore(/*gens=*/10);
    MustPull(f, *store);
  }
  const uint64_t one_generation = reads_at_open();
  {
    auto store = f.OpenStore(/*gens=*/10);
    for (int i = 0; i < 5; ++i) {
      Write(f.Ds(f.exp.sapi) + "/many/d0/f", "edit " + std::to_string(i));
      MustPull(f, *store);
    }
    REQUIRE(store->Generations(f.exp.sapi)->size() == 6);
  }
  // Each later generation of sapi0 adds its description and the 3 trees it
  // changed (many/d0, many, the dataset's); it shares its ~33 others.
  CHECK(reads_at_open() - one_generation <= 5 * 5);
}

TEST_CASE("retention keeps N generations per instance") {
  StoreFixture f;
  auto store = f.OpenStore(/*gens=*/2);
  for (int i = 0; i < 4; ++i) {
    Write(f.Ds(f.exp.sapi) + "/sapi/db.json", "{\"v\": " + std::to_string(i) + "}");
    MustPull(f, *store);
  }
  auto gens = store->Generations(f.exp.sapi);
  REQUIRE(gens.ok());
  CHECK(*gens == std::vector<uint64_t>{3, 4});
  auto old = store->Instance(f.exp.sapi, 3);
  REQUIRE(old.ok());
  CHECK(Read(FileOf(*old, "datasets/" + f.exp.sapi + "/sapi/db.json")) == "{\"v\": 2}");
  CHECK(store->Generations(f.exp.imgapi).value() == std::vector<uint64_t>{1});
}

TEST_CASE("time-based retention keeps one generation an hour beside the newest") {
  StoreFixture f;
  StoreOptions o;
  o.data_dir = f.data_dir;
  o.retention.keep_last = 1;
  o.retention.hourly_for_ms = 6 * kHour;
  auto opened = Store::Open(*Env::Default(), f.clock, o);
  REQUIRE(opened.ok());
  auto& store = *opened;
  // A change every 20 minutes for 4 hours: 13 generations of sapi0.
  for (int i = 0; i < 13; ++i) {
    Write(f.Ds(f.exp.sapi) + "/sapi/db.json", "{\"v\": " + std::to_string(i) + "}");
    MustPull(f, *store);
    f.clock.Advance(20 * 60 * 1000);
  }
  auto gens = store->Generations(f.exp.sapi);
  REQUIRE(gens.ok());
  // The newest of each hour the pulls touched (5), the current one among them.
  CHECK(gens->size() >= 4);
  CHECK(gens->size() <= 6);
  CHECK(gens->back() == 13);
  // Each kept generation still reads back whole; the pruned ones' objects are gone.
  for (uint64_t seq : *gens) {
    auto g = store->Instance(f.exp.sapi, seq);
    REQUIRE(g.ok());
    CHECK(Read(FileOf(*g, "datasets/" + f.exp.sapi + "/sapi/db.json")) ==
          "{\"v\": " + std::to_string(seq - 1) + "}");
  }
  auto report = store->Verify();
  REQUIRE(report.ok());
  CHECK(report->ok());
}

TEST_CASE("a clock that jumps forward never drops a removed instance early") {
  StoreFixture f;
  auto store = f.OpenStore(3, /*grace=*/24 * kHour);
  MustPull(f, *store);
  REQUIRE(RemoveTree(*Env::Default(), f.exp.root + "/vms/" + f.exp.ufds + ".json").ok());
  MustPull(f, *store);
  f.clock.Advance(30 * 24 * kHour);  // the wall clock leaps a month
  REQUIRE(store->ApplyRetention().ok());
  auto rec = store->FindInstance(f.exp.ufds);
  REQUIRE(rec);  // one pull has missed it: not enough evidence
  CHECK(rec->removed_pulls == 1);
  MustPull(f, *store);
  MustPull(f, *store);
  REQUIRE(store->ApplyRetention().ok());
  CHECK_FALSE(store->FindInstance(f.exp.ufds));
}

TEST_CASE("an instance the peer stops exporting is kept for removed_grace, then deleted") {
  StoreFixture f;
  auto store = f.OpenStore(3, /*grace=*/24 * kHour);
  MustPull(f, *store);
  REQUIRE(RemoveTree(*Env::Default(), f.exp.root + "/vms/" + f.exp.ufds + ".json").ok());
  auto plan = MustPull(f, *store);
  CHECK(plan.removed_instances == 1);
  auto rec = store->FindInstance(f.exp.ufds);
  REQUIRE(rec);
  CHECK(rec->removed);
  CHECK(rec->removed_since_ms == f.clock.WallMs());
  CHECK(Exists(*Env::Default(), f.data_dir + "/svc-ufds/data/" + f.exp.ufds + "/ldap/data.mdb"));

  f.clock.Advance(23 * kHour);
  MustPull(f, *store);  // later pulls keep it (and do not reset the clock of its removal)
  REQUIRE(store->ApplyRetention().ok());
  CHECK(store->FindInstance(f.exp.ufds));
  CHECK(store->FindInstance(f.exp.ufds)->removed_since_ms == f.clock.WallMs() - 23 * kHour);

  f.clock.Advance(2 * kHour);
  REQUIRE(store->ApplyRetention().ok());
  // The grace is over, but only 2 pulls have missed it so far.
  REQUIRE(store->FindInstance(f.exp.ufds));
  CHECK(store->FindInstance(f.exp.ufds)->removed_pulls == 2);
  MustPull(f, *store);  // the third (an "unchanged" one counts too): gone
  REQUIRE(store->ApplyRetention().ok());
  CHECK_FALSE(store->FindInstance(f.exp.ufds));
  CHECK_FALSE(Exists(*Env::Default(), f.data_dir + "/instances/" + f.exp.ufds));
  CHECK_FALSE(Exists(*Env::Default(), f.data_dir + "/svc-ufds/vm-" + f.exp.ufds + ".json"));
  // Its image is now unreferenced: kept for the grace too, then deleted; the
  // shared root image stays.
  bool ufds_image = false;
  for (const auto& img : store->Images()) {
    if (img.uuid == f.exp.img_ufds) ufds_image = !img.referenced;
  }
  CHECK(ufds_image);
  f.clock.Advance(25 * kHour);
  REQUIRE(store->ApplyRetention().ok());
  CHECK_FALSE(Exists(*Env::Default(), f.data_dir + "/images/" + f.exp.img_ufds));
  CHECK(Exists(*Env::Default(), f.data_dir + "/images/" + f.exp.img_root + "/file"));
  CHECK(store->Verify()->ok());

  // It comes back: a new generation, no longer removed.
  f.exp.AddInstance(f.exp.ufds, "ufds0", "ufds", f.exp.img_ufds);
  MustPull(f, *store);
  REQUIRE(store->FindInstance(f.exp.ufds));
  CHECK_FALSE(store->FindInstance(f.exp.ufds)->removed);
}

TEST_CASE("a peer that went backwards: what we held is kept under orphans/") {
  StoreFixture f;
  auto store = f.OpenStore();
  MustPull(f, *store);
  Write(f.Ds(f.exp.sapi) + "/sapi/db.json", R"({"instances": ["precious"]})");
  MustPull(f, *store);
  const uint64_t held = store->Peer("headnode1")->generation;
  REQUIRE(held == 2);

  // The peer loses its export state (restored from an old backup): new boot id, generation 1.
  REQUIRE(RemoveTree(*Env::Default(), f.tmp / "export-state").ok());
  Write(f.Ds(f.exp.sapi) + "/sapi/db.json", R"({"instances": []})");
  f.OpenExporter();
  auto plan = MustPull(f, *store);
  CHECK(plan.orphaned);
  REQUIRE(plan.orphan_dir.rfind(f.data_dir + "/orphans/headnode1-2-", 0) == 0);
  CHECK(Read(plan.orphan_dir + "/instances/" + f.exp.sapi + "/datasets/" + f.exp.sapi +
             "/sapi/db.json") == R"({"instances": ["precious"]})");
  CHECK(Exists(*Env::Default(),
               plan.orphan_dir + "/instances/" + f.exp.imgapi + "/vms/" + f.exp.imgapi + ".json"));
  CHECK(nlohmann::json::parse(Read(plan.orphan_dir + "/peer.json"))["generation"] == 2);
  // The peer's new state is accepted.
  CHECK(store->Peer("headnode1")->generation == 1);
  CHECK(store->Peer("headnode1")->boot_id == f.exporter->boot_id());
  CHECK(Read(f.data_dir + "/svc-sapi/data/" + f.exp.sapi + "/sapi/db.json") ==
        R"({"instances": []})");
  // Orphans survive retention.
  f.clock.Advance(1000 * kHour);
  REQUIRE(store->ApplyRetention().ok());
  CHECK(Exists(*Env::Default(), plan.orphan_dir + "/peer.json"));
}

TEST_CASE("a peer that went backwards keeps its removed instances until the operator releases it") {
  StoreFixture f;
  {
    auto store = f.OpenStore();
    MustPull(f, *store);
    CHECK(store->Peer("headnode1")->went_back_ms == 0);
  }
  // Reinstalled: its export state starts over and ufds0 is gone.
  REQUIRE(RemoveTree(*Env::Default(), f.tmp / "export-state").ok());
  REQUIRE(RemoveTree(*Env::Default(), f.exp.root + "/vms/" + f.exp.ufds + ".json").ok());
  f.OpenExporter();
  {
    auto store = f.OpenStore();
    CHECK(MustPull(f, *store).orphaned);
    const int64_t went_back = store->Peer("headnode1")->went_back_ms;
    CHECK(went_back == f.clock.WallMs());
    REQUIRE(store->FindInstance(f.exp.ufds)->removed);
    for (int i = 0; i < 3; ++i) MustPull(f, *store);
    f.clock.Advance(1000 * kHour);
    REQUIRE(store->ApplyRetention().ok());
    CHECK(store->FindInstance(f.exp.ufds));  // past the grace and 3 pulls: still held
  }
  {
    auto store = f.OpenStore();  // the flag is in catalog.json
    CHECK(store->Peer("headnode1")->went_back_ms != 0);
    CHECK(store->FindInstance(f.exp.ufds));
  }
  StoreOptions o;
  o.data_dir = f.data_dir;
  o.release_went_back = {"headnode1"};  // [retention] release_went_back
  auto released = Store::Open(*Env::Default(), f.clock, o);
  REQUIRE(released.ok());
  REQUIRE((*released)->ApplyRetention().ok());
  CHECK_FALSE((*released)->FindInstance(f.exp.ufds));
}

TEST_CASE("an instance whose generations vanished from disk is pulled whole again") {
  StoreFixture f;
  {
    auto store = f.OpenStore();
    MustPull(f, *store);
  }
  Write(f.Ds(f.exp.imgapi) + "/etc/imgapi.config.json", R"({"port": 8082})");  // a later change
  REQUIRE(RemoveTree(*Env::Default(), f.data_dir + "/instances/" + f.exp.imgapi).ok());
  auto store = f.OpenStore();
  CHECK_FALSE(store->FindInstance(f.exp.imgapi));
  CHECK(store->Peer("headnode1")->generation == 0);  // the next answer is a full one
  auto plan = MustPull(f, *store);
  CHECK(plan.changed_instances == 1);
  auto g = store->Instance(f.exp.imgapi);
  REQUIRE(g.ok());
  CHECK(Read(FileOf(*g, "datasets/" + f.exp.imgapi + "/etc/imgapi.config.json")) ==
        R"({"port": 8082})");
  auto report = store->Verify();
  REQUIRE(report.ok());
  CHECK(report->ok());
}

TEST_CASE("verify finds a flipped byte and names the path") {
  StoreFixture f;
  auto store = f.OpenStore();
  MustPull(f, *store);
  // Through the view: its files are the objects (the same inode).
  auto g = store->Instance(f.exp.imgapi);
  REQUIRE(g.ok());
  const std::string rel = "datasets/" + f.exp.imgapi + "/images/ab/cd/file0";
  const std::string in_view = FileOf(*g, rel);
  REQUIRE(in_view == f.data_dir + "/instances/" + f.exp.imgapi + "/current/" + rel);
  std::string bad;
  for (const StoredFile& sf : g->files) {
    if (sf.entry.path != rel) continue;
    const std::string hex = sf.entry.sha256.Hex();
    bad = f.data_dir + "/objects/" + hex.substr(0, 2) + "/" + hex.substr(2);
  }
  {
    FILE* fp = std::fopen(in_view.c_str(), "r+");
    REQUIRE(fp);
    std::fseek(fp, 5000, SEEK_SET);
    std::fputc('y', fp);
    std::fclose(fp);
  }
  auto report = store->Verify();
  REQUIRE(report.ok());
  REQUIRE(report->problems.size() == 1);
  CHECK(report->problems[0].path == bad);
  CHECK(report->problems[0].what.find("digest mismatch") == 0);
  std::remove((f.data_dir + "/images/" + f.exp.img_base + "/file").c_str());
  report = store->Verify();
  REQUIRE(report->problems.size() == 2);  // sorted by path
  CHECK(report->problems[0].path == f.data_dir + "/images/" + f.exp.img_base + "/file");
  CHECK(report->problems[0].what == "missing");
  CHECK(report->problems[1].path == bad);
}

TEST_CASE("a manifest that would write through a symlink is refused") {
  StoreFixture f;
  auto store = f.OpenStore();
  MustPull(f, *store);
  // A delta that puts a file under what the held generation has as a symlink.
  ManifestAnswer a;
  a.kind = ManifestAnswer::Kind::kDelta;
  auto held = store->Peer("headnode1");
  a.since_generation = held->generation;
  a.manifest.generation = held->generation + 1;
  a.manifest.boot_id = held->boot_id;
  a.manifest.instances = f.exporter->current()->instances;
  FileEntry evil;
  evil.path = "datasets/" + f.exp.imgapi + "/latest/evil";
  evil.kind = EntryKind::kFile;
  evil.size = 4;
  evil.digest = Xxh3Digest(std::string("evil"));
  a.manifest.files = {evil};
  auto txn = store->BeginPull("headnode1");
  REQUIRE(txn.ok());
  auto plan = (*txn)->Plan(a);
  REQUIRE_FALSE(plan.ok());
  CHECK(plan.status().message().find("not a directory") != std::string::npos);
  txn->reset();
  // And a fresh instance whose symlink escapes.
  ManifestAnswer b = a;
  b.kind = ManifestAnswer::Kind::kFull;
  b.manifest.generation = held->generation;
  FileEntry vm;
  vm.path = "vms/" + f.exp.imgapi + ".json";
  vm.size = 2;
  vm.digest = Xxh3Digest(std::string("{}"));
  FileEntry link;
  link.path = "datasets/" + f.exp.imgapi + "/up";
  link.kind = EntryKind::kSymlink;
  link.target = "../../../etc";
  b.manifest.files = {link, vm};
  auto txn2 = store->BeginPull("headnode1");
  REQUIRE(txn2.ok());
  CHECK((*txn2)->Plan(b).status().code() == Code::kData);
}

TEST_CASE(
    "a crash at any step of a commit leaves the whole pull in or out, each generation complete") {
  StoreFixture f;
  const std::string tmpl = f.tmp / "template";
  {
    StoreOptions o;
    o.data_dir = tmpl;
    auto s = Store::Open(*Env::Default(), f.clock, o);
    REQUIRE(s.ok());
    REQUIRE(PullFrom(*f.exporter, **s, "headnode1").ok());
  }
  const std::string cfg = "datasets/" + f.exp.imgapi + "/etc/imgapi.config.json";
  const std::string old_cfg = Read(f.exp.root + "/" + cfg);
  Write(f.exp.root + "/" + cfg, R"({"port": 9999, "new": true})");
  Write(f.Ds(f.exp.sapi) + "/sapi/brand-new.txt", "new file");
  REQUIRE(RemoveTree(*Env::Default(), f.exp.root + "/vms/" + f.exp.ufds + ".json").ok());
  const std::string new_cfg = Read(f.exp.root + "/" + cfg);

  // File by file (fsyncs), and as a bulk pull (precreated files, syncfs).
  const size_t bulk_pull_from = GENERATE(StoreOptions{}.bulk_pull_from, size_t{1});
  INFO("bulk_pull_from " << bulk_pull_from);
  bool completed = false;
  uint64_t crashes = 0;
  uint64_t after_commit = 0;  // crashed after the commit point, before the end of the commit
  for (uint64_t n = 0; n < 2000 && !completed; ++n) {
    const std::string dir =
        f.tmp / ("run-" + std::to_string(bulk_pull_from) + "-" + std::to_string(n));
    testing::CopyTree(tmpl, dir);
    FaultEnv fenv(Env::Default());
    fenv.CrashAfter(n);
    {
      StoreOptions o;
      o.data_dir = dir;
      o.bulk_pull_from = bulk_pull_from;
      auto s = Store::Open(fenv, f.clock, o);
      if (s.ok()) {
        auto pulled = PullFrom(*f.exporter, **s, "headnode1");
        completed = pulled.ok() && fenv.MutatingCount() <= n;
      }
    }
    if (!completed) ++crashes;
    // Reopen with the real Env: recovery.
    StoreOptions o;
    o.data_dir = dir;
    auto s = Store::Open(*Env::Default(), f.clock, o);
    REQUIRE(s.ok());
    auto staging = Env::Default()->ListDir(dir + "/.staging");
    REQUIRE(staging.ok());
    CHECK(staging->empty());
    for (const std::string& sub :
         {std::string(), std::string("/svc-imgapi"), std::string("/svc-ufds")}) {
      auto left = Env::Default()->ListDir(dir + sub);
      REQUIRE(left.ok());
      for (const DirEntry& e : *left) CHECK(e.name.find(".tmp.") == std::string::npos);
    }
    auto report = (*s)->Verify();
    REQUIRE(report.ok());
    if (!report->ok())
      FAIL("crash after " << n << ": " << report->problems[0].path << ": "
                          << report->problems[0].what);
    auto inst = (*s)->Instance(f.exp.imgapi);
    REQUIRE(inst.ok());
    CHECK(inst->dir == dir + "/instances/" + f.exp.imgapi + "/current");  // repaired by Open
    const std::string cur = Read(FileOf(*inst, cfg));
    CHECK((cur == old_cfg || cur == new_cfg));
    CHECK(Read(dir + "/svc-imgapi/data/" + f.exp.imgapi + "/etc/imgapi.config.json") == cur);
    if (completed) {
      CHECK(cur == new_cfg);
      CHECK((*s)->FindInstance(f.exp.ufds)->removed);
    }
    if (n == 0) CHECK(cur == old_cfg);
    // One commit point per pull: all of its changes are in, or none.
    auto sapi = (*s)->Instance(f.exp.sapi);
    REQUIRE(sapi.ok());
    const bool sapi_new = !FileOf(*sapi, "datasets/" + f.exp.sapi + "/sapi/brand-new.txt").empty();
    CHECK(sapi_new == (cur == new_cfg));
    CHECK((*s)->FindInstance(f.exp.ufds)->removed == (cur == new_cfg));
    if (!completed && cur == new_cfg) ++after_commit;
    RemoveTree(*Env::Default(), dir).IgnoreError();
  }
  CHECK(completed);
  CHECK(crashes > 20);
  CHECK(after_commit > 0);
  WARN("commit survived " << crashes << " injected crashes, " << after_commit
                          << " of them after the commit point");
}

}  // namespace
}  // namespace lifeboat::catalog

namespace lifeboat::catalog {
namespace {

// Not run by default: builds a catalog of a 20k-file export into
// $LIFEBOAT_DEMO_DIR/data for trying `lifeboat catalog ...` by hand:
//   LIFEBOAT_DEMO_DIR=/tmp/demo build/tests/unit/catalog_test '[.demo]'
TEST_CASE("demo catalog for the CLI", "[.demo]") {
  const char* out = std::getenv("LIFEBOAT_DEMO_DIR");
  REQUIRE(out != nullptr);
  StoreFixture f;
  for (int d = 0; d < 100; ++d) {
    for (int i = 0; i < 200; ++i) {
      Write(f.Ds(f.exp.sapi) + "/many/d" + std::to_string(d) + "/f" + std::to_string(i),
            "content " + std::to_string(d * 1000 + i));
    }
  }
  auto store = f.OpenStore();
  MustPull(f, *store);
  testing::CopyTree(f.data_dir, std::string(out) + "/data");
}

// The object a file of the current generation of `uuid` is stored as.
std::string ObjectOf(Store& store, const std::string& uuid, const std::string& rel) {
  auto gen = store.Instance(uuid);
  REQUIRE(gen.ok());
  for (const StoredFile& f : gen->files) {
    if (f.entry.path != rel && !f.entry.path.ends_with("/" + rel)) continue;
    const std::string hex = f.entry.sha256.Hex();
    return store.data_dir() + "/objects/" + hex.substr(0, 2) + "/" + hex.substr(2);
  }
  FAIL("no " << rel << " in " << uuid);
  return "";
}

TEST_CASE("a scrub finds a damaged object and repair has the next pull fetch only it") {
  StoreFixture f;
  auto store = f.OpenStore();
  MustPull(f, *store);
  const std::string object = ObjectOf(*store, f.exp.sapi, "sapi/db.json");
  REQUIRE(::access(object.c_str(), F_OK) == 0);
  const std::string good = Read(object);
  {
    std::ofstream out(object, std::ios::binary | std::ios::trunc);  // in place: every link sees it
    out << std::string(good.size(), 'X');
  }
  auto looked = store->Scrub(/*repair=*/false);
  REQUIRE(looked.ok());
  REQUIRE(looked->problems.size() == 1);
  CHECK(looked->problems[0].path == object);
  CHECK(looked->objects_removed == 0);
  CHECK(looked->damaged_instances.empty());
  CHECK(looked->objects_checked > 1);

  auto repaired = store->Scrub(/*repair=*/true);
  REQUIRE(repaired.ok());
  CHECK(repaired->objects_removed == 1);
  CHECK(repaired->damaged_instances == std::vector<std::string>{f.exp.sapi});
  CHECK(repaired->peers_to_pull == std::vector<std::string>{"headnode1"});
  CHECK(::access(object.c_str(), F_OK) != 0);  // out of objects/, into .trash
  auto last = store->LastScrub();
  REQUIRE(last.has_value());
  CHECK(last->repair);
  CHECK(last->problems == 1);

  // The next pull is a full one and fetches exactly the removed object.
  PlanSummary plan = MustPull(f, *store);
  CHECK(plan.transfer_files == 1);
  CHECK(Read(object) == good);
  auto verify = store->Verify();
  REQUIRE(verify.ok());
  CHECK(verify->ok());
  auto again = store->Scrub(/*repair=*/true);
  REQUIRE(again.ok());
  CHECK(again->ok());
  CHECK(again->damaged_instances.empty());
  // The mark is gone: later pulls are incremental and move nothing.
  CHECK(MustPull(f, *store).transfer_files == 0);
}

// The trees of generation `gen` (trees.h: ids depend on the entries only).
BuiltTrees TreesOf(const InstanceGeneration& gen, TreeShape shape = {}) {
  std::vector<FileEntry> entries;
  for (const StoredFile& f : gen.files) entries.push_back(f.entry);
  return BuildTrees(entries, nullptr, nullptr, shape);
}

// Every object a retained generation of any instance names: its files'
// contents and its trees.
std::set<std::string> NamedObjects(Store& store, TreeShape shape = {}) {
  std::set<std::string> named;
  for (const InstanceRecord& r : store.Instances()) {
    auto seqs = store.Generations(r.uuid);
    REQUIRE(seqs.ok());
    for (uint64_t seq : *seqs) {
      auto gen = store.Instance(r.uuid, seq);
      REQUIRE(gen.ok());
      for (const StoredFile& f : gen->files) {
        if (f.entry.kind == EntryKind::kFile) named.insert(f.entry.sha256.Hex());
      }
      const BuiltTrees trees = TreesOf(*gen, shape);
      for (const auto& [dir, id] : *trees.ids) named.insert(id.Hex());
    }
  }
  return named;
}

std::set<std::string> ObjectsOnDisk(const std::string& data_dir) {
  std::set<std::string> on_disk;
  auto fans = Env::Default()->ListDir(data_dir + "/objects");
  REQUIRE(fans.ok());
  for (const DirEntry& fan : *fans) {
    auto objects = Env::Default()->ListDir(data_dir + "/objects/" + fan.name);
    REQUIRE(objects.ok());
    for (const DirEntry& o : *objects) on_disk.insert(fan.name + o.name);
  }
  return on_disk;
}

TEST_CASE("a generation's description names its trees and stays small however many entries") {
  StoreFixture f;
  for (int i = 0; i < 300; ++i) {
    Write(f.Ds(f.exp.imgapi) + "/many/d" + std::to_string(i % 10) + "/f" + std::to_string(i),
          "{\"n\": " + std::to_string(i) + "}");
  }
  auto store = f.OpenStore();
  MustPull(f, *store);
  f.clock.Advance(60000);
  Write(f.Ds(f.exp.imgapi) + "/many/d3/f3", "{\"edited\": 1}");
  const std::set<std::string> before = ObjectsOnDisk(f.data_dir);
  PlanSummary plan = MustPull(f, *store);
  CHECK(plan.transfer_files == 1);
  auto rec = store->FindInstance(f.exp.imgapi);
  REQUIRE(rec.has_value());
  REQUIRE(rec->files > 300);
  const std::string desc =
      Read(f.data_dir + "/instances/" + f.exp.imgapi + "/" + std::to_string(rec->seq) + ".json");
  CHECK(desc.find("\"tree\":\"") != std::string::npos);
  CHECK(desc.size() < 2048);  // the payload, the SAPI record, the dataset's entry
  // The edited file's object and the trees of many/d3, many and the
  // dataset: nothing else was written.
  std::set<std::string> added;
  for (const std::string& o : ObjectsOnDisk(f.data_dir)) {
    if (!before.count(o)) added.insert(o);
  }
  CHECK(added.size() == 1 + 3);
  // Reopened, the store reads every entry back from the trees.
  store.reset();
  store = f.OpenStore();
  auto gen = store->Instance(f.exp.imgapi);
  REQUIRE(gen.ok());
  CHECK(gen->files.size() == rec->files);
  CHECK(Read(FileOf(*gen, "datasets/" + f.exp.imgapi + "/many/d3/f3")) == "{\"edited\": 1}");
  CHECK(store->Verify().value().ok());
}

TEST_CASE("retention and reopen delete exactly the trees and files no retained generation names") {
  StoreFixture f;
  auto store = f.OpenStore(/*gens=*/2);
  for (int i = 0; i < 5; ++i) {
    f.clock.Advance(60000);
    Write(f.Ds(f.exp.imgapi) + "/etc/d" + std::to_string(i) + "/v.json", std::to_string(i));
    Write(f.Ds(f.exp.sapi) + "/sapi/db.json", "{\"v\": " + std::to_string(i) + "}");
    MustPull(f, *store);
    CHECK(ObjectsOnDisk(f.data_dir) == NamedObjects(*store));
  }
  store.reset();
  store = f.OpenStore(/*gens=*/1);
  CHECK(ObjectsOnDisk(f.data_dir) == NamedObjects(*store));
}

// A pull of headnode1 begun and answered with a delta, not planned yet.
struct DeltaPull {
  std::unique_ptr<syncproto::ExportView> view;  // pins the exporter's scan
  std::unique_ptr<PullTxn> txn;
  ManifestAnswer answer;
};

DeltaPull BeginDelta(StoreFixture& f, Store& store) {
  DeltaPull pull;
  auto view = f.exporter->OpenView();
  REQUIRE(view.ok());
  pull.view = std::move(*view);
  auto txn = store.BeginPull("headnode1");
  REQUIRE(txn.ok());
  pull.txn = std::move(*txn);
  auto held = store.Peer("headnode1");
  REQUIRE(held.has_value());
  auto answer = pull.view->ManifestSince(held->generation, held->boot_id, {});
  REQUIRE(answer.ok());
  REQUIRE(answer->kind == ManifestAnswer::Kind::kDelta);
  pull.answer = std::move(*answer);
  return pull;
}

// The pins of a pull (the held generation's top, the changed files) are
// released however it ends: a leaked pin would keep the dropped
// generation's files and trees on disk.
TEST_CASE("an aborted and a committed delta leave on disk exactly what generations name") {
  StoreFixture f;
  auto store = f.OpenStore(/*gens=*/1);
  MustPull(f, *store);
  const std::string edited = f.Ds(f.exp.imgapi) + "/etc/imgapi.config.json";
  f.clock.Advance(60000);
  Write(edited, R"({"port": 8081})");
  {
    DeltaPull pull = BeginDelta(f, *store);
    REQUIRE(pull.txn->Plan(pull.answer).ok());
    pull.txn->Abort();
  }
  CHECK(ObjectsOnDisk(f.data_dir) == NamedObjects(*store));
  f.clock.Advance(60000);
  Write(edited, R"({"port": 8082})");
  CHECK(MustPull(f, *store).transfer_files == 1);
  CHECK(ObjectsOnDisk(f.data_dir) == NamedObjects(*store));
  CHECK(store->Verify().value().ok());
  store.reset();
  store = f.OpenStore(/*gens=*/1);
  f.clock.Advance(60000);
  Write(edited, R"({"port": 8083})");
  MustPull(f, *store);
  CHECK(ObjectsOnDisk(f.data_dir) == NamedObjects(*store));
  CHECK(store->Verify().value().ok());
}

// A Plan that fails on a peer's bad entry (after the instance's pins were
// taken) releases them: the held generation it pinned is dropped by the
// next pull's retention with all its files and trees.
TEST_CASE("a delta whose plan fails on a bad entry leaves no pin behind") {
  StoreFixture f;
  auto store = f.OpenStore(/*gens=*/1);
  MustPull(f, *store);
  const std::string rel = "datasets/" + f.exp.imgapi + "/etc/imgapi.config.json";
  f.clock.Advance(60000);
  Write(f.exp.root + "/" + rel, R"({"port": 8081})");
  {
    DeltaPull pull = BeginDelta(f, *store);
    bool mangled = false;
    for (FileEntry& e : pull.answer.manifest.files) {
      if (e.path == rel) {
        e.size = 0;  // empty, with the digest of content: refused by the plan
        mangled = true;
      }
    }
    REQUIRE(mangled);
    REQUIRE_FALSE(pull.txn->Plan(pull.answer).ok());
    pull.txn->Abort();
  }
  f.clock.Advance(60000);
  Write(f.exp.root + "/" + rel, R"({"port": 8082})");
  MustPull(f, *store);
  CHECK(ObjectsOnDisk(f.data_dir) == NamedObjects(*store));
}

// A delta's Plan may take the store's held entry list as the next one
// (PullTxn NextFromHeld): a pull that then fails leaves the held
// generation as it was, and the next pull reads it again.
TEST_CASE("a delta that fails after planning leaves the held generation to the next pull") {
  StoreFixture f;
  auto store = f.OpenStore();
  MustPull(f, *store);
  const std::string rel_a = "datasets/" + f.exp.imgapi + "/etc/imgapi.config.json";
  const std::string rel_b = "datasets/" + f.exp.imgapi + "/images/ab/cd/manifest0.json";
  const std::string view = f.data_dir + "/instances/" + f.exp.imgapi + "/current/";
  f.clock.Advance(60000);
  Write(f.exp.root + "/" + rel_a, R"({"port": 8081})");
  {
    DeltaPull pull = BeginDelta(f, *store);
    REQUIRE(pull.txn->Plan(pull.answer).ok());
    pull.txn->Abort();
  }
  auto gen = store->Instance(f.exp.imgapi);
  REQUIRE(gen.ok());
  CHECK(Read(FileOf(*gen, rel_a)) == R"({"port": 8080})");
  CHECK(Read(view + rel_a) == R"({"port": 8080})");
  f.clock.Advance(60000);
  Write(f.exp.root + "/" + rel_b, R"({"v": 2})");
  CHECK(MustPull(f, *store).transfer_files == 2);
  gen = store->Instance(f.exp.imgapi);
  REQUIRE(gen.ok());
  CHECK(Read(FileOf(*gen, rel_a)) == R"({"port": 8081})");
  CHECK(Read(view + rel_a) == R"({"port": 8081})");
  CHECK(Read(view + rel_b) == R"({"v": 2})");
  CHECK(store->Verify().value().ok());
  // And once more from the list the last commit left in memory.
  f.clock.Advance(60000);
  Write(f.exp.root + "/" + rel_a, R"({"port": 8082})");
  CHECK(MustPull(f, *store).transfer_files == 1);
  CHECK(Read(view + rel_a) == R"({"port": 8082})");
  CHECK(Read(view + rel_b) == R"({"v": 2})");
  CHECK(store->Verify().value().ok());
}

TEST_CASE("a scrub finds a damaged generation tree and repair has the next pull write it again") {
  StoreFixture f;
  f.tree_shape = kTreePerDirectory;
  auto store = f.OpenStore();
  MustPull(f, *store);
  auto gen = store->Instance(f.exp.sapi);
  REQUIRE(gen.ok());
  const std::string dir = "datasets/" + f.exp.sapi + "/sapi";
  const std::string hex = TreesOf(*gen, f.tree_shape).ids->at(dir).Hex();
  const std::string tree = f.data_dir + "/objects/" + hex.substr(0, 2) + "/" + hex.substr(2);
  const std::string good = Read(tree);
  {
    std::ofstream out(tree, std::ios::binary | std::ios::trunc);
    out << std::string(good.size(), ' ');
  }
  auto looked = store->Scrub(/*repair=*/false);
  REQUIRE(looked.ok());
  REQUIRE(looked->problems.size() == 1);
  CHECK(looked->problems[0].what.find(hex.substr(2)) != std::string::npos);
  CHECK_FALSE(store->Verify().value().ok());

  auto repaired = store->Scrub(/*repair=*/true);
  REQUIRE(repaired.ok());
  CHECK(repaired->objects_removed == 1);
  CHECK(repaired->damaged_instances == std::vector<std::string>{f.exp.sapi});
  // No file is fetched again: the next pull only writes the trees anew.
  CHECK(MustPull(f, *store).transfer_files == 0);
  CHECK(Read(tree) == good);
  CHECK(store->Verify().value().ok());
  CHECK(store->Scrub(/*repair=*/true).value().ok());
  store.reset();
  store = f.OpenStore();
  CHECK(store->Instance(f.exp.sapi).ok());
}

TEST_CASE("a damaged tree never has Open delete its generation's content, and repair heals it") {
  StoreFixture f;
  f.tree_shape = kTreePerDirectory;
  auto store = f.OpenStore();
  MustPull(f, *store);
  auto gen = store->Instance(f.exp.sapi);
  REQUIRE(gen.ok());
  const std::string hex =
      TreesOf(*gen, f.tree_shape).ids->at("datasets/" + f.exp.sapi + "/sapi").Hex();
  const std::string tree = f.data_dir + "/objects/" + hex.substr(0, 2) + "/" + hex.substr(2);
  const std::string good = Read(tree);
  REQUIRE(::unlink(tree.c_str()) == 0);
  const std::set<std::string> before = ObjectsOnDisk(f.data_dir);
  store.reset();
  store = f.OpenStore();  // the generation cannot be read: its objects are unknown
  CHECK(ObjectsOnDisk(f.data_dir) == before);

  auto repaired = store->Scrub(/*repair=*/true);
  REQUIRE(repaired.ok());
  CHECK(repaired->damaged_instances == std::vector<std::string>{f.exp.sapi});
  CHECK(MustPull(f, *store).transfer_files == 0);  // every file is still held
  CHECK(Read(tree) == good);
  CHECK(store->Verify().value().ok());
  store.reset();
  store = f.OpenStore();
  CHECK(ObjectsOnDisk(f.data_dir) == NamedObjects(*store, f.tree_shape));
}

TEST_CASE("a catalog in a newer format is refused and left as it is") {
  StoreFixture f;
  {
    auto store = f.OpenStore();
    MustPull(f, *store);
  }
  json cat = json::parse(Read(f.data_dir + "/catalog.json"));
  cat["format_version"] = kCatalogFormatVersion + 1;
  Write(f.data_dir + "/catalog.json", cat.dump());
  const std::set<std::string> before = ObjectsOnDisk(f.data_dir);
  StoreOptions o;
  o.data_dir = f.data_dir;
  auto store = Store::Open(*Env::Default(), f.clock, o);
  REQUIRE_FALSE(store.ok());
  CHECK(store.status().message().find("newer") != std::string::npos);
  CHECK(json::parse(Read(f.data_dir + "/catalog.json")) == cat);
  CHECK(ObjectsOnDisk(f.data_dir) == before);
}

TEST_CASE("a format-2 catalog (descriptions listing their entries) opens, reads, and grows trees") {
  StoreFixture f;
  f.tree_shape = kTreePerDirectory;
  auto store = f.OpenStore();
  MustPull(f, *store);
  const uint64_t seq = store->FindInstance(f.exp.sapi)->seq;
  auto gen = store->Instance(f.exp.sapi);
  REQUIRE(gen.ok());
  store.reset();
  // Rewrite the sapi instance's description as format 2 wrote it.
  const std::string path =
      f.data_dir + "/instances/" + f.exp.sapi + "/" + std::to_string(seq) + ".json";
  auto desc = DecodeDescription(Read(path), path);
  REQUIRE(desc.ok());
  REQUIRE(desc->has_tree);
  desc->has_tree = false;
  desc->format_version = 2;
  for (const StoredFile& sf : gen->files) desc->files.push_back(sf.entry);
  const std::string flat = EncodeDescription(*desc);
  REQUIRE(flat.find("\"tree\"") == std::string::npos);
  REQUIRE(flat.find("\"entries\"") == std::string::npos);
  Write(path, flat);
  json cat = json::parse(Read(f.data_dir + "/catalog.json"));
  cat["format_version"] = 2;
  cat["instances"][f.exp.sapi]["description_digest"] = Xxh3Digest(flat).Hex();
  Write(f.data_dir + "/catalog.json", cat.dump());

  store = f.OpenStore();
  CHECK(store->Verify().value().ok());
  auto back = store->Instance(f.exp.sapi);
  REQUIRE(back.ok());
  CHECK(back->files.size() == gen->files.size());
  f.clock.Advance(60000);
  Write(f.Ds(f.exp.sapi) + "/sapi/db.json", "{\"v\": 3}");
  CHECK(MustPull(f, *store).transfer_files == 1);
  const uint64_t next = store->FindInstance(f.exp.sapi)->seq;
  CHECK(Read(f.data_dir + "/instances/" + f.exp.sapi + "/" + std::to_string(next) + ".json")
            .find("\"tree\"") != std::string::npos);
  CHECK(Read(FileOf(*store->Instance(f.exp.sapi, seq), "datasets/" + f.exp.sapi + "/sapi/db.json"))
            .size() > 0);  // the format-2 generation, retained, still reads
  CHECK(store->Scrub(/*repair=*/false).value().ok());
}

// Pulls, sets the sapi instance's db.json to `text`, pulls again; returns
// the object of the first generation's db.json, which only that generation
// names.
std::string PullEditPull(StoreFixture& f, Store& store, const std::string& text) {
  MustPull(f, store);
  const std::string first = ObjectOf(store, f.exp.sapi, "sapi/db.json");
  f.clock.Advance(60000);
  Write(f.Ds(f.exp.sapi) + "/sapi/db.json", text);
  MustPull(f, store);
  REQUIRE(ObjectOf(store, f.exp.sapi, "sapi/db.json") != first);
  return first;
}

TEST_CASE("verify and scrub check every retained generation, not only the current one") {
  StoreFixture f;
  auto store = f.OpenStore(/*gens=*/3);
  const std::string first = PullEditPull(f, *store, "{\"v\": 2}");
  REQUIRE(::unlink(first.c_str()) == 0);  // only the older generation names it
  auto ro = f.OpenReadOnly();
  REQUIRE(ro.ok());
  auto verify = store->Verify();
  auto verify_ro = (*ro)->Verify();
  auto scrub = store->Scrub(/*repair=*/false);
  REQUIRE((verify.ok() && verify_ro.ok() && scrub.ok()));
  const std::vector<const VerifyReport*> reports = {&*verify, &*verify_ro, &*scrub};
  for (const VerifyReport* r : reports) {
    REQUIRE(r->problems.size() == 1);
    CHECK(r->problems[0].path == first);
    CHECK(r->problems[0].what == "missing");
    CHECK(r->generations_checked >= 2);
  }
}

// Files under objects/ that no generation names: what a commit that failed
// after adopting its objects (or a crash there) leaves, and whatever else
// someone put there.
TEST_CASE("verify lists what objects/ holds that no generation names, repair deletes the objects") {
  StoreFixture f;
  auto store = f.OpenStore();
  MustPull(f, *store);
  const Digest256 orphan_id = Sha256Digest("left by a failed commit");
  const std::string hex = orphan_id.Hex();
  const std::string orphan = f.data_dir + "/objects/" + hex.substr(0, 2) + "/" + hex.substr(2);
  const std::string stray = f.data_dir + "/objects/" + hex.substr(0, 2) + "/notes.txt";
  Write(orphan, "left by a failed commit");
  Write(stray, "hand-made");
  auto ro = f.OpenReadOnly();
  REQUIRE(ro.ok());
  for (const Store* s : {store.get(), ro->get()}) {
    auto report = s->Verify();
    REQUIRE(report.ok());
    CHECK(report->ok());  // nothing a restore reads is wrong
    CHECK(report->unnamed_checked);
    REQUIRE(report->unnamed.size() == 2);
    CHECK(report->unnamed[0].path == orphan);  // sorted by path: "4285..." < "notes.txt"
    CHECK(report->unnamed[0].what.find("no retained generation names") == 0);
    CHECK(report->unnamed[1].path == stray);
    CHECK(report->unnamed[1].what.find("not an object") == 0);
    CHECK(report->unnamed_bytes == 23 + 9);
  }
  auto repaired = store->Scrub(/*repair=*/true);
  REQUIRE(repaired.ok());
  CHECK(repaired->unnamed.size() == 2);
  CHECK(repaired->unnamed_removed == 1);
  CHECK_FALSE(Exists(*Env::Default(), orphan));
  CHECK(Exists(*Env::Default(), stray));  // not an object: left for its owner
  CHECK(repaired->damaged_instances.empty());
  auto again = store->Verify();
  REQUIRE(again->unnamed.size() == 1);
  CHECK(again->unnamed[0].what.find("not an object") == 0);
}

// A read-only store (the CLI's, beside a running agent) cannot see the
// agent's commit in progress: objects adopted, catalog.json not yet
// replaced, the pull's staging directory still there.
TEST_CASE("a read-only verify names no object unnamed while another process may be committing") {
  StoreFixture f;
  auto store = f.OpenStore();
  MustPull(f, *store);
  auto ro = f.OpenReadOnly();
  REQUIRE(ro.ok());
  const std::string staging = f.data_dir + "/.staging/pull-headnode1";
  REQUIRE(Env::Default()->MakeDir(staging).ok());
  const Digest256 id = Sha256Digest("adopted, not yet named");
  Write(f.data_dir + "/objects/" + id.Hex().substr(0, 2) + "/" + id.Hex().substr(2),
        "adopted, not yet named");
  auto during = (*ro)->Verify();
  REQUIRE(during.ok());
  CHECK_FALSE(during->unnamed_checked);
  CHECK(during->unnamed.empty());
  CHECK(during->ok());
  REQUIRE(Env::Default()->RemoveDir(staging).ok());
  // The commit point passed: catalog.json replaced (by a pull of a change).
  f.clock.Advance(60000);
  Write(f.Ds(f.exp.sapi) + "/sapi/db.json", "{\"v\": 3}");
  MustPull(f, *store);
  auto after = (*ro)->Verify();
  REQUIRE(after.ok());
  CHECK_FALSE(after->unnamed_checked);
  CHECK(after->unnamed.empty());
  CHECK(after->ok());
  // Opened again, it sees the index that names what is there.
  auto fresh = f.OpenReadOnly();
  REQUIRE(fresh.ok());
  auto now = (*fresh)->Verify();
  CHECK(now->unnamed_checked);
  CHECK(now->unnamed.size() == 1);  // the planted object only
}

// An unreadable generation names objects nobody can list: none is called
// unnamed, and repair deletes none (as garbage collection at Open), also
// when it was unreadable when the store opened (so Open counted none of
// its objects); once it reads again, its objects are named again.
TEST_CASE("with a generation unreadable, verify names nothing unnamed and repair deletes nothing") {
  StoreFixture f;
  auto store = f.OpenStore(/*gens=*/3);
  const std::string older = PullEditPull(f, *store, "{\"v\": 2}");
  auto seqs = store->Generations(f.exp.sapi);
  REQUIRE(seqs.ok());
  REQUIRE(seqs->size() == 2);
  const std::string desc =
      f.data_dir + "/instances/" + f.exp.sapi + "/" + std::to_string(seqs->front()) + ".json";
  const std::string text = Read(desc);
  Write(desc, "{not json");
  const Digest256 id = Sha256Digest("named by nothing readable");
  const std::string planted =
      f.data_dir + "/objects/" + id.Hex().substr(0, 2) + "/" + id.Hex().substr(2);
  Write(planted, "named by nothing readable");
  const bool reopen = GENERATE(false, true);
  INFO("reopened with the description unreadable: " << reopen);
  if (reopen) store = f.OpenStore(/*gens=*/3);
  auto repaired = store->Scrub(/*repair=*/true);
  REQUIRE(repaired.ok());
  CHECK_FALSE(repaired->ok());  // the description is reported
  CHECK_FALSE(repaired->unnamed_checked);
  CHECK(repaired->unnamed_removed == 0);
  CHECK(Exists(*Env::Default(), planted));
  CHECK(Exists(*Env::Default(), older));
  // Readable again: its objects are named, the planted one is not.
  Write(desc, text);
  auto again = store->Verify();
  REQUIRE(again.ok());
  CHECK(again->ok());
  CHECK(again->unnamed_checked);
  REQUIRE(again->unnamed.size() == 1);
  CHECK(again->unnamed[0].path == planted);
}

// A read-only verify beside an agent whose retention drops the generation
// that was current when verify opened the catalog, and its objects, while
// verify reads: nothing of it is reported missing.
TEST_CASE("a read-only verify does not report what retention dropped while it ran") {
  StoreFixture f;
  auto store = f.OpenStore(/*gens=*/1);
  MustPull(f, *store);
  const std::string first = ObjectOf(*store, f.exp.sapi, "sapi/db.json");
  auto ro = f.OpenReadOnly();
  REQUIRE(ro.ok());
  f.clock.Advance(60000);
  Write(f.Ds(f.exp.sapi) + "/sapi/db.json", "{\"v\": 2}");
  MustPull(f, *store);
  REQUIRE_FALSE(Exists(*Env::Default(), first));  // dropped with its generation
  auto report = (*ro)->Verify();
  REQUIRE(report.ok());
  for (const VerifyProblem& p : report->problems) INFO(p.path << ": " << p.what);
  CHECK(report->ok());
  CHECK_FALSE(report->unnamed_checked);
}

TEST_CASE("a scrub survives a reopen of its record and a read-only store refuses it") {
  StoreFixture f;
  {
    auto store = f.OpenStore();
    MustPull(f, *store);
    CHECK_FALSE(store->LastScrub().has_value());
    REQUIRE(store->Scrub(/*repair=*/true).ok());
  }
  auto store = f.OpenStore();
  auto last = store->LastScrub();
  REQUIRE(last.has_value());
  CHECK(last->problems == 0);
  CHECK(last->objects_checked > 0);
  auto ro = f.OpenReadOnly();
  REQUIRE(ro.ok());
  CHECK_FALSE((*ro)->Scrub(false).ok());
}

}  // namespace
}  // namespace lifeboat::catalog
