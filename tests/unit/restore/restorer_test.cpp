// The restorer end to end in one process: a real dir export, pulled into a
// real catalog Store (exporter -> manifest answer -> PullTxn -> Commit, no
// network), restored through the dir and smartos backends.
#include "restore/restorer.h"

#include <catch2/catch.hpp>

#include <fstream>
#include <map>

#include "base/fault_env.h"
#include "base/lock_file.h"
#include "catalog/store.h"
#include "exports/exporter.h"
#include "exports/provider.h"
#include "restore/deposed.h"
#include "tests/unit/restore/image_files.h"
#include "tests/unit/restore/restore_test_util.h"

namespace lifeboat::restore {
namespace {

using nlohmann::json;
using testing::DirOptions;
using testing::FakeCalls;
using testing::FakeSmartosDir;
using testing::MakeDataTree;
using testing::ReadFile;
using testing::ScopedEnv;
using testing::SnapshotTree;
using testing::TempDir;
using testing::WriteFile;

const std::string kRootImg = "04a48d7d-6bb5-4e83-8c3b-e60a99e0f48f";
const std::string kBaseImg = "1b0ea6a4-55c3-4b2a-9a7e-5e0c6a1f2d30";
const std::string kImgapiImg = "2d74d0fb-5c5e-4ad8-ab2a-0b6a3f8d4f8e";
const std::string kVmapiImg = "3c85e1fc-6d4f-4e9b-bc8f-1c7b9e2a5f41";
const std::string kSapi0 = "a0000000-0000-4000-8000-000000000001";
const std::string kImgapi0 = "b2f1a9d4-7c3e-4f0a-9e57-2d1c6b8a4e10";
const std::string kVmapi0 = "c0000000-0000-4000-8000-000000000003";

json SamplePayload() {
  std::ifstream in(std::string(LIFEBOAT_TEST_DATA_DIR) + "/catalog/vmadm-get-imgapi0.json");
  return json::parse(in);
}

// headnode1's export: sapi0, imgapi0, vmapi0 on an image chain
// root <- base <- {imgapi, vmapi}; sapi uses base directly.
void MakeExport(const std::string& root) {
  auto image = [&](const std::string& uuid, const std::string& origin) {
    json m = {
        {"v", 2}, {"uuid", uuid}, {"name", "img-" + uuid.substr(0, 4)}, {"type", "zone-dataset"}};
    if (!origin.empty()) m["origin"] = origin;
    m["files"] = testing::ImageFiles(std::string(3000, 'i') + uuid);
    WriteFile(root + "/images/" + uuid + "/manifest.json", m.dump(2));
    WriteFile(root + "/images/" + uuid + "/file", std::string(3000, 'i') + uuid);
  };
  image(kRootImg, "");
  image(kBaseImg, kRootImg);
  image(kImgapiImg, kBaseImg);
  image(kVmapiImg, kBaseImg);
  auto instance = [&](const std::string& uuid, const std::string& alias, const std::string& role,
                      const std::string& img) {
    json vm = SamplePayload();
    vm["uuid"] = uuid;
    vm["zonename"] = uuid;
    vm["zfs_filesystem"] = "zones/" + uuid;
    vm["datasets"] = {"zones/" + uuid + "/data"};  // vmadm get's shape: no delegate_dataset
    vm["alias"] = alias;
    vm["image_uuid"] = img;
    vm["tags"]["smartdc_role"] = role;
    for (json& nic : vm["nics"]) {  // every VM its own MACs, as on a real node
      std::string mac = nic["mac"];
      nic["mac"] = mac.substr(0, 12) + uuid.substr(0, 2) + ":" + uuid.substr(2, 2);
    }
    WriteFile(root + "/vms/" + uuid + ".json", vm.dump(2));
    json sapi = {
        {"uuid", uuid},
        {"service_uuid", "6e3b2a1c-9d8f-4e7a-b6c5-d4e3f2a1b0c9"},
        {"params", {{"alias", alias}, {"server_uuid", "564dd1ac-164d-cc50-247c-b2eb0cf21ce5"}}},
        {"type", "vm"}};
    WriteFile(root + "/sapi/" + uuid + ".json", sapi.dump(2));
    MakeDataTree(root + "/datasets/" + uuid);
    WriteFile(root + "/datasets/" + uuid + "/identity", alias + "\n");
  };
  instance(kSapi0, "sapi0", "sapi", kBaseImg);
  instance(kImgapi0, "imgapi0", "imgapi", kImgapiImg);
  instance(kVmapi0, "vmapi0", "vmapi", kVmapiImg);
}

// One peer exporting from a dir, and this node's catalog pulling from it.
class Cluster {
 public:
  Cluster() : clock_(1'800'000'000'000) {
    MakeExport(export_root());
    provider_ = exports::MakeDirProvider(*Env::Default(), export_root());
    exports::ExporterOptions eo;
    eo.provider = provider_.get();
    eo.state_dir = dir_ / "export-state";
    eo.node_uuid = "564dd1ac-164d-cc50-247c-b2eb0cf21ce5";
    eo.node_name = "headnode1";
    eo.racy_window_ms = 0;
    exporter_ = exports::Exporter::Open(*Env::Default(), clock_, eo).value();
    REQUIRE(ReopenStore().ok());
    REQUIRE(Pull().ok());
  }

  std::string export_root() const { return dir_ / "export"; }
  std::string data_dir() const { return dir_ / "data"; }
  std::string target() const { return dir_ / "target"; }
  const TempDir& dir() const { return dir_; }
  ManualClock& clock() { return clock_; }
  catalog::Store& store() { return *store_; }

  Status ReopenStore() {
    store_.reset();
    catalog::StoreOptions so;
    so.data_dir = data_dir();
    ASSIGN_OR_RETURN(store_, catalog::Store::Open(*Env::Default(), clock_, so));
    return Status::Ok();
  }

  // A pull of headnode1's export into the catalog, like the agent does.
  Status Pull() {
    ASSIGN_OR_RETURN(auto view, exporter_->OpenView());
    auto held = store_->Peer("headnode1");
    ASSIGN_OR_RETURN(
        syncproto::ManifestAnswer answer,
        view->ManifestSince(held ? held->generation : 0, held ? held->boot_id : "", {}));
    ASSIGN_OR_RETURN(auto txn, store_->BeginPull("headnode1"));
    ASSIGN_OR_RETURN(auto summary, txn->Plan(answer));
    (void)summary;
    for (const catalog::Transfer& t : txn->transfers()) {
      syncproto::FileEntry entry;
      ASSIGN_OR_RETURN(auto in, view->OpenFile(t.entry.path, &entry));
      ASSIGN_OR_RETURN(auto out, txn->StageFile(t.entry.path));
      RETURN_IF_ERROR(
          ForEachChunk(*in, 1 << 16, [&](std::span<const uint8_t> c) { return out->Append(c); }));
      RETURN_IF_ERROR(txn->FinishFile(t.entry.path, std::move(out)));
    }
    return txn->Commit();
  }

  RestoreContext Context(Backend* backend, ClusterProbe* probe = nullptr, Env* env = nullptr) {
    RestoreContext c;
    c.env = env ? env : Env::Default();
    c.clock = &clock_;
    c.store = store_.get();
    c.backend = backend;
    c.probe = probe;
    c.data_dir = data_dir();
    c.node_name = "headnode0";
    c.node_uuid = "00000000-0000-4000-8000-0000000000aa";
    c.peers = {{"headnode1", "127.0.0.1", 1}, {"headnode2", "127.0.0.1", 2}};
    return c;
  }

 private:
  TempDir dir_;
  ManualClock clock_;
  std::unique_ptr<exports::Provider> provider_;
  std::unique_ptr<exports::Exporter> exporter_;
  std::unique_ptr<catalog::Store> store_;
};

RestoreRequest PeerRequest(uint64_t seed = 1234) {
  RestoreRequest r;
  r.selection.peer = "headnode1";
  r.seed = seed;
  return r;
}

class FakeProbe final : public ClusterProbe {
 public:
  bool alive = false;
  std::vector<PeerCopy> copies;
  int pulls = 0;
  std::function<Status()> on_pull;
  bool Alive(const NodeAddress&) override { return alive; }
  std::vector<PeerCopy> CopiesOf(const std::string&, const std::vector<NodeAddress>&) override {
    return copies;
  }
  Status PullFrom(const NodeAddress&, const std::string&) override {
    ++pulls;
    return on_pull ? on_pull() : Status::Ok();
  }
};

// What a restored target holds, independent of when it was written: file
// contents everywhere, plus the full metadata snapshot of every data tree.
std::string TargetState(const std::string& target) {
  std::string out;
  Env& env = *Env::Default();
  for (const char* top : {"images", "zones"}) {
    auto entries = env.ListDir(JoinPath(target, top));
    if (!entries.ok()) continue;
    std::vector<std::string> names;
    for (const auto& e : *entries) names.push_back(e.name);
    std::sort(names.begin(), names.end());
    for (const std::string& n : names) {
      std::string dir = JoinPath(JoinPath(target, top), n);
      out += std::string(top) + "/" + n + "\n";
      for (const char* f : {"manifest.json", "file", "vm.json", "sapi.json"}) {
        if (Exists(env, JoinPath(dir, f))) {
          out += "  " + std::string(f) + " " + Xxh3Digest(ReadFile(JoinPath(dir, f))).Hex() + "\n";
        }
      }
      if (Exists(env, JoinPath(dir, "data"))) out += SnapshotTree(JoinPath(dir, "data"));
    }
  }
  return out;
}

TEST_CASE("restore --peer rebuilds every instance of the lost node in service order") {
  Cluster c;
  auto backend = NewDirBackend(*Env::Default(), DirOptions(c.target(), 4));
  Restorer restorer(c.Context(backend.get()));
  RestoreReport report;
  Status st = restorer.Run(PeerRequest(), &report);
  INFO(st.ToString());
  REQUIRE(st.ok());

  REQUIRE(report.plan.instances.size() == 3);
  std::vector<std::string> order;
  for (const auto& p : report.plan.instances) order.push_back(p.old_alias + "->" + p.alias);
  CHECK(order == std::vector<std::string>{"sapi0->sapi1", "imgapi0->imgapi1", "vmapi0->vmapi1"});
  CHECK(report.steps_run == report.plan.steps.size());
  CHECK(report.files_verified > 0);
  CHECK(report.bytes_restored > 3 * (1 << 20));

  // Images root first, each once.
  std::vector<std::string> images;
  for (const Step& s : report.plan.steps) {
    if (s.kind == StepKind::kInstallImage) images.push_back(s.image_uuid);
  }
  CHECK(images == std::vector<std::string>{kRootImg, kBaseImg, kImgapiImg, kVmapiImg});

  for (const PlannedInstance& p : report.plan.instances) {
    INFO(p.old_alias);
    CHECK(IsUuid(p.new_uuid));
    CHECK(p.new_uuid != p.old_uuid);
    const std::string zone = c.target() + "/zones/" + p.new_uuid;
    // Modes, mtimes, owners and hard links came through the catalog.
    CHECK(SnapshotTree(zone + "/data") ==
          SnapshotTree(c.export_root() + "/datasets/" + p.old_uuid));
    json vm = json::parse(ReadFile(zone + "/vm.json"));
    CHECK(vm["uuid"] == p.new_uuid);
    CHECK(vm["alias"] == p.alias);
    // Only what `vmadm create` accepts for the brand (proptable.js).
    for (auto it = vm.begin(); it != vm.end(); ++it) {
      INFO(it.key());
      CHECK(CreateAcceptsVmProperty(vm.value("brand", ""), it.key()));
    }
    CHECK_FALSE(vm.contains("datasets"));
    CHECK(vm["nics"][0]["ip"] == "10.99.99.21");
    json sapi = json::parse(ReadFile(zone + "/sapi.json"));
    CHECK(sapi["uuid"] == p.new_uuid);
    CHECK(sapi["params"]["alias"] == p.alias);
    CHECK(sapi["params"]["server_uuid"] == "00000000-0000-4000-8000-0000000000aa");
  }
  for (const std::string& img : {kRootImg, kBaseImg, kImgapiImg, kVmapiImg}) {
    CHECK(ReadFile(c.target() + "/images/" + img + "/file") ==
          ReadFile(c.export_root() + "/images/" + img + "/file"));
  }

  // The catalog remembers what was restored where (for the deposed check).
  auto restored = ListRestoredInstances(*Env::Default(), c.data_dir());
  REQUIRE(restored.ok());
  REQUIRE(restored->size() == 3);
  CHECK(restored->at(kImgapi0).alias == "imgapi1");
  CHECK(restored->at(kImgapi0).peer == "headnode1");
  CHECK(restored->at(kImgapi0).target == c.target());

  // Running the same restore again does nothing.
  std::string before = SnapshotTree(c.target());
  RestoreReport again;
  REQUIRE(restorer.Run(PeerRequest(), &again).ok());
  CHECK(again.already_complete);
  CHECK(again.steps_run == 0);
  CHECK(SnapshotTree(c.target()) == before);
}

TEST_CASE("a dry run (--dry-run) prints the plan and leaves target and catalog byte-identical") {
  Cluster c;
  WriteFile(c.target() + "/zones/existing/vm.json", R"({"alias": "imgapi1"})");
  auto backend = NewDirBackend(*Env::Default(), DirOptions(c.target(), 2));
  Restorer restorer(c.Context(backend.get()));
  std::string target_before = SnapshotTree(c.target());
  std::string catalog_before = SnapshotTree(c.data_dir());
  RestoreRequest req = PeerRequest();
  req.dry_run = true;
  RestoreReport report;
  REQUIRE(restorer.Run(req, &report).ok());
  CHECK(report.plan.instances.size() == 3);
  // images; per instance create, data, await, adopt, sapi, retire
  CHECK(report.plan.steps.size() == 4 + 3 * 6);
  // imgapi1 exists on the target already, so the alias goes one further.
  CHECK(report.plan.instances[1].alias == "imgapi2");
  CHECK(report.steps_run == 0);
  CHECK(report.ToJson()["plan"]["steps"].size() == report.plan.steps.size());
  CHECK(SnapshotTree(c.target()) == target_before);
  CHECK(SnapshotTree(c.data_dir()) == catalog_before);
}

// Every key of a -j document that ends in "_at" holds ISO 8601 UTC or null.
void CheckPointsInTime(const json& j, const std::string& where) {
  if (j.is_array()) {
    for (const json& e : j) CheckPointsInTime(e, where);
    return;
  }
  if (!j.is_object()) return;
  for (const auto& [key, value] : j.items()) {
    INFO(where << "." << key << " = " << value.dump());
    if (key.ends_with("_at")) {
      CHECK((value.is_null() || (value.is_string() && value.get<std::string>().size() == 24 &&
                                 value.get<std::string>().ends_with("Z"))));
    }
    CHECK_FALSE((key.ends_with("_ms") && key != "wall_ms"));  // only durations keep ms
    CheckPointsInTime(value, where + "." + key);
  }
}

TEST_CASE("restore -j gives its points in time as ISO 8601 UTC: run, journal, restore point") {
  Cluster c;
  const int64_t pulled = c.clock().WallMs();
  c.clock().Advance(90'000);
  auto backend = NewDirBackend(*Env::Default(), DirOptions(c.target(), 2));
  Restorer restorer(c.Context(backend.get()));

  RestoreRequest dry = PeerRequest();
  dry.dry_run = true;
  RestoreReport planned;
  REQUIRE(restorer.Run(dry, &planned).ok());
  json pj = planned.ToJson();
  CheckPointsInTime(pj, "dry run");
  CHECK(pj["started_at"] == FormatIso8601Ms(c.clock().WallMs()));
  CHECK(pj["journal"]["started_at"].is_null());  // a dry run writes no journal
  for (const json& i : pj["plan"]["instances"]) CHECK(i["pulled_at"] == FormatIso8601Ms(pulled));

  const int64_t started = c.clock().WallMs();
  RestoreReport report;
  REQUIRE(restorer.Run(PeerRequest(), &report).ok());
  json j = report.ToJson();
  CheckPointsInTime(j, "restore");
  CHECK(j["started_at"] == FormatIso8601Ms(started));
  CHECK(j["finished_at"] == FormatIso8601Ms(started));  // the manual clock stood still
  CHECK(j["journal"]["started_at"] == FormatIso8601Ms(started));
  CHECK(j["journal"]["finished_at"] == FormatIso8601Ms(started));
  for (const json& i : j["plan"]["instances"]) CHECK(i["pulled_at"] == FormatIso8601Ms(pulled));

  // A rerun an hour later (stale data by then: -y): the journal's times are the first run's.
  c.clock().Advance(3'600'000);
  RestoreRequest rerun = PeerRequest();
  rerun.assume_yes = true;
  RestoreReport again;
  REQUIRE(restorer.Run(rerun, &again).ok());
  CHECK(again.already_complete);
  json aj = again.ToJson();
  CheckPointsInTime(aj, "rerun");
  CHECK(aj["started_at"] == FormatIso8601Ms(c.clock().WallMs()));
  CHECK(aj["journal"]["started_at"] == FormatIso8601Ms(started));
  for (const json& i : aj["plan"]["instances"]) CHECK(i["pulled_at"] == FormatIso8601Ms(pulled));
}

TEST_CASE("a corrupted catalog file stops the restore before anything is written") {
  Cluster c;
  auto inst = c.store().Instance(kVmapi0);
  REQUIRE(inst.ok());
  std::string victim;
  for (const auto& f : inst->files) {
    if (f.entry.path.ends_with("/db/images.db")) victim = f.local_path;
  }
  REQUIRE_FALSE(victim.empty());
  // Same size, one byte flipped: only the digest can tell. Written through a
  // new inode so the hard-linked older generations stay intact.
  std::string bytes = ReadFile(victim);
  bytes[4096] ^= 0x20;
  REQUIRE(Env::Default()->RemoveFile(victim).ok());
  WriteFile(victim, bytes, 0600);

  auto backend = NewDirBackend(*Env::Default(), DirOptions(c.target(), 2));
  Restorer restorer(c.Context(backend.get()));
  RestoreReport report;
  Status st = restorer.Run(PeerRequest(), &report);
  REQUIRE_FALSE(st.ok());
  CHECK(st.code() == Code::kData);
  CHECK(st.ExitCode() == 65);
  CHECK(st.message().find(victim) != std::string::npos);
  CHECK(st.message().find("digest") != std::string::npos);
  CHECK_FALSE(Exists(*Env::Default(), c.target()));
  CHECK_FALSE(Exists(*Env::Default(), c.data_dir() + "/restores"));
}

TEST_CASE("a restore that fails halfway resumes and ends identical to a clean run") {
  Cluster c;
  // Clean run, for comparison.
  const std::string clean_target = c.dir() / "clean";
  {
    auto backend = NewDirBackend(*Env::Default(), DirOptions(clean_target, 2));
    RestoreContext ctx = c.Context(backend.get());
    ctx.data_dir = c.dir() / "clean-journal";
    RestoreReport clean;
    REQUIRE(Restorer(ctx).Run(PeerRequest(77), &clean).ok());
  }

  FaultEnv fault(Env::Default());
  auto backend = NewDirBackend(fault, DirOptions(c.target(), 2));
  Restorer restorer(c.Context(backend.get(), nullptr, &fault));
  // The data copy of the second instance fails on its 5th file.
  fault.FailNth(EnvOp::kCopyFile, 4 + 8 + 5, ENOSPC);
  RestoreReport first;
  Status st = restorer.Run(PeerRequest(77), &first);
  REQUIRE_FALSE(st.ok());
  CHECK(st.message().find("restore_data:" + kImgapi0) != std::string::npos);
  CHECK(st.message().find("No space left on device") != std::string::npos);
  CHECK(first.steps_run > 0);
  CHECK(first.steps_run < first.plan.steps.size());

  fault.ClearFaults();
  std::vector<std::string> ran;
  RestoreContext ctx = c.Context(backend.get(), nullptr, &fault);
  ctx.progress = [&](const RestoreContext::Progress& p) {
    if (!p.finished) ran.push_back(p.step->id);
  };
  RestoreReport second;
  // A different seed: the resumed restore must keep the first run's uuids.
  REQUIRE(Restorer(ctx).Run(PeerRequest(78), &second).ok());
  CHECK(second.resumed);
  CHECK(second.steps_skipped_done == first.steps_run);
  CHECK(second.steps_run == first.plan.steps.size() - first.steps_run);
  CHECK(ran.front() == "restore_data:" + kImgapi0);
  for (size_t i = 0; i < first.plan.instances.size(); ++i) {
    CHECK(second.plan.instances[i].new_uuid == first.plan.instances[i].new_uuid);
  }
  CHECK(TargetState(c.target()) == TargetState(clean_target));
}

TEST_CASE("smartos restore resumes after a failed command without repeating a step") {
  Cluster c;
  SmartosBackendOptions o = testing::FakeSmartosOptions(c.dir() / "work");

  auto mutations = [](const std::vector<std::string>& calls) {
    std::vector<std::string> out;
    for (const auto& call : calls) {
      if (call.find(" get") == std::string::npos && call.find(" list") == std::string::npos &&
          call.find(" lookup") == std::string::npos && !call.starts_with("sdc-vmapi ") &&
          !call.starts_with("svcs ")) {
        out.push_back(call);
      }
    }
    return out;
  };
  std::vector<std::string> clean_calls;
  {
    ScopedEnv state("FAKE_SMARTOS_STATE", c.dir() / "smartos-clean");
    auto backend = NewSmartosBackend(*Env::Default(), o);
    RestoreContext ctx = c.Context(backend.get());
    ctx.data_dir = c.dir() / "clean-journal";
    RestoreReport r;
    Status st = Restorer(ctx).Run(PeerRequest(5), &r);
    INFO(st.ToString());
    REQUIRE(st.ok());
    clean_calls = mutations(FakeCalls(c.dir() / "smartos-clean"));
    // installs; per instance create, update, start, 2 NICs unknown to NAPI
    // (PUT 404, POST), update do_not_inventory, sapi; then per instance the
    // retirement's NAPI list and SAPI DELETE (VMAPI calls are not counted)
    CHECK(clean_calls.size() == 4 + 3 * 11);
    CHECK_FALSE(Exists(*Env::Default(), c.dir() / "smartos-clean/net-agent.log"));
  }

  ScopedEnv state("FAKE_SMARTOS_STATE", c.dir() / "smartos");
  auto backend = NewSmartosBackend(*Env::Default(), o);
  Restorer restorer(c.Context(backend.get()));
  RestoreReport first;
  {
    ScopedEnv fail("FAKE_SMARTOS_FAIL_AT", "8");
    Status st = restorer.Run(PeerRequest(5), &first);
    REQUIRE_FALSE(st.ok());
    CHECK(st.message().find("injected failure") != std::string::npos);
  }
  RestoreReport second;
  REQUIRE(restorer.Run(PeerRequest(5), &second).ok());
  CHECK(second.resumed);
  auto calls = mutations(FakeCalls(c.dir() / "smartos"));
  // Exactly the clean run's commands, plus the one that failed (the second
  // instance's `vmadm update autoboot=true` after its data, the 8th state
  // change) and its retry.
  REQUIRE(clean_calls.size() > 8);
  CHECK(clean_calls[7].starts_with("vmadm update "));
  std::vector<std::string> expected = clean_calls;
  expected.insert(expected.begin() + 7, clean_calls[7]);
  CHECK(calls == expected);
  for (const auto& p : second.plan.instances) {
    CHECK(SnapshotTree(c.dir() / ("smartos/zones/" + p.new_uuid + "/data"), false) ==
          SnapshotTree(c.export_root() + "/datasets/" + p.old_uuid, false));
  }
}

// ---- retire_old_records --------------------------------------------------------

const std::string kLostServer = "44454144-0000-4000-8000-00000000dead";

// What Triton still holds of headnode1's lost instances, in the fake state
// `state`: each VMAPI record (the exported payload on kLostServer, listed in
// the fake CNAPI with `server_status`, "" = not listed), its SAPI instance,
// and its NICs in NAPI, owned by the old VM.
void SeedLostInstances(Cluster& c, const std::string& state, const std::string& server_status) {
  for (const std::string& old : {kSapi0, kImgapi0, kVmapi0}) {
    json vm = json::parse(ReadFile(c.export_root() + "/vms/" + old + ".json"));
    vm["server_uuid"] = kLostServer;
    WriteFile(state + "/vmapi/vms/" + old + ".json", vm.dump(2));
    WriteFile(state + "/sapi/" + old + ".json",
              ReadFile(c.export_root() + "/sapi/" + old + ".json"));
    for (const json& nic : vm["nics"]) {
      std::string mac = nic["mac"];
      std::erase(mac, ':');
      WriteFile(state + "/napi/" + mac + ".json", json({{"mac", nic["mac"]},
                                                        {"ip", nic.value("ip", "")},
                                                        {"belongs_to_uuid", old},
                                                        {"belongs_to_type", "zone"},
                                                        {"owner_uuid", vm["owner_uuid"]}})
                                                      .dump());
    }
  }
  if (!server_status.empty()) WriteFile(state + "/cnapi/servers/" + kLostServer, server_status);
}

// The warnings of retire_old_records steps ("retire_old_records:<old uuid>: ...").
std::vector<std::string> RetireWarnings(const RestoreReport& report) {
  std::vector<std::string> out;
  for (const std::string& w : report.warnings) {
    if (w.starts_with("retire_old_records")) out.push_back(w);
  }
  return out;
}

size_t CallIndex(const std::vector<std::string>& calls, const std::string& text, bool last) {
  size_t found = calls.size();
  for (size_t i = 0; i < calls.size(); ++i) {
    if (calls[i].find(text) == std::string::npos) continue;
    found = i;
    if (!last) break;
  }
  return found;
}

// This node restoring the lost headnode's instances with the fake smartos
// tools, the lost instances' records seeded with the lost server listed in
// CNAPI as `lost_server_state`.
struct LostHeadnode {
  explicit LostHeadnode(const std::string& lost_server_state)
      : backend(NewSmartosBackend(*Env::Default(), testing::FakeSmartosOptions(c.dir() / "work"))),
        restorer(c.Context(backend.get())) {
    SeedLostInstances(c, state, lost_server_state);
  }
  Cluster c;
  const std::string state = c.dir() / "smartos";
  ScopedEnv env{"FAKE_SMARTOS_STATE", state};
  std::unique_ptr<Backend> backend;
  Restorer restorer;
};

TEST_CASE(
    "a smartos restore retires the lost instances' records last and the new ones keep their NICs") {
  // The old records name a server CNAPI lists as running: VMAPI's destroy
  // job then runs through, deleting every MAC an old record still lists.
  LostHeadnode h("running");
  Cluster& c = h.c;
  const std::string& state = h.state;
  Restorer& restorer = h.restorer;
  RestoreReport report;
  Status st = restorer.Run(PeerRequest(5), &report);
  INFO(st.ToString());
  REQUIRE(st.ok());
  CHECK(report.plan.retire_old_records);
  CHECK(RetireWarnings(report).empty());

  // The plan ends with one retirement per instance, after every handover.
  const auto& steps = report.plan.steps;
  REQUIRE(steps.size() > 3);
  for (size_t i = steps.size() - 3; i < steps.size(); ++i) {
    CHECK(steps[i].kind == StepKind::kRetireOldRecords);
  }
  auto calls = FakeCalls(state);
  const size_t last_handover = std::max(CallIndex(calls, "sdc-sapi /instances -X POST", true),
                                        CallIndex(calls, "do_not_inventory=false", true));
  REQUIRE(last_handover < calls.size());
  CHECK(CallIndex(calls, "sdc-napi /nics?belongs_to_uuid=", false) > last_handover);
  CHECK(CallIndex(calls, " -X PUT -d @" + (c.dir() / "work/") + kSapi0, false) > last_handover);

  for (const PlannedInstance& p : report.plan.instances) {
    INFO(p.old_alias);
    json old = json::parse(ReadFile(state + "/vmapi/vms/" + p.old_uuid + ".json"));
    CHECK(old["state"] == "destroyed");
    CHECK(old["zone_state"] == "destroyed");
    CHECK(old["nics"] == json::array());
    CHECK(old["alias"] == p.old_alias);
    CHECK(old["server_uuid"] == kLostServer);
    CHECK_FALSE(Exists(*Env::Default(), state + "/sapi/" + p.old_uuid + ".json"));
    CHECK(Exists(*Env::Default(), state + "/sapi/" + p.new_uuid + ".json"));
    // Its NICs, same MACs, belong to the new VM and survived the destroy.
    json vm = json::parse(ReadFile(state + "/vms/" + p.new_uuid + ".json"));
    for (const json& nic : vm["nics"]) {
      std::string mac = nic["mac"];
      std::erase(mac, ':');
      INFO(mac);
      REQUIRE(Exists(*Env::Default(), state + "/napi/" + mac + ".json"));
      CHECK(json::parse(ReadFile(state + "/napi/" + mac + ".json"))["belongs_to_uuid"] ==
            p.new_uuid);
    }
  }
  CHECK_FALSE(Exists(*Env::Default(), state + "/napi-deleted.log"));
  CHECK_FALSE(Exists(*Env::Default(), state + "/net-agent.log"));
}

TEST_CASE("restore --keep-old-records leaves the lost instances' records as they were") {
  LostHeadnode h("running");
  const std::string& state = h.state;
  Restorer& restorer = h.restorer;
  RestoreRequest req = PeerRequest(5);
  req.keep_old_records = true;
  RestoreReport report;
  Status st = restorer.Run(req, &report);
  INFO(st.ToString());
  REQUIRE(st.ok());
  CHECK_FALSE(report.plan.retire_old_records);
  CHECK_FALSE(report.ToJson()["plan"]["retire_old_records"].get<bool>());
  for (const Step& s : report.plan.steps) CHECK(s.kind != StepKind::kRetireOldRecords);
  for (const std::string& old : {kSapi0, kImgapi0, kVmapi0}) {
    INFO(old);
    json vm = json::parse(ReadFile(state + "/vmapi/vms/" + old + ".json"));
    CHECK(vm["state"] == "running");
    CHECK_FALSE(vm["nics"].empty());
    CHECK(Exists(*Env::Default(), state + "/sapi/" + old + ".json"));
  }
  for (const std::string& call : FakeCalls(state)) {
    CHECK(call.find("/instances/") == std::string::npos);
    CHECK(call.find("belongs_to_uuid") == std::string::npos);
    CHECK_FALSE((call.starts_with("sdc-vmapi ") && call.find(" -X ") != std::string::npos));
  }
}

TEST_CASE(
    "SAPI keeping an old instance while the lost server is in CNAPI is a restore warning, shown "
    "again on every run") {
  LostHeadnode h("unknown");  // the lost headnode, listed, not running
  const std::string& state = h.state;
  Restorer& restorer = h.restorer;
  RestoreReport report;
  Status st = restorer.Run(PeerRequest(5), &report);
  INFO(st.ToString());
  REQUIRE(st.ok());
  const std::vector<std::string> warnings = RetireWarnings(report);
  REQUIRE(warnings.size() == 3);
  for (const std::string& old : {kSapi0, kImgapi0, kVmapi0}) {
    INFO(old);
    CHECK(std::count_if(warnings.begin(), warnings.end(), [&](const std::string& w) {
            return w.starts_with("retire_old_records:" + old + ": ") &&
                   w.find("sdc-cnapi /servers/" + kLostServer + " -X DELETE") != std::string::npos;
          }) == 1);
    CHECK(Exists(*Env::Default(), state + "/sapi/" + old + ".json"));
    CHECK(json::parse(ReadFile(state + "/vmapi/vms/" + old + ".json"))["nics"] == json::array());
  }
  RestoreReport again;
  REQUIRE(restorer.Run(PeerRequest(5), &again).ok());
  CHECK(again.already_complete);
  CHECK(RetireWarnings(again) == warnings);
}

// Fails the restore at its 3rd state change (an image install),
// then rewrites its journal as `edit` says.
void FailEarlyAndEditJournal(Restorer& restorer, RestoreRequest req,
                             const std::function<void(json&)>& edit) {
  {
    ScopedEnv fail("FAKE_SMARTOS_FAIL_AT", "3");
    RestoreReport first;
    REQUIRE_FALSE(restorer.Run(req, &first).ok());
    REQUIRE_FALSE(first.journal_path.empty());
    json j = json::parse(ReadFile(first.journal_path));
    edit(j);
    WriteFile(first.journal_path, j.dump(2));
  }
}

TEST_CASE("a journal from before retire_old_records resumes as planned, without it") {
  LostHeadnode h("running");
  const std::string& state = h.state;
  Restorer& restorer = h.restorer;
  FailEarlyAndEditJournal(restorer, PeerRequest(5), [](json& j) {
    REQUIRE(j.contains("retire_old_records"));
    j.erase("retire_old_records");
    auto& steps = j["steps"];
    steps.erase(
        std::remove_if(steps.begin(), steps.end(),
                       [](const json& s) { return s["step"]["kind"] == "retire_old_records"; }),
        steps.end());
  });
  RestoreReport resumed;
  Status st = restorer.Run(PeerRequest(5), &resumed);
  INFO(st.ToString());
  REQUIRE(st.ok());
  CHECK(resumed.resumed);
  CHECK_FALSE(resumed.plan.retire_old_records);
  CHECK(resumed.plan.instances.size() == 3);
  for (const std::string& old : {kSapi0, kImgapi0, kVmapi0}) {
    CHECK(Exists(*Env::Default(), state + "/sapi/" + old + ".json"));
  }
  for (const std::string& call : FakeCalls(state))
    CHECK(call.find("/instances/") == std::string::npos);
}

TEST_CASE("resuming with --keep-old-records leaves out the retirements not run yet") {
  LostHeadnode h("running");
  const std::string& state = h.state;
  Restorer& restorer = h.restorer;
  FailEarlyAndEditJournal(restorer, PeerRequest(5), [](json&) {});
  RestoreRequest keep = PeerRequest(5);
  keep.keep_old_records = true;
  RestoreReport resumed;
  Status st = restorer.Run(keep, &resumed);
  INFO(st.ToString());
  REQUIRE(st.ok());
  CHECK(resumed.resumed);
  CHECK_FALSE(resumed.plan.retire_old_records);
  CHECK(std::count_if(resumed.warnings.begin(), resumed.warnings.end(), [](const std::string& w) {
          return w.find("3 retire_old_records step(s) not run yet are left out") !=
                 std::string::npos;
        }) == 1);
  for (const std::string& old : {kSapi0, kImgapi0, kVmapi0}) {
    CHECK(Exists(*Env::Default(), state + "/sapi/" + old + ".json"));
  }
  for (const std::string& call : FakeCalls(state))
    CHECK(call.find("/instances/") == std::string::npos);
  json j = json::parse(ReadFile(resumed.journal_path));
  CHECK(j["retire_old_records"] == false);
  for (const json& s : j["steps"]) CHECK(s["step"]["kind"] != "retire_old_records");
  RestoreReport again;
  REQUIRE(restorer.Run(PeerRequest(5), &again).ok());
  CHECK(again.already_complete);
}

// The dir backend, seeing on "this node" the HA instances a test gives it.
class HaSeeingBackend final : public Backend {
 public:
  HaSeeingBackend(std::unique_ptr<Backend> inner,
                  std::map<std::string, std::vector<LocalInstance>> local)
      : inner_(std::move(inner)), local_(std::move(local)) {}
  std::string name() const override { return inner_->name(); }
  std::string target() const override { return inner_->target(); }
  Result<bool> HasImage(const std::string& uuid) override { return inner_->HasImage(uuid); }
  Result<std::set<std::string>> TargetAliases() override { return inner_->TargetAliases(); }
  Result<StepResult> Run(const Step& step, const StepInput& input) override {
    return inner_->Run(step, input);
  }
  Result<std::optional<std::vector<LocalInstance>>> LocalInstances(
      const std::string& service) override {
    auto it = local_.find(service);
    return std::optional<std::vector<LocalInstance>>(
        it == local_.end() ? std::vector<LocalInstance>{} : it->second);
  }

 private:
  std::unique_ptr<Backend> inner_;
  std::map<std::string, std::vector<LocalInstance>> local_;
};

TEST_CASE("a restore is refused while an HA service has no healthy instance here, unless --force") {
  Cluster c;
  const Backend::LocalInstance ok{"5b5d3c2e-0000-4000-8000-000000000001", "manatee0", true, ""};
  const Backend::LocalInstance moray{"5b5d3c2e-0000-4000-8000-000000000002", "moray0", true, ""};
  const Backend::LocalInstance down{"5b5d3c2e-0000-4000-8000-000000000003", "binder0", false,
                                    "svcs -xvz: svc:/smartdc/application/zookeeper:default "
                                    "State: maintenance"};
  HaSeeingBackend backend(NewDirBackend(*Env::Default(), DirOptions(c.target(), 2)),
                          {{"manatee", {ok}}, {"moray", {moray}}, {"binder", {down}}});
  Restorer restorer(c.Context(&backend));
  RestoreReport report;
  Status st = restorer.Run(PeerRequest(), &report);
  REQUIRE_FALSE(st.ok());
  CHECK(st.code() == Code::kTemporary);
  CHECK_THAT(st.message(), Catch::Contains("HA service binder is not healthy on this node") &&
                               Catch::Contains("binder0") && Catch::Contains("maintenance") &&
                               Catch::Contains("--force"));
  CHECK_FALSE(Exists(*Env::Default(), c.target()));

  RestoreRequest forced = PeerRequest();
  forced.force = true;
  RestoreReport done;
  REQUIRE(restorer.Run(forced, &done).ok());
  CHECK(done.plan.instances.size() == 3);
  CHECK(std::any_of(done.warnings.begin(), done.warnings.end(), [](const std::string& w) {
    return w.find("binder is not healthy") != std::string::npos &&
           w.find("going ahead (--force)") != std::string::npos;
  }));
}

TEST_CASE("a restore warns when no node but the lost one may hold an HA service") {
  Cluster c;
  const Backend::LocalInstance binder{"5b5d3c2e-0000-4000-8000-000000000003", "binder0", true, ""};
  const Backend::LocalInstance moray{"5b5d3c2e-0000-4000-8000-000000000002", "moray0", true, ""};
  HaSeeingBackend backend(NewDirBackend(*Env::Default(), DirOptions(c.target(), 2)),
                          {{"binder", {binder}}, {"moray", {moray}}});  // no manatee here
  RestoreReport report;
  REQUIRE(Restorer(c.Context(&backend)).Run(PeerRequest(), &report).ok());
  std::vector<std::string> ha;
  for (const std::string& w : report.warnings) {
    if (w.find("instance on this node") != std::string::npos) ha.push_back(w);
  }
  REQUIRE(ha.size() == 1);
  CHECK_THAT(ha[0], Catch::Contains("no manatee instance") && Catch::Contains("--service manatee"));
}

TEST_CASE("restoring a peer that still answers is refused without --force") {
  Cluster c;
  auto backend = NewDirBackend(*Env::Default(), DirOptions(c.target(), 2));
  FakeProbe probe;
  probe.alive = true;
  Restorer restorer(c.Context(backend.get(), &probe));
  RestoreReport report;
  Status st = restorer.Run(PeerRequest(), &report);
  REQUIRE_FALSE(st.ok());
  CHECK(st.code() == Code::kTemporary);
  CHECK(st.message().find("headnode1 still answers") != std::string::npos);
  CHECK(st.message().find("--force") != std::string::npos);
  CHECK_FALSE(Exists(*Env::Default(), c.target()));

  // The dry run predicts exactly that, with the plan it would have run.
  RestoreRequest dry = PeerRequest();
  dry.dry_run = true;
  Status dry_st = restorer.Run(dry, &report);
  CHECK(dry_st.code() == Code::kTemporary);
  CHECK(dry_st.message() == st.message());
  CHECK(report.plan.instances.size() == 3);
  REQUIRE(report.warnings.size() == 1);
  CHECK(report.warnings[0].find("still answers") != std::string::npos);
  CHECK_FALSE(Exists(*Env::Default(), c.target()));

  RestoreRequest forced = PeerRequest();
  forced.force = true;
  REQUIRE(restorer.Run(forced, &report).ok());
  CHECK(report.plan.instances.size() == 3);
}

TEST_CASE("a dry run fails as the real run would when the backend cannot run the plan") {
  Cluster c;
  ExecBackendOptions o;
  o.commands["install_image"] = {"/bin/true"};
  o.commands["create_instance"] = {"/bin/true"};  // no restore_data command
  auto backend = NewExecBackend(o);
  Restorer restorer(c.Context(backend.get()));
  RestoreReport report;
  RestoreRequest dry = PeerRequest();
  dry.dry_run = true;
  Status dry_st = restorer.Run(dry, &report);
  REQUIRE_FALSE(dry_st.ok());
  CHECK(report.plan.instances.size() == 3);
  Status real = restorer.Run(PeerRequest(), &report);
  CHECK(real.code() == dry_st.code());
  CHECK(real.message() == dry_st.message());
}

TEST_CASE("a new restore shows its plan and runs only when confirmed") {
  Cluster c;
  auto backend = NewDirBackend(*Env::Default(), DirOptions(c.target(), 2));
  RestoreContext ctx = c.Context(backend.get());
  int asked = 0;
  size_t shown = 0;
  bool answer = false;
  ctx.confirm_plan = [&](const RestoreReport& planned) {
    ++asked;
    shown = planned.plan.instances.size();
    return answer;
  };
  Restorer restorer(ctx);
  RestoreReport report;
  Status st = restorer.Run(PeerRequest(), &report);
  CHECK(st.code() == Code::kTemporary);
  CHECK(asked == 1);
  CHECK(shown == 3);
  CHECK_FALSE(Exists(*Env::Default(), c.target()));
  CHECK_FALSE(Exists(*Env::Default(), JoinPath(c.data_dir(), "restores")));

  RestoreRequest yes = PeerRequest();
  yes.assume_yes = true;  // -y: not asked
  REQUIRE(restorer.Run(yes, &report).ok());
  CHECK(asked == 1);
  CHECK(report.plan.instances.size() == 3);
}

TEST_CASE("stale data needs -y or a confirmation") {
  Cluster c;
  c.clock().Advance(2 * 3600 * 1000);
  auto backend = NewDirBackend(*Env::Default(), DirOptions(c.target(), 2));
  RestoreContext ctx = c.Context(backend.get());
  RestoreReport report;
  Status st = Restorer(ctx).Run(PeerRequest(), &report);
  REQUIRE_FALSE(st.ok());
  CHECK(st.code() == Code::kTemporary);
  CHECK(st.message().find("stale") != std::string::npos);
  CHECK(st.message().find("-y") != std::string::npos);
  CHECK_FALSE(Exists(*Env::Default(), c.target()));

  std::string asked;
  ctx.confirm = [&](const std::string& q) {
    asked = q;
    return false;
  };
  CHECK_FALSE(Restorer(ctx).Run(PeerRequest(), &report).ok());
  CHECK(asked.find("last pulled 2 h 0 min ago") != std::string::npos);

  ctx.confirm = [](const std::string&) { return true; };
  REQUIRE(Restorer(ctx).Run(PeerRequest(), &report).ok());
  CHECK(report.steps_run > 0);
}

TEST_CASE("a fresher copy on another node is named, and --from-freshest pulls it first") {
  Cluster c;
  uint64_t local = c.store().Peer("headnode1")->generation;
  auto backend = NewDirBackend(*Env::Default(), DirOptions(c.target(), 2));
  FakeProbe probe;
  probe.copies = {PeerCopy{"headnode2", true, "", local + 3, 0},
                  PeerCopy{"headnode3", false, "connection refused", 0, 0}};
  RestoreContext ctx = c.Context(backend.get(), &probe);
  RestoreRequest dry = PeerRequest();
  dry.dry_run = true;
  RestoreReport report;
  REQUIRE(Restorer(ctx).Run(dry, &report).ok());
  CHECK(report.fresher_node == "headnode2");
  CHECK(report.fresher_generation == local + 3);
  REQUIRE(report.warnings.size() == 2);
  CHECK(report.warnings[0].find("headnode3") != std::string::npos);
  CHECK(report.warnings[0].find("connection refused") != std::string::npos);
  CHECK(report.warnings[1].find("headnode2 holds generation " + std::to_string(local + 3)) !=
        std::string::npos);
  CHECK(probe.pulls == 0);

  // --from-freshest: the probe's pull changes vmapi0's data (standing in for
  // the newer copy headnode2 holds); the restore must use it.
  WriteFile(c.export_root() + "/datasets/" + kVmapi0 + "/identity", "vmapi0, newer\n");
  probe.on_pull = [&] { return c.Pull(); };
  ctx.reopen_store = [&]() -> Result<catalog::Store*> {
    RETURN_IF_ERROR(c.ReopenStore());
    return &c.store();
  };
  RestoreRequest req = PeerRequest();
  req.from_freshest = true;
  Status st = Restorer(ctx).Run(req, &report);
  INFO(st.ToString());
  REQUIRE(st.ok());
  CHECK(probe.pulls == 1);
  const PlannedInstance& vmapi = report.plan.instances[2];
  CHECK(ReadFile(c.target() + "/zones/" + vmapi.new_uuid + "/data/identity") == "vmapi0, newer\n");
}

TEST_CASE("selection by service and instance, and unknown selections") {
  Cluster c;
  auto backend = NewDirBackend(*Env::Default(), DirOptions(c.target(), 2));
  Restorer restorer(c.Context(backend.get()));
  RestoreRequest req;
  req.dry_run = true;
  req.selection.services = {"vmapi", "sapi"};
  RestoreReport report;
  REQUIRE(restorer.Run(req, &report).ok());
  REQUIRE(report.plan.instances.size() == 2);
  CHECK(report.plan.instances[0].old_alias == "sapi0");
  CHECK(report.plan.instances[1].old_alias == "vmapi0");
  // sapi needs the root and base images; vmapi adds its own.
  CHECK(report.plan.steps[0].image_uuid == kRootImg);

  req.selection = Selection{};
  req.selection.instances = {kImgapi0};
  REQUIRE(restorer.Run(req, &report).ok());
  REQUIRE(report.plan.instances.size() == 1);
  CHECK(report.plan.instances[0].alias == "imgapi1");

  req.selection.instances = {"deadbeef-0000-4000-8000-000000000000"};
  Status st = restorer.Run(req, &report);
  CHECK(st.code() == Code::kNotFound);
  CHECK(st.ExitCode() == 65);
  req.selection = Selection{};
  req.selection.peer = "nobody";
  CHECK(restorer.Run(req, &report).code() == Code::kNotFound);
  req.selection.services = {"vmapi"};
  CHECK(restorer.Run(req, &report).code() == Code::kUsage);
}

TEST_CASE("restore at a time (--at) takes, of each instance, the generation current then") {
  Cluster c;  // first pull at T0
  const int64_t t0 = c.clock().WallMs();
  c.clock().Advance(3'600'000);
  WriteFile(c.export_root() + "/datasets/" + kImgapi0 + "/identity", "imgapi0, second\n");
  REQUIRE(c.Pull().ok());  // imgapi0's second generation at T0 + 1h; the rest unchanged
  auto backend = NewDirBackend(*Env::Default(), DirOptions(c.target(), 2));
  Restorer restorer(c.Context(backend.get()));
  RestoreRequest req;
  req.selection.instances = {kImgapi0};
  req.selection.at_ms = t0 + 1'800'000;  // half an hour after the first pull
  RestoreReport then;
  REQUIRE(restorer.Run(req, &then).ok());
  REQUIRE(then.plan.instances.size() == 1);
  CHECK(then.plan.instances[0].seq == 1);
  CHECK(ReadFile(c.target() + "/zones/" + then.plan.instances[0].new_uuid + "/data/identity") ==
        "imgapi0\n");
  // Before anything was held: nothing to restore, said so.
  req.selection.at_ms = t0 - 1;
  req.dry_run = true;
  req.again = true;  // imgapi0 was restored above
  RestoreReport before;
  Status st = restorer.Run(req, &before);
  CHECK(st.code() == Code::kNotFound);
  REQUIRE(before.plan.skipped.size() == 1);
  CHECK(before.plan.skipped[0].reason.find("no generation held from") != std::string::npos);
}

TEST_CASE(
    "a chosen generation (--generation) restores an older retained generation of an instance") {
  Cluster c;
  WriteFile(c.export_root() + "/datasets/" + kImgapi0 + "/identity", "imgapi0, second\n");
  REQUIRE(c.Pull().ok());
  auto seqs = c.store().Generations(kImgapi0);
  REQUIRE(seqs.ok());
  REQUIRE(seqs->size() == 2);

  auto backend = NewDirBackend(*Env::Default(), DirOptions(c.target(), 2));
  Restorer restorer(c.Context(backend.get()));
  RestoreRequest req;
  req.selection.instances = {kImgapi0};
  req.selection.generation = seqs->front();
  RestoreReport old_report;
  REQUIRE(restorer.Run(req, &old_report).ok());
  REQUIRE(old_report.plan.instances.size() == 1);
  CHECK(old_report.plan.instances[0].seq == seqs->front());
  CHECK(ReadFile(c.target() + "/zones/" + old_report.plan.instances[0].new_uuid +
                 "/data/identity") == "imgapi0\n");

  req.selection.generation.reset();
  RestoreReport skipped;  // imgapi0 was restored (from its older generation) already
  REQUIRE(restorer.Run(req, &skipped).ok());
  CHECK(skipped.plan.instances.empty());
  REQUIRE(skipped.plan.skipped.size() == 1);
  req.again = true;
  RestoreReport current;
  REQUIRE(restorer.Run(req, &current).ok());
  // A different selection is a different restore, with its own alias.
  CHECK(current.journal_id != old_report.journal_id);
  CHECK(current.plan.instances[0].alias == "imgapi2");
  CHECK(ReadFile(c.target() + "/zones/" + current.plan.instances[0].new_uuid + "/data/identity") ==
        "imgapi0, second\n");

  req.selection.generation = 999;
  RestoreReport missing;
  Status st = restorer.Run(req, &missing);
  REQUIRE_FALSE(st.ok());
  CHECK(st.message().find("generation 999") != std::string::npos);
}

TEST_CASE("instances of a peer that comes back after their restore are deposed") {
  Cluster c;
  auto backend = NewDirBackend(*Env::Default(), DirOptions(c.target(), 2));
  RestoreRequest req;
  req.selection.instances = {kImgapi0, kSapi0};
  req.force = true;
  RestoreReport report;
  REQUIRE(Restorer(c.Context(backend.get())).Run(req, &report).ok());
  auto before = FindDeposed(*Env::Default(), c.store(), c.data_dir());
  REQUIRE(before.ok());
  CHECK(before->empty());  // nothing heard from headnode1 since the restore

  // headnode1 comes back and is pulled again: its old instances are deposed.
  // It exports exactly what it did before it was lost.
  c.clock().Advance(60'000);
  REQUIRE(c.Pull().ok());
  auto deposed = FindDeposed(*Env::Default(), c.store(), c.data_dir());
  REQUIRE(deposed.ok());
  REQUIRE(deposed->size() == 2);
  CHECK((*deposed)[0].old.alias == "imgapi0");
  CHECK((*deposed)[0].restored.alias == "imgapi1");
  CHECK((*deposed)[0].restored.new_uuid == report.plan.instances[1].new_uuid);
  CHECK((*deposed)[1].old.alias == "sapi0");
  // The restored instances are untouched by the pull.
  CHECK(json::parse(ReadFile(c.target() + "/zones/" + report.plan.instances[1].new_uuid +
                             "/vm.json"))["alias"] == "imgapi1");
}

TEST_CASE("an instance an earlier restore rebuilt is skipped, whatever the selection") {
  Cluster c;
  auto backend = NewDirBackend(*Env::Default(), DirOptions(c.target(), 2));
  Restorer restorer(c.Context(backend.get()));
  RestoreReport first;
  RestoreRequest one = PeerRequest();
  one.selection = Selection{};
  one.selection.services = {"vmapi"};
  REQUIRE(restorer.Run(one, &first).ok());
  REQUIRE(first.plan.instances.size() == 1);

  // The whole peer next: vmapi0 is not restored a second time, and says why.
  RestoreReport second;
  REQUIRE(restorer.Run(PeerRequest(), &second).ok());
  CHECK(second.plan.instances.size() == 2);
  REQUIRE(second.plan.skipped.size() == 1);
  CHECK(second.plan.skipped[0].alias == "vmapi0");
  CHECK(second.plan.skipped[0].reason.find("already restored as vmapi") == 0);
  CHECK(second.plan.skipped[0].reason.find("--again") != std::string::npos);

  // Even into another target.
  auto other = NewDirBackend(*Env::Default(), DirOptions(c.dir() / "other", 2));
  RestoreReport third;
  RestoreRequest vm = one;
  REQUIRE(Restorer(c.Context(other.get())).Run(vm, &third).ok());
  CHECK(third.plan.instances.empty());
  CHECK(third.plan.skipped.size() == 1);

  // --again: restored once more.
  vm.again = true;
  RestoreReport fourth;
  REQUIRE(Restorer(c.Context(other.get())).Run(vm, &fourth).ok());
  CHECK(fourth.plan.instances.size() == 1);
}

TEST_CASE("two restores at once cannot both rebuild one instance") {
  Cluster c;
  auto backend = NewDirBackend(*Env::Default(), DirOptions(c.target(), 2));
  // Another restore is running and holds vmapi0's claim.
  REQUIRE(CreateDirs(*Env::Default(), RestoresDir(c.data_dir()), 0700).ok());
  auto held = LockFile::Acquire(JoinPath(RestoresDir(c.data_dir()), kVmapi0 + ".claim"), "test");
  REQUIRE(held.ok());
  RestoreReport report;
  Status st = Restorer(c.Context(backend.get())).Run(PeerRequest(), &report);
  CHECK(st.code() == Code::kTemporary);
  CHECK(st.message().find("vmapi0") == 0);
  CHECK(st.message().find("being restored by another restore right now") != std::string::npos);
  CHECK_FALSE(Exists(*Env::Default(), c.target()));
}

TEST_CASE("an instance another node restored is skipped and a node that did not answer is named") {
  Cluster c;
  auto backend = NewDirBackend(*Env::Default(), DirOptions(c.target(), 2));
  RestoreContext ctx = c.Context(backend.get());
  RestoredInstance elsewhere;
  elsewhere.old_uuid = kImgapi0;
  elsewhere.old_alias = "imgapi0";
  elsewhere.new_uuid = "0000000b-0000-4000-8000-00000000000b";
  elsewhere.alias = "imgapi1";
  elsewhere.service = "imgapi";
  elsewhere.peer = "headnode1";
  elsewhere.node = "headnode2";
  elsewhere.backend = "smartos";
  elsewhere.target = "/zones";
  elsewhere.restored_ms = c.clock().WallMs();
  elsewhere.journal_id = "r-elsewhere";
  ctx.restored_elsewhere[kImgapi0] = elsewhere;
  ctx.unasked_nodes = {{"headnode1", "connection refused"}, {"headnode3", "timed out"}};
  Restorer restorer(ctx);
  RestoreRequest req = PeerRequest();
  req.dry_run = true;  // the plan is what counts
  RestoreReport report;
  REQUIRE(restorer.Run(req, &report).ok());
  bool skipped = false;
  for (const auto& s : report.plan.skipped) {
    if (s.uuid != kImgapi0) continue;
    skipped = true;
    CHECK(s.reason.find("by headnode2") != std::string::npos);
    CHECK(s.reason.find("--again") != std::string::npos);
  }
  CHECK(skipped);
  for (const auto& p : report.plan.instances) CHECK(p.old_uuid != kImgapi0);
  // The lost peer itself not answering is expected; another node is named.
  size_t named = 0;
  for (const std::string& w : report.warnings) {
    CHECK(w.find("node headnode1 ") == std::string::npos);
    if (w.find("could not ask node headnode3") != std::string::npos) ++named;
  }
  CHECK(named == 1);

  req.again = true;  // --again: restored here too
  RestoreReport again;
  REQUIRE(restorer.Run(req, &again).ok());
  bool planned = false;
  for (const auto& p : again.plan.instances) planned = planned || p.old_uuid == kImgapi0;
  CHECK(planned);
}

}  // namespace
}  // namespace lifeboat::restore
