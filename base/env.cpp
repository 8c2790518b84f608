#include "base/env.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <string>

namespace lifeboat {
namespace {

FileType TypeFromMode(mode_t m) {
  if (S_ISREG(m)) return FileType::kRegular;
  if (S_ISDIR(m)) return FileType::kDirectory;
  if (S_ISLNK(m)) return FileType::kSymlink;
  return FileType::kOther;
}

FileStat FromStat(const struct stat& st) {
  FileStat fs;
  fs.type = TypeFromMode(st.st_mode);
  fs.dev = st.st_dev;
  fs.ino = st.st_ino;
  fs.size = static_cast<uint64_t>(st.st_size);
  fs.mode = st.st_mode & 07777;
  fs.uid = st.st_uid;
  fs.gid = st.st_gid;
  fs.nlink = st.st_nlink;
  fs.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  fs.ctime_ns = static_cast<int64_t>(st.st_ctim.tv_sec) * 1000000000 + st.st_ctim.tv_nsec;
  return fs;
}

class PosixReadableFile final : public ReadableFile {
 public:
  PosixReadableFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixReadableFile() override { ::close(fd_); }

  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> buf) override {
    for (;;) {
      ssize_t n = ::pread(fd_, buf.data(), buf.size(), static_cast<off_t>(offset));
      if (n >= 0) return static_cast<size_t>(n);
      if (errno != EINTR) return PosixError("read", path_, errno);
    }
  }
  Result<FileStat> Stat() override {
    struct stat st;
    if (::fstat(fd_, &st) != 0) return PosixError("fstat", path_, errno);
    return FromStat(st);
  }
  const std::string& path() const override { return path_; }
  int fd() const override { return fd_; }

 private:
  std::string path_;
  int fd_;
};

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  Status Append(std::span<const uint8_t> data) override {
    if (fd_ < 0) return IoError("write on closed file " + path_);
    const uint8_t* p = data.data();
    size_t left = data.size();
    while (left > 0) {
      ssize_t n = ::write(fd_, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        return PosixError("write failed on", path_, errno);
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
    return Status::Ok();
  }
  Status Sync() override {
    if (fd_ < 0) return IoError("fsync on closed file " + path_);
    if (::fdatasync(fd_) != 0) return PosixError("fsync", path_, errno);
    return Status::Ok();
  }
  Status Close() override {
    if (fd_ < 0) return Status::Ok();
    int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) return PosixError("close", path_, errno);
    return Status::Ok();
  }
  void StartWriteback(uint64_t offset, uint64_t length) override {
    if (fd_ >= 0) {
      ::sync_file_range(fd_, static_cast<off64_t>(offset), static_cast<off64_t>(length),
                        SYNC_FILE_RANGE_WRITE);
    }
  }
  const std::string& path() const override { return path_; }
  int fd() const override { return fd_; }

 private:
  std::string path_;
  int fd_;
};

class PosixEnv final : public Env {
 public:
  Result<std::unique_ptr<ReadableFile>> OpenRead(const std::string& path) override {
    // O_NONBLOCK: opening a FIFO or a device that a hostile or odd export
    // put where a file was must not wedge the thread; the type is then
    // checked on the descriptor (no race with a rename in between).
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) return PosixError("open", path, errno);
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      return PosixError("stat", path, err);
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      return DataError("open " + path + ": not a regular file");
    }
    return std::unique_ptr<ReadableFile>(new PosixReadableFile(path, fd));
  }

  Result<std::unique_ptr<WritableFile>> OpenWrite(const std::string& path, uint32_t mode,
                                                  bool exclusive) override {
    int flags = O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW | (exclusive ? O_EXCL : O_TRUNC);
    int fd = ::open(path.c_str(), flags, mode);
    if (fd < 0) return PosixError("create", path, errno);
    return std::unique_ptr<WritableFile>(new PosixWritableFile(path, fd));
  }

  Result<std::unique_ptr<WritableFile>> OpenAppend(const std::string& path,
                                                   uint32_t mode) override {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) return PosixError("open for appending", path, errno);
    return std::unique_ptr<WritableFile>(new PosixWritableFile(path, fd));
  }

  Result<FileStat> Stat(const std::string& path) override {
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) return PosixError("stat", path, errno);
    return FromStat(st);
  }

  Result<DirListing> ListDirStat(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return PosixError("opendir", path, errno);
    struct stat self;
    if (::fstat(fd, &self) != 0) {
      int err = errno;
      ::close(fd);
      return PosixError("stat", path, err);
    }
    DIR* d = ::fdopendir(fd);
    if (d == nullptr) {
      int err = errno;
      ::close(fd);
      return PosixError("opendir", path, err);
    }
    DirListing listing;
    listing.dir = FromStat(self);
    std::vector<StatEntry>& out = listing.entries;
    errno = 0;
    while (struct dirent* e = ::readdir(d)) {
      std::string_view name(e->d_name);
      if (name == "." || name == "..") continue;
      struct stat st;
      if (::fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        out.push_back(StatEntry{std::string(name), FromStat(st)});
      } else {
        out.push_back(
            StatEntry{std::string(name), PosixError("stat", JoinPath(path, name), errno)});
      }
      errno = 0;
    }
    int err = errno;
    ::closedir(d);  // closes fd
    if (err != 0) return PosixError("readdir", path, err);
    return listing;
  }

  Result<std::vector<DirEntry>> ListDir(const std::string& path) override {
    DIR* d = ::opendir(path.c_str());
    if (d == nullptr) return PosixError("opendir", path, errno);
    std::vector<DirEntry> out;
    errno = 0;
    while (struct dirent* e = ::readdir(d)) {
      std::string_view name(e->d_name);
      if (name == "." || name == "..") continue;
      FileType t = FileType::kOther;
      switch (e->d_type) {
        case DT_REG:
          t = FileType::kRegular;
          break;
        case DT_DIR:
          t = FileType::kDirectory;
          break;
        case DT_LNK:
          t = FileType::kSymlink;
          break;
        default:
          break;
      }
      out.push_back(DirEntry{std::string(name), t});
    }
    int err = errno;
    ::closedir(d);
    if (err != 0) return PosixError("readdir", path, err);
    return out;
  }

  Status MakeDir(const std::string& path, uint32_t mode) override {
    if (::mkdir(path.c_str(), mode) != 0) return PosixError("mkdir", path, errno);
    return Status::Ok();
  }

  Status Rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return PosixError("rename", from + " -> " + to, errno);
    }
    return Status::Ok();
  }

  Status Link(const std::string& existing, const std::string& new_path) override {
    if (::link(existing.c_str(), new_path.c_str()) != 0) {
      return PosixError("link", existing + " -> " + new_path, errno);
    }
    return Status::Ok();
  }

  Status Symlink(const std::string& target, const std::string& link_path) override {
    if (::symlink(target.c_str(), link_path.c_str()) != 0) {
      return PosixError("symlink", link_path, errno);
    }
    return Status::Ok();
  }

  Result<std::string> ReadLink(const std::string& path) override {
    std::string buf(256, '\0');
    for (;;) {
      ssize_t n = ::readlink(path.c_str(), buf.data(), buf.size());
      if (n < 0) return PosixError("readlink", path, errno);
      if (static_cast<size_t>(n) < buf.size()) {
        buf.resize(static_cast<size_t>(n));
        return buf;
      }
      if (buf.size() >= 65536) return DataError("readlink " + path + ": target too long");
      buf.resize(buf.size() * 2);
    }
  }

  Status RemoveFile(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return PosixError("unlink", path, errno);
    return Status::Ok();
  }

  Status RemoveDir(const std::string& path) override {
    if (::rmdir(path.c_str()) != 0) return PosixError("rmdir", path, errno);
    return Status::Ok();
  }

  Status SyncDir(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return PosixError("open dir", path, errno);
    int rc = ::fsync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0) return PosixError("fsync dir", path, err);
    return Status::Ok();
  }

  Status SetMode(const std::string& path, uint32_t mode) override {
    if (::chmod(path.c_str(), mode) != 0) return PosixError("chmod", path, errno);
    return Status::Ok();
  }

  Status SetMtime(const std::string& path, int64_t mtime_ns) override {
    struct timespec ts[2];
    ts[0].tv_sec = mtime_ns / 1000000000;
    ts[0].tv_nsec = mtime_ns % 1000000000;
    if (ts[0].tv_nsec < 0) {
      ts[0].tv_nsec += 1000000000;
      ts[0].tv_sec -= 1;
    }
    ts[1] = ts[0];
    if (::utimensat(AT_FDCWD, path.c_str(), ts, AT_SYMLINK_NOFOLLOW) != 0) {
      return PosixError("utimensat", path, errno);
    }
    return Status::Ok();
  }

  Status CopyFile(const std::string& from, const std::string& to, uint32_t mode) override {
    int in = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
    if (in < 0) return PosixError("open", from, errno);
    int out = ::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (out < 0) {
      int err = errno;
      ::close(in);
      return PosixError("create", to, err);
    }
    Status st = CopyFd(in, out, from, to);
    ::close(in);
    if (::close(out) != 0 && st.ok()) st = PosixError("close", to, errno);
    if (!st.ok()) ::unlink(to.c_str());
    return st;
  }

 private:
  static Status CopyFd(int in, int out, const std::string& from, const std::string& to) {
    bool use_cfr = true;
    std::vector<char> buf;
    for (;;) {
      if (use_cfr) {
        ssize_t n = ::copy_file_range(in, nullptr, out, nullptr, 1 << 30, 0);
        if (n > 0) continue;
        if (n == 0) return Status::Ok();
        if (errno == EINTR) continue;
        if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) {
          return PosixError("copy_file_range", from + " -> " + to, errno);
        }
        use_cfr = false;  // fall back to read/write from the current offsets
        buf.resize(1 << 20);
      }
      ssize_t n = ::read(in, buf.data(), buf.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return PosixError("read", from, errno);
      }
      if (n == 0) return Status::Ok();
      for (ssize_t done = 0; done < n;) {
        ssize_t w = ::write(out, buf.data() + done, static_cast<size_t>(n - done));
        if (w < 0) {
          if (errno == EINTR) continue;
          return PosixError("write failed on", to, errno);
        }
        done += w;
      }
    }
  }
};

}  // namespace

Env* Env::Default() {
  static PosixEnv* env = new PosixEnv();
  return env;
}

std::string JoinPath(std::string_view a, std::string_view b) {
  if (a.empty()) return std::string(b);
  std::string out(a);
  if (out.back() != '/') out += '/';
  out += b;
  return out;
}

std::string DirName(std::string_view path) {
  size_t pos = path.find_last_of('/');
  if (pos == std::string_view::npos) return ".";
  if (pos == 0) return "/";
  return std::string(path.substr(0, pos));
}

std::string BaseName(std::string_view path) {
  size_t pos = path.find_last_of('/');
  return std::string(pos == std::string_view::npos ? path : path.substr(pos + 1));
}

bool Exists(Env& env, const std::string& path) { return env.Stat(path).ok(); }

bool SameFileState(const FileStat& a, const FileStat& b) {
  return a.dev == b.dev && a.ino == b.ino && a.size == b.size && a.mtime_ns == b.mtime_ns &&
         a.ctime_ns == b.ctime_ns;
}

bool IsDirectory(Env& env, const std::string& path) {
  auto st = env.Stat(path);
  return st.ok() && st->type == FileType::kDirectory;
}

Status CreateDirs(Env& env, const std::string& path, uint32_t mode) {
  auto st = env.Stat(path);
  if (st.ok()) {
    if (st->type == FileType::kDirectory) return Status::Ok();
    return IoError("mkdir " + path + ": exists and is not a directory");
  }
  if (st.status().code() != Code::kNotFound) return st.status();
  std::string parent = DirName(path);
  if (parent != path && parent != "." && parent != "/") {
    RETURN_IF_ERROR(CreateDirs(env, parent, mode));
  }
  Status made = env.MakeDir(path, mode);
  if (!made.ok()) {
    // Lost a race with another creator: fine if a directory is there now.
    auto again = env.Stat(path);
    if (again.ok() && again->type == FileType::kDirectory) return Status::Ok();
  }
  return made;
}

Status RemoveTree(Env& env, const std::string& path) {
  auto st = env.Stat(path);
  if (!st.ok()) return st.status().code() == Code::kNotFound ? Status::Ok() : st.status();
  if (st->type != FileType::kDirectory) return env.RemoveFile(path);
  ASSIGN_OR_RETURN(auto entries, env.ListDir(path));
  for (const DirEntry& e : entries) RETURN_IF_ERROR(RemoveTree(env, JoinPath(path, e.name)));
  return env.RemoveDir(path);
}

Result<std::string> ReadFileToString(Env& env, const std::string& path, uint64_t max_size) {
  ASSIGN_OR_RETURN(auto file, env.OpenRead(path));
  std::string out;
  Status st = ForEachChunk(*file, 1 << 16, [&](std::span<const uint8_t> chunk) -> Status {
    if (out.size() + chunk.size() > max_size) {
      return DataError("read " + path + ": larger than " + std::to_string(max_size) + " bytes");
    }
    out.append(reinterpret_cast<const char*>(chunk.data()), chunk.size());
    return Status::Ok();
  });
  RETURN_IF_ERROR(st);
  return out;
}

Status WriteStringToFile(Env& env, const std::string& path, std::string_view data, uint32_t mode) {
  ASSIGN_OR_RETURN(auto file, env.OpenWrite(path, mode));
  RETURN_IF_ERROR(file->Append(data));
  return file->Close();
}

std::string TempPathFor(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
}

Status WriteFileAtomic(Env& env, const std::string& path, std::string_view data, uint32_t mode) {
  const std::string tmp = TempPathFor(path);
  auto write_and_rename = [&]() -> Status {
    ASSIGN_OR_RETURN(auto file, env.OpenWrite(tmp, mode, /*exclusive=*/true));
    RETURN_IF_ERROR(file->Append(data));
    RETURN_IF_ERROR(file->Sync());
    RETURN_IF_ERROR(file->Close());
    return env.Rename(tmp, path);
  };
  Status st = write_and_rename();
  if (!st.ok()) {
    env.RemoveFile(tmp).IgnoreError();
    return st;
  }
  // The rename is done; a failed directory fsync means it may not survive a
  // power loss, which the caller must hear about.
  return env.SyncDir(DirName(path));
}

Result<Env::DirListing> Env::ListDirStat(const std::string& path) {
  DirListing listing;
  ASSIGN_OR_RETURN(listing.dir, Stat(path));
  if (listing.dir.type == FileType::kSymlink) return PosixError("opendir", path, ELOOP);
  if (listing.dir.type != FileType::kDirectory) return PosixError("opendir", path, ENOTDIR);
  ASSIGN_OR_RETURN(std::vector<DirEntry> entries, ListDir(path));
  listing.entries.reserve(entries.size());
  for (DirEntry& e : entries) {
    Result<FileStat> st = Stat(JoinPath(path, e.name));
    listing.entries.push_back(StatEntry{std::move(e.name), std::move(st)});
  }
  return listing;
}

Status Env::SyncFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return PosixError("open for fsync", path, errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return PosixError("fsync", path, err);
  return Status::Ok();
}

namespace {

class PosixFilesystem final : public Filesystem {
 public:
  PosixFilesystem(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixFilesystem() override { ::close(fd_); }
  Status Sync() override {
    if (::syncfs(fd_) != 0) return PosixError("syncfs", path_, errno);
    return Status::Ok();
  }
  const std::string& path() const override { return path_; }

 private:
  std::string path_;
  int fd_;
};

}  // namespace

Result<std::unique_ptr<Filesystem>> Env::OpenFilesystem(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return PosixError("open for syncfs", path, errno);
  return std::unique_ptr<Filesystem>(new PosixFilesystem(path, fd));
}

Status Env::SetOwner(const std::string& path, uint32_t uid, uint32_t gid) {
  if (::lchown(path.c_str(), uid, gid) != 0) return PosixError("lchown", path, errno);
  return Status::Ok();
}

}  // namespace lifeboat
