// The exec backend: the operator's own hooks, one command per step kind.
//
// The command gets the step as one JSON object on stdin (Step::ToJson plus
// "backend": "exec") and LIFEBOAT_STEP_KIND, LIFEBOAT_STEP_ID,
// LIFEBOAT_NEW_UUID in its environment. Exit 0 means done; any other exit
// stops the restore with the command's stderr in the error. Hooks must be
// safe to run again for a step whose earlier run failed.
#include <memory>

#include "base/subprocess.h"
#include "base/text.h"
#include "restore/backend.h"

namespace lifeboat::restore {
namespace {

// Step kinds an operator may leave without a hook: their steps are then
// skipped with a note (an instance that needs no wait, a site without SAPI).
bool OptionalKind(StepKind kind) {
  return kind == StepKind::kAwaitInstance || kind == StepKind::kAdoptInstance ||
         kind == StepKind::kRegisterSapi || kind == StepKind::kRetireOldRecords;
}

class ExecBackend final : public Backend {
 public:
  explicit ExecBackend(ExecBackendOptions options) : options_(std::move(options)) {}

  std::string name() const override { return "exec"; }
  std::string target() const override { return options_.target; }

  Result<bool> HasImage(const std::string& uuid) override {
    if (options_.has_image.empty()) return false;
    std::vector<std::string> argv = options_.has_image;
    argv.push_back(uuid);
    ASSIGN_OR_RETURN(CommandResult r, RunCommand(argv));
    if (r.exit_code == 0) return true;
    if (r.exit_code == 1) return false;
    return IoError("image check " + CommandLine(argv) + " failed: " + r.Describe());
  }

  Result<std::set<std::string>> TargetAliases() override { return std::set<std::string>(); }

  Status Check(const Plan& plan) override {
    for (const Step& s : plan.steps) {
      auto it = options_.commands.find(std::string(StepKindName(s.kind)));
      if (it == options_.commands.end() || it->second.empty()) {
        if (OptionalKind(s.kind)) continue;
        return ConfigError("exec backend: no command for step kind " +
                           std::string(StepKindName(s.kind)) + " in [restore.exec]");
      }
    }
    return Status::Ok();
  }

  Result<StepResult> Run(const Step& step, const StepInput& input) override {
    const std::string kind(StepKindName(step.kind));
    auto it = options_.commands.find(kind);
    if (it == options_.commands.end() || it->second.empty()) {
      if (OptionalKind(step.kind)) {
        return StepResult{0, false, "no " + kind + " command in [restore.exec]"};
      }
      return ConfigError("exec backend: no command for step kind " + kind + " in [restore.exec]");
    }
    nlohmann::json stdin_json = step.ToJson();
    stdin_json["backend"] = "exec";
    if (input.data_meta != nullptr) {
      // The exported mode, mtime, owner and hard link of every entry under
      // data_path: the catalog's copy on disk may carry others.
      nlohmann::json files = nlohmann::json::object();
      for (const auto& [rel, m] : *input.data_meta) {
        nlohmann::json& f = files[rel.empty() ? "." : rel];
        f = {{"mode", m.mode}, {"mtime_ns", m.mtime_ns}, {"uid", m.uid}, {"gid", m.gid}};
        if (!m.hardlink_of.empty()) f["hardlink_of"] = m.hardlink_of;
      }
      stdin_json["data_meta"] = std::move(files);
    }
    CommandOptions opts;
    opts.stdin_data = DumpJson(stdin_json) + "\n";
    opts.extra_env = {"LIFEBOAT_STEP_KIND=" + kind, "LIFEBOAT_STEP_ID=" + step.id,
                      "LIFEBOAT_NEW_UUID=" + step.new_uuid};
    auto r = RunCommand(it->second, opts);
    if (!r.ok()) return r.status().WithContext("step " + step.id);
    if (!r->ok()) {
      return IoError("step " + step.id + ": " + CommandLine(it->second) +
                     " failed: " + r->Describe());
    }
    return StepResult{step.bytes, false};
  }

 private:
  ExecBackendOptions options_;
};

}  // namespace

std::unique_ptr<Backend> NewExecBackend(ExecBackendOptions options) {
  return std::make_unique<ExecBackend>(std::move(options));
}

}  // namespace lifeboat::restore
