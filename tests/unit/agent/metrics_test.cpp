#include "agent/metrics.h"

#include <catch2/catch.hpp>

namespace lifeboat::agent {
namespace {

TEST_CASE("metrics render per-peer counters in the Prometheus text format") {
  MetricsSnapshot m;
  m.now_wall_ms = 1'700'000'100'000;
  PeerMetrics a;
  a.peer = "headnode1";
  a.pulls_total = 5;
  a.pulls_failed_total = 1;
  a.bytes_received_total = 12345;
  a.last_success_wall_ms = 1'700'000'000'000;
  a.up = true;
  PeerMetrics b;
  b.peer = "head\"node\\2";
  m.peers = {a, b};
  m.instances_held = 7;
  m.oldest_success_wall_ms = 1'700'000'000'000;
  std::string t = RenderMetrics(m);
  CHECK(t.find("# TYPE lifeboat_pulls_total counter\n") != std::string::npos);
  CHECK(t.find("lifeboat_pulls_total{peer=\"headnode1\"} 5\n") != std::string::npos);
  CHECK(t.find("lifeboat_pulls_failed_total{peer=\"headnode1\"} 1\n") != std::string::npos);
  CHECK(t.find("lifeboat_bytes_received_total{peer=\"headnode1\"} 12345\n") != std::string::npos);
  CHECK(t.find("lifeboat_last_success_timestamp_seconds{peer=\"headnode1\"} 1700000000\n") !=
        std::string::npos);
  CHECK(t.find("lifeboat_peer_up{peer=\"head\\\"node\\\\2\"} 0\n") != std::string::npos);
  CHECK(t.find("lifeboat_catalog_age_seconds 100\n") != std::string::npos);
  CHECK(t.find("lifeboat_instances_held 7\n") != std::string::npos);
  // Every sample line belongs to a declared family.
  size_t samples = 0, pos = 0;
  while ((pos = t.find('\n', pos)) != std::string::npos) {
    ++pos;
    if (pos < t.size() && t[pos] != '#') ++samples;
  }
  CHECK(samples > 10);
}

TEST_CASE("catalog age is -1 while some peer was never pulled") {
  MetricsSnapshot m;
  m.now_wall_ms = 5000;
  CHECK(RenderMetrics(m).find("lifeboat_catalog_age_seconds -1\n") != std::string::npos);
}

}  // namespace
}  // namespace lifeboat::agent
