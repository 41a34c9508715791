"""Histories recorded before a ``workflow.patched`` change still replay with today's workflow code.

``histories/`` holds real histories, each recorded by the code of the commit named in its file name.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.instance import InstanceMigrationWorkflow

HISTORIES = Path(__file__).parent / "histories"


@pytest.mark.parametrize("name", sorted(p.name for p in HISTORIES.glob("instance-*.json")))
async def test_instance_history_replays(name: str) -> None:
    raw = (HISTORIES / name).read_text()
    assert json.loads(raw)["events"], name
    history = WorkflowHistory.from_json("recorded", raw)
    replayer = Replayer(workflows=[InstanceMigrationWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
