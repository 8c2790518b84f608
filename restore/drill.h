// Restore drills: prove, on a schedule and without touching anything real,
// that a peer's instances can be rebuilt from this catalog, and measure how
// long it takes (`lifeboat drill`, the agent's [drill] schedule).
//
// A drill restores every instance held from the peer with the dir backend
// into a scratch directory `<scratch_dir>/drill-<peer>-<ms>/` (its journal
// lives there too, never under `<data_dir>/restores/`: a drill is not a
// restore, so it never makes instances look restored or deposed), then
// re-reads every restored file and compares it with the catalog's recorded
// size and digest (and every directory and symlink with its entry), then
// removes the scratch directory, success or not, and writes the result to
// `<data_dir>/checks/drill-<peer>.json` (restore/check_records.h).
//
// Disk use is bounded: before it writes anything the drill checks that the
// peer's data (instances and the images of their chains) fits in max_bytes
// and in the free space of the scratch filesystem (with 10% to spare), and
// fails with a temporary error otherwise. It never runs while a real restore
// of this data_dir holds its lock (restores/<id>.lock). The measured wall time (plan,
// verify, copy and the final comparison) is the RTO the readiness report
// extrapolates from.
//
// Not thread-safe; one drill at a time per data_dir (a lock file under
// checks/ stops a second one with a temporary error).
#ifndef LIFEBOAT_RESTORE_DRILL_H_
#define LIFEBOAT_RESTORE_DRILL_H_

#include <cstdint>
#include <string>

#include "base/clock.h"
#include "base/env.h"
#include "base/status.h"
#include "catalog/store.h"
#include "restore/check_records.h"

namespace lifeboat::restore {

struct DrillOptions {
  std::string peer;         // required
  std::string scratch_dir;  // absolute; created (0700) when missing; must be outside data_dir
  uint64_t max_bytes = 0;   // 0 = only the free-space check
  std::string node_name;
  bool set_owners = false;  // put exported owners back (needs root), as a real restore would
};

// Runs one drill and records it (also when it fails: the record says why).
// Returns the record; the Status is the drill's error, if any, and a failure
// to save the record is reported as well. A drill that cannot start now (a
// restore or another drill is running, not enough room) returns a temporary
// error and records nothing: the previous record stays.
Result<DrillRecord> RunDrill(Env& env, Clock& clock, catalog::Store& store,
                             const std::string& data_dir, const DrillOptions& options);

}  // namespace lifeboat::restore

#endif  // LIFEBOAT_RESTORE_DRILL_H_
