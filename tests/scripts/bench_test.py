#!/usr/bin/env python3
"""Tests for scripts/bench: its parsers, a smoke run of the rsync side
(small fixture, one run) that must produce every scenario's numbers and
leave no process of its own running, and a smoke run of the lifeboat side
with --tls-cost (TLS and plaintext agents side by side)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "scripts", "lib"))

import bench_main  # noqa: E402
import lifeboat_side  # noqa: E402
import rsync_side  # noqa: E402

RSYNC_STATS = """
Number of files: 22,113 (reg: 22,061, dir: 5,000, link: 52)
Total file size: 1,203,456,789 bytes
Total bytes sent: 8,398
Total bytes received: 1,206,999,199

sent 8,398 bytes  received 1,206,999,199 bytes  123,456.78 bytes/sec
"""


class Parsers(unittest.TestCase):
    def test_rsync_stats_with_digit_separators(self):
        self.assertEqual(rsync_side.parse_stats(RSYNC_STATS), {"sent": 8398, "received": 1206999199})

    def test_rsync_stats_missing_counter_is_an_error(self):
        with self.assertRaises(Exception):
            rsync_side.parse_stats("Number of files: 3\n")

    def test_prometheus_sums_label_sets_and_skips_comments(self):
        text = ("# HELP lifeboat_bytes_received_total bytes\n# TYPE lifeboat_bytes_received_total counter\n"
                'lifeboat_bytes_received_total{peer="a"} 100\nlifeboat_bytes_received_total{peer="b"} 23\n'
                "lifeboat_pulls_total 4\n")
        m = lifeboat_side.parse_prometheus(text)
        self.assertEqual(m["lifeboat_bytes_received_total"], 123)
        self.assertEqual(m["lifeboat_pulls_total"], 4)

    def test_wire_bytes_prefers_result_line_then_metric_deltas(self):
        res = {"type": "result", "peers": [{"peer": "bench-src", "bytes_received": 900, "bytes_sent": 50}]}
        self.assertEqual(lifeboat_side.wire_bytes(res, {}, {})[:2], (50, 900))
        before = {"lifeboat_bytes_received_total": 1000, "lifeboat_bytes_sent_total": 10,
                  "lifeboat_wire_bytes_received_total": 500, "lifeboat_wire_bytes_sent_total": 5}
        after = {"lifeboat_bytes_received_total": 3000, "lifeboat_bytes_sent_total": 30,
                 "lifeboat_wire_bytes_received_total": 1500, "lifeboat_wire_bytes_sent_total": 7}
        self.assertEqual(lifeboat_side.wire_bytes({"ok": True}, before, after)[:2], (2, 1000))
        with self.assertRaises(Exception):
            lifeboat_side.wire_bytes(None, {}, {"lifeboat_pulls_total": 1})

    def test_disk_bytes_counts_a_file_with_several_names_once(self):
        with tempfile.TemporaryDirectory(prefix="lifeboat-bench-test-") as tmp:
            os.makedirs(os.path.join(tmp, "a", "b"))
            with open(os.path.join(tmp, "a", "f"), "wb") as f:
                f.write(b"x" * 100000)
            one = bench_main.disk_bytes(tmp)
            os.link(os.path.join(tmp, "a", "f"), os.path.join(tmp, "a", "b", "g"))
            self.assertEqual(bench_main.disk_bytes(tmp), one)  # a view's link to its object
            shutil.copy(os.path.join(tmp, "a", "f"), os.path.join(tmp, "h"))
            self.assertGreaterEqual(bench_main.disk_bytes(tmp), one + 100000)  # a second copy


@unittest.skipIf(shutil.which("rsync") is None, "rsync not installed")
class Smoke(unittest.TestCase):
    def test_rsync_side_small_run(self):
        with tempfile.TemporaryDirectory(prefix="lifeboat-bench-test-") as tmp:
            out = os.path.join(tmp, "bench.json")
            p = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "bench"), "--only", "rsync", "--size", "small",
                                "--runs", "1", "--workdir", tmp, "--out", out], capture_output=True, text=True, timeout=300)
            self.assertEqual(p.returncode, 0, p.stderr)
            res = json.load(open(out))
            rows = {r["scenario"]: r for r in res["rows"]}
            self.assertEqual(sorted(rows), ["B1", "B2", "B3", "B4", "B5", "B6"])
            # The initial pull moves at least the export; a resync moves a tiny fraction of it.
            self.assertGreaterEqual(rows["B1"]["bytes_received"], res["fixture"]["bytes"])
            self.assertLess(rows["B2"]["bytes_wire"], rows["B1"]["bytes_wire"] / 50)
            self.assertGreaterEqual(rows["B4"]["bytes_received"], 1 << 20)  # at least the 1 MiB append
            self.assertEqual(rows["B6"]["tool"], "cp")
            self.assertGreaterEqual(res["disk_after_b1"]["rsync"], res["fixture"]["bytes"])
            self.assertGreater(rows["B1"]["peak_rss_puller_mib"], 0)
            for pr in res["processes"]:
                self.assertFalse(os.path.exists("/proc/%d" % pr["pid"]) and _not_zombie(pr["pid"]),
                                 "%s (pid %d) still running" % (pr["name"], pr["pid"]))
            self.assertEqual([d for d in os.listdir(tmp) if d.startswith("lifeboat-bench-")], [])


@unittest.skipIf(not os.access(os.environ.get("LIFEBOAT_BIN", ""), os.X_OK), "LIFEBOAT_BIN not set (run through ctest)")
class LifeboatSmoke(unittest.TestCase):
    def test_tls_cost_rows_compare_tls_with_plaintext(self):
        with tempfile.TemporaryDirectory(prefix="lifeboat-bench-test-") as tmp:
            out = os.path.join(tmp, "bench.json")
            p = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "bench"), "--only", "lifeboat",
                                "--tls-cost", "--scenarios", "B1,B2", "--size", "small", "--runs", "1",
                                "--lifeboat", os.environ["LIFEBOAT_BIN"], "--workdir", tmp, "--out", out],
                               capture_output=True, text=True, timeout=240)
            self.assertEqual(p.returncode, 0, p.stderr[-3000:])
            with open(out) as f:
                res = json.load(f)
            rows = {(r["scenario"], r["tool"]): r for r in res["rows"]}
            self.assertEqual(sorted(rows), [("B1", "lifeboat"), ("B1", "lifeboat-plain"),
                                            ("B2", "lifeboat"), ("B2", "lifeboat-plain")])
            tls, plain = rows[("B1", "lifeboat")], rows[("B1", "lifeboat-plain")]
            # Both moved the whole export; TLS adds record framing, not a second copy.
            self.assertGreaterEqual(plain["bytes_received"], res["fixture"]["bytes"] // 4)
            self.assertGreater(tls["bytes_wire"], plain["bytes_wire"])
            self.assertLess(tls["bytes_wire"], plain["bytes_wire"] * 1.05)
            self.assertAlmostEqual(tls["tls_cost"]["bytes_ratio"], tls["bytes_wire"] / plain["bytes_wire"], places=3)
            self.assertIn("TLS cost", p.stdout)
            # The catalog holds every byte of the export (its files stored once).
            for side in ("lifeboat", "lifeboat-plain"):
                self.assertGreaterEqual(res["disk_after_b1"][side], res["fixture"]["bytes"] // 2, side)
            self.assertIn("on disk after B1", p.stdout)
            for pr in res["processes"]:
                self.assertFalse(os.path.exists("/proc/%d" % pr["pid"]) and _not_zombie(pr["pid"]),
                                 "%s (pid %d) still running" % (pr["name"], pr["pid"]))


def _not_zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


if __name__ == "__main__":
    unittest.main(verbosity=2)
