// `lifeboat readiness [--peer P] [--local] [--check] [-H] [-o cols] [-j]`:
// per peer, "if it died now": instances restorable N/N, image chains and
// SAPI records held, the freshest copy in the cluster and its age (RPO),
// data size, the estimated RTO, the last drill, and what blocks a restore.
// Reads the catalog's indexes (never re-hashes) and asks the other nodes
// which generation they hold (not with --local).
//
// Exit codes: 0 (also with blockers, unless --check); 1 with --check when a
// peer has a blocker (one line per blocker on stderr); 64 usage; 78 config;
// 74 the catalog cannot be read.
#include <iostream>

#include "agent/config_options.h"
#include "base/clock.h"
#include "base/text.h"
#include "base/text.h"
#include "base/units.h"
#include "catalog/store.h"
#include "cli/cluster_client.h"
#include "cli/command.h"
#include "cli/readiness_source.h"
#include "cli/table.h"
#include "conf/config.h"

namespace lifeboat::cli {
namespace {

struct ReadinessFlags {
  std::string peer;
  bool local = false;
  bool check = false;
  bool no_header = false;
  std::string columns;
};

const std::vector<std::string> kColumns = {"peer", "ready",    "instances", "images", "sapi",
                                           "freshest", "rpo",  "size",      "rto",    "drill",
                                           "blockers"};

std::string Cell(const restore::PeerReadiness& p, const std::string& col, int64_t now_ms) {
  auto ratio = [&](uint64_t n) { return std::to_string(n) + "/" + std::to_string(p.instances); };
  if (col == "peer") return p.peer;
  if (col == "ready") return p.ready() ? "yes" : "NO";
  if (col == "instances") return ratio(p.restorable);
  if (col == "images") return ratio(p.images_complete);
  if (col == "sapi") return ratio(p.sapi_records);
  if (col == "freshest") {
    return p.freshest_node.empty() ? "-"
                                   : p.freshest_node + "@" + std::to_string(p.freshest_generation);
  }
  if (col == "rpo") return p.rpo_ms ? HumanAge(*p.rpo_ms / 1000) : "-";
  if (col == "size") return HumanBytes(p.data_bytes);
  if (col == "rto") {
    return HumanAge(p.rto_ms / 1000) + (p.rto_basis == "drill" ? "" : " (est)");
  }
  if (col == "drill") {
    if (!p.last_drill) return "never";
    return std::string(p.last_drill->ok ? "ok " : "FAILED ") +
           HumanAge((now_ms - p.last_drill->started_ms) / 1000) + " ago";
  }
  if (col == "blockers") {
    std::string kinds;
    for (const auto& b : p.blockers) {
      if (kinds.find(b.kind) == std::string::npos) kinds += (kinds.empty() ? "" : ",") + b.kind;
    }
    return kinds.empty() ? "-" : kinds;
  }
  return "?";
}

void PrintText(const restore::ReadinessReport& r, const std::vector<std::string>& cols,
               bool no_header) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& p : r.peers) {
    std::vector<std::string> row;
    for (const auto& c : cols) row.push_back(Cell(p, c, r.now_ms));
    rows.push_back(std::move(row));
  }
  PrintTable(cols, rows, no_header);
  if (no_header) return;  // -H: the rows and nothing else
  for (const auto& p : r.peers) {
    for (const auto& b : p.blockers) {
      std::cout << p.peer << ": " << b.kind << ": " << EscapeForTerminal(b.message) << "\n";
    }
    for (const auto& n : p.notes) std::cout << p.peer << ": note: " << EscapeForTerminal(n) << "\n";
  }
  if (r.verify) {
    std::cout << "last verify: " << (r.verify->ok ? "ok" : "FAILED") << ", "
              << HumanAge((r.now_ms - r.verify->finished_ms) / 1000) << " ago\n";
  } else {
    std::cout << "last verify: never (lifeboat catalog verify)\n";
  }
  for (const auto& e : r.read_errors) std::cout << "could not read: " << e << "\n";
}

int RunReadiness(const Context& ctx, const ReadinessFlags& flags) {
  std::vector<std::string> cols = kColumns;
  if (!flags.columns.empty() && !ParseColumns("readiness", flags.columns, kColumns, &cols)) {
    return kExitUsage;
  }
  std::vector<conf::ConfigProblem> problems;
  Result<conf::Config> config = conf::LoadConfig(ctx.ConfigPath(), &problems);
  if (!config.ok()) {
    for (const auto& p : problems) std::cerr << p.ToString() << "\n";
    return kExitConfig;
  }
  if (!flags.peer.empty() &&
      std::none_of(config->peers.begin(), config->peers.end(),
                   [&](const conf::PeerConfig& p) { return p.name == flags.peer; })) {
    std::cerr << "lifeboat readiness: '" << flags.peer << "' is not a configured peer\n";
    return kExitUsage;
  }
  auto store = agent::OpenCatalogReadOnly(*config);
  if (!store.ok()) {
    std::cerr << "lifeboat readiness: opening the catalog: " << store.status().message() << "\n";
    return store.status().ExitCode();
  }
  std::unique_ptr<ClusterClient> client;
  if (!flags.local) {
    auto c = ClusterClient::Create(*config);
    if (!c.ok()) {
      std::cerr << "lifeboat readiness: " << c.status().message() << "\n";
      return c.status().ExitCode();
    }
    client = std::move(*c);
  }
  auto report = AssessConfiguredReadiness(*config, **store, *Env::Default(),
                                          Clock::Real()->WallMs(), client.get());
  if (!report.ok()) {
    std::cerr << "lifeboat readiness: " << report.status().message() << "\n";
    return report.status().ExitCode();
  }
  if (!flags.peer.empty()) {
    std::erase_if(report->peers, [&](const auto& p) { return p.peer != flags.peer; });
  }
  if (ctx.json) {
    std::cout << DumpJson(report->ToJson()) << "\n";
  } else {
    PrintText(*report, cols, flags.no_header);
  }
  if (!flags.check || report->ready()) return kExitOk;
  for (const auto& p : report->peers) {
    for (const auto& b : p.blockers) {
      std::cerr << "lifeboat readiness: " << p.peer << ": " << b.kind << ": "
                << EscapeForTerminal(b.message) << "\n";
    }
  }
  return 1;
}

const CommandRegistrar kRegistrar(/*order=*/35, [](CLI::App& root, Context& ctx) {
  static ReadinessFlags flags;
  CLI::App* sub = root.add_subcommand(
      "readiness",
      "If a peer died now: could it be rebuilt from here, how old is the data (RPO), how long "
      "would it take (RTO), what blocks it");
  sub->add_option("--peer", flags.peer, "only this peer");
  sub->add_flag("--local", flags.local,
                "do not ask the other nodes which copy they hold (the freshest copy is then "
                "this node's)");
  sub->add_flag("--check", flags.check,
                "exit 1 when any peer has a blocker, one line per blocker on stderr");
  sub->add_flag("-H,--no-header", flags.no_header,
                "scripted output: tab-separated rows, no header, nothing else");
  sub->add_option("-o,--output", flags.columns,
                  "comma-separated columns: peer,ready,instances,images,sapi,freshest,rpo,size,"
                  "rto,drill,blockers");
  sub->footer(
      "Examples:\n"
      "  lifeboat readiness\n"
      "  lifeboat readiness --peer headnode1 -j\n"
      "  lifeboat readiness --check -H -o peer,ready,rpo,rto   # for monitoring\n"
      "Exit codes: 0 ok; 1 a blocker (--check); 64 usage; 74 catalog unreadable; 78 config");
  sub->callback([&ctx] { ctx.Run([&ctx] { return RunReadiness(ctx, flags); }); });
});

}  // namespace
}  // namespace lifeboat::cli
