// The restore journal: `<data_dir>/restores/<id>.json`, one per restore.
//
// It holds the whole plan (steps with their payloads), which steps finished,
// and the old uuid -> new uuid map with the target and times. It is rewritten
// atomically (WriteFileAtomic: temp, fsync, rename, fsync dir) after every
// finished step, so after a crash it names exactly the steps that completed;
// a step that was running when the process died is not marked and runs again
// (backends make every step safe to repeat after a partial run).
//
// The id is derived from the selection, backend and target, so rerunning the
// same `lifeboat restore` finds the journal and resumes it, keeping the new
// uuids and aliases of the first run.
//
// Not thread-safe: one Journal object per restore, used from one thread.
// Two processes running the same restore at once are not detected here
// (the restorer holds a lock file for that).
#ifndef LIFEBOAT_RESTORE_JOURNAL_H_
#define LIFEBOAT_RESTORE_JOURNAL_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/env.h"
#include "base/status.h"
#include "restore/plan.h"

namespace lifeboat::restore {

inline constexpr int kJournalFormat = 1;

// What was asked for: exactly one of the three lists/fields is set.
struct Selection {
  std::string peer;
  std::vector<std::string> services;
  std::vector<std::string> instances;
  std::optional<uint64_t> generation;  // --generation N
  std::optional<int64_t> at_ms;        // --at TIME: the generation current then (wall ms)

  nlohmann::json ToJson() const;
  std::string Describe() const;  // "peer headnode1", "services imgapi,vmapi", ...
};

// The journal id for a selection on a backend/target: readable prefix plus a
// digest of the canonical selection ("peer-headnode1-1f2e3d4c5b6a7988").
std::string JournalId(const Selection& selection, const std::string& backend,
                      const std::string& target);

std::string RestoresDir(const std::string& data_dir);  // <data_dir>/restores

struct JournalStep {
  Step step;
  bool done = false;
  int64_t finished_ms = 0;
  std::string warning;  // StepResult::warning of the run that finished it
};

// One restored instance, as other tools read it back (status, deposed check).
struct RestoredInstance {
  std::string old_uuid;
  std::string old_alias;
  std::string new_uuid;
  std::string alias;
  std::string service;
  std::string peer;         // the node the instance came from
  uint64_t generation = 0;  // the generation of the peer's data it was restored from
  std::string node;         // the node that ran the restore (config node.name)
  std::string backend;
  std::string target;
  int64_t restored_ms = 0;  // when its last step finished; 0 while not complete
  std::string journal_id;
};

class Journal {
 public:
  // Opens `<data_dir>/restores/<id>.json` if it exists; nullopt when it does not.
  static Result<std::optional<Journal>> Load(Env& env, const std::string& data_dir,
                                             const std::string& id);
  // A new journal for `plan` (not written until Save()).
  static Journal Create(Env& env, const std::string& data_dir, const std::string& id,
                        const Selection& selection, const std::string& node,
                        const std::string& backend, const std::string& target, const Plan& plan,
                        int64_t now_ms);

  const std::string& id() const { return id_; }
  std::string path() const;
  const std::vector<JournalStep>& steps() const { return steps_; }
  const std::vector<PlannedInstance>& instances() const { return instances_; }
  const std::vector<Skip>& skipped() const { return skipped_; }
  bool complete() const;
  size_t done_count() const;
  int64_t started_ms() const { return started_ms_; }
  int64_t finished_ms() const { return finished_ms_; }
  const std::string& node() const { return node_; }
  const std::string& backend() const { return backend_; }
  const std::string& target() const { return target_; }
  const std::string& last_error() const { return last_error_; }

  // The assignments of the first run, for re-planning a resumed restore.
  std::map<std::string, Assignment> Assignments() const;
  // The plan the journal holds (steps in order, instances, skipped, whether
  // it retires the old records: false for a journal from before that step).
  Plan ToPlan() const;
  // "<step id>: <warning>" of each finished step that left a warning.
  std::vector<std::string> StepWarnings() const;

  // Marks step `id` done at `now_ms`, with the warning its run left ("" for
  // none), and saves. Fails (and changes nothing on disk) when the save
  // fails; the step then runs again on the next run.
  Status MarkDone(const std::string& step_id, int64_t now_ms, const std::string& warning = "");
  // Leaves out the retire_old_records steps not yet done (a resumed restore
  // asked to keep the old records) and saves; nothing changes on disk when
  // the save fails. Returns how many were left out.
  Result<size_t> DropUndoneRetirements(int64_t now_ms);
  // Records the error of the last attempt (shown by a rerun) and saves.
  Status RecordError(const std::string& message, int64_t now_ms);
  // Writes the journal atomically, creating restores/ (0700) when missing.
  Status Save();

  nlohmann::json ToJson() const;
  static Result<Journal> FromJson(Env& env, const std::string& data_dir, const nlohmann::json& j);

 private:
  Journal(Env& env, std::string data_dir) : env_(&env), data_dir_(std::move(data_dir)) {}

  Env* env_;
  std::string data_dir_;
  std::string id_;
  nlohmann::json selection_;
  std::string node_;
  std::string backend_;
  std::string target_;
  int64_t started_ms_ = 0;
  int64_t updated_ms_ = 0;
  int64_t finished_ms_ = 0;
  std::string last_error_;
  bool retire_old_records_ = false;
  std::vector<PlannedInstance> instances_;
  std::vector<Skip> skipped_;
  std::vector<JournalStep> steps_;
};

// Every instance some journal under `data_dir` has begun to restore (at
// least one of its steps finished), by old uuid: restored_ms is set when all
// its steps finished, 0 while the restore is unfinished. A complete restore
// wins over an unfinished one, then the newest. A missing restores/
// directory is an empty result; an unreadable journal is an error naming it.
Result<std::map<std::string, RestoredInstance>> ListRestoreClaims(Env& env,
                                                                  const std::string& data_dir);

// Puts `r` into `into` (by old uuid) unless what is there wins: a complete
// restore over an unfinished one, then the newer. The rule of ListRestoreClaims.
void MergeRestored(std::map<std::string, RestoredInstance>& into, RestoredInstance r);

// The complete ones of ListRestoreClaims. For `status` and the agent: P's
// instances in this map are deposed.
Result<std::map<std::string, RestoredInstance>> ListRestoredInstances(Env& env,
                                                                      const std::string& data_dir);

}  // namespace lifeboat::restore

#endif  // LIFEBOAT_RESTORE_JOURNAL_H_
