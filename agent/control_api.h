// The control API on agent.api: routes HTTP requests to a ControlBackend.
//
//   GET  /healthz                 200 {"ok":true} while the agent runs; 503 when stopping
//   GET  /status                  per-peer state, services held, this node's export
//   GET  /catalog                 the instances and images held
//   GET  /metrics                 Prometheus text format
//   GET  /readiness               if each peer died now: restorable, RPO, RTO,
//                                 blockers (restore/readiness.h; this node's
//                                 copies only: `lifeboat readiness` asks the cluster)
//   GET  /restores                what restores on this node rebuilt or began
//                                 to: {"node", "restored":[...]} (shared so
//                                 every node sees deposed instances)
//   POST /sync?peer=P&service=S   pull now (both optional; service may repeat
//                                 as a comma list); streams NDJSON: "progress"
//                                 objects, one "result" object per peer, then
//                                 a final {"type":"done","ok":...}
//   POST /sync?peer=P&from=N[&older=1]  pull P's copy held by node N; a copy
//                                 older than ours only with older=1
//   POST /repair                  scrub the catalog with repair now
//                                 (catalog::Store::Scrub), then pull the peers
//                                 whose copies lost objects; answers the
//                                 scrub's report (503 while one runs)
//
// Errors are restify-shaped: {"code":"ResourceNotFound","message":"..."}.
// When the config sets auth.api_token, every route but /healthz needs
// "Authorization: Bearer <token>".
//
// Threads: loop thread only; backend callbacks must run on the loop thread.
#ifndef LIFEBOAT_AGENT_CONTROL_API_H_
#define LIFEBOAT_AGENT_CONTROL_API_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/http_server.h"
#include "agent/pull.h"

namespace lifeboat::agent {

class ControlBackend {
 public:
  virtual ~ControlBackend() = default;
  using JsonFn = std::function<void(Result<nlohmann::json>)>;
  virtual void GetStatus(JsonFn done) = 0;
  virtual void GetCatalog(JsonFn done) = 0;
  virtual void GetMetrics(std::function<void(std::string)> done) = 0;
  // The readiness document; kNotFound when this agent was started without one.
  virtual void GetReadiness(JsonFn done) {
    done(NotFoundError("this agent does not compute readiness"));
  }
  // The restores document; kNotFound when this agent was started without one.
  virtual void GetRestores(JsonFn done) {
    done(NotFoundError("this agent does not share its restores"));
  }
  // Scrubs the catalog with repair (catalog::Store::Scrub(true)) and starts a
  // pull of every peer whose copy lost objects; `done` gets the report
  // (RepairJson) once the scrub finished, without waiting for those pulls.
  // kUnavailable while a scrub runs; kNotFound when this agent cannot.
  virtual void Repair(JsonFn done) { done(NotFoundError("this agent does not repair")); }
  // Empty when healthy, else why not.
  virtual std::string Unhealthy() = 0;
  // Pulls now from `peer` ("" = every peer) restricted to `services`.
  // Returns an error (unknown peer, shutting down) without calling anything,
  // else calls `progress` any number of times and `done` once with one result
  // per peer, never from inside Sync() itself.
  virtual Status Sync(const std::string& peer, const std::vector<std::string>& services,
                      ProgressFn progress,
                      std::function<void(const std::vector<PullResult>&)> done) = 0;
  // Pulls `peer`'s data held by the configured node `from` (its copy of
  // `peer`, HELD_MANIFEST_REQUEST) into the catalog as `peer`'s, now,
  // outside the peer's schedule. Same contract as Sync (one result).
  // Refused (in the result) when that copy is older than the one held here,
  // unless `allow_older`.
  virtual Status SyncFrom(const std::string& peer, const std::string& from, bool allow_older,
                          ProgressFn progress,
                          std::function<void(const std::vector<PullResult>&)> done) {
    (void)allow_older;
    (void)progress;
    (void)done;
    return UsageError("this agent cannot pull " + peer + "'s copy from " + from);
  }
};

class ControlApi {
 public:
  // `backend` must outlive the ControlApi. `token` "" disables authentication.
  ControlApi(ControlBackend* backend, std::string token)
      : backend_(backend), token_(std::move(token)) {}
  void Handle(const HttpRequest& req, std::shared_ptr<HttpResponse> resp);

 private:
  void HandleSync(const HttpRequest& req, std::shared_ptr<HttpResponse> resp);
  ControlBackend* backend_;
  std::string token_;
};

}  // namespace lifeboat::agent

#endif  // LIFEBOAT_AGENT_CONTROL_API_H_
