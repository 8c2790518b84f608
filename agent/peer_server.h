// PeerServer: serves this node's export to authenticated peers on
// agent.listen. Every accepted connection gets its own syncproto
// ServerSession over the shared ExportSource (catalog's exporter), driven by
// a SessionPump on the thread pool. Many peers are served at once; a peer
// that does not finish the handshake within `handshake_timeout_ms`, or moves
// no byte for `io_timeout_ms`, is disconnected and never blocks the others.
// Connections still in the handshake have their own small budget, per
// address and in total (agent/admission.h): idle strangers, who need no key
// to connect, cannot take the slots of authenticated peers; when the budget
// is full the oldest stranger makes room for the newcomer.
//
// Threads: loop thread only.
#ifndef LIFEBOAT_AGENT_PEER_SERVER_H_
#define LIFEBOAT_AGENT_PEER_SERVER_H_

#include <uv.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "agent/admission.h"
#include "agent/connection.h"
#include "base/status.h"
#include "syncproto/export_source.h"
#include "syncproto/handshake.h"
#include "syncproto/tls_channel.h"

namespace lifeboat::agent {

struct PeerServerOptions {
  std::string host = "0.0.0.0";
  uint16_t port = 4650;  // 0 picks a free port (tests)
  std::string cluster_key;
  syncproto::NodeIdentity self;
  // Server-role TLS context (auth.transport tls-psk / tls-ca); null = plain.
  std::shared_ptr<const syncproto::TlsContext> tls;
  // What this node holds of its peers (HELD_QUERY, HELD_MANIFEST_REQUEST);
  // optional, must outlive the server.
  syncproto::HeldSource* held = nullptr;
  int64_t handshake_timeout_ms = 10'000;
  int64_t io_timeout_ms = 60'000;
  AdmissionLimits admission;  // pending = still in the handshake; admitted = authenticated
};

struct PeerServerStats {
  uint64_t accepted = 0;
  uint64_t refused = 0;  // authenticated beyond admission.max_admitted
  uint64_t evicted = 0;  // closed in the handshake to make room for a newcomer
  uint64_t auth_failures = 0;
  uint64_t bytes_sent = 0;
  uint64_t files_served = 0;
  size_t open = 0;
};

class PeerServer {
 public:
  // `source` must outlive the server.
  static Result<std::unique_ptr<PeerServer>> Start(uv_loop_t* loop, syncproto::ExportSource* source,
                                                   PeerServerOptions options);
  ~PeerServer();

  uint16_t port() const { return listener_->port(); }
  // Stops accepting; connections in progress go on.
  void StopAccepting();
  // Closes every connection (shutdown).
  void CloseAll();
  const PeerServerStats& stats() const { return stats_; }

 private:
  struct Conn;
  PeerServer(uv_loop_t* loop, syncproto::ExportSource* source, PeerServerOptions options)
      : loop_(loop), source_(source), options_(std::move(options)) {}
  void OnAccept(std::shared_ptr<Connection> conn);

  uv_loop_t* loop_;
  syncproto::ExportSource* source_;
  PeerServerOptions options_;
  std::unique_ptr<TcpListener> listener_;
  std::map<uint64_t, std::shared_ptr<Conn>> conns_;
  uint64_t next_id_ = 1;
  Admission admission_{options_.admission};
  PeerServerStats stats_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace lifeboat::agent

#endif  // LIFEBOAT_AGENT_PEER_SERVER_H_
