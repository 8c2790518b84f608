// ObjectRefs (catalog/objects.h): a registered tree holds its children once,
// however many generations share it, and frees them with itself.
#include "catalog/objects.h"

#include <algorithm>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

namespace lifeboat::catalog {
namespace {

Digest256 Id(const std::string& name) { return Sha256Digest(name); }

std::vector<Digest256> Sorted(std::vector<Digest256> ids) {
  std::sort(ids.begin(), ids.end());
  return ids;
}

}  // namespace

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
