// Running an external command without a shell (fork + execvpe), feeding it
// stdin and capturing bounded stdout/stderr. Used by the smartos provider
// (vmadm, imgadm, zfs) and the smartos and exec restore backends.
#ifndef LIFEBOAT_BASE_SUBPROCESS_H_
#define LIFEBOAT_BASE_SUBPROCESS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace lifeboat {

struct CommandResult {
  int exit_code = -1;      // the exit status, or 128 + signal when killed by one
  std::string out;         // stdout, at most max_output bytes
  std::string err;         // stderr, at most max_output bytes
  bool truncated = false;  // some output was dropped
  bool timed_out = false;  // killed after CommandOptions::timeout_ms

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
  // When > 0: the child runs in a process group of its own and, if it has
  // not closed its output and exited this many milliseconds after it
  // started, the whole group is killed (SIGKILL); the result then has
  // timed_out set and exit_code 128 + SIGKILL. 0 waits for as long as it runs.
  int64_t timeout_ms = 0;
};

// Runs argv[0] (looked up on PATH when it has no '/') with `argv`, waits for
// it. Fails (kUnavailable) only when the command could not be started at all
// (not found, not executable): a command that runs and exits non-zero is an
// OK Result with that exit code. Thread-safe; blocks the calling thread.
Result<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                 const CommandOptions& options = {});

// The output of a `curl -i` wrapper (sdc-sapi, sdc-vmapi: the status line,
// headers, a blank line, the body): `status` is the final response's HTTP
// status (interim 1xx blocks are skipped), 0 when the output does not start
// with an HTTP status line; `body` is what follows the headers ("" when none).
struct CurlAnswer {
  int status = 0;
  std::string_view body;
};
CurlAnswer ParseCurlOutput(std::string_view out);

// "imgadm install -m '/a b/manifest.json'" for messages and logs.
std::string CommandLine(const std::vector<std::string>& argv);

}  // namespace lifeboat

#endif  // LIFEBOAT_BASE_SUBPROCESS_H_
