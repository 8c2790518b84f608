// A temp directory for one test, removed with everything in it at scope exit.
#ifndef LIFEBOAT_TESTS_UNIT_BASE_TEST_DIR_H_
#define LIFEBOAT_TESTS_UNIT_BASE_TEST_DIR_H_

#include <cstdlib>
#include <string>

#include "base/env.h"

namespace lifeboat::testing {

class TestDir {
 public:
  TestDir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/lifeboat-test-XXXXXX";
    path_ = ::mkdtemp(tmpl.data()) ? tmpl : "";
  }
  ~TestDir() { RemoveTree(*Env::Default(), path_).IgnoreError(); }
  TestDir(const TestDir&) = delete;
  TestDir& operator=(const TestDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(std::string_view rel) const { return JoinPath(path_, rel); }

 private:
  std::string path_;
};

}  // namespace lifeboat::testing

#endif  // LIFEBOAT_TESTS_UNIT_BASE_TEST_DIR_H_
