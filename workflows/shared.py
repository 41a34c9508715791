"""Workflow-side helpers that transfer executions and deployments share.

Records that must land even while the workflow is being cancelled are shielded: a second
cancel request must not lose the outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities import names
    from core import summary
    from workflows import search
    from workflows.failures import failure_message
    from workflows.hosts import on_host
    from workflows.instance import _retry
    from workflows.instance import record_failure as _record_failure
    from workflows.shield import shielded as _shield
    from workflows.transfer_types import FinishExecution, InstancePlan
    from workflows.types import Status, StepInput, TaskRef, TaskUpdate, Timeouts

__all__ = [  # the helpers instance.py already has, shared rather than written twice
    "_retry", "at", "failure_message", "first_step", "gather_instances", "ref", "shielded",
]

#: A migration that runs on transfers (``api.live_migrations``) keeps its ``MigrationState`` search
#: attribute true: its execution sets its end state, or hands RUNNING on to the deployment it starts
#: (which carries the migration's search attributes), and the deployment sets its end state. Before,
#: the API's RUNNING stayed on the execution for good. Upserts are commands: runs begun before replay
#: without them.
MIGRATION_STATE_ON_TRANSFERS = "migration-state-on-transfers"


def of_migration() -> bool:
    """Whether this run is part of a migration (it carries a ``MigrationId``), from a patched history."""
    return (workflow.info().typed_search_attributes.get(search.MIGRATION_ID) is not None
            and workflow.patched(MIGRATION_STATE_ON_TRANSFERS))


def set_migration_state(status: Status | None) -> None:
    """The migration's state as this run knows it; None: another run (its deployment) now says it."""
    workflow.upsert_search_attributes([search.MIGRATION_STATE.value_set(status.value) if status is not None
                                       else search.MIGRATION_STATE.value_unset()])


async def shielded(name: str, arg: Any, t: Timeouts, result_type: type[Any] | None = None, *,
                   host: str | None = None, **kw: Any) -> Any:
    """An activity that a workflow cancel must not abandon (``workflows.shield``), by name.

    ``host``: the host queue it is pinned to, whose timeouts are judged by ``workflows.hosts.on_host``."""
    start_to_close = kw.pop("start_to_close", timedelta(seconds=60))

    def start() -> Awaitable[Any]:
        return workflow.execute_activity(name, arg, result_type=result_type, start_to_close_timeout=start_to_close,
                                         retry_policy=_retry(t, 20), **kw)

    return await _shield(on_host(start, host, t) if host else start())


def summaries(p: InstancePlan) -> Callable[[str], str | None]:
    """Each step's activity summary for the Temporal UI, ``<instance>: <TASK>`` as migrations have them;
    None (no summary) in runs begun before ``TRANSFER_SUMMARIES``. Call it once, at the start of a run."""
    on = workflow.patched(summary.TRANSFER_SUMMARIES)
    return lambda task: summary.activity(p.instance, task) if on else None


def ref(p: InstancePlan, task: str) -> TaskRef:
    return TaskRef(migration_id=p.plan.action_id, instance=p.instance, task_type=task,
                   execution_id=p.plan.execution_id)


def at(step: StepInput, p: InstancePlan, task: str) -> StepInput:
    return step.model_copy(update={"task": ref(p, task)})


def first_step(p: InstancePlan, task: str) -> StepInput:
    return StepInput.for_task(p.plan, ref(p, task))


async def record_task(update: TaskUpdate, t: Timeouts) -> None:
    """One task's status and message, shielded like every record."""
    await shielded(names.RECORD_TASK, update, t)


async def record_failure(p: InstancePlan, current: str | None, err: BaseException) -> None:
    """The failed (or cancelled) task and every task after it get their final status."""
    if current is not None:
        await _record_failure(ref(p, current), err, p.timeouts)


async def gather_instances(children: list[Any]) -> Status:
    """Await per-instance children; an instance's failure does not stop its siblings."""
    return _outcome(await asyncio.gather(*children, return_exceptions=True))


async def gather_deciding(starts: list[Awaitable[workflow.ChildWorkflowHandle[Any, Any]]]) -> Status:
    """``gather_instances`` where each instance decides what a cancel of this workflow means for it.

    ``starts``: each instance's ``workflow.start_child_workflow``. Once they have started, a cancel of this
    workflow is forwarded to every child still running, and the outcome is what the children ended as. One
    that had already finished keeps its result: a cancel that arrives as the last instance completes ends
    COMPLETED, not CANCELED with the instance deployed. (``asyncio.gather`` ends cancelled whatever its
    children returned, and a child's result that arrives with the cancel, in one activation, is lost to a
    cancelled await: so the children are shielded from this workflow's cancel and get a request of their own.)
    """
    children = await asyncio.gather(*starts)
    together = asyncio.gather(*children, return_exceptions=True)
    try:
        results = await asyncio.shield(together)
    except asyncio.CancelledError:
        running = [child.id for child in children if not child.done()]
        # A child that ends meanwhile refuses its request: that refusal is its answer, not an error.
        await asyncio.gather(*(workflow.get_external_workflow_handle(c).cancel() for c in running),
                             return_exceptions=True)
        results = await together
        if not any(is_cancelled_exception(r) for r in results if isinstance(r, BaseException)):
            workflow.logger.info("a cancel came after every instance had ended: their outcome stands")
    return _outcome(results)


def _outcome(results: list[Any]) -> Status:
    """COMPLETED, or why not: cancelled if any instance was, else the instances' failures."""
    failed = [r for r in results if isinstance(r, BaseException)]
    if any(is_cancelled_exception(r) for r in failed):
        raise asyncio.CancelledError()
    if failed:
        raise ApplicationError(
            f"{len(failed)} of {len(results)} instance(s) failed: " + "; ".join(map(str, failed)),
            type="InstanceFailed", non_retryable=True,
        )
    return Status.COMPLETED


async def finish(action_id: str, execution_id: str, status: Status, t: Timeouts) -> None:
    await shielded(names.FINISH_TRANSFER_EXECUTION,
                   FinishExecution(action_id=action_id, execution_id=execution_id, status=status), t)
