// `lifeboat retire [--dry-run] [-y] [--backend smartos|dir|exec] [--record-only] [-j]`
//
// On a node that came back after its instances were restored elsewhere (RFD
// 67 M3): asks the other nodes (GET /restores) which of this node's
// instances they restored, lists them, asks on a terminal (-y: no question),
// then for each one stops its zone and turns autoboot off (smartos: vmadm),
// and records it under <data_dir>/retired.json: a rerun retires nothing
// twice, and the agent stops exporting it, so the other nodes stop flagging
// it deposed after their next pull. The dir and exec backends have no zones
// to stop: --record-only records instances the operator stopped by hand.
//
// Exit codes: 0 done, nothing to do, or listed (--dry-run); 64 usage;
// 69 a node did not answer (what it restored is unknown; what the others
// restored was retired); 74 a zone could not be stopped or the record not
// written; 75 not confirmed; 78 bad config (also: no [[peer]] api to ask),
// or a backend that cannot stop zones without --record-only. With -j an
// error before anything was retired is {"ok": false, "error": {code, message}}.
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/env.h"
#include "base/text.h"
#include "cli/cluster_restores.h"
#include "cli/command.h"
#include "cli/prompt.h"
#include "conf/config.h"
#include "exports/retired.h"
#include "restore/plan.h"
#include "restore/retire.h"

namespace lifeboat::cli {
namespace {

using nlohmann::json;

struct RetireFlags {
  bool dry_run = false;
  bool yes = false;
  bool record_only = false;
  std::string backend;
};

struct Retired {
  restore::RestoredInstance instance;
  restore::RetireOutcome outcome;
};

struct Failed {
  restore::RestoredInstance instance;
  Status error;
};

// The backend whose zones this node's instances are: --backend, else
// smartos when the export provider is (its instances are vmadm zones), else
// [restore] backend.
std::string BackendName(const conf::Config& config, const RetireFlags& flags) {
  if (!flags.backend.empty()) return flags.backend;
  if (config.export_.provider == conf::ExportProvider::kSmartos) return "smartos";
  return std::string(conf::RestoreBackendName(config.restore.backend));
}

// The retirer of BackendName(); nullptr with --record-only.
Result<std::unique_ptr<restore::ZoneRetirer>> MakeRetirer(const conf::Config& config,
                                                          const RetireFlags& flags) {
  const std::string name = BackendName(config, flags);
  if (name != "dir" && name != "smartos" && name != "exec") {
    return UsageError("--backend must be dir, smartos or exec, got '" + name + "'");
  }
  if (flags.record_only) return std::unique_ptr<restore::ZoneRetirer>();
  if (name == "smartos") return restore::NewVmadmRetirer();
  return ConfigError("retire: the " + name +
                     " backend cannot stop zones; stop each instance listed above by hand "
                     "(keep it from booting again), then run `lifeboat retire --record-only`");
}

json InstanceJson(const restore::RestoredInstance& r) {
  return {{"old_uuid", r.old_uuid},
          {"old_alias", r.old_alias},
          {"service", r.service},
          {"node", r.node},
          {"new_uuid", r.new_uuid},
          {"alias", r.alias},
          {"backend", r.backend},
          {"target", r.target},
          {"restored_at", restore::IsoOrNull(r.restored_ms)}};
}

json ListJson(const std::vector<restore::RestoredInstance>& list) {
  json out = json::array();
  for (const auto& r : list) out.push_back(InstanceJson(r));
  return out;
}

std::string Line(const restore::RestoredInstance& r) {
  return EscapeForTerminal(r.old_alias) + " (" + r.old_uuid + "): restored on " +
         EscapeForTerminal(r.node) + " as " + EscapeForTerminal(r.alias) + " (" + r.new_uuid +
         ") by the " + EscapeForTerminal(r.backend) + " backend into " +
         EscapeForTerminal(r.target);
}

void PrintSelection(const restore::RetireSelection& sel, const std::vector<std::string>& errors) {
  for (const std::string& e : errors) std::cerr << "lifeboat retire: " << e << "\n";
  for (const auto& r : sel.already_retired) std::cout << "already retired: " << Line(r) << "\n";
  if (sel.to_retire.empty()) {
    std::cout << "Nothing to retire: no instance of this node was restored elsewhere"
              << (sel.already_retired.empty() ? "" : " that is not retired already") << ".\n";
    return;
  }
  std::cout << "Restored elsewhere (deposed here):\n";
  for (const auto& r : sel.to_retire) std::cout << "  " << Line(r) << "\n";
}

bool Confirmed(const Context& ctx, const RetireFlags& flags, size_t n) {
  if (flags.yes || ctx.json || !::isatty(0) || !::isatty(2)) return true;
  return AskOnTty("Stop these " + std::to_string(n) +
                  " instance(s) here and keep them from booting?");
}

// Stops (unless record-only) and records one instance.
Result<restore::RetireOutcome> RetireOne(const conf::Config& config, restore::ZoneRetirer* retirer,
                                         const restore::RestoredInstance& r, int64_t now_ms) {
  restore::RetireOutcome outcome;
  outcome.how = "recorded only (stopped by the operator)";
  if (retirer != nullptr) {
    auto done = retirer->Retire(r.old_uuid);
    if (!done.ok())
      return done.status().WithContext("retire " + r.old_alias + " (" + r.old_uuid + ")");
    outcome = *done;
  }
  Status st = exports::RecordRetired(*Env::Default(), config.agent.data_dir,
                                     restore::RetiredRecord(r, now_ms, outcome.how));
  if (!st.ok()) return st.WithContext("record " + r.old_alias + " as retired");
  return outcome;
}

void PrintRetired(const Retired& d) {
  const restore::RetireOutcome& o = d.outcome;
  std::cout << "retired " << EscapeForTerminal(d.instance.old_alias) << " (" << d.instance.old_uuid
            << "): "
            << (o.missing       ? "no such zone here"
                : o.was_running ? "stopped"
                                : "was not running")
            << "; " << o.how << "\n";
}

int Finish(const Context& ctx, json out, const std::vector<Retired>& done,
           const std::vector<Failed>& failed, const ClusterRestores& cluster) {
  int code = !failed.empty() ? kExitIo : !cluster.errors.empty() ? kExitUnavailable : kExitOk;
  if (ctx.json) {
    json r = json::array(), f = json::array();
    for (const Retired& d : done) {
      json j = InstanceJson(d.instance);
      j["was_running"] = d.outcome.was_running;
      j["missing"] = d.outcome.missing;
      j["how"] = d.outcome.how;
      r.push_back(std::move(j));
    }
    for (const Failed& e : failed) {
      json j = InstanceJson(e.instance);
      j["error"] = {{"code", CodeName(e.error.code())}, {"message", e.error.message()}};
      f.push_back(std::move(j));
    }
    out["retired"] = std::move(r);
    out["failed"] = std::move(f);
    out["ok"] = code == kExitOk;
    std::cout << DumpJson(out) << "\n";
    return code;
  }
  for (const Retired& d : done) PrintRetired(d);
  for (const Failed& e : failed) std::cerr << "lifeboat retire: " << e.error.message() << "\n";
  if (!cluster.errors.empty()) {
    std::cerr << "lifeboat retire: " << cluster.errors.size()
              << " node(s) did not answer: what they restored of this node is unknown; rerun "
                 "when they are up\n";
  }
  return code;
}

// Whether any peer has an api to ask (GET /restores); without one, retire
// cannot know what was restored elsewhere.
bool AnyPeerApi(const conf::Config& config) {
  return std::any_of(config.peers.begin(), config.peers.end(),
                     [](const conf::PeerConfig& p) { return p.api.port != 0; });
}

// An error before anything was retired: on stderr, and with -j as the document.
int Refuse(const Context& ctx, const Status& st) {
  if (ctx.json) {
    std::cout << DumpJson(
                     json{{"ok", false},
                          {"error", {{"code", CodeName(st.code())}, {"message", st.message()}}}})
              << "\n";
  }
  std::cerr << "lifeboat retire: " << st.message() << "\n";
  return st.ExitCode();
}

int RunRetire(const Context& ctx, const RetireFlags& flags) {
  std::vector<conf::ConfigProblem> problems;
  Result<conf::Config> config = conf::LoadConfig(ctx.ConfigPath(), &problems);
  if (!config.ok()) {
    for (const auto& p : problems) std::cerr << p.ToString() << "\n";
    if (problems.empty()) std::cerr << "lifeboat retire: " << config.status().ToString() << "\n";
    return kExitConfig;
  }
  auto retirer = MakeRetirer(*config, flags);
  if (!retirer.ok() && retirer.status().code() == Code::kUsage)
    return Refuse(ctx, retirer.status());
  if (!AnyPeerApi(*config)) {
    return Refuse(ctx, ConfigError("no [[peer]] has an api: retire cannot ask the other nodes "
                                   "what they restored of this one (" +
                                   config->source_path + ")"));
  }
  auto retired = exports::LoadRetired(*Env::Default(), config->agent.data_dir);
  if (!retired.ok()) return Refuse(ctx, retired.status());
  ClusterRestores cluster = AskClusterRestores(*config);
  restore::RetireSelection sel =
      restore::SelectRetirements(config->node.name, cluster.restored, *retired);
  json out = {{"node", config->node.name},
              {"dry_run", flags.dry_run},
              {"to_retire", ListJson(sel.to_retire)},
              {"already_retired", ListJson(sel.already_retired)},
              {"unreachable", cluster.errors}};
  if (!ctx.json) PrintSelection(sel, cluster.errors);
  std::vector<Retired> done;
  std::vector<Failed> failed;
  if (flags.dry_run || sel.to_retire.empty()) return Finish(ctx, out, done, failed, cluster);
  if (!retirer.ok()) return Refuse(ctx, retirer.status());
  if (!Confirmed(ctx, flags, sel.to_retire.size())) {
    std::cerr << "lifeboat retire: not confirmed; nothing was changed\n";
    return kExitTemporary;
  }
  const int64_t now_ms = Clock::Real()->WallMs();
  for (const restore::RestoredInstance& r : sel.to_retire) {
    auto outcome = RetireOne(*config, retirer->get(), r, now_ms);
    if (outcome.ok()) {
      done.push_back(Retired{r, *outcome});
    } else {
      failed.push_back(Failed{r, outcome.status()});
    }
  }
  return Finish(ctx, out, done, failed, cluster);
}

const CommandRegistrar kRegistrar(/*order=*/52, [](CLI::App& root, Context& ctx) {
  static RetireFlags flags;
  CLI::App* sub = root.add_subcommand(
      "retire",
      "On a node that came back: stop its instances that were restored on other nodes "
      "(deposed) and keep them from booting");
  sub->add_flag("--dry-run", flags.dry_run, "list what would be retired and change nothing");
  sub->add_flag("-y,--yes", flags.yes, "do not ask for confirmation on a terminal");
  sub->add_option("--backend", flags.backend,
                  "smartos (vmadm stop, autoboot=false) | dir | exec (default: smartos with "
                  "export.provider smartos, else [restore] backend; dir and exec need "
                  "--record-only)");
  sub->add_flag("--record-only", flags.record_only,
                "stop nothing: record the instances as retired (they were stopped by hand) so "
                "this node stops exporting them");
  sub->footer(
      "Examples:\n"
      "  lifeboat retire --dry-run\n"
      "  lifeboat retire -y -j\n"
      "Exit codes: 0 done, nothing to do, or listed (--dry-run); 64 usage; 69 a node did not\n"
      "  answer (rerun when it is up); 74 a zone could not be stopped or recorded;\n"
      "  75 not confirmed; 78 config (no [[peer]] api to ask), or a backend that cannot\n"
      "  stop zones (--record-only)");
  sub->callback([&ctx] { ctx.Run([&ctx] { return RunRetire(ctx, flags); }); });
});

}  // namespace
}  // namespace lifeboat::cli
