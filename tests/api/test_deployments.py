"""Deployments and their replica: cancel leaves it intact, ``clone_disks: false`` consumes it (local -> local)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.test_transfers import error_of, new_transfer, replica_of, same_bytes, sha256, task_of
from tests.conftest import RunningStack, wait_for
from tests.helpers import endpoints, identical, inventories

pytestmark = pytest.mark.slow


def _volume(api: object, transfer_id: str) -> dict[str, object]:
    info = api.get_transfer(transfer_id, include_task_info=True)["info"]  # type: ignore[attr-defined]
    return dict(info["vm-a"]["volumes_info"][0]["replica_state"])


def test_cancelled_deployment_leaves_no_instance_and_an_intact_replica(stack: RunningStack) -> None:
    src, dst = inventories(stack, ["vm-a"], data_mib=4)
    with stack.client() as api:
        # The sample disk has no OS: a forced boot check waits for a guest that never comes (QEMU
        # idles in the BIOS), which holds the deployment in FINALIZE long enough to cancel it there,
        # after the instance was created at the destination.
        origin, dest = endpoints(api, src, dst)
        t = api.create_transfer(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
                                skip_os_morphing=True,
                                destination_environment={"verify_boot": True, "boot_timeout": 12})
        assert api.wait_execution(t["id"], api.execute_transfer(t["id"])["id"], 300)["status"] == "COMPLETED"
        replica = replica_of(dst, t["id"])
        digest = sha256(replica)
        d = api.create_deployment(t["id"])

        def finalizing() -> bool:
            task = task_of(api.get_deployment(d["id"]), "FINALIZE_INSTANCE_DEPLOYMENT")
            return task["status"] == "RUNNING" and any("deployed" in e["message"] for e in task["events"])

        wait_for(finalizing, 120, 0.1, "the deployment's instance created, its boot check under way")
        assert (dst / "vm-a" / "domain.xml").exists()
        assert "active deployment" in error_of(api.http.post(f"/transfers/{t['id']}/executions",
                                                             json={"execution": {}}), 400)
        api.cancel_deployment(d["id"])
        final = api.wait_deployment(d["id"], 120)
        assert final["last_execution_status"] == "CANCELED", final
        assert task_of(final, "FINALIZE_INSTANCE_DEPLOYMENT")["status"] == "CANCELED"
        assert task_of(final, "DELETE_TRANSFER_TARGET_DISK_SNAPSHOTS")["status"] == "COMPLETED"
        assert not (dst / "vm-a").exists(), "no instance is left at the destination"
        assert not (Path(stack.settings.scratch) / d["id"]).exists(), "the overlay went with the scratch space"
        assert sha256(replica) == digest, "the replica is intact"
        assert _volume(api, t["id"])["trusted"] is True

        # The same transfer deploys again, from the untouched replica.
        api.update_transfer(t["id"], destination_environment={"verify_boot": False})
        again = api.wait_deployment(api.create_deployment(t["id"])["id"], 300)
        assert again["last_execution_status"] == "COMPLETED", again
        assert identical(replica, dst / "vm-a" / "disk-0.qcow2")
        assert sha256(replica) == digest


def test_clone_disks_false_deploys_on_the_replica_and_consumes_it(stack: RunningStack) -> None:
    src, dst = inventories(stack, ["vm-a"], data_mib=2)
    source = src / "vm-a" / "disk-0.raw"
    with stack.client() as api:
        t = new_transfer(api, src, dst)
        assert api.wait_execution(t["id"], api.execute_transfer(t["id"])["id"], 300)["status"] == "COMPLETED"
        replica = replica_of(dst, t["id"])
        d = api.wait_deployment(api.create_deployment(t["id"], clone_disks=False)["id"], 300)
        assert d["last_execution_status"] == "COMPLETED", d
        assert d["clone_disks"] is False
        events = [e["message"] for e in task_of(d, "CREATE_TRANSFER_DISK_SNAPSHOTS")["events"]]
        assert any("deploying on replica" in m for m in events), events
        assert not any("overlay" in m for m in events), events
        assert identical(source, dst / "vm-a" / "disk-0.qcow2")
        # Consumed: no deployment trusts it until an execution has re-synced it in full.
        assert _volume(api, t["id"])["trusted"] is False
        assert "executed anew" in error_of(api.http.post("/deployments", json={"deployment": {
            "transfer_id": t["id"], "clone_disks": None}}), 400)
        e = api.wait_execution(t["id"], api.execute_transfer(t["id"])["id"], 300)
        assert e["status"] == "COMPLETED", e
        assert any("Full sync" in ev["message"] for ev in task_of(e, "REPLICATE_DISKS")["events"])
        assert same_bytes(source, replica)
        assert _volume(api, t["id"])["trusted"] is True
