#include "cli/readiness_source.h"

namespace lifeboat::cli {
namespace {

// What every other node holds of each peer, by peer name. Unreachable nodes
// come back as copies with reachable = false, under every peer.
std::map<std::string, std::vector<restore::PeerCopy>> AskCluster(const conf::Config& config,
                                                                 ClusterClient& client) {
  std::map<std::string, std::vector<restore::PeerCopy>> copies;
  for (const conf::PeerConfig& node : config.peers) {
    Result<syncproto::HeldAnswerMsg> held =
        client.QueryHeld({node.name, node.address.host, node.address.port}, /*peer=*/"");
    for (const conf::PeerConfig& peer : config.peers) {
      if (peer.name == node.name) continue;
      restore::PeerCopy c;
      c.node = node.name;
      c.reachable = held.ok();
      if (!held.ok()) {
        c.error = held.status().message();
      } else {
        for (const auto& h : held->peers) {
          if (h.peer == peer.name) c.generation = h.generation, c.pulled_ms = h.last_pull_ms;
        }
      }
      copies[peer.name].push_back(std::move(c));
    }
  }
  return copies;
}

}  // namespace

int64_t PerInstanceOverheadMs(const conf::Config& config) {
  // An assumption until a drill on the smartos backend measures it: vmadm
  // create of a core zone with its delegate dataset, plus its first boot.
  return config.restore.backend == conf::RestoreBackend::kSmartos ? 60'000 : 0;
}

Result<restore::ReadinessReport> AssessConfiguredReadiness(const conf::Config& config,
                                                           const catalog::Store& store, Env& env,
                                                           int64_t now_ms,
                                                           ClusterClient* cluster) {
  std::vector<std::string> peers;
  for (const auto& p : config.peers) peers.push_back(p.name);
  ASSIGN_OR_RETURN(restore::ReadinessInput in,
                   restore::GatherReadiness(env, store, config.agent.data_dir, peers));
  in.now_ms = now_ms;
  in.node = config.node.name;
  in.stale_after_ms = config.agent.stale_after.count();
  in.per_instance_overhead_ms = PerInstanceOverheadMs(config);
  if (cluster != nullptr) in.cluster_copies = AskCluster(config, *cluster);
  return restore::AssessReadiness(in);
}

}  // namespace lifeboat::cli
