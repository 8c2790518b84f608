// BackgroundSync: fsyncs files on a few threads while the caller goes on, so
// that a pull's files are mostly durable by the time its commit needs them.
// Used by PullTxn: each transferred file is queued when FinishFile accepts it.
//
// Stop() ends it: the threads finish the fsync in hand and exit; what is still
// queued is dropped (the caller fsyncs whatever `on_synced` did not report).
// A file that is gone when its turn comes (removed to be staged again) is
// neither reported nor a failure.
// A failed fsync is kept (the first one) and returned by Stop(): after a
// failed fsync, Linux may report the next one as a success with the data
// lost, so the caller must not retry it and call the file durable.
//
// Thread-safe. A file's `on_synced` runs on a sync thread after its fsync
// succeeded, without internal locks held.
#ifndef LIFEBOAT_CATALOG_INTERNAL_BACKGROUND_SYNC_H_
#define LIFEBOAT_CATALOG_INTERNAL_BACKGROUND_SYNC_H_

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/env.h"
#include "base/status.h"

namespace lifeboat::catalog::internal {

class BackgroundSync {
 public:
  BackgroundSync(Env& env, size_t threads);
  ~BackgroundSync();  // Stop()
  BackgroundSync(const BackgroundSync&) = delete;
  BackgroundSync& operator=(const BackgroundSync&) = delete;

  // Queues `path` (threads start as files queue up). Ignored after Stop().
  void Add(std::string path, std::function<void()> on_synced);

  // Stops and joins the threads; returns the first fsync failure.
  Status Stop();

 private:
  void Run();

  Env& env_;
  const size_t max_threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<std::string, std::function<void()>>> queue_;
  bool stopped_ = false;
  Status failed_;
  std::vector<std::thread> threads_;
};

}  // namespace lifeboat::catalog::internal

#endif  // LIFEBOAT_CATALOG_INTERNAL_BACKGROUND_SYNC_H_
