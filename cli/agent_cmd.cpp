// `lifeboat agent`: runs the daemon in the foreground (logs to stderr).
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <iostream>
#include <vector>

#include "agent/daemon.h"
#include "base/clock.h"
#include "cli/cluster_restores.h"
#include "cli/command.h"
#include "cli/readiness_source.h"
#include "conf/config.h"
#include "restore/deposed.h"
#include "restore/shared_restores.h"

namespace lifeboat::cli {
namespace {

// This binary's own path, to run `lifeboat drill` as a child: Linux
// /proc/self/exe, illumos /proc/self/path/a.out; "" when neither resolves.
std::string SelfExecutable() {
  for (const char* link : {"/proc/self/exe", "/proc/self/path/a.out"}) {
    char buf[PATH_MAX];
    ssize_t n = ::readlink(link, buf, sizeof(buf) - 1);
    if (n > 0) return std::string(buf, static_cast<size_t>(n));
  }
  return "";
}

// "imgapi0 (<uuid>) restored on A as imgapi1 (<uuid>)" per deposed instance
// of `peer`, counting this node's restores and `elsewhere`'s.
std::vector<std::string> DeposedLines(const conf::Config& config, const catalog::Store& store,
                                      const std::string& peer, const ClusterRestores& elsewhere) {
  auto deposed =
      restore::FindDeposed(*Env::Default(), store, config.agent.data_dir, elsewhere.restored);
  if (!deposed.ok()) return {"cannot tell: " + deposed.status().message()};
  std::vector<std::string> out;
  for (const restore::DeposedInstance& d : *deposed) {
    if (d.old.peer != peer) continue;
    out.push_back(d.old.alias + " (" + d.old.uuid + ") restored on " + d.restored.node + " as " +
                  d.restored.alias + " (" + d.restored.new_uuid + ")");
  }
  return out;
}

agent::DaemonHooks Hooks(const conf::Config& config, const std::string& config_path) {
  agent::DaemonHooks hooks;
  // Deposed instances count the restores of every node: each call asks
  // every peer with an api (GET /restores, in parallel, 2 s to connect and
  // 5 s to answer; a peer that does not answer is not counted). The hooks
  // run on libuv worker threads, never on the loop.
  hooks.readiness = [config](const catalog::Store& store) -> Result<nlohmann::json> {
    ClusterRestores elsewhere = AskClusterRestores(config);
    ASSIGN_OR_RETURN(
        restore::ReadinessReport r,
        AssessConfiguredReadiness(config, store, *Env::Default(), Clock::Real()->WallMs(),
                                  /*cluster=*/nullptr, elsewhere.restored));
    return r.ToJson();
  };
  hooks.deposed = [config](const catalog::Store& store, const std::string& peer) {
    return DeposedLines(config, store, peer, AskClusterRestores(config));
  };
  hooks.restores = [config]() -> Result<nlohmann::json> {
    return restore::RestoresDocument(*Env::Default(), config.agent.data_dir, config.node.name);
  };
  char abs[PATH_MAX];
  const std::string self = SelfExecutable();
  if (!self.empty() && ::realpath(config_path.c_str(), abs) != nullptr) {
    hooks.drill_argv = {self, "drill", "--background", "-c", abs, "-j"};
  }
  return hooks;
}

int RunAgent(const Context& ctx) {
  std::vector<conf::ConfigProblem> problems;
  Result<conf::Config> config = conf::LoadConfig(ctx.ConfigPath(), &problems);
  if (!config.ok()) {
    for (const auto& p : problems) std::cerr << p.ToString() << "\n";
    if (problems.empty()) std::cerr << "lifeboat agent: " << config.status().ToString() << "\n";
    return kExitConfig;
  }
  return agent::RunDaemon(*config, Hooks(*config, ctx.ConfigPath()));
}

const CommandRegistrar kRegistrar(/*order=*/10, [](CLI::App& root, Context& ctx) {
  CLI::App* sub = root.add_subcommand(
      "agent",
      "Run the replication agent in the foreground (serve peers, pull from peers, control API)");
  sub->callback([&ctx] { ctx.Run([&ctx] { return RunAgent(ctx); }); });
});

}  // namespace
}  // namespace lifeboat::cli
