#include "agent/http_server.h"

#include <http_parser.h>

#include <algorithm>
#include <cctype>

#include "base/text.h"

namespace lifeboat::agent {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

}  // namespace

bool PercentDecode(std::string_view in, std::string* out, bool plus_is_space) {
  out->clear();
  out->reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return false;
      int hi = HexValue(in[i + 1]);
      int lo = HexValue(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      out->push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out->push_back(' ');
    } else {
      out->push_back(c);
    }
  }
  return true;
}

bool ParseQuery(std::string_view query, std::map<std::string, std::string>* out) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view part = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (part.empty()) continue;
    size_t eq = part.find('=');
    std::string key, value;
    if (!PercentDecode(part.substr(0, eq), &key, true)) return false;
    if (eq != std::string_view::npos && !PercentDecode(part.substr(eq + 1), &value, true)) {
      return false;
    }
    (*out)[key] = value;
  }
  return true;
}

const char* HttpReason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 413:
      return "Payload Too Large";
    case 414:
      return "URI Too Long";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
  }
  return "Unknown";
}

// ---- HttpResponse ---------------------------------------------------------------

std::string HttpResponse::Head(int status, std::string_view content_type,
                               const std::string* length) {
  std::string h = "HTTP/1.1 " + std::to_string(status) + " " + HttpReason(status) + "\r\n";
  h += "Content-Type: ";
  h += content_type;
  h += "\r\n";
  if (length != nullptr) {
    h += "Content-Length: " + *length + "\r\n";
  } else {
    h += "Transfer-Encoding: chunked\r\n";
  }
  h += "Cache-Control: no-store\r\nConnection: close\r\n\r\n";
  return h;
}

void HttpResponse::Send(int status, std::string_view content_type, std::string_view body) {
  if (started_ || client_gone()) return;
  started_ = finished_ = true;
  std::string len = std::to_string(body.size());
  std::string out = Head(status, content_type, &len);
  if (!head_only_) out += body;
  conn_->Write(std::move(out));
  conn_->CloseAfterFlush();
}

void HttpResponse::SendJson(int status, const nlohmann::json& body) {
  Send(status, "application/json", DumpJson(body) + "\n");
}

void HttpResponse::SendError(int status, std::string_view code, std::string_view message) {
  SendJson(status, nlohmann::json{{"code", code}, {"message", message}});
}

void HttpResponse::SendStatus(const Status& status) {
  if (status.ok()) {
    SendJson(200, nlohmann::json::object());
    return;
  }
  int http = 500;
  std::string code = "InternalError";
  switch (status.code()) {
    case Code::kUsage:
      http = 400;
      code = "InvalidArgument";
      break;
    case Code::kNotFound:
      http = 404;
      code = "ResourceNotFound";
      break;
    case Code::kPermission:
      http = 403;
      code = "NotAuthorized";
      break;
    case Code::kUnavailable:
      http = 503;
      code = "ServiceUnavailable";
      break;
    case Code::kTemporary:
      http = 503;
      code = "ServiceUnavailable";
      break;
    case Code::kData:
      http = 502;
      code = "BadData";
      break;
    default:
      break;
  }
  SendError(http, code, status.message());
}

void HttpResponse::BeginStream(int status, std::string_view content_type) {
  if (started_ || client_gone()) return;
  started_ = true;
  if (head_only_) {  // headers only; the stream ends at once
    const std::string none = "0";
    finished_ = true;
    conn_->Write(Head(status, content_type, &none));
    conn_->CloseAfterFlush();
    return;
  }
  conn_->Write(Head(status, content_type, nullptr));
}

void HttpResponse::WriteChunk(std::string_view data) {
  if (!started_ || finished_ || client_gone() || data.empty()) return;
  char size[32];
  std::snprintf(size, sizeof(size), "%zx\r\n", data.size());
  std::string out(size);
  out += data;
  out += "\r\n";
  conn_->Write(std::move(out));
}

void HttpResponse::EndStream() {
  if (!started_ || finished_ || client_gone()) return;
  finished_ = true;
  conn_->Write("0\r\n\r\n");
  conn_->CloseAfterFlush();
}

// ---- HttpRequestParser ---------------------------------------------------------------

struct HttpRequestParser::Impl {
  explicit Impl(HttpLimits l) : limits(l) {
    http_parser_init(&parser, HTTP_REQUEST);
    parser.data = this;
    http_parser_settings_init(&settings);
    settings.on_url = &OnUrl;
    settings.on_header_field = &OnHeaderField;
    settings.on_header_value = &OnHeaderValue;
    settings.on_headers_complete = &OnHeadersComplete;
    settings.on_body = &OnBody;
    settings.on_message_complete = &OnMessageComplete;
  }

  void Feed(std::span<const uint8_t> data) {
    if (state != State::kNeedMore) return;
    size_t n = http_parser_execute(&parser, &settings, reinterpret_cast<const char*>(data.data()),
                                   data.size());
    if (state != State::kNeedMore) return;
    if (parser.http_errno != HPE_OK || n != data.size()) {
      Fail(400, "BadRequest",
           std::string("malformed HTTP request: ") +
               http_errno_description(static_cast<http_errno>(parser.http_errno)));
    }
  }

  void Fail(int status, std::string_view code, std::string_view message) {
    if (state != State::kNeedMore) return;
    state = State::kFailed;
    error = {status, std::string(code), std::string(message)};
  }

  static Impl* Self(http_parser* p) { return static_cast<Impl*>(p->data); }

  bool AddHeaderBytes(size_t n) {
    header_bytes += n;
    if (header_bytes > limits.max_header_bytes) {
      Fail(431, "RequestHeaderFieldsTooLarge", "request headers are too large");
      return false;
    }
    return true;
  }

  static int OnUrl(http_parser* p, const char* at, size_t len) {
    auto* self = Self(p);
    self->url.append(at, len);
    if (self->url.size() > self->limits.max_url) {
      self->Fail(414, "UriTooLong", "request URL is too long");
      return -1;
    }
    return 0;
  }

  static int OnHeaderField(http_parser* p, const char* at, size_t len) {
    auto* self = Self(p);
    if (!self->AddHeaderBytes(len)) return -1;
    if (self->in_value) {
      self->req.headers[Lower(self->field)] = self->value;
      self->field.clear();
      self->value.clear();
      self->in_value = false;
    }
    self->field.append(at, len);
    return 0;
  }

  static int OnHeaderValue(http_parser* p, const char* at, size_t len) {
    auto* self = Self(p);
    if (!self->AddHeaderBytes(len)) return -1;
    self->in_value = true;
    self->value.append(at, len);
    return 0;
  }

  static int OnHeadersComplete(http_parser* p) {
    auto* self = Self(p);
    if (self->in_value) self->req.headers[Lower(self->field)] = self->value;
    if (p->content_length != ULLONG_MAX && p->content_length > self->limits.max_body) {
      self->Fail(413, "PayloadTooLarge", "request body is too large");
      return -1;
    }
    return 0;
  }

  static int OnBody(http_parser* p, const char* at, size_t len) {
    auto* self = Self(p);
    self->req.body.append(at, len);
    if (self->req.body.size() > self->limits.max_body) {
      self->Fail(413, "PayloadTooLarge", "request body is too large");
      return -1;
    }
    return 0;
  }

  static int OnMessageComplete(http_parser* p) {
    Self(p)->Complete(p);
    // Stop here: one request per connection, whatever follows is ignored.
    http_parser_pause(p, 1);
    return 0;
  }

  void Complete(http_parser* p) {
    req.method = http_method_str(static_cast<http_method>(p->method));
    http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(url.data(), url.size(), 0, &u) != 0) {
      Fail(400, "BadRequest", "malformed request URL");
      return;
    }
    std::string_view raw_path =
        (u.field_set & (1 << UF_PATH))
            ? std::string_view(url).substr(u.field_data[UF_PATH].off, u.field_data[UF_PATH].len)
            : std::string_view("/");
    std::string_view raw_query =
        (u.field_set & (1 << UF_QUERY))
            ? std::string_view(url).substr(u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len)
            : std::string_view();
    if (!PercentDecode(raw_path, &req.path, false) || !ParseQuery(raw_query, &req.query)) {
      Fail(400, "BadRequest", "malformed escape in request URL");
      return;
    }
    state = State::kDone;
  }

  HttpLimits limits;
  http_parser parser;
  http_parser_settings settings;
  State state = State::kNeedMore;
  Error error;
  HttpRequest req;
  std::string url, field, value;
  bool in_value = false;
  size_t header_bytes = 0;
};

HttpRequestParser::HttpRequestParser(HttpLimits limits) : impl_(std::make_unique<Impl>(limits)) {}
HttpRequestParser::~HttpRequestParser() = default;

HttpRequestParser::State HttpRequestParser::Feed(std::span<const uint8_t> data) {
  impl_->Feed(data);
  return impl_->state;
}

HttpRequestParser::State HttpRequestParser::state() const { return impl_->state; }
HttpRequest& HttpRequestParser::request() { return impl_->req; }
const HttpRequestParser::Error& HttpRequestParser::error() const { return impl_->error; }

// ---- HttpConnection: one connection, one request -------------------------------------------

class HttpConnection : public std::enable_shared_from_this<HttpConnection> {
 public:
  HttpConnection(HttpServer* server, uint64_t id, std::shared_ptr<Connection> conn)
      : server_(server), id_(id), conn_(std::move(conn)), deadline_(nullptr),
        parser_(server->limits_) {}

  void Start(uv_loop_t* loop) {
    std::weak_ptr<HttpConnection> weak = shared_from_this();
    deadline_ = std::make_unique<Timer>(loop);
    deadline_->Start(server_->limits_.request_timeout_ms, [weak] {
      if (auto self = weak.lock(); self && !self->dispatched_) {
        self->Fail(408, "RequestTimeout", "the request was not received in time");
      }
    });
    conn_->SetIdleTimeout(server_->limits_.idle_timeout_ms);
    Connection::Callbacks cb;
    cb.on_data = [weak](std::span<const uint8_t> data) {
      if (auto self = weak.lock()) self->OnData(data);
    };
    cb.on_eof = [weak] {
      auto self = weak.lock();
      if (!self) return;
      // A client that half-closes after its request still gets the response.
      if (!self->dispatched_) self->conn_->Close();
    };
    cb.on_close = [weak](const Status&) {
      auto self = weak.lock();
      if (!self) return;
      self->deadline_.reset();
      if (self->response_ && !self->response_->finished() && self->response_->on_gone_) {
        auto fn = std::move(self->response_->on_gone_);
        fn();
      }
      self->server_->admission_.Gone(self->id_);
      self->server_->conns_.erase(self->id_);
    };
    conn_->Start(std::move(cb));
  }

  void Close() { conn_->Close(); }

 private:
  void OnData(std::span<const uint8_t> data) {
    if (dispatched_ || failed_) return;  // one request per connection
    switch (parser_.Feed(data)) {
      case HttpRequestParser::State::kNeedMore:
        return;
      case HttpRequestParser::State::kFailed: {
        const auto& e = parser_.error();
        Fail(e.status, e.code, e.message);
        return;
      }
      case HttpRequestParser::State::kDone:
        Dispatch();
        return;
    }
  }

  void Fail(int status, std::string_view code, std::string_view message) {
    if (failed_ || dispatched_) return;
    failed_ = true;
    HttpResponse r(conn_);
    r.SendError(status, code, message);
  }

  void Dispatch() {
    HttpRequest req = std::move(parser_.request());
    req.remote = conn_->peer_name();
    dispatched_ = true;
    deadline_->Stop();
    conn_->PauseReading();
    if (!server_->admission_.Admit(id_)) {
      HttpResponse(conn_).SendError(503, "ServiceUnavailable",
                                    "too many requests in progress; retry later");
      return;
    }
    response_ = std::make_shared<HttpResponse>(conn_, req.method == "HEAD");
    auto handler = server_->handler_;
    handler(req, response_);
  }

  HttpServer* server_;
  uint64_t id_;
  std::shared_ptr<Connection> conn_;
  std::unique_ptr<Timer> deadline_;
  HttpRequestParser parser_;
  bool dispatched_ = false;
  bool failed_ = false;
  std::shared_ptr<HttpResponse> response_;
};

// ---- HttpServer ----------------------------------------------------------------------

Result<std::unique_ptr<HttpServer>> HttpServer::Listen(uv_loop_t* loop, const std::string& host,
                                                       uint16_t port, Handler handler,
                                                       HttpLimits limits) {
  std::unique_ptr<HttpServer> server(new HttpServer(std::move(handler), limits));
  HttpServer* raw = server.get();
  ASSIGN_OR_RETURN(
      server->listener_,
      TcpListener::Listen(loop, host, port, [raw, loop](std::shared_ptr<Connection> c) {
        raw->Accept(loop, std::move(c));
      }));
  return server;
}

// A client still sending its request when the pending budget is full makes
// room for the newcomer (agent/admission.h).
void HttpServer::Accept(uv_loop_t* loop, std::shared_ptr<Connection> c) {
  const uint64_t id = next_id_++;
  if (std::optional<uint64_t> evict = admission_.Arrive(id, c->peer_name())) {
    if (auto it = conns_.find(*evict); it != conns_.end()) it->second->Close();
  }
  auto hc = std::make_shared<HttpConnection>(this, id, std::move(c));
  conns_[id] = hc;
  hc->Start(loop);
}

HttpServer::~HttpServer() { CloseAll(); }

void HttpServer::CloseAll() {
  if (listener_) listener_->Close();
  auto conns = conns_;
  for (auto& [id, c] : conns) c->Close();
}

}  // namespace lifeboat::agent
