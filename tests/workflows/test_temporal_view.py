"""The same executions through the ``temporal`` CLI: listing by project, heartbeat progress, no secrets.

A migration's workflows are listed as an operator lists them, by their root (``RootWorkflowId``):
the one-shot migration's instance children, or the transfer execution's children and its deployment.
"""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from typing import Any, cast

import pytest

from tests.conftest import RunningStack, wait_final, wait_for
from tests.helpers import export_progress, inventories
from tests.peers import temporal_cli

pytestmark = pytest.mark.slow
PASSWORD = "hunter2-" + uuid.uuid4().hex


def _payloads(node: object) -> list[str]:
    """Every payload in a JSON history, base64-decoded (the CLI prints them encoded)."""
    found: list[str] = []
    if isinstance(node, dict):
        data = node.get("data")
        if isinstance(data, str):
            with contextlib.suppress(ValueError):
                found.append(base64.b64decode(data).decode(errors="replace"))
        for value in node.values():
            found += _payloads(value)
    elif isinstance(node, list):
        for value in node:
            found += _payloads(value)
    return found


def _tree(address: str, root: str) -> list[str]:
    """Ids of the workflows ``temporal workflow list`` shows under ``root`` (``RootWorkflowId``), root included."""
    out = temporal_cli(address, "workflow", "list", "-o", "jsonl", "--query", f"RootWorkflowId='{root}'")
    return [json.loads(line)["execution"]["workflowId"] for line in out.splitlines() if line.strip()]


def test_cli_lists_describes_and_never_shows_credentials(stack: RunningStack) -> None:
    project = f"cli-{uuid.uuid4().hex[:8]}"
    src, dst = inventories(stack, ["vm-a"], data_mib=32)
    body = {"migration": {
        "origin": {"type": "local", "connection_info": {"path": str(src), "password": PASSWORD}},
        "destination": {"type": "local", "connection_info": {"path": str(dst), "api_key": PASSWORD}},
        "instances": ["vm-a"], "source_environment": {"bandwidth_limit": 8 * 1024 * 1024},
    }}
    address = stack.settings.temporal_address
    with stack.client(project) as api:
        m = api._call("POST", "/migrations", body)["migration"]
        wid = f"migration-{m['id']}"
        wait_for(lambda: export_progress(api.get_migration(m["id"]))[0] > 0, 60, 0.1, "export under way")

        def copying() -> dict[str, Any] | None:
            """The disk copy's pending activity, with its heartbeat, in whichever workflow of the migration
            runs it (the instance's child of the one-shot migration, or of the transfer's execution)."""
            for workflow in _tree(address, wid):
                out = temporal_cli(address, "workflow", "describe", "-w", workflow, "-o", "json")
                for pending in json.loads(out).get("pendingActivities", []):
                    if "bytes_done" in json.dumps(pending.get("heartbeatDetails")):
                        return cast(dict[str, Any], pending)
            return None

        pending = wait_for(copying, 30, 0.5, "heartbeat details in describe")
        assert pending["activityType"]["name"] in ("export_disk", "replicate_disk")
        details = json.dumps(pending["heartbeatDetails"])
        assert "bytes_total" in details and "checkpoint" in details
        wait_for(lambda: wid in temporal_cli(address, "workflow", "list", "--query", f"ProjectId='{project}'"),
                 30, 0.5, "visibility of the project's workflow")
        assert wid not in temporal_cli(address, "workflow", "list", "--query", "ProjectId='some-other-project'")
        final = wait_final(api, m["id"])
        assert final["last_execution_status"] == "COMPLETED"
        listings = [api.http.get(p).text for p in ("/migrations", "/migrations/detail", "/endpoints",
                                                   f"/migrations/{m['id']}")]
    # Every workflow the migration ran: its own and all it started, whichever engine path it took.
    workflows = set(_tree(address, wid))
    assert wid in workflows and len(workflows) >= 2, workflows
    for wf in workflows:
        raw = temporal_cli(address, "workflow", "show", "-w", wf, "-o", "json")
        history = raw + "\n".join(_payloads(json.loads(raw)))
        assert "bandwidth_limit" in history, wf  # payloads were decoded: the check below can fail
        assert PASSWORD not in history, wf
    for text in listings:
        assert PASSWORD not in text
