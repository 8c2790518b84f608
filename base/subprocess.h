// Running an external command without a shell (fork + execvpe), feeding it
// stdin and capturing bounded stdout/stderr. Used by the smartos provider
// (vmadm, imgadm, zfs) and the smartos and exec restore backends.
#ifndef LIFEBOAT_BASE_SUBPROCESS_H_
#define LIFEBOAT_BASE_SUBPROCESS_H_

#include <cstddef>
#include <string>
#include <vector>

#include "base/status.h"

namespace lifeboat {

struct CommandResult {
  int exit_code = -1;      // the exit status, or 128 + signal when killed by one
  std::string out;         // stdout, at most max_output bytes
  std::string err;         // stderr, at most max_output bytes
  bool truncated = false;  // some output was dropped

  bool ok() const { return exit_code == 0; }
  // "exit 3: <first lines of stderr>" for error messages.
  std::string Describe() const;
};

struct CommandOptions {
  std::string stdin_data;              // written to the child's stdin, then closed
  size_t max_output = 64 * 1024;       // per stream; the rest is read and dropped
  std::vector<std::string> extra_env;  // "NAME=value" added to the environment
  // When >= 0, the child's stdout goes to this descriptor (e.g. `zfs send`
  // into a file) and CommandResult::out stays empty.
  int stdout_fd = -1;
};

// Runs argv[0] (looked up on PATH when it has no '/') with `argv`, waits for
// it. Fails (kUnavailable) only when the command could not be started at all
// (not found, not executable): a command that runs and exits non-zero is an
// OK Result with that exit code. Thread-safe; blocks the calling thread.
Result<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                 const CommandOptions& options = {});

// "imgadm install -m '/a b/manifest.json'" for messages and logs.
std::string CommandLine(const std::vector<std::string>& argv);

}  // namespace lifeboat

#endif  // LIFEBOAT_BASE_SUBPROCESS_H_
