#include "exports/exporter.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>

#include "base/fault_env.h"
#include "syncproto/manifest_codec.h"
#include "tests/unit/exports/test_util.h"

namespace lifeboat::exports {
namespace {

using syncproto::EntryKind;
using syncproto::FileEntry;
using syncproto::ManifestAnswer;
using testing::DirExport;
using testing::TempDir;
using testing::Write;

struct Fixture : testing::ExportFixture {
  ExporterOptions Options(std::vector<std::string> services = {}) {
    ExporterOptions o;
    o.provider = provider.get();
    o.services = std::move(services);
    o.state_dir = tmp / "state";
    o.node_uuid = "564dd1ac-164d-cc50-247c-b2eb0cf21ce5";
    o.node_name = "headnode0";
    o.racy_window_ms = 0;  // files are written right before each scan here
    return o;
  }
  std::unique_ptr<Exporter> Open(ExporterOptions o) {
    auto e = Exporter::Open(env, clock, std::move(o));
    REQUIRE(e.ok());
    return std::move(*e);
  }
};

std::map<std::string, FileEntry> ByPath(const std::vector<FileEntry>& files) {
  std::map<std::string, FileEntry> out;
  for (const auto& f : files) out[f.path] = f;
  return out;
}

ManifestAnswer Since(Exporter& e, uint64_t g, const std::string& boot,
                     std::vector<std::string> services = {}) {
  auto view = e.OpenView();
  REQUIRE(view.ok());
  auto a = (*view)->ManifestSince(g, boot, services);
  REQUIRE(a.ok());
  return *a;
}

TEST_CASE("scanner exports a realistic dir export") {
  Fixture f;
  auto e = f.Open(f.Options());
  auto stats = e->Rescan();
  REQUIRE(stats.ok());
  auto m = e->current();
  REQUIRE(m);
  CHECK(m->generation == 1);
  CHECK(m->boot_id.size() == 32);
  CHECK(m->node_name == "headnode0");

  REQUIRE(m->instances.size() == 3);
  CHECK(m->instances[0].uuid == f.exp.imgapi);
  CHECK(m->instances[0].alias == "imgapi0");
  CHECK(m->instances[0].service == "imgapi");
  CHECK(m->instances[0].image_uuid == f.exp.img_imgapi);
  CHECK(m->instances[2].service == "ufds");

  REQUIRE(m->images.size() == 5);
  std::map<std::string, std::string> origin;
  for (const auto& i : m->images) origin[i.uuid] = i.origin;
  CHECK(origin[f.exp.img_imgapi] == f.exp.img_base);
  CHECK(origin[f.exp.img_base] == f.exp.img_root);
  CHECK(origin[f.exp.img_root] == "");

  CHECK(std::is_sorted(m->files.begin(), m->files.end(),
                       [](const FileEntry& a, const FileEntry& b) { return a.path < b.path; }));
  auto files = ByPath(m->files);
  const std::string d = "datasets/" + f.exp.imgapi;
  CHECK(files.count("vms/" + f.exp.imgapi + ".json"));
  CHECK(files.count("sapi/" + f.exp.sapi + ".json"));
  CHECK(files.count("sapi/application.json"));
  CHECK(files.count("sapi/services/imgapi.json"));
  CHECK(files.count("images/" + f.exp.img_root + "/file"));
  CHECK(files.count("images/" + f.exp.img_root + "/manifest.json"));
  CHECK(files[d].kind == EntryKind::kDir);
  CHECK(files[d + "/images/ab/cd"].kind == EntryKind::kDir);
  CHECK(files[d + "/images/ab/cd/file0"].size == 100000);
  CHECK(files[d + "/images/ab/cd/file0"].digest == Xxh3Digest(std::string(100000, 'x')));
  CHECK(files[d + "/empty"].kind == EntryKind::kFile);
  CHECK(files[d + "/empty"].size == 0);
  CHECK(files[d + "/empty"].digest == Xxh3Digest(std::string()));
  CHECK(files[d + "/latest"].kind == EntryKind::kSymlink);
  CHECK(files[d + "/latest"].target == "images/ab/cd/file0");
  CHECK(files[d + "/logs/config"].target == "../etc/imgapi.config.json");
  CHECK(files.count("datasets/" + f.exp.sapi + "/sapi/nested/deeper/deepest/leaf.txt"));
  // Skipped, with a logged reason: dangling, escaping symlinks, a socket.
  CHECK(files.count(d + "/dangling") == 0);
  CHECK(files.count(d + "/logs/escape") == 0);
  CHECK(files.count(d + "/logs/agent.sock") == 0);
  CHECK(stats->skipped >= 2);
  for (const auto& entry : m->files) CHECK(syncproto::ValidateExportPath(entry.path).ok());
}

TEST_CASE("generation bumps exactly when the export changes, and survives restarts") {
  Fixture f;
  std::string boot;
  {
    auto e = f.Open(f.Options());
    REQUIRE(e->Rescan().ok());
    CHECK(e->generation() == 1);
    boot = e->boot_id();
    REQUIRE(e->Rescan().ok());
    CHECK(e->generation() == 1);
    CHECK_FALSE(e->last_scan().changed);

    Write(f.exp.root + "/datasets/" + f.exp.ufds + "/ldap/data.mdb", std::string(4096, '\2'));
    REQUIRE(e->Rescan().ok());
    CHECK(e->generation() == 2);
    CHECK(e->last_scan().changed);
    REQUIRE(e->Rescan().ok());
    CHECK(e->generation() == 2);

    REQUIRE(::unlink((f.exp.root + "/datasets/" + f.exp.sapi + "/sapi/db.json").c_str()) == 0);
    REQUIRE(e->Rescan().ok());
    CHECK(e->generation() == 3);
    Write(f.exp.root + "/datasets/" + f.exp.sapi + "/new.txt", "new");
    REQUIRE(e->Rescan().ok());
    CHECK(e->generation() == 4);
  }
  // A restart keeps generation and boot id; nothing changed, so no bump.
  auto e = f.Open(f.Options());
  REQUIRE(e->Rescan().ok());
  CHECK(e->generation() == 4);
  CHECK(e->boot_id() == boot);
  CHECK_FALSE(e->last_scan().changed);
  // A change after the restart continues from there, never backwards.
  Write(f.exp.root + "/datasets/" + f.exp.sapi + "/new.txt", "newer");
  REQUIRE(e->Rescan().ok());
  CHECK(e->generation() == 5);
}

TEST_CASE("a stat cache hit reads nothing, also after a restart") {
  Fixture f;
  {
    auto e = f.Open(f.Options());
    auto first = e->Rescan();
    REQUIRE(first.ok());
    CHECK(first->hashed_files > 10);
    CHECK(f.env.BytesRead() > 100000);
    f.env.ResetCounts();
    auto second = e->Rescan();
    REQUIRE(second.ok());
    CHECK(second->hashed_files == 0);
    CHECK(f.env.Count(EnvOp::kRead) == 0);
    CHECK(f.env.Count(EnvOp::kOpenRead) == 0);
    CHECK(f.env.BytesRead() == 0);
  }
  f.env.ResetCounts();
  auto e = f.Open(f.Options());  // loads the persisted cache (reads of the base and its log)
  const uint64_t state_reads = f.env.Count(EnvOp::kOpenRead);
  CHECK(state_reads == 2);
  REQUIRE(e->Rescan().ok());
  CHECK(f.env.Count(EnvOp::kOpenRead) == state_reads);

  // One changed file: exactly that file is read.
  Write(f.exp.root + "/datasets/" + f.exp.ufds + "/ldap/data.mdb", std::string(5000, '\3'));
  f.env.ResetCounts();
  auto s = e->Rescan();
  REQUIRE(s.ok());
  CHECK(s->hashed_files == 1);
  CHECK(f.env.BytesRead() == 5000);
}

TEST_CASE("a file changed within the racy window is hashed again on the next scan") {
  Fixture f;
  auto o = f.Options();
  o.racy_window_ms = 3'600'000;  // everything just written is "racy"
  auto e = f.Open(o);
  REQUIRE(e->Rescan().ok());
  f.env.ResetCounts();
  auto s = e->Rescan();
  REQUIRE(s.ok());
  CHECK(s->hashed_files > 10);
  CHECK_FALSE(s->changed);  // same content: re-read, but no new generation
}

TEST_CASE("ManifestSince answers unchanged, delta or full") {
  Fixture f;
  auto e = f.Open(f.Options());
  REQUIRE(e->Rescan().ok());
  const std::string boot = e->boot_id();
  const uint64_t g1 = e->generation();

  auto full = Since(*e, 0, "");
  CHECK(full.kind == ManifestAnswer::Kind::kFull);
  CHECK(full.manifest.files.size() == e->current()->files.size());

  auto same = Since(*e, g1, boot);
  CHECK(same.kind == ManifestAnswer::Kind::kUnchanged);
  CHECK(same.manifest.files.empty());
  CHECK(same.manifest.generation == g1);

  const std::string ds = "datasets/" + f.exp.sapi;
  Write(f.exp.root + "/" + ds + "/sapi/db.json", R"({"instances": [1]})");
  REQUIRE(::unlink((f.exp.root + "/" + ds + "/sapi/nested/deeper/deepest/leaf.txt").c_str()) == 0);
  Write(f.exp.root + "/" + ds + "/added.txt", "added");

  auto delta = Since(*e, g1, boot);
  REQUIRE(delta.kind == ManifestAnswer::Kind::kDelta);
  CHECK(delta.since_generation == g1);
  CHECK(delta.manifest.generation == g1 + 1);
  CHECK(delta.manifest.instances.size() == 3);  // instances and images always in full
  CHECK(delta.manifest.images.size() == 5);
  std::vector<std::string> paths;
  for (const auto& fe : delta.manifest.files) paths.push_back(fe.path);
  // The changed file, the added one, and the directories whose mtime moved.
  CHECK(std::count(paths.begin(), paths.end(), ds + "/sapi/db.json") == 1);
  CHECK(std::count(paths.begin(), paths.end(), ds + "/added.txt") == 1);
  for (const auto& p : paths) CHECK(p.rfind(ds, 0) == 0);  // nothing of other instances
  CHECK(delta.removed == std::vector<std::string>{ds + "/sapi/nested/deeper/deepest/leaf.txt"});

  CHECK(Since(*e, g1, "another-boot").kind == ManifestAnswer::Kind::kFull);
  CHECK(Since(*e, g1 + 5, boot).kind == ManifestAnswer::Kind::kFull);

  // Restricted to one service: only its instance, its image chain, sapi records.
  auto only = Since(*e, 0, "", {"imgapi"});
  REQUIRE(only.manifest.instances.size() == 1);
  CHECK(only.manifest.images.size() == 3);
  for (const auto& fe : only.manifest.files) {
    std::string inst = syncproto::InstanceOfPath(fe.path);
    CHECK((inst.empty() || inst == f.exp.imgapi));
  }
}

TEST_CASE("a generation older than the journal gets the full manifest") {
  Fixture f;
  auto o = f.Options();
  o.journal_generations = 2;
  auto e = f.Open(o);
  REQUIRE(e->Rescan().ok());
  const uint64_t g1 = e->generation();
  for (int i = 0; i < 3; ++i) {
    Write(f.exp.root + "/datasets/" + f.exp.ufds + "/ldap/n", std::to_string(i));
    REQUIRE(e->Rescan().ok());
  }
  CHECK(e->generation() == g1 + 3);
  CHECK(Since(*e, g1, e->boot_id()).kind == ManifestAnswer::Kind::kFull);
  CHECK(Since(*e, g1 + 1, e->boot_id()).kind == ManifestAnswer::Kind::kDelta);
}

TEST_CASE("export.services limits the export to those services and their images") {
  Fixture f;
  auto e = f.Open(f.Options({"sapi", "ufds"}));
  REQUIRE(e->Rescan().ok());
  auto m = e->current();
  REQUIRE(m->instances.size() == 2);
  CHECK(m->images.size() == 4);  // sapi -> base -> root, ufds -> root
  for (const auto& fe : m->files) {
    CHECK(fe.path.find(f.exp.imgapi) == std::string::npos);
    CHECK(fe.path != "sapi/services/imgapi.json");
  }
  // The filtered-out payload is cached: a rescan still reads nothing.
  f.env.ResetCounts();
  REQUIRE(e->Rescan().ok());
  CHECK(f.env.Count(EnvOp::kRead) == 0);
}

TEST_CASE("a view serves files by export path and refuses a file changed since the scan") {
  Fixture f;
  auto e = f.Open(f.Options());
  auto view = e->OpenView();
  REQUIRE(view.ok());
  const std::string path = "datasets/" + f.exp.imgapi + "/images/ab/cd/file0";
  FileEntry entry;
  auto file = (*view)->OpenFile(path, &entry);
  REQUIRE(file.ok());
  CHECK(entry.path == path);
  std::string content;
  REQUIRE(ForEachChunk(**file, 4096, [&](std::span<const uint8_t> c) {
            content.append(reinterpret_cast<const char*>(c.data()), c.size());
            return Status::Ok();
          }).ok());
  CHECK(Xxh3Digest(content) == entry.digest);

  CHECK((*view)->OpenFile("datasets/nope", &entry).status().code() == Code::kNotFound);
  CHECK((*view)->OpenFile("datasets/" + f.exp.imgapi + "/latest", &entry).status().code() ==
        Code::kNotFound);  // a symlink is not served as a file

  Write(f.exp.root + "/" + path, "changed");
  auto stale = (*view)->OpenFile(path, &entry);
  REQUIRE_FALSE(stale.ok());
  CHECK(stale.status().retryable());
}

// An Env whose first read of one file rewrites that file (a writer racing the hash).
class RacingEnv final : public Env {
 public:
  RacingEnv(std::string victim) : victim_(std::move(victim)) {}
  Result<std::unique_ptr<ReadableFile>> OpenRead(const std::string& path) override {
    if (path == victim_ && !raced_) {
      raced_ = true;
      auto f = base_->OpenRead(path);
      // The writer lands after open, before the hash's final fstat.
      WriteStringToFile(*base_, path, "rewritten while hashed, longer").IgnoreError();
      return f;
    }
    return base_->OpenRead(path);
  }
  Result<std::unique_ptr<WritableFile>> OpenWrite(const std::string& p, uint32_t m,
                                                  bool x) override {
    return base_->OpenWrite(p, m, x);
  }
  Result<std::unique_ptr<WritableFile>> OpenAppend(const std::string& p, uint32_t m) override {
    return base_->OpenAppend(p, m);
  }
  Result<FileStat> Stat(const std::string& p) override { return base_->Stat(p); }
  Result<std::vector<DirEntry>> ListDir(const std::string& p) override { return base_->ListDir(p); }
  Status MakeDir(const std::string& p, uint32_t m) override { return base_->MakeDir(p, m); }
  Status Rename(const std::string& a, const std::string& b) override { return base_->Rename(a, b); }
  Status Link(const std::string& a, const std::string& b) override { return base_->Link(a, b); }
  Status Symlink(const std::string& a, const std::string& b) override {
    return base_->Symlink(a, b);
  }
  Result<std::string> ReadLink(const std::string& p) override { return base_->ReadLink(p); }
  Status RemoveFile(const std::string& p) override { return base_->RemoveFile(p); }
  Status RemoveDir(const std::string& p) override { return base_->RemoveDir(p); }
  Status SyncDir(const std::string& p) override { return base_->SyncDir(p); }
  Status SetMode(const std::string& p, uint32_t m) override { return base_->SetMode(p, m); }
  Status SetMtime(const std::string& p, int64_t t) override { return base_->SetMtime(p, t); }
  Status CopyFile(const std::string& a, const std::string& b, uint32_t m) override {
    return base_->CopyFile(a, b, m);
  }
  bool raced_ = false;

 private:
  Env* base_ = Env::Default();
  std::string victim_;
};

TEST_CASE("a file that changes while it is hashed is hashed again, never served torn") {
  TempDir tmp;
  DirExport exp(tmp / "export");
  const std::string victim = exp.root + "/datasets/" + exp.ufds + "/ldap/data.mdb";
  RacingEnv env(victim);
  ManualClock clock;
  auto provider = MakeDirProvider(env, exp.root);
  ExporterOptions o;
  o.provider = provider.get();
  o.state_dir = tmp / "state";
  auto e = Exporter::Open(env, clock, o);
  REQUIRE(e.ok());
  auto s = (*e)->Rescan();
  REQUIRE(s.ok());
  CHECK(env.raced_);
  auto files = ByPath((*e)->current()->files);
  const auto& entry = files["datasets/" + exp.ufds + "/ldap/data.mdb"];
  CHECK(entry.digest == Xxh3Digest(std::string("rewritten while hashed, longer")));
  CHECK(entry.size == 30);
}

TEST_CASE("a corrupt state file starts a new lineage") {
  Fixture f;
  std::string boot;
  {
    auto e = f.Open(f.Options());
    REQUIRE(e->Rescan().ok());
    boot = e->boot_id();
  }
  Write(f.tmp / "state/export-state.bin", "garbage");
  auto e = f.Open(f.Options());
  CHECK(e->boot_id() != boot);
  REQUIRE(e->Rescan().ok());
  CHECK(e->generation() == 1);
  CHECK(Exists(*Env::Default(), f.tmp / "state/export-state.bin.corrupt"));
}

TEST_CASE("owners and hard links of a dataset are exported, and their changes are changes") {
  Fixture f;
  const std::string ds = f.exp.root + "/datasets/" + f.exp.sapi;
  const std::string p = "datasets/" + f.exp.sapi;
  Write(ds + "/pg/base", std::string(5000, 'b'));
  REQUIRE(::link((ds + "/pg/base").c_str(), (ds + "/pg/z-link").c_str()) == 0);
  REQUIRE(::link((ds + "/pg/base").c_str(), (ds + "/a-first").c_str()) == 0);
  const bool root = ::geteuid() == 0;
  if (root) REQUIRE(::lchown((ds + "/pg/base").c_str(), 907, 908) == 0);
  auto e = f.Open(f.Options());
  REQUIRE(e->Rescan().ok());
  auto files = ByPath(e->current()->files);
  // The group is named by its smallest path, whichever directory it is in.
  CHECK(files.at(p + "/a-first").hardlink_of.empty());
  CHECK(files.at(p + "/pg/base").hardlink_of == p + "/a-first");
  CHECK(files.at(p + "/pg/z-link").hardlink_of == p + "/a-first");
  CHECK(files.at(p + "/sapi/db.json").hardlink_of.empty());
  if (root) {
    CHECK(files.at(p + "/pg/z-link").uid == 907);
    CHECK(files.at(p + "/pg/z-link").gid == 908);
  }
  CHECK(files.at(p).uid == ::geteuid());  // the dataset root directory

  // Removing the group's first path renames the group; a restart keeps that.
  const uint64_t g = e->generation();
  REQUIRE(::unlink((ds + "/a-first").c_str()) == 0);
  REQUIRE(e->Rescan().ok());
  CHECK(e->generation() == g + 1);
  files = ByPath(e->current()->files);
  CHECK(files.at(p + "/pg/base").hardlink_of.empty());
  CHECK(files.at(p + "/pg/z-link").hardlink_of == p + "/pg/base");
  e.reset();
  auto again = f.Open(f.Options());
  REQUIRE(again->Rescan().ok());
  CHECK(again->generation() == g + 1);
  CHECK(ByPath(again->current()->files).at(p + "/pg/z-link").hardlink_of == p + "/pg/base");
}

// A reference manifest of a dir export's dataset trees, built the obvious
// way (lstat, read and hash every file): what the exporter must serve,
// however it represents its cache.
void ReferenceWalk(const std::string& local, const std::string& path,
                   std::map<std::string, FileEntry>* out) {
  auto entries = Env::Default()->ListDir(local);
  REQUIRE(entries.ok());
  for (const DirEntry& d : *entries) {
    const std::string l = local + "/" + d.name, p = path + "/" + d.name;
    auto st = Env::Default()->Stat(l);
    REQUIRE(st.ok());
    FileEntry fe;
    fe.path = p;
    fe.mode = st->mode;
    fe.mtime_ns = st->mtime_ns;
    fe.uid = st->uid;
    fe.gid = st->gid;
    if (st->type == FileType::kRegular) {
      auto content = ReadFileToString(*Env::Default(), l, 1 << 30);
      REQUIRE(content.ok());
      fe.kind = EntryKind::kFile;
      fe.size = content->size();
      fe.digest = Xxh3Digest(*content);
      fe.sha256 = Sha256Digest(*content);
    } else if (st->type == FileType::kDirectory) {
      fe.kind = EntryKind::kDir;
      ReferenceWalk(l, p, out);
    } else if (st->type == FileType::kSymlink) {
      auto target = Env::Default()->ReadLink(l);
      REQUIRE(target.ok());
      if (!syncproto::ValidateSymlinkTarget(p, *target).ok() ||
          !Exists(*Env::Default(), local + "/" + *target)) {
        continue;  // skipped by the exporter (escaping or dangling)
      }
      fe.kind = EntryKind::kSymlink;
      fe.target = *target;
      fe.digest = Xxh3Digest(*target);
    } else {
      continue;  // sockets and the like are skipped
    }
    (*out)[p] = fe;
  }
}

TEST_CASE("the served manifest is the same from a cold scan, a cache-hit scan and a restart") {
  Fixture f;
  const std::string ds = f.exp.root + "/datasets/" + f.exp.sapi;
  // Names whose bytewise path order differs from a directory-by-directory walk.
  for (const char* dir : {"/a", "/a-c", "/a.b", "/a/x", "/A"}) {
    REQUIRE(CreateDirs(*Env::Default(), ds + dir, 0755).ok());
  }
  Write(ds + "/a/x/f", "under a");
  Write(ds + "/a-c/f", "under a-c");
  Write(ds + "/a.b/f", "under a.b");
  Write(ds + "/a0", "a file after the dir a");
  REQUIRE(::link((ds + "/a0").c_str(), (ds + "/a/x/g").c_str()) == 0);
  REQUIRE(::symlink("x/f", (ds + "/a/link").c_str()) == 0);

  auto full_of = [&](Exporter& e) {
    auto a = Since(e, 0, "");
    REQUIRE(a.kind == ManifestAnswer::Kind::kFull);
    return a.manifest.files;
  };
  auto e = f.Open(f.Options());
  const std::vector<FileEntry> cold = full_of(*e);
  CHECK(e->last_scan().hashed_files > 10);
  const std::vector<FileEntry> warm = full_of(*e);
  CHECK(e->last_scan().hashed_files == 0);
  e.reset();
  auto restarted = f.Open(f.Options());
  const std::vector<FileEntry> loaded = full_of(*restarted);
  CHECK(restarted->last_scan().hashed_files == 0);
  CHECK(cold == warm);
  CHECK(cold == loaded);
  CHECK(cold == restarted->current()->files);

  // Sorted bytewise, one entry per path.
  for (size_t k = 1; k < cold.size(); ++k) CHECK(cold[k - 1].path < cold[k].path);
  // Every dataset entry is what a plain lstat/read/hash walk finds.
  std::map<std::string, FileEntry> want;
  for (const std::string& uuid : {f.exp.imgapi, f.exp.sapi, f.exp.ufds}) {
    ReferenceWalk(f.exp.root + "/datasets/" + uuid, "datasets/" + uuid, &want);
  }
  size_t compared = 0;
  for (FileEntry fe : cold) {
    if (!fe.path.starts_with("datasets/") || fe.path.find('/', 9) == std::string::npos) continue;
    INFO(fe.path);
    REQUIRE(want.count(fe.path) == 1);
    fe.hardlink_of.clear();  // the reference does not group links
    CHECK(fe == want.at(fe.path));
    ++compared;
  }
  CHECK(compared == want.size());
  auto files = ByPath(cold);
  const std::string p = "datasets/" + f.exp.sapi;
  // "a/x/g" sorts before "a0" ('/' < '0') though the walk meets "a0" first.
  CHECK(files.at(p + "/a0").hardlink_of == p + "/a/x/g");
  CHECK(files.at(p + "/a/x/g").hardlink_of.empty());
  CHECK(files.at(p + "/a/link").target == "x/f");
}

TEST_CASE("a change right after a no-change pull is seen by the next pull") {
  Fixture f;
  auto e = f.Open(f.Options());
  REQUIRE(e->Rescan().ok());
  const std::string boot = e->boot_id();
  const uint64_t g = e->generation();
  const std::string path = "datasets/" + f.exp.ufds + "/ldap/data.mdb";
  const std::string local = f.exp.root + "/" + path;

  // A no-change pull: its view answers "unchanged" and shares the scan.
  auto quiet = e->OpenView();
  REQUIRE(quiet.ok());
  auto unchanged = (*quiet)->ManifestSince(g, boot, {});
  REQUIRE(unchanged.ok());
  CHECK(unchanged->kind == ManifestAnswer::Kind::kUnchanged);
  FileEntry before;
  REQUIRE((*quiet)->OpenFile(path, &before).ok());

  // Same size, rewritten in place right after that pull.
  auto old_content = ReadFileToString(*Env::Default(), local, 1 << 20);
  REQUIRE(old_content.ok());
  std::string new_content = *old_content;
  new_content[0] = static_cast<char>(new_content[0] ^ 0x5a);
  Write(local, new_content);

  auto next = e->OpenView();
  REQUIRE(next.ok());
  auto delta = (*next)->ManifestSince(g, boot, {});
  REQUIRE(delta.ok());
  REQUIRE(delta->kind == ManifestAnswer::Kind::kDelta);
  CHECK(delta->manifest.generation == g + 1);
  auto files = ByPath(delta->manifest.files);
  REQUIRE(files.count(path) == 1);
  CHECK(files.at(path).digest == Xxh3Digest(new_content));
  CHECK(files.at(path).digest != before.digest);
  FileEntry served;
  REQUIRE((*next)->OpenFile(path, &served).ok());
  CHECK(served.digest == Xxh3Digest(new_content));

  // The earlier view still describes its own scan, and refuses the changed file.
  auto old_full = (*quiet)->ManifestSince(0, "", {});
  REQUIRE(old_full.ok());
  CHECK(old_full->manifest.generation == g);
  CHECK(ByPath(old_full->manifest.files).at(path).digest == before.digest);
  auto stale = (*quiet)->OpenFile(path, nullptr);
  REQUIRE_FALSE(stale.ok());
  CHECK(stale.status().retryable());

  // And after that change, another quiet pull is quiet again.
  REQUIRE(e->Rescan().ok());
  CHECK_FALSE(e->last_scan().changed);
  CHECK(Since(*e, g + 1, boot).kind == ManifestAnswer::Kind::kUnchanged);
}

TEST_CASE("a no-change rescan of a 20k-file export is a stat walk only") {
  TempDir tmp;
  DirExport exp(tmp / "export");
  const std::string big = exp.root + "/datasets/" + exp.imgapi + "/many";
  for (int d = 0; d < 100; ++d) {
    std::string dir = big + "/d" + std::to_string(d);
    REQUIRE(CreateDirs(*Env::Default(), dir, 0755).ok());
    for (int i = 0; i < 200; ++i) {
      REQUIRE(WriteStringToFile(*Env::Default(), dir + "/f" + std::to_string(i),
                                "content " + std::to_string(d * 1000 + i))
                  .ok());
    }
  }
  FaultEnv env(Env::Default());
  ManualClock clock;
  auto provider = MakeDirProvider(env, exp.root);
  ExporterOptions o;
  o.provider = provider.get();
  o.state_dir = tmp / "state";
  o.racy_window_ms = 0;
  auto e = Exporter::Open(env, clock, o);
  REQUIRE(e.ok());
  auto t0 = std::chrono::steady_clock::now();
  auto first = (*e)->Rescan();
  auto t1 = std::chrono::steady_clock::now();
  REQUIRE(first.ok());
  CHECK(first->files > 20000);
  env.ResetCounts();
  auto second = (*e)->Rescan();
  REQUIRE(second.ok());
  CHECK(second->hashed_files == 0);
  CHECK(env.Count(EnvOp::kRead) == 0);
  CHECK(env.Count(EnvOp::kOpenRead) == 0);
  CHECK(env.BytesRead() == 0);
  CHECK_FALSE(second->changed);
  // The best of a few no-change rescans, against a bare stat walk of the same tree.
  int64_t best_rescan = INT64_MAX, best_walk = INT64_MAX;
  std::function<void(const std::string&)> walk = [&](const std::string& dir) {
    auto entries = Env::Default()->ListDir(dir);
    for (const DirEntry& d : *entries) {
      auto st = Env::Default()->Stat(dir + "/" + d.name);
      if (st->type == FileType::kDirectory) walk(dir + "/" + d.name);
    }
  };
  for (int i = 0; i < 3; ++i) {
    auto a = std::chrono::steady_clock::now();
    REQUIRE((*e)->Rescan().ok());
    auto b = std::chrono::steady_clock::now();
    walk(exp.root);
    auto c = std::chrono::steady_clock::now();
    best_rescan = std::min<int64_t>(
        best_rescan, std::chrono::duration_cast<std::chrono::microseconds>(b - a).count());
    best_walk = std::min<int64_t>(
        best_walk, std::chrono::duration_cast<std::chrono::microseconds>(c - b).count());
  }
  WARN("20k-file export: first scan "
       << std::chrono::duration_cast<std::chrono::milliseconds>(t1 - t0).count()
       << " ms; no-change rescan " << best_rescan / 1000 << " ms (bare stat walk "
       << best_walk / 1000 << " ms), " << env.Count(EnvOp::kStat) << " stats, "
       << env.Count(EnvOp::kListDir) << " listdirs, 0 reads");
}

std::vector<syncproto::InstanceWarning> WarningsOf(const syncproto::Manifest& m,
                                                   const std::string& uuid) {
  for (const auto& i : m.instances) {
    if (i.uuid == uuid) return i.warnings;
  }
  FAIL("no instance " << uuid);
  return {};
}

std::vector<std::string> PathsOf(const std::vector<syncproto::InstanceWarning>& w) {
  std::vector<std::string> out;
  for (const auto& x : w) out.push_back(x.path);
  return out;
}

TEST_CASE("what the exporter skips lands in its instance's warnings, and a fix clears them") {
  Fixture f;
  auto e = f.Open(f.Options());
  REQUIRE(e->Rescan().ok());
  const std::string d = "datasets/" + f.exp.imgapi, s = "datasets/" + f.exp.sapi,
                    u = "datasets/" + f.exp.ufds;
  // The fixture's dangling and escaping symlinks and its socket: imgapi's, by export path.
  auto m = e->current();
  auto w = WarningsOf(*m, f.exp.imgapi);
  CHECK(PathsOf(w) ==
        std::vector<std::string>{d + "/dangling", d + "/logs/agent.sock", d + "/logs/escape"});
  CHECK_THAT(w[0].reason, Catch::Contains("dangling"));
  CHECK_THAT(w[1].reason, Catch::Contains("not a regular file"));
  CHECK_THAT(w[2].reason, Catch::Contains("outside"));
  CHECK(WarningsOf(*m, f.exp.sapi).empty());
  CHECK(WarningsOf(*m, f.exp.ufds).empty());
  const uint64_t g1 = e->generation();
  const std::string boot = e->boot_id();

  // A FIFO and an unreadable file in sapi's dataset, ufds' dataset folder
  // replaced by a symlink: each lands in its own instance.
  const std::string sapi_ds = f.exp.root + "/" + s, ufds_ds = f.exp.root + "/" + u;
  REQUIRE(::mkfifo((sapi_ds + "/pipe").c_str(), 0600) == 0);
  Write(sapi_ds + "/secret", "no");
  REQUIRE(::rename(ufds_ds.c_str(), (f.tmp / "ufds-moved").c_str()) == 0);
  REQUIRE(::symlink((f.tmp / "ufds-moved").c_str(), ufds_ds.c_str()) == 0);
  f.env.FailNth(EnvOp::kOpenRead, 1, EACCES, /*sticky=*/false);  // the one new file: secret
  REQUIRE(e->Rescan().ok());
  m = e->current();
  CHECK(e->generation() == g1 + 1);  // only instance metadata changed for ufds: still a change
  w = WarningsOf(*m, f.exp.sapi);
  CHECK(PathsOf(w) == std::vector<std::string>{s + "/pipe", s + "/secret"});
  CHECK_THAT(w[1].reason, Catch::Contains("unreadable"));
  w = WarningsOf(*m, f.exp.ufds);
  REQUIRE(w.size() == 1);
  CHECK(w[0].path == u);
  CHECK_THAT(w[0].reason, Catch::Contains("symlink"));
  CHECK(WarningsOf(*m, f.exp.imgapi).size() == 3);
  // A delta carries every instance with its warnings. (The view rescans:
  // secret must stay unreadable for it, or its warning goes.)
  f.env.FailNth(EnvOp::kOpenRead, 1, EACCES, /*sticky=*/false);
  ManifestAnswer a = Since(*e, g1, boot);
  CHECK(e->generation() == g1 + 1);
  CHECK(a.kind == ManifestAnswer::Kind::kDelta);
  CHECK(a.manifest.instances == m->instances);

  // Fixed on the exporter: the next scan serves the instances without them.
  REQUIRE(::unlink((sapi_ds + "/pipe").c_str()) == 0);
  REQUIRE(::unlink(ufds_ds.c_str()) == 0);
  REQUIRE(::rename((f.tmp / "ufds-moved").c_str(), ufds_ds.c_str()) == 0);
  REQUIRE(e->Rescan().ok());  // secret is readable now
  m = e->current();
  CHECK(e->generation() == g1 + 2);
  CHECK(WarningsOf(*m, f.exp.sapi).empty());
  CHECK(WarningsOf(*m, f.exp.ufds).empty());
  a = Since(*e, g1 + 1, boot);
  CHECK(a.kind == ManifestAnswer::Kind::kDelta);
  CHECK(a.manifest.instances == m->instances);

  // Kept in the state: a restart that finds the same skips is no change.
  e.reset();
  e = f.Open(f.Options());
  REQUIRE(e->Rescan().ok());
  CHECK(e->generation() == g1 + 2);
  CHECK(WarningsOf(*e->current(), f.exp.imgapi).size() == 3);
}

TEST_CASE("an instance's warnings are bounded: the last one counts the rest") {
  Fixture f;
  const std::string s = "datasets/" + f.exp.sapi;
  for (int i = 0; i < 20; ++i) {
    const std::string link = f.exp.root + "/" + s + "/gone" + std::to_string(10 + i);
    REQUIRE(::symlink("nowhere", link.c_str()) == 0);
  }
  auto e = f.Open(f.Options());
  REQUIRE(e->Rescan().ok());
  auto w = WarningsOf(*e->current(), f.exp.sapi);
  REQUIRE(w.size() == syncproto::kMaxInstanceWarnings);
  CHECK(w[0].path == s + "/gone10");
  CHECK(w[14].path == s + "/gone24");
  CHECK(w[15].path == s);
  CHECK(w[15].reason == "5 more paths skipped");
  // And they go through the codec.
  auto a = Since(*e, 0, "");
  auto back = syncproto::DecodeManifestAnswer(syncproto::EncodeManifestAnswer(a));
  REQUIRE(back.ok());
  CHECK(back->manifest.instances == a.manifest.instances);
}

}  // namespace
}  // namespace lifeboat::exports
