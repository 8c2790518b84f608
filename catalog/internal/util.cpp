#include "catalog/internal/util.h"

#include <optional>

#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <span>
#include <vector>

namespace lifeboat::catalog::internal {

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

std::string RandomHex() {
  uint8_t buf[16];
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

Result<nlohmann::json> ParseJson(std::string_view text, const std::string& what) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return DataError("invalid JSON in " + what + ": " + e.what());
  }
}

std::string JsonString(const nlohmann::json& obj, const char* key) {
  if (!obj.is_object()) return "";
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_string()) return "";
  return it->get<std::string>();
}

bool IsSafeName(std::string_view name) {
  return !name.empty() && name.size() <= 255 && name != "." && name != ".." &&
         name.find('/') == std::string_view::npos && name.find('\0') == std::string_view::npos;
}

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

}  // namespace lifeboat::catalog::internal
