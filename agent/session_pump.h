// SessionPump: drives a socket-free session (syncproto::ServerSession, or
// pull::PullDriver around a PullerSession: Feed / Pump / output /
// ConsumeOutput / TakeOutput / done) over a Connection, running every session
// call on the libuv thread pool so that hashing, delta, patch, zstd and the
// store's staged writes never block the loop.
//
// At most one work item per session runs at a time; the session is touched
// only inside work items. The pump shares ownership of the session: its
// owner may keep a reference and use it once the pump is closed and idle
// (on_closed ran and !busy()), e.g. to commit or abort it on a worker.
// Back-pressure: reading pauses while received bytes wait for the session;
// producing pauses while the connection holds more than `write_high_water`
// unsent bytes.
//
// With a TLS context, a syncproto::TlsChannel sits between the socket and
// the session (ciphertext on the wire, plaintext to the session); it too is
// touched only inside work items. When the session is done the channel sends
// close_notify before the connection closes.
//
// times() says where the pump's time went (for the "pull" and "served a
// peer" log lines): whether this end or its peer held the transfer up.
//
// Threads: the pump's methods are for the loop thread.
#ifndef LIFEBOAT_AGENT_SESSION_PUMP_H_
#define LIFEBOAT_AGENT_SESSION_PUMP_H_

#include <uv.h>

#include <nlohmann/json.hpp>

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "agent/connection.h"
#include "agent/uv.h"
#include "base/status.h"
#include "syncproto/tls_channel.h"

namespace lifeboat::agent {

// Where a pump's time since Start went, in milliseconds: work items running
// (`work`) or waiting for a pool thread (`queued`), and the pump idle with no
// received bytes and nothing to send (`wait_peer`: the peer holds the
// transfer up) or with write_high_water unsent bytes (`wait_socket`: the
// connection, or the peer's reading, does). The rest is the loop's turns.
struct PumpTimes {
  uint64_t items = 0;
  double work_ms = 0;
  double queued_ms = 0;
  double wait_peer_ms = 0;
  double wait_socket_ms = 0;

  // For log lines: whole milliseconds.
  nlohmann::json Json() const {
    auto ms = [](double v) { return static_cast<int64_t>(v + 0.5); };
    return {{"items", items},
            {"work", ms(work_ms)},
            {"queued", ms(queued_ms)},
            {"wait_peer", ms(wait_peer_ms)},
            {"wait_socket", ms(wait_socket_ms)}};
  }
};

template <typename Session>
class SessionPump : public std::enable_shared_from_this<SessionPump<Session>> {
 public:
  struct Hooks {
    // Loop thread, after each work item.
    std::function<void()> after_work;
    // Loop thread, once, when the connection is closed and no work runs.
    // `why`: the session's error if it failed, else the connection's reason.
    std::function<void(const Status& why)> on_closed;
  };

  // `tls` null: the session's bytes go to the socket as they are.
  SessionPump(uv_loop_t* loop, std::shared_ptr<Connection> conn, std::shared_ptr<Session> session,
              Hooks hooks, std::shared_ptr<const syncproto::TlsContext> tls = nullptr,
              size_t write_high_water = 8u << 20)
      : loop_(loop),
        conn_(std::move(conn)),
        hooks_(std::move(hooks)),
        session_(std::move(session)),
        high_water_(write_high_water) {
    if (tls) tls_ = std::make_unique<syncproto::TlsChannel>(std::move(tls), conn_->peer_name());
  }

  ~SessionPump() = default;

  void Start() {
    std::weak_ptr<SessionPump> weak = this->shared_from_this();
    Connection::Callbacks cb;
    cb.on_data = [weak](std::span<const uint8_t> d) {
      if (auto self = weak.lock()) self->OnData(d);
    };
    cb.on_eof = [weak] {
      if (auto self = weak.lock()) {
        self->eof_ = true;
        self->Schedule();
        if (!self->busy_) self->conn_->Close();
      }
    };
    cb.on_drain = [weak] {
      if (auto self = weak.lock()) self->Schedule();
    };
    cb.on_close = [weak](const Status& why) {
      if (auto self = weak.lock()) self->OnConnClosed(why);
    };
    conn_->Start(std::move(cb));
    kick_ = true;
    Schedule();
  }

  PumpTimes times() const {
    PumpTimes t = times_;
    if (idle_since_ns_ != 0) AddIdle(&t, uv_hrtime() - idle_since_ns_);
    return t;
  }

  // Runs a work item even without new bytes (e.g. the owner has requests to queue).
  void Kick() {
    kick_ = true;
    Schedule();
  }

  // Closes the connection; on_closed follows (after a running work item).
  void Close(const Status& why) { conn_->Close(why); }

  Connection& connection() { return *conn_; }
  bool busy() const { return busy_; }
  // The session; only while !busy() (loop thread).
  Session& session() { return *session_; }

 private:
  void OnData(std::span<const uint8_t> d) {
    inbox_.insert(inbox_.end(), d.begin(), d.end());
    if (inbox_.size() >= kInboxHighWater) conn_->PauseReading();
    Schedule();
  }

  void OnConnClosed(const Status& why) {
    conn_closed_ = true;
    close_why_ = why;
    if (!busy_) ReportClosed();
  }

  void ReportClosed() {
    if (reported_) return;
    reported_ = true;
    Status why = !session_error_.ok() ? session_error_ : close_why_;
    if (auto fn = std::move(hooks_.on_closed)) fn(why);
  }

  void AddIdle(PumpTimes* t, uint64_t ns) const {
    (idle_for_socket_ ? t->wait_socket_ms : t->wait_peer_ms) += static_cast<double>(ns) / 1e6;
  }

  void Schedule() {
    if (busy_ || conn_closed_ || stopped_) return;
    bool want = !inbox_.empty() || kick_ || (more_output_ && conn_->queued_bytes() < high_water_);
    const uint64_t now = uv_hrtime();
    if (!want) {
      if (idle_since_ns_ == 0) {
        idle_since_ns_ = now;
        idle_for_socket_ = more_output_;
      }
      return;
    }
    if (idle_since_ns_ != 0) {
      AddIdle(&times_, now - idle_since_ns_);
      idle_since_ns_ = 0;
    }
    ++times_.items;
    kick_ = false;
    busy_ = true;
    auto in = std::make_shared<std::vector<uint8_t>>(std::move(inbox_));
    inbox_ = std::move(spare_);  // the capacity the previous work item's bytes had
    inbox_.clear();
    conn_->ResumeReading();
    auto out = std::make_shared<std::vector<uint8_t>>();
    auto st = std::make_shared<Status>();
    auto done = std::make_shared<bool>(false);
    auto ran = std::make_shared<std::array<uint64_t, 3>>();  // uv_hrtime queued, started, ended
    (*ran)[0] = now;
    Session* s = session_.get();
    syncproto::TlsChannel* tls = tls_.get();
    bool first = !tls_started_;
    tls_started_ = true;
    auto self = this->shared_from_this();
    QueueWork(
        loop_,
        [s, tls, first, in, out, st, done, ran] {
          (*ran)[1] = uv_hrtime();
          *st = tls != nullptr ? WorkTls(*s, *tls, first, *in, out.get())
                               : WorkPlain(*s, *in, out.get());
          *done = s->done() && (tls == nullptr || tls->ciphertext().empty());
          (*ran)[2] = uv_hrtime();
        },
        [self, in, out, st, done, ran] {
          self->times_.queued_ms += static_cast<double>((*ran)[1] - (*ran)[0]) / 1e6;
          self->times_.work_ms += static_cast<double>((*ran)[2] - (*ran)[1]) / 1e6;
          if (in->capacity() <= kSpareMaxBytes) self->spare_ = std::move(*in);
          self->AfterWork(std::move(*out), *st, *done);
        });
  }

  static Status WorkPlain(Session& s, const std::vector<uint8_t>& in, std::vector<uint8_t>* out) {
    Status status;
    if (!in.empty()) status = s.Feed(in);
    if (status.ok()) status = s.Pump();
    *out = s.TakeOutput();
    return status;
  }

  static Status WorkTls(Session& s, syncproto::TlsChannel& tls, bool first,
                        const std::vector<uint8_t>& in, std::vector<uint8_t>* out) {
    Status status;
    if (first) status = tls.Start();
    if (status.ok() && !in.empty()) status = tls.FeedCiphertext(in);
    if (status.ok() && !tls.plaintext().empty()) {
      auto plain = tls.plaintext();
      status = s.Feed(plain);
      tls.ConsumePlaintext(plain.size());
    }
    if (status.ok()) status = s.Pump();
    // What the session queued (also its ERROR frame after a failure) goes out encrypted.
    auto o = s.output();
    if (!o.empty() && tls.status().ok()) {
      Status w = tls.WritePlaintext(o);
      if (status.ok()) status = w;
    }
    s.ConsumeOutput(o.size());
    if (s.done() && tls.status().ok()) tls.Shutdown().IgnoreError();
    *out = tls.TakeCiphertext();
    return status;
  }

  void AfterWork(std::vector<uint8_t> out, const Status& st, bool session_done) {
    busy_ = false;
    more_output_ = !out.empty();
    if (!conn_closed_) {
      conn_->Write(std::move(out));
      conn_->Touch();
    }
    if (!st.ok() && session_error_.ok()) session_error_ = st;
    if (hooks_.after_work) {
      auto fn = hooks_.after_work;
      fn();
    }
    if (conn_closed_) {
      ReportClosed();
      return;
    }
    if (!st.ok() || session_done) {
      stopped_ = true;
      conn_->CloseAfterFlush();
      return;
    }
    if (eof_ && inbox_.empty()) {
      conn_->Close();
      return;
    }
    Schedule();
  }

  static constexpr size_t kInboxHighWater = 4u << 20;
  // A received-bytes buffer up to this capacity is kept for the next work
  // item's bytes: no growing and page-faulting a new one per work item.
  static constexpr size_t kSpareMaxBytes = 2 * kInboxHighWater;

  uv_loop_t* loop_;
  std::shared_ptr<Connection> conn_;
  Hooks hooks_;  // before session_: the session's destructor may call into what hooks hold
  std::shared_ptr<Session> session_;
  std::unique_ptr<syncproto::TlsChannel> tls_;
  bool tls_started_ = false;
  size_t high_water_;
  std::vector<uint8_t> inbox_;  // received bytes waiting for the next work item
  std::vector<uint8_t> spare_;  // emptied, kept for its capacity
  bool busy_ = false;
  bool kick_ = false;
  bool more_output_ = false;
  bool eof_ = false;
  bool stopped_ = false;
  bool conn_closed_ = false;
  bool reported_ = false;
  PumpTimes times_;
  uint64_t idle_since_ns_ = 0;    // uv_hrtime when the pump went idle; 0 while not idle
  bool idle_for_socket_ = false;  // it is idle because the connection is full
  Status session_error_;
  Status close_why_;
};

}  // namespace lifeboat::agent

#endif  // LIFEBOAT_AGENT_SESSION_PUMP_H_
