#include "cli/version.h"

#include <librsync.h>
#include <openssl/crypto.h>
#include <uv.h>
#include <xxhash.h>
#include <zstd.h>

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "base/text.h"

namespace lifeboat::cli {
namespace {

std::string XxhashVersion() {
  unsigned v = XXH_versionNumber();  // MAJOR*10000 + MINOR*100 + RELEASE
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." +
         std::to_string(v % 100);
}

std::string LibrsyncVersion() {
  // rs_librsync_version reads "librsync 2.3.2"; keep the number.
  std::string v = rs_librsync_version;
  auto space = v.rfind(' ');
  return space == std::string::npos ? v : v.substr(space + 1);
}

}  // namespace

std::string VersionText(bool json) {
  std::vector<std::pair<std::string, std::string>> rows = {
      {"lifeboat", LIFEBOAT_VERSION}, {"librsync", LibrsyncVersion()},
      {"libuv", uv_version_string()}, {"zstd", ZSTD_versionString()},
      {"xxhash", XxhashVersion()},    {"openssl", OpenSSL_version(OPENSSL_VERSION_STRING)},
  };
  if (json) {
    nlohmann::ordered_json j;
    for (const auto& [k, v] : rows) j[k] = v;
    return DumpJson(j) + "\n";
  }
  std::string out;
  for (const auto& [k, v] : rows) out += k + " " + v + "\n";
  return out;
}

}  // namespace lifeboat::cli
