#!/usr/bin/env python3
"""Integration tests of `lifeboat readiness` and `lifeboat drill` (issue 16):
three real agents on 127.0.0.1 with dir exports; readiness before and after
a peer dies, a drill's measured RTO, the agent's /readiness and metrics, and
the scheduled drill.

  readiness_test.py --lifeboat build/lifeboat [unittest args]
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agent_test  # noqa: E402
from agent_test import det_bytes  # noqa: E402


class ReadinessTest(agent_test.ClusterTestCase):
    def start_cluster(self, drill_interval=None):
        c = self.cluster()
        self.scratch = os.path.join(self.tmp, "drill-scratch")
        for a in c.agents.values():
            a.extra_config = '[drill]\ndir = "%s"\n' % os.path.join(self.scratch, a.name)
            if drill_interval:
                a.extra_config += 'interval = "%s"\n' % drill_interval
        B, C = c.exports["B"], c.exports["C"]
        self.b_imgapi = B.add_instance("imgapi", "imgapi0", {
            "etc/config.json": '{"port": 8080}',
            "images/ab/file0": det_bytes("b-file0", 400_000),
        })
        self.b_vmapi = B.add_instance("vmapi", "vmapi0", {"db/vms": det_bytes("vms", 90_000)})
        self.b_manatee = B.add_instance("manatee", "manatee0", {"pg/base": "pg"})
        self.c_ufds = C.add_instance("ufds", "ufds0", {"ldap/data.mdb": "mdb"})
        c.start()
        return c

    def readiness(self, agent, *args):
        r = agent.cli("readiness", "-j", *args, timeout=60)
        self.assertIn(r.returncode, (0, 1), r.stderr)
        return r.returncode, json.loads(r.stdout), r.stderr

    @staticmethod
    def peer(doc, name):
        return next(p for p in doc["peers"] if p["peer"] == name)

    def test_readiness_before_and_after_a_peer_dies(self):
        c = self.start_cluster()
        A = c.agents["A"]
        # Nothing pulled yet: B could not be rebuilt, and --check says why.
        rc, doc, err = self.readiness(A, "--check")
        self.assertEqual(rc, 1)
        self.assertFalse(doc["ready"])
        self.assertEqual([b["kind"] for b in self.peer(doc, "B")["blockers"]], ["never_pulled"])
        self.assertIn("B: never_pulled", err)

        rc, lines, err = A.sync_now()
        self.assertEqual(rc, 0, err)
        rc, doc, err = self.readiness(A, "--check")
        self.assertEqual(rc, 0, err)
        b = self.peer(doc, "B")
        self.assertTrue(b["ready"], b)
        self.assertEqual((b["instances"], b["restorable"], b["images_complete"], b["sapi_records"]),
                         (3, 3, 3, 3))
        self.assertEqual(b["ha_instances"], 1)
        self.assertTrue(any("manatee0" in n for n in b["notes"]), b["notes"])
        self.assertEqual(b["freshest"]["node"], "A")
        self.assertLess(b["rpo_seconds"], 120)
        self.assertGreater(b["data_bytes"], 490_000)
        self.assertEqual(b["rto_basis"], "estimate")
        self.assertIsNone(b["last_drill"])

        # B dies: its copy on A is what a restore would use; readiness still
        # answers (B does not), and the answer does not change.
        c.agents["B"].stop()
        rc, doc, err = self.readiness(A, "--check")
        self.assertEqual(rc, 0, err)
        self.assertTrue(self.peer(doc, "B")["ready"])
        self.assertEqual(self.peer(doc, "B")["restorable"], 3)

        # What readiness says of HA services is what a restore does: the
        # whole peer leaves manatee0 out, naming it restores it.
        target = os.path.join(self.tmp, "restored")
        r = A.cli("restore", "--peer", "B", "--backend", "dir", "--target", target,
                  "--dry-run", "-j", timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        plan = json.loads(r.stdout)["plan"]
        self.assertNotIn("manatee0", [i["old_alias"] for i in plan["instances"]])
        skipped = {s["alias"]: s["reason"] for s in plan["skipped"]}
        self.assertIn("--service manatee", skipped["manatee0"])
        r = A.cli("restore", "--service", "manatee", "--backend", "dir", "--target", target,
                  "--dry-run", "-j", timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual([i["old_alias"] for i in json.loads(r.stdout)["plan"]["instances"]],
                         ["manatee0"])

        # C, which never pulled B, is told A holds the freshest copy.
        rc, doc, _ = self.readiness(c.agents["C"])
        self.assertEqual(self.peer(doc, "B")["freshest"]["node"], "A")
        self.assertTrue(self.peer(doc, "B")["ready"])
        rc, doc, _ = self.readiness(c.agents["C"], "--local")
        self.assertEqual([x["kind"] for x in self.peer(doc, "B")["blockers"]], ["never_pulled"])

        # An image the catalog lost blocks the instances that need it.
        imgdir = os.path.join(A.data_dir, "catalog.json")
        with open(imgdir) as f:
            index = json.load(f)
        image = c.exports["B"].instances[self.b_vmapi][2]
        del index["images"][image]
        with open(imgdir, "w") as f:
            json.dump(index, f)
        rc, doc, err = self.readiness(A, "--check", "--local")
        self.assertEqual(rc, 1)
        b = self.peer(doc, "B")
        self.assertEqual([x["kind"] for x in b["blockers"]], ["missing_image"])
        self.assertEqual(b["restorable"], 2)
        self.assertIn("vmapi0", b["blockers"][0]["message"])

    def test_text_and_scripted_output(self):
        c = self.start_cluster()
        A = c.agents["A"]
        rc, _, err = A.sync_now()
        self.assertEqual(rc, 0, err)
        r = A.cli("readiness", "--local")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith("PEER"), r.stdout)
        self.assertIn("last verify: never", r.stdout)
        r = A.cli("readiness", "--local", "-H", "-o", "peer,ready,instances")
        self.assertEqual(r.stdout.splitlines(), ["B\tyes\t3/3", "C\tyes\t1/1"])
        r = A.cli("readiness", "-o", "peer,nope")
        self.assertEqual(r.returncode, 64)
        self.assertIn("unknown column 'nope'", r.stderr)
        r = A.cli("readiness", "--peer", "Z")
        self.assertEqual(r.returncode, 64)
        # A verify's result is recorded and shown.
        r = A.cli("catalog", "verify")
        self.assertEqual(r.returncode, 0, r.stderr)
        _, doc, _ = self.readiness(A, "--local")
        self.assertTrue(doc["verify"]["ok"])
        self.assertGreater(doc["verify"]["files_checked"], 5)

    def test_drill_measures_rto_and_leaves_nothing_behind(self):
        c = self.start_cluster()
        A = c.agents["A"]
        rc, _, err = A.sync_now()
        self.assertEqual(rc, 0, err)
        r = A.cli("drill", "--peer", "B", "-j")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        out = json.loads(r.stdout)
        self.assertTrue(out["ok"])
        d = out["drills"][0]
        self.assertEqual(d["peer"], "B")
        self.assertEqual(d["instances"], 3)
        self.assertGreater(d["bytes"], 490_000)
        self.assertGreater(d["files_verified"], 3)
        # The scratch copy is gone, and a drill is not a restore: no journal,
        # nothing looks restored (or deposed).
        self.assertEqual(os.listdir(os.path.join(self.scratch, "A")), [])
        self.assertFalse(os.path.exists(os.path.join(A.data_dir, "restores")))
        self.assertEqual(A.status()["restored"], [])

        _, doc, _ = self.readiness(A, "--local")
        b = self.peer(doc, "B")
        self.assertEqual(b["rto_basis"], "drill")
        self.assertTrue(b["last_drill"]["ok"])
        self.assertGreater(b["last_drill"]["throughput_bytes_per_second"], 0)
        self.assertIsNone(self.peer(doc, "C")["last_drill"])
        # The agent serves the same, and metrics carry it.
        status, _, body = A.http("GET", "/readiness")
        self.assertEqual(status, 200, body)
        self.assertTrue(self.peer(json.loads(body), "B")["last_drill"]["ok"])
        self.assertEqual(A.metric("lifeboat_drill_last_success", "B"), 1)
        self.assertEqual(A.metric("lifeboat_readiness_ready", "B"), 1)
        self.assertEqual(A.metric("lifeboat_readiness_restorable_instances", "B"), 3)

        # A damaged catalog file fails the drill, which blocks readiness
        # until a drill passes again.
        held = os.path.join(A.held_instance_dir(self.b_vmapi), "datasets", self.b_vmapi, "db", "vms")
        with open(held, "r+b") as f:
            f.write(b"X")
        r = A.cli("drill", "--peer", "B")
        self.assertEqual(r.returncode, 65, r.stdout + r.stderr)
        self.assertIn("FAILED", r.stdout)
        rc, doc, err = self.readiness(A, "--local", "--check")
        self.assertEqual(rc, 1)
        self.assertIn("drill_failed", [x["kind"] for x in self.peer(doc, "B")["blockers"]])
        self.assertIn("B: drill_failed", err)
        self.assertEqual(os.listdir(os.path.join(self.scratch, "A")), [])

    def test_agent_runs_drills_on_its_schedule(self):
        c = self.start_cluster(drill_interval="2s")
        A = c.agents["A"]
        rc, _, err = A.sync_now()
        self.assertEqual(rc, 0, err)
        deadline = time.monotonic() + 60
        records = set()
        while time.monotonic() < deadline and records != {"drill-B.json", "drill-C.json"}:
            checks = os.path.join(A.data_dir, "checks")
            records = {n for n in os.listdir(checks) if n.endswith(".json")} if os.path.isdir(checks) else set()
            time.sleep(0.2)
        self.assertEqual(records, {"drill-B.json", "drill-C.json"}, A.log())
        # A drill that started before the first pull committed failed ("no
        # peer named C"); the next one on the schedule holds the data.
        while True:
            _, doc, _ = self.readiness(A, "--local")
            if self.peer(doc, "C")["last_drill"]["ok"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.assertTrue(self.peer(doc, "C")["last_drill"]["ok"], doc)
        # SIGTERM stops the agent promptly even with drills scheduled.
        A.kill(agent_test.signal.SIGTERM)
        self.assertEqual(A.wait(timeout=30), 0)


if __name__ == "__main__":
    agent_test.run_tests()
