#include "catalog/internal/background_sync.h"

#include <utility>

namespace lifeboat::catalog::internal {

BackgroundSync::BackgroundSync(Env& env, size_t threads)
    : env_(env), max_threads_(threads == 0 ? 1 : threads) {}

BackgroundSync::~BackgroundSync() { Stop().IgnoreError(); }

void BackgroundSync::Add(std::string path, std::function<void()> on_synced) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return;
    queue_.emplace_back(std::move(path), std::move(on_synced));
    if (threads_.size() < max_threads_ && queue_.size() > threads_.size()) {
      threads_.emplace_back([this] { Run(); });
    }
  }
  cv_.notify_one();
}

Status BackgroundSync::Stop() {
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopped_ = true;
    queue_.clear();
    threads.swap(threads_);
  }
  cv_.notify_all();
  for (std::thread& t : threads) t.join();
  std::lock_guard<std::mutex> lock(mu_);
  return failed_;
}

void BackgroundSync::Run() {
  for (;;) {
    std::pair<std::string, std::function<void()>> item;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopped_ || !queue_.empty(); });
      if (stopped_) return;
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    Status st = env_.SyncFile(item.first);
    if (st.ok()) {
      if (item.second) item.second();
      continue;
    }
    // Gone: removed to be staged again (a retry), or by someone else. Not
    // reported: the caller fsyncs what was not reported, and learns then.
    if (st.code() == Code::kNotFound) continue;
    std::lock_guard<std::mutex> lock(mu_);
    if (failed_.ok()) failed_ = st;
  }
}

}  // namespace lifeboat::catalog::internal
