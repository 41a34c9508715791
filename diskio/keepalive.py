"""Keeping a transfer's heartbeat going while it waits on work that moves no bytes.

Completing a remote object, a cloud making an uploaded image usable, reading a disk back: each
can take minutes, longer than an activity's heartbeat timeout. ``beating`` awaits such work and
calls ``report`` every few seconds meanwhile; the caller's report heartbeats the transfer's last
progress, so Temporal sees a live worker, and a cancel arrives (the report raises
``asyncio.CancelledError``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")
#: seconds between reports while no bytes move (well inside any heartbeat timeout)
HEARTBEAT_EVERY = 2.0


def in_thread(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """``fn(*args)`` in the default executor, for ``beating``.

    An executor future, not ``asyncio.to_thread``: cancelling it does not pretend that the thread
    stopped, so ``beating`` can wait for the thread before the caller closes what it uses.
    """
    return asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def beating(report: Callable[[], Awaitable[None]], work: Awaitable[T], *, every: float = HEARTBEAT_EVERY,
                  on_cancel: Callable[[], None] | None = None) -> T:
    """Await ``work``, awaiting ``report()`` every ``every`` seconds until it is done.

    If a report raises (a cancel), ``on_cancel`` is called (to tell a thread to stop early), the
    work is cancelled and waited for, and the error propagates.
    """
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every)
            if done:
                return task.result()
            await report()
    finally:
        if not task.done():
            if on_cancel is not None:
                on_cancel()
            task.cancel()
            # a thread can't be interrupted: let it finish before what it uses is closed
            await asyncio.wait({task})
