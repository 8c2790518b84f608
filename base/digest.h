// XXH3-128 digests: the end-to-end integrity check of every stored file.
#ifndef LIFEBOAT_BASE_DIGEST_H_
#define LIFEBOAT_BASE_DIGEST_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace lifeboat {

// A 128-bit digest in XXH3's canonical (big-endian) byte order, so that its hex
// form matches `xxhsum -H2`.
struct Digest128 {
  std::array<uint8_t, 16> bytes{};

  bool operator==(const Digest128&) const = default;
  bool IsZero() const;
  std::string Hex() const;  // 32 lowercase hex chars
  // Parses 32 hex chars; nullopt on anything else.
  static std::optional<Digest128> FromHex(std::string_view hex);
};

// One-shot digest of a byte range.
Digest128 Xxh3Digest(std::span<const uint8_t> data);
Digest128 Xxh3Digest(std::string_view data);

// Streaming digest. Not thread-safe; cheap to create.
class Xxh3Hasher {
 public:
  Xxh3Hasher();
  ~Xxh3Hasher();
  Xxh3Hasher(const Xxh3Hasher&) = delete;
  Xxh3Hasher& operator=(const Xxh3Hasher&) = delete;

  void Reset();
  void Update(std::span<const uint8_t> data);
  void Update(std::string_view data);
  Digest128 Finish() const;  // does not reset; more Updates may follow

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Lowercase hex of arbitrary bytes, and back (nullopt on odd length or non-hex).
std::string HexEncode(std::span<const uint8_t> data);
std::optional<std::string> HexDecode(std::string_view hex);

// 16 random bytes (getrandom) as 32 lowercase hex chars: temp-file and
// snapshot name suffixes, not secrets.
std::string RandomHex();

}  // namespace lifeboat

#endif  // LIFEBOAT_BASE_DIGEST_H_
