#!/usr/bin/env python3
"""The command line as scripts and people meet it: typos get "did you mean",
every subcommand's --help lists the shared options, usage errors exit 64.

  cli_test.py --lifeboat build/lifeboat [unittest args]
"""

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agent_test  # noqa: E402
from agent_test import det_bytes  # noqa: E402

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
    return subprocess.run([agent_test.LIFEBOAT, *args], capture_output=True, text=True, timeout=30,
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


class SyncNowTest(agent_test.ClusterTestCase):
    def test_progress_on_a_terminal_stays_one_line_per_peer_within_80_columns(self):
        # A bandwidth limit stretches the transfer over a few seconds.
        c = self.cluster(A={"bwlimit": "1M"})
        for name in ("B", "C"):
            c.exports[name].add_instance("imgapi", "imgapi-with-a-rather-long-alias-0",
                                         {"big": det_bytes(name, 3_000_000)})
        c.start()
        A = c.agents["A"]
        rc, out = run_on_pty([agent_test.LIFEBOAT, "sync-now", "-c", A.config])
        self.assertEqual(rc, 0, out)
        self.assertIn("B: ok", out)
        self.assertIn("C: ok", out)
        # Every line as drawn (split at newlines and carriage returns) fits.
        for line in re.split(r"[\r\n]", ANSI.sub("", out)):
            self.assertLess(len(line), 80, repr(line))
        self.assertRegex(ANSI.sub("", out), r"transfer \[[#.]{10}\].*/s ETA")

    def test_an_unknown_service_is_an_error_with_a_suggestion(self):
        c = self.cluster(names=("A", "B"))
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
        c = self.cluster(names=("A", "B"))
        c.exports["B"].add_instance("imgapi", "imgapi0", {"f": "x"})
        c.start()
        r = c.agents["A"].cli("sync-now", "-j")
        self.assertEqual(r.returncode, 0, r.stderr)
        objs = [json.loads(l) for l in r.stdout.splitlines()]
        self.assertEqual((objs[-1]["type"], objs[-1]["ok"]), ("done", True))
        self.assertEqual({o["type"] for o in objs} - {"progress"}, {"result", "done"})


class SyncNowClusterTest(agent_test.ClusterTestCase):
    def start(self):
        c = self.cluster()
        self.held = {}
        for name in ("A", "B", "C"):
            self.held[name] = c.exports[name].add_instance(
                "svc" + name.lower(), "svc%s0" % name.lower(), {"data": det_bytes(name, 200_000)})
        c.start()
        return c

    def test_every_reachable_node_pulls_with_its_progress(self):
        c = self.start()
        A = c.agents["A"]
        r = A.cli("sync-now", "--cluster", "-j")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        objs = [json.loads(l) for l in r.stdout.splitlines()]
        self.assertEqual(objs[-1], {"type": "done", "ok": True, "nodes": 3})
        pulls = {(o["node"], o["peer"]): o for o in objs if o["type"] == "result"}
        self.assertEqual(set(pulls), {(n, p) for n in "ABC" for p in "ABC" if n != p})
        self.assertTrue(all(o["ok"] for o in pulls.values()), pulls)
        progress = {o["node"] for o in objs if o["type"] == "progress"}
        self.assertEqual(progress, {"A", "B", "C"}, "each node's progress is shown")
        nodes = {o["node"]: o for o in objs if o["type"] == "node"}
        self.assertEqual(set(nodes), {"A", "B", "C"})
        self.assertTrue(all(o["ok"] and o["error"] is None for o in nodes.values()), nodes)
        # Every node now holds the instances of the two others.
        for name, agent in c.agents.items():
            held = {i["uuid"] for i in agent.catalog()["instances"]}
            self.assertEqual(held, {u for n, u in self.held.items() if n != name}, name)

        # Text: one result line per pull, named node<-peer.
        r = A.cli("sync-now", "--cluster", "--peer", "C")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("A<-C: ok", r.stdout)
        self.assertIn("B<-C: ok", r.stdout)
        self.assertNotIn("C<-", r.stdout)
        self.assertIn("every node pulled: ok (2 nodes)", r.stdout)

    def test_a_node_that_is_down_is_named_and_the_exit_says_so(self):
        c = self.start()
        c.agents["C"].stop()
        r = c.agents["A"].cli("sync-now", "--cluster", "-j")
        self.assertEqual(r.returncode, 75, r.stdout + r.stderr)  # A and B fail to pull C
        objs = [json.loads(l) for l in r.stdout.splitlines()]
        nodes = {o["node"]: o for o in objs if o["type"] == "node"}
        self.assertFalse(nodes["C"]["ok"])
        self.assertIn("is `lifeboat agent` running?", nodes["C"]["error"])
        pulls = {(o["node"], o["peer"]): o["ok"] for o in objs if o["type"] == "result"}
        self.assertEqual(pulls, {("A", "B"): True, ("A", "C"): False,
                                 ("B", "A"): True, ("B", "C"): False})
        self.assertEqual(objs[-1]["type"], "done")
        self.assertFalse(objs[-1]["ok"])

    def test_a_peer_without_api_is_a_config_error(self):
        c = self.start()
        A = c.agents["A"]
        A.peers = [(A.peers[0][0], A.peers[0][1])] + A.peers[1:]
        A.write_config()
        r = A.cli("sync-now", "--cluster")
        self.assertEqual(r.returncode, 78, r.stdout + r.stderr)
        self.assertIn("peer B has no `api`", r.stderr)


if __name__ == "__main__":
    agent_test.run_tests()
