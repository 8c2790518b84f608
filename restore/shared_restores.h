// Restores shared between nodes: each agent serves what restores on its node
// rebuilt (GET /restores), and the others read it, so every node knows
// which of its peers' instances were restored elsewhere (deposed when the
// peer exports them again) and a returning node knows what to retire.
#ifndef LIFEBOAT_RESTORE_SHARED_RESTORES_H_
#define LIFEBOAT_RESTORE_SHARED_RESTORES_H_

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/env.h"
#include "base/status.h"
#include "restore/journal.h"

namespace lifeboat::restore {

// One restored instance as served: old_uuid, old_alias, peer, new_uuid,
// alias, service, generation, node, backend, target, restored_at (ISO 8601
// UTC; null while unfinished), journal_id.
nlohmann::json RestoredJson(const RestoredInstance& r);

// {"node": node, "restored": [...]}: every instance a restore under
// data_dir began or finished (ListRestoreClaims), sorted by old uuid.
Result<nlohmann::json> RestoresDocument(Env& env, const std::string& data_dir,
                                        const std::string& node);

// The finished restores of a document served by node `from`. A document
// that is not shaped as above is a kData error naming `from`.
Result<std::vector<RestoredInstance>> FinishedRestoresOf(const nlohmann::json& doc,
                                                         const std::string& from);

}  // namespace lifeboat::restore

#endif  // LIFEBOAT_RESTORE_SHARED_RESTORES_H_
