#include "agent/peer_puller.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <deque>
#include <map>
#include <mutex>

#include "agent/connection.h"
#include "agent/session_pump.h"
#include "agent/uv.h"
#include "base/log.h"
#include "base/memory.h"

namespace lifeboat::agent {

uint32_t FilesInFlight(uint32_t max_files_in_flight, uint64_t max_memory) {
  uint64_t by_memory = std::max<uint64_t>(1, max_memory >> 20);
  return static_cast<uint32_t>(
      std::max<uint64_t>(1, std::min<uint64_t>(max_files_in_flight, by_memory)));
}

namespace {

using Pump = SessionPump<syncproto::PullerSession>;

// One warning per pull per incomplete instance (not one per skipped path):
// the peer's exporter left paths of it out, so the copy lacks them.
void WarnIncomplete(const catalog::InstanceRecord& r) {
  if (r.warnings.empty()) return;
  log::Warn("pull: incomplete copy: the peer's exporter skipped paths of the instance",
            {{"peer", r.peer},
             {"instance", r.uuid},
             {"alias", r.alias},
             {"skipped", r.warnings.size()},
             {"path", r.warnings.front().path},
             {"reason", r.warnings.front().reason}});
}

// A pull cut short (peer gone, timeout, cancel) names the files it had in
// flight, so the operator sees which transfer broke; an error that already
// names one of them is left alone.
Status NameFilesInFlight(const Status& why,
                         const std::map<std::string, std::unique_ptr<WritableFile>>& staged) {
  if (why.ok() || staged.empty()) return why;
  for (const auto& [path, file] : staged) {
    if (why.message().find(path) != std::string::npos) return why;
  }
  std::string names;
  size_t listed = 0;
  for (const auto& [path, file] : staged) {
    if (listed == 3) {
      names += " and " + std::to_string(staged.size() - listed) + " more";
      break;
    }
    names += (listed++ ? ", " : "") + path;
  }
  return Status(
      why.code(),
      why.message() + " (file" + (staged.size() > 1 ? "s" : "") + " in flight: " + names + ")",
      why.retryable());
}

// State shared by the loop and the worker. Fields without atomics are touched
// only inside work items (serialized by the pump or the single prepare/
// commit/abort item) and read by the loop after such an item completed.
struct Core {
  PullerConfig cfg;
  PullRequest request;
  std::unique_ptr<catalog::PullTxn> txn;
  uint64_t since_generation = 0;
  std::string since_boot_id;

  bool manifest_requested = false;
  std::optional<Result<syncproto::ManifestAnswer>> answer;
  bool planned = false;
  syncproto::ManifestAnswer::Kind kind = syncproto::ManifestAnswer::Kind::kFull;
  uint64_t generation = 0;
  std::vector<catalog::Transfer> transfers;
  size_t next = 0;
  uint32_t in_flight = 0;
  uint32_t max_in_flight = 1;
  std::map<std::string, std::unique_ptr<WritableFile>> staged;
  std::map<std::string, int> retries;
  std::deque<size_t> retry_queue;
  bool finish_sent = false;
  Status error;  // first failure seen on the worker

  std::atomic<uint64_t> files_done{0};
  std::atomic<uint64_t> files_total{0};
  std::atomic<uint64_t> bytes_done{0};
  std::atomic<uint64_t> bytes_total{0};
  std::atomic<bool> transfers_done{false};
  uint64_t instances_after = 0;

  void Fail(Status s) {
    if (error.ok()) error = std::move(s);
  }

  bool AllFilesDone() const {
    return planned && next >= transfers.size() && retry_queue.empty() && in_flight == 0;
  }

  // Worker: queue requests on the session while there is room.
  void Drive(syncproto::PullerSession& s) {
    if (!error.ok()) return;
    if (!manifest_requested) {
      manifest_requested = true;
      auto r = s.RequestHeldManifest(
          cfg.held_peer, since_generation, since_boot_id, request.services,
          [this](Result<syncproto::ManifestAnswer> a) { answer = std::move(a); });
      if (!r.ok()) Fail(r.status());
      return;
    }
    if (answer && !planned) PlanAnswer();
    if (!planned || !error.ok()) return;
    while (in_flight < max_in_flight && error.ok()) {
      size_t idx;
      if (!retry_queue.empty()) {
        idx = retry_queue.front();
        retry_queue.pop_front();
      } else if (next < transfers.size()) {
        idx = next++;
      } else {
        break;
      }
      RequestOne(s, idx);
    }
    if (AllFilesDone() && error.ok() && !finish_sent) {
      finish_sent = true;
      transfers_done = true;
      s.Finish();
    }
  }

  void PlanAnswer() {
    if (!answer->ok()) {
      Fail(answer->status().WithContext("manifest"));
      return;
    }
    const syncproto::ManifestAnswer& a = **answer;
    kind = a.kind;
    generation = a.manifest.generation;
    auto plan = txn->Plan(a);
    if (!plan.ok()) {
      Fail(plan.status().WithContext("plan"));
      return;
    }
    transfers = txn->transfers();
    files_total = transfers.size();
    uint64_t total = 0;
    for (const auto& t : transfers) total += t.entry.size;
    bytes_total = total;
    planned = true;
    if (plan->orphaned) {
      log::Warn("peer went backwards: kept what we held",
                {{"peer", cfg.peer}, {"orphan_dir", plan->orphan_dir}});
    }
  }

  void RequestOne(syncproto::PullerSession& s, size_t idx) {
    const catalog::Transfer& t = transfers[idx];
    auto staged_file = txn->StageFile(t.entry.path);
    if (!staged_file.ok()) {
      Fail(staged_file.status());
      return;
    }
    syncproto::FileRequest fr;
    fr.path = t.entry.path;
    fr.expected = t.entry;
    if (!t.basis_path.empty()) {
      auto basis = txn->OpenBasis(t);
      if (basis.ok()) {
        fr.basis = std::move(basis).value();
      } else {
        log::Warn("basis unreadable; fetching the whole file",
                  {{"peer", cfg.peer}, {"path", t.entry.path}, {"err", basis.status().ToString()}});
      }
    }
    fr.out = staged_file->get();  // the transaction's writer; FinishFile checks it
    fr.sync_output = false;       // Commit fsyncs every staged file
    staged[t.entry.path] = std::move(staged_file).value();
    ++in_flight;
    std::string path = t.entry.path;
    auto r = s.RequestFile(
        std::move(fr), [this, path, idx](const Status& st, const syncproto::FileTransferStats& fs) {
          OnFileDone(path, idx, st, fs);
        });
    if (!r.ok()) {
      --in_flight;
      staged.erase(path);
      Fail(r.status().WithContext(path));
    }
  }

  // Worker (inside Feed/Pump), or the loop from the session's destructor.
  void OnFileDone(const std::string& path, size_t idx, const Status& st,
                  const syncproto::FileTransferStats& fs) {
    --in_flight;
    auto it = staged.find(path);
    std::unique_ptr<WritableFile> file;
    if (it != staged.end()) {
      file = std::move(it->second);
      staged.erase(it);
    }
    if (!error.ok()) return;
    if (!st.ok()) {
      if (st.retryable() && retries[path]++ < 1 && file) {
        log::Info("retrying a file that changed while served",
                  {{"peer", cfg.peer}, {"path", path}});
        retry_queue.push_back(idx);
        return;
      }
      Fail(st.WithContext(path));
      return;
    }
    Status fin = txn->FinishFile(path, std::move(file));
    if (!fin.ok()) {
      Fail(fin);
      return;
    }
    files_done += 1;
    bytes_done += fs.bytes_written;
  }
};

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
        core_(std::make_shared<Core>()),
        progress_(std::move(progress)),
        done_(std::move(done)),
        deadline_(loop),
        ticker_(loop) {
    core_->cfg = cfg;
    core_->request = req;
    core_->max_in_flight = FilesInFlight(cfg.max_files_in_flight, cfg.max_memory);
    started_wall_ms_ = cfg.clock->WallMs();
    started_mono_ms_ = static_cast<int64_t>(uv_now(loop));
    phase_since_ms_ = started_mono_ms_;
  }

  void Begin() {
    std::weak_ptr<PeerPuller> weak = shared_from_this();
    deadline_.Start(core_->cfg.deadline_ms, [weak] {
      if (auto self = weak.lock()) {
        self->Fail(TemporaryError("pull from " + self->core_->cfg.peer +
                                  " exceeded its deadline of " +
                                  std::to_string(self->core_->cfg.deadline_ms / 1000) + "s"));
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

  void EnterPrepare() {
    SetState(State::kPrepare);
    auto core = core_;
    auto st = std::make_shared<Status>();
    auto self = shared_from_this();
    QueueWork(
        loop_,
        [core, st] {
          const auto source = core->cfg.held_peer.empty()
                                  ? catalog::Store::PullSource::kPeer
                              : core->cfg.allow_older
                                  ? catalog::Store::PullSource::kHeldCopyEvenIfOlder
                                  : catalog::Store::PullSource::kHeldCopy;
          auto txn = core->cfg.store->BeginPull(core->cfg.peer, core->request.services, source);
          if (!txn.ok()) {
            *st = txn.status();
            return;
          }
          core->txn = std::move(txn).value();
          if (auto held = core->cfg.store->Peer(core->cfg.peer)) {
            core->since_generation = held->generation;
            core->since_boot_id = held->boot_id;
          }
        },
        [self, st] {
          self->work_running_ = false;
          if (self->state_ != State::kPrepare) {
            self->AfterStateWork();  // cancelled meanwhile
            return;
          }
          if (!st->ok()) {
            self->Fail(*st);
            return;
          }
          self->EnterConnecting();
        });
    work_running_ = true;
  }

  void EnterConnecting() {
    SetState(State::kConnecting);
    std::weak_ptr<PeerPuller> weak = shared_from_this();
    connector_ =
        Connector::Connect(loop_, core_->cfg.host, core_->cfg.port, core_->cfg.connect_timeout_ms,
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
    conn->SetIdleTimeout(core_->cfg.io_timeout_ms);
    if (core_->cfg.bwlimit != nullptr) conn->SetReadLimiter(core_->cfg.bwlimit);
    conn_ = conn;
    syncproto::PullerOptions opts;
    opts.max_in_flight = core_->max_in_flight;
    opts.cache = core_->cfg.cache;
    auto session =
        std::make_unique<syncproto::PullerSession>(core_->cfg.cluster_key, core_->cfg.self, opts);
    Status st = session->Start();
    if (!st.ok()) {
      Fail(st);
      return;
    }
    std::weak_ptr<PeerPuller> weak = shared_from_this();
    std::shared_ptr<Core> core = core_;
    Pump::Hooks hooks;
    hooks.on_worker = [core](syncproto::PullerSession& s) {
      if (s.authenticated()) core->Drive(s);
    };
    hooks.after_work = [weak] {
      if (auto self = weak.lock()) self->AfterSessionWork();
    };
    hooks.on_closed = [weak](const Status& why) {
      if (auto self = weak.lock()) self->OnSessionClosed(why);
    };
    pump_ = std::make_shared<Pump>(loop_, std::move(conn), std::move(session), std::move(hooks),
                                   core_->cfg.tls);
    // The handshake must finish within the connect timeout.
    handshake_timer_ = std::make_unique<Timer>(loop_);
    handshake_timer_->Start(core_->cfg.connect_timeout_ms, [weak] {
      auto self = weak.lock();
      if (self && self->state_ == State::kHandshake) {
        self->Fail(UnavailableError("peer " + self->core_->cfg.peer + " at " + self->Where() +
                                    " did not finish the handshake in time"));
      }
    });
    pump_->Start();
  }

  void AfterSessionWork() {
    if (state_ == State::kHandshake && !pump_->busy() && pump_->session().authenticated()) {
      handshake_timer_->Stop();
      SetState(State::kManifest);
      pump_->Kick();  // let Drive() send the manifest request
      return;
    }
    if (!core_->error.ok() && state_ < State::kCommit) {
      Fail(core_->error);
      return;
    }
    if (state_ == State::kManifest && core_->planned) {
      SetState(State::kTransfer);
    }
    if (state_ == State::kTransfer) {
      if (core_->transfers_done) {
        EnterCommit();
        return;
      }
      // Files finished inside Pump leave room for more requests.
      if (core_->in_flight < core_->max_in_flight &&
          (core_->next < core_->transfers.size() || !core_->retry_queue.empty())) {
        pump_->Kick();
      }
    }
  }

  void OnSessionClosed(const Status& why) {
    session_closed_ = true;
    if (state_ == State::kCommit || state_ == State::kDone) return;
    if (state_ == State::kAborting) {
      AfterStateWork();
      return;
    }
    if (core_->transfers_done) {
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
    auto core = core_;
    auto st = std::make_shared<Status>();
    auto self = shared_from_this();
    work_running_ = true;
    QueueWork(
        loop_,
        [core, st] {
          *st = core->txn->Commit();
          if (st->ok()) {
            uint64_t n = 0;
            for (const auto& i : core->cfg.store->Instances()) {
              if (i.peer != core->cfg.peer) continue;
              ++n;
              if (!i.removed) WarnIncomplete(i);
            }
            core->instances_after = n;
          } else {
            core->txn->Abort();
            core->cfg.store->RecordPullError(core->cfg.peer, *st).IgnoreError();
          }
          core->txn.reset();
        },
        [self, st] {
          self->work_running_ = false;
          self->Finish(*st);
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
      // No worker runs now (the session is closed and idle): read `staged`.
      Status why = NameFilesInFlight(self->fail_why_, self->core_->staged);
      pump.reset();  // the session's destructor fails its pending requests
      auto core = self->core_;
      QueueWork(
          self->loop_,
          [core, why] {
            core->staged.clear();
            if (core->txn) {
              core->txn->Abort();
              core->txn.reset();
              core->cfg.store->RecordPullError(core->cfg.peer, why).IgnoreError();
            }
          },
          [self, why] { self->Finish(why); });
    });
  }

  void Finish(const Status& status) {
    if (state_ == State::kDone) return;
    SetState(State::kDone);
    deadline_.Stop();
    ticker_.Stop();
    if (handshake_timer_) handshake_timer_->Stop();
    PullResult r;
    r.peer = core_->cfg.peer;
    r.status = status.ok()
                   ? status
                   : status.WithContext("pull from " + core_->cfg.peer + " (" + Where() + ")");
    r.generation = status.ok() ? core_->generation : core_->since_generation;
    r.unchanged = status.ok() && core_->kind == syncproto::ManifestAnswer::Kind::kUnchanged;
    r.files = core_->files_done;
    r.file_bytes = core_->bytes_done;
    r.wire_bytes = conn_ ? conn_->bytes_read() : 0;
    r.instances = core_->instances_after;
    r.started_wall_ms = started_wall_ms_;
    r.duration_ms = static_cast<int64_t>(uv_now(loop_)) - started_mono_ms_;
    nlohmann::json fields = {{"peer", r.peer},
                             {"generation", r.generation},
                             {"files", r.files},
                             {"bytes", r.file_bytes},
                             {"wire_bytes", r.wire_bytes},
                             {"duration_ms", r.duration_ms},
                             {"reason", core_->request.reason},
                             {"outcome", !status.ok()  ? "failed"
                                         : r.unchanged ? "unchanged"
                                                       : "ok"}};
    if (!core_->request.services.empty()) fields["services"] = core_->request.services;
    auto ms = [&](State st) { return phase_ms_[static_cast<size_t>(st)]; };
    fields["phase_ms"] = {{"connect", ms(State::kPrepare) + ms(State::kConnecting)},
                          {"handshake", ms(State::kHandshake)},
                          {"manifest", ms(State::kManifest)},
                          {"transfer", ms(State::kTransfer)},
                          {"commit", ms(State::kCommit)},
                          {"abort", ms(State::kAborting)}};
    if (status.ok()) {
      log::Info("pull", fields);
    } else {
      fields["err"] = r.status.ToString();
      log::Warn("pull", fields);
    }
    // Drop the session and socket now; the result goes out on a later turn.
    if (pump_) {
      if (!session_closed_) pump_->Close(Status::Ok());
      Defer(loop_, [p = std::move(pump_), core = core_]() mutable { p.reset(); });
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
    p.peer = core_->cfg.peer;
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
    p.files_done = core_->files_done;
    p.files_total = core_->files_total;
    p.bytes_done = core_->bytes_done;
    p.bytes_total = core_->bytes_total;
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

  std::string Where() const { return FormatHostPort(core_->cfg.host, core_->cfg.port); }

  uv_loop_t* loop_;
  std::shared_ptr<Core> core_;
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
