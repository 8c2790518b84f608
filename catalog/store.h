// Store: the restore data a node holds from its peers, under data_dir
// (default /var/sdcadm/svc-restore-data). The on-disk format (version 2) is
// specified in docs/catalog.md; in short:
//
//   catalog.json                         index (format version, peers, instances, images):
//                                        THE commit point of every pull
//   objects/<2 hex>/<62 hex>             file contents, stored once under their SHA-256
//   instances/<uuid>/<seq>.json          one generation of an instance: its entries
//                                        (path, kind, mode, owner, mtime, object id, ...)
//   instances/<uuid>/current/            view: the current generation checked out
//                                        (files hard-linked to objects); current.seq says which
//   svc-<service>/vm-<uuid>.json         -> ../instances/<uuid>/current/vms/<uuid>.json
//   svc-<service>/data/<uuid>            -> ../../instances/<uuid>/current/datasets/<uuid>
//   svc-<service>/sapi-insts.json        SAPI records of the service's instances (regenerated)
//   svc-<service>/sapi-svc.json          SAPI service record
//   sapi-app.json                        SAPI application record (hard-linked into svc-*/ as a
//   view) images/<uuid>/{manifest.json,file}   shared immutable image store
//   orphans/<peer>-<generation>-<time>/  what we held when a peer went backwards
//   .staging/                            work area of pulls; emptied by Open()
//   .trash/                              what retention and cleanup discard; deleted in the
//   background
//
// A generation costs what changed: the objects it adds and one description;
// content the store holds (any path, instance, generation or peer) is never
// transferred again. Objects no retained generation names are deleted.
//
// A pull: BeginPull -> Plan(answer) -> transfer each of transfers() into
// StageFile/FinishFile -> Commit (or Abort). Nothing half-written is visible
// under a final name: objects and descriptions are written under .staging/,
// fsync'd and renamed in; the pull becomes current as a whole when the new
// catalog.json is renamed over the old (the commit point). The `current`
// views and svc-* names are updated after it; Open() makes the disk follow
// the index, so a crash at any point leaves all of a pull's changes in or
// none, each generation complete.
//
// Integrity decision: the store does not trust the transfer. StageFile hands
// out the store's own writer, which hashes every byte it writes (XXH3 and
// SHA-256; in a bulk pull on the thread that writes); FinishFile refuses
// the file on a size or digest mismatch (a file written any other way is
// re-read and re-hashed), so a file whose digest does not match never
// becomes current, whoever wrote it. Durability: FinishFile does not fsync
// (the writer starts the writeback as it goes and when closed); Commit makes
// what this pull wrote durable (its staged files and directories) before it
// renames anything in, then the directories the renames changed and the new
// index text before the index is renamed in: nothing becomes current before
// it is durable. Each of the two steps fsyncs exactly its files and
// directories, several at once, so other programs' dirty data on the same
// filesystem is not waited for; a step with StoreOptions::bulk_pull_from
// paths or more (a bulk pull) is one syncfs instead, which waits for it.
//
// Safety: the store never writes through a symlink: views are built
// only from validated export paths, a manifest in which a path would live
// under a symlink or a file is refused, files are created with O_NOFOLLOW and
// every parent directory is checked with lstat before a write (a staging
// directory once, when the pull made it).
//
// Threads: Store methods are thread-safe. One PullTxn per peer at a time
// (BeginPull fails with a temporary error otherwise); a PullTxn is driven by
// one thread, except StageFile/FinishFile/OpenBasis which may be called
// concurrently for different paths. Commits of different peers are serialized.
// A read_only Store (CLI) never modifies data_dir and may run beside the agent.
#ifndef LIFEBOAT_CATALOG_STORE_H_
#define LIFEBOAT_CATALOG_STORE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/digest.h"
#include "base/env.h"
#include "base/sha256.h"
#include "base/status.h"
#include "catalog/retention.h"
#include "catalog/trees.h"
#include "syncproto/manifest.h"

namespace lifeboat::catalog {

inline constexpr int kCatalogFormatVersion = 3;
inline constexpr uint32_t kRemovedPullsBeforeDrop = 3;

struct StoreOptions {
  std::string data_dir;  // required; created 0700 when missing
  // retention.generations (keep_last) and the time-based windows
  // (retention.keep_all_for, keep_hourly_for, keep_daily_for); catalog/retention.h.
  RetentionPolicy retention;
  int64_t removed_grace_ms = 24 * 3600 * 1000;  // retention.removed_grace
  bool read_only = false;                       // CLI: no cleanup, no repair on disk, no pulls
  // retention.release_went_back: peers whose removed instances are dropped
  // after removed_grace even though the peer went back (the operator confirmed).
  std::set<std::string> release_went_back;
  // A bulk pull transfers at least this many files (an initial pull, a
  // large change): it creates its staged files ahead of the transfers on a
  // thread of its own, and fsyncs none of them in the background. A commit
  // step with at least this many files and directories to make durable
  // does it with one syncfs of the catalog's filesystem instead of an fsync
  // each; fewer, and the fsyncs stay per file, because a syncfs also waits
  // for every other writer's dirty data on the filesystem. SIZE_MAX: never.
  size_t bulk_pull_from = 256;
  // Which directories a generation lists inline in their parent's tree
  // instead of giving them a tree object of their own (trees.h).
  TreeShape tree_shape;
};

struct PeerState {
  std::string name;       // the configured peer name
  std::string node_uuid;  // from its manifests
  std::string node_name;
  uint64_t generation = 0;  // export generation we hold in full (0 = nothing yet)
  std::string boot_id;
  int64_t last_pull_ms = 0;     // last successful commit (wall ms)
  int64_t last_attempt_ms = 0;  // last commit or recorded error
  std::string last_error;       // "" after a success
  // When the rollback guard last fired for this peer (its generation went
  // back, or it came back with a new boot and no newer generation: restored
  // from an old backup, or reinstalled); 0 = never. While set, instances of
  // the peer it no longer exports are kept past removed_grace (unless the
  // peer is in StoreOptions::release_went_back) and `restore --peer` offers them.
  int64_t went_back_ms = 0;
};

struct InstanceRecord {
  std::string uuid;
  std::string alias;
  std::string service;
  std::string peer;
  std::string image_uuid;
  uint64_t generation = 0;   // peer export generation this copy was last confirmed at
  uint64_t seq = 0;          // local generation number: instances/<uuid>/<seq>
  int64_t pulled_at_ms = 0;  // when it was last confirmed current (wall ms)
  uint64_t size = 0;         // bytes of regular files in the current generation
  uint64_t files = 0;        // entries in the current generation
  bool removed = false;      // the peer stopped exporting it
  int64_t removed_since_ms = 0;
  // Successful pulls of the peer, since it stopped exporting the instance,
  // that still missed it: retention drops the data only after removed_grace
  // AND kRemovedPullsBeforeDrop such pulls, so a clock that jumps forward
  // cannot drop it early.
  uint32_t removed_pulls = 0;
  // What the peer's exporter skipped of it (syncproto::InstanceInfo::warnings):
  // not empty = the copy is incomplete. As of the last pull that listed it.
  std::vector<syncproto::InstanceWarning> warnings;
  // A scrub with repair found that one of its retained generations names an
  // object that is missing or was damaged (and removed): the next pull of its
  // peer treats it as changed and transfers every file whose object is
  // missing. That pull's commit clears the mark.
  bool damaged = false;
};

struct StoredFile {
  syncproto::FileEntry entry;  // as exported (mode and mtime as the peer had them)
  // Absolute path of the entry in `InstanceGeneration::dir` when that is
  // set; otherwise, for a file, its object ("" for dirs and symlinks).
  std::string local_path;
};

// One generation of one instance, read from its description.
struct InstanceGeneration {
  InstanceRecord record;  // catalog record, with generation/seq of this generation
  bool current = false;
  int64_t committed_at_ms = 0;  // when this generation became current here (wall ms)
  // A checkout of this generation: the view instances/<uuid>/current when
  // it shows this generation, else "" (Store::Checkout makes one).
  std::string dir;
  std::vector<StoredFile> files;  // sorted by export path
  std::string vm_payload;         // JSON text of vms/<uuid>.json
  std::string sapi_record;        // JSON text of sapi/<uuid>.json; "" when none
};

struct StoredImage {
  std::string uuid;
  std::string origin;         // "" for a root image
  std::string manifest_path;  // absolute
  std::string file_path;      // absolute
  uint64_t size = 0;          // of the image file
  Digest128 file_digest;
  Digest128 manifest_digest;
  Digest256 file_sha256;
  Digest256 manifest_sha256;
  uint64_t manifest_size = 0;
  bool referenced = true;  // used by a held instance's origin chain
  int64_t unreferenced_since_ms = 0;
};

struct VerifyProblem {
  std::string path;  // absolute path of the bad file
  std::string what;  // "digest mismatch", "size 10 != 12", "missing", ...
};

// What Store::Verify found (and Store::Scrub, in RepairReport).
struct VerifyReport {
  uint64_t generations_checked = 0;  // retained generations whose descriptions were read
  uint64_t objects_checked = 0;      // distinct objects of those generations (each once)
  uint64_t files_checked = 0;        // objects re-hashed, images and SAPI records
  uint64_t bytes_checked = 0;
  std::vector<VerifyProblem> problems;  // every missing or damaged file, by absolute path
  // Files under objects/ that no retained generation and no pull in
  // progress names (`what` says which kind): objects a failed or crashed
  // commit left, which the agent's next start deletes, and files that are
  // not objects at all, which nothing deletes. Reported, not problems: no
  // restore reads them. Sorted by path. `unnamed_checked` is false when the
  // answer could not be made exact (a retained generation is unreadable, or
  // a read-only store's catalog changed or was staging a pull: see
  // Store::Verify); `unnamed` is then empty.
  bool unnamed_checked = false;
  std::vector<VerifyProblem> unnamed;
  uint64_t unnamed_bytes = 0;
  bool ok() const { return problems.empty(); }
};

// What Store::Scrub found and did.
struct RepairReport : VerifyReport {
  bool repair = false;  // Scrub(true)
  int64_t started_ms = 0;
  int64_t finished_ms = 0;
  uint64_t objects_removed = 0;  // damaged objects moved to .trash (repair)
  uint64_t unnamed_removed = 0;  // unnamed objects deleted (repair)
  // Instances marked damaged (repair): their peer's next pull brings back
  // what they lack. Sorted uuids.
  std::vector<std::string> damaged_instances;
  // Peers whose held generation was reset so their next pull asks for a full
  // manifest (repair): pull them now. Sorted.
  std::vector<std::string> peers_to_pull;
};

// The last scrub's outcome, kept in catalog.json ("last_scrub") for status.
struct ScrubRecord {
  int64_t finished_ms = 0;  // wall time
  bool repair = false;
  uint64_t objects_checked = 0;
  uint64_t problems = 0;
  uint64_t repaired = 0;  // objects removed + instances marked for a re-fetch
  std::string first_problem;  // "<path>: <what>", "" when none
};

// A file the puller must fetch. `basis_path` is the current copy to compute
// a delta against (open it with PullTxn::OpenBasis), "" for a whole-file transfer.
struct Transfer {
  syncproto::FileEntry entry;
  std::string basis_path;
};

struct PlanSummary {
  uint64_t transfer_files = 0;
  uint64_t transfer_bytes = 0;   // sizes of the files to fetch (before delta)
  uint64_t unchanged_files = 0;  // files whose content the store holds (not transferred)
  uint64_t changed_instances = 0;
  uint64_t removed_instances = 0;  // newly marked removed
  bool orphaned = false;           // the rollback guard set data aside
  std::string orphan_dir;
};

class Store;
struct Catalog;  // the index in memory (internal/store_impl.h)

class PullTxn {
 public:
  ~PullTxn();  // aborts when neither Commit nor Abort was called
  PullTxn(const PullTxn&) = delete;
  PullTxn& operator=(const PullTxn&) = delete;

  const std::string& peer() const;

  // Plans the pull of `answer` (which must answer "since peer(held).generation
  // of boot_id", see Store::Peer). Applies the rollback guard first: when the
  // peer's generation is lower than the one we hold, or its boot id changed
  // and its generation is not higher, a checkout of every current
  // generation of the peer is kept under orphans/<peer>-<generation>-<time>/
  // (a log::Warn says so); orphans are never removed automatically. For a
  // PullSource::kHeldCopy the same case is refused instead (kTemporary,
  // naming both generations): another node's older copy never replaces ours.
  // Then plans each changed instance's next generation: a file whose
  // content the store holds as an object (any path, instance or peer) is
  // taken from there; empty files are staged at once; the rest is listed
  // in transfers(), each distinct content once. Fails with a data error on
  // an invalid manifest (bad path, a path under a symlink, an inconsistent
  // delta); then Abort.
  Result<PlanSummary> Plan(const syncproto::ManifestAnswer& answer);

  // Files to fetch, sorted by path. Valid after Plan.
  const std::vector<Transfer>& transfers() const;

  // Opens the basis of `t` for reading (signature computation).
  Result<std::unique_ptr<ReadableFile>> OpenBasis(const Transfer& t);

  // The staged file for transfer path `path`: created now, or ahead of the
  // transfer in a bulk pull (an object read-only, kObjectMode; an image or
  // record file 0600). Staged again (a retry), the first try is removed.
  Result<std::unique_ptr<WritableFile>> StageFile(const std::string& path);

  // Closes `file` (from StageFile(path)) and checks its size and digest (as
  // hashed by the store's writer while written; re-read when `file` is not
  // that writer) against the planned entry, then sets the mtime of an image
  // or record file. Does not fsync: Commit makes every staged file durable
  // before it renames anything in.
  // On a mismatch the staged file is removed and a data error returned: the
  // pull cannot commit unless the file is staged again and finishes. In a
  // bulk pull the check of an object runs on the write-behind thread once
  // its bytes are written: a mismatch is returned by the pull's next
  // StageFile write, FinishFile or Commit instead, and the pull cannot
  // commit at all.
  Status FinishFile(const std::string& path, std::unique_ptr<WritableFile> file);

  // Publishes the pull: images, generations and SAPI records renamed in and
  // fsync'd, then catalog.json renamed over (the commit point), then the
  // views (`current`, svc-* names; a failure there is logged, Open repairs
  // it), then retention. A failure before the commit point returns it and
  // leaves the previous state current, in memory and on disk (SAPI record
  // files already renamed in are adopted: they are complete records). A
  // failing fsync after the commit point returns an error saying the pull
  // is committed. Fails at once when a transfer did not finish.
  Status Commit();

  // Drops everything staged. The previous generation stays current.
  void Abort();

 private:
  friend class Store;
  struct State;
  struct Held;
  struct Published;
  explicit PullTxn(std::unique_ptr<State> state);

  // Plan's steps (pull_txn.cpp).
  Result<bool> CheckAnswer(const syncproto::ManifestAnswer& answer, const Held& held);
  Status PlanInstance(const syncproto::InstanceInfo& info, const syncproto::Manifest& m,
                      const std::map<std::string, syncproto::FileEntry>& answered,
                      const std::set<std::string>& removed, bool full, const Held& held);
  Status PlanFile(const syncproto::FileEntry& f, const syncproto::FileEntry* prev, bool damaged);
  Status PlanImages(const syncproto::Manifest& m,
                    const std::map<std::string, syncproto::FileEntry>& other);
  Status PlanRecords(const std::map<std::string, syncproto::FileEntry>& other);
  void StartTransfers();
  std::vector<std::string> ViewSkeletons();
  // Where object `id` is staged (ObjectStore::StagedPath), its staged
  // fan-out directory made when this pull has not made it yet.
  Result<std::string> StagedObjectPath(const Digest256& id);
  // Commit's phases (pull_txn.cpp).
  void StartViewPrefill();
  void FinishViewPrefill();
  void RelinkPrefilledViews(const std::vector<Digest256>& already_held);
  Result<std::vector<std::string>> StageDescriptions(int64_t now);
  Status StageTrees(size_t changed_index, std::vector<std::string>* staged_files);
  Status Publish(const std::vector<std::string>& texts, int64_t now, Catalog* next, Published* out);
  void MarkInstances(int64_t now, Catalog* next);
  void KeepFullPullWhileDamaged(Catalog& next);
  void AfterCommit(const Published& pub);

  std::unique_ptr<State> s_;
};

class Store {
 public:
  // Opens data_dir (creating it 0700 when missing; read_only: a missing
  // data_dir is an empty catalog) and loads catalog.json. Unless read_only,
  // makes the disk follow it: discards .staging/ leftovers and generations
  // or instances no commit reached, repairs the views (`current`, svc-*
  // names, sapi-insts.json), adopts SAPI record files newer than the index.
  // Without a readable catalog.json the index is rebuilt from the `current`
  // links (and rewritten unless read_only).
  static Result<std::unique_ptr<Store>> Open(Env& env, Clock& clock, StoreOptions options);
  ~Store();

  const std::string& data_dir() const;

  // Where the data of a pull comes from.
  enum class PullSource {
    kPeer,                 // the peer itself: it is believed about its own state (a
                           // generation that went back is taken, the old data orphaned)
    kHeldCopy,             // another node's copy of the peer's export: taken only when it
                           // is not older than what we hold (Plan fails otherwise)
    kHeldCopyEvenIfOlder,  // the same, and the operator asked for it explicitly
  };

  // Starts a pull from `peer`. `services` restricts it (empty = all): then
  // instances of other services are left alone and the peer's generation is
  // not advanced (the next unrestricted pull repeats from the old one).
  // Fails with a temporary error when a pull from `peer` is in progress.
  Result<std::unique_ptr<PullTxn>> BeginPull(const std::string& peer,
                                             std::vector<std::string> services = {},
                                             PullSource source = PullSource::kPeer);

  // Records a failed pull attempt (shown by status and catalog ls).
  Status RecordPullError(const std::string& peer, const Status& error);

  // ---- Read API (restore, status, CLI) ----
  std::vector<PeerState> Peers() const;
  std::optional<PeerState> Peer(const std::string& name) const;
  std::vector<InstanceRecord> Instances() const;  // sorted by service, alias, uuid
  std::vector<std::string> Services() const;      // sorted
  std::optional<InstanceRecord> FindInstance(const std::string& uuid) const;
  // Local generation numbers held for `uuid`, oldest first.
  Result<std::vector<uint64_t>> Generations(const std::string& uuid) const;
  // The current generation (seq 0) or a retained older one.
  Result<InstanceGeneration> Instance(const std::string& uuid, uint64_t seq = 0) const;
  // Checks generation `seq` of `uuid` out at `dir` (which must not exist):
  // directories, symlinks, files hard-linked to their objects (copied when
  // `dir` is on another filesystem). Read-only stores may do it too: it
  // writes only under `dir`. Fails naming the first missing object.
  Status Checkout(const std::string& uuid, uint64_t seq, const std::string& dir) const;
  std::vector<StoredImage> Images() const;
  // `image_uuid` and its ancestors, root first. Fails with kNotFound naming
  // the first image of the chain the store does not hold.
  Result<std::vector<StoredImage>> ImageChain(const std::string& image_uuid) const;
  // Re-hashes every object any retained generation names (each once), checks
  // each current description against catalog.json and every retained one
  // for being readable, and the images and SAPI records: each mismatch is
  // reported with its path (a description or object missing because
  // retention dropped every generation naming it while the walk ran is
  // not). Lists objects/ for files nothing names
  // (VerifyReport::unnamed): exact on a writable store (compared with the
  // reference counts under the commit lock, pulls in progress included). A
  // read-only store cannot see another process's pulls: its list stands
  // only when catalog.json is still the one Open read and no pull is
  // staging once objects/ was listed (else unnamed_checked is false).
  // Changes nothing; runs on the caller's thread for as long as reading
  // every object takes, beside pulls (no lock held while it reads).
  Result<VerifyReport> Verify() const;

  // Verify, then (with `repair`) acts on what it found and records the
  // result. Writable store only; never call it twice at once.
  //
  // With `repair`: each damaged object (wrong size or content, unreadable)
  // is moved to .trash, each unnamed object deleted; each instance one of whose retained
  // generations names a missing or removed object, or whose current description is bad, is marked
  // `damaged` and its peer's held generation reset to 0, all in one catalog.json write. The caller
  // then pulls those peers (RepairReport::peers_to_pull): a pull re-fetches exactly the files whose
  // objects are missing and clears the mark. A pull that planned before the
  // scrub's write and commits after it keeps the mark. An older generation
  // whose content the peer no longer exports stays damaged (reported by
  // every scrub). Either way the result is recorded (LastScrub).
  Result<RepairReport> Scrub(bool repair);

  // The last recorded scrub (catalog.json), if any.
  std::optional<ScrubRecord> LastScrub() const;

  // Applies retention now (also done by every Commit): old generations beyond
  // the retention policy, removed instances past removed_grace, unreferenced
  // images past removed_grace.
  Status ApplyRetention();

  class Impl;

 private:
  friend class PullTxn;
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lifeboat::catalog

#endif  // LIFEBOAT_CATALOG_STORE_H_
