#!/usr/bin/env python3
"""Tests for scripts/gen-fixture and scripts/mutate-fixture (run by ctest).

They drive the real scripts as subprocesses in a temp dir and check what a
user of the fixtures relies on: reproducibility, the export layout, the
consistency of a --dc datacenter, and that a mutation changes what it says.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SCRIPTS = os.path.join(REPO, "scripts")
sys.path.insert(0, os.path.join(SCRIPTS, "lib"))

import fixture_gen  # noqa: E402
import treedigest  # noqa: E402

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def run(*argv):
    p = subprocess.run([sys.executable] + list(argv), capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise AssertionError("%s failed (%d): %s" % (argv, p.returncode, p.stderr))
    return json.loads(p.stdout)


def gen(root, *extra):
    return run(os.path.join(SCRIPTS, "gen-fixture"), "--root", root, *extra)


def mutate(root, *extra):
    return run(os.path.join(SCRIPTS, "mutate-fixture"), "--root", root, *extra)


def load(path):
    with open(path) as f:
        return json.load(f)


def leaves(desc):
    """Only files and symlinks (directory mtimes follow from their entries)."""
    return {p: v for p, v in desc.items() if v[0] != "d"}


class Tmp(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="lifeboat-fixture-test-")
        self.tmp = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()


class Reproducible(Tmp):
    def test_same_seed_gives_byte_identical_tree(self):
        a, b, c = (os.path.join(self.tmp, x) for x in "abc")
        gen(a, "--seed", "7", "--size", "small")
        gen(b, "--seed", "7", "--size", "small")
        gen(c, "--seed", "8", "--size", "small")
        da, db = treedigest.describe(a), treedigest.describe(b)
        self.assertEqual(da, db)
        self.assertGreater(len(da), 100)
        self.assertNotEqual(treedigest.tree_hash(da), treedigest.tree_hash(treedigest.describe(c)))

    def test_refuses_non_empty_root(self):
        root = os.path.join(self.tmp, "r")
        os.makedirs(root)
        open(os.path.join(root, "x"), "w").close()
        p = subprocess.run([sys.executable, os.path.join(SCRIPTS, "gen-fixture"), "--root", root],
                           capture_output=True, text=True)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("not empty", p.stderr)
        self.assertEqual(os.listdir(root), ["x"])


def check_node(tc, root):
    """Asserts the dir-provider layout of one node export; returns its VMs."""
    vms = {}
    app = load(os.path.join(root, "sapi", "application.json"))
    for name in os.listdir(os.path.join(root, "vms")):
        vm = load(os.path.join(root, "vms", name))
        tc.assertEqual(name, vm["uuid"] + ".json")
        tc.assertIn(vm["tags"]["smartdc_role"], fixture_gen.SERVICES)
        tc.assertEqual(vm["tags"]["smartdc_type"], "core")
        for key in ("alias", "brand", "image_uuid", "server_uuid", "zonepath", "state", "nics",
                    "customer_metadata", "datasets", "quota", "max_physical_memory"):
            tc.assertIn(key, vm)
        # The real `vmadm get` shape: `datasets`, never `delegate_dataset` (VM.js).
        tc.assertNotIn("delegate_dataset", vm)
        tc.assertEqual(vm["datasets"], ["zones/%s/data" % vm["uuid"]])
        tc.assertTrue(os.path.isdir(os.path.join(root, "datasets", vm["uuid"])))
        sapi = load(os.path.join(root, "sapi", vm["uuid"] + ".json"))
        svc = load(os.path.join(root, "sapi", "services", vm["tags"]["smartdc_role"] + ".json"))
        tc.assertEqual(sapi["service_uuid"], svc["uuid"])
        tc.assertEqual(svc["application_uuid"], app["uuid"])
        # Real SAPI records carry uuids (sdc-sapi docs/index.md), never names.
        for u in (sapi["uuid"], sapi["service_uuid"], svc["uuid"], app["uuid"]):
            tc.assertRegex(u, UUID_RE)
        tc.assertEqual(sapi["params"]["alias"], vm["alias"])
        tc.assertEqual(svc["params"]["image_uuid"], vm["image_uuid"])
        vms[vm["uuid"]] = vm

    images = {u: load(os.path.join(root, "images", u, "manifest.json")) for u in os.listdir(os.path.join(root, "images"))}
    for u, m in images.items():
        tc.assertEqual(m["uuid"], u)
        path = os.path.join(root, "images", u, "file")
        tc.assertEqual(os.path.getsize(path), m["files"][0]["size"])
        with open(path, "rb") as f:
            tc.assertEqual(hashlib.sha1(f.read()).hexdigest(), m["files"][0]["sha1"])
    for vm in vms.values():
        chain, u = [], vm["image_uuid"]
        while u:
            tc.assertIn(u, images, "origin chain of %s breaks at %s" % (vm["alias"], u))
            tc.assertNotIn(u, chain)
            chain.append(u)
            u = images[u].get("origin")
        tc.assertIn(len(chain), (2, 3), vm["alias"])

    # Symlinks stay inside their dataset and resolve; there are some.
    links = 0
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, "datasets")):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                links += 1
                target = os.readlink(path)
                tc.assertFalse(target.startswith("/"), path)
                ds = os.path.join(root, "datasets", os.path.relpath(path, os.path.join(root, "datasets")).split("/")[0])
                tc.assertTrue(os.path.realpath(path).startswith(os.path.realpath(ds) + "/"), path)
                tc.assertTrue(os.path.exists(path), "dangling " + path)
    tc.assertGreater(links, 0)
    return vms


class Layout(Tmp):
    def test_single_node_layout_and_content(self):
        root = os.path.join(self.tmp, "hn")
        out = gen(root, "--services", "imgapi,amonredis,ufds,cloudapi", "--node", "headnode7")
        vms = check_node(self, root)
        self.assertEqual(sorted(v["alias"] for v in vms.values()), ["amonredis0", "cloudapi0", "imgapi0", "ufds0"])
        self.assertEqual({v["server_uuid"] for v in vms.values()}, {out["uuid"]})
        desc = treedigest.describe(root)
        self.assertEqual(out["files"], sum(1 for v in desc.values() if v[0] == "f"))
        self.assertLess(out["bytes"], 16 << 20)
        by_name = lambda suffix: [p for p in desc if p.endswith(suffix)]
        self.assertTrue(by_name("redis/dump.rdb"))
        self.assertTrue(by_name(".key.pem"))
        self.assertTrue([p for p in desc if "/imgapi/images/" in p and p.endswith("/file0")])
        self.assertTrue([p for p, v in desc.items() if v[0] == "f" and v[2] == 0])  # empty files
        self.assertEqual(desc[by_name(".key.pem")[0]][1], 0o600)

    def test_dc_mode_disjoint_services_unique_aliases_shared_objects(self):
        root = os.path.join(self.tmp, "dc")
        gen(root, "--dc", "3", "--seed", "3")
        dc = load(os.path.join(root, "dc.json"))
        self.assertEqual([n["name"] for n in dc["nodes"]], ["headnode0", "headnode1", "headnode2"])
        aliases, services, uuids = [], [], []
        for n in dc["nodes"]:
            vms = check_node(self, os.path.join(root, n["root"]))
            aliases += [v["alias"] for v in vms.values()]
            services += [v["tags"]["smartdc_role"] for v in vms.values()]
            uuids += list(vms)
            self.assertEqual({v["server_uuid"] for v in vms.values()}, {n["uuid"]})
        self.assertEqual(len(aliases), len(set(aliases)))
        self.assertEqual(len(uuids), len(set(uuids)))
        self.assertEqual(sorted(services), sorted(fixture_gen.SERVICES))
        apps = {treedigest.file_sha256(os.path.join(root, n["root"], "sapi", "application.json")) for n in dc["nodes"]}
        self.assertEqual(len(apps), 1)
        # An image present on several nodes (the shared bases) is byte-identical everywhere.
        seen = {}
        for n in dc["nodes"]:
            for u in os.listdir(os.path.join(root, n["root"], "images")):
                h = treedigest.file_sha256(os.path.join(root, n["root"], "images", u, "file"))
                seen.setdefault(u, set()).add(h)
        shared = [u for u, hs in seen.items() if sum(u in os.listdir(os.path.join(root, n["root"], "images")) for n in dc["nodes"]) > 1]
        self.assertGreaterEqual(len(shared), 2)
        for u in shared:
            self.assertEqual(len(seen[u]), 1, u)


class Mutations(Tmp):
    def setUp(self):
        super().setUp()
        self.root = os.path.join(self.tmp, "hn")
        gen(self.root, "--services", "imgapi,workflow,vmapi,amonredis", "--seed", "5")

    def assert_changes_match(self, before, after, out):
        added, removed, changed = treedigest.diff(leaves(before), leaves(after))
        self.assertEqual(added, out["created"])
        self.assertEqual(removed, out["removed"])
        self.assertEqual(changed, out["changed"])
        self.assertEqual(out["files"], len(added) + len(removed) + len(changed))

    def test_edit_1pct_changes_what_it_says_in_place(self):
        before = treedigest.describe(self.root)
        out = mutate(self.root, "--scenario", "edit-1pct", "--seed", "9")
        after = treedigest.describe(self.root)
        self.assert_changes_match(before, after, out)
        n_files = sum(1 for p, v in before.items() if v[0] == "f" and v[2] > 0 and p.startswith("datasets/"))
        self.assertGreaterEqual(len(out["changed"]), n_files // 100)
        for p in out["changed"]:
            self.assertEqual(before[p][2], after[p][2])   # same size
            self.assertGreater(after[p][3], before[p][3])  # later mtime
        self.assertTrue(0 < out["bytes"] <= 64 * len(out["changed"]))

    def test_mutation_is_deterministic(self):
        copy = os.path.join(self.tmp, "copy")
        gen(copy, "--services", "imgapi,workflow,vmapi,amonredis", "--seed", "5")
        for r in (self.root, copy):
            mutate(r, "--scenario", "append-logs", "--seed", "4")
            mutate(r, "--scenario", "demo", "--seed", "4")
        self.assertEqual(treedigest.describe(self.root), treedigest.describe(copy))

    def test_demo_adds_instance_and_edits_dataset(self):
        before = treedigest.describe(self.root)
        out = mutate(self.root, "--scenario", "demo", "--seed", "2")
        after = treedigest.describe(self.root)
        self.assert_changes_match(before, after, out)
        new = out["new_instance"]
        self.assertIn("vms/%s.json" % new["uuid"], out["created"])
        self.assertIn("sapi/%s.json" % new["uuid"], out["created"])
        self.assertEqual(new["alias"], new["service"] + "1")
        self.assertTrue(any(p.endswith(".log") for p in out["changed"]))
        vms = check_node(self, self.root)
        self.assertEqual(len(vms), 5)

    def test_big_file_create_then_edit_and_remove_instance(self):
        out = mutate(self.root, "--scenario", "big-file", "--big-size", "2M")
        self.assertEqual(len(out["created"]), 1)
        path = os.path.join(self.root, out["created"][0])
        self.assertEqual(os.path.getsize(path), 2 << 20)
        before = treedigest.describe(self.root)
        out = mutate(self.root, "--scenario", "big-file", "--big-size", "2M", "--edits", "10", "--append", "64K", "--seed", "3")
        self.assert_changes_match(before, treedigest.describe(self.root), out)
        self.assertEqual(os.path.getsize(path), (2 << 20) + (64 << 10))
        self.assertEqual(out["bytes"], 10 * 4096 + (64 << 10))

        uuid = sorted(os.listdir(os.path.join(self.root, "vms")))[0][:-5]
        before = treedigest.describe(self.root)
        out = mutate(self.root, "--scenario", "remove-instance", "--uuid", uuid)
        self.assert_changes_match(before, treedigest.describe(self.root), out)
        self.assertFalse(os.path.exists(os.path.join(self.root, "datasets", uuid)))


if __name__ == "__main__":
    unittest.main(verbosity=2)
