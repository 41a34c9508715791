"""Migrations through the REST API against the real embedded stack (SQLite and PostgreSQL).

They hold on either engine path (``STERNA_MIGRATIONS_ON_TRANSFERS``): a migration leaves nothing
behind, neither scratch files nor, on transfers, replica disks (``REPLICAS``) or a deployment; what
a migration on transfers is made of is ``tests/api/test_migrations_on_transfers.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import RunningStack, task, wait_final, wait_for
from tests.helpers import endpoints, identical, inventories, running_task, start_slow_migration
from workflows.types import TASK_ORDER

pytestmark = pytest.mark.slow

#: where the local provider keeps a transfer's replica disks (``providers.local``)
REPLICAS = ".sterna-replicas"


def test_migration_completes_with_every_task_and_full_progress(stack: RunningStack) -> None:
    src, dst = inventories(stack, ["vm-a"])
    with stack.client() as api:
        origin, dest = endpoints(api, src, dst)
        m = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
                                 destination_environment={"flavor_name": "m1.small"},
                                 network_map={"VM Network": "br0"}, notes="e2e")
        assert m["last_execution_status"] == "RUNNING"
        assert [t["task_type"] for t in m["tasks"]] == [t.value for t in TASK_ORDER]
        final = wait_final(api, m["id"])
    assert final["last_execution_status"] == "COMPLETED"
    assert {t["status"] for t in final["tasks"]} == {"COMPLETED"}
    for t in final["tasks"]:
        for p in t["progress_updates"]:
            assert p["total_steps"] and p["current_step"] == p["total_steps"], (t["task_type"], p)
    export = task(final, "vm-a", "REPLICATE_DISKS")
    assert export["progress_updates"], "the export reports progress"
    assert identical(src / "vm-a" / "disk-0.raw", dst / "vm-a" / "disk-0.qcow2")
    domain = (dst / "vm-a" / "domain.xml").read_text()
    assert "<vcpu>1</vcpu>" in domain and '<memory unit="MiB">2048</memory>' in domain  # m1.small
    assert 'network="br0"' in domain and 'bus="virtio"' in domain
    assert final["transfer_result"]["vm-a"]["details"]["path"] == str(dst / "vm-a")
    # The scratch space of the migration is gone, and no replica disk stays at the destination.
    assert not (Path(stack.settings.scratch) / m["id"] / "vm-a").exists()
    assert not (dst / REPLICAS).exists()



def test_skipped_os_morphing_says_so_on_its_task(stack: RunningStack) -> None:
    """What a user reads on OS_MORPHING when it did not run. On transfers the deployment has no such task
    (as in Coriolis): its overlay step records the event, and the migration view shows it here."""
    src, dst = inventories(stack, ["vm-a"], data_mib=2)
    with stack.client() as api:
        origin, dest = endpoints(api, src, dst)
        m = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
                                 skip_os_morphing=True)
        final = wait_final(api, m["id"])
    assert final["last_execution_status"] == "COMPLETED", [t["exception_details"] for t in final["tasks"]]
    morph = task(final, "vm-a", "OS_MORPHING")
    assert morph["status"] == "COMPLETED"
    assert [e["message"] for e in morph["events"]] == ["OS morphing skipped: skip_os_morphing is set"]
    said = [t["task_type"] for t in final["tasks"] for e in t["events"] if "skip_os_morphing" in e["message"]]
    assert said == ["OS_MORPHING"], "said once, on OS_MORPHING"
    assert identical(src / "vm-a" / "disk-0.raw", dst / "vm-a" / "disk-0.qcow2")
    # the replica's overlay became a standalone qcow2 through the engine's own writer, which verifies it
    events = [e["message"] for t in final["tasks"] for e in t["events"]]
    assert any("to qcow2, every chunk read back and verified" in e for e in events), events

def test_seed_inline_form_runs_four_instances_in_parallel(stack: RunningStack) -> None:
    vms = ["vm-a", "vm-b", "vm-c", "vm-d"]
    src, dst = inventories(stack, vms, data_mib=24)
    body = {
        "origin": {"type": "local", "connection_info": {"path": str(src)}},
        "destination": {"type": "local", "connection_info": {"path": str(dst)},
                        "target_environment": {"flavor_name": "m1.small", "network_map": {"VM Network": "private"}}},
        "instances": vms,
        # 8 MiB/s per transfer: each export lasts ~3 s, long enough to see them overlap.
        "source_environment": {"bandwidth_limit": 8 * 1024 * 1024},
    }
    with stack.client() as api:
        m = api._call("POST", "/migrations", {"migration": body})["migration"]
        peak = 0

        def all_exporting() -> bool:
            nonlocal peak
            cur = api.get_migration(m["id"])
            running = {t["instance"] for t in cur["tasks"]
                       if t["task_type"] == "REPLICATE_DISKS" and t["status"] == "RUNNING"}
            peak = max(peak, len(running))
            return peak == len(vms) or cur["last_execution_status"] != "RUNNING"

        wait_for(all_exporting, 120, 0.1, "four exports running at once")
        final = wait_final(api, m["id"])
    assert peak == 4, f"at most {peak} instances exported at the same time"
    assert final["last_execution_status"] == "COMPLETED"
    for vm in vms:
        assert identical(src / vm / "disk-0.raw", dst / vm / "disk-0.qcow2")
        assert 'network="private"' in (dst / vm / "domain.xml").read_text()
    assert not (dst / REPLICAS).exists()


def test_cancel_during_export_cleans_up_and_allows_delete(stack: RunningStack) -> None:
    src, dst = inventories(stack, ["vm-a"], data_mib=48)
    with stack.client() as api:
        m = start_slow_migration(api, src, dst, limit_mib=4)
        scratch = Path(stack.settings.scratch) / m["id"] / "vm-a"
        # The copy keeps files in the migration's scratch space (the export, or the replication's checkpoint).
        assert any(scratch.iterdir())
        api.cancel_migration(m["id"])
        assert api.get_migration(m["id"])["last_execution_status"] in ("CANCELLING", "CANCELED")
        final = wait_final(api, m["id"], timeout=60)
        assert final["last_execution_status"] == "CANCELED"
        assert task(final, "vm-a", "REPLICATE_DISKS")["status"] == "CANCELED"
        assert task(final, "vm-a", "OS_MORPHING")["status"] == "UNSCHEDULED"
        assert task(final, "vm-a", "CLEANUP_MIGRATION_RESOURCES")["status"] == "COMPLETED"
        assert not scratch.exists(), "scratch files are removed"
        assert not (dst / "vm-a").exists(), "no target files are left"
        assert not (dst / REPLICAS).exists(), "no replica disk is left"
        assert [d for d in api.list_deployments() if d["transfer_id"] == m["id"]] == [], "nothing was deployed"
        api.delete_migration(m["id"])
        assert m["id"] not in [x["id"] for x in api.list_migrations()]
        assert m["id"] not in [t["id"] for t in api.list_transfers()]


def test_delete_of_running_migration_is_refused_and_changes_nothing(stack: RunningStack) -> None:
    src, dst = inventories(stack, ["vm-a"], data_mib=16)
    with stack.client() as api:
        origin, dest = endpoints(api, src, dst)
        m = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
                                 source_environment={"bandwidth_limit": 4 * 1024 * 1024})
        wait_for(lambda: running_task(api.get_migration(m["id"]), "REPLICATE_DISKS"), 60, 0.1)
        r = api.http.delete(f"/migrations/{m['id']}")
        # Coriolis's InvalidMigrationState: 400
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["code"] == 400 and err["fault"] == "badRequest"
        assert err["message"].startswith("InvalidState: ") and "only COMPLETED, ERROR or CANCELED" in err["message"]
        assert m["id"] in [x["id"] for x in api.list_migrations()]
        final = wait_final(api, m["id"])
        assert final["last_execution_status"] == "COMPLETED"
        assert identical(src / "vm-a" / "disk-0.raw", dst / "vm-a" / "disk-0.qcow2")


def test_force_cancel_terminates_and_still_cleans_up(stack: RunningStack) -> None:
    src, dst = inventories(stack, ["vm-a"], data_mib=48)
    with stack.client() as api:
        m = start_slow_migration(api, src, dst, limit_mib=4)
        scratch = Path(stack.settings.scratch) / m["id"] / "vm-a"
        api.cancel_migration(m["id"], force=True)
        now = api.get_migration(m["id"])
        assert now["last_execution_status"] == "CANCELED"
        assert task(now, "vm-a", "REPLICATE_DISKS")["status"] == "FORCE_CANCELED"
        cleaned = wait_for(
            lambda: task(cur := api.get_migration(m["id"]), "vm-a", "CLEANUP_MIGRATION_RESOURCES")["status"]
            == "COMPLETED" and cur, 60, 0.2, "forced cleanup")
        assert cleaned["last_execution_status"] == "CANCELED"
        assert not scratch.exists()
        assert not (dst / "vm-a").exists()
        r = api.http.post(f"/migrations/{m['id']}/actions", json={"cancel": None})
        assert r.status_code == 400 and "nothing to cancel" in r.json()["error"]["message"]
        api.delete_migration(m["id"])
        # Terminated, a transfer's execution never reached its end: the DELETE removes the replica it left.
        assert not (dst / REPLICAS).exists()
