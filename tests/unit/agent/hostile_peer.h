// The hostile-peer harness: the agent's real puller (StartPeerPull, libuv,
// TLS-PSK, catalog Store) pulls over a real TCP connection on 127.0.0.1 from
// a scripted malicious server. The server is a genuine ServerSession behind
// TLS with the cluster key, serving an export that lies (bad paths, escaping
// symlinks, content that does not match the manifest) and whose frames can
// be rewritten on the way out (oversized frames, zstd bombs, trickling) or
// cut off after any frame. Used by hostile_peer_test.cpp and
// hostile_limits_test.cpp.
#ifndef LIFEBOAT_TESTS_UNIT_AGENT_HOSTILE_PEER_H_
#define LIFEBOAT_TESTS_UNIT_AGENT_HOSTILE_PEER_H_

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <thread>

#include "agent/peer_puller.h"
#include "agent/uv.h"
#include "catalog/store.h"
#include "exports/exporter.h"
#include "exports/provider.h"
#include "syncproto/frame.h"
#include "syncproto/manifest_codec.h"
#include "syncproto/session.h"
#include "syncproto/tls_channel.h"
#include "tests/unit/base/test_dir.h"
#include "tests/unit/catalog/test_util.h"

namespace lifeboat::agent::hostile {

using catalog::testing::DirExport;
using syncproto::FileEntry;
using syncproto::Frame;
using syncproto::FrameType;
using syncproto::ManifestAnswer;

inline const std::string kKey = "hostile-peer-test-cluster-key-0123456789abcdef";

using TempDir = ::lifeboat::testing::TestDir;

inline std::shared_ptr<const syncproto::TlsContext> Tls(syncproto::TlsRole role,
                                                        const std::string& key = kKey) {
  syncproto::TlsConfig c;
  c.mode = syncproto::TlsMode::kPsk;
  c.cluster_key = key;
  auto r = syncproto::TlsContext::Create(role, c);
  REQUIRE(r.ok());
  return *r;
}

// ---- The lies ---------------------------------------------------------------

struct Script {
  // Files the manifest claims (added or changed): path -> content announced
  // (size and digest in the manifest entry).
  std::map<std::string, std::string> announce;
  // What is actually served for a path (default: the announced content).
  std::map<std::string, std::string> serve;
  // Last word on the manifest (after `announce`).
  std::function<void(ManifestAnswer&)> manifest;
  // Rewrites each frame the server sends; appends the bytes to put on the
  // wire to *out. Null: frames go out unchanged.
  std::function<void(const Frame&, std::vector<uint8_t>* out)> frame;
  // > 0: the server sends one byte per this many milliseconds.
  int trickle_ms = 0;
  // >= 0: the server closes the connection right after sending this many
  // frames (handshake frames included), once they are on the wire.
  int close_after_frames = -1;
  // Not null: set to the number of frames the server sent on its last
  // connection (read it after the server is destroyed).
  int* frames_sent = nullptr;
};

class MemFile final : public ReadableFile {
 public:
  MemFile(std::string path, std::string data) : path_(std::move(path)), data_(std::move(data)) {}
  Result<size_t> ReadAt(uint64_t off, std::span<uint8_t> buf) override {
    if (off >= data_.size()) return size_t{0};
    size_t n = std::min<size_t>(buf.size(), data_.size() - off);
    std::memcpy(buf.data(), data_.data() + off, n);
    return n;
  }
  Result<FileStat> Stat() override {
    FileStat st{};
    st.type = FileType::kRegular;
    st.size = data_.size();
    st.mode = 0644;
    return st;
  }
  const std::string& path() const override { return path_; }

 private:
  std::string path_, data_;
};

inline FileEntry EntryFor(const std::string& path, const std::string& content) {
  FileEntry e;
  e.path = path;
  e.kind = syncproto::EntryKind::kFile;
  e.size = content.size();
  e.mode = 0644;
  e.mtime_ns = 1'700'000'000'000'000'000;
  e.digest = Xxh3Digest(content);
  e.sha256 = Sha256Digest(content);
  return e;
}

// The honest exporter's view with the script's lies on top. Every manifest is
// a full one with a newer generation, so the puller always has work to do.
class LyingSource final : public syncproto::ExportSource {
 public:
  LyingSource(syncproto::ExportSource* real, const Script* script) : real_(real), script_(script) {}

  Result<std::unique_ptr<syncproto::ExportView>> OpenView() override {
    ASSIGN_OR_RETURN(auto view, real_->OpenView());
    return std::unique_ptr<syncproto::ExportView>(new View(std::move(view), script_));
  }

 private:
  class View final : public syncproto::ExportView {
   public:
    View(std::unique_ptr<syncproto::ExportView> real, const Script* s)
        : real_(std::move(real)), s_(s) {}

    Result<ManifestAnswer> ManifestSince(uint64_t, const std::string&,
                                         const std::vector<std::string>& services) override {
      ASSIGN_OR_RETURN(ManifestAnswer a, real_->ManifestSince(0, "", services));
      a.kind = ManifestAnswer::Kind::kFull;
      a.manifest.generation += 100;
      auto& files = a.manifest.files;
      for (const auto& [path, content] : s_->announce) {
        std::erase_if(files, [&](const FileEntry& e) { return e.path == path; });
        files.push_back(EntryFor(path, content));
      }
      std::sort(files.begin(), files.end(),
                [](const FileEntry& x, const FileEntry& y) { return x.path < y.path; });
      if (s_->manifest) s_->manifest(a);
      return a;
    }

    Result<std::unique_ptr<ReadableFile>> OpenFile(const std::string& path,
                                                   FileEntry* entry) override {
      auto announced = s_->announce.find(path);
      if (announced == s_->announce.end()) return real_->OpenFile(path, entry);
      *entry = EntryFor(path, announced->second);
      auto served = s_->serve.find(path);
      const std::string& data = served != s_->serve.end() ? served->second : announced->second;
      return std::unique_ptr<ReadableFile>(new MemFile(path, data));
    }

   private:
    std::unique_ptr<syncproto::ExportView> real_;
    const Script* s_;
  };

  syncproto::ExportSource* real_;
  const Script* script_;
};

// ---- The malicious server -----------------------------------------------------

// Serves connections on 127.0.0.1 (port 0) from its own thread, one at a
// time, until destroyed.
class HostileServer {
 public:
  HostileServer(syncproto::ExportSource* source, const Script* script)
      : source_(source), script_(script), tls_(Tls(syncproto::TlsRole::kServer)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(listen_fd_, 4) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { Run(); });
  }
  ~HostileServer() {
    stop_ = true;
    thread_.join();
    ::close(listen_fd_);
  }
  uint16_t port() const { return port_; }

 private:
  void Run() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) continue;
      Serve(fd);
      ::close(fd);
    }
  }

  void Serve(int fd) {
    syncproto::TlsChannel tls(tls_, "puller");
    syncproto::ServerSession session(source_, kKey,
                                     {"564dd1ac-164d-cc50-247c-b2eb0cf21ce5", "headnode1"});
    syncproto::FrameDecoder frames(64u << 20);
    std::vector<uint8_t> wire;  // ciphertext not yet sent
    if (!tls.Start().ok()) return;
    auto last_send = std::chrono::steady_clock::now();
    int sent_frames = 0;
    bool closing = false;
    if (script_->frames_sent) *script_->frames_sent = 0;
    if (script_->close_after_frames == 0) return;
    while (!stop_) {
      Status pumped = session.Pump();
      auto out = session.output();
      if (!out.empty() && !closing) {
        std::vector<uint8_t> plain;
        if (script_->frame || script_->close_after_frames >= 0 || script_->frames_sent) {
          frames.Append(out);
          for (;;) {
            if (script_->close_after_frames >= 0 && sent_frames >= script_->close_after_frames) {
              closing = true;
              break;
            }
            auto next = frames.Next();
            if (!next.ok() || !next->has_value()) break;
            ++sent_frames;
            if (script_->frames_sent) *script_->frames_sent = sent_frames;
            if (script_->frame) {
              script_->frame(**next, &plain);
            } else {
              syncproto::AppendFrame(&plain, (*next)->type, (*next)->flags, (*next)->stream,
                                     (*next)->payload);
            }
          }
        } else {
          plain.assign(out.begin(), out.end());
        }
        session.ConsumeOutput(out.size());
        if (!tls.WritePlaintext(plain).ok()) return;
      }
      auto c = tls.ciphertext();
      wire.insert(wire.end(), c.begin(), c.end());
      tls.ConsumeCiphertext(c.size());
      if (!wire.empty()) {
        size_t n = wire.size();
        if (script_->trickle_ms > 0) {
          auto now = std::chrono::steady_clock::now();
          n = now - last_send >= std::chrono::milliseconds(script_->trickle_ms) ? 1 : 0;
          if (n) last_send = now;
        }
        if (n > 0) {
          ssize_t w = ::send(fd, wire.data(), n, MSG_NOSIGNAL | MSG_DONTWAIT);
          if (w < 0 && errno != EAGAIN) return;
          if (w > 0) wire.erase(wire.begin(), wire.begin() + w);
        }
      }
      if (!pumped.ok() || (session.done() && wire.empty())) return;
      if (closing && wire.empty()) return;  // cut off right after frame k
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 2) <= 0) continue;
      uint8_t buf[65536];
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) return;
      if (!tls.FeedCiphertext(std::span<const uint8_t>(buf, static_cast<size_t>(n))).ok()) {
        auto alert = tls.ciphertext();  // tell the puller why, like the agent does
        (void)::send(fd, alert.data(), alert.size(), MSG_NOSIGNAL);
        return;
      }
      auto plain = tls.plaintext();
      if (!plain.empty()) {
        Status fed = session.Feed(plain);
        tls.ConsumePlaintext(plain.size());
        if (!fed.ok() && session.output().empty()) return;
      }
    }
  }

  syncproto::ExportSource* source_;
  const Script* script_;
  std::shared_ptr<const syncproto::TlsContext> tls_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// ---- The puller side ----------------------------------------------------------

struct Fixture {
  TempDir root;
  std::string data_dir = root.Sub("data");
  std::string export_root = root.Sub("export");  // the honest peer's files
  std::unique_ptr<DirExport> exp;
  std::unique_ptr<exports::Provider> provider;
  std::unique_ptr<exports::Exporter> exporter;
  std::unique_ptr<catalog::Store> store;
  std::string victim;  // a file held after the honest pull
  std::string victim_content;
  uint64_t honest_generation = 0;

  Fixture() {
    exp = std::make_unique<DirExport>(export_root);
    provider = exports::MakeDirProvider(*Env::Default(), export_root);
    exports::ExporterOptions eo;
    eo.provider = provider.get();
    eo.state_dir = root.Sub("export-state");
    eo.node_uuid = "564dd1ac-164d-cc50-247c-b2eb0cf21ce5";
    eo.node_name = "headnode1";
    auto e = exports::Exporter::Open(*Env::Default(), *Clock::Real(), eo);
    REQUIRE(e.ok());
    exporter = std::move(e).value();
    catalog::StoreOptions so;
    so.data_dir = data_dir;
    auto s = catalog::Store::Open(*Env::Default(), *Clock::Real(), so);
    REQUIRE(s.ok());
    store = std::move(s).value();
    victim = "datasets/" + exp->imgapi + "/etc/imgapi.config.json";
    victim_content = R"({"port": 8080})";
  }

  // One pull of peer `peer` from 127.0.0.1:port; returns its result.
  PullResult Pull(uint16_t port, const std::string& peer = "hn1", int64_t deadline_ms = 20'000,
                  const std::string& key = kKey) {
    auto results = PullAll({{peer, port}}, deadline_ms, key);
    return results.at(peer);
  }

  // Concurrent pulls on one loop; results by peer, in the order they ended.
  std::map<std::string, PullResult> PullAll(
      const std::vector<std::pair<std::string, uint16_t>>& peers, int64_t deadline_ms,
      const std::string& key = kKey, std::vector<std::string>* order = nullptr) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    auto tls = Tls(syncproto::TlsRole::kClient, key);
    std::map<std::string, PullResult> results;
    std::vector<std::unique_ptr<PullJob>> jobs;
    for (const auto& [peer, port] : peers) {
      PullerConfig pc;
      pc.peer = peer;
      pc.host = "127.0.0.1";
      pc.port = port;
      pc.cluster_key = key;
      pc.tls = tls;
      pc.self = {"11111111-2222-4333-8444-555555555555", "headnode0"};
      pc.connect_timeout_ms = 5'000;
      pc.io_timeout_ms = 5'000;
      pc.deadline_ms = deadline_ms;
      pc.store = store.get();
      std::string name = peer;
      jobs.push_back(StartPeerPull(
          &loop, pc, PullRequest{}, [](const PullProgress&) {},
          [&results, order, name](const PullResult& r) {
            results[name] = r;
            if (order) order->push_back(name);
          }));
    }
    bool finished = RunLoopUntil(
        &loop, [&] { return results.size() == peers.size(); }, 60'000);
    jobs.clear();
    DrainAndCloseLoop(&loop);
    REQUIRE(finished);
    return results;
  }

  void HonestPull() {
    Script honest;
    LyingSource src(exporter.get(), &honest);
    HostileServer server(&src, &honest);
    PullResult r = Pull(server.port());
    INFO(r.status.ToString());
    REQUIRE(r.status.ok());
    REQUIRE(r.files > 0);
    honest_generation = r.generation;
    REQUIRE(HeldVictim() == victim_content);
  }

  std::string HeldVictim() {
    auto gen = store->Instance(exp->imgapi);
    if (!gen.ok()) return "<" + gen.status().ToString() + ">";
    for (const auto& f : gen->files) {
      if (f.entry.path == victim) return catalog::testing::Read(f.local_path);
    }
    return "<not held>";
  }

  // The promises after a failed hostile pull.
  void ExpectPreviousGenerationIntact() {
    auto peer = store->Peer("hn1");
    REQUIRE(peer.has_value());
    CHECK(peer->generation == honest_generation);
    CHECK(HeldVictim() == victim_content);
    auto report = store->Verify();
    REQUIRE(report.ok());
    CHECK(report->ok());
    // Nothing outside data_dir: the temp root holds only what the test made.
    auto top = Env::Default()->ListDir(root.path());
    REQUIRE(top.ok());
    std::vector<std::string> names;
    for (const auto& e : *top) names.push_back(e.name);
    std::sort(names.begin(), names.end());
    CHECK(names == std::vector<std::string>{"data", "export", "export-state"});
    CHECK_FALSE(Exists(*Env::Default(), root.Sub("pwned")));
    CHECK_FALSE(Exists(*Env::Default(), data_dir + "/pwned"));
  }
};

inline void ExpectRefused(const PullResult& r, const std::vector<std::string>& mentions) {
  INFO(r.status.ToString());
  REQUIRE_FALSE(r.status.ok());
  CHECK(r.status.message().find("hn1") != std::string::npos);
  for (const auto& m : mentions) CHECK(r.status.message().find(m) != std::string::npos);
}

// Rewrites the first FILE_DATA frame with `replace`; the rest pass unchanged.
inline std::function<void(const Frame&, std::vector<uint8_t>*)> OnFirstFileData(
    std::function<void(const Frame&, std::vector<uint8_t>*)> replace) {
  auto done = std::make_shared<bool>(false);
  return [done, replace](const Frame& f, std::vector<uint8_t>* out) {
    if (f.type == FrameType::kFileData && !*done) {
      *done = true;
      replace(f, out);
      return;
    }
    syncproto::AppendFrame(out, f.type, f.flags, f.stream, f.payload);
  };
}

}  // namespace lifeboat::agent::hostile

#endif  // LIFEBOAT_TESTS_UNIT_AGENT_HOSTILE_PEER_H_
