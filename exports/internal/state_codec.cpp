#include "exports/internal/state_codec.h"

#include <cstring>

namespace lifeboat::exports::internal {

void Encoder::U32(uint32_t v) {
  for (int i = 0; i < 4; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void Encoder::U64(uint64_t v) {
  for (int i = 0; i < 8; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void Encoder::Str(std::string_view s) {
  U32(static_cast<uint32_t>(s.size()));
  out_.append(s);
}

bool Decoder::U8(uint8_t* v) {
  if (in_.size() - pos_ < 1) return false;
  *v = static_cast<uint8_t>(in_[pos_++]);
  return true;
}

bool Decoder::U32(uint32_t* v) {
  if (in_.size() - pos_ < 4) return false;
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i)
    r |= static_cast<uint32_t>(static_cast<uint8_t>(in_[pos_ + i])) << (8 * i);
  pos_ += 4;
  *v = r;
  return true;
}

bool Decoder::U64(uint64_t* v) {
  if (in_.size() - pos_ < 8) return false;
  uint64_t r = 0;
  for (int i = 0; i < 8; ++i)
    r |= static_cast<uint64_t>(static_cast<uint8_t>(in_[pos_ + i])) << (8 * i);
  pos_ += 8;
  *v = r;
  return true;
}

bool Decoder::I64(int64_t* v) {
  uint64_t u;
  if (!U64(&u)) return false;
  *v = static_cast<int64_t>(u);
  return true;
}

bool Decoder::Str(std::string* s) {
  uint32_t n;
  if (!U32(&n) || in_.size() - pos_ < n) return false;
  s->assign(in_.substr(pos_, n));
  pos_ += n;
  return true;
}

bool Decoder::Dig(Digest128* d) {
  if (in_.size() - pos_ < 16) return false;
  std::memcpy(d->bytes.data(), in_.data() + pos_, 16);
  pos_ += 16;
  return true;
}

bool Decoder::Dig(Digest256* d) {
  if (in_.size() - pos_ < 32) return false;
  std::memcpy(d->bytes.data(), in_.data() + pos_, 32);
  pos_ += 32;
  return true;
}

}  // namespace lifeboat::exports::internal
