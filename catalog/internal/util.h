// Small helpers shared by the catalog sources (not part of the public API).
#ifndef LIFEBOAT_CATALOG_INTERNAL_UTIL_H_
#define LIFEBOAT_CATALOG_INTERNAL_UTIL_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "base/digest.h"
#include "base/env.h"
#include "base/sha256.h"
#include "base/status.h"

namespace lifeboat::catalog::internal {

// Little-endian append-only encoder for the exporter's state file.
class Encoder {
 public:
  void U8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void U32(uint32_t v);
  void U64(uint64_t v);
  void I64(int64_t v) { U64(static_cast<uint64_t>(v)); }
  void Str(std::string_view s);
  void Dig(const Digest128& d) { out_.append(reinterpret_cast<const char*>(d.bytes.data()), 16); }
  void Dig(const Digest256& d) { out_.append(reinterpret_cast<const char*>(d.bytes.data()), 32); }
  std::string& out() { return out_; }

 private:
  std::string out_;
};

// Decoder over a byte string; every getter fails (returns false) past the end.
class Decoder {
 public:
  explicit Decoder(std::string_view in) : in_(in) {}
  bool U8(uint8_t* v);
  bool U32(uint32_t* v);
  bool U64(uint64_t* v);
  bool I64(int64_t* v);
  bool Str(std::string* s);
  bool Dig(Digest128* d);
  bool Dig(Digest256* d);
  bool done() const { return pos_ == in_.size(); }

 private:
  std::string_view in_;
  size_t pos_ = 0;
};

// 16 random bytes as 32 hex chars (getrandom).
std::string RandomHex();

// Parses JSON text; a data error naming `what` instead of an exception.
Result<nlohmann::json> ParseJson(std::string_view text, const std::string& what);

// A string member of a JSON object, or "" when missing or not a string.
std::string JsonString(const nlohmann::json& obj, const char* key);

// True for a non-empty single path component without '/', NUL, "." or "..".
bool IsSafeName(std::string_view name);

// Streams a file through XXH3-128 (and SHA-256 into *sha256 when non-null);
// keeps its bytes in *content when non-null (fails with a data error past
// `max_content`). `size_hint` (the stat size) picks the buffer size.
Status HashOpenFile(ReadableFile& file, Digest128* digest, uint64_t* size,
                    std::string* content = nullptr, uint64_t max_content = 64ull << 20,
                    uint64_t size_hint = 1 << 20, Digest256* sha256 = nullptr);

}  // namespace lifeboat::catalog::internal

#endif  // LIFEBOAT_CATALOG_INTERNAL_UTIL_H_
