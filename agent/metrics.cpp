#include "agent/metrics.h"

#include <cstdio>
#include <functional>

namespace lifeboat::agent {
namespace {

void Family(std::string* out, std::string_view name, std::string_view type, std::string_view help) {
  *out += "# HELP ";
  *out += name;
  *out += ' ';
  *out += help;
  *out += "\n# TYPE ";
  *out += name;
  *out += ' ';
  *out += type;
  *out += '\n';
}

std::string Number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

void Sample(std::string* out, std::string_view name, const std::string& peer, double v) {
  *out += name;
  if (!peer.empty()) {
    *out += "{peer=\"";
    *out += EscapeLabelValue(peer);
    *out += "\"}";
  }
  *out += ' ';
  *out += Number(v);
  *out += '\n';
}

void PerPeer(std::string* out, const MetricsSnapshot& m, std::string_view name,
             std::string_view type, std::string_view help,
             const std::function<double(const PeerMetrics&)>& get) {
  Family(out, name, type, help);
  for (const auto& p : m.peers) Sample(out, name, p.peer, get(p));
}

}  // namespace

std::string EscapeLabelValue(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string RenderMetrics(const MetricsSnapshot& m) {
  std::string out;
  PerPeer(&out, m, "lifeboat_pulls_total", "counter", "Pulls finished, per peer.",
          [](const PeerMetrics& p) { return static_cast<double>(p.pulls_total); });
  PerPeer(&out, m, "lifeboat_pulls_failed_total", "counter", "Pulls that failed, per peer.",
          [](const PeerMetrics& p) { return static_cast<double>(p.pulls_failed_total); });
  PerPeer(&out, m, "lifeboat_bytes_received_total", "counter",
          "Bytes received from the peer on the wire (deltas, compressed).",
          [](const PeerMetrics& p) { return static_cast<double>(p.bytes_received_total); });
  PerPeer(&out, m, "lifeboat_file_bytes_transferred_total", "counter",
          "Size of the files brought up to date from the peer.",
          [](const PeerMetrics& p) { return static_cast<double>(p.file_bytes_total); });
  PerPeer(&out, m, "lifeboat_files_transferred_total", "counter",
          "Files brought up to date from the peer.",
          [](const PeerMetrics& p) { return static_cast<double>(p.files_total); });
  PerPeer(&out, m, "lifeboat_last_success_timestamp_seconds", "gauge",
          "Unix time of the last successful pull (0 = never).",
          [](const PeerMetrics& p) { return p.last_success_wall_ms / 1000.0; });
  PerPeer(&out, m, "lifeboat_peer_generation", "gauge", "Peer export generation held.",
          [](const PeerMetrics& p) { return static_cast<double>(p.generation); });
  PerPeer(&out, m, "lifeboat_peer_up", "gauge", "1 when the last attempt reached the peer.",
          [](const PeerMetrics& p) { return p.up ? 1.0 : 0.0; });
  PerPeer(&out, m, "lifeboat_pull_in_progress", "gauge", "1 while a pull from the peer runs.",
          [](const PeerMetrics& p) { return p.pulling ? 1.0 : 0.0; });
  PerPeer(&out, m, "lifeboat_consecutive_failures", "gauge", "Failed pulls since the last success.",
          [](const PeerMetrics& p) { return static_cast<double>(p.consecutive_failures); });

  Family(&out, "lifeboat_catalog_age_seconds", "gauge",
         "Age of the oldest peer data held (-1 when a peer was never pulled).");
  double age =
      m.oldest_success_wall_ms > 0 ? (m.now_wall_ms - m.oldest_success_wall_ms) / 1000.0 : -1.0;
  Sample(&out, "lifeboat_catalog_age_seconds", "", age);
  Family(&out, "lifeboat_instances_held", "gauge", "Peer instances held in the catalog.");
  Sample(&out, "lifeboat_instances_held", "", static_cast<double>(m.instances_held));
  Family(&out, "lifeboat_export_generation", "gauge", "This node's export generation.");
  Sample(&out, "lifeboat_export_generation", "", static_cast<double>(m.export_generation));
  Family(&out, "lifeboat_served_connections_total", "counter", "Peer connections accepted.");
  Sample(&out, "lifeboat_served_connections_total", "",
         static_cast<double>(m.served_connections_total));
  Family(&out, "lifeboat_served_connections_open", "gauge", "Peer connections open now.");
  Sample(&out, "lifeboat_served_connections_open", "",
         static_cast<double>(m.served_connections_open));
  Family(&out, "lifeboat_served_auth_failures_total", "counter",
         "Peer connections refused in the handshake.");
  Sample(&out, "lifeboat_served_auth_failures_total", "",
         static_cast<double>(m.served_auth_failures_total));
  Family(&out, "lifeboat_served_bytes_total", "counter", "Bytes sent to pulling peers.");
  Sample(&out, "lifeboat_served_bytes_total", "", static_cast<double>(m.served_bytes_total));
  return out;
}

}  // namespace lifeboat::agent
