// Giving freed heap memory back to the operating system.
//
// glibc keeps what a thread frees in that thread's arena. A pull or a scan
// allocates tens of MB (manifests, plans, caches) on whichever worker thread
// runs it; without a trim, every arena ends up holding one such peak and the
// agent's RSS grows with the number of threads and with each large pull.
#ifndef LIFEBOAT_BASE_MEMORY_H_
#define LIFEBOAT_BASE_MEMORY_H_

namespace lifeboat {

// Returns the free memory of every malloc arena to the OS (malloc_trim(0)
// with glibc; nothing elsewhere). Costs a walk of the free lists: call it
// after a large piece of work, not in a loop. Thread-safe.
void ReleaseFreedMemory();

}  // namespace lifeboat

#endif  // LIFEBOAT_BASE_MEMORY_H_
