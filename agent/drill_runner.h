// The agent's restore drill schedule ([drill] interval): every interval it
// starts the drill command (`lifeboat drill --background`, given by the CLI
// that started the agent: the agent does not depend on restore/) as a child
// process, never two at once. The child lowers its own priority, refuses to
// run while a real restore holds its lock, and records each peer's result
// under <data_dir>/checks/, where readiness and metrics read it.
//
// Threads: loop thread only. Stop() sends SIGTERM to a running child and
// closes the handles; the loop ends once the child has exited (bounded: a
// child that ignores SIGTERM gets SIGKILL after kKillAfterMs).
#ifndef LIFEBOAT_AGENT_DRILL_RUNNER_H_
#define LIFEBOAT_AGENT_DRILL_RUNNER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <uv.h>

#include "agent/uv.h"

namespace lifeboat::agent {

class DrillRunner {
 public:
  static constexpr int64_t kKillAfterMs = 5000;

  // `argv` must not be empty; `interval_ms` > 0.
  DrillRunner(uv_loop_t* loop, std::vector<std::string> argv, int64_t interval_ms);
  ~DrillRunner();
  DrillRunner(const DrillRunner&) = delete;
  DrillRunner& operator=(const DrillRunner&) = delete;

  void Start();
  void Stop();

  bool running() const { return child_ != nullptr; }
  uint64_t started_total() const { return started_total_; }
  uint64_t failed_total() const { return failed_total_; }  // non-zero exits and spawn errors

 private:
  void Launch();
  static void OnExit(uv_process_t* p, int64_t exit_status, int term_signal);

  uv_loop_t* loop_;
  std::vector<std::string> argv_;
  int64_t interval_ms_;
  Timer timer_;
  Timer kill_timer_;
  uv_process_t* child_ = nullptr;  // owned until its close callback
  bool stopped_ = false;
  uint64_t started_total_ = 0;
  uint64_t failed_total_ = 0;
};

}  // namespace lifeboat::agent

#endif  // LIFEBOAT_AGENT_DRILL_RUNNER_H_
