#include "base/sha256.h"

#include <openssl/evp.h>

#include <cstdlib>

#include "base/digest.h"

namespace lifeboat {
namespace {

const EVP_MD* Sha256() {
  static const EVP_MD* md = [] {
    const EVP_MD* m = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    if (m == nullptr) std::abort();  // every OpenSSL 3 default provider has it
    return m;
  }();
  return md;
}

}  // namespace

bool Digest256::IsZero() const {
  for (uint8_t b : bytes)
    if (b != 0) return false;
  return true;
}

std::string Digest256::Hex() const { return HexEncode(bytes); }

std::optional<Digest256> Digest256::FromHex(std::string_view hex) {
  if (hex.size() != 64) return std::nullopt;
  auto raw = HexDecode(hex);
  if (!raw) return std::nullopt;
  Digest256 d;
  for (size_t i = 0; i < 32; ++i) d.bytes[i] = static_cast<uint8_t>((*raw)[i]);
  return d;
}

struct Sha256Hasher::State {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~State() { EVP_MD_CTX_free(ctx); }
};

Sha256Hasher::Sha256Hasher() : state_(std::make_unique<State>()) {
  if (state_->ctx == nullptr) std::abort();
  Reset();
}
Sha256Hasher::~Sha256Hasher() = default;

void Sha256Hasher::Reset() { EVP_DigestInit_ex(state_->ctx, Sha256(), nullptr); }

void Sha256Hasher::Update(std::span<const uint8_t> data) {
  EVP_DigestUpdate(state_->ctx, data.data(), data.size());
}

void Sha256Hasher::Update(std::string_view data) {
  EVP_DigestUpdate(state_->ctx, data.data(), data.size());
}

Digest256 Sha256Hasher::Finish() const {
  // Finishing a copy leaves this context open for more updates.
  EVP_MD_CTX* copy = EVP_MD_CTX_new();
  Digest256 d;
  unsigned int len = 0;
  if (copy == nullptr || EVP_MD_CTX_copy_ex(copy, state_->ctx) != 1 ||
      EVP_DigestFinal_ex(copy, d.bytes.data(), &len) != 1 || len != d.bytes.size()) {
    std::abort();
  }
  EVP_MD_CTX_free(copy);
  return d;
}

Digest256 Sha256Digest(std::span<const uint8_t> data) {
  Sha256Hasher h;
  h.Update(data);
  return h.Finish();
}

Digest256 Sha256Digest(std::string_view data) {
  Sha256Hasher h;
  h.Update(data);
  return h.Finish();
}

}  // namespace lifeboat
