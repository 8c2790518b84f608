#include "cli/node_api.h"

#include <thread>

namespace lifeboat::cli {

Result<std::vector<NodeApi>> ClusterApis(const conf::Config& config, bool skip_unset) {
  std::vector<NodeApi> out;
  const std::string& token = config.auth.api_token;
  out.push_back(NodeApi{config.node.name, true,
                        agent::ApiCallFor(config.agent.api.host, config.agent.api.port, token)});
  for (const conf::PeerConfig& p : config.peers) {
    if (p.api.port == 0) {
      if (skip_unset) continue;
      return ConfigError("peer " + p.name + " has no `api` in " + config.source_path +
                         ": add api = \"host:port\" (its agent.api as reachable from here) to "
                         "its [[peer]] table");
    }
    out.push_back(NodeApi{p.name, false, agent::ApiCallFor(p.api.host, p.api.port, token)});
  }
  return out;
}

void ForEachNodeInParallel(const std::vector<NodeApi>& nodes,
                           const std::function<void(const NodeApi&)>& fn) {
  std::vector<std::thread> threads;
  threads.reserve(nodes.size());
  for (const NodeApi& n : nodes) threads.emplace_back([&fn, &n] { fn(n); });
  for (std::thread& t : threads) t.join();
}

}  // namespace lifeboat::cli
