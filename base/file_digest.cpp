#include "base/file_digest.h"

#include <algorithm>
#include <optional>
#include <span>

namespace lifeboat {

Status HashOpenFile(ReadableFile& file, Digest128* digest, uint64_t* size, std::string* content,
                    uint64_t max_content, uint64_t size_hint, Digest256* sha256) {
  Xxh3Hasher hasher;
  std::optional<Sha256Hasher> sha;
  if (sha256 != nullptr) sha.emplace();
  uint64_t total = 0;
  const size_t chunk = static_cast<size_t>(std::clamp<uint64_t>(size_hint + 1, 4096, 1 << 20));
  RETURN_IF_ERROR(ForEachChunk(file, chunk, [&](std::span<const uint8_t> chunk) -> Status {
    hasher.Update(chunk);
    if (sha) sha->Update(chunk);
    total += chunk.size();
    if (content != nullptr) {
      if (total > max_content) {
        return DataError(file.path() + ": larger than " + std::to_string(max_content) + " bytes");
      }
      content->append(reinterpret_cast<const char*>(chunk.data()), chunk.size());
    }
    return Status::Ok();
  }));
  *digest = hasher.Finish();
  if (sha) *sha256 = sha->Finish();
  *size = total;
  return Status::Ok();
}

}  // namespace lifeboat
