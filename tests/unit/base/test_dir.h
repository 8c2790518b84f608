// A temp directory for one test, removed with everything in it at scope exit
// (read-only directories a test made are made writable first). Shared by the
// unit tests of every module.
#ifndef LIFEBOAT_TESTS_UNIT_BASE_TEST_DIR_H_
#define LIFEBOAT_TESTS_UNIT_BASE_TEST_DIR_H_

#include <ftw.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "base/env.h"

namespace lifeboat::testing {

class TestDir {
 public:
  TestDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/lifeboat-test-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::perror("mkdtemp");
      std::abort();
    }
    path_ = tmpl;
  }
  ~TestDir() {
    ::nftw(path_.c_str(), &MakeWritable, 16, FTW_PHYS);
    RemoveTree(*Env::Default(), path_).IgnoreError();
  }
  TestDir(const TestDir&) = delete;
  TestDir& operator=(const TestDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(std::string_view rel) const { return JoinPath(path_, rel); }
  std::string Sub(std::string_view rel) const { return JoinPath(path_, rel); }

 private:
  static int MakeWritable(const char* p, const struct stat* st, int type, struct FTW*) {
    if (type == FTW_D || type == FTW_DNR) ::chmod(p, (st->st_mode & 07777) | S_IRWXU);
    return 0;
  }

  std::string path_;
};

}  // namespace lifeboat::testing

#endif  // LIFEBOAT_TESTS_UNIT_BASE_TEST_DIR_H_
