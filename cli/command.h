// The `lifeboat` command line: one binary, subcommands registered by the
// files of cli/ (one file per command family), wired here so that no command
// needs to edit main.cpp.
//
// A command file defines, at namespace scope:
//
//   static const CommandRegistrar kRegistrar(/*order=*/40, [](CLI::App& root, Context& ctx) {
//     CLI::App* sub = root.add_subcommand("status", "...");
//     ... options bound to variables captured by the lambda or static ...
//     sub->callback([&ctx] { ctx.Run([] { return RunStatus(); }); });
//   });
//
// `order` sorts commands in --help. Run() stores the command body; main()
// executes it after parsing so every exit goes through one exit-code mapping.
#ifndef LIFEBOAT_CLI_COMMAND_H_
#define LIFEBOAT_CLI_COMMAND_H_

#include <functional>
#include <string>

#include <CLI/CLI.hpp>

namespace lifeboat::cli {

// sysexits used by every command.
inline constexpr int kExitOk = 0;
inline constexpr int kExitUsage = 64;
inline constexpr int kExitData = 65;
inline constexpr int kExitUnavailable = 69;
inline constexpr int kExitSoftware = 70;
inline constexpr int kExitIo = 74;
inline constexpr int kExitTemporary = 75;
inline constexpr int kExitConfig = 78;

// Options every command shares; accepted before or after the subcommand words.
// The config file the binary reads when neither -c nor $LIFEBOAT_CONFIG names
// one. On SmartOS /etc is rebuilt at boot, so the config lives under /opt
// (docs/operator-guide.md, packaging/lifeboat.xml).
#if defined(__sun)
inline constexpr const char* kDefaultConfigPath = "/opt/lifeboat/etc/lifeboat.toml";
#else
inline constexpr const char* kDefaultConfigPath = "/etc/lifeboat/lifeboat.toml";
#endif

struct Context {
  std::string config_flag;  // -c/--config, empty when not given
  bool json = false;        // -j/--json

  // The config file to use: -c, else $LIFEBOAT_CONFIG, else kDefaultConfigPath.
  std::string ConfigPath() const;

  void Run(std::function<int()> body) { body_ = std::move(body); }
  std::function<int()> body_;
};

using CommandSetup = std::function<void(CLI::App& root, Context& ctx)>;

struct CommandRegistrar {
  CommandRegistrar(int order, CommandSetup setup);
};

}  // namespace lifeboat::cli

#endif  // LIFEBOAT_CLI_COMMAND_H_
