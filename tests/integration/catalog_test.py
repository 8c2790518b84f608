#!/usr/bin/env python3
"""The catalog's format 2 (issue 13) with real agents: content stored once
whatever holds it, pulls that never transfer content the catalog holds, and a
damaged catalog that never blocks a peer's pulls.

  catalog_test.py --lifeboat build/lifeboat [unittest args]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import agent_test  # noqa: E402
from agent_test import det_bytes, write  # noqa: E402


def objects_of(agent):
    """{sha256 hex: size} of every object in the agent's catalog."""
    out = {}
    root = os.path.join(agent.data_dir, "objects")
    for fan in sorted(os.listdir(root)):
        for name in os.listdir(os.path.join(root, fan)):
            out[fan + name] = os.path.getsize(os.path.join(root, fan, name))
    return out


class CatalogTest(agent_test.ClusterTestCase):
    def sync_ok(self, agent, peer=None):
        rc, lines, err = agent.sync_now(peer)
        self.assertEqual(rc, 0, "%s\n%s\n%s" % (lines, err, agent.log()))
        return agent_test.results_by_peer(lines)

    def test_content_is_stored_once_and_never_transferred_twice(self):
        c = self.cluster(names=("A", "B", "C"))
        big = det_bytes("shared", 1 << 20)
        B, C = c.exports["B"], c.exports["C"]
        b1 = B.add_instance("imgapi", "imgapi0", {"data/big.bin": big, "own": "b1"})
        B.add_instance("sapi", "sapi0", {"copy/big.bin": big, "own": "b2"})
        C.add_instance("ufds", "ufds0", {"ldap/big.bin": big, "own": "c1"})
        c.start()
        A = c.agents["A"]
        first = self.sync_ok(A, "B")["B"]
        # Two instances of B hold the same 1 MiB: one object, sent once.
        self.assertLess(first["file_bytes"], (1 << 20) + (256 << 10), first)
        sizes = objects_of(A)
        self.assertEqual(sum(1 for s in sizes.values() if s == 1 << 20), 1, sizes)
        # Another peer with the same content: nothing of it crosses the wire.
        from_c = self.sync_ok(A, "C")["C"]
        self.assertLess(from_c["wire_bytes"], 64 << 10, from_c)
        # A rename moves no content either.
        os.rename(B.dataset_path(b1, "data/big.bin"), B.dataset_path(b1, "data/moved.bin"))
        renamed = self.sync_ok(A, "B")["B"]
        self.assertLess(renamed["wire_bytes"], 64 << 10, renamed)
        with open(os.path.join(A.held_instance_dir(b1), "datasets", b1, "data", "moved.bin"), "rb") as f:
            self.assertEqual(f.read(), big)
        self.assertFalse(os.path.exists(
            os.path.join(A.held_instance_dir(b1), "datasets", b1, "data", "big.bin")))
        r = A.cli("catalog", "verify")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_a_damaged_held_copy_never_blocks_a_pull(self):
        c = self.cluster(names=("A", "B"))
        B = c.exports["B"]
        size = 4 << 20
        u = B.add_instance("imgapi", "imgapi0", {"big.bin": det_bytes("big", size),
                                                  "keep.txt": "unchanged"})
        c.start()
        A = c.agents["A"]
        self.sync_ok(A)
        held = os.path.join(A.held_instance_dir(u), "datasets", u)
        # Damage the held big.bin (the view's file is the object), then the
        # peer edits it: the delta is computed against the bytes the puller
        # has, so the damaged range travels as literal data and the result
        # is the peer's file.
        with open(os.path.join(held, "big.bin"), "r+b") as f:
            f.seek(size // 3)
            f.write(b"\0" * 65536)
        with open(B.dataset_path(u, "big.bin"), "r+b") as f:
            f.seek(size // 2)
            f.write(det_bytes("edit", 4096))
        res = self.sync_ok(A)["B"]
        self.assertGreater(res["wire_bytes"], 65536, res)  # the damaged range was sent again
        with open(os.path.join(held, "big.bin"), "rb") as f, open(B.dataset_path(u, "big.bin"), "rb") as g:
            self.assertEqual(f.read(), g.read())
        # An object that is gone: pulls go on; verify names it.
        os.remove(os.path.join(held, "keep.txt"))
        objects = objects_of(A)
        import hashlib
        gone = hashlib.sha256(b"unchanged").hexdigest()
        os.remove(os.path.join(A.data_dir, "objects", gone[:2], gone[2:]))
        write(B.dataset_path(u, "new.txt"), "after the damage")
        self.sync_ok(A)
        self.assertTrue(os.path.exists(os.path.join(held, "new.txt")))
        r = A.cli("catalog", "verify")
        self.assertEqual(r.returncode, 65, r.stdout + r.stderr)
        self.assertIn(gone[2:], r.stdout + r.stderr)
        self.assertIn(gone, objects)

    def test_catalog_repair_fetches_damaged_objects_again(self):
        """An object damaged on disk: `catalog repair` finds it (through the
        agent's POST /repair while it runs, in place when it does not), the
        peer's content comes back, and `catalog verify` is ok again."""
        import hashlib
        import json
        import time
        c = self.cluster(names=("A", "B"))
        B = c.exports["B"]
        u = B.add_instance("imgapi", "imgapi0", {"etc/config.json": '{"port": 8080}',
                                                  "data/blob": det_bytes("blob", 300000)})
        c.start()
        A = c.agents["A"]
        self.sync_ok(A)
        blob = hashlib.sha256(det_bytes("blob", 300000)).hexdigest()
        path = os.path.join(A.data_dir, "objects", blob[:2], blob[2:])
        with open(path, "r+b") as f:  # in place: the view's link sees it too
            f.seek(1000)
            f.write(b"damage")
        r = A.cli("catalog", "repair", "-j")
        self.assertEqual(r.returncode, 65, r.stdout + r.stderr)  # damage found
        out = json.loads(r.stdout)
        self.assertEqual(out["by"], "agent")
        self.assertEqual(out["objects_removed"], 1, out)
        self.assertEqual(out["damaged_instances"], [u])
        self.assertEqual(out["peers_to_pull"], ["B"])
        self.assertEqual([p["path"] for p in out["problems"]], [path])
        # The agent pulls B at once: the object comes back with B's bytes.
        deadline = time.monotonic() + 60
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.1)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), det_bytes("blob", 300000))
        r = A.cli("catalog", "verify")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        st = A.status()
        self.assertEqual(st["last_scrub"]["problems"], 1, st["last_scrub"])
        self.assertTrue(st["last_scrub"]["repair"])

        # Without an agent the command scrubs in place; the next pull of
        # the restarted agent fetches what it removed.
        A.stop()
        with open(path, "r+b") as f:
            f.write(b"again")
        r = A.cli("catalog", "repair")
        self.assertEqual(r.returncode, 65, r.stdout + r.stderr)
        self.assertIn("scrubbed by this command", r.stdout)
        self.assertIn("at the agent's next pull", r.stdout)
        self.assertFalse(os.path.exists(path))
        A.start()
        self.sync_ok(A)
        r = A.cli("catalog", "repair")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("ok (scrubbed by agent)", r.stdout)
        r = A.cli("status")
        self.assertIn("0 problems, 0 repaired", r.stdout)
        self.assertIn("last scrub: ", r.stdout)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), det_bytes("blob", 300000))


    def test_verify_lists_unnamed_files_and_repair_deletes_the_objects(self):
        """Files under objects/ that no generation names (a commit that
        failed after adopting its objects, or a hand-made file) are listed
        by `catalog verify` beside a running agent, without failing it; the
        agent's repair deletes the objects among them, not other files."""
        import hashlib
        import json
        c = self.cluster(names=("A", "B"))
        B = c.exports["B"]
        B.add_instance("imgapi", "imgapi0", {"etc/config.json": '{"port": 8080}'})
        c.start()
        A = c.agents["A"]
        self.sync_ok(A)
        orphan_id = hashlib.sha256(b"left by a failed commit").hexdigest()
        orphan = os.path.join(A.data_dir, "objects", orphan_id[:2], orphan_id[2:])
        stray = os.path.join(A.data_dir, "objects", "notes.txt")
        write(orphan, "left by a failed commit")
        write(stray, "hand-made")
        r = A.cli("catalog", "verify", "-j")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        out = json.loads(r.stdout)
        self.assertTrue(out["unnamed_checked"], out)
        self.assertEqual(sorted(u["path"] for u in out["unnamed"]), sorted([orphan, stray]))
        self.assertEqual(out["unnamed_bytes"], len("left by a failed commit") + len("hand-made"))
        r = A.cli("catalog", "verify")
        self.assertIn("UNNAMED " + stray + ": not an object", r.stdout)
        self.assertIn("2 unnamed files under objects/", r.stdout)
        r = A.cli("catalog", "repair", "-j")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual(out["by"], "agent")
        self.assertEqual(out["unnamed_removed"], 1, out)
        self.assertFalse(os.path.exists(orphan))
        self.assertTrue(os.path.exists(stray))
        r = A.cli("catalog", "verify", "-j")
        self.assertEqual([u["path"] for u in json.loads(r.stdout)["unnamed"]], [stray])


if __name__ == "__main__":
    agent_test.run_tests()
