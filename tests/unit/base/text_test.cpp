#include "base/text.h"

#include <catch2/catch.hpp>

namespace lifeboat {
namespace {

TEST_CASE("UTF-8 validation finds the first bad byte", "[text]") {
  CHECK(IsUtf8(""));
  CHECK(IsUtf8("caf\xc3\xa9"));
  CHECK(FirstInvalidUtf8("caf\xe9.txt") == 3);
  CHECK(FirstInvalidUtf8("ok\xc0\xaf") == 2);          // overlong '/'
  CHECK(FirstInvalidUtf8("\xed\xa0\x80") == 0);         // a surrogate
  CHECK(FirstInvalidUtf8("\xf4\x90\x80\x80") == 0);     // above U+10FFFF
  CHECK(FirstInvalidUtf8("ab\xe2\x82") == 2);           // cut short
}

TEST_CASE("every JSON dump is valid UTF-8 and never throws", "[text]") {
  nlohmann::json j = {{"message", "/\xff does not exist"}, {"\xfe", 1}};
  std::string text;
  REQUIRE_NOTHROW(text = DumpJson(j));
  CHECK(IsUtf8(text));
  CHECK(text.find("\xef\xbf\xbd") != std::string::npos);  // U+FFFD
  CHECK(DumpJson(nlohmann::json{{"a", "caf\xc3\xa9"}}) == "{\"a\":\"caf\xc3\xa9\"}");
  CHECK(DumpJson(nlohmann::json{{"a", 1}}, 2) == "{\n  \"a\": 1\n}");
}

TEST_CASE("bytes round-trip through PutBytes and GetBytes", "[text]") {
  const std::string names[] = {"plain/name", std::string("caf\xe9.txt"),
                               std::string("nul\0in", 6), "\xff\xfe", ""};
  for (const std::string& n : names) {
    nlohmann::json j = nlohmann::json::object();
    PutBytes(j, "path", n);
    CHECK(IsUtf8(DumpJson(j)));
    nlohmann::json back = nlohmann::json::parse(DumpJson(j));
    CHECK(GetBytes(back, "path").value() == n);
  }
  nlohmann::json j = nlohmann::json::object();
  PutBytes(j, "path", "caf\xe9");
  CHECK(j.contains("path_hex"));
  CHECK_FALSE(j.contains("path"));
  CHECK(j["path_hex"] == "636166e9");
  CHECK(GetBytes(nlohmann::json::object(), "path").status().code() == Code::kNotFound);
  CHECK(GetBytes(nlohmann::json{{"path_hex", "6"}}, "path").status().code() == Code::kData);
  CHECK(GetBytes(nlohmann::json{{"path_hex", "zz"}}, "path").status().code() == Code::kData);
  CHECK(GetBytes(nlohmann::json{{"path", 3}}, "path").status().code() == Code::kData);
}

TEST_CASE("terminal escaping shows what a terminal would act on", "[text]") {
  CHECK(EscapeForTerminal("plain caf\xc3\xa9") == "plain caf\xc3\xa9");
  CHECK(EscapeForTerminal("esc\x1b[31mred") == "esc\\x1b[31mred");
  CHECK(EscapeForTerminal("new\nline\ttab\r") == "new\\nline\\ttab\\r");
  CHECK(EscapeForTerminal("caf\xe9") == "caf\\xe9");
  CHECK(EscapeForTerminal("back\\slash") == "back\\\\slash");
  CHECK(EscapeForTerminal("del\x7f") == "del\\x7f");
  CHECK(EscapeForTerminal("c1 \xc2\x9b csi") == "c1 \\xc2\\x9b csi");  // U+009B CSI
}

}  // namespace
}  // namespace lifeboat
