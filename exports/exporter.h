// Exporter: the scanner that turns a Provider's objects into the export
// manifest this node serves to its peers (syncproto::ExportSource).
//
// A scan stats every object the provider offers and hashes (XXH3-128) only
// files whose (dev, ino, size, mtime_ns, ctime_ns) differ from the persistent
// stat cache: a no-change rescan is a stat walk and reads nothing. With a
// provider of live paths (the dir provider), the walk itself is skipped for
// the directories a change watch saw unchanged: their entries of the previous
// scan are reused (see ExporterOptions::full_walk_interval_ms). A file is
// hashed between two stats; when they differ (it changed while being read)
// it is re-hashed, up to `hash_attempts` times, then left out of this scan
// with a warning (never served torn). Unreadable files, dangling or invalid
// symlinks (see syncproto::ValidateSymlinkTarget), sockets, fifos and devices
// are skipped with a warning (log::Warn, field "reason"), never fatal. The
// provider's own warnings (ProviderSnapshot::warnings) are logged and join
// the warnings of the instances they concern.
//
// The export generation is bumped exactly when the manifest (files,
// instances, images) differs from the previous scan's; it is persisted and
// never goes backwards, also across restarts. The boot id is random and
// created with the state: it changes only when the state is lost. A bounded
// journal of recent generations (paths added/changed/removed in each) lets
// ManifestSince(G) answer kUnchanged, kDelta (only what changed since G) or
// kFull (G == 0, G older than the journal, G newer than known, or another boot id).
//
// State files under `state_dir` (created 0700): export-state.bin (generation,
// boot id, journal, stat cache, parsed metadata) and export-state.log (one
// record per changed scan: its delta, appended and fdatasync'd before the
// scan is served; compacted into a new export-state.bin when it outgrows
// half of it); see exports/internal/export_state.h. A corrupt state is set
// aside as *.corrupt and the exporter starts a new lineage (new boot id,
// generation 1, full rehash).
//
// Threads: OpenView and Rescan are thread-safe (scans are serialized). A view
// is used by one thread at a time, except that files it opened may be read
// concurrently.
#ifndef LIFEBOAT_EXPORTS_EXPORTER_H_
#define LIFEBOAT_EXPORTS_EXPORTER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/env.h"
#include "base/status.h"
#include "exports/provider.h"
#include "syncproto/export_source.h"
#include "syncproto/manifest.h"

namespace lifeboat::exports {

struct ExporterOptions {
  Provider* provider = nullptr;       // required; not owned; must outlive the exporter
  std::vector<std::string> services;  // export.services: empty or {"*"} = every service
  std::string state_dir;              // required
  std::string node_uuid;              // put in every manifest
  std::string node_name;
  size_t journal_generations = 64;    // generations kept in the journal
  size_t journal_max_paths = 200000;  // total paths kept in the journal
  int hash_attempts = 3;              // tries to hash a file that keeps changing
  // A file whose ctime/mtime is within this window of the moment it was hashed
  // may still change within the same timestamp tick without its stat changing
  // ("racy git"): its cache entry is not trusted and it is hashed again on the
  // next scan. 0 disables the check (tests that count reads right after writing).
  int64_t racy_window_ms = 20;
  // When the provider's dataset paths are live directories (the dir
  // provider), they are watched for changes (exports/dir_watch.h) and a scan
  // lists only the directories that changed since the last one (a pull then
  // costs what changed, not what is exported). Every this-many ms a scan
  // lists everything anyway, for what a watch cannot see (writes through a
  // shared mmap, remote filesystems). 0: no watch, every scan lists everything.
  int64_t full_walk_interval_ms = 3600 * 1000;
};

// What one scan did (for logs, metrics and tests).
struct ScanStats {
  uint64_t generation = 0;
  bool changed = false;  // the generation was bumped by this scan
  uint64_t files = 0;    // regular files in the manifest
  uint64_t dirs = 0;
  uint64_t symlinks = 0;
  uint64_t bytes = 0;         // total size of the regular files
  uint64_t hashed_files = 0;  // files read because the stat cache missed
  uint64_t hashed_bytes = 0;
  uint64_t skipped = 0;      // objects left out (see the header comment)
  uint64_t listed_dirs = 0;  // dataset directories listed (and their entries stat'ed)
  uint64_t reused_dirs = 0;  // dataset directories the change watch found unchanged
  int64_t duration_ms = 0;   // monotonic
};

class Exporter final : public syncproto::ExportSource {
 public:
  // Loads (or creates) the state under options.state_dir. Fails on a bad
  // option or when the state directory cannot be created or written.
  static Result<std::unique_ptr<Exporter>> Open(Env& env, Clock& clock, ExporterOptions options);
  ~Exporter() override;

  // Takes a provider snapshot, rescans, and returns a view pinned to it: the
  // view serves the manifest of that scan and the snapshot is released when
  // the view is destroyed.
  Result<std::unique_ptr<syncproto::ExportView>> OpenView() override;

  // Scans without keeping a view (the agent's periodic rescan, tests).
  Result<ScanStats> Rescan();

  // The manifest of the last scan (shared, immutable). Null before the first scan.
  std::shared_ptr<const syncproto::Manifest> current() const;
  uint64_t generation() const;
  std::string boot_id() const;
  ScanStats last_scan() const;

  class Impl;

 private:
  explicit Exporter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lifeboat::exports

#endif  // LIFEBOAT_EXPORTS_EXPORTER_H_
