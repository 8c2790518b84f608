#!/usr/bin/env python3
"""Hostile and odd input must never stop an agent (issue 14): bytes that are
not UTF-8 in URLs and in file names, and what each does end to end.

  hostile_input_test.py --lifeboat build/lifeboat [unittest args]
"""

import argparse
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agent_test  # noqa: E402
from agent_test import Cluster, det_bytes  # noqa: E402


def raw_http(port, request, timeout=10.0):
    """Sends `request` (bytes, as is) to 127.0.0.1:port; returns the raw answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        out = b""
        while True:
            try:
                data = s.recv(65536)
            except socket.timeout:
                break
            if not data:
                break
            out += data
        return out


class HostileInputTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="lifeboat-hostile-it-", dir=os.environ.get("TMPDIR"))
        self.cluster = None

    def tearDown(self):
        failed = not getattr(self._outcome, "success", True)
        if self.cluster:
            if failed or os.environ.get("LIFEBOAT_IT_LOGS"):
                for a in self.cluster.agents.values():
                    sys.stderr.write("---- log of %s ----\n%s\n" % (a.name, a.log()))
            self.cluster.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def assert_alive(self, agent):
        self.assertIsNone(agent.proc.poll(), "agent exited %s:\n%s" % (agent.proc.returncode, agent.log()))
        self.assertTrue(agent.healthy(), agent.log())

    def test_invalid_utf8_in_urls_gets_an_answer_and_the_agent_lives(self):
        c = Cluster(self.tmp, names=("A", "B"))
        self.cluster = c
        c.start()
        A = c.agents["A"]
        for target, code in ((b"/%ff", 404), (b"/%ff%fe/x", 404), (b"/sync?peer=%ff", 404),
                             (b"/sync?from=%ff&peer=B", 404), (b"/sync?service=%c3%28", 400),
                             (b"/sync?service=a%00b", 400), (b"/status?%ff=%ff", 200),
                             (b"/\xff\xfe", 404)):
            method = b"POST" if target.startswith(b"/sync") else b"GET"
            answer = raw_http(A.api_port, method + b" " + target + b" HTTP/1.1\r\nHost: x\r\n"
                              b"Connection: close\r\nContent-Length: 0\r\n\r\n")
            self.assertTrue(answer.startswith(b"HTTP/1.1 %d " % code), (target, answer[:200]))
            body = answer.split(b"\r\n\r\n", 1)[1]
            json.loads(body.decode("utf-8"))  # valid UTF-8 JSON, whatever came in
            self.assert_alive(A)

    def test_a_file_name_that_is_not_utf8_round_trips_through_pull_show_and_restore(self):
        c = Cluster(self.tmp, names=("A", "B"))
        self.cluster = c
        B = c.exports["B"]
        u = B.add_instance("imgapi", "imgapi0", {"etc/config.json": "{}"})
        d = os.fsencode(B.dataset_path(u))
        odd = [b"caf\xe9.txt", b"bad\xff\xfe", b"esc\x1b[31mred", b"new\nline"]
        for name in odd:
            with open(os.path.join(d, name), "wb") as f:
                f.write(b"content of " + name)
        os.symlink(b"caf\xe9.txt", os.path.join(d, b"link\xe9"))
        c.start()
        A = c.agents["A"]
        for attempt in range(2):  # and the next pull too: no crash loop
            rc, lines, err = A.sync_now()
            self.assertEqual(rc, 0, "%s\n%s\n%s" % (lines, err, A.log()))
            self.assert_alive(A)
        held = os.path.join(os.fsencode(A.held_instance_dir(u)), b"datasets", u.encode())
        for name in odd:
            with open(os.path.join(held, name), "rb") as f:
                self.assertEqual(f.read(), b"content of " + name)
        self.assertEqual(os.readlink(os.path.join(held, b"link\xe9")), b"caf\xe9.txt")
        # catalog show escapes what a terminal would act on; -j keeps the bytes.
        r = subprocess.run([agent_test.LIFEBOAT, "catalog", "show", u, "-c", A.config],
                           capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn(b"\x1b", r.stdout)
        self.assertIn(b"caf\\xe9.txt", r.stdout)
        self.assertIn(b"new\\nline", r.stdout)
        r = subprocess.run([agent_test.LIFEBOAT, "catalog", "show", u, "-j", "-c", A.config],
                           capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        files = json.loads(r.stdout.decode("utf-8"))["files_list"]
        names = {bytes.fromhex(f["path_hex"]) if "path_hex" in f else f["path"].encode()
                 for f in files}
        for name in odd:
            self.assertIn(b"datasets/" + u.encode() + b"/" + name, names)
        # The restore writes the same bytes.
        c.agents["B"].stop()
        target = os.path.join(self.tmp, "restored")
        r = subprocess.run([agent_test.LIFEBOAT, "restore", "--peer", "B", "--backend", "dir",
                            "--target", target, "-y", "-j", "-c", A.config],
                           capture_output=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        zone = os.listdir(os.path.join(target, "zones"))[0]
        data = os.path.join(os.fsencode(target), b"zones", zone.encode(), b"data")
        for name in odd:
            with open(os.path.join(data, name), "rb") as f:
                self.assertEqual(f.read(), b"content of " + name)
        self.assertEqual(os.readlink(os.path.join(data, b"link\xe9")), b"caf\xe9.txt")
        self.assertEqual(subprocess.run([agent_test.LIFEBOAT, "catalog", "verify", "-c", A.config],
                                        capture_output=True, timeout=60).returncode, 0)


class OddExportTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="lifeboat-odd-it-", dir=os.environ.get("TMPDIR"))
        self.cluster = None

    def tearDown(self):
        failed = not getattr(self._outcome, "success", True)
        if self.cluster:
            if failed or os.environ.get("LIFEBOAT_IT_LOGS"):
                for a in self.cluster.agents.values():
                    sys.stderr.write("---- log of %s ----\n%s\n" % (a.name, a.log()))
            self.cluster.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_a_file_that_flips_to_a_fifo_never_wedges_the_agent(self):
        c = Cluster(self.tmp, names=("A", "B"))
        self.cluster = c
        B = c.exports["B"]
        u = B.add_instance("imgapi", "imgapi0", {"flip": det_bytes("flip", 50_000),
                                                  "other": det_bytes("other", 20_000)})
        c.start()
        A, Bagent = c.agents["A"], c.agents["B"]
        flip = B.dataset_path(u, "flip")
        stop = threading.Event()

        def flipper():  # bounded: at most ~4 s of flips
            deadline = time.monotonic() + 4
            i = 0
            while not stop.is_set() and time.monotonic() < deadline:
                tmp = flip + ".new"
                if i % 2:
                    os.mkfifo(tmp)
                else:
                    with open(tmp, "wb") as f:
                        f.write(det_bytes("flip%d" % i, 50_000))
                os.replace(tmp, flip)
                i += 1
                time.sleep(0.002)

        t = threading.Thread(target=flipper)
        t.start()
        try:
            for _ in range(4):
                # Each pull ends (done or failed), none hangs.
                r = A.cli("sync-now", "-j", timeout=60)
                self.assertIn(r.returncode, (0, 75), r.stderr)
        finally:
            stop.set()
            t.join()
        if not stat.S_ISFIFO(os.lstat(flip).st_mode):
            os.remove(flip)
            os.mkfifo(flip)
        rc, lines, err = A.sync_now()
        self.assertEqual(rc, 0, "%s\n%s" % (lines, err))
        held = os.path.join(A.held_instance_dir(u), "datasets", u)
        self.assertTrue(os.path.exists(os.path.join(held, "other")))
        self.assertFalse(os.path.exists(os.path.join(held, "flip")))  # a FIFO is not exported
        status, _, _ = Bagent.http("GET", "/status", timeout=10)
        self.assertEqual(status, 200)
        Bagent.kill(signal.SIGTERM)
        self.assertEqual(Bagent.wait(timeout=40), 0, Bagent.log())

    def test_sighup_is_logged_and_ignored(self):
        c = Cluster(self.tmp, names=("A", "B"))
        self.cluster = c
        c.start()
        A = c.agents["A"]
        A.kill(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "SIGHUP ignored" not in A.log():
            time.sleep(0.05)
        self.assertIn("SIGHUP ignored", A.log())
        self.assertIsNone(A.proc.poll())
        self.assertTrue(A.healthy())
        rc, _, err = A.sync_now()
        self.assertEqual(rc, 0, err)


class SlotsTest(unittest.TestCase):
    """Idle strangers (no key needed to connect) must not starve peers or the API."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="lifeboat-slots-it-", dir=os.environ.get("TMPDIR"))
        self.cluster = None
        self.socks = []

    def tearDown(self):
        for s in self.socks:
            s.close()
        if self.cluster:
            self.cluster.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def idle(self, port, n):
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            self.socks.append(s)

    def test_idle_connections_to_the_peer_port_do_not_block_pulls(self):
        c = Cluster(self.tmp, names=("A", "B"))
        self.cluster = c
        c.exports["B"].add_instance("imgapi", "imgapi0", {"f": det_bytes("f", 10_000)})
        c.start()
        A, B = c.agents["A"], c.agents["B"]
        self.idle(B.listen_port, 100)  # more than every budget of B
        t = time.monotonic()
        rc, lines, err = A.sync_now()
        self.assertEqual(rc, 0, "%s\n%s\n%s" % (lines, err, B.log()))
        self.assertLess(time.monotonic() - t, 15)
        self.assertIsNone(B.proc.poll())

    def test_idle_connections_to_the_api_do_not_block_it_under_a_low_fd_limit(self):
        c = Cluster(self.tmp, names=("A", "B"))
        self.cluster = c
        A = c.agents["A"]
        A.start(preexec=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)))
        c.agents["B"].start()
        self.idle(A.api_port, 400)
        status, _, body = A.http("GET", "/status", timeout=10)
        self.assertEqual(status, 200, body)
        self.assertIsNone(A.proc.poll())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lifeboat", required=True)
    args, rest = ap.parse_known_args()
    agent_test.LIFEBOAT = os.path.abspath(args.lifeboat)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
