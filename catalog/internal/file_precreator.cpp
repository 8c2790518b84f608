#include "catalog/internal/file_precreator.h"

#include <algorithm>
#include <utility>

namespace lifeboat::catalog::internal {

FilePrecreator::FilePrecreator(Env& env, std::vector<File> files, size_t depth,
                               std::vector<std::string> spare_dirs)
    : env_(env),
      files_(std::move(files)),
      depth_(std::max<size_t>(depth, 1)),
      spare_dirs_(std::move(spare_dirs)),
      state_(files_.size(), State::kPending),
      ready_(files_.size()) {
  if (!files_.empty() || !spare_dirs_.empty()) thread_ = std::thread([this] { Run(); });
}

FilePrecreator::~FilePrecreator() { Stop(); }

void FilePrecreator::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopped_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& r : ready_) r.reset();  // closes what was never taken
}

void FilePrecreator::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    while (next_ < files_.size() && state_[next_] != State::kPending) ++next_;
    const bool file_due = next_ < files_.size();
    if (stopped_ || (!file_due && next_dir_ == spare_dirs_.size())) return;
    if (file_due && waiting_ < depth_) {
      const size_t i = next_++;
      state_[i] = State::kCreating;
      lock.unlock();
      auto made = env_.OpenWrite(files_[i].path, files_[i].mode, /*exclusive=*/true);
      lock.lock();
      ready_[i] = std::move(made);
      state_[i] = State::kReady;
      ++waiting_;
      cv_.notify_all();
    } else if (next_dir_ < spare_dirs_.size()) {
      const std::string& dir = spare_dirs_[next_dir_++];
      lock.unlock();
      env_.MakeDir(dir, 0700).IgnoreError();  // best effort (header)
      lock.lock();
    } else {
      cv_.wait(lock, [&] { return stopped_ || waiting_ < depth_; });
    }
  }
}

std::optional<Result<std::unique_ptr<WritableFile>>> FilePrecreator::Take(size_t index) {
  std::unique_lock<std::mutex> lock(mu_);
  if (index >= files_.size()) return std::nullopt;
  cv_.wait(lock, [&] { return state_[index] != State::kCreating; });
  const State was = state_[index];
  state_[index] = State::kTaken;
  if (stopped_ && was != State::kTaken) {
    // Created ahead and closed by Stop, or never created: either way the
    // pull is over, and the caller must not create the file itself.
    return Result<std::unique_ptr<WritableFile>>(
        InternalError("staged file " + files_[index].path + " taken after the pull ended"));
  }
  if (was != State::kReady) return std::nullopt;  // not reached (or taken): the caller's
  std::optional<Result<std::unique_ptr<WritableFile>>> out = std::move(ready_[index]);
  ready_[index].reset();
  --waiting_;
  cv_.notify_all();
  return out;
}

}  // namespace lifeboat::catalog::internal
