// The vocabulary of one pull from one peer, shared by the scheduler (when to
// pull, who waits), the puller (how to pull) and the control API (what to
// report).
#ifndef LIFEBOAT_AGENT_PULL_H_
#define LIFEBOAT_AGENT_PULL_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"

namespace lifeboat::agent {

// The phases of a pull, in order; kIdle when none runs.
enum class PullPhase { kIdle, kConnecting, kHandshake, kManifest, kTransfer, kCommit };
std::string_view PullPhaseName(PullPhase phase);

struct PullRequest {
  std::vector<std::string> services;  // empty = every service the peer exports
  std::string reason = "schedule";    // "schedule", "sync-now"
};

// A progress packet. Totals are known once the manifest was received.
struct PullProgress {
  std::string peer;
  PullPhase phase = PullPhase::kConnecting;
  uint64_t files_done = 0;
  uint64_t files_total = 0;
  uint64_t bytes_done = 0;   // file bytes written to staging (after patching)
  uint64_t bytes_total = 0;  // file bytes to be transferred
  uint64_t wire_bytes = 0;   // bytes received from the peer so far
};

struct PullResult {
  std::string peer;
  Status status;
  uint64_t generation = 0;     // the peer generation now held (0 = none)
  bool unchanged = false;      // the peer answered "nothing changed"
  uint64_t files = 0;          // files transferred
  uint64_t file_bytes = 0;     // bytes of those files
  uint64_t wire_bytes = 0;     // bytes received from the peer
  uint64_t literal_bytes = 0;  // delta literal bytes (data not found in the basis)
  uint64_t instances = 0;      // instances of the peer held after the pull
  int64_t started_wall_ms = 0;
  int64_t duration_ms = 0;
};

nlohmann::json ProgressToJson(const PullProgress& p);
nlohmann::json ResultToJson(const PullResult& r);

using ProgressFn = std::function<void(const PullProgress&)>;
using PullDoneFn = std::function<void(const PullResult&)>;

// One pull in progress. Callbacks run on the loop thread; `done` runs exactly
// once, never from inside Start() or Cancel().
class PullJob {
 public:
  virtual ~PullJob() = default;
  // Asks the pull to stop: before its commit it aborts (the catalog keeps the
  // previous generation); a commit already running finishes. `done` still runs.
  virtual void Cancel(const Status& why) = 0;
};

// Starts a pull from the peer the starter was made for.
using PullStarter =
    std::function<std::unique_ptr<PullJob>(const PullRequest&, ProgressFn, PullDoneFn)>;

}  // namespace lifeboat::agent

#endif  // LIFEBOAT_AGENT_PULL_H_
