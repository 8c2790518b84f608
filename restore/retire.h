// `lifeboat retire` (RFD 67 M3): a lost node came back while its instances
// were restored on other nodes. Those old instances (deposed) still exist
// here; retiring one stops its zone, keeps it from booting again, and
// records it (exports/retired.h) so this node stops exporting it.
//
// SelectRetirements is the pure decision (what the cluster restored of this
// node, minus what is already retired); a ZoneRetirer carries one out.
#ifndef LIFEBOAT_RESTORE_RETIRE_H_
#define LIFEBOAT_RESTORE_RETIRE_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "exports/retired.h"
#include "restore/journal.h"

namespace lifeboat::restore {

struct RetireSelection {
  std::vector<RestoredInstance> to_retire;        // sorted by old alias, then old uuid
  std::vector<RestoredInstance> already_retired;  // recorded by an earlier run
};

// Of the finished restores `restored` (by old uuid; from every node), those
// whose instance came from `node` (RestoredInstance::peer == node): the ones
// not in `retired` are to retire. Unfinished restores (restored_ms == 0) are
// left out: this node's instance is still the only one. Pure.
RetireSelection SelectRetirements(const std::string& node,
                                  const std::map<std::string, RestoredInstance>& restored,
                                  const std::map<std::string, exports::RetiredInstance>& retired);

// The record of retiring `r` at `now_ms` by `how`.
exports::RetiredInstance RetiredRecord(const RestoredInstance& r, int64_t now_ms,
                                       const std::string& how);

// What retiring one zone did.
struct RetireOutcome {
  bool was_running = false;  // it was stopped by this call
  bool missing = false;      // no such zone here (nothing to stop)
  std::string how;           // for the record: "vmadm stop + autoboot=false", ...
};

// Stops one of this node's zones and keeps it from booting. Safe to repeat
// after a partial run (a stopped zone is not stopped again). Errors name the
// command, the zone and the tool's message. One thread at a time.
class ZoneRetirer {
 public:
  virtual ~ZoneRetirer() = default;
  virtual std::string name() const = 0;
  virtual Result<RetireOutcome> Retire(const std::string& uuid) = 0;
};

// SmartOS: `vmadm get <uuid>` (missing -> nothing to do), `vmadm stop
// <uuid>` when it is running, then `vmadm update <uuid> autoboot=false`.
// `vmadm` is a command name (PATH lookup) or a path.
std::unique_ptr<ZoneRetirer> NewVmadmRetirer(std::string vmadm = "vmadm");

}  // namespace lifeboat::restore

#endif  // LIFEBOAT_RESTORE_RETIRE_H_
