#include "syncproto/tls_channel.h"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cstring>
#include <limits>

namespace lifeboat::syncproto {
namespace {

struct SslCtxFree {
  void operator()(SSL_CTX* p) const { SSL_CTX_free(p); }
};
struct SslFree {
  void operator()(SSL* p) const { SSL_free(p); }
};
struct KdfFree {
  void operator()(EVP_KDF* p) const { EVP_KDF_free(p); }
};
struct KdfCtxFree {
  void operator()(EVP_KDF_CTX* p) const { EVP_KDF_CTX_free(p); }
};
struct SessionFree {
  void operator()(SSL_SESSION* p) const { SSL_SESSION_free(p); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;
using SslPtr = std::unique_ptr<SSL, SslFree>;

constexpr std::string_view kPskSalt = "lifeboat-tls-psk-v1";
constexpr std::string_view kPskInfo = "lifeboat tls13 external psk";
// TLS_AES_128_GCM_SHA256: the PSK is bound to a SHA-256 suite.
constexpr unsigned char kPskCipherId[2] = {0x13, 0x01};
constexpr const char* kPskSuites = "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256";
constexpr const char* kCaSuites =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
constexpr size_t kReadChunk = 16 << 10;
constexpr size_t kWriteChunk = 1 << 20;

// Everything on this thread's OpenSSL error queue, "; "-joined, queue emptied.
std::string DrainErrors(std::vector<int>* reasons = nullptr) {
  std::string text;
  while (unsigned long e = ERR_get_error()) {
    if (reasons) reasons->push_back(ERR_GET_REASON(e));
    const char* reason = ERR_reason_error_string(e);
    if (!text.empty()) text += "; ";
    text += reason ? reason : ("error " + std::to_string(e));
  }
  return text.empty() ? "unknown OpenSSL error" : text;
}

Status ConfigFileError(std::string_view what, const std::string& path) {
  return ConfigError("TLS: cannot load " + std::string(what) + " " + path + ": " + DrainErrors());
}

// A fresh TLS 1.3 session carrying the external PSK; the caller hands it to
// OpenSSL, which takes ownership.
SSL_SESSION* NewPskSession(SSL* ssl, const std::array<uint8_t, 32>& psk) {
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, kPskCipherId);
  if (cipher == nullptr) return nullptr;
  std::unique_ptr<SSL_SESSION, SessionFree> sess(SSL_SESSION_new());
  if (!sess || !SSL_SESSION_set1_master_key(sess.get(), psk.data(), psk.size()) ||
      !SSL_SESSION_set_cipher(sess.get(), cipher) ||
      !SSL_SESSION_set_protocol_version(sess.get(), TLS1_3_VERSION)) {
    return nullptr;
  }
  return sess.release();
}

bool IsAuthenticationReason(int reason) {
  switch (reason) {
    case SSL_R_BINDER_DOES_NOT_VERIFY:
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
    case SSL_R_NO_SHARED_CIPHER:
    case SSL_R_TLSV1_ALERT_DECRYPT_ERROR:
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
    case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
    // A PSK server facing a client that offered no (matching) PSK has no
    // certificate to fall back to.
    case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
      return true;
    default:
      return false;
  }
}

}  // namespace

std::array<uint8_t, 32> DerivePsk(std::string_view cluster_key) {
  std::array<uint8_t, 32> out{};
  std::unique_ptr<EVP_KDF, KdfFree> kdf(EVP_KDF_fetch(nullptr, "HKDF", nullptr));
  std::unique_ptr<EVP_KDF_CTX, KdfCtxFree> ctx(kdf ? EVP_KDF_CTX_new(kdf.get()) : nullptr);
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<char*>(cluster_key.data()),
                                        cluster_key.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, const_cast<char*>(kPskSalt.data()),
                                        kPskSalt.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<char*>(kPskInfo.data()),
                                        kPskInfo.size()),
      OSSL_PARAM_construct_end()};
  if (!ctx || EVP_KDF_derive(ctx.get(), out.data(), out.size(), params) != 1) {
    // HKDF-SHA256 is part of every OpenSSL 3 default provider; without it no
    // TLS would work either.
    DrainErrors();
    std::abort();
  }
  return out;
}

// ---- TlsContext ---------------------------------------------------------------

struct TlsContext::Impl {
  SslCtxPtr ctx;
  std::array<uint8_t, 32> psk{};
};

TlsContext::TlsContext(TlsRole role, TlsMode mode, std::unique_ptr<Impl> impl)
    : role_(role), mode_(mode), impl_(std::move(impl)) {}

TlsContext::~TlsContext() = default;

namespace {

TlsContext::Impl* ImplOf(SSL* ssl) {
  return static_cast<TlsContext::Impl*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
}

int UsePskSession(SSL* ssl, const EVP_MD* md, const unsigned char** id, size_t* idlen,
                  SSL_SESSION** sess) {
  *sess = nullptr;
  // On a HelloRetryRequest OpenSSL asks again with the chosen suite's hash:
  // our PSK is bound to SHA-256, offer nothing for another hash.
  if (md != nullptr && EVP_MD_get_type(md) != NID_sha256) return 1;
  SSL_SESSION* s = NewPskSession(ssl, ImplOf(ssl)->psk);
  if (s == nullptr) return 0;
  *id = reinterpret_cast<const unsigned char*>(kTlsPskIdentity.data());
  *idlen = kTlsPskIdentity.size();
  *sess = s;
  return 1;
}

int FindPskSession(SSL* ssl, const unsigned char* identity, size_t identity_len,
                   SSL_SESSION** sess) {
  *sess = nullptr;
  if (std::string_view(reinterpret_cast<const char*>(identity), identity_len) != kTlsPskIdentity) {
    return 1;  // unknown identity: no PSK, and without a certificate the handshake fails
  }
  SSL_SESSION* s = NewPskSession(ssl, ImplOf(ssl)->psk);
  if (s == nullptr) return 0;
  *sess = s;
  return 1;
}

}  // namespace

Result<std::shared_ptr<const TlsContext>> TlsContext::Create(TlsRole role,
                                                             const TlsConfig& config) {
  ERR_clear_error();
  auto impl = std::make_unique<Impl>();
  impl->ctx.reset(
      SSL_CTX_new(role == TlsRole::kClient ? TLS_client_method() : TLS_server_method()));
  SSL_CTX* ctx = impl->ctx.get();
  if (ctx == nullptr) return InternalError("TLS: SSL_CTX_new failed: " + DrainErrors());
  SSL_CTX_set_app_data(ctx, impl.get());
  if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
      !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION)) {
    return InternalError("TLS: cannot require TLS 1.3: " + DrainErrors());
  }
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);

  if (config.mode == TlsMode::kPsk) {
    if (config.cluster_key.empty()) return ConfigError("TLS-PSK: the cluster key is empty");
    impl->psk = DerivePsk(config.cluster_key);
    if (!SSL_CTX_set_ciphersuites(ctx, kPskSuites)) {
      return InternalError("TLS: cannot set cipher suites: " + DrainErrors());
    }
    if (role == TlsRole::kClient) {
      SSL_CTX_set_psk_use_session_callback(ctx, UsePskSession);
      // No CA is loaded: a server that answers with a certificate instead of
      // the PSK fails verification.
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    } else {
      SSL_CTX_set_psk_find_session_callback(ctx, FindPskSession);
      SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
    }
  } else {
    if (config.ca_file.empty() || config.cert_file.empty() || config.key_file.empty()) {
      return ConfigError("TLS with a cluster CA needs ca_file, cert_file and key_file");
    }
    if (!SSL_CTX_set_ciphersuites(ctx, kCaSuites)) {
      return InternalError("TLS: cannot set cipher suites: " + DrainErrors());
    }
    if (SSL_CTX_load_verify_locations(ctx, config.ca_file.c_str(), nullptr) != 1) {
      return ConfigFileError("CA file", config.ca_file);
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, config.cert_file.c_str()) != 1) {
      return ConfigFileError("certificate file", config.cert_file);
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, config.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      return ConfigFileError("key file", config.key_file);
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
      return ConfigError("TLS: key file " + config.key_file + " does not match certificate " +
                         config.cert_file + ": " + DrainErrors());
    }
    if (role == TlsRole::kServer) {
      STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(config.ca_file.c_str());
      if (names != nullptr) SSL_CTX_set_client_CA_list(ctx, names);
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    } else {
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    }
  }
  ERR_clear_error();
  return std::shared_ptr<const TlsContext>(new TlsContext(role, config.mode, std::move(impl)));
}

// ---- TlsChannel ---------------------------------------------------------------

namespace {

// What the channel's BIOs read from and write to.
struct BioState {
  std::span<const uint8_t> in;  // the ciphertext being fed (borrowed)
  std::vector<uint8_t> carry;   // fed ciphertext OpenSSL did not read yet
  size_t carry_pos = 0;
  std::vector<uint8_t>* out = nullptr;  // the channel's out_cipher_
  size_t* out_pos = nullptr;
  uint64_t* out_count = nullptr;  // stats_.ciphertext_out
};

// A BIO over the channel's own buffers instead of two memory BIOs: reading
// takes the fed span directly, writing appends to the ciphertext buffer, so
// no byte is copied into and out of a BIO.
int ChannelBioRead(BIO* b, char* buf, size_t len, size_t* done) {
  auto* impl = static_cast<BioState*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  size_t n = 0;
  if (impl->carry_pos < impl->carry.size()) {
    n = std::min(len, impl->carry.size() - impl->carry_pos);
    std::memcpy(buf, impl->carry.data() + impl->carry_pos, n);
    impl->carry_pos += n;
    if (impl->carry_pos == impl->carry.size()) {
      impl->carry.clear();
      impl->carry_pos = 0;
    }
  } else if (!impl->in.empty()) {
    n = std::min(len, impl->in.size());
    std::memcpy(buf, impl->in.data(), n);
    impl->in = impl->in.subspan(n);
  }
  *done = n;
  if (n == 0) {
    BIO_set_retry_read(b);  // no data yet, not end of file
    return 0;
  }
  return 1;
}

int ChannelBioWrite(BIO* b, const char* buf, size_t len, size_t* done) {
  auto* impl = static_cast<BioState*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  std::vector<uint8_t>& out = *impl->out;
  size_t& pos = *impl->out_pos;
  if (pos > 0 && pos >= out.size() / 2) {
    out.erase(out.begin(), out.begin() + static_cast<long>(pos));
    pos = 0;
  }
  out.insert(out.end(), reinterpret_cast<const uint8_t*>(buf),
             reinterpret_cast<const uint8_t*>(buf) + len);
  *impl->out_count += len;
  *done = len;
  return 1;
}

long ChannelBioCtrl(BIO* /*b*/, int cmd, long /*num*/, void* /*ptr*/) {
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

int ChannelBioCreate(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}

const BIO_METHOD* ChannelBioMethod() {
  static const BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "lifeboat-tls");
    if (m == nullptr) return static_cast<BIO_METHOD*>(nullptr);
    BIO_meth_set_read_ex(m, ChannelBioRead);
    BIO_meth_set_write_ex(m, ChannelBioWrite);
    BIO_meth_set_ctrl(m, ChannelBioCtrl);
    BIO_meth_set_create(m, ChannelBioCreate);
    return m;
  }();
  return method;
}

}  // namespace

struct TlsChannel::Impl {
  SslPtr ssl;
  BIO* rbio = nullptr;  // owned by ssl: reads bio.in, after bio.carry
  BIO* wbio = nullptr;  // owned by ssl: appends to bio.out
  BioState bio;
};

TlsChannel::TlsChannel(std::shared_ptr<const TlsContext> context, std::string peer)
    : context_(std::move(context)), peer_(std::move(peer)), impl_(std::make_unique<Impl>()) {
  ERR_clear_error();
  impl_->bio.out = &out_cipher_;
  impl_->bio.out_pos = &out_cipher_pos_;
  impl_->bio.out_count = &stats_.ciphertext_out;
  impl_->ssl.reset(SSL_new(context_->impl_->ctx.get()));
  const BIO_METHOD* method = ChannelBioMethod();
  if (method != nullptr) {
    impl_->rbio = BIO_new(method);
    impl_->wbio = BIO_new(method);
  }
  if (!impl_->ssl || !impl_->rbio || !impl_->wbio) {
    BIO_free(impl_->rbio);
    BIO_free(impl_->wbio);
    impl_->rbio = impl_->wbio = nullptr;
    status_ = InternalError("TLS with " + peer_ + ": cannot create a channel: " + DrainErrors());
    return;
  }
  BIO_set_data(impl_->rbio, &impl_->bio);
  BIO_set_data(impl_->wbio, &impl_->bio);
  SSL_set_bio(impl_->ssl.get(), impl_->rbio, impl_->wbio);
  if (context_->role() == TlsRole::kClient) {
    SSL_set_connect_state(impl_->ssl.get());
  } else {
    SSL_set_accept_state(impl_->ssl.get());
  }
}

TlsChannel::~TlsChannel() = default;

Status TlsChannel::Start() {
  if (!status_.ok()) return status_;
  if (started_) return InternalError("TLS with " + peer_ + ": Start() called twice");
  started_ = true;
  if (context_->role() == TlsRole::kServer) return Status::Ok();
  return Drive();
}

Status TlsChannel::FeedCiphertext(std::span<const uint8_t> data) {
  if (!status_.ok()) return status_;
  if (!started_) return InternalError("TLS with " + peer_ + ": fed before Start()");
  stats_.ciphertext_in += data.size();
  BioState& bio = impl_->bio;
  bio.in = data;
  Status st = Drive();
  if (!bio.in.empty()) {
    // Not read (the peer closed, or a failure): keep it, `data` is the caller's.
    if (st.ok() && !peer_closed_) bio.carry.insert(bio.carry.end(), bio.in.begin(), bio.in.end());
    bio.in = {};
  }
  return st;
}

Status TlsChannel::WritePlaintext(std::span<const uint8_t> data) {
  if (!status_.ok()) return status_;
  if (shut_down_) return InternalError("TLS with " + peer_ + ": write after shutdown");
  if (data.empty()) return Status::Ok();
  if (!handshake_done_) {
    pending_plain_.insert(pending_plain_.end(), data.begin(), data.end());
    return Status::Ok();
  }
  ERR_clear_error();
  while (!data.empty()) {
    int n = static_cast<int>(std::min(data.size(), kWriteChunk));
    int r = SSL_write(impl_->ssl.get(), data.data(), n);
    if (r <= 0) return Fail(r, "write");
    stats_.plaintext_out += static_cast<uint64_t>(r);
    data = data.subspan(static_cast<size_t>(r));
  }
  return Status::Ok();
}

Status TlsChannel::Shutdown() {
  if (!status_.ok()) return status_;
  if (shut_down_) return Status::Ok();
  shut_down_ = true;
  if (!handshake_done_) return Status::Ok();  // nothing to protect yet; the caller closes
  ERR_clear_error();
  int r = SSL_shutdown(impl_->ssl.get());
  if (r < 0) return Fail(r, "shutdown");
  return Status::Ok();
}

std::span<const uint8_t> TlsChannel::plaintext() const {
  return std::span<const uint8_t>(in_plain_.get() + in_plain_pos_, in_plain_len_ - in_plain_pos_);
}

void TlsChannel::ConsumePlaintext(size_t n) {
  in_plain_pos_ = std::min(in_plain_pos_ + n, in_plain_len_);
  if (in_plain_pos_ == in_plain_len_) in_plain_pos_ = in_plain_len_ = 0;
}

std::span<const uint8_t> TlsChannel::ciphertext() const {
  return std::span<const uint8_t>(out_cipher_).subspan(out_cipher_pos_);
}

void TlsChannel::ConsumeCiphertext(size_t n) {
  out_cipher_pos_ = std::min(out_cipher_pos_ + n, out_cipher_.size());
  if (out_cipher_pos_ == out_cipher_.size()) {
    out_cipher_.clear();
    out_cipher_pos_ = 0;
  }
}

std::vector<uint8_t> TlsChannel::TakeCiphertext() {
  std::vector<uint8_t> out;
  if (out_cipher_pos_ == 0) {
    const size_t cap = out_cipher_.capacity();
    out.swap(out_cipher_);
    out_cipher_.reserve(std::min<size_t>(cap, 8u << 20));
  } else {
    out.assign(out_cipher_.begin() + static_cast<long>(out_cipher_pos_), out_cipher_.end());
    out_cipher_.clear();
    out_cipher_pos_ = 0;
  }
  return out;
}

std::string TlsChannel::Description() const {
  if (!handshake_done_) return "TLS handshake not done";
  const SSL_CIPHER* c = SSL_get_current_cipher(impl_->ssl.get());
  return std::string(SSL_get_version(impl_->ssl.get())) + " " + (c ? SSL_CIPHER_get_name(c) : "?") +
         (context_->mode() == TlsMode::kPsk ? " psk" : " cluster-ca");
}

Status TlsChannel::Drive() {
  ERR_clear_error();
  SSL* ssl = impl_->ssl.get();
  if (!handshake_done_) {
    int r = SSL_do_handshake(ssl);
    if (r != 1) {
      int e = SSL_get_error(ssl, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return Status::Ok();
      return Fail(r, "handshake");
    }
    handshake_done_ = true;
    RETURN_IF_ERROR(FlushPending());
  }
  for (;;) {
    // Decrypt straight into the plaintext buffer (grown without zero-filling).
    if (in_plain_pos_ > 0 && in_plain_pos_ >= in_plain_len_ / 2) {
      std::memmove(in_plain_.get(), in_plain_.get() + in_plain_pos_, in_plain_len_ - in_plain_pos_);
      in_plain_len_ -= in_plain_pos_;
      in_plain_pos_ = 0;
    }
    if (in_plain_cap_ - in_plain_len_ < kReadChunk) {
      size_t cap = std::max(in_plain_cap_ * 2, in_plain_len_ + kReadChunk);
      std::unique_ptr<uint8_t[]> grown(new uint8_t[cap]);
      if (in_plain_len_ > 0) std::memcpy(grown.get(), in_plain_.get(), in_plain_len_);
      in_plain_ = std::move(grown);
      in_plain_cap_ = cap;
    }
    int r = SSL_read(ssl, in_plain_.get() + in_plain_len_, static_cast<int>(kReadChunk));
    if (r > 0) {
      in_plain_len_ += static_cast<size_t>(r);
      stats_.plaintext_in += static_cast<uint64_t>(r);
      continue;
    }
    int e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
    if (e == SSL_ERROR_ZERO_RETURN) {
      peer_closed_ = true;
      break;
    }
    return Fail(r, "read");
  }
  return Status::Ok();
}

Status TlsChannel::FlushPending() {
  if (pending_plain_.empty() || shut_down_) return Status::Ok();
  std::vector<uint8_t> pending;
  pending.swap(pending_plain_);
  return WritePlaintext(pending);
}

Status TlsChannel::Fail(int ssl_result, std::string_view operation) {
  SSL* ssl = impl_->ssl.get();
  int e = SSL_get_error(ssl, ssl_result);
  std::vector<int> reasons;
  std::string why = e == SSL_ERROR_SSL || e == SSL_ERROR_SYSCALL
                        ? DrainErrors(&reasons)
                        : "SSL error " + std::to_string(e) + " (" + DrainErrors(&reasons) + ")";
  // (A PSK session carries no verification result: only look in kCa mode.)
  long verify = context_->mode() == TlsMode::kCa ? SSL_get_verify_result(ssl) : X509_V_OK;
  if (verify != X509_V_OK) {
    why += std::string("; certificate: ") + X509_verify_cert_error_string(verify);
  }
  // (The alert that tells the peer why is in out_cipher_ already.)
  bool auth =
      verify != X509_V_OK || std::any_of(reasons.begin(), reasons.end(), IsAuthenticationReason);
  // OpenSSL answers a PSK binder that does not verify with illegal_parameter.
  if (!handshake_done_ && context_->mode() == TlsMode::kPsk &&
      std::find(reasons.begin(), reasons.end(), SSL_R_SSLV3_ALERT_ILLEGAL_PARAMETER) !=
          reasons.end()) {
    auth = true;
    why += " (the peer rejected our PSK)";
  }
  std::string where = "TLS " + std::string(operation) + " with " + peer_;
  if (auth) {
    const char* hint =
        context_->mode() == TlsMode::kPsk
            ? " (TLS-PSK: does the peer use the same cluster key and auth.transport?)"
            : " (cluster CA: is the peer's certificate signed by auth.ca_file?)";
    status_ = PermissionError(where + ": authentication failed: " + why + hint);
  } else {
    status_ = DataError(where + " failed: " + why);
  }
  return status_;
}

}  // namespace lifeboat::syncproto
