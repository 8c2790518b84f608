#include "base/digest.h"

#include <sys/random.h>

#include <cerrno>

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace lifeboat {
namespace {

Digest128 FromHash(XXH128_hash_t h) {
  XXH128_canonical_t canon;
  XXH128_canonicalFromHash(&canon, h);
  Digest128 d;
  static_assert(sizeof(canon.digest) == 16);
  for (size_t i = 0; i < 16; ++i) d.bytes[i] = canon.digest[i];
  return d;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

bool Digest128::IsZero() const {
  for (uint8_t b : bytes)
    if (b != 0) return false;
  return true;
}

std::string Digest128::Hex() const { return HexEncode(bytes); }

std::optional<Digest128> Digest128::FromHex(std::string_view hex) {
  if (hex.size() != 32) return std::nullopt;
  auto raw = HexDecode(hex);
  if (!raw) return std::nullopt;
  Digest128 d;
  for (size_t i = 0; i < 16; ++i) d.bytes[i] = static_cast<uint8_t>((*raw)[i]);
  return d;
}

Digest128 Xxh3Digest(std::span<const uint8_t> data) {
  return FromHash(XXH3_128bits(data.data(), data.size()));
}

Digest128 Xxh3Digest(std::string_view data) {
  return FromHash(XXH3_128bits(data.data(), data.size()));
}

struct Xxh3Hasher::State {
  XXH3_state_t st;
};

Xxh3Hasher::Xxh3Hasher() : state_(std::make_unique<State>()) { Reset(); }
Xxh3Hasher::~Xxh3Hasher() = default;

void Xxh3Hasher::Reset() { XXH3_128bits_reset(&state_->st); }

void Xxh3Hasher::Update(std::span<const uint8_t> data) {
  XXH3_128bits_update(&state_->st, data.data(), data.size());
}

void Xxh3Hasher::Update(std::string_view data) {
  XXH3_128bits_update(&state_->st, data.data(), data.size());
}

Digest128 Xxh3Hasher::Finish() const { return FromHash(XXH3_128bits_digest(&state_->st)); }

std::string HexEncode(std::span<const uint8_t> data) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.resize(data.size() * 2);
  for (size_t i = 0; i < data.size(); ++i) {
    out[2 * i] = kDigits[data[i] >> 4];
    out[2 * i + 1] = kDigits[data[i] & 0xf];
  }
  return out;
}

std::optional<std::string> HexDecode(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = HexValue(hex[2 * i]);
    int lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out[i] = static_cast<char>((hi << 4) | lo);
  }
  return out;
}

std::string RandomHex() {
  uint8_t buf[16] = {};
  size_t got = 0;
  while (got < sizeof(buf)) {
    ssize_t n = ::getrandom(buf + got, sizeof(buf) - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    got += static_cast<size_t>(n);
  }
  return HexEncode(std::span<const uint8_t>(buf, sizeof(buf)));
}

}  // namespace lifeboat
