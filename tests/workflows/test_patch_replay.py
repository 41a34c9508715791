"""Histories recorded before a ``workflow.patched`` change still replay with today's workflow code.

``histories/`` holds real histories, each recorded by the code of the commit named in its file name:
one-shot migration instances, and transfer executions and deployments (recorded on a dev server with
stub activities, ``tests.workflows.stubs``): a migration's, and ones that lost their host.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.deployment import DeploymentInstanceWorkflow, DeploymentWorkflow
from workflows.instance import InstanceMigrationWorkflow
from workflows.transfer import TransferExecutionWorkflow, TransferInstanceWorkflow

HISTORIES = Path(__file__).parent / "histories"
WORKFLOWS = [InstanceMigrationWorkflow, TransferExecutionWorkflow, TransferInstanceWorkflow, DeploymentWorkflow,
             DeploymentInstanceWorkflow]


@pytest.mark.parametrize("name", sorted(p.name for p in HISTORIES.glob("*.json")))
async def test_history_replays(name: str) -> None:
    raw = (HISTORIES / name).read_text()
    assert json.loads(raw)["events"], name
    history = WorkflowHistory.from_json("recorded", raw)
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
