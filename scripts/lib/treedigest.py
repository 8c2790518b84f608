#!/usr/bin/env python3
"""Describes a directory tree exactly: per entry its kind, mode, size, mtime,
content hash (sha256) or symlink target, owner (uid:gid) and, for a file
with several links, the first path (sorted) of its hard-link group. Two
trees are identical when their descriptions are equal.

  python3 scripts/lib/treedigest.py DIR [--no-mtime] [--list]
prints the tree's sha256 (or the per-entry listing with --list).
"""

import hashlib
import os
import stat
import sys


def describe(root, mtimes=True, modes=True):
    """{relpath: (kind, mode, size, mtime_ns, sha256-or-target, "uid:gid",
    link-group)} for every entry below root (root itself excluded). Symlinks
    are not followed. link-group is "" unless a file has several links."""
    out = {}
    stats = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in dirnames + sorted(filenames):
            path = os.path.join(dirpath, name)
            stats[os.path.relpath(path, root)] = (path, os.lstat(path))
    first_of_inode = {}
    for rel in sorted(stats):
        path, st = stats[rel]
        mode = stat.S_IMODE(st.st_mode) if modes else 0
        mt = st.st_mtime_ns if mtimes else 0
        owner = "%d:%d" % (st.st_uid, st.st_gid)
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("l", mode, 0, mt, os.readlink(path), owner, "")
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = ("d", mode, 0, mt, "", owner, "")
        elif stat.S_ISREG(st.st_mode):
            group = first_of_inode.setdefault((st.st_dev, st.st_ino), rel) if st.st_nlink > 1 else ""
            out[rel] = ("f", mode, st.st_size, mt, file_sha256(path), owner, group)
        else:
            out[rel] = ("?", mode, 0, mt, "", owner, "")
    return out


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def tree_hash(desc):
    h = hashlib.sha256()
    for rel in sorted(desc):
        h.update(repr((rel,) + tuple(desc[rel])).encode())
    return h.hexdigest()


def diff(a, b):
    """(added, removed, changed) relpaths between two descriptions."""
    added = sorted(set(b) - set(a))
    removed = sorted(set(a) - set(b))
    changed = sorted(p for p in set(a) & set(b) if a[p] != b[p])
    return added, removed, changed


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        sys.exit(64)
    d = describe(args[0], mtimes="--no-mtime" not in args)
    if "--list" in args:
        for rel in sorted(d):
            print(rel, *d[rel])
    else:
        print(tree_hash(d))
