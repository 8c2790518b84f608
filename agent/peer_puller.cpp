#include "agent/peer_puller.h"

#include <algorithm>
#include <array>
#include <memory>
#include <optional>

#include "agent/connection.h"
#include "agent/session_pump.h"
#include "agent/uv.h"
#include "base/log.h"
#include "base/memory.h"
#include "pull/pull_driver.h"

namespace lifeboat::agent {

uint32_t FilesInFlight(uint32_t max_files_in_flight, uint64_t max_memory) {
  uint64_t by_memory = std::max<uint64_t>(1, max_memory >> 20);
  return static_cast<uint32_t>(
      std::max<uint64_t>(1, std::min<uint64_t>(max_files_in_flight, by_memory)));
}

namespace {

using Pump = SessionPump<pull::PullDriver>;

pull::PullDriverOptions DriverOptions(const PullerConfig& cfg, const PullRequest& request) {
  pull::PullDriverOptions o;
  o.peer = cfg.peer;
  o.held_peer = cfg.held_peer;
  o.allow_older = cfg.allow_older;
  o.services = request.services;
  o.cluster_key = cfg.cluster_key;
  o.self = cfg.self;
  o.session.max_in_flight = FilesInFlight(cfg.max_files_in_flight, cfg.max_memory);
  o.session.cache = cfg.cache;
  return o;
}

class PeerPuller final : public PullJob, public std::enable_shared_from_this<PeerPuller> {
 public:
  enum class State {
    kPrepare,
    kConnecting,
    kHandshake,
    kManifest,
    kTransfer,
    kCommit,
    kAborting,
    kDone
  };

  PeerPuller(uv_loop_t* loop, const PullerConfig& cfg, const PullRequest& req, ProgressFn progress,
             PullDoneFn done)
      : loop_(loop),
        cfg_(cfg),
        request_(req),
        progress_(std::move(progress)),
        done_(std::move(done)),
        deadline_(loop),
        ticker_(loop) {
    started_wall_ms_ = cfg.clock->WallMs();
    started_mono_ms_ = static_cast<int64_t>(uv_now(loop));
    phase_since_ms_ = started_mono_ms_;
  }

  void Begin() {
    std::weak_ptr<PeerPuller> weak = shared_from_this();
    deadline_.Start(cfg_.deadline_ms, [weak] {
      if (auto self = weak.lock()) {
        self->Fail(TemporaryError("pull from " + self->cfg_.peer + " exceeded its deadline of " +
                                  std::to_string(self->cfg_.deadline_ms / 1000) + "s"));
      }
    });
    ticker_.Start(
        500,
        [weak] {
          if (auto self = weak.lock()) self->Report();
        },
        500);
    EnterPrepare();
  }

  void Cancel(const Status& why) override { Fail(why); }

 private:
  // ---- one handler per state ----

  // Opens the store's pull transaction on a worker.
  void EnterPrepare() {
    SetState(State::kPrepare);
    auto begun = std::make_shared<Result<std::unique_ptr<pull::PullDriver>>>(
        InternalError("pull not prepared"));
    auto self = shared_from_this();
    QueueWork(
        loop_,
        [store = cfg_.store, opts = DriverOptions(cfg_, request_), begun] {
          *begun = pull::PullDriver::Begin(*store, opts);
        },
        [self, begun] {
          self->work_running_ = false;
          if (begun->ok()) self->driver_ = std::move(**begun);
          if (self->state_ != State::kPrepare) {
            self->AfterStateWork();  // cancelled meanwhile: abort the transaction
            return;
          }
          if (!begun->ok()) {
            self->Fail(begun->status());
            return;
          }
          self->EnterConnecting();
        });
    work_running_ = true;
  }

  void EnterConnecting() {
    SetState(State::kConnecting);
    std::weak_ptr<PeerPuller> weak = shared_from_this();
    connector_ = Connector::Connect(loop_, cfg_.host, cfg_.port, cfg_.connect_timeout_ms,
                                    [weak](Result<std::shared_ptr<Connection>> r) {
                                      if (auto self = weak.lock()) self->OnConnected(std::move(r));
                                    });
  }

  void OnConnected(Result<std::shared_ptr<Connection>> r) {
    DeferDelete(loop_, std::move(connector_));
    if (state_ != State::kConnecting) return;
    if (!r.ok()) {
      Fail(r.status());
      return;
    }
    EnterHandshake(std::move(r).value());
  }

  void EnterHandshake(std::shared_ptr<Connection> conn) {
    SetState(State::kHandshake);
    conn->SetIdleTimeout(cfg_.io_timeout_ms);
    if (cfg_.bwlimit != nullptr) conn->SetReadLimiter(cfg_.bwlimit);
    conn_ = conn;
    Status st = driver_->Start();
    if (!st.ok()) {
      Fail(st);
      return;
    }
    std::weak_ptr<PeerPuller> weak = shared_from_this();
    Pump::Hooks hooks;
    hooks.after_work = [weak] {
      if (auto self = weak.lock()) self->AfterSessionWork();
    };
    hooks.on_closed = [weak](const Status& why) {
      if (auto self = weak.lock()) self->OnSessionClosed(why);
    };
    pump_ = std::make_shared<Pump>(loop_, std::move(conn), driver_, std::move(hooks), cfg_.tls);
    // The handshake must finish within the connect timeout.
    handshake_timer_ = std::make_unique<Timer>(loop_);
    handshake_timer_->Start(cfg_.connect_timeout_ms, [weak] {
      auto self = weak.lock();
      if (self && self->state_ == State::kHandshake) {
        self->Fail(UnavailableError("peer " + self->cfg_.peer + " at " + self->Where() +
                                    " did not finish the handshake in time"));
      }
    });
    pump_->Start();
  }

  void AfterSessionWork() {
    if (state_ >= State::kCommit) return;  // the driver is committing, aborting or gone
    if (state_ == State::kHandshake && !pump_->busy() && driver_->authenticated()) {
      handshake_timer_->Stop();
      SetState(State::kManifest);
      pump_->Kick();  // let the driver send the manifest request
      return;
    }
    if (!driver_->error().ok() && state_ < State::kCommit) {
      Fail(driver_->error());
      return;
    }
    if (state_ == State::kManifest && driver_->planned()) {
      SetState(State::kTransfer);
    }
    if (state_ == State::kTransfer) {
      if (driver_->transfers_done()) {
        EnterCommit();
        return;
      }
      // Files finished inside Feed leave room for more requests.
      if (driver_->CanRequestMore()) pump_->Kick();
    }
  }

  void OnSessionClosed(const Status& why) {
    session_closed_ = true;
    if (state_ == State::kCommit || state_ == State::kDone) return;
    if (state_ == State::kAborting) {
      AfterStateWork();
      return;
    }
    if (driver_->transfers_done()) {
      EnterCommit();
      return;
    }
    Status err =
        why.ok() ? UnavailableError("peer closed the connection before the pull finished") : why;
    Fail(err);
  }

  void EnterCommit() {
    if (state_ == State::kCommit) return;
    SetState(State::kCommit);
    deadline_.Stop();  // a commit always finishes
    auto committed = std::make_shared<Result<uint64_t>>(InternalError("commit did not run"));
    auto self = shared_from_this();
    work_running_ = true;
    QueueWork(
        loop_, [driver = driver_, committed] { *committed = driver->Commit(); },
        [self, committed] {
          self->work_running_ = false;
          if (committed->ok()) self->instances_after_ = **committed;
          self->Finish(committed->status());
        });
  }

  // Any failure before the commit: close the session, then abort the store txn.
  void Fail(const Status& why) {
    if (state_ == State::kCommit || state_ == State::kAborting || state_ == State::kDone) return;
    fail_why_ = why;
    if (state_ == State::kConnecting && connector_) {
      DeferDelete(loop_, std::move(connector_));
    }
    SetState(State::kAborting);
    if (pump_ && !session_closed_) pump_->Close(why);
    AfterStateWork();
  }

  // In kAborting: once no session or store work runs, drop the session on the
  // loop and abort the transaction on the worker.
  void AfterStateWork() {
    if (state_ != State::kAborting || abort_started_) return;
    if (work_running_) return;
    if (pump_ && (!session_closed_ || pump_->busy())) return;
    abort_started_ = true;
    auto self = shared_from_this();
    auto pump = std::move(pump_);
    Defer(loop_, [self, pump]() mutable {
      pump.reset();
      auto why = std::make_shared<Status>(self->fail_why_);
      QueueWork(
          self->loop_,
          [driver = self->driver_, why] {
            if (driver) *why = driver->Abort(*why);
          },
          [self, why] { self->Finish(*why); });
    });
  }

  void Finish(const Status& status) {
    if (state_ == State::kDone) return;
    SetState(State::kDone);
    deadline_.Stop();
    ticker_.Stop();
    if (handshake_timer_) handshake_timer_->Stop();
    PullResult r;
    r.peer = cfg_.peer;
    r.status =
        status.ok() ? status : status.WithContext("pull from " + cfg_.peer + " (" + Where() + ")");
    const pull::PullCounts counts = driver_ ? driver_->counts() : pull::PullCounts{};
    r.generation = !driver_ ? 0 : status.ok() ? driver_->generation() : driver_->since_generation();
    r.unchanged = status.ok() && driver_ && driver_->unchanged();
    r.files = counts.files_done;
    r.file_bytes = counts.bytes_done;
    r.wire_bytes = conn_ ? conn_->bytes_read() : 0;
    r.instances = instances_after_;
    r.started_wall_ms = started_wall_ms_;
    r.duration_ms = static_cast<int64_t>(uv_now(loop_)) - started_mono_ms_;
    nlohmann::json fields = {{"peer", r.peer},
                             {"generation", r.generation},
                             {"files", r.files},
                             {"bytes", r.file_bytes},
                             {"wire_bytes", r.wire_bytes},
                             {"duration_ms", r.duration_ms},
                             {"reason", request_.reason},
                             {"outcome", !status.ok()  ? "failed"
                                         : r.unchanged ? "unchanged"
                                                       : "ok"}};
    if (!request_.services.empty()) fields["services"] = request_.services;
    auto ms = [&](State st) { return phase_ms_[static_cast<size_t>(st)]; };
    fields["phase_ms"] = {{"connect", ms(State::kPrepare) + ms(State::kConnecting)},
                          {"handshake", ms(State::kHandshake)},
                          {"manifest", ms(State::kManifest)},
                          {"transfer", ms(State::kTransfer)},
                          {"commit", ms(State::kCommit)},
                          {"abort", ms(State::kAborting)}};
    if (pump_) fields["pump_ms"] = pump_->times().Json();
    if (status.ok()) {
      log::Info("pull", fields);
    } else {
      fields["err"] = r.status.ToString();
      log::Warn("pull", fields);
    }
    // Drop the session and socket now; the result goes out on a later turn.
    if (pump_ && !session_closed_) pump_->Close(Status::Ok());
    if (pump_ || driver_) {
      Defer(loop_, [p = std::move(pump_), d = std::move(driver_)]() mutable {
        p.reset();
        d.reset();
      });
    }
    auto done = std::move(done_);
    progress_ = nullptr;
    Defer(loop_, [loop = loop_, done, r] {
      if (done) done(r);
      // By the next turn the pull (its plan, transfers, session) is freed,
      // mostly from the workers' malloc arenas: hand that back to the OS, or
      // each arena keeps the peak of the largest pull it ever served.
      Defer(loop, [] { ReleaseFreedMemory(); });
    });
  }

  // ---- helpers ----

  void SetState(State s) {
    const int64_t now = static_cast<int64_t>(uv_now(loop_));
    phase_ms_[static_cast<size_t>(state_)] += now - phase_since_ms_;
    phase_since_ms_ = now;
    state_ = s;
    Report();
  }

  void Report() {
    if (!progress_ || state_ == State::kDone || state_ == State::kAborting) return;
    PullProgress p;
    p.peer = cfg_.peer;
    switch (state_) {
      case State::kPrepare:
      case State::kConnecting:
        p.phase = PullPhase::kConnecting;
        break;
      case State::kHandshake:
        p.phase = PullPhase::kHandshake;
        break;
      case State::kManifest:
        p.phase = PullPhase::kManifest;
        break;
      case State::kTransfer:
        p.phase = PullPhase::kTransfer;
        break;
      default:
        p.phase = PullPhase::kCommit;
        break;
    }
    const pull::PullCounts counts = driver_ ? driver_->counts() : pull::PullCounts{};
    p.files_done = counts.files_done;
    p.files_total = counts.files_total;
    p.bytes_done = counts.bytes_done;
    p.bytes_total = counts.bytes_total;
    p.wire_bytes = conn_ ? conn_->bytes_read() : 0;
    bool same = last_sent_ && last_sent_->phase == p.phase &&
                last_sent_->files_done == p.files_done && last_sent_->bytes_done == p.bytes_done &&
                last_sent_->wire_bytes == p.wire_bytes;
    if (same) return;
    last_sent_ = p;
    // Progress goes out on a later turn, never from inside Start/Cancel.
    Defer(loop_, [weak = std::weak_ptr<PeerPuller>(shared_from_this()), p] {
      auto self = weak.lock();
      if (self && self->progress_) self->progress_(p);
    });
  }

  std::string Where() const { return FormatHostPort(cfg_.host, cfg_.port); }

  uv_loop_t* loop_;
  PullerConfig cfg_;
  PullRequest request_;
  // Set once the store's transaction is open; the pump shares it.
  std::shared_ptr<pull::PullDriver> driver_;
  uint64_t instances_after_ = 0;
  ProgressFn progress_;
  PullDoneFn done_;
  Timer deadline_;
  Timer ticker_;
  std::unique_ptr<Timer> handshake_timer_;
  std::unique_ptr<Connector> connector_;
  std::shared_ptr<Connection> conn_;
  std::shared_ptr<Pump> pump_;
  State state_ = State::kPrepare;
  bool work_running_ = false;
  bool session_closed_ = false;
  bool abort_started_ = false;
  Status fail_why_;
  std::optional<PullProgress> last_sent_;
  int64_t started_wall_ms_ = 0;
  int64_t started_mono_ms_ = 0;
  // Milliseconds spent in each state (for the "pull" log line).
  std::array<int64_t, static_cast<size_t>(State::kDone) + 1> phase_ms_{};
  int64_t phase_since_ms_ = 0;
};

// The PullJob handed to the scheduler; the puller itself is shared so its
// callbacks can keep it alive while they run.
class PullerHandle final : public PullJob {
 public:
  explicit PullerHandle(std::shared_ptr<PeerPuller> p) : p_(std::move(p)) {}
  ~PullerHandle() override {
    if (p_) p_->Cancel(UnavailableError("the pull was dropped", false));
  }
  void Cancel(const Status& why) override { p_->Cancel(why); }

 private:
  std::shared_ptr<PeerPuller> p_;
};

}  // namespace

std::unique_ptr<PullJob> StartPeerPull(uv_loop_t* loop, const PullerConfig& config,
                                       const PullRequest& request, ProgressFn progress,
                                       PullDoneFn done) {
  auto p =
      std::make_shared<PeerPuller>(loop, config, request, std::move(progress), std::move(done));
  p->Begin();
  return std::make_unique<PullerHandle>(std::move(p));
}

}  // namespace lifeboat::agent
