// The options of the catalog store and of TLS as the config sets them: one
// place, so the agent and every command open the catalog and speak to peers
// alike.
#ifndef LIFEBOAT_AGENT_CONFIG_OPTIONS_H_
#define LIFEBOAT_AGENT_CONFIG_OPTIONS_H_

#include <memory>
#include <optional>

#include "base/status.h"
#include "catalog/store.h"
#include "conf/config.h"
#include "syncproto/tls_channel.h"

namespace lifeboat::agent {

// data_dir, retention.generations and retention.removed_grace.
catalog::StoreOptions StoreOptionsFor(const conf::Config& config, bool read_only);

// The catalog of `config` opened read-only (Env::Default, the real clock), as
// the commands read it beside a running agent.
Result<std::unique_ptr<catalog::Store>> OpenCatalogReadOnly(const conf::Config& config);

// The TLS settings of auth.transport; nullopt for "plain".
std::optional<syncproto::TlsConfig> TlsConfigFor(const conf::Config& config);

}  // namespace lifeboat::agent

#endif  // LIFEBOAT_AGENT_CONFIG_OPTIONS_H_
