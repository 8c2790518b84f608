#include "catalog/held_export.h"

#include <algorithm>
#include <map>
#include <set>

#include "syncproto/manifest_filter.h"

namespace lifeboat::catalog {
namespace {

using syncproto::EntryKind;
using syncproto::FileEntry;
using syncproto::ManifestAnswer;

class HeldView final : public syncproto::ExportView {
 public:
  HeldView(Env& env, syncproto::Manifest manifest, std::map<std::string, std::string> local)
      : env_(env), manifest_(std::move(manifest)), local_(std::move(local)) {}

  Result<ManifestAnswer> ManifestSince(uint64_t since, const std::string& boot_id,
                                       const std::vector<std::string>& services) override {
    // No history is kept: UNCHANGED or FULL.
    ManifestAnswer a = syncproto::AnswerHeader(manifest_, since, boot_id);
    if (a.kind == ManifestAnswer::Kind::kUnchanged) return a;
    const syncproto::ManifestSelection selection(syncproto::ServiceFilter(services),
                                                 manifest_.instances, manifest_.images);
    a.manifest.instances = selection.instances();
    a.manifest.images = selection.images();
    for (const FileEntry& f : manifest_.files) {
      if (selection.Includes(f.path)) a.manifest.files.push_back(f);
    }
    return a;
  }

  Result<std::unique_ptr<ReadableFile>> OpenFile(const std::string& path,
                                                 FileEntry* entry) override {
    auto it = local_.find(path);
    auto e = std::lower_bound(manifest_.files.begin(), manifest_.files.end(), path,
                              [](const FileEntry& f, const std::string& p) { return f.path < p; });
    if (it == local_.end() || e == manifest_.files.end() || e->path != path ||
        e->kind != EntryKind::kFile) {
      return NotFoundError("held copy of " + manifest_.node_name + ": no file " + path);
    }
    *entry = *e;
    return env_.OpenRead(it->second);
  }

 private:
  Env& env_;
  syncproto::Manifest manifest_;
  std::map<std::string, std::string> local_;  // export path -> absolute store path
};

}  // namespace

bool HeldExport::AddRecord(const std::string& local_path, const std::string& export_path,
                           syncproto::Manifest* m, std::map<std::string, std::string>* local) {
  Result<std::string> data = ReadFileToString(env_, local_path);
  if (!data.ok()) return false;
  FileEntry f{export_path, EntryKind::kFile, data->size(), 0644, 0, Xxh3Digest(*data), ""};
  f.sha256 = Sha256Digest(*data);
  m->files.push_back(std::move(f));
  (*local)[export_path] = local_path;
  return true;
}

Result<std::vector<syncproto::HeldPeer>> HeldExport::Held(const std::string& peer) {
  std::vector<syncproto::HeldPeer> out;
  for (const PeerState& p : store_->Peers()) {
    if (!peer.empty() && p.name != peer) continue;
    out.push_back({p.name, p.node_uuid, p.generation, p.boot_id, p.last_pull_ms});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.peer < b.peer; });
  return out;
}

Result<std::unique_ptr<syncproto::ExportView>> HeldExport::OpenHeldView(const std::string& peer) {
  std::optional<PeerState> state = store_->Peer(peer);
  if (!state || state->generation == 0) {
    return NotFoundError("this node holds no copy of peer " + peer);
  }
  syncproto::Manifest m;
  m.node_uuid = state->node_uuid;
  m.node_name = state->node_name;
  m.generation = state->generation;
  m.boot_id = state->boot_id;
  std::map<std::string, std::string> local;
  std::map<std::string, StoredImage> images;
  std::set<std::string> services;
  for (const InstanceRecord& r : store_->Instances()) {
    if (r.peer != peer || r.removed) continue;
    services.insert(r.service);
    ASSIGN_OR_RETURN(InstanceGeneration g, store_->Instance(r.uuid));
    m.instances.push_back(
        {r.uuid, r.alias, r.service, r.image_uuid, r.warnings});  // incomplete stays so
    for (const StoredFile& f : g.files) {
      m.files.push_back(f.entry);
      local[f.entry.path] = f.local_path;
    }
    if (r.image_uuid.empty()) continue;
    Result<std::vector<StoredImage>> chain = store_->ImageChain(r.image_uuid);
    if (!chain.ok()) continue;  // served without it, as the peer would with a missing image
    for (StoredImage& img : *chain) images.emplace(img.uuid, std::move(img));
  }
  // The SAPI application and service records of P's services, as held
  // (they are cluster-wide records; absent ones are simply not offered).
  bool have_app = false;
  for (const std::string& svc : services) {
    const std::string dir = JoinPath(store_->data_dir(), "svc-" + svc);
    AddRecord(dir + "/sapi-svc.json", "sapi/services/" + svc + ".json", &m, &local);
    if (!have_app) {
      have_app = AddRecord(dir + "/sapi-app.json", "sapi/application.json", &m, &local);
    }
  }
  for (const auto& [uuid, img] : images) {
    m.images.push_back({uuid, img.origin});
    const std::string dir = "images/" + uuid;
    FileEntry file{dir + "/file", EntryKind::kFile, img.size, 0644, 0, img.file_digest, ""};
    file.sha256 = img.file_sha256;
    FileEntry manifest{dir + "/manifest.json",
                       EntryKind::kFile,
                       img.manifest_size,
                       0644,
                       0,
                       img.manifest_digest,
                       ""};
    manifest.sha256 = img.manifest_sha256;
    m.files.push_back(std::move(file));
    m.files.push_back(std::move(manifest));
    local[dir + "/file"] = img.file_path;
    local[dir + "/manifest.json"] = img.manifest_path;
  }
  std::sort(m.instances.begin(), m.instances.end(),
            [](const auto& a, const auto& b) { return a.uuid < b.uuid; });
  std::sort(m.files.begin(), m.files.end(),
            [](const FileEntry& a, const FileEntry& b) { return a.path < b.path; });
  return std::unique_ptr<syncproto::ExportView>(new HeldView(env_, std::move(m), std::move(local)));
}

}  // namespace lifeboat::catalog
