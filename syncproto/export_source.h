// ExportSource: what a node serves to its peers. Implemented by catalog's
// exporter; consumed by syncproto's ServerSession (through the agent).
#ifndef LIFEBOAT_SYNCPROTO_EXPORT_SOURCE_H_
#define LIFEBOAT_SYNCPROTO_EXPORT_SOURCE_H_

#include <memory>
#include <string>
#include <vector>

#include "base/env.h"
#include "base/status.h"
#include "syncproto/frame.h"
#include "syncproto/manifest.h"

namespace lifeboat::syncproto {

// A consistent view of the export for one pull (one peer connection). It pins
// what it serves (for the smartos provider: a ZFS snapshot taken for the pull)
// until it is destroyed. Its methods may be called from any one thread at a
// time; OpenFile results may be read concurrently.
class ExportView {
 public:
  virtual ~ExportView() = default;

  // The answer to "since generation `since` of boot `boot_id`", restricted to
  // `services` (empty = all; instance-less paths such as images are included
  // when an included instance uses them, sapi app/service records always).
  virtual Result<ManifestAnswer> ManifestSince(uint64_t since, const std::string& boot_id,
                                               const std::vector<std::string>& services) = 0;

  // Opens the regular file at export path `path` for serving, and tells the
  // entry (size, digest) it is served as. Fails with kNotFound for a path not
  // in the view. The bytes read from the returned file hash to entry.digest
  // unless the file changed underneath; the server then reports a retryable
  // error for that file rather than send torn data.
  virtual Result<std::unique_ptr<ReadableFile>> OpenFile(const std::string& path,
                                                         FileEntry* entry) = 0;
};

class ExportSource {
 public:
  virtual ~ExportSource() = default;
  // Rescans as needed and returns a view of the current export. Thread-safe.
  virtual Result<std::unique_ptr<ExportView>> OpenView() = 0;
};

// What a node holds of its peers' exports (its catalog), for HELD_QUERY and
// HELD_MANIFEST_REQUEST (docs/syncproto.md section 3). Implemented over the
// catalog by the agent's wiring; read-only. Thread-safe.
class HeldSource {
 public:
  virtual ~HeldSource() = default;
  // The peers held, sorted by name; only `peer` when it is not "" (an
  // unknown name gives an empty list, not an error).
  virtual Result<std::vector<HeldPeer>> Held(const std::string& peer) = 0;
  // A view of the copy of `peer` held here, served like an export: P's
  // current generations under the export paths, with P's node uuid, name,
  // generation and boot id in every manifest answer. kNotFound when nothing
  // of `peer` is held.
  virtual Result<std::unique_ptr<ExportView>> OpenHeldView(const std::string& peer) = 0;
};

}  // namespace lifeboat::syncproto

#endif  // LIFEBOAT_SYNCPROTO_EXPORT_SOURCE_H_
