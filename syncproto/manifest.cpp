#include "syncproto/manifest.h"

#include <vector>

namespace lifeboat::syncproto {
namespace {

std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == '"' || c == '\\') {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[(static_cast<unsigned char>(c) >> 4) & 0xf];
      out += kHex[static_cast<unsigned char>(c) & 0xf];
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::vector<std::string_view> Split(std::string_view path) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (;;) {
    size_t slash = path.find('/', start);
    parts.push_back(path.substr(start, slash == std::string_view::npos ? slash : slash - start));
    if (slash == std::string_view::npos) return parts;
    start = slash + 1;
  }
}

}  // namespace

Status ValidateExportPath(std::string_view path) {
  if (path.empty()) return DataError("invalid path: empty");
  if (path.size() > kMaxPathBytes) {
    return DataError("invalid path (longer than " + std::to_string(kMaxPathBytes) +
                     " bytes): " + Quote(path.substr(0, 64)) + "...");
  }
  if (path.find('\0') != std::string_view::npos) {
    return DataError("invalid path (NUL byte): " + Quote(path));
  }
  if (path.front() == '/') return DataError("invalid path (absolute): " + Quote(path));
  for (std::string_view part : Split(path)) {
    if (part.empty()) return DataError("invalid path (empty component): " + Quote(path));
    if (part == "." || part == "..") {
      return DataError("invalid path ('" + std::string(part) + "' component): " + Quote(path));
    }
    if (part.size() > kMaxComponentBytes) {
      return DataError("invalid path (component longer than 255 bytes): " + Quote(path));
    }
  }
  return Status::Ok();
}

Status ValidateSymlinkTarget(std::string_view link_path, std::string_view target) {
  if (target.empty() || target.size() > kMaxPathBytes || target.find('\0') != target.npos) {
    return DataError("invalid symlink target for " + Quote(link_path));
  }
  if (target.front() == '/') {
    return DataError("symlink " + Quote(link_path) + " points outside (absolute target " +
                     Quote(target) + ")");
  }
  // Depth of the link's directory below its top-level tree: for
  // "datasets/<uuid>/a/b/link" the tree is "datasets/<uuid>", depth 2 ("a/b").
  std::vector<std::string_view> parts = Split(link_path);
  size_t tree_depth =
      (parts.size() >= 2 && (parts[0] == "datasets" || parts[0] == "images")) ? 2 : 1;
  if (parts.size() <= tree_depth) {
    return DataError("symlink " + Quote(link_path) + " is not inside an instance tree");
  }
  long depth = static_cast<long>(parts.size() - 1 - tree_depth);
  for (std::string_view part : Split(target)) {
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (--depth < 0) {
        return DataError("symlink " + Quote(link_path) + " points outside its tree (" +
                         Quote(target) + ")");
      }
    } else {
      ++depth;
    }
  }
  return Status::Ok();
}

Status ValidateHardlink(std::string_view path, std::string_view hardlink_of) {
  RETURN_IF_ERROR(ValidateExportPath(hardlink_of));
  auto fail = [&](const std::string& why) {
    return DataError("hard link " + std::string(path) + " -> " + std::string(hardlink_of) + ": " +
                     why);
  };
  if (!(hardlink_of < path)) return fail("must name a smaller path");
  std::vector<std::string_view> a = Split(path), b = Split(hardlink_of);
  if (a.size() < 3 || b.size() < 3 || a[0] != "datasets" || b[0] != "datasets" || a[1] != b[1]) {
    return fail("both must be in the same datasets/<uuid>/ tree");
  }
  return Status::Ok();
}

std::string InstanceOfPath(std::string_view path) {
  std::vector<std::string_view> parts = Split(path);
  if (parts.size() >= 2 && parts[0] == "datasets") return std::string(parts[1]);
  auto json_stem = [](std::string_view name) -> std::string {
    constexpr std::string_view kExt = ".json";
    if (name.size() > kExt.size() && name.substr(name.size() - kExt.size()) == kExt) {
      return std::string(name.substr(0, name.size() - kExt.size()));
    }
    return "";
  };
  if (parts.size() == 2 && parts[0] == "vms") return json_stem(parts[1]);
  if (parts.size() == 2 && parts[0] == "sapi" && parts[1] != "application.json") {
    return json_stem(parts[1]);
  }
  return "";
}

ManifestAnswer AnswerHeader(const Manifest& m, uint64_t since, const std::string& boot_id) {
  ManifestAnswer a;
  a.manifest.node_uuid = m.node_uuid;
  a.manifest.node_name = m.node_name;
  a.manifest.generation = m.generation;
  a.manifest.boot_id = m.boot_id;
  a.kind = since == m.generation && boot_id == m.boot_id ? ManifestAnswer::Kind::kUnchanged
                                                         : ManifestAnswer::Kind::kFull;
  return a;
}

}  // namespace lifeboat::syncproto
