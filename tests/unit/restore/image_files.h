// files[0] of an image manifest for test images: what `imgadm install -m -f`
// checks (size, sha1, compression; smartos-live src/img/lib/imgadm.js), so
// the fake imgadm of tests/data/fake-smartos-restore accepts the image.
#pragma once

#include <openssl/sha.h>

#include <string>

#include <nlohmann/json.hpp>

#include "base/digest.h"

namespace lifeboat::restore::testing {

inline nlohmann::json ImageFiles(const std::string& content) {
  unsigned char md[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(content.data()), content.size(), md);
  return nlohmann::json::array({{{"sha1", HexEncode(std::span<const uint8_t>(md, sizeof(md)))},
                                 {"size", content.size()},
                                 {"compression", "none"}}});
}

}  // namespace lifeboat::restore::testing
