#include "cli/cluster_client.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>

#include <nlohmann/json.hpp>

#include "agent/api_client.h"
#include "agent/config_options.h"
#include "base/tcp.h"
#include "syncproto/session.h"

namespace lifeboat::cli {
namespace {

using Deadline = std::chrono::steady_clock::time_point;

int MsLeft(Deadline d) {
  auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(d - std::chrono::steady_clock::now())
          .count();
  return left > 0 ? static_cast<int>(left) : 0;
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

Status Connect(const restore::NodeAddress& addr, Deadline deadline, Fd* out) {
  ASSIGN_OR_RETURN(out->fd, ConnectTcp(addr.host, addr.port, MsLeft(deadline)));
  return Status::Ok();
}

// Drives `session` over `fd` (through `tls` when set) until it is done().
Status Converse(int fd, syncproto::TlsChannel* tls, syncproto::PullerSession& session,
                Deadline deadline, const std::string& who) {
  std::vector<uint8_t> buf(64 << 10);
  for (;;) {
    // Move session output into the socket's outgoing bytes.
    std::span<const uint8_t> plain = session.output();
    if (tls && !plain.empty()) {
      RETURN_IF_ERROR(tls->WritePlaintext(plain));
      session.ConsumeOutput(plain.size());
    }
    std::span<const uint8_t> wire = tls ? tls->ciphertext() : session.output();
    if (session.done() && wire.empty()) return session.status();
    if (MsLeft(deadline) == 0) return TemporaryError(who + ": timed out");
    pollfd p{fd, static_cast<short>(POLLIN | (wire.empty() ? 0 : POLLOUT)), 0};
    int n = ::poll(&p, 1, MsLeft(deadline));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return TemporaryError(who + ": timed out");
    if (p.revents & POLLOUT) {
      ssize_t w = ::send(fd, wire.data(), wire.size(), MSG_NOSIGNAL);
      if (w < 0 && errno != EAGAIN && errno != EINTR) return PosixError("send", who, errno);
      if (w > 0) {
        if (tls) {
          tls->ConsumeCiphertext(static_cast<size_t>(w));
        } else {
          session.ConsumeOutput(static_cast<size_t>(w));
        }
      }
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (r < 0) return PosixError("recv", who, errno);
      if (r == 0) {
        if (!session.status().ok()) return session.status();
        if (session.done()) return Status::Ok();
        return UnavailableError(who + ": connection closed before the answer");
      }
      std::span<const uint8_t> in(buf.data(), static_cast<size_t>(r));
      if (tls) {
        Status s = tls->FeedCiphertext(in);
        if (!s.ok()) return s.WithContext(who);
        std::span<const uint8_t> pt = tls->plaintext();
        Status f = session.Feed(pt);
        tls->ConsumePlaintext(pt.size());
        if (!f.ok() && session.output().empty()) return f;
      } else {
        Status f = session.Feed(in);
        if (!f.ok() && session.output().empty()) return f;
      }
    }
  }
}

class HeldProbe final : public restore::ClusterProbe {
 public:
  explicit HeldProbe(ClusterClient* client) : client_(client) {}
  bool Alive(const restore::NodeAddress& peer) override { return restore::TcpConnects(peer, 2000); }
  std::vector<restore::PeerCopy> CopiesOf(
      const std::string& peer, const std::vector<restore::NodeAddress>& others) override {
    std::vector<restore::PeerCopy> out;
    for (const restore::NodeAddress& n : others) {
      restore::PeerCopy c;
      c.node = n.name;
      Result<syncproto::HeldAnswerMsg> a = client_->QueryHeld(n, peer);
      if (!a.ok()) {
        c.error = a.status().message();
      } else {
        c.reachable = true;
        for (const syncproto::HeldPeer& h : a->peers) {
          if (h.peer != peer) continue;
          c.generation = h.generation;
          c.pulled_ms = h.last_pull_ms;
        }
      }
      out.push_back(std::move(c));
    }
    return out;
  }
  Status PullFrom(const restore::NodeAddress& holder, const std::string& peer) override {
    return client_->PullHeldCopy(holder, peer);
  }

 private:
  ClusterClient* client_;
};

}  // namespace

Result<std::unique_ptr<ClusterClient>> ClusterClient::Create(const conf::Config& config,
                                                             int timeout_ms) {
  std::unique_ptr<ClusterClient> c(new ClusterClient(config, timeout_ms));
  if (std::optional<syncproto::TlsConfig> tc = agent::TlsConfigFor(config)) {
    ASSIGN_OR_RETURN(c->tls_, syncproto::TlsContext::Create(syncproto::TlsRole::kClient, *tc));
  }
  return c;
}

Result<syncproto::HeldAnswerMsg> ClusterClient::QueryHeld(const restore::NodeAddress& node,
                                                          const std::string& peer) {
  const std::string who = "node " + node.name + " (" + node.ToString() + ")";
  Deadline deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms_);
  Fd fd;
  RETURN_IF_ERROR(Connect(node, deadline, &fd));
  std::optional<syncproto::TlsChannel> tls;
  if (tls_) {
    tls.emplace(tls_, who);
    RETURN_IF_ERROR(tls->Start());
  }
  syncproto::PullerSession session(config_.auth.cluster_key,
                                   {config_.node.uuid, config_.node.name});
  RETURN_IF_ERROR(session.Start());
  std::optional<Result<syncproto::HeldAnswerMsg>> answer;
  RETURN_IF_ERROR(
      session.RequestHeld(peer, [&](Result<syncproto::HeldAnswerMsg> a) { answer = std::move(a); })
          .status());
  session.Finish();
  Status s = Converse(fd.fd, tls ? &*tls : nullptr, session, deadline, who);
  if (answer) {
    if (!answer->ok() &&
        answer->status().message().find("unknown frame type") != std::string::npos) {
      return DataError(
          who + " does not answer HELD_QUERY (an older version): " + answer->status().message());
    }
    return std::move(*answer);
  }
  if (!s.ok()) return s.WithContext(who);
  return UnavailableError(who + ": no answer to HELD_QUERY");
}

Status ClusterClient::PullHeldCopy(const restore::NodeAddress& holder, const std::string& peer) {
  agent::ApiCall call =
      agent::ApiCallFor(config_.agent.api.host, config_.agent.api.port, config_.auth.api_token);
  call.method = "POST";
  call.target =
      "/sync?peer=" + agent::QueryEscape(peer) + "&from=" + agent::QueryEscape(holder.name);
  call.read_timeout_ms = config_.agent.limits.pull_deadline.count() + 60'000;
  std::optional<nlohmann::json> result;
  call.on_line = [&](std::string_view line) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.value("type", "") == "result") result = std::move(j);
  };
  Result<agent::ApiReply> reply = agent::CallApi(call);
  if (!reply.ok()) return reply.status().WithContext("asking the local agent to pull");
  if (reply->status != 200) {
    nlohmann::json e = nlohmann::json::parse(reply->body, nullptr, false);
    return UnavailableError("the local agent refused to pull " + peer + " from " + holder.name +
                                ": " +
                                (e.is_object() ? e.value("message", reply->body) : reply->body),
                            false);
  }
  if (!result) return TemporaryError("the local agent ended the pull without a result");
  if (result->value("ok", false)) return Status::Ok();
  std::string msg = "the pull failed";
  if ((*result)["error"].is_object()) msg = (*result)["error"].value("message", msg);
  return TemporaryError(msg);
}

std::unique_ptr<restore::ClusterProbe> ClusterClient::NewProbe() {
  return std::make_unique<HeldProbe>(this);
}

}  // namespace lifeboat::cli
