// `lifeboat restore`: rebuild a lost headnode's instances from the catalog.
//
//   lifeboat restore (--peer P | --service S... | --instance UUID...)
//       [--dry-run] [--backend dir|smartos|exec] [--target DIR]
//       [--reuse-ips|--new-ips] [--generation N | --at TIME] [--force] [--from-freshest] [--again]
//       [--keep-old-records] [-y] [-j]
//
// On a terminal, a new restore shows its plan and asks before the first step
// (-y: no question). A --dry-run runs the same guards and exits as the real
// run would (75 for a live peer without --force, 78 for an exec backend
// without a command for a step), after printing the plan.
//
// Exit codes: 0 done (or planned, with --dry-run); 64 usage; 65 bad data
// (verification failed, unknown instance, corrupt journal); 69 a needed
// command or node unavailable; 74 I/O; 75 refused for now (peer alive
// without --force, an HA service down here without --force, stale data
// without -y, another restore running);
// 78 bad config.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/config_options.h"
#include "base/clock.h"
#include "base/env.h"
#include "base/log.h"
#include "base/text.h"
#include "base/units.h"
#include "catalog/store.h"
#include "cli/cluster_restores.h"
#include "cli/cluster_client.h"
#include "cli/command.h"
#include "cli/prompt.h"
#include "conf/config.h"
#include "restore/backend.h"
#include "restore/cluster_probe.h"
#include "restore/restorer.h"

namespace lifeboat::cli {
namespace {

// --at: an ISO 8601 UTC time, or a duration meaning that long before `now_ms`.
std::optional<int64_t> AtTime(const std::string& text, int64_t now_ms) {
  if (auto t = ParseIso8601Ms(text)) return t;
  auto ago = conf::ParseDuration(text);
  if (!ago.ok()) return std::nullopt;
  return now_ms - ago->count();
}

using restore::NodeAddress;

struct RestoreFlags {
  std::string peer;
  std::vector<std::string> services;
  std::vector<std::string> instances;
  bool dry_run = false;
  std::string backend;
  std::string target;
  bool reuse_ips = false;
  bool new_ips = false;
  std::optional<uint64_t> generation;
  std::string at;  // --at: ISO 8601 UTC time, or how long ago ("2h")
  bool force = false;
  bool from_freshest = false;
  bool yes = false;
  bool again = false;
  bool keep_old_records = false;
};

std::string Seconds(int64_t ms) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f s", static_cast<double>(ms) / 1000.0);
  return buf;
}

// What becomes of the lost instances' VMAPI, SAPI and NAPI records.
void PrintOldRecords(const restore::Plan& plan) {
  if (plan.instances.empty()) return;
  if (plan.retire_old_records) {
    std::cout << "Old records: retired last (retire_old_records; --keep-old-records leaves "
                 "them)\n";
  } else {
    std::cout << "Old records: kept (--keep-old-records, or planned before Lifeboat retired "
                 "them); clean them up by hand, docs/operator-guide.md section 6\n";
  }
}

void PrintPlan(const restore::RestoreReport& r, const std::string& backend_desc) {
  const restore::Plan& plan = r.plan;
  std::cout << "Restore plan -> " << backend_desc << " (journal " << r.journal_id << ")\n";
  if (r.already_complete) std::cout << "  This restore already finished; nothing to do.\n";
  if (r.resumed) std::cout << "  Resuming an unfinished restore.\n";
  std::printf("  %-12s %-12s %-12s %-36s %6s %10s\n", "SERVICE", "OLD ALIAS", "NEW ALIAS",
              "NEW UUID", "GEN", "DATA");
  for (const auto& p : plan.instances) {
    std::printf("  %-12s %-12s %-12s %-36s %6llu %10s\n", p.service.c_str(), p.old_alias.c_str(),
                p.alias.c_str(), p.new_uuid.c_str(), static_cast<unsigned long long>(p.generation),
                HumanBytes(p.data_bytes).c_str());
  }
  std::cout << "Steps (" << plan.steps.size() << ", " << HumanBytes(plan.TotalBytes()) << "):\n";
  for (size_t i = 0; i < plan.steps.size(); ++i) {
    const restore::Step& s = plan.steps[i];
    std::printf("  %3zu %-16s ", i + 1, std::string(restore::StepKindName(s.kind)).c_str());
    if (s.kind == restore::StepKind::kInstallImage) {
      std::printf("image %s%s%s\n", s.image_uuid.c_str(), s.image_origin.empty() ? "" : " (origin ",
                  s.image_origin.empty() ? "" : (s.image_origin + ")").c_str());
    } else {
      std::printf("%s %s\n", s.alias.c_str(), s.new_uuid.c_str());
    }
  }
  PrintOldRecords(plan);
  if (!plan.skipped.empty()) {
    std::cout << "Not restorable:\n";
    for (const auto& s : plan.skipped) {
      std::cout << "  " << s.alias << " (" << s.uuid << "): " << s.reason << "\n";
    }
  }
}

void PrintWarnings(const restore::RestoreReport& r) {
  for (const std::string& w : r.warnings) std::cerr << "warning: " << w << "\n";
}

void PrintSummary(const restore::RestoreReport& r, const std::string& backend_desc) {
  double secs = static_cast<double>(r.wall_ms) / 1000.0;
  std::cout << "Restored " << r.plan.instances.size() << " instance(s) into " << backend_desc
            << " in " << Seconds(r.wall_ms) << ": " << HumanBytes(r.bytes_restored);
  if (secs > 0) {
    std::cout << ", "
              << HumanBytes(static_cast<uint64_t>(static_cast<double>(r.bytes_restored) / secs))
              << "/s";
  }
  std::cout << "\n  steps run " << r.steps_run << ", already done before " << r.steps_skipped_done
            << "; verified " << r.files_verified << " files (" << HumanBytes(r.bytes_verified)
            << ") in " << Seconds(r.verify_ms) << "\n";
  for (const auto& p : r.plan.instances) {
    std::cout << "  " << p.old_alias << " (" << p.old_uuid << ") -> " << p.alias << " ("
              << p.new_uuid << ")\n";
  }
  for (const auto& s : r.plan.skipped) {
    std::cout << "  skipped " << s.alias << " (" << s.uuid << "): " << s.reason << "\n";
  }
  for (const auto& n : r.notes) std::cout << "  note: " << n << "\n";
  if (!r.plan.retire_old_records && !r.plan.instances.empty()) {
    std::cout << "  old records kept: clean them up by hand (docs/operator-guide.md section 6)\n";
  }
  if (!r.not_restorable_services.empty()) {
    std::cout << "  services not restorable:";
    for (const auto& s : r.not_restorable_services) std::cout << " " << s;
    std::cout << "\n";
  }
  std::cout << "  journal: " << r.journal_path << "\n";
}

Result<std::unique_ptr<restore::Backend>> MakeBackend(const conf::Config& config,
                                                      const RestoreFlags& flags, Env& env,
                                                      std::string* desc) {
  std::string name = flags.backend.empty()
                         ? std::string(conf::RestoreBackendName(config.restore.backend))
                         : flags.backend;
  if (name == "dir") {
    std::string target = flags.target.empty() ? config.restore.target : flags.target;
    if (target.empty() || target.front() != '/') {
      return UsageError("--target must be an absolute directory, got '" + target + "'");
    }
    RETURN_IF_ERROR(
        restore::CheckOutsideCatalog(target, config.agent.data_dir, "the restore target"));
    *desc = "dir " + target;
    // Owners need root; a restore run by another user leaves its own.
    const bool root = ::geteuid() == 0;
    if (!root) {
      log::Warn(
          "restore: not running as root; restored files will belong to this user, not to "
          "their exported owners");
    }
    return restore::NewDirBackend(env, restore::DirBackendOptions{target, 4, root});
  }
  if (!flags.target.empty()) return UsageError("--target is only for --backend dir");
  if (name == "smartos") {
    // vmadm creates a NIC with the address its payload names; only NAPI
    // allocates one from a network_uuid. Without NAPI allocation here,
    // --new-ips would create NICs without addresses: refused (issue 15).
    if (flags.new_ips) {
      return UsageError(
          "--new-ips is not supported by the smartos backend: vmadm cannot allocate an address "
          "from a network (that is NAPI's job) and lifeboat does not call NAPI; restore with the "
          "old addresses (the default) and renumber through NAPI afterwards");
    }
    restore::SmartosBackendOptions o;
    o.work_dir = JoinPath(restore::RestoresDir(config.agent.data_dir), "work");
    o.await_wait_ms = config.restore.await_timeout.count();
    o.server_uuid = config.node.uuid;
    *desc = "smartos (zpool " + o.zpool + ")";
    return restore::NewSmartosBackend(env, o);
  }
  if (name == "exec") {
    restore::ExecBackendOptions o;
    const auto& e = config.restore.exec;
    for (const auto& [kind, argv] :
         {std::pair{"install_image", e.install_image},
          std::pair{"create_instance", e.create_instance},
          std::pair{"restore_data", e.restore_data}, std::pair{"await_instance", e.await_instance},
          std::pair{"adopt_instance", e.adopt_instance},
          std::pair{"register_sapi", e.register_sapi},
          std::pair{"retire_old_records", e.retire_old_records}}) {
      if (!argv.empty()) o.commands[kind] = argv;
    }
    o.target = "exec:" + config.source_path;
    *desc = "exec hooks of " + config.source_path;
    return restore::NewExecBackend(o);
  }
  return UsageError("--backend must be dir, smartos or exec, got '" + name + "'");
}

int Fail(const Status& st, const Context& ctx, const restore::RestoreReport* report) {
  if (ctx.json) {
    nlohmann::json out = report ? report->ToJson() : nlohmann::json::object();
    out["ok"] = false;
    out["error"] = {{"code", CodeName(st.code())}, {"message", st.message()}};
    std::cout << DumpJson(out) << "\n";
  } else {
    std::cerr << "lifeboat restore: " << st.message() << "\n";
  }
  return st.ExitCode();
}

int RunRestore(const Context& ctx, const RestoreFlags& flags) {
  int selections = !flags.peer.empty() + !flags.services.empty() + !flags.instances.empty();
  if (selections != 1) {
    return Fail(UsageError("select exactly one of --peer P, --service S... or --instance UUID..."),
                ctx, nullptr);
  }
  if (flags.reuse_ips && flags.new_ips) {
    return Fail(UsageError("--reuse-ips and --new-ips exclude each other"), ctx, nullptr);
  }
  std::vector<conf::ConfigProblem> problems;
  auto config = conf::LoadConfig(ctx.ConfigPath(), &problems);
  if (!config.ok()) return Fail(config.status(), ctx, nullptr);

  Env& env = *Env::Default();
  Clock& clock = *Clock::Real();
  const catalog::StoreOptions store_opts = agent::StoreOptionsFor(*config, /*read_only=*/true);
  auto store = catalog::Store::Open(env, clock, store_opts);
  if (!store.ok()) return Fail(store.status().WithContext("opening the catalog"), ctx, nullptr);

  std::string backend_desc;
  auto backend = MakeBackend(*config, flags, env, &backend_desc);
  if (!backend.ok()) return Fail(backend.status(), ctx, nullptr);

  auto cluster = ClusterClient::Create(*config);
  if (!cluster.ok()) return Fail(cluster.status(), ctx, nullptr);
  std::unique_ptr<restore::ClusterProbe> probe = (*cluster)->NewProbe();
  restore::RestoreContext rctx;
  rctx.env = &env;
  rctx.clock = &clock;
  rctx.store = store->get();
  rctx.backend = backend->get();
  rctx.probe = probe.get();
  std::unique_ptr<catalog::Store> reopened;  // after --from-freshest pulled into the catalog
  rctx.reopen_store = [&]() -> Result<catalog::Store*> {
    auto s = catalog::Store::Open(env, clock, store_opts);
    if (!s.ok()) return s.status().WithContext("reopening the catalog");
    reopened = std::move(*s);
    return reopened.get();
  };
  rctx.data_dir = config->agent.data_dir;
  rctx.node_name = config->node.name;
  rctx.node_uuid = config->node.uuid;
  rctx.stale_after_ms = config->agent.stale_after.count();
  if (!flags.again) {  // what the other nodes' restores rebuilt is skipped
    ClusterRestores elsewhere = AskClusterRestores(*config);
    rctx.restored_elsewhere = std::move(elsewhere.restored);
    rctx.unasked_nodes = std::move(elsewhere.unanswered);
  }
  for (const auto& p : config->peers) {
    rctx.peers.push_back(NodeAddress{p.name, p.address.host, p.address.port});
  }
  rctx.confirm = AskOnTty;
  if (!ctx.json && ::isatty(0) && ::isatty(2)) {
    rctx.confirm_plan = [&backend_desc](const restore::RestoreReport& planned) {
      PrintPlan(planned, backend_desc);
      PrintWarnings(planned);
      return AskOnTty("Restore " + std::to_string(planned.plan.instances.size()) +
                      " instance(s) as planned above?");
    };
  }
  const bool tty = ::isatty(2) != 0;
  if (tty && !ctx.json && !flags.dry_run) {
    rctx.progress = [](const restore::RestoreContext::Progress& p) {
      if (!p.finished) {
        std::cerr << "[" << (p.index + 1) << "/" << p.total << "] "
                  << restore::StepKindName(p.step->kind) << " "
                  << (p.step->kind == restore::StepKind::kInstallImage ? p.step->image_uuid
                                                                       : p.step->alias)
                  << " ..." << std::endl;
      } else if (p.already_done) {
        std::cerr << "[" << (p.index + 1) << "/" << p.total << "] " << p.step->id
                  << ": already done" << std::endl;
      }
    };
  }

  restore::RestoreRequest req;
  req.selection.peer = flags.peer;
  req.selection.services = flags.services;
  req.selection.instances = flags.instances;
  req.selection.generation = flags.generation;
  if (!flags.at.empty()) {
    std::optional<int64_t> at = AtTime(flags.at, clock.WallMs());
    if (!at) {
      std::cerr << "lifeboat restore: --at wants a UTC time (2026-12-05T10:00:00Z) or how long "
                   "ago (90m, 2h, 3d), got '"
                << flags.at << "'\n";
      return 64;
    }
    req.selection.at_ms = *at;
  }
  req.dry_run = flags.dry_run;
  req.force = flags.force;
  req.assume_yes = flags.yes;
  req.from_freshest = flags.from_freshest;
  req.new_ips = flags.new_ips;
  req.again = flags.again;
  req.keep_old_records = flags.keep_old_records;
  req.service_order = config->restore.order;

  restore::Restorer restorer(rctx);
  restore::RestoreReport report;
  Status st = restorer.Run(req, &report);
  if (!ctx.json) PrintWarnings(report);
  // A dry run shows its plan also when it ends with the real run's refusal.
  if (!st.ok() && flags.dry_run && !ctx.json && !report.plan.instances.empty()) {
    PrintPlan(report, backend_desc);
  }
  if (!st.ok()) {
    if (!ctx.json && report.steps_run > 0) {
      std::cerr << "lifeboat restore: stopped after " << report.steps_run
                << " step(s); rerun the same command to resume (journal " << report.journal_path
                << ")\n";
    }
    return Fail(st, ctx, &report);
  }
  if (ctx.json) {
    nlohmann::json out = report.ToJson();
    out["ok"] = true;
    out["dry_run"] = flags.dry_run;
    out["backend"] = backend_desc;
    std::cout << DumpJson(out) << "\n";
  } else if (flags.dry_run || report.already_complete) {
    PrintPlan(report, backend_desc);
  } else {
    PrintSummary(report, backend_desc);
  }
  return kExitOk;
}

const CommandRegistrar kRegistrar(/*order=*/50, [](CLI::App& root, Context& ctx) {
  static RestoreFlags flags;
  CLI::App* sub = root.add_subcommand(
      "restore",
      "Rebuild a lost headnode's instances from the catalog (see docs/operator-guide.md)");
  sub->add_option("--peer", flags.peer, "restore every instance held from this peer");
  sub->add_option("--service", flags.services, "restore the instances of these services");
  sub->add_option("--instance", flags.instances, "restore these instances (uuids)");
  sub->add_flag("--dry-run", flags.dry_run, "print the plan and change nothing");
  sub->add_option("--backend", flags.backend, "dir | smartos | exec (default: [restore] backend)");
  sub->add_option("--target", flags.target, "target directory of the dir backend");
  sub->add_flag("--reuse-ips", flags.reuse_ips, "keep the NIC addresses (default)");
  sub->add_flag("--new-ips", flags.new_ips, "drop the NIC addresses: fresh IPs, same networks");
  sub->add_option("--generation", flags.generation,
                  "restore this retained catalog generation (the seq of `lifeboat catalog show "
                  "UUID`) instead of the current one")
      ->check([](const std::string& v) -> std::string {
        bool digits = !v.empty() && v.find_first_not_of("0123456789") == std::string::npos;
        return digits ? ""
                      : "--generation must be a generation number (1, 2, ...), got '" + v + "'";
      });
  sub->add_option("--at", flags.at,
                  "restore, of each instance, the retained generation that was current at this "
                  "time: 2026-12-05T10:00:00Z, or how long ago (90m, 2h, 3d)")
      ->excludes("--generation");
  sub->add_flag("--force", flags.force,
                "restore even though the peer still answers, or an HA service (manatee, moray, "
                "binder) has no healthy instance on this node");
  sub->add_flag("--again", flags.again,
                "also restore instances an earlier restore on this node already rebuilt "
                "(without it they are skipped, saying where they went)");
  sub->add_flag("--keep-old-records", flags.keep_old_records,
                "leave the lost instances' own records (VMAPI VM, SAPI instance, NAPI NICs) as "
                "they are, for cleaning up by hand (docs/operator-guide.md section 6); without "
                "it a last phase retires them");
  sub->add_flag("--from-freshest", flags.from_freshest,
                "first pull the freshest copy of the peer held by another node into this "
                "catalog (through the local agent)");
  sub->add_flag("-y,--yes", flags.yes,
                "do not ask: neither to confirm the plan (asked on a terminal) nor to restore "
                "stale data");
  sub->callback([&ctx] { ctx.Run([&ctx] { return RunRestore(ctx, flags); }); });
});

}  // namespace
}  // namespace lifeboat::cli
