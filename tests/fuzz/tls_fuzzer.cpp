// libFuzzer target: the TLS channel (OpenSSL behind syncproto::TlsChannel)
// fed bytes from a hostile network peer before any authentication: a server
// receiving a ClientHello, a client (after its ClientHello) receiving the
// server's flight. Must never crash, hang or yield plaintext; errors are fine.
//
// Input: byte 0 picks the role (bit 0), byte 1 where to split the rest into
// two deliveries. TLS-PSK only: in cluster-CA mode everything after the
// hellos is encrypted, so the unauthenticated surface is the same.
#include <cstddef>
#include <cstdint>
#include <memory>

#include "syncproto/tls_channel.h"

using namespace lifeboat;
using namespace lifeboat::syncproto;

namespace {

std::shared_ptr<const TlsContext> MakeContext(TlsRole role) {
  TlsConfig c;
  c.mode = TlsMode::kPsk;
  c.cluster_key = "fuzz-cluster-key-0123456789abcdef0123456789";
  auto r = TlsContext::Create(role, c);
  if (!r.ok()) __builtin_trap();
  return *r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::shared_ptr<const TlsContext> kServer = MakeContext(TlsRole::kServer);
  static const std::shared_ptr<const TlsContext> kClient = MakeContext(TlsRole::kClient);
  if (size < 2) return 0;
  bool client = data[0] & 1;
  size_t split = data[1] % (size - 1);
  std::span<const uint8_t> rest(data + 2, size - 2);

  TlsChannel channel(client ? kClient : kServer, "fuzz-peer");
  if (!channel.Start().ok()) __builtin_trap();
  channel.ConsumeCiphertext(channel.ciphertext().size());
  Status s = channel.FeedCiphertext(rest.first(split));
  if (s.ok()) s = channel.FeedCiphertext(rest.subspan(split));
  // Nobody without the key gets through: no plaintext, no completed
  // handshake on either side (both need the peer's Finished, keyed by the PSK).
  if (!channel.plaintext().empty()) __builtin_trap();
  if (channel.handshake_done()) __builtin_trap();
  if (!s.ok() && s.code() != Code::kData && s.code() != Code::kPermission) __builtin_trap();
  (void)channel.WritePlaintext(std::span<const uint8_t>(data, size > 16 ? 16 : size));
  return 0;
}
