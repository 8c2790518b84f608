// libFuzzer target: a PullerSession, authenticated against a scripted server
// (fixed nonces), with a manifest request and a file request (with a basis)
// in flight, fed arbitrary bytes as the server's answers. Exercises the
// manifest stream, FILE_START/DATA/END handling, zstd chunks and librsync
// patching on hostile input. Must never crash; every callback must run once.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "syncproto/handshake.h"
#include "syncproto/session.h"

using namespace lifeboat;
using namespace lifeboat::syncproto;

namespace {

const std::string kKey = "fuzz-cluster-key-0123456789";

class MemReadable : public ReadableFile {
 public:
  explicit MemReadable(std::string data) : data_(std::move(data)) {}
  Result<size_t> ReadAt(uint64_t off, std::span<uint8_t> buf) override {
    if (off >= data_.size()) return size_t{0};
    size_t n = std::min<size_t>(buf.size(), data_.size() - off);
    std::memcpy(buf.data(), data_.data() + off, n);
    return n;
  }
  Result<FileStat> Stat() override {
    FileStat st;
    st.type = FileType::kRegular;
    st.size = data_.size();
    return st;
  }
  const std::string& path() const override { return path_; }

 private:
  std::string data_;
  std::string path_ = "mem:basis";
};

class MemWritable : public WritableFile {
 public:
  Status Append(std::span<const uint8_t> d) override {
    size_ += d.size();
    return Status::Ok();
  }
  Status Sync() override { return Status::Ok(); }
  Status Close() override { return Status::Ok(); }
  const std::string& path() const override { return path_; }

 private:
  uint64_t size_ = 0;
  std::string path_ = "mem:out";
};

// The server's handshake bytes for the fixed puller HELLO, computed once.
struct Script {
  std::vector<uint8_t> server_bytes;
  Script() {
    Handshake::Options po, so;
    po.nonce = Nonce{};
    so.nonce = Nonce{};
    so.nonce->fill(7);
    Handshake puller(Role::kPuller, kKey, {"p", "puller"}, po);
    Handshake server(Role::kServer, kKey, {"s", "server"}, so);
    std::vector<uint8_t> p2s;
    if (!puller.Start(&p2s).ok()) std::abort();
    FrameDecoder d;
    d.Append(p2s);
    if (!server.OnFrame(*d.Next().value(), &server_bytes).ok()) std::abort();
    FrameDecoder d2;
    d2.Append(server_bytes);
    std::vector<uint8_t> auth;
    if (!puller.OnFrame(*d2.Next().value(), &auth).ok()) std::abort();
    FrameDecoder d3;
    d3.Append(auth);
    if (!server.OnFrame(*d3.Next().value(), &server_bytes).ok()) std::abort();
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Script script;
  int callbacks = 0;
  {
    PullerOptions opts;
    opts.handshake.nonce = Nonce{};
    opts.limits.whole_file_below = 0;
    MemWritable out;  // outlives the puller, whose destructor closes it
    PullerSession puller(kKey, {"p", "puller"}, opts);
    if (!puller.Start().ok()) std::abort();
    if (!puller.RequestManifest(0, "", {}, [&](Result<ManifestAnswer>) { ++callbacks; }).ok()) {
      std::abort();
    }
    FileRequest req;
    req.path = "datasets/u/f";
    req.expected.size = 16;
    req.basis = std::make_unique<MemReadable>(std::string(20000, 'b'));
    req.out = &out;
    if (!puller
             .RequestFile(std::move(req),
                          [&](const Status&, const FileTransferStats&) { ++callbacks; })
             .ok()) {
      std::abort();
    }
    if (!puller.Feed(script.server_bytes).ok() || !puller.authenticated()) std::abort();
    puller.Feed(std::span<const uint8_t>(data, size)).IgnoreError();
  }
  if (callbacks != 2) std::abort();  // each callback exactly once, even on teardown
  return 0;
}
