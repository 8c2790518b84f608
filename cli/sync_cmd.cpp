// `lifeboat sync-now [--peer P] [--service S]... [--cluster]`: asks the local
// agent (with --cluster: every node's agent, at once, through [[peer]] api)
// to pull now and shows its progress until every asked pull finished. Output: on
// a terminal one line per peer (never wider than the terminal: phase, files
// and bytes done, bytes received so far, rate and ETA), one JSON object per
// line (NDJSON) with -j, plain lines per phase change otherwise. A --service
// that no instance of the asked peers has after the pull is an error (exit
// 64, with the services held and the closest name), not "ok, unchanged".
// Exit 0 when every pull succeeded, 69 when the agent is not running, 75 when
// a pull failed, 64 for an unknown peer or service. --cluster: the worst
// node's code (64, then 75, then 69 for a node whose agent did not answer);
// 78 when a peer has no `api`.
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include <iostream>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/api_client.h"
#include "agent/config_options.h"
#include "base/suggest.h"
#include "base/text.h"
#include "base/units.h"
#include "cli/command.h"
#include "cli/node_api.h"
#include "conf/config.h"

namespace lifeboat::cli {
namespace {

struct SyncOptions {
  std::string peer;
  std::vector<std::string> services;
  bool cluster = false;
};

std::string Join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

// Columns of the terminal on stdout (80 when it does not say).
size_t TerminalWidth() {
  struct winsize ws {};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

// One peer's pull as the progress packets tell it, with the rate measured
// here (file bytes per second over the transfer so far).
struct PeerProgress {
  nlohmann::json last;
  std::chrono::steady_clock::time_point transfer_start{};
  bool transferring = false;

  double Rate(std::chrono::steady_clock::time_point now) const {
    const double secs = std::chrono::duration<double>(now - transfer_start).count();
    const double done = static_cast<double>(last.value("bytes_done", 0ull));
    return transferring && secs > 0.5 ? done / secs : 0.0;
  }
};

// "headnode1 transfer [#####.....] 12/30 files 10.2/22.0 MiB 3.1 MiB/s ETA 4s",
// cut to `width` columns.
std::string ProgressLine(const PeerProgress& pp, const std::string& label,
                         std::chrono::steady_clock::time_point now, size_t width) {
  const nlohmann::json& p = pp.last;
  const uint64_t bt = p.value("bytes_total", 0ull), bd = p.value("bytes_done", 0ull);
  const uint64_t ft = p.value("files_total", 0ull), fd = p.value("files_done", 0ull);
  const double frac = bt > 0 ? static_cast<double>(bd) / static_cast<double>(bt)
                             : (ft > 0 ? static_cast<double>(fd) / static_cast<double>(ft) : 0.0);
  const int bar_width = 10;
  const int filled = std::clamp(static_cast<int>(frac * bar_width), 0, bar_width);
  std::string line = label + " " + p.value("phase", "?") + " [" +
                     std::string(filled, '#') + std::string(bar_width - filled, '.') + "] " +
                     std::to_string(fd) + "/" + std::to_string(ft) + " files " +
                     HumanBytes(bd) + "/" + HumanBytes(bt) + " (" +
                     HumanBytes(p.value("wire_bytes", 0ull)) + " in)";
  const double rate = pp.Rate(now);
  if (rate > 0) {
    line += " " + HumanBytes(static_cast<uint64_t>(rate)) + "/s";
    if (bt > bd) line += " ETA " + HumanAge(static_cast<int64_t>((bt - bd) / rate) + 1);
  }
  if (line.size() >= width) line.resize(width - 1);  // never wrap: the redraw counts lines
  return line;
}

// Renders progress packets for a human: on a terminal one line per pull,
// redrawn in place, results printed above them; otherwise one plain line per
// phase change. A pull is named by its label: the peer, or "node<-peer" when
// several nodes pull (--cluster). Not thread-safe.
class ProgressView {
 public:
  explicit ProgressView(bool tty) : tty_(tty), width_(tty ? TerminalWidth() : 80) {}

  void Progress(const nlohmann::json& p, const std::string& peer) {
    std::string phase = p.value("phase", "?");
    if (tty_) {
      PeerProgress& pp = peers_[peer];
      if (phase == "transfer" && !pp.transferring) {
        pp.transferring = true;
        pp.transfer_start = std::chrono::steady_clock::now();
      }
      pp.last = p;
      Redraw();
      return;
    }
    if (last_phase_[peer] != phase) {
      last_phase_[peer] = phase;
      std::cout << peer << ": " << phase;
      if (phase == "transfer" || phase == "commit") {
        std::cout << " (" << p.value("files_total", 0) << " files, "
                  << HumanBytes(p.value("bytes_total", 0ull)) << ")";
      }
      std::cout << std::endl;
    }
  }

  void Result(const nlohmann::json& r, const std::string& peer) {
    if (tty_) {
      Clear();
      peers_.erase(peer);
    }
    if (r.value("ok", false)) {
      std::cout << peer << ": ok, generation " << r.value("generation", 0ull) << ", ";
      if (r.value("unchanged", false)) {
        std::cout << "unchanged";
      } else {
        std::cout << r.value("files", 0ull) << " files ("
                  << HumanBytes(r.value("file_bytes", 0ull)) << ") updated";
      }
      std::cout << ", " << HumanBytes(r.value("wire_bytes", 0ull)) << " received in "
                << r.value("duration_ms", 0ll) << " ms" << std::endl;
    } else {
      std::cout << peer << ": FAILED: " << r["error"].value("message", "unknown error")
                << std::endl;
    }
    if (tty_) Redraw();
  }

  void Done() {
    if (tty_) Clear();
  }

 private:
  // Erases the block of progress lines drawn last; the cursor ends where it began.
  void Clear() {
    if (drawn_ == 0) return;
    std::cout << "\033[" << drawn_ << "A";
    for (size_t i = 0; i < drawn_; ++i) std::cout << "\r\033[K\n";
    std::cout << "\033[" << drawn_ << "A" << std::flush;
    drawn_ = 0;
  }
  void Redraw() {
    const auto now = std::chrono::steady_clock::now();
    if (drawn_ > 0) std::cout << "\033[" << drawn_ << "A";
    size_t n = 0;
    for (const auto& [peer, pp] : peers_) {
      std::cout << "\r\033[K" << ProgressLine(pp, peer, now, width_) << "\n";
      ++n;
    }
    for (size_t i = n; i < drawn_; ++i) std::cout << "\r\033[K\n";  // lines of finished peers
    if (drawn_ > n) std::cout << "\033[" << (drawn_ - n) << "A";
    drawn_ = n;
    std::cout << std::flush;
  }

  bool tty_;
  size_t width_;
  size_t drawn_ = 0;  // progress lines on screen below the cursor's line
  std::map<std::string, PeerProgress> peers_;
  std::map<std::string, std::string> last_phase_;
};

// The asked services that no held instance of the asked peers has after
// the pull: a typo, or a service those peers do not run. Reads the catalog.
std::vector<std::string> UnknownServices(const conf::Config& config, const SyncOptions& opt,
                                         std::vector<std::string>* known) {
  auto store = agent::OpenCatalogReadOnly(config);
  if (!store.ok()) return {};  // the pull's own result said what matters
  std::set<std::string> held;
  for (const auto& i : (*store)->Instances()) {
    if (opt.peer.empty() || i.peer == opt.peer) held.insert(i.service);
  }
  known->assign(held.begin(), held.end());
  std::vector<std::string> unknown;
  for (const auto& s : opt.services) {
    if (!held.count(s)) unknown.push_back(s);
  }
  return unknown;
}

std::string SyncTarget(const SyncOptions& opt) {
  std::string target = "/sync";
  std::string sep = "?";
  if (!opt.peer.empty()) {
    target += sep + "peer=" + agent::QueryEscape(opt.peer);
    sep = "&";
  }
  if (!opt.services.empty()) {
    target += sep + "service=" + agent::QueryEscape(Join(opt.services, ","));
  }
  return target;
}

// How one agent's POST /sync went.
struct SyncOutcome {
  Status call;                // the call itself: agent not running, timeout, bad answer
  int http_status = 0;        // of an answer that is not 200
  nlohmann::json error_body;  // that answer's body (JSON object, or {"message": text})
  bool saw_done = false;
  bool all_ok = false;
  size_t results = 0;

  // 0 every pull ok; 69 agent not running; 64 unknown peer or service; 75 a
  // pull failed or the stream ended early; 70 any other error answer.
  int ExitCode() const {
    if (!call.ok()) return call.code() == Code::kUnavailable ? kExitUnavailable : kExitTemporary;
    if (http_status != 200) {
      if (http_status == 404 || http_status == 400) return kExitUsage;
      return http_status == 503 ? kExitUnavailable : kExitSoftware;
    }
    if (!saw_done) return kExitTemporary;
    return all_ok ? kExitOk : kExitTemporary;
  }
  // Why it did not end well ("" when every pull succeeded).
  std::string Problem() const {
    if (!call.ok()) return call.message();
    if (http_status != 200) return error_body.value("message", "HTTP " + std::to_string(http_status));
    if (!saw_done) return "the agent ended the stream before the result";
    return all_ok ? "" : "a pull failed";
  }
};

// POST /sync on one agent; every packet (progress, result, done) goes to
// `on_packet` as it arrives (on the calling thread). Waits for the end.
SyncOutcome StreamSync(agent::ApiCall call, const std::string& target, int64_t read_timeout_ms,
                       const std::function<void(nlohmann::json&)>& on_packet) {
  SyncOutcome out;
  call.method = "POST";
  call.target = target;
  call.read_timeout_ms = read_timeout_ms;
  call.on_line = [&](std::string_view line) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) return;
    const std::string type = j.value("type", "");
    if (type == "done") {
      out.saw_done = true;
      out.all_ok = j.value("ok", false);
    }
    if (type == "result") ++out.results;
    on_packet(j);
  };
  Result<agent::ApiReply> reply = agent::CallApi(call);
  if (!reply.ok()) {
    out.call = reply.status();
    return out;
  }
  out.http_status = reply->status;
  if (reply->status != 200) {
    nlohmann::json e = nlohmann::json::parse(reply->body, nullptr, false);
    out.error_body = e.is_object() ? e : nlohmann::json{{"message", reply->body}};
  }
  return out;
}

// A --service that no held instance of the asked peers has: exit 64 with the
// services held and the closest name; 0 otherwise.
int CheckServices(const conf::Config& config, const SyncOptions& opt) {
  if (opt.services.empty()) return kExitOk;
  std::vector<std::string> known;
  const std::vector<std::string> unknown = UnknownServices(config, opt, &known);
  for (const std::string& s : unknown) {
    std::cerr << "lifeboat sync-now: no instance of service '" << s << "' is held from "
              << (opt.peer.empty() ? "any peer" : opt.peer);
    if (std::string best = ClosestName(s, known); !best.empty()) {
      std::cerr << " (did you mean '" << best << "'?)";
    }
    std::cerr << "; services held: " << (known.empty() ? "none" : Join(known, ", ")) << "\n";
  }
  return unknown.empty() ? kExitOk : kExitUsage;
}

// A pull may sit in its commit without progress; never give up before its deadline.
int64_t SyncReadTimeoutMs(const conf::Config& config) {
  return config.agent.limits.pull_deadline.count() + 60'000;
}

int RunLocalSync(const Context& ctx, const conf::Config& config, const SyncOptions& opt) {
  const bool tty = !ctx.json && ::isatty(STDOUT_FILENO);
  ProgressView view(tty);
  const agent::ApiCall call =
      agent::ApiCallFor(config.agent.api.host, config.agent.api.port, config.auth.api_token);
  SyncOutcome o = StreamSync(call, SyncTarget(opt), SyncReadTimeoutMs(config), [&](nlohmann::json& j) {
    if (ctx.json) std::cout << DumpJson(j) << std::endl;
    if (ctx.json) return;
    if (j.value("type", "") == "progress") view.Progress(j, j.value("peer", "?"));
    if (j.value("type", "") == "result") view.Result(j, j.value("peer", "?"));
  });
  if (!ctx.json) view.Done();
  if (o.call.ok() && o.http_status != 200 && ctx.json) std::cout << DumpJson(o.error_body) << "\n";
  if (o.ExitCode() != kExitOk && !(o.saw_done && o.http_status == 200)) {
    std::cerr << "lifeboat sync-now: " << o.Problem() << "\n";
  }
  if (o.ExitCode() != kExitOk) return o.ExitCode();
  if (o.results == 0 && !ctx.json) std::cout << "no peers configured\n";
  return CheckServices(config, opt);
}

// The worst of the nodes' exit codes: a usage error, then a failed pull,
// then a node that could not be asked.
int ClusterExitCode(const std::vector<int>& codes) {
  for (int want : {kExitUsage, kExitTemporary, kExitSoftware, kExitUnavailable}) {
    for (int c : codes) {
      if (c == want) return want == kExitSoftware ? kExitTemporary : want;
    }
  }
  return kExitOk;
}

// --cluster: every node's agent pulls at once (from every peer, or from
// --peer P on every node but P); packets carry "node", each node ends with
// a {"type":"node"} line, the whole with {"type":"done"}.
int RunClusterSync(const Context& ctx, const conf::Config& config, const SyncOptions& opt) {
  auto nodes = ClusterApis(config, /*skip_unset=*/false);
  if (!nodes.ok()) {
    std::cerr << "lifeboat sync-now --cluster: " << nodes.status().message() << "\n";
    return kExitConfig;
  }
  std::erase_if(*nodes, [&](const NodeApi& n) { return !opt.peer.empty() && n.node == opt.peer; });
  const bool tty = !ctx.json && ::isatty(STDOUT_FILENO);
  ProgressView view(tty);
  std::mutex mu;
  std::vector<int> codes;
  const std::string target = SyncTarget(opt);
  ForEachNodeInParallel(*nodes, [&](const NodeApi& n) {
    SyncOutcome o = StreamSync(n.call, target, SyncReadTimeoutMs(config), [&](nlohmann::json& j) {
      if (j.value("type", "") == "done") return;  // the node's line below says it
      std::lock_guard lock(mu);
      j["node"] = n.node;
      const std::string label = n.node + "<-" + j.value("peer", "?");
      if (ctx.json) std::cout << DumpJson(j) << std::endl;
      else if (j.value("type", "") == "progress") view.Progress(j, label);
      else if (j.value("type", "") == "result") view.Result(j, label);
    });
    std::lock_guard lock(mu);
    codes.push_back(o.ExitCode());
    const std::string problem = o.Problem();
    if (ctx.json) {
      nlohmann::json line = {{"type", "node"}, {"node", n.node}, {"ok", problem.empty()}};
      line["error"] = problem.empty() ? nlohmann::json() : nlohmann::json(problem);
      std::cout << DumpJson(line) << std::endl;
    } else if (!problem.empty()) {
      std::cout << "node " << n.node << ": FAILED: " << problem << std::endl;
    }
  });
  if (!ctx.json) view.Done();
  const int code = ClusterExitCode(codes);
  if (ctx.json) {
    std::cout << DumpJson({{"type", "done"}, {"ok", code == kExitOk}, {"nodes", nodes->size()}})
              << std::endl;
  } else {
    std::cout << (code == kExitOk ? "every node pulled: ok" : "not every node pulled") << " ("
              << nodes->size() << " nodes)" << std::endl;
  }
  return code != kExitOk ? code : CheckServices(config, opt);
}

int RunSync(const Context& ctx, const SyncOptions& opt) {
  std::vector<conf::ConfigProblem> problems;
  Result<conf::Config> config = conf::LoadConfig(ctx.ConfigPath(), &problems);
  if (!config.ok()) {
    for (const auto& p : problems) std::cerr << p.ToString() << "\n";
    return kExitConfig;
  }
  return opt.cluster ? RunClusterSync(ctx, *config, opt) : RunLocalSync(ctx, *config, opt);
}

const CommandRegistrar kRegistrar(/*order=*/20, [](CLI::App& root, Context& ctx) {
  static SyncOptions opt;
  CLI::App* sub = root.add_subcommand(
      "sync-now", "Ask the local agent to pull now; show progress and wait for the result");
  sub->add_option("--peer", opt.peer, "pull only from this peer (default: every peer)");
  sub->add_option("--service", opt.services, "pull only this service (repeatable)");
  sub->add_flag("--cluster", opt.cluster,
                "every node's agent pulls now (this node and each [[peer]] by its `api`), "
                "e.g. before maintenance; with --peer P every node but P pulls P");
  sub->callback([&ctx] { ctx.Run([&ctx] { return RunSync(ctx, opt); }); });
});

}  // namespace
}  // namespace lifeboat::cli
