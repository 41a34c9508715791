"""``ForcedCleanupWorkflow``: best-effort cleanup after a force-cancel terminated a migration.

Terminate skips every ``finally`` of the terminated workflows, so the API starts this one with
what the record DB knows (snapshot, scratch directory, host queue) to release those resources.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities import names
    from workflows.types import ForcedCleanup, TrustRelease


#: The forced cleanup's steps get a heartbeat timeout (they heartbeat); before, a dead worker held one 10 min.
FORCED_CLEANUP_HEARTBEAT = "forced-cleanup-heartbeat"


@workflow.defn
class ForcedCleanupWorkflow:
    @workflow.run
    async def run(self, inp: ForcedCleanup) -> None:
        heartbeat = timedelta(seconds=inp.heartbeat) if workflow.patched(FORCED_CLEANUP_HEARTBEAT) else None
        await asyncio.gather(*(
            workflow.execute_activity(
                names.CLEANUP_INSTANCE, item, task_queue=queue,
                start_to_close_timeout=timedelta(minutes=10),
                # The cleanup heartbeats: a worker killed during it is noticed within a heartbeat timeout.
                heartbeat_timeout=heartbeat,
                # A host that never comes back must not keep this workflow open forever.
                schedule_to_close_timeout=timedelta(hours=6),
                retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1), maximum_attempts=20),
            )
            for item, queue in zip(inp.items, inp.queues, strict=True)
        ), return_exceptions=True)
        # Terminate skipped the migration's own trust release: do it once the cleanup is done.
        migration_ids = sorted({item.step.task.migration_id for item in inp.items})
        for migration_id in migration_ids if workflow.patched("release-migration-trust") else []:
            await workflow.execute_activity(
                names.RELEASE_MIGRATION_TRUST, TrustRelease(migration_id=migration_id),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10), maximum_attempts=10),
            )
