// The `lifeboat agent` daemon: one libuv loop that owns the peer server (this
// node's export, served to authenticated peers), one scheduler + puller per
// configured peer (filling the catalog store), the control API, and the
// signal handlers.
//
// Startup: creates data_dir (0700), opens the catalog store (which cleans its
// staging area), opens the exporter (state under <data_dir>/.export), starts
// listening, then sends sd_notify READY=1. SIGTERM/SIGINT: stop accepting
// peers and API calls, cancel pulls that have not started committing (their
// staging is dropped; the previous generation stays current), let running
// commits finish, then return 0.
#ifndef LIFEBOAT_AGENT_DAEMON_H_
#define LIFEBOAT_AGENT_DAEMON_H_

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"
#include "catalog/store.h"
#include "conf/config.h"

namespace lifeboat::agent {

// What the command that starts the agent plugs in from the layers above it
// (the agent never includes restore/).
struct DaemonHooks {
  // Builds the readiness document (GET /readiness, the lifeboat_readiness_*
  // and lifeboat_drill_* metrics) from the agent's store. Runs on a worker
  // thread; only reads. Null: no readiness.
  std::function<Result<nlohmann::json>(const catalog::Store&)> readiness;
  // Builds the document of GET /restores: what restores run on this node
  // rebuilt (or began to), read by the other nodes to know which of their
  // peers' instances are deposed. Runs on a worker thread; only reads.
  // Null: 404.
  std::function<Result<nlohmann::json>()> restores;
  // After each successful pull from `peer`: one line per instance of that
  // peer that was restored elsewhere yet is still exported (deposed), which
  // the agent logs as a warning. Runs on a worker thread (it may ask other
  // nodes); only reads. Null: no check.
  std::function<std::vector<std::string>(const catalog::Store&, const std::string& peer)> deposed;
  // The drill command run every [drill] interval (agent/drill_runner.h);
  // empty, or an interval of 0: no scheduled drills.
  std::vector<std::string> drill_argv;
};

// Runs the daemon in the foreground until a stop signal. Returns the process
// exit code: 0 after a clean stop, the sysexit of the startup error otherwise
// (which is logged).
int RunDaemon(const conf::Config& config, DaemonHooks hooks = {});

}  // namespace lifeboat::agent

#endif  // LIFEBOAT_AGENT_DAEMON_H_
