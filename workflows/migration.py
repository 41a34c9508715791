"""``MigrationWorkflow``: one child workflow per instance, all in parallel.

An instance that fails does not stop its siblings (their work is independent and costly to
redo); the migration ends ERROR if any instance failed, CANCELED if it was cancelled.

Issue 13 moves ``POST /migrations`` onto transfers (``api.live_migrations``: a ``live_migration``
transfer, one ``TransferExecutionWorkflow`` with ``auto_deploy``, then its ``DeploymentWorkflow``).
This class and ``InstanceMigrationWorkflow`` stay registered on the worker so that runs started
before replay and finish; new starts use them only with ``STERNA_MIGRATIONS_ON_TRANSFERS`` false,
or for destinations that keep no replica disks yet (Azure, GCP, OpenStack).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities import names
    from core.summary import CHILD_SUMMARIES
    from workflows import ids
    from workflows.instance import InstanceMigrationWorkflow
    from workflows.search import MIGRATION_STATE
    from workflows.shield import shielded
    from workflows.types import InstanceInput, MigrationInput, MigrationStatusUpdate, Status, TrustRelease


@workflow.defn
class MigrationWorkflow:
    def __init__(self) -> None:
        self._status = Status.RUNNING

    @workflow.query
    def status(self) -> str:
        return self._status.value

    @workflow.run
    async def run(self, inp: MigrationInput) -> str:
        # A summary is part of the child's start command: runs begun before it replay without one.
        summaries = workflow.patched(CHILD_SUMMARIES)
        children = [
            workflow.execute_child_workflow(
                InstanceMigrationWorkflow.run,
                InstanceInput(migration=inp, instance=instance),
                id=ids.instance(inp.migration_id, instance),
                task_queue=workflow.info().task_queue,
                static_summary=f"{instance}: migration" if summaries else None,
            )
            for instance in inp.instances
        ]
        try:
            results = await asyncio.gather(*children, return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            if any(is_cancelled_exception(r) for r in failed):
                raise asyncio.CancelledError()
            self._status = Status.ERROR if failed else Status.COMPLETED
            if failed:
                raise ApplicationError(
                    f"{len(failed)} of {len(results)} instance(s) failed: " + "; ".join(map(str, failed)),
                    type="InstanceFailed", non_retryable=True,
                )
        except asyncio.CancelledError:
            self._status = Status.CANCELED
            raise
        except BaseException:
            if self._status == Status.RUNNING:
                self._status = Status.ERROR
            raise
        finally:
            await self._record(inp)
            # patched(): executions started before this step existed replay without it.
            if workflow.patched("release-migration-trust"):
                await self._release_trust(inp)
        return self._status.value

    async def _record(self, inp: MigrationInput) -> None:
        workflow.upsert_search_attributes([MIGRATION_STATE.value_set(self._status.value)])
        await shielded(workflow.execute_activity(
            names.RECORD_MIGRATION_STATUS,
            MigrationStatusUpdate(migration_id=inp.migration_id, status=self._status),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
        ))

    async def _release_trust(self, inp: MigrationInput) -> None:
        """Delete the migration's Keystone trust (if any); shielded like ``_record``."""

        async def warn(_err: ActivityError) -> None:
            # A trust that outlives its migration is a leak, not a failed migration.
            workflow.logger.warning("could not release the Keystone trust of migration %s", inp.migration_id)

        await shielded(workflow.execute_activity(
            names.RELEASE_MIGRATION_TRUST, TrustRelease(migration_id=inp.migration_id),
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10), maximum_attempts=10),
        ), on_failure=warn)
