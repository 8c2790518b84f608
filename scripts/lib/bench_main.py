"""scripts/bench: lifeboat vs rsync on loopback, same data, same changes, one run.

See docs/benchmark.md. Scenarios (each run applies the change once, then
every tool pulls it):
  B1 initial pull into an empty destination
  B2 no-change resync
  B3 1% of the dataset files edited in place
  B4 one big file (512 MiB at --size bench) with 100 scattered 4 KiB edits and a 1 MiB append
  B5 appends to every current log file
  B6 restore of the whole catalog (lifeboat restore, dir backend) vs cp -a of the same tree
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import bench_procs
import fixture_gen
import fixture_mutate
import lifeboat_side
import rsync_side

SCENARIOS = {
    "B1": "initial pull",
    "B2": "no-change resync",
    "B3": "1% of files edited",
    "B4": "big file: 100 x 4 KiB edits + 1 MiB append",
    "B5": "appends to log files",
    "B6": "restore whole catalog",
}

# Targets of issue 7: (wall ratio max or min, bytes ratio max) vs the baseline.
TARGETS = {
    "B1": dict(wall_max=1.0),
    "B2": dict(wall_max=0.15, bytes_max=0.01),  # issue 13
    "B3": dict(wall_max=0.7, bytes_max=1.2),
    "B4": dict(wall_max=0.7, bytes_max=1.2),
    "B5": dict(wall_max=0.7, bytes_max=1.2),
    "B6": dict(throughput_min=0.5),
}
RSS_MAX_MIB = 128

BIG_FILE_SIZE = {"small": 16 << 20, "medium": 128 << 20, "bench": 512 << 20}


def machine():
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return {"nproc": os.cpu_count(), "cpu_model": cpu or platform.processor(), "kernel": platform.release(),
            "os": platform.platform(), "mem_mib": mem, "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg()}


def disk_needed(gen_bytes, big, n_copies):
    return int((gen_bytes + big) * (n_copies + 1) * 1.1)


class Bench:
    def __init__(self, args):
        self.args = args
        self.aside = None  # --set-aside: where previous copies go
        self.rows = []
        self.procs = bench_procs.Procs()
        bench_procs.install_signal_handlers(self.procs)
        self.sides = []
        self.mut_seed = 1000

    def log(self, msg):
        print("bench: %s" % msg, file=sys.stderr, flush=True)

    def run(self):
        a = self.args
        base = a.workdir or os.environ.get("TMPDIR") or "/tmp"
        os.makedirs(base, exist_ok=True)
        self.workdir = tempfile.mkdtemp(prefix="lifeboat-bench-", dir=base)
        try:
            result = self._run()
            self.procs.stop_all()
            write_result(result, a.out)
            return result
        finally:
            self.procs.stop_all()
            if a.keep:
                self.log("kept %s" % self.workdir)
            else:
                self.log("removing %s" % self.workdir)
                shutil.rmtree(self.workdir, ignore_errors=True)

    def _run(self):
        a = self.args
        out = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
               "size": a.size, "runs": a.runs, "seed": a.seed, "rsync": rsync_side.rsync_version(),
               "set_aside": a.set_aside,
               "lifeboat": None, "notes": []}
        want_lifeboat = a.only in (None, "lifeboat")
        want_rsync = a.only in (None, "rsync")
        if want_lifeboat:
            why = lifeboat_side.check_available(a.lifeboat)
            if why:
                raise bench_procs.CommandFailed("lifeboat side unavailable: %s (use --only rsync)" % why)
            out["lifeboat"] = lifeboat_side.lifeboat_version(a.lifeboat)

        export = os.path.join(self.workdir, "export")
        self.log("generating the %s export (seed %d) in %s" % (a.size, a.seed, export))
        t0 = time.monotonic()
        gen = fixture_gen.generate_node(export, a.seed, a.size, "headnode0", fixture_gen.node_uuid_for(a.seed, "headnode0"),
                                        fixture_gen.plan_instances(None))
        out["fixture"] = {"files": gen["files"], "symlinks": gen["symlinks"], "bytes": gen["bytes"],
                          "instances": len(gen["instances"]), "generate_s": round(time.monotonic() - t0, 2)}
        self.log("export: %d files, %.2f GiB, %.1f s" % (gen["files"], gen["bytes"] / 2**30, out["fixture"]["generate_s"]))

        big = a.big_size if a.big_size is not None else BIG_FILE_SIZE[a.size]
        tls_cost = want_lifeboat and a.tls_cost
        n_copies = (1 if want_rsync else 0) + (3 if want_lifeboat else 0) + (1 if tls_cost else 0) + 1
        self.aside = os.path.join(self.workdir, "set-aside") if a.set_aside else None
        if self.aside:  # the B1 copies before the last one, of each side (no B4 file in them)
            b1_runs = a.runs if "B1" in [s.strip().upper() for s in a.scenarios.split(",")] else 1
            sides = sum(1 for wanted in (want_rsync, want_lifeboat, tls_cost) if wanted)
            n_copies += (b1_runs - 1) * sides * gen["bytes"] / (gen["bytes"] + big)
        free = shutil.disk_usage(self.workdir).free
        need = disk_needed(gen["bytes"], big, n_copies)
        if free < need:
            raise bench_procs.CommandFailed("need about %.1f GiB free in %s, have %.1f GiB" % (need / 2**30, self.workdir, free / 2**30))

        if want_rsync:
            self.sides.append(rsync_side.RsyncSide(self.procs, self.workdir, export, a.timeout))
        if want_lifeboat:
            self.sides.append(lifeboat_side.LifeboatSide(self.procs, self.workdir, a.lifeboat, export, a.timeout))
        if tls_cost:
            self.sides.append(lifeboat_side.LifeboatSide(self.procs, self.workdir, a.lifeboat, export, a.timeout,
                                                         transport="plain"))
        for s in self.sides:
            s.start()

        scen = [s.strip().upper() for s in a.scenarios.split(",")]
        for name in scen:
            if name not in SCENARIOS:
                raise bench_procs.CommandFailed("unknown scenario %s (B1..B6)" % name)
        pulled = False
        for name in ("B1", "B2", "B3", "B4", "B5"):
            if name not in scen and not (not pulled and any(s in scen for s in ("B2", "B3", "B4", "B5", "B6"))):
                continue
            if name != "B1" and name not in scen:
                continue
            if name == "B1":
                self.scenario_b1(record="B1" in scen)
                out["disk_after_b1"] = {s.name: disk_bytes(s.copy_source()) for s in self.sides}
                pulled = True
            elif name == "B2":
                self.scenario_changes("B2", None)
            elif name == "B3":
                self.scenario_changes("B3", lambda seed: fixture_mutate.edit_pct(export, seed, 1.0).summary())
            elif name == "B4":
                self.prepare_big(export, big)
                self.scenario_changes("B4", lambda seed: fixture_mutate.big_file(export, seed, big).summary())
            elif name == "B5":
                self.scenario_changes("B5", lambda seed: fixture_mutate.append_logs(export, seed).summary())
        if "B6" in scen:
            self.scenario_b6()
        for s in self.sides:
            if isinstance(s, lifeboat_side.LifeboatSide):
                out["lifeboat_bytes_source"] = s.metric_source
        for s in list(self.sides):
            s.stop()
        out["processes"] = self.procs.history
        out["rows"] = self.rows
        out["summary"] = self.summarize()
        out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return out

    # ---- scenarios ----------------------------------------------------------
    def _order(self, i):
        """Alternate which tool goes first, so neither always gets the warmer cache."""
        return self.sides if i % 2 == 0 else list(reversed(self.sides))

    def scenario_b1(self, record=True):
        runs = self.args.runs if record else 1
        meas = {s.name: [] for s in self.sides}
        for i in range(runs):
            for s in self._order(i):
                s.reset(self.aside)
                self.log("B1 run %d/%d: %s initial pull" % (i + 1, runs, s.name))
                meas[s.name].append(s.pull())
        if record:
            self.record("B1", meas, change=None)

    def scenario_changes(self, name, mutate):
        meas = {s.name: [] for s in self.sides}
        changes = []
        for i in range(self.args.runs):
            if mutate:
                self.mut_seed += 1
                summary = mutate(self.mut_seed)
                changes.append({"files": summary["files"], "bytes": summary["bytes"]})
            for s in self._order(i):
                self.log("%s run %d/%d: %s pull" % (name, i + 1, self.args.runs, s.name))
                meas[s.name].append(s.pull())
        self.record(name, meas, change=changes or None)

    def prepare_big(self, export, big):
        """Creates the big file and lets every tool pull it (not measured)."""
        path = os.path.join(export, fixture_mutate.default_big_path(export))
        if not os.path.exists(path):
            fixture_mutate.big_file(export, 0, big)
            for s in self.sides:
                self.log("B4 prepare: %s pulls the new %d MiB file" % (s.name, big >> 20))
                s.pull()

    def scenario_b6(self):
        lb = next((s for s in self.sides if s.name == "lifeboat"), None)
        src = (lb or self.sides[0]).copy_source()
        meas = {"cp": []}
        if lb:
            meas["lifeboat"] = []
            lb.stop_exporter()
        for i in range(self.args.runs):
            tgt = os.path.join(self.workdir, "b6-cp")
            shutil.rmtree(tgt, ignore_errors=True)
            self.log("B6 run %d/%d: cp -a" % (i + 1, self.args.runs))
            res = bench_procs.run_measured(["cp", "-a", src, tgt], self.args.timeout, self.workdir).check("cp -a")
            meas["cp"].append(rsync_side.Measure(wall_s=res.wall, rss_puller_kib=res.maxrss_kib))
            shutil.rmtree(tgt, ignore_errors=True)
            if lb:
                tgt = os.path.join(self.workdir, "b6-restore")
                shutil.rmtree(tgt, ignore_errors=True)
                self.log("B6 run %d/%d: lifeboat restore" % (i + 1, self.args.runs))
                meas["lifeboat"].append(lb.restore(tgt))
                shutil.rmtree(tgt, ignore_errors=True)
        self.record("B6", meas, change=None, copied=_tree_bytes(src))

    # ---- results ------------------------------------------------------------
    def record(self, name, meas, change, copied=None):
        base_tool = "cp" if name == "B6" else "rsync"
        base = None
        for tool in ([base_tool] + [t for t in meas if t != base_tool]):
            if tool not in meas:
                continue
            ms = meas[tool]
            row = {"scenario": name, "what": SCENARIOS[name], "tool": tool, "runs": len(ms),
                   "wall_s": round(statistics.median(m["wall_s"] for m in ms), 4),
                   "wall_s_all": [round(m["wall_s"], 4) for m in ms],
                   "peak_rss_puller_mib": round(max(m.get("rss_puller_kib", 0) for m in ms) / 1024, 1),
                   "peak_rss_exporter_mib": round(max(m.get("rss_exporter_kib", 0) for m in ms) / 1024, 1)}
            if "bytes_wire" in ms[0]:
                row["bytes_wire"] = int(statistics.median(m["bytes_wire"] for m in ms))
                row["bytes_sent"] = int(statistics.median(m["bytes_sent"] for m in ms))
                row["bytes_received"] = int(statistics.median(m["bytes_received"] for m in ms))
            if "flush_s" in ms[0]:
                row["flush_s"] = round(statistics.median(m["flush_s"] for m in ms), 4)
                row["durable_wall_s"] = round(statistics.median(m["wall_s"] + m["flush_s"] for m in ms), 4)
            if copied is not None:
                row["bytes_copied"] = copied
                row["throughput_mib_s"] = round(copied / 2**20 / max(row["wall_s"], 1e-9), 1)
            if change:
                row["change"] = change
            if tool == base_tool:
                base = row
            elif base:
                row["wall_ratio"] = round(row["wall_s"] / max(base["wall_s"], 1e-9), 3)
                if "durable_wall_s" in base:
                    row["durable_wall_ratio"] = round(row["wall_s"] / max(base["durable_wall_s"], 1e-9), 3)
                if "bytes_wire" in row and base.get("bytes_wire"):
                    row["bytes_ratio"] = round(row["bytes_wire"] / base["bytes_wire"], 4)
                if tool == "lifeboat":
                    row["target"] = self.verdict(name, row)
            self.rows.append(row)
        self.note_tls_cost(name)

    def note_tls_cost(self, name):
        """With --tls-cost: what TLS costs in this scenario, as the default
        (TLS) row's wall time and bytes over the plaintext row's."""
        rows = {r["tool"]: r for r in self.rows if r["scenario"] == name}
        tls, plain = rows.get("lifeboat"), rows.get("lifeboat-plain")
        if not tls or not plain:
            return
        tls["tls_cost"] = {"wall_ratio": round(tls["wall_s"] / max(plain["wall_s"], 1e-9), 3),
                           "bytes_ratio": round(tls["bytes_wire"] / max(plain["bytes_wire"], 1), 4)}

    def verdict(self, name, row):
        t = TARGETS[name]
        ok = True
        if "wall_max" in t:
            ok &= row["wall_ratio"] <= t["wall_max"]
        if "bytes_max" in t and "bytes_ratio" in row:
            ok &= row["bytes_ratio"] <= t["bytes_max"]
        if "throughput_min" in t:
            ok &= (1.0 / max(row["wall_ratio"], 1e-9)) >= t["throughput_min"]
        ok &= max(row["peak_rss_puller_mib"], row["peak_rss_exporter_mib"]) <= RSS_MAX_MIB
        return "met" if ok else "missed"

    def summarize(self):
        lb = [r for r in self.rows if r["tool"] == "lifeboat"]
        return {"targets_met": sum(r.get("target") == "met" for r in lb),
                "targets_missed": [r["scenario"] for r in lb if r.get("target") == "missed"]}


def disk_bytes(root):
    """Bytes `root` takes on disk (allocated blocks, each inode once, as
    du counts): a file several names share (hard links: a catalog's
    views and its objects) counts once."""
    seen, total = set(), 0
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, n))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def _tree_bytes(root):
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for n in filenames:
            p = os.path.join(dirpath, n)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def human(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0


def table(result):
    hdr = ("scenario", "tool", "wall s", "bytes on wire", "peak RSS MiB", "wall ratio", "bytes ratio", "target")
    lines = []
    for r in result["rows"]:
        rss = max(r["peak_rss_puller_mib"], r["peak_rss_exporter_mib"])
        lines.append((r["scenario"], r["tool"], "%.3f" % r["wall_s"],
                      human(r["bytes_wire"]) if "bytes_wire" in r else ("(%s copied)" % human(r["bytes_copied"]) if "bytes_copied" in r else "-"),
                      "%.1f" % rss, "%.3f" % r["wall_ratio"] if "wall_ratio" in r else "-",
                      "%.4f" % r["bytes_ratio"] if "bytes_ratio" in r else "-", r.get("target", "-")))
    widths = [max(len(hdr[i]), *(len(l[i]) for l in lines)) if lines else len(hdr[i]) for i in range(len(hdr))]
    fmt = "  ".join("%%-%ds" % w for w in widths)
    out = [fmt % hdr, fmt % tuple("-" * w for w in widths)] + [fmt % l for l in lines]
    m = result["machine"]
    fx = result.get("fixture", {})
    out.append("")
    out.append("export: %d files, %s, %d instances (generated in %.1f s); runs per scenario: %d (median)" % (
        fx.get("files", 0), human(fx.get("bytes", 0)), fx.get("instances", 0), fx.get("generate_s", 0), result["runs"]))
    if result.get("set_aside"):
        out.append("--set-aside: each initial pull's previous copy was moved aside, not deleted")
    durable = [(r["scenario"], r) for r in result["rows"] if r["tool"] == "lifeboat" and "durable_wall_ratio" in r]
    if durable:
        base = {r["scenario"]: r for r in result["rows"] if r["tool"] == "rsync"}
        out.append("rsync + sync -f of its copy (durable, as lifeboat's pulls are): " + "; ".join(
            "%s %.3f s (lifeboat %.2fx)" % (s, base[s]["durable_wall_s"], r["durable_wall_ratio"]) for s, r in durable))
    disk = result.get("disk_after_b1")
    if disk:
        out.append("on disk after B1 (each inode once): " + "; ".join(
            "%s %s" % (name, human(n)) for name, n in disk.items()) +
            " (lifeboat: its whole data_dir, objects + trees + descriptions + views; content shared by"
            " several paths, instances or peers is stored once)")
    costs = [(r["scenario"], r["tls_cost"]) for r in result["rows"] if "tls_cost" in r]
    if costs:
        out.append("TLS cost (lifeboat over lifeboat-plain): " + "; ".join(
            "%s wall %.2fx bytes %.3fx" % (s, c["wall_ratio"], c["bytes_ratio"]) for s, c in costs))
    out.append("machine: %s x%s, kernel %s; rsync %s" % (m["cpu_model"], m["nproc"], m["kernel"], result["rsync"]))
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(fixture_gen.SIZES), default="bench", help="fixture size (default bench: >= 1 GiB, >= 20k files)")
    ap.add_argument("--runs", type=int, default=3, help="runs per scenario; the table shows the median (default 3)")
    ap.add_argument("--only", choices=("rsync", "lifeboat"), help="run one side only")
    ap.add_argument("--scenarios", default="B1,B2,B3,B4,B5,B6", help="comma-separated subset (B1 runs once unmeasured when needed)")
    ap.add_argument("--tls-cost", action="store_true",
                    help="also run lifeboat with auth.transport = \"plain\" (side lifeboat-plain) to show what TLS costs")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--big-size", type=fixture_mutate.parse_size, help="B4 file size (default 512M at bench, 128M medium, 16M small)")
    ap.add_argument("--lifeboat", default=None, help="the lifeboat binary (default build/lifeboat)")
    ap.add_argument("--out", default=None, help="JSON results (default build/bench.json)")
    ap.add_argument("--workdir", help="parent of the temp dir (default $TMPDIR or /tmp)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds any one command may take (default 900)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (export, copies, logs)")
    ap.add_argument("--set-aside", action="store_true",
                    help="before each initial pull, move the previous copy aside instead of deleting it "
                         "(all removed at the end): on ext4 without a journal, creating files within a "
                         "minute of deleting many scans past the freed inodes (docs/benchmark.md)")
    args = ap.parse_args(argv)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    args.lifeboat = args.lifeboat or os.path.join(repo, "build", "lifeboat")
    args.out = args.out or os.path.join(repo, "build", "bench.json")
    if args.runs < 1:
        ap.error("--runs must be >= 1")

    bench = Bench(args)
    try:
        bench.run()
    except bench_procs.CommandFailed as e:
        print("bench: %s" % e, file=sys.stderr)
        return 69 if "unavailable" in str(e) else 1
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    return 0


def write_result(result, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(table(result))
    print("\nwrote %s" % path, flush=True)
