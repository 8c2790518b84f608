// The control APIs of every node of the cluster, for the commands that ask
// all of them (`sync-now --cluster`, the restores shared between nodes):
// this node's agent.api and each [[peer]]'s `api`, all called with this
// node's auth.api_token (the cluster's nodes share one token).
#ifndef LIFEBOAT_CLI_NODE_API_H_
#define LIFEBOAT_CLI_NODE_API_H_

#include <functional>
#include <string>
#include <vector>

#include "agent/api_client.h"
#include "base/status.h"
#include "conf/config.h"

namespace lifeboat::cli {

struct NodeApi {
  std::string node;   // node.name for this node, the [[peer]] name for the others
  bool self = false;  // this node's own agent
  agent::ApiCall call;  // host, port and token set; method and target up to the caller
};

// This node first, then the peers in configuration order. A peer without
// `api` is a kConfig error naming it (`sync-now --cluster` must reach every
// node) unless `skip_unset`, which leaves such peers out.
Result<std::vector<NodeApi>> ClusterApis(const conf::Config& config, bool skip_unset);

// Runs `fn` for every node at once, one thread each, and returns when all
// returned. `fn` must be safe to call from several threads at once.
void ForEachNodeInParallel(const std::vector<NodeApi>& nodes,
                           const std::function<void(const NodeApi&)>& fn);

}  // namespace lifeboat::cli

#endif  // LIFEBOAT_CLI_NODE_API_H_
