// `lifeboat agent`: runs the daemon in the foreground (logs to stderr).
#include <iostream>
#include <vector>

#include "agent/daemon.h"
#include "cli/command.h"
#include "conf/config.h"

namespace lifeboat::cli {
namespace {

int RunAgent(const Context& ctx) {
  std::vector<conf::ConfigProblem> problems;
  Result<conf::Config> config = conf::LoadConfig(ctx.ConfigPath(), &problems);
  if (!config.ok()) {
    for (const auto& p : problems) std::cerr << p.ToString() << "\n";
    if (problems.empty()) std::cerr << "lifeboat agent: " << config.status().ToString() << "\n";
    return kExitConfig;
  }
  return agent::RunDaemon(*config);
}

const CommandRegistrar kRegistrar(/*order=*/10, [](CLI::App& root, Context& ctx) {
  CLI::App* sub = root.add_subcommand(
      "agent",
      "Run the replication agent in the foreground (serve peers, pull from peers, control API)");
  sub->callback([&ctx] { ctx.Run([&ctx] { return RunAgent(ctx); }); });
});

}  // namespace
}  // namespace lifeboat::cli
