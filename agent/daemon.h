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

#include "conf/config.h"

namespace lifeboat::agent {

// Runs the daemon in the foreground until a stop signal. Returns the process
// exit code: 0 after a clean stop, the sysexit of the startup error otherwise
// (which is logged).
int RunDaemon(const conf::Config& config);

}  // namespace lifeboat::agent

#endif  // LIFEBOAT_AGENT_DAEMON_H_
