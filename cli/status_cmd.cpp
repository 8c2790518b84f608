// `lifeboat status [-H] [-o cols] [--check] [--cluster]`: what the local agent
// knows about its peers (reachable, last attempt and success, age, generation,
// last error, bytes) and the services it holds. `--cluster` also asks every
// other node (syncproto HELD_QUERY) which generation of each peer it holds and
// shows, per peer, the node with the freshest copy (column "freshest", JSON
// "freshest" and "cluster_copies"). `--check` (for monitoring) exits 1
// when any peer's data is older than agent.stale_after or anything else
// would block a restore of it (the blockers of `lifeboat readiness`: missing
// images, unreadable or incomplete copies, deposed instances, a failed drill
// or verify), one line per reason on stderr. "incomplete" (text: the
// INCOMPLETE section) lists, per held instance, what its peer's exporter
// skipped (docs/syncproto.md section 5). Deposed instances count the restores of
// every node: the peers with an `api` are asked (GET /restores). When the agent is
// not running, status shows what the catalog on disk records (reachability
// unknown, "agent_running": false) and exits 69, with or without --check.
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/api_client.h"
#include "agent/config_options.h"
#include "agent/status_json.h"
#include "base/clock.h"
#include "base/text.h"
#include "base/units.h"
#include "catalog/store.h"
#include "cli/cluster_client.h"
#include "cli/cluster_restores.h"
#include "cli/command.h"
#include "cli/table.h"
#include "cli/readiness_source.h"
#include "conf/config.h"
#include "restore/deposed.h"
#include "restore/shared_restores.h"

namespace lifeboat::cli {
namespace {

struct StatusOptions {
  bool no_header = false;
  std::string columns;
  bool check = false;
  bool cluster = false;
};

const std::vector<std::string> kDefaultColumns = {"peer", "reachable",  "last_success",
                                                  "age",  "generation", "error"};
const std::vector<std::string> kAllColumns = {
    "peer",  "address", "reachable",  "phase",   "last_attempt", "last_success",
    "age",   "stale",   "generation", "error",   "bytes",        "files",
    "pulls", "failed",  "next_pull",  "freshest"};

// Adds, to each peer P of st["peers"], "cluster_copies" (what every node
// holds of P: this node from the agent's status, the others by HELD_QUERY,
// one connection per node) and "freshest" (the node with the highest
// generation of P; this node on a tie; null when nobody holds any). Peer
// names are matched by name: the cluster's nodes must name each other alike.
Status AddClusterCopies(const conf::Config& config, nlohmann::json& st) {
  ASSIGN_OR_RETURN(auto client, ClusterClient::Create(config));
  std::map<std::string, Result<syncproto::HeldAnswerMsg>> held;
  for (const auto& n : config.peers) {
    held.emplace(n.name, client->QueryHeld({n.name, n.address.host, n.address.port}, /*peer=*/""));
  }
  for (auto& p : st["peers"]) {
    const std::string name = p.value("name", "");
    nlohmann::json copies = nlohmann::json::array();
    nlohmann::json best;
    uint64_t best_gen = 0;
    auto consider = [&](const std::string& node, uint64_t gen, int64_t pulled_ms) {
      copies.push_back({{"node", node},
                        {"generation", gen},
                        {"pulled_at", pulled_ms ? nlohmann::json(FormatIso8601Ms(pulled_ms))
                                                : nlohmann::json()}});
      if (gen > best_gen) {
        best_gen = gen;
        best = {{"node", node}, {"generation", gen}};
      }
    };
    uint64_t local = p["generation"].is_number() ? p["generation"].get<uint64_t>() : 0;
    consider(config.node.name, local, 0);
    copies.back()["pulled_at"] = p["last_success"];
    for (const auto& [node, answer] : held) {
      if (node == name) continue;
      if (!answer.ok()) {
        copies.push_back({{"node", node}, {"error", answer.status().message()}});
        continue;
      }
      uint64_t gen = 0;
      int64_t pulled = 0;
      for (const auto& h : answer->peers) {
        if (h.peer == name) gen = h.generation, pulled = h.last_pull_ms;
      }
      consider(node, gen, pulled);
    }
    p["cluster_copies"] = std::move(copies);
    p["freshest"] = std::move(best);
  }
  return Status::Ok();
}

// Adds "restored" (instances restored by this node, from its restore
// journals, and by the other nodes, from their GET /restores: `elsewhere`)
// and "deposed" (instances of a peer that came back although they were
// restored: both copies exist) to the status object. Reads the catalog
// read-only, beside the running agent.
Status AddRestoreState(const conf::Config& config, const ClusterRestores& elsewhere,
                       nlohmann::json& st) {
  ASSIGN_OR_RETURN(auto store, agent::OpenCatalogReadOnly(config));
  ASSIGN_OR_RETURN(auto restored,
                   restore::ListRestoredInstances(*Env::Default(), config.agent.data_dir));
  for (const auto& [uuid, r] : elsewhere.restored) restore::MergeRestored(restored, r);
  nlohmann::json list = nlohmann::json::array();
  for (const auto& [old_uuid, r] : restored) list.push_back(restore::RestoredJson(r));
  st["restored"] = std::move(list);
  st["restores_not_asked"] = elsewhere.errors;
  nlohmann::json deposed = nlohmann::json::array();
  for (const auto& d : restore::FindDeposed(store->Instances(), restored, [&] {
         std::map<std::string, int64_t> last;
         for (const auto& p : store->Peers()) last[p.name] = p.last_pull_ms;
         return last;
       }())) {
    deposed.push_back({{"peer", d.old.peer},
                       {"old_uuid", d.old.uuid},
                       {"old_alias", d.old.alias},
                       {"new_uuid", d.restored.new_uuid},
                       {"alias", d.restored.alias},
                       {"node", d.restored.node},
                       {"restored_at", FormatIso8601Ms(d.restored.restored_ms)}});
  }
  st["deposed"] = std::move(deposed);
  return Status::Ok();
}

// Adds "blockers" ([{peer, kind, message}]): what would stop a restore of
// each peer from this node's catalog now (restore/readiness.h), except the
// age kinds, which status judges itself from the agent's clock-jump-proof
// ages ("stale").
Status AddBlockers(const conf::Config& config, const ClusterRestores& elsewhere,
                   nlohmann::json& st) {
  ASSIGN_OR_RETURN(auto store, agent::OpenCatalogReadOnly(config));
  ASSIGN_OR_RETURN(restore::ReadinessReport r,
                   AssessConfiguredReadiness(config, *store, *Env::Default(),
                                             Clock::Real()->WallMs(), /*cluster=*/nullptr,
                                             elsewhere.restored));
  nlohmann::json list = nlohmann::json::array();
  for (const auto& p : r.peers) {
    for (const auto& b : p.blockers) {
      if (b.kind == "stale" || b.kind == "never_pulled" || b.kind == "clock_changed") continue;
      list.push_back({{"peer", p.peer}, {"kind", b.kind}, {"message", b.message}});
    }
  }
  st["blockers"] = std::move(list);
  return Status::Ok();
}

// Adds "incomplete" ([{peer, uuid, alias, service, warnings}]): held
// instances whose peer's exporter skipped paths of them (what it skipped,
// as of the last pull). Reads the catalog read-only, beside the running agent.
Status AddIncomplete(const conf::Config& config, nlohmann::json& st) {
  ASSIGN_OR_RETURN(auto store, agent::OpenCatalogReadOnly(config));
  nlohmann::json list = nlohmann::json::array();
  for (const catalog::InstanceRecord& r : store->Instances()) {
    if (r.removed || r.warnings.empty()) continue;
    list.push_back({{"peer", r.peer},
                    {"uuid", r.uuid},
                    {"alias", r.alias},
                    {"service", r.service},
                    {"warnings", agent::WarningsJson(r.warnings)}});
  }
  st["incomplete"] = std::move(list);
  return Status::Ok();
}

// "went_back": per peer whose generation went backwards (reinstalled, or
// restored from an old backup): when, whether the operator released its
// removed copies (retention.release_went_back), and the removed instances
// kept (restorable by `restore --peer`).
Status AddWentBack(const conf::Config& config, nlohmann::json& st) {
  ASSIGN_OR_RETURN(auto store, agent::OpenCatalogReadOnly(config));
  const auto& released = config.retention.release_went_back;
  nlohmann::json list = nlohmann::json::array();
  for (const catalog::PeerState& p : store->Peers()) {
    if (p.went_back_ms == 0) continue;
    nlohmann::json kept = nlohmann::json::array();
    for (const catalog::InstanceRecord& r : store->Instances()) {
      if (r.peer != p.name || !r.removed) continue;
      kept.push_back({{"uuid", r.uuid}, {"alias", r.alias}, {"service", r.service}});
    }
    list.push_back(
        {{"peer", p.name},
         {"went_back_at", agent::WallOrNull(p.went_back_ms)},
         {"released", std::find(released.begin(), released.end(), p.name) != released.end()},
         {"removed_kept", std::move(kept)}});
  }
  st["went_back"] = std::move(list);
  return Status::Ok();
}

// The status object built from the catalog on disk, for when the agent is down.
Result<nlohmann::json> OfflineStatus(const conf::Config& config) {
  ASSIGN_OR_RETURN(auto store, agent::OpenCatalogReadOnly(config));
  return agent::OfflineStatusJson(config, *store, Clock::Real()->WallMs());
}

// A value for the terminal: "-" for null, text escaped (errors and names
// come from peers), anything else as JSON.
std::string Str(const nlohmann::json& v) {
  if (v.is_null()) return "-";
  if (v.is_string()) return EscapeForTerminal(v.get<std::string>());
  return DumpJson(v);
}

// "last scrub: ..." once one ran (`catalog repair`, agent.scrub_interval).
void PrintLastScrub(const nlohmann::json& l) {
  if (!l.is_object()) return;
  std::cout << "\nlast scrub: " << Str(l["finished"]);
  if (l["age_seconds"].is_number()) std::cout << " (" << HumanAge(l["age_seconds"].get<int64_t>()) << " ago)";
  std::cout << ", " << l.value("objects_checked", uint64_t{0}) << " objects checked, "
            << l.value("problems", uint64_t{0}) << " problems, " << l.value("repaired", uint64_t{0})
            << " repaired";
  if (l.contains("first_problem") && !l["first_problem"].is_null()) {
    std::cout << "; first: " << Str(l["first_problem"]);
  }
  std::cout << "\n";
}

void PrintWentBack(const nlohmann::json& list) {
  for (const auto& w : list) {
    std::cout << "\nWENT BACK: " << Str(w["peer"]) << " went backwards at "
              << Str(w["went_back_at"])
              << " (reinstalled, or restored from an old backup); its instances it no longer "
                 "exports are "
              << (w.value("released", false) ? "released (dropped after removed_grace)"
                                             : "kept past removed_grace")
              << " and restorable by `lifeboat restore --peer " << Str(w["peer"]) << "`:\n";
    for (const auto& r : w["removed_kept"]) {
      std::cout << "  " << Str(r["alias"]) << " (" << Str(r["uuid"]) << ")\n";
    }
  }
}

std::string Cell(const nlohmann::json& p, const std::string& col) {
  if (col == "peer") return Str(p["name"]);
  if (col == "address") return Str(p["address"]);
  if (col == "reachable") {
    if (!p.contains("reachable") || p["reachable"].is_null()) return "unknown";
    return p["reachable"].get<bool>() ? "yes" : "no";
  }
  if (col == "phase") return Str(p["phase"]);
  if (col == "last_attempt") return Str(p["last_attempt"]);
  if (col == "last_success") return Str(p["last_success"]);
  if (col == "age") {
    if (p.value("clock_changed", false)) return "clock changed";
    return p["age_seconds"].is_null() ? "never" : HumanAge(p["age_seconds"].get<int64_t>());
  }
  if (col == "stale") return p.value("stale", true) ? "STALE" : "ok";
  if (col == "generation") return Str(p["generation"]);
  if (col == "error") return p["last_error"].is_null() ? "-" : Str(p["last_error"]);
  if (col == "bytes") return HumanBytes(p.value("wire_bytes", 0ull));
  if (col == "files") return Str(p["files"]);
  if (col == "pulls") return Str(p["pulls"]);
  if (col == "failed") return Str(p["pulls_failed"]);
  if (col == "next_pull") return HumanAge(p.value("next_pull_in_seconds", 0ll));
  if (col == "freshest") {
    if (!p.contains("freshest")) return "(--cluster)";
    const auto& f = p["freshest"];
    if (f.is_null()) return "-";
    std::string cell = Str(f["node"]) + "@" + Str(f["generation"]);
    for (const auto& c : p["cluster_copies"]) {
      if (c.contains("error")) return cell + " (" + Str(c["node"]) + " not asked)";
    }
    return cell;
  }
  return "?";
}

// What the exporters skipped, per instance (-H: not shown).
void PrintIncomplete(const nlohmann::json& incomplete) {
  if (incomplete.empty()) return;
  std::cout << "\nINCOMPLETE: the peer's exporter skipped these paths; the copies lack them:\n";
  for (const auto& i : incomplete) {
    std::cout << "  " << Str(i["peer"]) << " " << Str(i["alias"]) << " (" << Str(i["uuid"])
              << "):\n";
    for (const auto& w : i["warnings"]) {
      std::cout << "    " << (w.contains("path") ? Str(w["path"]) : Str(w["path_hex"]) + " (hex)")
                << ": " << Str(w["reason"]) << "\n";
    }
  }
}

int RunStatus(const Context& ctx, const StatusOptions& opt) {
  std::vector<conf::ConfigProblem> problems;
  Result<conf::Config> config = conf::LoadConfig(ctx.ConfigPath(), &problems);
  if (!config.ok()) {
    for (const auto& p : problems) std::cerr << p.ToString() << "\n";
    return kExitConfig;
  }
  std::vector<std::string> cols = kDefaultColumns;
  if (opt.cluster) cols.push_back("freshest");
  if (!opt.columns.empty() && !ParseColumns("status", opt.columns, kAllColumns, &cols)) {
    return kExitUsage;
  }
  agent::ApiCall call =
      agent::ApiCallFor(config->agent.api.host, config->agent.api.port, config->auth.api_token);
  call.target = "/status";
  call.read_timeout_ms = 30'000;
  Result<agent::ApiReply> reply = agent::CallApi(call);
  nlohmann::json st;
  bool agent_down = false;
  if (!reply.ok()) {
    std::cerr << "lifeboat status: " << reply.status().message() << "\n";
    if (reply.status().code() != Code::kUnavailable) return kExitTemporary;
    Result<nlohmann::json> offline = OfflineStatus(*config);
    if (!offline.ok()) {
      std::cerr << "lifeboat status: reading the catalog: " << offline.status().message() << "\n";
      return kExitUnavailable;
    }
    std::cerr << "lifeboat status: the agent is not running; showing what the catalog in "
              << config->agent.data_dir << " records (REACHABLE unknown)\n";
    st = std::move(*offline);
    agent_down = true;
  } else {
    st = nlohmann::json::parse(reply->body, nullptr, false);
    if (reply->status != 200 || !st.is_object()) {
      std::cerr << "lifeboat status: the agent answered " << reply->status << ": " << reply->body
                << "\n";
      return kExitUnavailable;
    }
  }
  const ClusterRestores elsewhere = AskClusterRestores(*config);
  for (const std::string& e : elsewhere.errors) {
    std::cerr << "lifeboat status: restores run on other nodes: " << e << "\n";
  }
  if (Status rs = AddRestoreState(*config, elsewhere, st); !rs.ok()) {
    std::cerr << "lifeboat status: restores: " << rs.message() << "\n";
  }
  if (Status is = AddIncomplete(*config, st); !is.ok()) {
    std::cerr << "lifeboat status: incomplete copies: " << is.message() << "\n";
  }
  if (Status ws = AddWentBack(*config, st); !ws.ok()) {
    std::cerr << "lifeboat status: peers that went back: " << ws.message() << "\n";
  }
  if (Status bs = AddBlockers(*config, elsewhere, st); !bs.ok()) {
    std::cerr << "lifeboat status: readiness: " << bs.message() << "\n";
  }
  if (opt.cluster) {
    if (Status cs = AddClusterCopies(*config, st); !cs.ok()) {
      std::cerr << "lifeboat status: asking the cluster: " << cs.message() << "\n";
    }
  }
  std::vector<std::string> stale;
  for (const auto& p : st["peers"]) {
    if (p.value("stale", true)) stale.push_back(p.value("name", "?"));
  }
  if (ctx.json) {
    std::cout << DumpJson(st) << "\n";
  } else {
    std::vector<std::vector<std::string>> rows;
    for (const auto& p : st["peers"]) {
      std::vector<std::string> r;
      for (const auto& c : cols) r.push_back(Cell(p, c));
      rows.push_back(std::move(r));
    }
    PrintTable(cols, rows, opt.no_header);
    if (opt.columns.empty() && st["services"].is_array() && !st["services"].empty()) {
      std::cout << "\n";
      std::vector<std::vector<std::string>> srows;
      for (const auto& s : st["services"]) {
        std::string peers;
        for (const auto& p : s["peers"]) peers += (peers.empty() ? "" : ",") + Str(p);
        srows.push_back({Str(s["service"]), Str(s["instances"]), Str(s["removed"]),
                         s["newest_age_seconds"].is_null()
                             ? "-"
                             : HumanAge(s["newest_age_seconds"].get<int64_t>()),
                         s["oldest_age_seconds"].is_null()
                             ? "-"
                             : HumanAge(s["oldest_age_seconds"].get<int64_t>()),
                         peers});
      }
      PrintTable({"SERVICE", "INSTANCES", "REMOVED", "NEWEST", "OLDEST", "PEERS"}, srows,
                 opt.no_header);
    }
  }
  // -H: the peer rows and nothing else.
  if (!ctx.json && !opt.no_header && st.contains("deposed") && !st["deposed"].empty()) {
    std::cout << "\nDEPOSED: restored elsewhere, yet their node exports them again; retire the "
                 "old instances:\n";
    std::vector<std::vector<std::string>> drows;
    for (const auto& d : st["deposed"]) {
      drows.push_back({Str(d["peer"]), Str(d["old_alias"]), Str(d["old_uuid"]), Str(d["alias"]),
                       Str(d["new_uuid"]), Str(d["node"]), Str(d["restored_at"])});
    }
    PrintTable({"PEER", "OLD ALIAS", "OLD UUID", "RESTORED AS", "NEW UUID", "ON", "AT"}, drows,
               opt.no_header);
  }
  if (!ctx.json && !opt.no_header) PrintIncomplete(st.value("incomplete", nlohmann::json::array()));
  if (!ctx.json && !opt.no_header) PrintLastScrub(st.value("last_scrub", nlohmann::json()));
  if (!ctx.json && !opt.no_header) PrintWentBack(st.value("went_back", nlohmann::json::array()));
  const nlohmann::json blockers = st.value("blockers", nlohmann::json::array());
  if (!ctx.json && !opt.no_header && !blockers.empty()) {
    std::cout << "\nBLOCKED: a restore of these peers from here would not be complete "
                 "(lifeboat readiness):\n";
    for (const auto& b : blockers) {
      std::cout << "  " << Str(b["peer"]) << ": " << Str(b["kind"]) << ": " << Str(b["message"])
                << "\n";
    }
  }
  if (opt.check) {
    for (const auto& n : stale) {
      std::cerr << "lifeboat status: " << n << ": stale: data older than "
                << conf::FormatDuration(config->agent.stale_after) << "\n";
    }
    for (const auto& b : blockers) {
      std::cerr << "lifeboat status: " << Str(b["peer"]) << ": " << Str(b["kind"]) << ": "
                << Str(b["message"]) << "\n";
    }
  }
  if (agent_down) return kExitUnavailable;  // a stopped agent is worse than stale data
  return opt.check && (!stale.empty() || !blockers.empty()) ? 1 : kExitOk;
}

const CommandRegistrar kRegistrar(/*order=*/30, [](CLI::App& root, Context& ctx) {
  static StatusOptions opt;
  CLI::App* sub =
      root.add_subcommand("status", "Show each peer's sync state and the services held");
  sub->add_flag("-H,--no-header", opt.no_header, "omit the table header");
  sub->add_option("-o,--output", opt.columns,
                  "comma-separated peer columns: peer,address,reachable,phase,last_attempt,"
                  "last_success,age,stale,generation,error,bytes,files,pulls,failed,next_pull,"
                  "freshest");
  sub->add_flag("--cluster", opt.cluster,
                "ask every other node which generation of each peer it holds; show the "
                "freshest copy per peer");
  sub->add_flag("--check", opt.check,
                "exit 1 when any peer's data is older than agent.stale_after or a restore of "
                "it is blocked (see `lifeboat readiness`); one line per reason on stderr");
  sub->callback([&ctx] { ctx.Run([&ctx] { return RunStatus(ctx, opt); }); });
});

}  // namespace
}  // namespace lifeboat::cli
