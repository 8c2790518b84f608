// `lifeboat`: parses the command line and runs one subcommand.
#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <vector>

#include "base/log.h"
#include "cli/command.h"
#include "cli/version.h"

namespace lifeboat::cli {
namespace {

std::vector<std::pair<int, CommandSetup>>& Registry() {
  static auto* registry = new std::vector<std::pair<int, CommandSetup>>();
  return *registry;
}

int Main(int argc, char** argv) {
  CLI::App app{"Lifeboat: keeps a Triton datacenter's control plane recoverable", "lifeboat"};
  app.fallthrough();  // global options are accepted after the subcommand words too
  app.require_subcommand(0, 1);
  Context ctx;
  app.add_option("-c,--config", ctx.config_flag,
                 std::string("config file (default: $LIFEBOAT_CONFIG, else ") +
                     kDefaultConfigPath + ")");
  app.add_flag("-j,--json", ctx.json, "print JSON instead of text");
  bool version = false;
  app.add_flag("-V,--version", version, "print the versions of lifeboat and its libraries");

  auto& registry = Registry();
  std::stable_sort(registry.begin(), registry.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [order, setup] : registry) setup(app, ctx);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);  // prints help or the usage error
    return rc == 0 ? kExitOk : kExitUsage;
  }
  if (version) {
    std::cout << VersionText(ctx.json);
    return kExitOk;
  }
  if (!ctx.body_) {
    std::cerr << app.help();
    return kExitUsage;
  }
  try {
    return ctx.body_();
  } catch (const std::exception& e) {
    std::cerr << "lifeboat: internal error: " << e.what() << "\n";
    return kExitSoftware;
  }
}

}  // namespace

std::string Context::ConfigPath() const {
  if (!config_flag.empty()) return config_flag;
  if (const char* env = std::getenv("LIFEBOAT_CONFIG"); env != nullptr && *env != '\0') return env;
  return kDefaultConfigPath;
}

CommandRegistrar::CommandRegistrar(int order, CommandSetup setup) {
  Registry().emplace_back(order, std::move(setup));
}

}  // namespace lifeboat::cli

int main(int argc, char** argv) { return lifeboat::cli::Main(argc, argv); }
