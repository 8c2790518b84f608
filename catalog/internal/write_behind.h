// WriteBehind: one thread that performs a bulk pull's staged-file writes
// while the transfers go on. The transfers run one at a time on one thread
// (decrypting, decompressing and checking each chunk in turn); with the
// writes handed over (and the store's hashing writer under them), the
// second core hashes the bytes and copies them into the page cache while
// the first decodes the next chunk. Used by PullTxn for a bulk
// pull (StoreOptions::bulk_pull_from), together with FilePrecreator.
//
// Wrap(file) returns a WritableFile whose Append copies the bytes and queues
// them (waiting while more than `max_queued_bytes` are queued; the copy
// goes into the buffer of a chunk written before when there is one, up to
// `max_queued_bytes` of such buffers' capacity kept: memory is bounded by
// about twice `max_queued_bytes`), whose
// StartWriteback and Close are queued after them, in order, and whose Sync
// waits for the file's queued work first. Close returns at once: a write or
// close that fails on the thread is kept (the first failure of all files)
// and returned by Drain, and by every later call of every wrapped file, so
// the pull stops at its next write. fd() is -1 (the writes are not the
// caller's to do).
//
// Then(check) queues a check run on the thread after what is queued so far
// (e.g. verifying a file's digest once its bytes are written): the check's
// failure becomes the WriteBehind's failure like a failed write.
//
// Drain waits until everything queued has been done (after Stop it returns
// at once: the thread ran what was queued before it ended). Stop (also the
// destructor) joins the thread after what is queued; a wrapped file used
// afterwards (it may outlive the WriteBehind) fails, and is closed when
// destroyed. Thread-safe.
#ifndef LIFEBOAT_CATALOG_INTERNAL_WRITE_BEHIND_H_
#define LIFEBOAT_CATALOG_INTERNAL_WRITE_BEHIND_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <thread>

#include "base/env.h"
#include "base/status.h"

namespace lifeboat::catalog::internal {

class WriteBehind {
 public:
  explicit WriteBehind(size_t max_queued_bytes);
  ~WriteBehind();  // Stop()
  WriteBehind(const WriteBehind&) = delete;
  WriteBehind& operator=(const WriteBehind&) = delete;

  // `file` may be shared with the caller (to read what it learned once a
  // check queued after its Close runs); only the thread calls it.
  std::unique_ptr<WritableFile> Wrap(std::shared_ptr<WritableFile> file);

  // Queues `check` after everything queued so far; the first failure so far
  // instead (the check is then not run).
  Status Then(std::function<Status()> check);

  // Waits until the queue is empty and nothing is being written; the first
  // failure so far.
  Status Drain();

  void Stop();

 private:
  class File;
  struct Shared;  // the queue: shared with the wrapped files, which may outlive this

  std::shared_ptr<Shared> shared_;
  std::thread thread_;
};

}  // namespace lifeboat::catalog::internal

#endif  // LIFEBOAT_CATALOG_INTERNAL_WRITE_BEHIND_H_
