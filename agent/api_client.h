// A small blocking HTTP/1.1 client for the agent's control API, used by the
// CLI (`lifeboat sync-now`, `lifeboat status`) and by tests. One request per
// connection. Thread-compatible (no shared state).
#ifndef LIFEBOAT_AGENT_API_CLIENT_H_
#define LIFEBOAT_AGENT_API_CLIENT_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>

#include "base/status.h"

namespace lifeboat::agent {

struct ApiReply {
  int status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;                            // empty when the body went to `on_line`
};

struct ApiCall {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  std::string method = "GET";
  std::string target = "/";  // path and query, already escaped
  std::string bearer_token;  // sent as "Authorization: Bearer ..." when not empty
  int64_t connect_timeout_ms = 5'000;
  // Longest wait for the next byte of the response (a streamed /sync sends
  // progress often; a whole pull may take long, so this is per read).
  int64_t read_timeout_ms = 60'000;
  // When set, the (de-chunked) body of a 2xx response is split on '\n' and
  // every line is passed here as it arrives instead of being collected in
  // ApiReply::body (an error response is still collected in body).
  std::function<void(std::string_view line)> on_line;
};

// Performs the call. Errors: kUnavailable (retryable) when nothing listens
// at host:port ("is the agent running?"), kTemporary on a timeout, kData on
// a malformed response. An HTTP error status is not an error here: look at
// ApiReply::status.
Result<ApiReply> CallApi(const ApiCall& call);

// The call skeleton for the local agent listening on agent.api host:port (a
// wildcard address becomes loopback), with auth.api_token ("" = none).
ApiCall ApiCallFor(const std::string& host, uint16_t port, const std::string& token);

// "%xx"-escapes a query value.
std::string QueryEscape(std::string_view value);

}  // namespace lifeboat::agent

#endif  // LIFEBOAT_AGENT_API_CLIENT_H_
