// The agent's Prometheus metrics, rendered in the text exposition format
// (version 0.0.4) from a plain snapshot, so rendering is a pure function.
#ifndef LIFEBOAT_AGENT_METRICS_H_
#define LIFEBOAT_AGENT_METRICS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace lifeboat::agent {

struct PeerMetrics {
  std::string peer;
  uint64_t pulls_total = 0;
  uint64_t pulls_failed_total = 0;
  uint64_t bytes_received_total = 0;  // wire bytes from the peer
  uint64_t file_bytes_total = 0;      // bytes of files transferred (before delta)
  uint64_t files_total = 0;
  int64_t last_success_wall_ms = 0;  // 0 = never
  uint64_t generation = 0;           // peer generation held
  bool up = false;                   // the last attempt reached the peer
  bool pulling = false;
  int consecutive_failures = 0;
  uint64_t instances_incomplete = 0;  // held instances with warnings (the exporter skipped paths)
};

struct MetricsSnapshot {
  int64_t now_wall_ms = 0;
  std::vector<PeerMetrics> peers;
  uint64_t instances_held = 0;
  int64_t oldest_success_wall_ms = 0;  // over peers; 0 when a peer never succeeded
  uint64_t export_generation = 0;
  uint64_t served_connections_total = 0;
  uint64_t served_connections_open = 0;
  uint64_t served_auth_failures_total = 0;
  uint64_t served_bytes_total = 0;
};

// The readiness families from a readiness document (GET /readiness, shape
// in restore/readiness.h and docs/operator-guide.md), per peer:
// lifeboat_readiness_{ready,instances,restorable_instances,rpo_seconds,
// rto_seconds,data_bytes}, lifeboat_readiness_blockers{peer,kind} (one series
// per kind the document lists in "blocker_kinds", 0 when absent) and
// lifeboat_drill_last_{success,timestamp_seconds,duration_seconds,
// throughput_bytes_per_second} for peers that had a drill. A document of
// another shape renders what it can (never throws).
std::string RenderReadinessMetrics(const nlohmann::json& readiness);

// Label values are escaped (backslash, double quote, newline).
std::string RenderMetrics(const MetricsSnapshot& m);
std::string EscapeLabelValue(std::string_view v);

}  // namespace lifeboat::agent

#endif  // LIFEBOAT_AGENT_METRICS_H_
