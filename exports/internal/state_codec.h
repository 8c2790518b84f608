// The byte encoding of the exporter's state file (export_state.h):
// little-endian integers, u32-length-prefixed strings, raw digests.
#ifndef LIFEBOAT_EXPORTS_INTERNAL_STATE_CODEC_H_
#define LIFEBOAT_EXPORTS_INTERNAL_STATE_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/digest.h"
#include "base/sha256.h"

namespace lifeboat::exports::internal {

// Append-only encoder.
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

}  // namespace lifeboat::exports::internal

#endif  // LIFEBOAT_EXPORTS_INTERNAL_STATE_CODEC_H_
