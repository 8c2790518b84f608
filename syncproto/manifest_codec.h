// The manifest answer codec (docs/syncproto.md section 5) and its zstd
// framing for MANIFEST_DATA. Pure functions over byte spans; thread-compatible.
#ifndef LIFEBOAT_SYNCPROTO_MANIFEST_CODEC_H_
#define LIFEBOAT_SYNCPROTO_MANIFEST_CODEC_H_

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/status.h"
#include "syncproto/manifest.h"

namespace lifeboat::syncproto {

// At most this many entries (instances + images + files + removed paths) in
// one answer (docs/syncproto.md section 7). With the 256 MiB cap on the
// decompressed bytes it bounds what a manifest costs the puller: a decoded
// entry takes ~150 bytes plus its path. A real headnode exports tens of
// thousands of entries.
inline constexpr uint64_t kMaxManifestEntries = 1'000'000;

// Serializes an answer (uncompressed). The answer must be valid (sorted,
// valid paths); the encoder does not check.
std::vector<uint8_t> EncodeManifestAnswer(const ManifestAnswer& answer);

// Appends one file entry in its wire encoding (docs/syncproto.md, section 5):
// what EncodeManifestAnswer writes per file.
void AppendFileEntry(std::vector<uint8_t>* out, const FileEntry& f);

// Parses and validates an uncompressed answer: every length, count, enum,
// path (ValidateExportPath), symlink target (ValidateSymlinkTarget), mode,
// sort order, uniqueness and kMaxManifestEntries. Errors are kData and name
// the entry index/path (or the count over the limit).
Result<ManifestAnswer> DecodeManifestAnswer(std::span<const uint8_t> in);

// zstd-compresses an encoded answer (level 3) into the MANIFEST_DATA stream.
Result<std::vector<uint8_t>> CompressManifest(std::span<const uint8_t> encoded);

// Streaming decompressor for MANIFEST_DATA payloads with an output cap.
// As soon as the answer's leading counts (instances, images, files) are
// decompressed, more than `max_entries` fails at once, so a hostile peer
// announcing millions of entries costs the puller a few MiB, not the whole
// byte cap. Not thread-safe. A failure (bad zstd, over a cap, stream not
// finished at End) is kData and leaves the object unusable.
class ManifestDecompressor {
 public:
  explicit ManifestDecompressor(size_t max_bytes = 256u << 20,
                                uint64_t max_entries = kMaxManifestEntries);
  ~ManifestDecompressor();
  ManifestDecompressor(const ManifestDecompressor&) = delete;
  ManifestDecompressor& operator=(const ManifestDecompressor&) = delete;

  Status Feed(std::span<const uint8_t> compressed);
  // Checks the zstd stream ended exactly and returns the decompressed bytes.
  Result<std::vector<uint8_t>> End();

 private:
  Status CheckEntries();
  struct Rep;
  std::unique_ptr<Rep> rep_;
};

}  // namespace lifeboat::syncproto

#endif  // LIFEBOAT_SYNCPROTO_MANIFEST_CODEC_H_
