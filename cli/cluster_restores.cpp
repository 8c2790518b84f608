#include "cli/cluster_restores.h"

#include <mutex>

#include <nlohmann/json.hpp>

#include "cli/node_api.h"
#include "restore/shared_restores.h"

namespace lifeboat::cli {
namespace {

Result<std::vector<restore::RestoredInstance>> AskNode(const NodeApi& n) {
  agent::ApiCall call = n.call;
  call.target = "/restores";
  call.connect_timeout_ms = 2'000;
  call.read_timeout_ms = 5'000;
  ASSIGN_OR_RETURN(agent::ApiReply reply, agent::CallApi(call));
  nlohmann::json doc = nlohmann::json::parse(reply.body, nullptr, false);
  if (reply.status != 200) {
    std::string msg = doc.is_object() ? doc.value("message", reply.body) : reply.body;
    return UnavailableError("GET /restores answered " + std::to_string(reply.status) + ": " + msg);
  }
  return restore::FinishedRestoresOf(doc, n.node);
}

}  // namespace

ClusterRestores AskClusterRestores(const conf::Config& config) {
  ClusterRestores out;
  auto nodes = ClusterApis(config, /*skip_unset=*/true);
  if (!nodes.ok()) return out;  // cannot happen with skip_unset
  std::erase_if(*nodes, [](const NodeApi& n) { return n.self; });
  std::mutex mu;
  ForEachNodeInParallel(*nodes, [&](const NodeApi& n) {
    auto restored = AskNode(n);
    std::lock_guard lock(mu);
    if (!restored.ok()) {
      out.errors.push_back("node " + n.node + ": " + restored.status().message());
      out.unanswered[n.node] = restored.status().message();
      return;
    }
    for (restore::RestoredInstance& r : *restored) restore::MergeRestored(out.restored, std::move(r));
  });
  return out;
}

}  // namespace lifeboat::cli
