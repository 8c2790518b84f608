"""Generates realistic, reproducible headnode exports in the dir-provider
layout (see syncproto/manifest.h and DESIGN.md "Export"):

    <root>/vms/<uuid>.json              vmadm get object
    <root>/sapi/<uuid>.json             SAPI instance record
    <root>/sapi/application.json        SAPI application record ("sdc")
    <root>/sapi/services/<svc>.json     SAPI service records (services hosted here)
    <root>/datasets/<uuid>/...          delegate dataset tree
    <root>/images/<uuid>/manifest.json  IMGAPI manifest (origin -> parent)
    <root>/images/<uuid>/file           image file

Everything derives from (seed, labels) through detrand: the same seed and
size give a byte-identical tree (contents, modes, mtimes, symlink targets).
Shared objects (base images, the SAPI application and service records) do
not depend on the node, so every headnode of one datacenter carries identical
copies of them.
"""

import hashlib
import json
import os
import shutil
import time

import detrand

# RFD 67's core services, in its restore order.
SERVICES = [
    "assets", "sapi", "amonredis", "ufds", "workflow", "amon", "sdc", "papi",
    "napi", "rabbitmq", "imgapi", "cnapi", "fwapi", "vmapi", "ca", "mahi",
    "adminui", "cloudapi", "cns", "docker", "cmon", "portolan",
]

# The three-headnode datacenter of --dc 3: disjoint services.
DC3_LAYOUT = [
    ["imgapi", "sapi", "assets", "ufds", "cloudapi", "adminui", "papi"],
    ["vmapi", "cnapi", "napi", "workflow", "amon", "amonredis", "mahi", "fwapi"],
    ["ca", "cns", "docker", "cmon", "sdc", "rabbitmq", "portolan"],
]

# Per service: memory MiB, quota GiB, external NIC, TLS material, document
# bucket and its weight in the file budget, weight in the bulk-bytes budget,
# base image line ("21" = triton-origin 21.4.0, "19" = 19.4.0, "min" = straight
# on the minimal base: a two-level chain).
PROFILES = {
    "assets":    dict(mem=128,  quota=25,  ext=False, tls=False, bucket="extra",         docs=1,  bulk=10, base="21"),
    "sapi":      dict(mem=256,  quota=25,  ext=False, tls=False, bucket="cache",         docs=2,  bulk=1,  base="21"),
    "amonredis": dict(mem=1024, quota=25,  ext=False, tls=False, bucket="keys",          docs=1,  bulk=6,  base="21"),
    "ufds":      dict(mem=1024, quota=25,  ext=False, tls=True,  bucket="changelog",     docs=8,  bulk=1,  base="21"),
    "workflow":  dict(mem=1024, quota=25,  ext=False, tls=False, bucket="jobs",          docs=10, bulk=4,  base="21"),
    "amon":      dict(mem=1024, quota=25,  ext=False, tls=False, bucket="probes",        docs=4,  bulk=1,  base="21"),
    "sdc":       dict(mem=1024, quota=100, ext=False, tls=False, bucket="sdc-data",      docs=3,  bulk=8,  base="21"),
    "papi":      dict(mem=512,  quota=25,  ext=False, tls=False, bucket="packages",      docs=3,  bulk=1,  base="21"),
    "napi":      dict(mem=512,  quota=25,  ext=False, tls=False, bucket="nics",          docs=6,  bulk=1,  base="21"),
    "rabbitmq":  dict(mem=1024, quota=25,  ext=False, tls=False, bucket="queues",        docs=1,  bulk=4,  base="min"),
    "imgapi":    dict(mem=2048, quota=100, ext=True,  tls=True,  bucket="manifests",     docs=3,  bulk=60, base="21"),
    "cnapi":     dict(mem=1024, quota=25,  ext=False, tls=False, bucket="servers",       docs=4,  bulk=1,  base="21"),
    "fwapi":     dict(mem=512,  quota=25,  ext=False, tls=False, bucket="rules",         docs=4,  bulk=1,  base="21"),
    "vmapi":     dict(mem=1024, quota=25,  ext=False, tls=False, bucket="vms",           docs=8,  bulk=1,  base="21"),
    "ca":        dict(mem=1024, quota=25,  ext=False, tls=False, bucket="instrumentations", docs=2, bulk=1, base="21"),
    "mahi":      dict(mem=1024, quota=25,  ext=False, tls=False, bucket="accounts",      docs=2,  bulk=4,  base="21"),
    "adminui":   dict(mem=512,  quota=25,  ext=True,  tls=True,  bucket="sessions",      docs=1,  bulk=1,  base="21"),
    "cloudapi":  dict(mem=1024, quota=25,  ext=True,  tls=True,  bucket="audit",         docs=3,  bulk=1,  base="21"),
    "cns":       dict(mem=1024, quota=25,  ext=True,  tls=False, bucket="zones",         docs=2,  bulk=1,  base="19"),
    "docker":    dict(mem=2048, quota=25,  ext=True,  tls=True,  bucket="images",        docs=4,  bulk=1,  base="19"),
    "cmon":      dict(mem=1024, quota=25,  ext=True,  tls=True,  bucket="containers",    docs=2,  bulk=1,  base="19"),
    "portolan":  dict(mem=256,  quota=25,  ext=False, tls=False, bucket="underlay",      docs=1,  bulk=1,  base="19"),
}

# Per size: target regular files per node (documents fill what the fixed
# per-instance files leave), bulk bytes per node (imgapi store, redis dumps,
# archives), image file sizes, and current-log bytes per instance.
SIZES = {
    "small":  dict(files=300,   bulk=2 << 20,   img_root=384 << 10,  img_origin=192 << 10, img_svc=64 << 10,  log=24 << 10, rotated=2),
    "medium": dict(files=4000,  bulk=48 << 20,  img_root=16 << 20,   img_origin=8 << 20,   img_svc=2 << 20,   log=256 << 10, rotated=3),
    "bench":  dict(files=22000, bulk=440 << 20, img_root=96 << 20,   img_origin=48 << 20,  img_svc=12 << 20,  log=768 << 10, rotated=3),
}

OWNER_UUID = "930896af-bf8c-48d4-885c-6573a94b1853"  # the "admin" user
NOBODY_UID = 60001  # SmartOS "nobody": owns service run files and logs in the fixture


class Tree:
    """Writes one export root and records what it wrote, so the directory
    mtimes can be set last (bottom-up) and totals reported."""

    def __init__(self, root):
        self.root = root
        self.mtimes = {}  # rel path -> mtime ns (files, symlinks, dirs)
        self.files = 0
        self.bytes = 0
        self.symlinks = 0

    def _prepare(self, rel):
        path = os.path.join(self.root, rel)
        parent = os.path.dirname(rel)
        while parent and parent not in self.mtimes:
            self.mtimes[parent] = 0
            parent = os.path.dirname(parent)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def _done(self, rel, path, size, mode, mtime):
        os.chmod(path, mode)
        detrand.set_mtime(path, mtime)
        self.mtimes[rel] = mtime
        self.files += 1
        self.bytes += size

    def write(self, rel, data, mtime, mode=0o644):
        if isinstance(data, str):
            data = data.encode()
        path = self._prepare(rel)
        with open(path, "wb") as f:
            f.write(data)
        self._done(rel, path, len(data), mode, mtime)

    def write_json(self, rel, obj, mtime, mode=0o644):
        self.write(rel, json.dumps(obj, indent=2, sort_keys=False) + "\n", mtime, mode)

    def write_random(self, rel, size, labels, mtime, mode=0o644, hashers=()):
        path = self._prepare(rel)
        detrand.write_random_file(path, size, *labels, hashers=hashers)
        self._done(rel, path, size, mode, mtime)

    def hardlink(self, rel, existing_rel):
        """A second name for a file already written (same inode, same mtime)."""
        path = self._prepare(rel)
        os.link(os.path.join(self.root, existing_rel), path)
        self.mtimes[rel] = self.mtimes[existing_rel]
        self.files += 1

    def chown(self, rel, uid, gid):
        """Gives an entry another owner, where we may (as root); elsewhere
        the tree keeps the generating user's, which is still reproducible."""
        if os.geteuid() == 0:
            os.lchown(os.path.join(self.root, rel), uid, gid)

    def symlink(self, rel, target, mtime):
        path = self._prepare(rel)
        os.symlink(target, path)
        detrand.set_mtime(path, mtime)
        self.mtimes[rel] = mtime
        self.symlinks += 1

    def finish(self):
        """Sets every directory's mode to 0755 and its mtime to its newest
        entry's, deepest first; the root's too."""
        dirs = sorted((p for p, m in self.mtimes.items() if m == 0), key=lambda p: -p.count("/"))
        newest = {}
        for rel, m in self.mtimes.items():
            if m:
                parent = os.path.dirname(rel)
                newest[parent] = max(newest.get(parent, 0), m)
        for rel in dirs:
            m = newest.get(rel, detrand.BASE_EPOCH_S * 1_000_000_000)
            self.mtimes[rel] = m
            parent = os.path.dirname(rel)
            newest[parent] = max(newest.get(parent, 0), m)
            path = os.path.join(self.root, rel)
            os.chmod(path, 0o755)
            detrand.set_mtime(path, m)
        os.chmod(self.root, 0o755)
        detrand.set_mtime(self.root, newest.get("", detrand.BASE_EPOCH_S * 1_000_000_000))


# ---- Images -----------------------------------------------------------------

def _base_images(seed):
    """The shared image lineage: two minimal bases and two triton-origin
    images on top of them. Returns {key: spec}."""
    return {
        "min21": dict(name="minimal-64-lts", version="21.4.0", origin=None, kind="root", date="2022-03-22T01:21:37Z"),
        "min19": dict(name="minimal-multiarch-lts", version="19.4.0", origin=None, kind="root", date="2020-01-07T17:38:41Z"),
        "21": dict(name="triton-origin-x86_64-21.4.0", version="master-20220322T012137Z-g9382491", origin="min21", kind="origin", date="2022-03-22T02:05:11Z"),
        "19": dict(name="triton-origin-multiarch-19.4.0", version="master-20200130T200825Z-gbb45b8d", origin="min19", kind="origin", date="2020-01-30T20:31:02Z"),
    }


def image_uuid(seed, key):
    return detrand.uuid_for(seed, "image", key)


def _service_image_spec(seed, svc):
    r = detrand.rng(seed, "image-version", svc)
    stamp = "2026%02d%02dT%02d%02d%02dZ" % (r.randint(8, 10), r.randint(1, 28), r.randint(0, 23), r.randint(0, 59), r.randint(0, 59))
    base = PROFILES[svc]["base"]
    return dict(name=svc, version="master-%s-g%07x" % (stamp, r.getrandbits(28)),
                origin=("min21" if base == "min" else base), kind="svc",
                date="%s-%s-%sT%s:%s:%s.000Z" % (stamp[0:4], stamp[4:6], stamp[6:8], stamp[9:11], stamp[11:13], stamp[13:15]))


def _image_size(seed, key, kind, sz):
    r = detrand.rng(seed, "image-size", key)
    base = {"root": sz["img_root"], "origin": sz["img_origin"], "svc": sz["img_svc"]}[kind]
    return base + r.randrange(0, base // 4 + 1)


def write_image(tree, seed, key, spec, specs, sz):
    """Writes images/<uuid>/{file,manifest.json} for one image; returns its uuid."""
    uuid = image_uuid(seed, key)
    if f"images/{uuid}/manifest.json" in tree.mtimes:
        return uuid
    size = _image_size(seed, key, spec["kind"], sz)
    y, mo, d = int(spec["date"][0:4]), int(spec["date"][5:7]), int(spec["date"][8:10])
    published_ns = (time_gm(y, mo, d) + detrand.sub_seed(seed, "pub", key) % 86400) * 1_000_000_000
    sha1 = hashlib.sha1()
    tree.write_random(f"images/{uuid}/file", size, (seed, "image-file", key), published_ns, hashers=(sha1,))
    manifest = {
        "v": 2,
        "uuid": uuid,
        "owner": OWNER_UUID,
        "name": spec["name"],
        "version": spec["version"],
        "state": "active",
        "disabled": False,
        "public": spec["kind"] != "svc",
        "published_at": detrand.iso8601(published_ns),
        "type": "zone-dataset",
        "os": "smartos",
        "files": [{"sha1": sha1.hexdigest(), "size": size, "compression": "gzip" if spec["kind"] == "svc" else "none"}],
        "requirements": {"min_platform": {"7.0": "20260830T001556Z"}} if spec["kind"] == "svc" else {},
    }
    if spec["origin"]:
        manifest["origin"] = image_uuid(seed, spec["origin"])
    if spec["kind"] == "svc":
        manifest["tags"] = {"smartdc_service": True}
    else:
        manifest["description"] = "%s %s base image" % (spec["name"], spec["version"])
    tree.write_json(f"images/{uuid}/manifest.json", manifest, published_ns)
    return uuid


def write_image_chain(tree, seed, svc, sz):
    """Writes the service's image and every ancestor; returns the service image uuid."""
    specs = _base_images(seed)
    specs[svc] = _service_image_spec(seed, svc)
    key = svc
    while key:
        write_image(tree, seed, key, specs[key], specs, sz)
        key = specs[key]["origin"]
    return image_uuid(seed, svc)


def time_gm(y, mo, d):
    import calendar

    return calendar.timegm((y, mo, d, 0, 0, 0, 0, 0, 0))


# ---- SAPI ------------------------------------------------------------------

def application_uuid(seed):
    return detrand.uuid_for(seed, "sapi-application", "sdc")


def service_uuid(seed, svc):
    return detrand.uuid_for(seed, "sapi-service", svc)


def sapi_application(seed, dc_name):
    return {
        "uuid": application_uuid(seed),
        "name": "sdc",
        "owner_uuid": OWNER_UUID,
        "params": {"image_uuid": image_uuid(seed, "21"), "server_uuid": None},
        "metadata": {
            "datacenter_name": dc_name,
            "dns_domain": "example.com",
            "region_name": dc_name.rsplit("-", 1)[0],
            "ufds_domain": "ufds.%s.example.com" % dc_name,
            "sapi_domain": "sapi.%s.example.com" % dc_name,
            "admin_uuid": OWNER_UUID,
            "ufds_admin_login": "admin",
            "binder_admin_ips": "10.99.99.11",
            "rabbitmq": "guest:guest:rabbitmq.%s.example.com:5672" % dc_name,
        },
        "master": True,
    }


def sapi_service(seed, svc, dc_name):
    p = PROFILES[svc]
    networks = ["admin"] + (["external"] if p["ext"] else [])
    return {
        "uuid": service_uuid(seed, svc),
        "name": svc,
        "application_uuid": application_uuid(seed),
        "params": {
            "image_uuid": image_uuid(seed, svc),
            "max_physical_memory": p["mem"],
            "max_locked_memory": p["mem"],
            "max_swap": p["mem"] * 2,
            "quota": p["quota"],
            "cpu_cap": 800,
            "networks": networks,
            "delegate_dataset": True,
            "tags": {"smartdc_role": svc, "smartdc_type": "core"},
        },
        "metadata": {
            "SERVICE_NAME": "%s.%s.example.com" % (svc, dc_name),
            "%s_SERVICE_NAME" % svc.upper(): "%s.%s.example.com" % (svc, dc_name),
            "SERVICE_DOMAIN": "%s.%s.example.com" % (svc, dc_name),
        },
        "type": "vm",
    }


# ---- Instances ---------------------------------------------------------------

class Instance:
    def __init__(self, seed, svc, alias, index, node_name, node_uuid, dc_name):
        self.seed, self.svc, self.alias, self.index = seed, svc, alias, index
        self.node_name, self.node_uuid, self.dc_name = node_name, node_uuid, dc_name
        self.uuid = detrand.uuid_for(seed, "instance", alias)
        self.image_uuid = image_uuid(seed, svc)


def vm_payload(inst):
    p = PROFILES[inst.svc]
    r = detrand.rng(inst.seed, "vm", inst.alias)
    created = detrand.mtime_ns(r, 400)
    booted = detrand.BASE_EPOCH_S * 1_000_000_000 - r.randrange(1, 20 * 86400) * 1_000_000_000
    mac = lambda: "90:b8:d0:" + ":".join("%02x" % r.randrange(256) for _ in range(3))
    admin_ip = "10.99.99.%d" % (20 + inst.index)
    nics = [{"interface": "net0", "mac": mac(), "nic_tag": "admin", "vlan_id": 0, "ip": admin_ip,
             "ips": [admin_ip + "/24"], "netmask": "255.255.255.0",
             "network_uuid": detrand.uuid_for(inst.seed, "network", "admin"), "primary": True}]
    if p["ext"]:
        ext_ip = "203.0.113.%d" % (20 + inst.index)
        nics[0].pop("primary")
        nics.append({"interface": "net1", "mac": mac(), "nic_tag": "external", "vlan_id": 0, "ip": ext_ip,
                     "ips": [ext_ip + "/24"], "netmask": "255.255.255.0", "gateway": "203.0.113.1",
                     "gateways": ["203.0.113.1"], "network_uuid": detrand.uuid_for(inst.seed, "network", "external"),
                     "primary": True})
    zoneid = 2 + inst.index
    return {
        "uuid": inst.uuid,
        "alias": inst.alias,
        "autoboot": True,
        "brand": "joyent-minimal",
        "billing_id": "00000000-0000-0000-0000-000000000000",
        "owner_uuid": OWNER_UUID,
        "image_uuid": inst.image_uuid,
        "server_uuid": inst.node_uuid,
        "zonename": inst.uuid,
        "zonepath": "/zones/" + inst.uuid,
        "zoneid": zoneid,
        "zonedid": zoneid,
        "pid": 1000 + r.randrange(60000),
        "state": "running",
        "zone_state": "running",
        "create_timestamp": detrand.iso8601(created),
        "boot_timestamp": detrand.iso8601(booted),
        "last_modified": detrand.iso8601(booted + 3_000_000_000),
        "max_physical_memory": p["mem"],
        "max_locked_memory": p["mem"],
        "max_swap": p["mem"] * 2,
        "max_lwps": 4000,
        "cpu_shares": 1024,
        "cpu_cap": 800,
        "zfs_io_priority": 100,
        "quota": p["quota"],
        "tmpfs": p["mem"],
        "dns_domain": "local",
        "resolvers": ["10.99.99.11"],
        "datasets": ["zones/%s/data" % inst.uuid],
        "nics": nics,
        "customer_metadata": {
            "sapi-url": "http://sapi.%s.example.com" % inst.dc_name,
            "assets-ip": "10.99.99.8",
            "user-script": "#!/usr/bin/bash\n# (core zone setup script)\nexit 0\n",
        },
        "internal_metadata": {},
        "tags": {"smartdc_role": inst.svc, "smartdc_type": "core"},
    }


def sapi_instance(inst):
    return {
        "uuid": inst.uuid,
        "service_uuid": service_uuid(inst.seed, inst.svc),
        "params": {"alias": inst.alias, "server_uuid": inst.node_uuid},
        "metadata": {"%s_SERVICE_NAME" % inst.svc.upper(): "%s.%s.example.com" % (inst.svc, inst.dc_name)},
        "type": "vm",
    }


# ---- Delegate dataset content --------------------------------------------------

_LOG_MSGS = ["handled: 200", "request", "handled: 204", "handled: 404", "checking status",
             "heartbeat", "moray: connected", "job finished", "cache refreshed", "handled: 500"]
_ROUTES = ["getvm", "listvms", "ping", "getimage", "listimages", "getserver", "putobject",
           "findobjects", "updatenic", "listjobs", "auth", "search"]


def log_lines(r, svc, alias, start_ns, nbytes):
    """Bunyan JSON log lines totalling about nbytes, times rising from start_ns."""
    out, total, t = [], 0, start_ns
    host = alias
    while total < nbytes:
        t += r.randrange(1, 5000) * 1_000_000
        level = r.choice((30, 30, 30, 30, 20, 40, 50))
        rec = '{"name":"%s","hostname":"%s","pid":%d,"component":"%s","level":%d,"req_id":"%08x-%04x","route":"%s","latency":%d,"msg":"%s","time":"%s","v":0}\n' % (
            svc, host, 4000 + r.randrange(100), r.choice(("restify", "moray", "audit", "main")), level,
            r.getrandbits(32), r.getrandbits(16), r.choice(_ROUTES), r.randrange(1, 900), r.choice(_LOG_MSGS),
            detrand.iso8601(t))
        out.append(rec)
        total += len(rec)
    return "".join(out)


def pem_block(kind, body):
    import base64

    b64 = base64.b64encode(body).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return "-----BEGIN %s-----\n%s\n-----END %s-----\n" % (kind, "\n".join(lines), kind)


def json_doc(r, inst, bucket, uuid):
    """A moray/ufds-ish record, 300 B .. ~6 KiB."""
    doc = {
        "bucket": bucket,
        "key": uuid,
        "_id": r.randrange(1, 10_000_000),
        "_etag": "%08X" % r.getrandbits(32),
        "_mtime": detrand.BASE_EPOCH_S * 1000 - r.randrange(0, 90 * 86400 * 1000),
        "value": {
            "uuid": uuid,
            "owner_uuid": OWNER_UUID,
            "name": "%s-%06d" % (bucket, r.randrange(1_000_000)),
            "state": r.choice(("active", "running", "succeeded", "provisioning", "destroyed")),
            "datacenter": inst.dc_name,
            "server_uuid": inst.node_uuid,
            "tags": {"k%d" % i: "v%x" % r.getrandbits(24) for i in range(r.randrange(0, 6))},
        },
    }
    if r.random() < 0.3:
        doc["value"]["history"] = [{"at": detrand.iso8601(detrand.mtime_ns(r)), "event": r.choice(_LOG_MSGS),
                                    "detail": "%x" % r.getrandbits(64)} for _ in range(r.randrange(5, 60))]
    return doc


def redis_dump(r, size):
    """An RDB-looking binary: header, key/value records with random payloads."""
    parts = [b"REDIS0009\xfa\tredis-ver\x056.2.6\xfe\x00\xfb"]
    total = len(parts[0])
    while total < size - 9:
        key = b"amon:alarm:%08x" % r.getrandbits(32)
        val = r.randbytes(min(r.randrange(16, 2048), max(1, size - total)))
        rec = b"\x00" + bytes([len(key)]) + key + len(val).to_bytes(4, "little") + val
        parts.append(rec)
        total += len(rec)
    parts.append(b"\xff" + r.randbytes(8))
    return b"".join(parts)


def config_json(inst):
    r = detrand.rng(inst.seed, "config", inst.alias)
    return {
        "port": 80,
        "logLevel": "info",
        "datacenterName": inst.dc_name,
        "instanceUuid": inst.uuid,
        "serverUuid": inst.node_uuid,
        "adminIp": "10.99.99.%d" % (20 + inst.index),
        "moray": {"srvDomain": "moray.%s.example.com" % inst.dc_name, "cueballOptions": {"resolvers": ["binder.%s.example.com" % inst.dc_name]}},
        "ufds": {"url": "ldaps://ufds.%s.example.com" % inst.dc_name, "bindDN": "cn=root", "bindPassword": "%032x" % r.getrandbits(128)},
        "wfapi": {"url": "http://workflow.%s.example.com" % inst.dc_name, "forceReplace": True},
        "changefeed": {"maxAge": 2000, "backoff": {"minTimeout": 1000, "maxTimeout": 60000}},
    }


def config_ini(inst):
    r = detrand.rng(inst.seed, "ini", inst.alias)
    return ("[main]\nservice = %s\ninstance = %s\nlisten = 0.0.0.0:%d\n\n[limits]\nmax_connections = %d\n"
            "request_timeout = %d\n\n[upstream]\nsapi = http://sapi.%s.example.com\nsecret = %032x\n") % (
        inst.svc, inst.alias, 8000 + r.randrange(1000), r.choice((256, 512, 1024)), r.randrange(10, 120),
        inst.dc_name, r.getrandbits(128))


def write_dataset(tree, inst, doc_count, bulk_bytes, sz):
    """Writes datasets/<uuid>/: config, TLS, logs, symlinks, empty files,
    `doc_count` JSON documents, and about `bulk_bytes` of service bulk data."""
    seed, svc, alias = inst.seed, inst.svc, inst.alias
    p = PROFILES[svc]
    d = "datasets/%s/" % inst.uuid
    r = detrand.rng(seed, "dataset", alias)
    mt = lambda: detrand.mtime_ns(r)

    tree.write_json(d + "config/config.json", config_json(inst), mt())
    tree.write(d + "config/%s.ini" % svc, config_ini(inst), mt())
    tree.hardlink(d + "config/%s.ini.default" % svc, d + "config/%s.ini" % svc)
    tree.symlink(d + "config/active.json", "config.json", mt())
    tree.write(d + "config/sapi-manifests.json", json.dumps({"sapi": {"template": "/opt/smartdc/%s/sapi_manifests" % svc, "path": "/opt/smartdc/%s/etc/config.json" % svc, "post_cmd": "svcadm restart %s" % svc}}, indent=2) + "\n", mt())
    tree.write(d + ".initialized", b"", mt())
    tree.write(d + "run/%s.lock" % svc, b"", mt(), 0o600)
    tree.chown(d + "run/%s.lock" % svc, NOBODY_UID, NOBODY_UID)
    if p["tls"]:
        tree.write(d + "tls/%s.crt.pem" % svc, pem_block("CERTIFICATE", r.randbytes(r.randrange(900, 1400))), mt())
        tree.write(d + "tls/%s.key.pem" % svc, pem_block("PRIVATE KEY", r.randbytes(r.randrange(1100, 1300))), mt(), 0o600)
        tree.write(d + "tls/ca.pem", pem_block("CERTIFICATE", r.randbytes(1200)) + pem_block("CERTIFICATE", r.randbytes(1100)), mt())
        tree.symlink(d + "tls/current.pem", "%s.crt.pem" % svc, mt())

    # Logs: the current append-only log and its rotations (oldest first).
    log_size = sz["log"]
    n_rot = sz["rotated"]
    t = detrand.BASE_EPOCH_S * 1_000_000_000 - (n_rot + 1) * 86400 * 1_000_000_000
    for i in range(n_rot, 0, -1):
        body = log_lines(r, svc, alias, t, log_size)
        t += 86400 * 1_000_000_000
        tree.write(d + "log/%s.log.%d" % (svc, i - 1), body, t)
    body = log_lines(r, svc, alias, t, log_size)
    tree.write(d + "log/%s.log" % svc, body, detrand.BASE_EPOCH_S * 1_000_000_000 - r.randrange(1, 600) * 1_000_000_000)
    tree.chown(d + "log/%s.log" % svc, NOBODY_UID, NOBODY_UID)
    tree.symlink(d + "log/current", "%s.log" % svc, mt())
    tree.write(d + "log/audit/audit.log", log_lines(r, svc, alias, t, log_size // 4), mt())

    # Documents: <svc>/<bucket>/<2 hex>/<uuid>.json; nested two levels.
    bucket = p["bucket"]
    for i in range(doc_count):
        uuid = detrand.uuid_for(seed, "doc", alias, i)
        doc = json_doc(r, inst, bucket, uuid)
        tree.write(d + "%s/%s/%s/%s.json" % (svc, bucket, uuid[:2], uuid), json.dumps(doc, separators=(",", ":")) + "\n", mt())
    if doc_count:
        tree.write(d + "%s/%s/.empty-marker" % (svc, bucket), b"", mt())

    write_bulk(tree, inst, d, bulk_bytes, r, mt)


def write_bulk(tree, inst, d, nbytes, r, mt):
    """Service-specific large data: imgapi's image store, redis dumps, mnesia
    tables, sdc dumps, asset tarballs, or compressed log archives."""
    seed, svc, alias = inst.seed, inst.svc, inst.alias
    if nbytes <= 0:
        return
    if svc == "imgapi":
        # Large, incompressible image files with their raw manifests.
        n = max(2, min(8, nbytes // (48 << 20) + 2))
        for i in range(n):
            u = detrand.uuid_for(seed, "imgapi-store", alias, i)
            size = nbytes // n
            sha1 = hashlib.sha1()
            tree.write_random(d + "imgapi/images/%s/%s/file0" % (u[:3], u), size, (seed, "imgapi-store-file", alias, i), mt(), hashers=(sha1,))
            tree.write_json(d + "imgapi/manifests/%s.raw" % u, {"v": 2, "uuid": u, "owner": OWNER_UUID, "name": "user-image-%d" % i,
                                                                  "version": "1.0.%d" % i, "state": "active", "type": "zone-dataset",
                                                                  "files": [{"sha1": sha1.hexdigest(), "size": size, "compression": "gzip"}]}, mt())
        tree.symlink(d + "imgapi/manifests/latest.raw", "%s.raw" % u, mt())
    elif svc in ("amonredis", "mahi"):
        tree.write(d + "redis/dump.rdb", redis_dump(r, nbytes * 3 // 4), mt())
        aof = []
        total = 0
        while total < nbytes // 4:
            k = "%s:%08x" % (svc, r.getrandbits(32))
            v = "%x" % r.getrandbits(r.randrange(32, 512))
            line = "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v)
            aof.append(line)
            total += len(line)
        tree.write(d + "redis/appendonly.aof", "".join(aof), mt())
        tree.write(d + "redis/redis.conf", "dir /data/redis\nappendonly yes\nsave 900 1\nmaxmemory 512mb\n", mt())
    elif svc == "rabbitmq":
        node = "rabbit@%s" % alias
        tables = ["rabbit_durable_queue", "rabbit_durable_exchange", "rabbit_runtime_parameters", "rabbit_user", "rabbit_vhost"]
        for i, t in enumerate(tables):
            size = nbytes // len(tables)
            tree.write_random(d + "mnesia/%s/%s.DCD" % (node, t), size * 3 // 4, (seed, "mnesia", alias, t), mt())
            tree.write_random(d + "mnesia/%s/%s.DCL" % (node, t), size // 4, (seed, "mnesia-log", alias, t), mt())
        tree.write(d + ".erlang.cookie", "%020X" % r.getrandbits(80), mt(), 0o400)
    elif svc == "sdc":
        n = max(2, min(48, nbytes // (4 << 20)))
        for i in range(n):
            day = "2026-10-%02d" % (1 + i % 28)
            tree.write_random(d + "sdc/dumps/%s/%s-%02d.json.gz" % (day, ("vmapi_vms", "napi_nics", "cnapi_servers", "ufds_o_smartdc")[i % 4], i),
                              nbytes // n, (seed, "sdc-dump", alias, i), mt())
    elif svc == "assets":
        n = max(2, min(16, nbytes // (8 << 20)))
        for i in range(n):
            tree.write_random(d + "assets/extra/agents/agent-%02d-master-2026.tgz" % i, nbytes // n, (seed, "asset", alias, i), mt())
        tree.symlink(d + "assets/extra/agents/latest.tgz", "agent-%02d-master-2026.tgz" % (n - 1), mt())
    else:
        n = max(1, min(12, nbytes // (2 << 20)))
        for i in range(n):
            tree.write_random(d + "log/archive/%s-2026-10-%02dT00.log.gz" % (svc, 1 + i), nbytes // n, (seed, "archive", alias, i), mt())


# Fixed files each instance's dataset gets besides documents and bulk: used
# to size the document budget.
def fixed_files(svc, sz):
    n = 4 + 1 + 1 + (3 if PROFILES[svc]["tls"] else 0) + sz["rotated"] + 1 + 1
    return n + 2  # vms/<uuid>.json, sapi/<uuid>.json


# ---- A node and a datacenter -------------------------------------------------------

def plan_instances(services, alias_base=0, instances=None):
    """Returns [(svc, alias_index)]: `services` once each, or the first
    `instances` services of RFD 67's list (wrapping to second instances)."""
    if services is None:
        n = instances if instances is not None else len(SERVICES)
        out = []
        for i in range(n):
            out.append((SERVICES[i % len(SERVICES)], alias_base + i // len(SERVICES)))
        return out
    unknown = [s for s in services if s not in PROFILES]
    if unknown:
        raise ValueError("unknown service(s): %s (known: %s)" % (", ".join(unknown), ", ".join(SERVICES)))
    return [(s, alias_base) for s in services]


def node_uuid_for(seed, name):
    return detrand.uuid_for(seed, "node", name)


def generate_node(root, seed, size, node_name, node_uuid, planned, dc_name="coal", ip_base=0):
    """Writes one headnode export into `root` (which must be absent or empty).
    `planned` is [(svc, alias_index)]. Returns a summary dict."""
    if size not in SIZES:
        raise ValueError("unknown size %r (small, medium, bench)" % size)
    sz = SIZES[size]
    if os.path.exists(root) and os.listdir(root):
        raise FileExistsError("%s exists and is not empty" % root)
    os.makedirs(root, exist_ok=True)
    tree = Tree(root)
    insts = [Instance(seed, svc, "%s%d" % (svc, idx), ip_base + i, node_name, node_uuid, dc_name)
             for i, (svc, idx) in enumerate(planned)]

    # File and bulk budgets split by service weight.
    fixed = sum(fixed_files(i.svc, sz) for i in insts)
    n_images = len({i.svc for i in insts}) * 2 + 4
    doc_budget = max(0, sz["files"] - fixed - n_images - 16)
    doc_w = sum(PROFILES[i.svc]["docs"] for i in insts) or 1
    bulk_w = sum(PROFILES[i.svc]["bulk"] for i in insts) or 1

    meta_mt = detrand.BASE_EPOCH_S * 1_000_000_000 - 3600 * 1_000_000_000
    tree.write_json("sapi/application.json", sapi_application(seed, dc_name), meta_mt)
    for svc in sorted({i.svc for i in insts}):
        tree.write_json("sapi/services/%s.json" % svc, sapi_service(seed, svc, dc_name), meta_mt)
    for inst in insts:
        write_image_chain(tree, seed, inst.svc, sz)
        vm = vm_payload(inst)
        tree.write_json("vms/%s.json" % inst.uuid, vm, meta_mt)
        tree.write_json("sapi/%s.json" % inst.uuid, sapi_instance(inst), meta_mt)
        docs = doc_budget * PROFILES[inst.svc]["docs"] // doc_w
        bulk = sz["bulk"] * PROFILES[inst.svc]["bulk"] // bulk_w
        write_dataset(tree, inst, docs, bulk, sz)
    tree.finish()
    return {
        "name": node_name,
        "uuid": node_uuid,
        "root": os.path.abspath(root),
        "files": tree.files,
        "symlinks": tree.symlinks,
        "bytes": tree.bytes,
        "instances": [{"uuid": i.uuid, "alias": i.alias, "service": i.svc, "image_uuid": i.image_uuid,
                       "admin_ip": "10.99.99.%d" % (20 + i.index)} for i in insts],
    }


def dc_layout(n_nodes):
    if n_nodes == 3:
        return DC3_LAYOUT
    layout = [[] for _ in range(n_nodes)]
    for i, svc in enumerate(SERVICES):
        layout[i % n_nodes].append(svc)
    return layout


def generate_dc(root, seed, size, n_nodes=3, dc_name="coal"):
    """Writes root/headnode0..N-1 (disjoint services, one SAPI application) and
    root/dc.json describing them. Returns the dc.json object."""
    if os.path.exists(root) and os.listdir(root):
        raise FileExistsError("%s exists and is not empty" % root)
    nodes = []
    ip_base = 0
    for n, services in enumerate(dc_layout(n_nodes)):
        name = "headnode%d" % n
        summary = generate_node(os.path.join(root, name), seed, size, name, node_uuid_for(seed, name),
                                plan_instances(services), dc_name, ip_base)
        summary["root"] = name
        ip_base += len(services)
        nodes.append(summary)
    dc = {"datacenter": dc_name, "seed": seed, "size": size, "sapi_application_uuid": application_uuid(seed),
          "nodes": nodes}
    with open(os.path.join(root, "dc.json"), "w") as f:
        json.dump(dc, f, indent=2)
        f.write("\n")
    detrand.set_mtime(os.path.join(root, "dc.json"), detrand.BASE_EPOCH_S * 1_000_000_000)
    return dc


def remove_tree(root):
    if os.path.exists(root):
        shutil.rmtree(root)
