// A small HTTP/1.1 server on the loop, parsing with nodejs/http-parser. One
// request per connection (the response says "Connection: close"); requests
// are bounded (URL, headers, body) and a client that sends too slowly times
// out. Responses are either whole (Send*) or streamed with chunked transfer
// encoding (BeginStream / WriteChunk / EndStream), e.g. NDJSON progress.
//
// Threads: loop thread only.
#ifndef LIFEBOAT_AGENT_HTTP_SERVER_H_
#define LIFEBOAT_AGENT_HTTP_SERVER_H_

#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>

#include <nlohmann/json.hpp>

#include "agent/admission.h"
#include "agent/connection.h"
#include "base/status.h"

namespace lifeboat::agent {

struct HttpLimits {
  size_t max_url = 8 * 1024;
  size_t max_header_bytes = 16 * 1024;
  size_t max_body = 1024 * 1024;
  int64_t request_timeout_ms = 30'000;  // to receive the whole request
  int64_t idle_timeout_ms = 120'000;    // no byte moved while a response streams
  // Pending = the request has not fully arrived; admitted = being answered
  // (agent/admission.h). Clients of the API are mostly local tools from one
  // address, so the per-address budget is the whole pending budget.
  AdmissionLimits admission{/*max_pending=*/32, /*max_pending_per_address=*/32,
                            /*max_admitted=*/64};
};

struct HttpRequest {
  std::string method;                          // "GET"
  std::string path;                            // "/sync", percent-decoded
  std::map<std::string, std::string> query;    // decoded; a repeated key keeps the last value
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string remote;  // "127.0.0.1:53210"
};

// "a%20b+c" -> "a b c"; false on a malformed escape.
bool PercentDecode(std::string_view in, std::string* out, bool plus_is_space);
// "a=1&b=x%2Fy" -> {a:1, b:x/y}; false on a malformed escape.
bool ParseQuery(std::string_view query, std::map<std::string, std::string>* out);

// The reason phrase of a status code ("Not Found").
const char* HttpReason(int status);

// Parses one HTTP/1.1 request from bytes as they arrive, socket-free
// (nodejs/http-parser underneath), enforcing the URL, header and body limits
// of HttpLimits (not the timeouts). The server feeds it what a connection
// receives; the fuzz target feeds it anything.
//
// Threads: one thread at a time.
class HttpRequestParser {
 public:
  enum class State { kNeedMore, kDone, kFailed };
  // The answer a request that failed to parse gets.
  struct Error {
    int status = 400;
    std::string code;  // restify-style: "BadRequest", "UriTooLong", ...
    std::string message;
  };

  explicit HttpRequestParser(HttpLimits limits = {});
  ~HttpRequestParser();
  HttpRequestParser(const HttpRequestParser&) = delete;
  HttpRequestParser& operator=(const HttpRequestParser&) = delete;

  // Consumes received bytes; once kDone or kFailed, further bytes are ignored
  // (one request per connection).
  State Feed(std::span<const uint8_t> data);
  State state() const;
  // kDone: the request (method, path, query, headers, body; not `remote`).
  HttpRequest& request();
  // kFailed: why.
  const Error& error() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

class HttpConnection;

// Writes one response. Methods after the response ended, or after the client
// went away, are ignored.
class HttpResponse {
 public:
  // `head_only`: the answer to a HEAD request: the same status and headers
  // (Content-Length of the body a GET would get), no body (RFC 9110 9.3.2).
  explicit HttpResponse(std::shared_ptr<Connection> conn, bool head_only = false)
      : conn_(std::move(conn)), head_only_(head_only) {}

  void Send(int status, std::string_view content_type, std::string_view body);
  void SendJson(int status, const nlohmann::json& body);
  // A restify-style error: {"code": code, "message": message}.
  void SendError(int status, std::string_view code, std::string_view message);
  // Maps a Status to an HTTP status and error code.
  void SendStatus(const Status& status);

  void BeginStream(int status, std::string_view content_type);
  void WriteChunk(std::string_view data);
  void EndStream();

  bool finished() const { return finished_; }
  bool client_gone() const { return conn_ == nullptr || conn_->closed(); }
  // Called when the client disconnects before the response ended.
  void OnClientGone(std::function<void()> fn) { on_gone_ = std::move(fn); }

 private:
  friend class HttpConnection;
  std::string Head(int status, std::string_view content_type, const std::string* length);
  std::shared_ptr<Connection> conn_;
  bool head_only_ = false;
  bool started_ = false;
  bool finished_ = false;
  std::function<void()> on_gone_;
};

class HttpServer {
 public:
  using Handler = std::function<void(const HttpRequest&, std::shared_ptr<HttpResponse>)>;

  static Result<std::unique_ptr<HttpServer>> Listen(uv_loop_t* loop, const std::string& host,
                                                    uint16_t port, Handler handler,
                                                    HttpLimits limits = {});
  ~HttpServer();
  uint16_t port() const { return listener_->port(); }
  // Stops accepting; requests in progress finish.
  void StopAccepting() { listener_->Close(); }
  // Closes every open connection too.
  void CloseAll();
  size_t open_connections() const { return conns_.size(); }
  uint64_t evicted_total() const { return admission_.evicted_total(); }

 private:
  HttpServer(Handler h, HttpLimits l)
      : handler_(std::move(h)), limits_(l), admission_(l.admission) {}
  friend class HttpConnection;
  void Accept(uv_loop_t* loop, std::shared_ptr<Connection> c);
  Handler handler_;
  HttpLimits limits_;
  Admission admission_;
  uint64_t next_id_ = 1;
  std::unique_ptr<TcpListener> listener_;
  std::map<uint64_t, std::shared_ptr<HttpConnection>> conns_;
};

}  // namespace lifeboat::agent

#endif  // LIFEBOAT_AGENT_HTTP_SERVER_H_
