#include "restore/deposed.h"

#include <algorithm>

namespace lifeboat::restore {

std::vector<DeposedInstance> FindDeposed(const std::vector<catalog::InstanceRecord>& held,
                                         const std::map<std::string, RestoredInstance>& restored,
                                         const std::map<std::string, int64_t>& peer_last_pull_ms) {
  std::vector<DeposedInstance> out;
  for (const catalog::InstanceRecord& r : held) {
    auto it = restored.find(r.uuid);
    if (it == restored.end() || r.removed) continue;
    int64_t seen = r.pulled_at_ms;
    if (auto p = peer_last_pull_ms.find(r.peer); p != peer_last_pull_ms.end()) {
      seen = std::max(seen, p->second);
    }
    if (seen <= it->second.restored_ms) continue;  // not heard of since the restore
    out.push_back(DeposedInstance{r, it->second});
  }
  std::sort(out.begin(), out.end(), [](const DeposedInstance& a, const DeposedInstance& b) {
    if (a.old.peer != b.old.peer) return a.old.peer < b.old.peer;
    return a.old.alias < b.old.alias;
  });
  return out;
}

Result<std::vector<DeposedInstance>> FindDeposed(
    Env& env, const catalog::Store& store, const std::string& data_dir,
    const std::map<std::string, RestoredInstance>& elsewhere) {
  ASSIGN_OR_RETURN(auto restored, ListRestoredInstances(env, data_dir));
  for (const auto& [uuid, r] : elsewhere) MergeRestored(restored, r);
  std::map<std::string, int64_t> last_pull;
  for (const catalog::PeerState& p : store.Peers()) last_pull[p.name] = p.last_pull_ms;
  return FindDeposed(store.Instances(), restored, last_pull);
}

}  // namespace lifeboat::restore
