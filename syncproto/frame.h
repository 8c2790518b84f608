// Frames: the unit of the syncproto wire format (docs/syncproto.md, sections
// 2, 3 and 7). Everything here is pure: encoders append bytes to a vector,
// decoders read a byte span and either fill a struct or return a kData Status
// that names the frame type and the field. No I/O, no allocation beyond what
// the input justifies, thread-compatible (no shared state).
#ifndef LIFEBOAT_SYNCPROTO_FRAME_H_
#define LIFEBOAT_SYNCPROTO_FRAME_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/digest.h"
#include "base/status.h"

namespace lifeboat::syncproto {

inline constexpr size_t kFrameHeaderBytes = 10;
inline constexpr uint32_t kMaxFramePayload = 1u << 20;  // hard limit, never raised
inline constexpr size_t kMaxChunkBytes = 1u << 20;      // decompressed FILE_DATA chunk
inline constexpr size_t kMaxManifestBytes = 256u << 20;
inline constexpr size_t kMaxSignatureBytes = 64u << 20;
inline constexpr uint32_t kMaxCoarseBlocks = 1u << 20;
inline constexpr size_t kMaxErrorMessageBytes = 4096;
inline constexpr size_t kMaxServicesPerRequest = 1024;
inline constexpr size_t kMaxHeldPeers = 4096;
inline constexpr std::string_view kHelloMagic = "LFBTSYNC";

enum class FrameType : uint8_t {
  kHello = 0x01,
  kAuth = 0x02,
  kError = 0x03,
  kBye = 0x04,
  kManifestRequest = 0x10,
  kManifestData = 0x11,
  kHeldManifestRequest = 0x12,
  kFileRequest = 0x20,
  kFileBasis = 0x21,
  kSignatureNeeded = 0x22,
  kSignatureData = 0x23,
  kFileStart = 0x24,
  kFileData = 0x25,
  kFileEnd = 0x26,
  kCancel = 0x27,
  kHeldQuery = 0x30,
  kHeldAnswer = 0x31,
};

inline constexpr uint8_t kFlagEnd = 0x01;
inline constexpr uint8_t kFlagCompressed = 0x02;

// "HELLO", "FILE_DATA", ...; "0x7f" style for unknown values.
std::string FrameTypeName(uint8_t type);
inline std::string FrameTypeName(FrameType type) {
  return FrameTypeName(static_cast<uint8_t>(type));
}
bool IsKnownFrameType(uint8_t type);

struct Frame {
  FrameType type = FrameType::kHello;
  uint8_t flags = 0;
  uint32_t stream = 0;
  std::vector<uint8_t> payload;

  bool end() const { return (flags & kFlagEnd) != 0; }
  bool compressed() const { return (flags & kFlagCompressed) != 0; }
};

// A decoded frame whose payload is not copied: it points into the bytes
// given to FrameDecoder::Feed (or into the decoder's buffer) and is valid
// until the next call on the decoder.
struct FrameView {
  FrameType type = FrameType::kHello;
  uint8_t flags = 0;
  uint32_t stream = 0;
  std::span<const uint8_t> payload;

  bool end() const { return (flags & kFlagEnd) != 0; }
  bool compressed() const { return (flags & kFlagCompressed) != 0; }
  Frame ToFrame() const { return Frame{type, flags, stream, {payload.begin(), payload.end()}}; }
};

// Appends header + payload to *out. payload.size() must be <= kMaxFramePayload
// (callers split larger units; a violation is a programming error and aborts).
void AppendFrame(std::vector<uint8_t>* out, FrameType type, uint8_t flags, uint32_t stream,
                 std::span<const uint8_t> payload);
std::vector<uint8_t> EncodeFrame(const Frame& frame);

// Accumulates received bytes and yields whole frames. Header errors (payload
// length above the limit, unknown type, reserved flag bits, a flag the type
// does not use) are reported as soon as the 10 header bytes are in, before
// any payload is buffered, and are sticky: the connection is unusable after
// one.
//
// Two ways in. Append() copies the bytes into the decoder's buffer (then
// buffered bytes never exceed kFrameHeaderBytes + max_payload plus what the
// caller appended since the last Next()). Feed() does not copy: NextView()
// yields frames straight out of the fed bytes, which must stay valid until
// NextView() returned nullopt or an error (or Stash() was called); only the
// incomplete frame at the end is copied, so the buffer never holds more than
// kFrameHeaderBytes + max_payload.
class FrameDecoder {
 public:
  explicit FrameDecoder(uint32_t max_payload = kMaxFramePayload);

  void Append(std::span<const uint8_t> data);
  // The next complete frame, copied; nullopt when more bytes are needed.
  Result<std::optional<Frame>> Next();

  // Borrows `data` (see above). Call NextView() until nullopt before the next Feed().
  void Feed(std::span<const uint8_t> data);
  // The next complete frame without a copy, valid until the next call on the
  // decoder; nullopt when more bytes are needed (the rest of the fed bytes
  // is buffered then).
  Result<std::optional<FrameView>> NextView();
  // Copies what is left of the fed bytes into the buffer, for a caller that
  // stops calling NextView() before nullopt.
  void Stash();

  // Call at end of input: an error when a partial frame is buffered.
  Status Finish() const;
  size_t buffered() const { return buf_.size() - pos_ + input_.size(); }

 private:
  Status CheckHeader(const uint8_t* h, uint32_t* len);
  void Compact();
  void Take(size_t n);  // moves n bytes from input_ to buf_

  uint32_t max_payload_;
  std::vector<uint8_t> buf_;
  size_t pos_ = 0;
  std::span<const uint8_t> input_;  // fed, not yet parsed or buffered
  Status error_;
};

// ---- Payloads (docs/syncproto.md section 3) ---------------------------------

enum class Role : uint8_t { kPuller = 1, kServer = 2 };

using Nonce = std::array<uint8_t, 32>;
using Proof = std::array<uint8_t, 32>;

struct HelloMsg {
  uint16_t min_version = 1;
  uint16_t max_version = 1;
  Role role = Role::kPuller;
  std::string node_uuid;
  std::string node_name;
  Nonce nonce{};
  bool operator==(const HelloMsg&) const = default;
};

struct AuthMsg {
  Proof proof{};
  bool operator==(const AuthMsg&) const = default;
};

enum class ErrorCode : uint16_t {
  kProtocol = 1,
  kVersion = 2,
  kAuthFailed = 3,
  kNotAuthenticated = 4,
  kNotFound = 5,
  kChanged = 6,
  kIo = 7,
  kLimit = 8,
  kCancelled = 9,
  kInternal = 10,
  kBusy = 11,
};
std::string_view ErrorCodeName(ErrorCode code);

struct ErrorMsg {
  ErrorCode code = ErrorCode::kProtocol;
  bool retryable = false;
  std::string message;
  bool operator==(const ErrorMsg&) const = default;
};

struct ManifestRequestMsg {
  uint64_t since_generation = 0;
  std::string boot_id;
  std::vector<std::string> services;
  bool operator==(const ManifestRequestMsg&) const = default;
};

// MANIFEST_REQUEST for the copy of peer `held_peer` the server holds in its
// catalog (section 3, 0x12), instead of the server's own export.
struct HeldManifestRequestMsg {
  ManifestRequestMsg request;
  std::string held_peer;
  bool operator==(const HeldManifestRequestMsg&) const = default;
};

// HELD_QUERY: which generation of which peers do you hold? "" = every peer.
struct HeldQueryMsg {
  std::string peer;
  bool operator==(const HeldQueryMsg&) const = default;
};

// One peer whose export a node holds in its catalog.
struct HeldPeer {
  std::string peer;         // the holder's configured name for it
  std::string node_uuid;    // from the peer's manifests ("" before the first pull)
  uint64_t generation = 0;  // the peer's export generation held in full (0 = nothing)
  std::string boot_id;
  int64_t last_pull_ms = 0;  // last successful pull, wall ms (0 = never)
  bool operator==(const HeldPeer&) const = default;
};

struct HeldAnswerMsg {
  std::vector<HeldPeer> peers;  // sorted by peer name
  bool operator==(const HeldAnswerMsg&) const = default;
};

struct FileRequestMsg {
  std::string path;
  uint64_t expected_size = 0;
  Digest128 expected_digest;
  bool has_basis = false;
  uint64_t basis_size = 0;   // with has_basis
  uint32_t block_size = 0;   // with has_basis: power of two, 4 KiB .. 16 MiB
  uint32_t block_count = 0;  // with has_basis: ceil(basis_size / block_size)
  bool operator==(const FileRequestMsg&) const = default;
};

enum class TransferMethod : uint8_t { kWhole = 1, kDelta = 2 };

struct FileStartMsg {
  TransferMethod method = TransferMethod::kWhole;
  uint64_t size = 0;
  bool operator==(const FileStartMsg&) const = default;
};

struct FileEndMsg {
  uint64_t size = 0;
  Digest128 digest;
  bool operator==(const FileEndMsg&) const = default;
};

std::vector<uint8_t> EncodePayload(const HelloMsg& m);
std::vector<uint8_t> EncodePayload(const AuthMsg& m);
std::vector<uint8_t> EncodePayload(const ErrorMsg& m);
std::vector<uint8_t> EncodePayload(const ManifestRequestMsg& m);
std::vector<uint8_t> EncodePayload(const HeldManifestRequestMsg& m);
std::vector<uint8_t> EncodePayload(const HeldQueryMsg& m);
std::vector<uint8_t> EncodePayload(const HeldAnswerMsg& m);
std::vector<uint8_t> EncodePayload(const FileRequestMsg& m);
std::vector<uint8_t> EncodePayload(const FileStartMsg& m);
std::vector<uint8_t> EncodePayload(const FileEndMsg& m);

// Each decoder parses the payload exactly (no trailing bytes) and validates
// every field (lengths, enum values, paths, block geometry). Errors are kData
// and say "<FRAME_TYPE>: <field>: <problem>".
Status DecodePayload(std::span<const uint8_t> in, HelloMsg* m);
Status DecodePayload(std::span<const uint8_t> in, AuthMsg* m);
Status DecodePayload(std::span<const uint8_t> in, ErrorMsg* m);
Status DecodePayload(std::span<const uint8_t> in, ManifestRequestMsg* m);
Status DecodePayload(std::span<const uint8_t> in, HeldManifestRequestMsg* m);
Status DecodePayload(std::span<const uint8_t> in, HeldQueryMsg* m);
Status DecodePayload(std::span<const uint8_t> in, HeldAnswerMsg* m);
Status DecodePayload(std::span<const uint8_t> in, FileRequestMsg* m);
Status DecodePayload(std::span<const uint8_t> in, FileStartMsg* m);
Status DecodePayload(std::span<const uint8_t> in, FileEndMsg* m);

// The number of coarse blocks of a basis of `basis_size` bytes.
uint64_t CoarseBlockCount(uint64_t basis_size, uint32_t block_size);

// The Status a received ERROR frame turns into locally: kPermission for
// AUTH_FAILED/NOT_AUTHENTICATED, kNotFound, kTemporary when retryable, kData
// otherwise; the message names `context` (peer, stream, path).
Status StatusFromError(const ErrorMsg& m, std::string_view context);

}  // namespace lifeboat::syncproto

#endif  // LIFEBOAT_SYNCPROTO_FRAME_H_
