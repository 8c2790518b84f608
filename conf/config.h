// The Lifeboat configuration: a TOML file parsed into plain, validated structs.
//
// LoadConfig/ParseConfig either return a Config in which every field holds a
// valid value (defaults filled in, paths resolved, the cluster key loaded), or
// a kConfig Status listing every problem found, one per line, as
//   <file>:<line>:<col>: <key>: <what was expected>
// The same problems are available as structured ConfigProblem values.
// docs/configuration.md lists every key, its type and default.
//
// Syntax of values:
//   durations  one or more <digits><unit> groups, units d, h, m, s, ms, each at
//              most once and from largest to smallest: "250ms", "90s", "5m",
//              "2h30m", "7d". No sign, no spaces, no fractions, no bare numbers.
//   sizes      <digits> bytes, optionally followed by B, or by K, M, G, T
//              (powers of 1024) optionally followed by B or iB: "0", "512",
//              "512B", "64K", "10M", "1GiB". Upper-case units only. A TOML
//              integer is accepted too and means bytes.
//   addresses  host:port where host is an IPv4 literal, a bracketed IPv6
//              literal ("[::1]") or a DNS name; port 1..65535.
//   paths      directories (agent.data_dir, export.root, restore.target) must
//              be absolute; files under [auth] may be relative and are then
//              resolved against the directory of the config file.
//
// All functions are thread-safe (no shared state). They never create or
// modify files; they only read the config and the files [auth] names.
#ifndef LIFEBOAT_CONF_CONFIG_H_
#define LIFEBOAT_CONF_CONFIG_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/env.h"
#include "base/log.h"
#include "base/status.h"

namespace lifeboat::conf {

using Duration = std::chrono::milliseconds;

// A validated "host:port". `host` holds an IPv6 literal without brackets.
struct HostPort {
  std::string host;
  uint16_t port = 0;

  // "10.0.0.1:4650", "[::1]:4650", "headnode1.example.com:4650".
  std::string ToString() const;
  bool operator==(const HostPort&) const = default;
};

struct NodeConfig {
  std::string uuid;  // required; canonical lower-case 8-4-4-4-12 hex
  std::string name;  // required; [A-Za-z0-9._-]{1,64}
};

// Bounds that keep the agent kind to the headnode it runs on.
struct AgentLimits {
  uint32_t max_files_in_flight = 32;               // file requests outstanding per pull, 1..4096
  uint64_t max_memory = 256ull << 20;              // buffers for transfers in flight, >= 1M
  Duration pull_deadline = std::chrono::hours(1);  // a whole pull, then it is aborted
  Duration connect_timeout = std::chrono::seconds(10);  // TCP connect + handshake
  Duration io_timeout = std::chrono::seconds(60);       // no byte moved for this long: abort
};

struct AgentConfig {
  HostPort listen{"0.0.0.0", 4650};  // syncproto server for peers
  HostPort api{"127.0.0.1", 4651};   // control API (HTTP/JSON, /metrics); != listen
  // Absolute. Created (0700) by its users when missing; conf never touches it.
  std::string data_dir = "/var/sdcadm/svc-restore-data";
  Duration interval = std::chrono::minutes(5);  // periodic pull, >= 1s
  // Each wait between pulls is interval * (1 + u), u uniform in [-jitter, +jitter].
  // 0 <= jitter <= 0.5.
  double jitter = 0.1;
  Duration stale_after = std::chrono::minutes(30);  // > interval
  // How often the agent scrubs the catalog with repair (catalog::Store::Scrub):
  // every object re-hashed, damaged ones re-fetched. 0 = never (the default;
  // `lifeboat catalog repair` or POST /repair run one on demand).
  Duration scrub_interval = Duration(0);
  uint64_t bwlimit = 0;                      // bytes/s for the whole node, 0 = unlimited
  AgentLimits limits;                        // [agent.limits]
  log::Level log_level = log::Level::kInfo;  // "trace".."fatal"
};

// How peer connections (syncproto) are protected.
enum class Transport {
  kTlsPsk,  // TLS 1.3 with a PSK derived from the cluster key (the default)
  kTlsCa,   // TLS 1.3 with certificates of a cluster CA, both sides verified
  kPlain,   // no TLS: only the cluster-key handshake; for benchmarks
};
std::string_view TransportName(Transport t);  // "tls-psk", "tls-ca", "plain"

struct AuthConfig {
  // "tls-ca" requires ca_file, cert_file and key_file; "plain" is valid but
  // warned about (nothing on the wire is encrypted).
  Transport transport = Transport::kTlsPsk;
  std::string cluster_key_file;  // required; absolute after loading
  // The key file's content with surrounding whitespace trimmed; >= 32 bytes.
  // Never logged or printed.
  std::string cluster_key;
  // Optional bearer token for the control API: path (absolute after loading,
  // empty when not set) and its trimmed, non-empty content.
  std::string api_token_file;
  std::string api_token;
  // TLS material for transport "tls-ca" (all three required then; ignored
  // otherwise): absolute after loading, empty when not set, checked readable
  // when set.
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
};

enum class ExportProvider { kDir, kSmartos };
std::string_view ExportProviderName(ExportProvider p);  // "dir", "smartos"

struct ExportConfig {
  ExportProvider provider = ExportProvider::kSmartos;
  std::string root = "/opt/lifeboat/export";  // absolute; used by provider "dir"
  // Services offered to peers: {"*"} (every core service) or a list of
  // service names ([a-z0-9_-]+), never empty, "*" never mixed with names.
  std::vector<std::string> services{"*"};
  // Provider "smartos": the SAPI source, a `curl -i` wrapper run as
  // `<argv...> <route>` (exports::SmartosOptions::sapi_command). A string is
  // {"/bin/sh", "-c", value} as for [restore.exec]; [] turns it off (no SAPI
  // records exported). Absolute by default: the agent's SMF PATH does not
  // hold /opt/smartdc/bin.
  std::vector<std::string> sapi_command{"/opt/smartdc/bin/sdc-sapi"};
  // Provider "dir": the export root's datasets are watched for changes
  // (inotify) and a scan lists only what changed, except every this long,
  // when it lists everything (exports::ExporterOptions::full_walk_interval_ms).
  // 0: no watch, every scan lists everything.
  Duration full_walk_interval = std::chrono::hours(1);
};

struct PeerConfig {
  std::string name;  // [A-Za-z0-9._-]{1,64}; unique; != node.name
  HostPort address;  // unique; not this node's agent.listen
  // The peer's control API (its agent.api as reachable from here), for the
  // commands that ask every node (`sync-now --cluster`, restores shared
  // across nodes). Optional: port 0 when not set; never a wildcard host.
  HostPort api;
};

struct RetentionConfig {
  uint32_t generations = 3;                         // kept per instance, 1..100
  Duration removed_grace = std::chrono::hours(24);  // keep data a peer stopped exporting
  // Peers that went back (reinstalled, restored from an old backup) whose
  // no-longer-exported instances may be dropped after removed_grace: the
  // operator's confirmation. Other peers that went back keep them.
  std::vector<std::string> release_went_back;
  // Time-based windows on top of `generations` (0: off): every generation
  // younger than keep_all_for, the newest of each hour younger than
  // keep_hourly_for, of each UTC day younger than keep_daily_for.
  Duration keep_all_for{0};
  Duration keep_hourly_for{0};
  Duration keep_daily_for{0};
};

enum class RestoreBackend { kDir, kSmartos, kExec };
std::string_view RestoreBackendName(RestoreBackend b);  // "dir", "smartos", "exec"

// Operator hooks of the exec backend: one argv per step, run without a shell
// (a TOML string value is taken as {"/bin/sh", "-c", value}). The step's JSON
// goes to stdin. Empty argv = not configured. When backend is "exec",
// install_image, create_instance and restore_data are required;
// await_instance, adopt_instance, register_sapi and retire_old_records are
// optional (their steps are skipped when empty).
struct RestoreExecConfig {
  std::vector<std::string> install_image;
  std::vector<std::string> create_instance;
  std::vector<std::string> restore_data;
  std::vector<std::string> await_instance;
  std::vector<std::string> adopt_instance;
  std::vector<std::string> register_sapi;
  std::vector<std::string> retire_old_records;
};

// RFD 67's restore order; services not listed restore last, by name.
const std::vector<std::string>& DefaultServiceOrder();

struct RestoreConfig {
  RestoreBackend backend = RestoreBackend::kDir;
  std::string target = "/var/lib/lifeboat/restored";       // absolute; used by backend "dir"
  std::vector<std::string> order = DefaultServiceOrder();  // no duplicates
  // How long the smartos backend waits for a restored instance to come up
  // (zone running, setup finished) before the restore stops, resumable.
  Duration await_timeout = std::chrono::minutes(15);
  RestoreExecConfig exec;  // [restore.exec]
};

// Restore drills (restore/drill.h): the agent runs one per peer every
// `interval` (0 = never, the default), into `dir`, refusing a peer whose data
// is larger than `max_bytes` (0 = only the free-space check).
struct DrillConfig {
  Duration interval = Duration(0);
  std::string dir = "/var/tmp/lifeboat-drill";  // absolute; never inside agent.data_dir
  uint64_t max_bytes = 0;
};

// One problem (or warning) found in a config. line/column are 1-based; 0 when
// the problem has no place in the file (a missing file, a missing section).
struct ConfigProblem {
  std::string file;
  int line = 0;
  int column = 0;
  std::string key;  // dotted: "agent.interval", "peer[1].address"; may be empty
  std::string message;

  // "<file>:<line>:<col>: <key>: <message>", dropping the parts that are unset.
  std::string ToString() const;
  bool operator==(const ConfigProblem&) const = default;
};

struct Config {
  NodeConfig node;
  AgentConfig agent;
  AuthConfig auth;
  ExportConfig export_;
  std::vector<PeerConfig> peers;  // may be empty (a single node; see warnings)
  RetentionConfig retention;
  RestoreConfig restore;
  DrillConfig drill;
  std::string source_path;  // the file (or source name) this came from
  // Things that are valid but probably not meant: no peers, an insecure key
  // file mode, the published example key, transport "plain". Callers log or
  // print them. (A control API beyond loopback without a token is an error.)
  std::vector<ConfigProblem> warnings;
};

// Reads and validates the config at `path` through `env` (Env::Default() when
// null). On failure returns a kConfig Status listing every problem and, when
// `problems` is not null, stores them there too (cleared first).
Result<Config> LoadConfig(const std::string& path, std::vector<ConfigProblem>* problems = nullptr,
                          Env* env = nullptr);

// The same on text already in memory. `source_name` names the text in
// problems and is the base for relative [auth] paths (its directory).
Result<Config> ParseConfig(std::string_view text, std::string source_name,
                           std::vector<ConfigProblem>* problems = nullptr, Env* env = nullptr);

// Strict value parsers (syntax at the top of this file). Errors are kConfig
// statuses whose message says what was expected.
Result<Duration> ParseDuration(std::string_view text);
Result<uint64_t> ParseSize(std::string_view text);
Result<HostPort> ParseHostPort(std::string_view text);

// Inverse of ParseDuration: "2h30m", "250ms", "0s".
std::string FormatDuration(Duration d);
// Inverse of ParseSize: "10M" when a whole multiple, else plain bytes "1000".
std::string FormatSize(uint64_t bytes);

// The published key of packaging/cluster.key (an example, not a secret);
// LoadConfig warns when the cluster key equals it.
inline constexpr std::string_view kExampleClusterKey =
    "0000000000000000example-key-do-not-use0000000000000000";

}  // namespace lifeboat::conf

#endif  // LIFEBOAT_CONF_CONFIG_H_
