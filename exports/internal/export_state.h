// The exporter's persisted state (exports/exporter.cpp): what a scan knows
// about every export path, the generation, boot id and journal, and the
// files that keep them across restarts. Not part of the public API: include
// only from exporter.cpp and its tests. Format: docs/catalog.md section 7.
//
// On disk, under the state directory:
//
//   export-state.bin   the base: the whole State at some generation, with a
//                      random base id (magic LBEXPST5), checksummed,
//                      published atomically (temp, fsync, rename, fsync dir)
//   export-state.log   append-only records, one per saved scan: the base id,
//                      a length, the delta from the previous save (generation,
//                      new journal entries, instances and images when they
//                      changed, cache entries upserted and paths removed),
//                      an XXH3-128 checksum
//
// The state = the base + every record of the log carrying the base's id, in
// order. Save appends one record and fdatasyncs it (O(changes) bytes, one
// sync); the caller serves a scan only after Save returned OK, so nothing
// served is ever lost. When the log outgrows half the base, Save writes a new
// base (new base id) instead and then truncates the log: records of another
// base id are ignored, so a crash between the two steps loads the new base.
//
// What a crash at any point leaves, and what Open makes of it:
//   - a torn last record (crash during an append; never served, since the
//     scan waited for the fdatasync) is cut off: the state is the one before
//     it;
//   - a record that fails its checks while a valid record of the same base
//     follows it, or a base that cannot be decoded, is corruption: the files
//     are set aside as *.corrupt and a new lineage starts (new boot id,
//     generation 0, every file hashed again), with a warning;
//   - an old state (LBEXPST4, LBEXPST3, LBEXPST2) loads as before; the first
//     save writes a new base.
// A failed Save (ENOSPC, EIO at any write site) leaves the state Open would
// load either the previous one or the new one (never a mix), and makes the
// next Save write a whole new base: nothing is ever appended after a partial
// record.
//
// Threads: one ExportStateFile per state directory and process; not
// thread-safe (the exporter saves from its serialized scans).
#ifndef LIFEBOAT_EXPORTS_INTERNAL_EXPORT_STATE_H_
#define LIFEBOAT_EXPORTS_INTERNAL_EXPORT_STATE_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/env.h"
#include "base/status.h"
#include "exports/internal/export_cache.h"
#include "syncproto/manifest.h"

namespace lifeboat::exports::internal {

struct JournalEntry {
  uint64_t generation = 0;
  std::vector<std::string> added, changed, removed;
  size_t paths() const { return added.size() + changed.size() + removed.size(); }
};

// Entries are shared and immutable so that copying the journal is cheap.
using Journal = std::deque<std::shared_ptr<const JournalEntry>>;

// Journal generations increase strictly; a saved state's journal is the
// previous one with entries appended and the oldest dropped.
struct State {
  uint64_t generation = 0;
  std::string boot_id;
  Journal journal;
  std::vector<syncproto::InstanceInfo> instances;
  std::vector<syncproto::ImageInfo> images;
  std::shared_ptr<const Cache> cache = std::make_shared<const Cache>();
};

inline constexpr const char* kStateFile = "export-state.bin";
inline constexpr const char* kStateLogFile = "export-state.log";

class ExportStateFile {
 public:
  struct Options {
    // The log is compacted into a new base when it would grow past
    // max(base size / 2, min_log_limit) bytes.
    uint64_t min_log_limit = 64 << 10;
  };

  // Loads the state under `dir` (created 0700) into *state; a missing,
  // corrupt or too old state starts a new lineage (a new boot id, generation
  // 0), which is written before Open returns. Fails only on I/O errors
  // (reading the files, creating the directory, writing a new lineage).
  static Result<std::unique_ptr<ExportStateFile>> Open(Env& env, const std::string& dir,
                                                       State* state, Options options);
  static Result<std::unique_ptr<ExportStateFile>> Open(Env& env, const std::string& dir,
                                                       State* state) {
    return Open(env, dir, state, Options());
  }

  // Makes `next` durable: appends the delta from the last state loaded or
  // saved and fdatasyncs it, or (log too large, a previous Save failed, a
  // new lineage, an old base) writes a new base and empties the log. Writes
  // nothing when `next` persists the same as that state. On failure the
  // disk holds the previous state or `next`, and the next Save writes a new
  // base.
  [[nodiscard]] Status Save(const State& next);

  // For tests and logs.
  uint64_t base_bytes() const { return base_bytes_; }
  uint64_t log_bytes() const { return log_bytes_; }
  uint64_t base_id() const { return base_id_; }

 private:
  ExportStateFile(Env& env, const std::string& dir, Options options);
  Status Load(State* state);
  Status StartLineage(State* state);
  Status WriteBase(const State& s);
  Status ResetLog();
  Status Append(const std::string& record);
  uint64_t LogLimit() const;

  Env& env_;
  Options options_;
  std::string dir_, base_path_, log_path_;
  State saved_;           // what the files hold (when !rewrite_base_)
  uint64_t base_id_ = 0;  // 0: no base of this format (an old one, or none)
  uint64_t base_bytes_ = 0;
  uint64_t log_bytes_ = 0;     // of records of this base (what follows them is junk)
  bool rewrite_base_ = false;  // the next Save writes a new base
  bool reset_log_ = false;     // the log holds no record to keep, maybe junk: truncate first
  std::unique_ptr<WritableFile> log_;  // open for appending; null: open on the next append
};

// The state file formats as pure functions (tests, fuzzing).
std::string EncodeBase(const State& s, uint64_t base_id);
enum class BaseDecode { kOk, kOld, kCorrupt };
// kOld: a state of a version whose lineage cannot be kept (LBEXPST1).
// *base_id is 0 for the older formats that still load (LBEXPST2..4).
BaseDecode DecodeBase(std::string_view data, State* s, uint64_t* base_id);
// The record that turns `from` into `to` in the log of base `base_id`; ""
// when `to` persists the same as `from`.
std::string EncodeRecord(const State& from, const State& to, uint64_t base_id);

}  // namespace lifeboat::exports::internal

#endif  // LIFEBOAT_EXPORTS_INTERNAL_EXPORT_STATE_H_
