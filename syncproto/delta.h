// The delta engine: librsync signature / delta / patch as streaming RAII jobs
// over rs_job_iter with bounded buffers, the coarse same-offset block match,
// and the DELTA stream producer the server sends (docs/syncproto.md section 6).
//
// Threading: every function here is CPU/IO-heavy and self-contained: the
// agent may run them on a thread pool. Objects are single-threaded; a
// LoadedSignature may be shared read-only by several DeltaJobs at once.
// ReadableFile::ReadAt is pread, so a basis may be read by several jobs.
//
// Failure: a job that returned an error is finished; destroy it. Nothing here
// publishes files: writes go to the WritableFile the caller passed, and on
// failure the caller removes it.
#ifndef LIFEBOAT_SYNCPROTO_DELTA_H_
#define LIFEBOAT_SYNCPROTO_DELTA_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/digest.h"
#include "base/env.h"
#include "base/status.h"

struct rs_job;
struct rs_signature;

namespace lifeboat::syncproto {

// ---- Coarse block hashes ----------------------------------------------------

inline constexpr uint32_t kMinCoarseBlock = 4096;
inline constexpr uint32_t kMaxCoarseBlock = 16u << 20;

// The power of two >= size / 65536, clamped to [4 KiB, 16 MiB].
uint32_t CoarseBlockSizeFor(uint64_t size);

// XXH3-64 (seed 0) of each `block_size` block of a file (the last one shorter).
struct CoarseHashes {
  uint64_t basis_size = 0;
  uint32_t block_size = 0;
  std::vector<uint64_t> hashes;
};

// What the puller knows of its basis: coarse hashes, its XXH3-128, and
// (optionally) its librsync signature. Cacheable by digest: an unchanged basis
// never has to be read again.
struct BasisSummary {
  CoarseHashes coarse;
  Digest128 digest;
  std::string signature;  // empty when not computed
};

// Reads `basis` once: coarse hashes + digest (+ the librsync signature when
// `with_signature`). Reads in 1 MiB pieces; memory is bounded by the output.
Result<BasisSummary> SummarizeBasis(ReadableFile& basis, bool with_signature);

// ---- librsync jobs ------------------------------------------------------------

// librsync signature parameters for a basis of `size` bytes: RabinKarp +
// BLAKE2 (RS_RK_BLAKE2_SIG_MAGIC), rs_sig_args' recommended block length and
// the minimal strong sum length.
struct SignatureParams {
  uint32_t magic = 0;
  uint32_t block_len = 0;
  uint32_t strong_len = 0;
};
Result<SignatureParams> SignatureParamsFor(uint64_t size);

// Owns an rs_job_t (rs_job_free on destruction).
class RsJob {
 public:
  RsJob() = default;
  explicit RsJob(rs_job* job) : job_(job) {}
  ~RsJob();
  RsJob(RsJob&& o) noexcept : job_(o.job_), buf_(std::move(o.buf_)) { o.job_ = nullptr; }
  RsJob& operator=(RsJob&& o) noexcept;
  rs_job* get() const { return job_; }

  // Runs the job over `in` (all of it is consumed), appending output to *out
  // through a bounded 64 KiB buffer. With `eof`, runs to completion and
  // returns OK only on RS_DONE. `what` names the job in errors.
  Status Iterate(std::span<const uint8_t> in, bool eof, std::vector<uint8_t>* out,
                 const char* what);
  // The same, handing each piece of output to `sink` (no accumulation).
  Status IterateTo(std::span<const uint8_t> in, bool eof,
                   const std::function<Status(std::span<const uint8_t>)>& sink, const char* what);

 private:
  rs_job* job_ = nullptr;
  std::unique_ptr<uint8_t[]> buf_;  // output buffer, allocated on first use
};

// Streaming signature of a basis.
class SignatureJob {
 public:
  static Result<SignatureJob> Start(uint64_t basis_size);
  Status Feed(std::span<const uint8_t> data, std::vector<uint8_t>* out) {
    return job_.Iterate(data, false, out, "signature");
  }
  Status Finish(std::vector<uint8_t>* out) { return job_.Iterate({}, true, out, "signature"); }

 private:
  RsJob job_;
};

// A librsync signature loaded and indexed for delta computation. Owns the
// rs_signature_t (rs_free_sumset on destruction). Immutable after Load.
class LoadedSignature {
 public:
  // Fails with kData ("bad signature: ...") when librsync rejects the bytes,
  // the magic is not RS_RK_BLAKE2_SIG_MAGIC, or the input is truncated.
  static Result<std::unique_ptr<LoadedSignature>> Load(std::span<const uint8_t> bytes);
  ~LoadedSignature();
  rs_signature* get() const { return sig_; }

 private:
  explicit LoadedSignature(rs_signature* sig) : sig_(sig) {}
  rs_signature* sig_;
};

// Streaming delta of new data against a loaded signature (which must outlive
// the job). Output is a complete librsync delta (magic .. RS_OP_END).
class DeltaJob {
 public:
  static Result<DeltaJob> Start(const LoadedSignature& sig);
  Status Feed(std::span<const uint8_t> data, std::vector<uint8_t>* out) {
    return job_.Iterate(data, false, out, "delta");
  }
  Status Finish(std::vector<uint8_t>* out) { return job_.Iterate({}, true, out, "delta"); }

 private:
  RsJob job_;
};

// Streaming patch: delta bytes in, new-file bytes out through `sink`, COPY
// commands read from `basis` (which must outlive the job). A delta that is
// malformed or copies beyond the basis is kData ("bad delta: ...").
class PatchJob {
 public:
  using Sink = std::function<Status(std::span<const uint8_t>)>;
  static Result<std::unique_ptr<PatchJob>> Start(ReadableFile* basis, Sink sink);
  ~PatchJob();
  Status Feed(std::span<const uint8_t> delta);
  Status Finish();

 private:
  struct Rep;
  explicit PatchJob(std::unique_ptr<Rep> rep);
  std::unique_ptr<Rep> rep_;
};

// ---- Plain whole-file functions (thread-pool friendly) ------------------------

// The librsync signature of a whole basis.
Result<std::string> ComputeSignature(ReadableFile& basis);
// A complete librsync delta of `new_file` against `signature`, into `out`.
Status ComputeDelta(std::span<const uint8_t> signature, ReadableFile& new_file, WritableFile& out);
// Applies a complete delta (read from `delta`) to `basis`, writing `out`;
// returns the XXH3-128 of what was written.
Result<Digest128> ApplyDelta(ReadableFile& basis, ReadableFile& delta, WritableFile& out);

// ---- The DELTA stream the server sends ----------------------------------------

// A run of the new file: equal to the basis at the same offset (matched), or not.
struct Region {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool matched = false;
};

// The result of comparing the new file's coarse blocks with the basis' hashes.
struct CoarsePlan {
  uint64_t size = 0;
  std::vector<Region> regions;  // cover [0, size) in order, adjacent runs merged
  uint64_t unmatched_bytes = 0;
  Digest128 digest;  // XXH3-128 of all bytes read
};

// Reads `new_file` (size bytes) once, hashing it in `basis.block_size` blocks.
// A block matches when it is a full block of both files (or the same-length
// tail) at the same offset with the same XXH3-64. Fails with kIo on read
// errors and kTemporary when the file is shorter than `size` (changed).
Result<CoarsePlan> PlanCoarse(ReadableFile& new_file, uint64_t size, const CoarseHashes& basis);

// Whether the server should ask for the librsync signature for this plan:
// when the unmatched bytes exceed max(min_bytes, size / 32), a rolling search
// probably pays for the extra round trip and the signature bytes.
bool WantsSignature(const CoarsePlan& plan, uint64_t min_bytes = 1u << 20);

// Produces the librsync delta for a plan in bounded pieces: COPY for matched
// regions, LITERAL (or, with a signature, librsync's rolling delta) for the
// rest. `file` and `sig` must outlive the stream.
class DeltaStream {
 public:
  DeltaStream(ReadableFile* file, CoarsePlan plan, const LoadedSignature* sig);
  // Appends about `max_bytes` (at least 1 byte unless done) of delta to *out.
  Status Next(size_t max_bytes, std::vector<uint8_t>* out);
  // Switches unmatched regions to librsync's rolling delta; only before the
  // first Next().
  void set_signature(const LoadedSignature* sig) { sig_ = sig; }
  bool done() const { return done_; }
  uint64_t literal_bytes() const { return literal_bytes_; }

 private:
  Status EmitUnmatched(const Region& r, size_t max_bytes, std::vector<uint8_t>* out);

  ReadableFile* file_;
  CoarsePlan plan_;
  const LoadedSignature* sig_;
  size_t region_ = 0;
  uint64_t region_pos_ = 0;  // bytes of the current region consumed
  bool header_sent_ = false;
  bool done_ = false;
  uint64_t literal_bytes_ = 0;
  std::unique_ptr<DeltaJob> job_;  // rolling delta of the current region
  std::vector<uint8_t> job_out_;   // its pending output (magic stripped)
  bool job_magic_stripped_ = false;
  std::vector<uint8_t> read_buf_;
};

// Appends librsync delta commands (big-endian, prototab.h).
void AppendDeltaMagic(std::vector<uint8_t>* out);
void AppendCopyCommand(uint64_t offset, uint64_t length, std::vector<uint8_t>* out);
void AppendLiteralHeader(uint32_t length, std::vector<uint8_t>* out);
void AppendEndCommand(std::vector<uint8_t>* out);

}  // namespace lifeboat::syncproto

#endif  // LIFEBOAT_SYNCPROTO_DELTA_H_
