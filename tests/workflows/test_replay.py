"""Workflow code replays the histories it produced: the determinism check to run before any change."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.conftest import RunningStack, wait_final
from tests.helpers import endpoints, inventories
from workflows.cleanup import ForcedCleanupWorkflow
from workflows.endpoint import EndpointCallWorkflow
from workflows.instance import InstanceMigrationWorkflow
from workflows.migration import MigrationWorkflow

pytestmark = pytest.mark.slow


def test_completed_migration_histories_replay(stack: RunningStack) -> None:
    src, dst = inventories(stack, ["vm-a", "vm-b"], 4)
    with stack.client() as api:
        origin, dest = endpoints(api, src, dst)
        m = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a", "vm-b"])
        assert wait_final(api, m["id"])["last_execution_status"] == "COMPLETED"

    async def replay() -> int:
        client = await Client.connect(stack.settings.temporal_address, data_converter=pydantic_data_converter)
        replayer = Replayer(
            workflows=[MigrationWorkflow, InstanceMigrationWorkflow, EndpointCallWorkflow, ForcedCleanupWorkflow],
            data_converter=pydantic_data_converter,
        )
        count = 0
        for wid in (f"migration-{m['id']}", f"migration-{m['id']}/vm-vm-a", f"migration-{m['id']}/vm-vm-b"):
            history = await client.get_workflow_handle(wid).fetch_history()
            await replayer.replay_workflow(history)
            count += 1
        return count

    assert asyncio.run(replay()) == 3
