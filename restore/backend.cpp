#include "restore/backend.h"

namespace lifeboat::restore {

Result<StepResult> StepwiseBackend::Run(const Step& step, const StepInput& input) {
  RETURN_IF_ERROR(BeforeStep());
  switch (step.kind) {
    case StepKind::kInstallImage:
      return InstallImage(step);
    case StepKind::kCreateInstance:
      return CreateInstance(step);
    case StepKind::kRestoreData:
      return RestoreData(step, input);
    case StepKind::kAwaitInstance:
      return AwaitInstance(step);
    case StepKind::kAdoptInstance:
      return AdoptInstance(step);
    case StepKind::kRegisterSapi:
      return RegisterSapi(step);
    case StepKind::kRetireOldRecords:
      return RetireOldRecords(step);
  }
  return InternalError(name() + " backend: unknown step kind");
}

}  // namespace lifeboat::restore
