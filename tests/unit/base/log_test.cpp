#include "base/log.h"

#include <catch2/catch.hpp>

#include "base/clock.h"

namespace lifeboat::log {
namespace {

TEST_CASE("bunyan lines carry the core fields and the extra ones", "[log]") {
  std::string line = FormatBunyan("lifeboat", "headnode0", 4242, 1'763'742'303'123, Level::kWarn,
                                  "pull failed", {{"peer", "headnode1"}, {"bytes", 12}});
  auto j = nlohmann::json::parse(line);
  CHECK(j["v"] == 0);
  CHECK(j["level"] == 40);
  CHECK(j["name"] == "lifeboat");
  CHECK(j["hostname"] == "headnode0");
  CHECK(j["pid"] == 4242);
  CHECK(j["time"] == "2025-11-21T16:25:03.123Z");
  CHECK(j["msg"] == "pull failed");
  CHECK(j["peer"] == "headnode1");
  CHECK(j["bytes"] == 12);
  CHECK(line.find('\n') == std::string::npos);
}

TEST_CASE("extra fields cannot override the bunyan core fields", "[log]") {
  std::string line =
      FormatBunyan("lifeboat", "h", 1, 0, Level::kInfo, "real", {{"msg", "fake"}, {"level", 60}});
  auto j = nlohmann::json::parse(line);
  CHECK(j["msg"] == "real");
  CHECK(j["level"] == 30);
}

TEST_CASE("invalid UTF-8 in a message still gives valid JSON", "[log]") {
  std::string line = FormatBunyan("lifeboat", "h", 1, 0, Level::kInfo, "bad \xff byte", nullptr);
  CHECK_NOTHROW(nlohmann::json::parse(line));
}

TEST_CASE("human lines read naturally", "[log]") {
  std::string line = FormatHuman(0, Level::kInfo, "pulled", {{"peer", "headnode1"}, {"files", 3}});
  CHECK(line == "1970-01-01T00:00:00.000Z INFO pulled files=3 peer=headnode1");
}

TEST_CASE("levels parse by name", "[log]") {
  Level l;
  REQUIRE(ParseLevel("debug", &l));
  CHECK(l == Level::kDebug);
  CHECK_FALSE(ParseLevel("loud", &l));
}

}  // namespace
}  // namespace lifeboat::log
