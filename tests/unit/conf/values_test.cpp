// The strict value syntaxes of the config: durations, sizes, host:port.
#include <catch2/catch.hpp>
#include <chrono>
#include <string>

#include "conf/config.h"

namespace lifeboat::conf {
namespace {

using std::chrono::milliseconds;

TEST_CASE("ParseDuration accepts unit groups from largest to smallest", "[conf]") {
  struct Case {
    const char* text;
    int64_t ms;
  };
  for (Case c : {Case{"250ms", 250},
                 {"90s", 90'000},
                 {"5m", 300'000},
                 {"1h", 3'600'000},
                 {"2h30m", 9'000'000},
                 {"1m30s500ms", 90'500},
                 {"7d", 604'800'000},
                 {"0s", 0},
                 {"1h0m", 3'600'000},
                 {"0090s", 90'000}}) {
    INFO(c.text);
    Result<Duration> d = ParseDuration(c.text);
    REQUIRE(d.ok());
    CHECK(d->count() == c.ms);
  }
}

TEST_CASE("ParseDuration rejects everything else", "[conf]") {
  for (const char* text :
       {"", "5", "0", "-1m", "+5m", "5 m", " 5m", "5m ", "1.5h", "5M", "5x", "m", "30m2h", "1m1m",
        "1h30", "5min", "99999999999999999999s", "9223372036854775807d", "106751991168d"}) {
    INFO(text);
    Result<Duration> d = ParseDuration(text);
    REQUIRE_FALSE(d.ok());
    CHECK(d.status().code() == Code::kConfig);
    CHECK_THAT(d.status().message(), Catch::Contains("is not a duration"));
  }
  // The largest duration that fits (in ms) is accepted, one more day is not.
  CHECK(ParseDuration("106751991168d").status().message().find("too large") != std::string::npos);
  CHECK(ParseDuration("106751991167d").ok());
}

TEST_CASE("FormatDuration is the inverse of ParseDuration", "[conf]") {
  for (const char* text : {"250ms", "45s", "5m", "2h30m", "1d2h3m4s5ms", "0s"}) {
    Result<Duration> d = ParseDuration(text);
    REQUIRE(d.ok());
    CHECK(FormatDuration(*d) == text);
  }
  CHECK(FormatDuration(milliseconds(90'000)) == "1m30s");
}

TEST_CASE("ParseSize accepts bytes and binary units", "[conf]") {
  struct Case {
    const char* text;
    uint64_t bytes;
  };
  for (Case c : {Case{"0", 0},
                 {"512", 512},
                 {"512B", 512},
                 {"1K", 1024},
                 {"64KB", 65536},
                 {"10M", 10ull << 20},
                 {"1G", 1ull << 30},
                 {"1GiB", 1ull << 30},
                 {"2T", 2ull << 40},
                 {"18446744073709551615", UINT64_MAX},
                 {"16777215T", 16777215ull << 40}}) {
    INFO(c.text);
    Result<uint64_t> s = ParseSize(c.text);
    REQUIRE(s.ok());
    CHECK(*s == c.bytes);
  }
}

TEST_CASE("ParseSize rejects everything else", "[conf]") {
  for (const char* text : {"", "10m", "10k", "10 M", " 10M", "-1", "+1", "1.5G", "10MB/s", "K",
                           "10KiBB", "1P", "18446744073709551616", "16777216T", "0x10"}) {
    INFO(text);
    Result<uint64_t> s = ParseSize(text);
    REQUIRE_FALSE(s.ok());
    CHECK(s.status().code() == Code::kConfig);
    CHECK_THAT(s.status().message(), Catch::Contains("is not a size"));
  }
}

TEST_CASE("FormatSize prints the largest whole unit", "[conf]") {
  CHECK(FormatSize(0) == "0");
  CHECK(FormatSize(1000) == "1000");
  CHECK(FormatSize(1024) == "1K");
  CHECK(FormatSize(256ull << 20) == "256M");
  CHECK(FormatSize(3ull << 40) == "3T");
}

TEST_CASE("ParseHostPort accepts IPv4, bracketed IPv6 and host names", "[conf]") {
  struct Case {
    const char* text;
    const char* host;
    uint16_t port;
    const char* printed;
  };
  for (Case c :
       {Case{"10.0.0.1:4650", "10.0.0.1", 4650, "10.0.0.1:4650"},
        {"0.0.0.0:1", "0.0.0.0", 1, "0.0.0.0:1"},
        {"[::1]:4650", "::1", 4650, "[::1]:4650"},
        {"[fd00::7]:65535", "fd00::7", 65535, "[fd00::7]:65535"},
        {"headnode1.example.com:4650", "headnode1.example.com", 4650, "headnode1.example.com:4650"},
        {"localhost:80", "localhost", 80, "localhost:80"}}) {
    INFO(c.text);
    Result<HostPort> hp = ParseHostPort(c.text);
    REQUIRE(hp.ok());
    CHECK(hp->host == c.host);
    CHECK(hp->port == c.port);
    CHECK(hp->ToString() == c.printed);
  }
}

TEST_CASE("ParseHostPort rejects what is not host:port", "[conf]") {
  for (const char* text : {"",
                           "10.0.0.1",
                           "10.0.0.1:",
                           "10.0.0.1:0",
                           "10.0.0.1:65536",
                           "10.0.0.1:4650x",
                           "10.0.0.1: 4650",
                           "10.0.0.1:+1",
                           "::1:4650",
                           "[::1]",
                           "[::1]4650",
                           "[::1:4650",
                           "[zz]:1",
                           "256.1.1.1:1",
                           "1.2.3:1",
                           "host_name:1",
                           ":4650",
                           "-a:1",
                           "a..b:1",
                           "a b:1"}) {
    INFO(text);
    Result<HostPort> hp = ParseHostPort(text);
    REQUIRE_FALSE(hp.ok());
    CHECK_THAT(hp.status().message(), Catch::Contains("is not a host:port address"));
  }
}

}  // namespace
}  // namespace lifeboat::conf
