// The syncproto handshake (docs/syncproto.md section 4): version negotiation
// and mutual HMAC-SHA256 proof of the cluster key over both nonces and the
// transcript (the two HELLO frames). Both sessions embed one Handshake; it is
// also usable alone (tests, tools).
//
// Threading: a Handshake is a single-threaded object. Failure: after a method
// returns an error the handshake is failed for good; the caller closes the
// connection after sending what was appended to `out` (an ERROR frame).
#ifndef LIFEBOAT_SYNCPROTO_HANDSHAKE_H_
#define LIFEBOAT_SYNCPROTO_HANDSHAKE_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "syncproto/frame.h"

namespace lifeboat::syncproto {

// Version 2 added owners and hard links to manifest entries; version 3 the
// SHA-256 of every file (the catalog's object name). Version 1 was never
// released; 2 is no longer spoken (its manifests cannot name objects).
inline constexpr uint16_t kMinProtocolVersion = 3;
inline constexpr uint16_t kMaxProtocolVersion = 3;
inline constexpr size_t kMinClusterKeyBytes = 16;

struct NodeIdentity {
  std::string uuid;
  std::string name;
};

// Checks a cluster key (the raw bytes of auth.cluster_key_file).
Status ValidateClusterKey(std::string_view key);

// Fresh random nonce from RAND_bytes.
Result<Nonce> RandomNonce();

// The common version of two HELLOs, or a kData error naming both ranges.
Result<uint16_t> NegotiateVersion(const HelloMsg& a, const HelloMsg& b);

// T = SHA-256(puller HELLO frame || server HELLO frame), over whole frames.
std::array<uint8_t, 32> TranscriptHash(std::span<const uint8_t> puller_hello_frame,
                                       std::span<const uint8_t> server_hello_frame);
Proof PullerProof(std::string_view key, const std::array<uint8_t, 32>& transcript);
Proof ServerProof(std::string_view key, const std::array<uint8_t, 32>& transcript,
                  const Proof& puller_proof);
bool ProofsEqual(const Proof& a, const Proof& b);  // constant time

class Handshake {
 public:
  struct Options {
    uint16_t min_version = kMinProtocolVersion;
    uint16_t max_version = kMaxProtocolVersion;
    std::optional<Nonce> nonce;  // for golden vectors and tests; random otherwise
  };

  // `key` must pass ValidateClusterKey (checked in Start / first OnFrame).
  Handshake(Role role, std::string key, NodeIdentity self, Options options);
  Handshake(Role role, std::string key, NodeIdentity self)
      : Handshake(role, std::move(key), std::move(self), Options{}) {}

  // Puller only: appends the puller's HELLO frame. Call once, first.
  Status Start(std::vector<uint8_t>* out);

  // Handles one stream-0 frame received before authentication completed
  // (HELLO, AUTH or ERROR; anything else is answered with NOT_AUTHENTICATED).
  // Appends the frames to send to *out. On error, *out may hold an ERROR
  // frame to send before closing.
  Status OnFrame(const Frame& frame, std::vector<uint8_t>* out);

  // Both proofs verified: requests may flow.
  bool authenticated() const { return state_ == State::kDone; }
  bool failed() const { return state_ == State::kFailed; }
  uint16_t version() const { return version_; }
  const NodeIdentity& peer() const { return peer_; }

 private:
  enum class State { kInit, kSentHello, kWaitPullerAuth, kWaitServerAuth, kDone, kFailed };

  Status Fail(Status status, ErrorCode code, std::vector<uint8_t>* out);
  Status OnHello(const Frame& frame, std::vector<uint8_t>* out);
  Status OnAuth(const Frame& frame, std::vector<uint8_t>* out);
  std::vector<uint8_t> MakeHelloFrame(Result<Nonce> nonce, Status* status);

  Role role_;
  std::string key_;
  NodeIdentity self_;
  Options options_;
  State state_ = State::kInit;
  uint16_t version_ = 0;
  NodeIdentity peer_;
  std::vector<uint8_t> puller_hello_;  // whole frames, for the transcript
  std::vector<uint8_t> server_hello_;
  Proof puller_proof_{};
};

}  // namespace lifeboat::syncproto

#endif  // LIFEBOAT_SYNCPROTO_HANDSHAKE_H_
