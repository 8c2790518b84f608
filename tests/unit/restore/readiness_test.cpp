// AssessReadiness is pure: facts in, per-peer verdicts out. Each case is one
// thing an operator would ask of `lifeboat readiness`.
#include "restore/readiness.h"

#include <catch2/catch.hpp>

namespace lifeboat::restore {
namespace {

constexpr int64_t kNow = 1'800'000'000'000;
constexpr int64_t kMin = 60'000;

catalog::PeerState Held(const std::string& name, uint64_t gen, int64_t pulled_ms) {
  catalog::PeerState p;
  p.name = name;
  p.generation = gen;
  p.last_pull_ms = pulled_ms;
  return p;
}

InstanceFacts Instance(const std::string& peer, const std::string& alias,
                       const std::string& service, uint64_t size) {
  InstanceFacts f;
  f.record.uuid = alias + "-uuid";
  f.record.alias = alias;
  f.record.service = service;
  f.record.peer = peer;
  f.record.size = size;
  f.readable = true;
  f.sapi_record = true;
  f.chain = {{"root-image", 1000}, {service + "-image", 100}};
  return f;
}

// Two peers: B held fresh by this node (A) with two instances, C never pulled.
ReadinessInput Base() {
  ReadinessInput in;
  in.now_ms = kNow;
  in.stale_after_ms = 30 * kMin;
  in.node = "A";
  in.peers = {"B", "C"};
  in.peer_states = {Held("B", 7, kNow - 2 * kMin)};
  in.instances = {Instance("B", "imgapi0", "imgapi", 5000), Instance("B", "vmapi0", "vmapi", 7000)};
  return in;
}

const PeerReadiness& Peer(const ReadinessReport& r, const std::string& name) {
  for (const auto& p : r.peers) {
    if (p.peer == name) return p;
  }
  FAIL("no peer " << name);
  return r.peers.front();
}

std::vector<std::string> Kinds(const PeerReadiness& p) {
  std::vector<std::string> k;
  for (const auto& b : p.blockers) k.push_back(b.kind);
  return k;
}

TEST_CASE("a freshly held peer is ready and one never pulled is blocked", "[readiness]") {
  ReadinessReport r = AssessReadiness(Base());
  const PeerReadiness& b = Peer(r, "B");
  CHECK(b.ready());
  CHECK(b.instances == 2);
  CHECK(b.restorable == 2);
  CHECK(b.images_complete == 2);
  CHECK(b.sapi_records == 2);
  CHECK(b.freshest_node == "A");
  CHECK(b.freshest_generation == 7);
  REQUIRE(b.rpo_ms);
  CHECK(*b.rpo_ms == 2 * kMin);
  // Data of both instances plus each image once (the root is shared).
  CHECK(b.data_bytes == 5000 + 7000 + 1000 + 100 + 100);
  CHECK(Kinds(Peer(r, "C")) == std::vector<std::string>{"never_pulled"});
  CHECK_FALSE(r.ready());
  // Peers come out in configuration order.
  REQUIRE(r.peers.size() == 2);
  CHECK(r.peers[0].peer == "B");
}

TEST_CASE("stale data blocks, unless another node holds a fresh copy", "[readiness]") {
  ReadinessInput in = Base();
  in.peer_states = {Held("B", 7, kNow - 45 * kMin)};
  const PeerReadiness b = Peer(AssessReadiness(in), "B");
  CHECK(Kinds(b) == std::vector<std::string>{"stale"});
  CHECK_THAT(b.blockers[0].message, Catch::Contains("45m00s old, more than stale_after 30m00s"));

  in.cluster_copies["B"] = {PeerCopy{"C", true, "", 8, kNow - 1 * kMin},
                            PeerCopy{"D", false, "connection refused", 0, 0}};
  const PeerReadiness fresh = Peer(AssessReadiness(in), "B");
  CHECK(fresh.ready());
  CHECK(fresh.freshest_node == "C");
  CHECK(fresh.freshest_generation == 8);
  CHECK(*fresh.rpo_ms == 1 * kMin);
  REQUIRE(fresh.notes.size() == 1);
  CHECK_THAT(fresh.notes[0], Catch::Contains("--from-freshest"));
}

TEST_CASE("an equal generation elsewhere does not displace this node's copy", "[readiness]") {
  ReadinessInput in = Base();
  in.cluster_copies["B"] = {PeerCopy{"C", true, "", 7, kNow}};
  CHECK(Peer(AssessReadiness(in), "B").freshest_node == "A");
}

TEST_CASE("a clock set back makes the age unknown and never negative or fresh", "[readiness]") {
  ReadinessInput in = Base();
  in.now_ms = kNow - 24 * 60 * kMin;  // the clock went back a day after the pull
  in.peer_states = {Held("B", 7, kNow)};
  const PeerReadiness b = Peer(AssessReadiness(in), "B");
  CHECK_FALSE(b.rpo_ms);
  CHECK(Kinds(b) == std::vector<std::string>{"clock_changed"});
}

TEST_CASE("a missing image or an unreadable copy blocks that instance", "[readiness]") {
  ReadinessInput in = Base();
  in.instances[0].missing_image = "image root-image is not held";
  in.instances[0].chain.clear();
  in.instances[1].readable = false;
  in.instances[1].read_error = "lifeboat-generation.json: missing";
  const PeerReadiness b = Peer(AssessReadiness(in), "B");
  CHECK(b.restorable == 0);
  CHECK(b.images_complete == 1);
  CHECK(Kinds(b) == std::vector<std::string>{"missing_image", "incomplete_copy"});
  CHECK_THAT(b.blockers[0].message, Catch::StartsWith("imgapi0: "));
  CHECK_THAT(b.blockers[1].message, Catch::StartsWith("vmapi0: "));
}

TEST_CASE("HA services are noted and not blockers and missing SAPI records are counted", "[readiness]") {
  ReadinessInput in = Base();
  in.instances.push_back(Instance("B", "manatee0", "manatee", 10));
  in.instances.back().sapi_record = false;
  const PeerReadiness b = Peer(AssessReadiness(in), "B");
  CHECK(b.ready());
  CHECK(b.ha_instances == 1);
  CHECK(b.sapi_records == 2);
  REQUIRE(b.notes.size() == 1);
  CHECK_THAT(b.notes[0], Catch::Contains("manatee0"));
}

TEST_CASE("deposed instances block their own peer only", "[readiness]") {
  ReadinessInput in = Base();
  in.peers = {"B", "C"};
  in.peer_states.push_back(Held("C", 3, kNow));
  DeposedInstance d;
  d.old = in.instances[0].record;
  in.deposed = {d};
  ReadinessReport r = AssessReadiness(in);
  CHECK(Kinds(Peer(r, "B")) == std::vector<std::string>{"deposed"});
  CHECK(Peer(r, "C").ready());
}

TEST_CASE("the RTO comes from the last good drill or else an assumed rate", "[readiness]") {
  ReadinessInput in = Base();
  in.per_instance_overhead_ms = 60'000;
  const PeerReadiness est = Peer(AssessReadiness(in), "B");
  CHECK(est.rto_basis == "estimate");
  const double bytes = 5000 + 7000 + 1200;
  CHECK(est.rto_ms ==
        static_cast<int64_t>(std::ceil(bytes * 1000 / kAssumedThroughputBps)) + 2 * 60'000);

  DrillRecord d;
  d.peer = "B";
  d.ok = true;
  d.wall_ms = 2000;
  d.bytes = 1'000'000;  // 500 kB/s
  in.drills["B"] = d;
  const PeerReadiness drilled = Peer(AssessReadiness(in), "B");
  CHECK(drilled.rto_basis == "drill");
  CHECK(drilled.rto_ms == static_cast<int64_t>(std::ceil(bytes * 1000 / 500'000.0)) + 2 * 60'000);
  CHECK(drilled.ready());

  in.drills["B"].ok = false;
  in.drills["B"].error = "restored vmapi0 differs";
  const PeerReadiness failed = Peer(AssessReadiness(in), "B");
  CHECK(failed.rto_basis == "estimate");
  CHECK(Kinds(failed) == std::vector<std::string>{"drill_failed"});
}

TEST_CASE("a failed verify blocks every peer that has instances", "[readiness]") {
  ReadinessInput in = Base();
  in.peer_states.push_back(Held("C", 3, kNow));  // C pulled, holds nothing
  VerifyRecord v;
  v.ok = false;
  v.problems = 2;
  v.first_problem = "/data/instances/x/1/f: digest mismatch";
  in.verify = v;
  ReadinessReport r = AssessReadiness(in);
  CHECK(Kinds(Peer(r, "B")) == std::vector<std::string>{"verify_failed"});
  CHECK_THAT(Peer(r, "B").blockers[0].message, Catch::Contains("2 problems"));
  CHECK(Peer(r, "C").ready());
}

TEST_CASE("the JSON document carries every field in seconds and bytes", "[readiness]") {
  ReadinessInput in = Base();
  ReadinessReport r = AssessReadiness(in);
  nlohmann::json j = r.ToJson();
  CHECK(j["ready"] == false);
  CHECK(j["blocker_kinds"].size() == BlockerKinds().size());
  const auto& b = j["peers"][0];
  CHECK(b["peer"] == "B");
  CHECK(b["rpo_seconds"] == 120);
  CHECK(b["freshest"]["node"] == "A");
  CHECK(b["last_drill"].is_null());
  CHECK(j["peers"][1]["rpo_seconds"].is_null());
  CHECK(j["peers"][1]["blockers"][0]["kind"] == "never_pulled");
}

}  // namespace
}  // namespace lifeboat::restore
