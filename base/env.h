// Env: the filesystem seam (after leveldb's include/leveldb/env.h).
//
// Every file operation of Lifeboat goes through an Env so tests can count
// calls and inject faults (see base/fault_env.h). Env::Default() is the POSIX
// implementation. All methods are thread-safe; file objects are not (one
// thread at a time per object) except ReadableFile::ReadAt, which is pread.
//
// Paths are plain strings; no method follows a symlink in the last path
// component unless it says so (Stat is lstat, SetMtime does not follow).
#ifndef LIFEBOAT_BASE_ENV_H_
#define LIFEBOAT_BASE_ENV_H_

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace lifeboat {

enum class FileType : uint8_t { kRegular, kDirectory, kSymlink, kOther };

struct FileStat {
  FileType type = FileType::kOther;
  uint64_t dev = 0;
  uint64_t ino = 0;
  uint64_t size = 0;
  uint32_t mode = 0;  // permission bits only (07777)
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t nlink = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;
};

struct DirEntry {
  std::string name;
  FileType type;  // from d_type; kOther when the filesystem did not say (then Stat it)
};

// A file open for reading. ReadAt may be called from several threads at once.
class ReadableFile {
 public:
  virtual ~ReadableFile() = default;
  // Reads up to buf.size() bytes at `offset`; returns the count, 0 at end of file.
  virtual Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> buf) = 0;
  // fstat of the open file.
  virtual Result<FileStat> Stat() = 0;
  virtual const std::string& path() const = 0;
  // The raw descriptor, for copy_file_range and friends; -1 if there is none.
  virtual int fd() const { return -1; }
};

// A file open for writing, appended to sequentially. Not thread-safe.
// The destructor closes the file without reporting errors: call Close() to
// learn whether the data reached the kernel.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  // Writes all of `data` or fails (a failure may leave a prefix written).
  virtual Status Append(std::span<const uint8_t> data) = 0;
  Status Append(std::string_view data) {
    return Append(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size()));
  }
  virtual Status Sync() = 0;   // fdatasync
  virtual Status Close() = 0;  // idempotent
  // Asks the kernel to start writing back the dirty pages of [offset,
  // offset + length) (length 0: to the end) without waiting for them
  // (sync_file_range SYNC_FILE_RANGE_WRITE), so a later fsync finds little
  // left to do. A hint: no durability promise, no error. Default: nothing.
  virtual void StartWriteback(uint64_t /*offset*/ = 0, uint64_t /*length*/ = 0) {}
  virtual const std::string& path() const = 0;
  virtual int fd() const { return -1; }
};

// The filesystem holding a directory, held open so that writeback errors
// reach Sync (syncfs(2) reports an error that happened on the filesystem
// since the handle was opened, once to each handle). Not thread-safe.
class Filesystem {
 public:
  virtual ~Filesystem() = default;
  // Makes every write on the filesystem durable, data and metadata, also
  // other processes' (syncfs(2)): one call instead of an fsync per file and
  // directory. Fails when writeback of any file on it failed since the
  // handle was opened, ours or not (the caller must assume the worst).
  virtual Status Sync() = 0;
  virtual const std::string& path() const = 0;
};

class Env {
 public:
  virtual ~Env() = default;

  // The process-wide POSIX Env. Never null, never freed.
  static Env* Default();

  // Opens a regular file for reading (following symlinks). Never blocks on
  // what is not a regular file: a FIFO, socket or device is a data error.
  virtual Result<std::unique_ptr<ReadableFile>> OpenRead(const std::string& path) = 0;
  // Creates `path` with `mode` (truncating an existing file, or failing with
  // EEXIST when `exclusive`). Never follows a symlink at `path`.
  virtual Result<std::unique_ptr<WritableFile>> OpenWrite(const std::string& path,
                                                          uint32_t mode = 0644,
                                                          bool exclusive = false) = 0;
  // Opens `path` for appending: creates it with `mode` when missing, never
  // truncates; every Append lands at the end of the file (O_APPEND). Never
  // follows a symlink at `path`. (leveldb's NewAppendableFile.)
  virtual Result<std::unique_ptr<WritableFile>> OpenAppend(const std::string& path,
                                                           uint32_t mode = 0600) = 0;
  virtual Result<FileStat> Stat(const std::string& path) = 0;  // lstat
  // Entries other than "." and "..", in no particular order.
  virtual Result<std::vector<DirEntry>> ListDir(const std::string& path) = 0;
  // ListDir plus the lstat of each entry (its error, e.g. ENOENT when it
  // went away meanwhile, in place of a stat), and the stat of the directory
  // listed. A symlink as the last component fails (ELOOP), not followed;
  // symlinks above it are followed, so a caller that must stay inside a tree
  // compares `dir` with the identity (dev, ino) it expects there. The POSIX
  // Env opens the directory once: `dir` is the fstat of what was listed, and
  // entries are stat'ed relative to it (fstatat: no path walk per entry, which
  // is most of a large tree's stat walk). The default (for wrappers, which
  // then see every call) is Stat, ListDir and one Stat per entry.
  struct StatEntry {
    std::string name;
    Result<FileStat> stat;
  };
  struct DirListing {
    FileStat dir;
    std::vector<StatEntry> entries;
  };
  virtual Result<DirListing> ListDirStat(const std::string& path);
  // Creates one directory; fails with EEXIST when anything is there.
  virtual Status MakeDir(const std::string& path, uint32_t mode = 0700) = 0;
  virtual Status Rename(const std::string& from, const std::string& to) = 0;
  virtual Status Link(const std::string& existing, const std::string& new_path) = 0;
  virtual Status Symlink(const std::string& target, const std::string& link_path) = 0;
  virtual Result<std::string> ReadLink(const std::string& path) = 0;
  virtual Status RemoveFile(const std::string& path) = 0;  // unlink: file or symlink
  virtual Status RemoveDir(const std::string& path) = 0;   // rmdir: must be empty
  virtual Status SyncDir(const std::string& path) = 0;     // fsync a directory
  // Makes a closed regular file durable, data and metadata (mode, mtime):
  // fsync(2) of `path` opened read-only, never through a symlink. The default
  // runs on `path` itself (every Env here uses real paths).
  virtual Status SyncFile(const std::string& path);
  // Opens the filesystem holding directory `path` (for Filesystem::Sync):
  // open it before the writes it must make durable. The default opens
  // `path` itself (every Env here uses real paths).
  virtual Result<std::unique_ptr<Filesystem>> OpenFilesystem(const std::string& path);
  virtual Status SetMode(const std::string& path, uint32_t mode) = 0;
  // Sets atime and mtime; does not follow a symlink at `path`.
  virtual Status SetMtime(const std::string& path, int64_t mtime_ns) = 0;
  // Sets the owner (lchown: a symlink itself, not its target). Needs root
  // for any owner but one's own. The default runs lchown(2) on `path` (every
  // Env here uses real paths).
  virtual Status SetOwner(const std::string& path, uint32_t uid, uint32_t gid);
  // Copies a regular file's bytes with copy_file_range (a reflink where the
  // filesystem can), creating `to` with `mode`. `to` must not exist.
  virtual Status CopyFile(const std::string& from, const std::string& to, uint32_t mode) = 0;
};

// ---- Helpers that work on any Env ------------------------------------------

// "a/b" + "c" -> "a/b/c" (no normalisation).
std::string JoinPath(std::string_view a, std::string_view b);
// The directory part of a path ("a/b/c" -> "a/b", "c" -> ".").
std::string DirName(std::string_view path);
std::string BaseName(std::string_view path);

bool Exists(Env& env, const std::string& path);
// A directory itself (Env::Stat does not follow a symlink).
bool IsDirectory(Env& env, const std::string& path);
// True when `a` and `b` describe the same file in the same state (device,
// inode, size, mtime, ctime): a file replaced by a rename, or written, is
// not.
bool SameFileState(const FileStat& a, const FileStat& b);
// mkdir -p: creates every missing component with `mode`; OK if it is a directory already.
Status CreateDirs(Env& env, const std::string& path, uint32_t mode = 0700);
// rm -rf without following symlinks; OK if `path` does not exist.
Status RemoveTree(Env& env, const std::string& path);
// Reads a whole file; fails with a data error when it is larger than `max_size`.
Result<std::string> ReadFileToString(Env& env, const std::string& path,
                                     uint64_t max_size = 64ull << 20);
// Writes a whole file non-atomically (tests and scratch files).
Status WriteStringToFile(Env& env, const std::string& path, std::string_view data,
                         uint32_t mode = 0644);

// Atomic publish (leveldb SetCurrentFile, rsync finish_transfer): writes `data`
// to a temp file beside `path`, fsyncs it, renames it over `path`, fsyncs the
// directory. On any failure the temp file is removed and whatever was at
// `path` before is untouched.
Status WriteFileAtomic(Env& env, const std::string& path, std::string_view data,
                       uint32_t mode = 0644);

// A temp name beside `path`, unique within this process: "<path>.tmp.<pid>.<n>".
std::string TempPathFor(const std::string& path);

// Reads a whole file through a callback in `chunk`-sized pieces (streaming
// hash, copy). Stops at the first error returned by `sink`.
template <typename Sink>
Status ForEachChunk(ReadableFile& file, size_t chunk, Sink&& sink) {
  std::vector<uint8_t> buf(chunk);
  uint64_t off = 0;
  for (;;) {
    ASSIGN_OR_RETURN(size_t n, file.ReadAt(off, buf));
    if (n == 0) return Status::Ok();
    RETURN_IF_ERROR(sink(std::span<const uint8_t>(buf.data(), n)));
    off += n;
  }
}

}  // namespace lifeboat

#endif  // LIFEBOAT_BASE_ENV_H_
