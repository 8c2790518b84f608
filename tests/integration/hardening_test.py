#!/usr/bin/env python3
"""Hardening integration tests (issue 8): real `lifeboat agent` processes on
loopback, killed with SIGKILL mid-pull, and the control API bound beyond
loopback. Reuses the cluster helpers of agent_test.py.

  hardening_test.py --lifeboat build/lifeboat [unittest args, e.g. HardeningTest.test_crash_loop]

The crash loop is seeded: it prints its seed, and LIFEBOAT_CRASH_SEED=<seed>
replays the same kill points (LIFEBOAT_CRASH_ROUNDS overrides the 50 rounds).
"""

import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import agent_test  # noqa: E402
from agent_test import Agent, det_bytes, results_by_peer, tree_digests, write  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GEN_FIXTURE = os.path.join(REPO, "scripts", "gen-fixture")
CRASH_ROUNDS = int(os.environ.get("LIFEBOAT_CRASH_ROUNDS", "50"))
CRASH_BUDGET_S = 200.0  # the loop stops early (and fails) rather than overrun ctest's timeout


def instance_state(root, u):
    """What one instance is, as files: its dataset tree, VM payload and SAPI record."""
    state = {"datasets/" + k: v for k, v in tree_digests(os.path.join(root, "datasets", u)).items()}
    for rel in ("vms/%s.json" % u, "sapi/%s.json" % u):
        p = os.path.join(root, rel)
        state[rel] = tree_digests(os.path.dirname(p)).get(os.path.basename(p))
    return state


class ApiAgent(Agent):
    """An agent whose control API binds to `api_host`, optionally with a token."""

    def __init__(self, *a, api_host="127.0.0.1", token=None, **kw):
        super().__init__(*a, **kw)
        self.api_host = api_host
        self.token = token

    def write_config(self):
        super().write_config()
        with open(self.config) as f:
            text = f.read()
        text = text.replace('api = "127.0.0.1:%d"' % self.api_port,
                            'api = "%s:%d"' % (self.api_host, self.api_port))
        if self.token is not None:
            token_file = os.path.join(os.path.dirname(self.config), "api.token")
            write(token_file, self.token + "\n", 0o600)
            text = text.replace('cluster_key_file = "cluster.key"',
                                'cluster_key_file = "cluster.key"\napi_token_file = "api.token"')
        write(self.config, text)

    def connect_host(self):
        return "127.0.0.1" if self.api_host in ("0.0.0.0", "::") else self.api_host

    def http(self, method, path, timeout=10.0, headers=None):
        c = http.client.HTTPConnection(self.connect_host(), self.api_port, timeout=timeout)
        try:
            c.request(method, path, headers=headers or {})
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read().decode()
        finally:
            c.close()


def non_loopback_ipv4():
    """An IPv4 address of this host outside 127/8, or None."""
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        fields = line.split()
        if "inet" in fields:
            addr = fields[fields.index("inet") + 1].split("/")[0]
            if not addr.startswith("127."):
                return addr
    return None


class HardeningTest(agent_test.ClusterTestCase):
    sync_ok = agent_test.AgentTest.sync_ok

    # ---- a full disk -----------------------------------------------------------

    def test_a_full_disk_fails_the_pull_and_keeps_the_previous_state(self):
        """A's data_dir on a small tmpfs: a real ENOSPC through the agent's own
        puller. The pull fails naming the error; nothing it changed is current
        (not even the small edit that fitted); the agent goes on; with room
        again the next pull brings everything."""
        c = self.cluster(names=("A", "B"))
        A, B_exp = c.agents["A"], c.exports["B"]
        os.makedirs(A.data_dir)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "lifeboat-it", A.data_dir],
                           capture_output=True, text=True)
        if r.returncode != 0:
            self.skipTest("cannot mount a tmpfs here (needs root): " + r.stderr.strip())
        self.addCleanup(subprocess.run, ["umount", "-l", A.data_dir], capture_output=True)
        small = B_exp.add_instance("sapi", "sapi0", {"sapi/db.json": '{"v": 1}'})
        big = B_exp.add_instance("imgapi", "imgapi0", {"etc/config.json": '{"port": 8080}',
                                                       "store/blob0": det_bytes("blob0", 1 << 20)})
        c.start()
        self.sync_ok(A, "B")
        before = {u: instance_state(A.held_instance_dir(u), u) for u in (small, big)}

        # Room for about 2 MiB more; the next pull needs 8 MiB (and an edit).
        used = os.statvfs(A.data_dir)
        used_bytes = (used.f_blocks - used.f_bfree) * used.f_frsize
        r = subprocess.run(["mount", "-o", "remount,size=%d" % (used_bytes + (2 << 20)), A.data_dir],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        write(B_exp.dataset_path(small, "sapi/db.json"), '{"v": 2}')
        write(B_exp.dataset_path(big, "store/blob1"), det_bytes("blob1", 8 << 20))
        rc, lines, err = A.sync_now("B")
        self.assertNotEqual(rc, 0, lines)
        res = results_by_peer(lines)["B"]
        self.assertFalse(res["ok"])
        self.assertIn("No space left on device", json.dumps(res["error"]))
        st = A.peer_status("B")
        self.assertIn("No space left on device", st["last_error"])
        for u in (small, big):
            self.assertEqual(instance_state(A.held_instance_dir(u), u), before[u], "a failed pull changed " + u)
        self.assertEqual(A.cli("catalog", "verify", timeout=60).returncode, 0)
        self.assertTrue(A.healthy(), "the agent died of a full disk")

        # Room again: the same agent pulls everything.
        r = subprocess.run(["mount", "-o", "remount,size=64m", A.data_dir], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.sync_ok(A, "B")
        for u in (small, big):
            self.assertEqual(instance_state(A.held_instance_dir(u), u), instance_state(B_exp.root, u), u)
        self.assertIsNone(A.peer_status("B")["last_error"])

    # ---- control API beyond loopback ----------------------------------------

    def test_api_beyond_loopback_requires_a_token(self):
        host = non_loopback_ipv4() or "0.0.0.0"
        sys.stderr.write("control API bound to %s\n" % host)
        c = self.cluster(names=("A", "B"))
        c.exports["B"].add_instance("imgapi", "imgapi0", {"f": "x"})
        token = "t0ken-" + det_bytes("token", 16).hex()
        A = ApiAgent(self.tmp, "A2", agent_test.KEY_A, c.exports["A"].root, api_host=host, token=token)
        A.peers = [("B", c.agents["B"].listen_port)]
        c.agents["A"] = A
        c.start()
        # /healthz stays open (for load balancers and systemd); everything else needs the token.
        self.assertEqual(A.http("GET", "/healthz")[0], 200)
        for method, path in (("GET", "/status"), ("GET", "/catalog"), ("GET", "/metrics"),
                             ("POST", "/sync")):
            status, _, body = A.http(method, path)
            self.assertEqual(status, 401, "%s %s without a token: %s" % (method, path, body))
            status, _, _ = A.http(method, path, headers={"Authorization": "Bearer wrong-" + token})
            self.assertEqual(status, 401, "%s %s with a wrong token" % (method, path))
        self.assertTrue(A.cli("sync-now", "-j").returncode == 0, "the CLI sends the configured token")
        status, _, body = A.http("GET", "/catalog", headers={"Authorization": "Bearer " + token})
        self.assertEqual(status, 200, body)
        self.assertEqual([i["alias"] for i in json.loads(body)["instances"]], ["imgapi0"])
        # The CLI reads the token from the config.
        r = A.cli("status", "-j")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["peers"][0]["name"], "B")

    def test_api_beyond_loopback_without_token_refuses_to_start(self):
        c = self.cluster(names=("A", "B"))
        A = ApiAgent(self.tmp, "A2", agent_test.KEY_A, c.exports["A"].root, api_host="0.0.0.0")
        A.peers = [("B", c.agents["B"].listen_port)]
        A.write_config()
        r = subprocess.run([agent_test.LIFEBOAT, "agent", "-c", A.config], capture_output=True,
                           text=True, timeout=30, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 78, r.stderr)  # EX_CONFIG
        self.assertIn("agent.api", r.stderr)
        self.assertIn("auth.api_token_file", r.stderr)
        with self.assertRaises(OSError):  # nothing listens
            A.http("GET", "/healthz", timeout=2.0)
        r = A.cli("check-config")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("auth.api_token_file", r.stdout + r.stderr)
        # 127.0.0.2 is loopback: no token needed.
        A.api_host = "127.0.0.2"
        A.write_config()
        self.assertEqual(A.cli("check-config").returncode, 0)

    # ---- crash consistency -------------------------------------------------------

    def test_sigkill_at_random_points_of_pulls_50_times(self):
        seed = int(os.environ.get("LIFEBOAT_CRASH_SEED", str(random.SystemRandom().randrange(1 << 31))))
        sys.stderr.write("crash loop seed %d (LIFEBOAT_CRASH_SEED=%d replays it)\n" % (seed, seed))
        rng = random.Random(seed)
        c = self.cluster(names=("A", "B"), A={"bwlimit": "3M"})
        B_exp = c.exports["B"]
        services = "imgapi,sapi,ufds,vmapi,cnapi,napi,papi,workflow,amon,cloudapi"
        r = subprocess.run([sys.executable, GEN_FIXTURE, "--root", B_exp.root, "--size", "small",
                            "--seed", str(seed % 1000), "--services", services],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        uuids = sorted(f[:-5] for f in os.listdir(os.path.join(B_exp.root, "vms")) if f.endswith(".json"))
        self.assertGreaterEqual(len(uuids), 10)
        versions = {u: [instance_state(B_exp.root, u)] for u in uuids}
        c.start()
        A = c.agents["A"]

        # Calibrate: how long a whole pull takes here; then start A over, empty.
        t0 = time.monotonic()
        self.sync_ok(A)
        pull_s = time.monotonic() - t0
        sys.stderr.write("an uninterrupted pull takes %.2fs\n" % pull_s)
        A.stop()
        shutil.rmtree(A.data_dir)

        def new_version(k):
            for u in uuids:
                if rng.random() < 0.6:
                    d = B_exp.dataset_path(u)
                    write(os.path.join(d, "crashloop", "state"), "version %d of %s\n" % (k, u))
                    write(os.path.join(d, "crashloop", "v%d.bin" % k), det_bytes("%d-%s" % (k, u), 96 << 10))
                    old = os.path.join(d, "crashloop", "v%d.bin" % (k - 1))
                    if os.path.exists(old):
                        os.remove(old)
                versions[u].append(instance_state(B_exp.root, u))

        def check_after_restart(rnd):
            where = "round %d (seed %d)" % (rnd, seed)
            staged = [k for k, v in tree_digests(os.path.join(A.data_dir, ".staging")).items() if v != "dir"]
            self.assertEqual(staged, [], "%s: staging not empty after startup" % where)
            r = A.cli("catalog", "verify", timeout=60)
            self.assertEqual(r.returncode, 0, "%s: catalog verify:\n%s%s" % (where, r.stdout, r.stderr))
            cat = A.catalog()
            held = {}
            for inst in cat["instances"]:
                u = inst["uuid"]
                self.assertIn(u, versions, where)
                held[u] = instance_state(A.held_instance_dir(u), u)
                self.assertIn(held[u], versions[u],
                              "%s: %s (%s) is neither an old nor a new version: a mix" % (where, inst["alias"], u))
            # One commit point per pull: every instance is at the same version.
            self.assertIn(len(held), (0, len(uuids)), where + ": a first pull committed in part")
            if held:
                same = [k for k in range(len(versions[uuids[0]]))
                        if all(held[u] == versions[u][k] for u in uuids)]
                self.assertTrue(same, where + ": instances held at different versions: a pull committed in part")
            return len(cat["instances"])

        stats = {"completed": 0, "killed_in_commit": 0, "killed": 0}
        version = 0
        deadline = time.monotonic() + CRASH_BUDGET_S
        for rnd in range(CRASH_ROUNDS):
            self.assertLess(time.monotonic(), deadline, "crash loop over its time budget at round %d" % rnd)
            A.start()
            check_after_restart(rnd)
            target_commit = rng.random() < 0.3
            delay = rng.uniform(0.0, 1.3 * pull_s)
            p = A.sync_now_async("B")
            completed = False
            try:
                if target_commit:
                    # Kill right as the commit starts, give or take a few ms.
                    for line in p.stdout:
                        j = json.loads(line)
                        if j.get("type") == "result":
                            completed = j.get("ok", False)
                            break
                        if j.get("type") == "progress" and j.get("phase") == "commit":
                            time.sleep(rng.uniform(0.0, 0.03))
                            stats["killed_in_commit"] += 1
                            break
                else:
                    try:
                        out, _ = p.communicate(timeout=delay)
                        completed = p.returncode == 0
                    except subprocess.TimeoutExpired:
                        pass
                A.kill(signal.SIGKILL)
                A.wait()
                stats["killed"] += 1
            finally:
                if p.poll() is None:
                    p.kill()
                p.communicate()
            if completed:
                stats["completed"] += 1
                version += 1
                new_version(version)
        sys.stderr.write("crash loop: %s, %d versions\n" % (stats, version + 1))

        # Finally the pull completes and A holds exactly B's export.
        A.start()
        check_after_restart(CRASH_ROUNDS)
        self.sync_ok(A)
        held = {i["uuid"] for i in A.catalog()["instances"]}
        self.assertEqual(held, set(uuids))
        for u in uuids:
            self.assertEqual(instance_state(A.held_instance_dir(u), u), instance_state(B_exp.root, u), u)
        for img in os.listdir(os.path.join(B_exp.root, "images")):
            self.assertEqual(tree_digests(os.path.join(A.data_dir, "images", img)),
                             tree_digests(os.path.join(B_exp.root, "images", img)), "image " + img)
        self.assertEqual(A.cli("catalog", "verify", timeout=60).returncode, 0)


if __name__ == "__main__":
    agent_test.run_tests()
