#include "base/text.h"

namespace lifeboat {
namespace {

// Length of the well-formed UTF-8 sequence at s[i], 0 when there is none.
size_t Utf8SequenceAt(std::string_view s, size_t i) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const unsigned char c = p[i];
  if (c < 0x80) return 1;
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  if (p[i + 1] < lo || p[i + 1] > hi) return 0;
  for (size_t k = 2; k < len; ++k) {
    if (p[i + k] < 0x80 || p[i + k] > 0xBF) return 0;
  }
  return len;
}

constexpr char kHex[] = "0123456789abcdef";

void AppendHexByte(std::string& out, unsigned char b) {
  out += kHex[b >> 4];
  out += kHex[b & 15];
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

size_t FirstInvalidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t len = Utf8SequenceAt(s, i);
    if (len == 0) return i;
    i += len;
  }
  return std::string_view::npos;
}

std::string DumpJson(const nlohmann::json& j, int indent) {
  return j.dump(indent, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace);
}

void PutBytes(nlohmann::json& obj, const std::string& key, std::string_view bytes) {
  if (IsUtf8(bytes)) {
    obj[key] = std::string(bytes);
    return;
  }
  std::string hex;
  hex.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) AppendHexByte(hex, b);
  obj[key + "_hex"] = std::move(hex);
}

Result<std::string> GetBytes(const nlohmann::json& obj, const std::string& key) {
  if (!obj.is_object()) return DataError("\"" + key + "\": not in an object");
  if (auto it = obj.find(key); it != obj.end()) {
    if (!it->is_string()) return DataError("\"" + key + "\" is not a string");
    return it->get<std::string>();
  }
  auto it = obj.find(key + "_hex");
  if (it == obj.end()) return NotFoundError("missing \"" + key + "\"");
  if (!it->is_string()) return DataError("\"" + key + "_hex\" is not a string");
  const std::string& hex = it->get_ref<const std::string&>();
  if (hex.size() % 2 != 0) return DataError("\"" + key + "_hex\" has an odd length");
  std::string out;
  out.reserve(hex.size() / 2);
  for (size_t i = 0; i < hex.size(); i += 2) {
    const int hi = HexValue(hex[i]), lo = HexValue(hex[i + 1]);
    if (hi < 0 || lo < 0) return DataError("\"" + key + "_hex\" is not hex");
    out += static_cast<char>(hi * 16 + lo);
  }
  return out;
}

std::string TrimTrailingSpace(std::string_view s) {
  size_t end = s.size();
  while (end > 0 &&
         (s[end - 1] == ' ' || s[end - 1] == '\t' || s[end - 1] == '\r' || s[end - 1] == '\n')) {
    --end;
  }
  return std::string(s.substr(0, end));
}

std::string EscapeForTerminal(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t len = Utf8SequenceAt(s, i);
    // C1 controls (U+0080..U+009F) are C2 80..C2 9F in UTF-8.
    const bool c1 = len == 2 && c == 0xC2 && static_cast<unsigned char>(s[i + 1]) < 0xA0;
    if (len > 1 && !c1) {
      out.append(s.substr(i, len));
      i += len;
      continue;
    }
    const size_t n = len == 0 ? 1 : len;
    for (size_t k = 0; k < n; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if (b == '\n') {
        out += "\\n";
      } else if (b == '\t') {
        out += "\\t";
      } else if (b == '\r') {
        out += "\\r";
      } else if (b == '\\') {
        out += "\\\\";
      } else if (b < 0x20 || b >= 0x7f) {
        out += "\\x";
        AppendHexByte(out, b);
      } else {
        out += static_cast<char>(b);
      }
    }
    i += n;
  }
  return out;
}

bool IsUuid(std::string_view s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

bool IsSafeName(std::string_view name) {
  return !name.empty() && name.size() <= 255 && name != "." && name != ".." &&
         name.find('/') == std::string_view::npos && name.find('\0') == std::string_view::npos;
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

}  // namespace lifeboat
