#include "pull/pull_driver.h"

#include <utility>

#include "base/log.h"

namespace lifeboat::pull {

namespace {

catalog::Store::PullSource SourceOf(const PullDriverOptions& o) {
  if (o.held_peer.empty()) return catalog::Store::PullSource::kPeer;
  return o.allow_older ? catalog::Store::PullSource::kHeldCopyEvenIfOlder
                       : catalog::Store::PullSource::kHeldCopy;
}

// One warning per pull per incomplete instance (not one per skipped path):
// the peer's exporter left paths of it out, so the copy lacks them.
void WarnIncomplete(const catalog::InstanceRecord& r) {
  if (r.warnings.empty()) return;
  log::Warn("pull: incomplete copy: the peer's exporter skipped paths of the instance",
            {{"peer", r.peer},
             {"instance", r.uuid},
             {"alias", r.alias},
             {"skipped", r.warnings.size()},
             {"path", r.warnings.front().path},
             {"reason", r.warnings.front().reason}});
}

}  // namespace

Result<std::unique_ptr<PullDriver>> PullDriver::Begin(catalog::Store& store,
                                                      PullDriverOptions options) {
  ASSIGN_OR_RETURN(auto txn, store.BeginPull(options.peer, options.services, SourceOf(options)));
  return std::unique_ptr<PullDriver>(new PullDriver(store, std::move(options), std::move(txn)));
}

PullDriver::PullDriver(catalog::Store& store, PullDriverOptions options,
                       std::unique_ptr<catalog::PullTxn> txn)
    : store_(store), options_(std::move(options)), txn_(std::move(txn)) {
  session_ = std::make_unique<syncproto::PullerSession>(options_.cluster_key, options_.self,
                                                        options_.session);
  if (auto held = store_.Peer(options_.peer)) {
    since_generation_ = held->generation;
    since_boot_id_ = held->boot_id;
  }
}

// The session goes first: its destructor fails the pending requests, whose
// callbacks touch staged_ and the transaction.
PullDriver::~PullDriver() { session_.reset(); }

// ---- The session-shaped interface ----

Status PullDriver::Start() { return session_->Start(); }

Status PullDriver::Feed(std::span<const uint8_t> data) { return session_->Feed(data); }

Status PullDriver::Pump() {
  if (session_->authenticated()) Drive();
  return session_->Pump();
}

std::span<const uint8_t> PullDriver::output() const { return session_->output(); }
void PullDriver::ConsumeOutput(size_t n) { session_->ConsumeOutput(n); }
std::vector<uint8_t> PullDriver::TakeOutput() { return session_->TakeOutput(); }
bool PullDriver::done() const { return session_ == nullptr || session_->done(); }
bool PullDriver::authenticated() const { return session_ != nullptr && session_->authenticated(); }

// ---- The per-file loop ----

bool PullDriver::AllFilesDone() const {
  return planned_ && next_ >= transfers_.size() && retry_queue_.empty() && in_flight_ == 0;
}

bool PullDriver::CanRequestMore() const {
  return planned_ && error_.ok() && in_flight_ < options_.session.max_in_flight &&
         (next_ < transfers_.size() || !retry_queue_.empty());
}

PullCounts PullDriver::counts() const {
  return {files_done_.load(), files_total_.load(), bytes_done_.load(), bytes_total_.load()};
}

void PullDriver::Fail(Status s) {
  if (error_.ok()) error_ = std::move(s);
}

void PullDriver::Drive() {
  if (!error_.ok()) return;
  if (!manifest_requested_) {
    RequestManifest();
    return;
  }
  if (answer_ && !planned_) PlanAnswer();
  if (!planned_ || !error_.ok()) return;
  RequestFiles();
  if (AllFilesDone() && error_.ok() && !finish_sent_) {
    finish_sent_ = true;
    session_->Finish();
  }
}

void PullDriver::RequestManifest() {
  manifest_requested_ = true;
  auto r = session_->RequestHeldManifest(
      options_.held_peer, since_generation_, since_boot_id_, options_.services,
      [this](Result<syncproto::ManifestAnswer> a) { answer_ = std::move(a); });
  if (!r.ok()) Fail(r.status());
}

void PullDriver::PlanAnswer() {
  if (!answer_->ok()) {
    Fail(answer_->status().WithContext("manifest"));
    return;
  }
  const syncproto::ManifestAnswer& a = **answer_;
  kind_ = a.kind;
  generation_ = a.manifest.generation;
  auto plan = txn_->Plan(a);
  if (!plan.ok()) {
    Fail(plan.status().WithContext("plan"));
    return;
  }
  transfers_ = txn_->transfers();
  files_total_ = transfers_.size();
  uint64_t total = 0;
  for (const auto& t : transfers_) total += t.entry.size;
  bytes_total_ = total;
  planned_ = true;
  if (plan->orphaned) {
    log::Warn("peer went backwards: kept what we held",
              {{"peer", options_.peer}, {"orphan_dir", plan->orphan_dir}});
  }
}

void PullDriver::RequestFiles() {
  while (in_flight_ < options_.session.max_in_flight && error_.ok()) {
    size_t idx;
    if (!retry_queue_.empty()) {
      idx = retry_queue_.front();
      retry_queue_.pop_front();
    } else if (next_ < transfers_.size()) {
      idx = next_++;
    } else {
      break;
    }
    RequestOne(idx);
  }
}

void PullDriver::RequestOne(size_t idx) {
  const catalog::Transfer& t = transfers_[idx];
  auto staged = txn_->StageFile(t.entry.path);
  if (!staged.ok()) {
    Fail(staged.status());
    return;
  }
  syncproto::FileRequest fr;
  fr.path = t.entry.path;
  fr.expected = t.entry;
  if (!t.basis_path.empty()) {
    auto basis = txn_->OpenBasis(t);
    if (basis.ok()) {
      fr.basis = std::move(basis).value();
    } else {
      log::Warn(
          "basis unreadable; fetching the whole file",
          {{"peer", options_.peer}, {"path", t.entry.path}, {"err", basis.status().ToString()}});
    }
  }
  fr.out = staged->get();
  fr.sync_output = false;  // Commit fsyncs every staged file
  const std::string path = t.entry.path;
  staged_[path] = std::move(staged).value();
  ++in_flight_;
  auto r = session_->RequestFile(
      std::move(fr), [this, path, idx](const Status& st, const syncproto::FileTransferStats& fs) {
        OnFileDone(path, idx, st, fs);
      });
  if (!r.ok()) {
    --in_flight_;
    staged_.erase(path);
    Fail(r.status().WithContext(path));
  }
}

// Inside the session's Feed/Pump, or its destructor (Abort, ~PullDriver).
void PullDriver::OnFileDone(const std::string& path, size_t idx, const Status& st,
                            const syncproto::FileTransferStats& fs) {
  --in_flight_;
  std::unique_ptr<WritableFile> file;
  if (auto it = staged_.find(path); it != staged_.end()) {
    file = std::move(it->second);
    staged_.erase(it);
  }
  if (!error_.ok()) return;
  if (!st.ok()) {
    if (st.retryable() && retries_[path]++ < 1 && file) {
      log::Info("retrying a file that changed while served",
                {{"peer", options_.peer}, {"path", path}});
      retry_queue_.push_back(idx);
      return;
    }
    Fail(st.WithContext(path));
    return;
  }
  Status fin = txn_->FinishFile(path, std::move(file));
  if (!fin.ok()) {
    Fail(fin);
    return;
  }
  files_done_ += 1;
  bytes_done_ += fs.bytes_written;
}

// ---- The end ----

Result<uint64_t> PullDriver::Commit() {
  Status st = txn_->Commit();
  if (!st.ok()) {
    txn_->Abort();
    txn_.reset();
    store_.RecordPullError(options_.peer, st).IgnoreError();
    return st;
  }
  txn_.reset();
  uint64_t n = 0;
  for (const auto& i : store_.Instances()) {
    if (i.peer != options_.peer) continue;
    ++n;
    if (!i.removed) WarnIncomplete(i);
  }
  return n;
}

Status PullDriver::Abort(const Status& why) {
  Status named = NameFilesInFlight(why);
  Fail(named);       // the callbacks the session's destructor runs do nothing
  session_.reset();  // fails the pending requests
  staged_.clear();
  if (txn_) {
    txn_->Abort();
    txn_.reset();
    store_.RecordPullError(options_.peer, named).IgnoreError();
  }
  return named;
}

// A pull cut short (peer gone, timeout, cancel) names the files it had in
// flight, so the operator sees which transfer broke; an error that already
// names one of them is left alone.
Status PullDriver::NameFilesInFlight(const Status& why) const {
  if (why.ok() || staged_.empty()) return why;
  for (const auto& [path, file] : staged_) {
    if (why.message().find(path) != std::string::npos) return why;
  }
  std::string names;
  size_t listed = 0;
  for (const auto& [path, file] : staged_) {
    if (listed == 3) {
      names += " and " + std::to_string(staged_.size() - listed) + " more";
      break;
    }
    names += (listed++ ? ", " : "") + path;
  }
  return Status(
      why.code(),
      why.message() + " (file" + (staged_.size() > 1 ? "s" : "") + " in flight: " + names + ")",
      why.retryable());
}

}  // namespace lifeboat::pull
