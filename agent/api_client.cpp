#include "agent/api_client.h"

#include <http_parser.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "base/tcp.h"

namespace lifeboat::agent {
namespace {

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

std::string Where(const ApiCall& c) { return FormatHostPort(c.host, c.port); }

// Waits until `fd` is ready for `events`; false on timeout.
Result<bool> WaitFd(int fd, short events, int64_t timeout_ms) {
  pollfd p{fd, events, 0};
  for (;;) {
    int rc = ::poll(&p, 1, static_cast<int>(timeout_ms));
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) return PosixError("poll", "control API socket", errno);
    return rc > 0;
  }
}

Result<int> ConnectTo(const ApiCall& c) {
  Result<int> fd = ConnectTcp(c.host, c.port, c.connect_timeout_ms);
  if (!fd.ok() && fd.status().code() == Code::kUnavailable) {
    return UnavailableError(fd.status().message() + " (is `lifeboat agent` running?)");
  }
  return fd;
}

struct ParseState {
  const ApiCall* call;
  ApiReply* reply;
  std::string field, value, pending_line;
  bool in_value = false;
  bool complete = false;
};

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  return s;
}

}  // namespace

ApiCall ApiCallFor(const std::string& host, uint16_t port, const std::string& token) {
  ApiCall c;
  c.host = host;
  if (c.host == "0.0.0.0") c.host = "127.0.0.1";
  if (c.host == "::") c.host = "::1";
  c.port = port;
  c.bearer_token = token;
  return c;
}

std::string QueryEscape(std::string_view value) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char ch : value) {
    if (std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
      out.push_back(static_cast<char>(ch));
    } else {
      out.push_back('%');
      out.push_back(kHex[ch >> 4]);
      out.push_back(kHex[ch & 15]);
    }
  }
  return out;
}

Result<ApiReply> CallApi(const ApiCall& call) {
  ASSIGN_OR_RETURN(int raw_fd, ConnectTo(call));
  Fd fd(raw_fd);
  std::string req = call.method + " " + call.target + " HTTP/1.1\r\nHost: " + Where(call) +
                    "\r\nUser-Agent: lifeboat\r\nAccept: application/json\r\n";
  if (!call.bearer_token.empty()) req += "Authorization: Bearer " + call.bearer_token + "\r\n";
  req += "Content-Length: 0\r\nConnection: close\r\n\r\n";
  size_t off = 0;
  while (off < req.size()) {
    ssize_t n = ::send(fd.get(), req.data() + off, req.size() - off, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      ASSIGN_OR_RETURN(bool ready, WaitFd(fd.get(), POLLOUT, call.read_timeout_ms));
      if (!ready) return TemporaryError("send to " + Where(call) + ": timed out");
      continue;
    }
    if (n < 0) return PosixError("send", Where(call), errno);
    off += static_cast<size_t>(n);
  }

  ApiReply reply;
  ParseState st{&call, &reply};
  http_parser parser;
  http_parser_init(&parser, HTTP_RESPONSE);
  parser.data = &st;
  http_parser_settings s;
  http_parser_settings_init(&s);
  s.on_header_field = [](http_parser* p, const char* at, size_t len) {
    auto* st = static_cast<ParseState*>(p->data);
    if (st->in_value) {
      st->reply->headers[Lower(st->field)] = st->value;
      st->field.clear();
      st->value.clear();
      st->in_value = false;
    }
    st->field.append(at, len);
    return 0;
  };
  s.on_header_value = [](http_parser* p, const char* at, size_t len) {
    auto* st = static_cast<ParseState*>(p->data);
    st->in_value = true;
    st->value.append(at, len);
    return 0;
  };
  s.on_headers_complete = [](http_parser* p) {
    auto* st = static_cast<ParseState*>(p->data);
    if (st->in_value) st->reply->headers[Lower(st->field)] = st->value;
    st->reply->status = static_cast<int>(p->status_code);
    return 0;
  };
  s.on_body = [](http_parser* p, const char* at, size_t len) {
    auto* st = static_cast<ParseState*>(p->data);
    if (!st->call->on_line || p->status_code >= 300) {  // errors are one JSON object
      st->reply->body.append(at, len);
      return 0;
    }
    st->pending_line.append(at, len);
    size_t nl;
    while ((nl = st->pending_line.find('\n')) != std::string::npos) {
      std::string line = st->pending_line.substr(0, nl);
      st->pending_line.erase(0, nl + 1);
      if (!line.empty()) st->call->on_line(line);
    }
    return 0;
  };
  s.on_message_complete = [](http_parser* p) {
    auto* st = static_cast<ParseState*>(p->data);
    if (st->call->on_line && !st->pending_line.empty() && p->status_code < 300) {
      st->call->on_line(st->pending_line);
    }
    st->complete = true;
    return 0;
  };

  char buf[16384];
  while (!st.complete) {
    ASSIGN_OR_RETURN(bool ready, WaitFd(fd.get(), POLLIN, call.read_timeout_ms));
    if (!ready) {
      return TemporaryError("no answer from the agent at " + Where(call) + " for " +
                            std::to_string(call.read_timeout_ms / 1000) + "s");
    }
    ssize_t n = ::recv(fd.get(), buf, sizeof(buf), 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n < 0) return PosixError("recv", Where(call), errno);
    size_t used = http_parser_execute(&parser, &s, buf, static_cast<size_t>(n));
    if (parser.http_errno != HPE_OK || used != static_cast<size_t>(n)) {
      return DataError("malformed HTTP response from " + Where(call) + ": " +
                       http_errno_description(static_cast<http_errno>(parser.http_errno)));
    }
    if (n == 0 && !st.complete) {
      return UnavailableError("the agent at " + Where(call) + " closed the connection early");
    }
  }
  return reply;
}

}  // namespace lifeboat::agent
