// HttpRequestParser: the control API's socket-free request parsing.
#include <catch2/catch.hpp>
#include <string>

#include "agent/http_server.h"

namespace lifeboat::agent {
namespace {

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace

TEST_CASE("a request arriving in pieces is parsed once complete") {
  HttpRequestParser p;
  std::string req =
      "POST /sync?peer=head%20node1&service=a+b HTTP/1.1\r\nHost: x\r\nX-Thing: 1\r\n"
      "Content-Length: 4\r\n\r\nbody";
  for (size_t i = 0; i + 1 < req.size(); ++i) {
    REQUIRE(p.Feed(Bytes(req.substr(i, 1))) == HttpRequestParser::State::kNeedMore);
  }
  REQUIRE(p.Feed(Bytes(req.substr(req.size() - 1))) == HttpRequestParser::State::kDone);
  const HttpRequest& r = p.request();
  CHECK(r.method == "POST");
  CHECK(r.path == "/sync");
  CHECK(r.query.at("peer") == "head node1");
  CHECK(r.query.at("service") == "a b");
  CHECK(r.headers.at("x-thing") == "1");
  CHECK(r.body == "body");
}

TEST_CASE("pipelined requests: only the first is taken, the rest never dispatched") {
  HttpRequestParser p;
  std::string two =
      "GET /status HTTP/1.1\r\nHost: x\r\n\r\n"
      "POST /sync?peer=evil HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
  REQUIRE(p.Feed(Bytes(two)) == HttpRequestParser::State::kDone);
  CHECK(p.request().method == "GET");
  CHECK(p.request().path == "/status");
  CHECK(p.request().query.empty());
  CHECK(p.request().body.empty());
  REQUIRE(p.Feed(Bytes(two)) == HttpRequestParser::State::kDone);
  CHECK(p.request().path == "/status");
}

TEST_CASE("limits and malformed input give the restify error to answer with") {
  HttpLimits limits;
  limits.max_url = 64;
  limits.max_header_bytes = 128;
  limits.max_body = 16;
  struct Case {
    std::string request;
    int status;
    std::string code;
  };
  std::vector<Case> cases = {
      {"GET /" + std::string(100, 'a') + " HTTP/1.1\r\n\r\n", 414, "UriTooLong"},
      {"GET / HTTP/1.1\r\nX: " + std::string(200, 'v') + "\r\n\r\n", 431,
       "RequestHeaderFieldsTooLarge"},
      {"POST / HTTP/1.1\r\nContent-Length: 17\r\n\r\n", 413, "PayloadTooLarge"},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n" + std::string(32, 'b'), 413,
       "PayloadTooLarge"},
      {"GET /a%zz HTTP/1.1\r\n\r\n", 400, "BadRequest"},
      {"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, "BadRequest"},  // a TLS hello
  };
  for (const Case& c : cases) {
    INFO(c.request);
    HttpRequestParser p(limits);
    REQUIRE(p.Feed(Bytes(c.request)) == HttpRequestParser::State::kFailed);
    CHECK(p.error().status == c.status);
    CHECK(p.error().code == c.code);
    CHECK_FALSE(p.error().message.empty());
  }
}

}  // namespace lifeboat::agent
