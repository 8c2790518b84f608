"""The rsync side of scripts/bench: an rsync daemon on 127.0.0.1 serving the
export as module `export`, and `rsync -a --delete --stats` pulls from it.

Bytes on the wire are rsync's own counters (client side): "Total bytes sent"
(file list requests, block checksums) + "Total bytes received" (file list,
deltas, literal data). Peak RSS: the client's process tree via wait4, the
daemon's per-connection sender sampled from /proc while the pull runs.
"""

import os
import re
import shutil
import subprocess

import bench_procs


class Measure(dict):
    """wall_s, bytes_sent, bytes_received, bytes_wire, rss_puller_kib, rss_exporter_kib;
    rsync pulls also flush_s (the `sync -f` of its copy after the pull)."""


def rsync_version():
    try:
        out = subprocess.run(["rsync", "--version"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return None
    m = re.search(r"rsync\s+version\s+(\S+)\s+protocol version (\d+)", out)
    return "%s (protocol %s)" % (m.group(1), m.group(2)) if m else out.splitlines()[0] if out else None


def parse_stats(text):
    """{'sent': n, 'received': n} from rsync --stats output."""
    out = {}
    for key, name in (("sent", "Total bytes sent"), ("received", "Total bytes received")):
        m = re.search(re.escape(name) + r":\s*([\d,.]+)", text)
        if not m:
            raise bench_procs.CommandFailed("rsync --stats output lacks %r:\n%s" % (name, text[-1500:]))
        out[key] = int(re.sub(r"[,.]", "", m.group(1)))
    return out


class RsyncSide:
    name = "rsync"

    def __init__(self, procs, workdir, export_root, timeout):
        if shutil.which("rsync") is None:
            raise bench_procs.CommandFailed("rsync is not installed (scripts/setup installs it)")
        self.procs, self.workdir, self.export_root, self.timeout = procs, workdir, export_root, timeout
        self.dir = os.path.join(workdir, "rsync")
        os.makedirs(self.dir, exist_ok=True)
        self.dest = os.path.join(self.dir, "dest")
        self.port = bench_procs.free_port()
        self.conf = os.path.join(self.dir, "rsyncd.conf")
        with open(self.conf, "w") as f:
            f.write(
                "use chroot = no\n"
                "munge symlinks = no\n"  # keep symlink targets verbatim, as lifeboat does
                "numeric ids = yes\n"
                "max connections = 8\n"
                "log file = %s\n"
                "[export]\n"
                "    path = %s\n"
                "    read only = yes\n"
                "    uid = %d\n"
                "    gid = %d\n" % (os.path.join(self.dir, "rsyncd.log"), os.path.abspath(export_root),
                                    os.getuid(), os.getgid()))
        self.daemon = None

    def start(self):
        self.daemon = self.procs.start(
            "rsyncd", ["rsync", "--daemon", "--no-detach", "--address", "127.0.0.1", "--port", str(self.port),
                       "--config", self.conf], os.path.join(self.dir, "rsyncd.stderr"))
        bench_procs.wait_for_port(self.port, self.daemon, 30, "rsync daemon")

    def stop(self):
        if self.daemon is not None:
            self.procs.stop(self.daemon)
            self.daemon = None

    def reset(self, aside=None):
        """Empties the destination (for an initial pull); bench_procs.discard_tree."""
        bench_procs.discard_tree(self.dest, aside)

    def pull(self):
        os.makedirs(self.dest, exist_ok=True)
        argv = ["rsync", "-a", "--delete", "--stats", "rsync://127.0.0.1:%d/export/" % self.port, self.dest + "/"]
        with bench_procs.PeakSampler(self.daemon.pid) as sampler:
            res = bench_procs.run_measured(argv, self.timeout, self.dir).check("rsync pull")
        st = parse_stats(res.stdout)
        # rsync does not fsync: what it wrote is in the page cache. Flushing
        # it (not part of its wall time) shows what a durable copy costs, as
        # lifeboat's pulls are, and keeps rsync's writeback out of the next
        # tool's run.
        flush = bench_procs.run_measured(["sync", "-f", self.dest], self.timeout, self.dir).check("sync -f")
        return Measure(wall_s=res.wall, bytes_sent=st["sent"], bytes_received=st["received"],
                       bytes_wire=st["sent"] + st["received"], rss_puller_kib=res.maxrss_kib,
                       rss_exporter_kib=sampler.peak_kib, flush_s=flush.wall)

    def copy_source(self):
        """The tree `cp -a` copies in B6 when lifeboat does not run: rsync's copy of the export."""
        return self.dest
