// `lifeboat catalog ls|show|verify|repair`: what this node holds from its
// peers. ls, show and verify read the store directly (read-only), so they
// work while the agent is down, and never modify data_dir. repair asks the
// agent (POST /repair); when no agent runs on data_dir, it scrubs the
// catalog itself, holding the agent's lock meanwhile.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "agent/api_client.h"
#include "agent/config_options.h"
#include "agent/status_json.h"
#include "base/lock_file.h"
#include "base/clock.h"
#include "base/env.h"
#include "base/text.h"
#include "base/units.h"
#include "catalog/store.h"
#include "cli/command.h"
#include "cli/table.h"
#include "conf/config.h"
#include "restore/check_records.h"

namespace lifeboat::cli {
namespace {

using catalog::InstanceRecord;
using catalog::Store;
using nlohmann::json;

struct CatalogArgs {
  std::string data_dir;  // --data-dir: overrides agent.data_dir of the config
  bool no_header = false;
  std::string columns;
  std::string uuid;
  uint64_t generation = 0;  // show --generation: 0 = the current one
};

int Fail(const Status& st) {
  std::cerr << "lifeboat catalog: " << st.ToString() << "\n";
  return st.ExitCode();
}

// The catalog directory: --data-dir, else agent.data_dir of the config.
Result<std::string> DataDir(const Context& ctx, const CatalogArgs& args) {
  if (!args.data_dir.empty()) return args.data_dir;
  ASSIGN_OR_RETURN(conf::Config config, conf::LoadConfig(ctx.ConfigPath()));
  return config.agent.data_dir;
}

Result<std::unique_ptr<Store>> OpenStore(const Context& ctx, const CatalogArgs& args) {
  ASSIGN_OR_RETURN(std::string dir, DataDir(ctx, args));
  catalog::StoreOptions o;
  o.data_dir = dir;
  o.read_only = true;
  return Store::Open(*Env::Default(), *Clock::Real(), o);
}

const std::vector<std::string> kDefaultColumns = {"service",    "instance", "alias", "peer",
                                                  "generation", "age",      "size"};
const std::vector<std::string> kAllColumns = {"service",    "instance", "alias",     "peer",
                                              "generation", "age",      "size",      "seq",
                                              "files",      "image",    "pulled_at", "removed"};

std::string Cell(const InstanceRecord& r, const std::string& col, int64_t now) {
  if (col == "service") return r.service;
  if (col == "instance") return r.uuid;
  if (col == "alias") return r.alias;
  if (col == "peer") return r.peer;
  if (col == "generation") return std::to_string(r.generation);
  if (col == "age") return HumanAge((now - r.pulled_at_ms) / 1000);
  if (col == "size") return HumanBytes(r.size);
  if (col == "seq") return std::to_string(r.seq);
  if (col == "files") return std::to_string(r.files);
  if (col == "image") return r.image_uuid;
  if (col == "pulled_at") return FormatIso8601Ms(r.pulled_at_ms);
  if (col == "removed") return r.removed ? FormatIso8601Ms(r.removed_since_ms) : "-";
  return "";
}

int RunLs(const Context& ctx, const CatalogArgs& args) {
  std::vector<std::string> cols = kDefaultColumns;
  if (!args.columns.empty() && !ParseColumns("catalog ls", args.columns, kAllColumns, &cols)) {
    return kExitUsage;
  }
  auto store = OpenStore(ctx, args);
  if (!store.ok()) return Fail(store.status());
  const int64_t now = Clock::Real()->WallMs();
  auto instances = (*store)->Instances();
  if (ctx.json) {
    json out = json::array();
    for (const auto& r : instances) out.push_back(agent::InstanceJson(r, now));
    std::cout << DumpJson(out, 2) << "\n";
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& r : instances) {
    std::vector<std::string> row;
    for (const auto& c : cols) row.push_back(EscapeForTerminal(Cell(r, c, now)));
    rows.push_back(std::move(row));
  }
  PrintTable(cols, rows, args.no_header);
  return kExitOk;
}

const char* KindName(syncproto::EntryKind k) {
  switch (k) {
    case syncproto::EntryKind::kFile:
      return "file";
    case syncproto::EntryKind::kDir:
      return "dir";
    case syncproto::EntryKind::kSymlink:
      return "symlink";
  }
  return "?";
}

int RunShow(const Context& ctx, const CatalogArgs& args) {
  auto store = OpenStore(ctx, args);
  if (!store.ok()) return Fail(store.status());
  auto gen = (*store)->Instance(args.uuid, args.generation);
  if (!gen.ok()) return Fail(gen.status());
  const int64_t now = Clock::Real()->WallMs();
  auto seqs = (*store)->Generations(args.uuid);
  std::vector<uint64_t> generations = seqs.ok() ? *seqs : std::vector<uint64_t>{};
  auto chain = (*store)->ImageChain(gen->record.image_uuid);
  if (ctx.json) {
    json out = agent::InstanceJson(gen->record, now);
    out["dir"] = gen->dir;
    out["current"] = gen->current;
    out["committed_at"] = FormatIso8601Ms(gen->committed_at_ms);
    out["generations_held"] = generations;
    json images = json::array();
    if (chain.ok()) {
      for (const auto& i : *chain) {
        images.push_back(
            {{"uuid", i.uuid}, {"origin", i.origin}, {"size", i.size}, {"file", i.file_path}});
      }
    }
    out["image_chain"] = images;
    out["image_chain_error"] = chain.ok() ? json(nullptr) : json(chain.status().message());
    json files = json::array();
    for (const auto& f : gen->files) {
      json e = {{"kind", KindName(f.entry.kind)}, {"mode", f.entry.mode}};
      PutBytes(e, "path", f.entry.path);  // names are bytes: "path_hex" when not UTF-8
      PutBytes(e, "local_path", f.local_path);
      if (f.entry.kind == syncproto::EntryKind::kFile) {
        e["size"] = f.entry.size;
        e["digest"] = f.entry.digest.Hex();
        e["sha256"] = f.entry.sha256.Hex();
      }
      if (f.entry.kind == syncproto::EntryKind::kSymlink) PutBytes(e, "target", f.entry.target);
      files.push_back(std::move(e));
    }
    out["files_list"] = files;
    std::cout << DumpJson(out, 2) << "\n";
    return kExitOk;
  }
  // Everything that came from a peer is escaped for the terminal.
  const InstanceRecord& r = gen->record;
  std::cout << "instance    " << r.uuid << "\n"
            << "alias       " << EscapeForTerminal(r.alias) << "\n"
            << "service     " << EscapeForTerminal(r.service) << "\n"
            << "peer        " << r.peer << "\n"
            << "generation  " << r.generation << " (local " << r.seq
            << (gen->current ? ", current" : ", retained") << "; held:";
  for (uint64_t s : generations) std::cout << " " << s;
  std::cout << ")\n"
            << "committed   " << FormatIso8601Ms(gen->committed_at_ms) << "\n"
            << "pulled at   " << FormatIso8601Ms(r.pulled_at_ms) << " ("
            << HumanAge((now - r.pulled_at_ms) / 1000) << " ago)\n"
            << "size        " << HumanBytes(r.size) << " in " << r.files << " entries\n";
  if (r.removed) {
    std::cout << "removed     since " << FormatIso8601Ms(r.removed_since_ms)
              << " (the peer no longer exports it)\n";
  }
  if (!r.warnings.empty()) {
    std::cout << "incomplete  the peer's exporter skipped " << r.warnings.size()
              << (r.warnings.size() == 1 ? " path" : " paths") << ":\n";
    for (const auto& w : r.warnings) {
      std::cout << "              " << EscapeForTerminal(w.path) << ": "
                << EscapeForTerminal(w.reason) << "\n";
    }
  }
  std::cout << "directory   "
            << (gen->dir.empty() ? "(none: restore checks this generation out)"
                                 : EscapeForTerminal(gen->dir))
            << "\n"
            << "image chain ";
  if (chain.ok()) {
    for (size_t i = 0; i < chain->size(); ++i) std::cout << (i ? " -> " : "") << (*chain)[i].uuid;
    std::cout << (chain->empty() ? "(none)" : "") << "\n";
  } else {
    std::cout << "incomplete: " << EscapeForTerminal(chain.status().message()) << "\n";
  }
  std::cout << "files:\n";
  for (const auto& f : gen->files) {
    std::string size =
        f.entry.kind == syncproto::EntryKind::kFile ? std::to_string(f.entry.size) : "-";
    std::cout << "  " << KindName(f.entry.kind) << "\t" << size << "\t"
              << EscapeForTerminal(f.entry.path);
    if (f.entry.kind == syncproto::EntryKind::kSymlink) {
      std::cout << " -> " << EscapeForTerminal(f.entry.target);
    }
    std::cout << "\n";
  }
  return kExitOk;
}

// Keeps the result for `readiness` and status (<data_dir>/checks/verify.json).
// A catalog this user cannot write to is verified all the same; the record
// is then missing, with a warning.
void RecordVerify(const catalog::Store& store, const catalog::VerifyReport& report) {
  restore::VerifyRecord rec;
  rec.ok = report.ok();
  rec.finished_ms = Clock::Real()->WallMs();
  rec.files_checked = report.files_checked;
  rec.bytes_checked = report.bytes_checked;
  rec.problems = report.problems.size();
  if (!report.ok()) rec.first_problem = report.problems[0].path + ": " + report.problems[0].what;
  Status st = restore::SaveVerifyRecord(*Env::Default(), store.data_dir(), rec);
  if (!st.ok())
    std::cerr << "lifeboat catalog verify: result not recorded: " << st.message() << "\n";
}

json VerifyProblemsJson(const std::vector<catalog::VerifyProblem>& list) {
  json out = json::array();
  for (const auto& p : list) {
    json e = {{"problem", p.what}};
    PutBytes(e, "path", p.path);
    out.push_back(std::move(e));
  }
  return out;
}

// "BAD <path>: <what>" lines (UNNAMED for files nothing names).
void PrintFileLines(const char* tag, const std::vector<catalog::VerifyProblem>& list) {
  for (const auto& p : list) {
    std::cout << tag << " " << EscapeForTerminal(p.path) << ": " << EscapeForTerminal(p.what)
              << "\n";
  }
}

int RunVerify(const Context& ctx, const CatalogArgs& args) {
  auto store = OpenStore(ctx, args);
  if (!store.ok()) return Fail(store.status());
  auto report = (*store)->Verify();
  if (!report.ok()) return Fail(report.status());
  RecordVerify(**store, *report);
  if (ctx.json) {
    json out = {{"ok", report->ok()},
                {"generations_checked", report->generations_checked},
                {"objects_checked", report->objects_checked},
                {"files_checked", report->files_checked},
                {"bytes_checked", report->bytes_checked},
                {"problems", VerifyProblemsJson(report->problems)},
                {"unnamed_checked", report->unnamed_checked},
                {"unnamed", VerifyProblemsJson(report->unnamed)},
                {"unnamed_bytes", report->unnamed_bytes}};
    std::cout << DumpJson(out, 2) << "\n";
  } else {
    PrintFileLines("BAD", report->problems);
    PrintFileLines("UNNAMED", report->unnamed);
    std::cout << (report->ok() ? "ok" : "FAILED") << ": " << report->generations_checked
              << " generations, " << report->files_checked << " files, "
              << HumanBytes(report->bytes_checked) << " checked, " << report->problems.size()
              << " bad";
    if (!report->unnamed.empty()) {
      std::cout << "; " << report->unnamed.size() << " unnamed files under objects/ ("
                << HumanBytes(report->unnamed_bytes) << ")";
    }
    std::cout << "\n";
    if (!report->unnamed_checked && report->ok()) {
      std::cout << "objects/ was not checked for unnamed files: catalog.json changed or a pull "
                   "was staging while verify ran, or a generation is unreadable (run verify "
                   "again)\n";
    }
  }
  return report->ok() ? kExitOk : kExitData;
}

// The repair report, as the agent's POST /repair or Store::Scrub gave it.
int PrintRepair(const Context& ctx, const json& r, const std::string& by) {
  const bool ok = r.value("ok", false);
  if (ctx.json) {
    json out = r;
    out["by"] = by;
    std::cout << DumpJson(out, 2) << "\n";
    return ok ? kExitOk : kExitData;
  }
  for (const char* key : {"problems", "unnamed"}) {
    for (const json& p : r.value(key, json::array())) {
      auto path = GetBytes(p, "path");
      std::cout << (key == std::string("problems") ? "BAD " : "UNNAMED ")
                << EscapeForTerminal(path.ok() ? *path : "?") << ": "
                << EscapeForTerminal(p.value("what", "")) << "\n";
    }
  }
  std::cout << (ok ? "ok" : "DAMAGED") << " (scrubbed by " << by
            << "): " << r.value("objects_checked", 0) << " objects of "
            << r.value("generations_checked", 0) << " generations, "
            << HumanBytes(r.value("bytes_checked", uint64_t{0})) << " checked, "
            << r.value("problems", json::array()).size() << " bad, "
            << r.value("objects_removed", 0) << " damaged objects removed, "
            << r.value("unnamed_removed", 0) << " unnamed objects deleted\n";
  const json peers = r.value("peers_to_pull", json::array());
  if (!peers.empty()) {
    std::cout << r.value("damaged_instances", json::array()).size()
              << " instances are pulled again from:";
    for (const json& p : peers) std::cout << " " << EscapeForTerminal(p.get<std::string>());
    std::cout << (by == "agent" ? " (started now)" : " (at the agent's next pull)") << "\n";
  }
  // Damage found is an exit 65 even when repaired, as for `catalog verify`:
  // monitoring hears of it (images and SAPI records are reported, not repaired).
  return ok ? kExitOk : kExitData;
}

// Asks the agent on agent.api; nullopt when none listens (then the catalog
// is scrubbed here).
Result<std::optional<json>> RepairByAgent(const conf::Config& config) {
  agent::ApiCall call =
      agent::ApiCallFor(config.agent.api.host, config.agent.api.port, config.auth.api_token);
  call.method = "POST";
  call.target = "/repair";
  call.read_timeout_ms = 24 * 3600 * 1000;  // a scrub reads every object once
  Result<agent::ApiReply> reply = agent::CallApi(call);
  if (!reply.ok()) {
    if (reply.status().code() == Code::kUnavailable) return std::optional<json>();
    return reply.status();
  }
  json body = json::parse(reply->body, nullptr, false);
  if (reply->status != 200) {
    std::string msg = body.is_object() ? body.value("message", reply->body) : reply->body;
    return UnavailableError("the agent refused the repair (HTTP " +
                            std::to_string(reply->status) + "): " + msg);
  }
  if (!body.is_object()) return DataError("the agent's POST /repair answer is not a JSON object");
  return std::optional<json>(std::move(body));
}

int RunRepair(const Context& ctx, const CatalogArgs& args) {
  auto config = conf::LoadConfig(ctx.ConfigPath());
  if (!config.ok()) return Fail(config.status());
  if (!args.data_dir.empty()) config->agent.data_dir = args.data_dir;
  const std::string& dir = config->agent.data_dir;
  if (LockFile::IsHeld(JoinPath(dir, ".agent.lock"))) {
    auto by_agent = RepairByAgent(*config);
    if (!by_agent.ok()) return Fail(by_agent.status());
    if (by_agent->has_value()) return PrintRepair(ctx, **by_agent, "agent");
    return Fail(UnavailableError("an agent holds " + dir + " but does not answer on agent.api " +
                                 config->agent.api.ToString()));
  }
  // No agent: scrub here, holding its lock so none starts meanwhile.
  auto lock = LockFile::Acquire(JoinPath(dir, ".agent.lock"), "agent.data_dir " + dir);
  if (!lock.ok()) return Fail(lock.status());
  auto store = Store::Open(*Env::Default(), *Clock::Real(),
                           agent::StoreOptionsFor(*config, /*read_only=*/false));
  if (!store.ok()) return Fail(store.status());
  auto report = (*store)->Scrub(/*repair=*/true);
  if (!report.ok()) return Fail(report.status());
  return PrintRepair(ctx, agent::RepairJson(*report), "this command");
}

const CommandRegistrar kRegistrar(30, [](CLI::App& root, Context& ctx) {
  static CatalogArgs args;
  CLI::App* cat = root.add_subcommand("catalog", "what this node holds from its peers");
  cat->require_subcommand(1);
  auto add_dir = [](CLI::App* sub) {
    sub->add_option("--data-dir", args.data_dir, "catalog directory (default: agent.data_dir)");
  };
  CLI::App* ls = cat->add_subcommand(
      "ls", "list the instances held (service, instance, alias, peer, generation, age, size)");
  ls->add_flag("-H", args.no_header, "no header, tab-separated (for scripts)");
  ls->add_option("-o", args.columns,
                 "columns, comma-separated: service,instance,alias,peer,generation,age,size,seq,"
                 "files,image,pulled_at,removed");
  add_dir(ls);
  ls->callback([&ctx] { ctx.Run([&ctx] { return RunLs(ctx, args); }); });

  CLI::App* show =
      cat->add_subcommand("show", "show one instance: its generation, files, image chain");
  show->add_option("uuid", args.uuid, "instance uuid")->required();
  show->add_option("--generation", args.generation,
                   "a retained generation (a local seq listed under \"held\") instead of the "
                   "current one");
  add_dir(show);
  show->callback([&ctx] { ctx.Run([&ctx] { return RunShow(ctx, args); }); });

  CLI::App* verify = cat->add_subcommand(
      "verify", "re-hash every held file against its recorded digest (exit 65 on a mismatch)");
  add_dir(verify);
  verify->callback([&ctx] { ctx.Run([&ctx] { return RunVerify(ctx, args); }); });

  CLI::App* repair = cat->add_subcommand(
      "repair",
      "re-hash every object of every retained generation; damaged ones are removed and their "
      "peers pulled again (by the agent when it runs; exit 65 when it found damage)");
  add_dir(repair);
  repair->callback([&ctx] { ctx.Run([&ctx] { return RunRepair(ctx, args); }); });
});

}  // namespace
}  // namespace lifeboat::cli
