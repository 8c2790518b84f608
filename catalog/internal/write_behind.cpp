#include "catalog/internal/write_behind.h"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <utility>
#include <vector>

namespace lifeboat::catalog::internal {

struct WriteBehind::Shared {
  enum class Op : uint8_t { kAppend, kWriteback, kClose, kCheck };
  struct Job {
    std::shared_ptr<WritableFile> file;  // null for kCheck
    Op op = Op::kAppend;
    std::vector<uint8_t> data;        // kAppend
    uint64_t offset = 0, length = 0;  // kWriteback
    std::function<Status()> check;    // kCheck
  };

  explicit Shared(size_t max_bytes) : max_queued_bytes(max_bytes) {}

  // Queues `job`, waiting for room when it carries data (a chunk larger than
  // the bound goes when the queue is empty); the first failure instead.
  Status Queue(Job job) {
    std::unique_lock<std::mutex> lock(mu);
    const size_t bytes = job.data.size();
    cv.wait(lock, [&] {
      return !failed.ok() || stopped || queued_bytes == 0 ||
             queued_bytes + bytes <= max_queued_bytes;
    });
    if (!failed.ok()) return failed;
    if (stopped) {
      return InternalError((job.file ? "write to " + job.file->path() : std::string("a check")) +
                           " after the pull ended");
    }
    queued_bytes += bytes;
    queue.push_back(std::move(job));
    cv.notify_all();
    return Status::Ok();
  }

  // A buffer for a chunk: one the thread is done with when there is one
  // (its capacity reused: no allocation and first touch per chunk).
  std::vector<uint8_t> TakeBuffer() {
    std::lock_guard<std::mutex> lock(mu);
    if (spare.empty()) return {};
    std::vector<uint8_t> buf = std::move(spare.back());
    spare.pop_back();
    spare_bytes -= buf.capacity();
    return buf;
  }

  Status Failed() {
    std::lock_guard<std::mutex> lock(mu);
    return failed;
  }

  Status Drain() {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return (queue.empty() && !busy) || stopped; });
    return failed;
  }

  // The thread: each job in turn until stopped with nothing queued. After a
  // failure only closes run.
  void Run() {
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      cv.wait(lock, [&] { return stopped || !queue.empty(); });
      if (queue.empty()) return;
      Job job = std::move(queue.front());
      queue.pop_front();
      busy = true;
      const bool skip = !failed.ok();
      lock.unlock();
      Status st;
      switch (job.op) {
        case Op::kAppend:
          if (!skip) st = job.file->Append(job.data);
          break;
        case Op::kWriteback:
          if (!skip) job.file->StartWriteback(job.offset, job.length);
          break;
        case Op::kClose:
          st = job.file->Close();
          break;
        case Op::kCheck:
          if (!skip) st = job.check();
          break;
      }
      const size_t bytes = job.data.size();
      std::vector<uint8_t> buf = std::move(job.data);
      job = Job{};  // after a close, frees the file
      lock.lock();
      if (buf.capacity() != 0 && spare_bytes + buf.capacity() <= max_queued_bytes) {
        spare_bytes += buf.capacity();
        buf.clear();
        spare.push_back(std::move(buf));
      }
      queued_bytes -= bytes;
      busy = false;
      if (!st.ok() && failed.ok()) failed = st;
      cv.notify_all();
    }
  }

  const size_t max_queued_bytes;
  std::mutex mu;
  std::condition_variable cv;  // the thread waits for jobs; Queue for room; Drain for the end
  std::deque<Job> queue;
  size_t queued_bytes = 0;
  std::vector<std::vector<uint8_t>> spare;  // written chunks' buffers, for reuse
  size_t spare_bytes = 0;                   // their capacity, at most max_queued_bytes
  bool busy = false;  // the thread is doing a job
  bool stopped = false;
  Status failed;
};

// A wrapped file: its calls become jobs of the WriteBehind's thread.
class WriteBehind::File final : public WritableFile {
 public:
  File(std::shared_ptr<Shared> shared, std::shared_ptr<WritableFile> file)
      : shared_(std::move(shared)), file_(std::move(file)), path_(file_->path()) {}
  ~File() override { Close().IgnoreError(); }

  Status Append(std::span<const uint8_t> data) override {
    if (!file_) return IoError("write after close on " + path_);
    Shared::Job job;
    job.file = file_;
    job.data = shared_->TakeBuffer();
    job.data.assign(data.begin(), data.end());
    return shared_->Queue(std::move(job));
  }
  Status Sync() override {
    if (!file_) return IoError("fsync after close on " + path_);
    RETURN_IF_ERROR(shared_->Drain());
    return file_->Sync();
  }
  Status Close() override {
    if (!file_) return shared_->Failed();
    Shared::Job job;
    job.file = std::move(file_);
    job.op = Shared::Op::kClose;
    return shared_->Queue(std::move(job));
  }
  void StartWriteback(uint64_t offset, uint64_t length) override {
    if (!file_) return;
    Shared::Job job;
    job.file = file_;
    job.op = Shared::Op::kWriteback;
    job.offset = offset;
    job.length = length;
    shared_->Queue(std::move(job)).IgnoreError();  // a hint
  }
  const std::string& path() const override { return path_; }

 private:
  std::shared_ptr<Shared> shared_;
  std::shared_ptr<WritableFile> file_;  // null once closed
  const std::string path_;
};

WriteBehind::WriteBehind(size_t max_queued_bytes)
    : shared_(std::make_shared<Shared>(max_queued_bytes)),
      thread_([shared = shared_] { shared->Run(); }) {}

WriteBehind::~WriteBehind() { Stop(); }

std::unique_ptr<WritableFile> WriteBehind::Wrap(std::shared_ptr<WritableFile> file) {
  return std::make_unique<File>(shared_, std::move(file));
}

Status WriteBehind::Then(std::function<Status()> check) {
  Shared::Job job;
  job.op = Shared::Op::kCheck;
  job.check = std::move(check);
  return shared_->Queue(std::move(job));
}

Status WriteBehind::Drain() { return shared_->Drain(); }

void WriteBehind::Stop() {
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    shared_->stopped = true;
  }
  shared_->cv.notify_all();
  if (thread_.joinable()) thread_.join();
}

}  // namespace lifeboat::catalog::internal
