"""Steps pinned to one worker host: a host that is busy is not a host that is lost.

A pinned step waits on its host's queue with a SCHEDULE_TO_START timeout (``host_schedule_to_start``).
A worker polls that queue only while it has a free disk slot, so the timeout fires for a host that is
busy (all its slots held by other VMs' long copies) as well as for one that is gone. Before the
timeout counts as a lost host (``workflows.failover``), the step asks the host: every worker also
polls a probe queue of its own (``probe_queue``) whatever its disk slots do, and answers ``HOST_ALIVE``
there at once. A host that answers is busy, and the step waits on its queue again; only a host that
does not answer within ``PROBE_WAIT`` is lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, TimeoutError, TimeoutType

with workflow.unsafe.imports_passed_through():
    from activities import names
    from workflows.types import HostProbe, Timeouts, probe_queue

#: A pinned step whose host's queue timed out asks the host before it fails over; before, a busy host
#: was taken for a lost one, and its VMs started again on other hosts (or ended ERROR past the failovers).
HOST_BUSY_PROBE = "host-busy-probe"
#: How long the probe waits for the host's worker: a live one is polling its probe queue already.
PROBE_WAIT = 30.0

T = TypeVar("T")


def host_lost(err: BaseException) -> bool:
    """No worker took the step from the pinned host's queue within ``host_schedule_to_start``."""
    if not isinstance(err, ActivityError):
        return False
    cause = err.cause
    return isinstance(cause, TimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_START


async def host_answers(queue: str, t: Timeouts) -> bool:
    """Whether a worker of the host behind ``queue`` answers its probe within ``PROBE_WAIT``."""
    try:
        await workflow.execute_activity(
            names.HOST_ALIVE, HostProbe(queue=queue), task_queue=probe_queue(queue),
            schedule_to_start_timeout=timedelta(seconds=min(PROBE_WAIT, t.host_schedule_to_start)),
            start_to_close_timeout=timedelta(seconds=30), retry_policy=RetryPolicy(maximum_attempts=1),
            summary=f"is {queue} alive?",
        )
    except ActivityError:
        return False
    return True


def busy(queue: str, t: Timeouts, waits: int) -> str:
    """The event on the task whose step waits for a busy host."""
    return (f"{queue} took no step within {t.host_schedule_to_start:.0f} s but its worker answers: the host is "
            f"busy (its disk slots are held), so the step waits on it again ({waits} x "
            f"{t.host_schedule_to_start:.0f} s so far)")


async def on_host(run: Callable[[], Awaitable[T]], queue: str, t: Timeouts,
                  note: Callable[[str], Awaitable[None]] | None = None) -> T:
    """``run()`` (a step pinned to ``queue``) until it is taken: after each timeout on the queue, again
    while the host answers its probe, telling ``note`` (the step's task events) why it still waits. A host
    that does not answer raises the timeout (a lost host)."""
    waits = 0
    while True:
        try:
            return await run()
        except ActivityError as err:
            if not (host_lost(err) and workflow.patched(HOST_BUSY_PROBE) and await host_answers(queue, t)):
                raise
            waits += 1
            if note is not None:
                await note(busy(queue, t, waits))
