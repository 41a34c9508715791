"""Workflow code replays the histories it produced: the determinism check to run before any change."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.conftest import RunningStack, wait_final
from tests.helpers import endpoints, inventories
from tests.leftovers import migration_workflows
from workflows.cleanup import ForcedCleanupWorkflow
from workflows.deployment import DeploymentInstanceWorkflow, DeploymentWorkflow
from workflows.endpoint import EndpointCallWorkflow
from workflows.instance import InstanceMigrationWorkflow
from workflows.migration import MigrationWorkflow
from workflows.transfer import TransferExecutionWorkflow, TransferInstanceWorkflow

pytestmark = pytest.mark.slow


def test_completed_migration_histories_replay(stack: RunningStack) -> None:
    src, dst = inventories(stack, ["vm-a", "vm-b"], 4)
    with stack.client() as api:
        origin, dest = endpoints(api, src, dst)
        m = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a", "vm-b"])
        assert wait_final(api, m["id"])["last_execution_status"] == "COMPLETED"

    # Its workflows, whichever engine path ran it: its own and all it started.
    runs = migration_workflows(stack, m["id"])

    async def replay() -> int:
        client = await Client.connect(stack.settings.temporal_address, data_converter=pydantic_data_converter)
        replayer = Replayer(
            workflows=[MigrationWorkflow, InstanceMigrationWorkflow, EndpointCallWorkflow, ForcedCleanupWorkflow,
                       TransferExecutionWorkflow, TransferInstanceWorkflow, DeploymentWorkflow,
                       DeploymentInstanceWorkflow],
            data_converter=pydantic_data_converter,
        )
        for run in runs:
            history = await client.get_workflow_handle(run.id, run_id=run.run_id).fetch_history()
            await replayer.replay_workflow(history)
        return len(runs)

    # The migration's own workflow and one per VM; on transfers, that is the execution's, and the
    # deployment it started has its own and one per VM too.
    assert asyncio.run(replay()) == (6 if m["transfer_id"] else 3)
