#include "agent/config_options.h"

#include "base/clock.h"
#include "base/env.h"

namespace lifeboat::agent {

catalog::StoreOptions StoreOptionsFor(const conf::Config& config, bool read_only) {
  catalog::StoreOptions so;
  so.data_dir = config.agent.data_dir;
  so.retention.keep_last = config.retention.generations;
  so.retention.all_for_ms = config.retention.keep_all_for.count();
  so.retention.hourly_for_ms = config.retention.keep_hourly_for.count();
  so.retention.daily_for_ms = config.retention.keep_daily_for.count();
  so.removed_grace_ms = static_cast<int64_t>(config.retention.removed_grace.count());
  so.release_went_back.insert(config.retention.release_went_back.begin(),
                              config.retention.release_went_back.end());
  so.read_only = read_only;
  return so;
}

Result<std::unique_ptr<catalog::Store>> OpenCatalogReadOnly(const conf::Config& config) {
  return catalog::Store::Open(*Env::Default(), *Clock::Real(),
                              StoreOptionsFor(config, /*read_only=*/true));
}

std::optional<syncproto::TlsConfig> TlsConfigFor(const conf::Config& config) {
  if (config.auth.transport == conf::Transport::kPlain) return std::nullopt;
  syncproto::TlsConfig tc;
  tc.mode = config.auth.transport == conf::Transport::kTlsCa ? syncproto::TlsMode::kCa
                                                             : syncproto::TlsMode::kPsk;
  tc.cluster_key = config.auth.cluster_key;
  tc.ca_file = config.auth.ca_file;
  tc.cert_file = config.auth.cert_file;
  tc.key_file = config.auth.key_file;
  return tc;
}

}  // namespace lifeboat::agent
