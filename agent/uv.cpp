#include "agent/uv.h"

#include <unistd.h>

#include <string>

#include "base/priority.h"

namespace lifeboat::agent {

Status UvError(std::string_view operation, int uv_err, bool retryable) {
  std::string msg(operation);
  msg += ": ";
  msg += uv_strerror(uv_err);
  return Status(retryable ? Code::kUnavailable : Code::kIo, std::move(msg), retryable);
}

// ---- Timer ------------------------------------------------------------------

Timer::Timer(uv_loop_t* loop) {
  auto* t = new uv_timer_t;
  uv_timer_init(loop, t);  // cannot fail
  t->data = this;
  timer_ = UvHandle<uv_timer_t>(t);
}

void Timer::Start(int64_t delay_ms, std::function<void()> cb, int64_t repeat_ms) {
  cb_ = std::move(cb);
  timer_->data = this;
  uv_timer_start(timer_.get(), &Timer::OnTimer, static_cast<uint64_t>(delay_ms < 0 ? 0 : delay_ms),
                 static_cast<uint64_t>(repeat_ms < 0 ? 0 : repeat_ms));
}

void Timer::Stop() { uv_timer_stop(timer_.get()); }

void Timer::Unref() { uv_unref(reinterpret_cast<uv_handle_t*>(timer_.get())); }

bool Timer::active() const { return uv_is_active(reinterpret_cast<uv_handle_t*>(timer_.get())); }

void Timer::OnTimer(uv_timer_t* t) {
  auto* self = static_cast<Timer*>(t->data);
  if (self == nullptr) return;
  std::function<void()> cb = self->cb_;  // the owner may be destroyed by cb
  if (cb) cb();
}

// ---- SignalWatcher ------------------------------------------------------------

SignalWatcher::SignalWatcher(uv_loop_t* loop, int signum, std::function<void(int)> cb)
    : cb_(std::move(cb)) {
  auto* s = new uv_signal_t;
  uv_signal_init(loop, s);
  s->data = this;
  signal_ = UvHandle<uv_signal_t>(s);
  uv_signal_start(s, &SignalWatcher::OnSignal, signum);
}

void SignalWatcher::OnSignal(uv_signal_t* s, int signum) {
  auto* self = static_cast<SignalWatcher*>(s->data);
  if (self == nullptr) return;
  std::function<void(int)> cb = self->cb_;
  if (cb) cb(signum);
}

// ---- LoopTasks ------------------------------------------------------------------

LoopTasks::LoopTasks(uv_loop_t* loop) {
  async_ = new uv_async_t;
  uv_async_init(loop, async_, &LoopTasks::OnAsync);
  async_->data = this;
}

LoopTasks::~LoopTasks() { Close(); }

void LoopTasks::Post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;
    queue_.push_back(std::move(fn));
  }
  uv_async_send(async_);
}

void LoopTasks::Close() {
  if (async_ == nullptr) return;
  RunQueued();
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    queue_.clear();
  }
  CloseAndDelete(async_);
  async_ = nullptr;
}

void LoopTasks::OnAsync(uv_async_t* a) {
  auto* self = static_cast<LoopTasks*>(a->data);
  if (self != nullptr) self->RunQueued();
}

void LoopTasks::RunQueued() {
  // Closures posted while these run go to the next turn (a fresh async send).
  std::deque<std::function<void()>> batch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    batch.swap(queue_);
  }
  for (auto& fn : batch) fn();
}

// ---- Defer ---------------------------------------------------------------------------

void Defer(uv_loop_t* loop, std::function<void()> fn) {
  struct Deferred {
    uv_timer_t timer;
    std::function<void()> fn;
  };
  auto* d = new Deferred{{}, std::move(fn)};
  uv_timer_init(loop, &d->timer);
  d->timer.data = d;
  uv_timer_start(
      &d->timer,
      [](uv_timer_t* t) {
        auto* dd = static_cast<Deferred*>(t->data);
        std::function<void()> f = std::move(dd->fn);
        uv_close(reinterpret_cast<uv_handle_t*>(t),
                 [](uv_handle_t* h) { delete static_cast<Deferred*>(h->data); });
        f();
      },
      0, 0);
}

// ---- QueueWork ---------------------------------------------------------------------

namespace {

int g_work_in_flight = 0;

struct WorkItem {
  uv_work_t req;
  std::function<void()> work;
  std::function<void()> done;
};

}  // namespace

void QueueWork(uv_loop_t* loop, std::function<void()> work, std::function<void()> done) {
  auto* item = new WorkItem{{}, std::move(work), std::move(done)};
  item->req.data = item;
  ++g_work_in_flight;
  int rc = uv_queue_work(
      loop, &item->req,
      [](uv_work_t* req) {
        // Once per pool thread: nice 10, idle I/O class.
        thread_local bool lowered = false;
        if (!lowered) {
          LowerThreadPriority(10);
          lowered = true;
        }
        static_cast<WorkItem*>(req->data)->work();
      },
      [](uv_work_t* req, int /*status*/) {
        std::unique_ptr<WorkItem> it(static_cast<WorkItem*>(req->data));
        --g_work_in_flight;
        if (it->done) it->done();
      });
  if (rc != 0) {  // only fails for a null callback: run inline rather than lose the work
    std::unique_ptr<WorkItem> it(item);
    --g_work_in_flight;
    it->work();
    if (it->done) it->done();
  }
}

int WorkInFlight() { return g_work_in_flight; }

bool RunLoopUntil(uv_loop_t* loop, const std::function<bool()>& pred, int64_t timeout_ms) {
  uint64_t start = uv_now(loop);
  uv_timer_t tick;
  uv_timer_init(loop, &tick);
  uv_timer_start(
      &tick, [](uv_timer_t*) {}, 5, 5);
  bool ok = pred();
  while (!ok) {
    uv_update_time(loop);
    if (static_cast<int64_t>(uv_now(loop) - start) >= timeout_ms) break;
    uv_run(loop, UV_RUN_ONCE);
    ok = pred();
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
  uv_run(loop, UV_RUN_NOWAIT);  // lets the close complete while `tick` is alive
  return ok;
}

void DrainAndCloseLoop(uv_loop_t* loop) {
  uv_run(loop, UV_RUN_NOWAIT);
  uv_walk(
      loop,
      [](uv_handle_t* h, void*) {
        if (!uv_is_closing(h)) uv_close(h, nullptr);  // a leak at exit beats a dangling callback
      },
      nullptr);
  while (uv_loop_close(loop) == UV_EBUSY) uv_run(loop, UV_RUN_ONCE);
}

}  // namespace lifeboat::agent
