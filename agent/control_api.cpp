#include "agent/control_api.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <cctype>
#include <string_view>

#include "base/text.h"

namespace lifeboat::agent {
namespace {

// "Authorization: Bearer <token>"; the scheme is case-insensitive and may be
// followed by several spaces (RFC 7235 2.1); the token compares in constant time.
bool TokenMatches(const std::string& want, const HttpRequest& req) {
  auto it = req.headers.find("authorization");
  if (it == req.headers.end()) return false;
  std::string_view v = it->second;
  constexpr std::string_view kScheme = "bearer";
  if (v.size() <= kScheme.size() || v[kScheme.size()] != ' ') return false;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(v[i])) != kScheme[i]) return false;
  }
  std::string_view got = v.substr(kScheme.size());
  while (!got.empty() && got.front() == ' ') got.remove_prefix(1);
  return got.size() == want.size() && CRYPTO_memcmp(got.data(), want.data(), want.size()) == 0;
}

std::vector<std::string> SplitServices(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    std::string part =
        s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!part.empty()) out.push_back(part);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

// Service names as the config accepts them (export.services): [a-z0-9_-]{1,64}.
bool IsServiceName(std::string_view s) {
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

void SendJsonResult(const std::shared_ptr<HttpResponse>& resp, Result<nlohmann::json> r) {
  if (!r.ok()) {
    resp->SendStatus(r.status());
    return;
  }
  resp->SendJson(200, *r);
}

}  // namespace

void ControlApi::Handle(const HttpRequest& req, std::shared_ptr<HttpResponse> resp) {
  const std::string& p = req.path;
  bool known =
      p == "/healthz" || p == "/status" || p == "/catalog" || p == "/metrics" || p == "/sync" ||
      p == "/readiness" || p == "/restores" || p == "/repair";
  if (!known) {
    resp->SendError(404, "ResourceNotFound", p + " does not exist");
    return;
  }
  std::string want = p == "/sync" || p == "/repair" ? "POST" : "GET";
  if (req.method != want && !(req.method == "HEAD" && want == "GET")) {
    resp->SendError(405, "MethodNotAllowed", req.method + " is not supported on " + p);
    return;
  }
  if (p != "/healthz" && !token_.empty() && !TokenMatches(token_, req)) {
    resp->SendError(401, "InvalidCredentials", "a valid bearer token is required");
    return;
  }
  if (p == "/healthz") {
    std::string why = backend_->Unhealthy();
    if (why.empty()) {
      resp->SendJson(200, {{"ok", true}});
    } else {
      resp->SendError(503, "ServiceUnavailable", why);
    }
  } else if (p == "/status") {
    backend_->GetStatus([resp](Result<nlohmann::json> r) { SendJsonResult(resp, std::move(r)); });
  } else if (p == "/catalog") {
    backend_->GetCatalog([resp](Result<nlohmann::json> r) { SendJsonResult(resp, std::move(r)); });
  } else if (p == "/readiness") {
    backend_->GetReadiness(
        [resp](Result<nlohmann::json> r) { SendJsonResult(resp, std::move(r)); });
  } else if (p == "/restores") {
    backend_->GetRestores([resp](Result<nlohmann::json> r) { SendJsonResult(resp, std::move(r)); });
  } else if (p == "/repair") {
    backend_->Repair([resp](Result<nlohmann::json> r) { SendJsonResult(resp, std::move(r)); });
  } else if (p == "/metrics") {
    backend_->GetMetrics([resp](std::string text) {
      resp->Send(200, "text/plain; version=0.0.4; charset=utf-8", text);
    });
  } else {
    HandleSync(req, std::move(resp));
  }
}

void ControlApi::HandleSync(const HttpRequest& req, std::shared_ptr<HttpResponse> resp) {
  std::string peer = req.query.count("peer") ? req.query.at("peer") : "";
  std::vector<std::string> services = req.query.count("service")
                                          ? SplitServices(req.query.at("service"))
                                          : std::vector<std::string>{};
  for (const std::string& s : services) {
    if (!IsServiceName(s)) {
      resp->SendError(400, "InvalidArgument",
                      "service '" + s + "' is not a service name ([a-z0-9_-], 1 to 64 bytes)");
      return;
    }
  }
  // Progress is throttled per peer: phase changes always, counters at most every packet.
  auto progress = [resp](const PullProgress& p) {
    resp->WriteChunk(DumpJson(ProgressToJson(p)) + "\n");
  };
  auto done = [resp](const std::vector<PullResult>& results) {
    bool ok = true;
    for (const auto& r : results) {
      resp->WriteChunk(DumpJson(ResultToJson(r)) + "\n");
      ok = ok && r.status.ok();
    }
    resp->WriteChunk(
        DumpJson(nlohmann::json{{"type", "done"}, {"ok", ok}, {"peers", results.size()}}) + "\n");
    resp->EndStream();
  };
  // Headers go out first so the client sees the stream start at once.
  std::string from = req.query.count("from") ? req.query.at("from") : "";
  const bool older = req.query.count("older") && req.query.at("older") == "1";
  Status st = from.empty() ? backend_->Sync(peer, services, progress, done)
                           : backend_->SyncFrom(peer, from, older, progress, done);
  if (!st.ok()) {
    resp->SendStatus(st);
    return;
  }
  resp->BeginStream(200, "application/x-ndjson");
}

}  // namespace lifeboat::agent
