// `lifeboat sync-now [--peer P] [--service S]...`: asks the local agent to
// pull now and shows its progress until every asked pull finished. Output: on
// a terminal one line per peer (never wider than the terminal: phase, files
// and bytes done, bytes received so far, rate and ETA), one JSON object per
// line (NDJSON) with -j, plain lines per phase change otherwise. A --service
// that no instance of the asked peers has after the pull is an error (exit
// 64, with the services held and the closest name), not "ok, unchanged".
// Exit 0 when every pull succeeded, 69 when the agent is not running, 75 when
// a pull failed, 64 for an unknown peer or service.
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include <iostream>
#include <map>
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
#include "conf/config.h"

namespace lifeboat::cli {
namespace {

struct SyncOptions {
  std::string peer;
  std::vector<std::string> services;
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
std::string ProgressLine(const PeerProgress& pp, std::chrono::steady_clock::time_point now,
                         size_t width) {
  const nlohmann::json& p = pp.last;
  const uint64_t bt = p.value("bytes_total", 0ull), bd = p.value("bytes_done", 0ull);
  const uint64_t ft = p.value("files_total", 0ull), fd = p.value("files_done", 0ull);
  const double frac = bt > 0 ? static_cast<double>(bd) / static_cast<double>(bt)
                             : (ft > 0 ? static_cast<double>(fd) / static_cast<double>(ft) : 0.0);
  const int bar_width = 10;
  const int filled = std::clamp(static_cast<int>(frac * bar_width), 0, bar_width);
  std::string line = p.value("peer", "?") + " " + p.value("phase", "?") + " [" +
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

// Renders progress packets for a human: on a terminal one line per peer,
// redrawn in place, results printed above them; otherwise one plain line per
// phase change.
class ProgressView {
 public:
  explicit ProgressView(bool tty) : tty_(tty), width_(tty ? TerminalWidth() : 80) {}

  void Progress(const nlohmann::json& p) {
    std::string peer = p.value("peer", "?");
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

  void Result(const nlohmann::json& r) {
    std::string peer = r.value("peer", "?");
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
      std::cout << "\r\033[K" << ProgressLine(pp, now, width_) << "\n";
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

int RunSync(const Context& ctx, const SyncOptions& opt) {
  std::vector<conf::ConfigProblem> problems;
  Result<conf::Config> config = conf::LoadConfig(ctx.ConfigPath(), &problems);
  if (!config.ok()) {
    for (const auto& p : problems) std::cerr << p.ToString() << "\n";
    return kExitConfig;
  }
  agent::ApiCall call =
      agent::ApiCallFor(config->agent.api.host, config->agent.api.port, config->auth.api_token);
  call.method = "POST";
  call.target = "/sync";
  std::string sep = "?";
  if (!opt.peer.empty()) {
    call.target += sep + "peer=" + agent::QueryEscape(opt.peer);
    sep = "&";
  }
  if (!opt.services.empty()) {
    call.target += sep + "service=" + agent::QueryEscape(Join(opt.services, ","));
  }
  // A pull may sit in its commit without progress; never give up before its deadline.
  call.read_timeout_ms = config->agent.limits.pull_deadline.count() + 60'000;

  bool tty = !ctx.json && ::isatty(STDOUT_FILENO);
  ProgressView view(tty);
  bool saw_done = false, all_ok = false;
  size_t results = 0;
  call.on_line = [&](std::string_view line) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) return;
    if (ctx.json) std::cout << DumpJson(j) << std::endl;
    std::string type = j.value("type", "");
    if (type == "progress") {
      if (!ctx.json) view.Progress(j);
    } else if (type == "result") {
      ++results;
      if (!ctx.json) view.Result(j);
    } else if (type == "done") {
      saw_done = true;
      all_ok = j.value("ok", false);
    }
  };
  Result<agent::ApiReply> reply = agent::CallApi(call);
  if (!ctx.json) view.Done();
  if (!reply.ok()) {
    std::cerr << "lifeboat sync-now: " << reply.status().message() << "\n";
    return reply.status().code() == Code::kUnavailable ? kExitUnavailable : kExitTemporary;
  }
  if (reply->status != 200) {
    nlohmann::json e = nlohmann::json::parse(reply->body, nullptr, false);
    std::string msg = e.is_object() ? e.value("message", reply->body) : reply->body;
    if (ctx.json)
      std::cout << (e.is_object() ? DumpJson(e) : DumpJson(nlohmann::json{{"message", msg}})) << "\n";
    std::cerr << "lifeboat sync-now: " << msg << "\n";
    if (reply->status == 404 || reply->status == 400) return kExitUsage;
    if (reply->status == 503) return kExitUnavailable;
    return kExitSoftware;
  }
  if (!saw_done) {
    std::cerr << "lifeboat sync-now: the agent ended the stream before the result\n";
    return kExitTemporary;
  }
  if (results == 0 && !ctx.json) std::cout << "no peers configured\n";
  if (all_ok && !opt.services.empty()) {
    std::vector<std::string> known;
    const std::vector<std::string> unknown = UnknownServices(*config, opt, &known);
    for (const std::string& s : unknown) {
      std::cerr << "lifeboat sync-now: no instance of service '" << s << "' is held from "
                << (opt.peer.empty() ? "any peer" : opt.peer);
      if (std::string best = ClosestName(s, known); !best.empty()) {
        std::cerr << " (did you mean '" << best << "'?)";
      }
      std::cerr << "; services held: " << (known.empty() ? "none" : Join(known, ", ")) << "\n";
    }
    if (!unknown.empty()) return kExitUsage;
  }
  return all_ok ? kExitOk : kExitTemporary;
}

const CommandRegistrar kRegistrar(/*order=*/20, [](CLI::App& root, Context& ctx) {
  static SyncOptions opt;
  CLI::App* sub = root.add_subcommand(
      "sync-now", "Ask the local agent to pull now; show progress and wait for the result");
  sub->add_option("--peer", opt.peer, "pull only from this peer (default: every peer)");
  sub->add_option("--service", opt.services, "pull only this service (repeatable)");
  sub->callback([&ctx] { ctx.Run([&ctx] { return RunSync(ctx, opt); }); });
});

}  // namespace
}  // namespace lifeboat::cli
