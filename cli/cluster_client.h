// A small blocking syncproto client for the CLI: asks other nodes what they
// hold of a peer (HELD_QUERY), over the configured transport (plain, tls-psk,
// tls-ca) with the cluster key, one connection per question, every step
// bounded by a timeout. Used by `restore` (the ClusterProbe) and
// `status --cluster`.
//
// Threads: one ClusterClient per thread; each call opens and closes its own
// socket.
#ifndef LIFEBOAT_CLI_CLUSTER_CLIENT_H_
#define LIFEBOAT_CLI_CLUSTER_CLIENT_H_

#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "conf/config.h"
#include "restore/cluster_probe.h"
#include "syncproto/frame.h"
#include "syncproto/tls_channel.h"

namespace lifeboat::cli {

class ClusterClient {
 public:
  // Loads the TLS credentials of `config` (kConfig errors name the file).
  static Result<std::unique_ptr<ClusterClient>> Create(const conf::Config& config,
                                                       int timeout_ms = 5000);

  // Which generation of `peer` ("" = of every peer) does `node` hold? Errors
  // say which node and why: unreachable (kUnavailable/kTemporary), wrong
  // cluster key (kPermission), a node too old to answer (kData, "does not
  // answer HELD_QUERY").
  Result<syncproto::HeldAnswerMsg> QueryHeld(const restore::NodeAddress& node,
                                             const std::string& peer);

  // Asks the local agent (control API, POST /sync?peer=P&from=N) to pull
  // `peer`'s copy held by `holder` into this node's catalog, and waits for
  // the result. The agent commits it as `peer`'s data with the usual pull
  // transaction (digests, rollback guard). kUnavailable when the agent is
  // not running; the pull's error otherwise.
  Status PullHeldCopy(const restore::NodeAddress& holder, const std::string& peer);

  // restore::ClusterProbe: CopiesOf by QueryHeld, PullFrom by PullHeldCopy.
  std::unique_ptr<restore::ClusterProbe> NewProbe();

 private:
  ClusterClient(const conf::Config& config, int timeout_ms)
      : config_(config), timeout_ms_(timeout_ms) {}
  const conf::Config& config_;
  int timeout_ms_;
  std::shared_ptr<const syncproto::TlsContext> tls_;
};

}  // namespace lifeboat::cli

#endif  // LIFEBOAT_CLI_CLUSTER_CLIENT_H_
