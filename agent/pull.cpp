#include "agent/pull.h"

namespace lifeboat::agent {

std::string_view PullPhaseName(PullPhase phase) {
  switch (phase) {
    case PullPhase::kIdle:
      return "idle";
    case PullPhase::kConnecting:
      return "connecting";
    case PullPhase::kHandshake:
      return "handshake";
    case PullPhase::kManifest:
      return "manifest";
    case PullPhase::kTransfer:
      return "transfer";
    case PullPhase::kCommit:
      return "commit";
  }
  return "?";
}

nlohmann::json ProgressToJson(const PullProgress& p) {
  return {{"type", "progress"},
          {"peer", p.peer},
          {"phase", PullPhaseName(p.phase)},
          {"files_done", p.files_done},
          {"files_total", p.files_total},
          {"bytes_done", p.bytes_done},
          {"bytes_total", p.bytes_total},
          {"wire_bytes", p.wire_bytes}};
}

nlohmann::json ResultToJson(const PullResult& r) {
  nlohmann::json j = {{"type", "result"},
                      {"peer", r.peer},
                      {"ok", r.status.ok()},
                      {"generation", r.generation},
                      {"unchanged", r.unchanged},
                      {"files", r.files},
                      {"file_bytes", r.file_bytes},
                      {"wire_bytes", r.wire_bytes},
                      {"literal_bytes", r.literal_bytes},
                      {"instances", r.instances},
                      {"duration_ms", r.duration_ms}};
  if (!r.status.ok()) {
    j["error"] = {{"code", std::string(CodeName(r.status.code()))},
                  {"message", r.status.message()},
                  {"retryable", r.status.retryable()}};
  }
  return j;
}

}  // namespace lifeboat::agent
