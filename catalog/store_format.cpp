// catalog.json and generation descriptions: (de)serialization (see
// docs/catalog.md sections 2 and 3).
#include <algorithm>
#include <charconv>

#include "base/text.h"
#include "catalog/internal/store_impl.h"
#include "catalog/internal/util.h"

namespace lifeboat::catalog {

const char* KindName(EntryKind k) {
  switch (k) {
    case EntryKind::kFile:
      return "file";
    case EntryKind::kDir:
      return "dir";
    case EntryKind::kSymlink:
      return "symlink";
  }
  return "file";
}

// Paths, symlink targets and hard-link names are bytes: PutBytes keeps the
// ones that are not UTF-8 exactly ("path_hex", base/text.h).
json EntryToJson(const FileEntry& f) {
  json j = {{"kind", KindName(f.kind)}, {"mode", f.mode}, {"mtime_ns", f.mtime_ns}};
  PutBytes(j, "path", f.path);
  if (f.kind == EntryKind::kFile) {
    j["size"] = f.size;
    j["digest"] = f.digest.Hex();
  }
  if (f.kind == EntryKind::kSymlink) {
    PutBytes(j, "target", f.target);
    j["digest"] = f.digest.Hex();
  }
  j["uid"] = f.uid;
  j["gid"] = f.gid;
  if (!f.hardlink_of.empty()) PutBytes(j, "hardlink_of", f.hardlink_of);
  return j;
}

Result<FileEntry> EntryFromJson(const json& j) {
  try {
    FileEntry f;
    ASSIGN_OR_RETURN(f.path, GetBytes(j, "path"));
    std::string kind = j.at("kind").get<std::string>();
    f.kind = kind == "dir"       ? EntryKind::kDir
             : kind == "symlink" ? EntryKind::kSymlink
                                 : EntryKind::kFile;
    f.mode = j.at("mode").get<uint32_t>();
    f.mtime_ns = j.at("mtime_ns").get<int64_t>();
    f.size = j.value("size", uint64_t{0});
    if (Result<std::string> t = GetBytes(j, "target"); t.ok()) {
      f.target = std::move(*t);
    } else if (t.status().code() != Code::kNotFound) {
      return t.status();
    }
    // Descriptions written before owners were exported have none: root.
    f.uid = j.value("uid", uint32_t{0});
    f.gid = j.value("gid", uint32_t{0});
    if (Result<std::string> h = GetBytes(j, "hardlink_of"); h.ok()) {
      f.hardlink_of = std::move(*h);
    } else if (h.status().code() != Code::kNotFound) {
      return h.status();
    }
    if (!f.hardlink_of.empty()) RETURN_IF_ERROR(syncproto::ValidateHardlink(f.path, f.hardlink_of));
    if (j.contains("digest")) {
      auto d = Digest128::FromHex(j["digest"].get<std::string>());
      if (!d) return DataError("bad digest for " + f.path);
      f.digest = *d;
    }
    RETURN_IF_ERROR(syncproto::ValidateExportPath(f.path));
    return f;
  } catch (const json::exception& e) {
    return DataError(std::string("bad file entry: ") + e.what());
  }
}

json PeerToJson(const PeerState& p) {
  return {{"node_uuid", p.node_uuid},       {"node_name", p.node_name},
          {"generation", p.generation},     {"boot_id", p.boot_id},
          {"last_pull_ms", p.last_pull_ms}, {"last_attempt_ms", p.last_attempt_ms},
          {"last_error", p.last_error}};
}

PeerState PeerFromJson(const std::string& name, const json& j) {
  PeerState p;
  p.name = name;
  p.node_uuid = j.value("node_uuid", "");
  p.node_name = j.value("node_name", "");
  p.generation = j.value("generation", uint64_t{0});
  p.boot_id = j.value("boot_id", "");
  p.last_pull_ms = j.value("last_pull_ms", int64_t{0});
  p.last_attempt_ms = j.value("last_attempt_ms", int64_t{0});
  p.last_error = j.value("last_error", "");
  return p;
}

json InstanceToJson(const Record& rec) {
  const InstanceRecord& r = rec.r;
  return {{"alias", r.alias},
          {"service", r.service},
          {"peer", r.peer},
          {"image_uuid", r.image_uuid},
          {"generation", r.generation},
          {"seq", r.seq},
          {"pulled_at_ms", r.pulled_at_ms},
          {"size", r.size},
          {"files", r.files},
          {"removed", r.removed},
          {"removed_since_ms", r.removed_since_ms},
          {"description_digest", rec.description_digest.Hex()}};
}

Record InstanceFromJson(const std::string& uuid, const json& j) {
  Record rec;
  InstanceRecord& r = rec.r;
  r.uuid = uuid;
  r.alias = j.value("alias", "");
  r.service = j.value("service", "");
  r.peer = j.value("peer", "");
  r.image_uuid = j.value("image_uuid", "");
  r.generation = j.value("generation", uint64_t{0});
  r.seq = j.value("seq", uint64_t{0});
  r.pulled_at_ms = j.value("pulled_at_ms", int64_t{0});
  r.size = j.value("size", uint64_t{0});
  r.files = j.value("files", uint64_t{0});
  r.removed = j.value("removed", false);
  r.removed_since_ms = j.value("removed_since_ms", int64_t{0});
  if (auto d = Digest128::FromHex(j.value("description_digest", ""))) rec.description_digest = *d;
  return rec;
}

std::string EncodeDescription(const Description& d) {
  json files = json::array();
  for (const FileEntry& f : d.files) files.push_back(EntryToJson(f));
  json j = {{"format_version", kCatalogFormatVersion},
            {"uuid", d.r.uuid},
            {"alias", d.r.alias},
            {"service", d.r.service},
            {"image_uuid", d.r.image_uuid},
            {"peer", d.r.peer},
            {"node_uuid", d.node_uuid},
            {"generation", d.r.generation},
            {"boot_id", d.boot_id},
            {"seq", d.r.seq},
            {"pulled_at_ms", d.r.pulled_at_ms},
            {"files", files}};
  return DumpJson(j, 1) + "\n";
}

Result<Description> DecodeDescription(const std::string& text, const std::string& where) {
  ASSIGN_OR_RETURN(json j, internal::ParseJson(text, where));
  try {
    Description d;
    d.r.uuid = j.at("uuid").get<std::string>();
    d.r.alias = j.value("alias", "");
    d.r.service = j.value("service", "");
    d.r.image_uuid = j.value("image_uuid", "");
    d.r.peer = j.value("peer", "");
    d.node_uuid = j.value("node_uuid", "");
    d.r.generation = j.value("generation", uint64_t{0});
    d.boot_id = j.value("boot_id", "");
    d.r.seq = j.value("seq", uint64_t{0});
    d.r.pulled_at_ms = j.value("pulled_at_ms", int64_t{0});
    for (const json& f : j.at("files")) {
      ASSIGN_OR_RETURN(FileEntry e, EntryFromJson(f));
      if (e.kind == EntryKind::kFile) d.r.size += e.size;
      d.files.push_back(std::move(e));
    }
    d.r.files = d.files.size();
    std::sort(d.files.begin(), d.files.end(),
              [](const FileEntry& a, const FileEntry& b) { return a.path < b.path; });
    return d;
  } catch (const json::exception& e) {
    return DataError("bad generation description " + where + ": " + e.what());
  }
}

bool ParseSeq(const std::string& name, uint64_t* seq) {
  if (name.empty() || name.size() > 19) return false;
  auto [p, ec] = std::from_chars(name.data(), name.data() + name.size(), *seq);
  return ec == std::errc() && p == name.data() + name.size() && *seq > 0;
}

uint32_t DiskMode(const FileEntry& e) {
  uint32_t m = e.mode & 0777;
  return e.kind == EntryKind::kDir ? (m | 0700) : (m | 0600);
}

std::string CompactTime(int64_t wall_ms) {
  std::string iso = FormatIso8601Ms(wall_ms);  // 2026-11-21T16:25:03.123Z
  std::string out;
  for (char c : iso) {
    if (c != '-' && c != ':' && c != '.') out += c;
  }
  return out;
}

}  // namespace lifeboat::catalog
