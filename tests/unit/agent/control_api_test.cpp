#include "agent/control_api.h"

#include <catch2/catch.hpp>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include "agent/api_client.h"
#include "agent/uv.h"
#include "base/tcp.h"

namespace lifeboat::agent {
namespace {

// A backend whose pulls finish when the test says so (on the loop).
struct FakeBackend : ControlBackend {
  uv_loop_t* loop = nullptr;
  std::vector<std::string> peers = {"hn1", "hn2"};
  bool stopping = false;
  void GetStatus(JsonFn done) override { done(nlohmann::json{{"peers", peers}}); }
  void GetCatalog(JsonFn done) override { done(NotFoundError("no catalog")); }
  void GetMetrics(std::function<void(std::string)> done) override { done("lifeboat_up 1\n"); }
  std::string Unhealthy() override { return stopping ? "stopping" : ""; }
  Status Sync(const std::string& peer, const std::vector<std::string>& services,
              ProgressFn progress,
              std::function<void(const std::vector<PullResult>&)> done) override {
    if (!peer.empty() && peer != "hn1" && peer != "hn2") return NotFoundError("no peer " + peer);
    std::vector<std::string> targets = peer.empty() ? peers : std::vector<std::string>{peer};
    Defer(loop, [=] {
      std::vector<PullResult> results;
      for (const auto& t : targets) {
        PullProgress p;
        p.peer = t;
        p.phase = PullPhase::kTransfer;
        p.files_total = services.size();
        progress(p);
        PullResult r;
        r.peer = t;
        r.generation = 3;
        if (t == "hn2") r.status = PermissionError("bad cluster key");
        results.push_back(r);
      }
      done(results);
    });
    return Status::Ok();
  }
  std::vector<std::pair<std::string, std::string>> sync_from;  // (peer, from) asked
  Status SyncFrom(const std::string& peer, const std::string& from, bool, ProgressFn,
                  std::function<void(const std::vector<PullResult>&)> done) override {
    if (from == peer) return NotFoundError("no other node named " + from);
    sync_from.emplace_back(peer, from);
    Defer(loop, [=] {
      PullResult r;
      r.peer = peer;
      r.generation = 9;
      done({r});
    });
    return Status::Ok();
  }
};

struct ApiFixture {
  uv_loop_t loop;
  FakeBackend backend;
  std::unique_ptr<ControlApi> api;
  std::unique_ptr<HttpServer> server;
  std::unique_ptr<LoopTasks> tasks;
  std::thread thread;

  explicit ApiFixture(std::string token = "") {
    uv_loop_init(&loop);
    backend.loop = &loop;
    api = std::make_unique<ControlApi>(&backend, token);
    tasks = std::make_unique<LoopTasks>(&loop);
    auto s = HttpServer::Listen(&loop, "127.0.0.1", 0,
                                [this](const HttpRequest& r, std::shared_ptr<HttpResponse> w) {
                                  api->Handle(r, std::move(w));
                                });
    REQUIRE(s.ok());
    server = std::move(s).value();
    thread = std::thread([this] { uv_run(&loop, UV_RUN_DEFAULT); });
  }
  ~ApiFixture() {
    tasks->Post([this] {
      server.reset();
      tasks->Close();
    });
    thread.join();
    DrainAndCloseLoop(&loop);
  }
  Result<ApiReply> Call(std::string method, std::string target, std::string token = "",
                        std::vector<nlohmann::json>* lines = nullptr) {
    ApiCall c = ApiCallFor("0.0.0.0", server->port(), token);
    c.method = std::move(method);
    c.target = std::move(target);
    if (lines != nullptr) {
      c.on_line = [lines](std::string_view l) { lines->push_back(nlohmann::json::parse(l)); };
    }
    return CallApi(c);
  }
  // Sends `request` as is; returns everything the server answered.
  std::string Raw(const std::string& request) {
    int fd = ConnectTcp("127.0.0.1", server->port(), 5000).value();
    std::string out;
    for (size_t off = 0; off < request.size();) {
      ssize_t n = ::send(fd, request.data() + off, request.size() - off, MSG_NOSIGNAL);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
    char buf[4096];
    for (int i = 0; i < 200; ++i) {  // bounded: the server closes after its answer
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    return out;
  }
};

TEST_CASE("sync streams progress, one result per peer, then the overall outcome") {
  ApiFixture f;
  std::vector<nlohmann::json> lines;
  auto r = f.Call("POST", "/sync?service=imgapi,sapi", "", &lines);
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  CHECK(r->headers["content-type"] == "application/x-ndjson");
  REQUIRE(lines.size() == 5);
  CHECK(lines[0]["type"] == "progress");
  CHECK(lines[0]["files_total"] == 2);  // both services reached the backend
  CHECK(lines[2]["type"] == "result");
  CHECK(lines[2]["ok"] == true);
  CHECK(lines[3]["peer"] == "hn2");
  CHECK(lines[3]["error"]["code"] == "permission");
  CHECK(lines[4]["type"] == "done");
  CHECK(lines[4]["ok"] == false);
}

TEST_CASE("sync with from= pulls the peer's copy held by that node") {
  ApiFixture f;
  std::vector<nlohmann::json> lines;
  auto r = f.Call("POST", "/sync?peer=hn1&from=hn2", "", &lines);
  REQUIRE(r.ok());
  CHECK(r->status == 200);
  REQUIRE(lines.size() == 2);
  CHECK(lines[0]["type"] == "result");
  CHECK(lines[0]["peer"] == "hn1");
  CHECK(lines[0]["generation"] == 9);
  CHECK(lines[1]["ok"] == true);
  CHECK(f.backend.sync_from == std::vector<std::pair<std::string, std::string>>{{"hn1", "hn2"}});
  auto bad = f.Call("POST", "/sync?peer=hn1&from=hn1");
  REQUIRE(bad.ok());
  CHECK(bad->status == 404);
}

TEST_CASE("an unknown peer is a 404 restify error, a wrong method a 405") {
  ApiFixture f;
  std::vector<nlohmann::json> lines;
  auto r = f.Call("POST", "/sync?peer=nosuch", "", &lines);
  REQUIRE(r.ok());
  CHECK(lines.empty());  // a streaming caller still gets the error object in the body
  CHECK(r->status == 404);
  auto e = nlohmann::json::parse(r->body);
  CHECK(e["code"] == "ResourceNotFound");
  CHECK(e["message"] == "no peer nosuch");
  auto m = f.Call("GET", "/sync");
  REQUIRE(m.ok());
  CHECK(m->status == 405);
  auto c = f.Call("GET", "/catalog");
  REQUIRE(c.ok());
  CHECK(c->status == 404);
}

TEST_CASE("status, metrics and healthz answer, a token protects all but healthz") {
  ApiFixture f("s3cret-token");
  auto h = f.Call("GET", "/healthz");
  REQUIRE(h.ok());
  CHECK(h->status == 200);
  auto denied = f.Call("GET", "/status");
  REQUIRE(denied.ok());
  CHECK(denied->status == 401);
  CHECK(nlohmann::json::parse(denied->body)["code"] == "InvalidCredentials");
  auto wrong = f.Call("GET", "/status", "s3cret-tokeX");
  REQUIRE(wrong.ok());
  CHECK(wrong->status == 401);
  auto s = f.Call("GET", "/status", "s3cret-token");
  REQUIRE(s.ok());
  CHECK(s->status == 200);
  CHECK(nlohmann::json::parse(s->body)["peers"][1] == "hn2");
  auto m = f.Call("GET", "/metrics", "s3cret-token");
  REQUIRE(m.ok());
  CHECK(m->body == "lifeboat_up 1\n");
  CHECK(m->headers["content-type"].find("text/plain") == 0);
}

TEST_CASE("the bearer scheme is case-insensitive, the token is not") {
  ApiFixture f("s3cret-token");
  for (const char* header : {"Bearer s3cret-token", "bearer s3cret-token", "BEARER  s3cret-token"}) {
    std::string a = f.Raw(std::string("GET /status HTTP/1.1\r\nHost: x\r\nAuthorization: ") + header +
                          "\r\n\r\n");
    CHECK(a.rfind("HTTP/1.1 200 ", 0) == 0);
  }
  for (const char* header : {"Bearer S3CRET-TOKEN", "Basic s3cret-token", "Bearers3cret-token",
                             "Bearer"}) {
    std::string a = f.Raw(std::string("GET /status HTTP/1.1\r\nHost: x\r\nAuthorization: ") + header +
                          "\r\n\r\n");
    CHECK(a.rfind("HTTP/1.1 401 ", 0) == 0);
  }
}

TEST_CASE("a HEAD answer has the GET answer's status and headers and no body") {
  ApiFixture f;
  std::string get = f.Raw("GET /status HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string head = f.Raw("HEAD /status HTTP/1.1\r\nHost: x\r\n\r\n");
  const size_t end = get.find("\r\n\r\n");
  REQUIRE(end != std::string::npos);
  CHECK(head == get.substr(0, end + 4));
  std::string missing = f.Raw("HEAD /nowhere HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(missing.rfind("HTTP/1.1 404 ", 0) == 0);
  CHECK(missing.substr(missing.find("\r\n\r\n") + 4).empty());
}

TEST_CASE("bytes that are not UTF-8 in a path or query get a JSON answer") {
  ApiFixture f;
  for (const char* target : {"/%ff", "/\xff\xfe", "/sync?peer=%ff"}) {
    const char* method = std::string(target).rfind("/sync", 0) == 0 ? "POST" : "GET";
    std::string a = f.Raw(std::string(method) + " " + target + " HTTP/1.1\r\nHost: x\r\n\r\n");
    INFO(target);
    CHECK(a.rfind("HTTP/1.1 404 ", 0) == 0);
    auto body = nlohmann::json::parse(a.substr(a.find("\r\n\r\n") + 4), nullptr, false);
    CHECK(body.is_object());
  }
  std::string bad = f.Raw("POST /sync?service=%c3%28 HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(bad.rfind("HTTP/1.1 400 ", 0) == 0);
  CHECK(bad.find("InvalidArgument") != std::string::npos);
}

}  // namespace
}  // namespace lifeboat::agent
