"""Migrations that run as transfers, in the record DB (both backends): one row with the migration's id,
its status from the execution and then the deployment, deletion only once both are done, replicas
spent by the deployment, and the legacy ``/replicas`` listing without them."""

from __future__ import annotations

import uuid

import pytest

from core.errors import InvalidState, NotFound
from core.tasks import TransferTask
from store.repo import Store
from workflows.types import Status


def _live(store: Store) -> tuple[str, str]:
    a = store.create_endpoint(project_id="p", user_id=None, name="a", type="local", connection_info={"path": "/a"})
    b = store.create_endpoint(project_id="p", user_id=None, name="b", type="local", connection_info={"path": "/b"})
    mid, eid = str(uuid.uuid4()), str(uuid.uuid4())
    store.create_live_migration(
        dict(project_id="p", origin_endpoint_id=a.id, destination_endpoint_id=b.id, instances=["vm"]),
        migration_id=mid, execution_id=eid, task_types=[t.value for t in TransferTask],
        workflow_id=f"migration-{mid}")
    return mid, eid


def _deploy(store: Store, mid: str, eid: str) -> str:
    # A deployment needs a trusted replica of each instance.
    store.distrust_replica(mid, "vm", "disk-0", path="/b/r.raw", fmt="raw", size_bytes=1, chunk_size=1,
                           execution_id=eid, full=True)
    store.trust_replica(mid, "vm", "disk-0", b"", eid)
    did = str(uuid.uuid4())
    store.create_deployment(mid, did, str(uuid.uuid4()), workflow_id=f"deployment-{did}", user_id=None,
                            options={}, deployer_id=eid)
    return did


def test_status_is_the_execution_then_the_deployment(store: Store) -> None:
    mid, eid = _live(store)
    parts = store.live_migration("p", mid)
    assert parts.transfer.scenario == "live_migration" and parts.execution is not None
    assert parts.execution.id == eid and parts.deployment is None
    assert parts.status == Status.RUNNING
    store.set_execution_status(mid, eid, Status.COMPLETED)
    # The execution is done and its deployment not written yet: the migration still runs.
    assert store.live_migration("p", mid).status == Status.RUNNING
    did = _deploy(store, mid, eid)
    parts = store.live_migration("p", mid)
    assert parts.deployment is not None and parts.deployment.id == did and parts.status == Status.RUNNING
    deployment_execution = parts.deployment.executions[0].id
    store.set_execution_status(did, deployment_execution, Status.ERROR)
    assert store.live_migration("p", mid).status == Status.ERROR
    with pytest.raises(NotFound):
        store.live_migration("other-project", mid)


def test_delete_is_refused_until_the_deployment_ends(store: Store) -> None:
    mid, eid = _live(store)
    with pytest.raises(InvalidState, match="only COMPLETED, ERROR or CANCELED"):
        store.delete_live_migration("p", mid)
    store.set_execution_status(mid, eid, Status.COMPLETED)
    did = _deploy(store, mid, eid)
    with pytest.raises(InvalidState, match="RUNNING"):
        store.delete_live_migration("p", mid)
    deployment = store.live_migration("p", mid).deployment
    assert deployment is not None
    store.set_execution_status(did, deployment.executions[0].id, Status.COMPLETED)
    store.delete_live_migration("p", mid)
    assert store.action_row(mid).deleted
    assert store.action_row(did).deleted
    assert mid not in [p.transfer.id for p in store.list_live_migrations("p")]


def test_replicas_are_spent_by_the_deployment_or_a_failed_execution(store: Store) -> None:
    mid, eid = _live(store)
    assert store.spent_replicas(mid, Status.RUNNING) is None
    # A completed execution hands its replicas to the deployment that follows.
    assert store.spent_replicas(mid, Status.COMPLETED) is None
    for status in (Status.ERROR, Status.CANCELED):
        spent = store.spent_replicas(mid, status)
        assert spent is not None and spent.id == mid
    store.set_execution_status(mid, eid, Status.COMPLETED)
    did = _deploy(store, mid, eid)
    for status in (Status.COMPLETED, Status.ERROR):
        spent = store.spent_replicas(did, status)
        assert spent is not None and spent.id == mid


def test_other_transfers_keep_their_replicas_and_replicas_listing_hides_migrations(store: Store) -> None:
    mid, _ = _live(store)
    a = store.create_endpoint(project_id="p", user_id=None, name="c", type="local", connection_info={"path": "/c"})
    b = store.create_endpoint(project_id="p", user_id=None, name="d", type="local", connection_info={"path": "/d"})
    plain = store.create_action(dict(type="transfer", scenario="replica", project_id="p", origin_endpoint_id=a.id,
                                     destination_endpoint_id=b.id, instances=["vm"], info={}))
    assert store.spent_replicas(plain.id, Status.ERROR) is None
    assert {r.id for r in store.list_actions("transfer", "p")} == {mid, plain.id}
    assert {r.id for r in store.list_actions("transfer", "p", hide_migrations=True)} == {plain.id}
