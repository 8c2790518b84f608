#include "catalog/held_export.h"

#include <algorithm>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "exports/exporter.h"
#include "tests/unit/catalog/test_util.h"

namespace lifeboat::catalog {
namespace {

using exports::Exporter;
using exports::MakeDirProvider;
using exports::Provider;
using testing::DirExport;
using testing::PullFrom;
using testing::TempDir;

// The held copy of one peer, as an ExportSource (what HELD_MANIFEST_REQUEST
// gives a puller).
class HeldSourceOf : public syncproto::ExportSource {
 public:
  HeldSourceOf(HeldExport* held, std::string peer) : held_(held), peer_(std::move(peer)) {}
  Result<std::unique_ptr<syncproto::ExportView>> OpenView() override {
    return held_->OpenHeldView(peer_);
  }

 private:
  HeldExport* held_;
  std::string peer_;
};

struct Fixture {
  TempDir tmp;
  DirExport exp{tmp / "export"};
  ManualClock clock;
  std::unique_ptr<Provider> provider = MakeDirProvider(*Env::Default(), exp.root);
  std::unique_ptr<Exporter> exporter;

  Fixture() { exporter = testing::OpenPeerExporter(clock, provider.get(), tmp / "export-state"); }
  std::unique_ptr<Store> OpenStore(const std::string& dir) {
    StoreOptions o;
    o.data_dir = tmp / dir;
    auto s = Store::Open(*Env::Default(), clock, o);
    REQUIRE(s.ok());
    return std::move(*s);
  }
};

TEST_CASE("Held lists the peers held with their generation, filtered by name") {
  Fixture f;
  auto store = f.OpenStore("c");
  HeldExport held(*Env::Default(), store.get());
  auto none = held.Held("");
  REQUIRE(none.ok());
  CHECK(none->empty());
  REQUIRE(PullFrom(*f.exporter, *store, "headnode1").ok());
  auto all = held.Held("");
  REQUIRE(all.ok());
  REQUIRE(all->size() == 1);
  const auto p = store->Peer("headnode1");
  CHECK((*all)[0] ==
        syncproto::HeldPeer{"headnode1", p->node_uuid, p->generation, p->boot_id, p->last_pull_ms});
  CHECK((*all)[0].generation > 0);
  auto other = held.Held("headnode9");
  REQUIRE(other.ok());
  CHECK(other->empty());
  CHECK(held.OpenHeldView("headnode9").status().code() == Code::kNotFound);
}

// What an answer carries, as comparable lists: instance and image uuids, file paths.
struct AnswerShape {
  std::vector<std::string> instances, images, files;
};

AnswerShape ShapeOf(syncproto::ExportSource& source, const std::vector<std::string>& services) {
  auto view = source.OpenView();
  REQUIRE(view.ok());
  auto a = (*view)->ManifestSince(0, "", services);
  REQUIRE(a.ok());
  AnswerShape s;
  for (const auto& i : a->manifest.instances) s.instances.push_back(i.uuid);
  for (const auto& i : a->manifest.images) s.images.push_back(i.uuid);
  for (const auto& f : a->manifest.files) s.files.push_back(f.path);
  for (auto* v : {&s.instances, &s.images, &s.files}) std::sort(v->begin(), v->end());
  return s;
}

TEST_CASE("a held view answers a services selection as the peer's own exporter does") {
  Fixture f;
  auto c = f.OpenStore("c");
  REQUIRE(PullFrom(*f.exporter, *c, "headnode1").ok());
  HeldExport held(*Env::Default(), c.get());
  HeldSourceOf source(&held, "headnode1");
  const std::vector<std::vector<std::string>> selections = {
      {}, {"*"}, {"sapi"}, {"imgapi", "ufds"}, {"sapi", "*"}, {"nosuchservice"}};
  for (const auto& services : selections) {
    CAPTURE(services);
    const AnswerShape own = ShapeOf(*f.exporter, services), copy = ShapeOf(source, services);
    CHECK(copy.instances == own.instances);
    CHECK(copy.images == own.images);
    CHECK(copy.files == own.files);
  }
  // The rule itself (syncproto/manifest_filter.h): sapi0 and the images of
  // its origin chain only; "*" takes every instance.
  const AnswerShape sapi = ShapeOf(source, {"sapi"});
  CHECK(sapi.instances == std::vector<std::string>{f.exp.sapi});
  std::vector<std::string> chain = {f.exp.img_sapi, f.exp.img_base, f.exp.img_root};
  std::sort(chain.begin(), chain.end());
  CHECK(sapi.images == chain);
  CHECK(ShapeOf(source, {"*"}).instances.size() == 3);
}

TEST_CASE("a held copy pulled by another store becomes that peer's data, identical") {
  Fixture f;
  auto c = f.OpenStore("c");  // pulled headnode1 itself
  REQUIRE(PullFrom(*f.exporter, *c, "headnode1").ok());
  HeldExport held(*Env::Default(), c.get());
  HeldSourceOf source(&held, "headnode1");

  auto a = f.OpenStore("a");  // pulls headnode1's copy from c
  REQUIRE(PullFrom(source, *a, "headnode1").ok());
  auto pa = a->Peer("headnode1"), pc = c->Peer("headnode1");
  REQUIRE(pa);
  CHECK(pa->generation == pc->generation);
  CHECK(pa->boot_id == pc->boot_id);
  CHECK(pa->node_uuid == "564dd1ac-164d-cc50-247c-b2eb0cf21ce5");
  CHECK(pa->node_name == "headnode1");
  auto ia = a->Instances(), ic = c->Instances();
  REQUIRE(ia.size() == 3);
  REQUIRE(ia.size() == ic.size());
  for (size_t i = 0; i < ia.size(); ++i) {
    CHECK(ia[i].uuid == ic[i].uuid);
    CHECK(ia[i].alias == ic[i].alias);
    auto ga = a->Instance(ia[i].uuid), gc = c->Instance(ic[i].uuid);
    REQUIRE(ga.ok());
    REQUIRE(gc.ok());
    REQUIRE(ga->files.size() == gc->files.size());
    for (size_t k = 0; k < ga->files.size(); ++k) CHECK(ga->files[k].entry == gc->files[k].entry);
    CHECK(ga->vm_payload == gc->vm_payload);
  }
  auto chain = a->ImageChain(f.exp.img_imgapi);
  REQUIRE(chain.ok());
  CHECK(chain->size() == 3);
  for (const char* rec :
       {"svc-imgapi/sapi-svc.json", "svc-imgapi/sapi-app.json", "svc-sapi/sapi-svc.json"}) {
    INFO(rec);
    CHECK(testing::Read(f.tmp / "a" + "/" + rec) == testing::Read(f.tmp / "c" + "/" + rec));
    CHECK(!testing::Read(f.tmp / "a" + "/" + rec).empty());
  }
  auto verify = a->Verify();
  REQUIRE(verify.ok());
  CHECK(verify->ok());

  // Asked again at the generation now held: nothing to do.
  auto view = held.OpenHeldView("headnode1");
  REQUIRE(view.ok());
  auto same = (*view)->ManifestSince(pa->generation, pa->boot_id, {});
  REQUIRE(same.ok());
  CHECK(same->kind == syncproto::ManifestAnswer::Kind::kUnchanged);
}

}  // namespace
}  // namespace lifeboat::catalog
