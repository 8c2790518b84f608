// Format 1 -> format 2 (store_impl.h, MigrateFormat1; docs/catalog.md section 8).
//
// Format 1 kept every generation as a directory tree,
// instances/<uuid>/<seq>/ (files at their export paths, unchanged files
// hard-linked between generations) with a lifeboat-generation.json inside.
// Format 2 keeps the same bytes as objects named by their SHA-256 and each
// generation as instances/<uuid>/<seq>.json. The conversion links every file
// into objects/ (no copy: the same inode), so it needs no space beyond
// directory entries, and reads every byte once to name it.
#include <set>

#include "base/file_digest.h"
#include "base/log.h"
#include "catalog/internal/store_impl.h"

namespace lifeboat::catalog {

namespace {

inline constexpr const char* kFormat1Description = "lifeboat-generation.json";

// Names `path` (a file of a format-1 generation, which should hold `f`) as
// an object: hashes it, checks it against the recorded size and XXH3, links
// it in. A file that is missing or does not match is left out with a
// warning: its entry keeps a zero id, which no object has, so the next pull
// fetches it again and verify reports it until then.
Status AdoptFile(Env& env, ObjectStore& objects, const std::string& path, FileEntry* f,
                 std::set<std::string>* changed_dirs) {
  auto in = env.OpenRead(path);
  Digest128 digest;
  Digest256 sha;
  uint64_t size = 0;
  Status read =
      in.ok() ? HashOpenFile(**in, &digest, &size, nullptr, 0, f->size, &sha) : in.status();
  if (!read.ok() || size != f->size || digest != f->digest) {
    log::Warn(
        "catalog conversion: a file of a format-1 generation is missing or damaged; "
        "the next pull fetches it again",
        {{"path", path}, {"error", read.ok() ? "content differs" : read.message()}});
    return Status::Ok();
  }
  f->sha256 = sha;
  if (objects.Has(sha)) return Status::Ok();
  const std::string object = objects.PathOf(sha);
  if (!Exists(env, DirName(object))) {
    RETURN_IF_ERROR(env.MakeDir(DirName(object), 0700));
    changed_dirs->insert(objects.dir());
  }
  RETURN_IF_ERROR(env.Link(path, object));
  changed_dirs->insert(DirName(object));
  return env.SetMode(object, 0400);
}

}  // namespace

Status Store::Impl::MigrateFormat1() {
  log::Info("catalog: converting the catalog from format 1 to format 2",
            {{"data_dir", o_.data_dir}, {"instances", cat_.instances.size()}});
  SyncSet sync;
  std::vector<std::string> old_trees;
  for (auto& [uuid, rec] : cat_.instances) {
    ASSIGN_OR_RETURN(auto entries, env_.ListDir(InstDir(uuid)));
    for (const DirEntry& e : entries) {
      uint64_t seq;
      if (e.name == kCurrent) old_trees.push_back(InstDir(uuid) + "/" + e.name);
      if (!ParseSeq(e.name, &seq)) continue;
      const std::string tree = InstDir(uuid) + "/" + e.name;
      old_trees.push_back(tree);
      if (seq > rec.r.seq) continue;  // never committed
      const std::string where = tree + "/" + kFormat1Description;
      auto text = ReadFileToString(env_, where, 1ull << 30);
      Result<Description> desc =
          text.ok() ? DecodeDescription(*text, where) : Result<Description>(text.status());
      if (!desc.ok()) {
        log::Warn("catalog conversion: an unreadable format-1 generation is dropped",
                  {{"path", where}, {"error", desc.status().message()}});
        continue;
      }
      desc->r.seq = seq;
      for (FileEntry& f : desc->files) {
        if (f.kind != EntryKind::kFile) continue;
        RETURN_IF_ERROR(AdoptFile(env_, objects_, tree + "/" + f.path, &f, &sync.dirs));
      }
      desc->format_version = kCatalogFormatVersion;
      const std::string out = EncodeDescription(*desc);
      RETURN_IF_ERROR(WriteFileAtomic(env_, DescPath(uuid, seq), out, 0600));  // fsync'd
      if (seq == rec.r.seq) rec.description_digest = Xxh3Digest(out);
    }
  }
  for (auto& [uuid, img] : cat_.images) {
    for (auto [path, sha] : {std::pair{img.file_path, &img.file_sha256},
                             std::pair{img.manifest_path, &img.manifest_sha256}}) {
      auto in = env_.OpenRead(path);
      if (!in.ok()) continue;  // Reconcile drops an image without its file
      Digest128 digest;
      uint64_t size = 0;
      RETURN_IF_ERROR(HashOpenFile(**in, &digest, &size, nullptr, 0, 1 << 20, sha));
    }
  }
  // Everything format 2 names is durable before catalog.json says format 2:
  // that rename is the conversion's commit point. Until then format 1 is in
  // charge and a crash starts the conversion over.
  RETURN_IF_ERROR(SyncAll(env_, sync));
  RETURN_IF_ERROR(WriteCatalog());
  loaded_format_ = kCatalogFormatVersion;
  for (const std::string& tree : old_trees) trash_->Discard(tree).IgnoreError();
  log::Info("catalog: converted from format 1 (descriptions listing their entries)",
            {{"data_dir", o_.data_dir}});
  return Status::Ok();
}

}  // namespace lifeboat::catalog
