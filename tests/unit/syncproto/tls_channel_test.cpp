#include "syncproto/tls_channel.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <random>
#include <string>

#include "tests/unit/syncproto/test_util.h"

namespace lifeboat::syncproto {
namespace {

using testing::TempDir;

// ---- Test PKI, generated per run with the OpenSSL API (nothing committed) ----

struct KeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct CertFree {
  void operator()(X509* p) const { X509_free(p); }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyFree>;
using CertPtr = std::unique_ptr<X509, CertFree>;

KeyPtr NewKey() { return KeyPtr(EVP_EC_gen("P-256")); }

void AddExt(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  REQUIRE(ext != nullptr);
  REQUIRE(X509_add_ext(cert, ext, -1) == 1);
  X509_EXTENSION_free(ext);
}

// A certificate for `key` named `cn`, signed by issuer/issuer_key (self-signed
// when issuer is null).
CertPtr MakeCert(EVP_PKEY* key, const std::string& cn, X509* issuer, EVP_PKEY* issuer_key,
                 bool is_ca) {
  static long serial = 1;
  CertPtr cert(X509_new());
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), serial++);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600L * 24);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509* signer = issuer ? issuer : cert.get();
  X509_set_issuer_name(cert.get(), X509_get_subject_name(signer));
  AddExt(cert.get(), signer, NID_basic_constraints, is_ca ? "critical,CA:TRUE" : "CA:FALSE");
  AddExt(cert.get(), signer, NID_key_usage,
         is_ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
  AddExt(cert.get(), signer, NID_subject_key_identifier, "hash");
  if (issuer) AddExt(cert.get(), signer, NID_authority_key_identifier, "keyid:always");
  REQUIRE(X509_sign(cert.get(), issuer_key ? issuer_key : key, EVP_sha256()) > 0);
  return cert;
}

void WritePem(const std::string& path, X509* cert) {
  FILE* f = std::fopen(path.c_str(), "w");
  REQUIRE(f != nullptr);
  REQUIRE(PEM_write_X509(f, cert) == 1);
  std::fclose(f);
}

void WritePem(const std::string& path, EVP_PKEY* key) {
  FILE* f = std::fopen(path.c_str(), "w");
  REQUIRE(f != nullptr);
  REQUIRE(PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr) == 1);
  std::fclose(f);
}

// A CA and leaf certificates it signs, as PEM files in a temp dir.
class TestPki {
 public:
  explicit TestPki(const std::string& dir, const std::string& name) : dir_(dir), name_(name) {
    ca_key_ = NewKey();
    ca_ = MakeCert(ca_key_.get(), name + " CA", nullptr, nullptr, true);
    WritePem(ca_file(), ca_.get());
  }
  std::string ca_file() const { return dir_ + "/" + name_ + "-ca.pem"; }

  // Issues a leaf named `node`; returns a kCa TlsConfig using it.
  TlsConfig Issue(const std::string& node) {
    KeyPtr key = NewKey();
    CertPtr cert = MakeCert(key.get(), node, ca_.get(), ca_key_.get(), false);
    TlsConfig c;
    c.mode = TlsMode::kCa;
    c.ca_file = ca_file();
    c.cert_file = dir_ + "/" + node + ".crt";
    c.key_file = dir_ + "/" + node + ".key";
    WritePem(c.cert_file, cert.get());
    WritePem(c.key_file, key.get());
    return c;
  }

 private:
  std::string dir_, name_;
  KeyPtr ca_key_;
  CertPtr ca_;
};

TlsConfig Psk(const std::string& key) {
  TlsConfig c;
  c.mode = TlsMode::kPsk;
  c.cluster_key = key;
  return c;
}

std::shared_ptr<const TlsContext> Ctx(TlsRole role, const TlsConfig& c) {
  auto r = TlsContext::Create(role, c);
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  return *r;
}

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// Moves ciphertext between the two channels (in pieces of at most `piece`
// bytes, to exercise partial records) until neither has anything to send or
// one fails. Collects the plaintext each side receives.
struct Pipe {
  TlsChannel* client;
  TlsChannel* server;
  std::string client_got, server_got;
  size_t piece = 1 << 20;

  void Run() {
    for (int rounds = 0; rounds < 100000; ++rounds) {
      bool moved = Move(*client, *server, server_got) | Move(*server, *client, client_got);
      if (!moved) return;
    }
    FAIL("pipe did not settle");
  }

 private:
  bool Move(TlsChannel& from, TlsChannel& to, std::string& got) {
    auto out = from.ciphertext();
    if (out.empty() || !to.status().ok()) return false;
    size_t n = std::min(out.size(), piece);
    (void)to.FeedCiphertext(out.first(n));
    from.ConsumeCiphertext(n);
    auto plain = to.plaintext();
    got.append(reinterpret_cast<const char*>(plain.data()), plain.size());
    to.ConsumePlaintext(plain.size());
    return true;
  }
};

void ExpectRoundTrip(const TlsConfig& client_cfg, const TlsConfig& server_cfg) {
  TlsChannel client(Ctx(TlsRole::kClient, client_cfg), "server-peer");
  TlsChannel server(Ctx(TlsRole::kServer, server_cfg), "client-peer");
  REQUIRE(server.Start().ok());
  REQUIRE(client.Start().ok());
  // Written before the handshake: held and sent once it completes.
  REQUIRE(client.WritePlaintext(Bytes("HELLO from puller")).ok());
  Pipe pipe{&client, &server};
  pipe.Run();
  REQUIRE(client.status().ok());
  REQUIRE(server.status().ok());
  REQUIRE(client.handshake_done());
  REQUIRE(server.handshake_done());
  CHECK(client.Description().find("TLSv1.3") == 0);
  CHECK(pipe.server_got == "HELLO from puller");

  std::mt19937_64 rng(42);
  std::string bulk = testing::RandomBytes(rng, 5u << 20);
  std::string reply = testing::RandomBytes(rng, 3u << 20);
  REQUIRE(server.WritePlaintext(Bytes(reply)).ok());
  REQUIRE(client.WritePlaintext(Bytes(bulk)).ok());
  pipe.piece = 7001;  // not a record size: records arrive split
  pipe.server_got.clear();
  pipe.Run();
  REQUIRE(pipe.server_got.size() == bulk.size());
  CHECK(pipe.server_got == bulk);
  CHECK(pipe.client_got == reply);
  // Encrypted: the payload never appears in the ciphertext counts as-is, and
  // the overhead is small.
  CHECK(client.stats().ciphertext_out > bulk.size());
  CHECK(client.stats().ciphertext_out < bulk.size() + bulk.size() / 50 + 4096);

  REQUIRE(client.Shutdown().ok());
  pipe.Run();
  CHECK(server.peer_closed());
  CHECK(server.status().ok());
}

}  // namespace

TEST_CASE("TLS-PSK: handshake and bulk data round trip both ways") {
  ExpectRoundTrip(Psk(testing::kKey), Psk(testing::kKey));
}

TEST_CASE("TLS-PSK: both sides derive the same PSK, different keys differ") {
  CHECK(DerivePsk("a") == DerivePsk("a"));
  CHECK(DerivePsk("a") != DerivePsk("b"));
}

TEST_CASE("TLS cluster CA: mutual handshake and bulk data round trip") {
  TempDir dir;
  TestPki pki(dir.path(), "cluster");
  ExpectRoundTrip(pki.Issue("headnode0"), pki.Issue("headnode1"));
}

TEST_CASE("TLS-PSK: a peer with another cluster key is refused on both sides") {
  TlsChannel client(Ctx(TlsRole::kClient, Psk("the-wrong-cluster-key-0123456789")), "hn1");
  TlsChannel server(Ctx(TlsRole::kServer, Psk(testing::kKey)), "hn0");
  REQUIRE(server.Start().ok());
  REQUIRE(client.Start().ok());
  REQUIRE(client.WritePlaintext(Bytes("secret request")).ok());
  Pipe pipe{&client, &server};
  pipe.Run();
  INFO("server: " << server.status().ToString());
  INFO("client: " << client.status().ToString());
  CHECK(server.status().code() == Code::kPermission);
  CHECK(client.status().code() == Code::kPermission);
  CHECK(server.status().message().find("authentication failed") != std::string::npos);
  CHECK(client.status().message().find("authentication failed") != std::string::npos);
  CHECK(client.status().message().find("hn1") != std::string::npos);
  CHECK(pipe.server_got.empty());
  CHECK(pipe.client_got.empty());
  CHECK_FALSE(server.handshake_done());
}

TEST_CASE("TLS cluster CA: a certificate from another CA is refused") {
  TempDir dir;
  TestPki cluster(dir.path(), "cluster");
  TestPki rogue(dir.path(), "rogue");
  TlsConfig server_cfg = cluster.Issue("headnode0");

  SECTION("rogue client: the server refuses, serves nothing, the client learns why") {
    TlsConfig rogue_cfg = rogue.Issue("intruder");
    rogue_cfg.ca_file = cluster.ca_file();  // it trusts the cluster, the cluster does not trust it
    TlsChannel client(Ctx(TlsRole::kClient, rogue_cfg), "hn0");
    TlsChannel server(Ctx(TlsRole::kServer, server_cfg), "intruder");
    REQUIRE(server.Start().ok());
    REQUIRE(client.Start().ok());
    REQUIRE(client.WritePlaintext(Bytes("give me everything")).ok());
    Pipe pipe{&client, &server};
    pipe.Run();
    CHECK(server.status().code() == Code::kPermission);
    CHECK(pipe.server_got.empty());
    // The client completed its side of the handshake, then got the alert.
    CHECK(client.status().code() == Code::kPermission);
  }
  SECTION("rogue server: the client refuses") {
    TlsConfig client_cfg = cluster.Issue("headnode1");
    TlsConfig rogue_cfg = rogue.Issue("impostor");
    rogue_cfg.ca_file = cluster.ca_file();
    TlsChannel client(Ctx(TlsRole::kClient, client_cfg), "impostor");
    TlsChannel server(Ctx(TlsRole::kServer, rogue_cfg), "hn1");
    REQUIRE(server.Start().ok());
    REQUIRE(client.Start().ok());
    REQUIRE(client.WritePlaintext(Bytes("my manifest request")).ok());
    Pipe pipe{&client, &server};
    pipe.Run();
    CHECK(client.status().code() == Code::kPermission);
    CHECK(client.status().message().find("certificate") != std::string::npos);
    CHECK(server.status().code() == Code::kPermission);
    CHECK(pipe.server_got.empty());
  }
  SECTION("a client without a certificate is refused") {
    TlsConfig psk = Psk(testing::kKey);  // a PSK-mode client offers no certificate
    TlsChannel client(Ctx(TlsRole::kClient, psk), "hn0");
    TlsChannel server(Ctx(TlsRole::kServer, server_cfg), "nocert");
    REQUIRE(server.Start().ok());
    REQUIRE(client.Start().ok());
    Pipe pipe{&client, &server};
    pipe.Run();
    CHECK_FALSE(server.status().ok());
    CHECK_FALSE(client.status().ok());
    CHECK_FALSE(server.handshake_done());
  }
}

TEST_CASE("TLS: mismatched transports fail the handshake, never fall back") {
  TempDir dir;
  TestPki pki(dir.path(), "cluster");
  TlsChannel client(Ctx(TlsRole::kClient, pki.Issue("headnode0")), "hn1");
  TlsChannel server(Ctx(TlsRole::kServer, Psk(testing::kKey)), "hn0");
  REQUIRE(server.Start().ok());
  REQUIRE(client.Start().ok());
  Pipe pipe{&client, &server};
  pipe.Run();
  INFO("server: " << server.status().ToString());
  INFO("client: " << client.status().ToString());
  CHECK(server.status().code() == Code::kPermission);
  CHECK(client.status().code() == Code::kPermission);
}

TEST_CASE("TLS: garbage instead of a TLS record is an error, not a crash") {
  auto server_ctx = Ctx(TlsRole::kServer, Psk(testing::kKey));
  auto client_ctx = Ctx(TlsRole::kClient, Psk(testing::kKey));
  SECTION("plaintext syncproto bytes to a TLS server") {
    TlsChannel server(server_ctx, "plain-peer");
    REQUIRE(server.Start().ok());
    std::string hello("LBSP\x00\x01\x00\x00 this is not a TLS record at all...", 44);
    Status s = server.FeedCiphertext(Bytes(hello));
    CHECK(s.code() == Code::kData);
    CHECK(s.message().find("plain-peer") != std::string::npos);
    CHECK(server.plaintext().empty());
    // Further input is refused with the same error.
    CHECK(server.FeedCiphertext(Bytes("more")).code() == Code::kData);
    CHECK(server.WritePlaintext(Bytes("x")).code() == Code::kData);
  }
  SECTION("random bytes to a client after its hello") {
    std::mt19937_64 rng(7);
    for (int i = 0; i < 50; ++i) {
      TlsChannel client(client_ctx, "noise");
      REQUIRE(client.Start().ok());
      std::string noise = testing::RandomBytes(rng, 1 + rng() % 4000);
      Status s = client.FeedCiphertext(Bytes(noise));
      // Rejected now (kData; kPermission when it parses as an alert), or
      // waiting for more when it looks like the start of a record.
      CHECK((s.ok() || s.code() == Code::kData || s.code() == Code::kPermission));
      CHECK(client.plaintext().empty());
      CHECK_FALSE(client.handshake_done());
    }
  }
  SECTION("a flipped bit in an application record is detected") {
    TlsChannel client(client_ctx, "hn0");
    TlsChannel server(server_ctx, "hn1");
    REQUIRE(server.Start().ok());
    REQUIRE(client.Start().ok());
    Pipe pipe{&client, &server};
    pipe.Run();
    REQUIRE(client.handshake_done());
    REQUIRE(client.WritePlaintext(Bytes(std::string(1000, 'a'))).ok());
    std::vector<uint8_t> record(client.ciphertext().begin(), client.ciphertext().end());
    client.ConsumeCiphertext(record.size());
    record[record.size() / 2] ^= 0x10;
    Status s = server.FeedCiphertext(record);
    INFO(s.ToString());
    CHECK(s.code() == Code::kData);
    CHECK(server.plaintext().empty());
  }
}

TEST_CASE("TLS: small and large writes are preserved exactly and in order") {
  TlsChannel client(Ctx(TlsRole::kClient, Psk(testing::kKey)), "hn1");
  TlsChannel server(Ctx(TlsRole::kServer, Psk(testing::kKey)), "hn0");
  REQUIRE(server.Start().ok());
  REQUIRE(client.Start().ok());
  Pipe pipe{&client, &server};
  pipe.Run();
  REQUIRE(server.handshake_done());
  std::mt19937_64 rng(3);
  std::string expected;
  for (size_t size : {size_t{1}, size_t{0}, size_t{2}, size_t{16383}, size_t{16384}, size_t{16385},
                      size_t{100000}, size_t{1} << 21, size_t{5}}) {
    std::string chunk = testing::RandomBytes(rng, size);
    expected += chunk;
    REQUIRE(client.WritePlaintext(Bytes(chunk)).ok());
    if (size == 16384) pipe.Run();  // interleave delivery and writes
  }
  pipe.piece = 1;  // the worst case: one byte at a time for the first part
  for (int i = 0; i < 200; ++i) {
    auto out = client.ciphertext();
    REQUIRE(server.FeedCiphertext(out.first(1)).ok());
    client.ConsumeCiphertext(1);
  }
  pipe.piece = 1 << 20;
  auto plain = server.plaintext();
  pipe.server_got.append(reinterpret_cast<const char*>(plain.data()), plain.size());
  server.ConsumePlaintext(plain.size());
  pipe.Run();
  REQUIRE(pipe.server_got.size() == expected.size());
  CHECK(pipe.server_got == expected);
}

TEST_CASE("TLS: bad credential files are config errors naming the file") {
  TempDir dir;
  TlsConfig c;
  c.mode = TlsMode::kCa;
  c.ca_file = dir.Sub("missing-ca.pem");
  c.cert_file = dir.Sub("missing.crt");
  c.key_file = dir.Sub("missing.key");
  auto r = TlsContext::Create(TlsRole::kServer, c);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kConfig);
  CHECK(r.status().message().find("missing-ca.pem") != std::string::npos);

  TestPki pki(dir.path(), "cluster");
  TlsConfig a = pki.Issue("a");
  TlsConfig b = pki.Issue("b");
  a.key_file = b.key_file;  // a key that does not match the certificate
  r = TlsContext::Create(TlsRole::kClient, a);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kConfig);
  CHECK(r.status().message().find(b.key_file) != std::string::npos);

  r = TlsContext::Create(TlsRole::kClient, Psk(""));
  CHECK(r.status().code() == Code::kConfig);
}

}  // namespace lifeboat::syncproto
