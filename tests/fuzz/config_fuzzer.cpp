// libFuzzer target: the config parser (conf::ParseConfig) on arbitrary text,
// as check-config and the agent run it on an operator's file. Must never
// crash, hang or trip a sanitizer (toml++ included: invalid UTF-8 must be
// refused before it reaches toml++); problems are fine.
//
// Hermetic: files named under [auth] are served from memory by FuzzEnv (every
// path reads as the same 64-byte key, mode 0600), so no real file is read.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "base/env.h"
#include "conf/config.h"

namespace {

using namespace lifeboat;

constexpr std::string_view kKey = "3f9a1c0e5b7d2e4f6a8c0b1d3e5f7a9c1e3b5d7f9a0c2e4b6d8f0a1c3e5b7d9f\n";

class MemoryFile final : public ReadableFile {
 public:
  explicit MemoryFile(std::string path) : path_(std::move(path)) {}
  Result<size_t> ReadAt(uint64_t offset, std::span<uint8_t> buf) override {
    if (offset >= kKey.size()) return size_t{0};
    size_t n = std::min(buf.size(), kKey.size() - static_cast<size_t>(offset));
    std::memcpy(buf.data(), kKey.data() + offset, n);
    return n;
  }
  Result<FileStat> Stat() override { return KeyStat(); }
  const std::string& path() const override { return path_; }

  static FileStat KeyStat() {
    FileStat st{};
    st.type = FileType::kRegular;
    st.size = kKey.size();
    st.mode = 0600;
    return st;
  }

 private:
  std::string path_;
};

class FuzzEnv final : public Env {
 public:
  Result<std::unique_ptr<ReadableFile>> OpenRead(const std::string& path) override {
    if (path.find("missing") != std::string::npos) return PosixError("open", path, ENOENT);
    return std::unique_ptr<ReadableFile>(new MemoryFile(path));
  }
  Result<std::unique_ptr<WritableFile>> OpenWrite(const std::string& path, uint32_t,
                                                  bool) override {
    return Refuse("open for writing", path);
  }
  Result<std::unique_ptr<WritableFile>> OpenAppend(const std::string& path, uint32_t) override {
    return Refuse("open for appending", path);
  }
  Result<FileStat> Stat(const std::string& path) override {
    if (path.find("missing") != std::string::npos) return PosixError("stat", path, ENOENT);
    return MemoryFile::KeyStat();
  }
  Result<std::vector<DirEntry>> ListDir(const std::string& path) override {
    return Refuse("list", path);
  }
  Status MakeDir(const std::string& path, uint32_t) override { return Refuse("mkdir", path); }
  Status Rename(const std::string& from, const std::string&) override {
    return Refuse("rename", from);
  }
  Status Link(const std::string& existing, const std::string&) override {
    return Refuse("link", existing);
  }
  Status Symlink(const std::string&, const std::string& link_path) override {
    return Refuse("symlink", link_path);
  }
  Result<std::string> ReadLink(const std::string& path) override { return Refuse("readlink", path); }
  Status RemoveFile(const std::string& path) override { return Refuse("unlink", path); }
  Status RemoveDir(const std::string& path) override { return Refuse("rmdir", path); }
  Status SyncDir(const std::string& path) override { return Refuse("fsync", path); }
  Status SetMode(const std::string& path, uint32_t) override { return Refuse("chmod", path); }
  Status SetMtime(const std::string& path, int64_t) override { return Refuse("utimens", path); }
  Status CopyFile(const std::string& from, const std::string&, uint32_t) override {
    return Refuse("copy", from);
  }

 private:
  // conf promises never to modify files: any such call is a bug.
  static Status Refuse(std::string_view op, const std::string& path) {
    __builtin_trap();
    return PosixError(op, path, EPERM);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static FuzzEnv env;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<conf::ConfigProblem> problems;
  Result<conf::Config> c = conf::ParseConfig(text, "/fuzz/lifeboat.toml", &problems, &env);
  // The contract: either a valid config and no problems, or a kConfig error
  // that lists each problem.
  if (c.ok() != problems.empty()) __builtin_trap();
  if (!c.ok() && c.status().code() != Code::kConfig) __builtin_trap();
  if (c.ok()) {
    for (const auto& w : c->warnings) (void)w.ToString();
    (void)c->agent.listen.ToString();
  } else {
    for (const auto& p : problems) (void)p.ToString();
  }
  return 0;
}
