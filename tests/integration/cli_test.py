#!/usr/bin/env python3
"""The command line as scripts and people meet it: typos get "did you mean",
every subcommand's --help lists the shared options, usage errors exit 64.

  cli_test.py --lifeboat build/lifeboat [unittest args]
"""

import argparse
import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agent_test  # noqa: E402
from agent_test import Cluster, det_bytes  # noqa: E402

LIFEBOAT = None
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def run_on_pty(argv, timeout=120):
    """Runs argv with stdout/stderr on a pseudo-terminal of 80 columns; returns
    (exit code, everything written)."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(argv[0], argv)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            out += data
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def run(*args):
    return subprocess.run([LIFEBOAT, *args], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)


class CliTest(unittest.TestCase):
    def test_typos_get_the_closest_name_and_exit_64(self):
        cases = [
            (["statsu"], "unknown command 'statsu' (did you mean 'status'?)", "lifeboat --help"),
            (["status", "--chekc"], "unknown option '--chekc' (did you mean '--check'?)",
             "lifeboat status --help"),
            (["catalog", "verfy"], "unknown command 'verfy' (did you mean 'verify'?)",
             "lifeboat catalog --help"),
            (["restore", "--dryrun"], "unknown option '--dryrun' (did you mean '--dry-run'?)",
             "lifeboat restore --help"),
            (["readiness", "--jsno"], "unknown option '--jsno' (did you mean '--json'?)",
             "lifeboat readiness --help"),
        ]
        for args, message, hint in cases:
            r = run(*args, "-c", "/nonexistent.toml")
            self.assertEqual(r.returncode, 64, args)
            self.assertIn(message, r.stderr, args)
            self.assertIn(hint, r.stderr, args)
        r = run("status", "surplus", "-c", "/nonexistent.toml")
        self.assertEqual(r.returncode, 64)
        self.assertIn("unknown argument 'surplus'", r.stderr)
        self.assertNotIn("did you mean", r.stderr)

    def test_every_subcommand_help_lists_the_shared_options(self):
        for args in (["status"], ["sync-now"], ["readiness"], ["drill"], ["restore"],
                     ["catalog", "ls"], ["catalog", "verify"], ["check-config"], ["agent"]):
            r = run(*args, "--help")
            self.assertEqual(r.returncode, 0, args)
            self.assertIn("-c,--config FILE", r.stdout, args)
            self.assertIn("-j,--json", r.stdout, args)


class SyncNowTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="lifeboat-cli-it-", dir=os.environ.get("TMPDIR"))
        self.cluster = None

    def tearDown(self):
        if self.cluster:
            self.cluster.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_progress_on_a_terminal_stays_one_line_per_peer_within_80_columns(self):
        agent_test.LIFEBOAT = LIFEBOAT
        # A bandwidth limit stretches the transfer over a few seconds.
        c = Cluster(self.tmp, A={"bwlimit": "1M"})
        self.cluster = c
        for name in ("B", "C"):
            c.exports[name].add_instance("imgapi", "imgapi-with-a-rather-long-alias-0",
                                         {"big": det_bytes(name, 3_000_000)})
        c.start()
        A = c.agents["A"]
        rc, out = run_on_pty([LIFEBOAT, "sync-now", "-c", A.config])
        self.assertEqual(rc, 0, out)
        self.assertIn("B: ok", out)
        self.assertIn("C: ok", out)
        # Every line as drawn (split at newlines and carriage returns) fits.
        for line in re.split(r"[\r\n]", ANSI.sub("", out)):
            self.assertLess(len(line), 80, repr(line))
        self.assertRegex(ANSI.sub("", out), r"transfer \[[#.]{10}\].*/s ETA")

    def test_an_unknown_service_is_an_error_with_a_suggestion(self):
        agent_test.LIFEBOAT = LIFEBOAT
        c = Cluster(self.tmp, names=("A", "B"))
        self.cluster = c
        c.exports["B"].add_instance("imgapi", "imgapi0", {"f": "x"})
        c.start()
        A = c.agents["A"]
        r = A.cli("sync-now", "--service", "imgapi")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = A.cli("sync-now", "--service", "imgpi")
        self.assertEqual(r.returncode, 64, r.stdout + r.stderr)
        self.assertIn("no instance of service 'imgpi' is held from any peer "
                      "(did you mean 'imgapi'?); services held: imgapi", r.stderr)

    def test_json_progress_is_one_object_per_line(self):
        agent_test.LIFEBOAT = LIFEBOAT
        c = Cluster(self.tmp, names=("A", "B"))
        self.cluster = c
        c.exports["B"].add_instance("imgapi", "imgapi0", {"f": "x"})
        c.start()
        r = c.agents["A"].cli("sync-now", "-j")
        self.assertEqual(r.returncode, 0, r.stderr)
        objs = [json.loads(l) for l in r.stdout.splitlines()]
        self.assertEqual((objs[-1]["type"], objs[-1]["ok"]), ("done", True))
        self.assertEqual({o["type"] for o in objs} - {"progress"}, {"result", "done"})


def main():
    global LIFEBOAT
    ap = argparse.ArgumentParser()
    ap.add_argument("--lifeboat", required=True)
    args, rest = ap.parse_known_args()
    LIFEBOAT = os.path.abspath(args.lifeboat)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
