"""The lifeboat side of scripts/bench, written against the CLI contract of
DESIGN.md ("The lifeboat command") and packaging/lifeboat.toml.example.

Two agents on 127.0.0.1: `bench-src` exports the fixture (dir provider),
`bench-dst` pulls from it. A measured pull is `lifeboat sync-now -j --peer
bench-src` against bench-dst (wall time of that command). Bytes on the wire:
the sent/received byte counts of the sync-now result line when it carries
them, else the difference of the pulling agent's `GET /metrics` counters
(see wire_bytes()). Peak RSS: VmHWM of each agent, reset before every pull
(/proc/<pid>/clear_refs), read after it.

The side runs with the default transport (TLS 1.3, PSK from the cluster key);
`--tls-cost` adds a second pair with `auth.transport = "plain"` named
`lifeboat-plain`, so the table shows what encryption costs.

Everything that depends on the agent's exact output is in this module.
"""

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request

import bench_procs
import detrand
from rsync_side import Measure

SRC, DST = "bench-src", "bench-dst"


def lifeboat_version(binary):
    try:
        p = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
        return p.stdout.strip() if p.returncode == 0 else None
    except OSError:
        return None


def check_available(binary):
    """None when `binary` exists and has the agent, sync-now and restore
    commands; else the reason it cannot run the lifeboat side."""
    if not os.access(binary, os.X_OK):
        return "%s not found (build it: scripts/build)" % binary
    for cmd in (["agent"], ["sync-now"], ["restore"]):
        p = subprocess.run([binary] + cmd + ["--help"], capture_output=True, text=True, timeout=10)
        if p.returncode != 0:
            return "%s has no working `%s` command yet (exit %d: %s)" % (
                binary, cmd[0], p.returncode, (p.stderr or p.stdout).strip()[-200:])
    return None


def _toml_str(s):
    return json.dumps(str(s))


class Node:
    def __init__(self, side, name, export_root):
        self.name = name
        self.dir = os.path.join(side.dir, name)
        self.data_dir = os.path.join(self.dir, "data")
        self.export_root = export_root
        self.port = bench_procs.free_port()
        self.api_port = bench_procs.free_port()
        self.config = os.path.join(self.dir, "lifeboat.toml")
        self.log = os.path.join(self.dir, "agent.log")
        self.proc = None
        os.makedirs(self.dir, exist_ok=True)

    def write_config(self, side, peer):
        with open(self.config, "w") as f:
            f.write("[node]\nuuid = %s\nname = %s\n\n" % (_toml_str(detrand.uuid_for("bench-node", self.name)), _toml_str(self.name)))
            f.write("[agent]\nlisten = %s\napi = %s\ndata_dir = %s\ninterval = \"24h\"\nstale_after = \"48h\"\n"
                    "bwlimit = \"0\"\nlog_level = \"info\"\n\n" % (
                        _toml_str("127.0.0.1:%d" % self.port), _toml_str("127.0.0.1:%d" % self.api_port),
                        _toml_str(self.data_dir)))
            f.write("[auth]\ncluster_key_file = %s\ntransport = %s\n\n" % (_toml_str(side.key_file),
                                                                        _toml_str(side.transport)))
            f.write("[export]\nprovider = \"dir\"\nroot = %s\nservices = [\"*\"]\n\n" % _toml_str(self.export_root))
            f.write("[[peer]]\nname = %s\naddress = %s\n\n" % (_toml_str(peer.name), _toml_str("127.0.0.1:%d" % peer.port)))
            f.write("[restore]\nbackend = \"dir\"\ntarget = %s\n" % _toml_str(os.path.join(self.dir, "restored")))

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.api_port, path)


class LifeboatSide:
    """transport: auth.transport of both agents ("tls-psk" or "plain"); the
    side is named "lifeboat" for the default, "lifeboat-<transport>" else."""

    def __init__(self, procs, workdir, binary, export_root, timeout, transport="tls-psk"):
        self.procs, self.binary, self.timeout = procs, os.path.abspath(binary), timeout
        self.transport = transport
        self.name = "lifeboat" if transport == "tls-psk" else "lifeboat-" + transport
        self.dir = os.path.join(workdir, self.name)
        os.makedirs(self.dir, exist_ok=True)
        self.key_file = os.path.join(self.dir, "cluster.key")
        with open(self.key_file, "w") as f:
            f.write(detrand.random_bytes(32, "bench-cluster-key", os.getpid(), time.time_ns()).hex() + "\n")
        os.chmod(self.key_file, 0o600)
        empty_export = os.path.join(self.dir, "empty-export")
        for sub in ("vms", "sapi", "datasets", "images"):
            os.makedirs(os.path.join(empty_export, sub), exist_ok=True)
        self.src = Node(self, SRC, os.path.abspath(export_root))
        self.dst = Node(self, DST, empty_export)
        self.src.write_config(self, self.dst)
        self.dst.write_config(self, self.src)
        self.metric_source = None

    # ---- agents ---------------------------------------------------------
    def _start(self, node):
        node.proc = self.procs.start(node.name, [self.binary, "agent", "-c", node.config], node.log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if node.proc.poll() is not None:
                raise bench_procs.CommandFailed("lifeboat agent %s exited (code %s):\n%s" % (
                    node.name, node.proc.returncode, _tail(node.log)))
            try:
                with urllib.request.urlopen(node.url("/healthz"), timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise bench_procs.CommandFailed("lifeboat agent %s not healthy within 60 s:\n%s" % (node.name, _tail(node.log)))

    def _stop(self, node):
        if node.proc is not None:
            rc = self.procs.stop(node.proc, grace=30)
            node.proc = None
            if rc not in (0, None):
                raise bench_procs.CommandFailed("lifeboat agent %s exited %s on SIGTERM:\n%s" % (node.name, rc, _tail(node.log)))

    def start(self):
        self._start(self.src)
        self._start(self.dst)

    def stop(self):
        self._stop(self.dst)
        self._stop(self.src)

    def stop_exporter(self):
        """B6: the exporting headnode is lost before the restore."""
        self._stop(self.src)

    def reset(self, aside=None):
        """Empties the pulling node's catalog (for an initial pull);
        bench_procs.discard_tree."""
        self._stop(self.dst)
        bench_procs.discard_tree(self.dst.data_dir, aside)
        self._start(self.dst)

    # ---- measurements -----------------------------------------------------
    def pull(self):
        before = self._metrics(self.dst)
        for n in (self.src, self.dst):
            bench_procs.reset_hwm(n.proc.pid)
        argv = [self.binary, "sync-now", "-j", "--peer", SRC, "-c", self.dst.config]
        res = bench_procs.run_measured(argv, self.timeout, self.dir).check("lifeboat sync-now")
        after = self._metrics(self.dst)
        sent, received, source = wire_bytes(_last_json(res.stdout), before, after)
        self.metric_source = source
        return Measure(wall_s=res.wall, bytes_sent=sent, bytes_received=received, bytes_wire=sent + received,
                       rss_puller_kib=bench_procs.vm_hwm_kib(self.dst.proc.pid),
                       rss_exporter_kib=bench_procs.vm_hwm_kib(self.src.proc.pid), bytes_source=source)

    def restore(self, target):
        """B6: restores everything held from bench-src into `target` (dir backend).
        The journal of the previous run is removed first: otherwise the same
        selection and target resume a finished restore and copy nothing."""
        shutil.rmtree(os.path.join(self.dst.data_dir, "restores"), ignore_errors=True)
        argv = [self.binary, "restore", "--peer", SRC, "--backend", "dir", "--target", target, "-y", "-j",
                "-c", self.dst.config]
        res = bench_procs.run_measured(argv, self.timeout, self.dir).check("lifeboat restore")
        return Measure(wall_s=res.wall, rss_puller_kib=res.maxrss_kib)

    def copy_source(self):
        """The tree `cp -a` copies in B6: the pulling node's catalog."""
        return self.dst.data_dir

    def agent_peaks_kib(self):
        return {n.name: bench_procs.vm_hwm_kib(n.proc.pid) for n in (self.src, self.dst) if n.proc}

    def _metrics(self, node):
        try:
            with urllib.request.urlopen(node.url("/metrics"), timeout=10) as r:
                return parse_prometheus(r.read().decode())
        except OSError:
            return {}


def parse_prometheus(text):
    """{metric name: sum over its label sets} from Prometheus text format."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([A-Za-z_:][\w:]*)(\{[^}]*\})?\s+([-+\d.eE]+|NaN|[+-]Inf)", line)
        if m:
            try:
                out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
            except ValueError:
                pass
    return out


def _find_key(obj, names):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in names and isinstance(v, (int, float)):
                return int(v)
        for v in obj.values():
            r = _find_key(v, names)
            if r is not None:
                return r
    elif isinstance(obj, list):
        for v in obj:
            r = _find_key(v, names)
            if r is not None:
                return r
    return None


def wire_bytes(result, before, after):
    """(sent, received, source) of one pull, from the puller's point of view.
    Prefers the sync-now result line; falls back to /metrics counters named
    lifeboat_*bytes_sent_total / *bytes_received_total (wire-level ones when
    the agent has both wire and payload counters)."""
    if result is not None:
        rx = _find_key(result, ("bytes_received", "wire_bytes_received", "rx_bytes"))
        tx = _find_key(result, ("bytes_sent", "wire_bytes_sent", "tx_bytes"))
        if rx is not None and tx is not None:
            return tx, rx, "sync-now result"

    def delta(kind):
        names = [n for n in after if n.startswith("lifeboat_") and n.endswith("bytes_%s_total" % kind)]
        wire = [n for n in names if "wire" in n]
        names = wire or names
        return int(sum(after[n] - before.get(n, 0.0) for n in names)), names

    tx, tx_names = delta("sent")
    rx, rx_names = delta("received")
    if not rx_names:
        raise bench_procs.CommandFailed("cannot tell lifeboat's bytes on the wire: no byte counts in the sync-now "
                                        "result and no lifeboat_*bytes_received_total metric")
    return tx, rx, "metrics: %s" % ", ".join(tx_names + rx_names)


def _last_json(stdout):
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def _tail(path, n=3000):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return "(no log)"
