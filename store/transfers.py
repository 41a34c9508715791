"""Record-DB side of transfers, their executions, deployments, schedules and replica disks.

Transfers and deployments are ``migrations`` rows told apart by ``type`` (Coriolis's
``base_transfer_action``); their executions and tasks live in the same tables as a migration's.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.errors import InvalidInput, InvalidState, NotFound
from core.statuses import FINAL_STATUSES, Status
from core.tasks import ON_ERROR_TASKS, deploy_tasks
from store.db import Database
from store.environments import EnvironmentSecrets, Marked
from store.models import Execution, Migration, ReplicaDisk, Task, TransferSchedule, utcnow
from store.paging import Page, paged

#: statuses during which an action's execution holds its disks (Coriolis ACTIVE set)
ACTIVE_STATUSES = frozenset({Status.RUNNING, Status.CANCELLING, Status.PENDING})


class TransferRecords(EnvironmentSecrets):
    db: Database

    # -- actions (transfers and deployments) ------------------------------------------------
    def create_action(self, fields: dict[str, Any], action_id: str | None = None,
                      marked: Marked | None = None) -> Migration:
        row = Migration(**fields)
        if action_id:
            row.id = action_id
        self._seal(row, marked)
        with self.db.session() as s:
            s.add(row)
        return self.get_action(fields["type"], None, row.id)

    def _action(self, s: Session, kind: str, project_id: str | None, action_id: str,
                lock: bool = False) -> Migration:
        # FOR UPDATE (PostgreSQL; SQLite serialises writers anyway): two concurrent requests
        # can't both see the transfer idle and both start an execution.
        row = s.get(Migration, action_id, with_for_update=lock)
        if row is None or row.deleted or row.type != kind or (project_id is not None and row.project_id != project_id):
            raise NotFound(f"{kind.capitalize()} with ID '{action_id}' could not be found")
        return row

    def action_row(self, action_id: str) -> Migration:
        """A migration, transfer or deployment, whatever its type (for the forced cleanup)."""
        with self.db.session() as s:
            row = s.get(Migration, action_id)
            if row is None:
                raise NotFound(f"Action {action_id} could not be found")
            return row

    def get_action(self, kind: str, project_id: str | None, action_id: str) -> Migration:
        with self.db.session() as s:
            return self._action(s, kind, project_id, action_id)

    def list_actions(self, kind: str, project_id: str | None, *, show_deleted: bool = False,
                     status: str | None = None, transfer_id: str | None = None,
                     page: Page | None = None, hide_migrations: bool = False) -> list[Migration]:
        """``hide_migrations``: leave out the transfers that ``POST /migrations`` made (``/replicas``)."""
        with self.db.session() as s:
            q = select(Migration).where(Migration.type == kind)
            if hide_migrations:
                q = q.where(Migration.from_migrations_api.is_(False))
            if not show_deleted:
                q = q.where(Migration.deleted.is_(False))
            if project_id is not None:
                q = q.where(Migration.project_id == project_id)
            if status is not None:
                q = q.where(Migration.last_execution_status == status)
            if transfer_id is not None:
                q = q.where(Migration.transfer_id == transfer_id)
            return list(s.scalars(paged(s, q, Migration, page)))

    def update_transfer(self, project_id: str | None, transfer_id: str, fields: dict[str, Any],
                        marked: Marked | None = None) -> Migration:
        with self.db.session() as s:
            row = self._action(s, "transfer", project_id, transfer_id)
            self._refuse_if_busy(s, row)
            for key, value in fields.items():
                setattr(row, key, value)
            self._seal(row, marked)
            row.updated_at = utcnow()
        return self.get_action("transfer", None, transfer_id)

    def _busy(self, s: Session, transfer_id: str) -> str | None:
        """What is running on a transfer: one of its executions or one of its deployments."""
        active = [str(x) for x in ACTIVE_STATUSES]
        running = s.scalars(select(Execution.id).where(
            Execution.action_id == transfer_id, Execution.status.in_(active), Execution.deleted.is_(False))).first()
        if running:
            return f"execution {running}"
        deployment = s.scalars(select(Migration.id).where(
            Migration.type == "deployment", Migration.transfer_id == transfer_id, Migration.deleted.is_(False),
            Migration.last_execution_status.in_(active))).first()
        return f"deployment {deployment}" if deployment else None

    def _refuse_if_busy(self, s: Session, row: Migration) -> None:
        busy = self._busy(s, row.id)
        if busy:
            raise InvalidState(f"Transfer {row.id} has an active {busy}; wait for it or cancel it first")

    def check_idle(self, transfer_id: str) -> None:
        with self.db.session() as s:
            self._refuse_if_busy(s, self._action(s, "transfer", None, transfer_id))

    def record_done_execution(self, transfer_id: str, execution_id: str, kind: str) -> Execution:
        """A task-less execution for what the API did itself (update, delete-disks), as Coriolis lists them."""
        with self.db.session() as s:
            row = self._action(s, "transfer", None, transfer_id)
            number = (s.scalar(select(func.max(Execution.number)).where(Execution.action_id == row.id)) or 0) + 1
            s.add(Execution(id=execution_id, action_id=row.id, status=Status.COMPLETED, number=number, type=kind))
        return self.get_execution(transfer_id, execution_id)

    def delete_transfer(self, project_id: str | None, transfer_id: str) -> list[str]:
        """Soft-delete; returns the ids of its schedules (the caller removes them from Temporal)."""
        with self.db.session() as s:
            row = self._action(s, "transfer", project_id, transfer_id, lock=True)
            self._refuse_if_busy(s, row)
            row.deleted, row.deleted_at = True, utcnow()
            schedules = list(s.scalars(select(TransferSchedule).where(
                TransferSchedule.transfer_id == transfer_id, TransferSchedule.deleted.is_(False))))
            for sched in schedules:
                sched.deleted, sched.deleted_at = True, utcnow()
            return [sched.id for sched in schedules]

    def clear_transfer_trust(self, transfer_id: str) -> None:
        """Forget a transfer's trust, on it and on its deployments (which acted through it), once deleted."""
        with self.db.session() as s:
            rows = [s.get(Migration, transfer_id), *s.scalars(select(Migration).where(
                Migration.type == "deployment", Migration.transfer_id == transfer_id))]
            for row in rows:
                if row is not None:
                    row.trust_id = None

    def trust_owner(self, action_id: str) -> Migration | None:
        """The row whose trust ends with an action's workflow, for the forced cleanup's release.

        A one-shot migration owns its trust; a migration that runs as a transfer ends with its execution
        or deployment, so its transfer's trust goes then. A transfer made by ``POST /transfers`` keeps its
        trust for its next executions and deployments: only its DELETE releases it (``api.trusts``).
        """
        with self.db.session() as s:
            row = s.get(Migration, action_id)
            if row is not None and row.type == "deployment" and row.transfer_id:
                row = s.get(Migration, row.transfer_id)
            if row is None or (row.type == "transfer" and not row.from_migrations_api):
                return None
            return row

    def delete_deployment(self, project_id: str | None, deployment_id: str) -> None:
        with self.db.session() as s:
            row = self._action(s, "deployment", project_id, deployment_id)
            if row.last_execution_status in ACTIVE_STATUSES:
                raise InvalidState(f"Deployment {deployment_id} is {row.last_execution_status}; cancel it first")
            row.deleted, row.deleted_at = True, utcnow()

    # -- executions -------------------------------------------------------------------------
    def create_execution(self, transfer_id: str, execution_id: str, *, instances: list[str],
                         task_types: list[str], workflow_id: str | None = None) -> Execution:
        """Write a transfer execution and its SCHEDULED tasks; refused while another one is active."""
        with self.db.session() as s:
            row = self._action(s, "transfer", None, transfer_id, lock=True)
            self._refuse_if_busy(s, row)
            self._add_execution(s, row, execution_id, "transfer_execution", instances, task_types, workflow_id)
        return self.get_execution(transfer_id, execution_id)

    def _add_execution(self, s: Session, row: Migration, execution_id: str, kind: str, instances: list[str],
                       task_types: list[str], workflow_id: str | None) -> None:
        number = (s.scalar(select(func.max(Execution.number)).where(Execution.action_id == row.id)) or 0) + 1
        execution = Execution(id=execution_id, action_id=row.id, status=Status.RUNNING, number=number,
                              type=kind, workflow_id=workflow_id)
        s.add(execution)
        s.flush()
        index = 0
        for instance in instances:
            previous: str | None = None
            for task_type in task_types:
                task = Task(execution_id=execution.id, instance=instance, task_type=task_type,
                            status=Status.SCHEDULED, index=index, depends_on=[previous] if previous else [],
                            on_error=task_type in ON_ERROR_TASKS)
                s.add(task)
                s.flush()
                previous, index = task.id, index + 1
        row.last_execution_status = Status.RUNNING
        row.updated_at = utcnow()

    def create_deployment(self, transfer_id: str, deployment_id: str, execution_id: str, *, workflow_id: str,
                          user_id: str | None, options: dict[str, Any], force: bool = False,
                          deployer_id: str | None = None, project_id: str | None = None) -> Migration:
        """A deployment row, its single execution and tasks, in one transaction.

        Refused (unless ``force``) while the transfer is busy; always refused when no
        execution completed or a replica disk is not trusted (there is nothing sound to deploy).
        """
        with self.db.session() as s:
            transfer = self._action(s, "transfer", project_id, transfer_id, lock=True)
            if not force:
                self._refuse_if_busy(s, transfer)
            done = s.scalars(select(Execution.id).where(
                Execution.action_id == transfer_id, Execution.type == "transfer_execution",
                Execution.status == Status.COMPLETED, Execution.deleted.is_(False))).first()
            if done is None:
                raise InvalidInput(f"Transfer {transfer_id} has no completed execution: execute it before deploying")
            replicas = list(s.scalars(select(ReplicaDisk).where(
                ReplicaDisk.transfer_id == transfer_id, ReplicaDisk.deleted.is_(False))))
            have = {r.instance for r in replicas}
            if any(not r.trusted for r in replicas) or any(i not in have for i in transfer.instances):
                raise InvalidInput(f"The replica disks of transfer {transfer_id} are missing or out of sync: "
                                   "the transfer needs to be executed anew")
            info = {i: {"export_info": (transfer.info or {}).get(i, {}).get("export_info")}
                    for i in transfer.instances}
            row = Migration(
                id=deployment_id, type="deployment", transfer_id=transfer_id, deployer_id=deployer_id,
                project_id=transfer.project_id, user_id=user_id or transfer.user_id,
                origin_endpoint_id=transfer.origin_endpoint_id,
                destination_endpoint_id=transfer.destination_endpoint_id, instances=list(transfer.instances),
                source_environment=transfer.source_environment,
                destination_environment=transfer.destination_environment,
                network_map=transfer.network_map, storage_mappings=transfer.storage_mappings,
                user_scripts=options.get("user_scripts") or transfer.user_scripts or {}, notes=transfer.notes,
                skip_os_morphing=bool(options.get("skip_os_morphing")),
                clone_disks=bool(options.get("clone_disks", True)), info=info, scenario=transfer.scenario,
                last_execution_status=Status.RUNNING, workflow_id=None,
                # The transfer's Keystone trust, when it has one (a migration's: ``api.live_migrations``).
                trust_id=transfer.trust_id,
            )
            s.add(row)
            s.flush()
            self._add_execution(s, row, execution_id, "deployment", list(transfer.instances),
                                deploy_tasks(row.skip_os_morphing), workflow_id)
        return self.get_action("deployment", None, deployment_id)

    def get_execution(self, action_id: str, execution_id: str) -> Execution:
        with self.db.session() as s:
            row = s.get(Execution, execution_id)
            if row is None or row.deleted or row.action_id != action_id:
                raise NotFound(f"Execution with ID '{execution_id}' could not be found")
            return row

    def find_execution(self, execution_id: str) -> Execution | None:
        with self.db.session() as s:
            return s.get(Execution, execution_id)

    def list_executions(self, action_id: str, status: str | None = None, page: Page | None = None) -> list[Execution]:
        with self.db.session() as s:
            q = select(Execution).where(Execution.action_id == action_id, Execution.deleted.is_(False))
            if status is not None:
                q = q.where(Execution.status == status)
            return list(s.scalars(paged(s, q, Execution, page)))

    def delete_execution(self, action_id: str, execution_id: str) -> None:
        with self.db.session() as s:
            row = s.get(Execution, execution_id)
            if row is None or row.deleted or row.action_id != action_id:
                raise NotFound(f"Execution with ID '{execution_id}' could not be found")
            if row.status in ACTIVE_STATUSES:
                raise InvalidState(f"Execution {execution_id} is {row.status}; cancel it first")
            row.deleted, row.deleted_at = True, utcnow()

    def set_execution_status(self, action_id: str, execution_id: str, status: str) -> None:
        with self.db.session() as s:
            execution = s.get(Execution, execution_id)
            action = s.get(Migration, action_id)
            if execution is None or action is None:
                raise NotFound(f"Execution {execution_id} could not be found")
            if execution.status in FINAL_STATUSES and status not in FINAL_STATUSES:
                return  # a late CANCELLING must not reopen a finished execution
            execution.status = status
            execution.updated_at = utcnow()
            action.last_execution_status = status
            action.updated_at = utcnow()

    def force_cancel_execution_tasks(self, execution_id: str) -> None:
        with self.db.session() as s:
            for task in s.scalars(select(Task).where(Task.execution_id == execution_id)):
                if task.status not in FINAL_STATUSES and task.status != Status.UNSCHEDULED:
                    task.status = Status.FORCE_CANCELED if task.status == Status.RUNNING else Status.UNSCHEDULED

    def completed_execution(self, transfer_id: str) -> Execution | None:
        with self.db.session() as s:
            return s.scalars(select(Execution).where(
                Execution.action_id == transfer_id, Execution.type == "transfer_execution",
                Execution.status == Status.COMPLETED).order_by(Execution.number.desc())).first()

    # -- replica disks ----------------------------------------------------------------------
    def replica(self, transfer_id: str, instance: str, disk_id: str) -> ReplicaDisk | None:
        with self.db.session() as s:
            return s.scalars(select(ReplicaDisk).where(
                ReplicaDisk.transfer_id == transfer_id, ReplicaDisk.instance == instance,
                ReplicaDisk.disk_id == disk_id, ReplicaDisk.deleted.is_(False))).first()

    def replicas(self, transfer_id: str) -> list[ReplicaDisk]:
        with self.db.session() as s:
            return list(s.scalars(select(ReplicaDisk).where(
                ReplicaDisk.transfer_id == transfer_id, ReplicaDisk.deleted.is_(False)
            ).order_by(ReplicaDisk.instance, ReplicaDisk.disk_id)))

    def distrust_replica(self, transfer_id: str, instance: str, disk_id: str, *, path: str, fmt: str,
                         size_bytes: int, chunk_size: int, execution_id: str, full: bool) -> None:
        """Before the first byte is written: until ``trust_replica``, the replica is not trusted.

        A full sync drops the old digest map, so that a retry of this execution can't mistake it
        for the replica's content.
        """
        with self.db.session() as s:
            row = s.scalars(select(ReplicaDisk).where(
                ReplicaDisk.transfer_id == transfer_id, ReplicaDisk.instance == instance,
                ReplicaDisk.disk_id == disk_id, ReplicaDisk.deleted.is_(False))).first()
            if row is None:
                row = ReplicaDisk(transfer_id=transfer_id, instance=instance, disk_id=disk_id)
                s.add(row)
            row.path, row.format, row.size_bytes, row.chunk_size = path, fmt, size_bytes, chunk_size
            row.trusted, row.last_execution_id = False, execution_id
            if full:
                row.digests = None
            row.updated_at = utcnow()

    def trust_replica(self, transfer_id: str, instance: str, disk_id: str, digests: bytes,
                      execution_id: str, change_marker: str | None = None) -> None:
        """Only the execution that last distrusted the replica may trust it: a force-cancelled
        execution's activity that runs on for a while must not vouch for a newer execution's file."""
        with self.db.session() as s:
            row = s.scalars(select(ReplicaDisk).where(
                ReplicaDisk.transfer_id == transfer_id, ReplicaDisk.instance == instance,
                ReplicaDisk.disk_id == disk_id, ReplicaDisk.deleted.is_(False))).one()
            if row.last_execution_id != execution_id:
                raise InvalidState(
                    f"Replica {disk_id} of {instance} is now written by execution {row.last_execution_id}")
            row.digests, row.trusted, row.change_marker = digests, True, change_marker
            row.updated_at = utcnow()

    def consume_replica(self, transfer_id: str, instance: str, disk_id: str) -> None:
        """A deployment without clone writes into this replica: untrusted, and no digest map to compare with."""
        with self.db.session() as s:
            row = s.scalars(select(ReplicaDisk).where(
                ReplicaDisk.transfer_id == transfer_id, ReplicaDisk.instance == instance,
                ReplicaDisk.disk_id == disk_id, ReplicaDisk.deleted.is_(False))).first()
            if row is not None:
                row.trusted, row.digests, row.updated_at = False, None, utcnow()

    def set_replica_snapshot(self, transfer_id: str, instance: str, disk_id: str, *, snapshot_id: str,
                             size_bytes: int, chunk_size: int, digests: bytes, execution_id: str,
                             change_marker: str | None) -> None:
        """A snapshot-chain replica (``providers.base.SnapshotReplicaProvider``) moves to a newly
        completed snapshot in one step: until then the record names the last good one, still trusted."""
        with self.db.session() as s:
            row = s.scalars(select(ReplicaDisk).where(
                ReplicaDisk.transfer_id == transfer_id, ReplicaDisk.instance == instance,
                ReplicaDisk.disk_id == disk_id, ReplicaDisk.deleted.is_(False))).first()
            if row is None:
                row = ReplicaDisk(transfer_id=transfer_id, instance=instance, disk_id=disk_id)
                s.add(row)
            row.path, row.format, row.size_bytes, row.chunk_size = snapshot_id, "ebs-snapshot", size_bytes, chunk_size
            row.digests, row.trusted, row.last_execution_id = digests, True, execution_id
            row.change_marker, row.updated_at = change_marker, utcnow()

    def forget_replicas(self, transfer_id: str) -> list[ReplicaDisk]:
        with self.db.session() as s:
            rows = list(s.scalars(select(ReplicaDisk).where(
                ReplicaDisk.transfer_id == transfer_id, ReplicaDisk.deleted.is_(False))))
            for row in rows:
                row.deleted, row.deleted_at, row.trusted = True, utcnow(), False
            return rows

    # -- schedules --------------------------------------------------------------------------
    def create_schedule(self, fields: dict[str, Any]) -> TransferSchedule:
        row = TransferSchedule(**fields)
        with self.db.session() as s:
            self._action(s, "transfer", None, fields["transfer_id"])
            s.add(row)
        return row

    def get_schedule(self, transfer_id: str, schedule_id: str) -> TransferSchedule:
        with self.db.session() as s:
            row = s.get(TransferSchedule, schedule_id)
            if row is None or row.deleted or row.transfer_id != transfer_id:
                raise NotFound(f"Schedule with ID '{schedule_id}' could not be found")
            return row

    def list_schedules(self, transfer_id: str) -> list[TransferSchedule]:
        with self.db.session() as s:
            return list(s.scalars(select(TransferSchedule).where(
                TransferSchedule.transfer_id == transfer_id, TransferSchedule.deleted.is_(False)
            ).order_by(TransferSchedule.created_at.desc())))

    def update_schedule(self, transfer_id: str, schedule_id: str, fields: dict[str, Any]) -> TransferSchedule:
        with self.db.session() as s:
            row = s.get(TransferSchedule, schedule_id)
            if row is None or row.deleted or row.transfer_id != transfer_id:
                raise NotFound(f"Schedule with ID '{schedule_id}' could not be found")
            for key, value in fields.items():
                setattr(row, key, value)
            row.updated_at = utcnow()
        return self.get_schedule(transfer_id, schedule_id)

    def delete_schedule(self, transfer_id: str, schedule_id: str) -> None:
        with self.db.session() as s:
            row = s.get(TransferSchedule, schedule_id)
            if row is None or row.deleted or row.transfer_id != transfer_id:
                raise NotFound(f"Schedule with ID '{schedule_id}' could not be found")
            row.deleted, row.deleted_at = True, utcnow()

