// The catalog store's internals, shared by store.cpp (Store::Impl: open,
// recovery, views, retention, reads), pull_txn.cpp (PullTxn: plan, transfer,
// commit) and store_format.cpp (catalog.json and generation descriptions).
// Not part of the public API: include only from those files.
#ifndef LIFEBOAT_CATALOG_INTERNAL_STORE_IMPL_H_
#define LIFEBOAT_CATALOG_INTERNAL_STORE_IMPL_H_

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "base/digest.h"
#include "base/env.h"
#include "base/status.h"
#include "catalog/objects.h"
#include "catalog/retention.h"
#include "catalog/store.h"
#include "catalog/trash.h"
#include "catalog/trees.h"
#include "syncproto/manifest.h"

namespace lifeboat::catalog {

using nlohmann::json;
using syncproto::EntryKind;
using syncproto::FileEntry;
using syncproto::ManifestAnswer;

inline constexpr const char* kCatalogFile = "catalog.json";
inline constexpr const char* kGenerationFile = "lifeboat-generation.json";
inline constexpr const char* kStaging = ".staging";
inline constexpr const char* kTrash = ".trash";
inline constexpr const char* kCurrent = "current";         // the view: a checkout
inline constexpr const char* kCurrentSeq = "current.seq";  // the seq the view shows
inline constexpr const char* kObjects = "objects";

// A new view made ahead by a bulk pull under its staging directory: the
// directories of its entries (made during the transfers, FilePrecreator),
// and, when `filled`, every entry (made during the commit, ViewPrefill).
struct ViewSkeleton {
  std::string dir;  // "" when none
  bool filled = false;
};

// ---- JSON (de)serialization --------------------------------------------------

const char* KindName(EntryKind k);

json EntryToJson(const FileEntry& f);

Result<FileEntry> EntryFromJson(const json& j);
// ,"<key>":"<text>" or ,"<key>_hex":"<hex>", as PutBytes (base/text.h).
void AppendBytes(std::string* out, std::string_view key, std::string_view bytes);
// The text EntryToJson would give (same keys and values), written directly:
// descriptions and trees are written for every changed instance of a pull,
// and building a JSON tree per entry cost ~10 us each (0.2 s for 22k entries).
void AppendEntry(std::string* out, const FileEntry& f);

json PeerToJson(const PeerState& p);

PeerState PeerFromJson(const std::string& name, const json& j);

struct Record {  // a catalog.json instance: the public record + integrity of its description
  InstanceRecord r;
  Digest128 description_digest;  // XXH3 of the current generation's lifeboat-generation.json
};

json InstanceToJson(const Record& rec);

Record InstanceFromJson(const std::string& uuid, const json& j);

struct SapiRecord {
  Digest128 digest;
  uint64_t size = 0;
  std::string peer;
};

struct Catalog {
  std::map<std::string, PeerState> peers;
  std::map<std::string, Record> instances;
  std::map<std::string, StoredImage> images;
  SapiRecord application;  // size 0 and zero digest: none
  bool has_application = false;
  std::map<std::string, SapiRecord> services;  // sapi-svc.json per service
  std::optional<ScrubRecord> last_scrub;       // "last_scrub"
};

// A generation description: instances/<uuid>/<seq>.json (format 1:
// lifeboat-generation.json in the generation's tree).
struct Description {
  int format_version = kCatalogFormatVersion;  // 1: no sha256 in the entries; 3: trees
  InstanceRecord r;
  std::string node_uuid, boot_id;
  std::vector<FileEntry> files;  // sorted by path
  // Format 3: the text lists the top's members (trees.h), the other
  // entries are in trees. `trees` holds every tree's id once they are
  // built or read.
  bool has_tree = false;
  json top = json::array();
  std::shared_ptr<const TreeIds> trees;
};

// With `d.has_tree`, the text lists the top's members (format 3); else
// every entry (formats 1 and 2).
std::string EncodeDescription(const Description& d);

// The entries of a format-3 description are not read here (files is empty,
// has_tree and top set): Store::Impl::ReadEntries reads the trees.
Result<Description> DecodeDescription(const std::string& text, const std::string& where);

bool ParseSeq(const std::string& name, uint64_t* seq);
// The generation seqs of the descriptions in an instance directory, ascending.
std::vector<uint64_t> DescriptionSeqs(const std::vector<DirEntry>& entries);

// Permission bits put on disk: what the peer had, but always readable and
// traversable by the store's owner, never setuid/setgid/sticky.
uint32_t DiskMode(const FileEntry& e);

std::string CompactTime(int64_t wall_ms);

// The files and directories a commit step makes durable before its renames.
struct SyncSet {
  std::vector<std::string> files;
  std::set<std::string> dirs;
  bool empty() const { return files.empty() && dirs.empty(); }
  void clear() {
    files.clear();
    dirs.clear();
  }
};

// Makes every file and directory of `set` durable. With `fs` (opened before
// they were written) and at least `fs_from` paths: one syncfs of the whole
// filesystem, cheaper than thousands of fsyncs (each of which writes its
// inode, and on ext4 a journal commit or the parent directory). Else an
// fsync each, several at once: each waits for the device, and the
// filesystem batches concurrent ones into one journal commit. Returns the
// first failure (after every started fsync finished).
Status SyncAll(Env& env, const SyncSet& set, Filesystem* fs = nullptr,
               size_t fs_from = SIZE_MAX);

// The per-file check of Verify and Scrub: opens `path` and compares its size,
// XXH3-128 and (when `want_sha` is set) SHA-256 with the expected ones.
struct FileCheck {
  bool ok = true;
  bool missing = false;  // not there (ENOENT)
  std::string what;      // why not ok: "missing", "size 10 != 12", "digest mismatch: ...", errno text
  uint64_t bytes = 0;    // bytes read
};
FileCheck CheckStoredFile(Env& env, const std::string& path, const Digest128& want,
                          uint64_t want_size, const Digest256* want_sha);

// ---- Store::Impl -----------------------------------------------------------------

class Store::Impl {
 public:
  Impl(Env& env, Clock& clock, StoreOptions o)
      : env_(env),
        clock_(clock),
        o_(std::move(o)),
        objects_(env, JoinPath(o_.data_dir, kObjects)) {}

  Env& env_;
  Clock& clock_;
  StoreOptions o_;
  mutable std::mutex mu_;  // guards cat_ and active_
  Catalog cat_;
  std::set<std::string> active_;  // peers with a pull in progress
  // Guarded by mu_: raised by every scrub that marks instances damaged. A
  // pull remembers it at Plan; its commit keeps a mark set after that.
  uint64_t scrub_epoch_ = 0;
  mutable std::mutex commit_mu_;  // serializes every writer of catalog.json (commits,
                                  // retention, recorded errors); taken before mu_
  std::unique_ptr<Trash> trash_;  // what retention and cleanup delete (not when read_only)
  ObjectStore objects_;
  // Writable store only, guarded by mu_: the references to each object
  // (objects.h: from retained generations, pulls in progress and the
  // registered trees of both), and what each retained generation references
  // itself (uuid -> seq -> its top's objects).
  ObjectRefs refs_;
  struct RetainedGeneration {
    int64_t committed_ms = 0;  // the description's pulled_at_ms
    // The objects of its top (trees.h): each top file's and each top
    // directory's tree; every file's for a description without trees
    // (format 2). Its trees are registered in refs_.
    std::vector<Digest256> ids;
  };
  std::map<std::string, std::map<uint64_t, RetainedGeneration>> gen_ids_;
  // Writable store only, guarded by mu_: the entries of each instance's
  // current generation (seq, entries), so that planning a pull does not
  // parse descriptions (~5 us an entry). ~150 bytes per held file entry.
  // Each list is made as a non-const vector: a Plan holding its only other
  // reference takes it out and makes it the next generation in place
  // (PullTxn NextFromHeld); a missing entry is read from the description.
  std::map<std::string, std::pair<uint64_t, std::shared_ptr<const std::vector<FileEntry>>>>
      current_files_;
  // Writable store only, guarded by mu_: the trees of each instance's current
  // generation (seq, ids), so that a pull encodes only the changed ones. No
  // entry: the current generation lists its entries (format 2) or its trees
  // were not read; the next generation then encodes every tree.
  std::map<std::string, std::pair<uint64_t, std::shared_ptr<const TreeIds>>> current_trees_;

  // The entries of generation `seq` of `uuid`: from current_files_ when it
  // holds that seq, else read from its description.
  Result<std::shared_ptr<const std::vector<FileEntry>>> CurrentFiles(const std::string& uuid,
                                                                     uint64_t seq) const;
  // The trees of generation `seq` of `uuid` when current_trees_ holds them, else null.
  std::shared_ptr<const TreeIds> CurrentTrees(const std::string& uuid, uint64_t seq) const;

  std::string P(std::string_view rel) const { return JoinPath(o_.data_dir, rel); }
  std::string InstDir(const std::string& uuid) const { return P("instances/" + uuid); }
  // Format 2: a generation is its description, instances/<uuid>/<seq>.json.
  std::string DescPath(const std::string& uuid, uint64_t seq) const {
    return InstDir(uuid) + "/" + std::to_string(seq) + ".json";
  }
  std::string ViewDir(const std::string& uuid) const { return InstDir(uuid) + "/" + kCurrent; }
  std::string ViewSeqPath(const std::string& uuid) const {
    return InstDir(uuid) + "/" + kCurrentSeq;
  }
  std::string SvcDir(const std::string& svc) const { return P("svc-" + svc); }
  std::string ImageDir(const std::string& uuid) const { return P("images/" + uuid); }

  // ---- Open / recovery ----

  Status Open();

  // "<name>.tmp.<pid>.<n>" files of an atomic publish a crash interrupted:
  // catalog.json's, and those in svc-<service>/ and svc-<service>/data/.
  Status RemoveTempLeftovers();

  Status LoadCatalog(const std::string& text);

  std::string EncodeCatalog() const { return EncodeCatalog(cat_); }
  std::string EncodeCatalog(const Catalog& cat) const;

  // Caller holds mu_ or is single-threaded (Open).
  Status WriteCatalog() { return WriteFileAtomic(env_, P(kCatalogFile), EncodeCatalog(), 0600); }

  // The format of the catalog.json read by Open (1 until MigrateFormat1).
  int loaded_format_ = kCatalogFormatVersion;
  // catalog.json as Open read it (lstat), when it did not change while read.
  std::optional<FileStat> opened_index_;

  // Converts a format-1 catalog (a directory tree per generation) into
  // format 2 (objects + descriptions), crash-safe and resumable
  // (catalog/migrate.cpp): every file of every retained generation is
  // hashed and hard-linked into objects/, each generation gets its
  // <seq>.json; all of it is fsync'd before catalog.json says format 2;
  // only then are the old trees discarded. A crash before that point leaves
  // format 1 in charge and the next Open starts over (objects already there
  // are kept).
  Status MigrateFormat1();

  // Makes the index and the disk agree. catalog.json is the commit point of
  // every pull: when it was read (`index_loaded`), each instance is at the
  // seq it names, and a description newer than that, or an instance
  // directory it does not name, was written by a commit that never reached
  // its commit point (unless read_only: discarded). Without it, the index is
  // rebuilt from each instance's view marker (current.seq, at most one commit
  // behind) or, lacking that, its newest description.
  Status Reconcile(bool index_loaded, bool* changed);

  // Builds refs_ and gen_ids_ from every retained description and deletes
  // the objects no generation names (what crashed or failed pulls left).
  // Each distinct tree is read once (a TreeCache while it runs) and
  // registered once: its cost is the distinct trees, not the trees of every
  // generation.
  Status LoadRefs();

  // Deletes objects whose count reached zero. Caller holds mu_ (a Plan pins
  // under mu_ before it checks that an object exists).
  // Returns how many it deleted.
  size_t RemoveObjects(const std::vector<Digest256>& ids);

  // The view of `uuid` (instances/<uuid>/current/ and current.seq, then its
  // svc-* names) moved to generation `seq` with `entries`. With `from` (the
  // entries of the generation the view shows, at `from_seq`) and `changed`
  // (the paths whose entries differ between the two, trees.h ChangedPaths)
  // only those paths are looked at; without them, or when the view is not at
  // `from_seq`, or the update fails, the view is rebuilt: from `skeleton`
  // when given and there (moved into place, then filled unless it was
  // filled ahead). Not fsync'd: Open repairs.
  Status RefreshView(const std::string& uuid, uint64_t seq, const std::vector<FileEntry>& entries,
                     const std::vector<FileEntry>* from = nullptr, uint64_t from_seq = 0,
                     const std::vector<std::string>* changed = nullptr,
                     const ViewSkeleton& skeleton = {});

  // The seq the view of `uuid` shows (0 when none or being updated).
  uint64_t ViewSeq(const std::string& uuid) const;

  // A SAPI record file renamed into place by a commit that did not reach its
  // commit point is a complete record newer than the index says: the index
  // takes it (size and digest of what is on disk).
  void AdoptRecords(bool* changed);

  Status CleanInstanceDir(const std::string& uuid, uint64_t current);

  // Generation `seq` of `uuid` with its entries (read from its trees when
  // it names one), and the XXH3 of its text.
  // With `cache`, trees read before are not read again (trees.h TreeCache).
  Result<std::pair<Description, Digest128>> ReadDescription(const std::string& uuid, uint64_t seq,
                                                            TreeCache* cache = nullptr) const;
  // Fills d->files and d->trees from the trees d names (nothing to do for a
  // description that lists its entries). `where` names the description.
  Status ReadEntries(Description* d, const std::string& where, TreeFault* fault = nullptr,
                     TreeCache* cache = nullptr) const;

  // ---- Writing helpers that never follow a symlink ----

  // Ensures `dir` (under `root`, both absolute, root existing) is a real
  // directory chain: every component is lstat'ed and created 0700 when missing.
  Status MakeDirsUnder(const std::string& root, const std::string& rel,
                       std::unordered_set<std::string>* known);

  // Points symlink `link` at `target` atomically (new link, then rename over).
  // Does not fsync (the links are views: Open repairs them).
  Status PointLink(const std::string& link, const std::string& target);

  // svc-<service>/vm-<uuid>.json and svc-<service>/data/<uuid> (see PointLink).
  Status LinkServiceNames(const InstanceRecord& r);

  void UnlinkServiceNames(const std::string& service, const std::string& uuid) {
    env_.RemoveFile(SvcDir(service) + "/vm-" + uuid + ".json").IgnoreError();
    env_.RemoveFile(SvcDir(service) + "/data/" + uuid).IgnoreError();
  }

  // Where a SAPI record lives: the application record (service "") at
  // <data_dir>/sapi-app.json, hard-linked into every svc-<service>/ as a
  // view; a service record at svc-<service>/sapi-svc.json.
  std::string RecordPath(const std::string& service) const {
    return service.empty() ? P("sapi-app.json") : SvcDir(service) + "/sapi-svc.json";
  }

  // svc-<service>/sapi-app.json: a hard link to <data_dir>/sapi-app.json.
  // (A catalog written before that file existed keeps its per-service copies.)
  Status LinkApplicationRecord(const std::string& service);

  // Makes the views agree with the index: for each of `instances` whose
  // view is not at its seq, the view rebuilt, and its svc-<service> names; for each of `services`,
  // sapi-insts.json and sapi-app.json. Each is an atomic replace, not
  // fsync'd: the index is the truth and Open repairs every view. Tries
  // everything; returns the first failure. Caller holds mu_ (or is Open).
  Status UpdateViews(const std::set<std::string>& instances, const std::set<std::string>& services);

  // A file replace staged for a commit: `tmp` is written and closed, not yet
  // synced or renamed over `path`.
  struct PendingReplace {
    std::string tmp, path;
  };

  // Writes `data` to a temp file beside `path` without syncing it.
  Status StageReplace(const std::string& path, const std::string& data,
                      std::vector<PendingReplace>* pending);

  // Renames the staged replaces into place, in order, stopping at the first
  // failure (a caller that needs them durable fsyncs them before). Temp files
  // left by a failure are removed here or by Open.
  Status FinishReplaces(std::vector<PendingReplace>* pending);

  // svc-<service>/sapi-insts.json (a view): the SAPI records of the
  // service's held instances; replaced, not fsync'd, when its content differs.
  Status WriteSapiInstances(const std::string& service);

  // ---- Verify and scrub (store.cpp, scrub.cpp) ----

  // CheckStoredFile, counted and reported into `report`.
  void CheckInto(VerifyReport* report, const std::string& path, const Digest128& want,
                 uint64_t want_size, const Digest256* want_sha = nullptr) const;

  // Every image manifest and file, and the SAPI records, checked into `report`.
  void CheckImagesAndRecords(VerifyReport* report) const;

  // Generation `seq` of `uuid`, its text checked against `want` (zero: not
  // checked), its trees against their names (the failing tree in `*fault`;
  // with `cache`, each distinct tree read once: trees.h TreeCache).
  Result<Description> ReadCheckedDescription(const std::string& uuid, uint64_t seq,
                                             const Digest128& want, TreeFault* fault = nullptr,
                                             TreeCache* cache = nullptr) const;

  // ---- Retention ----

  Status ApplyRetentionLocked();
  // Whether `peer` went back (PeerState::went_back_ms) and the operator has
  // not released it (StoreOptions::release_went_back): its removed
  // instances are then kept past removed_grace.
  bool HeldForWentBack(const std::string& peer) const;

  Status PruneGenerations(const std::string& uuid, uint64_t current);
};

}  // namespace lifeboat::catalog

#endif  // LIFEBOAT_CATALOG_INTERNAL_STORE_IMPL_H_
