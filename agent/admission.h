// Admission: who gets a connection slot on a server that strangers can reach
// (the peer port, the control API). Connections that have not yet shown who
// they are (a peer before its handshake completed, an API client before its
// request arrived) are *pending* and have their own small budget, per
// address and in total, apart from the *admitted* ones; so idle or slow
// strangers can never take the slots of authenticated peers.
//
// When a pending budget is full, the newcomer is let in and the oldest
// pending connection of that address (or, for the total, of all) is evicted:
// a well-behaved client leaves the pending state within milliseconds, so the
// oldest pending connection is the idlest (OpenSSH MaxStartups and nginx
// limit_conn in spirit, but deterministic and without refusing the newest).
// Admitted connections beyond max_admitted are closed when they would be
// admitted. Pure bookkeeping: the server closes what it is told to.
//
// Threads: one thread (the loop thread).
#ifndef LIFEBOAT_AGENT_ADMISSION_H_
#define LIFEBOAT_AGENT_ADMISSION_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>

namespace lifeboat::agent {

struct AdmissionLimits {
  size_t max_pending = 16;             // connections not yet admitted, in total
  size_t max_pending_per_address = 4;  // ... from one address
  size_t max_admitted = 64;            // admitted connections at once
};

class Admission {
 public:
  explicit Admission(AdmissionLimits limits) : limits_(limits) {}

  // A new connection `id` from `remote` ("host:port" or "[v6]:port"). Returns
  // the id of a pending connection to close to make room for it, if any.
  std::optional<uint64_t> Arrive(uint64_t id, const std::string& remote);
  // `id` proved itself. False when max_admitted are admitted already: close it.
  bool Admit(uint64_t id);
  // `id` closed (pending or admitted); unknown ids are ignored.
  void Gone(uint64_t id);

  size_t pending() const { return pending_.size(); }
  size_t admitted() const { return admitted_.size(); }
  uint64_t evicted_total() const { return evicted_total_; }

  // "10.0.0.1:4650" -> "10.0.0.1", "[::1]:4650" -> "::1".
  static std::string HostOf(const std::string& remote);

 private:
  std::optional<uint64_t> OldestPending(const std::string* host) const;

  AdmissionLimits limits_;
  std::map<uint64_t, std::string> pending_;  // id -> host; ids grow, so begin() is the oldest
  std::map<std::string, size_t> pending_per_host_;
  std::set<uint64_t> admitted_;
  uint64_t evicted_total_ = 0;
};

}  // namespace lifeboat::agent

#endif  // LIFEBOAT_AGENT_ADMISSION_H_
