// Small RAII owners over libuv, after uvw: every uv handle is heap allocated,
// closed once, and freed in its close callback. Callbacks are static functions
// that recover their owner from `handle->data`; an owner sets `data` to null
// before closing, so a callback that libuv still delivers after the owner is
// gone is dropped. Callbacks are copied before they run so an owner may be
// destroyed from inside its own callback without freeing running code.
//
// Threads: everything here is used on the loop thread only, except
// LoopTasks::Post, which any thread may call.
#ifndef LIFEBOAT_AGENT_UV_H_
#define LIFEBOAT_AGENT_UV_H_

#include <uv.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "base/status.h"

namespace lifeboat::agent {

// "op: message" for a libuv error code (e.g. "connect 10.0.0.1:4650: connection refused").
Status UvError(std::string_view operation, int uv_err, bool retryable = true);

// Closes `handle` (if not closing already) and deletes it as a T in the close callback.
template <typename T>
void CloseAndDelete(T* handle) {
  if (handle == nullptr) return;
  auto* h = reinterpret_cast<uv_handle_t*>(handle);
  h->data = nullptr;
  if (uv_is_closing(h)) return;
  uv_close(h, [](uv_handle_t* x) { delete reinterpret_cast<T*>(x); });
}

// Owns one initialised uv handle of type T (uv_tcp_t, uv_timer_t, ...).
template <typename T>
class UvHandle {
 public:
  UvHandle() = default;
  explicit UvHandle(T* handle) : h_(handle) {}
  ~UvHandle() { reset(); }
  UvHandle(UvHandle&& o) noexcept : h_(o.h_) { o.h_ = nullptr; }
  UvHandle& operator=(UvHandle&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = o.h_;
      o.h_ = nullptr;
    }
    return *this;
  }
  UvHandle(const UvHandle&) = delete;
  UvHandle& operator=(const UvHandle&) = delete;

  T* get() const { return h_; }
  T* operator->() const { return h_; }
  explicit operator bool() const { return h_ != nullptr; }
  void reset() {
    CloseAndDelete(h_);
    h_ = nullptr;
  }

 private:
  T* h_ = nullptr;
};

// A one-shot or repeating timer. Destroying or Stop()ping it cancels it.
class Timer {
 public:
  explicit Timer(uv_loop_t* loop);
  // Runs `cb` after `delay_ms`, then every `repeat_ms` if non-zero. Replaces
  // any earlier Start.
  void Start(int64_t delay_ms, std::function<void()> cb, int64_t repeat_ms = 0);
  void Stop();
  bool active() const;
  // The timer no longer keeps the loop running (a watchdog): the loop may
  // end while it is pending.
  void Unref();

 private:
  static void OnTimer(uv_timer_t* t);
  UvHandle<uv_timer_t> timer_;
  std::function<void()> cb_;
};

// A signal watcher (SIGTERM, SIGINT, ...).
class SignalWatcher {
 public:
  SignalWatcher(uv_loop_t* loop, int signum, std::function<void(int)> cb);

 private:
  static void OnSignal(uv_signal_t* s, int signum);
  UvHandle<uv_signal_t> signal_;
  std::function<void(int)> cb_;
};

// A queue of closures run on the loop thread, in order, on a later loop turn.
// Post() may be called from any thread (it wakes the loop with uv_async) and
// from inside a callback (the closure runs after that callback returned: this
// is how objects are deleted without deleting from inside their own callback).
// While the LoopTasks exists its async handle keeps the loop alive; Close()
// runs what is queued and lets the loop end.
class LoopTasks {
 public:
  explicit LoopTasks(uv_loop_t* loop);
  ~LoopTasks();
  void Post(std::function<void()> fn);
  void Close();

 private:
  static void OnAsync(uv_async_t* a);
  void RunQueued();

  uv_async_t* async_ = nullptr;
  std::mutex mu_;
  std::deque<std::function<void()>> queue_;
  bool closed_ = false;
};

// Runs `fn` on the loop thread on a later loop turn (a one-shot zero timer).
// Used to delete an object outside its own callbacks. Loop thread only.
void Defer(uv_loop_t* loop, std::function<void()> fn);

// Deletes `obj` on a later loop turn.
template <typename T>
void DeferDelete(uv_loop_t* loop, std::unique_ptr<T> obj) {
  if (!obj) return;
  Defer(loop, [p = obj.release()] { delete p; });
}

// Runs `work` on the libuv thread pool and then `done` on the loop thread.
// Worker threads run at low CPU and I/O priority (nice 10, idle I/O class) so
// the headnode's own services come first. `work` must not touch loop-owned
// objects; `done` always runs (libuv offers no cancel once started).
void QueueWork(uv_loop_t* loop, std::function<void()> work, std::function<void()> done);

// Number of QueueWork items submitted whose `done` has not run yet (loop thread).
int WorkInFlight();

// Runs the loop until `pred()` holds or `timeout_ms` passed (tests, shutdown).
// Returns pred().
bool RunLoopUntil(uv_loop_t* loop, const std::function<bool()>& pred, int64_t timeout_ms);

// Closes every handle still open on `loop`, runs it until they are freed, and
// closes the loop. For an owned loop at the end of its life (tests, daemon exit).
void DrainAndCloseLoop(uv_loop_t* loop);

}  // namespace lifeboat::agent

#endif  // LIFEBOAT_AGENT_UV_H_
