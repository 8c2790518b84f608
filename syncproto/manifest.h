// The export manifest: the data model shared by syncproto (which puts it on
// the wire), catalog (whose scanner builds it and whose store consumes it),
// the agent and restore.
//
// An export is a tree of *export paths*, the same on every provider:
//
//   vms/<uuid>.json                 VM payload (vmadm get object)
//   sapi/<uuid>.json                SAPI instance record (optional)
//   sapi/application.json           SAPI application record (optional)
//   sapi/services/<service>.json    SAPI service record (optional)
//   datasets/<uuid>/...             delegate dataset tree of the instance
//   images/<uuid>/manifest.json     IMGAPI manifest
//   images/<uuid>/file              image file
//
// Export paths are relative, '/'-separated, without empty, "." or ".."
// components or NUL bytes (see ValidateExportPath). The instance and image
// lists are the semantic index over the files.
#ifndef LIFEBOAT_SYNCPROTO_MANIFEST_H_
#define LIFEBOAT_SYNCPROTO_MANIFEST_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/digest.h"
#include "base/sha256.h"
#include "base/status.h"

namespace lifeboat::syncproto {

enum class EntryKind : uint8_t { kFile = 1, kDir = 2, kSymlink = 3 };

// One filesystem object of an export.
struct FileEntry {
  std::string path;  // export path
  EntryKind kind = EntryKind::kFile;
  uint64_t size = 0;  // content bytes for files, 0 otherwise
  uint32_t mode = 0;  // permission bits (07777)
  int64_t mtime_ns = 0;
  Digest128 digest;    // XXH3-128 of the content (files) or of the target (symlinks); zero for dirs
  std::string target;  // symlink target, verbatim; never followed by Lifeboat
  uint32_t uid = 0;    // numeric owner, as exported (restore puts it back when run as root)
  uint32_t gid = 0;
  // Files under datasets/<uuid>/ only: the export path of the first (smallest)
  // path of the group of files sharing this file's inode, "" for that first
  // one and for files with one link. Metadata for restore, which recreates
  // the link when both entries are files with the same size and digest (see
  // ValidateHardlink); transfers and the catalog treat each path as a file.
  std::string hardlink_of;
  // Files only: SHA-256 of the content, the name the catalog stores it under
  // (an object, shared by every path, instance, generation and peer with
  // that content). Zero for dirs and symlinks. Last, so that positional
  // initializers of the fields above stay as they were.
  Digest256 sha256;

  bool operator==(const FileEntry&) const = default;
};

// Something of an instance the exporter left out of its export (an
// unreadable file or folder, a dangling or escaping symlink, a special file,
// a dataset folder replaced by a symlink): the instance's copy is incomplete.
// `path` names what was skipped: an export path under datasets/<uuid>/ (or
// the instance's sapi/ record) when it has one, else the local path; bytes,
// not checked as an export path (a name that failed ValidateExportPath is
// reported too). Both fields are display text, cut to their bounds.
struct InstanceWarning {
  std::string path;
  std::string reason;
  bool operator==(const InstanceWarning&) const = default;
};

// At most this many warnings per instance on the wire; an exporter that
// skipped more replaces the last one with a summary ("N more paths skipped").
inline constexpr size_t kMaxInstanceWarnings = 16;
inline constexpr size_t kMaxWarningPathBytes = 1024;
inline constexpr size_t kMaxWarningReasonBytes = 512;

// One service instance of the exporting node.
struct InstanceInfo {
  std::string uuid;
  std::string alias;    // "imgapi0"
  std::string service;  // tags.smartdc_role of the VM payload
  std::string image_uuid;
  // What the exporter skipped of this instance ("" = a complete copy).
  // Instance metadata: a change in them is a change of the instance.
  std::vector<InstanceWarning> warnings;
  bool operator==(const InstanceInfo&) const = default;
};

// One image; `origin` names the parent image ("" for a root image).
struct ImageInfo {
  std::string uuid;
  std::string origin;
  bool operator==(const ImageInfo&) const = default;
};

// The whole export at one generation.
struct Manifest {
  std::string node_uuid;
  std::string node_name;
  uint64_t generation = 0;  // bumped on every change; never goes backwards
  std::string boot_id;      // identifies the exporter's state lineage (new when its state is lost)
  std::vector<InstanceInfo> instances;  // sorted by uuid
  std::vector<ImageInfo> images;        // sorted by uuid
  std::vector<FileEntry> files;         // sorted by path (bytewise)
};

// What an exporter answers to "what changed since generation G of boot B".
struct ManifestAnswer {
  enum class Kind : uint8_t {
    kUnchanged = 1,  // G is current: nothing else is sent
    kDelta = 2,      // only what changed since G
    kFull = 3,       // G unknown (too old, other boot id, or 0): the whole manifest
  };
  Kind kind = Kind::kFull;
  // For kUnchanged: generation and boot_id only. For kDelta: instances and
  // images in full (they are small), `files` holds only added or changed
  // entries, `removed` the paths gone since G. For kFull: everything.
  Manifest manifest;
  uint64_t since_generation = 0;  // G, for kDelta
  std::vector<std::string> removed;
};

// The start of an answer from export `m` to "what changed since generation
// `since` of boot `boot_id`": m's node uuid, node name, generation and boot
// id, and kind kUnchanged when `since` and `boot_id` are m's, else kFull
// with no entries yet (the server fills them, or makes it a kDelta).
ManifestAnswer AnswerHeader(const Manifest& m, uint64_t since, const std::string& boot_id);

// Checks an export path read from the wire or from disk: non-empty, at most
// kMaxPathBytes, relative, no empty/"."/".." components, no NUL, no
// backslash-free trickery needed (we are POSIX only). Error names the path.
inline constexpr size_t kMaxPathBytes = 4096;
inline constexpr size_t kMaxComponentBytes = 255;
Status ValidateExportPath(std::string_view path);

// Checks a symlink target found in an export: it must stay inside the tree
// that contains the link (relative, and never climbing above `link_path`'s
// top-level export directory, e.g. datasets/<uuid>/).
Status ValidateSymlinkTarget(std::string_view link_path, std::string_view target);

// Checks `hardlink_of` of entry `path` read from the wire or from disk: a
// valid export path, smaller than `path`, in the same datasets/<uuid>/ tree.
// Whether it names a file with the same content is checked where both
// entries are known (restore).
Status ValidateHardlink(std::string_view path, std::string_view hardlink_of);

// The instance uuid of "datasets/<uuid>/..." or "vms/<uuid>.json" style paths;
// empty when the path belongs to no instance (images, sapi app/service records).
std::string InstanceOfPath(std::string_view path);

}  // namespace lifeboat::syncproto

#endif  // LIFEBOAT_SYNCPROTO_MANIFEST_H_
