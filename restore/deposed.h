// Deposed instances (RFD 67 M3): when a lost node comes back after its
// instances were restored elsewhere, both copies exist. The old ones, still
// exported by the node that came back, are "deposed": `lifeboat status` flags
// them and the agent warns on each pull until the operator retires them.
#ifndef LIFEBOAT_RESTORE_DEPOSED_H_
#define LIFEBOAT_RESTORE_DEPOSED_H_

#include <map>
#include <string>
#include <vector>

#include "catalog/store.h"
#include "restore/journal.h"

namespace lifeboat::restore {

struct DeposedInstance {
  catalog::InstanceRecord old;  // the catalog's record of the old instance
  RestoredInstance restored;    // where it was restored, and as what
};

// The instances of `held` that a finished restore replaced and whose peer
// still exported them after that restore: a successful pull from the peer
// (`peer_last_pull_ms`, or the instance's own pulled_at_ms) later than the
// restore did not mark them removed. Pure; sorted by peer, then alias.
std::vector<DeposedInstance> FindDeposed(const std::vector<catalog::InstanceRecord>& held,
                                         const std::map<std::string, RestoredInstance>& restored,
                                         const std::map<std::string, int64_t>& peer_last_pull_ms);

// The same, reading the catalog and the journals under `data_dir`, plus
// `elsewhere`: finished restores other nodes reported (GET /restores).
Result<std::vector<DeposedInstance>> FindDeposed(
    Env& env, const catalog::Store& store, const std::string& data_dir,
    const std::map<std::string, RestoredInstance>& elsewhere = {});

}  // namespace lifeboat::restore

#endif  // LIFEBOAT_RESTORE_DEPOSED_H_
