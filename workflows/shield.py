"""Work that a workflow cancel must not abandon (records, cleanups, trust release)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from temporalio.exceptions import ActivityError


async def shielded(work: Awaitable[None],
                   on_failure: Callable[[ActivityError], Awaitable[None]] | None = None) -> None:
    """Run ``work`` to its end even if the workflow is cancelled meanwhile.

    A cancel request is delivered once: the ``finally`` that runs cleanup has already used it,
    but one that arrives *during* the cleanup would abandon it. So the cancel waits for
    ``work`` and is re-raised afterwards (or ``work``'s own failure, if it failed meanwhile).

    ``on_failure`` handles a failure of ``work`` when no cancel is pending; without it, the
    failure is raised.
    """
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise
    except ActivityError as err:
        if on_failure is None:
            raise
        await on_failure(err)
