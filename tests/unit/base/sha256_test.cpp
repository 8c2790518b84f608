#include "base/sha256.h"

#include <string>

#include <catch2/catch.hpp>

namespace lifeboat {
namespace {

// FIPS 180-2 vectors, as `sha256sum` prints them.
TEST_CASE("SHA-256 matches the FIPS 180-2 vectors", "[sha256]") {
  CHECK(Sha256Digest(std::string_view("")).Hex() ==
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(Sha256Digest(std::string_view("abc")).Hex() ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Sha256Hasher h;
  const std::string chunk(1000, 'a');
  for (int i = 0; i < 1000; ++i) h.Update(chunk);
  CHECK(h.Finish().Hex() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("SHA-256: Finish does not end the stream, Reset starts over", "[sha256]") {
  Sha256Hasher h;
  h.Update(std::string_view("ab"));
  const Digest256 ab = h.Finish();
  h.Update(std::string_view("c"));
  CHECK(h.Finish() == Sha256Digest(std::string_view("abc")));
  h.Reset();
  h.Update(std::string_view("ab"));
  CHECK(h.Finish() == ab);
}

TEST_CASE("Digest256 hex round-trips and rejects anything else", "[sha256]") {
  const Digest256 d = Sha256Digest(std::string_view("abc"));
  CHECK(Digest256::FromHex(d.Hex()) == d);
  CHECK_FALSE(Digest256::FromHex(d.Hex().substr(1)));
  CHECK_FALSE(Digest256::FromHex(std::string(64, 'g')));
  CHECK(Digest256{}.IsZero());
  CHECK_FALSE(d.IsZero());
}

}  // namespace
}  // namespace lifeboat
