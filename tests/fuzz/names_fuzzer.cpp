// libFuzzer target: file names as a hostile export or peer sends them, on
// the way through the catalog (generation description entries), the JSON
// writers and the terminal. For any bytes:
//   * a name the manifest accepts round-trips exactly through
//     EntryToJson -> DumpJson -> parse -> EntryFromJson (also as a symlink
//     target and hard-link name);
//   * DumpJson never throws and always writes valid UTF-8;
//   * EscapeForTerminal leaves no control character (C0, DEL, C1) and only
//     valid UTF-8.
//
// Input: the name, as is.
#include <cstddef>
#include <cstdint>
#include <string>

#include "base/text.h"
#include "catalog/internal/store_impl.h"
#include "syncproto/manifest.h"

using namespace lifeboat;

namespace {

void CheckTerminalSafe(const std::string& shown) {
  if (!IsUtf8(shown)) __builtin_trap();
  for (size_t i = 0; i < shown.size(); ++i) {
    const auto c = static_cast<unsigned char>(shown[i]);
    if (c < 0x20 || c == 0x7f) __builtin_trap();
    if (c == 0xC2 && i + 1 < shown.size() && static_cast<unsigned char>(shown[i + 1]) < 0xA0) {
      __builtin_trap();  // a C1 control
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string name(reinterpret_cast<const char*>(data), size);
  CheckTerminalSafe(EscapeForTerminal(name));
  nlohmann::json j = {{"message", name}};
  if (!IsUtf8(DumpJson(j))) __builtin_trap();

  const std::string path = "datasets/b2f1a9d4-7c3e-4f0a-9e57-2d1c6b8a4e10/" + name;
  if (!syncproto::ValidateExportPath(path).ok()) return 0;
  catalog::FileEntry e;
  e.path = path;
  e.kind = syncproto::EntryKind::kSymlink;
  e.target = name;
  e.hardlink_of = path;
  const std::string text = DumpJson(catalog::EntryToJson(e));
  if (!IsUtf8(text)) __builtin_trap();
  nlohmann::json back_json = nlohmann::json::parse(text, nullptr, false);
  if (back_json.is_discarded()) __builtin_trap();
  Result<catalog::FileEntry> back = catalog::EntryFromJson(back_json);
  // hardlink_of on a symlink is refused by validation; the path must still
  // round-trip when it is accepted.
  if (back.ok() && (back->path != e.path || back->target != e.target)) __builtin_trap();
  e.hardlink_of.clear();
  e.kind = syncproto::EntryKind::kFile;
  back = catalog::EntryFromJson(nlohmann::json::parse(DumpJson(catalog::EntryToJson(e))));
  if (!back.ok() || back->path != e.path) __builtin_trap();
  return 0;
}
