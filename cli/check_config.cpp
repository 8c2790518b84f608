// `lifeboat check-config`: parse and validate the config, print every problem
// with file:line (exit 78) or a short summary (exit 0).
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/text.h"
#include "cli/command.h"
#include "conf/config.h"

namespace lifeboat::cli {
namespace {

nlohmann::ordered_json ProblemJson(const conf::ConfigProblem& p) {
  return {{"file", p.file},
          {"line", p.line},
          {"column", p.column},
          {"key", p.key},
          {"message", p.message}};
}

nlohmann::ordered_json SummaryJson(const conf::Config& c) {
  nlohmann::ordered_json peers = nlohmann::ordered_json::array();
  for (const auto& p : c.peers)
    peers.push_back({{"name", p.name}, {"address", p.address.ToString()}});
  return {
      {"node", {{"name", c.node.name}, {"uuid", c.node.uuid}}},
      {"listen", c.agent.listen.ToString()},
      {"api", c.agent.api.ToString()},
      {"data_dir", c.agent.data_dir},
      {"interval", conf::FormatDuration(c.agent.interval)},
      {"cluster_key_file", c.auth.cluster_key_file},
      {"peers", peers},
      {"export",
       {{"provider", conf::ExportProviderName(c.export_.provider)},
        {"root", c.export_.root},
        {"services", c.export_.services}}},
      {"restore",
       {{"backend", conf::RestoreBackendName(c.restore.backend)}, {"target", c.restore.target}}}};
}

std::string Join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

void PrintSummary(const conf::Config& c) {
  std::cout << c.source_path << ": ok\n"
            << "  node      " << c.node.name << " (" << c.node.uuid << ")\n"
            << "  listen    " << c.agent.listen.ToString() << "\n"
            << "  api       " << c.agent.api.ToString() << "\n"
            << "  data_dir  " << c.agent.data_dir << "\n"
            << "  interval  " << conf::FormatDuration(c.agent.interval) << " (stale after "
            << conf::FormatDuration(c.agent.stale_after) << ")\n"
            << "  export    " << conf::ExportProviderName(c.export_.provider);
  if (c.export_.provider == conf::ExportProvider::kDir) std::cout << " " << c.export_.root;
  std::cout << ", services: " << Join(c.export_.services) << "\n"
            << "  restore   " << conf::RestoreBackendName(c.restore.backend) << "\n"
            << "  peers     " << c.peers.size() << "\n";
  for (const auto& p : c.peers) {
    std::cout << "    " << p.name << " " << p.address.ToString() << "\n";
  }
  for (const auto& w : c.warnings) std::cout << "warning: " << w.ToString() << "\n";
}

int RunCheckConfig(const Context& ctx) {
  std::vector<conf::ConfigProblem> problems;
  Result<conf::Config> config = conf::LoadConfig(ctx.ConfigPath(), &problems);
  if (ctx.json) {
    nlohmann::ordered_json out;
    out["ok"] = config.ok();
    out["problems"] = nlohmann::ordered_json::array();
    for (const auto& p : problems) out["problems"].push_back(ProblemJson(p));
    out["warnings"] = nlohmann::ordered_json::array();
    if (config.ok()) {
      for (const auto& w : config->warnings) out["warnings"].push_back(ProblemJson(w));
      out["summary"] = SummaryJson(*config);
    } else {
      out["summary"] = nullptr;
    }
    std::cout << DumpJson(out) << "\n";
  } else if (config.ok()) {
    PrintSummary(*config);
  } else {
    for (const auto& p : problems) std::cerr << p.ToString() << "\n";
    std::cerr << ctx.ConfigPath() << ": " << problems.size()
              << (problems.size() == 1 ? " problem" : " problems") << "\n";
  }
  return config.ok() ? kExitOk : kExitConfig;
}

const CommandRegistrar kRegistrar(/*order=*/90, [](CLI::App& root, Context& ctx) {
  CLI::App* sub = root.add_subcommand(
      "check-config", "Parse and validate the config; print every problem with file:line");
  sub->callback([&ctx] { ctx.Run([&ctx] { return RunCheckConfig(ctx); }); });
});

}  // namespace
}  // namespace lifeboat::cli
