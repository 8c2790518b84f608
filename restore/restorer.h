// The restorer: `lifeboat restore` without the command line.
//
// Run() does, in order, and stops at the first failure:
//   1. select   the instances held from a peer, of services, or by uuid;
//               instances an earlier restore on this node began or finished
//               (any selection, any target), or one on another node
//               finished (restored_elsewhere), are skipped unless `again`;
//               so are HA services' instances (HaServices) when the
//               selection is a whole peer; then the HA services this
//               restore does not rebuild must have a healthy instance on
//               this node, as far as the backend can tell
//               (Backend::LocalInstances; refused unless force)
//   2. guard    refuse when the peer still answers (unless force); when the
//               data is older than stale_after, ask (confirm) or require
//               assume_yes
//   3. freshest ask the other peers which generation of the peer they hold;
//               name a fresher copy, or pull it first (from_freshest)
//   4. verify   re-hash every file of the chosen generations and every image
//               to install against its recorded digest (mismatch: kData with
//               the paths); nothing has been written yet
//   5. plan     restore/plan.h, or the plan of the journal when resuming
//   6. confirm  show the plan and ask (confirm_plan), unless -y
//   7. execute  (not for dry_run) each step through the backend, recording
//               it in the journal <data_dir>/restores/<id>.json; a step's
//               warning (StepResult::warning) is kept there and reported on
//               every later run of the same restore
// A dry run goes through 1-5 and returns what the real run would: the first
// guard that would refuse (a live peer without force) or the backend's
// check of the plan (e.g. an exec backend without a command for a step),
// with the plan in the report either way.
// A rerun of the same request resumes from the journal: the steps already
// finished are not run again and the new uuids and aliases are kept.
//
// The restorer only reads the catalog (the Store may be opened read-only);
// it writes the journal (and nothing else) under data_dir, plus what the
// backend writes. One Run() at a time per object; a lock file stops a second
// process from running the same restore at once.
#ifndef LIFEBOAT_RESTORE_RESTORER_H_
#define LIFEBOAT_RESTORE_RESTORER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/env.h"
#include "base/status.h"
#include "catalog/store.h"
#include "restore/backend.h"
#include "restore/cluster_probe.h"
#include "restore/journal.h"
#include "restore/plan.h"

namespace lifeboat::restore {

struct RestoreRequest {
  Selection selection;  // exactly one of peer / services / instances
  bool dry_run = false;
  bool force = false;  // restore even though the peer still answers or an HA service looks down
  bool assume_yes = false;     // -y: accept stale data without asking
  bool from_freshest = false;  // pull the freshest copy of the peer first
  bool new_ips = false;
  bool again = false;  // restore instances an earlier restore already rebuilt
  // A whole peer's HA instances too (drills: every byte held is checked).
  bool include_ha = false;
  // --keep-old-records: plan no retire_old_records step (a resumed restore
  // leaves out those it has not run yet).
  bool keep_old_records = false;
  std::vector<std::string> service_order = DefaultServiceOrder();
  uint64_t seed = 0;  // uuid generator seed (tests); 0 = random
  int verify_threads = 4;
};

struct RestoreReport;

struct RestoreContext {
  Env* env = nullptr;               // required
  Clock* clock = nullptr;           // required
  catalog::Store* store = nullptr;  // required; only read
  Backend* backend = nullptr;       // required
  ClusterProbe* probe = nullptr;    // optional: without it no liveness/freshness checks
  std::string data_dir;             // where restores/ lives (the catalog's data_dir)
  std::string node_name;            // this node, recorded in the journal
  std::string node_uuid;            // this server's uuid, for SAPI params.server_uuid
  int64_t stale_after_ms = 30 * 60 * 1000;
  std::vector<NodeAddress> peers;  // every configured peer with its address
  // Asks the operator a yes/no question (a TTY); null when nobody can answer.
  std::function<bool(const std::string& question)> confirm;
  // Shows the plan of a new restore (report.plan, warnings) and asks whether
  // to run it; called once, after verification, before the first step,
  // unless assume_yes. Null: no question (scripts, tests).
  std::function<bool(const RestoreReport& planned)> confirm_plan;
  // Called before and after each step (from the Run() thread).
  struct Progress {
    size_t index = 0;  // 0-based step index in the plan
    size_t total = 0;
    const Step* step = nullptr;
    bool finished = false;      // false: about to run; true: done
    bool already_done = false;  // finished by an earlier run (journal) or found done by the backend
    uint64_t bytes_done = 0;    // bytes of finished steps so far
    uint64_t bytes_total = 0;
  };
  std::function<void(const Progress&)> progress;
  // Finished restores the other nodes reported (GET /restores), by old
  // uuid: their instances are skipped like those of this node's earlier
  // restores, unless `again`. `unasked_nodes`: node -> why, for each node
  // that could not be asked; a warning names each one other than the peers
  // being restored (a node that is down may have restored some before).
  std::map<std::string, RestoredInstance> restored_elsewhere;
  std::map<std::string, std::string> unasked_nodes;
  // Reopens the catalog after --from-freshest pulled into it (the agent
  // commits the pull; a read-only Store does not see it). Optional.
  std::function<Result<catalog::Store*>()> reopen_store;
};

struct RestoreReport {
  Plan plan;
  std::string journal_id;
  std::string journal_path;
  bool resumed = false;               // an unfinished journal was found and continued
  bool already_complete = false;      // the journal says this restore finished before
  std::vector<std::string> warnings;  // stale data, fresher copy elsewhere, peer alive (dry run)
  std::vector<PeerCopy> copies;       // what the other nodes hold of the peer
  std::string fresher_node;           // a node holding a newer generation ("" when none)
  uint64_t fresher_generation = 0;
  uint64_t local_generation = 0;  // the peer generation held here
  uint64_t files_verified = 0;
  uint64_t bytes_verified = 0;
  size_t steps_run = 0;
  size_t steps_skipped_done = 0;  // already finished in an earlier run
  uint64_t bytes_restored = 0;
  int64_t verify_ms = 0;
  int64_t wall_ms = 0;
  int64_t started_ms = 0;          // this run, wall clock
  int64_t finished_ms = 0;         // this run, wall clock
  int64_t journal_started_ms = 0;  // the restore's first run (0: no journal)
  int64_t journal_finished_ms = 0; // its last step (0: not finished)
  std::vector<std::string> notes;  // steps a backend skipped, and why
  std::vector<std::string>
      not_restorable_services;  // services of the selection with nothing planned

  nlohmann::json ToJson() const;
};

class Restorer {
 public:
  explicit Restorer(RestoreContext ctx);

  // Runs the request. `report` is filled as far as the restore got, also on
  // failure (so the CLI can show what was done). Failure codes: kNotFound /
  // kUsage (selection), kTemporary (peer alive without force; stale data not
  // confirmed), kData (verification, journal), kIo and others from the backend.
  Status Run(const RestoreRequest& request, RestoreReport* report);

 private:
  RestoreContext ctx_;
};

}  // namespace lifeboat::restore

#endif  // LIFEBOAT_RESTORE_RESTORER_H_
