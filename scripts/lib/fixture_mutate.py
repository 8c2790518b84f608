"""Deterministic changes to a generated headnode export (one node's root).

Every scenario returns a summary dict:
  {"scenario", "root", "seed",
   "changed": [paths edited in place or appended to],
   "created": [new files and symlinks], "removed": [files and symlinks gone],
   "files": total entries touched, "bytes": bytes written, "bytes_removed": n}
Paths are relative to the root. Edited files get a later mtime (old + 1 s +
a seeded fraction), so size+mtime based tools (rsync) see them too.
"""

import json
import math
import os
import re
import shutil
import stat

import detrand
import fixture_gen

SCENARIOS = ("edit-1pct", "big-file", "append-logs", "demo", "remove-instance")

_TEXT_EXT = (".json", ".log", ".ini", ".pem", ".conf", ".aof", ".raw", ".zone")


def parse_size(s):
    """'512M', '4K', '1G', '100' -> bytes (binary units)."""
    m = re.fullmatch(r"(\d+)([KMG]i?B?)?", str(s).strip(), re.IGNORECASE)
    if not m:
        raise ValueError("bad size %r (e.g. 4K, 512M, 1G)" % s)
    unit = (m.group(2) or "")[:1].upper()
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[unit]


def check_root(root):
    if not os.path.isdir(os.path.join(root, "vms")):
        hint = " (a --dc root: point at ROOT/headnodeN)" if os.path.exists(os.path.join(root, "dc.json")) else ""
        raise ValueError("%s is not a headnode export: no vms/ directory%s" % (root, hint))


class Changes:
    def __init__(self, scenario, root, seed):
        self.scenario, self.root, self.seed = scenario, root, seed
        self.changed, self.created, self.removed = [], [], []
        self.bytes = 0
        self.bytes_removed = 0

    def summary(self):
        return {"scenario": self.scenario, "root": os.path.abspath(self.root), "seed": self.seed,
                "files": len(self.changed) + len(self.created) + len(self.removed),
                "bytes": self.bytes, "bytes_removed": self.bytes_removed,
                "changed": sorted(self.changed), "created": sorted(self.created), "removed": sorted(self.removed)}


def _old_mtime(path):
    return os.lstat(path).st_mtime_ns


def _bump_mtime(path, r, old):
    """Sets the mtime of a file just changed to `old` (its mtime before the
    change) + 1 s + a seeded fraction: deterministic, and always later."""
    detrand.set_mtime(path, old + 1_000_000_000 + r.randrange(0, 1000) * 1_000_000)


def _dataset_files(root, pred=None):
    """Sorted relpaths of writable, non-empty regular files under datasets/."""
    out = []
    base = os.path.join(root, "datasets")
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_size == 0 or not (st.st_mode & stat.S_IWUSR):
                continue
            rel = os.path.relpath(path, root)
            if pred is None or pred(rel, st):
                out.append(rel)
    return out


def _edit_in_place(path, r, max_bytes=64):
    """Overwrites a few bytes; text keeps its character classes. Returns bytes written."""
    size = os.path.getsize(path)
    n = min(size, r.randint(1, max_bytes))
    off = r.randrange(0, size - n + 1)
    with open(path, "r+b") as f:
        f.seek(off)
        old = f.read(n)
        if path.endswith(_TEXT_EXT):
            new = bytes(_same_class(c, r) for c in old)
        else:
            new = r.randbytes(n)
        if new == old:
            new = bytes([old[0] ^ 0x01]) + new[1:] if not path.endswith(_TEXT_EXT) else bytes([_flip_text(old[0])]) + new[1:]
        f.seek(off)
        f.write(new)
    return n


def _same_class(c, r):
    if 0x30 <= c <= 0x39:
        return r.randint(0x31, 0x39)
    if 0x61 <= c <= 0x7A:
        return r.randint(0x61, 0x7A)
    if 0x41 <= c <= 0x5A:
        return r.randint(0x41, 0x5A)
    return c


def _flip_text(c):
    if 0x31 <= c <= 0x38 or 0x61 <= c <= 0x79 or 0x41 <= c <= 0x59:
        return c + 1
    if c in (0x39, 0x7A, 0x5A):
        return c - 1
    return 0x78  # 'x'


def edit_pct(root, seed, pct=1.0):
    """Small in-place edits (1..64 bytes, same size) to pct% of the dataset files."""
    ch = Changes("edit-1pct", root, seed)
    r = detrand.rng(seed, "edit-pct")
    files = _dataset_files(root)
    k = min(len(files), max(1, math.ceil(len(files) * pct / 100)))
    for rel in sorted(r.sample(files, k)):
        path = os.path.join(root, rel)
        old = _old_mtime(path)
        ch.bytes += _edit_in_place(path, r)
        _bump_mtime(path, r, old)
        ch.changed.append(rel)
    return ch


def default_big_path(root):
    """datasets/<imgapi instance, else first instance>/bulk/big.bin"""
    vms = sorted(os.listdir(os.path.join(root, "vms")))
    if not vms:
        raise ValueError("%s has no instances" % root)
    chosen = vms[0]
    for name in vms:
        with open(os.path.join(root, "vms", name)) as f:
            if json.load(f).get("tags", {}).get("smartdc_role") == "imgapi":
                chosen = name
                break
    return "datasets/%s/bulk/big.bin" % chosen[:-len(".json")]


def big_file(root, seed, size=512 << 20, edits=100, edit_size=4096, append=1 << 20, rel=None):
    """Creates the big file (when missing) or makes `edits` scattered
    `edit_size`-byte edits and appends `append` bytes."""
    ch = Changes("big-file", root, seed)
    rel = rel or default_big_path(root)
    path = os.path.join(root, rel)
    r = detrand.rng(seed, "big-file")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        detrand.write_random_file(path, size, "big-file", seed)
        os.chmod(path, 0o644)
        mt = detrand.BASE_EPOCH_S * 1_000_000_000 + r.randrange(0, 3600) * 1_000_000_000
        for p in (path, os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
            detrand.set_mtime(p, mt)
        ch.created.append(rel)
        ch.bytes = size
        return ch
    cur = os.path.getsize(path)
    old = _old_mtime(path)
    with open(path, "r+b") as f:
        for i in range(edits):
            off = r.randrange(0, max(1, cur - edit_size))
            f.seek(off)
            f.write(detrand.random_bytes(min(edit_size, cur), "big-edit", seed, i))
            ch.bytes += min(edit_size, cur)
        f.seek(0, os.SEEK_END)
        for chunk in detrand.random_chunks(append, "big-append", seed):
            f.write(chunk)
        ch.bytes += append
    _bump_mtime(path, r, old)
    ch.changed.append(rel)
    return ch


def append_logs(root, seed, fraction=1.0, min_lines=5, max_lines=200):
    """Appends bunyan lines to `fraction` of the current logs (*.log)."""
    ch = Changes("append-logs", root, seed)
    r = detrand.rng(seed, "append-logs")
    logs = _dataset_files(root, lambda rel, st: rel.endswith(".log"))
    k = min(len(logs), max(1, round(len(logs) * fraction))) if logs else 0
    for rel in sorted(r.sample(logs, k)):
        ch.bytes += _append_log(root, rel, r, r.randint(min_lines, max_lines))
        ch.changed.append(rel)
    return ch


def _append_log(root, rel, r, lines):
    path = os.path.join(root, rel)
    svc = os.path.basename(rel).split(".")[0]
    start = _old_mtime(path)
    text = fixture_gen.log_lines(r, svc, rel.split("/")[1][:8], start, lines * 260)
    data = text.encode()
    with open(path, "ab") as f:
        f.write(data)
    _bump_mtime(path, r, start)
    return len(data)


def _load_vms(root):
    vms = []
    for name in sorted(os.listdir(os.path.join(root, "vms"))):
        with open(os.path.join(root, "vms", name)) as f:
            vms.append(json.load(f))
    order = {s: i for i, s in enumerate(fixture_gen.SERVICES)}
    vms.sort(key=lambda v: (order.get(v["tags"]["smartdc_role"], 99), v["alias"]))
    return vms


def _all_aliases(root):
    """Aliases on this node, plus on sibling nodes when root is ROOT/headnodeN of a --dc tree."""
    roots = [root]
    parent = os.path.dirname(os.path.abspath(root))
    if os.path.exists(os.path.join(parent, "dc.json")):
        roots = [os.path.join(parent, d) for d in sorted(os.listdir(parent)) if os.path.isdir(os.path.join(parent, d, "vms"))]
    aliases = set()
    for rt in roots:
        aliases.update(v["alias"] for v in _load_vms(rt))
    return aliases


def add_instance(root, seed, ch, sibling):
    """Adds a second instance of `sibling`'s service: VM payload, SAPI record,
    delegate dataset (small). Returns the new VM payload."""
    svc = sibling["tags"]["smartdc_role"]
    taken = _all_aliases(root)
    n = 0
    while "%s%d" % (svc, n) in taken:
        n += 1
    alias = "%s%d" % (svc, n)
    dc_name = re.sub(r"^https?://sapi\.|\.example\.com$", "", sibling["customer_metadata"].get("sapi-url", "coal"))
    inst = fixture_gen.Instance(seed, svc, alias, 150 + len(taken), "", sibling["server_uuid"], dc_name)
    inst.image_uuid = sibling["image_uuid"]
    vm = fixture_gen.vm_payload(inst)
    sapi_path = os.path.join(root, "sapi", sibling["uuid"] + ".json")
    sapi = fixture_gen.sapi_instance(inst)
    if os.path.exists(sapi_path):
        with open(sapi_path) as f:
            sapi["service_uuid"] = json.load(f)["service_uuid"]
    tree = fixture_gen.Tree(root)
    mt = detrand.BASE_EPOCH_S * 1_000_000_000 + detrand.sub_seed(seed, "new-instance") % 86400 * 1_000_000_000
    tree.write_json("vms/%s.json" % inst.uuid, vm, mt)
    tree.write_json("sapi/%s.json" % inst.uuid, sapi, mt)
    fixture_gen.write_dataset(tree, inst, 12, 256 << 10, fixture_gen.SIZES["small"])
    for rel, m in tree.mtimes.items():
        if m and os.path.lexists(os.path.join(root, rel)) and not os.path.isdir(os.path.join(root, rel)):
            ch.created.append(rel)
    _set_dir_mtimes(root, tree, mt)
    ch.bytes += tree.bytes
    return vm


def _set_dir_mtimes(root, tree, mt):
    """Directories the Tree touched get `mt` (entries were added to them)."""
    dirs = {os.path.dirname(rel) for rel in tree.mtimes}
    for rel in sorted(dirs, key=lambda p: -p.count("/")):
        path = os.path.join(root, rel) if rel else root
        os.chmod(path, 0o755)
        detrand.set_mtime(path, mt)


def demo(root, seed):
    """What the demo shows: edits in one delegate dataset (config change +
    in-place edits), a log append, and a new instance of the same service."""
    check_root(root)
    ch = Changes("demo", root, seed)
    r = detrand.rng(seed, "demo")
    vms = _load_vms(root)
    if not vms:
        raise ValueError("%s has no instances" % root)
    target = vms[0]
    d = "datasets/%s/" % target["uuid"]
    cfg_rel = d + "config/config.json"
    cfg_path = os.path.join(root, cfg_rel)
    if os.path.exists(cfg_path):
        with open(cfg_path) as f:
            cfg = json.load(f)
        cfg["logLevel"] = "debug"
        cfg["maintenance"] = {"reason": "demo edit", "seed": seed}
        data = (json.dumps(cfg, indent=2) + "\n").encode()
        old = _old_mtime(cfg_path)
        with open(cfg_path, "wb") as f:
            f.write(data)
        _bump_mtime(cfg_path, r, old)
        ch.changed.append(cfg_rel)
        ch.bytes += len(data)
    docs = _dataset_files(root, lambda rel, st: rel.startswith(d) and rel.endswith(".json") and "/config/" not in rel)
    for rel in sorted(r.sample(docs, min(3, len(docs)))):
        old = _old_mtime(os.path.join(root, rel))
        ch.bytes += _edit_in_place(os.path.join(root, rel), r, 16)
        _bump_mtime(os.path.join(root, rel), r, old)
        ch.changed.append(rel)
    log_rel = d + "log/%s.log" % target["tags"]["smartdc_role"]
    if os.path.exists(os.path.join(root, log_rel)):
        ch.bytes += _append_log(root, log_rel, r, 40)
        ch.changed.append(log_rel)
    vm = add_instance(root, seed, ch, target)
    out = ch.summary()
    out["new_instance"] = {"uuid": vm["uuid"], "alias": vm["alias"], "service": vm["tags"]["smartdc_role"]}
    out["edited_instance"] = {"uuid": target["uuid"], "alias": target["alias"]}
    return out


def remove_instance(root, seed, uuid):
    """Removes an instance's VM payload, SAPI record and delegate dataset
    (images stay, as imgadm would keep them)."""
    check_root(root)
    ch = Changes("remove-instance", root, seed)
    if not re.fullmatch(r"[0-9a-f-]{36}", uuid or ""):
        raise ValueError("remove-instance needs an instance uuid, got %r" % uuid)
    vm_rel = "vms/%s.json" % uuid
    if not os.path.exists(os.path.join(root, vm_rel)):
        raise ValueError("no instance %s in %s" % (uuid, root))
    for rel in (vm_rel, "sapi/%s.json" % uuid):
        path = os.path.join(root, rel)
        if os.path.exists(path):
            ch.bytes_removed += os.path.getsize(path)
            ch.removed.append(rel)
            os.unlink(path)
    ds = os.path.join(root, "datasets", uuid)
    if os.path.isdir(ds):
        for dirpath, dirnames, filenames in os.walk(ds):
            for name in filenames + [n for n in dirnames if os.path.islink(os.path.join(dirpath, n))]:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode):
                    ch.bytes_removed += st.st_size
                ch.removed.append(os.path.relpath(path, root))
        shutil.rmtree(ds)
    return ch


def run(root, seed, scenario, **kw):
    """Dispatches a scenario; returns its summary dict."""
    check_root(root)
    if scenario == "edit-1pct":
        return edit_pct(root, seed, kw.get("pct", 1.0)).summary()
    if scenario == "big-file":
        return big_file(root, seed, kw.get("size", 512 << 20), kw.get("edits", 100), kw.get("edit_size", 4096),
                        kw.get("append", 1 << 20), kw.get("path")).summary()
    if scenario == "append-logs":
        return append_logs(root, seed, kw.get("fraction", 1.0)).summary()
    if scenario == "demo":
        return demo(root, seed)
    if scenario == "remove-instance":
        return remove_instance(root, seed, kw.get("uuid")).summary()
    raise ValueError("unknown scenario %r (%s)" % (scenario, ", ".join(SCENARIOS)))
