// SHA-256: the name of a catalog object (docs/catalog.md, section 1). XXH3
// (base/digest.h) checks transfers cheaply; SHA-256 is what content is
// stored and shared under, because objects are shared between peers and a
// peer must not be able to craft content that another peer's file resolves
// to (XXH3 is not collision-resistant; SHA-256 is).
#ifndef LIFEBOAT_BASE_SHA256_H_
#define LIFEBOAT_BASE_SHA256_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace lifeboat {

struct Digest256 {
  std::array<uint8_t, 32> bytes{};

  bool operator==(const Digest256&) const = default;
  auto operator<=>(const Digest256&) const = default;
  bool IsZero() const;
  std::string Hex() const;  // 64 lowercase hex chars (`sha256sum` order)
  // Parses 64 hex chars; nullopt on anything else.
  static std::optional<Digest256> FromHex(std::string_view hex);
};

struct Digest256Hash {
  size_t operator()(const Digest256& d) const noexcept {
    size_t h;
    static_assert(sizeof(h) <= sizeof(d.bytes));
    __builtin_memcpy(&h, d.bytes.data(), sizeof(h));  // already uniformly distributed
    return h;
  }
};

// One-shot digest of a byte range.
Digest256 Sha256Digest(std::span<const uint8_t> data);
Digest256 Sha256Digest(std::string_view data);

// Streaming digest (OpenSSL; uses the CPU's SHA extensions when present).
// Not thread-safe; cheap to create.
class Sha256Hasher {
 public:
  Sha256Hasher();
  ~Sha256Hasher();
  Sha256Hasher(const Sha256Hasher&) = delete;
  Sha256Hasher& operator=(const Sha256Hasher&) = delete;

  void Reset();
  void Update(std::span<const uint8_t> data);
  void Update(std::string_view data);
  Digest256 Finish() const;  // does not reset; more Updates may follow

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace lifeboat

#endif  // LIFEBOAT_BASE_SHA256_H_
