// libFuzzer target: the control API's request parsing (HttpRequestParser over
// nodejs/http-parser, then PercentDecode/ParseQuery), as the agent runs it on
// bytes from any local client. Must never crash, hang or break the limits;
// a 4xx answer is fine.
//
// Bytes that are not UTF-8 anywhere in the URL: the JSON of an answer that
// names them is still valid UTF-8 (base/text.h DumpJson).
//
// Input: byte 0 picks where to split the rest into two deliveries (partial
// request lines and headers), the rest is the request.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "agent/http_server.h"
#include "base/text.h"

using namespace lifeboat::agent;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  HttpLimits limits;
  limits.max_url = 512;
  limits.max_header_bytes = 1024;
  limits.max_body = 2048;
  std::span<const uint8_t> in(data + 1, size - 1);
  size_t split = in.empty() ? 0 : data[0] % (in.size() + 1);

  HttpRequestParser parser(limits);
  HttpRequestParser::State st = parser.Feed(in.first(split));
  if (st == HttpRequestParser::State::kNeedMore) st = parser.Feed(in.subspan(split));
  if (st == HttpRequestParser::State::kDone) {
    const HttpRequest& r = parser.request();
    if (r.body.size() > limits.max_body) __builtin_trap();
    if (r.path.size() > limits.max_url) __builtin_trap();
    if (r.method.empty()) __builtin_trap();
    // Whatever bytes the path and query hold, an answer echoing them is
    // valid UTF-8 JSON (the agent's 404 names the path).
    nlohmann::json answer = {{"message", r.path + " does not exist"}, {"query", r.query}};
    if (!lifeboat::IsUtf8(lifeboat::DumpJson(answer))) __builtin_trap();
    // Once done, nothing more is taken (one request per connection).
    std::string before = r.body;
    if (parser.Feed(in) != HttpRequestParser::State::kDone) __builtin_trap();
    if (parser.request().body != before) __builtin_trap();
  } else if (st == HttpRequestParser::State::kFailed) {
    const auto& e = parser.error();
    if (e.status < 400 || e.status > 499 || e.code.empty()) __builtin_trap();
  }

  // The URL helpers on their own, over the raw input.
  std::string_view text(reinterpret_cast<const char*>(in.data()), in.size());
  std::string decoded;
  if (PercentDecode(text, &decoded, true) && decoded.size() > text.size()) __builtin_trap();
  std::map<std::string, std::string> query;
  (void)ParseQuery(text, &query);
  return 0;
}
