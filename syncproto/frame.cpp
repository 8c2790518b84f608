#include "syncproto/frame.h"

#include <cstdlib>
#include <cstring>

#include "syncproto/internal/coding.h"
#include "syncproto/manifest.h"

namespace lifeboat::syncproto {

using internal::PutBytes;
using internal::PutDigest;
using internal::PutString;
using internal::PutU16;
using internal::PutU32;
using internal::PutU64;
using internal::PutU8;
using internal::PutVarint;
using internal::Reader;

std::string FrameTypeName(uint8_t type) {
  switch (static_cast<FrameType>(type)) {
    case FrameType::kHello:
      return "HELLO";
    case FrameType::kAuth:
      return "AUTH";
    case FrameType::kError:
      return "ERROR";
    case FrameType::kBye:
      return "BYE";
    case FrameType::kManifestRequest:
      return "MANIFEST_REQUEST";
    case FrameType::kManifestData:
      return "MANIFEST_DATA";
    case FrameType::kFileRequest:
      return "FILE_REQUEST";
    case FrameType::kFileBasis:
      return "FILE_BASIS";
    case FrameType::kSignatureNeeded:
      return "SIGNATURE_NEEDED";
    case FrameType::kSignatureData:
      return "SIGNATURE_DATA";
    case FrameType::kFileStart:
      return "FILE_START";
    case FrameType::kFileData:
      return "FILE_DATA";
    case FrameType::kFileEnd:
      return "FILE_END";
    case FrameType::kCancel:
      return "CANCEL";
    case FrameType::kHeldManifestRequest:
      return "HELD_MANIFEST_REQUEST";
    case FrameType::kHeldQuery:
      return "HELD_QUERY";
    case FrameType::kHeldAnswer:
      return "HELD_ANSWER";
  }
  static constexpr char kHex[] = "0123456789abcdef";
  return std::string("0x") + kHex[type >> 4] + kHex[type & 0xf];
}

bool IsKnownFrameType(uint8_t type) { return FrameTypeName(type).rfind("0x", 0) != 0; }

namespace {

// The flags each frame type may carry.
uint8_t AllowedFlags(FrameType type) {
  switch (type) {
    case FrameType::kManifestData:
    case FrameType::kFileBasis:
    case FrameType::kSignatureData:
      return kFlagEnd;
    case FrameType::kFileData:
      return kFlagCompressed;
    default:
      return 0;
  }
}

}  // namespace

void AppendFrame(std::vector<uint8_t>* out, FrameType type, uint8_t flags, uint32_t stream,
                 std::span<const uint8_t> payload) {
  if (payload.size() > kMaxFramePayload) std::abort();  // callers split units
  PutU32(out, static_cast<uint32_t>(payload.size()));
  PutU8(out, static_cast<uint8_t>(type));
  PutU8(out, flags);
  PutU32(out, stream);
  PutBytes(out, payload);
}

std::vector<uint8_t> EncodeFrame(const Frame& frame) {
  std::vector<uint8_t> out;
  AppendFrame(&out, frame.type, frame.flags, frame.stream, frame.payload);
  return out;
}

FrameDecoder::FrameDecoder(uint32_t max_payload)
    : max_payload_(max_payload > kMaxFramePayload ? kMaxFramePayload : max_payload) {}

void FrameDecoder::Compact() {
  if (pos_ > 0 && pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  } else if (pos_ > (1u << 20) && pos_ * 2 > buf_.size()) {
    buf_.erase(buf_.begin(), buf_.begin() + static_cast<ptrdiff_t>(pos_));
    pos_ = 0;
  }
}

void FrameDecoder::Append(std::span<const uint8_t> data) {
  if (!error_.ok()) return;
  Stash();
  buf_.insert(buf_.end(), data.begin(), data.end());
}

void FrameDecoder::Feed(std::span<const uint8_t> data) {
  if (!error_.ok()) return;
  Stash();
  input_ = data;
}

void FrameDecoder::Take(size_t n) {
  buf_.insert(buf_.end(), input_.begin(), input_.begin() + static_cast<ptrdiff_t>(n));
  input_ = input_.subspan(n);
}

void FrameDecoder::Stash() {
  if (input_.empty()) return;
  Compact();
  Take(input_.size());
}

Status FrameDecoder::CheckHeader(const uint8_t* h, uint32_t* len) {
  *len = h[0] | (h[1] << 8) | (h[2] << 16) | (static_cast<uint32_t>(h[3]) << 24);
  uint8_t type = h[4];
  uint8_t flags = h[5];
  uint32_t stream = h[6] | (h[7] << 8) | (h[8] << 16) | (static_cast<uint32_t>(h[9]) << 24);
  if (*len > max_payload_) {
    error_ = DataError("oversized frame: " + FrameTypeName(type) + " on stream " +
                       std::to_string(stream) + " declares " + std::to_string(*len) +
                       " payload bytes, limit " + std::to_string(max_payload_));
  } else if (!IsKnownFrameType(type)) {
    error_ = DataError("unknown frame type " + FrameTypeName(type) + " on stream " +
                       std::to_string(stream));
  } else if (flags & ~AllowedFlags(static_cast<FrameType>(type))) {
    error_ = DataError("bad flags 0x" + HexEncode(std::span<const uint8_t>(&flags, 1)) + " on " +
                       FrameTypeName(type) + " frame, stream " + std::to_string(stream));
  }
  if (!error_.ok()) input_ = {};
  return error_;
}

namespace {

FrameView ViewAt(const uint8_t* h, uint32_t len) {
  FrameView f;
  f.type = static_cast<FrameType>(h[4]);
  f.flags = h[5];
  f.stream = h[6] | (h[7] << 8) | (h[8] << 16) | (static_cast<uint32_t>(h[9]) << 24);
  f.payload = std::span<const uint8_t>(h + kFrameHeaderBytes, len);
  return f;
}

}  // namespace

Result<std::optional<FrameView>> FrameDecoder::NextView() {
  if (!error_.ok()) return error_;
  Compact();
  uint32_t len = 0;
  if (pos_ < buf_.size()) {
    // A frame begun in the buffer: complete it from the fed bytes.
    size_t have = buf_.size() - pos_;
    if (have < kFrameHeaderBytes) Take(std::min(kFrameHeaderBytes - have, input_.size()));
    if (buf_.size() - pos_ < kFrameHeaderBytes) return std::optional<FrameView>();
    RETURN_IF_ERROR(CheckHeader(buf_.data() + pos_, &len));
    const size_t total = kFrameHeaderBytes + len;
    have = buf_.size() - pos_;
    if (have < total) Take(std::min(total - have, input_.size()));
    if (buf_.size() - pos_ < total) return std::optional<FrameView>();
    FrameView f = ViewAt(buf_.data() + pos_, len);
    pos_ += total;
    return std::optional<FrameView>(f);
  }
  if (input_.size() < kFrameHeaderBytes) {
    Take(input_.size());
    return std::optional<FrameView>();
  }
  RETURN_IF_ERROR(CheckHeader(input_.data(), &len));
  const size_t total = kFrameHeaderBytes + len;
  if (input_.size() < total) {
    Take(input_.size());
    return std::optional<FrameView>();
  }
  FrameView f = ViewAt(input_.data(), len);
  input_ = input_.subspan(total);
  return std::optional<FrameView>(f);
}

Result<std::optional<Frame>> FrameDecoder::Next() {
  ASSIGN_OR_RETURN(std::optional<FrameView> v, NextView());
  if (!v) return std::optional<Frame>();
  return std::optional<Frame>(v->ToFrame());
}

Status FrameDecoder::Finish() const {
  if (!error_.ok()) return error_;
  if (buffered() == 0) return Status::Ok();
  return DataError("truncated frame: connection ended with " + std::to_string(buffered()) +
                   " bytes of an incomplete frame");
}

// ---- Payloads ---------------------------------------------------------------

std::string_view ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kProtocol:
      return "PROTOCOL";
    case ErrorCode::kVersion:
      return "VERSION";
    case ErrorCode::kAuthFailed:
      return "AUTH_FAILED";
    case ErrorCode::kNotAuthenticated:
      return "NOT_AUTHENTICATED";
    case ErrorCode::kNotFound:
      return "NOT_FOUND";
    case ErrorCode::kChanged:
      return "CHANGED";
    case ErrorCode::kIo:
      return "IO";
    case ErrorCode::kLimit:
      return "LIMIT";
    case ErrorCode::kCancelled:
      return "CANCELLED";
    case ErrorCode::kInternal:
      return "INTERNAL";
    case ErrorCode::kBusy:
      return "BUSY";
  }
  return "UNKNOWN";
}

std::vector<uint8_t> EncodePayload(const HelloMsg& m) {
  std::vector<uint8_t> out(kHelloMagic.begin(), kHelloMagic.end());
  out.reserve(64 + m.node_uuid.size() + m.node_name.size());
  PutU16(&out, m.min_version);
  PutU16(&out, m.max_version);
  PutU8(&out, static_cast<uint8_t>(m.role));
  PutString(&out, m.node_uuid);
  PutString(&out, m.node_name);
  PutBytes(&out, m.nonce);
  return out;
}

Status DecodePayload(std::span<const uint8_t> in, HelloMsg* m) {
  Reader r(in, "HELLO");
  std::array<uint8_t, 8> magic{};
  r.Bytes("magic", &magic);
  if (r.ok() && std::memcmp(magic.data(), kHelloMagic.data(), 8) != 0) {
    r.Fail("magic", "not a Lifeboat syncproto peer (got " + HexEncode(magic) + ")");
  }
  m->min_version = r.U16("min_version");
  m->max_version = r.U16("max_version");
  if (r.ok() && (m->min_version == 0 || m->min_version > m->max_version)) {
    r.Fail("version",
           "bad range " + std::to_string(m->min_version) + ".." + std::to_string(m->max_version));
  }
  uint8_t role = r.U8("role");
  if (r.ok() && role != 1 && role != 2) r.Fail("role", "unknown role " + std::to_string(role));
  m->role = static_cast<Role>(role);
  m->node_uuid = r.String("node_uuid", 64);
  m->node_name = r.String("node_name", 255);
  r.Bytes("nonce", &m->nonce);
  r.ExpectEnd();
  return r.status();
}

std::vector<uint8_t> EncodePayload(const AuthMsg& m) {
  return std::vector<uint8_t>(m.proof.begin(), m.proof.end());
}

Status DecodePayload(std::span<const uint8_t> in, AuthMsg* m) {
  Reader r(in, "AUTH");
  r.Bytes("proof", &m->proof);
  r.ExpectEnd();
  return r.status();
}

std::vector<uint8_t> EncodePayload(const ErrorMsg& m) {
  std::vector<uint8_t> out;
  PutU16(&out, static_cast<uint16_t>(m.code));
  PutU8(&out, m.retryable ? 1 : 0);
  PutString(&out, std::string_view(m.message).substr(0, kMaxErrorMessageBytes));
  return out;
}

Status DecodePayload(std::span<const uint8_t> in, ErrorMsg* m) {
  Reader r(in, "ERROR");
  uint16_t code = r.U16("code");
  if (r.ok() && (code < 1 || code > 11))
    r.Fail("code", "unknown error code " + std::to_string(code));
  m->code = static_cast<ErrorCode>(code);
  uint8_t retry = r.U8("retryable");
  if (r.ok() && retry > 1) r.Fail("retryable", "not 0 or 1");
  m->retryable = retry == 1;
  m->message = r.String("message", kMaxErrorMessageBytes);
  r.ExpectEnd();
  return r.status();
}

namespace {

void PutManifestRequest(std::vector<uint8_t>* out, const ManifestRequestMsg& m) {
  PutU64(out, m.since_generation);
  PutString(out, m.boot_id);
  PutVarint(out, m.services.size());
  for (const std::string& s : m.services) PutString(out, s);
}

void ReadManifestRequest(Reader& r, ManifestRequestMsg* m) {
  m->since_generation = r.U64("since_generation");
  m->boot_id = r.String("boot_id", 128);
  uint64_t n = r.Varint("service_count");
  if (r.ok() && (n > kMaxServicesPerRequest || n > r.remaining())) {
    r.Fail("service_count", std::to_string(n) + " services is over the limit or the payload");
  }
  m->services.clear();
  for (uint64_t i = 0; r.ok() && i < n; ++i) {
    m->services.push_back(r.String("service", 255));
    if (r.ok() && m->services.back().empty()) r.Fail("service", "empty service name");
  }
}

}  // namespace

std::vector<uint8_t> EncodePayload(const ManifestRequestMsg& m) {
  std::vector<uint8_t> out;
  PutManifestRequest(&out, m);
  return out;
}

Status DecodePayload(std::span<const uint8_t> in, ManifestRequestMsg* m) {
  Reader r(in, "MANIFEST_REQUEST");
  ReadManifestRequest(r, m);
  r.ExpectEnd();
  return r.status();
}

std::vector<uint8_t> EncodePayload(const HeldManifestRequestMsg& m) {
  std::vector<uint8_t> out;
  PutManifestRequest(&out, m.request);
  PutString(&out, m.held_peer);
  return out;
}

Status DecodePayload(std::span<const uint8_t> in, HeldManifestRequestMsg* m) {
  Reader r(in, "HELD_MANIFEST_REQUEST");
  ReadManifestRequest(r, &m->request);
  m->held_peer = r.String("held_peer", 255);
  if (r.ok() && m->held_peer.empty()) r.Fail("held_peer", "empty peer name");
  r.ExpectEnd();
  return r.status();
}

std::vector<uint8_t> EncodePayload(const HeldQueryMsg& m) {
  std::vector<uint8_t> out;
  PutString(&out, m.peer);
  return out;
}

Status DecodePayload(std::span<const uint8_t> in, HeldQueryMsg* m) {
  Reader r(in, "HELD_QUERY");
  m->peer = r.String("peer", 255);
  r.ExpectEnd();
  return r.status();
}

std::vector<uint8_t> EncodePayload(const HeldAnswerMsg& m) {
  std::vector<uint8_t> out;
  PutVarint(&out, m.peers.size());
  for (const HeldPeer& p : m.peers) {
    PutString(&out, p.peer);
    PutString(&out, p.node_uuid);
    PutU64(&out, p.generation);
    PutString(&out, p.boot_id);
    PutU64(&out, static_cast<uint64_t>(p.last_pull_ms));
  }
  return out;
}

Status DecodePayload(std::span<const uint8_t> in, HeldAnswerMsg* m) {
  Reader r(in, "HELD_ANSWER");
  uint64_t n = r.Varint("peer_count");
  // Each entry takes at least 20 bytes (four empty strings' lengths + u64 + i64).
  if (r.ok() && (n > kMaxHeldPeers || n * 20 > r.remaining())) {
    r.Fail("peer_count", std::to_string(n) + " peers is over the limit or the payload");
  }
  m->peers.clear();
  for (uint64_t i = 0; r.ok() && i < n; ++i) {
    HeldPeer p;
    p.peer = r.String("peer", 255);
    if (r.ok() && p.peer.empty()) r.Fail("peer", "empty peer name");
    p.node_uuid = r.String("node_uuid", 64);
    p.generation = r.U64("generation");
    p.boot_id = r.String("boot_id", 128);
    p.last_pull_ms = r.I64("last_pull_ms");
    m->peers.push_back(std::move(p));
  }
  r.ExpectEnd();
  return r.status();
}

uint64_t CoarseBlockCount(uint64_t basis_size, uint32_t block_size) {
  if (block_size == 0) return 0;
  return basis_size / block_size + (basis_size % block_size ? 1 : 0);
}

std::vector<uint8_t> EncodePayload(const FileRequestMsg& m) {
  std::vector<uint8_t> out;
  PutString(&out, m.path);
  PutU64(&out, m.expected_size);
  PutDigest(&out, m.expected_digest);
  PutU8(&out, m.has_basis ? 1 : 0);
  if (m.has_basis) {
    PutU64(&out, m.basis_size);
    PutU32(&out, m.block_size);
    PutU32(&out, m.block_count);
  }
  return out;
}

Status DecodePayload(std::span<const uint8_t> in, FileRequestMsg* m) {
  Reader r(in, "FILE_REQUEST");
  m->path = r.String("path", kMaxPathBytes);
  if (r.ok()) {
    Status s = ValidateExportPath(m->path);
    if (!s.ok()) r.Fail("path", s.message());
  }
  m->expected_size = r.U64("expected_size");
  m->expected_digest = r.Digest("expected_digest");
  uint8_t flags = r.U8("flags");
  if (r.ok() && flags > 1) r.Fail("flags", "unknown flag bits");
  m->has_basis = flags == 1;
  m->basis_size = m->block_size = m->block_count = 0;
  if (m->has_basis) {
    m->basis_size = r.U64("basis_size");
    m->block_size = r.U32("block_size");
    m->block_count = r.U32("block_count");
    if (r.ok()) {
      uint32_t bs = m->block_size;
      if (bs < 4096 || bs > (16u << 20) || (bs & (bs - 1)) != 0) {
        r.Fail("block_size", std::to_string(bs) + " is not a power of two in 4 KiB..16 MiB");
      } else if (m->block_count != CoarseBlockCount(m->basis_size, bs)) {
        r.Fail("block_count", std::to_string(m->block_count) + " does not match basis_size " +
                                  std::to_string(m->basis_size));
      } else if (m->block_count > kMaxCoarseBlocks) {
        r.Fail("block_count", std::to_string(m->block_count) + " exceeds the limit");
      }
    }
  }
  r.ExpectEnd();
  if (!r.ok() && !m->path.empty()) {
    return r.status().WithContext("path \"" + m->path.substr(0, 256) + "\"");
  }
  return r.status();
}

std::vector<uint8_t> EncodePayload(const FileStartMsg& m) {
  std::vector<uint8_t> out;
  PutU8(&out, static_cast<uint8_t>(m.method));
  PutU64(&out, m.size);
  return out;
}

Status DecodePayload(std::span<const uint8_t> in, FileStartMsg* m) {
  Reader r(in, "FILE_START");
  uint8_t method = r.U8("method");
  if (r.ok() && method != 1 && method != 2)
    r.Fail("method", "unknown method " + std::to_string(method));
  m->method = static_cast<TransferMethod>(method);
  m->size = r.U64("size");
  r.ExpectEnd();
  return r.status();
}

std::vector<uint8_t> EncodePayload(const FileEndMsg& m) {
  std::vector<uint8_t> out;
  PutU64(&out, m.size);
  PutDigest(&out, m.digest);
  return out;
}

Status DecodePayload(std::span<const uint8_t> in, FileEndMsg* m) {
  Reader r(in, "FILE_END");
  m->size = r.U64("size");
  m->digest = r.Digest("digest");
  r.ExpectEnd();
  return r.status();
}

Status StatusFromError(const ErrorMsg& m, std::string_view context) {
  std::string msg = std::string(context) + ": peer error " + std::string(ErrorCodeName(m.code)) +
                    ": " + m.message;
  switch (m.code) {
    case ErrorCode::kAuthFailed:
    case ErrorCode::kNotAuthenticated:
      return PermissionError(msg);
    case ErrorCode::kNotFound:
      return NotFoundError(msg);
    case ErrorCode::kCancelled:
      return TemporaryError(msg);
    default:
      break;
  }
  if (m.retryable) return TemporaryError(msg);
  return DataError(msg);
}

}  // namespace lifeboat::syncproto
