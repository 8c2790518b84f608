// Readiness: "if peer X died now, could this node rebuild it, how old would
// the data be, how long would it take?" (`lifeboat readiness`, the agent's
// GET /readiness and its lifeboat_readiness_* metrics).
//
// Two halves, after restore/plan.h:
//   GatherReadiness   reads the catalog's index and generation descriptions
//                     (never a data file: nothing is re-hashed), the check
//                     records (restore/check_records.h) and the restore
//                     journals (deposed instances) into a ReadinessInput;
//   AssessReadiness   pure: ReadinessInput -> ReadinessReport, per peer:
//                     instances restorable N/N, image chains complete, SAPI
//                     records present, the freshest copy in the cluster and
//                     its age (the RPO if the peer died now), data size, an
//                     estimated RTO, and the blockers.
//
// Blocker kinds (stable strings; one metric label value each):
//   never_pulled     no node holds any copy of the peer
//   stale            the freshest copy is older than agent.stale_after
//   missing_image    an instance's image chain is not complete in the catalog
//   incomplete_copy  an instance's held generation cannot be read, or the
//                    peer's exporter skipped paths of it (its warnings)
//   deposed          instances restored elsewhere are still exported by the peer
//   drill_failed     the last restore drill of the peer failed
//   verify_failed    the last `catalog verify` found damage (catalog-wide:
//                    reported on every peer that has instances)
//   clock_changed    the wall clock is behind the recorded pull time: the age is unknown
// Notes (not blockers): HA services (manatee, moray, binder) on the peer,
// which a restore leaves out, and a fresher copy held by another node.
//
// RTO estimate: data bytes / throughput + instances x per-instance overhead.
// The throughput is the last successful drill's (measured, verify included),
// else an assumed kAssumedThroughputBps; the per-instance overhead is what
// the configured backend adds per instance (zone create and boot on
// smartos), documented in docs/operator-guide.md. The basis is reported
// ("drill" or "estimate") so nobody mistakes a guess for a measurement.
#ifndef LIFEBOAT_RESTORE_READINESS_H_
#define LIFEBOAT_RESTORE_READINESS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/env.h"
#include "base/status.h"
#include "catalog/store.h"
#include "restore/check_records.h"
#include "restore/cluster_probe.h"
#include "restore/deposed.h"

namespace lifeboat::restore {

// The blocker kinds listed above, in that order.
const std::vector<std::string>& BlockerKinds();

inline constexpr double kAssumedThroughputBps = 100.0 * 1024 * 1024;

// Services that run as HA clusters across headnodes: a restore leaves them
// out (they are rebuilt from their surviving peers, not from a copy).
const std::vector<std::string>& HaServices();

// What the catalog says of one held instance, as far as a restore needs it.
struct InstanceFacts {
  catalog::InstanceRecord record;
  bool readable = false;     // its held generation's description could be read
  std::string read_error;    // why not
  bool sapi_record = false;  // the generation holds a SAPI record
  std::string missing_image;  // first image of its chain the catalog lacks ("" = complete)
  std::vector<std::pair<std::string, uint64_t>> chain;  // images held of its chain: uuid, size
};

struct ReadinessInput {
  int64_t now_ms = 0;
  int64_t stale_after_ms = 30 * 60 * 1000;
  int64_t per_instance_overhead_ms = 0;
  std::string node;                  // this node's name
  std::vector<std::string> peers;    // configured peers, in configuration order
  std::vector<catalog::PeerState> peer_states;
  std::vector<InstanceFacts> instances;  // held and not removed
  // What the other nodes hold of each peer (empty: not asked).
  std::map<std::string, std::vector<PeerCopy>> cluster_copies;
  std::vector<DeposedInstance> deposed;
  std::map<std::string, DrillRecord> drills;  // last drill per peer
  std::optional<VerifyRecord> verify;
  std::vector<std::string> read_errors;  // records that could not be read (shown, not fatal)
};

struct Blocker {
  std::string kind;     // see the list above
  std::string message;  // one line, for an operator
};

struct PeerReadiness {
  std::string peer;
  uint64_t instances = 0;    // held, not removed
  uint64_t restorable = 0;   // readable and with a complete image chain
  uint64_t images_complete = 0;
  uint64_t sapi_records = 0;
  uint64_t ha_instances = 0;
  std::string freshest_node;       // "" when nobody holds a copy
  uint64_t freshest_generation = 0;
  std::optional<int64_t> rpo_ms;   // age of the freshest copy; nullopt when unknown
  uint64_t data_bytes = 0;         // instance data plus the images of their chains
  int64_t rto_ms = 0;
  std::string rto_basis;           // "drill" or "estimate"
  std::optional<DrillRecord> last_drill;
  std::vector<Blocker> blockers;
  std::vector<std::string> notes;
  bool ready() const { return blockers.empty(); }
};

struct ReadinessReport {
  int64_t now_ms = 0;
  std::string node;
  std::vector<PeerReadiness> peers;  // configuration order
  std::optional<VerifyRecord> verify;
  std::vector<std::string> read_errors;
  bool ready() const;

  // One document: {"node","now","ready","verify","peers":[...]}; ages and
  // durations in seconds, sizes in bytes (docs/operator-guide.md).
  nlohmann::json ToJson() const;
};

// Reads what AssessReadiness needs from `store` (index and generation
// descriptions), the check records and the restore journals under
// `data_dir`. Unreadable journals or records are listed in read_errors, not
// fatal. The cluster copies are the caller's to add (they need the network);
// so are `restored_elsewhere`, the finished restores other nodes reported,
// which make instances deposed like this node's own journals do.
Result<ReadinessInput> GatherReadiness(
    Env& env, const catalog::Store& store, const std::string& data_dir,
    const std::vector<std::string>& peers,
    const std::map<std::string, RestoredInstance>& restored_elsewhere = {});

// Pure.
ReadinessReport AssessReadiness(const ReadinessInput& in);

}  // namespace lifeboat::restore

#endif  // LIFEBOAT_RESTORE_READINESS_H_
