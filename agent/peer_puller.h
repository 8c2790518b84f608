// PeerPuller: one pull from one peer, as an explicit state machine
//
//   kPrepare -> kConnecting -> kHandshake -> kManifest -> kTransfer -> kCommit -> kDone
//        \__________\_____________\____________\____________\---> kAborting -> kDone
//
// The pull itself (manifest request, plan, the per-file loop, commit and
// abort) is a pull::PullDriver (pull/pull_driver.h), which does no I/O of
// its own beyond the store; the puller only connects, moves bytes, keeps
// time and reports. kPrepare opens the driver (the catalog's pull
// transaction); kConnecting dials the peer; kHandshake, kManifest and
// kTransfer run the driver over the connection through a SessionPump (at most
// `max_in_flight` files at once); kCommit publishes the pull; kAborting drops
// the session and the staging area (the previous generation stays current)
// and records the error.
//
// Every driver call runs on the libuv thread pool. The deadline, the
// connect and io timeouts and Cancel() all lead to kAborting unless the
// commit already started; a commit always finishes.
//
// Threads: loop thread only; callbacks run on the loop thread, never from
// inside Start() or Cancel().
#ifndef LIFEBOAT_AGENT_PEER_PULLER_H_
#define LIFEBOAT_AGENT_PEER_PULLER_H_

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>

#include "agent/pull.h"
#include "agent/schedule.h"
#include "base/clock.h"
#include "catalog/store.h"
#include "syncproto/handshake.h"
#include "syncproto/session.h"
#include "syncproto/tls_channel.h"

namespace lifeboat::agent {

struct PullerConfig {
  std::string peer;  // configured peer name
  // Non-empty: host:port is another node, and the pull asks it for its held
  // copy of this peer (HELD_MANIFEST_REQUEST, --from-freshest) instead of
  // the node's own export. The copy is committed as `peer`'s data.
  std::string held_peer;
  // With held_peer: take the copy even when it is older than what we hold
  // (the operator asked; what we held goes to orphans/).
  bool allow_older = false;
  std::string host;
  uint16_t port = 0;
  std::string cluster_key;
  syncproto::NodeIdentity self;
  // Client-role TLS context (auth.transport tls-psk / tls-ca); null = plain.
  std::shared_ptr<const syncproto::TlsContext> tls;
  int64_t connect_timeout_ms = 10'000;  // TCP connect + handshake
  int64_t io_timeout_ms = 60'000;
  int64_t deadline_ms = 3'600'000;
  uint32_t max_files_in_flight = 32;
  uint64_t max_memory = 256ull << 20;
  TokenBucket* bwlimit = nullptr;              // shared by all pulls; may be null
  catalog::Store* store = nullptr;             // required; outlives the pull
  syncproto::SignatureCache* cache = nullptr;  // optional; thread-safe
  Clock* clock = Clock::Real();
};

// Starts a pull; `done` runs once on a later loop turn.
std::unique_ptr<PullJob> StartPeerPull(uv_loop_t* loop, const PullerConfig& config,
                                       const PullRequest& request, ProgressFn progress,
                                       PullDoneFn done);

// Files in flight for the limits: at most max_files_in_flight, and at most one
// per 1 MiB of max_memory (a file in flight holds a few chunk buffers).
uint32_t FilesInFlight(uint32_t max_files_in_flight, uint64_t max_memory);

}  // namespace lifeboat::agent

#endif  // LIFEBOAT_AGENT_PEER_PULLER_H_
