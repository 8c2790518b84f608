#include "base/memory.h"

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <string>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace lifeboat {
namespace {

// RssAnon of this process in KiB (Linux), or -1.
long RssAnonKib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("RssAnon:", 0) == 0) return std::stol(line.substr(8));
  }
  return -1;
}

}  // namespace

TEST_CASE("freed heap memory goes back to the OS") {
#if defined(__SANITIZE_ADDRESS__)
  WARN("AddressSanitizer's allocator: glibc's malloc_trim has nothing to give back");
#elif defined(__GLIBC__)
  REQUIRE(RssAnonKib() >= 0);
  // glibc returns freed memory by itself only past M_TRIM_THRESHOLD (and an
  // mmap'ed block at once); raise both so that only the call can return it.
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  const size_t size = 32u << 20;
  auto* p = static_cast<volatile char*>(std::malloc(size));
  REQUIRE(p != nullptr);
  for (size_t at = 0; at < size; at += 4096) p[at] = 1;  // resident
  std::free(const_cast<char*>(p));
  const long before = RssAnonKib();
  ReleaseFreedMemory();
  const long after = RssAnonKib();
  mallopt(M_TRIM_THRESHOLD, 128 << 10);  // glibc's defaults
  mallopt(M_MMAP_THRESHOLD, 128 << 10);
  INFO("RssAnon " << before << " KiB before, " << after << " KiB after");
  CHECK(after < before - 16 * 1024);
#else
  WARN("not glibc: ReleaseFreedMemory does nothing here");
#endif
}

}  // namespace lifeboat
