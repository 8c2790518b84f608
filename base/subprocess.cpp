#include "base/subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "base/text.h"

extern char** environ;

namespace lifeboat {
namespace {

struct Pipe {
  int fd[2] = {-1, -1};
  ~Pipe() { CloseBoth(); }
  void Close(int i) {
    if (fd[i] >= 0) ::close(fd[i]);
    fd[i] = -1;
  }
  void CloseBoth() {
    Close(0);
    Close(1);
  }
};

bool MakePipe(Pipe& p) { return ::pipe2(p.fd, O_CLOEXEC) == 0; }

// write(2) to a pipe whose reader may be gone, without letting SIGPIPE kill
// the process: SIGPIPE is blocked for this thread around the call and a
// pending one consumed (the usual trick for libraries that must not change
// process-wide signal dispositions).
ssize_t WriteNoSigpipe(int fd, const void* data, size_t len) {
  sigset_t pipe_set, old_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  ::pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
  ssize_t w = ::write(fd, data, len);
  int saved = errno;
  if (w < 0 && saved == EPIPE) {
    struct timespec zero = {0, 0};
    while (::sigtimedwait(&pipe_set, nullptr, &zero) < 0 && errno == EINTR) {
    }
  }
  ::pthread_sigmask(SIG_SETMASK, &old_set, nullptr);
  errno = saved;
  return w;
}

}  // namespace

std::string CommandResult::Describe() const {
  std::string msg = "exit " + std::to_string(exit_code);
  std::string e = TrimTrailingSpace(err);
  if (e.size() > 2000) e = e.substr(0, 2000) + "...";
  if (!e.empty()) msg += ": " + e;
  return msg;
}

CurlAnswer ParseCurlOutput(std::string_view out) {
  for (;;) {
    CurlAnswer a;
    if (!out.starts_with("HTTP/")) return a;
    const size_t sp = out.find(' ');
    if (sp == std::string_view::npos || sp + 4 > out.size()) return a;
    for (size_t i = sp + 1; i < sp + 4; ++i) {
      if (out[i] < '0' || out[i] > '9') return CurlAnswer{};
      a.status = a.status * 10 + (out[i] - '0');
    }
    size_t end = out.find("\r\n\r\n");
    size_t skip = 4;
    if (const size_t lf = out.find("\n\n"); lf < end) {
      end = lf;
      skip = 2;
    }
    if (end == std::string_view::npos) return a;  // headers only
    out.remove_prefix(end + skip);
    if (a.status >= 200) {
      a.body = out;
      return a;
    }
  }
}

std::string CommandLine(const std::vector<std::string>& argv) {
  std::string out;
  for (const std::string& a : argv) {
    if (!out.empty()) out += ' ';
    bool plain = !a.empty() && a.find_first_of(" \t\n'\"\\$*?;&|<>()`") == std::string::npos;
    if (plain) {
      out += a;
    } else {
      out += '\'';
      for (char c : a) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
      out += '\'';
    }
  }
  return out;
}

Result<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                 const CommandOptions& options) {
  if (argv.empty()) return InternalError("RunCommand: empty argv");
  // Everything the child needs is prepared before fork: after it, only
  // async-signal-safe calls.
  std::vector<char*> cargv;
  for (const std::string& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
  for (const std::string& e : options.extra_env) env_strings.push_back(e);
  std::vector<char*> cenv;
  for (std::string& e : env_strings) cenv.push_back(e.data());
  cenv.push_back(nullptr);

  Pipe in, out, err, status;  // status: the child reports an exec failure's errno
  if (!MakePipe(in) || !MakePipe(out) || !MakePipe(err) || !MakePipe(status)) {
    return PosixError("pipe for", argv[0], errno);
  }
  pid_t pid = ::fork();
  if (pid < 0) return PosixError("fork for", argv[0], errno);
  if (pid == 0) {
    if (options.timeout_ms > 0) ::setpgid(0, 0);
    ::dup2(in.fd[0], 0);
    ::dup2(options.stdout_fd >= 0 ? options.stdout_fd : out.fd[1], 1);
    ::dup2(err.fd[1], 2);
    ::signal(SIGPIPE, SIG_DFL);
    ::execvpe(cargv[0], cargv.data(), cenv.data());
    int e = errno;
    ssize_t ignored = ::write(status.fd[1], &e, sizeof(e));
    (void)ignored;
    ::_exit(127);
  }
  in.Close(0);
  out.Close(1);
  if (options.stdout_fd >= 0) out.Close(0);
  err.Close(1);
  status.Close(1);

  int exec_errno = 0;
  ssize_t n;
  do {
    n = ::read(status.fd[0], &exec_errno, sizeof(exec_errno));
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof(exec_errno))) {
    int wstatus;
    while (::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
    }
    return UnavailableError("cannot run " + argv[0] + ": " + std::strerror(exec_errno),
                            /*retryable=*/false);
  }

  if (options.timeout_ms > 0) ::setpgid(pid, pid);  // either side may run first
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(options.timeout_ms);
  CommandResult result;
  size_t written = 0;
  if (options.stdin_data.empty()) in.Close(1);
  if (in.fd[1] >= 0) ::fcntl(in.fd[1], F_SETFL, O_NONBLOCK);
  char buf[65536];
  while (out.fd[0] >= 0 || err.fd[0] >= 0 || in.fd[1] >= 0) {
    pollfd fds[3];
    int nfds = 0;
    int which[3];
    if (in.fd[1] >= 0) {
      fds[nfds] = {in.fd[1], POLLOUT, 0};
      which[nfds++] = 0;
    }
    if (out.fd[0] >= 0) {
      fds[nfds] = {out.fd[0], POLLIN, 0};
      which[nfds++] = 1;
    }
    if (err.fd[0] >= 0) {
      fds[nfds] = {err.fd[0], POLLIN, 0};
      which[nfds++] = 2;
    }
    int wait_ms = -1;
    if (options.timeout_ms > 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      wait_ms = static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(left.count(), 1 << 30)));
    }
    const int ready = ::poll(fds, static_cast<nfds_t>(nfds), wait_ms);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return PosixError("poll on the pipes of", argv[0], errno);
    }
    if (ready == 0 && options.timeout_ms > 0) {
      // The group: a wrapper script's curl would otherwise keep the pipes open.
      ::kill(-pid, SIGKILL);
      result.timed_out = true;
      out.Close(0);
      err.Close(0);
      in.Close(1);
      break;
    }
    for (int i = 0; i < nfds; ++i) {
      if (fds[i].revents == 0) continue;
      if (which[i] == 0) {
        ssize_t w = WriteNoSigpipe(in.fd[1], options.stdin_data.data() + written,
                                   options.stdin_data.size() - written);
        if (w > 0) written += static_cast<size_t>(w);
        // EPIPE: the child does not read its stdin; that is its business.
        if ((w < 0 && errno != EAGAIN && errno != EINTR) || written == options.stdin_data.size()) {
          in.Close(1);
        }
        continue;
      }
      Pipe& p = which[i] == 1 ? out : err;
      std::string& sink = which[i] == 1 ? result.out : result.err;
      ssize_t r = ::read(p.fd[0], buf, sizeof(buf));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        p.Close(0);
        continue;
      }
      size_t room = options.max_output > sink.size() ? options.max_output - sink.size() : 0;
      size_t take = std::min(room, static_cast<size_t>(r));
      sink.append(buf, take);
      if (take < static_cast<size_t>(r)) result.truncated = true;
    }
  }
  int wstatus = 0;
  while (::waitpid(pid, &wstatus, 0) < 0) {
    if (errno != EINTR) return PosixError("waitpid for", argv[0], errno);
  }
  if (WIFEXITED(wstatus)) {
    result.exit_code = WEXITSTATUS(wstatus);
  } else if (WIFSIGNALED(wstatus)) {
    result.exit_code = 128 + WTERMSIG(wstatus);
  }
  return result;
}

}  // namespace lifeboat
