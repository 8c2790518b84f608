#include "syncproto/delta.h"

#include <librsync.h>
#include <xxhash.h>

#include "syncproto/frame.h"

#include <algorithm>
#include <cstring>

namespace lifeboat::syncproto {
namespace {

constexpr size_t kJobBuf = 256u << 10;
constexpr size_t kReadPiece = 1u << 20;

// Reads up to buf.size() bytes at `offset`, looping over short reads; fewer
// bytes only at end of file.
Result<size_t> ReadFull(ReadableFile& file, uint64_t offset, std::span<uint8_t> buf) {
  size_t got = 0;
  while (got < buf.size()) {
    ASSIGN_OR_RETURN(size_t n, file.ReadAt(offset + got, buf.subspan(got)));
    if (n == 0) break;
    got += n;
  }
  return got;
}

uint32_t BigEndian32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

// librsync logs its errors to stderr; ours carry the same facts in a Status.
struct QuietLibrsync {
  QuietLibrsync() { rs_trace_set_level(RS_LOG_CRIT); }
};
const QuietLibrsync kQuietLibrsync;

void PutBig(std::vector<uint8_t>* out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out->push_back(static_cast<uint8_t>(v >> (8 * i)));
}

}  // namespace

uint32_t CoarseBlockSizeFor(uint64_t size) {
  uint64_t want = size / 65536;
  uint64_t bs = kMinCoarseBlock;
  while (bs < want && bs < kMaxCoarseBlock) bs <<= 1;
  return static_cast<uint32_t>(bs);
}

Result<SignatureParams> SignatureParamsFor(uint64_t size) {
  rs_magic_number magic = RS_RK_BLAKE2_SIG_MAGIC;
  size_t block_len = 0;
  size_t strong_len = static_cast<size_t>(-1);
  rs_result r = rs_sig_args(static_cast<rs_long_t>(size), &magic, &block_len, &strong_len);
  if (r != RS_DONE) {
    return InternalError(std::string("rs_sig_args: ") + rs_strerror(r));
  }
  return SignatureParams{static_cast<uint32_t>(magic), static_cast<uint32_t>(block_len),
                         static_cast<uint32_t>(strong_len)};
}

// ---- RsJob ------------------------------------------------------------------

RsJob::~RsJob() {
  if (job_) rs_job_free(job_);
}

RsJob& RsJob::operator=(RsJob&& o) noexcept {
  if (this != &o) {
    if (job_) rs_job_free(job_);
    job_ = o.job_;
    o.job_ = nullptr;
  }
  return *this;
}

Status RsJob::Iterate(std::span<const uint8_t> in, bool eof, std::vector<uint8_t>* out,
                      const char* what) {
  return IterateTo(
      in, eof,
      [out](std::span<const uint8_t> d) {
        out->insert(out->end(), d.begin(), d.end());
        return Status::Ok();
      },
      what);
}

Status RsJob::IterateTo(std::span<const uint8_t> in, bool eof,
                        const std::function<Status(std::span<const uint8_t>)>& sink,
                        const char* what) {
  if (!job_) return InternalError(std::string(what) + ": job not started");
  if (!buf_) buf_.reset(new uint8_t[kJobBuf]);  // uninitialized on purpose
  rs_buffers_t b{};
  b.next_in = const_cast<char*>(reinterpret_cast<const char*>(in.data()));
  b.avail_in = in.size();
  b.eof_in = eof ? 1 : 0;
  for (;;) {
    b.next_out = reinterpret_cast<char*>(buf_.get());
    b.avail_out = kJobBuf;
    size_t in_before = b.avail_in;
    rs_result r = rs_job_iter(job_, &b);
    size_t produced = kJobBuf - b.avail_out;
    if (produced > 0) RETURN_IF_ERROR(sink(std::span<const uint8_t>(buf_.get(), produced)));
    if (r == RS_DONE) {
      if (b.avail_in != 0) {
        return DataError(std::string(what) + ": " + std::to_string(b.avail_in) +
                         " bytes after the end of the stream");
      }
      return Status::Ok();
    }
    if (r != RS_BLOCKED) return DataError(std::string(what) + ": " + rs_strerror(r));
    bool progress = produced > 0 || b.avail_in != in_before;
    if (b.avail_in == 0 && !eof && b.avail_out > 0) return Status::Ok();
    if (!progress && b.avail_out > 0) {
      return DataError(std::string(what) + ": stream truncated (librsync wants more input)");
    }
  }
}

// ---- Signature ----------------------------------------------------------------

Result<SignatureJob> SignatureJob::Start(uint64_t basis_size) {
  ASSIGN_OR_RETURN(SignatureParams p, SignatureParamsFor(basis_size));
  rs_job_t* job = rs_sig_begin(p.block_len, p.strong_len, static_cast<rs_magic_number>(p.magic));
  if (!job) return InternalError("rs_sig_begin failed");
  SignatureJob s;
  s.job_ = RsJob(job);
  return s;
}

Result<std::unique_ptr<LoadedSignature>> LoadedSignature::Load(std::span<const uint8_t> bytes) {
  if (bytes.size() < 12) {
    return DataError("bad signature: " + std::to_string(bytes.size()) +
                     " bytes is shorter than its header");
  }
  uint32_t magic = BigEndian32(bytes.data());
  uint32_t block_len = BigEndian32(bytes.data() + 4);
  uint32_t strong_len = BigEndian32(bytes.data() + 8);
  if (magic != RS_RK_BLAKE2_SIG_MAGIC) {
    return DataError("bad signature: magic 0x" + HexEncode(bytes.subspan(0, 4)) +
                     " is not RabinKarp+BLAKE2");
  }
  if (block_len < 16 || block_len > (64u << 20) || strong_len < 1 || strong_len > 32) {
    return DataError("bad signature: block_len " + std::to_string(block_len) + ", strong_len " +
                     std::to_string(strong_len) + " out of range");
  }
  if ((bytes.size() - 12) % (4 + strong_len) != 0) {
    return DataError("bad signature: body of " + std::to_string(bytes.size() - 12) +
                     " bytes is not a whole number of block sums");
  }
  rs_signature_t* sig = nullptr;
  RsJob job(rs_loadsig_begin(&sig));
  auto loaded = std::unique_ptr<LoadedSignature>(new LoadedSignature(nullptr));
  std::vector<uint8_t> none;
  Status s = job.Iterate(bytes, true, &none, "bad signature");
  loaded->sig_ = sig;  // freed by ~LoadedSignature even on failure
  if (!s.ok()) return s;
  rs_result r = rs_build_hash_table(sig);
  if (r != RS_DONE) return DataError(std::string("bad signature: ") + rs_strerror(r));
  return loaded;
}

LoadedSignature::~LoadedSignature() {
  if (sig_) rs_free_sumset(sig_);
}

Result<DeltaJob> DeltaJob::Start(const LoadedSignature& sig) {
  rs_job_t* job = rs_delta_begin(sig.get());
  if (!job) return InternalError("rs_delta_begin failed");
  DeltaJob d;
  d.job_ = RsJob(job);
  return d;
}

// ---- Patch ----------------------------------------------------------------------

struct PatchJob::Rep {
  RsJob job;
  ReadableFile* basis = nullptr;
  Sink sink;
  std::vector<uint8_t> copy_buf;
  Status copy_error;

  static rs_result Copy(void* opaque, rs_long_t pos, size_t* len, void** buf) {
    auto* rep = static_cast<Rep*>(opaque);
    if (pos < 0) {
      rep->copy_error = DataError("bad delta: COPY from negative offset");
      return RS_CORRUPT;
    }
    Result<size_t> n = ReadFull(*rep->basis, static_cast<uint64_t>(pos),
                                std::span<uint8_t>(static_cast<uint8_t*>(*buf), *len));
    if (!n.ok()) {
      rep->copy_error = n.status();
      return RS_IO_ERROR;
    }
    if (*n == 0) {
      rep->copy_error = DataError("bad delta: COPY at offset " + std::to_string(pos) +
                                  " beyond the end of the basis");
      return RS_CORRUPT;
    }
    *len = *n;
    return RS_DONE;
  }
};

PatchJob::PatchJob(std::unique_ptr<Rep> rep) : rep_(std::move(rep)) {}
PatchJob::~PatchJob() = default;

Result<std::unique_ptr<PatchJob>> PatchJob::Start(ReadableFile* basis, Sink sink) {
  auto rep = std::make_unique<Rep>();
  rep->basis = basis;
  rep->sink = std::move(sink);
  rs_job_t* job = rs_patch_begin(&Rep::Copy, rep.get());
  if (!job) return InternalError("rs_patch_begin failed");
  rep->job = RsJob(job);
  return std::unique_ptr<PatchJob>(new PatchJob(std::move(rep)));
}

namespace {
Status RunPatch(const PatchJob::Sink& sink, RsJob& job, std::span<const uint8_t> in, bool eof,
                const Status& copy_error) {
  Status s = job.IterateTo(in, eof, sink, "bad delta");
  if (!copy_error.ok()) return copy_error;
  return s;
}
}  // namespace

Status PatchJob::Feed(std::span<const uint8_t> delta) {
  // Bounded output: feed the delta in pieces so one call never holds more
  // than a piece's worth of patched output beyond the COPY lengths.
  while (!delta.empty()) {
    size_t n = std::min<size_t>(delta.size(), 64u << 10);
    RETURN_IF_ERROR(RunPatch(rep_->sink, rep_->job, delta.first(n), false, rep_->copy_error));
    delta = delta.subspan(n);
  }
  return Status::Ok();
}

Status PatchJob::Finish() { return RunPatch(rep_->sink, rep_->job, {}, true, rep_->copy_error); }

// ---- Basis summary -------------------------------------------------------------

Result<BasisSummary> SummarizeBasis(ReadableFile& basis, bool with_signature) {
  ASSIGN_OR_RETURN(FileStat st, basis.Stat());
  BasisSummary out;
  out.coarse.basis_size = st.size;
  out.coarse.block_size = CoarseBlockSizeFor(st.size);
  const uint32_t bs = out.coarse.block_size;
  out.coarse.hashes.reserve(CoarseBlockCount(st.size, bs));
  std::optional<SignatureJob> sig;
  std::vector<uint8_t> sig_bytes;
  if (with_signature) {
    ASSIGN_OR_RETURN(SignatureJob j, SignatureJob::Start(st.size));
    sig.emplace(std::move(j));
  }
  Xxh3Hasher hasher;
  std::vector<uint8_t> buf(std::max<size_t>(kReadPiece, bs));
  uint64_t off = 0;
  for (;;) {
    ASSIGN_OR_RETURN(size_t n, ReadFull(basis, off, buf));
    if (n == 0) break;
    std::span<const uint8_t> data(buf.data(), n);
    hasher.Update(data);
    for (size_t p = 0; p < n; p += bs) {
      size_t len = std::min<size_t>(bs, n - p);
      out.coarse.hashes.push_back(XXH3_64bits(data.data() + p, len));
    }
    if (sig) RETURN_IF_ERROR(sig->Feed(data, &sig_bytes));
    off += n;
    if (n < buf.size()) break;
  }
  if (off != st.size) {
    return TemporaryError("basis " + basis.path() + " changed while reading (" +
                          std::to_string(off) + " bytes read, " + std::to_string(st.size) +
                          " expected)");
  }
  if (sig) {
    RETURN_IF_ERROR(sig->Finish(&sig_bytes));
    out.signature.assign(sig_bytes.begin(), sig_bytes.end());
  }
  out.digest = hasher.Finish();
  return out;
}

// ---- Plain functions ---------------------------------------------------------------

Result<std::string> ComputeSignature(ReadableFile& basis) {
  ASSIGN_OR_RETURN(FileStat st, basis.Stat());
  ASSIGN_OR_RETURN(SignatureJob job, SignatureJob::Start(st.size));
  std::vector<uint8_t> out;
  RETURN_IF_ERROR(ForEachChunk(basis, kReadPiece,
                               [&](std::span<const uint8_t> d) { return job.Feed(d, &out); }));
  RETURN_IF_ERROR(job.Finish(&out));
  return std::string(out.begin(), out.end());
}

Status ComputeDelta(std::span<const uint8_t> signature, ReadableFile& new_file, WritableFile& out) {
  ASSIGN_OR_RETURN(auto sig, LoadedSignature::Load(signature));
  ASSIGN_OR_RETURN(DeltaJob job, DeltaJob::Start(*sig));
  std::vector<uint8_t> buf;
  RETURN_IF_ERROR(ForEachChunk(new_file, kReadPiece, [&](std::span<const uint8_t> d) {
    buf.clear();
    RETURN_IF_ERROR(job.Feed(d, &buf));
    return out.Append(buf);
  }));
  buf.clear();
  RETURN_IF_ERROR(job.Finish(&buf));
  return out.Append(buf);
}

Result<Digest128> ApplyDelta(ReadableFile& basis, ReadableFile& delta, WritableFile& out) {
  Xxh3Hasher hasher;
  ASSIGN_OR_RETURN(auto job, PatchJob::Start(&basis, [&](std::span<const uint8_t> d) {
                     hasher.Update(d);
                     return out.Append(d);
                   }));
  RETURN_IF_ERROR(
      ForEachChunk(delta, kReadPiece, [&](std::span<const uint8_t> d) { return job->Feed(d); }));
  RETURN_IF_ERROR(job->Finish());
  return hasher.Finish();
}

// ---- Coarse plan and the DELTA stream ------------------------------------------------

Result<CoarsePlan> PlanCoarse(ReadableFile& file, uint64_t size, const CoarseHashes& basis) {
  CoarsePlan plan;
  plan.size = size;
  const uint32_t bs = basis.block_size;
  if (bs == 0) return InternalError("PlanCoarse: zero block size");
  Xxh3Hasher hasher;
  std::vector<uint8_t> buf(std::max<size_t>(kReadPiece, bs));
  uint64_t off = 0;
  auto add = [&](uint64_t o, uint64_t len, bool matched) {
    if (!plan.regions.empty() && plan.regions.back().matched == matched &&
        plan.regions.back().offset + plan.regions.back().length == o) {
      plan.regions.back().length += len;
    } else {
      plan.regions.push_back(Region{o, len, matched});
    }
    if (!matched) plan.unmatched_bytes += len;
  };
  while (off < size) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - off));
    ASSIGN_OR_RETURN(size_t n, ReadFull(file, off, std::span<uint8_t>(buf.data(), want)));
    if (n < want) {
      return TemporaryError(file.path() + " changed while reading: " + std::to_string(off + n) +
                            " bytes, " + std::to_string(size) + " expected");
    }
    hasher.Update(std::span<const uint8_t>(buf.data(), n));
    for (size_t p = 0; p < n; p += bs) {
      uint64_t abs = off + p;
      size_t len = std::min<size_t>(bs, n - p);
      uint64_t idx = abs / bs;
      bool matched = false;
      if (idx < basis.hashes.size()) {
        uint64_t blen = std::min<uint64_t>(bs, basis.basis_size - idx * bs);
        matched = blen == len && XXH3_64bits(buf.data() + p, len) == basis.hashes[idx];
      }
      add(abs, len, matched);
    }
    off += n;
  }
  plan.digest = hasher.Finish();
  return plan;
}

bool WantsSignature(const CoarsePlan& plan, uint64_t min_bytes) {
  return plan.unmatched_bytes > std::max<uint64_t>(min_bytes, plan.size / 32);
}

void AppendDeltaMagic(std::vector<uint8_t>* out) { PutBig(out, RS_DELTA_MAGIC, 4); }
void AppendCopyCommand(uint64_t offset, uint64_t length, std::vector<uint8_t>* out) {
  out->push_back(0x54);  // RS_OP_COPY_N8_N8
  PutBig(out, offset, 8);
  PutBig(out, length, 8);
}
void AppendLiteralHeader(uint32_t length, std::vector<uint8_t>* out) {
  out->push_back(0x43);  // RS_OP_LITERAL_N4
  PutBig(out, length, 4);
}
void AppendEndCommand(std::vector<uint8_t>* out) { out->push_back(0x00); }  // RS_OP_END

DeltaStream::DeltaStream(ReadableFile* file, CoarsePlan plan, const LoadedSignature* sig)
    : file_(file), plan_(std::move(plan)), sig_(sig) {}

Status DeltaStream::Next(size_t max_bytes, std::vector<uint8_t>* out) {
  const size_t start = out->size();
  if (max_bytes == 0) max_bytes = 1;
  if (!header_sent_) {
    AppendDeltaMagic(out);
    header_sent_ = true;
  }
  while (!done_ && out->size() - start < max_bytes) {
    if (region_ == plan_.regions.size()) {
      AppendEndCommand(out);
      done_ = true;
      break;
    }
    const Region& r = plan_.regions[region_];
    if (r.matched) {
      AppendCopyCommand(r.offset, r.length, out);
      ++region_;
      continue;
    }
    RETURN_IF_ERROR(EmitUnmatched(r, max_bytes - (out->size() - start), out));
  }
  return Status::Ok();
}

Status DeltaStream::EmitUnmatched(const Region& r, size_t budget, std::vector<uint8_t>* out) {
  uint64_t left = r.length - region_pos_;
  size_t n =
      static_cast<size_t>(std::min<uint64_t>({left, std::max<size_t>(budget, 4096), kReadPiece}));
  if (n > 0) {
    read_buf_.resize(n);
    ASSIGN_OR_RETURN(size_t got, ReadFull(*file_, r.offset + region_pos_, read_buf_));
    if (got != n) {
      return TemporaryError(file_->path() + " changed while reading (shorter than " +
                            std::to_string(plan_.size) + " bytes)");
    }
  }
  if (!sig_) {
    AppendLiteralHeader(static_cast<uint32_t>(n), out);
    out->insert(out->end(), read_buf_.begin(), read_buf_.begin() + n);
    literal_bytes_ += n;
  } else {
    if (!job_) {
      ASSIGN_OR_RETURN(DeltaJob j, DeltaJob::Start(*sig_));
      job_ = std::make_unique<DeltaJob>(std::move(j));
      job_out_.clear();
      job_magic_stripped_ = false;
    }
    if (n > 0)
      RETURN_IF_ERROR(job_->Feed(std::span<const uint8_t>(read_buf_.data(), n), &job_out_));
    bool last = region_pos_ + n == r.length;
    if (last) RETURN_IF_ERROR(job_->Finish(&job_out_));
    size_t skip = 0;
    if (!job_magic_stripped_ && job_out_.size() >= 4) {
      skip = 4;
      job_magic_stripped_ = true;
    }
    // Hold back the final byte (RS_OP_END) until the job is finished.
    size_t keep_back = last ? 1 : 1;
    if (job_magic_stripped_ && job_out_.size() > skip + keep_back) {
      size_t emit = job_out_.size() - skip - keep_back;
      out->insert(out->end(), job_out_.begin() + skip, job_out_.begin() + skip + emit);
      job_out_.erase(job_out_.begin(), job_out_.begin() + skip + emit);
    } else if (skip) {
      job_out_.erase(job_out_.begin(), job_out_.begin() + skip);
    }
    if (last) {
      if (job_out_.size() != 1 || job_out_[0] != 0x00) {
        return InternalError("librsync delta did not end with RS_OP_END");
      }
      job_out_.clear();
      job_.reset();
    }
  }
  region_pos_ += n;
  if (region_pos_ == r.length) {
    ++region_;
    region_pos_ = 0;
  }
  return Status::Ok();
}

}  // namespace lifeboat::syncproto
