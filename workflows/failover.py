"""Host failover (issue 18): an instance whose pinned host is gone starts its pinned steps again elsewhere.

The steps that read or write an instance's scratch files are pinned to the queue of the host that
holds them, with a SCHEDULE_TO_START timeout of ``host_schedule_to_start``. When it fires and the host
does not answer its probe either (``workflows.hosts``: a host that answers is busy, and the step waits
on it again), the host is lost, and so are its scratch files. Migrations
(``workflows.instance``), transfer executions (``workflows.transfer``) and deployments
(``workflows.deployment``) then run those steps again from their first one (a new source snapshot,
or a new overlay of the replica disks), which the shared data queue gives to whichever host takes
it, at most ``HOST_FAILOVERS`` times. A run that still ends on a lost host cleans up from the
shared data queue: the lost host's queue has no worker to do it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from workflows.failures import failure_message
    from workflows.hosts import host_lost
    from workflows.steps import Steps
    from workflows.types import Status, StepInput, TaskUpdate, Timeouts

#: How many times one instance may change hosts before it ends ERROR.
HOST_FAILOVERS = 2

T = TypeVar("T")
Record = Callable[[TaskUpdate], Awaitable[None]]


def moved(queue: str | None, t: Timeouts, failovers: int) -> str:
    """The event on the task whose host was lost."""
    return (f"No worker of {queue} took the step within {t.host_schedule_to_start:.0f} s: starting this "
            f"instance's disk steps again on another host ({failovers} of {HOST_FAILOVERS})")


async def failing_over(attempt: Callable[[int], Awaitable[T]], on_lost: Callable[[int], Awaitable[None]],
                       enabled: bool = True) -> T:
    """``attempt(failovers so far)`` until it returns, again after each lost host (``on_lost(n)`` first).

    Any other failure, or a lost host past ``HOST_FAILOVERS``, is raised.
    """
    failovers = 0
    while True:
        try:
            return await attempt(failovers)
        except ActivityError as err:
            if not (enabled and host_lost(err) and failovers < HOST_FAILOVERS):
                raise
            failovers += 1
            await on_lost(failovers)


async def gather_or_cancel(steps: Sequence[Awaitable[T]]) -> list[T]:
    """``asyncio.gather``, but the first failure cancels the other steps and waits for them to end.

    After a lost host, the next attempt must be the only one writing: a sibling step of the failed
    one, left running where a host came back just in time, would write the old snapshot's bytes
    beside the new ones (replica disks are at the destination, shared by every host).
    """
    tasks = [asyncio.ensure_future(s) for s in steps]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def release_lost_snapshot(steps: Steps, step: StepInput, record: Record, summary: str | None = None) -> None:
    """Best effort: the lost host's source snapshot (a vSphere snapshot stays on the VM otherwise).

    ``step`` is at the snapshot's task, which gets an event when the snapshot could not be removed.
    """
    try:
        await steps.release_snapshot(step, summary)
    except ActivityError as err:
        await record(TaskUpdate(task=step.task, status=Status.RUNNING,
                                message=f"The lost host's source snapshot was not removed: {failure_message(err)}"))
