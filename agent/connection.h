// TCP connections and listeners on the loop.
//
// A Connection moves bytes between a socket and its owner: received bytes go
// to `on_data`, Write() queues bytes to send. Back-pressure both ways: the
// owner pauses reading while it is busy with what it got (PauseReading /
// ResumeReading), and watches queued_bytes() / `on_drain` before producing
// more output. An idle timeout closes a connection on which no byte moved for
// a while; an optional token bucket (the node's bandwidth limit, shared by
// every connection that reads peer data) delays reads.
//
// Lifetime: a Connection is held by shared_ptr; every libuv callback keeps it
// alive while it runs, so an owner may drop its reference from inside
// on_data/on_close. `on_close` is called exactly once, with OK when Close()
// was asked without an error or the peer ended the stream cleanly.
//
// Threads: loop thread only.
#ifndef LIFEBOAT_AGENT_CONNECTION_H_
#define LIFEBOAT_AGENT_CONNECTION_H_

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "agent/schedule.h"
#include "agent/uv.h"
#include "base/status.h"
#include "base/tcp.h"  // FormatHostPort

namespace lifeboat::agent {

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  struct Callbacks {
    std::function<void(std::span<const uint8_t>)> on_data;
    std::function<void()> on_eof;    // peer finished sending; default: Close(OK)
    std::function<void()> on_drain;  // the write queue emptied
    std::function<void(const Status&)> on_close;
  };

  // Takes ownership of a connected (or accepted) TCP handle.
  Connection(uv_loop_t* loop, uv_tcp_t* tcp, std::string peer_name);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Starts reading. Call once, after the callbacks are set.
  void Start(Callbacks cb);

  // Queues bytes for sending (kept, not copied, until written); ignored after Close.
  void Write(std::vector<uint8_t> bytes);
  void Write(std::string_view bytes) { Write(std::vector<uint8_t>(bytes.begin(), bytes.end())); }
  size_t queued_bytes() const { return queued_bytes_; }

  void PauseReading();
  void ResumeReading();

  // No byte read or written for `ms` closes with a retryable error; 0 disables.
  void SetIdleTimeout(int64_t ms);
  // Reads count against `bucket` (not owned; must outlive the connection).
  void SetReadLimiter(TokenBucket* bucket) { limiter_ = bucket; }
  // Marks activity (e.g. the owner finished work on the thread pool).
  void Touch();

  // Closes now: pending writes are dropped, on_close(why) runs on a later turn.
  void Close(const Status& why = Status::Ok());
  // Closes once every queued byte is written (a half-close first).
  void CloseAfterFlush();

  bool closed() const { return closed_; }
  const std::string& peer_name() const { return peer_name_; }
  uint64_t bytes_read() const { return bytes_read_; }
  uint64_t bytes_written() const { return bytes_written_; }

 private:
  static void OnAlloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
  static void OnRead(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);
  static void OnWrite(uv_write_t* req, int status);
  void StartReadingIfWanted();
  void ArmIdle();
  void FinishClose(Status why);

  uv_loop_t* loop_;
  UvHandle<uv_tcp_t> tcp_;
  std::string peer_name_;
  Callbacks cb_;
  Timer idle_timer_;
  Timer limit_timer_;
  int64_t idle_ms_ = 0;
  TokenBucket* limiter_ = nullptr;
  bool want_read_ = false;
  bool reading_ = false;
  bool limited_ = false;
  bool closed_ = false;
  bool close_after_flush_ = false;
  size_t queued_bytes_ = 0;
  uint64_t bytes_read_ = 0;
  uint64_t bytes_written_ = 0;
  std::unique_ptr<char[]> read_buf_;
};

// Listens on host:port (port 0 picks a free port) and hands out accepted
// connections. Close() or destruction stops listening; live connections stay.
class TcpListener {
 public:
  using AcceptFn = std::function<void(std::shared_ptr<Connection>)>;
  static Result<std::unique_ptr<TcpListener>> Listen(uv_loop_t* loop, const std::string& host,
                                                     uint16_t port, AcceptFn on_accept);
  uint16_t port() const { return port_; }
  void Close() { tcp_.reset(); }

 private:
  TcpListener(uv_loop_t* loop, AcceptFn fn) : loop_(loop), on_accept_(std::move(fn)) {}
  static void OnConnection(uv_stream_t* server, int status);
  uv_loop_t* loop_;
  AcceptFn on_accept_;
  UvHandle<uv_tcp_t> tcp_;
  uint16_t port_ = 0;
};

// Resolves `host` and connects to host:port, giving up after `timeout_ms`.
// `done` runs exactly once on the loop thread. Destroying the returned handle
// cancels the attempt (then `done` is not called).
class Connector {
 public:
  using DoneFn = std::function<void(Result<std::shared_ptr<Connection>>)>;
  static std::unique_ptr<Connector> Connect(uv_loop_t* loop, const std::string& host, uint16_t port,
                                            int64_t timeout_ms, DoneFn done);
  ~Connector();

 private:
  struct State;
  explicit Connector(std::shared_ptr<State> s) : state_(std::move(s)) {}
  std::shared_ptr<State> state_;
};

}  // namespace lifeboat::agent

#endif  // LIFEBOAT_AGENT_CONNECTION_H_
