#include "syncproto/manifest_codec.h"

#include <zstd.h>

#include <algorithm>
#include <optional>

#include "syncproto/internal/coding.h"

namespace lifeboat::syncproto {

using internal::PutDigest;
using internal::PutString;
using internal::PutU64;
using internal::PutU8;
using internal::PutVarint;
using internal::Reader;

namespace {

// Minimal encoded sizes, to bound counts by the bytes left.
constexpr size_t kMinInstanceBytes = 5;
constexpr size_t kMinWarningBytes = 2;
constexpr size_t kMinImageBytes = 2;
constexpr size_t kMinFileBytes = 1 + 1 + 1 + 1 + 8 + 16 + 1 + 1 + 1 + 1;
constexpr size_t kMinRemovedBytes = 1;

std::string OverLimit(uint64_t entries, uint64_t limit) {
  return std::to_string(entries) + " entries exceed the limit of " + std::to_string(limit) +
         " entries per manifest";
}

// Reads a count and takes it from `*budget` (entries still allowed).
uint64_t Count(Reader& r, const char* field, size_t min_entry, uint64_t* budget) {
  uint64_t n = r.Varint(field);
  if (r.ok() && n > r.remaining() / min_entry) {
    r.Fail(field, std::to_string(n) + " entries cannot fit in the " +
                      std::to_string(r.remaining()) + " bytes left");
    return 0;
  }
  if (r.ok() && n > *budget) {
    r.Fail(field, OverLimit(kMaxManifestEntries - *budget + n, kMaxManifestEntries));
    return 0;
  }
  *budget -= n;
  return n;
}

// The number of instances + images + files an answer announces, read from
// its first bytes; nullopt while `prefix` is too short (or malformed: the
// full decode reports that).
std::optional<uint64_t> LeadingEntryCount(std::span<const uint8_t> prefix) {
  Reader r(prefix, "manifest");
  r.U8("kind");
  r.U64("generation");
  r.String("boot_id", 128);
  r.String("node_uuid", 64);
  r.String("node_name", 255);
  r.U64("since_generation");
  uint64_t instances = r.Varint("instance_count");
  if (!r.ok()) return std::nullopt;
  if (instances > kMaxManifestEntries) return instances;
  for (uint64_t i = 0; r.ok() && i < instances; ++i) {
    for (const char* f : {"uuid", "alias", "service", "image_uuid"}) r.String(f, 255);
    const uint64_t warnings = r.Varint("warning_count");
    if (warnings > kMaxInstanceWarnings) return std::nullopt;  // malformed: the decode says so
    for (uint64_t w = 0; r.ok() && w < warnings; ++w) {
      r.String("warning path", kMaxWarningPathBytes);
      r.String("warning reason", kMaxWarningReasonBytes);
    }
  }
  uint64_t images = r.Varint("image_count");
  if (!r.ok()) return std::nullopt;
  if (images > kMaxManifestEntries) return instances + images;
  for (uint64_t i = 0; r.ok() && i < images; ++i) {
    r.String("uuid", 64);
    r.String("origin", 64);
  }
  uint64_t files = r.Varint("file_count");
  if (!r.ok()) return std::nullopt;
  return instances + images + std::min<uint64_t>(files, UINT64_MAX / 2);  // no overflow
}

// An instance's warning list (the bounds of manifest.h).
std::vector<InstanceWarning> DecodeWarnings(Reader& r) {
  std::vector<InstanceWarning> out;
  const uint64_t n = r.Varint("instance warning_count");
  if (r.ok() && n > kMaxInstanceWarnings) {
    r.Fail("instance warning_count", std::to_string(n) + " warnings exceed the limit of " +
                                         std::to_string(kMaxInstanceWarnings) + " per instance");
  } else if (r.ok() && n > r.remaining() / kMinWarningBytes) {
    r.Fail("instance warning_count", std::to_string(n) + " warnings cannot fit in the " +
                                         std::to_string(r.remaining()) + " bytes left");
  }
  for (uint64_t i = 0; r.ok() && i < n; ++i) {
    InstanceWarning w;
    w.path = r.String("warning path", kMaxWarningPathBytes);
    w.reason = r.String("warning reason", kMaxWarningReasonBytes);
    out.push_back(std::move(w));
  }
  return out;
}

}  // namespace

void AppendFileEntry(std::vector<uint8_t>* out, const FileEntry& f) {
  PutString(out, f.path);
  PutU8(out, static_cast<uint8_t>(f.kind));
  PutVarint(out, f.size);
  PutVarint(out, f.mode);
  PutU64(out, static_cast<uint64_t>(f.mtime_ns));
  PutDigest(out, f.digest);
  if (f.kind == EntryKind::kFile) PutDigest(out, f.sha256);
  PutString(out, f.target);
  PutVarint(out, f.uid);
  PutVarint(out, f.gid);
  PutString(out, f.hardlink_of);
}

std::vector<uint8_t> EncodeManifestAnswer(const ManifestAnswer& a) {
  const Manifest& m = a.manifest;
  std::vector<uint8_t> out;
  PutU8(&out, static_cast<uint8_t>(a.kind));
  PutU64(&out, m.generation);
  PutString(&out, m.boot_id);
  PutString(&out, m.node_uuid);
  PutString(&out, m.node_name);
  PutU64(&out, a.kind == ManifestAnswer::Kind::kDelta ? a.since_generation : 0);
  PutVarint(&out, m.instances.size());
  for (const InstanceInfo& i : m.instances) {
    PutString(&out, i.uuid);
    PutString(&out, i.alias);
    PutString(&out, i.service);
    PutString(&out, i.image_uuid);
    PutVarint(&out, i.warnings.size());
    for (const InstanceWarning& w : i.warnings) {
      PutString(&out, w.path);
      PutString(&out, w.reason);
    }
  }
  PutVarint(&out, m.images.size());
  for (const ImageInfo& i : m.images) {
    PutString(&out, i.uuid);
    PutString(&out, i.origin);
  }
  PutVarint(&out, m.files.size());
  for (const FileEntry& f : m.files) AppendFileEntry(&out, f);
  PutVarint(&out, a.removed.size());
  for (const std::string& p : a.removed) PutString(&out, p);
  return out;
}

Result<ManifestAnswer> DecodeManifestAnswer(std::span<const uint8_t> in) {
  Reader r(in, "manifest");
  ManifestAnswer a;
  Manifest& m = a.manifest;
  uint8_t kind = r.U8("kind");
  if (r.ok() && (kind < 1 || kind > 3))
    r.Fail("kind", "unknown answer kind " + std::to_string(kind));
  a.kind = static_cast<ManifestAnswer::Kind>(kind);
  m.generation = r.U64("generation");
  m.boot_id = r.String("boot_id", 128);
  m.node_uuid = r.String("node_uuid", 64);
  m.node_name = r.String("node_name", 255);
  a.since_generation = r.U64("since_generation");
  uint64_t budget = kMaxManifestEntries;
  uint64_t n = Count(r, "instance_count", kMinInstanceBytes, &budget);
  for (uint64_t i = 0; r.ok() && i < n; ++i) {
    InstanceInfo inst;
    inst.uuid = r.String("instance uuid", 64);
    inst.alias = r.String("instance alias", 255);
    inst.service = r.String("instance service", 255);
    inst.image_uuid = r.String("instance image_uuid", 64);
    inst.warnings = DecodeWarnings(r);
    if (r.ok() && inst.uuid.empty()) r.Fail("instance " + std::to_string(i), "empty uuid");
    if (r.ok() && !m.instances.empty() && !(m.instances.back().uuid < inst.uuid)) {
      r.Fail("instance " + inst.uuid, "instances not sorted by uuid or duplicated");
    }
    m.instances.push_back(std::move(inst));
  }
  n = Count(r, "image_count", kMinImageBytes, &budget);
  for (uint64_t i = 0; r.ok() && i < n; ++i) {
    ImageInfo img;
    img.uuid = r.String("image uuid", 64);
    img.origin = r.String("image origin", 64);
    if (r.ok() && img.uuid.empty()) r.Fail("image " + std::to_string(i), "empty uuid");
    if (r.ok() && !m.images.empty() && !(m.images.back().uuid < img.uuid)) {
      r.Fail("image " + img.uuid, "images not sorted by uuid or duplicated");
    }
    m.images.push_back(std::move(img));
  }
  n = Count(r, "file_count", kMinFileBytes, &budget);
  for (uint64_t i = 0; r.ok() && i < n; ++i) {
    FileEntry f;
    f.path = r.String("file path", kMaxPathBytes);
    if (r.ok()) {
      Status s = ValidateExportPath(f.path);
      if (!s.ok()) r.Fail("file " + std::to_string(i), s.message());
    }
    uint8_t k = r.U8("file kind");
    if (r.ok() && (k < 1 || k > 3)) r.Fail("file " + f.path, "unknown kind " + std::to_string(k));
    f.kind = static_cast<EntryKind>(k);
    f.size = r.Varint("file size");
    uint64_t mode = r.Varint("file mode");
    if (r.ok() && mode > 07777)
      r.Fail("file " + f.path, "mode " + std::to_string(mode) + " > 07777");
    f.mode = static_cast<uint32_t>(mode);
    f.mtime_ns = r.I64("file mtime_ns");
    f.digest = r.Digest("file digest");
    if (f.kind == EntryKind::kFile) f.sha256 = r.Sha256("file sha256");
    f.target = r.String("file target", kMaxPathBytes);
    const uint64_t uid = r.Varint("file uid"), gid = r.Varint("file gid");
    if (r.ok() && (uid > UINT32_MAX || gid > UINT32_MAX))
      r.Fail("file " + f.path, "uid/gid > 2^32-1");
    f.uid = static_cast<uint32_t>(uid);
    f.gid = static_cast<uint32_t>(gid);
    f.hardlink_of = r.String("file hardlink_of", kMaxPathBytes);
    if (r.ok() && !f.hardlink_of.empty()) {
      if (f.kind != EntryKind::kFile) {
        r.Fail("file " + f.path, "hardlink_of on a non-file");
      } else if (Status s = ValidateHardlink(f.path, f.hardlink_of); !s.ok()) {
        r.Fail("file " + f.path, s.message());
      }
    }
    if (r.ok()) {
      if (f.kind != EntryKind::kFile && f.size != 0)
        r.Fail("file " + f.path, "non-file with a size");
      if (f.kind == EntryKind::kSymlink) {
        Status s = ValidateSymlinkTarget(f.path, f.target);
        if (!s.ok()) r.Fail("file " + f.path, s.message());
      } else if (!f.target.empty()) {
        r.Fail("file " + f.path, "target on a non-symlink");
      }
    }
    if (r.ok() && !m.files.empty() && !(m.files.back().path < f.path)) {
      r.Fail("file " + f.path, "files not sorted by path or duplicated");
    }
    m.files.push_back(std::move(f));
  }
  n = Count(r, "removed_count", kMinRemovedBytes, &budget);
  for (uint64_t i = 0; r.ok() && i < n; ++i) {
    std::string p = r.String("removed path", kMaxPathBytes);
    if (r.ok()) {
      Status s = ValidateExportPath(p);
      if (!s.ok()) r.Fail("removed " + std::to_string(i), s.message());
    }
    a.removed.push_back(std::move(p));
  }
  if (r.ok() && a.kind != ManifestAnswer::Kind::kDelta &&
      (!a.removed.empty() || a.since_generation != 0)) {
    r.Fail("removed", "only a DELTA answer has removed paths or since_generation");
  }
  if (r.ok() && a.kind == ManifestAnswer::Kind::kUnchanged &&
      (!m.files.empty() || !m.instances.empty() || !m.images.empty())) {
    r.Fail("kind", "an UNCHANGED answer carries entries");
  }
  r.ExpectEnd();
  if (!r.ok()) return r.status();
  return a;
}

Result<std::vector<uint8_t>> CompressManifest(std::span<const uint8_t> encoded) {
  std::vector<uint8_t> out(ZSTD_compressBound(encoded.size()));
  size_t n = ZSTD_compress(out.data(), out.size(), encoded.data(), encoded.size(), 3);
  if (ZSTD_isError(n)) {
    return InternalError(std::string("zstd compress of manifest: ") + ZSTD_getErrorName(n));
  }
  out.resize(n);
  return out;
}

struct ManifestDecompressor::Rep {
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  size_t max_bytes;
  uint64_t max_entries;
  bool entries_checked = false;
  size_t next_entry_check = 256;  // out.size() at which to look at the counts again
  std::vector<uint8_t> out;
  size_t last_ret = 1;  // 0 once a zstd frame is complete
  Status error;
  ~Rep() { ZSTD_freeDCtx(dctx); }
};

ManifestDecompressor::ManifestDecompressor(size_t max_bytes, uint64_t max_entries)
    : rep_(std::make_unique<Rep>()) {
  rep_->max_bytes = max_bytes;
  rep_->max_entries = max_entries;
}
ManifestDecompressor::~ManifestDecompressor() = default;

Status ManifestDecompressor::Feed(std::span<const uint8_t> compressed) {
  Rep& r = *rep_;
  if (!r.error.ok()) return r.error;
  ZSTD_inBuffer in{compressed.data(), compressed.size(), 0};
  while (in.pos < in.size) {
    if (r.last_ret == 0) {
      return r.error = DataError("bad zstd in manifest: data after the end of the stream");
    }
    size_t old = r.out.size();
    size_t room = std::min<size_t>(1u << 20, r.max_bytes + 1 - old);
    if (room == 0) {
      return r.error = DataError("manifest exceeds " + std::to_string(r.max_bytes) +
                                 " bytes decompressed");
    }
    r.out.resize(old + room);
    ZSTD_outBuffer ob{r.out.data() + old, room, 0};
    size_t ret = ZSTD_decompressStream(r.dctx, &ob, &in);
    r.out.resize(old + ob.pos);
    if (ZSTD_isError(ret)) {
      return r.error = DataError(std::string("bad zstd in manifest: ") + ZSTD_getErrorName(ret));
    }
    if (r.out.size() > r.max_bytes) {
      return r.error = DataError("manifest exceeds " + std::to_string(r.max_bytes) +
                                 " bytes decompressed");
    }
    r.last_ret = ret;
    RETURN_IF_ERROR(CheckEntries());
  }
  // Drain output the decoder still holds (input consumed, output pending).
  while (r.last_ret != 0) {
    size_t old = r.out.size();
    size_t room = std::min<size_t>(1u << 20, r.max_bytes + 1 - old);
    if (room == 0) {
      return r.error = DataError("manifest exceeds " + std::to_string(r.max_bytes) +
                                 " bytes decompressed");
    }
    r.out.resize(old + room);
    ZSTD_outBuffer ob{r.out.data() + old, room, 0};
    ZSTD_inBuffer empty{nullptr, 0, 0};
    size_t ret = ZSTD_decompressStream(r.dctx, &ob, &empty);
    r.out.resize(old + ob.pos);
    if (ZSTD_isError(ret)) {
      return r.error = DataError(std::string("bad zstd in manifest: ") + ZSTD_getErrorName(ret));
    }
    if (r.out.size() > r.max_bytes) {
      return r.error = DataError("manifest exceeds " + std::to_string(r.max_bytes) +
                                 " bytes decompressed");
    }
    r.last_ret = ret;
    RETURN_IF_ERROR(CheckEntries());
    if (ob.pos < room) break;  // no more output without more input
  }
  return CheckEntries();
}

// Refuses a manifest with too many entries before decompressing all of it.
// Looked at each time the output doubled, so the cost stays linear.
Status ManifestDecompressor::CheckEntries() {
  Rep& r = *rep_;
  if (r.entries_checked || r.out.size() < r.next_entry_check) return Status::Ok();
  std::optional<uint64_t> n = LeadingEntryCount(r.out);
  if (!n) {
    r.next_entry_check = r.out.size() * 2;
    return Status::Ok();
  }
  r.entries_checked = true;
  if (*n > r.max_entries) return r.error = DataError("manifest: " + OverLimit(*n, r.max_entries));
  return Status::Ok();
}

Result<std::vector<uint8_t>> ManifestDecompressor::End() {
  Rep& r = *rep_;
  if (!r.error.ok()) return r.error;
  if (r.last_ret != 0) {
    r.error = DataError("bad zstd in manifest: stream truncated");
    return r.error;
  }
  return std::move(r.out);
}

}  // namespace lifeboat::syncproto
