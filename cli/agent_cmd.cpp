// `lifeboat agent`: runs the daemon in the foreground (logs to stderr).
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <iostream>
#include <vector>

#include "agent/daemon.h"
#include "base/clock.h"
#include "cli/command.h"
#include "cli/readiness_source.h"
#include "conf/config.h"

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

agent::DaemonHooks Hooks(const conf::Config& config, const std::string& config_path) {
  agent::DaemonHooks hooks;
  hooks.readiness = [config](const catalog::Store& store) -> Result<nlohmann::json> {
    ASSIGN_OR_RETURN(restore::ReadinessReport r,
                     AssessConfiguredReadiness(config, store, *Env::Default(),
                                               Clock::Real()->WallMs(), /*cluster=*/nullptr));
    return r.ToJson();
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
