// The puller's cost of a pull that changes one file, by held instance size
// (issue 13): Store::Open, then a full pull of N files, then one-file deltas
// with Plan and Commit timed apart, then the same after a reopen.
//   bench_pull_scale <data_dir> <files> [edits]
// Built on request (ninja bench_pull_scale), never part of ctest.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>

#include "base/clock.h"
#include "base/digest.h"
#include "base/env.h"
#include "base/sha256.h"
#include "catalog/store.h"

using namespace lifeboat;
using syncproto::EntryKind;
using syncproto::FileEntry;
using syncproto::ManifestAnswer;

namespace {

const std::string kUuid = "b2f1a9d4-7c3e-4f0a-9e57-2d1c6b8a4e10";

double Ms(std::chrono::steady_clock::time_point a) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count();
}

FileEntry File(const std::string& path, const std::string& data) {
  FileEntry f;
  f.path = path;
  f.kind = EntryKind::kFile;
  f.mode = 0644;
  f.size = data.size();
  f.digest = Xxh3Digest(data);
  f.sha256 = Sha256Digest(data);
  return f;
}

FileEntry Dir(const std::string& path) {
  FileEntry f;
  f.path = path;
  f.kind = EntryKind::kDir;
  f.mode = 0755;
  return f;
}

std::string Content(int i, int edit) {
  return "{\"n\": " + std::to_string(i) + ", \"edit\": " + std::to_string(edit) + "}\n";
}

ManifestAnswer Answer(uint64_t gen) {
  ManifestAnswer a;
  a.manifest.node_uuid = "564dd1ac-164d-cc50-247c-b2eb0cf21ce5";
  a.manifest.node_name = "src";
  a.manifest.generation = gen;
  a.manifest.boot_id = "boot";
  a.manifest.instances.push_back({kUuid, "imgapi0", "imgapi", "", {}});
  return a;
}

struct Times {
  double plan = 0, transfer = 0, commit = 0;
};

Times Pull(catalog::Store& store, const ManifestAnswer& a,
           const std::map<std::string, std::string>& data) {
  Times t;
  auto txn = store.BeginPull("src");
  if (!txn.ok()) std::abort();
  auto t0 = std::chrono::steady_clock::now();
  auto plan = (*txn)->Plan(a);
  if (!plan.ok()) {
    std::fprintf(stderr, "plan: %s\n", plan.status().ToString().c_str());
    std::abort();
  }
  t.plan = Ms(t0);
  t0 = std::chrono::steady_clock::now();
  for (const catalog::Transfer& x : (*txn)->transfers()) {
    auto out = (*txn)->StageFile(x.entry.path);
    if (!out.ok() || !(*out)->Append(data.at(x.entry.path)).ok()) std::abort();
    if (!(*txn)->FinishFile(x.entry.path, std::move(*out)).ok()) std::abort();
  }
  t.transfer = Ms(t0);
  t0 = std::chrono::steady_clock::now();
  Status c = (*txn)->Commit();
  if (!c.ok()) {
    std::fprintf(stderr, "commit: %s\n", c.ToString().c_str());
    std::abort();
  }
  t.commit = Ms(t0);
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  const std::string dir = argv[1];
  const int n = std::stoi(argv[2]);
  const int edits = argc > 3 ? std::stoi(argv[3]) : 5;
  catalog::StoreOptions o;
  o.data_dir = dir;
  Env& env = *Env::Default();
  auto t0 = std::chrono::steady_clock::now();
  auto store = catalog::Store::Open(env, *Clock::Real(), o);
  if (!store.ok()) std::abort();
  std::printf("open %.1f ms\n", Ms(t0));

  const std::string ds = "datasets/" + kUuid;
  ManifestAnswer full = Answer(1);
  std::map<std::string, std::string> data;
  auto add = [&](FileEntry f, const std::string& d) {
    data[f.path] = d;
    full.manifest.files.push_back(std::move(f));
  };
  full.manifest.files.push_back(Dir(ds));
  for (int d = 0; d * 100 < n; ++d) {
    char name[32];
    std::snprintf(name, sizeof(name), "/d%04d", d);
    full.manifest.files.push_back(Dir(ds + name));
    for (int i = d * 100; i < n && i < (d + 1) * 100; ++i) {
      char fname[32];
      std::snprintf(fname, sizeof(fname), "/f%06d.json", i);
      add(File(ds + name + fname, Content(i, 0)), Content(i, 0));
    }
  }
  add(File("vms/" + kUuid + ".json", "{}"), "{}");
  std::sort(full.manifest.files.begin(), full.manifest.files.end(),
            [](const FileEntry& a, const FileEntry& b) { return a.path < b.path; });
  uint64_t gen = 1;
  if (auto held = (*store)->Peer("src"); held && held->generation > 0) {
    gen = held->generation;  // pulled before: deltas only
  } else {
    t0 = std::chrono::steady_clock::now();
    Pull(**store, full, data);
    std::printf("full pull %.1f ms\n", Ms(t0));
  }
  const std::string edited = ds + "/d0000/f000000.json";
  auto delta_pulls = [&](const char* label) {
    for (int e = 0; e < edits; ++e) {
      ManifestAnswer a = Answer(gen + 1);
      a.kind = ManifestAnswer::Kind::kDelta;
      a.since_generation = gen;
      ++gen;
      static int edit = 0;
      ++edit;
      const std::string c = Content(0, edit);
      a.manifest.files.push_back(File(edited, c));
      std::map<std::string, std::string> d{{edited, c}};
      Times t = Pull(**store, a, d);
      std::printf("%s delta %d: plan %.2f ms transfer %.2f ms commit %.2f ms\n", label, e, t.plan,
                  t.transfer, t.commit);
    }
  };
  delta_pulls("warm");
  store->reset();
  t0 = std::chrono::steady_clock::now();
  store = catalog::Store::Open(env, *Clock::Real(), o);
  if (!store.ok()) std::abort();
  std::printf("reopen %.1f ms\n", Ms(t0));
  delta_pulls("reopened");
  return 0;
}
