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
  PerPeer(&out, m, "lifeboat_instance_incomplete", "gauge",
          "Instances held of the peer whose exporter skipped paths of them (incomplete copies).",
          [](const PeerMetrics& p) { return static_cast<double>(p.instances_incomplete); });

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

namespace {

double NumberAt(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) return 0;
  if (it->is_boolean()) return it->get<bool>() ? 1 : 0;
  return it->is_number() ? it->get<double>() : 0;
}

}  // namespace

std::string RenderReadinessMetrics(const nlohmann::json& r) {
  std::string out;
  if (!r.is_object() || !r.contains("peers") || !r["peers"].is_array()) return out;
  const nlohmann::json& peers = r["peers"];
  auto family = [&](std::string_view name, std::string_view help, auto value, auto has) {
    Family(&out, name, "gauge", help);
    for (const auto& p : peers) {
      if (p.is_object() && has(p)) Sample(&out, name, p.value("peer", ""), value(p));
    }
  };
  auto always = [](const nlohmann::json&) { return true; };
  auto field = [](const char* key) {
    return [key](const nlohmann::json& p) { return NumberAt(p, key); };
  };
  family("lifeboat_readiness_ready", "1 when the peer could be rebuilt from this node now.",
         field("ready"), always);
  family("lifeboat_readiness_instances", "Instances held of the peer.", field("instances"),
         always);
  family("lifeboat_readiness_restorable_instances",
         "Instances of the peer with a readable copy and a complete image chain.",
         field("restorable"), always);
  family("lifeboat_readiness_rpo_seconds", "Age of the freshest copy of the peer in the cluster.",
         field("rpo_seconds"),
         [](const nlohmann::json& p) { return p.contains("rpo_seconds") && p["rpo_seconds"].is_number(); });
  family("lifeboat_readiness_rto_seconds", "Estimated time to restore the peer's instances.",
         field("rto_seconds"), always);
  family("lifeboat_readiness_data_bytes", "Bytes a restore of the peer writes.",
         field("data_bytes"), always);
  Family(&out, "lifeboat_readiness_blockers", "gauge",
         "Blockers of a restore of the peer, by kind (docs/operator-guide.md).");
  const nlohmann::json kinds = r.value("blocker_kinds", nlohmann::json::array());
  for (const auto& p : peers) {
    if (!p.is_object() || !kinds.is_array()) continue;
    for (const auto& k : kinds) {
      if (!k.is_string()) continue;
      double n = 0;
      for (const auto& b : p.value("blockers", nlohmann::json::array())) {
        n += b.is_object() && b.value("kind", "") == k.get<std::string>();
      }
      out += "lifeboat_readiness_blockers{peer=\"" + EscapeLabelValue(p.value("peer", "")) +
             "\",kind=\"" + EscapeLabelValue(k.get<std::string>()) + "\"} " + Number(n) + "\n";
    }
  }
  auto drilled = [](const nlohmann::json& p) {
    return p.contains("last_drill") && p["last_drill"].is_object();
  };
  auto drill = [](const char* key) {
    return [key](const nlohmann::json& p) { return NumberAt(p["last_drill"], key); };
  };
  family("lifeboat_drill_last_success", "1 when the peer's last restore drill passed.",
         drill("ok"), drilled);
  family("lifeboat_drill_last_timestamp_seconds", "When the peer's last restore drill started.",
         drill("at_unix_seconds"), drilled);
  family("lifeboat_drill_last_duration_seconds", "How long the peer's last restore drill took.",
         drill("duration_seconds"), drilled);
  family("lifeboat_drill_last_throughput_bytes_per_second",
         "Bytes per second of the peer's last restore drill.",
         drill("throughput_bytes_per_second"), drilled);
  return out;
}

}  // namespace lifeboat::agent
