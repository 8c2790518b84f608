"""Process plumbing for scripts/bench: daemons that are always stopped,
measured one-shot commands (wall time, exit code, peak RSS via wait4), peak
RSS sampling of running processes, free loopback ports.

Every daemon runs in its own session (process group); Procs.stop_all() sends
SIGTERM to each group it started, then SIGKILL after a grace period. It is
idempotent and registered with atexit by install_signal_handlers().
"""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import threading
import time


class CommandFailed(Exception):
    pass


class Procs:
    def __init__(self):
        self.daemons = []  # (name, Popen, log path) of the running ones
        self.history = []  # {"name", "pid"} of every daemon started

    def start(self, name, argv, log_path, env=None, cwd=None):
        log = open(log_path, "ab")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True, env=env, cwd=cwd)
        log.close()
        self.daemons.append((name, p, log_path))
        self.history.append({"name": name, "pid": p.pid})
        return p

    def stop(self, p, grace=10.0):
        """SIGTERM to p's process group, SIGKILL after `grace` seconds. Returns the exit code."""
        if p.poll() is None:
            _killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=10)
        else:
            _killpg(p.pid, signal.SIGKILL)  # stray children of an exited leader
        self.daemons = [d for d in self.daemons if d[1] is not p]
        return p.returncode

    def stop_all(self):
        for _, p, _ in list(self.daemons):
            try:
                self.stop(p, grace=5.0)
            except Exception:  # best effort on the way out
                pass


def _killpg(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def discard_tree(path, aside=None):
    """Empties the place of `path`: removes the tree, or with `aside` (a
    directory) moves it there, to be removed with the bench's temp dir."""
    if not os.path.exists(path):
        return
    if aside is None:
        shutil.rmtree(path)
        return
    os.makedirs(aside, exist_ok=True)
    os.rename(path, os.path.join(aside, "%s-%d" % (os.path.basename(path), time.monotonic_ns())))


def install_signal_handlers(procs):
    """Ctrl-C, SIGTERM and SIGHUP unwind the Python stack (so `finally`
    blocks run); atexit stops whatever is still running."""
    atexit.register(procs.stop_all)

    def _raise(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _raise)


class Result:
    def __init__(self, argv, rc, wall, maxrss_kib, stdout, stderr):
        self.argv, self.rc, self.wall, self.maxrss_kib = argv, rc, wall, maxrss_kib
        self.stdout, self.stderr = stdout, stderr

    def check(self, what):
        if self.rc != 0:
            tail = (self.stderr or self.stdout or "")[-2000:]
            raise CommandFailed("%s failed (exit %s): %s\n%s" % (what, self.rc, " ".join(self.argv), tail))
        return self


_GNU_TIME = None


def gnu_time():
    """Path of GNU time (/usr/bin/time with -f), or "" when not installed."""
    global _GNU_TIME
    if _GNU_TIME is None:
        _GNU_TIME = ""
        if os.access("/usr/bin/time", os.X_OK):
            try:
                p = subprocess.run(["/usr/bin/time", "-f", "%M", "true"], capture_output=True, text=True, timeout=10)
                if p.returncode == 0 and p.stderr.strip().isdigit():
                    _GNU_TIME = "/usr/bin/time"
            except OSError:
                pass
    return _GNU_TIME


def run_measured(argv, timeout, workdir, cwd=None, env=None):
    """Runs argv to completion in its own process group; returns a Result with
    wall seconds and the peak RSS (KiB) of the largest process of its tree.

    Peak RSS comes from GNU time's %M when installed (its wait4 ru_maxrss: a
    small C parent, so the figure is the command's own); otherwise from
    sampling VmHWM under /proc every 20 ms. Not from our own wait4: Linux
    carries the pre-exec RSS of the forking parent (this Python) into
    ru_maxrss. Kills the group on timeout. Wall time includes GNU time's
    fork+exec (well under a millisecond)."""
    out_path = os.path.join(workdir, ".cmd.out")
    err_path = os.path.join(workdir, ".cmd.err")
    rss_path = os.path.join(workdir, ".cmd.rss")
    timer_argv = [gnu_time(), "-f", "%M", "-o", rss_path] if gnu_time() else []
    if os.path.exists(rss_path):
        os.unlink(rss_path)
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.monotonic()
        p = subprocess.Popen(timer_argv + list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                             start_new_session=True, cwd=cwd, env=env)
        sampler = PeakSampler(p.pid, include_root=True) if not timer_argv else None
        if sampler:
            sampler.__enter__()
        timer = threading.Timer(timeout, _killpg, (p.pid, signal.SIGKILL))
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        except BaseException:
            _killpg(p.pid, signal.SIGKILL)
            p.wait()
            raise
        finally:
            timer.cancel()
            if sampler:
                sampler.__exit__(None, None, None)
        wall = time.monotonic() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        _killpg(p.pid, signal.SIGKILL)  # nothing of it may outlive the measurement
    with open(out_path, errors="replace") as f:
        stdout = f.read()
    with open(err_path, errors="replace") as f:
        stderr = f.read()
    rc = p.returncode
    if rc == -signal.SIGKILL and wall >= timeout:
        stderr += "\n(killed after %.0f s timeout)" % timeout
    maxrss = sampler.peak_kib if sampler else 0
    if timer_argv:
        try:
            with open(rss_path) as f:
                maxrss = int(f.read().split()[-1])
        except (OSError, ValueError, IndexError):
            maxrss = 0
    return Result(argv, rc, wall, maxrss, stdout, stderr)


def vm_hwm_kib(pid):
    """Peak RSS (VmHWM) of a live process in KiB, or 0 if it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def reset_hwm(pid):
    """Resets a process's VmHWM to its current RSS (Linux clear_refs "5").
    Returns False when the kernel or permissions do not allow it."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def descendants(pid):
    """Pids of all live descendants of pid (scans /proc)."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class PeakSampler:
    """Samples the VmHWM of the descendants of `root_pid` (and of root_pid
    itself with include_root) every `period`
    seconds while active; .peak_kib is the largest seen (a process that lives
    shorter than one period can be missed)."""

    def __init__(self, root_pid, period=0.02, include_root=False):
        self.root_pid, self.period, self.include_root = root_pid, period, include_root
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _loop(self):
        while not self._stop.is_set():
            for pid in descendants(self.root_pid) + ([self.root_pid] if self.include_root else []):
                self.peak_kib = max(self.peak_kib, vm_hwm_kib(pid))
            self._stop.wait(self.period)


def free_port():
    """A loopback TCP port free right now (bind to port 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, timeout, what):
    """Waits until 127.0.0.1:port accepts a connection; fails early when
    `proc` exits. Raises CommandFailed on timeout."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CommandFailed("%s exited (code %s) before listening on port %d" % (what, proc.returncode, port))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
    raise CommandFailed("%s did not listen on port %d within %.0f s" % (what, port, timeout))
