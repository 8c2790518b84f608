#include "agent/daemon.h"

#include <signal.h>
#include <sys/resource.h>

#include <cerrno>

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "agent/config_options.h"
#include "agent/control_api.h"
#include "agent/drill_runner.h"
#include "agent/http_server.h"
#include "agent/metrics.h"
#include "agent/peer_puller.h"
#include "agent/peer_server.h"
#include "agent/scheduler.h"
#include "agent/sd_notify.h"
#include "agent/status_json.h"
#include "agent/uv.h"
#include "base/env.h"
#include "base/lock_file.h"
#include "base/log.h"
#include "catalog/held_export.h"
#include "catalog/store.h"
#include "exports/exporter.h"
#include "exports/provider.h"
#include "exports/retired.h"
#include "syncproto/session.h"

namespace lifeboat::agent {
namespace {

int64_t Ms(conf::Duration d) { return static_cast<int64_t>(d.count()); }

// After SIGTERM, the most the agent waits for running work before it exits
// anyway (with kExitStopTimedOut, EX_TEMPFAIL).
constexpr int64_t kStopDeadlineMs = 30'000;
constexpr int kExitStopTimedOut = 75;

class Daemon final : public ControlBackend {
 public:
  Daemon(const conf::Config& config, DaemonHooks hooks)
      : cfg_(config), hooks_(std::move(hooks)), clock_(Clock::Real()) {}

  Status Open();
  int Run();

  // ---- ControlBackend ----
  void GetStatus(JsonFn done) override;
  void GetCatalog(JsonFn done) override;
  void GetMetrics(std::function<void(std::string)> done) override;
  void GetReadiness(JsonFn done) override;
  // Logs the deposed instances of r.peer after a successful pull (hooks_.deposed).
  void WarnDeposed(const PullResult& r);
  void GetRestores(JsonFn done) override;
  void Repair(JsonFn done) override;
  std::string Unhealthy() override { return stopping_ ? "the agent is stopping" : ""; }
  Status SyncFrom(const std::string& peer, const std::string& from, bool allow_older,
                  ProgressFn progress,
                  std::function<void(const std::vector<PullResult>&)> done) override;
  Status Sync(const std::string& peer, const std::vector<std::string>& services,
              ProgressFn progress,
              std::function<void(const std::vector<PullResult>&)> done) override;

 private:
  void BeginStop(int signum);
  void RefreshRecord(const std::string& peer);
  nlohmann::json PeersJson(int64_t now) const;
  MetricsSnapshot LoopMetrics(int64_t now) const;

  conf::Config cfg_;
  DaemonHooks hooks_;
  Clock* clock_;
  uv_loop_t loop_;
  bool loop_open_ = false;
  std::optional<LockFile> data_dir_lock_;  // one agent per data_dir
  std::unique_ptr<catalog::Store> store_;
  std::unique_ptr<catalog::HeldExport> held_;
  std::unique_ptr<exports::Provider> provider_;
  std::unique_ptr<exports::Exporter> exporter_;
  std::unique_ptr<syncproto::SignatureCache> sig_cache_;
  std::unique_ptr<TokenBucket> bwlimit_;
  std::unique_ptr<PeerServer> peer_server_;
  std::unique_ptr<ControlApi> api_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<DrillRunner> drills_;
  std::unique_ptr<Timer> scrub_timer_;  // every agent.scrub_interval (when set)
  bool scrubbing_ = false;              // a Scrub runs on a worker: never two at once
  std::vector<std::unique_ptr<PeerScheduler>> schedulers_;
  std::map<std::string, PullerConfig> puller_configs_;       // by peer name
  std::map<uint64_t, std::unique_ptr<PullJob>> held_pulls_;  // SyncFrom pulls running
  uint64_t next_held_pull_ = 1;
  std::vector<std::unique_ptr<SignalWatcher>> signals_;
  bool stopping_ = false;
  std::unique_ptr<Timer> stop_grace_;
  std::unique_ptr<Timer> stop_deadline_;
  int stop_grace_ticks_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);

 public:
  ~Daemon() {
    *alive_ = false;
    schedulers_.clear();
    drills_.reset();
    scrub_timer_.reset();
    stop_grace_.reset();
    stop_deadline_.reset();
    http_.reset();
    peer_server_.reset();
    signals_.clear();
    if (loop_open_) DrainAndCloseLoop(&loop_);
  }
};

// Raises the soft open-file limit to the hard one: every peer, API client,
// pull and served file holds descriptors, and a default soft limit of 1024
// is a limit nobody chose.
void RaiseOpenFileLimit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max) return;
  rl.rlim_cur = rl.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) {
    log::Warn("could not raise the open-file limit", {{"errno", errno}});
  }
}

Status Daemon::Open() {
  RaiseOpenFileLimit();
  Env& env = *Env::Default();
  const std::string& data_dir = cfg_.agent.data_dir;
  RETURN_IF_ERROR(CreateDirs(env, data_dir, 0700));
  RETURN_IF_ERROR(env.SetMode(data_dir, 0700));
  ASSIGN_OR_RETURN(LockFile lock, LockFile::Acquire(JoinPath(data_dir, ".agent.lock"),
                                                    "agent.data_dir " + data_dir));
  data_dir_lock_.emplace(std::move(lock));

  ASSIGN_OR_RETURN(store_,
                   catalog::Store::Open(env, *clock_, StoreOptionsFor(cfg_, /*read_only=*/false)));

  std::string export_state = JoinPath(data_dir, ".export");
  RETURN_IF_ERROR(CreateDirs(env, export_state, 0700));
  if (cfg_.export_.provider == conf::ExportProvider::kDir) {
    provider_ = exports::MakeDirProvider(env, cfg_.export_.root);
  } else {
    exports::SmartosOptions o;
    o.cache_dir = JoinPath(export_state, "smartos-cache");
    o.destroy_leftover_snapshots = true;  // the agent is the one process taking them
    o.sapi_command = cfg_.export_.sapi_command;
    ASSIGN_OR_RETURN(provider_, exports::MakeSmartosProvider(env, o));
  }
  // What `lifeboat retire` stopped here is no longer exported (exports/retired.h).
  provider_ = exports::WithoutRetired(env, std::move(provider_), data_dir);
  exports::ExporterOptions eo;
  eo.provider = provider_.get();
  eo.services = cfg_.export_.services;
  eo.state_dir = export_state;
  eo.node_uuid = cfg_.node.uuid;
  eo.node_name = cfg_.node.name;
  eo.full_walk_interval_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(cfg_.export_.full_walk_interval)
          .count();
  ASSIGN_OR_RETURN(exporter_, exports::Exporter::Open(env, *clock_, eo));
  sig_cache_ = syncproto::NewMemorySignatureCache(4096);

  uv_loop_init(&loop_);
  loop_open_ = true;
  if (cfg_.agent.bwlimit > 0) {
    bwlimit_ = std::make_unique<TokenBucket>(cfg_.agent.bwlimit, cfg_.agent.bwlimit / 4 + 65536,
                                             static_cast<int64_t>(uv_now(&loop_)));
  }

  std::shared_ptr<const syncproto::TlsContext> tls_server, tls_client;
  if (std::optional<syncproto::TlsConfig> tc = TlsConfigFor(cfg_)) {
    ASSIGN_OR_RETURN(tls_server, syncproto::TlsContext::Create(syncproto::TlsRole::kServer, *tc));
    ASSIGN_OR_RETURN(tls_client, syncproto::TlsContext::Create(syncproto::TlsRole::kClient, *tc));
  }

  PeerServerOptions pso;
  pso.tls = tls_server;
  pso.host = cfg_.agent.listen.host;
  pso.port = cfg_.agent.listen.port;
  pso.cluster_key = cfg_.auth.cluster_key;
  pso.self = {cfg_.node.uuid, cfg_.node.name};
  pso.handshake_timeout_ms = Ms(cfg_.agent.limits.connect_timeout);
  pso.io_timeout_ms = Ms(cfg_.agent.limits.io_timeout);
  held_ = std::make_unique<catalog::HeldExport>(env, store_.get());
  pso.held = held_.get();
  ASSIGN_OR_RETURN(peer_server_, PeerServer::Start(&loop_, exporter_.get(), pso));

  api_ = std::make_unique<ControlApi>(this, cfg_.auth.api_token);
  ASSIGN_OR_RETURN(
      http_, HttpServer::Listen(&loop_, cfg_.agent.api.host, cfg_.agent.api.port,
                                [this](const HttpRequest& req, std::shared_ptr<HttpResponse> resp) {
                                  api_->Handle(req, std::move(resp));
                                }));

  SchedulePolicy policy;
  policy.interval_ms = Ms(cfg_.agent.interval);
  policy.jitter = cfg_.agent.jitter;
  std::map<std::string, catalog::PeerState> held;
  for (auto& p : store_->Peers()) held[p.name] = p;
  Jitter first;
  for (const auto& peer : cfg_.peers) {
    PullerConfig pc;
    pc.peer = peer.name;
    pc.host = peer.address.host;
    pc.port = peer.address.port;
    pc.cluster_key = cfg_.auth.cluster_key;
    pc.tls = tls_client;
    pc.self = {cfg_.node.uuid, cfg_.node.name};
    pc.connect_timeout_ms = Ms(cfg_.agent.limits.connect_timeout);
    pc.io_timeout_ms = Ms(cfg_.agent.limits.io_timeout);
    pc.deadline_ms = Ms(cfg_.agent.limits.pull_deadline);
    pc.max_files_in_flight = cfg_.agent.limits.max_files_in_flight;
    pc.max_memory = cfg_.agent.limits.max_memory;
    pc.bwlimit = bwlimit_.get();
    pc.store = store_.get();
    pc.cache = sig_cache_.get();
    pc.clock = clock_;
    puller_configs_[peer.name] = pc;
    uv_loop_t* loop = &loop_;
    auto starter = [loop, pc](const PullRequest& r, ProgressFn p, PullDoneFn d) {
      return StartPeerPull(loop, pc, r, std::move(p), std::move(d));
    };
    auto s =
        std::make_unique<PeerScheduler>(&loop_, peer.name, peer.address.ToString(), policy, starter,
                                        clock_, [this](const PullResult& r) { WarnDeposed(r); });
    if (auto it = held.find(peer.name); it != held.end()) {
      s->SeedRecord(it->second.generation, it->second.last_pull_ms);
    }
    // The first periodic pull comes early (5-25% of the interval) so a
    // restarted agent catches up soon, spread so peers do not start together.
    s->Start(static_cast<int64_t>(policy.interval_ms * (0.05 + 0.2 * first.Next())));
    schedulers_.push_back(std::move(s));
  }

  if (!hooks_.drill_argv.empty() && cfg_.drill.interval.count() > 0) {
    drills_ = std::make_unique<DrillRunner>(&loop_, hooks_.drill_argv, Ms(cfg_.drill.interval));
    drills_->Start();
  }
  if (cfg_.agent.scrub_interval.count() > 0) {
    const int64_t every = Ms(cfg_.agent.scrub_interval);
    scrub_timer_ = std::make_unique<Timer>(&loop_);
    scrub_timer_->Start(
        every,
        [this] {
          Repair([](Result<nlohmann::json> r) {
            if (!r.ok())
              log::Warn("catalog: scheduled scrub failed", {{"error", r.status().message()}});
          });
        },
        every);
  }

  for (int signum : {SIGTERM, SIGINT}) {
    signals_.push_back(
        std::make_unique<SignalWatcher>(&loop_, signum, [this](int s) { BeginStop(s); }));
  }
  // SIGHUP (a closed terminal, `kill -HUP` by habit) must not kill the
  // agent; it does not reload either: configuration changes need a restart.
  signals_.push_back(std::make_unique<SignalWatcher>(&loop_, SIGHUP, [](int) {
    log::Warn(
        "SIGHUP ignored: the agent does not reload its configuration; restart it to apply "
        "changes");
  }));
  ::signal(SIGPIPE, SIG_IGN);
  return Status::Ok();
}

int Daemon::Run() {
  nlohmann::json peers = nlohmann::json::array();
  for (const auto& p : cfg_.peers) peers.push_back(p.name);
  log::Info("lifeboat agent ready",
            {{"node", cfg_.node.name},
             {"listen", FormatHostPort(cfg_.agent.listen.host, peer_server_->port())},
             {"api", FormatHostPort(cfg_.agent.api.host, http_->port())},
             {"data_dir", cfg_.agent.data_dir},
             {"transport", conf::TransportName(cfg_.auth.transport)},
             {"export_generation", exporter_->generation()},
             {"peers", peers}});
  if (Status st = SdNotify("READY=1\nSTATUS=serving and pulling"); !st.ok()) {
    log::Warn("sd_notify failed", {{"err", st.ToString()}});
  }
  uv_run(&loop_, UV_RUN_DEFAULT);
  log::Info("lifeboat agent stopped", {{"node", cfg_.node.name}});
  return 0;
}

void Daemon::BeginStop(int signum) {
  if (stopping_) {
    log::Info("already stopping; waiting for running commits", {{"signal", signum}});
    return;
  }
  stopping_ = true;
  log::Info("stopping", {{"signal", signum == SIGTERM ? "SIGTERM" : "SIGINT"}});
  // A worker stuck in the kernel (a hung filesystem) must not keep the agent
  // from stopping: past the deadline it exits at once. Every commit is
  // crash-safe (one commit point), so nothing held is lost.
  stop_deadline_ = std::make_unique<Timer>(&loop_);
  stop_deadline_->Start(kStopDeadlineMs, [] {
    log::Error("stopping took too long: work is stuck; exiting without waiting for it",
               {{"deadline_ms", kStopDeadlineMs}, {"work_in_flight", WorkInFlight()}});
    std::_Exit(kExitStopTimedOut);
  });
  stop_deadline_->Unref();  // a clean stop ends the loop without waiting for it
  SdNotify("STOPPING=1").IgnoreError();
  peer_server_->StopAccepting();
  http_->StopAccepting();
  if (drills_) drills_->Stop();
  if (scrub_timer_) scrub_timer_->Stop();
  for (auto& [id, job] : held_pulls_) job->Cancel(UnavailableError("the agent is stopping", false));
  auto remaining = std::make_shared<size_t>(schedulers_.size());
  std::weak_ptr<bool> alive = alive_;
  auto finish = [this, alive] {
    if (alive.expired()) return;
    // Nothing pulls any more: close the rest so the loop can end. API
    // responses being flushed (sync-now results) get a short grace.
    peer_server_->CloseAll();
    signals_.clear();
    if (http_->open_connections() == 0) return;
    stop_grace_ = std::make_unique<Timer>(&loop_);
    stop_grace_->Start(
        100,
        [this] {
          if (http_->open_connections() == 0 || ++stop_grace_ticks_ >= 30) {
            http_->CloseAll();
            stop_grace_->Stop();
          }
        },
        100);
  };
  if (schedulers_.empty()) {
    finish();
    return;
  }
  for (auto& s : schedulers_) {
    s->Stop(UnavailableError("the agent is stopping", false), [remaining, finish] {
      if (--*remaining == 0) finish();
    });
  }
}

Status Daemon::Sync(const std::string& peer, const std::vector<std::string>& services,
                    ProgressFn progress, std::function<void(const std::vector<PullResult>&)> done) {
  if (stopping_) return UnavailableError("the agent is stopping", false);
  std::vector<PeerScheduler*> targets;
  for (auto& s : schedulers_) {
    if (peer.empty() || s->record().name == peer) targets.push_back(s.get());
  }
  if (targets.empty()) {
    if (!peer.empty()) return NotFoundError("no peer named '" + peer + "' in the configuration");
    Defer(&loop_, [done] { done({}); });
    return Status::Ok();
  }
  struct Agg {
    std::vector<PullResult> results;
    size_t remaining;
    std::function<void(const std::vector<PullResult>&)> done;
  };
  auto agg = std::make_shared<Agg>(Agg{{}, targets.size(), std::move(done)});
  for (PeerScheduler* s : targets) {
    s->SyncNow(PullRequest{services, "sync-now"}, {progress, [agg](const PullResult& r) {
                                                     agg->results.push_back(r);
                                                     if (--agg->remaining == 0)
                                                       agg->done(agg->results);
                                                   }});
  }
  return Status::Ok();
}

// The peer's record (status, restore) shows the generation the catalog now
// holds, after a pull outside the peer's scheduler.
void Daemon::RefreshRecord(const std::string& peer) {
  std::optional<catalog::PeerState> held = store_->Peer(peer);
  if (!held) return;
  for (auto& s : schedulers_) {
    if (s->record().name == peer) s->SeedRecord(held->generation, held->last_pull_ms);
  }
}

Status Daemon::SyncFrom(const std::string& peer, const std::string& from, bool allow_older,
                        ProgressFn progress,
                        std::function<void(const std::vector<PullResult>&)> done) {
  if (stopping_) return UnavailableError("the agent is stopping", false);
  auto p = puller_configs_.find(peer);
  if (p == puller_configs_.end()) {
    return NotFoundError("no peer named '" + peer + "' in the configuration");
  }
  auto n = puller_configs_.find(from);
  if (n == puller_configs_.end() || from == peer) {
    return NotFoundError("no other node named '" + from + "' in the configuration");
  }
  PullerConfig pc = p->second;
  pc.held_peer = peer;
  pc.allow_older = allow_older;
  pc.host = n->second.host;
  pc.port = n->second.port;
  log::Info("pulling a peer's copy held by another node", {{"peer", peer}, {"from", from}});
  uint64_t id = next_held_pull_++;
  std::weak_ptr<bool> alive = alive_;
  auto finished = [this, alive, id, done = std::move(done)](const PullResult& r) {
    if (alive.expired()) return;
    if (r.status.ok()) RefreshRecord(r.peer);
    done({r});
    // Never delete the job from inside its own callback: drop it on a later turn.
    Defer(&loop_, [this, alive, id] {
      if (!alive.expired()) held_pulls_.erase(id);
    });
  };
  held_pulls_[id] = StartPeerPull(&loop_, pc, PullRequest{{}, "from-freshest"}, std::move(progress),
                                  std::move(finished));
  return Status::Ok();
}

nlohmann::json Daemon::PeersJson(int64_t now) const {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& s : schedulers_) {
    const PeerRecord& r = s->record();
    int64_t age_ms = DataAgeMs(r, now, clock_->MonotonicMs());
    nlohmann::json p = {
        {"name", r.name},
        {"address", r.address},
        // Unknown (null) until this agent's first attempt at the peer ended.
        {"reachable", r.pulls_total > 0 ? nlohmann::json(r.reachable) : nlohmann::json()},
        {"phase", PullPhaseName(r.phase)},
        {"last_attempt", WallOrNull(r.last_attempt_wall_ms)},
        {"last_success", WallOrNull(r.last_success_wall_ms)},
        {"age_seconds", age_ms >= 0 ? nlohmann::json(age_ms / 1000) : nlohmann::json(nullptr)},
        {"clock_changed", age_ms == kClockChangedMs},
        {"stale", age_ms < 0 || age_ms > Ms(cfg_.agent.stale_after)},
        {"generation", r.generation},
        {"last_error",
         r.last_error.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.last_error)},
        {"last_error_code",
         r.last_error_code.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.last_error_code)},
        {"consecutive_failures", r.consecutive_failures},
        {"pulls", r.pulls_total},
        {"pulls_failed", r.pulls_failed},
        {"wire_bytes", r.wire_bytes_total},
        {"file_bytes", r.file_bytes_total},
        {"files", r.files_total},
        {"next_pull_in_seconds", s->NextPullInMs() / 1000}};
    if (r.last_result) p["last_result"] = ResultToJson(*r.last_result);
    out.push_back(std::move(p));
  }
  return out;
}

void Daemon::GetStatus(JsonFn done) {
  int64_t now = clock_->WallMs();
  auto result = std::make_shared<nlohmann::json>(
      nlohmann::json{{"agent_running", true},
                     {"node", {{"uuid", cfg_.node.uuid}, {"name", cfg_.node.name}}},
                     {"now", FormatIso8601Ms(now)},
                     {"stopping", stopping_},
                     {"stale_after_seconds", Ms(cfg_.agent.stale_after) / 1000},
                     {"interval_seconds", Ms(cfg_.agent.interval) / 1000},
                     {"peers", PeersJson(now)},
                     {"server",
                      {{"accepted", peer_server_->stats().accepted},
                       {"open", peer_server_->stats().open},
                       {"auth_failures", peer_server_->stats().auth_failures}}}});
  catalog::Store* store = store_.get();
  exports::Exporter* exporter = exporter_.get();
  QueueWork(
      &loop_,
      [result, store, exporter, now] {
        (*result)["services"] = ServicesJson(store->Instances(), now);
        (*result)["last_scrub"] = LastScrubJson(store->LastScrub(), now);
        (*result)["export"] = {{"generation", exporter->generation()},
                               {"boot_id", exporter->boot_id()}};
      },
      [result, done] { done(std::move(*result)); });
}

void Daemon::GetCatalog(JsonFn done) {
  auto result = std::make_shared<nlohmann::json>();
  catalog::Store* store = store_.get();
  const int64_t now = clock_->WallMs();
  QueueWork(
      &loop_,
      [result, store, now] {
        nlohmann::json inst = nlohmann::json::array();
        for (const auto& i : store->Instances()) inst.push_back(InstanceJson(i, now));
        nlohmann::json images = nlohmann::json::array();
        for (const auto& im : store->Images()) {
          images.push_back({{"uuid", im.uuid},
                            {"origin", im.origin},
                            {"size", im.size},
                            {"referenced", im.referenced}});
        }
        nlohmann::json peers = nlohmann::json::array();
        for (const auto& p : store->Peers()) {
          peers.push_back({{"name", p.name},
                           {"node_uuid", p.node_uuid},
                           {"node_name", p.node_name},
                           {"generation", p.generation},
                           {"last_pull", WallOrNull(p.last_pull_ms)},
                           {"last_error", p.last_error}});
        }
        *result = {{"data_dir", store->data_dir()},
                   {"peers", std::move(peers)},
                   {"instances", std::move(inst)},
                   {"images", std::move(images)}};
      },
      [result, done] { done(std::move(*result)); });
}

MetricsSnapshot Daemon::LoopMetrics(int64_t now) const {
  MetricsSnapshot m;
  m.now_wall_ms = now;
  bool all_succeeded = true;
  int64_t oldest_age_ms = 0;
  for (const auto& s : schedulers_) {
    const PeerRecord& r = s->record();
    PeerMetrics p;
    p.peer = r.name;
    p.pulls_total = r.pulls_total;
    p.pulls_failed_total = r.pulls_failed;
    p.bytes_received_total = r.wire_bytes_total;
    p.file_bytes_total = r.file_bytes_total;
    p.files_total = r.files_total;
    p.last_success_wall_ms = r.last_success_wall_ms;
    p.generation = r.generation;
    p.up = r.reachable;
    p.pulling = r.phase != PullPhase::kIdle;
    p.consecutive_failures = r.consecutive_failures;
    m.peers.push_back(p);
    int64_t age_ms = DataAgeMs(r, now, clock_->MonotonicMs());
    if (age_ms < 0) all_succeeded = false;
    oldest_age_ms = std::max(oldest_age_ms, age_ms);
  }
  // The gauge is now - oldest success: expressed from the (jump-proof) age.
  m.oldest_success_wall_ms = all_succeeded && !schedulers_.empty() ? now - oldest_age_ms : 0;
  const auto& ss = peer_server_->stats();
  m.served_connections_total = ss.accepted;
  m.served_connections_open = ss.open;
  m.served_auth_failures_total = ss.auth_failures;
  m.served_bytes_total = ss.bytes_sent;
  return m;
}

void Daemon::GetMetrics(std::function<void(std::string)> done) {
  auto m = std::make_shared<MetricsSnapshot>(LoopMetrics(clock_->WallMs()));
  auto readiness = std::make_shared<std::string>();
  catalog::Store* store = store_.get();
  exports::Exporter* exporter = exporter_.get();
  auto hook = hooks_.readiness;
  QueueWork(
      &loop_,
      [m, readiness, store, exporter, hook] {
        uint64_t n = 0;
        std::map<std::string, uint64_t> incomplete;
        for (const auto& i : store->Instances()) {
          n += !i.removed;
          if (!i.removed && !i.warnings.empty()) ++incomplete[i.peer];
        }
        m->instances_held = n;
        for (auto& p : m->peers) p.instances_incomplete = incomplete[p.peer];
        m->export_generation = exporter->generation();
        if (!hook) return;
        Result<nlohmann::json> r = hook(*store);
        if (r.ok()) *readiness = RenderReadinessMetrics(*r);
      },
      [m, readiness, done] { done(RenderMetrics(*m) + *readiness); });
}

// The scrub runs on a worker (QueueWork: low CPU and idle I/O priority); the peers
// whose copies lost objects are pulled at once (their next pull re-fetches
// exactly what is missing), without waiting for those pulls.
void Daemon::Repair(JsonFn done) {
  if (stopping_) return done(UnavailableError("the agent is stopping", false));
  if (scrubbing_) return done(UnavailableError("a scrub of this catalog is already running"));
  scrubbing_ = true;
  auto result = std::make_shared<Result<catalog::RepairReport>>(InternalError("not run"));
  catalog::Store* store = store_.get();
  std::shared_ptr<bool> alive = alive_;
  QueueWork(
      &loop_, [result, store] { *result = store->Scrub(/*repair=*/true); },
      [this, alive, result, done] {
        if (!*alive) return;
        scrubbing_ = false;
        if (!result->ok()) return done(result->status());
        for (const std::string& peer : (*result)->peers_to_pull) {
          Status st = Sync(
              peer, {}, [](const PullProgress&) {}, [](const std::vector<PullResult>&) {});
          if (!st.ok())
            log::Warn("catalog: no pull after the repair",
                      {{"peer", peer}, {"error", st.message()}});
        }
        done(RepairJson(**result));
      });
}

void Daemon::WarnDeposed(const PullResult& r) {
  if (!hooks_.deposed || !r.status.ok()) return;
  catalog::Store* store = store_.get();
  QueueWork(
      &loop_,
      [store, hook = hooks_.deposed, peer = r.peer] {
        for (const std::string& line : hook(*store, peer)) {
          log::Warn("a deposed instance is still exported by the peer: run `lifeboat retire` there",
                    {{"peer", peer}, {"deposed", line}});
        }
      },
      [] {});
}

void Daemon::GetReadiness(JsonFn done) {
  if (!hooks_.readiness) return ControlBackend::GetReadiness(std::move(done));
  auto result = std::make_shared<Result<nlohmann::json>>(InternalError("not computed"));
  catalog::Store* store = store_.get();
  auto hook = hooks_.readiness;
  QueueWork(
      &loop_, [result, store, hook] { *result = hook(*store); },
      [result, done] { done(std::move(*result)); });
}

void Daemon::GetRestores(JsonFn done) {
  if (!hooks_.restores) return ControlBackend::GetRestores(std::move(done));
  auto result = std::make_shared<Result<nlohmann::json>>(InternalError("not computed"));
  auto hook = hooks_.restores;
  QueueWork(
      &loop_, [result, hook] { *result = hook(); }, [result, done] { done(std::move(*result)); });
}

}  // namespace

int RunDaemon(const conf::Config& config, DaemonHooks hooks) {
  log::Init("lifeboat", log::Format::kAuto, config.agent.log_level);
  for (const auto& w : config.warnings) log::Warn("config", {{"warning", w.ToString()}});
  Daemon d(config, std::move(hooks));
  Status st = d.Open();
  if (!st.ok()) {
    log::Error("lifeboat agent failed to start", {{"err", st.ToString()}});
    return st.ExitCode();
  }
  return d.Run();
}

}  // namespace lifeboat::agent
