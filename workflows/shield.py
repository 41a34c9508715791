"""Work that a workflow cancel must not abandon (records, cleanups, trust release)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio.exceptions import ActivityError

T = TypeVar("T")


async def shielded(work: Awaitable[T],
                   on_failure: Callable[[ActivityError], Awaitable[None]] | None = None) -> T | None:
    """Run ``work`` to its end even if the workflow is cancelled meanwhile.

    A cancel request is delivered once: the ``finally`` that runs cleanup has already used it,
    but one that arrives *during* the cleanup would abandon it. So the cancel waits for
    ``work`` and is re-raised afterwards (or ``work``'s own failure, if it failed meanwhile).

    ``on_failure`` handles a failure of ``work`` when no cancel is pending; without it, the
    failure is raised. Returns what ``work`` returned (None when ``on_failure`` handled a failure).
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise
    except ActivityError as err:
        if on_failure is None:
            raise
        await on_failure(err)
        return None


async def settled(work: Awaitable[T]) -> tuple[T, bool]:
    """``work``'s result, run to its end even if the workflow is cancelled meanwhile, and whether it was: the
    caller decides where that cancel goes (``shielded`` re-raises it instead, and keeps no result)."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task), False
    except asyncio.CancelledError:
        return await task, True
