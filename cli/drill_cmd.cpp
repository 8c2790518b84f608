// `lifeboat drill [--peer P] [--dir D] [-j]`: a restore drill (restore/drill.h)
// of one peer, or of every configured peer in turn: restore into a scratch
// directory with the dir backend, compare every restored byte with the
// catalog, measure, clean up, record. `readiness` and the agent's metrics
// show the last drill of each peer.
//
// Exit codes: 0 every drill passed; 64 usage; 65 a restored file differed,
// the catalog is damaged or nothing of the peer is restorable; 74 I/O; 75 not
// now (no room, another drill running); 78 config. With several peers, the first
// failure's code.
#include <unistd.h>

#include <iostream>

#include "agent/config_options.h"
#include "base/clock.h"
#include "base/priority.h"
#include "base/text.h"
#include "base/units.h"
#include "catalog/store.h"
#include "cli/command.h"
#include "conf/config.h"
#include "restore/drill.h"

namespace lifeboat::cli {
namespace {

struct DrillFlags {
  std::string peer;
  std::string dir;
  bool background = false;
};

void PrintRecord(const restore::DrillRecord& r) {
  std::cout << r.peer << ": ok: " << r.instances << " instance(s), " << r.images
            << " image(s), " << HumanBytes(r.bytes) << " restored and "
            << r.files_verified << " entries compared in "
            << static_cast<double>(r.wall_ms) / 1000.0 << " s ("
            << HumanBytes(static_cast<uint64_t>(r.ThroughputBps())) << "/s)\n";
}

int RunDrillCmd(const Context& ctx, const DrillFlags& flags) {
  if (flags.background) LowerThreadPriority(19);  // before any thread starts: they inherit it
  std::vector<conf::ConfigProblem> problems;
  Result<conf::Config> config = conf::LoadConfig(ctx.ConfigPath(), &problems);
  if (!config.ok()) {
    for (const auto& p : problems) std::cerr << p.ToString() << "\n";
    return kExitConfig;
  }
  std::vector<std::string> peers;
  for (const auto& p : config->peers) {
    if (flags.peer.empty() || p.name == flags.peer) peers.push_back(p.name);
  }
  if (peers.empty()) {
    std::cerr << "lifeboat drill: " << (flags.peer.empty() ? "no peers configured"
                                                           : "'" + flags.peer + "' is not a configured peer")
              << "\n";
    return kExitUsage;
  }
  auto store = agent::OpenCatalogReadOnly(*config);
  if (!store.ok()) {
    std::cerr << "lifeboat drill: opening the catalog: " << store.status().message() << "\n";
    return store.status().ExitCode();
  }
  int exit_code = kExitOk;
  nlohmann::json out = nlohmann::json::array();
  for (const std::string& peer : peers) {
    restore::DrillOptions o;
    o.peer = peer;
    o.scratch_dir = flags.dir.empty() ? config->drill.dir : flags.dir;
    o.max_bytes = config->drill.max_bytes;
    o.node_name = config->node.name;
    o.set_owners = ::geteuid() == 0;
    auto rec = restore::RunDrill(*Env::Default(), *Clock::Real(), **store, config->agent.data_dir, o);
    if (!rec.ok()) {
      if (exit_code == kExitOk) exit_code = rec.status().ExitCode();
      const bool ran = rec.status().code() != Code::kTemporary;
      nlohmann::json j = {{"peer", peer}, {"ok", false}, {"ran", ran},
                          {"error", rec.status().message()}};
      if (ctx.json) {
        out.push_back(std::move(j));
      } else {
        std::cout << peer << (ran ? ": FAILED: " : ": not run now: ") << rec.status().message()
                  << "\n";
      }
      continue;
    }
    if (ctx.json) {
      nlohmann::json j = rec->ToApiJson();
      j["ran"] = true;
      out.push_back(std::move(j));
    } else {
      PrintRecord(*rec);
    }
  }
  if (ctx.json) {
    std::cout << DumpJson(nlohmann::json{{"ok", exit_code == kExitOk}, {"drills", out}}) << "\n";
  }
  return exit_code;
}

const CommandRegistrar kRegistrar(/*order=*/55, [](CLI::App& root, Context& ctx) {
  static DrillFlags flags;
  CLI::App* sub = root.add_subcommand(
      "drill",
      "Restore a peer's instances into a scratch directory, compare every byte with the "
      "catalog, measure the time, clean up and record the result");
  sub->add_option("--peer", flags.peer, "drill this peer only (default: every peer in turn)");
  sub->add_option("--dir", flags.dir, "scratch directory (default: [drill] dir)");
  sub->add_flag("--background", flags.background,
                "run at the lowest CPU priority and in the idle I/O class (the agent's "
                "scheduled drills)");
  sub->footer(
      "Examples:\n"
      "  lifeboat drill --peer headnode1\n"
      "  lifeboat drill -j\n"
      "Exit codes: 0 passed; 64 usage; 65 a restored file differed, damage, or nothing to\n"
      "  restore; 74 I/O; 75 not now (no room, another drill running); 78 config");
  sub->callback([&ctx] { ctx.Run([&ctx] { return RunDrillCmd(ctx, flags); }); });
});

}  // namespace
}  // namespace lifeboat::cli
