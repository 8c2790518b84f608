// Test helpers for the catalog tests: the exports tests' helpers, and a
// pull from an export into a Store without the network.
#ifndef LIFEBOAT_TESTS_UNIT_CATALOG_TEST_UTIL_H_
#define LIFEBOAT_TESTS_UNIT_CATALOG_TEST_UTIL_H_

#include <functional>
#include <span>
#include <string>
#include <vector>

#include "catalog/store.h"
#include "syncproto/export_source.h"
#include "tests/unit/exports/test_util.h"

namespace lifeboat::catalog::testing {

using exports::testing::CopyTree;
using exports::testing::DirExport;
using exports::testing::DirFileEntry;
using exports::testing::ExportFixture;
using exports::testing::OpenPeerExporter;
using exports::testing::Read;
using exports::testing::SampleImageManifest;
using exports::testing::SamplePayload;
using exports::testing::SamplesDir;
using exports::testing::TempDir;
using exports::testing::Uuid;
using exports::testing::Write;

// Where the bytes of export path `rel` of generation `g` are (its checkout
// or, for a file, its object); "" when `g` has no such entry.
inline std::string FileOf(const InstanceGeneration& g, const std::string& rel) {
  for (const StoredFile& f : g.files) {
    if (f.entry.path == rel) return f.local_path;
  }
  return "";
}

// What the agent's puller does, without the network: ask the view for the
// manifest since what the store holds, plan, copy each transfer whole (or
// `mangle` it), commit.
inline Result<PlanSummary> PullFrom(syncproto::ExportSource& source, Store& store,
                                    const std::string& peer,
                                    std::function<void(std::string&)> mangle = nullptr,
                                    std::vector<std::string> services = {}) {
  ASSIGN_OR_RETURN(auto view, source.OpenView());
  ASSIGN_OR_RETURN(auto txn, store.BeginPull(peer, services));
  auto held = store.Peer(peer);
  ASSIGN_OR_RETURN(auto answer, view->ManifestSince(held ? held->generation : 0,
                                                    held ? held->boot_id : "", services));
  ASSIGN_OR_RETURN(PlanSummary plan, txn->Plan(answer));
  for (const Transfer& t : txn->transfers()) {
    syncproto::FileEntry entry;
    ASSIGN_OR_RETURN(auto in, view->OpenFile(t.entry.path, &entry));
    std::string data;
    RETURN_IF_ERROR(ForEachChunk(*in, 1 << 16, [&](std::span<const uint8_t> c) {
      data.append(reinterpret_cast<const char*>(c.data()), c.size());
      return Status::Ok();
    }));
    if (mangle) mangle(data);
    ASSIGN_OR_RETURN(auto out, txn->StageFile(t.entry.path));
    RETURN_IF_ERROR(out->Append(data));
    RETURN_IF_ERROR(txn->FinishFile(t.entry.path, std::move(out)));
  }
  RETURN_IF_ERROR(txn->Commit());
  return plan;
}

}  // namespace lifeboat::catalog::testing

#endif  // LIFEBOAT_TESTS_UNIT_CATALOG_TEST_UTIL_H_
