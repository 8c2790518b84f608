// FilePrecreator: creates a pull's staged files ahead of their transfers,
// on a thread of its own, so that the thread running the transfers does not
// pay for file creation. Creating a file can be the costliest step of a
// small file's transfer on the puller (inode allocation: on ext4 without a
// journal, soon after many deletions, a scan past every recently freed
// inode of the group), and the transfers run one at a time on one thread
// while the other core idles. Used by PullTxn for a bulk pull
// (StoreOptions::bulk_pull_from).
//
// The files are created in the order given (the order the pull requests
// them), each with OpenWrite(path, mode, exclusive), at most `depth` of them
// created and not yet taken. Take(i) hands over file i: the one created
// ahead, the creator's result when it is creating it right now (it waits),
// or, when the creator has not reached it, nothing: the caller creates it
// itself (the creator then skips it). A failed creation is handed over as
// the error, and the creator goes on with the next file.
//
// In its spare time (`depth` files waiting to be taken, or every file
// created) the creator makes the `spare_dirs` given, in order (parents
// first), 0700: a pull's new views are made ahead this way (PullTxn).
// Best effort: a directory that cannot be made is not reported (whoever
// needs it makes what is missing), and Stop leaves the rest unmade.
//
// Thread-safe. Stop() (also the destructor) joins the thread and closes the
// files never taken (they stay on disk, in the pull's staging directory);
// a Take after Stop is an error.
#ifndef LIFEBOAT_CATALOG_INTERNAL_FILE_PRECREATOR_H_
#define LIFEBOAT_CATALOG_INTERNAL_FILE_PRECREATOR_H_

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/env.h"
#include "base/status.h"

namespace lifeboat::catalog::internal {

class FilePrecreator {
 public:
  struct File {
    std::string path;
    uint32_t mode = 0600;
  };

  FilePrecreator(Env& env, std::vector<File> files, size_t depth,
                 std::vector<std::string> spare_dirs = {});
  ~FilePrecreator();  // Stop()
  FilePrecreator(const FilePrecreator&) = delete;
  FilePrecreator& operator=(const FilePrecreator&) = delete;

  // File `index` (of the constructor's list), each at most once: the created
  // file or the creation's error, or nullopt when the caller must create it.
  std::optional<Result<std::unique_ptr<WritableFile>>> Take(size_t index);

  // Stops creating and joins the thread; files never taken are closed (a
  // later Take of one is an error).
  void Stop();

 private:
  enum class State : uint8_t { kPending, kCreating, kReady, kTaken };
  void Run();

  Env& env_;
  const std::vector<File> files_;
  const size_t depth_;
  const std::vector<std::string> spare_dirs_;
  size_t next_dir_ = 0;  // the next of spare_dirs_ to make
  std::mutex mu_;
  std::condition_variable cv_;     // the creator waits for room, Take for a creation
  std::vector<State> state_;       // by index
  std::vector<std::optional<Result<std::unique_ptr<WritableFile>>>> ready_;  // by index
  size_t waiting_ = 0;             // created and not taken
  size_t next_ = 0;                // the next index the creator looks at
  bool stopped_ = false;
  std::thread thread_;
};

}  // namespace lifeboat::catalog::internal

#endif  // LIFEBOAT_CATALOG_INTERNAL_FILE_PRECREATOR_H_
