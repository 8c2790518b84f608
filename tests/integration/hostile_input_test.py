#!/usr/bin/env python3
"""Hostile and odd input must never stop an agent (issue 14): bytes that are
not UTF-8 in URLs and in file names, and what each does end to end.

  hostile_input_test.py --lifeboat build/lifeboat [unittest args]
"""

import json
import os
import resource
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agent_test  # noqa: E402
from agent_test import det_bytes  # noqa: E402


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


class HostileInputTest(agent_test.ClusterTestCase):
    def assert_alive(self, agent):
        self.assertIsNone(agent.proc.poll(), "agent exited %s:\n%s" % (agent.proc.returncode, agent.log()))
        self.assertTrue(agent.healthy(), agent.log())

    def test_invalid_utf8_in_urls_gets_an_answer_and_the_agent_lives(self):
        c = self.cluster(names=("A", "B"))
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
        c = self.cluster(names=("A", "B"))
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


class OddExportTest(agent_test.ClusterTestCase):
    def test_a_file_that_flips_to_a_fifo_never_wedges_the_agent(self):
        c = self.cluster(names=("A", "B"))
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

    def test_what_the_exporter_skips_fails_status_check_until_fixed(self):
        c = self.cluster(names=("A", "B"))
        B = c.exports["B"]
        u = B.add_instance("imgapi", "imgapi0", {"f": det_bytes("f", 10_000)})
        v = B.add_instance("sapi", "sapi0", {"g": det_bytes("g", 1_000)})
        # Tests run as root (chmod 000 reads anyway): a FIFO and a dangling
        # symlink in u's dataset, v's dataset folder replaced by a symlink.
        os.mkfifo(B.dataset_path(u, "pipe"))
        os.symlink("does/not/exist", B.dataset_path(u, "gone"))
        moved = B.dataset_path(v) + ".moved"
        os.rename(B.dataset_path(v), moved)
        os.symlink(moved, B.dataset_path(v))
        c.start()
        A = c.agents["A"]
        rc, lines, err = A.sync_now()
        self.assertEqual(rc, 0, "%s\n%s" % (lines, err))

        r = A.cli("status", "--check")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        incomplete = [l for l in r.stderr.splitlines() if "incomplete_copy" in l]
        self.assertEqual(len(incomplete), 2, r.stderr)  # one line per incomplete instance
        line_u = next(l for l in incomplete if u in l)
        self.assertIn("datasets/%s/gone" % u, line_u)
        self.assertIn("datasets/%s/pipe" % u, line_u)
        line_v = next(l for l in incomplete if v in l)
        self.assertIn("datasets/%s " % v, line_v)
        self.assertIn("INCOMPLETE", r.stdout)
        self.assertIn("datasets/%s/pipe" % u, r.stdout)

        st = json.loads(A.cli("status", "-j").stdout)
        by_uuid = {i["uuid"]: i for i in st["incomplete"]}
        self.assertEqual(set(by_uuid), {u, v})
        self.assertEqual([w["path"] for w in by_uuid[u]["warnings"]],
                         ["datasets/%s/gone" % u, "datasets/%s/pipe" % u])
        self.assertIn("dangling", by_uuid[u]["warnings"][0]["reason"])
        show = A.cli("catalog", "show", u)
        self.assertEqual(show.returncode, 0, show.stderr)
        self.assertIn("incomplete", show.stdout)
        self.assertIn("datasets/%s/pipe: not a regular file" % u, show.stdout)
        shown = json.loads(A.cli("catalog", "show", v, "-j").stdout)
        self.assertTrue(shown["incomplete"])
        self.assertEqual(shown["warnings"][0]["path"], "datasets/%s" % v)
        self.assertEqual(A.metric("lifeboat_instance_incomplete", "B"), 2)

        # The agent logs one warning per pull per incomplete instance, not one per path.
        def logged(uuid):
            with open(A.log_path, "rb") as f:
                text = f.read().decode(errors="replace")
            return sum(1 for l in text.splitlines() if "incomplete copy" in l and uuid in l)
        self.assertEqual((logged(u), logged(v)), (1, 1))
        rc, lines, err = A.sync_now()
        self.assertEqual(rc, 0, err)
        self.assertEqual((logged(u), logged(v)), (2, 2))

        # Fixed on B: the next pull clears it, and status --check is clean.
        os.remove(B.dataset_path(u, "pipe"))
        os.remove(B.dataset_path(u, "gone"))
        os.remove(B.dataset_path(v))
        os.rename(moved, B.dataset_path(v))
        rc, lines, err = A.sync_now()
        self.assertEqual(rc, 0, err)
        r = A.cli("status", "--check")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("INCOMPLETE", r.stdout)
        self.assertEqual(json.loads(A.cli("status", "-j").stdout)["incomplete"], [])
        self.assertEqual(A.metric("lifeboat_instance_incomplete", "B"), 0)
        self.assertTrue(os.path.exists(os.path.join(A.held_instance_dir(v), "datasets", v, "g")))

    def test_sighup_is_logged_and_ignored(self):
        c = self.cluster(names=("A", "B"))
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


class SlotsTest(agent_test.ClusterTestCase):
    """Idle strangers (no key needed to connect) must not starve peers or the API."""

    def setUp(self):
        super().setUp()
        self.socks = []
        self.addCleanup(lambda: [s.close() for s in self.socks])

    def idle(self, port, n):
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            self.socks.append(s)

    def test_idle_connections_to_the_peer_port_do_not_block_pulls(self):
        c = self.cluster(names=("A", "B"))
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
        c = self.cluster(names=("A", "B"))
        A = c.agents["A"]
        A.start(preexec=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)))
        c.agents["B"].start()
        self.idle(A.api_port, 400)
        status, _, body = A.http("GET", "/status", timeout=10)
        self.assertEqual(status, 200, body)
        self.assertIsNone(A.proc.poll())


if __name__ == "__main__":
    agent_test.run_tests()
