// Running in the background of a headnode: the headnode's own services come
// first, so work that can wait (pull workers, restore drills) lowers its CPU
// priority and moves to the idle I/O class.
#ifndef LIFEBOAT_BASE_PRIORITY_H_
#define LIFEBOAT_BASE_PRIORITY_H_

namespace lifeboat {

// Sets the calling thread's nice value to `nice` (only ever lowers the
// priority of an unprivileged caller) and, where the kernel has ioprio_set
// (Linux), its I/O class to idle. Best effort: failures are ignored.
void LowerThreadPriority(int nice);

}  // namespace lifeboat

#endif  // LIFEBOAT_BASE_PRIORITY_H_
