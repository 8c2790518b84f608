#include "restore/drill.h"

#include <sys/statvfs.h>
#include <unistd.h>

#include <set>

#include "base/lock_file.h"
#include "base/log.h"
#include "restore/backend.h"
#include "restore/journal.h"
#include "restore/restorer.h"
#include "restore/verify_item.h"

namespace lifeboat::restore {
namespace {

// The bytes a drill of `peer` writes: its instances' data and the images of
// their chains, each image once.
uint64_t PeerBytes(const catalog::Store& store, const std::string& peer) {
  uint64_t bytes = 0;
  std::set<std::string> images;
  for (const catalog::InstanceRecord& r : store.Instances()) {
    if (r.peer != peer || r.removed) continue;
    bytes += r.size;
    if (r.image_uuid.empty()) continue;
    auto chain = store.ImageChain(r.image_uuid);
    if (!chain.ok()) continue;  // the plan reports it
    for (const auto& im : *chain) {
      if (images.insert(im.uuid).second) bytes += im.size;
    }
  }
  return bytes;
}

Status CheckRoom(const std::string& scratch, uint64_t need, uint64_t max_bytes) {
  if (max_bytes > 0 && need > max_bytes) {
    return TemporaryError("drill: the peer's data (" + std::to_string(need) +
                          " bytes) is larger than drill.max_bytes (" + std::to_string(max_bytes) +
                          ")");
  }
  struct statvfs vfs {};
  if (::statvfs(scratch.c_str(), &vfs) != 0) return PosixError("statvfs", scratch, errno);
  const uint64_t free_bytes = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
  if (need + need / 10 > free_bytes) {
    return TemporaryError("drill: " + scratch + " has " + std::to_string(free_bytes) +
                          " bytes free, the drill needs " + std::to_string(need) + " (+10%)");
  }
  return Status::Ok();
}

// A real restore holds <data_dir>/restores/<id>.lock while it runs.
Status NoRestoreRunning(Env& env, const std::string& data_dir) {
  const std::string dir = RestoresDir(data_dir);
  auto entries = env.ListDir(dir);
  if (!entries.ok()) return Status::Ok();  // no restores/ yet
  for (const DirEntry& e : *entries) {
    const std::string& n = e.name;
    if (n.size() > 5 && n.compare(n.size() - 5, 5, ".lock") == 0 &&
        LockFile::IsHeld(JoinPath(dir, n))) {
      return TemporaryError("drill: a restore is running (" + JoinPath(dir, n) +
                            " is locked); drills wait for it to finish");
    }
  }
  return Status::Ok();
}

// Every data entry of every restored instance, re-read from the target and
// compared with the catalog's generation description.
Result<uint64_t> CompareRestored(Env& env, const catalog::Store& store, const Plan& plan,
                                 const std::string& target) {
  uint64_t files = 0;
  for (const PlannedInstance& p : plan.instances) {
    ASSIGN_OR_RETURN(catalog::InstanceGeneration g, store.Instance(p.old_uuid, p.seq));
    const std::string prefix = "datasets/" + p.old_uuid + "/";
    const std::string data = JoinPath(JoinPath(JoinPath(target, "zones"), p.new_uuid), "data");
    for (const catalog::StoredFile& f : g.files) {
      if (f.entry.path.rfind(prefix, 0) != 0) continue;
      const std::string rel = f.entry.path.substr(prefix.size());
      const VerifyItem item{JoinPath(data, rel), f.entry.kind, f.entry.size, f.entry.digest,
                            f.entry.target};
      uint64_t bytes = 0;
      if (std::string what = CheckItem(env, item, &bytes); !what.empty()) {
        return DataError("drill: restored " + p.old_alias + " differs: " + item.path + ": " + what);
      }
      ++files;
    }
  }
  return files;
}

Status DrillOnce(Env& env, Clock& clock, catalog::Store& store, const DrillOptions& o,
                 const std::string& work, DrillRecord* rec) {
  const std::string target = JoinPath(work, "root");
  std::unique_ptr<Backend> backend =
      NewDirBackend(env, DirBackendOptions{target, 4, o.set_owners});
  RestoreContext ctx;
  ctx.env = &env;
  ctx.clock = &clock;
  ctx.store = &store;
  ctx.backend = backend.get();
  ctx.data_dir = JoinPath(work, "state");  // the drill's journal: never <data_dir>/restores
  ctx.node_name = o.node_name;
  RestoreRequest req;
  req.selection.peer = o.peer;
  req.include_ha = true;  // a drill checks every instance held, HA ones too
  req.force = true;  // the peer is alive: that is the point of a drill
  req.assume_yes = true;
  RestoreReport report;
  Status st = Restorer(ctx).Run(req, &report);
  rec->instances = report.plan.instances.size();
  for (const Step& s : report.plan.steps) rec->images += s.kind == StepKind::kInstallImage;
  rec->bytes = report.bytes_restored;
  rec->generation = report.local_generation;
  RETURN_IF_ERROR(st);
  if (report.plan.instances.empty()) {
    return NotFoundError("drill: nothing of " + o.peer + " is restorable from this catalog");
  }
  ASSIGN_OR_RETURN(rec->files_verified, CompareRestored(env, store, report.plan, target));
  return Status::Ok();
}

}  // namespace

Result<DrillRecord> RunDrill(Env& env, Clock& clock, catalog::Store& store,
                             const std::string& data_dir, const DrillOptions& o) {
  if (o.peer.empty()) return UsageError("drill: no peer given");
  if (o.scratch_dir.empty() || o.scratch_dir.front() != '/') {
    return UsageError("drill: the scratch directory must be absolute, got '" + o.scratch_dir + "'");
  }
  RETURN_IF_ERROR(CheckOutsideCatalog(o.scratch_dir, data_dir, "the drill's scratch directory"));
  RETURN_IF_ERROR(CreateDirs(env, ChecksDir(data_dir), 0700));
  Result<LockFile> lock =
      LockFile::Acquire(JoinPath(ChecksDir(data_dir), ".drill.lock"), "drills of " + data_dir);
  if (!lock.ok()) return TemporaryError("drill: another drill is running: " + lock.status().message());
  // Not now (nothing recorded: the last drill's record stays what it was).
  RETURN_IF_ERROR(NoRestoreRunning(env, data_dir));
  RETURN_IF_ERROR(CreateDirs(env, o.scratch_dir, 0700));
  RETURN_IF_ERROR(CheckRoom(o.scratch_dir, PeerBytes(store, o.peer), o.max_bytes));
  DrillRecord rec;
  rec.peer = o.peer;
  rec.started_ms = clock.WallMs();
  const int64_t start = clock.MonotonicMs();
  const std::string work = JoinPath(
      o.scratch_dir, "drill-" + o.peer + "-" + std::to_string(rec.started_ms) + "-" +
                         std::to_string(::getpid()));
  Status st = DrillOnce(env, clock, store, o, work, &rec);
  rec.wall_ms = clock.MonotonicMs() - start;
  if (Status rm = RemoveTree(env, work); !rm.ok()) {
    log::Warn("drill: could not remove its scratch directory", {{"dir", work}, {"err", rm.ToString()}});
  }
  rec.ok = st.ok();
  rec.error = st.ok() ? "" : st.message();
  Status saved = SaveDrillRecord(env, data_dir, rec);
  if (!st.ok()) return st;
  if (!saved.ok()) return saved.WithContext("drill passed but its record was not saved");
  return rec;
}

}  // namespace lifeboat::restore
