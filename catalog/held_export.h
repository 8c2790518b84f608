// HeldExport: what this node holds of its peers, served to other nodes
// (syncproto HELD_QUERY and HELD_MANIFEST_REQUEST, docs/syncproto.md) so a
// survivor can find, and pull, the freshest copy of a lost peer. Read-only
// over the Store: it never modifies data_dir.
//
// A held view describes peer P's copy as P exported it: P's node uuid, name,
// generation and boot id; the current generation of every instance held from
// P (removed ones left out) under the export paths, and the images of their
// origin chains (images/<uuid>/manifest.json and file), and the SAPI
// application and service records held for P's services. It answers UNCHANGED
// for P's held generation and boot id, FULL otherwise (no history is kept).
// Files are opened from the store; a file retention removed after the view
// was opened is a kNotFound for that file.
//
// Threads: thread-safe (the Store is). `store` must outlive this object and
// every view it opened.
#ifndef LIFEBOAT_CATALOG_HELD_EXPORT_H_
#define LIFEBOAT_CATALOG_HELD_EXPORT_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/env.h"
#include "catalog/store.h"
#include "syncproto/export_source.h"

namespace lifeboat::catalog {

class HeldExport final : public syncproto::HeldSource {
 public:
  HeldExport(Env& env, const Store* store) : env_(env), store_(store) {}

  Result<std::vector<syncproto::HeldPeer>> Held(const std::string& peer) override;
  Result<std::unique_ptr<syncproto::ExportView>> OpenHeldView(const std::string& peer) override;

 private:
  // Offers the small file at `local_path` as `export_path` (digest computed
  // now); false when it cannot be read.
  bool AddRecord(const std::string& local_path, const std::string& export_path,
                 syncproto::Manifest* m, std::map<std::string, std::string>* local);

  Env& env_;
  const Store* store_;
};

}  // namespace lifeboat::catalog

#endif  // LIFEBOAT_CATALOG_HELD_EXPORT_H_
