"""Transfer execution and deployment histories replay with the current workflow code."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.conftest import RunningStack, wait_for
from tests.helpers import endpoints, inventories
from workflows import ids as wids
from workflows.deployment import DeploymentInstanceWorkflow, DeploymentWorkflow
from workflows.transfer import TransferExecutionWorkflow, TransferInstanceWorkflow

pytestmark = pytest.mark.slow


def test_transfer_and_auto_deployment_histories_replay(stack: RunningStack) -> None:
    src, dst = inventories(stack, ["vm-a"], 2)
    with stack.client() as api:
        origin, dest = endpoints(api, src, dst)
        t = api.create_transfer(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
                                skip_os_morphing=True, destination_environment={"verify_boot": False})
        e = api.wait_execution(t["id"], api.execute_transfer(t["id"], auto_deploy=True)["id"], 120)
        assert e["status"] == "COMPLETED"
        d = wait_for(lambda: [x for x in api.list_deployments() if x["transfer_id"] == t["id"]], 60, 0.5)[0]
        d = api.wait_deployment(d["id"], 120)
        assert d["last_execution_status"] == "COMPLETED"
    ids = [wids.execution(t["id"], e["id"]), wids.execution_instance(e["id"], "vm-a"),
           wids.deployment(d["id"]), wids.execution_instance(d["executions"][0]["id"], "vm-a")]

    async def replay() -> int:
        client = await Client.connect(stack.settings.temporal_address, data_converter=pydantic_data_converter)
        replayer = Replayer(workflows=[TransferExecutionWorkflow, TransferInstanceWorkflow, DeploymentWorkflow,
                                       DeploymentInstanceWorkflow], data_converter=pydantic_data_converter)
        for wid in ids:
            await replayer.replay_workflow(await client.get_workflow_handle(wid).fetch_history())
        return len(ids)

    assert asyncio.run(replay()) == 4
