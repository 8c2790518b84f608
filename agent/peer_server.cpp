#include "agent/peer_server.h"

#include "agent/session_pump.h"
#include "base/log.h"
#include "base/memory.h"
#include "syncproto/session.h"

namespace lifeboat::agent {

using Pump = SessionPump<syncproto::ServerSession>;

struct PeerServer::Conn {
  std::shared_ptr<Pump> pump;
  std::unique_ptr<Timer> handshake_timer;
  std::string remote;
  bool authenticated = false;
  std::string peer_name;
};

Result<std::unique_ptr<PeerServer>> PeerServer::Start(uv_loop_t* loop,
                                                      syncproto::ExportSource* source,
                                                      PeerServerOptions options) {
  RETURN_IF_ERROR(syncproto::ValidateClusterKey(options.cluster_key));
  std::unique_ptr<PeerServer> s(new PeerServer(loop, source, std::move(options)));
  PeerServer* raw = s.get();
  ASSIGN_OR_RETURN(s->listener_,
                   TcpListener::Listen(loop, s->options_.host, s->options_.port,
                                       [raw](std::shared_ptr<Connection> c) { raw->OnAccept(c); }));
  return s;
}

PeerServer::~PeerServer() {
  *alive_ = false;
  CloseAll();
}

void PeerServer::StopAccepting() {
  if (listener_) listener_->Close();
}

void PeerServer::CloseAll() {
  StopAccepting();
  auto conns = conns_;
  for (auto& [id, c] : conns) c->pump->Close(UnavailableError("the agent is shutting down", false));
}

void PeerServer::OnAccept(std::shared_ptr<Connection> conn) {
  ++stats_.accepted;
  uint64_t id = next_id_++;
  if (std::optional<uint64_t> evict = admission_.Arrive(id, conn->peer_name())) {
    if (auto it = conns_.find(*evict); it != conns_.end()) {
      ++stats_.evicted;
      log::Warn("peer connection closed in its handshake to make room for a newer one",
                {{"remote", it->second->remote}, {"pending", admission_.pending()}});
      it->second->pump->Close(TemporaryError("too many connections in the handshake; "
                                             "the oldest was closed"));
    }
  }
  auto c = std::make_shared<Conn>();
  c->remote = conn->peer_name();
  conn->SetIdleTimeout(options_.io_timeout_ms);
  syncproto::ServerOptions so;
  so.held = options_.held;
  auto session =
      std::make_unique<syncproto::ServerSession>(source_, options_.cluster_key, options_.self, so);
  std::weak_ptr<bool> alive = alive_;
  Pump::Hooks hooks;
  std::weak_ptr<Conn> weak_c = c;
  hooks.after_work = [this, alive, id, weak_c] {
    auto cc = weak_c.lock();
    if (!cc || cc->authenticated || cc->pump->busy() || alive.expired()) return;
    if (cc->pump->session().authenticated()) {
      cc->authenticated = true;
      cc->peer_name = cc->pump->session().peer().name;
      cc->handshake_timer->Stop();
      if (!admission_.Admit(id)) {
        ++stats_.refused;
        log::Warn("peer connection refused: too many authenticated peers at once",
                  {{"peer", cc->peer_name}, {"max", options_.admission.max_admitted}});
        cc->pump->Close(TemporaryError("too many peers connected at once; retry later"));
      }
    }
  };
  hooks.on_closed = [this, alive, id, weak_c](const Status& why) {
    if (alive.expired()) return;
    admission_.Gone(id);
    auto it = conns_.find(id);
    if (it == conns_.end()) return;
    std::shared_ptr<Conn> cc = it->second;
    const auto& st = cc->pump->session().stats();
    stats_.bytes_sent += cc->pump->connection().bytes_written();
    stats_.files_served += st.files_served;
    if (!cc->authenticated && !why.ok() && why.code() == Code::kPermission) ++stats_.auth_failures;
    nlohmann::json fields = {{"remote", cc->remote},
                             {"peer", cc->peer_name},
                             {"manifests", st.manifests_served},
                             {"files", st.files_served},
                             {"files_failed", st.files_failed},
                             {"bytes_sent", cc->pump->connection().bytes_written()},
                             {"pump_ms", cc->pump->times().Json()}};
    if (why.ok()) {
      log::Debug("served a peer", fields);
    } else {
      fields["err"] = why.ToString();
      log::Warn(cc->authenticated ? "serving a peer failed" : "peer refused in the handshake",
                fields);
    }
    conns_.erase(it);
    stats_.open = conns_.size();
    // The pump (and its session) die once the last callback returned; the
    // memory a served pull used (buffers, signatures, the view) goes back to
    // the OS with the last session.
    const bool last = conns_.empty();
    Defer(loop_, [cc, last, loop = loop_]() mutable {
      cc.reset();
      if (last) Defer(loop, [] { ReleaseFreedMemory(); });
    });
  };
  c->pump = std::make_shared<Pump>(loop_, std::move(conn), std::move(session), std::move(hooks),
                                   options_.tls);
  c->handshake_timer = std::make_unique<Timer>(loop_);
  c->handshake_timer->Start(options_.handshake_timeout_ms, [weak_c,
                                                            ms = options_.handshake_timeout_ms] {
    if (auto cc = weak_c.lock(); cc && !cc->authenticated) {
      cc->pump->Close(TemporaryError("peer " + cc->remote + " did not finish the handshake in " +
                                     std::to_string(ms) + "ms"));
    }
  });
  conns_[id] = c;
  stats_.open = conns_.size();
  c->pump->Start();
}

}  // namespace lifeboat::agent
