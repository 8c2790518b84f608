#include "base/priority.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace lifeboat {

void LowerThreadPriority(int nice) {
#ifdef SYS_gettid
  const pid_t tid = static_cast<pid_t>(::syscall(SYS_gettid));
#else
  const pid_t tid = 0;  // the calling process
#endif
  (void)::setpriority(PRIO_PROCESS, static_cast<id_t>(tid), nice);
#ifdef SYS_ioprio_set
  constexpr int kIoprioWhoProcess = 1;
  constexpr int kIoprioClassIdle = 3;
  constexpr int kIoprioClassShift = 13;
  (void)::syscall(SYS_ioprio_set, kIoprioWhoProcess, tid, kIoprioClassIdle << kIoprioClassShift);
#endif
}

}  // namespace lifeboat
