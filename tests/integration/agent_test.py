#!/usr/bin/env python3
"""Integration tests of `lifeboat agent`, `sync-now` and `status`: real agent
processes on 127.0.0.1 with dir exports in temp dirs, talking syncproto to
each other. Every test builds its own cluster, bounds every wait, and kills
every process it started.

  agent_test.py --lifeboat build/lifeboat [unittest args, e.g. AgentTest.test_no_change]
"""

import argparse
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import uuid as uuidlib

LIFEBOAT = None
KEY_A = "integration-test-cluster-key-0123456789abcdef"
KEY_WRONG = "a-different-cluster-key-9876543210-zyxwvuts"
START_TIMEOUT = 20.0
SYNC_TIMEOUT = 120.0


_HANDED_OUT = set()


def free_port():
    """A port that is free now, drawn below the kernel's ephemeral range
    (32768+): a port 0 handed out here is released before the agent binds it,
    and meanwhile any outgoing connection of a test running in parallel could
    take it as its source port ("address already in use" at agent start)."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port
    raise AssertionError("no free port in 20000-31999")


def det_bytes(seed, n):
    """Deterministic incompressible bytes."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(b"%s-%d" % (seed.encode(), counter)).digest()
        counter += 1
    return bytes(out[:n])


def write(path, data, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    os.chmod(path, mode)


def tree_digests(root):
    """Relative path -> sha256 (files) / "->target" (symlinks) / "dir" under root."""
    out = {}
    if not os.path.isdir(root):
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            p = os.path.join(dirpath, d)
            rel = os.path.relpath(p, root)
            out[rel] = "->" + os.readlink(p) if os.path.islink(p) else "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = "->" + os.readlink(p)
            else:
                with open(p, "rb") as fh:
                    out[rel] = hashlib.sha256(fh.read()).hexdigest()
    return out


def fixture_uuid(*labels):
    """A deterministic uuid for a named object of the test datacenter."""
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, ".".join(labels) + ".lifeboat.test"))


def sapi_application_uuid():
    """The "sdc" SAPI application's uuid, the same on every node."""
    return fixture_uuid("sdc", "sapi-application")


def sapi_service_uuid(service):
    """The SAPI service's uuid, the same on every node: instance records name
    their service by it, as real SAPI records do (sdc-sapi docs/index.md)."""
    return fixture_uuid(service, "sapi-service")


class Export:
    """A dir-provider export root shaped like a headnode's objects."""

    def __init__(self, root, node):
        self.root = root
        self.node = node
        self.instances = {}  # uuid -> (alias, service, image)
        os.makedirs(root, exist_ok=True)

    def add_image(self, image_uuid, origin=None, size=2048):
        m = {"v": 2, "uuid": image_uuid, "name": "img-" + image_uuid[:8], "version": "1.0",
             "type": "zone-dataset", "os": "smartos", "state": "active"}
        if origin:
            m["origin"] = origin
        data = det_bytes(image_uuid, size)
        # files[0] as IMGAPI and imgadm know it (what `imgadm install` checks).
        m["files"] = [{"sha1": hashlib.sha1(data).hexdigest(), "size": len(data),
                       "compression": "none"}]
        write(os.path.join(self.root, "images", image_uuid, "manifest.json"), json.dumps(m, indent=2))
        write(os.path.join(self.root, "images", image_uuid, "file"), data)

    def add_instance(self, service, alias, files):
        u = str(uuidlib.uuid4())
        image = str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, "image-" + service + self.node))
        self.add_image(image)
        vm = {"uuid": u, "zonename": u, "alias": alias, "brand": "joyent-minimal",
              "image_uuid": image, "state": "running",
              "owner_uuid": "930896af-bf8c-48d4-885c-6573a94b1853",
              "server_uuid": fixture_uuid(self.node, "server"),
              "tags": {"smartdc_role": service, "smartdc_type": "core"},
              "nics": [{"ip": "10.99.99.%d" % (len(self.instances) + 10), "nic_tag": "admin",
                        "mac": "90:b8:d0:00:%02x:%02x" % (ord(self.node[-1]), len(self.instances))}]}
        write(os.path.join(self.root, "vms", u + ".json"), json.dumps(vm, indent=2))
        write(os.path.join(self.root, "sapi", u + ".json"),
              json.dumps({"uuid": u, "service_uuid": sapi_service_uuid(service),
                          "params": {"alias": alias}}))
        self.add_sapi_service(service)
        for rel, data in files.items():
            write(self.dataset_path(u, rel), data)
        self.instances[u] = (alias, service, image)
        return u

    def add_sapi_service(self, service):
        """The SAPI service record (and the application) an instance record names."""
        app = os.path.join(self.root, "sapi", "application.json")
        if not os.path.exists(app):
            write(app, json.dumps({"uuid": sapi_application_uuid(), "name": "sdc",
                                   "params": {}, "metadata": {}, "master": True}, indent=2))
        path = os.path.join(self.root, "sapi", "services", service + ".json")
        if not os.path.exists(path):
            write(path, json.dumps({"uuid": sapi_service_uuid(service), "name": service,
                                    "application_uuid": sapi_application_uuid(), "params": {},
                                    "metadata": {}, "type": "vm"}, indent=2))

    def remove_instance(self, u):
        os.remove(os.path.join(self.root, "vms", u + ".json"))
        os.remove(os.path.join(self.root, "sapi", u + ".json"))
        shutil.rmtree(os.path.join(self.root, "datasets", u))
        del self.instances[u]

    def dataset_path(self, u, rel=""):
        return os.path.join(self.root, "datasets", u, rel) if rel else os.path.join(self.root, "datasets", u)


class Agent:
    def __init__(self, tmp, name, key, export_root, interval="1h", removed_grace="24h", bwlimit="0"):
        self.tmp = tmp
        self.name = name
        self.uuid = str(uuidlib.uuid4())
        self.key = key
        self.export_root = export_root
        self.interval = interval
        self.removed_grace = removed_grace
        self.bwlimit = bwlimit
        self.data_dir = os.path.join(tmp, name, "data")
        self.config = os.path.join(tmp, name, "lifeboat.toml")
        self.log_path = os.path.join(tmp, name, "agent.log")
        self.listen_port = free_port()
        self.api_port = free_port()
        self.peers = []  # (name, port)
        self.extra_config = ""  # TOML appended to the config (sections of a test's own)
        self.proc = None

    def write_config(self):
        os.makedirs(os.path.dirname(self.config), exist_ok=True)
        write(os.path.join(os.path.dirname(self.config), "cluster.key"), self.key, 0o600)
        # (name, listen port) or (name, listen port, api port)
        peers = "".join('\n[[peer]]\nname = "%s"\naddress = "127.0.0.1:%d"\n' % p[:2]
                        + ('api = "127.0.0.1:%d"\n' % p[2] if len(p) > 2 else "")
                        for p in self.peers)
        write(self.config, """
[node]
uuid = "%s"
name = "%s"

[agent]
listen = "127.0.0.1:%d"
api = "127.0.0.1:%d"
data_dir = "%s"
interval = "%s"
stale_after = "2h"
bwlimit = "%s"
log_level = "debug"

[agent.limits]
connect_timeout = "5s"
io_timeout = "10s"

[auth]
cluster_key_file = "cluster.key"

[export]
provider = "dir"
root = "%s"

[retention]
generations = 3
removed_grace = "%s"
%s
%s""" % (self.uuid, self.name, self.listen_port, self.api_port, self.data_dir, self.interval,
         self.bwlimit, self.export_root, self.removed_grace, peers, self.extra_config))

    def start(self, env=None, preexec=None):
        self.write_config()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([LIFEBOAT, "agent", "-c", self.config], stdout=log,
                                     stderr=log, stdin=subprocess.DEVNULL, env=env,
                                     preexec_fn=preexec)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.healthy():
                return
            time.sleep(0.05)
        if self.proc.poll() is None:
            raise AssertionError("agent %s did not become healthy:\n%s" % (self.name, self.log()))
        raise AssertionError("agent %s exited %s:\n%s" % (self.name, self.proc.returncode, self.log()))

    def healthy(self):
        try:
            status, _, _ = self.http("GET", "/healthz", timeout=1.0)
            return status == 200
        except OSError:
            return False

    def http(self, method, path, timeout=10.0):
        c = http.client.HTTPConnection("127.0.0.1", self.api_port, timeout=timeout)
        try:
            c.request(method, path)
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read().decode()
        finally:
            c.close()

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout=30.0):
        return self.proc.wait(timeout=timeout)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-8000:]
        except OSError:
            return ""

    def cli(self, *args, timeout=SYNC_TIMEOUT):
        return subprocess.run([LIFEBOAT, *args, "-c", self.config], capture_output=True, text=True,
                              timeout=timeout)

    def sync_now(self, peer=None, services=()):
        args = ["sync-now", "-j"]
        if peer:
            args += ["--peer", peer]
        for s in services:
            args += ["--service", s]
        r = self.cli(*args)
        lines = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
        return r.returncode, lines, r.stderr

    def sync_now_async(self, peer=None):
        args = [LIFEBOAT, "sync-now", "-j", "-c", self.config]
        if peer:
            args += ["--peer", peer]
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def status(self):
        r = self.cli("status", "-j", timeout=30)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def peer_status(self, name):
        return next(p for p in self.status()["peers"] if p["name"] == name)

    def catalog(self):
        status, _, body = self.http("GET", "/catalog")
        assert status == 200, body
        return json.loads(body)

    def metric(self, name, peer=None):
        status, _, body = self.http("GET", "/metrics")
        assert status == 200, body
        want = name + ('{peer="%s"}' % peer if peer else "")
        for line in body.splitlines():
            if line.startswith(want + " "):
                return float(line.split()[-1])
        raise AssertionError("metric %s not found in:\n%s" % (want, body))

    def held_instance_dir(self, u):
        return os.path.join(self.data_dir, "instances", u, "current")


def results_by_peer(lines):
    return {l["peer"]: l for l in lines if l.get("type") == "result"}


class Cluster:
    def __init__(self, tmp, names=("A", "B", "C"), keys=None, **agent_kw):
        self.tmp = tmp
        self.exports = {}
        self.agents = {}
        keys = keys or {}
        for n in names:
            self.exports[n] = Export(os.path.join(tmp, n, "export"), n)
            kw = dict(agent_kw.get(n, {}))
            self.agents[n] = Agent(tmp, n, keys.get(n, KEY_A), self.exports[n].root, **kw)
        for n, a in self.agents.items():
            a.peers = [(m, b.listen_port, b.api_port) for m, b in self.agents.items() if m != n]

    def start(self):
        for a in self.agents.values():
            a.start()

    def stop(self):
        for a in self.agents.values():
            a.stop()


class ClusterTestCase(unittest.TestCase):
    """A temp dir per test and the clusters it starts: stopped at the end,
    their agents' logs printed when the test failed (or LIFEBOAT_IT_LOGS)."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="lifeboat-it-", dir=os.environ.get("TMPDIR"))
        self.clusters = []

    def tearDown(self):
        failed = not getattr(self._outcome, "success", True)
        for c in self.clusters:
            if failed or os.environ.get("LIFEBOAT_IT_LOGS"):
                for a in c.agents.values():
                    sys.stderr.write("---- log of %s ----\n%s\n" % (a.name, a.log()))
            c.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def cluster(self, **kw):
        c = Cluster(self.tmp, **kw)
        self.clusters.append(c)
        return c


def run_tests():
    """The command line of every integration script: --lifeboat BINARY, then
    unittest's own arguments."""
    global LIFEBOAT
    ap = argparse.ArgumentParser()
    ap.add_argument("--lifeboat", required=True)
    args, rest = ap.parse_known_args()
    LIFEBOAT = os.path.abspath(args.lifeboat)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


class AgentTest(ClusterTestCase):
    def populate(self, c):
        b, cc, a = c.exports["B"], c.exports["C"], c.exports["A"]
        self.b_imgapi = b.add_instance("imgapi", "imgapi0", {
            "etc/config.json": '{"port": 8080}',
            "images/ab/file0": det_bytes("b-file0", 200_000),
            "empty": b"",
            "logs/old.log": "line\n" * 100,
        })
        os.symlink("images/ab/file0", b.dataset_path(self.b_imgapi, "latest"))
        self.b_sapi = b.add_instance("sapi", "sapi0", {"sapi/db.json": '{"instances": []}'})
        self.c_ufds = cc.add_instance("ufds", "ufds0", {"ldap/data.mdb": det_bytes("c-mdb", 50_000)})
        self.a_own = a.add_instance("vmapi", "vmapi0", {"db/x": "own data"})

    def assert_holds(self, agent, export, peer_name):
        """`agent` holds every instance of `export`, byte-identical, as `peer_name`'s."""
        cat = {i["uuid"]: i for i in agent.catalog()["instances"]}
        for u, (alias, service, image) in export.instances.items():
            self.assertIn(u, cat, "%s does not hold %s's %s" % (agent.name, peer_name, alias))
            self.assertEqual(cat[u]["peer"], peer_name)
            self.assertEqual(cat[u]["service"], service)
            self.assertEqual(cat[u]["alias"], alias)
            held = agent.held_instance_dir(u)
            self.assertEqual(tree_digests(os.path.join(held, "datasets", u)),
                             tree_digests(export.dataset_path(u)), "dataset of " + alias)
            for rel in ("vms/%s.json" % u, "sapi/%s.json" % u):
                with open(os.path.join(export.root, rel), "rb") as f1, \
                        open(os.path.join(held, rel), "rb") as f2:
                    self.assertEqual(f1.read(), f2.read(), rel)
            self.assertEqual(tree_digests(os.path.join(agent.data_dir, "images", image)),
                             tree_digests(os.path.join(export.root, "images", image)), "image " + image)

    def sync_ok(self, agent, peer=None):
        rc, lines, err = agent.sync_now(peer)
        self.assertEqual(rc, 0, "sync-now failed: %s\n%s" % (lines, err))
        self.assertEqual(lines[-1]["type"], "done")
        self.assertTrue(lines[-1]["ok"])
        return results_by_peer(lines)

    # ---- the tests ------------------------------------------------------------

    def test_initial_sync_then_every_kind_of_change(self):
        c = self.cluster()
        self.populate(c)
        c.start()
        A, B = c.agents["A"], c.exports["B"]
        res = self.sync_ok(A)
        self.assertEqual(set(res), {"B", "C"})
        self.assert_holds(A, B, "B")
        self.assert_holds(A, c.exports["C"], "C")
        cat = A.catalog()
        self.assertEqual({i["uuid"] for i in cat["instances"]},
                         set(B.instances) | set(c.exports["C"].instances))
        self.assertNotIn(self.a_own, {i["uuid"] for i in cat["instances"]}, "A holds its own instance")
        self.assertFalse(os.path.exists(A.held_instance_dir(self.a_own)))
        gen1 = res["B"]["generation"]
        # The log says where each pull's time went: its phases add up to it.
        with open(A.log_path) as f:
            pulls = [j for j in map(json.loads, f) if j.get("msg") == "pull"]
        self.assertEqual({j["peer"] for j in pulls}, {"B", "C"})
        for j in pulls:
            phases = j["phase_ms"]
            self.assertEqual(set(phases), {"connect", "handshake", "manifest", "transfer", "commit", "abort"})
            self.assertTrue(all(v >= 0 for v in phases.values()), j)
            self.assertLessEqual(abs(sum(phases.values()) - j["duration_ms"]), 5, j)

        # Edit, append, delete, add, rename; add one instance, remove another.
        d = B.dataset_path(self.b_imgapi)
        write(os.path.join(d, "etc/config.json"), '{"port": 9090}')
        with open(os.path.join(d, "logs/old.log"), "ab") as f:
            f.write(b"appended\n")
        os.remove(os.path.join(d, "empty"))
        write(os.path.join(d, "new/dir/added.txt"), "added")
        os.rename(os.path.join(d, "images/ab/file0"), os.path.join(d, "images/ab/file1"))
        os.remove(os.path.join(d, "latest"))
        os.symlink("images/ab/file1", os.path.join(d, "latest"))
        added = B.add_instance("cnapi", "cnapi0", {"data/x": "cnapi data"})
        removed = self.b_sapi
        B.remove_instance(removed)

        res = self.sync_ok(A, "B")
        self.assertGreater(res["B"]["generation"], gen1)
        self.assert_holds(A, B, "B")
        cat = {i["uuid"]: i for i in A.catalog()["instances"]}
        self.assertIn(added, cat)
        self.assertIn(removed, cat, "a removed instance must stay held until removed_grace")
        self.assertTrue(cat[removed]["removed"])
        self.assertTrue(os.path.isdir(A.held_instance_dir(removed)))
        # The rename moved no data: file1 has file0's bytes, which A already had.
        self.assertLess(res["B"]["wire_bytes"], 100_000)

    def test_removed_instance_goes_after_the_grace(self):
        c = self.cluster(names=("A", "B"), A={"removed_grace": "1s"})
        B = c.exports["B"]
        keep = B.add_instance("imgapi", "imgapi0", {"f": "keep"})
        gone = B.add_instance("sapi", "sapi0", {"f": "gone"})
        c.start()
        A = c.agents["A"]
        self.sync_ok(A)
        B.remove_instance(gone)
        self.sync_ok(A)
        cat = {i["uuid"]: i for i in A.catalog()["instances"]}
        self.assertTrue(cat[gone]["removed"])
        time.sleep(1.5)  # let the (real-time) grace period pass
        B.add_instance("cnapi", "cnapi0", {"f": "x"})
        self.sync_ok(A)
        # The grace passed, but only 2 pulls missed it: it needs 3 (a clock
        # that jumps must not be enough to drop data).
        cat = {i["uuid"]: i for i in A.catalog()["instances"]}
        self.assertIn(gone, cat)
        self.sync_ok(A)  # an unchanged pull counts too
        cat = {i["uuid"]: i for i in A.catalog()["instances"]}
        self.assertNotIn(gone, cat)
        self.assertIn(keep, cat)
        self.assertFalse(os.path.exists(os.path.join(A.data_dir, "instances", gone)))

    def test_small_edit_to_a_big_file_moves_a_small_fraction(self):
        c = self.cluster(names=("A", "B"))
        B = c.exports["B"]
        size = 8 << 20
        u = B.add_instance("imgapi", "imgapi0", {"big.bin": det_bytes("big", size)})
        c.start()
        A = c.agents["A"]
        self.sync_ok(A)
        before = A.metric("lifeboat_bytes_received_total", "B")
        path = B.dataset_path(u, "big.bin")
        with open(path, "r+b") as f:
            f.seek(size // 2)
            f.write(det_bytes("edit", 4096))
        res = self.sync_ok(A)["B"]
        self.assert_holds(A, B, "B")
        self.assertEqual(res["files"], 1)
        moved = A.metric("lifeboat_bytes_received_total", "B") - before
        self.assertEqual(moved, res["wire_bytes"])
        self.assertLess(moved, size * 0.02, "a 4 KiB edit moved %d bytes of %d" % (moved, size))

    def test_no_change_sync_moves_no_file_data(self):
        c = self.cluster(names=("A", "B"))
        c.exports["B"].add_instance("imgapi", "imgapi0", {"a": det_bytes("a", 300_000)})
        c.start()
        A = c.agents["A"]
        first = self.sync_ok(A)["B"]
        self.assertGreater(first["wire_bytes"], 300_000)
        again = self.sync_ok(A)["B"]
        self.assertTrue(again["unchanged"])
        self.assertEqual(again["files"], 0)
        self.assertEqual(again["file_bytes"], 0)
        self.assertEqual(again["generation"], first["generation"])
        self.assertLess(again["wire_bytes"], 2048, "a no-change pull is handshake + one small frame")

    def test_peer_killed_mid_pull_keeps_previous_generation(self):
        c = self.cluster(names=("A", "B"), A={"bwlimit": "2M"})
        B = c.exports["B"]
        u = B.add_instance("imgapi", "imgapi0", {"small": "version 1"})
        c.start()
        A, agent_b = c.agents["A"], c.agents["B"]
        gen1 = self.sync_ok(A)["B"]["generation"]
        old = tree_digests(B.dataset_path(u))
        # A big change that takes seconds at 2 MiB/s.
        write(B.dataset_path(u, "small"), "version 2")
        for i in range(4):
            write(B.dataset_path(u, "big%d" % i), det_bytes("big%d" % i, 3 << 20))
        p = A.sync_now_async("B")
        try:
            for line in p.stdout:
                j = json.loads(line)
                if j.get("type") == "progress" and j.get("wire_bytes", 0) > (1 << 20):
                    break
                self.assertNotEqual(j.get("type"), "result", "the pull ended before B was killed")
            agent_b.kill(signal.SIGKILL)
            agent_b.wait()
            out, _ = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertEqual(p.returncode, 75)
        self.assertEqual(tree_digests(os.path.join(A.held_instance_dir(u), "datasets", u)), old)
        st = A.peer_status("B")
        self.assertEqual(st["generation"], gen1)
        self.assertIsNotNone(st["last_error"])
        staged = [k for k, v in tree_digests(os.path.join(A.data_dir, ".staging")).items() if v != "dir"]
        self.assertEqual(staged, [], "the aborted pull left staged files behind")
        # B comes back: the next pull succeeds and brings everything.
        agent_b.start()
        res = self.sync_ok(A, "B")["B"]
        self.assertGreater(res["generation"], gen1)
        self.assert_holds(A, B, "B")
        self.assertIsNone(A.peer_status("B")["last_error"])

    def test_wrong_cluster_key_is_an_auth_error(self):
        c = self.cluster(keys={"C": KEY_WRONG})
        self.populate(c)
        c.start()
        A = c.agents["A"]
        rc, lines, _ = A.sync_now()
        self.assertEqual(rc, 75)
        res = results_by_peer(lines)
        self.assertTrue(res["B"]["ok"])
        self.assertFalse(res["C"]["ok"])
        self.assertEqual(res["C"]["error"]["code"], "permission")
        st = A.peer_status("C")
        self.assertEqual(st["last_error_code"], "permission")
        self.assertIn("key", st["last_error"])
        held = {i["uuid"] for i in A.catalog()["instances"]}
        self.assertFalse(held & set(c.exports["C"].instances), "C served data to a wrong-key peer")
        # C refused A in its handshake too.
        self.assertGreaterEqual(c.agents["C"].metric("lifeboat_served_auth_failures_total"), 1)
        # The human status names the error.
        r = A.cli("status")
        self.assertEqual(r.returncode, 0)
        self.assertIn("C", r.stdout)

    def test_concurrent_sync_now_share_a_pull(self):
        c = self.cluster(names=("A", "B"), A={"bwlimit": "4M"})
        B = c.exports["B"]
        B.add_instance("imgapi", "imgapi0", {"big": det_bytes("big", 4 << 20)})
        c.start()
        A = c.agents["A"]
        before = A.metric("lifeboat_pulls_total", "B")
        p1 = A.sync_now_async("B")
        p2 = A.sync_now_async("B")
        outs = []
        try:
            for p in (p1, p2):
                out, err = p.communicate(timeout=SYNC_TIMEOUT)
                outs.append((p.returncode, out, err))
        finally:
            for p in (p1, p2):
                if p.poll() is None:
                    p.kill()
                    p.wait()
        for rc, out, err in outs:
            self.assertEqual(rc, 0, err)
            lines = [json.loads(l) for l in out.splitlines()]
            self.assertTrue(results_by_peer(lines)["B"]["ok"])
        pulls = A.metric("lifeboat_pulls_total", "B") - before
        self.assertIn(pulls, (1, 2), "two sync-now made %d pulls" % pulls)
        self.assert_holds(A, B, "B")

    def test_sigterm_during_pull_exits_0_and_catalog_stays_consistent(self):
        c = self.cluster(names=("A", "B"), A={"bwlimit": "2M"})
        B = c.exports["B"]
        u = B.add_instance("imgapi", "imgapi0", {"v": "1"})
        c.start()
        A = c.agents["A"]
        self.sync_ok(A)
        old = tree_digests(os.path.join(A.held_instance_dir(u), "datasets", u))
        write(B.dataset_path(u, "v"), "2")
        write(B.dataset_path(u, "big"), det_bytes("big", 8 << 20))
        p = A.sync_now_async("B")
        try:
            for line in p.stdout:
                j = json.loads(line)
                if j.get("type") == "progress" and j.get("wire_bytes", 0) > (512 << 10):
                    break
            A.kill(signal.SIGTERM)
            self.assertEqual(A.wait(timeout=30), 0, A.log())
            p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertNotEqual(p.returncode, 0)
        self.assertEqual(tree_digests(os.path.join(A.held_instance_dir(u), "datasets", u)), old)
        # Restarted, A cleans up, pulls and holds B's current state.
        A.start()
        self.sync_ok(A)
        self.assert_holds(A, B, "B")

    def test_sync_now_one_service(self):
        c = self.cluster(names=("A", "B"))
        B = c.exports["B"]
        img = B.add_instance("imgapi", "imgapi0", {"f": "imgapi data"})
        sapi = B.add_instance("sapi", "sapi0", {"f": "sapi data"})
        c.start()
        A = c.agents["A"]
        rc, lines, err = A.sync_now("B", services=["imgapi"])
        self.assertEqual(rc, 0, err)
        held = {i["uuid"] for i in A.catalog()["instances"]}
        self.assertEqual(held, {img})
        self.sync_ok(A)
        held = {i["uuid"] for i in A.catalog()["instances"]}
        self.assertEqual(held, {img, sapi})
        self.assert_holds(A, B, "B")

    def test_ready_notification_and_clean_stop(self):
        c = self.cluster(names=("A", "B"))
        A = c.agents["A"]
        sock_path = os.path.join(self.tmp, "notify.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.bind(sock_path)
            s.settimeout(START_TIMEOUT)
            A.start(env=dict(os.environ, NOTIFY_SOCKET=sock_path))
            msg = s.recv(4096).decode()
            self.assertIn("READY=1", msg)
            self.assertTrue(A.healthy())  # READY means the API answers
            A.kill(signal.SIGTERM)
            self.assertEqual(A.wait(), 0)
            self.assertIn("STOPPING=1", s.recv(4096).decode())
        self.assertTrue(os.path.isdir(A.data_dir))
        self.assertEqual(os.stat(A.data_dir).st_mode & 0o777, 0o700)

    def test_second_agent_on_one_data_dir_refuses_to_start(self):
        c = self.cluster(names=("A", "B"))
        c.start()
        A = c.agents["A"]
        # Same data_dir, its own ports: only the data_dir lock can stop it.
        second = Agent(self.tmp, "A2", A.key, A.export_root)
        second.data_dir = A.data_dir
        second.write_config()
        p = subprocess.run([LIFEBOAT, "agent", "-c", second.config], capture_output=True, text=True,
                           timeout=START_TIMEOUT)
        self.assertEqual(p.returncode, 69, p.stdout + p.stderr)
        self.assertIn("agent.data_dir %s is in use by another process (pid %d)" % (A.data_dir, A.proc.pid),
                      p.stdout + p.stderr)
        self.assertTrue(A.healthy())
        # A crashed agent leaves no stale lock behind: the kernel drops it.
        A.kill(signal.SIGKILL)
        A.wait()
        second.start()
        self.assertTrue(second.healthy())
        second.stop()

    def test_status_and_check(self):
        c = self.cluster(names=("A", "B"))
        c.exports["B"].add_instance("imgapi", "imgapi0", {"f": "x"})
        c.start()
        A = c.agents["A"]
        r = A.cli("status", "--check")
        self.assertEqual(r.returncode, 1, "never pulled must be stale: " + r.stdout)
        # Nobody tried B yet: its reachability is unknown, not "no".
        self.assertIsNone(A.peer_status("B")["reachable"])
        r = A.cli("status", "-H", "-o", "peer,reachable")
        self.assertEqual(r.stdout.split(), ["B", "unknown"])
        self.sync_ok(A)
        r = A.cli("status", "--check", "-H", "-o", "peer,reachable,generation,stale")
        self.assertEqual(r.returncode, 0, r.stderr)
        fields = r.stdout.split()
        self.assertEqual(fields[0], "B")
        self.assertEqual(fields[1], "yes")
        self.assertEqual(fields[3], "ok")
        r = A.cli("sync-now", "--peer", "nosuch")
        self.assertEqual(r.returncode, 64)
        self.assertIn("no peer named 'nosuch'", r.stderr)
        st = A.status()
        self.assertEqual(st["services"][0]["service"], "imgapi")
        self.assertEqual(st["services"][0]["instances"], 1)
        c.stop()
        # The agent is down: status still shows what the catalog holds, and says so.
        r = A.cli("status", "-H", "-o", "peer,reachable,generation,stale")
        self.assertEqual(r.returncode, 69, r.stderr)
        self.assertIn("the agent is not running", r.stderr)
        self.assertEqual(r.stdout.split()[:4], ["B", "unknown", fields[2], "ok"])
        self.assertIn("imgapi", A.cli("status").stdout)
        r = A.cli("status", "-j")
        self.assertEqual(r.returncode, 69)
        st = json.loads(r.stdout)
        self.assertFalse(st["agent_running"])
        self.assertEqual(st["services"][0]["instances"], 1)
        r = A.cli("sync-now")
        self.assertEqual(r.returncode, 69)


if __name__ == "__main__":
    run_tests()
