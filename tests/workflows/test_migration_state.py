"""``MigrationState`` of a migration that runs on transfers, as ``temporal workflow list`` reads it.

The API starts the execution under ``migration-<id>`` with the migration's search attributes and
``MigrationState=RUNNING`` (``api.live_migrations``); here the real execution and deployment workflows
run on a dev server with stub activities (``stubs``), started as the API starts them, and the
namespace's visibility is asked what it says of the migration at each stage.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.testing import WorkflowEnvironment

from activities import names
from core.errors import NotFound
from tests.workflows.stubs import FAST, Blocking, Stubs, fails, workers
from workflows import ids, search
from workflows.deployment import DeploymentInstanceWorkflow, DeploymentWorkflow
from workflows.transfer import TransferExecutionWorkflow, TransferInstanceWorkflow
from workflows.transfer_types import ActionPlan, TransferExecutionInput
from workflows.types import Status

WORKFLOWS = [TransferExecutionWorkflow, TransferInstanceWorkflow, DeploymentWorkflow, DeploymentInstanceWorkflow]
#: A workflow that would wait or retry forever fails its test instead of hanging it.
RUN_TIMEOUT = timedelta(seconds=60)

def _auto_deploying(stubs: Stubs) -> list[str]:
    """Stubs of an execution with ``auto_deploy``, as the real activities answer it; the list fills with
    the id of the deployment it creates."""
    begin, created = stubs.answer(names.BEGIN_TRANSFER_EXECUTION), []

    async def begin_execution(arg: dict[str, Any]) -> ActionPlan:
        plan: ActionPlan = await begin(arg)
        return plan.model_copy(update={"auto_deploy": arg["auto_deploy"]})

    async def create_deployment(arg: dict[str, Any]) -> str:
        created.append(arg["deployment_id"])
        return str(arg["deployment_id"])

    stubs.behaviours[names.BEGIN_TRANSFER_EXECUTION] = begin_execution
    stubs.behaviours[names.CREATE_AUTO_DEPLOYMENT] = create_deployment
    return created


async def _start_migration(client: Client, queue: str) -> tuple[str, Any]:
    migration = str(uuid.uuid4())
    handle = await client.start_workflow(
        TransferExecutionWorkflow.run,
        TransferExecutionInput(transfer_id=migration, execution_id=str(uuid.uuid4()), auto_deploy=True,
                               timeouts=FAST),
        id=ids.migration(migration), task_queue=queue, execution_timeout=RUN_TIMEOUT,
        search_attributes=TypedSearchAttributes([
            SearchAttributePair(search.PROJECT_ID, "p"), SearchAttributePair(search.MIGRATION_ID, migration),
            SearchAttributePair(search.MIGRATION_STATE, Status.RUNNING.value)]))
    return migration, handle


async def _listed(client: Client, migration: str, expected: dict[str, str | None]) -> dict[str, str | None]:
    """Workflow id -> MigrationState of the workflows listed by ``MigrationId``, once it is ``expected``
    (visibility lags a little behind the upserts); what it was after 20 s otherwise."""
    seen: dict[str, str | None] = {}
    for _ in range(200):
        seen = {w.id: w.typed_search_attributes.get(search.MIGRATION_STATE)
                async for w in client.list_workflows(f"MigrationId='{migration}'")}
        if seen == expected:
            break
        await asyncio.sleep(0.1)
    return seen


async def test_a_migration_on_transfers_is_running_in_its_deployment_then_completed(
        temporal: WorkflowEnvironment) -> None:
    upload, stubs = Blocking(), Stubs()
    imported = stubs.answer(names.UPLOAD_DISK)

    async def held_upload(arg: dict[str, Any]) -> Any:
        await upload(arg)  # until the test has seen the migration run in its deployment
        return await imported(arg)

    stubs.behaviours[names.UPLOAD_DISK] = held_upload
    created = _auto_deploying(stubs)
    client = temporal.client
    async with workers(client, stubs, WORKFLOWS) as queue:
        try:
            migration, handle = await _start_migration(client, queue)
            assert await handle.result() == Status.COMPLETED.value
            await asyncio.wait_for(upload.started.wait(), 30)
            [deployment] = created
            # The execution has ended; the migration runs on in its deployment, found by the migration's id.
            running = {ids.migration(migration): None, ids.deployment(deployment): Status.RUNNING.value}
            assert await _listed(client, migration, running) == running
        finally:
            upload.release.set()  # the workers' shutdown waits for it
        deployed = client.get_workflow_handle(ids.deployment(deployment)).result()
        assert await asyncio.wait_for(deployed, RUN_TIMEOUT.total_seconds()) == Status.COMPLETED.value

    done = {ids.migration(migration): None, ids.deployment(deployment): Status.COMPLETED.value}
    assert await _listed(client, migration, done) == done
    [described] = [w async for w in client.list_workflows(
        f"MigrationId='{migration}' AND MigrationState='{Status.COMPLETED.value}'")]
    # the deployment carries the rest of the migration's attributes too
    assert described.typed_search_attributes.get(search.PROJECT_ID) == "p"


@pytest.mark.parametrize("stage", ["execution", "deployment"])
async def test_a_failed_migration_on_transfers_is_error(temporal: WorkflowEnvironment, stage: str) -> None:
    failing = names.REPLICATE_DISK if stage == "execution" else names.DEPLOY_INSTANCE
    stubs = Stubs(behaviours={failing: fails(NotFound("gone"))})
    created = _auto_deploying(stubs)
    client = temporal.client
    expected: dict[str, str | None]
    async with workers(client, stubs, WORKFLOWS) as queue:
        migration, handle = await _start_migration(client, queue)
        if stage == "execution":
            with pytest.raises(WorkflowFailureError):
                await handle.result()
            expected = {ids.migration(migration): Status.ERROR.value}
        else:
            assert await handle.result() == Status.COMPLETED.value
            [deployment] = created
            with pytest.raises(WorkflowFailureError):
                await asyncio.wait_for(client.get_workflow_handle(ids.deployment(deployment)).result(),
                                       RUN_TIMEOUT.total_seconds())
            expected = {ids.migration(migration): None, ids.deployment(deployment): Status.ERROR.value}

    if stage == "execution":
        assert created == [], "an execution that failed created a deployment"
    assert await _listed(client, migration, expected) == expected
