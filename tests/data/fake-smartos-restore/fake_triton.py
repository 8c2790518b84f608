"""Shared state of the fake Triton APIs (sdc-vmapi, sdc-sapi, sdc-napi).

State under $FAKE_SMARTOS_STATE:
  vmapi/vms/<uuid>.json   VMAPI records stored by PUT /vms/<uuid> (or seeded
                          by a test); they win over the fake vmadm's VMs
  cnapi/servers/<uuid>    a server CNAPI lists; the file holds its status
                          ("running", "unknown", ...)
  napi/<mac>.json         NAPI NICs (see sdc-napi)
  sapi/<uuid>.json        SAPI instances (see sdc-sapi)
  wfapi/jobs/<uuid>.json  finished destroy jobs: {"vm_uuid", "execution", "name"}
  napi-deleted.log        one line per NIC a destroy job deleted

Facts (docs/triton-sapi-vmapi-facts.md, "Cleaning up a lost instance's
records"):
- VMAPI DeleteVm (sdc-vmapi lib/endpoints/vms.js deleteVm): 404 for an
  unknown VM, 409 ConflictError without server_uuid, else 202 with job_uuid
  whatever the VM's state (destroyed included).
- The destroy job (sdc-vmapi lib/workflows/destroy.js): CNAPI VmDestroy has
  serverRunning: true (sdc-cnapi lib/endpoints/vms.js, lib/errors.js), so a
  server CNAPI lists as not running fails the job with ServerNotRunning before
  anything changes. On a running server, a VM that no longer exists is a
  success (sdc-cn-agent machine_destroy.js); the job marks the VM destroyed
  and napi.remove_nics deletes every MAC the record lists
  (job.currentVm.nics[].mac), with no ownership check, ignoring 404.
- A server CNAPI no longer lists fails acquire_vm_ticket with a CNAPI 404.
  Whether SAPI then sees ResourceNotFoundError is unverified (facts doc,
  "CNAPI ServerDelete"); the fake assumes it does, so SAPI's DELETE
  succeeds, and nothing else changes.
"""
import datetime
import json
import os
import sys
import uuid as uuidlib

STATE = os.environ["FAKE_SMARTOS_STATE"]


def path(*parts):
    return os.path.join(STATE, *parts)


def load(p):
    with open(p) as f:
        return json.load(f)


def save(p, obj):
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "w") as f:
        json.dump(obj, f, indent=2)


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def vm_record_path(vm_uuid):
    return path("vmapi", "vms", vm_uuid + ".json")


def put_vm(vm_uuid, body_file):
    """PutVm (sdc-vmapi putVm, translateVm, moray.putVm/markAsDestroyed):
    the body replaces the whole record (absent fields are gone, null and ''
    values dropped), the uuid comes from the path, an unknown uuid is
    created, state "destroyed" also sets zone_state and destroyed. No NAPI
    effect."""
    body = load(body_file)
    vm = {k: v for k, v in body.items() if v is not None and v != ""}
    vm["uuid"] = vm_uuid
    if vm.get("state") == "destroyed":
        vm["zone_state"] = "destroyed"
        vm["destroyed"] = now_iso()
    save(vm_record_path(vm_uuid), vm)
    return 200, vm


def server_status(server_uuid):
    """The CNAPI status of a server, None when CNAPI does not list it."""
    p = path("cnapi", "servers", server_uuid)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return f.read().strip()


def delete_vm(vm_uuid):
    """DeleteVm and its destroy job, run at once: (status, body, job)."""
    p = vm_record_path(vm_uuid)
    if not os.path.exists(p):
        return 404, {"code": "ResourceNotFound", "message": "VM not found"}, None
    vm = load(p)
    server = vm.get("server_uuid")
    if not server:
        return 409, {"code": "Conflict", "message": "Cannot delete a VM with no server_uuid"}, None
    job = {"uuid": str(uuidlib.uuid4()), "vm_uuid": vm_uuid}
    status = server_status(server)
    if status is None:
        job.update(execution="failed", name="ResourceNotFoundError",
                   message="Server %s not found" % server)
    elif status != "running":
        job.update(execution="failed", name="ServerNotRunning",
                   message="Server %s is not running" % server)
    else:
        for nic in vm.get("nics") or []:
            mac = str(nic.get("mac", "")).replace(":", "").lower()
            nic_path = path("napi", mac + ".json")
            if mac and os.path.exists(nic_path):
                os.remove(nic_path)
                with open(path("napi-deleted.log"), "a") as f:
                    f.write("destroy job of %s deleted NIC %s\n" % (vm_uuid, mac))
        vm["state"] = vm["zone_state"] = "destroyed"
        vm["destroyed"] = now_iso()
        save(p, vm)
        job.update(execution="succeeded")
    save(path("wfapi", "jobs", job["uuid"] + ".json"), job)
    return 202, {"vm_uuid": vm_uuid, "job_uuid": job["uuid"]}, job


def main():
    cmd = sys.argv[1]
    if cmd == "put-vm":
        status, body = put_vm(sys.argv[2], sys.argv[3])
    elif cmd == "delete-vm":
        status, body, _ = delete_vm(sys.argv[2])
    elif cmd == "sapi-delete":
        # DeleteInstance (sdc-sapi lib/server/model.js delInstance,
        # vmapiplus.js deleteVm): 404 for an unknown instance; VMAPI DeleteVm,
        # waiting for the job; a job failing with other than
        # ResourceNotFoundError is 500 DestroyFailed and the record stays; else
        # 204 and the record is deleted. (A DeleteVm refused outright, 404 or
        # 409, is not in the facts doc; the fake answers 500 and keeps the
        # record too.)
        inst = sys.argv[2]
        p = path("sapi", inst + ".json")
        if not os.path.exists(p):
            status, body = 404, {"code": "ResourceNotFound",
                                 "message": "no such instance: " + inst}
        else:
            vm_status, vm_body, job = delete_vm(inst)
            if vm_status != 202 or (job["execution"] == "failed" and
                                    job["name"] != "ResourceNotFoundError"):
                why = job["message"] if job else vm_body["message"]
                status, body = 500, {"code": "DestroyFailed",
                                     "message": "failed to destroy VM %s: %s" % (inst, why)}
            else:
                os.remove(p)
                status, body = 204, None
    else:
        sys.exit("fake_triton.py: unknown command " + cmd)
    print("%d\t%s" % (status, "" if body is None else json.dumps(body)))


if __name__ == "__main__":
    main()
