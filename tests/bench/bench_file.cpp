// bench_file: one file pulled through the syncproto engine (PullerSession and
// ServerSession on two threads over a socketpair), for scripts/bench-file.
//
//   bench_file make-pair OLD NEW SIZE_MIB SEED   # random OLD, NEW = 100 x 4 KiB edits + 1 MiB
//   append bench_file pull --new NEW [--basis OLD] [--warm] [--unchanged] --out OUT
//
// `pull` prints one line: "wall_s=<s> puller_to_server=<bytes> server_to_puller=<bytes>
// delta=<0|1> signature=<0|1>". --warm pre-computes the basis summary into the
// signature cache before the clock starts (the agent keeps it from the
// previous pull); --unchanged asks the manifest "since" the current
// generation, which is how the agent checks a peer that did not change.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "base/env.h"
#include "syncproto/session.h"

using namespace lifeboat;
using namespace lifeboat::syncproto;

namespace {

const std::string kKey = "bench-cluster-key-0123456789";

// Serves one file as export path "datasets/bench/file"; its entry (digest)
// is computed before the clock starts, as the scanner's stat cache would.
class OneFileSource : public ExportSource {
 public:
  OneFileSource(std::string path, FileEntry entry) : path_(std::move(path)), entry_(entry) {}
  Result<std::unique_ptr<ExportView>> OpenView() override {
    return std::unique_ptr<ExportView>(new View(this));
  }

 private:
  class View : public ExportView {
   public:
    explicit View(OneFileSource* s) : s_(s) {}
    Result<ManifestAnswer> ManifestSince(uint64_t since, const std::string& boot,
                                         const std::vector<std::string>&) override {
      ManifestAnswer a;
      a.manifest.generation = 2;
      a.manifest.boot_id = "bench";
      if (since == 2 && boot == "bench") {
        a.kind = ManifestAnswer::Kind::kUnchanged;
        return a;
      }
      a.kind = ManifestAnswer::Kind::kFull;
      a.manifest.files.push_back(s_->entry_);
      return a;
    }
    Result<std::unique_ptr<ReadableFile>> OpenFile(const std::string& path,
                                                   FileEntry* entry) override {
      if (path != s_->entry_.path) return NotFoundError(path);
      *entry = s_->entry_;
      return Env::Default()->OpenRead(s_->path_);
    }
    OneFileSource* s_;
  };
  std::string path_;
  FileEntry entry_;
};

Result<Digest128> HashFile(const std::string& path) {
  ASSIGN_OR_RETURN(auto f, Env::Default()->OpenRead(path));
  Xxh3Hasher h;
  RETURN_IF_ERROR(ForEachChunk(*f, 1 << 20, [&](std::span<const uint8_t> d) {
    h.Update(d);
    return Status::Ok();
  }));
  return h.Finish();
}

// Drives one session over a socket until it is done.
template <typename Session>
Status Drive(Session& s, int fd, uint64_t* sent) {
  std::vector<uint8_t> buf(1 << 20);
  bool eof = false;
  while (!s.done() && !eof) {
    pollfd p{fd, static_cast<short>(POLLIN | (s.output().empty() ? 0 : POLLOUT)), 0};
    if (poll(&p, 1, -1) < 0) return PosixError("poll", "socketpair", errno);
    if (p.revents & (POLLIN | POLLHUP)) {
      ssize_t n = read(fd, buf.data(), buf.size());
      if (n < 0) return PosixError("read", "socketpair", errno);
      if (n == 0) eof = true;
      RETURN_IF_ERROR(s.Feed(std::span<const uint8_t>(buf.data(), static_cast<size_t>(n))));
    }
    if (p.revents & POLLOUT) {
      auto out = s.output();
      ssize_t n = write(fd, out.data(), out.size());
      if (n < 0) return PosixError("write", "socketpair", errno);
      *sent += static_cast<uint64_t>(n);
      s.ConsumeOutput(static_cast<size_t>(n));
      RETURN_IF_ERROR(s.Pump());
    }
  }
  shutdown(fd, SHUT_WR);
  return Status::Ok();
}

int MakePair(const std::string& old_path, const std::string& new_path, uint64_t mib,
             uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto fill = [&](std::vector<uint8_t>& b) {
    for (size_t i = 0; i + 8 <= b.size(); i += 8) {
      uint64_t v = rng();
      std::memcpy(&b[i], &v, 8);
    }
  };
  std::vector<uint8_t> buf(1 << 20);
  auto oldf = *Env::Default()->OpenWrite(old_path);
  auto newf = *Env::Default()->OpenWrite(new_path);
  // 100 scattered 4 KiB edits at seeded offsets.
  std::vector<uint64_t> edits;
  for (int i = 0; i < 100; ++i) edits.push_back(rng() % ((mib << 20) - 4096));
  for (uint64_t m = 0; m < mib; ++m) {
    fill(buf);
    if (!oldf->Append(buf).ok()) return 1;
    uint64_t base = m << 20;
    for (uint64_t e : edits) {
      for (uint64_t o = e; o < e + 4096; ++o) {
        if (o >= base && o < base + buf.size()) buf[o - base] ^= 0x5a;
      }
    }
    if (!newf->Append(buf).ok()) return 1;
  }
  fill(buf);
  if (!newf->Append(buf).ok()) return 1;  // 1 MiB append
  return oldf->Close().ok() && newf->Close().ok() ? 0 : 1;
}

int Pull(int argc, char** argv) {
  std::string new_path, basis_path, out_path;
  bool warm = false, unchanged = false;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--new" && i + 1 < argc)
      new_path = argv[++i];
    else if (a == "--basis" && i + 1 < argc)
      basis_path = argv[++i];
    else if (a == "--out" && i + 1 < argc)
      out_path = argv[++i];
    else if (a == "--warm")
      warm = true;
    else if (a == "--unchanged")
      unchanged = true;
    else {
      std::fprintf(stderr, "bench_file: unknown argument %s\n", a.c_str());
      return 64;
    }
  }
  // Before the clock: what the exporter's scanner and the puller's catalog know.
  FileEntry entry;
  entry.path = "datasets/bench/file";
  entry.size = Env::Default()->Stat(new_path)->size;
  entry.mode = 0644;
  entry.digest = *HashFile(new_path);
  OneFileSource source(new_path, entry);
  auto cache = NewMemorySignatureCache();
  std::optional<Digest128> basis_digest;
  if (!basis_path.empty()) {
    basis_digest = *HashFile(basis_path);
    if (warm) {
      auto sum = SummarizeBasis(**Env::Default()->OpenRead(basis_path), true);
      cache->Insert(std::make_shared<const BasisSummary>(std::move(*sum)));
    }
  }

  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return 74;
  auto t0 = std::chrono::steady_clock::now();
  uint64_t s2p = 0, p2s = 0;
  Status server_status;
  std::thread server_thread([&] {
    ServerSession server(&source, kKey, {"bench-server", "server"});
    server_status = Drive(server, sv[1], &s2p);
  });
  PullerOptions po;
  po.cache = cache.get();
  std::vector<std::unique_ptr<WritableFile>> outs;  // outlive the puller (its callbacks)
  PullerSession puller(kKey, {"bench-puller", "puller"}, po);
  Status file_status = InternalError("not requested");
  FileTransferStats stats;
  if (!puller.Start().ok()) return 70;
  auto on_manifest = [&](Result<ManifestAnswer> a) {
    if (!a.ok()) {
      file_status = a.status();
      return;
    }
    if (a->kind == ManifestAnswer::Kind::kUnchanged) {
      file_status = Status::Ok();
    } else {
      for (const FileEntry& e : a->manifest.files) {
        if (basis_digest && e.digest == *basis_digest) {
          file_status = Status::Ok();  // we hold it already
          continue;
        }
        FileRequest req;
        req.path = e.path;
        req.expected = e;
        if (!basis_path.empty()) req.basis = *Env::Default()->OpenRead(basis_path);
        req.basis_digest = basis_digest;
        outs.push_back(*Env::Default()->OpenWrite(out_path));
        req.out = outs.back().get();
        req.sync_output = false;  // rsync does not fsync either
        auto r =
            puller.RequestFile(std::move(req), [&](const Status& s, const FileTransferStats& st) {
              file_status = s;
              stats = st;
            });
        if (!r.ok()) file_status = r.status();
      }
    }
    puller.Finish();
  };
  if (!puller.RequestManifest(unchanged ? 2 : 0, unchanged ? "bench" : "", {}, on_manifest).ok()) {
    return 70;
  }
  Status ps = Drive(puller, sv[0], &p2s);
  server_thread.join();
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  close(sv[0]);
  close(sv[1]);
  if (!ps.ok() || !server_status.ok() || !file_status.ok()) {
    std::fprintf(stderr, "bench_file: puller %s; server %s; file %s\n", ps.ToString().c_str(),
                 server_status.ToString().c_str(), file_status.ToString().c_str());
    return 1;
  }
  std::printf("wall_s=%.3f puller_to_server=%llu server_to_puller=%llu delta=%d signature=%d\n",
              wall, static_cast<unsigned long long>(p2s), static_cast<unsigned long long>(s2p),
              stats.delta ? 1 : 0, stats.signature_sent ? 1 : 0);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 6 && std::string(argv[1]) == "make-pair") {
    return MakePair(argv[2], argv[3], std::stoull(argv[4]), std::stoull(argv[5]));
  }
  if (argc >= 2 && std::string(argv[1]) == "pull") return Pull(argc, argv);
  std::fprintf(stderr,
               "usage: bench_file make-pair OLD NEW SIZE_MIB SEED\n"
               "       bench_file pull --new NEW [--basis OLD] [--warm] [--unchanged] --out OUT\n");
  return 64;
}
