"""The steps this worker process runs, by instance: a cleanup stops them before it removes their scratch.

Terminating a workflow (a force-cancel) does not stop its activities. Each learns of it from its
next heartbeat that reaches the server, up to 0.8 x the heartbeat timeout later, while the forced
cleanup starts at once on the host queue of the worker that holds the scratch space. A step still
writing there (a checkpoint, a snapshot copy) would race the removal: the folder is left behind, or
recreated under it. Only this process's steps are known, which is all of them when one worker
process serves a host id (``Settings.host_task_queue``; the default, one per hostname).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

#: the message a step stopped by a cleanup is cancelled with (its task's events quote it)
STOPPED_FOR_CLEANUP = "A cleanup of this instance started (its workflow was terminated): stopped"

#: (migration id, instance) -> the asyncio tasks of the steps running for it here
_running: dict[tuple[str, str], set[asyncio.Task[object]]] = {}


@asynccontextmanager
async def registered(migration_id: str, instance: str) -> AsyncIterator[None]:
    """Known as running for the instance while the block runs (the current asyncio task)."""
    task = asyncio.current_task()
    assert task is not None  # an activity always runs in its own task
    key = (migration_id, instance)
    _running.setdefault(key, set()).add(task)
    try:
        yield
    finally:
        tasks = _running.get(key)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del _running[key]


async def stop_others(migration_id: str, instance: str, wait: float) -> int:
    """Cancel the instance's other steps running here and wait for them (``wait`` seconds at most).

    Returns how many there were. A step ends through its own cancel path (a snapshot kills its ``cp``,
    a copy closes its files), so what it made is in place, or gone, before the caller removes it.
    """
    me = asyncio.current_task()
    others = [t for t in _running.get((migration_id, instance), ()) if t is not me and not t.done()]
    for task in others:
        task.cancel(STOPPED_FOR_CLEANUP)
    if others:
        await asyncio.wait(others, timeout=wait)
    return len(others)
