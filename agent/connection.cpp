#include "agent/connection.h"

#include <cstring>

namespace lifeboat::agent {
namespace {

constexpr size_t kReadBufSize = 256 * 1024;

struct WriteReq {
  uv_write_t req;
  std::vector<uint8_t> bytes;
};

std::string PeerNameOf(uv_tcp_t* tcp) {
  sockaddr_storage ss{};
  int len = sizeof(ss);
  if (uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  char host[INET6_ADDRSTRLEN] = {0};
  uint16_t port = 0;
  if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    uv_ip6_name(a, host, sizeof(host));
    port = ntohs(a->sin6_port);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    uv_ip4_name(a, host, sizeof(host));
    port = ntohs(a->sin_port);
  }
  return FormatHostPort(host, port);
}

}  // namespace

// ---- Connection -----------------------------------------------------------------

Connection::Connection(uv_loop_t* loop, uv_tcp_t* tcp, std::string peer_name)
    : loop_(loop),
      tcp_(tcp),
      peer_name_(std::move(peer_name)),
      idle_timer_(loop),
      limit_timer_(loop) {
  tcp_->data = this;
  uv_tcp_nodelay(tcp, 1);
}

Connection::~Connection() = default;  // UvHandle closes the socket; timers close themselves

void Connection::Start(Callbacks cb) {
  cb_ = std::move(cb);
  want_read_ = true;
  StartReadingIfWanted();
  ArmIdle();
}

void Connection::StartReadingIfWanted() {
  if (closed_ || !want_read_ || reading_ || limited_) return;
  int rc = uv_read_start(reinterpret_cast<uv_stream_t*>(tcp_.get()), &Connection::OnAlloc,
                         &Connection::OnRead);
  if (rc != 0) {
    Close(UvError("read from " + peer_name_, rc));
    return;
  }
  reading_ = true;
}

void Connection::PauseReading() {
  want_read_ = false;
  if (reading_ && !closed_) uv_read_stop(reinterpret_cast<uv_stream_t*>(tcp_.get()));
  reading_ = false;
}

void Connection::ResumeReading() {
  want_read_ = true;
  StartReadingIfWanted();
}

void Connection::SetIdleTimeout(int64_t ms) {
  idle_ms_ = ms;
  ArmIdle();
}

void Connection::Touch() { ArmIdle(); }

void Connection::ArmIdle() {
  if (closed_ || idle_ms_ <= 0) {
    idle_timer_.Stop();
    return;
  }
  idle_timer_.Start(idle_ms_, [this] {
    Close(TemporaryError("no data moved with " + peer_name_ + " for " +
                         std::to_string(idle_ms_ / 1000) + "s (io timeout)"));
  });
}

void Connection::OnAlloc(uv_handle_t* h, size_t /*suggested*/, uv_buf_t* buf) {
  auto* self = static_cast<Connection*>(h->data);
  if (self == nullptr) {
    *buf = uv_buf_init(nullptr, 0);
    return;
  }
  if (!self->read_buf_) self->read_buf_.reset(new char[kReadBufSize]);
  *buf = uv_buf_init(self->read_buf_.get(), kReadBufSize);
}

void Connection::OnRead(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  auto* raw = static_cast<Connection*>(s->data);
  if (raw == nullptr) return;
  std::shared_ptr<Connection> self = raw->shared_from_this();
  if (n == 0) return;
  if (n == UV_EOF) {
    self->PauseReading();
    if (self->cb_.on_eof) {
      auto fn = self->cb_.on_eof;
      fn();
    } else {
      self->Close();
    }
    return;
  }
  if (n < 0) {
    self->Close(UvError("read from " + self->peer_name_, static_cast<int>(n)));
    return;
  }
  self->bytes_read_ += static_cast<uint64_t>(n);
  self->ArmIdle();
  if (self->limiter_ != nullptr && !self->limiter_->unlimited()) {
    int64_t now = static_cast<int64_t>(uv_now(self->loop_));
    self->limiter_->Consume(static_cast<uint64_t>(n), now);
    int64_t delay = self->limiter_->DelayMs(now);
    if (delay > 0 && self->reading_) {
      uv_read_stop(s);
      self->reading_ = false;
      self->limited_ = true;
      self->limit_timer_.Start(delay, [c = self.get()] {
        c->limited_ = false;
        c->ArmIdle();
        c->StartReadingIfWanted();
      });
    }
  }
  if (self->cb_.on_data) {
    auto fn = self->cb_.on_data;
    fn(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(buf->base),
                                static_cast<size_t>(n)));
  }
}

void Connection::Write(std::vector<uint8_t> bytes) {
  if (closed_ || bytes.empty()) return;
  auto* w = new WriteReq;
  w->bytes = std::move(bytes);
  uv_buf_t b =
      uv_buf_init(reinterpret_cast<char*>(w->bytes.data()), static_cast<unsigned>(w->bytes.size()));
  queued_bytes_ += w->bytes.size();
  int rc =
      uv_write(&w->req, reinterpret_cast<uv_stream_t*>(tcp_.get()), &b, 1, &Connection::OnWrite);
  if (rc != 0) {
    queued_bytes_ -= w->bytes.size();
    delete w;
    Close(UvError("write to " + peer_name_, rc));
  }
}

void Connection::OnWrite(uv_write_t* req, int status) {
  std::unique_ptr<WriteReq> w(reinterpret_cast<WriteReq*>(req));
  auto* raw = static_cast<Connection*>(req->handle->data);
  if (raw == nullptr) return;  // the connection is gone; the handle is closing
  std::shared_ptr<Connection> self = raw->shared_from_this();
  self->queued_bytes_ -= w->bytes.size();
  if (status != 0) {
    self->Close(UvError("write to " + self->peer_name_, status));
    return;
  }
  self->bytes_written_ += w->bytes.size();
  self->ArmIdle();
  if (self->queued_bytes_ == 0) {
    if (self->close_after_flush_) {
      self->Close();
      return;
    }
    if (self->cb_.on_drain) {
      auto fn = self->cb_.on_drain;
      fn();
    }
  }
}

void Connection::CloseAfterFlush() {
  if (closed_) return;
  if (queued_bytes_ == 0) {
    Close();
    return;
  }
  close_after_flush_ = true;
}

void Connection::Close(const Status& why) {
  if (closed_) return;
  closed_ = true;
  idle_timer_.Stop();
  limit_timer_.Stop();
  tcp_.reset();  // data = null: late write callbacks only free their requests
  reading_ = false;
  auto on_close = std::move(cb_.on_close);
  cb_ = Callbacks{};
  if (on_close) {
    // Deferred one turn so no caller sees its callbacks re-entered from Close().
    Defer(loop_, [self = shared_from_this(), fn = std::move(on_close), why] { fn(why); });
  }
}

// ---- TcpListener ---------------------------------------------------------------------

Result<std::unique_ptr<TcpListener>> TcpListener::Listen(uv_loop_t* loop, const std::string& host,
                                                         uint16_t port, AcceptFn on_accept) {
  std::unique_ptr<TcpListener> l(new TcpListener(loop, std::move(on_accept)));
  sockaddr_storage addr{};
  std::string where = FormatHostPort(host, port);
  int rc = host.find(':') != std::string::npos
               ? uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&addr))
               : uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(&addr));
  if (rc != 0) return ConfigError("listen address " + where + " is not an IP literal");
  auto* tcp = new uv_tcp_t;
  uv_tcp_init(loop, tcp);
  l->tcp_ = UvHandle<uv_tcp_t>(tcp);
  tcp->data = l.get();
  rc = uv_tcp_bind(tcp, reinterpret_cast<sockaddr*>(&addr), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(tcp), 128, &TcpListener::OnConnection);
  if (rc != 0) return UvError("listen on " + where, rc, /*retryable=*/false);
  sockaddr_storage bound{};
  int len = sizeof(bound);
  uv_tcp_getsockname(tcp, reinterpret_cast<sockaddr*>(&bound), &len);
  l->port_ = bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                                         : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  return l;
}

void TcpListener::OnConnection(uv_stream_t* server, int status) {
  auto* self = static_cast<TcpListener*>(server->data);
  if (self == nullptr || status != 0) return;
  auto* client = new uv_tcp_t;
  uv_tcp_init(self->loop_, client);
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(client)) != 0) {
    CloseAndDelete(client);
    return;
  }
  auto conn = std::make_shared<Connection>(self->loop_, client, PeerNameOf(client));
  auto fn = self->on_accept_;
  fn(std::move(conn));
}

// ---- Connector ---------------------------------------------------------------------------

struct Connector::State : std::enable_shared_from_this<Connector::State> {
  uv_loop_t* loop;
  std::string where;
  uint16_t port;
  DoneFn done;
  bool finished = false;
  uv_getaddrinfo_t gai;
  bool gai_pending = false;
  uv_tcp_t* tcp = nullptr;  // owned until handed to a Connection
  uv_connect_t connect_req;
  std::unique_ptr<Timer> timeout;
  std::shared_ptr<State> keep_alive;  // while a libuv request points at us

  void Finish(Result<std::shared_ptr<Connection>> r) {
    if (finished) return;
    finished = true;
    if (timeout) timeout->Stop();
    DoneFn fn = std::move(done);
    if (fn) fn(std::move(r));
  }
  void Abandon() {
    finished = true;
    done = nullptr;
    if (gai_pending) uv_cancel(reinterpret_cast<uv_req_t*>(&gai));
    if (tcp != nullptr) {
      CloseAndDelete(tcp);  // a pending connect request completes with ECANCELED
      tcp = nullptr;
    }
    timeout.reset();
  }
};

std::unique_ptr<Connector> Connector::Connect(uv_loop_t* loop, const std::string& host,
                                              uint16_t port, int64_t timeout_ms, DoneFn done) {
  auto s = std::make_shared<State>();
  s->loop = loop;
  s->where = FormatHostPort(host, port);
  s->port = port;
  s->done = std::move(done);
  s->timeout = std::make_unique<Timer>(loop);
  std::weak_ptr<State> weak = s;
  s->timeout->Start(timeout_ms, [weak, timeout_ms] {
    auto st = weak.lock();
    if (!st || st->finished) return;
    std::string where = st->where;
    auto fn = std::move(st->done);
    st->Abandon();
    if (fn) {
      fn(UnavailableError("connect to " + where + ": timed out after " +
                          std::to_string(timeout_ms) + "ms"));
    }
  });
  s->gai.data = s.get();
  s->keep_alive = s;
  s->gai_pending = true;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  int rc = uv_getaddrinfo(
      loop, &s->gai,
      [](uv_getaddrinfo_t* req, int status, addrinfo* res) {
        auto* st = static_cast<State*>(req->data);
        std::shared_ptr<State> hold = std::move(st->keep_alive);
        st->gai_pending = false;
        if (st->finished) {
          uv_freeaddrinfo(res);
          return;
        }
        if (status != 0 || res == nullptr) {
          uv_freeaddrinfo(res);
          st->Finish(UvError("resolve " + st->where, status == 0 ? UV_EAI_NONAME : status));
          return;
        }
        st->tcp = new uv_tcp_t;
        uv_tcp_init(st->loop, st->tcp);
        st->connect_req.data = st;
        st->keep_alive = hold;
        int rc2 = uv_tcp_connect(
            &st->connect_req, st->tcp, res->ai_addr, [](uv_connect_t* creq, int cstatus) {
              auto* cs = static_cast<State*>(creq->data);
              std::shared_ptr<State> hold2 = std::move(cs->keep_alive);
              if (cs->finished) return;  // Abandon() closed the socket
              if (cstatus != 0) {
                CloseAndDelete(cs->tcp);
                cs->tcp = nullptr;
                cs->Finish(UvError("connect to " + cs->where, cstatus));
                return;
              }
              uv_tcp_t* tcp = cs->tcp;
              cs->tcp = nullptr;
              cs->Finish(std::make_shared<Connection>(cs->loop, tcp, cs->where));
            });
        uv_freeaddrinfo(res);
        if (rc2 != 0) {
          st->keep_alive.reset();
          CloseAndDelete(st->tcp);
          st->tcp = nullptr;
          st->Finish(UvError("connect to " + st->where, rc2));
        }
      },
      host.c_str(), std::to_string(port).c_str(), &hints);
  if (rc != 0) {
    s->gai_pending = false;
    s->keep_alive.reset();
    s->Finish(UvError("resolve " + s->where, rc));
  }
  return std::unique_ptr<Connector>(new Connector(std::move(s)));
}

Connector::~Connector() {
  if (state_) state_->Abandon();
}

}  // namespace lifeboat::agent
