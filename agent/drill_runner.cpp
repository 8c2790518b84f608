#include "agent/drill_runner.h"

#include <signal.h>

#include "base/log.h"

namespace lifeboat::agent {

DrillRunner::DrillRunner(uv_loop_t* loop, std::vector<std::string> argv, int64_t interval_ms)
    : loop_(loop), argv_(std::move(argv)), interval_ms_(interval_ms), timer_(loop),
      kill_timer_(loop) {}

DrillRunner::~DrillRunner() {
  Stop();
  if (child_ != nullptr) child_->data = nullptr;  // its exit is only closed now
}

void DrillRunner::Start() {
  timer_.Start(interval_ms_, [this] { Launch(); }, interval_ms_);
}

void DrillRunner::Stop() {
  stopped_ = true;
  timer_.Stop();
  if (child_ == nullptr) return;
  uv_process_kill(child_, SIGTERM);
  kill_timer_.Start(kKillAfterMs, [this] {
    if (child_ != nullptr) uv_process_kill(child_, SIGKILL);
  });
}

void DrillRunner::Launch() {
  if (stopped_) return;
  if (child_ != nullptr) {
    log::Info("drill: the previous drill is still running; skipping this one");
    return;
  }
  std::vector<char*> args;
  for (auto& a : argv_) args.push_back(a.data());
  args.push_back(nullptr);
  uv_stdio_container_t stdio[3];
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_IGNORE;  // the result is recorded; the child logs to stderr
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  uv_process_options_t o{};
  o.file = args[0];
  o.args = args.data();
  o.exit_cb = OnExit;
  o.stdio = stdio;
  o.stdio_count = 3;
  auto* p = new uv_process_t;
  p->data = this;
  ++started_total_;
  int rc = uv_spawn(loop_, p, &o);
  if (rc != 0) {
    ++failed_total_;
    log::Warn("drill: could not start", {{"command", argv_[0]}, {"err", uv_strerror(rc)}});
    uv_close(reinterpret_cast<uv_handle_t*>(p),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_process_t*>(h); });
    return;
  }
  child_ = p;
  log::Info("drill: started", {{"pid", p->pid}});
}

void DrillRunner::OnExit(uv_process_t* p, int64_t exit_status, int term_signal) {
  auto close = [](uv_process_t* h) {
    uv_close(reinterpret_cast<uv_handle_t*>(h),
             [](uv_handle_t* x) { delete reinterpret_cast<uv_process_t*>(x); });
  };
  auto* self = static_cast<DrillRunner*>(p->data);
  if (self == nullptr) return close(p);
  if (exit_status != 0 || term_signal != 0) {
    ++self->failed_total_;
    log::Warn("drill: failed (see lifeboat readiness)",
              {{"exit_status", exit_status}, {"signal", term_signal}});
  } else {
    log::Info("drill: passed");
  }
  self->child_ = nullptr;
  self->kill_timer_.Stop();
  close(p);
}

}  // namespace lifeboat::agent
