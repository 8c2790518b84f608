#include "base/digest.h"

#include <string>

#include <catch2/catch.hpp>

namespace lifeboat {
namespace {

// Reference values from `xxhsum -H2` (xxHash 0.8.1), canonical byte order.
TEST_CASE("XXH3-128 matches known vectors", "[digest]") {
  CHECK(Xxh3Digest(std::string_view("")).Hex() == "99aa06d3014798d86001c324468d497f");
  CHECK(Xxh3Digest(std::string_view("a")).Hex() == "a96faf705af16834e6c632b61e964e1f");
  CHECK(Xxh3Digest(std::string_view("The quick brown fox jumps over the lazy dog")).Hex() ==
        "ddd650205ca3e7fa24a1cc2e3a8a7651");
}

TEST_CASE("streaming and one-shot digests agree on any split", "[digest]") {
  std::string data;
  for (int i = 0; i < 100000; ++i) data += static_cast<char>((i * 7919) & 0xff);
  Digest128 whole = Xxh3Digest(data);
  for (size_t split : {size_t{0}, size_t{1}, size_t{63}, size_t{4096}, data.size()}) {
    Xxh3Hasher h;
    h.Update(std::string_view(data).substr(0, split));
    h.Update(std::string_view(data).substr(split));
    CHECK(h.Finish() == whole);
  }
}

TEST_CASE("a flipped byte changes the digest", "[digest]") {
  std::string data(4096, 'x');
  Digest128 before = Xxh3Digest(data);
  data[2000] ^= 1;
  CHECK_FALSE(Xxh3Digest(data) == before);
}

TEST_CASE("hex round trips and rejects garbage", "[digest]") {
  Digest128 d = Xxh3Digest(std::string_view("abc"));
  auto back = Digest128::FromHex(d.Hex());
  REQUIRE(back.has_value());
  CHECK(*back == d);
  CHECK_FALSE(Digest128::FromHex("xyz").has_value());
  CHECK_FALSE(Digest128::FromHex(std::string(32, 'g')).has_value());
  CHECK_FALSE(HexDecode("abc").has_value());
  CHECK(*HexDecode("00ff") == std::string("\x00\xff", 2));
}

}  // namespace
}  // namespace lifeboat
