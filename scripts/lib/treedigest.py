#!/usr/bin/env python3
"""Describes a directory tree exactly: per entry its kind, mode, size, mtime
and content hash (sha256) or symlink target. Two trees are byte-identical
when their descriptions are equal.

  python3 scripts/lib/treedigest.py DIR [--no-mtime] [--list]
prints the tree's sha256 (or the per-entry listing with --list).
"""

import hashlib
import os
import stat
import sys


def describe(root, mtimes=True, modes=True):
    """{relpath: (kind, mode, size, mtime_ns, sha256-or-target)} for every
    entry below root (root itself excluded). Symlinks are not followed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in dirnames + sorted(filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode) if modes else 0
            mt = st.st_mtime_ns if mtimes else 0
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", mode if modes else 0, 0, mt, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", mode, 0, mt, "")
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("f", mode, st.st_size, mt, file_sha256(path))
            else:
                out[rel] = ("?", mode, 0, mt, "")
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
