"""Record-DB side of migrations that run as transfers (issue 13).

A ``POST /migrations`` (unless ``STERNA_MIGRATIONS_ON_TRANSFERS`` is false) writes one ``live_migration``
transfer row whose id is the migration's id (``from_migrations_api`` set), its one execution
(``auto_deploy``) and, once that execution completes, the deployment it triggers (``deployer_id``).
There is no separate migration row: the migration's status and tasks are read from the execution
and the deployment (``live_status``; ``api.live_migrations`` builds the legacy view).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import InvalidState, NotFound
from core.statuses import FINAL_STATUSES, Status
from store.models import Endpoint, Execution, Migration, utcnow
from store.transfers import TransferRecords


@dataclass
class LiveMigration:
    """A migration made of a transfer: the transfer row, its execution, the deployment (once made)."""

    transfer: Migration
    execution: Execution | None
    deployment: Migration | None

    @property
    def status(self) -> str:
        return live_status(self.execution, self.deployment)

    def check_deletable(self) -> None:
        if self.status not in FINAL_STATUSES:
            raise InvalidState(
                f"Migration {self.transfer.id} is {self.status}; only COMPLETED, ERROR or "
                "CANCELED migrations can be deleted. Cancel it first."
            )


def live_status(execution: Execution | None, deployment: Migration | None) -> str:
    """The migration's status: its execution's until that completes, then its deployment's.

    Between the two (the execution done, the auto-deployment not yet written) it is still RUNNING.
    """
    if execution is None or execution.status != Status.COMPLETED:
        return execution.status if execution is not None else Status.RUNNING
    return deployment.last_execution_status if deployment is not None else Status.RUNNING


class LiveMigrationRecords(TransferRecords):
    def create_live_migration(self, fields: dict[str, Any], *, migration_id: str, execution_id: str,
                              task_types: list[str], workflow_id: str, new_endpoints: Iterable[Endpoint] = (),
                              marked: Any = None) -> LiveMigration:
        """The transfer, its inline endpoints, its execution and SCHEDULED tasks, in one transaction."""
        row = Migration(**{**fields, "type": "transfer", "scenario": "live_migration", "from_migrations_api": True,
                           "workflow_id": workflow_id, "last_execution_status": Status.RUNNING})
        row.id = migration_id
        self._seal(row, marked)
        with self.db.session() as s:
            for endpoint in new_endpoints:
                s.add(endpoint)
            s.flush()
            s.add(row)
            s.flush()
            self._add_execution(s, row, execution_id, "transfer_execution", list(row.instances), task_types,
                                workflow_id)
        return self.live_migration(None, migration_id)

    def is_live_migration(self, migration_id: str) -> bool:
        with self.db.session() as s:
            row = s.get(Migration, migration_id)
            return row is not None and row.type == "transfer" and row.from_migrations_api

    def _live(self, s: Session, project_id: str | None, migration_id: str) -> Migration:
        row = s.get(Migration, migration_id)
        if (row is None or row.deleted or row.type != "transfer" or not row.from_migrations_api
                or (project_id is not None and row.project_id != project_id)):
            raise NotFound(f"Migration {migration_id} could not be found")
        return row

    def live_migration(self, project_id: str | None, migration_id: str) -> LiveMigration:
        with self.db.session() as s:
            row = self._live(s, project_id, migration_id)
            return self._parts(s, row)

    @staticmethod
    def _parts(s: Session, row: Migration) -> LiveMigration:
        executions = [e for e in row.executions if e.type == "transfer_execution" and not e.deleted]
        execution = executions[0] if executions else None
        deployment = None
        if execution is not None:
            deployment = s.scalars(select(Migration).where(
                Migration.type == "deployment", Migration.transfer_id == row.id,
                Migration.deployer_id == execution.id)).first()
        return LiveMigration(row, execution, deployment)

    def spent_replicas(self, action_id: str, status: str) -> Migration | None:
        """The migration-made transfer whose replica disks an execution ending ``status`` leaves unused.

        A migration deploys once: its replicas serve its one deployment, so they are spent when that
        deployment ends (whatever its outcome), or when the execution ends without completing (no
        deployment will come). Other transfers keep theirs.
        """
        if status not in FINAL_STATUSES:
            return None
        with self.db.session() as s:
            row = s.get(Migration, action_id)
            if row is not None and row.type == "deployment" and row.transfer_id:
                row = s.get(Migration, row.transfer_id)
            elif status == Status.COMPLETED:
                return None
            if row is None or row.type != "transfer" or not row.from_migrations_api:
                return None
            return row

    def list_live_migrations(self, project_id: str | None) -> list[LiveMigration]:
        with self.db.session() as s:
            q = select(Migration).where(Migration.deleted.is_(False), Migration.type == "transfer",
                                        Migration.from_migrations_api.is_(True))
            if project_id is not None:
                q = q.where(Migration.project_id == project_id)
            return [self._parts(s, row) for row in s.scalars(q)]

    def delete_live_migration(self, project_id: str | None, migration_id: str) -> LiveMigration:
        """Soft-delete the transfer, its deployment and its inline endpoints; refused while it runs.

        Returns what was deleted: the caller releases the trust and the replica disks.
        """
        with self.db.session() as s:
            row = self._live(s, project_id, migration_id)
            parts = self._parts(s, row)
            parts.check_deletable()
            now = utcnow()
            row.deleted, row.deleted_at = True, now
            if parts.deployment is not None:
                deployment = s.get(Migration, parts.deployment.id)
                assert deployment is not None
                deployment.deleted, deployment.deleted_at = True, now
            for endpoint_id in (row.origin_endpoint_id, row.destination_endpoint_id):
                ep = s.get(Endpoint, endpoint_id)
                if ep is not None and ep.internal:
                    ep.deleted, ep.deleted_at = True, now
            return parts
