// PullDriver: one pull from one peer without sockets or an event loop. It
// owns the syncproto PullerSession and the catalog PullTxn and runs the
// per-file loop between them:
//
//   handshake -> manifest request -> Plan(answer) -> for each transfer:
//   StageFile, RequestFile (with the basis the plan names) -> FinishFile
//   -> BYE -> Commit (or Abort)
//
// It is shaped like a syncproto session (docs/syncproto.md): the caller
// feeds it the bytes received from the peer (Feed), asks it to produce
// (Pump), writes out what output() holds and tells it how much was written
// (ConsumeOutput / TakeOutput). The agent runs it on the libuv thread pool
// through agent::SessionPump; tests connect it to a syncproto::ServerSession
// with an in-memory pipe (tests/unit/pull/pull_driver_test.cpp).
//
// Integrity: each file is written through the transaction's own staged
// writer (PullTxn::StageFile), which the session borrows; FinishFile
// re-checks its size and digest. A file the session or the store refuses
// fails the pull (a file the server says changed while served is asked for
// once more); nothing becomes current before Commit.
//
// Threads: a single-threaded object: call it from one thread at a time (any
// thread). counts() may be read from any thread at any time. Everything
// else that reads state (planned(), transfers_done(), error(), ...) is for
// between calls.
#ifndef LIFEBOAT_PULL_PULL_DRIVER_H_
#define LIFEBOAT_PULL_PULL_DRIVER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/env.h"
#include "base/status.h"
#include "catalog/store.h"
#include "syncproto/handshake.h"
#include "syncproto/session.h"

namespace lifeboat::pull {

struct PullDriverOptions {
  std::string peer;  // the configured peer name: the store's key, logs, errors
  // Non-empty: ask the server for its held copy of `peer`
  // (HELD_MANIFEST_REQUEST) instead of its own export; committed as `peer`'s.
  std::string held_peer;
  // With held_peer: take the copy even when it is older than what we hold.
  bool allow_older = false;
  std::vector<std::string> services;  // empty = every service the peer exports
  std::string cluster_key;
  syncproto::NodeIdentity self;
  // Session options; session.max_in_flight also bounds the files in flight.
  syncproto::PullerOptions session;
};

// Progress of the transfer phase; totals are known once the answer is planned.
struct PullCounts {
  uint64_t files_done = 0;
  uint64_t files_total = 0;
  uint64_t bytes_done = 0;  // bytes written to staging (after patching)
  uint64_t bytes_total = 0;
};

class PullDriver {
 public:
  // Opens the store's pull transaction for options.peer (Store::BeginPull)
  // and reads the generation held, which the manifest request asks "since".
  // Does store I/O: call it off the loop. `store` must outlive the driver.
  // Fails as BeginPull does (kTemporary while another pull of the peer runs).
  static Result<std::unique_ptr<PullDriver>> Begin(catalog::Store& store,
                                                   PullDriverOptions options);
  // Aborts the transaction (PullTxn's destructor) when neither Commit nor
  // Abort ran.
  ~PullDriver();
  PullDriver(const PullDriver&) = delete;
  PullDriver& operator=(const PullDriver&) = delete;

  // ---- The session-shaped interface (syncproto/session.h) ----
  // Queues the HELLO. Call once, first.
  Status Start();
  // Received bytes. Returns the connection-level error, as the session does;
  // a failure of the pull itself is error().
  Status Feed(std::span<const uint8_t> data);
  // Queues the manifest request, plans the answer, queues file requests
  // while fewer than max_in_flight run, queues BYE once every file finished;
  // then lets the session produce output.
  Status Pump();
  std::span<const uint8_t> output() const;
  void ConsumeOutput(size_t n);
  std::vector<uint8_t> TakeOutput();
  bool done() const;  // the session is done: write out output() and close
  bool authenticated() const;

  // ---- State, between calls ----
  bool planned() const { return planned_; }
  // Every transfer finished and BYE is queued: the pull may commit once the
  // output is written (or the peer closed the connection).
  bool transfers_done() const { return finish_sent_; }
  // Pump() would queue more file requests (a file finished inside Feed).
  bool CanRequestMore() const;
  // The first failure of the pull (manifest, plan, a file); ok otherwise.
  const Status& error() const { return error_; }
  PullCounts counts() const;
  uint64_t since_generation() const { return since_generation_; }
  // The peer generation the answer names; valid once planned.
  uint64_t generation() const { return generation_; }
  bool unchanged() const { return kind_ == syncproto::ManifestAnswer::Kind::kUnchanged; }

  // ---- The end: exactly one of these, once, with no Feed/Pump after ----
  // Publishes the pull (PullTxn::Commit) and returns the number of the
  // peer's instances held after it. On failure the transaction is aborted,
  // the error recorded for the peer (Store::RecordPullError) and returned;
  // the previous generation stays current.
  Result<uint64_t> Commit();
  // Drops the session (its pending requests fail), every staged file and
  // the transaction; the previous generation stays current. Records and
  // returns `why`, naming the files that were in flight unless it already
  // names one of them.
  Status Abort(const Status& why);

 private:
  PullDriver(catalog::Store& store, PullDriverOptions options,
             std::unique_ptr<catalog::PullTxn> txn);

  void Drive();
  void RequestManifest();
  void PlanAnswer();
  void RequestFiles();
  void RequestOne(size_t idx);
  void OnFileDone(const std::string& path, size_t idx, const Status& st,
                  const syncproto::FileTransferStats& fs);
  void Fail(Status s);
  bool AllFilesDone() const;
  Status NameFilesInFlight(const Status& why) const;

  catalog::Store& store_;
  PullDriverOptions options_;
  std::unique_ptr<catalog::PullTxn> txn_;
  std::unique_ptr<syncproto::PullerSession> session_;
  uint64_t since_generation_ = 0;
  std::string since_boot_id_;

  bool manifest_requested_ = false;
  std::optional<Result<syncproto::ManifestAnswer>> answer_;
  bool planned_ = false;
  syncproto::ManifestAnswer::Kind kind_ = syncproto::ManifestAnswer::Kind::kFull;
  uint64_t generation_ = 0;
  std::vector<catalog::Transfer> transfers_;
  size_t next_ = 0;
  uint32_t in_flight_ = 0;
  // The transaction's staged writers of the files in flight, by export path;
  // the session appends to them, FinishFile takes them back.
  std::map<std::string, std::unique_ptr<WritableFile>> staged_;
  std::map<std::string, int> retries_;
  std::deque<size_t> retry_queue_;
  bool finish_sent_ = false;
  Status error_;

  std::atomic<uint64_t> files_done_{0};
  std::atomic<uint64_t> files_total_{0};
  std::atomic<uint64_t> bytes_done_{0};
  std::atomic<uint64_t> bytes_total_{0};
};

}  // namespace lifeboat::pull

#endif  // LIFEBOAT_PULL_PULL_DRIVER_H_
