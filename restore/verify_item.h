// One entry on disk checked against what the catalog recorded for it: the
// restorer's verification of the catalog before it writes, and a drill's
// comparison of what it restored, are the same check.
#ifndef LIFEBOAT_RESTORE_VERIFY_ITEM_H_
#define LIFEBOAT_RESTORE_VERIFY_ITEM_H_

#include <cstdint>
#include <string>

#include "base/digest.h"
#include "base/env.h"
#include "syncproto/manifest.h"

namespace lifeboat::restore {

struct VerifyItem {
  std::string path;  // where the entry is on disk
  syncproto::EntryKind kind = syncproto::EntryKind::kFile;
  uint64_t size = 0;   // files
  Digest128 digest;    // files: XXH3-128 of the content
  std::string target;  // symlinks
};

// "" when `item.path` is what the item says (a directory; a symlink with
// that target; a regular file of that size and digest), else what differs.
// Adds the bytes of a file read to `*bytes`. Thread-safe.
std::string CheckItem(Env& env, const VerifyItem& item, uint64_t* bytes);

}  // namespace lifeboat::restore

#endif  // LIFEBOAT_RESTORE_VERIFY_ITEM_H_
