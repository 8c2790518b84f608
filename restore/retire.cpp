#include "restore/retire.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "base/subprocess.h"

namespace lifeboat::restore {
namespace {

bool ByAlias(const RestoredInstance& a, const RestoredInstance& b) {
  if (a.old_alias != b.old_alias) return a.old_alias < b.old_alias;
  return a.old_uuid < b.old_uuid;
}

class VmadmRetirer final : public ZoneRetirer {
 public:
  explicit VmadmRetirer(std::string vmadm) : vmadm_(std::move(vmadm)) {}
  std::string name() const override { return "smartos"; }

  Result<RetireOutcome> Retire(const std::string& uuid) override {
    RetireOutcome out;
    out.how = "vmadm stop + autoboot=false";
    ASSIGN_OR_RETURN(CommandResult got, RunCommand({vmadm_, "get", uuid}));
    if (!got.ok()) {
      // vmload: "VM <uuid> not found"; anything else is a failure to look.
      if (got.err.find("not found") == std::string::npos) {
        return IoError(CommandLine({vmadm_, "get", uuid}) + " failed: " + got.Describe());
      }
      out.missing = true;
      out.how = "no such zone here";
      return out;
    }
    nlohmann::json vm = nlohmann::json::parse(got.out, nullptr, false);
    const std::string state = vm.is_object() ? vm.value("state", "") : "";
    if (state == "running") {
      RETURN_IF_ERROR(MustRun({vmadm_, "stop", uuid}));
      out.was_running = true;
    }
    RETURN_IF_ERROR(MustRun({vmadm_, "update", uuid, "autoboot=false"}));
    return out;
  }

 private:
  Status MustRun(const std::vector<std::string>& argv) {
    ASSIGN_OR_RETURN(CommandResult r, RunCommand(argv));
    if (!r.ok()) return IoError(CommandLine(argv) + " failed: " + r.Describe());
    return Status::Ok();
  }

  std::string vmadm_;
};

}  // namespace

RetireSelection SelectRetirements(const std::string& node,
                                  const std::map<std::string, RestoredInstance>& restored,
                                  const std::map<std::string, exports::RetiredInstance>& retired) {
  RetireSelection out;
  for (const auto& [uuid, r] : restored) {
    if (r.peer != node || r.restored_ms == 0) continue;
    (retired.contains(uuid) ? out.already_retired : out.to_retire).push_back(r);
  }
  std::sort(out.to_retire.begin(), out.to_retire.end(), ByAlias);
  std::sort(out.already_retired.begin(), out.already_retired.end(), ByAlias);
  return out;
}

exports::RetiredInstance RetiredRecord(const RestoredInstance& r, int64_t now_ms,
                                       const std::string& how) {
  exports::RetiredInstance out;
  out.uuid = r.old_uuid;
  out.alias = r.old_alias;
  out.service = r.service;
  out.restored_on = r.node;
  out.new_uuid = r.new_uuid;
  out.new_alias = r.alias;
  out.retired_ms = now_ms;
  out.how = how;
  return out;
}

std::unique_ptr<ZoneRetirer> NewVmadmRetirer(std::string vmadm) {
  return std::make_unique<VmadmRetirer>(std::move(vmadm));
}

}  // namespace lifeboat::restore
