#include "base/env.h"

#include <sys/stat.h>

#include <map>

#include <catch2/catch.hpp>

#include "base/fault_env.h"
#include "tests/unit/base/test_dir.h"

namespace lifeboat {
namespace {

using testing::TestDir;

std::string Read(Env& env, const std::string& path) {
  auto r = ReadFileToString(env, path);
  REQUIRE(r.ok());
  return *r;
}

TEST_CASE("WriteFileAtomic replaces the file and leaves no temp behind", "[env]") {
  TestDir dir;
  Env& env = *Env::Default();
  const std::string path = dir / "catalog.json";
  REQUIRE(WriteFileAtomic(env, path, "old").ok());
  REQUIRE(WriteFileAtomic(env, path, "new", 0600).ok());
  CHECK(Read(env, path) == "new");
  auto st = env.Stat(path);
  REQUIRE(st.ok());
  CHECK(st->mode == 0600);
  auto entries = env.ListDir(dir.path());
  REQUIRE(entries.ok());
  CHECK(entries->size() == 1);
}

TEST_CASE("ListDirStat gives each entry's lstat, the same from the POSIX and a wrapping Env",
          "[env]") {
  TestDir dir;
  Env& env = *Env::Default();
  REQUIRE(WriteStringToFile(env, dir / "file", "12345").ok());
  REQUIRE(env.MakeDir(dir / "sub", 0750).ok());
  REQUIRE(env.Symlink("file", dir / "link").ok());
  REQUIRE(env.Symlink("nowhere", dir / "dangling").ok());
  FaultEnv wrapped(Env::Default());  // the default implementation: ListDir + Stat
  for (Env* e : {&env, static_cast<Env*>(&wrapped)}) {
    auto listing = e->ListDirStat(dir.path());
    REQUIRE(listing.ok());
    CHECK(listing->dir.type == FileType::kDirectory);
    CHECK(listing->dir.ino == env.Stat(dir.path())->ino);
    std::map<std::string, FileStat> by_name;
    for (auto& entry : listing->entries) {
      REQUIRE(entry.stat.ok());
      by_name[entry.name] = *entry.stat;
    }
    REQUIRE(by_name.size() == 4);
    CHECK(by_name["file"].type == FileType::kRegular);
    CHECK(by_name["file"].size == 5);
    CHECK(by_name["file"].ino == env.Stat(dir / "file")->ino);
    CHECK(by_name["sub"].type == FileType::kDirectory);
    CHECK(by_name["sub"].mode == 0750);
    CHECK(by_name["link"].type == FileType::kSymlink);  // not followed
    CHECK(by_name["dangling"].type == FileType::kSymlink);
  }
  CHECK(wrapped.Count(EnvOp::kStat) == 5);  // the directory and each entry
  auto missing = env.ListDirStat(dir / "missing");
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.status().message().find(dir / "missing") != std::string::npos);
  // A symlink to a directory is not listed through, by either.
  REQUIRE(env.Symlink("sub", dir / "sub-link").ok());
  for (Env* e : {&env, static_cast<Env*>(&wrapped)}) {
    auto through = e->ListDirStat(dir / "sub-link");
    REQUIRE_FALSE(through.ok());
    CHECK(through.status().message().find("sub-link") != std::string::npos);
  }
}

TEST_CASE("a failure at any step of an atomic publish keeps the old file intact", "[env]") {
  TestDir dir;
  FaultEnv fault(Env::Default());
  const std::string path = dir / "catalog.json";
  REQUIRE(WriteFileAtomic(fault, path, "generation 1").ok());

  const EnvOp steps[] = {EnvOp::kOpenWrite, EnvOp::kWrite, EnvOp::kSync, EnvOp::kClose,
                         EnvOp::kRename};
  for (EnvOp op : steps) {
    DYNAMIC_SECTION("failing " << EnvOpName(op)) {
      fault.FailNth(op, 1, ENOSPC);
      fault.PartialWrites(true);
      Status s = WriteFileAtomic(fault, path, "generation 2, much longer than the first");
      fault.ClearFaults();
      CHECK_FALSE(s.ok());
      CHECK(s.message().find("No space left on device") != std::string::npos);
      CHECK(Read(*Env::Default(), path) == "generation 1");
      auto entries = Env::Default()->ListDir(dir.path());
      REQUIRE(entries.ok());
      CHECK(entries->size() == 1);  // the temp file was removed
    }
  }
}

TEST_CASE("a crash after N mutating calls never exposes a torn file", "[env]") {
  TestDir dir;
  const std::string path = dir / "state";
  REQUIRE(WriteFileAtomic(*Env::Default(), path, "A").ok());
  // Mutating calls of a publish: create, write, fsync, rename, fsync dir.
  for (uint64_t n = 0; n <= 5; ++n) {
    REQUIRE(WriteFileAtomic(*Env::Default(), path, "A").ok());
    FaultEnv fault(Env::Default());
    fault.CrashAfter(n);
    Status s = WriteFileAtomic(fault, path, "BBBB");
    std::string now = Read(*Env::Default(), path);
    INFO("crash after " << n << " mutating calls: " << s.ToString());
    if (n < 4) {
      CHECK_FALSE(s.ok());
      CHECK(now == "A");  // crashed before the rename: the old file stands
    } else {
      CHECK(now == "BBBB");  // renamed; a failed directory fsync is still reported
      CHECK(s.ok() == (n == 5));
    }
  }
}

TEST_CASE("FaultEnv counts calls and bytes read", "[env]") {
  TestDir dir;
  FaultEnv fault(Env::Default());
  REQUIRE(WriteStringToFile(fault, dir / "f", std::string(10000, 'z')).ok());
  fault.ResetCounts();
  CHECK(Read(fault, dir / "f").size() == 10000);
  CHECK(fault.Count(EnvOp::kOpenRead) == 1);
  CHECK(fault.BytesRead() == 10000);
  CHECK(fault.Count(EnvOp::kWrite) == 0);
}

TEST_CASE("FaultEnv fails only the Nth call when not sticky", "[env]") {
  TestDir dir;
  FaultEnv fault(Env::Default());
  fault.FailNth(EnvOp::kMakeDir, 2, EIO, /*sticky=*/false);
  CHECK(fault.MakeDir(dir / "a", 0700).ok());
  Status second = fault.MakeDir(dir / "b", 0700);
  CHECK(second.code() == Code::kIo);
  CHECK(second.message().find("injected fault: mkdir") != std::string::npos);
  CHECK(fault.MakeDir(dir / "c", 0700).ok());
}

TEST_CASE("SyncFile fsyncs a closed file, never through a symlink, FaultEnv crashes there",
          "[env]") {
  TestDir dir;
  Env& env = *Env::Default();
  {
    auto w = env.OpenWrite(dir / "f", 0600);
    REQUIRE(w.ok());
    REQUIRE((*w)->Append(std::string(3 << 20, 'x')).ok());
    (*w)->StartWriteback(0, 1 << 20);  // a hint: no result, the data is unchanged
    (*w)->StartWriteback();
    REQUIRE((*w)->Close().ok());
  }
  CHECK(env.SyncFile(dir / "f").ok());
  CHECK(Read(env, dir / "f") == std::string(3 << 20, 'x'));
  CHECK(env.SyncFile(dir / "missing").code() == Code::kNotFound);
  REQUIRE(env.Symlink("f", dir / "link").ok());
  Status through = env.SyncFile(dir / "link");
  CHECK_FALSE(through.ok());
  CHECK(through.message().find(dir / "link") != std::string::npos);

  FaultEnv fault(&env);
  CHECK(fault.SyncFile(dir / "f").ok());
  CHECK(fault.Count(EnvOp::kSync) == 1);
  fault.CrashAfter(0);
  CHECK(fault.SyncFile(dir / "f").code() == Code::kIo);
}

TEST_CASE("OpenFilesystem syncs the filesystem of a directory, FaultEnv counts and fails it",
          "[env]") {
  TestDir dir;
  Env& env = *Env::Default();
  auto fs = env.OpenFilesystem(dir.path());
  REQUIRE(fs.ok());
  CHECK((*fs)->path() == dir.path());
  REQUIRE(WriteFileAtomic(env, dir / "f", "data").ok());
  CHECK((*fs)->Sync().ok());
  CHECK(Read(env, dir / "f") == "data");
  Result<std::unique_ptr<Filesystem>> missing = env.OpenFilesystem(dir / "missing");
  CHECK(missing.status().code() == Code::kNotFound);
  CHECK(missing.status().message().find(dir / "missing") != std::string::npos);

  FaultEnv fault(&env);
  auto ffs = fault.OpenFilesystem(dir.path());
  REQUIRE(ffs.ok());
  CHECK(fault.Count(EnvOp::kOpenRead) == 1);
  CHECK((*ffs)->Sync().ok());
  CHECK(fault.Count(EnvOp::kSyncFs) == 1);
  CHECK(IsMutating(EnvOp::kSyncFs));
  fault.FailNth(EnvOp::kSyncFs, 1, EIO);
  Status failed = (*ffs)->Sync();
  CHECK(failed.code() == Code::kIo);
  CHECK(failed.message().find("injected fault: syncfs") != std::string::npos);
  CHECK(failed.message().find(dir.path()) != std::string::npos);
}

TEST_CASE("CreateDirs and RemoveTree work on nested trees without following symlinks", "[env]") {
  TestDir dir;
  TestDir outside;
  Env& env = *Env::Default();
  REQUIRE(WriteStringToFile(env, outside / "keep", "precious").ok());
  REQUIRE(CreateDirs(env, dir / "a/b/c").ok());
  REQUIRE(CreateDirs(env, dir / "a/b/c").ok());  // idempotent
  REQUIRE(WriteStringToFile(env, dir / "a/b/c/f", "x").ok());
  REQUIRE(env.Symlink(outside.path(), dir / "a/link").ok());
  REQUIRE(RemoveTree(env, dir / "a").ok());
  CHECK_FALSE(Exists(env, dir / "a"));
  CHECK(Read(env, outside / "keep") == "precious");
  CHECK(RemoveTree(env, dir / "missing").ok());
}

TEST_CASE("OpenWrite refuses to write through a symlink", "[env]") {
  TestDir dir;
  Env& env = *Env::Default();
  REQUIRE(WriteStringToFile(env, dir / "target", "safe").ok());
  REQUIRE(env.Symlink("target", dir / "link").ok());
  CHECK_FALSE(env.OpenWrite(dir / "link", 0644, false).ok());
  CHECK(Read(env, dir / "target") == "safe");
}

TEST_CASE("OpenAppend creates, keeps what is there and appends, never through a symlink", "[env]") {
  TestDir dir;
  FaultEnv env(Env::Default());
  const std::string path = dir / "log";
  {
    auto f = env.OpenAppend(path, 0600);
    REQUIRE(f.ok());
    REQUIRE((*f)->Append("one,").ok());
    REQUIRE((*f)->Close().ok());
  }
  auto st = env.Stat(path);
  REQUIRE(st.ok());
  CHECK(st->mode == 0600);
  {
    auto f = env.OpenAppend(path, 0600);
    REQUIRE(f.ok());
    REQUIRE((*f)->Append("two").ok());
    REQUIRE((*f)->Sync().ok());
  }
  CHECK(Read(env, path) == "one,two");
  CHECK(env.Count(EnvOp::kOpenWrite) == 2);  // faulted as a create
  env.FailNth(EnvOp::kOpenWrite, 1, ENOSPC);
  CHECK_FALSE(env.OpenAppend(path, 0600).ok());
  env.ClearFaults();
  REQUIRE(env.Symlink("log", dir / "link").ok());
  CHECK_FALSE(env.OpenAppend(dir / "link", 0600).ok());
  CHECK(Read(env, path) == "one,two");
}

TEST_CASE("CopyFile copies bytes and mode and refuses to overwrite", "[env]") {
  TestDir dir;
  Env& env = *Env::Default();
  std::string data(3 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31);
  REQUIRE(WriteStringToFile(env, dir / "src", data).ok());
  REQUIRE(env.CopyFile(dir / "src", dir / "dst", 0640).ok());
  CHECK(Read(env, dir / "dst") == data);
  CHECK(env.Stat(dir / "dst")->mode == 0640);
  CHECK_FALSE(env.CopyFile(dir / "src", dir / "dst", 0640).ok());
}

TEST_CASE("SetMtime sets nanosecond mtimes that Stat reads back", "[env]") {
  TestDir dir;
  Env& env = *Env::Default();
  REQUIRE(WriteStringToFile(env, dir / "f", "x").ok());
  const int64_t t = 1'700'000'000'123'456'789;
  REQUIRE(env.SetMtime(dir / "f", t).ok());
  CHECK(env.Stat(dir / "f")->mtime_ns == t);
}

TEST_CASE("errors name the path and the errno text", "[env]") {
  Env& env = *Env::Default();
  auto r = env.OpenRead("/nonexistent/lifeboat/file");
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kNotFound);
  CHECK(r.status().message() == "open /nonexistent/lifeboat/file: No such file or directory");
}

TEST_CASE("path helpers", "[env]") {
  CHECK(JoinPath("a/b", "c") == "a/b/c");
  CHECK(JoinPath("a/b/", "c") == "a/b/c");
  CHECK(DirName("a/b/c") == "a/b");
  CHECK(DirName("c") == ".");
  CHECK(DirName("/c") == "/");
  CHECK(BaseName("a/b/c") == "c");
}

}  // namespace
TEST_CASE("OpenRead never blocks on a FIFO and refuses what is not a regular file") {
  TestDir dir;
  Env& env = *Env::Default();
  const std::string fifo = dir / "fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0644) == 0);
  auto f = env.OpenRead(fifo);  // no writer: a blocking open would hang here
  REQUIRE_FALSE(f.ok());
  CHECK(f.status().code() == Code::kData);
  CHECK(f.status().message().find("not a regular file") != std::string::npos);
  CHECK_FALSE(env.OpenRead(dir.path()).ok());  // a directory
  REQUIRE(WriteStringToFile(env, dir / "file", "x").ok());
  CHECK(env.OpenRead(dir / "file").ok());
}

}  // namespace lifeboat
