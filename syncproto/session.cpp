#include "syncproto/session.h"

#include <zstd.h>

#include <algorithm>
#include <list>
#include <mutex>

#include "syncproto/internal/coding.h"
#include "syncproto/manifest_codec.h"

namespace lifeboat::syncproto {
namespace {

bool IsImageFile(std::string_view path) {
  // images/<uuid>/file
  if (path.rfind("images/", 0) != 0) return false;
  size_t slash = path.find('/', 7);
  return slash != std::string_view::npos && path.substr(slash + 1) == "file";
}

void AppendSplit(std::vector<uint8_t>* out, FrameType type, uint32_t stream,
                 std::span<const uint8_t> data, size_t piece, bool end_flag) {
  if (data.empty()) {
    AppendFrame(out, type, end_flag ? kFlagEnd : 0, stream, {});
    return;
  }
  while (!data.empty()) {
    size_t n = std::min(data.size(), piece);
    bool last = n == data.size();
    AppendFrame(out, type, (last && end_flag) ? kFlagEnd : 0, stream, data.first(n));
    data = data.subspan(n);
  }
}

std::string Quoted(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out.push_back('"');
  out.append(s.substr(0, 256));
  out.push_back('"');
  return out;
}

// Compacts a consumed output buffer.
void Consume(std::vector<uint8_t>* out, size_t* pos, size_t n) {
  *pos = std::min(out->size(), *pos + n);
  if (*pos == out->size()) {
    out->clear();
    *pos = 0;
  } else if (*pos > (1u << 20) && *pos * 2 > out->size()) {
    out->erase(out->begin(), out->begin() + static_cast<ptrdiff_t>(*pos));
    *pos = 0;
  }
}

// Moves the unconsumed part of an output buffer out, keeping its capacity.
std::vector<uint8_t> Take(std::vector<uint8_t>* out, size_t* pos) {
  std::vector<uint8_t> taken;
  if (*pos == 0) {
    const size_t cap = out->capacity();
    taken.swap(*out);
    out->reserve(std::min<size_t>(cap, 8u << 20));
  } else {
    taken.assign(out->begin() + static_cast<ptrdiff_t>(*pos), out->end());
    out->clear();
  }
  *pos = 0;
  return taken;
}

// Decompresses one FILE_DATA chunk, bounded by kMaxChunkBytes.
Status DecompressChunk(ZSTD_DCtx* dctx, std::span<const uint8_t> in, std::vector<uint8_t>* out) {
  unsigned long long size = ZSTD_getFrameContentSize(in.data(), in.size());
  if (size == ZSTD_CONTENTSIZE_ERROR) return DataError("bad zstd: not a zstd frame");
  if (size == ZSTD_CONTENTSIZE_UNKNOWN) return DataError("bad zstd: frame without a content size");
  if (size > kMaxChunkBytes) {
    return DataError("bad zstd: chunk declares " + std::to_string(size) + " bytes, limit " +
                     std::to_string(kMaxChunkBytes));
  }
  out->resize(static_cast<size_t>(size));
  size_t n = ZSTD_decompressDCtx(dctx, out->data(), out->size(), in.data(), in.size());
  if (ZSTD_isError(n)) return DataError(std::string("bad zstd: ") + ZSTD_getErrorName(n));
  if (n != size) {
    return DataError("bad zstd: chunk decompressed to " + std::to_string(n) + " bytes, declared " +
                     std::to_string(size));
  }
  return Status::Ok();
}

}  // namespace

// ============================================================================
// ServerSession
// ============================================================================

struct ServerSession::Zstd {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  std::vector<uint8_t> buf;
  ~Zstd() { ZSTD_freeCCtx(cctx); }
};

struct ServerSession::Stream {
  enum class State { kWaitBasis, kWaitSignature, kSending };
  uint32_t id = 0;
  State state = State::kSending;
  FileRequestMsg req;
  FileEntry entry;
  std::unique_ptr<ReadableFile> file;
  std::vector<uint8_t> basis_bytes;
  std::vector<uint8_t> sig_bytes;
  std::unique_ptr<LoadedSignature> sig;
  std::unique_ptr<DeltaStream> delta;
  TransferMethod method = TransferMethod::kWhole;
  bool started = false;
  uint64_t sent = 0;  // whole: file bytes sent
  Xxh3Hasher hasher;
  std::vector<uint8_t> buf;
  // The last chunk of this stream did not compress: the next ones are
  // compressed only when a small sample of them does (see SendChunk).
  bool incompressible = false;
};

ServerSession::ServerSession(ExportSource* source, std::string cluster_key, NodeIdentity self,
                             ServerOptions options)
    : source_(source),
      options_(options),
      handshake_(Role::kServer, std::move(cluster_key), std::move(self), options.handshake),
      zstd_(std::make_unique<Zstd>()) {
  options_.limits.chunk_bytes =
      std::clamp<size_t>(options_.limits.chunk_bytes, 4096, kMaxChunkBytes);
}

ServerSession::~ServerSession() = default;

std::span<const uint8_t> ServerSession::output() const {
  return std::span<const uint8_t>(out_).subspan(out_pos_);
}

void ServerSession::ConsumeOutput(size_t n) {
  stats_.bytes_out += std::min(n, out_.size() - out_pos_);
  Consume(&out_, &out_pos_, n);
}

std::vector<uint8_t> ServerSession::TakeOutput() {
  stats_.bytes_out += out_.size() - out_pos_;
  return Take(&out_, &out_pos_);
}

bool ServerSession::WantsOutputSpace() const {
  if (!status_.ok()) return false;
  for (const auto& [id, s] : streams_) {
    if (s->state == Stream::State::kSending) return true;
  }
  return false;
}

bool ServerSession::done() const { return (bye_ || !status_.ok()) && output().empty(); }
bool ServerSession::authenticated() const { return handshake_.authenticated(); }
const NodeIdentity& ServerSession::peer() const { return handshake_.peer(); }

std::string ServerSession::Context(uint32_t stream, const std::string& path) const {
  std::string c = "peer " + (peer().name.empty() ? std::string("?") : peer().name) + ", stream " +
                  std::to_string(stream);
  if (!path.empty()) c += ", path " + Quoted(path);
  return c;
}

Status ServerSession::FailConnection(Status status, ErrorCode code) {
  if (!status_.ok()) return status_;
  ErrorMsg e;
  e.code = code;
  e.message = status.message();
  AppendFrame(&out_, FrameType::kError, 0, 0, EncodePayload(e));
  streams_.clear();
  status_ = status;
  return status_;
}

void ServerSession::FailStream(uint32_t id, ErrorCode code, const Status& why) {
  ErrorMsg e;
  e.code = code;
  e.retryable = why.retryable() || why.code() == Code::kTemporary || code == ErrorCode::kChanged ||
                code == ErrorCode::kIo || code == ErrorCode::kBusy;
  e.message = why.message();
  AppendFrame(&out_, FrameType::kError, 0, id, EncodePayload(e));
  if (code != ErrorCode::kCancelled) ++stats_.files_failed;
  streams_.erase(id);
}

Status ServerSession::Feed(std::span<const uint8_t> data) {
  if (!status_.ok()) return status_;
  stats_.bytes_in += data.size();
  decoder_.Feed(data);
  for (;;) {
    Result<std::optional<FrameView>> next = decoder_.NextView();
    if (!next.ok()) {
      return FailConnection(next.status().WithContext("from " + Context(0, "")),
                            ErrorCode::kProtocol);
    }
    if (!next->has_value()) break;
    Status handled = HandleFrame(**next);
    if (!handled.ok() || bye_) {
      decoder_.Stash();  // `data` is the caller's: keep nothing pointing into it
      RETURN_IF_ERROR(handled);
      break;
    }
  }
  return Pump();
}

Status ServerSession::HandleFrame(const FrameView& frame) {
  if (!handshake_.authenticated()) {
    std::vector<uint8_t> reply;
    Status s = handshake_.OnFrame(frame.ToFrame(), &reply);
    out_.insert(out_.end(), reply.begin(), reply.end());
    if (!s.ok()) {
      status_ = s;
      streams_.clear();
    }
    return s;
  }
  switch (frame.type) {
    case FrameType::kManifestRequest:
    case FrameType::kHeldManifestRequest:
      return HandleManifestRequest(frame);
    case FrameType::kHeldQuery:
      return HandleHeldQuery(frame);
    case FrameType::kFileRequest:
      return HandleFileRequest(frame);
    case FrameType::kBye:
      if (frame.stream != 0 || !frame.payload.empty()) break;
      bye_ = true;
      streams_.clear();
      return Status::Ok();
    case FrameType::kError: {
      ErrorMsg e;
      Status s = DecodePayload(frame.payload, &e);
      if (!s.ok())
        return FailConnection(s.WithContext(Context(frame.stream, "")), ErrorCode::kProtocol);
      if (frame.stream == 0) {
        status_ = StatusFromError(e, Context(0, ""));
        streams_.clear();
        return status_;
      }
      streams_.erase(frame.stream);  // the puller gave up on this stream
      return Status::Ok();
    }
    case FrameType::kFileBasis:
    case FrameType::kSignatureData:
    case FrameType::kCancel: {
      if (frame.stream == 0) break;
      auto it = streams_.find(frame.stream);
      if (it == streams_.end()) {
        if (seen_ids_.count(frame.stream)) return Status::Ok();  // stream already ended
        return FailConnection(
            DataError(FrameTypeName(frame.type) + " for unknown " + Context(frame.stream, "")),
            ErrorCode::kProtocol);
      }
      Stream& s = *it->second;
      if (frame.type == FrameType::kCancel) {
        FailStream(s.id, ErrorCode::kCancelled, TemporaryError("cancelled by the puller"));
        return Status::Ok();
      }
      if (frame.type == FrameType::kFileBasis) return HandleFileBasis(s, frame);
      return HandleSignatureData(s, frame);
    }
    default:
      break;
  }
  return FailConnection(DataError("unexpected " + FrameTypeName(frame.type) + " frame from " +
                                  Context(frame.stream, "")),
                        ErrorCode::kProtocol);
}

Status ServerSession::EnsureView() {
  if (view_) return Status::Ok();
  ASSIGN_OR_RETURN(view_, source_->OpenView());
  return Status::Ok();
}

Status ServerSession::HandleManifestRequest(const FrameView& frame) {
  const std::string name = FrameTypeName(frame.type);
  if (frame.stream == 0 || seen_ids_.count(frame.stream)) {
    return FailConnection(DataError(name + " on a used or zero " + Context(frame.stream, "")),
                          ErrorCode::kProtocol);
  }
  seen_ids_.insert(frame.stream);
  HeldManifestRequestMsg req;
  Status s = frame.type == FrameType::kHeldManifestRequest
                 ? DecodePayload(frame.payload, &req)
                 : DecodePayload(frame.payload, &req.request);
  if (!s.ok())
    return FailConnection(s.WithContext(Context(frame.stream, "")), ErrorCode::kProtocol);
  if (view_ && view_held_peer_ != req.held_peer) {
    return FailConnection(DataError(name +
                                    " for another copy than this connection's first "
                                    "request, " +
                                    Context(frame.stream, "")),
                          ErrorCode::kProtocol);
  }
  if (!req.held_peer.empty() && !view_) {
    if (options_.held == nullptr) {
      FailStream(frame.stream, ErrorCode::kNotFound,
                 NotFoundError("this node does not serve held copies"));
      return Status::Ok();
    }
    Result<std::unique_ptr<ExportView>> v = options_.held->OpenHeldView(req.held_peer);
    if (!v.ok()) {
      FailStream(frame.stream,
                 v.status().code() == Code::kNotFound ? ErrorCode::kNotFound : ErrorCode::kBusy,
                 v.status());
      return Status::Ok();
    }
    view_ = std::move(*v);
    view_held_peer_ = req.held_peer;
  }
  return ServeManifest(frame.stream, req.request);
}

Status ServerSession::ServeManifest(uint32_t stream, const ManifestRequestMsg& req) {
  Status s = EnsureView();
  if (!s.ok()) {
    FailStream(stream, ErrorCode::kBusy, s);
    return Status::Ok();
  }
  Result<ManifestAnswer> answer =
      view_->ManifestSince(req.since_generation, req.boot_id, req.services);
  if (!answer.ok()) {
    FailStream(stream, ErrorCode::kIo, answer.status());
    return Status::Ok();
  }
  Result<std::vector<uint8_t>> z = CompressManifest(EncodeManifestAnswer(*answer));
  if (!z.ok()) {
    FailStream(stream, ErrorCode::kInternal, z.status());
    return Status::Ok();
  }
  AppendSplit(&out_, FrameType::kManifestData, stream, *z, kMaxFramePayload, true);
  ++stats_.manifests_served;
  return Status::Ok();
}

Status ServerSession::HandleHeldQuery(const FrameView& frame) {
  if (frame.stream == 0 || seen_ids_.count(frame.stream)) {
    return FailConnection(DataError("HELD_QUERY on a used or zero " + Context(frame.stream, "")),
                          ErrorCode::kProtocol);
  }
  seen_ids_.insert(frame.stream);
  HeldQueryMsg req;
  Status s = DecodePayload(frame.payload, &req);
  if (!s.ok())
    return FailConnection(s.WithContext(Context(frame.stream, "")), ErrorCode::kProtocol);
  ++stats_.held_queries;
  HeldAnswerMsg answer;
  if (options_.held != nullptr) {
    Result<std::vector<HeldPeer>> held = options_.held->Held(req.peer);
    if (!held.ok()) {
      FailStream(frame.stream, ErrorCode::kIo, held.status());
      return Status::Ok();
    }
    answer.peers = std::move(*held);
  }
  std::vector<uint8_t> payload = EncodePayload(answer);
  if (payload.size() > kMaxFramePayload || answer.peers.size() > kMaxHeldPeers) {
    FailStream(frame.stream, ErrorCode::kLimit,
               DataError("HELD_ANSWER of " + std::to_string(answer.peers.size()) +
                         " peers does not fit one frame"));
    return Status::Ok();
  }
  AppendFrame(&out_, FrameType::kHeldAnswer, 0, frame.stream, payload);
  return Status::Ok();
}

Status ServerSession::HandleFileRequest(const FrameView& frame) {
  if (frame.stream == 0 || seen_ids_.count(frame.stream)) {
    return FailConnection(DataError("FILE_REQUEST on a used or zero " + Context(frame.stream, "")),
                          ErrorCode::kProtocol);
  }
  seen_ids_.insert(frame.stream);
  auto st = std::make_unique<Stream>();
  st->id = frame.stream;
  Status s = DecodePayload(frame.payload, &st->req);
  if (!s.ok())
    return FailConnection(s.WithContext(Context(frame.stream, "")), ErrorCode::kProtocol);
  const std::string& path = st->req.path;
  if (streams_.size() >= options_.limits.max_streams) {
    streams_.emplace(st->id, nullptr);  // so FailStream's erase is harmless
    FailStream(st->id, ErrorCode::kLimit,
               DataError(Context(st->id, path) + ": more than " +
                         std::to_string(options_.limits.max_streams) + " streams open"));
    return Status::Ok();
  }
  s = EnsureView();
  if (!s.ok()) {
    FailStream(st->id, ErrorCode::kBusy, s.WithContext(Context(st->id, path)));
    return Status::Ok();
  }
  Result<std::unique_ptr<ReadableFile>> file = view_->OpenFile(path, &st->entry);
  if (!file.ok()) {
    ErrorCode code =
        file.status().code() == Code::kNotFound ? ErrorCode::kNotFound : ErrorCode::kIo;
    FailStream(st->id, code, file.status().WithContext(Context(st->id, path)));
    return Status::Ok();
  }
  st->file = std::move(*file);
  if (st->entry.kind != EntryKind::kFile) {
    FailStream(st->id, ErrorCode::kNotFound,
               DataError(Context(st->id, path) + ": not a regular file"));
    return Status::Ok();
  }
  if (st->entry.size != st->req.expected_size || st->entry.digest != st->req.expected_digest) {
    FailStream(
        st->id, ErrorCode::kChanged,
        TemporaryError(Context(st->id, path) + ": the export changed (now " +
                       std::to_string(st->entry.size) + " bytes, " + st->entry.digest.Hex() + ")"));
    return Status::Ok();
  }
  st->state = st->req.has_basis ? Stream::State::kWaitBasis : Stream::State::kSending;
  st->method = TransferMethod::kWhole;
  uint32_t id = st->id;
  streams_[id] = std::move(st);
  return Status::Ok();
}

Status ServerSession::HandleFileBasis(Stream& s, const FrameView& frame) {
  if (s.state != Stream::State::kWaitBasis) {
    return FailConnection(DataError("FILE_BASIS after its END on " + Context(s.id, s.req.path)),
                          ErrorCode::kProtocol);
  }
  size_t want = size_t{s.req.block_count} * 8;
  if (s.basis_bytes.size() + frame.payload.size() > want || frame.payload.size() % 8 != 0) {
    return FailConnection(
        DataError("FILE_BASIS carries more than " + std::to_string(s.req.block_count) +
                  " block hashes (or a partial one) on " + Context(s.id, s.req.path)),
        ErrorCode::kProtocol);
  }
  s.basis_bytes.insert(s.basis_bytes.end(), frame.payload.begin(), frame.payload.end());
  if (!frame.end()) return Status::Ok();
  if (s.basis_bytes.size() != want) {
    return FailConnection(
        DataError("FILE_BASIS ended with " + std::to_string(s.basis_bytes.size() / 8) + " of " +
                  std::to_string(s.req.block_count) + " block hashes on " +
                  Context(s.id, s.req.path)),
        ErrorCode::kProtocol);
  }
  if (IsImageFile(s.req.path) || s.entry.size == 0) {
    s.state = Stream::State::kSending;  // images go whole
    s.basis_bytes.clear();
    return Status::Ok();
  }
  CoarseHashes coarse;
  coarse.basis_size = s.req.basis_size;
  coarse.block_size = s.req.block_size;
  coarse.hashes.resize(s.req.block_count);
  internal::Reader r(s.basis_bytes, "FILE_BASIS");
  for (auto& h : coarse.hashes) h = r.U64("hash");
  s.basis_bytes = {};
  Result<CoarsePlan> plan = PlanCoarse(*s.file, s.entry.size, coarse);
  if (!plan.ok()) {
    FailStream(s.id,
               plan.status().code() == Code::kTemporary ? ErrorCode::kChanged : ErrorCode::kIo,
               plan.status().WithContext(Context(s.id, s.req.path)));
    return Status::Ok();
  }
  if (plan->digest != s.entry.digest) {
    FailStream(s.id, ErrorCode::kChanged,
               TemporaryError(Context(s.id, s.req.path) + ": changed while reading (digest " +
                              plan->digest.Hex() + ", exported as " + s.entry.digest.Hex() + ")"));
    return Status::Ok();
  }
  bool want_sig = WantsSignature(*plan, options_.limits.signature_above);
  s.method = TransferMethod::kDelta;
  s.delta = std::make_unique<DeltaStream>(s.file.get(), std::move(*plan), nullptr);
  if (want_sig) {
    AppendFrame(&out_, FrameType::kSignatureNeeded, 0, s.id, {});
    s.state = Stream::State::kWaitSignature;
  } else {
    s.state = Stream::State::kSending;
  }
  return Status::Ok();
}

Status ServerSession::HandleSignatureData(Stream& s, const FrameView& frame) {
  if (s.state != Stream::State::kWaitSignature) {
    return FailConnection(DataError("SIGNATURE_DATA not asked for on " + Context(s.id, s.req.path)),
                          ErrorCode::kProtocol);
  }
  if (s.sig_bytes.size() + frame.payload.size() > kMaxSignatureBytes) {
    FailStream(s.id, ErrorCode::kLimit,
               DataError(Context(s.id, s.req.path) + ": signature larger than " +
                         std::to_string(kMaxSignatureBytes) + " bytes"));
    return Status::Ok();
  }
  s.sig_bytes.insert(s.sig_bytes.end(), frame.payload.begin(), frame.payload.end());
  if (!frame.end()) return Status::Ok();
  Result<std::unique_ptr<LoadedSignature>> sig = LoadedSignature::Load(s.sig_bytes);
  s.sig_bytes = {};
  if (!sig.ok()) {
    FailStream(s.id, ErrorCode::kProtocol, sig.status().WithContext(Context(s.id, s.req.path)));
    return Status::Ok();
  }
  s.sig = std::move(*sig);
  s.delta->set_signature(s.sig.get());  // unmatched regions get librsync's rolling delta
  s.state = Stream::State::kSending;
  return Status::Ok();
}

namespace {

// Compression pays when it saves at least 1/16 of the input.
bool Pays(size_t compressed, size_t raw) { return compressed <= raw - raw / 16; }

}  // namespace

size_t ServerSession::Compress(std::span<const uint8_t> in) {
  Zstd& z = *zstd_;
  z.buf.resize(ZSTD_compressBound(in.size()));
  size_t n = ZSTD_compressCCtx(z.cctx, z.buf.data(), z.buf.size(), in.data(), in.size(),
                               options_.limits.zstd_level);
  return ZSTD_isError(n) ? SIZE_MAX : n;
}

void ServerSession::SendChunk(Stream& s, std::span<const uint8_t> raw) {
  const size_t piece = options_.limits.chunk_bytes;
  while (!raw.empty()) {
    std::span<const uint8_t> p = raw.first(std::min(raw.size(), piece));
    raw = raw.subspan(p.size());
    // Adaptive: after a chunk that did not compress (images, compressed
    // archives, encrypted data), a sample from the middle of the next chunk
    // is tried first and the whole chunk only when the sample compresses.
    // Cost on incompressible data: kCompressSample bytes per chunk instead
    // of the chunk; a file that turns compressible again is noticed at once.
    bool try_whole = true;
    if (s.incompressible && p.size() > 2 * kCompressSample) {
      std::span<const uint8_t> sample =
          p.subspan((p.size() - kCompressSample) / 2, kCompressSample);
      size_t n = Compress(sample);
      try_whole = n != SIZE_MAX && Pays(n, sample.size());
      ++stats_.chunks_sampled;
    }
    size_t n = try_whole ? Compress(p) : SIZE_MAX;
    if (n != SIZE_MAX && Pays(n, p.size()) && n <= kMaxFramePayload) {
      s.incompressible = false;
      AppendFrame(&out_, FrameType::kFileData, kFlagCompressed, s.id,
                  std::span<const uint8_t>(zstd_->buf.data(), n));
      ++stats_.chunks_compressed;
    } else {
      s.incompressible = true;
      AppendFrame(&out_, FrameType::kFileData, 0, s.id, p);
      ++stats_.chunks_raw;
    }
  }
}

Status ServerSession::ProduceChunk(Stream& s) {
  if (!s.started) {
    FileStartMsg start{s.method, s.entry.size};
    AppendFrame(&out_, FrameType::kFileStart, 0, s.id, EncodePayload(start));
    s.started = true;
  }
  bool finished = false;
  if (s.method == TransferMethod::kWhole) {
    uint64_t left = s.entry.size - s.sent;
    size_t n = static_cast<size_t>(std::min<uint64_t>(left, options_.limits.chunk_bytes));
    if (n > 0) {
      s.buf.resize(n);
      size_t got = 0;
      while (got < n) {
        Result<size_t> r = s.file->ReadAt(s.sent + got, std::span<uint8_t>(s.buf).subspan(got));
        if (!r.ok()) {
          FailStream(s.id, ErrorCode::kIo, r.status().WithContext(Context(s.id, s.req.path)));
          return Status::Ok();
        }
        if (*r == 0) break;
        got += *r;
      }
      if (got != n) {
        FailStream(s.id, ErrorCode::kChanged,
                   TemporaryError(Context(s.id, s.req.path) + ": shrank while being sent"));
        return Status::Ok();
      }
      s.hasher.Update(std::span<const uint8_t>(s.buf.data(), n));
      SendChunk(s, std::span<const uint8_t>(s.buf.data(), n));
      s.sent += n;
    }
    finished = s.sent == s.entry.size;
    if (finished && s.hasher.Finish() != s.entry.digest) {
      FailStream(
          s.id, ErrorCode::kChanged,
          TemporaryError(Context(s.id, s.req.path) + ": changed while being sent (digest " +
                         s.hasher.Finish().Hex() + ", exported as " + s.entry.digest.Hex() + ")"));
      return Status::Ok();
    }
  } else {
    s.buf.clear();
    Status st = s.delta->Next(options_.limits.chunk_bytes, &s.buf);
    if (!st.ok()) {
      ErrorCode code = st.code() == Code::kTemporary  ? ErrorCode::kChanged
                       : st.code() == Code::kInternal ? ErrorCode::kInternal
                                                      : ErrorCode::kIo;
      FailStream(s.id, code, st.WithContext(Context(s.id, s.req.path)));
      return Status::Ok();
    }
    if (!s.buf.empty()) SendChunk(s, s.buf);
    finished = s.delta->done();
  }
  if (finished) {
    FileEndMsg end{s.entry.size, s.entry.digest};
    AppendFrame(&out_, FrameType::kFileEnd, 0, s.id, EncodePayload(end));
    ++stats_.files_served;
    streams_.erase(s.id);
  }
  return Status::Ok();
}

Status ServerSession::Pump() {
  if (!status_.ok()) return status_;
  // Round-robin, one chunk per stream per turn, resuming after the stream
  // served last so a full output buffer never starves the higher ids.
  while (output().size() < options_.limits.output_high_water) {
    auto it = streams_.upper_bound(last_served_);
    bool any = false;
    for (size_t n = streams_.size(); n > 0; --n) {
      if (it == streams_.end()) it = streams_.begin();
      if (it->second && it->second->state == Stream::State::kSending) {
        any = true;
        break;
      }
      ++it;
    }
    if (!any) break;
    last_served_ = it->first;
    RETURN_IF_ERROR(ProduceChunk(*it->second));
  }
  return Status::Ok();
}

// ============================================================================
// Signature cache
// ============================================================================

namespace {

class MemorySignatureCache : public SignatureCache {
 public:
  explicit MemorySignatureCache(size_t max_entries) : max_(std::max<size_t>(max_entries, 1)) {}

  std::shared_ptr<const BasisSummary> Lookup(const Digest128& digest) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if ((*it)->digest == digest) {
        entries_.splice(entries_.begin(), entries_, it);
        return entries_.front();
      }
    }
    return nullptr;
  }

  void Insert(std::shared_ptr<const BasisSummary> summary) override {
    if (!summary) return;
    std::lock_guard<std::mutex> lock(mu_);
    entries_.remove_if([&](const auto& e) { return e->digest == summary->digest; });
    entries_.push_front(std::move(summary));
    while (entries_.size() > max_) entries_.pop_back();
  }

 private:
  size_t max_;
  std::mutex mu_;
  std::list<std::shared_ptr<const BasisSummary>> entries_;
};

}  // namespace

std::unique_ptr<SignatureCache> NewMemorySignatureCache(size_t max_entries) {
  return std::make_unique<MemorySignatureCache>(max_entries);
}

// ============================================================================
// PullerSession
// ============================================================================

struct PullerSession::Zstd {
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  std::vector<uint8_t> buf;
  ~Zstd() { ZSTD_freeDCtx(dctx); }
};

struct PullerSession::ManifestStream {
  ManifestRequestMsg req;
  std::string held_peer;  // "" = the server's own export
  ManifestCallback cb;
  ManifestDecompressor dec{kMaxManifestBytes};
};

struct PullerSession::HeldStream {
  HeldQueryMsg req;
  HeldCallback cb;
};

struct PullerSession::FileStream {
  uint32_t id = 0;
  FileRequest req;
  FileCallback cb;
  FileTransferStats stats;
  bool sent = false;
  bool with_basis = false;
  std::shared_ptr<const BasisSummary> summary;
  std::optional<FileStartMsg> start;
  Xxh3Hasher hasher;
  std::unique_ptr<PatchJob> patch;
};

PullerSession::PullerSession(std::string cluster_key, NodeIdentity self, PullerOptions options)
    : options_(options),
      handshake_(Role::kPuller, std::move(cluster_key), std::move(self), options.handshake),
      zstd_(std::make_unique<Zstd>()) {
  if (options_.max_in_flight == 0) options_.max_in_flight = 1;
}

PullerSession::~PullerSession() {
  FailAll(UnavailableError("syncproto session destroyed before the request completed", true));
}

Status PullerSession::Start() {
  Status s = handshake_.Start(&out_);
  if (!s.ok()) status_ = s;
  return s;
}

std::span<const uint8_t> PullerSession::output() const {
  return std::span<const uint8_t>(out_).subspan(out_pos_);
}

void PullerSession::ConsumeOutput(size_t n) { Consume(&out_, &out_pos_, n); }

std::vector<uint8_t> PullerSession::TakeOutput() { return Take(&out_, &out_pos_); }

bool PullerSession::done() const { return (bye_sent_ || !status_.ok()) && output().empty(); }
bool PullerSession::authenticated() const { return handshake_.authenticated(); }
const NodeIdentity& PullerSession::peer() const { return handshake_.peer(); }
size_t PullerSession::pending() const { return manifests_.size() + files_.size() + held_.size(); }

void PullerSession::Finish() {
  finishing_ = true;
  SendQueued().IgnoreError();
}

Result<uint32_t> PullerSession::RequestManifest(uint64_t since_generation, std::string boot_id,
                                                std::vector<std::string> services,
                                                ManifestCallback callback) {
  return RequestHeldManifest("", since_generation, std::move(boot_id), std::move(services),
                             std::move(callback));
}

Result<uint32_t> PullerSession::RequestHeldManifest(std::string held_peer,
                                                    uint64_t since_generation, std::string boot_id,
                                                    std::vector<std::string> services,
                                                    ManifestCallback callback) {
  if (!status_.ok()) return status_;
  if (finishing_) return UsageError("RequestManifest after Finish()");
  auto m = std::make_unique<ManifestStream>();
  m->req.since_generation = since_generation;
  m->req.boot_id = std::move(boot_id);
  m->req.services = std::move(services);
  m->held_peer = std::move(held_peer);
  m->cb = std::move(callback);
  if (m->req.boot_id.size() > 128 || m->req.services.size() > kMaxServicesPerRequest ||
      m->held_peer.size() > 255) {
    return UsageError("manifest request: boot id, service list or peer name too long");
  }
  uint32_t id = next_stream_++;
  manifests_[id] = std::move(m);
  queued_.push_back(id);
  RETURN_IF_ERROR(SendQueued());
  return id;
}

Result<uint32_t> PullerSession::RequestHeld(std::string peer, HeldCallback callback) {
  if (!status_.ok()) return status_;
  if (finishing_) return UsageError("RequestHeld after Finish()");
  if (peer.size() > 255) return UsageError("held query: peer name too long");
  auto h = std::make_unique<HeldStream>();
  h->req.peer = std::move(peer);
  h->cb = std::move(callback);
  uint32_t id = next_stream_++;
  held_[id] = std::move(h);
  queued_.push_back(id);
  RETURN_IF_ERROR(SendQueued());
  return id;
}

Result<uint32_t> PullerSession::RequestFile(FileRequest request, FileCallback callback) {
  if (!status_.ok()) return status_;
  if (finishing_) return UsageError("RequestFile after Finish()");
  RETURN_IF_ERROR(ValidateExportPath(request.path));
  if (!request.out)
    return UsageError("file request for " + Quoted(request.path) + " without an output file");
  if (request.expected.kind != EntryKind::kFile) {
    return UsageError("file request for " + Quoted(request.path) + ": entry is not a regular file");
  }
  auto f = std::make_unique<FileStream>();
  f->req = std::move(request);
  f->cb = std::move(callback);
  uint32_t id = next_stream_++;
  f->id = id;
  files_[id] = std::move(f);
  queued_.push_back(id);
  RETURN_IF_ERROR(SendQueued());
  return id;
}

void PullerSession::Cancel(uint32_t stream) {
  auto it = files_.find(stream);
  if (it == files_.end()) return;
  bool sent = it->second->sent;
  if (sent && status_.ok()) {
    AppendFrame(&out_, FrameType::kCancel, 0, stream, {});
    cancelled_.insert(stream);
  } else {
    queued_.erase(std::remove(queued_.begin(), queued_.end(), stream), queued_.end());
  }
  CompleteFile(stream, TemporaryError("peer " + peer().name + ", stream " + std::to_string(stream) +
                                      ", path " + Quoted(it->second->req.path) + ": cancelled"));
}

Status PullerSession::SendQueued() {
  if (!status_.ok()) return status_;
  if (!handshake_.authenticated()) return Status::Ok();
  while (!queued_.empty()) {
    uint32_t id = queued_.front();
    if (auto m = manifests_.find(id); m != manifests_.end()) {
      if (m->second->held_peer.empty()) {
        AppendFrame(&out_, FrameType::kManifestRequest, 0, id, EncodePayload(m->second->req));
      } else {
        AppendFrame(&out_, FrameType::kHeldManifestRequest, 0, id,
                    EncodePayload(HeldManifestRequestMsg{m->second->req, m->second->held_peer}));
      }
      queued_.pop_front();
      continue;
    }
    if (auto h = held_.find(id); h != held_.end()) {
      AppendFrame(&out_, FrameType::kHeldQuery, 0, id, EncodePayload(h->second->req));
      queued_.pop_front();
      continue;
    }
    auto f = files_.find(id);
    if (f == files_.end()) {
      queued_.pop_front();
      continue;
    }
    if (files_in_flight_ >= options_.max_in_flight) break;
    queued_.pop_front();
    ++files_in_flight_;
    f->second->sent = true;
    RETURN_IF_ERROR(SendFileRequest(*f->second));
  }
  if (finishing_ && !bye_sent_ && pending() == 0) {
    AppendFrame(&out_, FrameType::kBye, 0, 0, {});
    bye_sent_ = true;
  }
  return Status::Ok();
}

Status PullerSession::SendFileRequest(FileStream& f) {
  FileRequest& r = f.req;
  size_t before = out_.size();
  FileRequestMsg msg;
  msg.path = r.path;
  msg.expected_size = r.expected.size;
  msg.expected_digest = r.expected.digest;
  bool use_basis =
      r.basis && r.expected.size >= options_.limits.whole_file_below && !IsImageFile(r.path);
  if (use_basis) {
    f.summary = r.basis_summary;
    if (!f.summary && options_.cache && r.basis_digest) {
      f.summary = options_.cache->Lookup(*r.basis_digest);
    }
    if (!f.summary) {
      Result<BasisSummary> s = SummarizeBasis(*r.basis, false);
      if (s.ok()) {
        f.summary = std::make_shared<const BasisSummary>(std::move(*s));
        if (options_.cache) options_.cache->Insert(f.summary);
      }
      // An unreadable basis is not an error: the file comes whole.
    }
    use_basis = f.summary != nullptr && f.summary->coarse.hashes.size() <= kMaxCoarseBlocks;
  }
  f.with_basis = use_basis;
  if (!use_basis) r.basis.reset();
  if (use_basis) {
    const CoarseHashes& c = f.summary->coarse;
    msg.has_basis = true;
    msg.basis_size = c.basis_size;
    msg.block_size = c.block_size;
    msg.block_count = static_cast<uint32_t>(c.hashes.size());
  }
  AppendFrame(&out_, FrameType::kFileRequest, 0, f.id, EncodePayload(msg));
  if (use_basis) {
    std::vector<uint8_t> hashes;
    hashes.reserve(f.summary->coarse.hashes.size() * 8);
    for (uint64_t h : f.summary->coarse.hashes) internal::PutU64(&hashes, h);
    AppendSplit(&out_, FrameType::kFileBasis, f.id, hashes, kMaxFramePayload, true);
  }
  f.stats.wire_bytes_out += out_.size() - before;
  return Status::Ok();
}

void PullerSession::CompleteFile(uint32_t id, Status status) {
  auto it = files_.find(id);
  if (it == files_.end()) return;
  std::unique_ptr<FileStream> f = std::move(it->second);
  files_.erase(it);
  if (f->sent) --files_in_flight_;
  if (status.ok() && f->req.out) {
    if (f->req.sync_output) status = f->req.out->Sync();
    Status c = f->req.out->Close();
    if (status.ok()) status = c;
  } else if (f->req.out) {
    f->req.out->Close().IgnoreError();
  }
  f->patch.reset();
  if (f->cb) f->cb(status, f->stats);
  if (status_.ok()) SendQueued().IgnoreError();
}

void PullerSession::FailAll(const Status& status) {
  auto manifests = std::move(manifests_);
  manifests_.clear();
  for (auto& [id, m] : manifests) {
    if (m->cb) m->cb(status);
  }
  auto held = std::move(held_);
  held_.clear();
  for (auto& [id, h] : held) {
    if (h->cb) h->cb(status);
  }
  std::vector<uint32_t> ids;
  for (auto& [id, f] : files_) ids.push_back(id);
  for (uint32_t id : ids) CompleteFile(id, status);
  queued_.clear();
}

Status PullerSession::FailConnection(Status status, std::optional<ErrorCode> code) {
  if (!status_.ok()) return status_;
  if (code) {
    ErrorMsg e;
    e.code = *code;
    e.message = status.message();
    AppendFrame(&out_, FrameType::kError, 0, 0, EncodePayload(e));
  }
  status_ = status;
  FailAll(status);
  return status_;
}

Status PullerSession::Feed(std::span<const uint8_t> data) {
  if (!status_.ok()) return status_;
  decoder_.Feed(data);
  for (;;) {
    Result<std::optional<FrameView>> next = decoder_.NextView();
    if (!next.ok()) {
      return FailConnection(next.status().WithContext("from peer " + peer().name),
                            ErrorCode::kProtocol);
    }
    if (!next->has_value()) break;
    const FrameView& frame = **next;
    Status handled;
    if (!handshake_.authenticated()) {
      std::vector<uint8_t> reply;
      handled = handshake_.OnFrame(frame.ToFrame(), &reply);
      out_.insert(out_.end(), reply.begin(), reply.end());
      if (!handled.ok()) {
        handled = FailConnection(handled, std::nullopt);
      } else if (handshake_.authenticated()) {
        handled = SendQueued();
      }
    } else {
      handled = HandleFrame(frame);
    }
    if (!handled.ok()) {
      decoder_.Stash();  // `data` is the caller's: keep nothing pointing into it
      return handled;
    }
  }
  return SendQueued();
}

Status PullerSession::Pump() { return SendQueued(); }

Status PullerSession::HandleFrame(const FrameView& frame) {
  const uint32_t id = frame.stream;
  if (id == 0) {
    if (frame.type == FrameType::kError) {
      ErrorMsg e;
      Status s = DecodePayload(frame.payload, &e);
      if (!s.ok()) return FailConnection(s.WithContext("from peer " + peer().name), std::nullopt);
      return FailConnection(StatusFromError(e, "peer " + peer().name), std::nullopt);
    }
    return FailConnection(DataError("unexpected " + FrameTypeName(frame.type) +
                                    " on stream 0 from peer " + peer().name),
                          ErrorCode::kProtocol);
  }
  if (auto m = manifests_.find(id); m != manifests_.end()) {
    std::string ctx = "peer " + peer().name + ", manifest stream " + std::to_string(id);
    if (frame.type == FrameType::kError) {
      ErrorMsg e;
      Status s = DecodePayload(frame.payload, &e);
      if (!s.ok()) return FailConnection(s.WithContext(ctx), ErrorCode::kProtocol);
      auto ms = std::move(m->second);
      manifests_.erase(m);
      ms->cb(StatusFromError(e, ctx));
      return Status::Ok();
    }
    if (frame.type != FrameType::kManifestData) {
      return FailConnection(DataError("unexpected " + FrameTypeName(frame.type) + " on " + ctx),
                            ErrorCode::kProtocol);
    }
    Status s = m->second->dec.Feed(frame.payload);
    if (!s.ok()) return FailConnection(s.WithContext(ctx), ErrorCode::kProtocol);
    if (!frame.end()) return Status::Ok();
    Result<std::vector<uint8_t>> raw = m->second->dec.End();
    if (!raw.ok()) return FailConnection(raw.status().WithContext(ctx), ErrorCode::kProtocol);
    Result<ManifestAnswer> answer = DecodeManifestAnswer(*raw);
    if (!answer.ok()) return FailConnection(answer.status().WithContext(ctx), ErrorCode::kProtocol);
    auto ms = std::move(m->second);
    manifests_.erase(m);
    ms->cb(std::move(answer));
    return Status::Ok();
  }
  if (auto h = held_.find(id); h != held_.end()) {
    std::string ctx = "peer " + peer().name + ", held query stream " + std::to_string(id);
    HeldAnswerMsg answer;
    Status s;
    if (frame.type == FrameType::kError) {
      ErrorMsg e;
      s = DecodePayload(frame.payload, &e);
      if (!s.ok()) return FailConnection(s.WithContext(ctx), ErrorCode::kProtocol);
      s = StatusFromError(e, ctx);
    } else if (frame.type == FrameType::kHeldAnswer) {
      s = DecodePayload(frame.payload, &answer);
      if (!s.ok()) return FailConnection(s.WithContext(ctx), ErrorCode::kProtocol);
    } else {
      return FailConnection(DataError("unexpected " + FrameTypeName(frame.type) + " on " + ctx),
                            ErrorCode::kProtocol);
    }
    auto hs = std::move(h->second);
    held_.erase(h);
    if (s.ok()) {
      hs->cb(std::move(answer));
    } else {
      hs->cb(s);
    }
    return Status::Ok();
  }
  if (auto f = files_.find(id); f != files_.end()) {
    if (!f->second->sent) {
      return FailConnection(DataError(FrameTypeName(frame.type) + " for stream " +
                                      std::to_string(id) + " not yet requested"),
                            ErrorCode::kProtocol);
    }
    f->second->stats.wire_bytes_in += kFrameHeaderBytes + frame.payload.size();
    return HandleFileFrame(*f->second, frame);
  }
  if (cancelled_.count(id) || id < next_stream_) return Status::Ok();  // ended or cancelled
  return FailConnection(DataError(FrameTypeName(frame.type) + " for unknown stream " +
                                  std::to_string(id) + " from peer " + peer().name),
                        ErrorCode::kProtocol);
}

Status PullerSession::HandleFileFrame(FileStream& f, const FrameView& frame) {
  const std::string ctx =
      "peer " + peer().name + ", stream " + std::to_string(f.id) + ", path " + Quoted(f.req.path);
  // A per-file failure: tell the server to stop, report, keep the connection.
  auto fail_file = [&](Status s) {
    AppendFrame(&out_, FrameType::kCancel, 0, f.id, {});
    cancelled_.insert(f.id);
    CompleteFile(f.id, s.WithContext(ctx));
    return Status::Ok();
  };
  switch (frame.type) {
    case FrameType::kError: {
      ErrorMsg e;
      Status s = DecodePayload(frame.payload, &e);
      if (!s.ok()) return FailConnection(s.WithContext(ctx), ErrorCode::kProtocol);
      CompleteFile(f.id, StatusFromError(e, ctx));
      return Status::Ok();
    }
    case FrameType::kSignatureNeeded: {
      if (!f.with_basis || f.start || !frame.payload.empty()) break;
      std::shared_ptr<const BasisSummary> sum = f.summary;
      if (sum->signature.empty()) {
        Result<std::string> sig = ComputeSignature(*f.req.basis);
        if (!sig.ok()) return fail_file(sig.status().WithContext("signature of the basis"));
        auto with_sig = std::make_shared<BasisSummary>(*sum);
        with_sig->signature = std::move(*sig);
        sum = with_sig;
        f.summary = sum;
        if (options_.cache) options_.cache->Insert(sum);
      }
      if (sum->signature.size() > kMaxSignatureBytes) {
        return fail_file(DataError("basis signature larger than the protocol limit"));
      }
      size_t before = out_.size();
      AppendSplit(&out_, FrameType::kSignatureData, f.id,
                  std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(sum->signature.data()),
                                           sum->signature.size()),
                  kMaxFramePayload, true);
      f.stats.wire_bytes_out += out_.size() - before;
      f.stats.signature_sent = true;
      return Status::Ok();
    }
    case FrameType::kFileStart: {
      if (f.start) break;
      FileStartMsg start;
      Status s = DecodePayload(frame.payload, &start);
      if (!s.ok()) return FailConnection(s.WithContext(ctx), ErrorCode::kProtocol);
      if (start.size != f.req.expected.size) {
        return fail_file(DataError("server sends " + std::to_string(start.size) +
                                   " bytes, the manifest said " +
                                   std::to_string(f.req.expected.size)));
      }
      if (start.method == TransferMethod::kDelta && !f.with_basis) {
        return fail_file(DataError("server sends a delta but no basis was offered"));
      }
      f.start = start;
      f.stats.delta = start.method == TransferMethod::kDelta;
      if (f.stats.delta) {
        FileStream* fp = &f;
        Result<std::unique_ptr<PatchJob>> job =
            PatchJob::Start(f.req.basis.get(), [fp](std::span<const uint8_t> d) -> Status {
              if (fp->stats.bytes_written + d.size() > fp->req.expected.size) {
                return DataError("bad delta: produces more than the expected " +
                                 std::to_string(fp->req.expected.size) + " bytes");
              }
              fp->hasher.Update(d);
              fp->stats.bytes_written += d.size();
              return fp->req.out->Append(d);
            });
        if (!job.ok()) return fail_file(job.status());
        f.patch = std::move(*job);
      }
      return Status::Ok();
    }
    case FrameType::kFileData: {
      if (!f.start) break;
      std::span<const uint8_t> data = frame.payload;
      if (frame.compressed()) {
        Status s = DecompressChunk(zstd_->dctx, data, &zstd_->buf);
        if (!s.ok()) return fail_file(s);
        data = zstd_->buf;
      }
      if (f.patch) {
        Status s = f.patch->Feed(data);
        if (!s.ok()) return fail_file(s);
      } else {
        if (f.stats.bytes_written + data.size() > f.start->size) {
          return fail_file(DataError("server sends more than the announced " +
                                     std::to_string(f.start->size) + " bytes"));
        }
        f.hasher.Update(data);
        f.stats.bytes_written += data.size();
        Status s = f.req.out->Append(data);
        if (!s.ok()) return fail_file(s);
      }
      return Status::Ok();
    }
    case FrameType::kFileEnd: {
      if (!f.start) break;
      FileEndMsg end;
      Status s = DecodePayload(frame.payload, &end);
      if (!s.ok()) return FailConnection(s.WithContext(ctx), ErrorCode::kProtocol);
      if (f.patch) {
        s = f.patch->Finish();
        if (!s.ok()) return fail_file(s);
      }
      if (f.stats.bytes_written != end.size || end.size != f.req.expected.size) {
        CompleteFile(f.id, DataError(ctx + ": size mismatch: wrote " +
                                     std::to_string(f.stats.bytes_written) +
                                     " bytes, server says " + std::to_string(end.size) +
                                     ", manifest says " + std::to_string(f.req.expected.size)));
        return Status::Ok();
      }
      if (end.digest != f.req.expected.digest) {
        CompleteFile(f.id, DataError(ctx + ": digest mismatch: server says " + end.digest.Hex() +
                                     ", manifest says " + f.req.expected.digest.Hex()));
        return Status::Ok();
      }
      Digest128 got = f.hasher.Finish();
      if (got != f.req.expected.digest) {
        CompleteFile(f.id, DataError(ctx + ": digest mismatch: wrote " + got.Hex() +
                                     ", manifest says " + f.req.expected.digest.Hex()));
        return Status::Ok();
      }
      CompleteFile(f.id, Status::Ok());
      return Status::Ok();
    }
    default:
      break;
  }
  return FailConnection(DataError("unexpected " + FrameTypeName(frame.type) + " on " + ctx),
                        ErrorCode::kProtocol);
}

}  // namespace lifeboat::syncproto
