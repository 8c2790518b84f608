#include "catalog/trash.h"

#include "base/digest.h"
#include "base/log.h"

namespace lifeboat::catalog {

Result<std::unique_ptr<Trash>> Trash::Open(Env& env, std::string dir) {
  RETURN_IF_ERROR(CreateDirs(env, dir, 0700));
  ASSIGN_OR_RETURN(auto leftovers, env.ListDir(dir));
  std::unique_ptr<Trash> t(new Trash(env, std::move(dir)));
  if (!leftovers.empty()) {
    std::lock_guard<std::mutex> lock(t->mu_);
    ++t->discarded_;
  }
  t->worker_ = std::thread([p = t.get()] { p->Run(); });
  return t;
}

Trash::Trash(Env& env, std::string dir) : env_(env), dir_(std::move(dir)) {}

Trash::~Trash() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

Status Trash::Discard(const std::string& path) {
  // A fresh name per tree: a leftover of an earlier process may still be there.
  const std::string to = JoinPath(dir_, RandomHex().substr(0, 16));
  RETURN_IF_ERROR(env_.Rename(path, to));
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++discarded_;
  }
  cv_.notify_all();
  return Status::Ok();
}

Status Trash::Drain() {
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t want = discarded_;
  cv_.wait(lock, [&] { return deleted_ >= want || stop_; });
  Status out = failed_;
  failed_ = Status::Ok();
  return out;
}

void Trash::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || deleted_ < discarded_; });
    if (stop_) return;
    // Every tree counted up to here was renamed in before it was counted, so
    // the listing below holds it.
    const uint64_t target = discarded_;
    lock.unlock();
    Status st;
    auto entries = env_.ListDir(dir_);
    if (!entries.ok()) {
      st = entries.status();
    } else {
      for (const DirEntry& e : *entries) {
        {
          std::lock_guard<std::mutex> check(mu_);
          if (stop_) return;
        }
        if (Status one = RemoveTree(env_, JoinPath(dir_, e.name)); !one.ok() && st.ok()) st = one;
      }
    }
    if (!st.ok()) {
      log::Warn("catalog: cannot delete discarded data (retried at the next start)",
                {{"dir", dir_}, {"error", st.message()}});
    }
    lock.lock();
    if (!st.ok() && failed_.ok()) failed_ = st;
    deleted_ = target;
    cv_.notify_all();
  }
}

}  // namespace lifeboat::catalog
