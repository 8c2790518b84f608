#include "agent/http_server.h"

#include <catch2/catch.hpp>

#include <atomic>
#include <thread>
#include <vector>

#include "agent/api_client.h"
#include "agent/uv.h"

namespace lifeboat::agent {
namespace {

TEST_CASE("query strings decode percent escapes and plus") {
  std::map<std::string, std::string> q;
  REQUIRE(ParseQuery("peer=head%20node1&service=imgapi&x=a+b&empty", &q));
  CHECK(q["peer"] == "head node1");
  CHECK(q["service"] == "imgapi");
  CHECK(q["x"] == "a b");
  CHECK(q.count("empty") == 1);
  std::map<std::string, std::string> bad;
  CHECK_FALSE(ParseQuery("a=%zz", &bad));
  CHECK_FALSE(ParseQuery("a=%4", &bad));
  CHECK(QueryEscape("a b/c") == "a%20b%2Fc");
}

// Runs a server on its own loop thread and calls it with the blocking client.
struct ServerFixture {
  uv_loop_t loop;
  std::unique_ptr<HttpServer> server;
  std::unique_ptr<LoopTasks> tasks;
  std::thread thread;
  uint16_t port = 0;

  explicit ServerFixture(HttpServer::Handler h, HttpLimits limits = {}) {
    uv_loop_init(&loop);
    tasks = std::make_unique<LoopTasks>(&loop);
    auto s = HttpServer::Listen(&loop, "127.0.0.1", 0, std::move(h), limits);
    REQUIRE(s.ok());
    server = std::move(s).value();
    port = server->port();
    thread = std::thread([this] { uv_run(&loop, UV_RUN_DEFAULT); });
  }
  ~ServerFixture() {
    tasks->Post([this] {
      server.reset();
      tasks->Close();
    });
    thread.join();
    DrainAndCloseLoop(&loop);
  }
  ApiCall Call(std::string method, std::string target) {
    ApiCall c;
    c.port = port;
    c.method = std::move(method);
    c.target = std::move(target);
    c.read_timeout_ms = 10'000;
    return c;
  }
};

TEST_CASE("the server routes a request and the client reads the JSON answer") {
  ServerFixture f([](const HttpRequest& req, std::shared_ptr<HttpResponse> resp) {
    if (req.path == "/echo") {
      resp->SendJson(200, {{"method", req.method},
                           {"peer", req.query.count("peer") ? req.query.at("peer") : ""}});
    } else {
      resp->SendError(404, "ResourceNotFound", req.path + " does not exist");
    }
  });
  auto r = CallApi(f.Call("POST", "/echo?peer=" + QueryEscape("head node1")));
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  auto j = nlohmann::json::parse(r->body);
  CHECK(j["method"] == "POST");
  CHECK(j["peer"] == "head node1");

  auto nf = CallApi(f.Call("GET", "/nope"));
  REQUIRE(nf.ok());
  CHECK(nf->status == 404);
  CHECK(nlohmann::json::parse(nf->body)["code"] == "ResourceNotFound");
}

TEST_CASE("a streamed response arrives line by line, chunked") {
  ServerFixture f([](const HttpRequest&, std::shared_ptr<HttpResponse> resp) {
    resp->BeginStream(200, "application/x-ndjson");
    for (int i = 0; i < 3; ++i) resp->WriteChunk(nlohmann::json{{"n", i}}.dump() + "\n");
    resp->WriteChunk("{\"done\":");  // a line split across chunks
    resp->WriteChunk("true}\n");
    resp->EndStream();
  });
  std::vector<std::string> lines;
  ApiCall c = f.Call("POST", "/sync");
  c.on_line = [&](std::string_view l) { lines.emplace_back(l); };
  auto r = CallApi(c);
  REQUIRE(r.ok());
  CHECK(r->headers["transfer-encoding"] == "chunked");
  REQUIRE(lines.size() == 4);
  CHECK(lines[0] == "{\"n\":0}");
  CHECK(lines[3] == "{\"done\":true}");
}

TEST_CASE("oversized and malformed requests get restify-style errors") {
  HttpLimits limits;
  limits.max_url = 64;
  ServerFixture f(
      [](const HttpRequest&, std::shared_ptr<HttpResponse> resp) {
        resp->SendJson(200, nlohmann::json::object());
      },
      limits);
  auto r = CallApi(f.Call("GET", "/" + std::string(200, 'a')));
  REQUIRE(r.ok());
  CHECK(r->status == 414);
  CHECK(nlohmann::json::parse(r->body)["code"] == "UriTooLong");
}

TEST_CASE("nothing listening is 'unavailable', the agent-not-running case") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  uint16_t port;
  {
    auto l = TcpListener::Listen(&loop, "127.0.0.1", 0, [](std::shared_ptr<Connection>) {});
    REQUIRE(l.ok());
    port = (*l)->port();
  }
  DrainAndCloseLoop(&loop);
  ApiCall c;
  c.port = port;
  auto r = CallApi(c);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == Code::kUnavailable);
}

}  // namespace
}  // namespace lifeboat::agent
