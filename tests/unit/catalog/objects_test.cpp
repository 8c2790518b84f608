// ObjectRefs (catalog/objects.h): a registered tree holds its children once,
// however many generations share it, and frees them with itself.
// ObjectStore::AdoptStaged: a fan-out directory the store lacks moves in
// whole, anything else object by object. ObjectStore::List: objects and
// whatever else sits in objects/.
#include "catalog/objects.h"

#include <algorithm>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/unit/catalog/test_util.h"

namespace lifeboat::catalog {
namespace {

Digest256 Id(const std::string& name) { return Sha256Digest(name); }

std::vector<Digest256> Sorted(std::vector<Digest256> ids) {
  std::sort(ids.begin(), ids.end());
  return ids;
}

// `n` contents whose objects share one fan-out directory, starting the search at `seed`.
std::vector<std::string> SameFan(size_t n, const std::string& seed) {
  std::vector<std::string> out;
  std::string fan;
  for (int i = 0; out.size() < n; ++i) {
    std::string text = seed;
    text += std::to_string(i);
    const std::string hex = Id(text).Hex();
    if (fan.empty()) fan = hex.substr(0, 2);
    if (hex.starts_with(fan)) out.push_back(text);
  }
  return out;
}

}  // namespace

// An empty objects/ and a staging directory beside it.
struct AdoptFixture {
  testing::TempDir tmp;
  Env& env = *Env::Default();
  ObjectStore store{env, tmp / "objects"};
  const std::string staged = tmp / "staged";

  AdoptFixture() { REQUIRE(env.MakeDir(store.dir()).ok()); }
  // Stages `text` as its object; returns its id.
  Digest256 Stage(const std::string& text) {
    testing::Write(ObjectStore::StagedPath(staged, Id(text)), text);
    return Id(text);
  }
  std::string Fan(const std::string& text) const { return Id(text).Hex().substr(0, 2); }
};

TEST_CASE("AdoptStaged moves a missing fan-out directory in whole, adopts into an existing one") {
  using testing::Read;
  AdoptFixture f;
  const std::vector<std::string> fresh = SameFan(2, "fresh");  // a fan the store lacks
  const std::vector<std::string> held = SameFan(2, "held");    // a fan it has: one object held
  std::vector<Digest256> ids;
  for (const std::string& t : fresh) ids.push_back(f.Stage(t));
  for (const std::string& t : held) ids.push_back(f.Stage(t));
  testing::Write(f.store.PathOf(Id(held[0])), held[0]);  // the first copy, which stays
  std::set<std::string> changed;
  REQUIRE(f.store.AdoptStaged(f.staged, ids, &changed).ok());
  for (const std::string& t : fresh) CHECK(Read(f.store.PathOf(Id(t))) == t);
  for (const std::string& t : held) CHECK(Read(f.store.PathOf(Id(t))) == t);
  // The fresh fan is the staged directory itself, now in place.
  CHECK_FALSE(Exists(f.env, f.staged + "/" + f.Fan(fresh[0])));
  // The held fan gained the other object; the staged copy of the held one is gone.
  CHECK_FALSE(Exists(f.env, ObjectStore::StagedPath(f.staged, Id(held[0]))));
  const std::set<std::string> want{f.store.dir(), f.store.dir() + "/" + f.Fan(fresh[0]),
                                   f.store.dir() + "/" + f.Fan(held[0])};
  CHECK(changed == want);
}

TEST_CASE("AdoptStaged moves a staged fan-out directory only when it holds exactly the objects") {
  AdoptFixture f;
  const std::vector<std::string> texts = SameFan(2, "x");
  std::vector<Digest256> ids;
  for (const std::string& t : texts) ids.push_back(f.Stage(t));
  // A stray file beside the objects (not one of `ids`) never enters objects/.
  const std::string stray_name = std::string(62, 'f');
  const std::string stray = f.staged + "/" + f.Fan(texts[0]) + "/" + stray_name;
  testing::Write(stray, "not verified");
  std::set<std::string> changed;
  REQUIRE(f.store.AdoptStaged(f.staged, ids, &changed).ok());
  for (const std::string& t : texts) CHECK(testing::Read(f.store.PathOf(Id(t))) == t);
  CHECK(Exists(f.env, stray));
  CHECK_FALSE(Exists(f.env, f.store.dir() + "/" + f.Fan(texts[0]) + "/" + stray_name));
}

TEST_CASE("List names every object and every entry of objects/ that is not one") {
  AdoptFixture f;
  const Digest256 a = Id("a"), b = Id("b");
  testing::Write(f.store.PathOf(a), "a");
  testing::Write(f.store.PathOf(b), "b");
  const std::string fan = f.store.dir() + "/" + f.Fan("a");
  std::string upper = a.Hex().substr(2);
  std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
  const std::vector<std::string> strays = {
      fan + "/notes.txt",         // not a name of hex
      fan + "/" + upper,          // an object's name, spelled otherwise
      f.store.dir() + "/zz",      // not a fan-out name
      f.store.dir() + "/README",  // a file at the top
  };
  testing::Write(strays[0], "x");
  testing::Write(strays[1], "a");
  REQUIRE(f.env.MakeDir(strays[2]).ok());
  testing::Write(strays[3], "x");
  auto listing = f.store.List();
  REQUIRE(listing.ok());
  CHECK(Sorted(listing->ids) == Sorted({a, b}));
  std::vector<std::string> got = listing->strays;
  std::sort(got.begin(), got.end());
  std::vector<std::string> want = strays;
  std::sort(want.begin(), want.end());
  CHECK(got == want);
}

TEST_CASE("a registered tree holds its children until its own count drops to zero") {
  ObjectRefs refs;
  const Digest256 a = Id("a"), b = Id("b"), sub = Id("sub"), top = Id("top");
  refs.AddTree(sub, {b});
  refs.AddTree(top, {a, sub});
  refs.Add({top});  // generation 1
  refs.Add({top});  // generation 2 shares the whole tree
  CHECK(refs.Count(a) == 1);
  CHECK(refs.Count(b) == 1);
  CHECK(refs.Count(sub) == 1);
  std::vector<Digest256> freed;
  refs.Release({top}, &freed);
  CHECK(freed.empty());
  CHECK(refs.Count(b) == 1);
  refs.Release({top}, &freed);
  CHECK(Sorted(freed) == Sorted({top, a, sub, b}));
  CHECK(refs.size() == 0);
  CHECK_FALSE(refs.IsTree(top));
  CHECK_FALSE(refs.IsTree(sub));
}

TEST_CASE("registering a tree twice counts its children once") {
  ObjectRefs refs;
  const Digest256 a = Id("a"), t = Id("t");
  refs.AddTree(t, {a});
  refs.Add({t});
  refs.AddTree(t, {a});  // another generation encodes the same tree
  refs.Add({t});
  CHECK(refs.Count(a) == 1);
  CHECK(refs.Count(t) == 2);
}

TEST_CASE("an object pinned apart from the tree that names it outlives the tree") {
  ObjectRefs refs;
  const Digest256 a = Id("a"), b = Id("b"), t = Id("t");
  refs.Add({a});  // a pull's pin
  refs.AddTree(t, {a, b});
  refs.Add({t});
  std::vector<Digest256> freed;
  refs.Release({t}, &freed);
  CHECK(Sorted(freed) == Sorted({t, b}));
  CHECK(refs.Count(a) == 1);
  // Registered again later (a new generation with the same tree), it
  // counts its children again.
  refs.AddTree(t, {a, b});
  refs.Add({t});
  CHECK(refs.Count(a) == 2);
  CHECK(refs.Count(b) == 1);
}

TEST_CASE("a tree whose children repeat an object counts each repeat") {
  ObjectRefs refs;
  const Digest256 a = Id("a"), t = Id("t");
  refs.AddTree(t, {a, a});  // two files with the same content
  refs.Add({t});
  CHECK(refs.Count(a) == 2);
  std::vector<Digest256> freed;
  refs.Release({t}, &freed);
  CHECK(Sorted(freed) == Sorted({t, a}));
}

}  // namespace lifeboat::catalog
