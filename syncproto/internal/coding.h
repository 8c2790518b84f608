// Byte-level encoding helpers for the syncproto wire format (leveldb's
// util/coding.h): little-endian fixed ints, LEB128 varints, length-prefixed
// strings. The Reader never reads past its span and remembers the first error.
#ifndef LIFEBOAT_SYNCPROTO_INTERNAL_CODING_H_
#define LIFEBOAT_SYNCPROTO_INTERNAL_CODING_H_

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/digest.h"
#include "base/sha256.h"
#include "base/status.h"

namespace lifeboat::syncproto::internal {

inline void PutU8(std::vector<uint8_t>* out, uint8_t v) { out->push_back(v); }
inline void PutFixed(std::vector<uint8_t>* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<uint8_t>(v >> (8 * i)));
}
inline void PutU16(std::vector<uint8_t>* out, uint16_t v) { PutFixed(out, v, 2); }
inline void PutU32(std::vector<uint8_t>* out, uint32_t v) { PutFixed(out, v, 4); }
inline void PutU64(std::vector<uint8_t>* out, uint64_t v) { PutFixed(out, v, 8); }
inline void PutVarint(std::vector<uint8_t>* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<uint8_t>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<uint8_t>(v));
}
inline void PutBytes(std::vector<uint8_t>* out, std::span<const uint8_t> b) {
  out->insert(out->end(), b.begin(), b.end());
}
inline void PutString(std::vector<uint8_t>* out, std::string_view s) {
  PutVarint(out, s.size());
  out->insert(out->end(), s.begin(), s.end());
}
inline void PutDigest(std::vector<uint8_t>* out, const Digest128& d) { PutBytes(out, d.bytes); }
inline void PutDigest(std::vector<uint8_t>* out, const Digest256& d) { PutBytes(out, d.bytes); }

class Reader {
 public:
  // `what` prefixes every error ("FILE_REQUEST").
  Reader(std::span<const uint8_t> in, std::string what) : in_(in), what_(std::move(what)) {}

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  size_t remaining() const { return in_.size() - pos_; }

  uint8_t U8(const char* field) { return static_cast<uint8_t>(Fixed(field, 1)); }
  uint16_t U16(const char* field) { return static_cast<uint16_t>(Fixed(field, 2)); }
  uint32_t U32(const char* field) { return static_cast<uint32_t>(Fixed(field, 4)); }
  uint64_t U64(const char* field) { return Fixed(field, 8); }
  int64_t I64(const char* field) { return static_cast<int64_t>(Fixed(field, 8)); }

  uint64_t Varint(const char* field) {
    uint64_t v = 0;
    for (int i = 0; i < 10; ++i) {
      if (!Need(field, 1)) return 0;
      uint8_t b = in_[pos_++];
      if (i == 9 && b > 1) return Fail(field, "varint overflows 64 bits"), 0;
      if (i > 0 && b == 0) return Fail(field, "overlong varint"), 0;
      v |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
      if (!(b & 0x80)) return v;
    }
    Fail(field, "varint longer than 10 bytes");
    return 0;
  }

  std::string String(const char* field, size_t max) {
    uint64_t n = Varint(field);
    if (!ok()) return {};
    if (n > max) {
      Fail(field, "length " + std::to_string(n) + " exceeds limit " + std::to_string(max));
      return {};
    }
    if (!Need(field, n)) return {};
    std::string s(reinterpret_cast<const char*>(in_.data() + pos_), n);
    pos_ += n;
    return s;
  }

  template <size_t N>
  void Bytes(const char* field, std::array<uint8_t, N>* out) {
    if (!Need(field, N)) return;
    std::memcpy(out->data(), in_.data() + pos_, N);
    pos_ += N;
  }
  Digest128 Digest(const char* field) {
    Digest128 d;
    Bytes(field, &d.bytes);
    return d;
  }
  Digest256 Sha256(const char* field) {
    Digest256 d;
    Bytes(field, &d.bytes);
    return d;
  }

  // Checks that every byte was consumed.
  void ExpectEnd() {
    if (ok() && remaining() != 0) {
      Fail("payload", std::to_string(remaining()) + " trailing bytes");
    }
  }

  void Fail(std::string_view field, std::string_view problem) {
    if (ok()) status_ = DataError(what_ + ": " + std::string(field) + ": " + std::string(problem));
  }
  void Fail(Status s) {
    if (ok()) status_ = DataError(what_ + ": " + s.message());
  }

 private:
  bool Need(const char* field, uint64_t n) {
    if (!ok()) return false;
    if (n > remaining()) {
      Fail(field, "truncated (need " + std::to_string(n) + " bytes, have " +
                      std::to_string(remaining()) + ")");
      return false;
    }
    return true;
  }
  uint64_t Fixed(const char* field, int bytes) {
    if (!Need(field, bytes)) return 0;
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(in_[pos_ + i]) << (8 * i);
    pos_ += bytes;
    return v;
  }

  std::span<const uint8_t> in_;
  size_t pos_ = 0;
  std::string what_;
  Status status_;
};

}  // namespace lifeboat::syncproto::internal

#endif  // LIFEBOAT_SYNCPROTO_INTERNAL_CODING_H_
