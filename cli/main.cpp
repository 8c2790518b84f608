// `lifeboat`: parses the command line and runs one subcommand.
#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <vector>

#include "base/log.h"
#include "base/suggest.h"
#include "cli/command.h"
#include "cli/version.h"

namespace lifeboat::cli {
namespace {

std::vector<std::pair<int, CommandSetup>>& Registry() {
  static auto* registry = new std::vector<std::pair<int, CommandSetup>>();
  return *registry;
}

// The subcommand the command line got to (the deepest one parsed).
CLI::App* Deepest(CLI::App* app) {
  for (CLI::App* sub : app->get_subcommands()) return Deepest(sub);
  return app;
}

// "did you mean" for the first word nobody expected: an option of the
// command reached (or a global one), or one of its subcommands.
std::string Suggestion(CLI::App& root, const std::string& word) {
  CLI::App* at = Deepest(&root);
  std::vector<std::string> names;
  if (word.rfind("-", 0) == 0) {
    for (CLI::App* a : {at, &root}) {
      for (const CLI::Option* o : a->get_options()) {
        for (const auto& n : o->get_lnames()) names.push_back("--" + n);
        for (const auto& n : o->get_snames()) names.push_back("-" + n);
      }
    }
  } else {
    for (CLI::App* sub : at->get_subcommands([](CLI::App*) { return true; })) {
      names.push_back(sub->get_name());
    }
  }
  return ClosestName(word, names);
}

// "lifeboat catalog verify" for the catalog verify subcommand.
std::string CommandPath(const CLI::App* app) {
  std::string path = app->get_name();
  for (const CLI::App* p = app->get_parent(); p != nullptr; p = p->get_parent()) {
    path = p->get_name() + " " + path;
  }
  return path;
}

// A word nobody expected is named with the closest known one; other usage
// errors (missing values, bad values) are CLI11's own message.
int UsageError(CLI::App& app, const CLI::ParseError& e) {
  const bool help = dynamic_cast<const CLI::CallForHelp*>(&e) != nullptr ||
                    dynamic_cast<const CLI::CallForAllHelp*>(&e) != nullptr;
  std::vector<std::string> words = app.remaining(/*recurse=*/true);
  if (!help && !words.empty()) {
    CLI::App* at = Deepest(&app);
    const bool has_commands = !at->get_subcommands([](CLI::App*) { return true; }).empty();
    const std::string what = words[0].rfind("-", 0) == 0 ? "option"
                             : has_commands              ? "command"
                                                         : "argument";
    std::cerr << "lifeboat: unknown " << what << " '" << words[0] << "'";
    if (std::string best = Suggestion(app, words[0]); !best.empty()) {
      std::cerr << " (did you mean '" << best << "'?)";
    }
    std::cerr << "; see `" << CommandPath(at) << " --help`\n";
    return kExitUsage;
  }
  int rc = app.exit(e);  // prints help or the usage error
  return rc == 0 ? kExitOk : kExitUsage;
}

// Every subcommand's --help ends with the options all commands share.
void AddCommonFooter(CLI::App* app) {
  for (CLI::App* sub : app->get_subcommands([](CLI::App*) { return true; })) {
    std::string footer = sub->get_footer();
    if (!footer.empty()) footer += "\n";
    footer +=
        "Options of every command (before or after the command words):\n"
        "  -c,--config FILE  config file (default: $LIFEBOAT_CONFIG, else "
        "/etc/lifeboat/lifeboat.toml)\n"
        "  -j,--json         print JSON instead of text\n";
    sub->footer(footer);
    AddCommonFooter(sub);
  }
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
  AddCommonFooter(&app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return UsageError(app, e);
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
