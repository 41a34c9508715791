"""The record DB on both backends: schema upgrade, encryption at rest, state rules."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from core.errors import Conflict, NotFound
from store.repo import Store
from workflows.types import TASK_ORDER, Status


def _migration(store: Store) -> str:
    a = store.create_endpoint(project_id="p", user_id=None, name="a", type="local",
                              connection_info={"path": "/a", "password": "pw-plain-text"})
    b = store.create_endpoint(project_id="p", user_id=None, name="b", type="local", connection_info={"path": "/b"})
    m = store.create_migration(
        fields=dict(project_id="p", origin_endpoint_id=a.id, destination_endpoint_id=b.id, instances=["vm"]),
        plan=[("vm", t.value) for t in TASK_ORDER],
    )
    return m.id


def test_connection_info_is_encrypted_at_rest(store: Store) -> None:
    mid = _migration(store)
    with store.db.engine.connect() as conn:
        raw = " ".join(str(r) for r in conn.execute(text("SELECT connection_info_enc FROM endpoints")))
    assert "pw-plain-text" not in raw and "/a" not in raw
    origin = store.get_migration(None, mid).origin_endpoint_id
    assert store.connection_info(origin)["password"] == "pw-plain-text"


def test_tasks_are_created_in_order_with_dependencies(store: Store) -> None:
    mid = _migration(store)
    tasks = store.tasks_of(mid)
    assert [t.task_type for t in tasks] == [t.value for t in TASK_ORDER]
    assert all(t.status == Status.SCHEDULED for t in tasks)
    assert tasks[1].depends_on == [tasks[0].id]


def test_delete_only_when_finished(store: Store) -> None:
    mid = _migration(store)
    with pytest.raises(Conflict, match="RUNNING"):
        store.delete_migration("p", mid)
    assert store.get_migration("p", mid).deleted is False
    store.set_migration_status(mid, Status.COMPLETED)
    # A late CANCELLING must not reopen a finished migration.
    store.set_migration_status(mid, Status.CANCELLING)
    assert store.get_migration(None, mid).last_execution_status == Status.COMPLETED
    store.delete_migration("p", mid)
    with pytest.raises(NotFound):
        store.get_migration("p", mid)


def test_project_scoping(store: Store) -> None:
    mid = _migration(store)
    with pytest.raises(NotFound):
        store.get_migration("other", mid)
    assert store.list_migrations("other") == []
    assert [m.id for m in store.list_migrations("p")] == [mid]


def test_progress_rows_are_updated_in_place(store: Store) -> None:
    mid = _migration(store)
    tid = store.task_id(mid, "vm", "REPLICATE_DISKS")
    index = store.start_progress(tid, "Exporting disk-0", 100)
    assert store.start_progress(tid, "Exporting disk-0", 100) == index  # a retry continues its row
    store.update_progress(tid, index, 40)
    store.update_progress(tid, index, 100)
    task = next(t for t in store.get_migration(None, mid).executions[0].tasks if t.id == tid)
    assert [(p.current_step, p.total_steps) for p in task.progress_updates] == [(100, 100)]


def test_discard_leaves_no_trace(store: Store) -> None:
    mid = _migration(store)
    store.discard_migration(mid)
    with pytest.raises(NotFound):
        store.get_migration(None, mid)
    assert store.tasks_of(mid) == []
