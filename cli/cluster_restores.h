// What restores on the other nodes rebuilt: each peer's GET /restores (by
// its [[peer]] api), so `status` and `readiness` on any node flag deposed
// instances, and `retire` on a returning node finds its own.
#ifndef LIFEBOAT_CLI_CLUSTER_RESTORES_H_
#define LIFEBOAT_CLI_CLUSTER_RESTORES_H_

#include <map>
#include <string>
#include <vector>

#include "conf/config.h"
#include "restore/journal.h"

namespace lifeboat::cli {

struct ClusterRestores {
  // Finished restores run on other nodes, by old uuid (MergeRestored rule).
  std::map<std::string, restore::RestoredInstance> restored;
  // "node B: why" for each peer with an api that did not answer; peers
  // without api are not asked and not listed.
  std::vector<std::string> errors;
  std::map<std::string, std::string> unanswered;  // the same, node -> why
};

// Asks every peer with an `api` at once (2 s to connect, 5 s to answer).
ClusterRestores AskClusterRestores(const conf::Config& config);

}  // namespace lifeboat::cli

#endif  // LIFEBOAT_CLI_CLUSTER_RESTORES_H_
