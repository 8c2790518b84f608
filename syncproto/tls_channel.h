// A socket-free TLS 1.3 channel over OpenSSL memory BIOs, in the style of the
// syncproto sessions: the owner feeds ciphertext received from the socket in
// with FeedCiphertext(), takes the decrypted bytes out of plaintext(), gives
// the bytes it wants to send to WritePlaintext(), and writes what
// ciphertext() holds to the socket. TLS sits between the connection and the
// syncproto session on both the puller and the server side.
//
// Credentials (TlsConfig::mode):
//   kPsk  TLS 1.3 external PSK with (EC)DHE (psk_dhe_ke: forward secrecy).
//         Identity "lifeboat", key = HKDF-SHA256 of the cluster key
//         (DerivePsk). No certificates; a peer holding another cluster key
//         fails the PSK binder check and both sides get kPermission
//         "authentication failed".
//   kCa   a cluster CA: each side presents cert_file/key_file and verifies
//         the other's certificate chain against ca_file (mutual
//         authentication; a server refuses a client without a certificate).
//         Any certificate the CA signed is a cluster member: host names are
//         not checked (peers are addressed by IP).
// Both modes require TLS 1.3, disable session tickets and resumption, and
// never fall back to plaintext or to the other mode.
//
// Copies: received ciphertext is read by OpenSSL straight from the span given
// to FeedCiphertext() and decrypted into plaintext()'s buffer; encrypted
// records are written straight into ciphertext()'s buffer, which
// TakeCiphertext() hands over without a copy (no memory BIOs in between).
//
// Threading: a TlsContext is immutable after Create() and may be shared by
// channels on any threads. A TlsChannel is single-threaded: call it from one
// thread at a time.
//
// Failure: a TLS error (bad record, failed authentication, unexpected
// message) is returned by the call that met it and kept in status(); the
// channel then refuses further input and output except that ciphertext() may
// still hold the alert that tells the peer why: write it out, then close.
// Authentication failures are kPermission, malformed input kData.
//
// TLS 1.3 order of events: a client considers the handshake done when it has
// sent its Finished, before the server has checked the client's certificate
// (kCa); a rejected client learns it from the alert on its next
// FeedCiphertext(). A server never yields plaintext from an unverified peer.
// Plaintext is unbounded within one FeedCiphertext() call: the owner bounds
// memory by how much ciphertext it feeds before consuming plaintext().
#ifndef LIFEBOAT_SYNCPROTO_TLS_CHANNEL_H_
#define LIFEBOAT_SYNCPROTO_TLS_CHANNEL_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace lifeboat::syncproto {

enum class TlsMode { kPsk, kCa };
enum class TlsRole { kClient, kServer };  // puller = client, peer server = server

struct TlsConfig {
  TlsMode mode = TlsMode::kPsk;
  std::string cluster_key;  // kPsk: the cluster key (any length >= 1)
  std::string ca_file;      // kCa: PEM CA certificate(s) that sign cluster members
  std::string cert_file;    // kCa: PEM certificate chain of this node
  std::string key_file;     // kCa: PEM private key of cert_file
};

// The TLS 1.3 PSK both sides derive from the cluster key:
// HKDF-SHA256(ikm = cluster_key, salt = "lifeboat-tls-psk-v1",
// info = "lifeboat tls13 external psk"), 32 bytes.
std::array<uint8_t, 32> DerivePsk(std::string_view cluster_key);

// The PSK identity both sides use.
inline constexpr std::string_view kTlsPskIdentity = "lifeboat";

// One SSL_CTX per role and credential set: load files once, share it.
class TlsContext {
 public:
  // Loads and checks the credentials (kCa: files readable, key matches the
  // certificate). Errors are kConfig and name the file and OpenSSL's reason.
  static Result<std::shared_ptr<const TlsContext>> Create(TlsRole role, const TlsConfig& config);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  TlsRole role() const { return role_; }
  TlsMode mode() const { return mode_; }

  struct Impl;  // opaque: the SSL_CTX and the derived PSK

 private:
  friend class TlsChannel;
  TlsContext(TlsRole role, TlsMode mode, std::unique_ptr<Impl> impl);

  TlsRole role_;
  TlsMode mode_;
  std::unique_ptr<Impl> impl_;
};

struct TlsStats {
  uint64_t ciphertext_in = 0;
  uint64_t ciphertext_out = 0;
  uint64_t plaintext_in = 0;   // decrypted bytes produced
  uint64_t plaintext_out = 0;  // bytes given to WritePlaintext and encrypted
};

class TlsChannel {
 public:
  // `peer` names the other end in error messages ("headnode1 (10.0.0.2:4650)").
  TlsChannel(std::shared_ptr<const TlsContext> context, std::string peer);
  ~TlsChannel();
  TlsChannel(const TlsChannel&) = delete;
  TlsChannel& operator=(const TlsChannel&) = delete;

  // Client: queues the ClientHello in ciphertext(). Server: nothing to do
  // (it waits for the ClientHello) but must be called too. Call once.
  Status Start();

  // Bytes received from the socket. Drives the handshake, decrypts what it
  // can into plaintext(), and queues whatever TLS wants to send (handshake
  // messages, alerts) and any plaintext written before the handshake ended.
  Status FeedCiphertext(std::span<const uint8_t> data);

  // Queues application bytes. Before the handshake completes they are held
  // and sent once it does. Fails after an error or Shutdown().
  Status WritePlaintext(std::span<const uint8_t> data);

  // Sends close_notify; after it WritePlaintext fails. Idempotent.
  Status Shutdown();

  // Decrypted application bytes not yet consumed.
  std::span<const uint8_t> plaintext() const;
  void ConsumePlaintext(size_t n);

  // Bytes to write to the socket, not yet consumed.
  std::span<const uint8_t> ciphertext() const;
  void ConsumeCiphertext(size_t n);
  // Moves the unconsumed ciphertext out (no copy when nothing was consumed).
  std::vector<uint8_t> TakeCiphertext();

  bool started() const { return started_; }
  bool handshake_done() const { return handshake_done_; }
  // The peer sent close_notify: no more plaintext will come.
  bool peer_closed() const { return peer_closed_; }
  const Status& status() const { return status_; }
  const TlsStats& stats() const { return stats_; }
  // "TLSv1.3 TLS_AES_128_GCM_SHA256 psk" once the handshake is done.
  std::string Description() const;

 private:
  Status Drive();
  Status FlushPending();
  Status Fail(int ssl_result, std::string_view operation);

  std::shared_ptr<const TlsContext> context_;
  std::string peer_;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  // Decrypted bytes: [in_plain_pos_, in_plain_len_) of a buffer grown
  // without zero-filling (SSL_read writes into it directly).
  std::unique_ptr<uint8_t[]> in_plain_;
  size_t in_plain_cap_ = 0;
  size_t in_plain_len_ = 0;
  size_t in_plain_pos_ = 0;
  std::vector<uint8_t> out_cipher_;  // appended to by OpenSSL's write BIO
  size_t out_cipher_pos_ = 0;
  std::vector<uint8_t> pending_plain_;  // written before the handshake ended
  bool started_ = false;
  bool handshake_done_ = false;
  bool peer_closed_ = false;
  bool shut_down_ = false;
  Status status_;
  TlsStats stats_;
};

}  // namespace lifeboat::syncproto

#endif  // LIFEBOAT_SYNCPROTO_TLS_CHANNEL_H_
