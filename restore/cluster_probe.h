// ClusterProbe: what the restorer asks the rest of the cluster before it
// acts. Kept behind an interface so the restorer is testable with a fake and
// does not depend on the agent (agent and restore never include each other):
// the CLI wires an implementation.
//
//   Alive      does peer P still answer on its syncproto port? (then a
//              restore would be a migration: refused without --force)
//   CopiesOf   which generation of P's export do the other nodes hold?
//              (dotmesh's recovery offers: name a fresher copy)
//   PullFrom   bring P's newer data from node N into the local catalog
//              (--from-freshest)
#ifndef LIFEBOAT_RESTORE_CLUSTER_PROBE_H_
#define LIFEBOAT_RESTORE_CLUSTER_PROBE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"

namespace lifeboat::restore {

struct NodeAddress {
  std::string name;  // configured peer name
  std::string host;  // IPv4/IPv6 literal or DNS name
  uint16_t port = 0;
  std::string ToString() const;  // "10.0.0.1:4650", "[::1]:4650"
};

// What one node holds of a peer's export.
struct PeerCopy {
  std::string node;        // the node that holds the copy
  bool reachable = false;  // false: `error` says why, the rest is unset
  std::string error;
  uint64_t generation = 0;  // P's export generation it holds (0 = nothing)
  int64_t pulled_ms = 0;    // when it last pulled from P successfully
};

class ClusterProbe {
 public:
  virtual ~ClusterProbe() = default;
  // True when `peer` accepts a connection at its address within the probe's
  // timeout; false when it refuses, times out or does not resolve.
  virtual bool Alive(const NodeAddress& peer) = 0;
  // Asks each of `others` which generation of `peer`'s export it holds.
  // Never fails as a whole: unreachable nodes come back with reachable=false.
  virtual std::vector<PeerCopy> CopiesOf(const std::string& peer,
                                         const std::vector<NodeAddress>& others) = 0;
  // Pulls `peer`'s data held by `holder` into the local catalog. Errors say
  // which node and why.
  virtual Status PullFrom(const NodeAddress& holder, const std::string& peer) = 0;
};

// True when a TCP connection to `addr` is accepted within `timeout_ms`.
bool TcpConnects(const NodeAddress& addr, int timeout_ms);

}  // namespace lifeboat::restore

#endif  // LIFEBOAT_RESTORE_CLUSTER_PROBE_H_
