// Text that comes from outside (file names, URLs, peers' strings) is bytes:
// it need not be UTF-8. The project's one rule for it:
//
//   * Every JSON document Lifeboat writes is valid UTF-8. DumpJson() is the
//     only way JSON is serialized: bytes that are not UTF-8 become U+FFFD.
//     That is right for what people and scripts read (API answers, logs,
//     `-j` output) and never throws.
//   * Where the exact bytes matter (export paths, symlink targets and
//     hard-link names in catalog files and `catalog show -j`), PutBytes()
//     writes "<key>": "<text>" when the bytes are UTF-8 and "<key>_hex":
//     "<hex>" otherwise; GetBytes() reads either. Files written before this
//     rule only have "<key>", which reads the same.
//   * On a terminal, EscapeForTerminal() shows what a terminal would act on
//     (control characters, ESC, invalid bytes) as C escapes.
//
// See docs/operator-guide.md, "Text that is not UTF-8".
#ifndef LIFEBOAT_BASE_TEXT_H_
#define LIFEBOAT_BASE_TEXT_H_

#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "base/status.h"

namespace lifeboat {

// Offset of the first byte that is not part of well-formed UTF-8 (no overlong
// forms, no surrogates, nothing above U+10FFFF), or npos.
size_t FirstInvalidUtf8(std::string_view s);
inline bool IsUtf8(std::string_view s) { return FirstInvalidUtf8(s) == std::string_view::npos; }

// j.dump(indent) with invalid UTF-8 replaced by U+FFFD. Never throws.
std::string DumpJson(const nlohmann::json& j, int indent = -1);

// Stores `bytes` under `key` (UTF-8) or `key`_hex (anything else) in `obj`.
void PutBytes(nlohmann::json& obj, const std::string& key, std::string_view bytes);
// Reads what PutBytes stored. kNotFound when neither key is there, kData
// when the value has the wrong type or is not hex.
Result<std::string> GetBytes(const nlohmann::json& obj, const std::string& key);

// `s` without its trailing spaces, tabs, CRs and newlines (a command's or a
// small file's output line).
std::string TrimTrailingSpace(std::string_view s);

// Printable UTF-8 as is; \n \t \r \\ and every other control character
// (C0, DEL, C1), and every byte that is not UTF-8, as \n, \t, \r, \\, \xNN.
std::string EscapeForTerminal(std::string_view s);

// True for a canonical lowercase 8-4-4-4-12 hex uuid (what vmadm, SAPI and
// IMGAPI print).
bool IsUuid(std::string_view s);

// True for a non-empty single path component of at most 255 bytes without
// '/' or NUL that is neither "." nor "..": a name from outside (a uuid, a
// service) that may be joined to a local directory.
bool IsSafeName(std::string_view name);

// Parses JSON text; a kData error naming `what` instead of an exception.
Result<nlohmann::json> ParseJson(std::string_view text, const std::string& what);

// A string member of a JSON object, or "" when `obj` is not an object or the
// member is missing or not a string.
std::string JsonString(const nlohmann::json& obj, const char* key);

}  // namespace lifeboat

#endif  // LIFEBOAT_BASE_TEXT_H_
