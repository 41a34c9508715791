"""What a migration may leave behind: scratch files, destination files, child processes, open workflows.

``leftovers`` is the inventory the step trials (``tests/workflows/test_step_trials.py``) take after
each migration ends; an empty list means nothing was left.

A migration's workflows are found as an operator finds them in Temporal, whichever engine path ran
it (``STERNA_MIGRATIONS_ON_TRANSFERS``): everything whose root is the migration's workflow
(``RootWorkflowId``: the one-shot path's instance children; on transfers, the execution's children,
the deployment it starts and the deployment's children), plus the forced cleanups the API starts
on their own, named under what they clean up for.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus

from tests.conftest import RunningStack
from workflows import ids

#: the child processes a migration starts on the worker's host
CHILDREN = frozenset({"qemu-nbd", "qemu-img", "cp"})


async def temporal(stack: RunningStack) -> Client:
    return await Client.connect(stack.settings.temporal_address, namespace=stack.settings.temporal_namespace)


async def _listed(client: Client, migration_id: str) -> list[WorkflowExecution]:
    root = ids.migration(migration_id)
    query = (f'RootWorkflowId = "{root}" OR WorkflowId STARTS_WITH "{root}/"'
             f' OR WorkflowId STARTS_WITH "transfer-{migration_id}/"')
    found = [w async for w in client.list_workflows(query)]
    # A deployment's forced cleanup is named under the deployment, and has no parent.
    for deployment in {w.id for w in found if w.workflow_type == "DeploymentWorkflow"}:
        found += [w async for w in client.list_workflows(f'WorkflowId STARTS_WITH "{deployment}/"')]
    return found


def migration_workflows(stack: RunningStack, migration_id: str) -> list[WorkflowExecution]:
    """Every workflow run of the migration that visibility lists (it lags a little behind starts)."""

    async def read() -> list[WorkflowExecution]:
        return await _listed(await temporal(stack), migration_id)

    return asyncio.run(read())


def pending_in_migration(stack: RunningStack, migration_id: str) -> list[tuple[str, str, int]]:
    """(workflow id, activity type, attempt) of each activity any running workflow of the migration waits for."""

    async def read() -> list[tuple[str, str, int]]:
        client = await temporal(stack)
        found = []
        for w in await _listed(client, migration_id):
            if w.status not in (None, WorkflowExecutionStatus.RUNNING):
                continue
            desc = await client.get_workflow_handle(w.id, run_id=w.run_id).describe()
            found += [(w.id, a.activity_type.name, a.attempt) for a in desc.raw_description.pending_activities]
        return found

    return asyncio.run(read())


def cancel_requested(stack: RunningStack, workflow_id: str) -> bool:
    """Whether a cancel request reached the workflow (its history records it)."""

    async def read() -> bool:
        history = await (await temporal(stack)).get_workflow_handle(workflow_id).fetch_history()
        return any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED for e in history.events)

    return asyncio.run(read())


def open_workflows(stack: RunningStack, migration_id: str) -> list[str]:
    """Ids of the migration's workflows (``migration_workflows``) still running."""
    found = migration_workflows(stack, migration_id)

    async def read() -> list[str]:
        client = await temporal(stack)
        # Visibility lags behind; describe each execution for its current status.
        running = []
        for w in found:
            desc = await client.get_workflow_handle(w.id, run_id=w.run_id).describe()
            if desc.status == WorkflowExecutionStatus.RUNNING:
                running.append(w.id)
        return running

    return asyncio.run(read())


def child_processes(marks: list[str]) -> list[str]:
    """Command lines of qemu-nbd, qemu-img and cp processes that mention any of ``marks``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv if a]
        if args and Path(args[0]).name in CHILDREN and any(m in a for a in args for m in marks):
            found.append(" ".join(args))
    return found


def deployments_of(stack: RunningStack, migration: dict[str, Any]) -> list[str]:
    """Ids of the deployments a migration that runs as a transfer made (none for a one-shot migration)."""
    if not migration.get("transfer_id"):
        return []
    with stack.client(migration["project_id"]) as api:
        return [d["id"] for d in api.list_deployments() if d["transfer_id"] == migration["transfer_id"]]


def leftovers(stack: RunningStack, migration: dict[str, Any], src: Path, dst: Path, *,
              kept: frozenset[str] = frozenset(), settle: float = 30) -> list[str]:
    """What the ended ``migration`` left: files in its scratch, destination entries beyond ``kept`` (a
    transfer's replica disks among them), child processes mentioning its paths, and its workflows still open.

    Processes and workflows get ``settle`` seconds to end: the record DB shows the final status
    just before the workflow returns.
    """
    mid = migration["id"]
    # On transfers, the deployment works in scratch space of its own.
    actions = [mid, *deployments_of(stack, migration)]
    marks = [*actions, str(src), str(dst)]
    deadline = time.monotonic() + settle
    while True:
        found = []
        for action in actions:
            scratch = Path(stack.settings.scratch) / action
            if scratch.exists():
                found += [f"scratch: {p}" for p in sorted(scratch.rglob("*"))] or [f"scratch: {scratch} (empty)"]
        found += [f"destination: {p}" for p in sorted(dst.iterdir()) if p.name not in kept]
        found += [f"process: {c}" for c in child_processes(marks)]
        found += [f"workflow: {w}" for w in open_workflows(stack, mid)]
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)
