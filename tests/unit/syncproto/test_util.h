// Test helpers for syncproto: a temp dir, an ExportSource over a plain
// directory, and an in-memory pipe between a PullerSession and a ServerSession.
#ifndef LIFEBOAT_TESTS_UNIT_SYNCPROTO_TEST_UTIL_H_
#define LIFEBOAT_TESTS_UNIT_SYNCPROTO_TEST_UTIL_H_

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "base/digest.h"
#include "base/env.h"
#include "syncproto/export_source.h"
#include "syncproto/session.h"

#include "tests/unit/base/test_dir.h"

namespace lifeboat::syncproto::testing {

inline const std::string kKey = "0123456789abcdef-cluster-key";

using TempDir = ::lifeboat::testing::TestDir;

inline std::string RandomBytes(std::mt19937_64& rng, size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; i += 8) {
    uint64_t v = rng();
    for (size_t j = 0; j < 8 && i + j < n; ++j) s[i + j] = static_cast<char>(v >> (8 * j));
  }
  return s;
}

inline void WriteFile(const std::string& path, const std::string& data) {
  CreateDirs(*Env::Default(), DirName(path)).IgnoreError();
  Status s = WriteStringToFile(*Env::Default(), path, data);
  if (!s.ok()) std::abort();
}

inline std::string ReadFile(const std::string& path) {
  Result<std::string> r = ReadFileToString(*Env::Default(), path, 1ull << 32);
  return r.ok() ? *r : std::string("<unreadable: " + r.status().ToString() + ">");
}

inline FileEntry EntryFor(const std::string& export_path, const std::string& data) {
  FileEntry e;
  e.path = export_path;
  e.kind = EntryKind::kFile;
  e.size = data.size();
  e.mode = 0644;
  e.digest = Xxh3Digest(data);
  return e;
}

// Serves the regular files under `root` as export paths. Hooks let tests
// make it lie about entries.
class DirExportSource : public ExportSource {
 public:
  explicit DirExportSource(std::string root) : root_(std::move(root)) {}

  uint64_t generation = 7;
  std::string boot_id = "boot-1";
  std::map<std::string, Digest128> digest_override;  // export path -> digest to claim
  int views_opened = 0;

  Result<std::unique_ptr<ExportView>> OpenView() override {
    ++views_opened;
    return std::unique_ptr<ExportView>(new View(this));
  }

 private:
  class View : public ExportView {
   public:
    explicit View(DirExportSource* src) : src_(src) {}

    Result<ManifestAnswer> ManifestSince(uint64_t since, const std::string& boot_id,
                                         const std::vector<std::string>&) override {
      ManifestAnswer a;
      a.manifest.node_uuid = "564dd1ac-164d-cc50-247c-b2eb0cf21ce5";
      a.manifest.node_name = "headnode1";
      a.manifest.generation = src_->generation;
      a.manifest.boot_id = src_->boot_id;
      if (since == src_->generation && boot_id == src_->boot_id) {
        a.kind = ManifestAnswer::Kind::kUnchanged;
        return a;
      }
      a.kind = ManifestAnswer::Kind::kFull;
      RETURN_IF_ERROR(Walk("", &a.manifest.files));
      std::sort(a.manifest.files.begin(), a.manifest.files.end(),
                [](const FileEntry& x, const FileEntry& y) { return x.path < y.path; });
      return a;
    }

    Result<std::unique_ptr<ReadableFile>> OpenFile(const std::string& path,
                                                   FileEntry* entry) override {
      RETURN_IF_ERROR(ValidateExportPath(path));
      std::string full = src_->root_ + "/" + path;
      if (!Exists(*Env::Default(), full)) return NotFoundError("no such export path: " + path);
      ASSIGN_OR_RETURN(std::string data, ReadFileToString(*Env::Default(), full, 1ull << 32));
      *entry = EntryFor(path, data);
      if (auto it = src_->digest_override.find(path); it != src_->digest_override.end()) {
        entry->digest = it->second;
      }
      return Env::Default()->OpenRead(full);
    }

   private:
    Status Walk(const std::string& rel, std::vector<FileEntry>* out) {
      std::string dir = rel.empty() ? src_->root_ : src_->root_ + "/" + rel;
      ASSIGN_OR_RETURN(auto entries, Env::Default()->ListDir(dir));
      for (const DirEntry& d : entries) {
        std::string p = rel.empty() ? d.name : rel + "/" + d.name;
        ASSIGN_OR_RETURN(FileStat st, Env::Default()->Stat(src_->root_ + "/" + p));
        if (st.type == FileType::kDirectory) {
          RETURN_IF_ERROR(Walk(p, out));
        } else if (st.type == FileType::kRegular) {
          ASSIGN_OR_RETURN(std::string data,
                           ReadFileToString(*Env::Default(), src_->root_ + "/" + p, 1ull << 32));
          out->push_back(EntryFor(p, data));
        }
      }
      return Status::Ok();
    }
    DirExportSource* src_;
  };

  std::string root_;
};

// Moves bytes between the two sessions until neither has anything to say.
// `chunk` bounds each delivery (to exercise partial frames). Returns false
// when a side failed (check status()).
struct PipeResult {
  Status puller;
  Status server;
  uint64_t puller_to_server = 0;
  uint64_t server_to_puller = 0;
};

inline PipeResult RunPipe(PullerSession& p, ServerSession& s, size_t chunk = 1u << 20,
                          std::vector<uint8_t>* record_p2s = nullptr) {
  PipeResult r;
  for (int guard = 0; guard < 10'000'000; ++guard) {
    bool moved = false;
    auto po = p.output();
    if (!po.empty() && r.server.ok()) {
      size_t n = std::min(po.size(), chunk);
      std::vector<uint8_t> bytes(po.begin(), po.begin() + n);
      p.ConsumeOutput(n);
      if (record_p2s) record_p2s->insert(record_p2s->end(), bytes.begin(), bytes.end());
      r.puller_to_server += n;
      Status st = s.Feed(bytes);
      if (!st.ok() && r.server.ok()) r.server = st;
      moved = true;
    } else if (!po.empty()) {
      p.ConsumeOutput(po.size());  // the server hung up
    }
    if (r.server.ok()) {
      Status st = s.Pump();
      if (!st.ok()) r.server = st;
    }
    auto so = s.output();
    if (!so.empty()) {
      size_t n = std::min(so.size(), chunk);
      std::vector<uint8_t> bytes(so.begin(), so.begin() + n);
      s.ConsumeOutput(n);
      r.server_to_puller += n;
      if (r.puller.ok()) {
        Status st = p.Feed(bytes);
        if (!st.ok()) r.puller = st;
      }
      moved = true;
    }
    if (r.puller.ok()) {
      Status st = p.Pump();
      if (!st.ok()) r.puller = st;
    }
    if (!moved && p.output().empty() && s.output().empty()) break;
  }
  if (r.puller.ok() && !p.status().ok()) r.puller = p.status();
  if (r.server.ok() && !s.status().ok()) r.server = s.status();
  return r;
}

inline NodeIdentity PullerId() { return {"11111111-2222-3333-4444-555555555555", "headnode0"}; }
inline NodeIdentity ServerId() { return {"564dd1ac-164d-cc50-247c-b2eb0cf21ce5", "headnode1"}; }

}  // namespace lifeboat::syncproto::testing

#endif  // LIFEBOAT_TESTS_UNIT_SYNCPROTO_TEST_UTIL_H_
