#include "agent/status_json.h"

#include <catch2/catch.hpp>

namespace lifeboat::agent {
namespace {

catalog::InstanceRecord Record() {
  catalog::InstanceRecord r;
  r.uuid = "b2f1a9d4-7c3e-4f0a-9e57-2d1c6b8a4e10";
  r.alias = "imgapi0";
  r.service = "imgapi";
  r.peer = "headnode1";
  r.generation = 17;
  r.seq = 4;
  r.pulled_at_ms = 1'800'000'000'000;
  r.size = 102170;
  r.files = 15;
  return r;
}

TEST_CASE("instance JSON: one shape and one null convention", "[status_json]") {
  nlohmann::json j = InstanceJson(Record(), 1'800'000'090'000);
  CHECK(j["uuid"] == "b2f1a9d4-7c3e-4f0a-9e57-2d1c6b8a4e10");
  CHECK(j["age_seconds"] == 90);
  CHECK(j["pulled_at"] == "2027-01-15T08:00:00.000Z");
  CHECK(j["removed"] == false);
  CHECK(j["removed_since"].is_null());

  catalog::InstanceRecord never = Record();
  never.pulled_at_ms = 0;
  CHECK(InstanceJson(never, 1'800'000'090'000)["pulled_at"].is_null());
  CHECK(InstanceJson(never, 1'800'000'090'000)["age_seconds"].is_null());
  // A clock behind the pull gives no age rather than a negative one.
  CHECK(InstanceJson(Record(), 1'700'000'000'000)["age_seconds"].is_null());

  catalog::InstanceRecord gone = Record();
  gone.removed = true;
  gone.removed_since_ms = 1'800'000'060'000;
  CHECK(InstanceJson(gone, 1'800'000'090'000)["removed_since"] == "2027-01-15T08:01:00.000Z");
}

}  // namespace
}  // namespace lifeboat::agent
