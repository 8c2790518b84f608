#include "syncproto/manifest_filter.h"

#include <string>
#include <vector>

#include <catch2/catch.hpp>

namespace lifeboat::syncproto {
namespace {

std::vector<std::string> Uuids(const std::vector<InstanceInfo>& v) {
  std::vector<std::string> out;
  for (const auto& i : v) out.push_back(i.uuid);
  return out;
}

std::vector<std::string> Uuids(const std::vector<ImageInfo>& v) {
  std::vector<std::string> out;
  for (const auto& i : v) out.push_back(i.uuid);
  return out;
}

// Three instances; images: imgapi -> base -> root, sapi -> base, ufds -> root,
// and a loop x <-> y no instance's chain reaches.
struct Export {
  std::vector<InstanceInfo> instances = {{"i1", "imgapi0", "imgapi", "img-imgapi", {}},
                                         {"i2", "sapi0", "sapi", "img-sapi", {}},
                                         {"i3", "ufds0", "ufds", "img-ufds", {}}};
  std::vector<ImageInfo> images = {{"img-root", ""},
                                   {"img-base", "img-root"},
                                   {"img-imgapi", "img-base"},
                                   {"img-sapi", "img-base"},
                                   {"img-ufds", "img-root"},
                                   {"x", "y"},
                                   {"y", "x"}};
};

TEST_CASE("ServiceFilter: empty or \"*\" selects every service, names are sorted once") {
  CHECK(ServiceFilter().all());
  CHECK(ServiceFilter(std::vector<std::string>{}).all());
  CHECK(ServiceFilter({"sapi", "*"}).all());
  CHECK(ServiceFilter({"sapi", "*"}).services().empty());
  const ServiceFilter f({"ufds", "sapi", "ufds"});
  CHECK_FALSE(f.all());
  CHECK(f.services() == std::vector<std::string>{"sapi", "ufds"});
  CHECK(f.Matches("sapi"));
  CHECK_FALSE(f.Matches("imgapi"));
  CHECK_FALSE(f.Matches(""));
}

TEST_CASE("ManifestSelection: the selected instances, their origin chains, their files") {
  Export e;
  const ManifestSelection s(ServiceFilter({"sapi"}), e.instances, e.images);
  CHECK(Uuids(s.instances()) == std::vector<std::string>{"i2"});
  CHECK(Uuids(s.images()) == std::vector<std::string>{"img-root", "img-base", "img-sapi"});
  CHECK(s.Includes("vms/i2.json"));
  CHECK(s.Includes("sapi/i2.json"));
  CHECK(s.Includes("datasets/i2/db/data.json"));
  CHECK_FALSE(s.Includes("vms/i1.json"));
  CHECK_FALSE(s.Includes("sapi/i3.json"));
  CHECK_FALSE(s.Includes("datasets/i1"));
  CHECK_FALSE(s.Includes("datasets/i1/etc/config.json"));
  CHECK(s.Includes("images/img-base/file"));
  CHECK(s.Includes("images/img-root/manifest.json"));
  CHECK_FALSE(s.Includes("images/img-ufds/file"));
  CHECK_FALSE(s.Includes("images/x/file"));
  // Records of no instance and no image travel whatever the selection.
  CHECK(s.Includes("sapi/application.json"));
  CHECK(s.Includes("sapi/services/ufds.json"));
}

TEST_CASE("ManifestSelection: a shared base is listed once, a loop in the chain ends") {
  Export e;
  e.instances.push_back({"i4", "loop0", "loop", "x", {}});
  const ManifestSelection s(ServiceFilter({"imgapi", "sapi", "loop"}), e.instances, e.images);
  CHECK(Uuids(s.instances()) == std::vector<std::string>{"i1", "i2", "i4"});
  CHECK(Uuids(s.images()) ==
        std::vector<std::string>{"img-root", "img-base", "img-imgapi", "img-sapi", "x", "y"});
}

TEST_CASE("ManifestSelection: every service takes the export whole") {
  Export e;
  for (const ServiceFilter& f : {ServiceFilter(), ServiceFilter({"*"})}) {
    const ManifestSelection s(f, e.instances, e.images);
    CHECK(Uuids(s.instances()) == Uuids(e.instances));
    CHECK(Uuids(s.images()) == Uuids(e.images));
    CHECK(s.Includes("datasets/i3/ldap/data.mdb"));
    CHECK(s.Includes("images/x/file"));
  }
}

TEST_CASE("ManifestSelection: a selection naming no exported service carries no instance") {
  Export e;
  const ManifestSelection s(ServiceFilter({"manatee"}), e.instances, e.images);
  CHECK(s.instances().empty());
  CHECK(s.images().empty());
  CHECK_FALSE(s.Includes("vms/i1.json"));
  CHECK(s.Includes("sapi/application.json"));
}

}  // namespace
}  // namespace lifeboat::syncproto
