#include "syncproto/handshake.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <algorithm>

namespace lifeboat::syncproto {
namespace {

constexpr std::string_view kPullerLabel = "lifeboat syncproto v1 puller";
constexpr std::string_view kServerLabel = "lifeboat syncproto v1 server";

Proof Hmac(std::string_view key, std::initializer_list<std::span<const uint8_t>> parts) {
  std::vector<uint8_t> msg;
  for (auto p : parts) msg.insert(msg.end(), p.begin(), p.end());
  Proof out{};
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), msg.data(), msg.size(), out.data(),
       &len);
  return out;
}

std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::string RoleName(Role r) { return r == Role::kPuller ? "puller" : "server"; }

}  // namespace

Status ValidateClusterKey(std::string_view key) {
  if (key.size() < kMinClusterKeyBytes) {
    return ConfigError("cluster key is " + std::to_string(key.size()) + " bytes; at least " +
                       std::to_string(kMinClusterKeyBytes) + " are required");
  }
  return Status::Ok();
}

Result<Nonce> RandomNonce() {
  Nonce n{};
  if (RAND_bytes(n.data(), static_cast<int>(n.size())) != 1) {
    return InternalError("RAND_bytes failed to produce a nonce");
  }
  return n;
}

Result<uint16_t> NegotiateVersion(const HelloMsg& a, const HelloMsg& b) {
  uint16_t hi = std::min(a.max_version, b.max_version);
  uint16_t lo = std::max(a.min_version, b.min_version);
  if (hi < lo) {
    return DataError("no common protocol version: " + RoleName(a.role) + " speaks " +
                     std::to_string(a.min_version) + ".." + std::to_string(a.max_version) + ", " +
                     RoleName(b.role) + " speaks " + std::to_string(b.min_version) + ".." +
                     std::to_string(b.max_version));
  }
  return hi;
}

std::array<uint8_t, 32> TranscriptHash(std::span<const uint8_t> puller_hello_frame,
                                       std::span<const uint8_t> server_hello_frame) {
  std::vector<uint8_t> both(puller_hello_frame.begin(), puller_hello_frame.end());
  both.insert(both.end(), server_hello_frame.begin(), server_hello_frame.end());
  std::array<uint8_t, 32> out{};
  unsigned int len = 0;
  EVP_Digest(both.data(), both.size(), out.data(), &len, EVP_sha256(), nullptr);
  return out;
}

Proof PullerProof(std::string_view key, const std::array<uint8_t, 32>& transcript) {
  return Hmac(key, {Bytes(kPullerLabel), transcript});
}

Proof ServerProof(std::string_view key, const std::array<uint8_t, 32>& transcript,
                  const Proof& puller_proof) {
  return Hmac(key, {Bytes(kServerLabel), transcript, puller_proof});
}

bool ProofsEqual(const Proof& a, const Proof& b) {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

Handshake::Handshake(Role role, std::string key, NodeIdentity self, Options options)
    : role_(role), key_(std::move(key)), self_(std::move(self)), options_(options) {}

Status Handshake::Fail(Status status, ErrorCode code, std::vector<uint8_t>* out) {
  state_ = State::kFailed;
  ErrorMsg e;
  e.code = code;
  e.message = status.message();
  AppendFrame(out, FrameType::kError, 0, 0, EncodePayload(e));
  return status;
}

std::vector<uint8_t> Handshake::MakeHelloFrame(Result<Nonce> nonce, Status* status) {
  if (!nonce.ok()) {
    *status = nonce.status();
    return {};
  }
  HelloMsg h;
  h.min_version = options_.min_version;
  h.max_version = options_.max_version;
  h.role = role_;
  h.node_uuid = self_.uuid.substr(0, 64);
  h.node_name = self_.name.substr(0, 255);
  h.nonce = *nonce;
  std::vector<uint8_t> frame;
  AppendFrame(&frame, FrameType::kHello, 0, 0, EncodePayload(h));
  return frame;
}

Status Handshake::Start(std::vector<uint8_t>* out) {
  if (role_ != Role::kPuller || state_ != State::kInit) {
    return InternalError("Handshake::Start called on a " + RoleName(role_) + " or twice");
  }
  Status key_ok = ValidateClusterKey(key_);
  if (!key_ok.ok()) {
    state_ = State::kFailed;
    return key_ok;
  }
  Status s;
  puller_hello_ =
      MakeHelloFrame(options_.nonce ? Result<Nonce>(*options_.nonce) : RandomNonce(), &s);
  if (!s.ok()) {
    state_ = State::kFailed;
    return s;
  }
  out->insert(out->end(), puller_hello_.begin(), puller_hello_.end());
  state_ = State::kSentHello;
  return Status::Ok();
}

Status Handshake::OnFrame(const Frame& frame, std::vector<uint8_t>* out) {
  if (state_ == State::kFailed) return DataError("handshake already failed");
  if (frame.type == FrameType::kError) {
    ErrorMsg e;
    Status s = DecodePayload(frame.payload, &e);
    state_ = State::kFailed;
    if (!s.ok()) return s;
    return StatusFromError(e, "handshake with " +
                                  RoleName(role_ == Role::kPuller ? Role::kServer : Role::kPuller) +
                                  (peer_.name.empty() ? "" : " " + peer_.name));
  }
  if (frame.stream != 0) {
    return Fail(
        PermissionError(FrameTypeName(frame.type) + " on stream " + std::to_string(frame.stream) +
                        " before authentication completed; refused"),
        ErrorCode::kNotAuthenticated, out);
  }
  switch (frame.type) {
    case FrameType::kHello:
      return OnHello(frame, out);
    case FrameType::kAuth:
      return OnAuth(frame, out);
    default:
      return Fail(
          PermissionError(FrameTypeName(frame.type) + " before authentication completed; refused"),
          ErrorCode::kNotAuthenticated, out);
  }
}

Status Handshake::OnHello(const Frame& frame, std::vector<uint8_t>* out) {
  bool expected = (role_ == Role::kServer && state_ == State::kInit) ||
                  (role_ == Role::kPuller && state_ == State::kSentHello);
  if (!expected) return Fail(DataError("unexpected HELLO"), ErrorCode::kProtocol, out);
  HelloMsg hello;
  Status s = DecodePayload(frame.payload, &hello);
  if (!s.ok()) return Fail(s, ErrorCode::kProtocol, out);
  Role want = role_ == Role::kPuller ? Role::kServer : Role::kPuller;
  if (hello.role != want) {
    return Fail(DataError("HELLO: peer " + hello.node_name + " says it is a " +
                          RoleName(hello.role) + ", expected a " + RoleName(want)),
                ErrorCode::kProtocol, out);
  }
  peer_ = {hello.node_uuid, hello.node_name};
  HelloMsg mine;
  mine.min_version = options_.min_version;
  mine.max_version = options_.max_version;
  mine.role = role_;
  Result<uint16_t> v = NegotiateVersion(hello, mine);
  if (!v.ok()) {
    return Fail(v.status().WithContext("peer " + peer_.name), ErrorCode::kVersion, out);
  }
  version_ = *v;
  std::vector<uint8_t> raw = EncodeFrame(frame);
  if (role_ == Role::kPuller) {
    server_hello_ = std::move(raw);
    puller_proof_ = PullerProof(key_, TranscriptHash(puller_hello_, server_hello_));
    AuthMsg a{puller_proof_};
    AppendFrame(out, FrameType::kAuth, 0, 0, EncodePayload(a));
    state_ = State::kWaitServerAuth;
    return Status::Ok();
  }
  Status key_ok = ValidateClusterKey(key_);
  if (!key_ok.ok()) return Fail(key_ok, ErrorCode::kInternal, out);
  puller_hello_ = std::move(raw);
  Status ns;
  server_hello_ =
      MakeHelloFrame(options_.nonce ? Result<Nonce>(*options_.nonce) : RandomNonce(), &ns);
  if (!ns.ok()) return Fail(ns, ErrorCode::kInternal, out);
  out->insert(out->end(), server_hello_.begin(), server_hello_.end());
  state_ = State::kWaitPullerAuth;
  return Status::Ok();
}

Status Handshake::OnAuth(const Frame& frame, std::vector<uint8_t>* out) {
  bool expected = (role_ == Role::kServer && state_ == State::kWaitPullerAuth) ||
                  (role_ == Role::kPuller && state_ == State::kWaitServerAuth);
  if (!expected) {
    return Fail(PermissionError("AUTH before HELLO; refused"), ErrorCode::kNotAuthenticated, out);
  }
  AuthMsg auth;
  Status s = DecodePayload(frame.payload, &auth);
  if (!s.ok()) return Fail(s, ErrorCode::kProtocol, out);
  auto transcript = TranscriptHash(puller_hello_, server_hello_);
  if (role_ == Role::kServer) {
    Proof want = PullerProof(key_, transcript);
    if (!ProofsEqual(want, auth.proof)) {
      return Fail(
          PermissionError("authentication failed: puller " + peer_.name + " (" + peer_.uuid +
                          ") does not know this cluster's key (check "
                          "auth.cluster_key_file on both nodes)"),
          ErrorCode::kAuthFailed, out);
    }
    AuthMsg mine{ServerProof(key_, transcript, auth.proof)};
    AppendFrame(out, FrameType::kAuth, 0, 0, EncodePayload(mine));
    state_ = State::kDone;
    return Status::Ok();
  }
  Proof want = ServerProof(key_, transcript, puller_proof_);
  if (!ProofsEqual(want, auth.proof)) {
    return Fail(PermissionError("authentication failed: server " + peer_.name + " (" + peer_.uuid +
                                ") does not know this cluster's key (check "
                                "auth.cluster_key_file on both nodes)"),
                ErrorCode::kAuthFailed, out);
  }
  state_ = State::kDone;
  return Status::Ok();
}

}  // namespace lifeboat::syncproto
