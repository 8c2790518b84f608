// Retired instances (RFD 67 M3): instances of this node that a restore on
// another node replaced while this node was lost, and that `lifeboat retire`
// then stopped here. They are recorded in `<data_dir>/retired.json` so a
// rerun of retire is a no-op, and this node's export stops offering them:
// its peers then mark them removed and stop flagging them deposed.
//
// File format (JSON, written atomically):
//   {"format": 1, "retired": [{"uuid", "alias", "service", "restored_on",
//     "new_uuid", "new_alias", "retired_at_ms", "how"}, ...]}
#ifndef LIFEBOAT_EXPORTS_RETIRED_H_
#define LIFEBOAT_EXPORTS_RETIRED_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "base/env.h"
#include "base/status.h"
#include "exports/provider.h"

namespace lifeboat::exports {

struct RetiredInstance {
  std::string uuid;  // this node's (old) instance
  std::string alias;
  std::string service;
  std::string restored_on;  // the node that restored it
  std::string new_uuid;     // what it was restored as
  std::string new_alias;
  int64_t retired_ms = 0;  // wall clock
  std::string how;         // "vmadm stop + autoboot=false", "recorded only"
};

std::string RetiredPath(const std::string& data_dir);  // <data_dir>/retired.json

// Every instance recorded as retired under `data_dir`, by uuid. A missing
// file is an empty map; a file that is not the format above is a kData
// error naming it.
Result<std::map<std::string, RetiredInstance>> LoadRetired(Env& env, const std::string& data_dir);

// Adds (or replaces, by uuid) `r` to the record and writes it atomically
// (WriteFileAtomic, 0600): on failure the previous record is untouched.
// Not safe against two writers at once (one `lifeboat retire` at a time).
Status RecordRetired(Env& env, const std::string& data_dir, const RetiredInstance& r);

// A provider that offers what `inner` offers minus the instances recorded as
// retired under `data_dir` (re-read at every Snapshot). A record that cannot
// be read fails the snapshot with its error (exporting a deposed instance
// again is worse than a failed pull). `env` must outlive it.
std::unique_ptr<Provider> WithoutRetired(Env& env, std::unique_ptr<Provider> inner,
                                         std::string data_dir);

}  // namespace lifeboat::exports

#endif  // LIFEBOAT_EXPORTS_RETIRED_H_
