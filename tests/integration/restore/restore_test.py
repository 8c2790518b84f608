#!/usr/bin/env python3
"""Integration tests of `lifeboat restore`: three real agents on 127.0.0.1
(A pulls from B and C), then B is stopped and its instances are restored on A
with the real `lifeboat restore` command, through the dir backend and through
the smartos backend against the recording fakes of tests/data/fake-smartos-restore.

  restore_test.py --lifeboat build/lifeboat [unittest args, e.g. RestoreTest.test_dry_run_changes_nothing]

The agent/cluster helpers come from ../agent_test.py.
"""

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time
import uuid as uuidlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(HERE))), "scripts", "lib"))
import agent_test  # noqa: E402  (tests/integration/agent_test.py)
import treedigest  # noqa: E402  (scripts/lib/treedigest.py)
from agent_test import det_bytes, write  # noqa: E402

FAKES = os.path.join(os.path.dirname(os.path.dirname(HERE)), "data", "fake-smartos-restore")
READ_ONLY_FIELDS = ["state", "zone_state", "zonepath", "zoneid", "zonedid", "pid", "datasets",
                    "create_timestamp", "boot_timestamp", "last_modified", "server_uuid"]


def read_text(path):
    with open(path) as f:
        return f.read()


def tree(root):
    """What an operator needs back, per path under root: kind, mode, mtime,
    content or link target, owner and hard-link group (scripts/lib/treedigest.py)."""
    return treedigest.describe(root)


def whole_tree_bytes(root):
    """Every path under root with its bytes (or link target / dir marker): a byte-identity check."""
    out = {}
    if not os.path.exists(root):
        return None
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = ("l", os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("d", st.st_mode, st.st_mtime_ns)
            else:
                with open(p, "rb") as f:
                    out[rel] = ("f", st.st_mode, st.st_mtime_ns, f.read())
    return out


class RestoreTest(agent_test.ClusterTestCase):
    # ---- fixtures ---------------------------------------------------------------

    def add_chained_instance(self, export, service, alias, files):
        """An instance whose image has a two-level origin chain (root <- base <- own)."""
        root = str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, "root-image"))
        base = str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, "base-image"))
        own = str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, "image-" + service))
        export.add_image(root)
        export.add_image(base, origin=root)
        export.add_image(own, origin=base)
        u = export.add_instance(service, alias, files)
        vm_path = os.path.join(export.root, "vms", u + ".json")
        with open(vm_path) as f:
            vm = json.load(f)
        vm.update({"image_uuid": own, "zonepath": "/zones/" + u, "zoneid": 7, "zonedid": 7,
                   "pid": 4711, "zone_state": "running", "datasets": ["zones/%s/data" % u],
                   "create_timestamp": "2026-03-02T10:14:07.115Z",
                   "boot_timestamp": "2026-11-01T08:02:55.000Z",
                   "last_modified": "2026-11-01T08:02:58.000Z", "quota": 100})
        write(vm_path, json.dumps(vm, indent=2))
        _, svc, old_image = export.instances[u]
        export.instances[u] = (alias, svc, own)
        shutil.rmtree(os.path.join(export.root, "images", old_image), ignore_errors=True)
        return u, [root, base, own]

    def start_cluster(self):
        c = self.cluster()
        self.c = c
        B = c.exports["B"]
        self.b = {}
        u, self.chain_imgapi = self.add_chained_instance(B, "imgapi", "imgapi0", {
            "etc/config.json": '{"port": 8080}',
            "images/ab/file0": det_bytes("b-file0", 300_000),
            "empty": b"",
            "bin/run.sh": "#!/bin/sh\nexit 0\n",
        })
        os.chmod(B.dataset_path(u, "bin/run.sh"), 0o755)
        os.symlink("images/ab/file0", B.dataset_path(u, "latest"))
        # A hard link and files of other owners (as root) must come back as they were.
        os.link(B.dataset_path(u, "etc/config.json"), B.dataset_path(u, "etc/config.json.orig"))
        if os.geteuid() == 0:
            os.lchown(B.dataset_path(u, "images/ab/file0"), 907, 908)
            os.lchown(B.dataset_path(u, "latest"), 60001, 60001)
            os.lchown(B.dataset_path(u, "etc"), 0, 908)
        self.b["imgapi0"] = u
        u, _ = self.add_chained_instance(B, "sapi", "sapi0", {"sapi/db.json": '{"instances": []}'})
        self.b["sapi0"] = u
        u, _ = self.add_chained_instance(B, "vmapi", "vmapi0", {"db/vms": det_bytes("vms", 70_000)})
        self.b["vmapi0"] = u
        self.c_ufds = c.exports["C"].add_instance("ufds", "ufds0", {"ldap/data.mdb": "mdb"})
        c.start()
        A = c.agents["A"]
        rc, lines, err = A.sync_now()
        self.assertEqual(rc, 0, "sync-now failed: %s\n%s" % (lines, err))
        return c

    def run_command(self, command, agent, *args, env=None, timeout=300):
        """`lifeboat <command> <args> -c <agent's config>`, no terminal."""
        full_env = dict(os.environ)
        full_env.update(env or {})
        return subprocess.run([agent_test.LIFEBOAT, command, *args, "-c", agent.config],
                              capture_output=True, text=True, timeout=timeout, env=full_env,
                              stdin=subprocess.DEVNULL)

    def restore(self, agent, *args, env=None):
        return self.run_command("restore", agent, *args, env=env)

    def restore_json(self, agent, *args, env=None, rc=0):
        r = self.restore(agent, *args, "-j", env=env)
        self.assertEqual(r.returncode, rc, "restore %s: rc %d\nstdout: %s\nstderr: %s"
                         % (args, r.returncode, r.stdout, r.stderr))
        return json.loads(r.stdout)

    # ---- the tests --------------------------------------------------------------

    def test_restore_lost_peer_into_dir(self):
        c = self.start_cluster()
        A, B = c.agents["A"], c.exports["B"]
        c.agents["B"].stop()
        target = os.path.join(self.tmp, "restored")
        out = self.restore_json(A, "--peer", "B", "--backend", "dir", "--target", target)
        self.assertTrue(out["ok"])
        plan = out["plan"]
        self.assertEqual([i["old_alias"] for i in plan["instances"]], ["sapi0", "imgapi0", "vmapi0"])
        self.assertEqual([i["alias"] for i in plan["instances"]], ["sapi1", "imgapi1", "vmapi1"])
        images = [s["image_uuid"] for s in plan["steps"] if s["kind"] == "install_image"]
        root, base, own = self.chain_imgapi
        self.assertEqual(images[:2], [root, base], "images must install root first")
        self.assertEqual(len(images), len(set(images)), "an image installed twice")
        self.assertEqual(len(images), 2 + 3)
        self.assertEqual(out["steps_run"], len(plan["steps"]))
        # Points in time are ISO 8601 UTC, as in status -j: the run, the
        # journal, and per instance the restore point (when its copy was pulled).
        iso = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"
        for when in (out["started_at"], out["finished_at"], out["journal"]["started_at"],
                     out["journal"]["finished_at"]):
            self.assertRegex(when, iso)
        last_success = A.peer_status("B")["last_success"]
        for inst in plan["instances"]:
            self.assertRegex(inst["pulled_at"], iso)
            self.assertLessEqual(inst["pulled_at"], last_success)

        for inst in plan["instances"]:
            old, new = inst["old_uuid"], inst["new_uuid"]
            self.assertNotEqual(old, new)
            zone = os.path.join(target, "zones", new)
            with open(os.path.join(zone, "vm.json")) as f:
                vm = json.load(f)
            self.assertEqual(vm["uuid"], new)
            self.assertEqual(vm["alias"], inst["alias"])
            for field in READ_ONLY_FIELDS:
                self.assertNotIn(field, vm)
            with open(os.path.join(B.root, "vms", old + ".json")) as f:
                self.assertEqual(vm["nics"][0]["ip"], json.load(f)["nics"][0]["ip"])
            with open(os.path.join(zone, "sapi.json")) as f:
                self.assertEqual(json.load(f)["uuid"], new)
            self.assertEqual(tree(os.path.join(zone, "data")), tree(B.dataset_path(old)),
                             "data tree of " + inst["old_alias"])
        for image in images:
            for name in ("manifest.json", "file"):
                with open(os.path.join(target, "images", image, name), "rb") as f1, \
                        open(os.path.join(B.root, "images", image, name), "rb") as f2:
                    self.assertEqual(f1.read(), f2.read())
        # C's instance was not selected.
        self.assertEqual(len(os.listdir(os.path.join(target, "zones"))), 3)

        # A rerun finds the journal and does nothing.
        again = self.restore_json(A, "--peer", "B", "--backend", "dir", "--target", target)
        self.assertTrue(again["already_complete"])
        self.assertEqual(again["steps_run"], 0)

    def test_restore_refused_while_peer_answers(self):
        c = self.start_cluster()
        A = c.agents["A"]
        target = os.path.join(self.tmp, "restored")
        # A target the agent owns would be deleted by it later: refused first.
        for bad in (A.data_dir, os.path.join(A.data_dir, "restored"),
                    os.path.join(A.data_dir, "images", "x")):
            r = self.restore(A, "--peer", "B", "--backend", "dir", "--target", bad, "--force", "-y")
            self.assertEqual(r.returncode, 64, r.stderr)
            self.assertIn("is inside the catalog", r.stderr)
        self.assertFalse(os.path.exists(os.path.join(A.data_dir, "restored")))
        r = self.restore(A, "--peer", "B", "--backend", "dir", "--target", target)
        self.assertEqual(r.returncode, 75, r.stderr)
        self.assertIn("still answers", r.stderr)
        self.assertIn("--force", r.stderr)
        self.assertFalse(os.path.exists(target))
        # The dry run predicts it: same exit code and message, plan printed.
        dry = self.restore(A, "--peer", "B", "--backend", "dir", "--target", target, "--dry-run")
        self.assertEqual(dry.returncode, 75, dry.stderr)
        self.assertIn("still answers", dry.stderr)
        self.assertIn("install_image", dry.stdout)
        self.assertFalse(os.path.exists(target))
        out = self.restore_json(A, "--peer", "B", "--backend", "dir", "--target", target, "--force")
        self.assertEqual(len(out["plan"]["instances"]), 3)
        self.assertTrue(any("still answers" in w for w in out["warnings"]))

    def test_an_instance_is_not_restored_twice_by_overlapping_restores(self):
        c = self.start_cluster()
        A = c.agents["A"]
        c.agents["B"].stop()
        target = os.path.join(self.tmp, "restored")
        first = self.restore_json(A, "--service", "vmapi", "--backend", "dir", "--target", target)
        self.assertEqual([i["old_alias"] for i in first["plan"]["instances"]], ["vmapi0"])
        second = self.restore_json(A, "--peer", "B", "--backend", "dir", "--target", target)
        self.assertEqual(sorted(i["old_alias"] for i in second["plan"]["instances"]),
                         ["imgapi0", "sapi0"])
        skipped = {s["alias"]: s["reason"] for s in second["plan"]["skipped"]}
        self.assertIn("already restored as vmapi", skipped["vmapi0"])
        self.assertEqual(len(os.listdir(os.path.join(target, "zones"))), 3)
        text = self.restore(A, "--peer", "B", "--backend", "dir", "--target",
                            os.path.join(self.tmp, "elsewhere"), "--dry-run")
        self.assertEqual(text.returncode, 0, text.stderr)
        self.assertIn("already restored as", text.stdout)
        again = self.restore_json(A, "--service", "vmapi", "--backend", "dir", "--target",
                                  os.path.join(self.tmp, "elsewhere"), "--again")
        self.assertEqual(len(again["plan"]["instances"]), 1)

    def restore_on_tty(self, agent, answer, *args):
        return self.run_on_tty(agent, "restore", answer, *args)

    def run_on_tty(self, agent, command, answer, *args, env=None):
        """Runs `lifeboat command` on a pseudo-terminal, answering its
        question with `answer`; returns (exit code, everything it wrote)."""
        full_env = dict(os.environ)
        full_env.update(env or {})
        pid, fd = pty.fork()
        if pid == 0:
            os.execve(agent_test.LIFEBOAT,
                      [agent_test.LIFEBOAT, command, *args, "-c", agent.config], full_env)
        out, sent = b"", False
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.2)
            if not r:
                continue
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            out += data
            if not sent and b"[y/N]" in out:
                os.write(fd, answer.encode() + b"\n")
                sent = True
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        return os.waitstatus_to_exitcode(status), out.decode(errors="replace")

    def test_on_a_terminal_the_plan_is_shown_and_confirmed_first(self):
        c = self.start_cluster()
        A = c.agents["A"]
        c.agents["B"].stop()
        target = os.path.join(self.tmp, "restored")
        args = ("--peer", "B", "--backend", "dir", "--target", target)
        rc, out = self.restore_on_tty(A, "n", *args)
        self.assertEqual(rc, 75, out)
        self.assertIn("Restore plan", out)
        self.assertIn("Restore 3 instance(s) as planned above? [y/N]", out)
        self.assertIn("not confirmed", out)
        self.assertFalse(os.path.exists(target))
        rc, out = self.restore_on_tty(A, "y", *args)
        self.assertEqual(rc, 0, out)
        self.assertIn("Restored 3 instance(s)", out)
        self.assertEqual(len(os.listdir(os.path.join(target, "zones"))), 3)

    def test_dry_run_changes_nothing(self):
        c = self.start_cluster()
        A = c.agents["A"]
        c.agents["B"].stop()
        A.stop()  # nothing else may write into A's data_dir while we compare
        target = os.path.join(self.tmp, "restored")
        os.makedirs(os.path.join(target, "zones"))
        before = (whole_tree_bytes(target), whole_tree_bytes(A.data_dir))
        out = self.restore_json(A, "--peer", "B", "--backend", "dir", "--target", target, "--dry-run")
        self.assertTrue(out["dry_run"])
        self.assertEqual(len(out["plan"]["instances"]), 3)
        self.assertEqual(out["steps_run"], 0)
        self.assertEqual((whole_tree_bytes(target), whole_tree_bytes(A.data_dir)), before)
        text = self.restore(A, "--peer", "B", "--backend", "dir", "--target", target, "--dry-run")
        self.assertEqual(text.returncode, 0, text.stderr)
        self.assertIn("imgapi1", text.stdout)
        self.assertIn("install_image", text.stdout)
        self.assertEqual((whole_tree_bytes(target), whole_tree_bytes(A.data_dir)), before)

    def test_corrupted_catalog_file_stops_before_anything_is_written(self):
        c = self.start_cluster()
        A = c.agents["A"]
        c.agents["B"].stop()
        u = self.b["imgapi0"]
        victim = os.path.join(A.held_instance_dir(u), "datasets", u, "images/ab/file0")
        with open(victim, "rb") as f:
            data = bytearray(f.read())
        data[1000] ^= 0x01
        os.remove(victim)  # a new inode: older generations hard-link the old one
        write(victim, bytes(data), 0o644)
        target = os.path.join(self.tmp, "restored")
        r = self.restore(A, "--peer", "B", "--backend", "dir", "--target", target)
        self.assertEqual(r.returncode, 65, r.stderr)
        self.assertIn("images/ab/file0", r.stderr)
        self.assertIn("digest", r.stderr)
        self.assertFalse(os.path.exists(target))
        self.assertFalse(os.path.exists(os.path.join(A.data_dir, "restores")))

    def test_smartos_restore_resumes_after_a_failed_command(self):
        c = self.start_cluster()
        A = c.agents["A"]
        c.agents["B"].stop()
        state = os.path.join(self.tmp, "smartos")
        env = {"PATH": FAKES + ":" + os.environ["PATH"], "FAKE_SMARTOS_STATE": state,
               "FAKE_SMARTOS_FAIL_AT": "9"}
        r = self.restore(A, "--peer", "B", "--backend", "smartos", env=env)
        self.assertEqual(r.returncode, 74, r.stdout + r.stderr)
        self.assertIn("injected failure", r.stderr)
        self.assertIn("rerun the same command to resume", r.stderr)
        env.pop("FAKE_SMARTOS_FAIL_AT")
        out = self.restore_json(A, "--peer", "B", "--backend", "smartos", env=env)
        self.assertTrue(out["resumed"])
        self.assertEqual(out["steps_already_done"] + out["steps_run"], len(out["plan"]["steps"]))

        with open(os.path.join(state, "calls.log")) as f:
            calls = [l.rstrip("\n").split("\t") for l in f]
        changes = [" ".join(cmd) for cmd in calls
                   if cmd[1] in ("install", "create", "update", "start") or cmd[0] == "sdc-sapi"]
        # The 9th state-changing command failed; its step ran again from the
        # start: a failed `vmadm start` repeats the restore_data step's
        # `vmadm update <uuid> autoboot=true` before it.
        again = {changes[8]}
        if changes[8].startswith("vmadm start "):
            again.add(changes[7])
            self.assertTrue(changes[7].startswith("vmadm update "), changes[7])
        counts = {}
        for cmd in changes:
            counts[cmd] = counts.get(cmd, 0) + 1
        for cmd, n in counts.items():
            self.assertEqual(n, 2 if cmd in again else 1, "ran %d times: %s" % (n, cmd))
        # 5 images; per instance create (stopped), update autoboot, start,
        # update do_not_inventory (once NAPI owns its NICs), SAPI; then per
        # instance the retirement's SAPI DELETE of the old instance (last).
        self.assertEqual(len(changes), 5 + 3 * 6 + len(again))
        self.assertTrue(all(c.endswith(" -X DELETE") for c in changes[-3:]), changes[-3:])
        # net-agent never saw a NIC NAPI gave to another VM (the fake vmadm
        # logs when it would strip one).
        self.assertFalse(os.path.exists(os.path.join(state, "net-agent.log")))
        for inst in out["plan"]["instances"]:
            # vmadm get's `datasets` became create's delegate_dataset (the
            # fake vmadm makes zones/<uuid>/data only for that, as VM.js).
            with open(os.path.join(state, "vms", inst["new_uuid"] + ".json")) as f:
                created = json.load(f)
            self.assertIs(created.get("delegate_dataset"), True)
        # vmadm drops (with a warning) what create does not accept; the
        # planner must have sent nothing it would drop.
        warnings = os.path.join(state, "vmadm-warnings.log")
        if os.path.exists(warnings):
            with open(warnings) as f:
                self.fail("vmadm dropped properties:\n" + f.read())
        for inst in out["plan"]["instances"]:
            self.assertEqual(tree(os.path.join(state, "zones", inst["new_uuid"], "data")),
                             tree(c.exports["B"].dataset_path(inst["old_uuid"])))

    def test_smartos_refuses_new_ips(self):
        c = self.start_cluster()
        A = c.agents["A"]
        c.agents["B"].stop()
        state = os.path.join(self.tmp, "smartos")
        env = {"PATH": FAKES + ":" + os.environ["PATH"], "FAKE_SMARTOS_STATE": state}
        r = self.restore(A, "--peer", "B", "--backend", "smartos", "--new-ips", env=env)
        self.assertEqual(r.returncode, 64, r.stdout + r.stderr)  # EX_USAGE
        self.assertIn("--new-ips is not supported by the smartos backend", r.stderr)
        self.assertFalse(os.path.exists(os.path.join(state, "calls.log")))

    def test_returning_peer_is_flagged_deposed_and_restored_instances_untouched(self):
        c = self.start_cluster()
        A = c.agents["A"]
        c.agents["B"].stop()
        target = os.path.join(self.tmp, "restored")
        out = self.restore_json(A, "--peer", "B", "--backend", "dir", "--target", target)
        restored = {i["old_uuid"]: i for i in out["plan"]["instances"]}
        st = A.status()
        self.assertEqual({r["old_uuid"] for r in st["restored"]}, set(restored))
        self.assertEqual(st["deposed"], [])
        before = whole_tree_bytes(target)

        c.agents["B"].start()  # B comes back with its old instances
        rc, lines, err = A.sync_now("B")
        self.assertEqual(rc, 0, "sync-now failed: %s\n%s" % (lines, err))
        st = A.status()
        deposed = {d["old_uuid"]: d for d in st["deposed"]}
        self.assertEqual(set(deposed), set(restored))
        for old, d in deposed.items():
            self.assertEqual(d["peer"], "B")
            self.assertEqual(d["new_uuid"], restored[old]["new_uuid"])
            self.assertEqual(d["alias"], restored[old]["alias"])
        text = A.cli("status", timeout=30)
        self.assertEqual(text.returncode, 0, text.stderr)
        self.assertIn("DEPOSED", text.stdout)
        self.assertIn(restored[self.b["imgapi0"]]["new_uuid"], text.stdout)
        # Monitoring sees it: status --check and readiness --check fail,
        # naming the peer and the kind.
        check = A.cli("status", "--check", timeout=30)
        self.assertEqual(check.returncode, 1, check.stdout + check.stderr)
        self.assertIn("lifeboat status: B: deposed: 3 instances of B were restored elsewhere",
                      check.stderr)
        ready = A.cli("readiness", "--check", "--local", timeout=30)
        self.assertEqual(ready.returncode, 1, ready.stdout + ready.stderr)
        self.assertIn("B: deposed:", ready.stderr)
        self.assertEqual(whole_tree_bytes(target), before, "a pull touched the restored instances")

    def test_a_deposed_instance_fails_the_checks_of_every_node(self):
        """B's instances are restored on A; B comes back: C, which restored
        nothing, learns it from A's GET /restores and fails its checks."""
        c = self.start_cluster()
        A, C = c.agents["A"], c.agents["C"]
        rc, lines, err = C.sync_now("B")
        self.assertEqual(rc, 0, "sync-now failed: %s\n%s" % (lines, err))
        c.agents["B"].stop()
        target = os.path.join(self.tmp, "restored")
        out = self.restore_json(A, "--peer", "B", "--backend", "dir", "--target", target)
        restored = {i["old_uuid"]: i for i in out["plan"]["instances"]}
        status, _, body = A.http("GET", "/restores")
        self.assertEqual(status, 200, body)
        served = json.loads(body)
        self.assertEqual(served["node"], "A")
        self.assertEqual({r["old_uuid"] for r in served["restored"]}, set(restored))
        self.assertEqual(C.status()["deposed"], [], "B is not back yet")

        c.agents["B"].start()  # B comes back with its old instances
        rc, lines, err = C.sync_now("B")
        self.assertEqual(rc, 0, "sync-now failed: %s\n%s" % (lines, err))
        st = C.status()
        self.assertEqual({d["old_uuid"] for d in st["deposed"]}, set(restored))
        self.assertEqual({d["node"] for d in st["deposed"]}, {"A"})
        self.assertEqual({r["node"] for r in st["restored"]}, {"A"})
        old = self.b["imgapi0"]
        check = C.cli("status", "--check", timeout=30)
        self.assertEqual(check.returncode, 1, check.stdout + check.stderr)
        self.assertIn("lifeboat status: B: deposed: 3 instances of B were restored elsewhere",
                      check.stderr)
        self.assertIn("imgapi0 (%s) on A as %s" % (old, restored[old]["alias"]), check.stderr)
        ready = C.cli("readiness", "--check", timeout=30)
        self.assertEqual(ready.returncode, 1, ready.stdout + ready.stderr)
        self.assertIn("B: deposed:", ready.stderr)
        self.assertIn("imgapi0 (%s)" % old, ready.stderr)
        # --local asks nobody: C's own journals know of no restore.
        local = C.cli("readiness", "--check", "--local", timeout=30)
        self.assertNotIn("deposed", local.stderr)
        # C's agent knows too (its readiness hook asks the other nodes):
        # GET /readiness and the metric count A's restores.
        status, _, body = C.http("GET", "/readiness")
        self.assertEqual(status, 200, body)
        peer_b = [p for p in json.loads(body)["peers"] if p["peer"] == "B"][0]
        self.assertIn("deposed", [b["kind"] for b in peer_b["blockers"]])
        status, _, metrics = C.http("GET", "/metrics")
        self.assertEqual(status, 200, metrics)
        self.assertRegex(metrics, r'lifeboat_readiness_blockers\{peer="B",kind="deposed"\} [1-9]')
        # ... and its log warns after the pull (the check runs on a worker
        # thread after the pull's result: wait for the line, bounded).
        want = "%s) restored on A as %s" % (old, restored[old]["alias"])
        deadline = time.monotonic() + 20
        while want not in read_text(C.log_path) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertIn(want, read_text(C.log_path))
        self.assertIn("run `lifeboat retire` there", read_text(C.log_path))

    def retire(self, agent, *args, env=None):
        return self.run_command("retire", agent, *args, env=env, timeout=120)

    def test_retire_on_the_returning_node_stops_its_deposed_zones(self):
        """B's instances are restored on A; B comes back with them running
        (fake vmadm). `lifeboat retire` on B stops them and turns autoboot
        off, once; B stops exporting them, so A and C stop flagging them."""
        c = self.start_cluster()
        A, B, C = c.agents["A"], c.agents["B"], c.agents["C"]
        rc, lines, err = C.sync_now("B")
        self.assertEqual(rc, 0, "sync-now failed: %s\n%s" % (lines, err))
        B.stop()
        target = os.path.join(self.tmp, "restored")
        out = self.restore_json(A, "--peer", "B", "--backend", "dir", "--target", target)
        restored = {i["old_uuid"]: i for i in out["plan"]["instances"]}
        B.start()  # B comes back with its old instances, running
        state = os.path.join(self.tmp, "smartos-B")
        os.makedirs(os.path.join(state, "vms"))
        for u in self.b.values():
            write(os.path.join(state, "vms", u + ".json"), json.dumps({"uuid": u}, indent=2))
            write(os.path.join(state, "vms", u + ".state"), "running\n")
        env = {"PATH": FAKES + ":" + os.environ["PATH"], "FAKE_SMARTOS_STATE": state}
        for node in (A, C):
            rc, lines, err = node.sync_now("B")
            self.assertEqual(rc, 0, "sync-now failed: %s\n%s" % (lines, err))
            self.assertEqual({d["old_uuid"] for d in node.status()["deposed"]}, set(restored))

        dry = self.retire(B, "--backend", "smartos", "--dry-run", "-j", env=env)
        self.assertEqual(dry.returncode, 0, dry.stdout + dry.stderr)
        listed = json.loads(dry.stdout)
        self.assertEqual({r["old_uuid"] for r in listed["to_retire"]}, set(restored))
        self.assertEqual({r["node"] for r in listed["to_retire"]}, {"A"})
        self.assertEqual(listed["retired"], [])
        self.assertFalse(os.path.exists(os.path.join(state, "calls.log")), "a dry run ran vmadm")
        # The dir backend has no zones to stop: it says so and changes nothing.
        refused = self.retire(B, "--backend", "dir", "-y")
        self.assertEqual(refused.returncode, 78, refused.stdout + refused.stderr)
        self.assertIn("the dir backend cannot stop zones", refused.stderr)
        self.assertIn("--record-only", refused.stderr)

        text = self.retire(B, "--backend", "smartos", "--dry-run", env=env)
        self.assertEqual(text.returncode, 0, text.stdout + text.stderr)
        self.assertIn("Restored elsewhere (deposed here):", text.stdout)
        old = self.b["imgapi0"]
        self.assertIn("imgapi0 (%s): restored on A as %s (%s)"
                      % (old, restored[old]["alias"], restored[old]["new_uuid"]), text.stdout)
        # On a terminal it asks first; "n" changes nothing.
        rc, said = self.run_on_tty(B, "retire", "n", "--backend", "smartos", env=env)
        self.assertEqual(rc, 75, said)
        self.assertIn("Stop these 3 instance(s) here and keep them from booting? [y/N]", said)
        self.assertIn("not confirmed", said)
        self.assertFalse(os.path.exists(os.path.join(state, "calls.log")), "vmadm ran unconfirmed")

        done = self.retire(B, "--backend", "smartos", "-y", "-j", env=env)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        report = json.loads(done.stdout)
        self.assertTrue(report["ok"])
        self.assertEqual({r["old_uuid"] for r in report["retired"]}, set(restored))
        for u in self.b.values():
            with open(os.path.join(state, "vms", u + ".state")) as f:
                self.assertEqual(f.read(), "stopped\n")
            with open(os.path.join(state, "vms", u + ".autoboot")) as f:
                self.assertEqual(f.read(), "false\n")
        calls_before = read_text(os.path.join(state, "calls.log"))
        again = self.retire(B, "--backend", "smartos", "-y", "-j", env=env)
        self.assertEqual(again.returncode, 0, again.stdout + again.stderr)
        rerun = json.loads(again.stdout)
        self.assertEqual(rerun["to_retire"], [])
        self.assertEqual({r["old_uuid"] for r in rerun["already_retired"]}, set(restored))
        self.assertEqual(read_text(os.path.join(state, "calls.log")), calls_before,
                         "a rerun ran vmadm again")

        # B no longer exports them: after a pull, no node flags them.
        for node in (A, C):
            rc, lines, err = node.sync_now("B")
            self.assertEqual(rc, 0, "sync-now failed: %s\n%s" % (lines, err))
            self.assertEqual(node.status()["deposed"], [])
            check = node.cli("status", "--check", timeout=30)
            self.assertNotIn("deposed", check.stderr)
        self.assertEqual(A.status()["deposed"], [])
        self.assertTrue(all(r["node"] == "A" for r in C.status()["restored"]))

    def test_a_reinstalled_peer_keeps_its_old_instances_restorable_past_the_grace(self):
        """B is reinstalled (empty data_dir, a new instance, the old ones
        gone): A keeps B's old instances past removed_grace, status names
        them, and `restore --peer B` restores them."""
        c = self.cluster(names=("A", "B"), A={"removed_grace": "1s"})
        B = c.exports["B"]
        old = {B.add_instance("imgapi", "imgapi0", {"f": "old imgapi"}),
               B.add_instance("sapi", "sapi0", {"f": "old sapi"})}
        c.start()
        A = c.agents["A"]
        rc, lines, err = A.sync_now("B")
        self.assertEqual(rc, 0, "sync-now failed: %s\n%s" % (lines, err))
        c.agents["B"].stop()
        for u in old:
            B.remove_instance(u)
        new = B.add_instance("imgapi", "imgapi0", {"f": "fresh install"})
        shutil.rmtree(c.agents["B"].data_dir)  # reinstalled: its export starts over
        c.agents["B"].start()
        for _ in range(4):  # past the grace and kRemovedPullsBeforeDrop pulls
            rc, lines, err = A.sync_now("B")
            self.assertEqual(rc, 0, "sync-now failed: %s\n%s" % (lines, err))
            time.sleep(0.5)  # let the (real-time) 1 s grace pass, as agent_test does
        cat = {i["uuid"]: i for i in A.catalog()["instances"]}
        for u in old:
            self.assertIn(u, cat, "an instance of a peer that went back was dropped")
            self.assertTrue(cat[u]["removed"])
        self.assertIn(new, cat)
        st = A.status()
        self.assertEqual([w["peer"] for w in st["went_back"]], ["B"])
        self.assertEqual({r["uuid"] for r in st["went_back"][0]["removed_kept"]}, old)
        self.assertFalse(st["went_back"][0]["released"])
        text = A.cli("status", timeout=30)
        self.assertIn("WENT BACK: B went backwards", text.stdout)
        # restore --peer B offers the old copies too (B answers: --force).
        target = os.path.join(self.tmp, "restored")
        out = self.restore_json(A, "--peer", "B", "--force", "--dry-run", "--backend", "dir",
                                "--target", target, "-y")
        planned = {i["old_uuid"] for i in out["plan"]["instances"]}
        self.assertEqual(planned, old | {new})
        self.assertTrue(any("went backwards" in w for w in out.get("warnings", [])), out)

    def test_retire_record_only_for_zones_stopped_by_hand(self):
        """The dir backend stops nothing: --record-only records B's deposed
        instances as retired (a rerun is a no-op) and B stops exporting them."""
        c = self.start_cluster()
        A, B = c.agents["A"], c.agents["B"]
        B.stop()
        out = self.restore_json(A, "--peer", "B", "--backend", "dir", "--target",
                                os.path.join(self.tmp, "restored"))
        restored = {i["old_uuid"] for i in out["plan"]["instances"]}
        B.start()
        rc, lines, err = A.sync_now("B")
        self.assertEqual(rc, 0, "sync-now failed: %s\n%s" % (lines, err))
        self.assertEqual({d["old_uuid"] for d in A.status()["deposed"]}, restored)
        done = self.retire(B, "--record-only", "-y", "-j")
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        report = json.loads(done.stdout)
        self.assertEqual({r["old_uuid"] for r in report["retired"]}, restored)
        self.assertTrue(all(r["how"].startswith("recorded only") for r in report["retired"]))
        with open(os.path.join(B.data_dir, "retired.json")) as f:
            self.assertEqual({r["uuid"] for r in json.load(f)["retired"]}, restored)
        again = self.retire(B, "--record-only", "-y", "-j")
        self.assertEqual(json.loads(again.stdout)["retired"], [])
        rc, lines, err = A.sync_now("B")
        self.assertEqual(rc, 0, "sync-now failed: %s\n%s" % (lines, err))
        self.assertEqual(A.status()["deposed"], [])
        check = A.cli("status", "--check", timeout=30)
        self.assertNotIn("deposed", check.stderr)

    def test_an_instance_restored_on_another_node_is_not_restored_twice(self):
        """B's instances are restored on A; a restore of B on C skips each
        of them, saying where it went, unless --again."""
        c = self.start_cluster()
        A, C = c.agents["A"], c.agents["C"]
        rc, lines, err = C.sync_now("B")
        self.assertEqual(rc, 0, "sync-now failed: %s\n%s" % (lines, err))
        c.agents["B"].stop()
        out = self.restore_json(A, "--peer", "B", "--backend", "dir",
                                "--target", os.path.join(self.tmp, "on-a"))
        restored = {i["old_uuid"]: i for i in out["plan"]["instances"]}
        self.assertEqual(len(restored), 3)
        target_c = os.path.join(self.tmp, "on-c")
        again = self.restore_json(C, "--peer", "B", "--backend", "dir", "--target", target_c)
        self.assertEqual(again["plan"]["instances"], [], "C restored what A had restored")
        skipped = {s["uuid"]: s["reason"] for s in again["plan"]["skipped"]}
        self.assertEqual(set(skipped), set(restored))
        for old, reason in skipped.items():
            self.assertIn("already restored as %s" % restored[old]["alias"], reason)
            self.assertIn("by A", reason)
        self.assertEqual([w for w in again["warnings"] if "could not ask node" in w], [],
                         "the lost peer B not answering is expected; A answered")
        forced = self.restore_json(C, "--peer", "B", "--backend", "dir", "--target", target_c,
                                   "--again", "--dry-run")
        self.assertEqual({i["old_uuid"] for i in forced["plan"]["instances"]}, set(restored))

    def freshest_setup(self):
        """A holds B at generation g1; then B changes and C pulls it (g2 > g1); B stops."""
        c = self.start_cluster()
        A, C, B = c.agents["A"], c.agents["C"], c.exports["B"]
        g1 = A.peer_status("B")["generation"]
        u = self.b["imgapi0"]
        self.changed = B.dataset_path(u, "etc/config.json")
        write(self.changed, '{"port": 9090, "changed": "after A pulled"}')
        rc, lines, err = C.sync_now("B")
        self.assertEqual(rc, 0, "sync-now failed: %s\n%s" % (lines, err))
        g2 = C.peer_status("B")["generation"]
        self.assertGreater(g2, g1)
        self.assertEqual(A.peer_status("B")["generation"], g1)
        c.agents["B"].stop()
        return A, g1, g2

    def test_an_older_copy_from_another_node_never_replaces_a_newer_one(self):
        A, g1, g2 = self.freshest_setup()
        C = self.c.agents["C"]

        def sync_from(agent, query):
            status, _, body = agent.http("POST", "/sync?" + query, timeout=60)
            self.assertEqual(status, 200, body)
            return [json.loads(l) for l in body.splitlines() if l.strip()]

        # C holds g2; A's copy (g1) is older: refused, C keeps g2, nothing orphaned.
        lines = sync_from(C, "peer=B&from=A")
        result = next(l for l in lines if l["type"] == "result")
        self.assertFalse(result["ok"])
        self.assertIn("not newer than the generation %d" % g2, result["error"]["message"])
        self.assertEqual(C.peer_status("B")["generation"], g2)
        self.assertFalse(os.path.exists(os.path.join(C.data_dir, "orphans")) and
                         os.listdir(os.path.join(C.data_dir, "orphans")))
        # Asked explicitly: taken, and what C held is kept under orphans/.
        lines = sync_from(C, "peer=B&from=A&older=1")
        result = next(l for l in lines if l["type"] == "result")
        self.assertTrue(result["ok"], result)
        self.assertEqual(C.peer_status("B")["generation"], g1)
        self.assertTrue(os.listdir(os.path.join(C.data_dir, "orphans")))
        # The newer copy the other way is taken as before.
        lines = sync_from(A, "peer=B&from=C")
        self.assertTrue(next(l for l in lines if l["type"] == "result")["ok"])

    def test_freshest_copy_is_named_by_dry_run(self):
        A, g1, g2 = self.freshest_setup()
        target = os.path.join(self.tmp, "restored")
        out = self.restore_json(A, "--peer", "B", "--backend", "dir", "--target", target,
                                "--dry-run")
        self.assertEqual(out["fresher_node"], "C")
        self.assertEqual(out["fresher_generation"], g2)
        self.assertEqual(out["local_generation"], g1)
        copies = {c["node"]: c for c in out["copies"]}
        self.assertEqual(set(copies), {"C"})
        self.assertTrue(copies["C"]["reachable"], copies["C"])
        self.assertEqual(copies["C"]["generation"], g2)
        self.assertTrue(any("node C holds generation %d of B" % g2 in w for w in out["warnings"]),
                        out["warnings"])
        self.assertFalse(os.path.exists(target))
        text = self.restore(A, "--peer", "B", "--backend", "dir", "--target", target, "--dry-run")
        self.assertEqual(text.returncode, 0, text.stderr)
        self.assertIn("node C holds generation %d of B" % g2, text.stdout + text.stderr)

        r = A.cli("status", "--cluster", "-j", timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        peers = {p["name"]: p for p in json.loads(r.stdout)["peers"]}
        self.assertEqual(peers["B"]["freshest"], {"node": "C", "generation": g2})
        copies = {c["node"]: c for c in peers["B"]["cluster_copies"]}
        self.assertEqual(copies["A"]["generation"], g1)
        self.assertEqual(copies["C"]["generation"], g2)
        self.assertNotIn("B", copies)  # B is not asked about itself
        self.assertEqual(peers["C"]["freshest"]["node"], "A")  # B is down: only A holds C
        text = A.cli("status", "--cluster", timeout=60)
        self.assertEqual(text.returncode, 0, text.stderr)
        self.assertIn("FRESHEST", text.stdout)
        self.assertIn("C@%d" % g2, text.stdout)

    def test_from_freshest_restores_the_newer_copy(self):
        A, g1, g2 = self.freshest_setup()
        target = os.path.join(self.tmp, "restored")
        out = self.restore_json(A, "--peer", "B", "--backend", "dir", "--target", target,
                                "--from-freshest")
        self.assertTrue(out["ok"])
        self.assertEqual(out["fresher_node"], "C")
        self.assertEqual(out["local_generation"], g2)
        self.assertTrue(any("pulled it here first" in w for w in out["warnings"]), out["warnings"])
        # A now holds B's generation g2, committed as B's data.
        self.assertEqual(A.peer_status("B")["generation"], g2)
        imgapi = next(i for i in out["plan"]["instances"] if i["old_alias"] == "imgapi0")
        self.assertEqual(imgapi["generation"], g2)
        data = os.path.join(target, "zones", imgapi["new_uuid"], "data")
        with open(os.path.join(data, "etc/config.json")) as f:
            self.assertEqual(f.read(), '{"port": 9090, "changed": "after A pulled"}')
        for inst in out["plan"]["instances"]:
            self.assertEqual(tree(os.path.join(target, "zones", inst["new_uuid"], "data")),
                             tree(self.c.exports["B"].dataset_path(inst["old_uuid"])),
                             "data tree of " + inst["old_alias"])


if __name__ == "__main__":
    agent_test.run_tests()
