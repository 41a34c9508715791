"""Queries and state changes of the record DB, used by the API and by record activities."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.crypto import SecretBox
from core.errors import InUse, InvalidState, NotFound
from core.statuses import FINAL_STATUSES, Status
from store.db import Database
from store.environments import Marked
from store.live_migrations import LiveMigrationRecords
from store.models import Endpoint, Execution, Migration, Task, TaskEvent, TaskProgressUpdate, utcnow


class Store(LiveMigrationRecords):
    def __init__(self, db: Database, box: SecretBox) -> None:
        self.db = db
        self.box = box

    # -- endpoints ---------------------------------------------------------------------------
    def create_endpoint(
        self,
        *,
        project_id: str,
        user_id: str | None,
        name: str,
        type: str,
        connection_info: dict[str, Any],
        description: str | None = None,
        mapped_regions: list[str] | None = None,
        internal: bool = False,
    ) -> Endpoint:
        row = Endpoint(
            project_id=project_id,
            user_id=user_id,
            name=name,
            type=type,
            description=description,
            connection_info_enc=self.box.seal(connection_info),
            mapped_regions=mapped_regions or [],
            internal=internal,
        )
        with self.db.session() as s:
            s.add(row)
        return row

    def list_endpoints(self, project_id: str | None) -> list[Endpoint]:
        with self.db.session() as s:
            q = select(Endpoint).where(Endpoint.deleted.is_(False), Endpoint.internal.is_(False))
            if project_id is not None:
                q = q.where(Endpoint.project_id == project_id)
            return list(s.scalars(q.order_by(Endpoint.created_at.desc(), Endpoint.id.desc())))

    def get_endpoint(self, project_id: str | None, endpoint_id: str) -> Endpoint:
        with self.db.session() as s:
            return self._endpoint(s, project_id, endpoint_id)

    def _endpoint(self, s: Session, project_id: str | None, endpoint_id: str) -> Endpoint:
        row = s.get(Endpoint, endpoint_id)
        if row is None or row.deleted or (project_id is not None and row.project_id != project_id):
            raise NotFound(f"Endpoint {endpoint_id} could not be found")
        return row

    def update_endpoint(self, project_id: str | None, endpoint_id: str, fields: dict[str, Any]) -> Endpoint:
        with self.db.session() as s:
            row = self._endpoint(s, project_id, endpoint_id)
            for key in ("name", "description", "mapped_regions"):
                if key in fields:
                    setattr(row, key, fields[key])
            if "connection_info" in fields:
                row.connection_info_enc = self.box.seal(fields["connection_info"])
            row.updated_at = utcnow()
        return row

    def delete_endpoint(self, project_id: str | None, endpoint_id: str) -> None:
        with self.db.session() as s:
            row = self._endpoint(s, project_id, endpoint_id)
            users = s.scalars(
                select(Migration.id).where(
                    Migration.deleted.is_(False),
                    (Migration.origin_endpoint_id == endpoint_id)
                    | (Migration.destination_endpoint_id == endpoint_id),
                )
            ).all()
            if users:
                raise InUse(f"{len(users)} transfers would be orphaned!")
            row.deleted, row.deleted_at = True, utcnow()

    def connection_info(self, endpoint_id: str) -> dict[str, Any]:
        with self.db.session() as s:
            row = self._endpoint(s, None, endpoint_id)
            return self.box.open(row.connection_info_enc)

    # -- migrations --------------------------------------------------------------------------
    def new_endpoint_row(self, *, connection_info: dict[str, Any], **fields: Any) -> Endpoint:
        """An unsaved endpoint row (for ``create_migration``'s single transaction)."""
        return Endpoint(connection_info_enc=self.box.seal(connection_info), mapped_regions=[], **fields)

    def create_migration(
        self,
        *,
        fields: dict[str, Any],
        plan: Iterable[tuple[str, str]],
        migration_id: str | None = None,
        new_endpoints: Iterable[Endpoint] = (),
        marked: Marked | None = None,
    ) -> Migration:
        """Write a migration, its implicit endpoints, its execution and SCHEDULED tasks atomically.

        The secret values of its environments are sealed (``store.environments``): the row returned
        holds references in their place, which is what the workflow input carries.
        """
        mig = Migration(**fields)
        if migration_id:
            mig.id = migration_id
        self._seal(mig, marked)
        with self.db.session() as s:
            for endpoint in new_endpoints:
                s.add(endpoint)
            s.flush()
            s.add(mig)
            s.flush()
            execution = Execution(action_id=mig.id, status=Status.RUNNING, number=1, type="migration")
            s.add(execution)
            s.flush()
            previous: dict[str, str] = {}
            for index, (instance, task_type) in enumerate(plan):
                task = Task(
                    execution_id=execution.id,
                    instance=instance,
                    task_type=task_type,
                    status=Status.SCHEDULED,
                    index=index,
                    depends_on=[previous[instance]] if instance in previous else [],
                    on_error=task_type == "CLEANUP_MIGRATION_RESOURCES",
                )
                s.add(task)
                s.flush()
                previous[instance] = task.id
        return self.get_migration(None, mig.id)

    def list_migrations(self, project_id: str | None) -> list[Migration]:
        with self.db.session() as s:
            q = select(Migration).where(Migration.deleted.is_(False), Migration.type == "migration")
            if project_id is not None:
                q = q.where(Migration.project_id == project_id)
            return list(s.scalars(q.order_by(Migration.created_at.desc(), Migration.id.desc())))

    def get_migration(self, project_id: str | None, migration_id: str) -> Migration:
        with self.db.session() as s:
            row = s.get(Migration, migration_id)
            if (row is None or row.deleted or row.type != "migration"
                    or (project_id is not None and row.project_id != project_id)):
                raise NotFound(f"Migration {migration_id} could not be found")
            # Touch the lazy relationships inside the session so views can read them after.
            for execution in row.executions:
                for task in execution.tasks:
                    _ = task.events, task.progress_updates
            return row

    def set_migration_status(self, migration_id: str, status: str) -> None:
        with self.db.session() as s:
            mig = s.get(Migration, migration_id)
            if mig is None:
                raise NotFound(f"Migration {migration_id} could not be found")
            if mig.last_execution_status in FINAL_STATUSES and status not in FINAL_STATUSES:
                return  # a late CANCELLING must not reopen a finished migration
            mig.last_execution_status = status
            mig.updated_at = utcnow()
            s.execute(update(Execution).where(Execution.action_id == migration_id).values(status=status))

    def set_workflow_id(self, migration_id: str, workflow_id: str) -> None:
        with self.db.session() as s:
            mig = s.get(Migration, migration_id)
            if mig is not None:
                mig.workflow_id = workflow_id

    def migration_trust(self, migration_id: str) -> str | None:
        """The Keystone trust id of a migration (None in noauth mode or once released)."""
        with self.db.session() as s:
            mig = s.get(Migration, migration_id)
            return mig.trust_id if mig is not None else None

    def action_project(self, action_id: str) -> str | None:
        """The project a migration, transfer or deployment belongs to (None when there is no such row)."""
        with self.db.session() as s:
            row = s.get(Migration, action_id)
            return row.project_id if row is not None else None

    def clear_migration_trust(self, migration_id: str) -> None:
        with self.db.session() as s:
            mig = s.get(Migration, migration_id)
            if mig is not None:
                mig.trust_id = None

    def discard_migration(self, migration_id: str) -> None:
        """Undo a create whose workflow could not start: the caller got an error, keep no trace."""
        with self.db.session() as s:
            mig = s.get(Migration, migration_id)
            if mig is None:
                return
            for execution in mig.executions:
                for task in execution.tasks:
                    s.delete(task)
                s.delete(execution)
            endpoint_ids = (mig.origin_endpoint_id, mig.destination_endpoint_id)
            s.delete(mig)
            s.flush()
            for endpoint_id in endpoint_ids:
                ep = s.get(Endpoint, endpoint_id)
                if ep is not None and ep.internal:
                    s.delete(ep)

    def force_cancel_tasks(self, migration_id: str) -> None:
        """``force`` cancel: every unfinished task becomes FORCE_CANCELED, in the DB only."""
        with self.db.session() as s:
            for task in s.scalars(select(Task).join(Execution, Task.execution_id == Execution.id)
                                  .where(Execution.action_id == migration_id)):
                if task.status not in FINAL_STATUSES and task.status != Status.UNSCHEDULED:
                    task.status = Status.FORCE_CANCELED if task.status == Status.RUNNING else Status.UNSCHEDULED

    def set_instance_info(self, migration_id: str, instance: str, key: str, value: Any) -> None:
        with self.db.session() as s:
            # The instances of one action write here concurrently, each a read-modify-write of the
            # whole JSON: a no-op UPDATE first takes the row's write lock (PostgreSQL's row lock,
            # SQLite's database write lock), so no writer reads what another is about to replace.
            # Without it, one of four parallel instances lost its export_info (issue 13).
            s.execute(update(Migration).where(Migration.id == migration_id)
                      .values(updated_at=Migration.updated_at).execution_options(synchronize_session=False))
            mig = s.get(Migration, migration_id)
            if mig is None:
                raise NotFound(f"Migration {migration_id} could not be found")
            # A new outer and inner dict: JSON columns are compared by value, so an in-place
            # change of the loaded dict would never be written.
            info = {k: dict(v) for k, v in (mig.info or {}).items()}
            info.setdefault(instance, {})[key] = value
            mig.info = info

    def delete_migration(self, project_id: str | None, migration_id: str) -> None:
        with self.db.session() as s:
            mig = s.get(Migration, migration_id)
            if (mig is None or mig.deleted or mig.type != "migration"
                    or (project_id is not None and mig.project_id != project_id)):
                raise NotFound(f"Migration {migration_id} could not be found")
            if mig.last_execution_status not in FINAL_STATUSES:
                raise InvalidState(
                    f"Migration {migration_id} is {mig.last_execution_status}; only COMPLETED, ERROR or "
                    "CANCELED migrations can be deleted. Cancel it first."
                )
            mig.deleted, mig.deleted_at = True, utcnow()
            for endpoint_id in (mig.origin_endpoint_id, mig.destination_endpoint_id):
                ep = s.get(Endpoint, endpoint_id)
                if ep is not None and ep.internal:
                    ep.deleted, ep.deleted_at = True, utcnow()

    # -- tasks -------------------------------------------------------------------------------
    def _task(self, s: Session, migration_id: str, instance: str, task_type: str,
              execution_id: str | None = None) -> Task:
        q = (select(Task).join(Execution, Task.execution_id == Execution.id)
             .where(Execution.action_id == migration_id, Task.instance == instance, Task.task_type == task_type))
        # Transfers run many executions: their tasks are found through the execution's id.
        if execution_id is not None:
            q = q.where(Execution.id == execution_id)
        task = s.scalars(q).first()
        if task is None:
            raise NotFound(f"No {task_type} task for {instance} in migration {migration_id}")
        return task

    def task_id(self, migration_id: str, instance: str, task_type: str, execution_id: str | None = None) -> str:
        with self.db.session() as s:
            return self._task(s, migration_id, instance, task_type, execution_id).id

    def tasks_of(self, migration_id: str, instance: str | None = None,
                 execution_id: str | None = None) -> list[Task]:
        with self.db.session() as s:
            q = (
                select(Task)
                .join(Execution, Task.execution_id == Execution.id)
                .where(Execution.action_id == migration_id)
            )
            if instance is not None:
                q = q.where(Task.instance == instance)
            if execution_id is not None:
                q = q.where(Execution.id == execution_id)
            return list(s.scalars(q.order_by(Task.index)))

    def set_task_status(
        self,
        migration_id: str,
        instance: str,
        task_type: str,
        status: str,
        *,
        host: str | None = None,
        process_id: int | None = None,
        exception_details: str | None = None,
        execution_id: str | None = None,
    ) -> None:
        with self.db.session() as s:
            task = self._task(s, migration_id, instance, task_type, execution_id)
            task.status = status
            task.updated_at = utcnow()
            if host is not None:
                task.host = host
            if process_id is not None:
                task.process_id = process_id
            if exception_details is not None:
                task.exception_details = exception_details

    def add_event(self, task_id: str, message: str, level: str = "INFO") -> None:
        with self.db.session() as s:
            count = len(s.scalars(select(TaskEvent.id).where(TaskEvent.task_id == task_id)).all())
            s.add(TaskEvent(task_id=task_id, level=level, index=count, message=message))

    def start_progress(self, task_id: str, message: str, total_steps: int | None) -> int:
        """Add a progress update row (Coriolis ``add_percentage_step``); returns its index."""
        with self.db.session() as s:
            existing = s.scalars(
                select(TaskProgressUpdate).where(
                    TaskProgressUpdate.task_id == task_id, TaskProgressUpdate.message == message
                )
            ).first()
            if existing is not None:  # a retried activity continues its own row
                return existing.index
            count = len(s.scalars(select(TaskProgressUpdate.id).where(TaskProgressUpdate.task_id == task_id)).all())
            s.add(TaskProgressUpdate(task_id=task_id, index=count, current_step=0, total_steps=total_steps,
                                     message=message))
            return count

    def update_progress(self, task_id: str, index: int, current_step: int, total_steps: int | None = None) -> None:
        with self.db.session() as s:
            row = s.scalars(
                select(TaskProgressUpdate).where(
                    TaskProgressUpdate.task_id == task_id, TaskProgressUpdate.index == index
                )
            ).first()
            if row is None:
                return
            row.current_step = current_step
            if total_steps is not None:
                row.total_steps = total_steps
            row.updated_at = utcnow()
