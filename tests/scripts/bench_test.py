#!/usr/bin/env python3
"""Tests for scripts/bench: its parsers, and a smoke run of the rsync side
(small fixture, one run) that must produce every scenario's numbers and
leave no process of its own running."""

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
            self.assertGreater(rows["B1"]["peak_rss_puller_mib"], 0)
            for pr in res["processes"]:
                self.assertFalse(os.path.exists("/proc/%d" % pr["pid"]) and _not_zombie(pr["pid"]),
                                 "%s (pid %d) still running" % (pr["name"], pr["pid"]))
            self.assertEqual([d for d in os.listdir(tmp) if d.startswith("lifeboat-bench-")], [])


def _not_zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


if __name__ == "__main__":
    unittest.main(verbosity=2)
