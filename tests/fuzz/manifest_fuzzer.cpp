// libFuzzer target: the manifest answer decoder (uncompressed), and a
// re-encode round trip for whatever it accepts.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "syncproto/manifest_codec.h"

using namespace lifeboat::syncproto;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto answer = DecodeManifestAnswer(std::span<const uint8_t>(data, size));
  if (answer.ok()) {
    // What the decoder accepts must survive a round trip unchanged.
    std::vector<uint8_t> again = EncodeManifestAnswer(*answer);
    auto back = DecodeManifestAnswer(again);
    if (!back.ok() || back->manifest.files != answer->manifest.files ||
        back->manifest.instances != answer->manifest.instances ||
        back->removed != answer->removed) {
      std::abort();
    }
  }
  return 0;
}
