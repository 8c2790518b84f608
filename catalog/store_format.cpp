// catalog.json and generation descriptions: (de)serialization (see
// docs/catalog.md sections 2 and 3).
#include <algorithm>
#include <charconv>

#include "base/text.h"
#include "catalog/internal/store_impl.h"

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
    j["sha256"] = f.sha256.Hex();
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
    if (j.contains("sha256")) {  // format 1 descriptions have none (migration adds it)
      auto d = Digest256::FromHex(j["sha256"].get<std::string>());
      if (!d) return DataError("bad sha256 for " + f.path);
      f.sha256 = *d;
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
          {"last_error", p.last_error},     {"went_back_ms", p.went_back_ms}};
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
  p.went_back_ms = j.value("went_back_ms", int64_t{0});
  return p;
}

namespace {

// An instance's warnings: [{"path" (or "path_hex"), "reason"}].
json WarningsToJson(const std::vector<syncproto::InstanceWarning>& warnings) {
  json out = json::array();
  for (const syncproto::InstanceWarning& w : warnings) {
    json j = {{"reason", w.reason}};  // display text: DumpJson mends bad UTF-8
    PutBytes(j, "path", w.path);
    out.push_back(std::move(j));
  }
  return out;
}

std::vector<syncproto::InstanceWarning> WarningsFromJson(const json& j) {
  std::vector<syncproto::InstanceWarning> out;
  if (!j.is_array()) return out;
  for (const json& w : j) {
    if (!w.is_object()) continue;
    Result<std::string> path = GetBytes(w, "path");
    out.push_back({path.ok() ? *path : "", w.value("reason", "")});
  }
  return out;
}

}  // namespace

json InstanceToJson(const Record& rec) {
  const InstanceRecord& r = rec.r;
  json j = {{"alias", r.alias},
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
            {"removed_pulls", r.removed_pulls},
            {"description_digest", rec.description_digest.Hex()}};
  if (!r.warnings.empty()) j["warnings"] = WarningsToJson(r.warnings);
  if (r.damaged) j["damaged"] = true;  // written only when set (section 2)
  return j;
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
  r.removed_pulls = j.value("removed_pulls", uint32_t{0});
  if (j.contains("warnings")) r.warnings = WarningsFromJson(j["warnings"]);
  r.damaged = j.value("damaged", false);
  if (auto d = Digest128::FromHex(j.value("description_digest", ""))) rec.description_digest = *d;
  return rec;
}

// A JSON string of UTF-8 `s` (callers check IsUtf8): quotes, backslashes and
// control characters escaped, everything else as is.
static void AppendJsonString(std::string* out, std::string_view s) {
  out->push_back('"');
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(ch);
    } else if (c < 0x20) {
      static constexpr char kHex[] = "0123456789abcdef";
      *out += "\\u00";
      out->push_back(kHex[c >> 4]);
      out->push_back(kHex[c & 15]);
    } else {
      out->push_back(ch);
    }
  }
  out->push_back('"');
}

void AppendBytes(std::string* out, std::string_view key, std::string_view bytes) {
  *out += ",\"";
  *out += key;
  if (IsUtf8(bytes)) {
    *out += "\":";
    AppendJsonString(out, bytes);
    return;
  }
  *out += "_hex\":\"";
  *out += HexEncode({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  out->push_back('"');
}

static void AppendNumber(std::string* out, std::string_view key, int64_t v) {
  *out += ",\"";
  *out += key;
  *out += "\":";
  *out += std::to_string(v);
}

void AppendEntry(std::string* out, const FileEntry& f) {
  *out += "{\"kind\":\"";
  *out += KindName(f.kind);
  out->push_back('"');
  AppendBytes(out, "path", f.path);
  AppendNumber(out, "mode", f.mode);
  AppendNumber(out, "mtime_ns", f.mtime_ns);
  if (f.kind == EntryKind::kFile) {
    AppendNumber(out, "size", static_cast<int64_t>(f.size));
    *out += ",\"digest\":\"" + f.digest.Hex() + "\",\"sha256\":\"" + f.sha256.Hex() + "\"";
  }
  if (f.kind == EntryKind::kSymlink) {
    AppendBytes(out, "target", f.target);
    *out += ",\"digest\":\"" + f.digest.Hex() + "\"";
  }
  AppendNumber(out, "uid", f.uid);
  AppendNumber(out, "gid", f.gid);
  if (!f.hardlink_of.empty()) AppendBytes(out, "hardlink_of", f.hardlink_of);
  out->push_back('}');
}

std::string EncodeDescription(const Description& d) {
  // A description listing every entry is format 2's, whatever the catalog's.
  json head = {{"format_version", d.has_tree ? kCatalogFormatVersion : 2},
               {"uuid", d.r.uuid},
               {"alias", d.r.alias},
               {"service", d.r.service},
               {"image_uuid", d.r.image_uuid},
               {"peer", d.r.peer},
               {"node_uuid", d.node_uuid},
               {"generation", d.r.generation},
               {"boot_id", d.boot_id},
               {"seq", d.r.seq},
               {"pulled_at_ms", d.r.pulled_at_ms}};
  if (!d.r.warnings.empty()) head["warnings"] = WarningsToJson(d.r.warnings);
  if (d.has_tree) {
    head["files"] = d.r.files;  // a summary: the entries are in the top and the trees
    head["size"] = d.r.size;
    head["entries"] = d.top;
    return DumpJson(head) + "\n";
  }
  std::string out = DumpJson(head);
  out.pop_back();  // the closing brace: the entries follow, one per line
  out.reserve(out.size() + d.files.size() * 200);
  out += ",\"files\":[";
  for (size_t i = 0; i < d.files.size(); ++i) {
    out += i == 0 ? "\n" : ",\n";
    AppendEntry(&out, d.files[i]);
  }
  out += "\n]}\n";
  return out;
}

Result<Description> DecodeDescription(const std::string& text, const std::string& where) {
  ASSIGN_OR_RETURN(json j, ParseJson(text, where));
  try {
    Description d;
    d.format_version = j.value("format_version", 0);
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
    if (j.contains("warnings")) d.r.warnings = WarningsFromJson(j["warnings"]);
    if (j.contains("entries")) {  // format 3: the top's members (trees.h)
      if (!j["entries"].is_array()) {
        return DataError("bad generation description " + where + ": entries is not a list");
      }
      d.has_tree = true;
      d.top = std::move(j["entries"]);
      return d;
    }
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
