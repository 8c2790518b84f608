// The readiness report of a configured node (restore/readiness.h), wired from
// its config: shared by `lifeboat readiness` and the agent's GET /readiness
// and readiness metrics (cli/agent_cmd.cpp hands it to the daemon, which
// must not depend on restore/).
#ifndef LIFEBOAT_CLI_READINESS_SOURCE_H_
#define LIFEBOAT_CLI_READINESS_SOURCE_H_

#include <cstdint>

#include "base/env.h"
#include "base/status.h"
#include "catalog/store.h"
#include "cli/cluster_client.h"
#include "conf/config.h"
#include "restore/readiness.h"

namespace lifeboat::cli {

// What the configured restore backend adds per instance to a restore's time
// (docs/operator-guide.md, "Readiness"): smartos creates and boots a zone.
int64_t PerInstanceOverheadMs(const conf::Config& config);

// Reads `store` (thread-safe reads only) and the check records under
// data_dir; with `cluster`, also asks every other configured node which
// generation of each peer it holds (one HELD_QUERY per node).
Result<restore::ReadinessReport> AssessConfiguredReadiness(const conf::Config& config,
                                                           const catalog::Store& store, Env& env,
                                                           int64_t now_ms,
                                                           ClusterClient* cluster);

}  // namespace lifeboat::cli

#endif  // LIFEBOAT_CLI_READINESS_SOURCE_H_
