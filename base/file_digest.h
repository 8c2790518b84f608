// Streaming a file's bytes through the project's two digests at once.
#ifndef LIFEBOAT_BASE_FILE_DIGEST_H_
#define LIFEBOAT_BASE_FILE_DIGEST_H_

#include <cstdint>
#include <string>

#include "base/digest.h"
#include "base/env.h"
#include "base/sha256.h"
#include "base/status.h"

namespace lifeboat {

// Reads `file` from its current offset to the end through XXH3-128 into
// *digest (and SHA-256 into *sha256 when non-null) and sets *size to the
// bytes read. Keeps the bytes in *content when non-null, failing with a
// kData error once they pass `max_content`. `size_hint` (the stat size)
// picks the read size: 4 KiB to 1 MiB.
Status HashOpenFile(ReadableFile& file, Digest128* digest, uint64_t* size,
                    std::string* content = nullptr, uint64_t max_content = 64ull << 20,
                    uint64_t size_hint = 1 << 20, Digest256* sha256 = nullptr);

}  // namespace lifeboat

#endif  // LIFEBOAT_BASE_FILE_DIGEST_H_
