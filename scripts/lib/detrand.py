"""Deterministic randomness for fixtures: every value derives from a seed and
a label path, so the same (seed, labels) gives the same bytes on any machine
and any Python 3.9+ (sha256 / shake_256 are standards; random.Random seeded
with an int is stable across versions).

Nothing here reads os.urandom or the clock.
"""

import hashlib
import os
import random

# 2026-11-01T00:00:00Z: the "now" of every generated headnode.
BASE_EPOCH_S = 1793491200

_CHUNK = 4 << 20


def _key(parts):
    return "\x1f".join(str(p) for p in parts).encode()


def sub_seed(*parts):
    """A 64-bit integer derived from the labels."""
    return int.from_bytes(hashlib.sha256(_key(parts)).digest()[:8], "big")


def rng(*parts):
    """A random.Random seeded from the labels."""
    return random.Random(sub_seed(*parts))


def uuid_for(*parts):
    """A version-4-shaped UUID string derived from the labels."""
    b = bytearray(hashlib.sha256(b"uuid\x1f" + _key(parts)).digest()[:16])
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def random_bytes(n, *parts):
    """n incompressible bytes derived from the labels (shake_256 stream)."""
    return b"".join(random_chunks(n, *parts))


def random_chunks(n, *parts):
    """Yields n incompressible bytes in chunks of at most 4 MiB."""
    key = hashlib.sha256(b"bytes\x1f" + _key(parts)).digest()
    i = 0
    while n > 0:
        take = min(n, _CHUNK)
        yield hashlib.shake_256(key + i.to_bytes(8, "big")).digest(take)
        n -= take
        i += 1


def write_random_file(path, size, *parts, hashers=()):
    """Writes `size` derived random bytes to `path` (truncating); feeds every
    chunk to each object of `hashers` (e.g. hashlib.sha1())."""
    with open(path, "wb") as f:
        for chunk in random_chunks(size, *parts):
            f.write(chunk)
            for h in hashers:
                h.update(chunk)


def mtime_ns(r, max_age_days=90):
    """A deterministic mtime (ns) up to max_age_days before BASE_EPOCH_S, with a
    millisecond fraction like real filesystems show."""
    age_ms = r.randrange(0, max_age_days * 86400 * 1000)
    return (BASE_EPOCH_S * 1000 - age_ms) * 1_000_000


def iso8601(ns):
    import time

    s, rem = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + ".%03dZ" % (rem // 1_000_000)


def set_mtime(path, ns):
    os.utime(path, ns=(ns, ns), follow_symlinks=False)
