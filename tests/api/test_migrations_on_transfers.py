"""Migrations that run as a ``live_migration`` transfer plus one ``auto_deploy`` execution (issue 13).

The API is restarted with ``STERNA_MIGRATIONS_ON_TRANSFERS`` on for this module (the default, spelled
out so that the module says what it tests whatever the default). What a migration does (complete, run
instances in parallel, cancel, force-cancel, refuse a DELETE while it runs, leave nothing behind) is
``tests/api/test_migrations.py``, whose tests hold on either path; the ones at the end of this module
run them on the one-shot path, which ``STERNA_MIGRATIONS_ON_TRANSFERS=false`` keeps for one release
(and which runs started before an upgrade finish on). The rest holds a migration to the transfer and
the deployment it is made of.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client.sdk import SternaClient
from tests.api import test_migrations as either_path
from tests.conftest import RunningStack, task, wait_final
from tests.helpers import api_env, endpoints, identical, inventories
from tests.leftovers import migration_workflows
from workflows.types import TASK_ORDER

pytestmark = pytest.mark.slow

#: where the local provider keeps a transfer's replica disks (``providers.local``)
REPLICAS = ".sterna-replicas"


@pytest.fixture(scope="module")
def on_transfers(stack: RunningStack) -> Iterator[RunningStack]:
    with api_env(stack, STERNA_MIGRATIONS_ON_TRANSFERS="1"):
        yield stack


def _parts(api: SternaClient, migration_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The transfer a migration is (same id) and the deployments made from it."""
    transfer = api.get_transfer(migration_id)
    deployments = [d for d in api.list_deployments() if d["transfer_id"] == migration_id]
    return transfer, deployments


def test_migration_is_a_live_migration_transfer_deployed_once(on_transfers: RunningStack) -> None:
    stack = on_transfers
    src, dst = inventories(stack, ["vm-a"])
    with stack.client() as api:
        origin, dest = endpoints(api, src, dst)
        m = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
                                 destination_environment={"flavor_name": "m1.small"},
                                 network_map={"VM Network": "br0"}, notes="e2e")
        assert m["last_execution_status"] == "RUNNING"
        assert [t["task_type"] for t in m["tasks"]] == [t.value for t in TASK_ORDER]
        final = wait_final(api, m["id"])
        transfer, deployments = _parts(api, m["id"])
        listed = [t["id"] for t in api.list_transfers()]
        replicas = [r["id"] for r in api._call("GET", "/replicas")["replicas"]]
    assert final["last_execution_status"] == "COMPLETED"
    assert {t["status"] for t in final["tasks"]} == {"COMPLETED"}
    for t in final["tasks"]:
        for p in t["progress_updates"]:
            assert p["total_steps"] and p["current_step"] == p["total_steps"], (t["task_type"], p)
    assert task(final, "vm-a", "REPLICATE_DISKS")["progress_updates"], "the replication reports progress"
    assert identical(src / "vm-a" / "disk-0.raw", dst / "vm-a" / "disk-0.qcow2")
    domain = (dst / "vm-a" / "domain.xml").read_text()
    assert "<vcpu>1</vcpu>" in domain and '<memory unit="MiB">2048</memory>' in domain  # m1.small
    assert 'network="br0"' in domain and 'bus="virtio"' in domain
    assert final["transfer_result"]["vm-a"]["details"]["path"] == str(dst / "vm-a")

    # What it is made of: one live_migration transfer (the same id), one execution, one deployment by it.
    assert transfer["scenario"] == "live_migration" and final["transfer_id"] == m["id"]
    assert [(e["type"], e["status"]) for e in transfer["executions"]] == [("transfer_execution", "COMPLETED")]
    assert len(deployments) == 1
    deployment = deployments[0]
    assert deployment["deployer_id"] == transfer["executions"][0]["id"]
    assert deployment["last_execution_status"] == "COMPLETED"
    # The legacy tasks are the execution's and the deployment's own.
    execution_ids = {t["execution_id"] for t in final["tasks"]}
    assert execution_ids == {transfer["executions"][0]["id"], deployment["executions"][0]["id"]}
    # Coriolis lists a live migration with the transfers; the old /replicas clients list it as a migration.
    assert m["id"] in listed and m["id"] not in replicas
    # Deployed once: nothing of it stays in scratch, and its replica disks are gone.
    for action in (m["id"], deployment["id"]):
        assert not (Path(stack.settings.scratch) / action / "vm-a").exists()
    assert not (dst / REPLICAS).exists()
    # One engine path: Temporal ran the transfer's workflows under the migration's root, nothing one-shot.
    assert {w.workflow_type for w in migration_workflows(stack, m["id"])} == {
        "TransferExecutionWorkflow", "TransferInstanceWorkflow", "DeploymentWorkflow", "DeploymentInstanceWorkflow"}


@pytest.fixture
def one_shot(on_transfers: RunningStack) -> Iterator[RunningStack]:
    with api_env(on_transfers, STERNA_MIGRATIONS_ON_TRANSFERS="false"):
        yield on_transfers


# What test_migrations.py proves on the default path (transfers), on the one-shot path kept for one release.
def test_four_instances_run_in_parallel_one_shot(one_shot: RunningStack) -> None:
    either_path.test_seed_inline_form_runs_four_instances_in_parallel(one_shot)


def test_cancel_cleans_up_and_allows_delete_one_shot(one_shot: RunningStack) -> None:
    either_path.test_cancel_during_export_cleans_up_and_allows_delete(one_shot)


def test_delete_of_running_migration_is_refused_one_shot(one_shot: RunningStack) -> None:
    either_path.test_delete_of_running_migration_is_refused_and_changes_nothing(one_shot)


def test_force_cancel_terminates_and_still_cleans_up_one_shot(one_shot: RunningStack) -> None:
    either_path.test_force_cancel_terminates_and_still_cleans_up(one_shot)


def test_setting_off_brings_back_the_one_shot_migration(on_transfers: RunningStack) -> None:
    """``STERNA_MIGRATIONS_ON_TRANSFERS=false`` (kept for one release): no transfer, the one-shot workflow."""
    stack = on_transfers
    src, dst = inventories(stack, ["vm-a"], data_mib=4)
    with api_env(stack, STERNA_MIGRATIONS_ON_TRANSFERS="false"), stack.client() as api:
        origin, dest = endpoints(api, src, dst)
        m = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
                                 skip_os_morphing=True)
        final = wait_final(api, m["id"])
        transfers = [t["id"] for t in api.list_transfers()]
    assert m["transfer_id"] is None and m["id"] not in transfers
    assert final["last_execution_status"] == "COMPLETED", [t["exception_details"] for t in final["tasks"]]
    assert identical(src / "vm-a" / "disk-0.raw", dst / "vm-a" / "disk-0.qcow2")
    assert {w.workflow_type for w in migration_workflows(stack, m["id"])} == {
        "MigrationWorkflow", "InstanceMigrationWorkflow"}
