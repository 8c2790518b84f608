#include "restore/verify_item.h"

namespace lifeboat::restore {

std::string CheckItem(Env& env, const VerifyItem& item, uint64_t* bytes) {
  switch (item.kind) {
    case syncproto::EntryKind::kDir: {
      auto st = env.Stat(item.path);
      if (!st.ok()) return st.status().message();
      return st->type == FileType::kDirectory ? "" : "not a directory";
    }
    case syncproto::EntryKind::kSymlink: {
      auto target = env.ReadLink(item.path);
      if (!target.ok()) return target.status().message();
      return *target == item.target ? ""
                                    : "symlink target '" + *target + "' != '" + item.target + "'";
    }
    case syncproto::EntryKind::kFile: {
      auto file = env.OpenRead(item.path);
      if (!file.ok()) return file.status().message();
      Xxh3Hasher hasher;
      uint64_t size = 0;
      Status st = ForEachChunk(**file, 1 << 20, [&](std::span<const uint8_t> chunk) {
        hasher.Update(chunk);
        size += chunk.size();
        return Status::Ok();
      });
      if (!st.ok()) return st.message();
      *bytes += size;
      if (size != item.size) {
        return "size " + std::to_string(size) + " != recorded " + std::to_string(item.size);
      }
      Digest128 got = hasher.Finish();
      if (got != item.digest) {
        return "digest " + got.Hex() + " != recorded " + item.digest.Hex();
      }
      return "";
    }
  }
  return "unknown entry kind";
}


}  // namespace lifeboat::restore
