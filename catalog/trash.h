// Trash: takes a tree out of the catalog with one rename and deletes it in
// the background, so that retention and cleanup never sit on a pull's path.
//
// Deleting a generation means an unlink per file and an rmdir per directory
// (tens of thousands for a large instance); on the bench fixture that was
// ~40% of a small pull's wall time. Discard() instead renames the tree into
// `<dir>` (same filesystem: the rename is atomic and O(1)) and a worker
// thread removes what is there. What a crash leaves in `<dir>` is deleted by
// the next Trash over the same directory. The rename is not fsync'd: after a
// crash a discarded tree may be back in its old place, and whoever discarded
// it must treat it as the leftover it is (retention prunes it again).
//
// Thread-safe. The destructor stops the worker after the tree it is deleting.
#ifndef LIFEBOAT_CATALOG_TRASH_H_
#define LIFEBOAT_CATALOG_TRASH_H_

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "base/env.h"
#include "base/status.h"

namespace lifeboat::catalog {

class Trash {
 public:
  // `dir` is created (0700) if missing; every entry already in it is deleted
  // by the worker. `env` must outlive the Trash.
  static Result<std::unique_ptr<Trash>> Open(Env& env, std::string dir);
  ~Trash();
  Trash(const Trash&) = delete;
  Trash& operator=(const Trash&) = delete;

  // Moves `path` (a file or tree on the same filesystem as the trash) into
  // the trash; NotFound when `path` does not exist. On any failure `path` is
  // untouched.
  Status Discard(const std::string& path);

  // Blocks until everything discarded so far is deleted (tests, shutdown
  // paths that want the space back). Returns the first deletion failure
  // since the last call (the failed tree stays in the trash and is retried
  // at the next Open).
  Status Drain();

 private:
  Trash(Env& env, std::string dir);
  void Run();

  Env& env_;
  const std::string dir_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t discarded_ = 0;  // trees renamed in (and leftovers found at Open)
  uint64_t deleted_ = 0;    // trees the worker finished with
  Status failed_;
  bool stop_ = false;
  std::thread worker_;
};

}  // namespace lifeboat::catalog

#endif  // LIFEBOAT_CATALOG_TRASH_H_
