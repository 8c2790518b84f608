// The two ends of a syncproto connection as socket-free state machines
// (docs/syncproto.md). The agent owns the sockets: it feeds received bytes in
// with Feed(), writes out what output() holds, tells the session how much was
// written with ConsumeOutput(), and calls Pump() when the socket can take more
// so the session produces the next chunks. Tests connect two sessions with an
// in-memory pipe (see tests/unit/syncproto/session_test.cpp).
//
// Threading: each session is a single-threaded object: call it from one
// thread at a time (any thread, e.g. a libuv worker). CPU and disk work
// (hashing, librsync delta and patch, zstd) happens inside Feed()/Pump(),
// bounded per call by the chunk size and the output high-water mark, except
// where noted: the server's coarse pass (PlanCoarse) reads a whole requested
// file in the Feed() that completes its FILE_BASIS; the puller reads a whole
// basis to summarize it (unless FileRequest::basis_summary or the cache has
// it) when it sends the request, and again to compute the librsync signature
// when the server asks for one; a manifest answer is queued whole
// (compressed) regardless of the high-water mark. The same steps are plain
// functions in delta.h, so the agent can precompute them on a thread pool.
//
// Failure: a connection-level failure (bad frame, authentication, version)
// makes Feed()/Pump() return the error; the session queues an ERROR frame in
// output() when the peer should learn why, then is done(): write out what is
// left and close. Every pending request's callback is called once with the
// error. A per-file failure (not found, digest mismatch, bad delta, cancel)
// only ends that stream. The session never publishes anything: a puller
// writes only into the WritableFile the caller supplied; on any failure of a
// file the caller removes that temp file.
#ifndef LIFEBOAT_SYNCPROTO_SESSION_H_
#define LIFEBOAT_SYNCPROTO_SESSION_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "base/digest.h"
#include "base/env.h"
#include "base/status.h"
#include "syncproto/delta.h"
#include "syncproto/export_source.h"
#include "syncproto/frame.h"
#include "syncproto/handshake.h"
#include "syncproto/manifest.h"

namespace lifeboat::syncproto {

struct SessionLimits {
  size_t chunk_bytes = 256u << 10;        // raw FILE_DATA chunk before zstd (<= 1 MiB)
  size_t output_high_water = 4u << 20;    // stop producing when this much is queued
  uint32_t max_streams = 256;             // server: open streams per connection
  int zstd_level = 1;                     // FILE_DATA chunks
  uint64_t whole_file_below = 64u << 10;  // puller: no basis for smaller files
  uint64_t signature_above = 1u << 20;    // server: see WantsSignature()
};

// ---- Server -----------------------------------------------------------------

struct ServerOptions {
  SessionLimits limits;
  Handshake::Options handshake;
  // Answers HELD_QUERY and HELD_MANIFEST_REQUEST; optional (without it both
  // get ERROR NOT_FOUND on their stream). Must outlive the session.
  HeldSource* held = nullptr;
};

struct ServerStats {
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  uint64_t files_served = 0;
  uint64_t files_failed = 0;
  uint64_t manifests_served = 0;
  uint64_t held_queries = 0;
  uint64_t chunks_compressed = 0;  // FILE_DATA frames sent COMPRESSED
  uint64_t chunks_raw = 0;         // sent raw: compression did not pay (or was not tried)
  uint64_t chunks_sampled = 0;     // raw-looking streams: a sample was tried first
};

class ServerSession {
 public:
  // `source` must outlive the session; one ExportView is opened per session
  // on the first manifest or file request and kept until destruction.
  ServerSession(ExportSource* source, std::string cluster_key, NodeIdentity self,
                ServerOptions options = {});
  ~ServerSession();
  ServerSession(const ServerSession&) = delete;
  ServerSession& operator=(const ServerSession&) = delete;

  // Received bytes. Returns a connection-level error (also kept in status()).
  Status Feed(std::span<const uint8_t> data);
  // Produces file chunks (round-robin over streams) until output() holds
  // output_high_water bytes or nothing is left to do.
  Status Pump();

  std::span<const uint8_t> output() const;
  void ConsumeOutput(size_t n);
  // Moves the unconsumed output out (ConsumeOutput of all of it), without a
  // copy when nothing was consumed yet.
  std::vector<uint8_t> TakeOutput();
  // True when streams have data to produce but the output is full: write,
  // ConsumeOutput, then Pump.
  bool WantsOutputSpace() const;

  // The peer said BYE (or the connection failed) and output() is empty:
  // close the connection.
  bool done() const;
  const Status& status() const { return status_; }
  bool authenticated() const;
  const NodeIdentity& peer() const;
  const ServerStats& stats() const { return stats_; }

 private:
  struct Stream;
  Status HandleFrame(const FrameView& frame);
  Status HandleManifestRequest(const FrameView& frame);
  Status HandleHeldQuery(const FrameView& frame);
  Status ServeManifest(uint32_t stream, const ManifestRequestMsg& req);
  Status HandleFileRequest(const FrameView& frame);
  Status HandleFileBasis(Stream& s, const FrameView& frame);
  Status HandleSignatureData(Stream& s, const FrameView& frame);
  Status EnsureView();
  Status StartTransfer(Stream& s);
  Status ProduceChunk(Stream& s);
  void FailStream(uint32_t id, ErrorCode code, const Status& why);
  Status FailConnection(Status status, ErrorCode code);
  void SendChunk(Stream& s, std::span<const uint8_t> raw);
  size_t Compress(std::span<const uint8_t> in);  // into zstd_->buf; SIZE_MAX on error
  static constexpr size_t kCompressSample = 16u << 10;
  std::string Context(uint32_t stream, const std::string& path) const;

  ExportSource* source_;
  ServerOptions options_;
  Handshake handshake_;
  FrameDecoder decoder_;
  std::unique_ptr<ExportView> view_;
  std::string view_held_peer_;  // "" = view_ is our own export
  std::map<uint32_t, std::unique_ptr<Stream>> streams_;
  std::set<uint32_t> seen_ids_;
  uint32_t last_served_ = 0;
  std::vector<uint8_t> out_;
  size_t out_pos_ = 0;
  bool bye_ = false;
  Status status_;
  ServerStats stats_;
  struct Zstd;
  std::unique_ptr<Zstd> zstd_;
};

// ---- Puller -----------------------------------------------------------------

// A persisted or in-memory cache of basis summaries keyed by the basis'
// XXH3-128 (a file is never re-read to learn what an unchanged basis holds).
// Implementations must be thread-safe if shared between sessions.
class SignatureCache {
 public:
  virtual ~SignatureCache() = default;
  virtual std::shared_ptr<const BasisSummary> Lookup(const Digest128& digest) = 0;
  virtual void Insert(std::shared_ptr<const BasisSummary> summary) = 0;
};

// A bounded in-memory SignatureCache (LRU by insertion). Thread-safe.
std::unique_ptr<SignatureCache> NewMemorySignatureCache(size_t max_entries = 1024);

struct PullerOptions {
  SessionLimits limits;
  Handshake::Options handshake;
  uint32_t max_in_flight = 16;      // file requests sent and not finished
  SignatureCache* cache = nullptr;  // optional, must outlive the session
};

struct FileTransferStats {
  uint64_t wire_bytes_in = 0;   // frame bytes received for this stream
  uint64_t wire_bytes_out = 0;  // frame bytes sent for this stream (request, hashes, signature)
  uint64_t bytes_written = 0;   // bytes written to `out`
  bool delta = false;           // the server answered with a DELTA (else WHOLE)
  bool signature_sent = false;  // the server asked for the librsync signature
};

struct FileRequest {
  std::string path;    // export path (validated)
  FileEntry expected;  // the manifest entry; the result must match its size and digest
  // The copy we hold (nullable: the file is sent whole). Read with ReadAt
  // during the request and while patching; the session owns it until the
  // callback ran.
  std::unique_ptr<ReadableFile> basis;
  // Optional: the basis' XXH3-128 when known (catalog), to look the summary
  // up in the cache; and/or a summary computed elsewhere (thread pool).
  std::optional<Digest128> basis_digest;
  std::shared_ptr<const BasisSummary> basis_summary;
  // Where the new content goes: a writer the caller owns (a temp file, the
  // catalog's staged writer) and keeps alive until the callback ran. The
  // session appends; on success it Sync()s (when sync_output) and Close()s it
  // before the callback; on failure it Close()s it and the caller removes
  // what it wrote. The session hashes every byte it appends: a success means
  // the expected size was written and its XXH3-128 is expected.digest.
  WritableFile* out = nullptr;
  bool sync_output = true;
};

class PullerSession {
 public:
  using ManifestCallback = std::function<void(Result<ManifestAnswer>)>;
  using FileCallback = std::function<void(const Status&, const FileTransferStats&)>;
  using HeldCallback = std::function<void(Result<HeldAnswerMsg>)>;

  PullerSession(std::string cluster_key, NodeIdentity self, PullerOptions options = {});
  ~PullerSession();
  PullerSession(const PullerSession&) = delete;
  PullerSession& operator=(const PullerSession&) = delete;

  // Queues the HELLO. Call once, before anything else is sent.
  Status Start();

  // Queue requests; they are sent once authenticated (files: at most
  // max_in_flight at once). Each returns the stream id, or an error when the
  // request is invalid (bad path, no `out`) or the session has failed. The
  // callback is called exactly once, from inside Feed/Pump/Cancel or the
  // destructor (with kUnavailable when the session dies first).
  Result<uint32_t> RequestManifest(uint64_t since_generation, std::string boot_id,
                                   std::vector<std::string> services, ManifestCallback callback);
  // The same for the copy of `held_peer` the server holds in its catalog
  // (HELD_MANIFEST_REQUEST): later RequestFile()s of this session are served
  // from that copy. Do not mix with RequestManifest on one session.
  Result<uint32_t> RequestHeldManifest(std::string held_peer, uint64_t since_generation,
                                       std::string boot_id, std::vector<std::string> services,
                                       ManifestCallback callback);
  // Which generation of `peer` ("" = of every peer) does the server hold?
  // A server that predates HELD_QUERY fails the connection (ERROR PROTOCOL
  // "unknown frame type"): the callback gets that error.
  Result<uint32_t> RequestHeld(std::string peer, HeldCallback callback);
  Result<uint32_t> RequestFile(FileRequest request, FileCallback callback);
  // Cancels a file request: its callback runs now with kTemporary
  // "cancelled"; later frames of the stream are ignored.
  void Cancel(uint32_t stream);
  // Queues BYE once every request finished (call after the last request).
  void Finish();

  Status Feed(std::span<const uint8_t> data);
  Status Pump();
  std::span<const uint8_t> output() const;
  void ConsumeOutput(size_t n);
  std::vector<uint8_t> TakeOutput();  // as ServerSession::TakeOutput

  // Finish() was called, BYE is written out (or the connection failed and the
  // output is drained).
  bool done() const;
  const Status& status() const { return status_; }
  bool authenticated() const;
  const NodeIdentity& peer() const;
  size_t pending() const;  // requests not yet completed

 private:
  struct ManifestStream;
  struct FileStream;
  struct HeldStream;
  Status HandleFrame(const FrameView& frame);
  Status HandleFileFrame(FileStream& f, const FrameView& frame);
  Status SendQueued();
  Status SendFileRequest(FileStream& f);
  void CompleteFile(uint32_t id, Status status);
  Status FailConnection(Status status, std::optional<ErrorCode> code);
  void FailAll(const Status& status);

  PullerOptions options_;
  Handshake handshake_;
  FrameDecoder decoder_;
  uint32_t next_stream_ = 1;
  std::map<uint32_t, std::unique_ptr<ManifestStream>> manifests_;
  std::map<uint32_t, std::unique_ptr<FileStream>> files_;
  std::map<uint32_t, std::unique_ptr<HeldStream>> held_;
  std::deque<uint32_t> queued_;  // stream ids not yet sent (manifests and files)
  std::set<uint32_t> cancelled_;
  size_t files_in_flight_ = 0;
  std::vector<uint8_t> out_;
  size_t out_pos_ = 0;
  bool finishing_ = false;
  bool bye_sent_ = false;
  Status status_;
  struct Zstd;
  std::unique_ptr<Zstd> zstd_;
};

}  // namespace lifeboat::syncproto

#endif  // LIFEBOAT_SYNCPROTO_SESSION_H_
